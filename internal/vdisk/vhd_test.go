package vdisk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// The VHD and VHDX writers are judged by qemu-img (check, info, compare
// against a raw reference, map) and by libyal's vhdiinfo and vhdimount,
// never by reading their output back with this package.

// vtSource is a Source over a disk file whose data extents the test
// lists; the file holds garbage outside them, which no writer may copy.
type vtSource struct {
	f    *os.File
	size int64
	data []block.Extent
}

func (s *vtSource) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }
func (s *vtSource) Size() int64                             { return s.size }
func (s *vtSource) Data() []block.Extent                    { return s.data }

// vtSource4K is a disk of 4096-byte sectors.
type vtSource4K struct{ *vtSource }

func (vtSource4K) SectorSize() int64 { return 4096 }

// A vtCase is a source and its raw reference: the disk with every byte
// outside the data extents zero, which every output must equal.
type vtCase struct {
	name string
	src  *vtSource
	ref  string
}

const vtMiB = 1 << 20

// vtDisk makes a disk file of size bytes and its reference: inside the
// data extents pseudo-random bytes with zero stretches (some extents
// wholly zero), outside them garbage next to every extent and at both
// ends of the disk.
func vtDisk(t testing.TB, name string, size int64, data []block.Extent, rng *rand.Rand) *vtCase {
	t.Helper()
	dir := t.TempDir()
	disk, ref := vtCreate(t, filepath.Join(dir, "disk.img"), size), vtCreate(t, filepath.Join(dir, "ref.raw"), size)
	t.Cleanup(func() { disk.Close() })
	defer ref.Close()
	for i, e := range data {
		b := make([]byte, e.Len)
		if i%4 != 3 { // every fourth extent holds only zeros
			rng.Read(b)
			for k := 0; k < 3; k++ { // zero stretches, some of whole pages
				a := rng.Int63n(e.Len)
				n := min(e.Len-a, rng.Int63n(3*vhdPage)+1)
				clear(b[a : a+n])
			}
		}
		vtWriteAt(t, disk, b, e.Off)
		vtWriteAt(t, ref, b, e.Off)
	}
	var around []block.Extent
	for _, e := range data {
		around = append(around, block.Extent{Off: e.Off - 64<<10, Len: 64 << 10}, block.Extent{Off: e.End(), Len: 64 << 10})
	}
	around = append(around, block.Extent{Off: 0, Len: 64 << 10}, block.Extent{Off: size - 64<<10, Len: 64 << 10})
	for _, a := range around {
		for _, g := range vtOutside(data, max(a.Off, 0), min(a.End(), size)) {
			b := make([]byte, g.Len)
			rng.Read(b)
			vtWriteAt(t, disk, b, g.Off)
		}
	}
	return &vtCase{name: name, src: &vtSource{f: disk, size: size, data: data}, ref: ref.Name()}
}

