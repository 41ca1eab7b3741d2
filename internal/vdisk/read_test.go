package vdisk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// The readers are judged by qemu's own tools: disks made with sgdisk and
// mkfs.ext4, converted by qemu-img, must read back byte for byte as the
// raw disk they came from, and their allocated extents must be those
// `qemu-img map` reports.

// vmRawDisk makes a raw GPT disk in dir: an ext4 partition holding a
// tree (and a deleted file's data in its free space), a second partition
// of zeros with garbage in its middle, garbage past it, and zeros
// elsewhere, so that every format has both allocated and unallocated
// clusters. Its size is not a multiple of 64 KiB, so the last cluster of
// each format is partial. It returns the path and the disk's bytes.
func vmRawDisk(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	raw := filepath.Join(dir, "disk.raw")
	size := int64(48<<20 + 32<<10)
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "sgdisk", "-n", "1:1M:+24M", "-t", "1:8300", "-n", "2:0:+8M", "-t", "2:0700", raw)
	rng := rand.New(rand.NewChaCha8([32]byte{18}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	tree := filepath.Join(dir, "tree")
	files := map[string][]byte{
		"empty.txt":            nil,
		"docs/hello.txt":       []byte("hello from platter\n"),
		"docs/deep/er/t.txt":   bytes.Repeat([]byte("line of text for platter\n"), 20000),
		"bin/random 3M.bin":    random(3 << 20),
		"bin/odd.bin":          random(65537),
		"gone.bin":             random(2 << 20),
		"bin/another name.bin": random(1234567),
	}
	for name, b := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p1 := filepath.Join(dir, "p1.img")
	if err := os.WriteFile(p1, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p1, 24<<20); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", tree, p1)
	tooltest.Run(t, "debugfs", "-w", "-R", "rm /gone.bin", p1) // its data stays in the free space
	disk, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	part, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	copy(disk[1<<20:], part)
	copy(disk[25<<20+3<<20+12345:], random(1500000)) // garbage inside partition 2
	copy(disk[33<<20+777:], random(100000))          // and after it
	if err := os.WriteFile(raw, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(p1)
	os.RemoveAll(tree)
	return raw, disk
}

// vmCase is one way qemu-img writes the raw disk.
type vmCase struct {
	name   string
	format Format   // what vdisk says it is
	qemu   string   // qemu's name of the format (qemu-img -f)
	args   []string // qemu-img convert options
	file   string   // the output's name
	grain  int64    // the format's unit of allocation
	// judge says how Allocated is checked besides covering every
	// non-zero byte: "map" (equal to qemu-img map's data ranges),
	// "blocks" (the grain-sized blocks of the raw disk holding data:
	// qemu-img map calls all of a VHDX data), "within" (inside qemu-img
	// map's data ranges: fixed and flat files, whose holes qemu calls
	// data).
	judge string
}

var vmCases = []vmCase{
	{"qcow2", QCOW2, "qcow2", []string{"-O", "qcow2"}, "d.qcow2", 64 << 10, "map"},
	{"qcow2 v2", QCOW2, "qcow2", []string{"-O", "qcow2", "-o", "compat=0.10"}, "v2.qcow2", 64 << 10, "map"},
	{"qcow2 4K clusters", QCOW2, "qcow2", []string{"-O", "qcow2", "-o", "cluster_size=4096"}, "4k.qcow2", 4 << 10, "map"},
	{"qcow2 2M clusters", QCOW2, "qcow2", []string{"-O", "qcow2", "-o", "cluster_size=2M"}, "2m.qcow2", 2 << 20, "map"},
	{"qcow2 compressed", QCOW2, "qcow2", []string{"-c", "-O", "qcow2"}, "c.qcow2", 64 << 10, "map"},
	{"qcow2 compressed zstd", QCOW2, "qcow2", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}, "z.qcow2", 64 << 10, "map"},
	{"qcow2 extended L2", QCOW2, "qcow2", []string{"-O", "qcow2", "-o", "extended_l2=on,cluster_size=128K"}, "x.qcow2", 4 << 10, "map"},
	{"vhd dynamic", VHD, "vpc", []string{"-O", "vpc", "-o", "subformat=dynamic"}, "dyn.vhd", 2 << 20, "map"},
	{"vhd fixed", VHDFixed, "vpc", []string{"-O", "vpc", "-o", "subformat=fixed"}, "fixed.vhd", 4 << 10, "within"},
	{"vhdx", VHDX, "vhdx", []string{"-O", "vhdx"}, "d.vhdx", 8 << 20, "blocks"},
	{"vhdx 1M blocks", VHDX, "vhdx", []string{"-O", "vhdx", "-o", "block_size=1M"}, "1m.vhdx", 1 << 20, "blocks"},
	{"vmdk monolithicSparse", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=monolithicSparse"}, "sparse.vmdk", 64 << 10, "map"},
	{"vmdk streamOptimized", VMDKStream, "vmdk", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}, "stream.vmdk", 64 << 10, "map"},
	{"vmdk monolithicFlat", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=monolithicFlat"}, "flat.vmdk", 4 << 10, "within"},
	{"vmdk twoGbMaxExtentSparse", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"}, "split.vmdk", 64 << 10, "map"},
	{"vmdk twoGbMaxExtentFlat", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=twoGbMaxExtentFlat"}, "splitflat.vmdk", 4 << 10, "within"},
}

// TestReadConverted converts the raw disk to every format and variant
// qemu-img writes and reads each back.
func TestReadConverted(t *testing.T) {
	dir := t.TempDir()
	raw, want := vmRawDisk(t, dir)
	for _, c := range vmCases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.file)
			tooltest.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, c.args...), raw, out)...)
			d, err := Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Format() != c.format {
				t.Errorf("format %s, want %s", d.Format(), c.format)
			}
			checkDisk(t, d, want, qemuSize(t, c.qemu, out))
			checkAllocated(t, d, want, c, out)
		})
	}
}

