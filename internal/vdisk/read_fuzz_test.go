package vdisk

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// Fuzz targets for each reader, seeded with small files qemu-img makes.
// Each opens a byte slice (no file on disk: names a file gives are
// resolved in a directory that does not exist), checks what a Disk
// promises, and reads a few ranges. Errors are fine; a panic, a runaway
// or an Allocated that breaks its contract is not.
//
// A fuzz input is a sparse file (sparseFile): VM disk files are mostly
// zeros (a VHDX holding 1 MiB is 4 MiB long, a dynamic VHD's smallest
// block 2 MiB), and Go's fuzzer minimizes each new input byte by byte,
// which at those sizes takes all the time given to it.

// fuzzDir is where fuzzed files say they are: nothing is there, so
// relative backing and extent names resolve to nothing.
const fuzzDir = "/nonexistent-platter-fuzz"

// fuzzSeeds writes a 256 KiB raw disk with a little data in a few places and
// returns the file each qemu-img command writes, sparse-encoded: cmds are
// the commands' arguments, RAW and OUT standing for the raw disk and the
// output.
func fuzzSeeds(f testing.TB, cmds ...[]string) [][]byte {
	f.Helper()
	dir := f.TempDir()
	raw := filepath.Join(dir, "seed.raw")
	b := make([]byte, 256<<10)
	for i := range 700 {
		b[i] = byte(i * 7)
	}
	copy(b[150000:], "platter fuzz seed, in the middle of the disk")
	for i := range 300 {
		b[len(b)-300+i] = byte(i)
	}
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for i, c := range cmds {
		p := filepath.Join(dir, "seed"+string(rune('a'+i)))
		args := make([]string, len(c))
		for k, a := range c {
			switch a {
			case "RAW":
				a = raw
			case "OUT":
				a = p
			}
			args[k] = a
		}
		tooltest.Run(f, "qemu-img", args...)
		s, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, sparseEncode(s))
	}
	return out
}

// sparseFile decodes a fuzz input: the file's size (4 bytes, little-
// endian, at most 32 MiB), then chunks, each its offset (4 bytes), its
// length (2 bytes) and its bytes, to the end of the input (a chunk cut
// short is dropped). Bytes no chunk gives are zero.
func sparseFile(in []byte) []byte {
	if len(in) < 4 {
		return nil
	}
	size := int64(binary.LittleEndian.Uint32(in)) % (32<<20 + 1)
	b := make([]byte, size)
	for in = in[4:]; len(in) >= 6; {
		off, n := int64(binary.LittleEndian.Uint32(in)), int(binary.LittleEndian.Uint16(in[4:]))
		if len(in) < 6+n {
			break
		}
		if off < size {
			copy(b[off:], in[6:6+n])
		}
		in = in[6+n:]
	}
	return b
}

// sparseEncode encodes a file as sparseFile decodes it: its runs of
// 512-byte units that are not all zero.
func sparseEncode(b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
	for off := 0; off < len(b); {
		if allZeroBytes(b[off:min(off+512, len(b))]) {
			off += 512
			continue
		}
		end := off
		for end < len(b) && end-off < 65024 && !allZeroBytes(b[end:min(end+512, len(b))]) {
			end = min(end+512, len(b))
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(off))
		out = binary.LittleEndian.AppendUint16(out, uint16(end-off))
		out = append(out, b[off:end]...)
		off = end
	}
	return out
}

// fuzzDisk opens b with open as Open would, and exercises the disk.
func fuzzDisk(t *testing.T, open opener, b []byte) {
	if b == nil {
		return
	}
	size := int64(len(b))
	head := b[:min(size, 64<<10)]
	tail := b[size-min(size, 512):]
	d, err := open(memFile{bytes.NewReader(b)}, size, head, tail, filepath.Join(fuzzDir, "disk"))
	if err != nil {
		if d != nil {
			t.Fatalf("a disk and an error (%v)", err)
		}
		return
	}
	defer d.Close()
	if d.Size() < 0 {
		t.Fatalf("size %d", d.Size())
	}
	alloc := d.Allocated()
	for i, e := range alloc {
		if e.Len <= 0 || e.Off < 0 || e.End() > d.Size() || i > 0 && e.Off <= alloc[i-1].End() {
			t.Fatalf("Allocated()[%d] = %+v: not sorted, merged and inside the %d-byte disk", i, e, d.Size())
		}
	}
	buf := make([]byte, 16<<10)
	read := func(off int64, n int) {
		if off < 0 {
			off = 0
		}
		k, err := d.ReadAt(buf[:n], off)
		if k > n || k < n && err == nil || err == nil && off+int64(n) > d.Size() {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v on a %d-byte disk", n, off, k, err, d.Size())
		}
		if off >= d.Size() && err != io.EOF && n > 0 {
			t.Fatalf("ReadAt past the end: %v", err)
		}
	}
	read(0, len(buf))
	read(d.Size()/2-3333, 9000)
	read(d.Size()-5000, 10000)
	for i, e := range alloc {
		if i == 16 {
			break
		}
		read(e.Off, int(min(e.Len, 9000)))
		read(e.End()-100, 100)
	}
}

