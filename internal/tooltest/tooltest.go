// Package tooltest holds what tests share, the unit tests of the
// filesystem packages and test/e2e alike: running real tools (a missing
// tool fails the test, never skips it), garbage-filled fixture files and
// filesystems filled by recipe (MakeFAT, ExfatFill), mounting them,
// reading them back with their own tools, comparing trees of files
// (Manifest) and a used-block map with partclone's, and walking fuzzed
// filesystems (FuzzUsage, FuzzFiles).
package tooltest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
)

// Run runs a real tool and returns its output; a missing tool or a
// failure fails the test (it never skips).
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				path = filepath.Join(dir, name)
			}
		}
		if path == "" {
			t.Fatalf("%s is needed for this test and is not installed", name)
		}
	}
	cmd := exec.Command(path, args...)
	out := &cappedBuffer{max: maxToolOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	switch {
	case out.over:
		t.Fatalf("%s %s wrote more than %d MiB (a checker looping?); its first bytes:\n%s", name, strings.Join(args, " "), maxToolOutput>>20, out.b.Bytes()[:min(out.b.Len(), 4096)])
	case err != nil:
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.b.Bytes())
	}
	return out.b.String()
}

// maxToolOutput bounds what Run keeps of a tool's output: a checker that
// loops (fsck.exfat 1.2.0 does on some volumes) would otherwise take the
// machine's memory.
const maxToolOutput = 64 << 20

// cappedBuffer keeps at most max bytes; a write past them fails, which
// stops the tool on a broken pipe.
type cappedBuffer struct {
	b    bytes.Buffer
	max  int
	over bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > c.max {
		c.over = true
		return 0, fmt.Errorf("tool output over %d bytes", c.max)
	}
	return c.b.Write(p)
}

// Garbage makes a file of size bytes of pseudo-random data, as the free
// space of a used disk holds.
func Garbage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, garbageBytes(size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// garbageBytes is kept out of the race detector, which made it the
// slowest part of many tests (15 times slower per MiB) and has nothing to
// check in it.
//
//go:norace
func garbageBytes(size int64) []byte {
	b := make([]byte, size)
	var x uint64 = 0x9e3779b97f4a7c15
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}

// PartcloneUsed returns the byte ranges partclone.<fs> would copy, from
// its ddrescue domain log (-D).
func PartcloneUsed(t testing.TB, tool, image string) []block.Extent {
	t.Helper()
	dom := filepath.Join(t.TempDir(), "domain.log")
	Run(t, tool, "-D", "-s", image, "-o", dom)
	f, err := os.Open(dom)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block.Extent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 3 || strings.HasPrefix(fl[0], "#") || fl[2] != "+" {
			continue
		}
		pos, err1 := strconv.ParseInt(fl[0], 0, 64)
		n, err2 := strconv.ParseInt(fl[1], 0, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad domain line %q", sc.Text())
		}
		out = append(out, block.Extent{Off: pos, Len: n})
	}
	return out
}

// CompareWithPartclone fails the test if m misses any byte partclone
// copies, and returns how many bytes m marks that partclone does not.
func CompareWithPartclone(t testing.TB, tool, image string, m *block.Map) (extra int64) {
	t.Helper()
	pc := PartcloneUsed(t, tool, image)
	var pcBytes int64
	for _, e := range pc {
		pcBytes += e.Len
		var covered int64
		m.Runs(e.Off, e.Len, func(r block.Extent) { covered += r.Len })
		if covered != e.Len {
			t.Errorf("partclone copies bytes %d-%d; our map has only %d of those %d bytes", e.Off, e.End()-1, covered, e.Len)
		}
	}
	extra = m.UsedBytes() - pcBytes
	t.Logf("%s: ours %d bytes, partclone %d bytes, extra %d", filepath.Base(tool), m.UsedBytes(), pcBytes, extra)
	return extra
}

// Blkid returns what blkid says of a key (TYPE, VERSION) for image.
func Blkid(t testing.TB, image, key string) string {
	return strings.TrimSpace(Run(t, "blkid", "-p", "-o", "value", "-s", key, image))
}

// Files creates a directory tree with files of many sizes.
func Files(t testing.TB) string {
	dir := t.TempDir()
	sizes := []int{0, 1, 511, 512, 4095, 4096, 4097, 65537, 1<<20 + 3, 3 << 20}
	for i, n := range sizes {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%3))
		os.MkdirAll(sub, 0o755)
		b := bytes.Repeat([]byte{byte(i + 1), 'x', byte(i * 7)}, n/3+1)[:n]
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d.bin", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "empty", "dir"), 0o755)
	return dir
}

