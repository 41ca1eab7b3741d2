package vdisk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/tooltest"
)

// The writers of raw.go, qcow2.go and vmdk.go, judged by tools that are
// not Platter: qemu-img (check, compare against a raw copy of the disk,
// map) and libyal's qcowinfo/vmdkinfo and FUSE mounts (qcowmount,
// vmdkmount). Every source holds garbage outside its Data, so a writer
// that copies a byte it was not given fails the compare.

// fileSource is a disk file with the Data a test chooses.
type fileSource struct {
	*os.File
	size int64
	data []block.Extent
}

func (s *fileSource) Size() int64          { return s.size }
func (s *fileSource) Data() []block.Extent { return s.data }

func openSource(t *testing.T, path string, data []block.Extent) *fileSource {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return &fileSource{f, st.Size(), data}
}

// keepOnly writes the reference: a sparse file of the source's size that
// holds the source's bytes inside Data and zeros everywhere else.
func keepOnly(t *testing.T, src *fileSource) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref.raw")
	f, err := os.Create(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, e := range src.data {
		if _, err := io.Copy(io.NewOffsetWriter(f, e.Off), io.NewSectionReader(src, e.Off, e.Len)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(src.size); err != nil {
		t.Fatal(err)
	}
	return ref
}

// An output is one way of writing a format: to a file, or through a
// pipe (an *os.File that is not a regular file, as `-` gives).
type output struct {
	format Format
	pipe   bool
	// exact: only clusters holding a non-zero byte are allocated (so
	// for qcow2 through a pipe too: a first pass finds its zero clusters
	// before its tables go out).
	exact bool
}

func (o output) String() string {
	if o.pipe {
		return string(o.format) + "-pipe"
	}
	return string(o.format)
}

var outputs = []output{
	{QCOW2, false, true},
	{QCOW2, true, true},
	{VMDK, false, true},
	{VMDKStream, false, true},
	{VMDKStream, true, true},
	{Raw, false, true},
	{Raw, true, false},
}

// write writes src as o and returns the file it ended in.
func write(t *testing.T, o output, src Source) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out."+strings.ReplaceAll(string(o.format), "-stream", ""))
	if o.format == VMDKStream && o.pipe {
		// The name a VMDK's descriptor gives its extent when the writer
		// cannot know the file's: libvmdk opens the extent by it.
		path = filepath.Join(filepath.Dir(path), "disk.vmdk")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !o.pipe {
		if err := Write(context.Background(), f, o.format, src, nil); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		return path
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := sparseCopy(f, r)
		r.Close()
		copied <- err
	}()
	err = Write(context.Background(), w, o.format, src, nil)
	w.Close()
	if err != nil {
		t.Fatalf("%s: %v", o, err)
	}
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	return path
}

// sparseCopy copies r to the empty file f leaving holes for zero
// blocks, as a user's `> file` would not, so a many-GiB raw stream does
// not fill the test machine's disk.
func sparseCopy(f *os.File, r io.Reader) (int64, error) {
	b := make([]byte, 1<<20)
	var n int64
	for {
		k, err := io.ReadFull(r, b)
		for i := 0; i < k; i += 4096 {
			blk := b[i:min(i+4096, k)]
			if allZero(blk) {
				continue
			}
			if _, err := f.WriteAt(blk, n+int64(i)); err != nil {
				return n, err
			}
		}
		n += int64(k)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, f.Truncate(n)
		}
		if err != nil {
			return n, err
		}
	}
}

// qemuFormat is the driver qemu-img reads a format with.
func qemuFormat(f Format) string {
	if f == VMDKStream {
		return "vmdk"
	}
	return string(f)
}

// judge checks out, written as o from src, against ref (src's Data,
// zeros elsewhere) with the tools; mount also reads it through
// libyal's FUSE file system.
func judge(t *testing.T, o output, out, ref string, src *fileSource, mount bool) {
	t.Helper()
	qf := qemuFormat(o.format)
	if o.format != Raw {
		if s := tooltest.Run(t, "qemu-img", "check", "-f", qf, out); !strings.Contains(s, "No errors were found") {
			t.Errorf("%s: qemu-img check:\n%s", o, s)
		}
	}
	if s, code := runCode(t, "qemu-img", "compare", "-f", "raw", "-F", qf, ref, out); code != 0 || !strings.Contains(s, "Images are identical") {
		t.Errorf("%s: qemu-img compare with the reference (exit %d):\n%s", o, code, s)
	}
	if o.format == Raw && o.pipe {
		// Every byte went down the pipe; its size is the disk's, to the
		// byte.
		if st, err := os.Stat(out); err != nil || st.Size() != src.size {
			t.Errorf("%s: %v, %d bytes, want %d", o, err, st.Size(), src.size)
		}
	} else {
		checkMap(t, o, out, ref, src)
	}
	virtual := ceilTo(src.size, 512)
	switch o.format {
	case QCOW2:
		checkMediaSize(t, o, tooltest.Run(t, "qcowinfo", out), virtual)
	case VMDK, VMDKStream:
		s := tooltest.Run(t, "vmdkinfo", out)
		checkMediaSize(t, o, s, virtual)
		want := map[Format]string{VMDK: "Monolithic sparse", VMDKStream: "Stream optimized"}[o.format]
		if !strings.Contains(s, want) {
			t.Errorf("%s: vmdkinfo does not say %q:\n%s", o, want, s)
		}
	}
	if mount {
		switch o.format {
		case QCOW2:
			fuseCompare(t, o, "qcowmount", out, "qcow1", ref)
		case VMDK, VMDKStream:
			fuseCompare(t, o, "vmdkmount", out, "vmdk1", ref)
		}
	}
}

// runCode runs a tool that may exit non-zero (qemu-img compare says
// "differ" with 1); a missing tool fails the test.
func runCode(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for this test and is not installed", name)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s: %v", name, err)
	return "", -1
}