// TestReadStreamOptimizedCreated reads the empty streamOptimized VMDK
// `qemu-img create` makes, and one with data whose grain directory is
// at the end (as VMware writes it: the header says GD_AT_END and the
// footer holds the real offset).
func TestReadStreamOptimizedCreated(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.vmdk")
	tooltest.Run(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=streamOptimized", empty, "10M")
	d, err := Open(empty)
	if err != nil {
		t.Fatal(err)
	}
	if d.Format() != VMDKStream || len(d.Allocated()) != 0 {
		t.Errorf("format %s, allocated %v: want vmdk-stream, nothing", d.Format(), d.Allocated())
	}
	checkDisk(t, d, nil, qemuSize(t, "vmdk", empty))
	d.Close()

	raw, want := vmRawDisk(t, dir)
	stream := filepath.Join(dir, "stream.vmdk")
	tooltest.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, stream)
	atEnd := gdAtEnd(t, stream)
	// qemu reads the moved file as we do, from the footer.
	tooltest.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", raw, atEnd)
	d, err = Open(atEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkDisk(t, d, want, int64(len(want)))
	checkAllocated(t, d, want, vmCase{qemu: "vmdk", grain: 64 << 10, judge: "map"}, atEnd)
}

// gdAtEnd rewrites a streamOptimized VMDK as VMware's writers lay it
// out: the header's grain directory offset GD_AT_END, and at the end a
// footer marker, the footer (the header with the real offset) and the
// end-of-stream marker.
func gdAtEnd(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	header := append([]byte(nil), b[:512]...)
	// Drop qemu's own end (zeros: its end-of-stream marker).
	for len(b) > 512 && allZeroBytes(b[len(b)-512:]) {
		b = b[:len(b)-512]
	}
	out := append([]byte(nil), b...)
	for i := 56; i < 64; i++ {
		out[i] = 0xff
	}
	marker := make([]byte, 512)
	marker[0] = 1  // the footer's size in sectors
	marker[12] = 3 // MARKER_FOOTER
	out = append(out, marker...)
	out = append(out, header...)
	out = append(out, make([]byte, 512)...) // end of stream
	p := strings.TrimSuffix(path, ".vmdk") + "-gdatend.vmdk"
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestReadQCOW2Backing reads a qcow2 over a raw backing file, and a
// chain of qcow2 files, each judged by qemu-img convert's reading of it.
func TestReadQCOW2Backing(t *testing.T) {
	dir := t.TempDir()
	raw, base := vmRawDisk(t, dir)
	// The recipe: a write of 0x55 over the raw base.
	top := filepath.Join(dir, "top.qcow2")
	tooltest.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", "disk.raw", "-F", "raw", top)
	tooltest.Run(t, "qemu-io", "-c", "write -P 0x55 1M 64k", top)
	want := append([]byte(nil), base...)
	copy(want[1<<20:], bytes.Repeat([]byte{0x55}, 64<<10))
	d, err := Open(top)
	if err != nil {
		t.Fatal(err)
	}
	checkDisk(t, d, want, int64(len(base)))
	sameAsQemu(t, d, top)
	checkAllocated(t, d, want, vmCase{qemu: "qcow2", grain: 64 << 10, judge: "map"}, top)
	d.Close()

	// A chain: a compressed qcow2 base, a middle layer with a write, a
	// top with a zero cluster over data, one partly over the disk's end
	// of a smaller base, and a write that spans clusters.
	cbase := filepath.Join(dir, "base.qcow2")
	tooltest.Run(t, "qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, cbase)
	mid := filepath.Join(dir, "sub", "mid.qcow2")
	os.Mkdir(filepath.Dir(mid), 0o755)
	tooltest.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", mid)
	tooltest.Run(t, "qemu-io", "-c", "write -P 0xaa 3M 200k", mid)
	top2 := filepath.Join(dir, "top2.qcow2")
	tooltest.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", "sub/mid.qcow2", "-F", "qcow2", top2, "64M")
	tooltest.Run(t, "qemu-io", "-c", "write -z 1M 128k", "-c", "write -P 0x11 60M 100k", top2)
	d, err = Open(top2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 64<<20 {
		t.Errorf("size %d, want 64 MiB", d.Size())
	}
	sameAsQemu(t, d, top2)
	flat := qemuRaw(t, top2)
	checkAllocated(t, d, flat, vmCase{qemu: "qcow2", grain: 64 << 10, judge: "map"}, top2)
}

// qemuRaw is qemu-img's reading of path as a raw disk.
func qemuRaw(t testing.TB, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "qemu.raw")
	tooltest.Run(t, "qemu-img", "convert", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameAsQemu checks d against qemu-img's reading of the same file.
func sameAsQemu(t testing.TB, d Disk, path string) {
	t.Helper()
	b := qemuRaw(t, path)
	if int64(len(b)) != d.Size() {
		t.Fatalf("size %d, qemu-img reads %d bytes", d.Size(), len(b))
	}
	checkDisk(t, d, b, d.Size())
}

// qemuSize is the disk's size as qemu-img info gives it.
func qemuSize(t testing.TB, format, path string) int64 {
	t.Helper()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(tooltest.Run(t, "qemu-img", "info", "--output=json", "-f", format, path)), &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize
}

// checkDisk reads all of d in pieces of random sizes, in order and from
// four goroutines at once, and fails unless it is want followed by zeros
// up to size bytes. Reads at and past the end give io.EOF.
func checkDisk(t testing.TB, d Disk, want []byte, size int64) {
	t.Helper()
	if d.Size() != size {
		t.Fatalf("size %d, want %d", d.Size(), size)
	}
	expect := func(off, n int64) []byte {
		b := make([]byte, n)
		if off < int64(len(want)) {
			copy(b, want[off:])
		}
		return b
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 18))
			lo, hi := size*int64(w)/workers, size*int64(w+1)/workers
			buf := make([]byte, 3<<20)
			for off := lo; off < hi; {
				n := int64(1 + rng.IntN(4096))
				if rng.IntN(3) == 0 {
					n = int64(1 + rng.IntN(len(buf)))
				}
				n = min(n, hi-off)
				k, err := d.ReadAt(buf[:n], off)
				if err != nil && !(err == io.EOF && off+n == size) || int64(k) != n {
					errs <- fmt.Sprintf("ReadAt(%d bytes at %d) = %d, %v", n, off, k, err)
					return
				}
				if exp := expect(off, n); !bytes.Equal(buf[:n], exp) {
					i := 0
					for buf[i] == exp[i] {
						i++
					}
					errs <- fmt.Sprintf("bytes %d-%d differ from the raw disk (first at %d)", off, off+n-1, off+int64(i))
					return
				}
				off += n
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Past the end, and across it.
	b := make([]byte, 100)
	if n, err := d.ReadAt(b, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, EOF", n, err)
	}
	if size >= 10 {
		if n, err := d.ReadAt(b, size-10); n != 10 || err != io.EOF {
			t.Errorf("ReadAt across the end = %d, %v; want 10, EOF", n, err)
		}
	}
	if _, err := d.ReadAt(b, -1); err == nil {
		t.Error("ReadAt at -1 gave no error")
	}
}

// checkAllocated fails unless d.Allocated is sorted, disjoint and inside
// the disk, covers every non-zero sector of want, and agrees with
// c.judge.
func checkAllocated(t testing.TB, d Disk, want []byte, c vmCase, path string) {
	t.Helper()
	alloc := d.Allocated()
	for i, e := range alloc {
		if e.Len <= 0 || e.Off < 0 || e.End() > d.Size() || i > 0 && e.Off <= alloc[i-1].End() {
			t.Fatalf("Allocated()[%d] = %+v: not sorted, merged and inside the %d-byte disk", i, e, d.Size())
		}
	}
	j := 0
	for off := int64(0); off < int64(len(want)); off += 512 {
		if allZeroBytes(want[off:min(off+512, int64(len(want)))]) {
			continue
		}
		for j < len(alloc) && alloc[j].End() <= off {
			j++
		}
		if j == len(alloc) || alloc[j].Off > off {
			t.Fatalf("sector at byte %d holds data and is not in Allocated()", off)
		}
	}
	var judge []block.Extent
	switch c.judge {
	case "map", "within":
		judge = qemuData(t, c.qemu, path)
	case "blocks":
		var l extentList
		for off := int64(0); off < int64(len(want)); off += c.grain {
			if !allZeroBytes(want[off:min(off+c.grain, int64(len(want)))]) {
				l.add(off, c.grain)
			}
		}
		judge = l
	default:
		return
	}
	got, exp := roundOut(alloc, c.grain, d.Size()), roundOut(judge, c.grain, d.Size())
	if c.judge == "within" {
		if s := subtract(got, exp); len(s) > 0 {
			t.Errorf("Allocated() holds %v, which qemu-img map does not call data", s[:min(len(s), 5)])
		}
		return
	}
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		t.Errorf("Allocated() (to %d-byte units) differs from the judge (%s):\n got %v\nwant %v", c.grain, c.judge, got, exp)
	}
}

// qemuData is what qemu-img map --output=json calls data.
func qemuData(t testing.TB, format, path string) []block.Extent {
	t.Helper()
	var m []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(tooltest.Run(t, "qemu-img", "map", "--output=json", "-f", format, path)), &m); err != nil {
		t.Fatal(err)
	}
	var l extentList
	for _, e := range m {
		if e.Data {
			l.add(e.Start, e.Length)
		}
	}
	return l
}

// roundOut widens extents to whole units of g (within size) and merges.
func roundOut(es []block.Extent, g, size int64) []block.Extent {
	var out []block.Extent
	for _, e := range es {
		lo, hi := e.Off/g*g, min((e.End()+g-1)/g*g, size)
		out = append(out, block.Extent{Off: lo, Len: hi - lo})
	}
	return block.MergeExtents(out)
}

// memFile is a File in memory, for fuzzing and forged inputs.
type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }

// openBytes opens b as the opener would be given it by Open: the
// readers are tried in order, as Open tries them.
func openBytes(b []byte, path string) (Disk, error) {
	size := int64(len(b))
	head := b[:min(size, 64<<10)]
	tail := b[size-min(size, 512):]
	for _, r := range readers {
		d, err := r.open(memFile{bytes.NewReader(b)}, size, head, tail, path)
		if errors.Is(err, ErrNotVirtual) {
			continue
		}
		return d, err
	}
	return nil, ErrNotVirtual
}

// TestReadZeroWrites reads zero writes over data, as qemu records them:
// qcow2 zero clusters (and zero subclusters with extended L2 entries)
// and VMDK zeroed-grain entries; judged by qemu-img's reading.
func TestReadZeroWrites(t *testing.T) {
	dir := t.TempDir()
	raw, _ := vmRawDisk(t, dir)
	for _, c := range []struct {
		name string
		args []string
		io   []string
	}{
		{"qcow2", []string{"-O", "qcow2"}, []string{"write -z 1M 256k", "write -z 3M 64k"}},
		{"qcow2 extended L2", []string{"-O", "qcow2", "-o", "extended_l2=on,cluster_size=128K"}, []string{"write -z 1M 8k", "write -z 3M 200k"}},
		{"vmdk zeroed grains", []string{"-O", "vmdk", "-o", "zeroed_grain=on"}, []string{"write -z 1M 256k", "write -z 3M 64k"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			tooltest.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, c.args...), raw, out)...)
			for _, cmd := range c.io {
				tooltest.Run(t, "qemu-io", "-c", cmd, out)
			}
			d, err := Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			want := qemuRaw(t, out)
			if bytes.Equal(want[1<<20:1<<20+8<<10], make([]byte, 8<<10)) == false {
				t.Fatal("qemu-io did not zero the range")
			}
			checkDisk(t, d, want, int64(len(want)))
			qemu := strings.Fields(c.name)[0]
			checkAllocated(t, d, want, vmCase{qemu: qemu, grain: 4 << 10, judge: "map"}, out)
		})
	}
}