// vtExt4Disk is a 48 MiB GPT disk made by real tools: an ext4 partition
// made by mkfs.ext4 -d from a tree, whose used blocks (partclone's) are
// the data and whose free blocks hold a deleted file and garbage; a second partition of
// garbage, one MiB of it listed as data; a gap of which 3 MiB of zeros
// are listed as data and must stay unallocated; both GPTs.
func vtExt4Disk(t testing.TB) *vtCase {
	t.Helper()
	dir := t.TempDir()
	const size, fsSize, fsOff = 48 * vtMiB, 24 * vtMiB, 1 * vtMiB
	fsPath := filepath.Join(dir, "fs.img")
	vtCreate(t, fsPath, fsSize).Close()
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tooltest.Files(t), fsPath)
	// A deleted file leaves its bytes in free blocks, as on a used disk.
	tooltest.Run(t, "debugfs", "-w", "-R", "rm /d0/f9.bin", fsPath)
	used := block.MergeExtents(tooltest.PartcloneUsed(t, "partclone.extfs", fsPath))
	fs, err := os.OpenFile(fsPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(18))
	free := vtOutside(used, 0, fsSize)
	for i, e := range free {
		if i%2 == 0 {
			b := make([]byte, min(e.Len, 256<<10))
			rng.Read(b)
			vtWriteAt(t, fs, b, e.Off)
		}
	}
	fs.Close()
	if len(free) < 2 {
		t.Fatalf("the ext4 fixture has %d free ranges, want garbage in some", len(free))
	}
	tooltest.Run(t, "e2fsck", "-fn", fsPath) // the garbage is in free blocks only

	diskPath := filepath.Join(dir, "disk.img")
	vtCreate(t, diskPath, size).Close()
	tooltest.Run(t, "sgdisk", "-o", "-n", "1:2048:+24M", "-t", "1:8300", "-n", "2:0:+8M", "-t", "2:0700", diskPath)
	disk, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fsBytes, err := os.ReadFile(fsPath)
	if err != nil {
		t.Fatal(err)
	}
	vtWriteAt(t, disk, fsBytes, fsOff)
	g := make([]byte, 15*vtMiB) // partition 2 and the gap after it: [25, 40) MiB
	rng.Read(g)
	vtWriteAt(t, disk, g, 25*vtMiB)

	data := []block.Extent{{Off: 0, Len: 34 * 512}, {Off: 25 * vtMiB, Len: vtMiB}, {Off: 40 * vtMiB, Len: 3 * vtMiB}, {Off: size - 33*512, Len: 33 * 512}}
	for _, e := range used {
		data = append(data, block.Extent{Off: fsOff + e.Off, Len: e.Len})
	}
	data = block.MergeExtents(data)
	ref := vtCreate(t, filepath.Join(dir, "ref.raw"), size)
	defer ref.Close()
	for _, e := range data {
		b := make([]byte, e.Len)
		if _, err := disk.ReadAt(b, e.Off); err != nil {
			t.Fatal(err)
		}
		vtWriteAt(t, ref, b, e.Off)
	}
	t.Cleanup(func() { disk.Close() })
	return &vtCase{name: "ext4 GPT disk", src: &vtSource{f: disk, size: size, data: data}, ref: ref.Name()}
}

// vtCases are the fixture disk and the edge cases.
func vtCases(t *testing.T) []*vtCase {
	rng := rand.New(rand.NewSource(1))
	const odd = 5*vtMiB + 1536 // not a whole MiB: vhd-fixed rounds it up
	const big = 4<<30 + 8*vtMiB + 4096
	return []*vtCase{
		vtExt4Disk(t),
		vtDisk(t, "no data", 16*vtMiB, nil, rng),
		vtDisk(t, "odd size", odd, []block.Extent{{Off: 4096, Len: 9000}, {Off: 3*vtMiB - 700, Len: 5000}, {Off: odd - 2048, Len: 2048}}, rng),
		vtDisk(t, "one extent at the end", 8*vtMiB+3*512, []block.Extent{{Off: 8*vtMiB + 3*512 - 5*vtMiB/2, Len: 5 * vtMiB / 2}}, rng),
		vtDisk(t, "over 4 GiB, sparse", big, []block.Extent{
			{Off: 0, Len: 64 << 10}, {Off: 2<<30 - 4096, Len: 3 * vtMiB}, {Off: 4<<30 - 8192, Len: 16384},
			{Off: 4<<30 + 7*vtMiB, Len: 8192}, {Off: big - 1, Len: 1},
		}, rng),
	}
}

func TestVHDWriters(t *testing.T) {
	cases := vtCases(t)
	for _, c := range cases {
		for _, f := range []Format{VHD, VHDFixed, VHDX} {
			t.Run(c.name+"/"+string(f), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out."+string(f))
				vtWrite(t, f, c.src, out)
				vtJudge(t, f, c, out, vtOpts{mount: c.src.size <= 64*vtMiB})
			})
		}
	}
}

// The geometry is the spec's: qemu made to read the size from it (as
// it does for VHDs of creators it does not trust) finds cylinders x
// heads x sectors worked out by hand from the spec's algorithm.
func TestVHDGeometry(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, tc := range []struct {
		size, chs int64 // chs: cylinders x heads x sectors per track x 512
		f         Format
	}{
		{48 * vtMiB, 963 * 6 * 17 * 512, VHD},             // 98304 sectors: 17 per track, 6 heads
		{48 * vtMiB, 963 * 6 * 17 * 512, VHDFixed},        // same
		{4<<30 + 9*vtMiB, 8340 * 16 * 63 * 512, VHDFixed}, // 63 per track, 16 heads
	} {
		c := vtDisk(t, "geometry", tc.size, []block.Extent{{Off: 0, Len: 4096}}, rng)
		out := filepath.Join(t.TempDir(), "out.vhd")
		vtWrite(t, tc.f, c.src, out)
		spec := fmt.Sprintf(`json:{"driver":"vpc","force_size_calc":"chs","file":{"driver":"file","filename":%q}}`, out)
		if got := vtInfo(t, spec, "").VirtualSize; got != tc.chs {
			t.Errorf("%s of %d bytes: the CHS geometry gives %d bytes, want %d", tc.f, tc.size, got, tc.chs)
		}
		if got := vtInfo(t, out, "vpc").VirtualSize; got != tc.size {
			t.Errorf("%s of %d bytes: qemu sees %d bytes", tc.f, tc.size, got)
		}
	}
}

