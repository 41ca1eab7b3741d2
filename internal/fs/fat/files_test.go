package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// These tests judge the reader by mtools: every name, 8.3 name, size and
// time against what mdir lists, every byte against what mcopy copies out.

// newFAT makes a FAT filesystem of size bytes with mkfs.fat args and
// fills it (tooltest.MakeFAT), with times up to FAT's last year, 2107.
func newFAT(t testing.TB, size int64, many int, args ...string) string {
	t.Helper()
	return tooltest.MakeFAT(t, size, many, 2107, args...)
}

// mtoolsCopy copies every file of img out with mcopy -s -m.
func mtoolsCopy(t testing.TB, img string) string {
	t.Helper()
	t.Setenv("TZ", "UTC")
	dir := t.TempDir()
	tooltest.Run(t, "mcopy", "-s", "-n", "-m", "-i", img, "::/", dir)
	return dir
}

func openFile(t testing.TB, p string) *Files {
	t.Helper()
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	st, _ := r.Stat()
	f, err := OpenFiles(r, st.Size())
	if err != nil {
		t.Fatalf("OpenFiles: %v", err)
	}
	return f
}

// sameAsMtools walks f and checks every entry against what mtools reads
// of img (the same filesystem, as mtools can read it): names, 8.3 names,
// sizes and times as mdir lists them, times to the second and every byte
// as mcopy -m copies them out. It returns how many files it compared.
func sameAsMtools(t *testing.T, f *Files, img string) int {
	t.Helper()
	want := tooltest.Mdir(t, img)
	copied := mtoolsCopy(t, img)
	seen, files := map[string]bool{}, 0
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := f.ReadDir(dir)
		if err != nil {
			t.Errorf("ReadDir %q: %v", dir, err)
			return
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name)
			seen[p] = true
			w, ok := want[p]
			switch {
			case !ok:
				t.Errorf("%s: listed, but not by mdir", p)
				continue
			case w.Short != e.Short || w.Dir != e.Mode.IsDir() || e.ModTime.Format("2006-01-02 15:04") != w.Stamp:
				t.Errorf("%s: 8.3 name %q, dir %v, time %v; mdir: %q, %v, %s", p, e.Short, e.Mode.IsDir(), e.ModTime, w.Short, w.Dir, w.Stamp)
			case e.Mode.IsDir() && e.Mode != iofs.ModeDir|0o755, !e.Mode.IsDir() && e.Mode != 0o644:
				t.Errorf("%s: mode %v", p, e.Mode)
			}
			if e.Mode.IsDir() {
				walk(p)
				continue
			}
			if e.Size != w.Size {
				t.Errorf("%s: size %d, mdir %d", p, e.Size, w.Size)
			}
			host := filepath.Join(copied, p)
			fi, err := os.Stat(host)
			if err != nil {
				t.Errorf("%s: not copied by mcopy: %v", p, err)
				continue
			}
			// mtools 4.0.32 counts 2100 as a leap year: past it,
			// mcopy -m sets the day after (mdir shows the day).
			if !fi.ModTime().Equal(e.ModTime) && !(e.ModTime.Year() >= 2100 && fi.ModTime().Equal(e.ModTime.AddDate(0, 0, 1))) {
				t.Errorf("%s: time %v, mcopy -m %v", p, e.ModTime, fi.ModTime().UTC())
			}
			got := readAll(t, f, p)
			if b, _ := os.ReadFile(host); !bytes.Equal(got, b) {
				t.Errorf("%s: %d bytes differ from mcopy's %d", p, len(got), len(b))
			}
			files++
		}
	}
	walk("")
	for p := range want {
		if !seen[p] {
			t.Errorf("%s: listed by mdir, not by the reader", p)
		}
	}
	return files
}