// KeepOnly copies image to a new file in which every byte outside m's
// used blocks is zero: what a restore from a used-blocks image produces.
func KeepOnly(t testing.TB, image string, m *block.Map) string {
	t.Helper()
	src, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(src))
	m.Runs(0, int64(len(src)), func(e block.Extent) { copy(out[e.Off:e.End()], src[e.Off:e.End()]) })
	p := filepath.Join(t.TempDir(), "kept.img")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// MtoolsTree copies every file of a FAT image out with mcopy.
func MtoolsTree(t testing.TB, image string) string {
	t.Helper()
	dir := t.TempDir()
	Run(t, "mcopy", "-s", "-n", "-i", image, "::/", dir)
	return dir
}

// SameTree fails the test unless two directory trees hold the same
// names, file contents and symlink targets.
func SameTree(t testing.TB, a, b string) {
	t.Helper()
	seen := 0
	filepath.Walk(a, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		qi, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s missing: %v", rel, err)
			return nil
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			l1, _ := os.Readlink(p)
			l2, _ := os.Readlink(q)
			if l1 != l2 {
				t.Errorf("%s: symlink %q vs %q", rel, l1, l2)
			}
		case info.Mode().IsRegular():
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(q)
			if !bytes.Equal(x, y) || !qi.Mode().IsRegular() {
				t.Errorf("%s differs", rel)
			}
			seen++
		}
		return nil
	})
	if seen == 0 {
		t.Errorf("no files compared in %s", a)
	}
}

// Detector is a filesystem detector's signature.
type Detector func(r io.ReaderAt, size int64) (*block.Usage, error)

// DetectFile runs detect on the file at path.
func DetectFile(t testing.TB, path string, detect Detector) (*block.Usage, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// The map is read later, a window at a time: keep the file open.
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return detect(f, st.Size())
}

// SparseReader serves B and then zeros up to Size, so a fuzzed prefix can
// describe a much larger filesystem cheaply.
type SparseReader struct {
	B    []byte
	Size int64
}

func (r *SparseReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.Size || off < 0 {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(r.B)) {
		n = copy(p, r.B[off:])
	}
	clear(p[n:])
	if off+int64(len(p)) > r.Size {
		return int(r.Size - off), io.EOF
	}
	return len(p), nil
}

// MemSource is a block.Source over bytes in memory, with 512-byte sectors.
type MemSource struct{ *bytes.Reader }

// NewMemSource serves b as a source.
func NewMemSource(b []byte) MemSource { return MemSource{bytes.NewReader(b)} }

func (m MemSource) Size() int64       { return m.Reader.Size() }
func (m MemSource) SectorSize() int64 { return 512 }

// LoadUsage reads u's whole map and checks that windows at many offsets
// and of many sizes (every chunk of a 4 and an 8 MiB grid, as the imaging engine asks for
// them, and odd ones across block-group and FAT-piece boundaries) agree
// with it bit for bit.
func LoadUsage(t testing.TB, u *block.Usage) *block.Map {
	t.Helper()
	all, err := u.Load()
	if err != nil {
		t.Fatal(err)
	}
	check := func(off, n int64) {
		m, base, err := u.Window(off, n)
		if err != nil {
			t.Fatalf("window [%d, %d): %v", off, off+n, err)
		}
		first := base / u.BlockSize()
		if base%u.BlockSize() != 0 || base > off || base+m.Len() < off+n {
			t.Fatalf("window [%d, %d): map at %d of %d bytes", off, off+n, base, m.Len())
		}
		for i := int64(0); i < m.Blocks(); i++ {
			if m.Test(i) != all.Test(first+i) {
				t.Fatalf("window [%d, %d): block %d is %v, the whole map says %v", off, off+n, first+i, m.Test(i), all.Test(first+i))
			}
		}
	}
	for _, grid := range []int64{4 << 20, 8 << 20} {
		for off := int64(0); off < u.Len(); off += grid {
			check(off, min(grid, u.Len()-off))
		}
	}
	for _, n := range []int64{1, 511, 4097, 1<<20 + 3, 7 << 20} {
		for off := int64(0); off < u.Len(); off += n*3 + 1234567 {
			check(off, min(n, u.Len()-off))
		}
	}
	return all
}

// FuzzUsage reads the whole map of a fuzzed filesystem, as imaging it
// would, for a fuzz target: errors are fine, a panic is not.
func FuzzUsage(u *block.Usage, err error) {
	if err == nil {
		u.Load()
	}
}

// Umount unmounts mnt, retrying while it is busy: a child that a parallel
// test forks holds a copy of every descriptor open at that moment until
// it execs, so a mount whose files were just closed can be busy for a
// moment. A mount still busy after ten seconds fails the test.
func Umount(t testing.TB, mnt string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Unmount(mnt, 0)
		if err == nil || err == unix.EINVAL { // EINVAL: not mounted (any more)
			return
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			t.Errorf("umount %s: %v", mnt, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