// Random layouts on small disks, every format, judged by qemu-img.
func TestVHDRandomLayouts(t *testing.T) {
	seed := int64(os.Getpid())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < 6; i++ {
		size := 3*vtMiB + rng.Int63n(6*vtMiB)
		if rng.Intn(2) == 0 {
			size &^= 511
		}
		var data []block.Extent
		for k := rng.Intn(9); k > 0; k-- {
			off := rng.Int63n(size)
			n := 1 + rng.Int63n(min(size-off, []int64{700, 64 << 10, 3 * vtMiB}[rng.Intn(3)]))
			if rng.Intn(2) == 0 { // sector-aligned, as filesystems' are
				off &^= 511
				n = min((n+511)&^511, size-off)
			}
			data = append(data, block.Extent{Off: off, Len: n})
		}
		data = block.MergeExtents(data)
		c := vtDisk(t, fmt.Sprintf("layout %d", i), size, data, rng)
		for _, f := range []Format{VHD, VHDFixed, VHDX} {
			t.Run(fmt.Sprintf("%d/%s", i, f), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				vtWrite(t, f, c.src, out)
				vtJudge(t, f, c, out, vtOpts{})
			})
		}
	}
}

// vhd-fixed to a pipe writes every byte, and the same disk as to a file.
func TestVHDFixedPipe(t *testing.T) {
	c := vtExt4Disk(t)
	out := filepath.Join(t.TempDir(), "piped.vhd")
	file, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(file, r)
		copied <- err
	}()
	err = Write(context.Background(), w, VHDFixed, c.src, nil)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	file.Close()
	vtJudge(t, VHDFixed, c, out, vtOpts{piped: true})
	// Every byte went through the pipe: nothing of it is a hole.
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < st.Size {
		t.Errorf("a piped vhd-fixed of %d bytes takes %d bytes on disk: holes where zeros were written?", st.Size, st.Blocks*512)
	}
}

// A 4096-byte-sector disk keeps its sectors in a VHDX; VHD, which has
// 512-byte sectors only, refuses it. (qemu 7.2 opens no VHDX of
// 4096-byte sectors, "Operation not supported", so libvhdi judges.)
func TestVHDX4KSectors(t *testing.T) {
	c := vtDisk(t, "4K", 12*vtMiB, []block.Extent{{Off: 0, Len: 8192}, {Off: 5 * vtMiB, Len: 2 * vtMiB}, {Off: 12*vtMiB - 8192, Len: 8192}}, rand.New(rand.NewSource(3)))
	src := vtSource4K{c.src}
	out := filepath.Join(t.TempDir(), "out.vhdx")
	file, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := Write(context.Background(), file, VHDX, src, nil); err != nil {
		t.Fatal(err)
	}
	info := tooltest.Run(t, "vhdiinfo", out)
	if !strings.Contains(info, "Bytes per sector\t: 4096 bytes") || !strings.Contains(info, fmt.Sprintf("(%d bytes)", 12*vtMiB)) {
		t.Errorf("vhdiinfo:\n%s", info)
	}
	vtMountCompare(t, out, c, 12*vtMiB)
	for _, f := range []Format{VHD, VHDFixed} {
		if err := Write(context.Background(), file, f, src, nil); err == nil || !strings.Contains(err.Error(), "4096-byte sectors") {
			t.Errorf("%s of a 4096-byte-sector disk: %v, want a refusal", f, err)
		}
	}
}