// readAll reads a file through Open, sequentially and then at offsets
// out of order, which must agree.
func readAll(t testing.TB, f *Files, p string) []byte {
	t.Helper()
	r, err := f.Open(p)
	if err != nil {
		t.Errorf("open %s: %v", p, err)
		return nil
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
	}
	ra := r.(io.ReaderAt)
	for _, off := range []int64{int64(len(b)) / 2, 1, int64(len(b)) - 1, 0} {
		if off < 0 || off >= int64(len(b)) {
			continue
		}
		part := make([]byte, min(int64(len(b))-off, 70000))
		if n, err := ra.ReadAt(part, off); n != len(part) || (err != nil && err != io.EOF) || !bytes.Equal(part, b[off:off+int64(n)]) {
			t.Errorf("%s: ReadAt %d bytes at %d: %d, %v, or other bytes", p, len(part), off, n, err)
		}
	}
	return b
}

func TestFilesAgainstMtools(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		many int
		args []string
	}{
		{"fat12-floppy", 1440 << 10, 300, []string{"-F", "12"}},
		{"fat16", 64 << 20, 3000, []string{"-F", "16"}},
		{"fat32", 64 << 20, 3000, []string{"-F", "32", "-s", "1"}},
		{"fat32-4k-sectors", 300 << 20, 500, []string{"-F", "32", "-S", "4096", "-s", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := newFAT(t, c.size, c.many, c.args...)
			f := openFile(t, img)
			if n := sameAsMtools(t, f, img); n < c.many+30 {
				t.Errorf("only %d files compared", n)
			}
			checkFragmented(t, f)
		})
	}
	// A FAT32 of fewer than 65525 clusters, which mtools can neither
	// write nor read: filled while it has more, then cut to 65000 (the
	// files lie in the first clusters); mtools reads a copy with its
	// sector count back.
	t.Run("fat32-small", func(t *testing.T) {
		img := newFAT(t, 33<<20, 2000, "-F", "32", "-s", "1")
		raw, _ := os.ReadFile(img)
		b, _ := parseBPB(raw[:512], int64(len(raw)))
		orig := binary.LittleEndian.Uint32(raw[0x20:])
		setSectors(t, img, uint32(b.dataStart+65000*b.sectorsPerCluster))
		repair(t, img)
		tooltest.Run(t, "fsck.fat", "-n", img)
		f := openFile(t, img)
		if f.b.kind != "fat32" || f.b.clusters >= 65525 {
			t.Fatalf("%s of %d clusters, want a small FAT32", f.b.kind, f.b.clusters)
		}
		whole := filepath.Join(t.TempDir(), "whole.img")
		raw, _ = os.ReadFile(img)
		os.WriteFile(whole, raw, 0o644)
		setSectors(t, whole, orig)
		if n := sameAsMtools(t, f, whole); n < 2030 {
			t.Errorf("only %d files compared", n)
		}
		checkFragmented(t, f)
	})
}

// checkFragmented checks the fragmented file is in more than one piece:
// the test made what it meant to.
func checkFragmented(t *testing.T, f *Files) {
	t.Helper()
	e, err := f.Stat("fragmented.bin")
	if err != nil {
		t.Fatal(err)
	}
	runs, err := f.extents(e)
	if err != nil || len(runs) < 3 {
		t.Errorf("fragmented.bin: %d pieces (%v), want 3 or more", len(runs), err)
	}
}

// The names as the reader finds them: case does not count, and of two
// entries whose names differ only in case the first is found.
func TestFilesLookup(t *testing.T) {
	img := newFAT(t, 16<<20, 10, "-F", "16")
	// Now two README.TXT, differing in case: the 8.3 one is first.
	patchLongName(t, img, "Ünïcödé ✓ 名前.txt", "README.txt")
	f := openFile(t, img)
	for _, p := range []string{"readme.txt", "README.TXT", "/Deep/LEVEL 01/../Level 01", "mixed.case.TXT", "ελληνικά κείμενα/ωμέγα.txt"} {
		if _, err := f.Stat(p); err != nil {
			t.Errorf("stat %q: %v", p, err)
		}
	}
	if b := readAll(t, f, "readme.txt"); string(b) != "README.TXT\n" {
		t.Errorf("readme.txt reads %q, want the first entry's", b)
	}
	for p, want := range map[string]error{"nothing": iofs.ErrNotExist, "README.TXT/x": vfs.ErrNotDir, "Deep/nothing/x": iofs.ErrNotExist} {
		if _, err := f.Stat(p); !errors.Is(err, want) {
			t.Errorf("stat %q: %v, want %v", p, err, want)
		}
	}
	if _, err := f.Open("Deep"); !errors.Is(err, vfs.ErrNotRegular) {
		t.Errorf("open a directory: %v", err)
	}
	if _, err := f.ReadDir("README.TXT"); !errors.Is(err, vfs.ErrNotDir) {
		t.Errorf("ReadDir of a file: %v", err)
	}
	root, err := f.Stat("/")
	if err != nil || root.Name != "/" || root.Mode != iofs.ModeDir|0o755 {
		t.Errorf("the root: %+v %v", root, err)
	}
}

