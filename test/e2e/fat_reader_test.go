package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/tooltest"
)

// Platter's FAT reader, judged by mtools: ls, extract and mount --files
// of FAT12, FAT16 and FAT32 images (a small FAT32 too) show every name,
// size and time mdir lists and every byte mcopy copies out; a long name
// whose checksum is wrong gives way to the 8.3 name, as in mdir; FAT
// copies that differ are read by the first; a damaged cluster chain fails
// its own file only, named, and the rest comes out.

// frFAT makes a FAT with mkfs.fat args on a file of size bytes (old data
// in its free space) and fills it with mcopy (tooltest.MakeFAT), with
// times up to 2099: mtools 4.0.32 takes 2100 for a leap year, and past
// it mcopy -m sets the day after the one mdir shows.
func frFAT(t *testing.T, size int64, many int, args ...string) string {
	t.Helper()
	return tooltest.MakeFAT(t, size, many, 2099, args...)
}

// frCopy copies a file.
func frCopy(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(t.TempDir(), "copy.img")
	if err := os.WriteFile(q, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return q
}

// frSmallFAT32 makes a FAT32 of fewer than 65525 clusters, as mkfs.fat -F
// 32 makes on a small device, filled as frFAT fills one: mtools can
// neither write nor read such a volume, so it is filled while it has
// more clusters and then cut to 65000 (the files lie in the first ones;
// fsck.fat -a sets FSInfo's counts), as TestTrustSmallFAT32 makes one. It
// returns the volume and a copy with its sector count back, for mtools.
func frSmallFAT32(t *testing.T, many int) (img, forMtools string) {
	t.Helper()
	img = frFAT(t, 33<<20, many, "-F", "32", "-s", "1")
	le := binary.LittleEndian
	boot := readAt(t, img, 512, 0)
	orig := le.Uint32(boot[0x20:])
	dataStart := int64(le.Uint16(boot[0x0e:])) + int64(boot[0x10])*int64(le.Uint32(boot[0x24:]))
	setSectors := func(p string, n uint32) {
		var b [4]byte
		le.PutUint32(b[:], n)
		writeAt(t, p, b[:], 0x20)
		writeAt(t, p, b[:], 6*512+0x20)
	}
	setSectors(img, uint32(dataStart+65000))
	if out, err := exec.Command("fsck.fat", "-a", "-w", img).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("fsck.fat -a: %v\n%s", err, out)
	}
	sh(t, "fsck.fat", "-n", img)
	if v := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "VERSION", img)); v != "FAT32" {
		t.Fatalf("blkid says %s", v)
	}
	forMtools = frCopy(t, img)
	setSectors(forMtools, orig)
	return img, forMtools
}

var frLongLine = regexp.MustCompile(`^[-d][-rwx]{9} +\d+ \d{4}-\d\d-\d\d \d\d:\d\d (.*)$`)

// frLs is platter ls -R --json of an image's root: by path.
func frLs(t *testing.T, img string) map[string]lsJSONEntry {
	t.Helper()
	stdout, stderr, code := run(t, "ls", "-R", "--json", img, "/")
	if code != 0 && code != 3 {
		t.Fatalf("ls -R --json: exit %d\n%s", code, stderr)
	}
	var all []lsJSONEntry
	if err := json.Unmarshal([]byte(stdout), &all); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, stdout)
	}
	m := map[string]lsJSONEntry{}
	for _, e := range all {
		m[strings.TrimPrefix(e.Path, "/")] = e
	}
	return m
}

type lsJSONEntry struct {
	Path, Name, Type string
	Size             int64
	ModTime          time.Time `json:"mtime"`
}