// TestReadLargeSparse reads disks of 5 GiB holding a few scattered
// runs of data: many L2 tables, grain tables and BAT entries; in the
// VHDX, payload blocks past the first chunk (whose BAT entries come
// after a sector bitmap entry); VMDKs split into 2 GiB extents.
func TestReadLargeSparse(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "big.raw")
	const size = 5 << 30
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{5}))
	spots := []block.Extent{{Off: 0, Len: 70000}, {Off: 1<<30 + 4096, Len: 3 << 20}, {Off: 5<<29 + 12345, Len: 1 << 20}, {Off: 9<<29 + 12345, Len: 2<<20 + 77}, {Off: size - 4096, Len: 4096}}
	for _, s := range spots {
		b := make([]byte, s.Len)
		for i := range b {
			b[i] = byte(rng.Uint32() | 1)
		}
		if _, err := f.WriteAt(b, s.Off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	for _, c := range []vmCase{
		{"qcow2", QCOW2, "qcow2", []string{"-O", "qcow2"}, "big.qcow2", 64 << 10, "map"},
		{"vhd", VHD, "vpc", []string{"-O", "vpc", "-o", "subformat=dynamic"}, "big.vhd", 2 << 20, "map"},
		{"vhdx", VHDX, "vhdx", []string{"-O", "vhdx", "-o", "block_size=1M"}, "big.vhdx", 1 << 20, "none"},
		{"vmdk", VMDK, "vmdk", nil, "big.vmdk", 64 << 10, "map"},
		{"vmdk split sparse", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"}, "bigsplit.vmdk", 64 << 10, "map"},
		{"vmdk split flat", VMDK, "vmdk", []string{"-O", "vmdk", "-o", "subformat=twoGbMaxExtentFlat"}, "bigflat.vmdk", 4 << 10, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.file)
			args := append([]string{"convert", "-f", "raw"}, c.args...)
			if c.args == nil {
				args = append(args, "-O", "vmdk")
			}
			tooltest.Run(t, "qemu-img", append(args, raw, out)...)
			d, err := Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size() != qemuSize(t, c.qemu, out) {
				t.Fatalf("size %d, qemu-img says %d", d.Size(), qemuSize(t, c.qemu, out))
			}
			// Exactly the units holding the spots are allocated.
			var units extentList
			for _, s := range spots {
				units.add(s.Off/c.grain*c.grain, min((s.End()+c.grain-1)/c.grain*c.grain, d.Size())-s.Off/c.grain*c.grain)
			}
			got := roundOut(d.Allocated(), c.grain, d.Size())
			if c.grain == 4<<10 {
				// Flat extents: what the filesystem holds as data, which
				// may be more (qemu-img writes each extent's first block).
				if s := subtract(units, got); len(s) > 0 {
					t.Errorf("Allocated() %v misses %v", got, s)
				}
			} else if fmt.Sprint(got) != fmt.Sprint([]block.Extent(units)) {
				t.Errorf("Allocated() %v, want %v", got, units)
			}
			if c.judge == "map" {
				if got, want := roundOut(d.Allocated(), c.grain, d.Size()), roundOut(qemuData(t, c.qemu, out), c.grain, d.Size()); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("Allocated() %v, qemu-img map %v", got, want)
				}
			}
			// Each allocated unit, and random pieces elsewhere, read as
			// the raw file.
			rf, err := os.Open(raw)
			if err != nil {
				t.Fatal(err)
			}
			defer rf.Close()
			pieces := []block.Extent(units)
			for range 40 {
				off := rng.Int64N(size - 1<<20)
				pieces = append(pieces, block.Extent{Off: off, Len: 1 + rng.Int64N(1<<20)})
			}
			for _, p := range pieces {
				got, want := make([]byte, p.Len), make([]byte, p.Len)
				if _, err := d.ReadAt(got, p.Off); err != nil && err != io.EOF {
					t.Fatalf("ReadAt %+v: %v", p, err)
				}
				if p.Off < size {
					rf.ReadAt(want[:min(p.Len, size-p.Off)], p.Off)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("bytes %d-%d differ from the raw disk", p.Off, p.End()-1)
				}
			}
		})
	}
}