var mediaSize = regexp.MustCompile(`Media size:?\s+:?.*\((\d+) bytes\)`)

func checkMediaSize(t *testing.T, o output, info string, want int64) {
	t.Helper()
	m := mediaSize.FindStringSubmatch(info)
	if m == nil {
		t.Errorf("%s: no media size in:\n%s", o, info)
		return
	}
	if got, _ := strconv.ParseInt(m[1], 10, 64); got != want {
		t.Errorf("%s: libyal reads a disk of %d bytes, want %d", o, got, want)
	}
}

// checkMap asks qemu-img where out holds data: only in the format's
// allocation units that Data touches, and for an exact output only in
// units that hold a non-zero byte.
func checkMap(t *testing.T, o output, out, ref string, src *fileSource) {
	t.Helper()
	unit := int64(64 << 10)
	if o.format == Raw {
		unit = 4 << 10
	}
	var entries []struct {
		Start, Length int64
		Data          bool
	}
	s := tooltest.Run(t, "qemu-img", "map", "--output=json", "-f", qemuFormat(o.format), out)
	if err := json.Unmarshal([]byte(s), &entries); err != nil {
		t.Fatalf("%s: qemu-img map: %v\n%s", o, err, s)
	}
	r, err := os.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := make([]byte, unit)
	var mapped int64
	for _, e := range entries {
		if !e.Data {
			continue
		}
		for u := e.Start / unit * unit; u < e.Start+e.Length; u += unit {
			mapped += unit
			if !touches(src.data, u, unit) {
				t.Errorf("%s: qemu-img map: data at bytes %d-%d, which no Data extent touches", o, u, u+unit-1)
				return
			}
			if !o.exact {
				continue
			}
			n, _ := r.ReadAt(b, u)
			if allZero(b[:n]) {
				t.Errorf("%s: qemu-img map: bytes %d-%d are allocated and all zero", o, u, u+unit-1)
				return
			}
		}
	}
	t.Logf("%s: %d bytes allocated on a disk of %d", o, mapped, src.size)
}

func touches(data []block.Extent, off, n int64) bool {
	for _, e := range data {
		if e.Off < off+n && e.End() > off {
			return true
		}
	}
	return false
}

