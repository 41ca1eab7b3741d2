package ext

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// The fixtures are built by mke2fs -d from a directory tree and judged
// by debugfs (dump, ls -p, stat) and by the tree itself.
//
// mke2fs 1.47.0 -d quirks the tree works around: a file ending in a hole
// gets a size rounded down to its last data block, so every sparse file
// ends in data; only whole seconds of mtime are copied, and no epoch bits,
// so nanoseconds and post-2038 dates are set afterwards with debugfs sif.

// layout is one way of making the filesystem.
type layout struct {
	name, mkfs string
	args       []string
	blockSize  int
	inodeSize  int
	features   []string // must be on ("^x": must be off)
	extents    bool     // files use extents (else block maps)
	inline     bool
}

var layouts = []layout{
	{"ext2-1k-128-nofiletype", "mkfs.ext2", []string{"-b", "1024", "-I", "128", "-O", "^filetype"}, 1024, 128,
		[]string{"^filetype", "^extent", "^has_journal", "dir_index", "large_file"}, false, false},
	{"ext3-4k-journal", "mkfs.ext3", []string{"-b", "4096", "-g", "8192", "-N", "6000", "-I", "256"}, 4096, 256,
		[]string{"has_journal", "filetype", "^extent", "^64bit"}, false, false},
	{"ext4-1k-32bit-flex-csum", "mkfs.ext4", []string{"-b", "1024", "-O", "^64bit,flex_bg,metadata_csum"}, 1024, 256,
		[]string{"extent", "flex_bg", "metadata_csum", "^64bit"}, true, false},
	{"ext4-4k-64bit-csum", "mkfs.ext4", []string{"-b", "4096", "-g", "8192", "-N", "6000", "-O", "64bit,metadata_csum"}, 4096, 256,
		[]string{"extent", "64bit", "flex_bg", "metadata_csum", "has_journal"}, true, false},
	{"ext4-4k-noflex-128", "mkfs.ext4", []string{"-b", "4096", "-g", "8192", "-N", "6000", "-I", "128", "-O", "^flex_bg,^metadata_csum,^64bit"}, 4096, 128,
		[]string{"extent", "^flex_bg", "^metadata_csum", "^64bit"}, true, false},
	{"ext4-4k-bigalloc", "mkfs.ext4", []string{"-b", "4096", "-C", "16384", "-g", "4096", "-N", "6000", "-I", "256", "-O", "bigalloc"}, 4096, 256,
		[]string{"extent", "bigalloc", "metadata_csum"}, true, false},
	{"ext4-4k-inline", "mkfs.ext4", []string{"-b", "4096", "-g", "8192", "-N", "6000", "-I", "256", "-O", "inline_data,64bit"}, 4096, 256,
		[]string{"extent", "inline_data", "64bit", "metadata_csum"}, true, true},
}

// toolPath finds a tool as tooltest.Run does: a missing one fails.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	t.Fatalf("%s is needed for this test and is not installed", name)
	return ""
}

// runCodes runs a tool in UTC (debugfs prints dates in local time) and
// fails unless it exits with one of codes.
func runCodes(t testing.TB, codes []int, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(toolPath(t, name), args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !slices.Contains(codes, code) {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return string(out)
}

// debugfs runs commands in one debugfs and returns each one's output.
func debugfs(t testing.TB, img string, write bool, cmds ...string) map[string]string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", script, img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	out := runCodes(t, []int{0}, "debugfs", args...)
	res := map[string]string{}
	cur := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		if c, ok := strings.CutPrefix(line, "debugfs: "); ok {
			cur = strings.TrimSpace(c)
			continue
		}
		res[cur] += line
	}
	return res
}

func q(p string) string { return `"/` + strings.TrimPrefix(p, "/") + `"` }