// frCheck judges platter's reading of the FAT in img (a platter image of
// it) by mtools reading fsImg (the same filesystem, or a copy mtools can
// read): ls lists every entry mdir lists (but skip, by path) with its
// name, type, size and time to the minute; extract copies out every file
// mcopy -s copies, byte for byte, with the time mcopy -m gives it;
// mount --files shows the same tree. bad are the paths extract must skip
// and name, for which the exit code is 3; other entries of theirs are
// still listed.
func frCheck(t *testing.T, img, fsImg string, bad ...string) {
	t.Helper()
	t.Setenv("TZ", "UTC")
	want := tooltest.Mdir(t, fsImg)

	// The root's names, as ls lists them: one a line (or at the end of
	// a long line, as ls once wrote them).
	stdout, stderr, code := run(t, "ls", img, "/")
	var root []string
	for p := range want {
		if !strings.Contains(p, "/") {
			root = append(root, p)
		}
	}
	sort.Strings(root)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for i, l := range lines {
		if m := frLongLine.FindStringSubmatch(l); m != nil {
			lines[i] = m[1]
		}
	}
	sort.Strings(lines)
	if code != 0 || strings.Join(lines, "|") != strings.Join(root, "|") {
		t.Errorf("ls /: exit %d, lists\n  %s\nmdir lists\n  %s\n%s", code, strings.Join(lines, "\n  "), strings.Join(root, "\n  "), stderr)
	}

	// What mcopy copies out, without the files extract must skip.
	mc := t.TempDir()
	sh(t, "mcopy", "-s", "-n", "-m", "-i", fsImg, "::/", mc)
	for _, p := range bad {
		os.Remove(filepath.Join(mc, p))
	}
	dest := filepath.Join(t.TempDir(), "out")
	stdout, stderr, code = run(t, "extract", img, "/", dest)
	if want := map[bool]int{true: 3, false: 0}[len(bad) > 0]; code != want {
		t.Errorf("extract: exit %d, want %d\n%s%s", code, want, stdout, stderr)
	}
	for _, p := range bad {
		if !strings.Contains(stderr, fmt.Sprintf("%q skipped", path.Base(p))) || !strings.Contains(stderr, "cluster") {
			t.Errorf("extract does not name %s as skipped, with its cluster:\n%s", p, stderr)
		}
	}
	if n := strings.Count(stderr, " skipped: "); n != len(bad) {
		t.Errorf("extract skipped %d entries, want %d:\n%s", n, len(bad), stderr)
	}
	sameTree(t, mc, dest)
	files := 0
	filepath.Walk(mc, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(mc, p)
		g, err := os.Stat(filepath.Join(dest, rel))
		// mtools 4.0.32 takes 2100 for a leap year: past it, mcopy -m
		// sets the day after (mdir shows the day), so frFAT stops at
		// 2099.
		if err != nil {
			return nil // sameTree said so
		}
		if !g.ModTime().Equal(fi.ModTime()) || g.Mode() != 0o644 {
			t.Errorf("%s: extracted %v, mode %v, want mcopy -m's %v, 0644", rel, g.ModTime(), g.Mode(), fi.ModTime())
		}
		files++
		return nil
	})
	if files < 40 {
		t.Errorf("only %d files compared", files)
	}

	got := frLs(t, img)
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: mdir lists it, platter ls does not", p)
		case g.Type != map[bool]string{true: "dir", false: "file"}[w.Dir] || (!w.Dir && g.Size != w.Size) || g.ModTime.UTC().Format("2006-01-02 15:04") != w.Stamp:
			t.Errorf("%s: ls %s of %d bytes, %v; mdir: dir %v, %d bytes, %s", p, g.Type, g.Size, g.ModTime, w.Dir, w.Size, w.Stamp)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && p != "" {
			t.Errorf("%s: platter ls lists it, mdir does not", p)
		}
	}

	// mount --files lists what ls lists and reads what mcopy reads; a
	// file extract skips fails to read.
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", img, mnt)
	defer unmountPlatter(t, mnt) // the kernel may hold the mount a moment after the last read
	listed := 0
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Errorf("mount --files: %v", err)
			return nil
		}
		if rel, _ := filepath.Rel(mnt, p); rel != "." {
			listed++
			if _, ok := want[rel]; !ok {
				t.Errorf("%s: mount --files shows it, mdir does not", rel)
			}
		}
		return nil
	})
	if listed != len(want) {
		t.Errorf("mount --files shows %d entries, mdir %d", listed, len(want))
	}
	filepath.Walk(mc, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(mc, p)
		a, _ := os.ReadFile(p)
		if b, err := os.ReadFile(filepath.Join(mnt, rel)); err != nil || !bytes.Equal(a, b) {
			t.Errorf("mount --files: %s: %d bytes (%v), want %d", rel, len(b), err, len(a))
		}
		return nil
	})
	for _, p := range bad {
		if _, err := os.ReadFile(filepath.Join(mnt, p)); err == nil {
			t.Errorf("mount --files: %s reads, want an I/O error", p)
		}
	}
}

// frImage images a FAT with platter create.
func frImage(t *testing.T, fsImg string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fat.platter")
	ok(t, "create", "--progress", "none", fsImg, img)
	return img
}