// Cancelling stops a writer with the context's error; bad extents are
// refused; progress adds up to the data's bytes.
func TestVHDCancelAndData(t *testing.T) {
	c := vtDisk(t, "cancel", 32*vtMiB, []block.Extent{{Off: 0, Len: 30 * vtMiB}}, rand.New(rand.NewSource(4)))
	for _, f := range []Format{VHD, VHDFixed, VHDX} {
		ctx, cancel := context.WithCancel(context.Background())
		src := &vtCancelling{vtSource: c.src, cancel: cancel}
		file, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		err = Write(ctx, file, f, src, nil)
		file.Close()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s cancelled: %v", f, err)
		}
		for _, bad := range [][]block.Extent{
			{{Off: 8192, Len: 4096}, {Off: 0, Len: 4096}},
			{{Off: 32*vtMiB - 4096, Len: 8192}},
		} {
			src := &vtSource{f: c.src.f, size: c.src.size, data: bad}
			file, _ := os.Create(filepath.Join(t.TempDir(), "out"))
			if err := Write(context.Background(), file, f, src, nil); err == nil {
				t.Errorf("%s took data extents %v", f, bad)
			}
			file.Close()
		}
	}
}

type vtCancelling struct {
	*vtSource
	cancel context.CancelFunc
}

func (s *vtCancelling) ReadAt(p []byte, off int64) (int, error) {
	s.cancel()
	return s.vtSource.ReadAt(p, off)
}

// vtWrite writes src as format f to a new file at out, checking that
// progress adds up to the data's bytes.
func vtWrite(t testing.TB, f Format, src Source, out string) {
	t.Helper()
	file, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var mu sync.Mutex
	var heard, want int64
	for _, e := range src.Data() {
		want += e.Len
	}
	if err := Write(context.Background(), file, f, src, func(n int64) { mu.Lock(); heard += n; mu.Unlock() }); err != nil {
		t.Fatalf("write %s: %v", f, err)
	}
	if heard != want {
		t.Errorf("progress heard %d bytes, the data has %d", heard, want)
	}
}

type vtOpts struct {
	mount bool // compare through vhdimount too
	piped bool // written through a pipe: every byte, no holes
}

// vtJudge judges out, c's disk written as f, with qemu-img and libvhdi.
func vtJudge(t *testing.T, f Format, c *vtCase, out string, o vtOpts) {
	t.Helper()
	size := c.src.size
	qf, virtual := "vpc", (size+511)&^511
	switch f {
	case VHDFixed:
		virtual = (size + vtMiB - 1) &^ (vtMiB - 1)
	case VHDX:
		qf = "vhdx"
		tooltest.Run(t, "qemu-img", "check", "-f", "vhdx", out)
	}
	info := vtInfo(t, out, qf)
	if info.Format != qf || info.VirtualSize != virtual {
		t.Errorf("qemu-img info: format %s, virtual size %d; want %s, %d", info.Format, info.VirtualSize, qf, virtual)
	}
	vtCompare(t, c, out, qf)

	st := vtStat(t, out)
	pages := vtNonZero(t, c, vhdPage)
	switch f {
	case VHD:
		// qemu maps a dynamic VHD a block (2 MiB) at a time: data exactly
		// in the blocks holding a non-zero byte.
		want := vtNonZero(t, c, vhdOutBlock)
		got := vtMapped(t, out, qf, vhdOutBlock)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("qemu-img map: data in 2 MiB blocks %v, want %v (those holding data)", got, want)
		}
		if limit := int64(len(pages))*vhdPage + int64(len(want))*vhdPage + (virtual/vhdOutBlock*4 + 3*vhdPage); st.allocated > limit {
			t.Errorf("the file takes %d bytes on disk; its data, bitmaps and tables %d", st.allocated, limit)
		}
	case VHDFixed:
		if st.size != virtual+512 || st.size%vtMiB != 512 {
			t.Errorf("file size %d, want %d: a whole MiB and the footer", st.size, virtual+512)
		}
		// The slack is the filesystem's: ext4 gives a file of many
		// extents blocks of extent tree.
		if limit := int64(len(pages)+1)*vhdPage + 64<<10; st.allocated > limit && !o.piped {
			t.Errorf("the file takes %d bytes on disk, its non-zero pages and footer %d: zeros written?", st.allocated, limit)
		}
		if size%vtMiB != 0 {
			vtTailZero(t, out, qf, size, virtual)
		}
	case VHDX:
		// qemu 7.2 maps every VHDX byte as data, so the file's layout
		// judges: 1 MiB payload blocks only for those holding data, after
		// at most 3 MiB of header, log and metadata and the BAT.
		blocks := vtNonZero(t, c, vhdxOutBlock)
		n := (virtual + vhdxOutBlock - 1) / vhdxOutBlock
		bat := ((n+n/4096)*8 + vtMiB - 1) &^ (vtMiB - 1)
		if hi := 3*vtMiB + bat + int64(len(blocks))*vtMiB; st.size > hi || st.size < int64(len(blocks))*vtMiB {
			t.Errorf("file size %d; want at most %d for %d blocks holding data", st.size, hi, len(blocks))
		}
		if limit := int64(len(pages))*vhdPage + 128<<10; st.allocated > limit {
			t.Errorf("the file takes %d bytes on disk, its non-zero pages and tables %d", st.allocated, limit)
		}
	}

	vi := tooltest.Run(t, "vhdiinfo", out)
	kind := map[Format]string{VHD: "Dynamic", VHDFixed: "Fixed", VHDX: "Dynamic"}[f]
	if !strings.Contains(vi, fmt.Sprintf("(%d bytes)", virtual)) || !strings.Contains(vi, "Disk type\t\t: "+kind) {
		t.Errorf("vhdiinfo, want %d bytes, %s:\n%s", virtual, kind, vi)
	}
	if o.mount {
		vtMountCompare(t, out, c, virtual)
	}
}