// dirEntryOf finds the 8.3 entry whose long name (or 8.3 name) is name in
// img's directory listing at dir, through the reader, and returns its
// byte and the bytes of its long-name slots.
func dirEntryOf(t testing.TB, img, dir, name string) (off int64, slots []int64) {
	t.Helper()
	f := openFile(t, img)
	ents, err := f.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name == name {
			raw, _ := os.ReadFile(img)
			for s := e.off - entrySize; s >= 0 && raw[s+11] == attrLongName && raw[s] != deleted; s -= entrySize {
				slots = append(slots, s)
				if raw[s]&0x40 != 0 {
					break
				}
			}
			return e.off, slots
		}
	}
	t.Fatalf("no entry %q in %q", name, dir)
	return 0, nil
}

// patchLongName writes to over the long name from in the root (to must
// fit the same slots), keeping the checksum.
func patchLongName(t testing.TB, img, from, to string) {
	t.Helper()
	_, slots := dirEntryOf(t, img, "", from)
	raw, _ := os.ReadFile(img)
	u := utf16.Encode([]rune(to))
	if len(u) > len(slots)*slotUnits {
		t.Fatalf("%q does not fit %d slots", to, len(slots))
	}
	for len(u) < len(slots)*slotUnits {
		if len(u) == len(utf16.Encode([]rune(to))) {
			u = append(u, 0)
		} else {
			u = append(u, 0xffff)
		}
	}
	for i, s := range slots { // slots[0] holds units 0-12
		for j, at := range []int64{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
			binary.LittleEndian.PutUint16(raw[s+at:], u[i*slotUnits+j])
		}
	}
	os.WriteFile(img, raw, 0o644)
}

// A long name whose checksum does not match its 8.3 entry, or whose
// slots are out of sequence, does not belong to it: the 8.3 name is
// used, as mdir shows it.
func TestFilesLongNameMismatch(t *testing.T) {
	img := newFAT(t, 16<<20, 0, "-F", "16")
	raw, _ := os.ReadFile(img)
	off, slots := dirEntryOf(t, img, "", "Ünïcödé ✓ 名前.txt")
	for _, s := range slots {
		raw[s+13]++ // every slot alike: only the 8.3 entry disagrees
	}
	greek, slots := dirEntryOf(t, img, "Ελληνικά κείμενα", "Ωμέγα.txt")
	raw[slots[0]] = 2 | 0x40 // one slot claiming to be the second of two
	_, slots = dirEntryOf(t, img, "", strings.Repeat("Long náme ", 20)+"end.txt")
	long, _ := dirEntryOf(t, img, "", strings.Repeat("Long náme ", 20)+"end.txt")
	raw[slots[len(slots)-1]] = 0x40 | 19 // its first physical slot claims 19 of 16
	os.WriteFile(img, raw, 0o644)
	f := openFile(t, img)
	sameAsMtools(t, f, img)
	for dir, at := range map[string]int64{"": off, "Ελληνικά κείμενα": greek} {
		ents, _ := f.ReadDir(dir)
		found := false
		for _, e := range ents {
			if e.off == at || (dir == "" && e.off == long) {
				found = true
				if e.Name != e.Short || strings.ContainsAny(e.Name, "nm") {
					t.Errorf("%s: the entry at byte %d is called %q (8.3 name %q)", dir, e.off, e.Name, e.Short)
				}
			}
		}
		if !found {
			t.Errorf("%s: no entry at byte %d", dir, at)
		}
	}
}