func TestFatReaderMatchesMtools(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		many int
		args []string
	}{
		{"fat12-floppy", 1440 << 10, 300, []string{"-F", "12"}},
		{"fat16", 64 << 20, 3000, []string{"-F", "16"}},
		{"fat32", 64 << 20, 3000, []string{"-F", "32", "-s", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := frFAT(t, c.size, c.many, c.args...)
			frCheck(t, frImage(t, fs), fs)
		})
	}
	t.Run("fat32-small", func(t *testing.T) {
		fs, forMtools := frSmallFAT32(t, 2000)
		img := frImage(t, fs)
		if j := info(t, img); j.Partitions[0].Filesystem != "fat32" {
			t.Fatalf("info: %s, want fat32", j.Partitions[0].Filesystem)
		}
		frCheck(t, img, forMtools)
	})
}

// frSlot finds the long-name slot of fsImg holding name's first five
// characters (a name unique among the volume's): the slot of ordinal 1,
// which lies just before the 8.3 entry. It returns its byte.
func frSlot(t *testing.T, fsImg, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}
	chars := utf16le(name[:5])
	i := bytes.Index(b, chars)
	if i < 1 || bytes.Contains(b[i+1:], chars) || b[i-1+11] != 0x0f || b[i-1]&^0x40 != 1 {
		t.Fatalf("%s: the first slot of %q is not found once", fsImg, name)
	}
	return int64(i - 1)
}

// A long name whose checksum does not match its 8.3 entry, or whose slots
// are out of sequence, does not belong to it: ls, extract and mount show
// the 8.3 name, as mdir does.
func TestFatReaderLongNameMismatch(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{
		{"fat12", 1440 << 10, []string{"-F", "12"}},
		{"fat16", 32 << 20, []string{"-F", "16"}},
		{"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := frFAT(t, c.size, 10, c.args...)
			// Both names need two slots: the first physical slot
			// holds the last part ("txt"), the second the start.
			first := frSlot(t, fs, "Checksum Victim.txt")
			if b := readAt(t, fs, 32, first-32); b[0] != 0x42 || b[11] != 0x0f {
				t.Fatalf("the slot before the first of Checksum Victim.txt: % x", b)
			}
			for _, s := range []int64{first, first - 32} {
				b := readAt(t, fs, 1, s+13)
				writeAt(t, fs, []byte{b[0] + 1}, s+13)
			}
			first = frSlot(t, fs, "Sequence Victim.txt")
			if b := readAt(t, fs, 32, first-32); b[0] != 0x42 || b[11] != 0x0f {
				t.Fatalf("the slot before the first of Sequence Victim.txt: % x", b)
			}
			writeAt(t, fs, []byte{0x40 | 3}, first-32) // "3 of 3", then slot 1
			want := tooltest.Mdir(t, fs)
			for _, n := range []string{"CHECKS~1.TXT", "SEQUEN~1.TXT"} {
				if w, ok := want[n]; !ok || w.Long != "" {
					t.Fatalf("mdir does not show %s without a long name: %+v", n, want)
				}
			}
			img := frImage(t, fs)
			frCheck(t, img, fs)
			if ls := ok(t, "ls", img); !strings.Contains(ls, "CHECKS~1.TXT\n") || strings.Contains(ls, "Victim") {
				t.Errorf("ls:\n%s", ls)
			}
		})
	}
}

// When a FAT's copies differ, the first is read, as the kernel and mtools
// read it: the second made garbage changes nothing.
func TestFatReaderCopiesDiffer(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{
		{"fat12", 1440 << 10, []string{"-F", "12"}},
		{"fat16", 32 << 20, []string{"-F", "16"}},
		{"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := frFAT(t, c.size, 10, c.args...)
			le := binary.LittleEndian
			boot := readAt(t, fs, 512, 0)
			bps := int64(le.Uint16(boot[0x0b:]))
			fatLen := int64(le.Uint16(boot[0x16:])) * bps
			if fatLen == 0 {
				fatLen = int64(le.Uint32(boot[0x24:])) * bps
			}
			second := int64(le.Uint16(boot[0x0e:]))*bps + fatLen
			garbage := readAt(t, tooltest.Garbage(t, fatLen), int(fatLen), 0)
			writeAt(t, fs, garbage[16:], second+16)
			frCheck(t, frImage(t, fs), fs)
		})
	}
}