// pattern is n bytes that differ at every offset, so a misplaced block
// shows. The race detector does not watch it (go:norace): it only makes
// test data, up to 100 MiB of it.
//
//go:norace
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// writeSparse writes chunks at their offsets into a new file of size
// bytes; the caller makes the last chunk end at size.
func writeSparse(t testing.TB, p string, size int64, chunks map[int64][]byte) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, b := range chunks {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

const (
	bigDirEntries = 3000
	fragChunks    = 1500
)

// makeTree builds the source tree every layout is made from.
func makeTree(t testing.TB) string {
	t.Helper()
	dir := tooltest.Files(t) // d0..d2 with files of 0 bytes to 3 MiB, empty/dir
	mk := func(rel string, b []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// Sizes around inline data's limits: 60 bytes of i_block, then the
	// system.data attribute.
	for _, n := range []int{1, 10, 59, 60, 61, 100, 120, 150, 200} {
		mk(fmt.Sprintf("small/s%d", n), pattern(n, uint64(n)))
	}
	mk("smalldir/a", []byte("a\n"))
	mk("smalldir/b", []byte("b\n"))
	mk("xdir/a", []byte("xa\n"))
	mk("xdir/b", []byte("xb\n"))
	mk("nested/a/b/c/deep.txt", []byte("deep\n"))
	mk("names/with space", []byte("space\n"))
	mk("names/ünïcødé", []byte("unicode\n"))
	mk("names/"+strings.Repeat("n", 255), []byte("long name\n"))
	for i := 0; i < bigDirEntries; i++ {
		mk(fmt.Sprintf("bigdir/entry-with-a-fairly-long-name-%05d", i), nil)
	}

	// Block maps on 1 KiB blocks: 12 direct, then 256 single, 65536
	// double, then triple indirect from 64.3 MiB; on 4 KiB blocks the
	// triple indirect starts just past 4 GiB.
	tind := filepath.Join(dir, "sparse", "tind.bin")
	os.MkdirAll(filepath.Dir(tind), 0o755)
	const tindSize = 70<<20 + 5000
	writeSparse(t, tind, tindSize, map[int64][]byte{
		0:                pattern(5000, 1),  // direct
		20 << 10:         pattern(3000, 2),  // single indirect (1 KiB)
		300 << 10:        pattern(9000, 3),  // double indirect
		64<<20 + 400<<10: pattern(70000, 4), // triple indirect
		tindSize - 5000:  pattern(5000, 5),
	})
	const bigSize = 5<<30 + 12345
	writeSparse(t, filepath.Join(dir, "sparse", "big5g.bin"), bigSize, map[int64][]byte{
		0:               pattern(4096, 6),
		4<<30 + 1<<20:   pattern(10000, 7), // past 4 GiB: i_size_high, triple indirect on 4 KiB
		bigSize - 12345: pattern(12345, 8),
	})
	// Every other 4 KiB: a hole between each data extent, enough extents
	// for a tree of depth 1 (4 KiB) or 2 (1 KiB blocks).
	frag := map[int64][]byte{}
	for i := 0; i < fragChunks; i++ {
		frag[int64(i)*8192] = pattern(4096, uint64(100+i))
	}
	writeSparse(t, filepath.Join(dir, "frag.bin"), fragChunks*8192-4096, frag)
	// Holes only, and 1 byte at the end; fallocate later makes it
	// unwritten extents over blocks full of garbage.
	writeSparse(t, filepath.Join(dir, "unw.bin"), 200<<10+1, map[int64][]byte{200 << 10: {'x'}})

	link("short/target", "links/fast")
	link(strings.Repeat("slow-target/", 10), "links/slow120") // inline on inline_data
	link(strings.Repeat("L", 500), "links/slow500")
	link("../d0/f0.bin", "links/rel")
	link(strings.Repeat("x", 59), "links/fast59")
	link(strings.Repeat("y", 60), "links/slow60")

	os.MkdirAll(filepath.Join(dir, "dev"), 0o755)
	tooltest.Run(t, "mknod", filepath.Join(dir, "dev", "null"), "c", "1", "3")
	tooltest.Run(t, "mknod", filepath.Join(dir, "dev", "loop"), "b", "7", "0")
	tooltest.Run(t, "mknod", filepath.Join(dir, "dev", "fifo"), "p")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "dev", "sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	for p, m := range map[string]os.FileMode{
		"d0/f0.bin":    os.ModeSetuid | 0o755,
		"d1/f1.bin":    os.ModeSetgid | 0o640,
		"empty":        os.ModeSticky | os.ModeSetgid | 0o777,
		"small/s10":    0o400,
		"nested/a/b/c": 0o700,
	} {
		if err := os.Chmod(filepath.Join(dir, p), m); err != nil {
			t.Fatal(err)
		}
	}
	// Distinct mtimes, one before 1970; children first so setting a
	// directory's time sticks.
	var paths []string
	filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.Type()&iofs.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	slices.Reverse(paths)
	for i, p := range paths {
		// Within a signed 32-bit second count: mke2fs -d copies no more.
		mt := time.Unix(100000000+int64(i)*7654321%2000000000, 0)
		if i%7 == 3 {
			mt = time.Date(1960, 5, 1, 12, 0, int(i%60), 0, time.UTC)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// nsPath gets nanoseconds and a post-2038 date (epoch bits) by debugfs.
const nsPath = "d2/f2.bin"

// fixture is a filesystem image and what is known of it.
type fixture struct {
	lay   layout
	img   string
	src   string
	extra map[string]string // path in the image only -> source file with its contents
	fs    *Files
}

func buildImage(t *testing.T, lay layout, src string) *fixture {
	t.Helper()
	fx := &fixture{lay: lay, src: src, img: tooltest.Garbage(t, 160<<20), extra: map[string]string{}}
	args := append([]string{"-q", "-F", "-E", "nodiscard", "-d", src}, lay.args...)
	runCodes(t, []int{0}, lay.mkfs, append(args, fx.img)...)

	var cmds []string
	if lay.extents {
		// Unwritten extents over the holes of unw.bin.
		cmds = append(cmds, fmt.Sprintf("fallocate /unw.bin 0 %d", 200<<10/lay.blockSize-1))
	}
	if lay.inodeSize > 128 {
		// Nanoseconds 0x1234567b>>2 and epoch bits 3, the largest.
		cmds = append(cmds, "sif "+q(nsPath)+" mtime_extra 0x1234567b")
	}
	if lay.inline {
		// libext2fs never moves directory entries into the system.data
		// attribute (the kernel does): put one there by hand, a hard
		// link to small/s10.
		st := debugfs(t, fx.img, false, "stat /small/s10")["stat /small/s10"]
		m := regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(st)
		if m == nil {
			t.Fatalf("no inode in %q", st)
		}
		ino, _ := strconv.Atoi(m[1])
		name := "in_attr_entry"
		v := binary.LittleEndian.AppendUint32(nil, uint32(ino))
		v = binary.LittleEndian.AppendUint16(v, 32)
		v = append(v, byte(len(name)), 1)
		v = append(v, name...)
		v = append(v, make([]byte, 32-len(v))...)
		vf := filepath.Join(t.TempDir(), "value")
		os.WriteFile(vf, v, 0o644)
		cmds = append(cmds, "ea_set -f "+vf+" /xdir system.data", "sif /xdir size 92", "sif /small/s10 links_count 2")
		fx.extra["xdir/in_attr_entry"] = "small/s10"
	}
	if len(cmds) > 0 {
		debugfs(t, fx.img, true, cmds...)
	}
	runCodes(t, []int{0}, "e2fsck", "-fn", fx.img)
	// Rebuild every directory, indexing the big one.
	runCodes(t, []int{0, 1}, "e2fsck", "-fyD", fx.img)
	runCodes(t, []int{0}, "e2fsck", "-fn", fx.img)
	fx.fs = openImage(t, fx.img)
	return fx
}

func openImage(t testing.TB, img string) *Files {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	fs, err := OpenFiles(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// checkExercised makes sure the image holds what the layout is there to
// test, as dumpe2fs and debugfs see it.
func checkExercised(t *testing.T, fx *fixture) {
	lay := fx.lay
	hdr := runCodes(t, []int{0}, "dumpe2fs", "-h", fx.img)
	feat := regexp.MustCompile(`Filesystem features:\s+(.*)`).FindStringSubmatch(hdr)
	if feat == nil {
		t.Fatalf("no features in dumpe2fs:\n%s", hdr)
	}
	have := strings.Fields(feat[1])
	for _, f := range lay.features {
		if off, ok := strings.CutPrefix(f, "^"); ok == slices.Contains(have, off) {
			t.Errorf("feature %s: have %v", f, have)
		}
	}
	// The inodes must span groups, or a wrong descriptor size or
	// inode table would go unnoticed.
	ipg := regexp.MustCompile(`Inodes per group:\s+(\d+)`).FindStringSubmatch(hdr)
	if ipg == nil {
		t.Fatalf("no inodes per group in dumpe2fs:\n%s", hdr)
	}
	if n, _ := strconv.Atoi(ipg[1]); n >= bigDirEntries {
		t.Errorf("%d inodes per group: all files are in group 0", n)
	}
	for k, want := range map[string]int{"Block size": lay.blockSize, "Inode size": lay.inodeSize} {
		m := regexp.MustCompile(k + `:\s+(\d+)`).FindStringSubmatch(hdr)
		if m == nil || m[1] != strconv.Itoa(want) {
			t.Errorf("%s: %v, want %d", k, m, want)
		}
	}

	out := debugfs(t, fx.img, false, "stat /sparse/tind.bin", "stat /sparse/big5g.bin", "ex /frag.bin", "ex /unw.bin",
		"stat /bigdir", "htree_dump /bigdir", "stat /small/s10", "stat /small/s100", "stat /smalldir", "stat /xdir",
		"stat /links/slow120", "stat /links/slow500", "stat /links/slow60")
	if !lay.extents {
		for _, p := range []string{"/sparse/tind.bin", "/sparse/big5g.bin"} {
			if lay.blockSize > 1024 && p == "/sparse/tind.bin" {
				continue // only double indirect on 4 KiB blocks
			}
			if !strings.Contains(out["stat "+p], "(TIND)") {
				t.Errorf("%s uses no triple indirect block:\n%s", p, out["stat "+p])
			}
		}
	} else {
		// The first row of "ex" is the root: "level/max-depth ...".
		m := regexp.MustCompile(`(?m)^\s*0/\s*(\d+)\s`).FindStringSubmatch(out["ex /frag.bin"])
		want := 1
		if lay.blockSize == 1024 {
			want = 2
		}
		if depth, _ := strconv.Atoi(m[1]); m == nil || depth < want {
			t.Errorf("frag.bin extent tree not %d deep:\n%s", want, out["ex /frag.bin"])
		}
		if !strings.Contains(out["ex /unw.bin"], "Uninit") {
			t.Errorf("unw.bin has no unwritten extent:\n%s", out["ex /unw.bin"])
		}
		if !strings.Contains(out["stat /links/slow500"], "EXTENTS:") {
			t.Errorf("slow symlink has no extents:\n%s", out["stat /links/slow500"])
		}
	}
	if flags := regexp.MustCompile(`Flags: 0x([0-9a-f]+)`).FindStringSubmatch(out["stat /bigdir"]); flags == nil || !strings.Contains(out["htree_dump /bigdir"], "Indirect levels") {
		t.Errorf("bigdir is not hash-indexed:\n%s", out["stat /bigdir"])
	} else if v, _ := strconv.ParseUint(flags[1], 16, 32); v&0x1000 == 0 {
		t.Errorf("bigdir lacks the index flag: %s", flags[0])
	}
	if !strings.Contains(out["stat /links/slow60"], "BLOCKS:") && !strings.Contains(out["stat /links/slow60"], "EXTENTS:") && !lay.inline {
		t.Errorf("60-byte symlink is not slow:\n%s", out["stat /links/slow60"])
	}
	if lay.inline {
		if !strings.Contains(out["stat /links/slow120"], "Flags: 0x10000000") {
			t.Errorf("120-byte symlink is not inline:\n%s", out["stat /links/slow120"])
		}
		for p, size := range map[string]string{"/small/s10": "60", "/small/s100": "100", "/smalldir": "60", "/xdir": "92"} {
			if !strings.Contains(out["stat "+p], "Size of inline data: "+size+"\n") {
				t.Errorf("%s: not %s bytes of inline data:\n%s", p, size, out["stat "+p])
			}
		}
	}
}

// dfStat is what debugfs stat says of an inode.
type dfStat struct {
	ino        uint32
	typ        string
	mode       uint32 // permission bits incl. setuid, setgid, sticky
	size       int64
	mtime      time.Time
	nsec       int64 // -1: the inode has no nanoseconds
	fastTarget string
}

var (
	reInode = regexp.MustCompile(`Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)`)
	reSize  = regexp.MustCompile(`(?m)^User:.*Size: (\d+)`)
	reMtime = regexp.MustCompile(`(?m)^\s*mtime: 0x[0-9a-f]+(?::([0-9a-f]+))? -- (.+)$`)
	reFast  = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

func parseStat(t testing.TB, p, s string) dfStat {
	t.Helper()
	m, sz, mt := reInode.FindStringSubmatch(s), reSize.FindStringSubmatch(s), reMtime.FindStringSubmatch(s)
	if m == nil || sz == nil || mt == nil {
		t.Fatalf("%s: cannot parse debugfs stat:\n%s", p, s)
	}
	var st dfStat
	ino, _ := strconv.ParseUint(m[1], 10, 32)
	mode, _ := strconv.ParseUint(m[3], 8, 32)
	st.ino, st.typ, st.mode = uint32(ino), m[2], uint32(mode)
	st.size, _ = strconv.ParseInt(sz[1], 10, 64)
	tm, err := time.Parse("Mon Jan _2 15:04:05 2006", mt[2])
	if err != nil {
		t.Fatalf("%s: mtime %q: %v", p, mt[2], err)
	}
	st.mtime, st.nsec = tm, -1
	if mt[1] != "" {
		x, _ := strconv.ParseUint(mt[1], 16, 32)
		st.nsec = int64(x >> 2)
	}
	if f := reFast.FindStringSubmatch(s); f != nil {
		st.fastTarget = f[1]
	}
	return st
}

var dfTypes = map[string]iofs.FileMode{
	"regular": 0, "directory": iofs.ModeDir, "symlink": iofs.ModeSymlink, "FIFO": iofs.ModeNamedPipe,
	"socket": iofs.ModeSocket, "character special": iofs.ModeDevice | iofs.ModeCharDevice, "block special": iofs.ModeDevice,
}

// unixPerm is the io/fs permission bits of m as i_mode spells them.
func unixPerm(m iofs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&iofs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&iofs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&iofs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// cmpBufs holds sameReader's buffers: two fresh MiB for each of the
// thousands of files compared cost more under the race detector than
// the comparisons themselves.
var cmpBufs = sync.Pool{New: func() any { return &[2][]byte{make([]byte, 1<<20), make([]byte, 1<<20)} }}

// sameReader compares two readers to the end, a MiB at a time.
func sameReader(a, b io.Reader) (int64, error) {
	bufs := cmpBufs.Get().(*[2][]byte)
	defer cmpBufs.Put(bufs)
	x, y := bufs[0], bufs[1]
	var off int64
	for {
		n, errA := io.ReadFull(a, x)
		m, errB := io.ReadFull(b, y)
		if n != m || !bytes.Equal(x[:n], y[:m]) {
			i := 0
			for i < min(n, m) && x[i] == y[i] {
				i++
			}
			return off, fmt.Errorf("differ at byte %d (lengths %d, %d)", off+int64(i), off+int64(n), off+int64(m))
		}
		off += int64(n)
		if errA != nil || errB != nil {
			if (errA == io.EOF || errA == io.ErrUnexpectedEOF) && (errB == io.EOF || errB == io.ErrUnexpectedEOF) {
				return off, nil
			}
			return off, fmt.Errorf("read errors %v, %v", errA, errB)
		}
	}
}

// compareFile checks a regular file's bytes against the source tree and,
// when given, against debugfs's dump.
func compareFile(t *testing.T, fx *fixture, rel, srcRel, dump string, size int64) {
	rc, err := fx.fs.Open(rel)
	if err != nil {
		t.Errorf("open %s: %v", rel, err)
		return
	}
	defer rc.Close()
	sf, err := os.Open(filepath.Join(fx.src, srcRel))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if size > 1<<30 {
		// Too big to read whole in every layout: compare each data
		// region, its edges, holes, and the end.
		ra := rc.(io.ReaderAt)
		for _, off := range []int64{0, 4000, 1 << 20, 4<<30 - 100, 4<<30 + 1<<20 - 3, 4<<30 + 1<<20 + 9990, size - 20000, size - 1} {
			x, y := make([]byte, 16384), make([]byte, 16384)
			n, errA := ra.ReadAt(x, off)
			m, errB := sf.ReadAt(y, off)
			if n != m || !bytes.Equal(x[:n], y[:m]) || (errA == nil) != (errB == nil) {
				t.Errorf("%s at %d: %d bytes (%v) vs source %d bytes (%v), equal %v", rel, off, n, errA, m, errB, bytes.Equal(x[:n], y[:m]))
			}
		}
		return
	}
	if _, err := sameReader(rc, sf); err != nil {
		t.Errorf("%s vs source: %v", rel, err)
	}
	if dump != "" {
		rc2, _ := fx.fs.Open(rel)
		df, err := os.Open(dump)
		if err != nil {
			t.Errorf("debugfs dump of %s: %v", rel, err)
			return
		}
		defer df.Close()
		var dr io.Reader = df
		if st, _ := df.Stat(); fx.lay.inline && size < 60 && st.Size() == 60 {
			// debugfs 1.47.0 dumps all 60 bytes of i_block for a
			// short inline file.
			dr = io.LimitReader(df, size)
		}
		if _, err := sameReader(rc2, dr); err != nil {
			t.Errorf("%s vs debugfs dump: %v", rel, err)
		}
	}
}

// compareTree walks the image through Files and checks every file and
// directory against the source tree and debugfs.
func compareTree(t *testing.T, fx *fixture) {
	type entry struct {
		rel string
		fi  File
	}
	var all []entry
	var dirs []string
	var walk func(rel string)
	walk = func(rel string) {
		dirs = append(dirs, rel)
		ents, err := fx.fs.ReadDir(rel)
		if err != nil {
			t.Fatalf("readdir %q: %v", rel, err)
		}
		for _, e := range ents {
			p := path.Join(rel, e.Name)
			all = append(all, entry{p, e})
			if e.Mode.IsDir() {
				walk(p)
			}
		}
	}
	walk("")

	// Listings: names and inodes in on-disk order as debugfs ls -p has
	// them; names as a set as the source tree has them.
	var cmds []string
	for _, d := range dirs {
		cmds = append(cmds, "ls -p "+q(d))
	}
	ls := debugfs(t, fx.img, false, cmds...)
	byName := map[string]File{}
	for _, e := range all {
		byName[e.rel] = e.fi
	}
	for _, d := range dirs {
		var want, got []string
		for _, line := range strings.Split(ls["ls -p "+q(d)], "\n") {
			f := strings.Split(line, "/")
			// ls -p shows empty slots too, as inode 0.
			if len(f) < 7 || f[1] == "0" || f[5] == "." || f[5] == ".." {
				continue
			}
			want = append(want, f[1]+" "+f[5])
		}
		ents, _ := fx.fs.ReadDir(d)
		var names []string
		for _, e := range ents {
			got = append(got, fmt.Sprint(e.Inode, " ", e.Name))
			names = append(names, e.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("directory %q: %d entries %.300q..., debugfs ls -p has %d: %.300q...", d, len(got), got, len(want), want)
		}
		if d == "lost+found" {
			continue
		}
		srcEnts, err := os.ReadDir(filepath.Join(fx.src, d))
		if err != nil {
			t.Fatal(err)
		}
		var srcNames []string
		for _, e := range srcEnts {
			srcNames = append(srcNames, e.Name())
		}
		if d == "" {
			srcNames = append(srcNames, "lost+found")
		}
		for x := range fx.extra {
			if path.Dir(x) == d {
				srcNames = append(srcNames, path.Base(x))
			}
		}
		slices.Sort(srcNames)
		slices.Sort(names)
		if !slices.Equal(names, srcNames) {
			t.Errorf("directory %q: names %.300q, source has %.300q", d, names, srcNames)
		}
	}
	if len(all) < bigDirEntries+50 {
		t.Fatalf("only %d entries found", len(all))
	}

	// Every entry against debugfs stat (but the thousands of empty
	// files in bigdir) and the source tree.
	cmds = cmds[:0]
	dumpDir := t.TempDir()
	dumps := map[string]string{}
	for i, e := range all {
		if strings.HasPrefix(e.rel, "bigdir/") && !strings.HasSuffix(e.rel, "00") {
			continue
		}
		cmds = append(cmds, "stat "+q(e.rel))
		if e.fi.Mode.IsRegular() && e.fi.Size < 100<<20 {
			dumps[e.rel] = filepath.Join(dumpDir, strconv.Itoa(i))
			cmds = append(cmds, "dump -p "+q(e.rel)+" "+dumps[e.rel])
		}
	}
	cmds = append(cmds, "stat /")
	stats := debugfs(t, fx.img, false, cmds...)
	root, err := fx.fs.Stat("")
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, entry{"", root})
	regular, checked := 0, 0
	for _, e := range all {
		fi := e.fi
		s, ok := stats["stat "+q(e.rel)]
		if ok {
			checked++
			st := parseStat(t, e.rel, s)
			if fi.Inode != st.ino || fi.Size != st.size || unixPerm(fi.Mode) != st.mode || fi.Mode.Type() != dfTypes[st.typ] {
				t.Errorf("%q: inode %d size %d mode %v; debugfs: inode %d size %d mode %o type %s", e.rel, fi.Inode, fi.Size, fi.Mode, st.ino, st.size, st.mode, st.typ)
			}
			if !fi.ModTime.Truncate(time.Second).Equal(st.mtime) || (st.nsec >= 0 && int64(fi.ModTime.Nanosecond()) != st.nsec) {
				t.Errorf("%q: mtime %v, debugfs %v + %d ns", e.rel, fi.ModTime, st.mtime, st.nsec)
			}
			if st.fastTarget != "" && fi.Target != st.fastTarget {
				t.Errorf("%q: target %q, debugfs %q", e.rel, fi.Target, st.fastTarget)
			}
		}
		if e.rel == "" || e.rel == "lost+found" {
			continue
		}
		if again, err := fx.fs.Stat(e.rel); err != nil || again != fi {
			t.Errorf("stat %q: %+v, %v; readdir gave %+v", e.rel, again, err, fi)
		}
		srcRel := e.rel
		if x, ok := fx.extra[e.rel]; ok {
			srcRel = x
		}
		si, err := os.Lstat(filepath.Join(fx.src, srcRel))
		if err != nil {
			t.Errorf("%q: not in the source: %v", e.rel, err)
			continue
		}
		if fi.Mode != si.Mode() {
			t.Errorf("%q: mode %v, source %v", e.rel, fi.Mode, si.Mode())
		}
		if e.rel == nsPath && fx.lay.inodeSize > 128 {
			// Epoch 3 adds 3<<32 seconds; nanoseconds 0x1234567b>>2.
			if want := si.ModTime().Unix() + 3<<32; fi.ModTime.Unix() != want || fi.ModTime.Nanosecond() != 0x1234567b>>2 {
				t.Errorf("%q: mtime %v (%d), want %d s + %d ns", e.rel, fi.ModTime, fi.ModTime.Unix(), want, 0x1234567b>>2)
			}
		} else if _, extra := fx.extra[e.rel]; !extra && fi.ModTime.Unix() != si.ModTime().Unix() {
			// mke2fs -d copies whole seconds.
			t.Errorf("%q: mtime %v, source %v", e.rel, fi.ModTime, si.ModTime())
		}
		switch {
		case si.Mode().IsRegular():
			regular++
			if fi.Size != si.Size() {
				t.Errorf("%q: size %d, source %d", e.rel, fi.Size, si.Size())
			}
			compareFile(t, fx, e.rel, srcRel, dumps[e.rel], fi.Size)
		case si.Mode()&iofs.ModeSymlink != 0:
			target, _ := os.Readlink(filepath.Join(fx.src, srcRel))
			if fi.Target != target || fi.Size != int64(len(target)) {
				t.Errorf("%q: target %q (size %d), source %q", e.rel, fi.Target, fi.Size, target)
			}
		}
	}
	if regular < bigDirEntries+30 || checked < 80 {
		t.Errorf("compared only %d regular files, %d against debugfs stat", regular, checked)
	}
}

func TestFiles(t *testing.T) {
	src := makeTree(t)
	for _, lay := range layouts {
		t.Run(lay.name, func(t *testing.T) {
			// Two at a time: one layout's mke2fs, debugfs or partclone
			// runs while another's Go side reads.
			t.Parallel()
			fx := buildImage(t, lay, src)
			checkExercised(t, fx)
			compareTree(t, fx)
			checkPaths(t, fx.fs)
		})
	}
}

// checkPaths checks path forms and the errors for bad ones.
func checkPaths(t *testing.T, fs *Files) {
	for _, p := range []string{"", ".", "/", "//", "d0/..", "/./"} {
		fi, err := fs.Stat(p)
		if err != nil || fi.Name != "/" || fi.Inode != rootIno || !fi.Mode.IsDir() {
			t.Errorf("stat %q: %+v, %v; want the root", p, fi, err)
		}
	}
	want, err := fs.Stat("nested/a/b/c/deep.txt")
	if err != nil || want.Name != "deep.txt" || want.Size != 5 {
		t.Fatalf("stat deep.txt: %+v, %v", want, err)
	}
	for _, p := range []string{"/nested/a/b/c/deep.txt", "nested//a/b/./c/deep.txt", "nested/a/../a/b/c/deep.txt"} {
		if fi, err := fs.Stat(p); err != nil || fi != want {
			t.Errorf("stat %q: %+v, %v", p, fi, err)
		}
	}
	for _, p := range []string{"missing", "nested/a/missing/x", "d0/F0.bin"} {
		_, err := fs.Stat(p)
		if !errors.Is(err, iofs.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("stat %q: %v; want not-exist naming the path", p, err)
		}
		if _, err := fs.Open(p); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("open %q: %v", p, err)
		}
	}
	for p, bad := range map[string]string{"d0/f0.bin/x": "d0/f0.bin", "links/rel/x": "links/rel", "dev/null/x/y": "dev/null"} {
		if _, err := fs.Stat(p); err == nil || !strings.Contains(err.Error(), bad+": not a directory") {
			t.Errorf("stat %q: %v; want %s not a directory", p, err, bad)
		}
	}
	if _, err := fs.ReadDir("d0/f0.bin"); err == nil || !strings.Contains(err.Error(), "d0/f0.bin: not a directory") {
		t.Errorf("readdir of a file: %v", err)
	}
	for _, p := range []string{"d0", "links/fast", "dev/null", "dev/fifo"} {
		if _, err := fs.Open(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("open %q: %v; want an error naming it", p, err)
		}
	}
	// The reader's other faces: Seek and ReadAt past the end.
	rc, err := fs.Open("d1/f4.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.(io.Seeker).Seek(4000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rc)
	if err != nil || len(rest) != 95 { // f4.bin is 4095 bytes
		t.Errorf("read after seek: %d bytes, %v", len(rest), err)
	}
	if n, err := rc.(io.ReaderAt).ReadAt(make([]byte, 10), 4090); n != 5 || err != io.EOF {
		t.Errorf("ReadAt at the end: %d, %v", n, err)
	}
}

// countingReader counts the reads reaching the image.
type countingReader struct {
	r     io.ReaderAt
	reads atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.r.ReadAt(p, off)
}

// TestSequentialRead reads big files in large pieces: each piece must
// cost one read per extent or indirect run, not per block, and a 100 MiB
// file must go at disk speed.
func TestSequentialRead(t *testing.T) {
	src := t.TempDir()
	const size = 100 << 20
	data := pattern(size, 42)
	if err := os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	frag := map[int64][]byte{}
	for i := 0; i < fragChunks; i++ {
		frag[int64(i)*8192] = pattern(4096, uint64(100+i))
	}
	writeSparse(t, filepath.Join(src, "frag.bin"), fragChunks*8192-4096, frag)
	want := sha256.Sum256(data)
	for _, lay := range []layout{layouts[1], layouts[2], layouts[3]} {
		t.Run(lay.name, func(t *testing.T) {
			img := tooltest.Garbage(t, 200<<20)
			runCodes(t, []int{0}, lay.mkfs, append(append([]string{"-q", "-F", "-E", "nodiscard", "-d", src}, lay.args...), img)...)
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cr := &countingReader{r: f}
			fs, err := OpenFiles(cr, 200<<20)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"big.bin", "frag.bin"} {
				rc, err := fs.Open(name)
				if err != nil {
					t.Fatal(err)
				}
				before := cr.reads.Load()
				start := time.Now()
				h := sha256.New()
				n, err := io.CopyBuffer(h, struct{ io.Reader }{rc}, make([]byte, 1<<20))
				el := time.Since(start)
				reads := cr.reads.Load() - before
				if err != nil {
					t.Fatal(err)
				}
				switch name {
				case "big.bin":
					if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
						t.Errorf("big.bin: %d bytes, wrong contents", n)
					}
					// 100 pieces of 1 MiB, a few runs each at most
					// (mke2fs allocates big.bin nearly contiguously).
					if reads > 500 {
						t.Errorf("big.bin: %d reads for 100 MiB", reads)
					}
					t.Logf("big.bin: %d MiB in %v (%.0f MB/s, sha256 included), %d reads", n>>20, el, float64(n)/el.Seconds()/1e6, reads)
				case "frag.bin":
					// One read per data extent, plus the tree's nodes.
					if reads > fragChunks+100 {
						t.Errorf("frag.bin: %d reads for %d extents", reads, fragChunks)
					}
					t.Logf("frag.bin: %d reads for %d data runs", reads, fragChunks)
				}
			}
		})
	}
}

// BenchmarkRead measures reading a 100 MiB file without hashing it.
func BenchmarkRead(b *testing.B) {
	src := b.TempDir()
	if err := os.WriteFile(filepath.Join(src, "big.bin"), pattern(100<<20, 7), 0o644); err != nil {
		b.Fatal(err)
	}
	img := tooltest.Garbage(b, 200<<20)
	tooltest.Run(b, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, img)
	fs := openImage(b, img)
	buf := make([]byte, 1<<20)
	b.SetBytes(100 << 20)
	for b.Loop() {
		rc, err := fs.Open("big.bin")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// smallTree is a tree with one of each kind of thing, small enough for
// a 1 MiB filesystem: the corruption tests and the fuzz seeds use it.
func smallTree(t testing.TB) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "d", "sub"), 0o755)
	for name, n := range map[string]int{"f.bin": 4095, "tiny": 10, "inl": 100, "d/x": 3, "d/y": 70, "d/sub/z": 1} {
		if err := os.WriteFile(filepath.Join(dir, name), pattern(n, uint64(n)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Direct, single and double indirect blocks on 1 KiB.
	writeSparse(t, filepath.Join(dir, "ind.bin"), 300<<10, map[int64][]byte{0: {1}, 13 << 10: {2}, 300<<10 - 1: {3}})
	writeSparse(t, filepath.Join(dir, "tind.bin"), 65<<20, map[int64][]byte{0: {1}, 65<<20 - 1: {2}})
	frag := map[int64][]byte{}
	for i := 0; i < 8; i++ {
		frag[int64(i)*2048] = pattern(1024, uint64(i))
	}
	writeSparse(t, filepath.Join(dir, "frag.bin"), 8*2048-1024, frag)
	os.Symlink("f.bin", filepath.Join(dir, "fast"))
	os.Symlink(strings.Repeat("s", 100), filepath.Join(dir, "slow"))
	tooltest.Run(t, "mknod", filepath.Join(dir, "fifo"), "p")
	return dir
}

// smallImage makes a 1 MiB filesystem of smallTree on zeros and returns
// the image's path.
func smallImage(t testing.TB, mkfs string, args ...string) string {
	img := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"-q", "-F", "-b", "1024", "-N", "32", "-m", "0", "-O", "^resize_inode", "-d", smallTree(t)}, args...)
	tooltest.Run(t, mkfs, append(all, img)...)
	return img
}

// inodeOffset asks debugfs where path's inode is.
func inodeOffset(t testing.TB, img, p string) int64 {
	out := debugfs(t, img, false, "imap "+q(p))["imap "+q(p)]
	m := regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("imap %s: %s", p, out)
	}
	b, _ := strconv.ParseInt(m[1], 10, 64)
	o, _ := strconv.ParseInt(m[2], 16, 64)
	return b*1024 + o
}

// readAll reads every byte of a file through Files.
func readAll(fs *Files, name string) ([]byte, error) {
	rc, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// damagedEntry lists dir and returns the Err of its one damaged entry:
// the listing itself must not fail, and its other entries must come
// whole (one damaged inode does not hide its siblings, as debugfs dumps
// them). Nil if no entry is damaged.
func damagedEntry(fs *Files, dir string) error {
	ents, err := fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("the listing failed: %w", err)
	}
	var bad []File
	for _, e := range ents {
		if e.Err != nil {
			bad = append(bad, e)
		} else if e.Mode == 0 || e.Inode == 0 {
			return fmt.Errorf("%q listed without being described", e.Name)
		}
	}
	switch {
	case len(bad) == 0:
		return nil
	case len(bad) > 1 || len(ents) < 2:
		return fmt.Errorf("%d of %d entries damaged, want one among good ones", len(bad), len(ents))
	}
	return bad[0].Err
}

// lostEntries lists dir, whose only block is damaged from its first
// entry, and returns the Err of the nameless entry that stands for its
// lost entries: the listing itself must not fail. Nil if it lists whole.
func lostEntries(fs *Files, dir string) error {
	ents, err := fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("the listing failed: %w", err)
	}
	last := len(ents) - 1
	if last < 0 || ents[last].Err == nil {
		return nil
	}
	var lost *vfs.LostEntriesError
	if last != 0 || ents[last].Name != "" || !errors.As(ents[last].Err, &lost) {
		return fmt.Errorf("%d entries, the last %q with %v: want one without a name, its Err a LostEntriesError", len(ents), ents[last].Name, ents[last].Err)
	}
	return ents[last].Err
}

// TestCorrupt damages real images where debugfs says the structures are
// and expects a CorruptError that says what and where.
func TestCorrupt(t *testing.T) {
	ext4 := smallImage(t, "mkfs.ext4", "-O", "^has_journal")
	ext2 := smallImage(t, "mkfs.ext2")
	le := binary.LittleEndian
	// The depth-1 extent tree of frag.bin: its one index points at a
	// leaf block.
	ex := debugfs(t, ext4, false, "ex /frag.bin")["ex /frag.bin"]
	m := regexp.MustCompile(`(?m)^\s*0/\s*1\s+1/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)`).FindStringSubmatch(ex)
	if m == nil {
		t.Fatalf("frag.bin has no depth-1 tree:\n%s", ex)
	}
	leaf, _ := strconv.ParseInt(m[1], 10, 64)
	dirBlocks := strings.Fields(debugfs(t, ext2, false, "blocks /d")["blocks /d"])
	if len(dirBlocks) != 1 {
		t.Fatalf("blocks /d: %q", dirBlocks)
	}
	dirBlock, _ := strconv.ParseInt(dirBlocks[0], 10, 64)

	for _, tc := range []struct {
		name, img string
		damage    func(b []byte)
		do        func(fs *Files) error
		want      []string // in the error
	}{
		{"extent magic", ext4,
			func(b []byte) { b[inodeOffset(t, ext4, "f.bin")+iBlockOff] ^= 0xff },
			func(fs *Files) error { _, err := readAll(fs, "f.bin"); return err },
			[]string{"extent header magic", "inode 1"}},
		{"extent past the end", ext4,
			func(b []byte) { le.PutUint32(b[inodeOffset(t, ext4, "f.bin")+iBlockOff+12+8:], 0xffffff00) },
			func(fs *Files) error { _, err := readAll(fs, "f.bin"); return err },
			[]string{"block 4294967040", "outside the filesystem"}},
		{"extent leaf magic", ext4,
			func(b []byte) { b[leaf*1024] = 0 },
			func(fs *Files) error { _, err := readAll(fs, "frag.bin"); return err },
			[]string{"extent header magic", fmt.Sprintf("at byte %d", leaf*1024)}},
		{"extent tree loop", ext4,
			// The leaf becomes an index pointing at itself.
			func(b []byte) {
				le.PutUint16(b[leaf*1024+6:], 1)
				le.PutUint32(b[leaf*1024+12+4:], uint32(leaf))
				le.PutUint16(b[leaf*1024+12+8:], 0)
			},
			func(fs *Files) error { _, err := readAll(fs, "frag.bin"); return err },
			[]string{"depth 1 below one of depth 1"}},
		{"block past the end", ext2,
			func(b []byte) { le.PutUint32(b[inodeOffset(t, ext2, "f.bin")+iBlockOff:], 0xfffffff0) },
			func(fs *Files) error { _, err := readAll(fs, "f.bin"); return err },
			[]string{"block 4294967280", "logical block 0"}},
		{"indirect past the end", ext2,
			func(b []byte) { le.PutUint32(b[inodeOffset(t, ext2, "ind.bin")+iBlockOff+12*4:], 1<<20) },
			func(fs *Files) error { _, err := readAll(fs, "ind.bin"); return err },
			[]string{"indirect block 1048576 is outside"}},
		{"rec_len 0", ext2,
			func(b []byte) { le.PutUint16(b[dirBlock*1024+4:], 0) },
			func(fs *Files) error { return lostEntries(fs, "d") },
			[]string{"directory entry length 0", fmt.Sprintf("at byte %d", dirBlock*1024)}},
		{"rec_len past the block", ext2,
			func(b []byte) { le.PutUint16(b[dirBlock*1024+12+4:], 1024) },
			func(fs *Files) error { _, err := fs.Stat("d/y"); return err },
			[]string{"directory entry length 1024", fmt.Sprintf("at byte %d", dirBlock*1024+12)}},
		{"free inode in a directory", ext2,
			func(b []byte) { le.PutUint16(b[inodeOffset(t, ext2, "d/x"):], 0) },
			func(fs *Files) error { return damagedEntry(fs, "d") },
			[]string{"file type 0"}},
		{"inode number too big", ext2,
			func(b []byte) { le.PutUint32(b[dirBlock*1024+24:], 1<<30) },
			func(fs *Files) error { return damagedEntry(fs, "d") },
			[]string{"inode 1073741824 does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(tc.img)
			if err != nil {
				t.Fatal(err)
			}
			if fs, err := OpenFiles(bytes.NewReader(b), int64(len(b))); err != nil || tc.do(fs) != nil {
				t.Fatalf("undamaged: %v / %v", err, tc.do(fs))
			}
			tc.damage(b)
			fs, err := OpenFiles(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				err = tc.do(fs)
			}
			var ce *block.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("%v, want a CorruptError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v: does not say %q", err, w)
				}
			}
		})
	}

	// Not ext at all, and a damaged superblock.
	if _, err := OpenFiles(bytes.NewReader(make([]byte, 1<<20)), 1<<20); !errors.Is(err, block.ErrNotMine) {
		t.Errorf("zeros: %v, want ErrNotMine", err)
	}
	b, _ := os.ReadFile(ext4)
	b[1024+0x18] = 40
	var ce *block.CorruptError
	if _, err := OpenFiles(bytes.NewReader(b), int64(len(b))); !errors.As(err, &ce) {
		t.Errorf("bad block size: %v", err)
	}
}

// FuzzFiles opens fuzzed filesystems and reads everything in them.
func FuzzFiles(f *testing.F) {
	for _, img := range []string{
		smallImage(f, "mkfs.ext4", "-O", "^has_journal"),
		smallImage(f, "mkfs.ext4", "-O", "^has_journal,inline_data,64bit", "-I", "256"),
		smallImage(f, "mkfs.ext2", "-O", "^filetype", "-I", "128"),
		smallImage(f, "mkfs.ext2"),
	} {
		b, err := os.ReadFile(img)
		if err != nil {
			f.Fatal(err)
		}
		// SparseReader serves zeros past the seed: keep the seeds small.
		f.Add(bytes.TrimRight(b, "\x00"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: 1 << 20}
		fs, err := FS.OpenFiles(r, r.Size)
		tooltest.FuzzFiles(t, fs, err)
		if err == nil {
			fs.Stat("d/sub/z/x")
		}
	})
}