// TestReadVHDSize checks the disk size of a VHD whose footer's creator
// and current size say different things, against qemu-img info.
func TestReadVHDSize(t *testing.T) {
	dir := t.TempDir()
	raw, _ := vmRawDisk(t, dir)
	for _, c := range []struct {
		name, creator string
		current       int64
	}{
		{"qemu, CHS", "qemu", 40 << 20},
		{"Hyper-V, current size", "win ", 40 << 20},
		{"Disk2vhd, current size", "d2v ", 44 << 20},
		{"Virtual PC, CHS", "vpc ", 44 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, sub := range []string{"fixed", "dynamic"} {
				out := filepath.Join(dir, sub+".vhd")
				tooltest.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat="+sub, raw, out)
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				fix := func(footer []byte) {
					copy(footer[28:32], c.creator)
					putBE64(footer[40:], uint64(c.current))
					putBE64(footer[48:], uint64(c.current))
					putBE32(footer[64:], vhdChecksum(footer[:512], 64))
				}
				fix(b[len(b)-512:])
				if sub == "dynamic" {
					fix(b[:512])
				}
				if err := os.WriteFile(out, b, 0o644); err != nil {
					t.Fatal(err)
				}
				want := qemuSize(t, "vpc", out)
				d, err := Open(out)
				if err != nil {
					t.Fatalf("%s: %v", sub, err)
				}
				if d.Size() != want {
					t.Errorf("%s: size %d, qemu-img says %d", sub, d.Size(), want)
				}
				d.Close()
			}
		})
	}
}