// Damaged cluster chains fail only their own file, naming the cluster:
// a loop, a chain that ends before the size, one that runs into a free,
// bad or impossible cluster. A chain longer than the size is read as far
// as the size (as the kernel reads it). A directory whose chain loops
// fails its listing. Every other file reads as mtools read it before.
func TestFilesDamagedChains(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{{"fat12", 1440 << 10, []string{"-F", "12"}}, {"fat16", 16 << 20, []string{"-F", "16"}}, {"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}}} {
		t.Run(c.name, func(t *testing.T) {
			img := newFAT(t, c.size, 70, c.args...)
			before := mtoolsCopy(t, img)
			raw, _ := os.ReadFile(img)
			b, _ := parseBPB(raw[:512], int64(len(raw)))
			b.r = bytes.NewReader(raw)
			f0 := openFile(t, img)
			chain := func(p string) []int64 {
				e, err := f0.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				var cs []int64
				for cl := int64(e.cluster); len(cs) < 100; {
					cs = append(cs, cl)
					v, _ := b.entry(cl)
					if v >= uint32(b.bad()) || v < 2 {
						break
					}
					cl = int64(v)
				}
				return cs
			}
			set := func(p string, i int, v uint32) int64 {
				cs := chain(p)
				if len(cs) <= i {
					t.Fatalf("%s has %d clusters", p, len(cs))
				}
				setEntry(b, raw, 0, cs[i], v) // the first FAT only
				return cs[i]
			}
			eoc := uint32(b.bad() + 1)
			damage := map[string]string{}
			cs := chain("exact/x7.bin")
			setEntry(b, raw, 0, cs[5], uint32(cs[2]))
			damage["exact/x7.bin"] = fmt.Sprintf("cluster %d leads back to cluster %d", cs[5], cs[2])
			damage["exact/x7-plus.bin"] = fmt.Sprintf("ends at cluster %d, its 3 of the 8 clusters", set("exact/x7-plus.bin", 2, eoc))
			damage["exact/x7-minus.bin"] = fmt.Sprintf("runs into cluster %d, which the FAT calls free", set("exact/x7-minus.bin", 1, 0))
			damage["exact/x2-plus.bin"] = fmt.Sprintf("runs into cluster %d, which the FAT marks bad", set("exact/x2-plus.bin", 0, uint32(b.bad())))
			damage["fragmented.bin"] = fmt.Sprintf("leads from cluster %d to cluster %d, outside", set("fragmented.bin", 3, uint32(b.clusters+2)), b.clusters+2)
			self := set("exact/x2.bin", 0, 0) // then points at itself
			setEntry(b, raw, 0, self, uint32(self))
			damage["exact/x2.bin"] = fmt.Sprintf("cluster %d leads back to cluster %d", self, self)
			// A chain longer than its file's size: the file's last
			// cluster points on into another file's clusters.
			long := chain("exact/x1-minus.bin")
			setEntry(b, raw, 0, long[0], uint32(chain("Ünïcödé ✓ 名前.txt")[0]))
			// A directory whose chain loops back to its first cluster,
			// which holds no end marker; another's chain damaged past
			// its end marker, which is never read (as mtools never
			// reads it).
			dirs := map[string]string{}
			many, _ := f0.Stat("many")
			setEntry(b, raw, 0, int64(many.cluster), many.cluster)
			dirs["many"] = fmt.Sprintf("cluster %d leads back to cluster %d", many.cluster, many.cluster)
			deep, _ := f0.Stat("Deep")
			setEntry(b, raw, 0, int64(deep.cluster), 0)
			os.WriteFile(img, raw, 0o644)

			f := openFile(t, img)
			compared := 0
			var walk func(dir string)
			walk = func(dir string) {
				ents, err := f.ReadDir(dir)
				if want, bad := dirs[dir]; bad {
					// The entries before the break are listed; one
					// nameless entry says what the rest lost.
					var lost *vfs.LostEntriesError
					if err == nil && (len(ents) < 2 || ents[len(ents)-1].Name != "" || !errors.As(ents[len(ents)-1].Err, &lost)) {
						t.Errorf("ReadDir %s: %d entries, want those of its first cluster and a nameless LostEntriesError", dir, len(ents))
					} else if err == nil {
						err = ents[len(ents)-1].Err
					}
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("ReadDir %s: %v, want an error saying %q", dir, err, want)
					}
					return
				}
				if err != nil {
					t.Errorf("ReadDir %s: %v", dir, err)
					return
				}
				for _, e := range ents {
					p := path.Join(dir, e.Name)
					if e.Mode.IsDir() {
						walk(p)
						continue
					}
					r, err := f.Open(p)
					if want, bad := damage[p]; bad {
						var ce *block.CorruptError
						if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
							t.Errorf("open %s: %v, want a corruption error saying %q", p, err, want)
						}
						delete(damage, p)
						continue
					}
					if err != nil {
						t.Errorf("open %s: %v", p, err)
						continue
					}
					got, err := io.ReadAll(r)
					w, _ := os.ReadFile(filepath.Join(before, p))
					if err != nil || !bytes.Equal(got, w) {
						t.Errorf("%s: %d bytes (%v), want %d as mcopy read them before", p, len(got), err, len(w))
					}
					compared++
				}
			}
			walk("")
			for p := range damage {
				t.Errorf("%s: not found", p)
			}
			if compared < 20 {
				t.Errorf("only %d files compared", compared)
			}
		})
	}
}