// fuseCompare mounts out with libyal's FUSE tool and compares the disk
// it shows (file name) with ref.
func fuseCompare(t *testing.T, o output, tool, out, name, ref string) {
	t.Helper()
	mnt := t.TempDir()
	tooltest.Run(t, tool, out, mnt)
	defer func() {
		for try := 0; ; try++ {
			err := exec.Command("fusermount", "-u", mnt).Run()
			if err == nil || try == 50 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := sameBytes(filepath.Join(mnt, name), ref); err != nil {
		t.Errorf("%s: %s: %v", o, tool, err)
	}
}

// sameBytes compares two disks, the longer one's tail (a sector's
// rounding) zero.
func sameBytes(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ra, rb := bufio.NewReaderSize(fa, 1<<20), bufio.NewReaderSize(fb, 1<<20)
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for off := int64(0); ; off += 64 << 10 {
		na, ea := io.ReadFull(ra, ba)
		nb, eb := io.ReadFull(rb, bb)
		n := min(na, nb)
		if !bytes.Equal(ba[:n], bb[:n]) {
			return fmt.Errorf("they differ in bytes %d-%d", off, off+int64(n)-1)
		}
		if !allZero(ba[n:na]) || !allZero(bb[n:nb]) {
			return fmt.Errorf("one is longer, with data after byte %d", off+int64(n))
		}
		if ea != nil || eb != nil {
			if ea != nil && ea != io.EOF && ea != io.ErrUnexpectedEOF {
				return ea
			}
			if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
				return eb
			}
			if (ea == nil) != (eb == nil) && (na == len(ba) || nb == len(bb)) {
				// One goes on: the rest must be zero.
				rest := io.Reader(ra)
				if ea != nil {
					rest = rb
				}
				if _, err := io.Copy(zeroChecker{}, rest); err != nil {
					return fmt.Errorf("one is longer: %w", err)
				}
			}
			return nil
		}
	}
}

type zeroChecker struct{}

func (zeroChecker) Write(p []byte) (int, error) {
	if !allZero(p) {
		return 0, errors.New("non-zero bytes")
	}
	return len(p), nil
}

// ext4Disk is a 64 MiB GPT disk, garbage in every byte the partition
// table and the file system do not use, its one partition an ext4 made
// by mkfs.ext4 -d from a tree of files; Data lists the two GPT copies
// and the blocks dumpe2fs says are in use.
func ext4Disk(t *testing.T) (disk string, data []block.Extent) {
	t.Helper()
	const partOff, partSize = 1 << 20, 40 << 20
	tree := tooltest.Files(t)
	if err := os.WriteFile(filepath.Join(tree, "zeros.bin"), make([]byte, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	part := tooltest.Garbage(t, partSize)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0", "-d", tree, part)
	var used []block.Extent
	var blockSize, blocks int64
	var free []block.Extent
	for _, line := range strings.Split(tooltest.Run(t, "dumpe2fs", part), "\n") {
		switch {
		case strings.HasPrefix(line, "Block size:"):
			blockSize, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Block size:")), 10, 64)
		case strings.HasPrefix(line, "Block count:"):
			blocks, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Block count:")), 10, 64)
		case strings.HasPrefix(line, "  Free blocks: "): // a group's, not the total
			for _, r := range strings.Split(strings.TrimPrefix(line, "  Free blocks: "), ", ") {
				if r == "" {
					continue
				}
				lo, hi, _ := strings.Cut(r, "-")
				a, err1 := strconv.ParseInt(lo, 10, 64)
				b, err2 := a, error(nil)
				if hi != "" {
					b, err2 = strconv.ParseInt(hi, 10, 64)
				}
				if err1 != nil || err2 != nil {
					t.Fatalf("dumpe2fs: bad free range %q", r)
				}
				free = append(free, block.Extent{Off: a, Len: b - a + 1})
			}
		}
	}
	if blockSize == 0 || blocks == 0 || len(free) == 0 {
		t.Fatal("dumpe2fs: no block size, block count or free blocks")
	}
	free = block.MergeExtents(free)
	var at int64
	for _, f := range append(free, block.Extent{Off: blocks}) {
		if f.Off > at {
			used = append(used, block.Extent{Off: partOff + at*blockSize, Len: (f.Off - at) * blockSize})
		}
		at = f.End()
	}

	disk = tooltest.Garbage(t, 64<<20)
	tooltest.Run(t, "sgdisk", "-o", "-n", fmt.Sprintf("1:%d:%d", partOff/512, (partOff+partSize)/512-1), "-t", "1:8300", disk)
	pb, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := df.WriteAt(pb, partOff); err != nil {
		t.Fatal(err)
	}
	df.Close()
	// The primary GPT (protective MBR, header, 128 entries) and the
	// backup (entries, header) at the end: the gap after the first and
	// before the second keeps its garbage, in the same 64 KiB cluster.
	size := int64(64 << 20)
	data = append([]block.Extent{{Off: 0, Len: 34 * 512}}, used...)
	data = append(data, block.Extent{Off: size - 33*512, Len: 33 * 512})
	return disk, data
}

func TestExt4Disk(t *testing.T) {
	disk, data := ext4Disk(t)
	src := openSource(t, disk, data)
	ref := keepOnly(t, src)
	// The reference is right: its table reads back and its file system
	// checks clean with nothing but Data's bytes.
	if s := tooltest.Run(t, "sgdisk", "-v", ref); !strings.Contains(s, "No problems found") {
		t.Fatalf("sgdisk -v on the reference:\n%s", s)
	}
	part := filepath.Join(t.TempDir(), "part.img")
	tooltest.Run(t, "dd", "if="+ref, "of="+part, "bs=1M", "skip=1", "count=40", "status=none")
	tooltest.Run(t, "e2fsck", "-fn", part)
	// ... and it is not the disk: a writer that copied the garbage
	// outside Data would fail the compare.
	if s, code := runCode(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ref, disk); code != 1 {
		t.Fatalf("the reference and the garbage-filled disk compare the same (exit %d):\n%s", code, s)
	}
	for _, o := range outputs {
		t.Run(o.String(), func(t *testing.T) {
			out := write(t, o, src)
			judge(t, o, out, ref, src, true)
		})
	}
}

// garbageDisk is a file of size bytes, sparse, with garbage around and
// inside each extent of data and at every 1 MiB below 8 MiB: what a
// writer must leave out wherever it is not in data.
func garbageDisk(t *testing.T, size int64, data []block.Extent) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	g := tooltest.Garbage(t, 256<<10)
	junk, err := os.ReadFile(g)
	if err != nil {
		t.Fatal(err)
	}
	put := func(off, n int64) {
		off, end := max(off, 0), min(off+n, size)
		for ; off < end; off += int64(len(junk)) {
			if _, err := f.WriteAt(junk[:min(int64(len(junk)), end-off)], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range data {
		put(e.Off-100<<10, e.Len+200<<10)
	}
	for off := int64(0); off < min(size, 8<<20); off += 1 << 20 {
		put(off, 4096)
	}
	return path
}

func TestEdges(t *testing.T) {
	const gib = int64(1) << 30
	cases := []struct {
		name  string
		size  int64
		data  []block.Extent
		mount bool
	}{
		{"empty", 10 << 20, nil, true},
		{"empty-extents", 10 << 20, []block.Extent{{Off: 4096, Len: 0}, {Off: 5 << 20, Len: 0}}, true},
		// 3 MiB and 7 sectors: neither a cluster nor a grain fits it.
		{"short-last-cluster", 3<<20 + 7*512, []block.Extent{{Off: 0, Len: 1000}, {Off: 3<<20 - 100, Len: 100 + 7*512}}, true},
		// Not even whole sectors: qcow2 and VMDK round up to 3 MiB + 1024.
		{"odd-bytes", 3<<20 + 1000, []block.Extent{{Off: 1 << 20, Len: 5000}, {Off: 3<<20 + 900, Len: 100}}, true},
		{"one-at-the-end", 4<<20 + 4096 + 512, []block.Extent{{Off: 4<<20 + 4096 + 512 - 3000, Len: 3000}}, true},
		{"all", 2 << 20, []block.Extent{{Off: 0, Len: 2 << 20}}, true},
		// Several extents in one cluster, a byte apart, and ones that
		// straddle a grain table (32 MiB) and a piece (4 MiB).
		{"crowded", 40 << 20, []block.Extent{
			{Off: 100, Len: 1}, {Off: 102, Len: 10}, {Off: 4096, Len: 512}, {Off: 65535, Len: 2},
			{Off: 4<<20 - 1, Len: 2}, {Off: 32<<20 - 70000, Len: 140000},
		}, true},
		// Past 4 GiB (offsets need 64 bits; a qcow2 L2 table boundary at
		// 4 GiB), sparse; too big to read back through FUSE quickly.
		{"past-4GiB", 5*gib + 3*65536 + 5*512, []block.Extent{
			{Off: 0, Len: 4096}, {Off: 4*gib - 100, Len: 70000}, {Off: 4*gib + gib/2 + 123, Len: 1 << 20},
			{Off: 5*gib + 3*65536 + 5*512 - 512, Len: 512},
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := openSource(t, garbageDisk(t, c.size, c.data), c.data)
			ref := keepOnly(t, src)
			for _, o := range outputs {
				if o.format == Raw && o.pipe && c.size > gib {
					continue // gigabytes of zeros through a pipe: slow, and nothing new
				}
				t.Run(o.String(), func(t *testing.T) {
					judge(t, o, write(t, o, src), ref, src, c.mount)
				})
			}
		})
	}
}

// TestRandomLayouts writes random Data layouts of small garbage disks
// (zeros here and there, inside Data too) in every format and has qemu
// compare each with the reference.
func TestRandomLayouts(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VDISK_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (VDISK_SEED=%d repeats it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range 8 {
		size := (1<<20 + rng.Int64N(6<<20)) / 512 * 512
		if rng.IntN(3) == 0 {
			size += rng.Int64N(512) // not whole sectors
		}
		var data []block.Extent
		for range rng.IntN(12) {
			off := rng.Int64N(size)
			if rng.IntN(2) == 0 {
				off = off / 512 * 512
			}
			n := min(1+rng.Int64N(300<<10), size-off)
			data = append(data, block.Extent{Off: off, Len: n})
		}
		data = block.MergeExtents(data)
		disk := garbageDisk(t, size, data)
		// Zeros inside Data: clusters to skip.
		f, err := os.OpenFile(disk, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range rng.IntN(4) {
			off := rng.Int64N(size)
			f.WriteAt(make([]byte, min(rng.Int64N(200<<10), size-off)), off)
		}
		f.Close()
		src := openSource(t, disk, data)
		ref := keepOnly(t, src)
		t.Run(fmt.Sprintf("%d", i), func(t *testing.T) {
			t.Logf("size %d, data %v", size, data)
			for _, o := range outputs {
				judge(t, o, write(t, o, src), ref, src, false)
			}
		})
	}
}

// memSource is a Source in memory whose reads a test can watch.
type memSource struct {
	b      []byte
	data   []block.Extent
	onRead func()
}

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	if m.onRead != nil {
		m.onRead()
	}
	return bytes.NewReader(m.b).ReadAt(p, off)
}
func (m *memSource) Size() int64          { return int64(len(m.b)) }
func (m *memSource) Data() []block.Extent { return m.data }

func TestBadData(t *testing.T) {
	for _, data := range [][]block.Extent{
		{{Off: 4096, Len: 10}, {Off: 0, Len: 10}},              // out of order
		{{Off: 0, Len: 100}, {Off: 50, Len: 100}},              // overlapping
		{{Off: 1 << 20, Len: 1}},                               // past the end
		{{Off: -1, Len: 10}},                                   // before the start
		{{Off: 10, Len: -5}},                                   // negative
		{{Off: 1<<20 - 10, Len: 1<<62 + 1}},                    // overflowing
		{{Off: 0, Len: 1}, {Off: 0, Len: 0}, {Off: 0, Len: 1}}, // overlapping around an empty one
		nil, // on a disk of 0 bytes
	} {
		src := &memSource{b: make([]byte, 1<<20), data: data}
		if data == nil {
			src.b = nil
		}
		for _, f := range []Format{QCOW2, VMDK, VMDKStream, Raw} {
			out, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			err = Write(context.Background(), out, f, src, nil)
			out.Close()
			if !errors.Is(err, ErrBadData) {
				t.Errorf("%s with Data %v: %v, want ErrBadData", f, data, err)
			}
		}
	}
}

func TestProgress(t *testing.T) {
	b := tooltest.Garbage(t, 9<<20)
	data := []block.Extent{{Off: 100, Len: 5000}, {Off: 1 << 20, Len: 3 << 20}, {Off: 9<<20 - 1, Len: 1}}
	src := openSource(t, b, data)
	var want int64
	for _, e := range data {
		want += e.Len
	}
	for _, o := range outputs {
		var got atomic.Int64
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		w := io.Writer(out)
		if o.pipe {
			w = struct{ io.Writer }{out} // any io.Writer, not only a file
		}
		if err := Write(context.Background(), w, o.format, src, func(n int64) { got.Add(n) }); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		out.Close()
		if got.Load() != want {
			t.Errorf("%s: progress heard %d bytes, Data holds %d", o, got.Load(), want)
		}
	}
}

// TestCancel cancels a write once the source has been read from: each
// writer stops with the context's error, and a file written in place
// carries no header, so no reader takes the half-made file for a disk.
func TestCancel(t *testing.T) {
	disk := bytes.Repeat([]byte("not zero"), 32<<20/8)
	for _, o := range outputs {
		ctx, cancel := context.WithCancel(context.Background())
		src := &memSource{b: disk, data: []block.Extent{{Off: 0, Len: int64(len(disk))}}, onRead: cancel}
		path := filepath.Join(t.TempDir(), "out")
		out, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w := io.Writer(out)
		if o.pipe {
			w = struct{ io.Writer }{out}
		}
		done := make(chan error, 1)
		go func() { done <- Write(ctx, w, o.format, src, nil) }()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: still writing 30 s after it was cancelled", o)
		}
		out.Close()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", o, err)
		}
		if !o.pipe && (o.format == QCOW2 || o.format == VMDK) {
			head := make([]byte, 4)
			f, _ := os.Open(path)
			f.ReadAt(head, 0)
			f.Close()
			if !allZero(head) {
				t.Errorf("%s: a cancelled write left a header: % x", o, head)
			}
		}
	}
}

func TestOutputRefused(t *testing.T) {
	src := &memSource{b: make([]byte, 1<<20), data: []block.Extent{{Off: 0, Len: 4096}}}
	src.b[0] = 1
	// monolithicSparse needs a file: not a pipe, even one that is an
	// *os.File (what `-` is).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = Write(context.Background(), w, VMDK, src, nil)
	w.Close()
	if err == nil {
		t.Error("vmdk written to a pipe")
	}
	if err := Write(context.Background(), struct{ io.Writer }{io.Discard}, VMDK, src, nil); err == nil {
		t.Error("vmdk written to an io.Writer")
	}
	// A file that holds bytes already: its holes would show them.
	for _, f := range []Format{QCOW2, VMDK, Raw} {
		path := filepath.Join(t.TempDir(), "full")
		if err := os.WriteFile(path, []byte("old bytes"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := Write(context.Background(), out, f, src, nil); err == nil {
			t.Errorf("%s written over a file that was not empty", f)
		}
		out.Close()
	}
}

// TestVMDKExtentName writes both VMDKs as convert does, under a
// .partial renamed when done: the descriptor must name the file by its
// final name, which libvmdk opens the extent by.
func TestVMDKExtentName(t *testing.T) {
	data := []block.Extent{{Off: 70000, Len: 9000}, {Off: 3 << 20, Len: 1 << 20}}
	src := openSource(t, garbageDisk(t, 5<<20, data), data)
	ref := keepOnly(t, src)
	for _, o := range []output{{VMDK, false, true}, {VMDKStream, false, true}} {
		final := filepath.Join(t.TempDir(), "my disk.vmdk")
		p, err := outfile.NewPartial(final)
		if err != nil {
			t.Fatal(err)
		}
		if err := Write(context.Background(), p.File(), o.format, src, nil); err != nil {
			p.Abort()
			t.Fatalf("%s: %v", o, err)
		}
		if err := p.Commit(false); err != nil {
			t.Fatal(err)
		}
		if s := tooltest.Run(t, "vmdkinfo", final); !strings.Contains(s, "Filename:\t\t\tmy disk.vmdk") {
			t.Errorf("%s: the extent is not named my disk.vmdk:\n%s", o, s)
		}
		judge(t, o, final, ref, src, true)
	}
}

// TestQcowStreamSecondPass: a qcow2 to a pipe reads the source twice,
// and its tables, written between the passes, say which clusters are
// all zero; a source that reads otherwise the second time is an error
// naming the byte, not a qcow2 whose tables lie.
func TestQcowStreamSecondPass(t *testing.T) {
	disk := bytes.Repeat([]byte("not zero"), 1<<20/8)
	clear(disk[128<<10 : 192<<10]) // the third cluster is all zero
	reads := 0
	src := &memSource{b: disk, data: []block.Extent{{Off: 0, Len: int64(len(disk))}}}
	src.onRead = func() {
		if reads++; reads == 2 { // the second pass begins
			disk[128<<10+5] = 1
		}
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "out.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	err = Write(context.Background(), struct{ io.Writer }{out}, QCOW2, src, nil)
	if err == nil || !strings.Contains(err.Error(), "read differently on the second pass at byte 131072") {
		t.Fatalf("got %v, want the second pass's difference at byte 131072", err)
	}
	if reads != 2 {
		t.Errorf("the source was read %d times, want 2 (one piece, two passes)", reads)
	}
}