// vtCompare compares out with c's reference with qemu-img compare.
// Where the output is larger (vhd-fixed's whole MiB), compare without -s
// checks that the rest reads as zeros. qemu reads a VHDX's unallocated
// blocks at 300 MB/s, so a large one is compared in windows: around
// every data extent, and its first and last 16 MiB.
func vtCompare(t testing.TB, c *vtCase, out, format string) {
	t.Helper()
	size := c.src.size
	if format != "vhdx" || size <= 256*vtMiB {
		tooltest.Run(t, "qemu-img", "compare", "-f", "raw", "-F", format, c.ref, out)
		return
	}
	ws := []block.Extent{{Off: 0, Len: 16 * vtMiB}, {Off: size - 16*vtMiB, Len: 16 * vtMiB}}
	for _, e := range c.src.data {
		lo := max(e.Off/vtMiB*vtMiB-vtMiB, 0)
		ws = append(ws, block.Extent{Off: lo, Len: min((e.End()+2*vtMiB-1)/vtMiB*vtMiB, size) - lo})
	}
	for _, w := range block.MergeExtents(ws) {
		win := func(file string) string {
			return fmt.Sprintf(`json:{"driver":"raw","offset":%d,"size":%d,"file":%s}`, w.Off, w.Len, file)
		}
		tooltest.Run(t, "qemu-img", "compare",
			win(fmt.Sprintf(`{"driver":"file","filename":%q}`, c.ref)),
			win(fmt.Sprintf(`{"driver":%q,"file":{"driver":"file","filename":%q}}`, format, out)))
	}
}

// vtMountCompare mounts out with vhdimount and compares the disk it
// shows with c's reference, and the rest (up to virtual) with zeros.
func vtMountCompare(t *testing.T, out string, c *vtCase, virtual int64) {
	t.Helper()
	mnt := t.TempDir()
	tooltest.Run(t, "vhdimount", out, mnt)
	t.Cleanup(func() { tooltest.Run(t, "fusermount", "-u", mnt) })
	disk := filepath.Join(mnt, "vhdi1")
	if st := vtStat(t, disk); st.size != virtual {
		t.Errorf("vhdimount shows %d bytes, want %d", st.size, virtual)
	}
	tooltest.Run(t, "cmp", "-n", strconv.FormatInt(c.src.size, 10), c.ref, disk)
	vtZeroFrom(t, disk, c.src.size, virtual)
}