// When the FAT copies differ, the first is read, as the kernel and mtools
// read it: a second FAT of garbage changes nothing.
func TestFilesCopiesDiffer(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{{"fat12", 1440 << 10, []string{"-F", "12"}}, {"fat16", 16 << 20, []string{"-F", "16"}}, {"fat32", 64 << 20, []string{"-F", "32", "-s", "1"}}} {
		t.Run(c.name, func(t *testing.T) {
			img := newFAT(t, c.size, 20, c.args...)
			raw, _ := os.ReadFile(img)
			b, _ := parseBPB(raw[:512], int64(len(raw)))
			second := (b.reserved + b.fatSectors) * b.bytesPerSector
			garbage, _ := os.ReadFile(tooltest.Garbage(t, b.fatSectors*b.bytesPerSector))
			copy(raw[second+16:], garbage[16:])
			os.WriteFile(img, raw, 0o644)
			sameAsMtools(t, openFile(t, img), img)
		})
	}
}

// FAT12/16 keep other things in an entry's high cluster word (OS/2's
// extended attributes): only FAT32 counts it, as mtools and the kernel.
func TestFilesHighWordFAT16(t *testing.T) {
	img := newFAT(t, 16<<20, 0, "-F", "16")
	off, _ := dirEntryOf(t, img, "", "README.TXT")
	raw, _ := os.ReadFile(img)
	binary.LittleEndian.PutUint16(raw[off+20:], 0x1234)
	os.WriteFile(img, raw, 0o644)
	f := openFile(t, img)
	sameAsMtools(t, f, img)
	if b := readAll(t, f, "README.TXT"); string(b) != "README.TXT\n" {
		t.Errorf("README.TXT: %q", b)
	}
}

// entries builds a directory from 32-byte entries.
func lfnSlots(name string, short string, sum byte) [][]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + slotUnits) / slotUnits
	for len(u) < n*slotUnits {
		if len(u) == len(utf16.Encode([]rune(name))) {
			u = append(u, 0)
		} else {
			u = append(u, 0xffff)
		}
	}
	var out [][]byte
	for ord := n; ord >= 1; ord-- {
		s := make([]byte, entrySize)
		s[0] = byte(ord)
		if ord == n {
			s[0] |= 0x40
		}
		s[11] = attrLongName
		s[13] = sum
		for j, at := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
			binary.LittleEndian.PutUint16(s[at:], u[(ord-1)*slotUnits+j])
		}
		out = append(out, s)
	}
	return out
}