func putBE64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func putBE32(b []byte, v uint32) {
	for i := range 4 {
		b[i] = byte(v >> (24 - 8*i))
	}
}

// rtSource is the raw disk as the writers take it: its data, every
// 4 KiB block that is not all zero.
type rtSource struct {
	*bytes.Reader
	data []block.Extent
}

func (s rtSource) Data() []block.Extent { return s.data }

// TestReadWhatWritersWrite reads back what this package's writers write
// (platter convert's output), to a file and, for the formats that
// stream, to a pipe: the vmdk-stream writer puts its grain directory at
// the end, as VMware does. The size is judged by qemu-img info.
func TestReadWhatWritersWrite(t *testing.T) {
	dir := t.TempDir()
	_, disk := vmRawDisk(t, dir)
	var data extentList
	for off := int64(0); off < int64(len(disk)); off += 4096 {
		if !allZeroBytes(disk[off:min(off+4096, int64(len(disk)))]) {
			data.add(off, min(4096, int64(len(disk))-off))
		}
	}
	qemuName := map[Format]string{QCOW2: "qcow2", VHDX: "vhdx", VHD: "vpc", VHDFixed: "vpc", VMDK: "vmdk", VMDKStream: "vmdk"}
	for _, f := range Formats() {
		if f == Raw {
			continue
		}
		for _, pipe := range []bool{false, true} {
			if pipe && !Streams(f) {
				continue
			}
			t.Run(fmt.Sprintf("%s pipe=%v", f, pipe), func(t *testing.T) {
				p := filepath.Join(dir, fmt.Sprintf("w-%s-%v", f, pipe))
				src := rtSource{bytes.NewReader(disk), data}
				if pipe {
					var buf bytes.Buffer
					if err := Write(t.Context(), &buf, f, src, nil); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				} else {
					out, err := os.Create(p)
					if err != nil {
						t.Fatal(err)
					}
					if err := Write(t.Context(), out, f, src, nil); err != nil {
						t.Fatal(err)
					}
					out.Close()
				}
				d, err := Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if d.Format() != f {
					t.Errorf("read as %s", d.Format())
				}
				checkDisk(t, d, disk, qemuSize(t, qemuName[f], p))
				checkAllocated(t, d, disk, vmCase{}, p)
			})
		}
	}
}