type vtInfoJSON struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func vtInfo(t testing.TB, path, format string) vtInfoJSON {
	t.Helper()
	args := []string{"info", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	var info vtInfoJSON
	if err := json.Unmarshal([]byte(tooltest.Run(t, "qemu-img", append(args, path)...)), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// vtMapped is the grain-sized blocks qemu-img map says hold data.
func vtMapped(t testing.TB, path, format string, grain int64) []int64 {
	t.Helper()
	var m []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal([]byte(tooltest.Run(t, "qemu-img", "map", "--output=json", "-f", format, path)), &m); err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, r := range m {
		if !r.Data {
			continue
		}
		if r.Start%grain != 0 {
			t.Errorf("qemu-img map: data at byte %d, inside a block", r.Start)
		}
		for b := r.Start / grain; b*grain < r.Start+r.Length; b++ {
			out = append(out, b)
		}
	}
	return out
}

// vtNonZero lists the grain-sized blocks of c's reference holding a
// non-zero byte (only its data extents can).
func vtNonZero(t testing.TB, c *vtCase, grain int64) []int64 {
	t.Helper()
	f, err := os.Open(c.ref)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []int64
	for _, e := range c.src.data {
		for b := e.Off / grain; b*grain < e.End(); b++ {
			if len(out) > 0 && out[len(out)-1] == b {
				continue
			}
			lo, hi := max(b*grain, e.Off), min(b*grain+grain, e.End())
			p := make([]byte, hi-lo)
			if _, err := f.ReadAt(p, lo); err != nil {
				t.Fatal(err)
			}
			for _, x := range p {
				if x != 0 {
					out = append(out, b)
					break
				}
			}
		}
	}
	return out
}

// vtTailZero converts out to raw with qemu-img and checks that its
// first size bytes are the reference's and the rest, to virtual, zero.
func vtTailZero(t testing.TB, out, format string, size, virtual int64) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "back.raw")
	tooltest.Run(t, "qemu-img", "convert", "-f", format, "-O", "raw", out, raw)
	if st := vtStat(t, raw); st.size != virtual {
		t.Errorf("qemu-img convert gives %d bytes, want %d", st.size, virtual)
		return
	}
	vtZeroFrom(t, raw, size, virtual)
}

func vtZeroFrom(t testing.TB, path string, from, to int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, to-from)
	if _, err := f.ReadAt(p, from); err != nil {
		t.Fatal(err)
	}
	for i, x := range p {
		if x != 0 {
			t.Fatalf("%s: byte %d past the disk's end is %#x, want zero", path, from+int64(i), x)
		}
	}
}

type vtFileStat struct{ size, allocated int64 }

func vtStat(t testing.TB, path string) vtFileStat {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return vtFileStat{st.Size, st.Blocks * 512}
}

// vtOutside is [lo, hi) less the extents.
func vtOutside(es []block.Extent, lo, hi int64) []block.Extent {
	var out []block.Extent
	pos := lo
	for _, e := range es {
		if e.End() <= pos || e.Off >= hi {
			continue
		}
		if e.Off > pos {
			out = append(out, block.Extent{Off: pos, Len: e.Off - pos})
		}
		pos = max(pos, e.End())
	}
	if pos < hi {
		out = append(out, block.Extent{Off: pos, Len: hi - pos})
	}
	return out
}

// vtCreate creates a sparse file of size bytes, open for writing.
func vtCreate(t testing.TB, path string, size int64) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

func vtWriteAt(t testing.TB, f *os.File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVHDWrite writes a 1 GiB disk of which 768 MiB are data
// (incompressible bytes with zero stretches, in extents of 1-8 MiB)
// from a file in the page cache to a file, side by side with what a
// user would run instead after restoring the disk to a raw file:
// qemu-img convert of that raw file.
func BenchmarkVHDWrite(b *testing.B) {
	rng := rand.New(rand.NewSource(5))
	const size = 1 << 30
	var data []block.Extent
	for off := int64(0); off < size; {
		n := min(int64(1+rng.Intn(8))*vtMiB, size-off)
		data = append(data, block.Extent{Off: off, Len: n})
		off += n + n/3
	}
	c := vtDisk(b, "bench", size, data, rng)
	var total int64
	for _, e := range data {
		total += e.Len
	}
	for _, f := range []Format{VHD, VHDFixed, VHDX} {
		b.Run(string(f), func(b *testing.B) {
			b.SetBytes(total)
			out := filepath.Join(b.TempDir(), "out")
			for range b.N {
				os.Remove(out)
				vtWrite(b, f, c.src, out)
			}
		})
	}
	for _, o := range [][]string{{"vpc"}, {"vpc", "-o", "subformat=fixed,force_size=on"}, {"vhdx"}} {
		b.Run("qemu-img-"+strings.Join(o, ""), func(b *testing.B) {
			b.SetBytes(total)
			out := filepath.Join(b.TempDir(), "out")
			for range b.N {
				os.Remove(out)
				tooltest.Run(b, "qemu-img", append(append([]string{"convert", "-f", "raw", "-O"}, o...), c.ref, out)...)
			}
		})
	}
}