func shortEntry(name string, attr, lcase byte) []byte {
	s := make([]byte, entrySize)
	copy(s, fmt.Sprintf("%-11s", name))
	s[11], s[12] = attr, lcase
	binary.LittleEndian.PutUint16(s[22:], 12<<11|34<<5|28)       // 12:34:56
	binary.LittleEndian.PutUint16(s[24:], (2023-1980)<<9|7<<5|9) // 2023-07-09
	binary.LittleEndian.PutUint16(s[26:], 5)
	binary.LittleEndian.PutUint32(s[28:], 1234)
	return s
}

// The parser alone, on entries mtools does not write: surrogate pairs,
// slots out of order or interrupted, a deleted 8.3 entry, labels, the
// 0x05 escape, dot entries, bad dates.
func TestDirParser(t *testing.T) {
	parse := func(ents ...[]byte) []string {
		var p dirParser
		var out []string
		for i, e := range ents {
			if f, ok := p.entry(e, int64(i*entrySize), false); ok {
				out = append(out, f.Name)
			}
		}
		return out
	}
	sum := func(short string) byte { return checksum([]byte(fmt.Sprintf("%-11s", short))) }
	cat := func(parts ...[][]byte) [][]byte {
		var out [][]byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	one := func(b []byte) [][]byte { return [][]byte{b} }
	del := shortEntry("GONE    TXT", 0, 0)
	del[0] = deleted
	e05 := shortEntry("\x05BC     TXT", 0, 0)
	badDate := shortEntry("DATE    TXT", 0, 0)
	binary.LittleEndian.PutUint16(badDate[24:], 0) // day and month 0
	binary.LittleEndian.PutUint16(badDate[22:], 0)
	slots := lfnSlots("a long name of two slots.txt", "ALONGN~1TXT", sum("ALONGN~1TXT"))
	for name, c := range map[string]struct {
		ents [][]byte
		want string
	}{
		"plain":           {cat(slots, one(shortEntry("ALONGN~1TXT", 0, 0))), "a long name of two slots.txt"},
		"emoji":           {cat(lfnSlots("smile 😀.txt", "", sum("SMILE~1 TXT")), one(shortEntry("SMILE~1 TXT", 0, 0))), "smile 😀.txt"},
		"bad checksum":    {cat(slots, one(shortEntry("ALONGN~2TXT", 0, 0))), "ALONGN~2.TXT"},
		"slot missing":    {cat(slots[1:], one(shortEntry("ALONGN~1TXT", 0, 0))), "ALONGN~1.TXT"},
		"first missing":   {cat(slots[:1], one(shortEntry("ALONGN~1TXT", 0, 0))), "ALONGN~1.TXT"},
		"deleted between": {cat(slots, one(del), one(shortEntry("ALONGN~1TXT", 0, 0))), "ALONGN~1.TXT"},
		"restarted":       {cat(slots[:1], slots, one(shortEntry("ALONGN~1TXT", 0, 0))), "a long name of two slots.txt"},
		"swapped":         {cat(one(slots[1]), one(slots[0]), one(shortEntry("ALONGN~1TXT", 0, 0))), "ALONGN~1.TXT"},
		"lower both":      {one(shortEntry("LOWER   TXT", 0, lowerBase|lowerExt)), "lower.txt"},
		"lower base":      {one(shortEntry("LOWER   TXT", 0, lowerBase)), "lower.TXT"},
		"lower ext":       {one(shortEntry("UPPER   TXT", 0, lowerExt)), "UPPER.txt"},
		"no ext":          {one(shortEntry("NOEXT", 0, lowerExt)), "NOEXT"},
		"cp850":           {one(shortEntry("\x9aBER    TXT", 0, lowerBase)), "über.TXT"},
		"0x05":            {one(e05), "ÕBC.TXT"},
		"label":           {cat(one(shortEntry("MY LABEL", attrVolume, 0)), one(shortEntry("AFTER", 0, 0))), "AFTER"},
		"dots":            {cat(one(shortEntry(".", attrDir, 0)), one(shortEntry("..", attrDir, 0)), one(shortEntry("X", attrDir, 0))), "X"},
		"long dots":       {cat(lfnSlots("..", "", sum("DOTDOT  TXT")), one(shortEntry("DOTDOT  TXT", 0, 0))), ".."},
		"deleted":         {cat(slots, one(del)), ""},
		"bad date":        {one(badDate), "DATE.TXT"},
	} {
		got := strings.Join(parse(c.ents...), "|")
		if got != c.want {
			t.Errorf("%s: %q, want %q", name, got, c.want)
		}
	}
	var p dirParser
	e, _ := p.entry(shortEntry("DIR", attrDir, 0), 0, false)
	if !e.Mode.IsDir() || e.Size != 0 || e.ModTime != time.Date(2023, 7, 9, 12, 34, 56, 0, time.UTC) {
		t.Errorf("a directory: %+v", e)
	}
	e, _ = p.entry(badDate, 0, false)
	if e.ModTime != time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC) {
		t.Errorf("date 0: %v, want 1980-01-01 as the kernel takes it", e.ModTime)
	}
	hi := shortEntry("HI", 0, 0)
	binary.LittleEndian.PutUint16(hi[20:], 3)
	if e, _ := p.entry(hi, 0, true); e.cluster != 3<<16|5 {
		t.Errorf("FAT32 cluster %#x", e.cluster)
	}
	if e, _ := p.entry(hi, 0, false); e.cluster != 5 {
		t.Errorf("FAT16 cluster %#x", e.cluster)
	}
}

