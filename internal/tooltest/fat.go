package tooltest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// MakeFAT makes a FAT of size bytes with mkfs.fat args (over old data,
// which its free space keeps, up to 64 MiB; a larger one is sparse) and
// fills it with mcopy: the files of fatFiles with their times, up to
// lastYear, then a file written in pieces into the holes left by
// deleting every other of a row of small files ("fragmented.bin"), which
// mshowfat must show in three pieces or more. It returns its path.
func MakeFAT(t testing.TB, size int64, many, lastYear int, args ...string) string {
	t.Helper()
	t.Setenv("TZ", "UTC") // mtools reads and writes FAT times as local time
	var img string
	if size <= 64<<20 {
		img = Garbage(t, size)
	} else {
		img = filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
	}
	Run(t, "mkfs.fat", append(args, img)...)
	boot := fileBytes(t, img, 0, 512)
	le := binary.LittleEndian
	bps := int64(le.Uint16(boot[0x0b:]))
	cluster := int64(boot[0x0d]) * bps
	src := fatFiles(t, cluster, many, lastYear)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	cp := []string{"-s", "-m", "-i", img}
	for _, e := range ents {
		cp = append(cp, filepath.Join(src, e.Name()))
	}
	Run(t, "mcopy", append(cp, "::/")...)
	tmp := t.TempDir()
	for i := 0; i < 12; i++ {
		p := filepath.Join(tmp, fmt.Sprintf("hole%02d", i))
		os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, int(2*cluster)), 0o644)
		Run(t, "mcopy", "-i", img, p, "::/")
	}
	for i := 0; i < 12; i += 2 {
		Run(t, "mdel", "-i", img, fmt.Sprintf("::/hole%02d", i))
	}
	if le.Uint16(boot[0x16:]) == 0 {
		// FAT32: mtools takes free clusters after the last it took,
		// by FSInfo's hint; "unknown" makes it search from the start
		// (and find the holes).
		info := int64(le.Uint16(boot[0x30:])) * bps
		if string(fileBytes(t, img, info, 4)) != "RRaA" {
			t.Fatalf("no FSInfo sector at byte %d", info)
		}
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, info+0x1ec)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 15*cluster+123)
	for i := range big {
		big[i] = byte(i*31 + i/int(cluster))
	}
	p := filepath.Join(tmp, "fragmented.bin")
	os.WriteFile(p, big, 0o644)
	Run(t, "mcopy", "-i", img, p, "::/")
	if chain := Run(t, "mshowfat", "-i", img, "::/fragmented.bin"); strings.Count(chain, "<") < 3 {
		t.Fatalf("fragmented.bin is not fragmented: %s", chain)
	}
	return img
}

// fileBytes reads n bytes of the file at p from byte off.
func fileBytes(t testing.TB, p string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %d bytes of %s at byte %d: %v", n, p, off, err)
	}
	return b
}

// fatFiles writes the files put in a test FAT of clusters of cluster
// bytes and returns their directory: a deep tree, long names in several
// scripts, 8.3 names in every case mtools keeps (with and without the
// lower-case flags, one in code page 850), names for tests to damage
// ("Checksum Victim.txt", "Sequence Victim.txt") or to rename into
// another's ("second.Txt" into "DUP.TXT", beside "dup.txt"), empty
// files and an empty directory, files of exact cluster multiples and a
// byte either side, a file of 40 clusters, many files in one directory
// (FATManyName), and times from 1980 to the last second but one of
// lastYear (FAT keeps them up to 2107; mtools 4.0.32 takes 2100 for a
// leap year, so a test comparing what mcopy -m sets stops at 2099).
func fatFiles(t testing.TB, cluster int64, many, lastYear int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	x := uint64(cluster)*7919 + uint64(many)
	data := func(n int64) []byte {
		b := make([]byte, n)
		for i := range b {
			x = x*6364136223846793005 + 1442695040888963407
			b[i] = byte(x >> 56)
		}
		return b
	}
	r := recipe{t, dir}
	r.names(12, data)
	r.file("Checksum Victim.txt", []byte("the victim\n"))
	r.file("Sequence Victim.txt", []byte("the other victim\n"))
	for _, n := range []string{"README.TXT", "lower.txt", "UPPER.txt", "lowbase.TXT", "MiXeD.CaSe.txt", "NOEXT", "lowonly", "a.b", "ÉTÉ.TXT", "dup.txt", "second.Txt"} {
		r.file(n, []byte(n+"\n"))
	}
	r.sizes(cluster, data)
	for i := 0; i < many; i++ {
		r.file(FATManyName(i), []byte(fmt.Sprintf("file %d\n", i)))
	}
	r.stamp([]time.Time{
		time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 58, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
		time.Date(lastYear, 12, 31, 23, 59, 58, 0, time.UTC),
		time.Date(2024, 2, 29, 12, 34, 57, 0, time.UTC), // an odd second: FAT keeps even ones
	})
	return dir
}

// FATManyName is the path of the i-th of MakeFAT's many files. Long
// names that share a prefix make mtools search for free ~N tails,
// slowly: most are 8.3 names, every fourth a long name of its own
// prefix.
func FATManyName(i int) string {
	if i%4 == 0 {
		return fmt.Sprintf("many/%05d long name.txt", i)
	}
	return fmt.Sprintf("many/f%05d.txt", i)
}

// MdirEntry is an entry as mdir lists it.
type MdirEntry struct {
	Short, Long string // the 8.3 name; the long name, "" if none
	Dir         bool
	Size        int64
	Stamp       string // "2006-01-02 15:04"
}

var mdirLine = regexp.MustCompile(`^ +(<DIR>|\d+) +(\d{4}-\d\d-\d\d) +(\d?\d:\d\d)(?:  (.*)| ?)$`)

// Mdir lists every directory of the FAT in img with mdir -/ -a: each
// entry but "." and "..", by its path (the long names, or the 8.3 ones,
// as mtools shows them). Fewer than ten entries fail the test.
func Mdir(t testing.TB, img string) map[string]MdirEntry {
	t.Helper()
	out := Run(t, "mdir", "-/", "-a", "-i", img, "::/")
	m := map[string]MdirEntry{}
	dir := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		if d, ok := strings.CutPrefix(l, "Directory for ::/"); ok {
			dir = d
			continue
		}
		r := []rune(l)
		if len(r) < 13 || r[8] != ' ' {
			continue
		}
		f := mdirLine.FindStringSubmatch(string(r[12:]))
		if f == nil {
			continue
		}
		hm := f[3]
		if len(hm) == 4 {
			hm = "0" + hm // mdir writes 0:00
		}
		e := MdirEntry{Short: strings.TrimRight(string(r[:8]), " "), Long: f[4], Dir: f[1] == "<DIR>", Stamp: f[2] + " " + hm}
		if ext := strings.TrimRight(string(r[9:12]), " "); ext != "" {
			e.Short += "." + ext
		}
		if e.Short == "." || e.Short == ".." {
			continue
		}
		fmt.Sscan(f[1], &e.Size)
		name := e.Long
		if name == "" {
			name = e.Short
		}
		m[path.Join(dir, name)] = e
	}
	if len(m) < 10 {
		t.Fatalf("mdir lists %d entries:\n%s", len(m), out)
	}
	return m
}