// frChain is a file's clusters, as mshowfat lists them.
func frChain(t *testing.T, fsImg, p string) []int64 {
	t.Helper()
	out := sh(t, "mshowfat", "-i", fsImg, "::/"+p)
	var cs []int64
	for _, r := range regexp.MustCompile(`<(\d+)(?:-(\d+))?>`).FindAllStringSubmatch(out, -1) {
		var a, b int64
		fmt.Sscan(r[1], &a)
		b = a
		if r[2] != "" {
			fmt.Sscan(r[2], &b)
		}
		for c := a; c <= b; c++ {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		t.Fatalf("mshowfat %s: %s", p, out)
	}
	return cs
}

// frSetEntry writes cluster c's entry in the first FAT of fsImg only.
func frSetEntry(t *testing.T, fsImg string, c int64, v uint32) {
	t.Helper()
	le := binary.LittleEndian
	boot := readAt(t, fsImg, 512, 0)
	fat := int64(le.Uint16(boot[0x0e:])) * int64(le.Uint16(boot[0x0b:]))
	bits := int64(32)
	if le.Uint16(boot[0x16:]) != 0 {
		bits = 16
		if strings.Contains(sh(t, "blkid", "-p", "-o", "value", "-s", "VERSION", fsImg), "FAT12") {
			bits = 12
		}
	}
	at := fat + c*bits/8
	w := readAt(t, fsImg, 4, at)
	switch bits {
	case 12:
		x := le.Uint16(w)
		if c&1 == 1 {
			x = x&0x000f | uint16(v)<<4
		} else {
			x = x&0xf000 | uint16(v)&0xfff
		}
		le.PutUint16(w, x)
		w = w[:2]
	case 16:
		le.PutUint16(w, uint16(v))
		w = w[:2]
	default:
		le.PutUint32(w, le.Uint32(w)&0xf0000000|v)
	}
	writeAt(t, fsImg, w, at)
}

// A cluster chain that loops, or ends before its file's size, fails that
// file alone: extract skips it, naming it and the cluster (exit 3), and
// copies every other file out as mcopy does; ls still lists it. The
// damage is in the first FAT only, the copy that is read.
func TestFatReaderDamagedChains(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		args []string
		eoc  uint32
	}{
		{"fat12", 1440 << 10, []string{"-F", "12"}, 0xfff},
		{"fat16", 32 << 20, []string{"-F", "16"}, 0xffff},
		{"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}, 0x0fffffff},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := frFAT(t, c.size, 10, c.args...)
			// What mtools reads before the damage.
			before := frCopy(t, fs)
			loop := frChain(t, fs, "exact/x7.bin")
			frSetEntry(t, fs, loop[5], uint32(loop[2]))
			cut := frChain(t, fs, "big.bin")
			frSetEntry(t, fs, cut[20], c.eoc)
			img := frImage(t, fs)
			frCheck(t, img, before, "exact/x7.bin", "big.bin")
			_, stderr, _ := run(t, "extract", img, "/", filepath.Join(t.TempDir(), "out"))
			for _, want := range []string{fmt.Sprintf("cluster %d leads back to cluster %d", loop[5], loop[2]), fmt.Sprintf("ends at cluster %d", cut[20])} {
				if !strings.Contains(stderr, want) {
					t.Errorf("extract does not say %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// Of two entries whose names differ only in case — an 8.3 "dup.txt"
// (lower-case flags) and a later long name "DUP.TXT" — the first is
// listed and read, the second skipped and named, however the first's 8.3
// name answers to both.
func TestFatReaderDuplicateNames(t *testing.T) {
	fs := frFAT(t, 32<<20, 10, "-F", "16")
	s := frSlot(t, fs, "second.Txt")
	u := utf16.Encode([]rune("DUP.TXT"))
	u = append(u, 0)
	for len(u) < 13 {
		u = append(u, 0xffff)
	}
	for i, at := range []int64{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
		writeAt(t, fs, binary.LittleEndian.AppendUint16(nil, u[i]), s+at)
	}
	img := frImage(t, fs)
	dest := filepath.Join(t.TempDir(), "out")
	_, stderr, code := run(t, "extract", img, "/", dest)
	if code != 3 || !strings.Contains(stderr, `"DUP.TXT" skipped`) {
		t.Errorf("extract: exit %d, want 3 naming DUP.TXT:\n%s", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "dup.txt")); err != nil || string(b) != "dup.txt\n" {
		t.Errorf("dup.txt: %q %v, want the first entry's", b, err)
	}
	if ls := ok(t, "ls", img, "/dup.txt"); !strings.Contains(ls, "dup.txt") {
		t.Errorf("ls /dup.txt: %s", ls)
	}
}