func FuzzOpenQCOW2(f *testing.F) {
	for _, s := range fuzzSeeds(f,
		[]string{"convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512,compat=0.10", "RAW", "OUT"},
		[]string{"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", "RAW", "OUT"},
		[]string{"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512,compression_type=zstd", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=16384,extended_l2=on", "RAW", "OUT"},
		[]string{"create", "-f", "qcow2", "-u", "-b", "base.raw", "-F", "raw", "OUT", "1M"},
	) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) { fuzzDisk(t, openQCOW2, sparseFile(in)) })
}

func FuzzOpenVHD(f *testing.F) {
	for _, s := range fuzzSeeds(f,
		[]string{"create", "-f", "vpc", "OUT", "100M"},
		[]string{"convert", "-f", "raw", "-O", "vpc", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", "RAW", "OUT"},
	) {
		f.Add(s)
	}
	// The checksums are fixed after mutation: the fuzzer explores what
	// lies behind them, not how rarely a random change keeps one valid.
	f.Fuzz(func(t *testing.T, in []byte) { fuzzDisk(t, openVHD, vhdFix(sparseFile(in))) })
}

func FuzzOpenVHDX(f *testing.F) {
	for _, s := range fuzzSeeds(f,
		[]string{"convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", "RAW", "OUT"},
	) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) { fuzzDisk(t, openVHDX, vhdxFix(sparseFile(in))) })
}

func FuzzOpenVMDK(f *testing.F) {
	seeds := fuzzSeeds(f,
		[]string{"convert", "-f", "raw", "-O", "vmdk", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vmdk", "-o", "zeroed_grain=on", "RAW", "OUT"},
		[]string{"create", "-f", "vmdk", "-o", "subformat=monolithicFlat", "OUT", "1M"},
		[]string{"create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "OUT", "3G"},
	)
	for _, s := range seeds {
		f.Add(s)
	}
	// The streamOptimized seed rewritten with its grain directory at the end.
	p := filepath.Join(f.TempDir(), "stream.vmdk")
	if err := os.WriteFile(p, sparseFile(seeds[1]), 0o644); err != nil {
		f.Fatal(err)
	}
	atEnd, err := os.ReadFile(gdAtEnd(f, p))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sparseEncode(atEnd))
	f.Fuzz(func(t *testing.T, in []byte) { fuzzDisk(t, openVMDK, sparseFile(in)) })
}

// TestFuzzSeedsOpen makes sure what the fuzz targets do to an input
// before opening it (decoding it, fixing checksums) keeps a real file as
// it is: each opens, as the disk it holds.
func TestFuzzSeedsOpen(t *testing.T) {
	seeds := fuzzSeeds(t,
		[]string{"convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vpc", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", "RAW", "OUT"},
		[]string{"convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", "RAW", "OUT"},
	)
	for i, fix := range []func([]byte) []byte{nil, vhdFix, vhdxFix, nil} {
		b := sparseFile(seeds[i])
		if fix != nil {
			b = fix(b)
		}
		d, err := openBytes(b, filepath.Join(fuzzDir, "disk"))
		if err != nil {
			t.Errorf("seed %d: %v", i, err)
			continue
		}
		got := make([]byte, 256<<10)
		if _, err := d.ReadAt(got, 0); err != nil || got[699] != byte(699*7%256) || !bytes.HasPrefix(got[150000:], []byte("platter fuzz seed")) {
			t.Errorf("seed %d (%s) reads back wrong: %v", i, d.Format(), err)
		}
		d.Close()
	}
}