// Open and ReadDir are safe for parallel use.
func TestFilesParallel(t *testing.T) {
	img := newFAT(t, 16<<20, 200, "-F", "16")
	f := openFile(t, img)
	want := mtoolsCopy(t, img)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < 200; i += 4 {
				p := tooltest.FATManyName(i)
				r, err := f.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(r)
				if w, _ := os.ReadFile(filepath.Join(want, p)); !bytes.Equal(b, w) {
					t.Errorf("%s: %q", p, b)
				}
				if _, err := f.ReadDir("exact"); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzFiles(f *testing.F) {
	for _, c := range []struct {
		size int64
		args []string
	}{{1440 << 10, []string{"-F", "12"}}, {16 << 20, []string{"-F", "16", "-r", "64"}}, {40 << 20, []string{"-F", "32", "-s", "1", "-f", "1"}}} {
		p := filepath.Join(f.TempDir(), "fs.img")
		os.WriteFile(p, nil, 0o644)
		os.Truncate(p, c.size)
		tooltest.Run(f, "mkfs.fat", append(c.args, p)...)
		src := f.TempDir()
		os.MkdirAll(filepath.Join(src, "Sub dir", "deeper"), 0o755)
		os.WriteFile(filepath.Join(src, "Sub dir", "deeper", "A long name.txt"), bytes.Repeat([]byte("x"), 3000), 0o644)
		os.WriteFile(filepath.Join(src, "lower.txt"), []byte("hello\n"), 0o644)
		os.WriteFile(filepath.Join(src, "Ünïcödé.txt"), []byte("u\n"), 0o644)
		tooltest.Run(f, "mcopy", "-s", "-i", p, filepath.Join(src, "Sub dir"), filepath.Join(src, "lower.txt"), filepath.Join(src, "Ünïcödé.txt"), "::/")
		b, _ := os.ReadFile(p)
		// SparseReader serves zeros past the seed: keep the seeds small.
		f.Add(bytes.TrimRight(b, "\x00"))
	}
	// b (then zeros) opened as a FAT and walked: every error is fine, a
	// panic or a runaway is not.
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: 40 << 20}
		fs, err := FS.OpenFiles(r, r.Size)
		tooltest.FuzzFiles(t, fs, err)
	})
}
