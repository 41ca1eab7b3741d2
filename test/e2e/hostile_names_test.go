package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"
)

// Images are untrusted and extract runs as root: a name out of an image
// that is not a plain name ("../../pwned", "a/b", "..", a backslash), or
// a second entry of one name, is skipped and named, never written
// anywhere; the rest of its directory comes out; the exit code is 3. ls
// and mount --files hide the same entries and show the rest.

// hostileFile is one file put in a test filesystem: its placeholder name
// (as the filesystem's tools make it) and what its name becomes when the
// image is patched ("" for a good file).
type hostileFile struct {
	name, becomes string
	data          []byte
	dir           bool
}

// outsideState describes every path under base but not under dest:
// type, mode, owner, size, content or link target. Compared before and
// after an extract into dest, it shows nothing was written outside.
func outsideState(t *testing.T, base, dest string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == dest {
			return filepath.SkipDir
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d %d", fi.Mode(), st.Uid, st.Gid, fi.Size())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			s += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			s += fmt.Sprintf(" %x", sha(b))
		}
		rel, _ := filepath.Rel(base, p)
		m[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameOutside(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range after {
		if before[k] != v {
			t.Errorf("written outside DEST: %s (%s, was %q)", k, v, before[k])
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("removed outside DEST: %s", k)
		}
	}
}

// treeNames lists every path under dir, relative, sorted.
func treeNames(t *testing.T, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatalf("walk %s: %v", p, err)
		}
		if rel, _ := filepath.Rel(dir, p); rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// checkSkips checks stderr names each bad name (quoted, as platter
// writes it) in a line saying it was skipped, and counts them all.
func checkSkips(t *testing.T, what, stderr string, bad []string) {
	t.Helper()
	for _, name := range bad {
		found := false
		for _, l := range strings.Split(stderr, "\n") {
			if strings.Contains(l, strconv.Quote(name)+" skipped") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: stderr does not name %q as skipped:\n%s", what, name, stderr)
		}
	}
	if n := strings.Count(stderr, " skipped: "); n != len(bad) {
		t.Errorf("%s: %d entries named as skipped, want %d:\n%s", what, n, len(bad), stderr)
	}
	if want := fmt.Sprintf("%d entries skipped", len(bad)); !strings.Contains(stderr, want) {
		t.Errorf("%s: no summary %q on stderr:\n%s", what, want, stderr)
	}
}

// checkHostileExtract extracts img whole to a DEST that does not exist
// yet, three directories below base (so that "../../x" lands in base),
// and checks nothing outside DEST changed, the good files came out as
// want holds them (and nothing else did), each bad name was named, and
// the exit code is 3. escapes are the exact places the bad names point
// at, which must not exist.
func checkHostileExtract(t *testing.T, img string, want map[string][]byte, bad []string, escapes func(base, dest string) []string) {
	t.Helper()
	base := t.TempDir()
	parent := filepath.Join(base, "a", "b", "c")
	os.MkdirAll(parent, 0o755)
	dest := filepath.Join(parent, "dest")
	before := outsideState(t, base, dest)
	stdout, stderr, code := run(t, "extract", img, "/", dest)
	t.Logf("extract:\n%s%s", stdout, stderr)
	if code != 3 {
		t.Errorf("extract: exit %d, want 3 (damaged)\n%s%s", code, stdout, stderr)
	}
	for _, p := range escapes(base, dest) {
		if _, err := os.Lstat(p); err == nil {
			b, _ := os.ReadFile(p)
			t.Errorf("extract wrote %s, outside DEST (%q)", p, b)
		}
	}
	sameOutside(t, before, outsideState(t, base, dest))
	checkSkips(t, "extract", stderr, bad)
	var names []string
	for p, data := range want {
		names = append(names, p)
		got, err := os.ReadFile(filepath.Join(dest, p))
		if data == nil { // a directory
			if fi, err := os.Lstat(filepath.Join(dest, p)); err != nil || !fi.IsDir() {
				t.Errorf("%s: not extracted as a directory (%v)", p, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes extracted (%v), want %d, byte for byte", p, len(got), err, len(data))
		}
	}
	sort.Strings(names)
	if got := treeNames(t, dest); strings.Join(got, "\n") != strings.Join(names, "\n") {
		t.Errorf("DEST holds:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(names, "\n  "))
	}
}

// checkHostileLs lists the root: the good names, none of the bad, each
// bad one named on stderr, exit 3.
func checkHostileLs(t *testing.T, img string, good, bad []string) {
	t.Helper()
	stdout, stderr, code := run(t, "ls", img)
	if code != 3 {
		t.Errorf("ls: exit %d, want 3\n%s%s", code, stdout, stderr)
	}
	// One name a line.
	got := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	sort.Strings(got)
	sort.Strings(good)
	if strings.Join(got, "|") != strings.Join(good, "|") {
		t.Errorf("ls lists %q, want %q:\n%s", got, good, stdout)
	}
	checkSkips(t, "ls", stderr, bad)
}

// checkHostileMount mounts img's files: the root lists its good entries
// (no I/O error for the directory, no bad name), and the good files read
// back byte for byte.
// unmountPlatter ends the platter mount at mnt, trying again for a few
// seconds while the kernel still calls it busy (a file just read may
// hold it a moment), so that the test's temporary directory is not
// removed through a mount still there.
func unmountPlatter(t *testing.T, mnt string) {
	t.Helper()
	var stderr string
	for range 50 {
		var code int
		if _, stderr, code = run(t, "umount", mnt); code == 0 || strings.Contains(stderr, "is not mounted") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("platter umount %s: %s", mnt, stderr)
}

func checkHostileMount(t *testing.T, img string, good []string, want map[string][]byte) {
	t.Helper()
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", img, mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Errorf("mount --files: list the root: %v", err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	sort.Strings(got)
	sort.Strings(good)
	if strings.Join(got, "|") != strings.Join(good, "|") {
		t.Errorf("mount --files lists %q, want %q", got, good)
	}
	for p, data := range want {
		if data == nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || !bytes.Equal(b, data) {
			t.Errorf("mount --files: %s: %d bytes (%v), want %d", p, len(b), err, len(data))
		}
	}
}

// fatRootDir returns where a FAT12/16 image's root directory lies.
func fatRootDir(b []byte) (off, size int) {
	le := binary.LittleEndian
	bps, reserved, fats := int(le.Uint16(b[11:])), int(le.Uint16(b[14:])), int(b[16])
	entries, fatSectors := int(le.Uint16(b[17:])), int(le.Uint16(b[22:]))
	return (reserved + fats*fatSectors) * bps, entries * 32
}

// lfnChars are where the 13 UTF-16 characters of a long-file-name slot
// lie in its 32 bytes.
var lfnChars = []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

// lfnChecksum is the checksum of an 8.3 name that every slot of its long
// name holds.
func lfnChecksum(short []byte) byte {
	var sum byte
	for _, c := range short[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// fatRename finds the entry of img's root directory whose long name is
// from and writes the long name to in its slots (to must need as many),
// and the 8.3 name short if not "" (recomputing the slots' checksum).
func fatRename(t *testing.T, img, from, to, short string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	off, size := fatRootDir(b)
	var slots []int // the long name's slots before an 8.3 entry, as on disk (last part first)
	for p := off; p < off+size && b[p] != 0; p += 32 {
		if b[p] == 0xe5 {
			slots = nil
			continue
		}
		if b[p+11] == 0x0f {
			slots = append(slots, p)
			continue
		}
		var units []uint16
		for i := len(slots) - 1; i >= 0; i-- {
			for _, at := range lfnChars {
				units = append(units, le.Uint16(b[slots[i]+at:]))
			}
		}
		if i := slicesIndex(units, 0); i >= 0 {
			units = units[:i]
		}
		if string(utf16.Decode(units)) != from {
			slots = nil
			continue
		}
		if short != "" {
			copy(b[p:p+11], fmt.Sprintf("%-11s", short))
		}
		k := len(slots)
		u := utf16.Encode([]rune(to))
		if len(u) > 13*k || len(u) <= 13*(k-1) {
			t.Fatalf("%q does not fit the %d long-name slots of %q", to, k, from)
		}
		buf := make([]uint16, 13*k)
		for i := range buf {
			switch {
			case i < len(u):
				buf[i] = u[i]
			case i == len(u):
				buf[i] = 0
			default:
				buf[i] = 0xffff
			}
		}
		sum := lfnChecksum(b[p:])
		for i, s := range slots {
			seq := k - i
			b[s] = byte(seq)
			if i == 0 {
				b[s] |= 0x40
			}
			for j, at := range lfnChars {
				le.PutUint16(b[s+at:], buf[(seq-1)*13+j])
			}
			b[s+13] = sum
		}
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s: no entry named %q in the root directory", img, from)
}

func slicesIndex(u []uint16, v uint16) int {
	for i, x := range u {
		if x == v {
			return i
		}
	}
	return -1
}

// A FAT16 whose root directory holds, among good files, long names
// patched to escape: "../../pwned" (with the 8.3 name PWNED, so that the
// old extract found it again by its cleaned path and wrote it), a long
// run of "../" then an absolute path (a directory), "sub/slash-in", "..",
// a backslash, and a second "duplicate-name.txt" differing in case only.
func TestHostileNamesFAT(t *testing.T) {
	dir := t.TempDir()
	// The absolute place the long name points at: inside the test's
	// own directories, so even the old extract wrote nothing elsewhere.
	escapeDir := filepath.Join(t.TempDir(), "escape")
	long := strings.Repeat("../", 24) + strings.TrimPrefix(escapeDir, "/") + "/x"
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	files := []hostileFile{
		{name: "good-one.txt", data: []byte("good one\n")},
		{name: "sub", dir: true},
		{name: "sub/inner-file.txt", data: []byte("inner\n")},
		{name: "pwnedpwnedp", becomes: "../../pwned", data: []byte("PWNED 1\n")},
		{name: strings.Repeat("l", len(long)), becomes: long, dir: true},
		{name: "subxslash-in", becomes: "sub/slash-in", data: []byte("PWNED 3\n")},
		{name: "dotdot-placeh", becomes: "..", data: []byte("PWNED 4\n")},
		{name: "bsbsbsbsbsb", becomes: `..\..\pwned`, data: []byte("PWNED 5\n")},
		{name: "Duplicate-Name.txt", data: []byte("first\n")},
		{name: "Duplicate-Namf.txt", becomes: "duplicate-name.txt", data: []byte("second\n")},
		{name: "zz-last-good.bin", data: big},
	}
	fs := sparseFile(t, filepath.Join(dir, "fat.img"), 32<<20)
	sh(t, "mkfs.fat", "-F", "16", fs)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	for i, f := range files {
		if f.dir {
			sh(t, "mmd", "-i", fs, "::/"+f.name)
			continue
		}
		p := filepath.Join(src, fmt.Sprint(i))
		os.WriteFile(p, f.data, 0o644)
		sh(t, "mcopy", "-i", fs, p, "::/"+f.name)
	}
	// What the good files hold, as mtools reads them before the patch.
	want := map[string][]byte{"sub": nil}
	var good, bad []string
	for _, f := range files {
		if f.becomes != "" {
			bad = append(bad, f.becomes)
			continue
		}
		if !strings.Contains(f.name, "/") {
			good = append(good, f.name)
		}
		if !f.dir {
			out := filepath.Join(dir, "mtools-"+strings.ReplaceAll(f.name, "/", "-"))
			sh(t, "mcopy", "-n", "-i", fs, "::/"+f.name, out)
			want[f.name], _ = os.ReadFile(out)
		}
	}
	for _, f := range files {
		if f.becomes != "" {
			short := ""
			if f.becomes == "../../pwned" {
				short = "PWNED"
			}
			fatRename(t, fs, f.name, f.becomes, short)
		}
	}
	img := filepath.Join(dir, "fat.platter")
	ok(t, "create", "--progress", "none", fs, img)

	t.Run("extract", func(t *testing.T) {
		checkHostileExtract(t, img, want, bad, func(base, dest string) []string {
			return []string{
				filepath.Join(dest, "../../pwned"), filepath.Join(escapeDir, "x"), escapeDir,
				filepath.Join(dest, "sub", "slash-in"), filepath.Join(dest, `..\..\pwned`),
			}
		})
	})
	t.Run("ls", func(t *testing.T) { checkHostileLs(t, img, good, bad) })
	t.Run("mount", func(t *testing.T) { checkHostileMount(t, img, good, want) })
}

// ntfsRename replaces every occurrence of the UTF-16 name from in img by
// to (as long): the $FILE_NAME attribute in the file's MFT record and
// its entry in the directory's index. There must be exactly two (a name
// straddling a sector's end is hidden by the update sequence fixup).
func ntfsRename(t *testing.T, img, from, to string) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, tu := utf16le(from), utf16le(to)
	if len(f) != len(tu) {
		t.Fatalf("%q and %q differ in length", from, to)
	}
	if n := bytes.Count(b, f); n != 2 {
		t.Fatalf("%s: %q found %d times, want 2 (its MFT record and its index entry)", img, from, n)
	}
	if err := os.WriteFile(img, bytes.ReplaceAll(b, f, tu), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An NTFS made by mkntfs and filled through ntfs-3g, its names patched
// to "..\..\pwned", "../x" and "a/b" (each also a real path of the
// volume, so the old extract found what to write), an absolute path, and "dup.txt" beside
// "DUP.TXT" (ntfs-3g makes both; Windows sees one name).
func TestHostileNamesNTFS(t *testing.T) {
	dir := t.TempDir()
	// An absolute name: inside the test's own directories, so even an
	// extract that followed it wrote nothing elsewhere.
	abs := filepath.Join(t.TempDir(), "escape", "x")
	fs := sparseFile(t, filepath.Join(dir, "ntfs.img"), 32<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", fs)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "ntfs-3g", fs, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("fusermount", "-u", mnt).Run()
		}
	}()
	big := make([]byte, 200<<10)
	for i := range big {
		big[i] = byte(i*13 + i>>11)
	}
	files := []hostileFile{
		{name: "good.txt", data: []byte("good\n")},
		{name: "x", data: []byte("the root's x\n")},
		{name: "a", dir: true},
		{name: "a/b", data: []byte("a's b\n")},
		{name: "zqzqzqzqzq1", becomes: `..\..\pwned`, data: []byte("PWNED 1\n")},
		{name: "zqz2", becomes: "../x", data: []byte("PWNED 2\n")},
		{name: "zq3", becomes: "a/b", data: []byte("PWNED 3\n")},
		{name: strings.Repeat("q", len(abs)), becomes: abs, data: []byte("PWNED 4\n")},
		{name: "dup.txt", data: []byte("lower\n")},
		{name: "DUP.TXT", data: []byte("upper\n")},
		{name: "zlast.bin", data: big},
	}
	for _, f := range files {
		p := filepath.Join(mnt, f.name)
		if f.dir {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(mnt); len(ents) < 9 {
		t.Fatalf("ntfs-3g shows %d entries in the root", len(ents))
	}
	sh(t, "fusermount", "-u", mnt)
	mounted = false
	var bad []string
	for _, f := range files {
		if f.becomes != "" {
			ntfsRename(t, fs, f.name, f.becomes)
			bad = append(bad, f.becomes)
		}
	}
	// ntfs-3g reads the good files back after the patch.
	want := map[string][]byte{"a": nil}
	ro := ntfsTree(t, fs)
	for _, p := range []string{"good.txt", "x", "a/b", "zlast.bin"} {
		want[p], _ = os.ReadFile(filepath.Join(ro, p))
	}
	sh(t, "fusermount", "-u", ro)
	img := filepath.Join(dir, "ntfs.platter")
	ok(t, "create", "--progress", "none", fs, img)

	// Of dup.txt and DUP.TXT the first the index lists (as ntfsls
	// reads it) is extracted, the other skipped.
	kept, other := "DUP.TXT", "dup.txt"
	for _, l := range strings.Split(sh(t, "ntfsls", fs), "\n") {
		if l == "dup.txt" || l == "DUP.TXT" {
			if l == "dup.txt" {
				kept, other = other, kept
			}
			break
		}
	}
	for _, f := range files {
		if f.name == kept {
			want[kept] = f.data
		}
	}
	bad = append(bad, other)
	good := []string{"good.txt", "x", "a", "zlast.bin", kept}

	t.Run("extract", func(t *testing.T) {
		checkHostileExtract(t, img, want, bad, func(base, dest string) []string {
			return []string{filepath.Join(dest, "../x"), filepath.Join(dest, `..\..\pwned`), abs, filepath.Dir(abs)}
		})
	})
	t.Run("ls", func(t *testing.T) { checkHostileLs(t, img, good, bad) })
	t.Run("mount", func(t *testing.T) { checkHostileMount(t, img, good, want) })
}

// An ext2 directory holding, among good files, a second entry of one
// name and a name with a slash (both patched into its block), a file
// whose block pointer is out of the filesystem, and a large file in a
// chunk of the image that is damaged: each is skipped and named, and
// everything else comes out, as debugfs reads it.
func TestHostileNamesExt(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	for name, data := range map[string]string{
		"d/good-file": "good\n", "d/dup-entry-a": "first\n", "d/dup-entry-b": "second\n",
		"d/slash-placeholder": "slash\n", "d/zz-after": "after\n", "small.txt": "small\n",
		"d/broken-file": strings.Repeat("broken\n", 2000),
	} {
		os.WriteFile(filepath.Join(tree, name), []byte(data), 0o644)
	}
	writeRandom(t, filepath.Join(tree, "big.bin"), 40<<20)
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 64<<20)
	sh(t, "mkfs.ext2", "-q", "-F", "-b", "4096", "-E", "nodiscard", "-d", tree, fs)

	// What debugfs reads of the good files, before any patch.
	want := map[string][]byte{"d": nil, "lost+found": nil}
	for _, p := range []string{"d/good-file", "d/dup-entry-a", "d/zz-after", "small.txt"} {
		want[p] = []byte(debugfsCat(t, fs, "/"+p))
		if len(want[p]) == 0 {
			t.Fatalf("debugfs reads nothing of %s", p)
		}
	}
	b, _ := os.ReadFile(fs)
	for from, to := range map[string]string{"dup-entry-b": "dup-entry-a", "slash-placeholder": "slash/placeholder"} {
		// A directory entry: the name's length, file type 1, the name.
		pat := append([]byte{byte(len(from)), 1}, from...)
		if n := bytes.Count(b, pat); n != 1 {
			t.Fatalf("directory entry %q found %d times", from, n)
		}
		b = bytes.Replace(b, pat, append([]byte{byte(len(to)), 1}, to...), 1)
	}
	os.WriteFile(fs, b, 0o644)
	sh(t, "debugfs", "-w", "-R", "sif /d/broken-file block[0] 0x7ffffff0", fs)
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", "--compress", "none", fs, img)
	// Damage the chunk holding the middle of big.bin.
	var blk int64
	bmap := strings.Fields(sh(t, "debugfs", "-R", "bmap /big.bin 5000", fs)) // after debugfs's banner
	fmt.Sscan(bmap[len(bmap)-1], &blk)
	at := blk * 4096
	damaged := false
	for _, c := range infoChunks(t, img).Chunks {
		if c.FrameOffset > 0 && c.Offset <= at && at < c.Offset+c.Length {
			corrupt(t, img, c.FrameOffset+64+100)
			damaged = true
		}
	}
	if blk == 0 || !damaged {
		t.Fatalf("no stored chunk holds big.bin's block 5000 (at block %d)", blk)
	}
	bad := []string{"dup-entry-a", "slash/placeholder", "broken-file", "big.bin"}

	t.Run("extract", func(t *testing.T) {
		checkHostileExtract(t, img, want, bad, func(base, dest string) []string {
			return []string{filepath.Join(dest, "d", "slash")}
		})
	})
	t.Run("mount", func(t *testing.T) {
		mnt := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img, mnt)
		t.Cleanup(func() { run(t, "umount", mnt) })
		ents, err := os.ReadDir(filepath.Join(mnt, "d"))
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if err != nil || strings.Join(got, "|") != "broken-file|dup-entry-a|good-file|zz-after" {
			t.Errorf("mount --files lists d as %q (%v)", got, err)
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "d", "dup-entry-a")); err != nil || string(b) != "first\n" {
			t.Errorf("d/dup-entry-a through the mount: %q %v", b, err)
		}
	})
}

// Extract over a DEST full of symlinks planted beforehand (at a file's
// place, a directory's, a parent directory's, a symlink's) follows none:
// what they point at keeps its content, mode and entries, and DEST gets
// real files and directories. DEST itself a symlink is refused unless
// named DEST/.
func TestExtractPlantedLinks(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"d", "d2", "real"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	files := map[string]string{"f": "image's f\n", "d/inside": "inside\n", "d2/x": "image's x\n", "real/y": "image's y\n", "suid": "#!/bin/sh\n"}
	for p, data := range files {
		os.WriteFile(filepath.Join(tree, p), []byte(data), 0o644)
	}
	os.Chmod(filepath.Join(tree, "d"), 0o777)
	os.Chmod(filepath.Join(tree, "suid"), os.ModeSetuid|0o755)
	os.Symlink("/etc/passwd", filepath.Join(tree, "ln"))
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 32<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-d", tree, fs)
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", fs, img)

	base := t.TempDir()
	out := filepath.Join(base, "outside")
	for _, d := range []string{"vdir", "vdir2"} {
		os.MkdirAll(filepath.Join(out, d), 0o750)
		os.Chmod(filepath.Join(out, d), 0o750)
	}
	for _, v := range []string{"victim", "victim2", "victim3"} {
		os.WriteFile(filepath.Join(out, v), []byte(v+" keeps this\n"), 0o640)
		os.Chmod(filepath.Join(out, v), 0o640)
	}
	dest := filepath.Join(base, "dest")
	os.MkdirAll(filepath.Join(dest, "real"), 0o755)
	for link, to := range map[string]string{"f": "victim", "d": "vdir", "d2": "vdir2", "real/y": "victim2", "ln": "victim3"} {
		if err := os.Symlink(filepath.Join(out, to), filepath.Join(dest, link)); err != nil {
			t.Fatal(err)
		}
	}
	before := outsideState(t, base, dest)
	ok(t, "extract", img, "/", dest)
	sameOutside(t, before, outsideState(t, base, dest))
	for p, data := range files {
		fi, err := os.Lstat(filepath.Join(dest, p))
		b, _ := os.ReadFile(filepath.Join(dest, p))
		if err != nil || !fi.Mode().IsRegular() || string(b) != data {
			t.Errorf("%s: %v %v %q, want a regular file holding %q", p, fi.Mode(), err, b, data)
		}
	}
	for p, mode := range map[string]os.FileMode{"d": os.ModeDir | 0o777, "d2": os.ModeDir | 0o755, "real": os.ModeDir | 0o755, "suid": os.ModeSetuid | 0o755} {
		if fi, err := os.Lstat(filepath.Join(dest, p)); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode(), err, mode)
		}
	}
	if l, err := os.Readlink(filepath.Join(dest, "ln")); err != nil || l != "/etc/passwd" {
		t.Errorf("ln -> %q (%v), want the image's /etc/passwd, kept as written", l, err)
	}

	// DEST a symlink: refused, as a usage error, with or without a
	// trailing slash; DEST/. means the directory it points to.
	real := filepath.Join(base, "realdir")
	os.Mkdir(real, 0o755)
	link := filepath.Join(base, "destlink")
	os.Symlink(real, link)
	for _, args := range [][]string{{"/", link}, {"/", link + "/"}, {"/f", link}} {
		if _, stderr, code := run(t, append([]string{"extract", img}, args...)...); code != 2 || !strings.Contains(stderr, "symlink") {
			t.Errorf("extract %s to %s, a symlink: exit %d, want 2\n%s", args[0], args[1], code, stderr)
		}
	}
	if ents, _ := os.ReadDir(real); len(ents) != 0 {
		t.Errorf("a refused extract wrote %d entries through the symlink", len(ents))
	}
	ok(t, "extract", img, "/d", link+"/.")
	if b, err := os.ReadFile(filepath.Join(real, "d", "inside")); err != nil || string(b) != "inside\n" {
		t.Errorf("extract to %s/.: %q %v", link, b, err)
	}
}
