package exfat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// mount mounts the exFAT in img with exfat-fuse (read-only if ro) and
// returns the mount point and a func that unmounts it. exfat-fuse,
// run as root, mounts block devices only: img goes through a loop
// device.
func mount(t testing.TB, img string, ro bool) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	largs := []string{"-f", "--show"}
	if ro {
		largs = append(largs, "-r")
	}
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", append(largs, img)...))
	margs := []string{dev, mnt}
	if ro {
		margs = append([]string{"-o", "ro"}, margs...)
	}
	if out, err := exec.Command("mount.exfat-fuse", margs...).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		if _, lerr := exec.LookPath("mount.exfat-fuse"); lerr != nil {
			t.Fatalf("mount.exfat-fuse (Debian package exfat-fuse) is needed for this test and is not installed")
		}
		t.Fatalf("mount.exfat-fuse %s: %v\n%s", img, err, out)
	}
	done := false
	umount := func() {
		if done {
			return
		}
		done = true
		// The kernel may hold the mount a moment after the last use.
		for try := 0; ; try++ {
			out, err := exec.Command("fusermount", "-u", mnt).CombinedOutput()
			if err == nil {
				break
			}
			if try == 50 {
				t.Errorf("fusermount -u %s: %v\n%s", mnt, err, out)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// exfat-fuse writes its last sectors as it exits, after the
		// unmount returns: wait for it to let go of the device.
		for try := 0; try < 100; try++ {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err == nil || !strings.Contains(string(out), "busy") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for try := 0; try < 100; try++ {
			if _, err := os.Stat("/sys/block/" + filepath.Base(dev) + "/loop/backing_file"); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Cleanup(umount)
	return mnt, umount
}

// populated makes an exFAT of size bytes with clusters of cluster bytes
// and fills it through exfat-fuse (populate); it returns its path.
func populated(t testing.TB, size, cluster int64, many int) string {
	t.Helper()
	return populatedSectors(t, size, 512, cluster, many)
}

// populatedSectors is populated for a volume of sectors of sector bytes
// (mkfs.exfat takes the size from the device: a loop device of that
// logical sector size).
func populatedSectors(t testing.TB, size, sector, cluster int64, many int) string {
	t.Helper()
	img := tooltest.Garbage(t, size)
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", "--sector-size", strconv.FormatInt(sector, 10), img))
	_, err := runTool(t, "mkfs.exfat", "-c", strconv.FormatInt(cluster, 10), "-L", "Platter ✓", dev)
	exec.Command("losetup", "-d", dev).Run()
	if err != nil {
		t.Fatalf("mkfs.exfat: %v", err)
	}
	if b, _ := exec.Command("dump.exfat", img).CombinedOutput(); !regexp.MustCompile(fmt.Sprintf(`Sector Size Bits:\s+%d\n`, bitsOf(sector))).Match(b) {
		t.Fatalf("mkfs.exfat made no volume of %d-byte sectors:\n%s", sector, b)
	}
	mnt, umount := mount(t, img, false)
	populate(t, mnt, cluster, many)
	umount()
	tooltest.Run(t, "fsck.exfat", "-n", img)
	return img
}

// populate writes the files of a test volume: a deep tree, long names
// in several scripts (one past the Basic Multilingual Plane), names that
// differ in case only in other directories, empty files and an empty
// directory, files of exact cluster multiples and a byte either side,
// many files in one directory, files written in turns a cluster at a
// time (their clusters interleave: FAT chains) beside files written at
// once (in one piece: NoFatChain), files deleted between them, and
// times from 1980 to 2099 with odd seconds and fractions.
func populate(t testing.TB, mnt string, cluster int64, many int) {
	t.Helper()
	rng := rand.New(rand.NewSource(cluster + int64(many)))
	rnd := func(n int64) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	write := func(p string, b []byte) {
		p = filepath.Join(mnt, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deep := "Deep"
	for i := 1; i <= 14; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("level %02d", i))
	}
	write(filepath.Join(deep, "deep file.txt"), []byte("at the bottom\n"))
	write("Ünïcödé ✓ 名前.txt", rnd(1000))
	write("Ελληνικά κείμενα/Ωμέγα.txt", rnd(77))
	write("emoji 😀 outside the BMP.txt", rnd(5))
	write(strings.Repeat("Long náme ", 20)+"end.txt", rnd(10))
	write(strings.Repeat("x", 255), rnd(3))       // 255 characters: 17 name entries
	write(strings.Repeat("名", 85), rnd(4))        // 85 characters, 255 bytes of UTF-8
	write("case/Sub/File.TXT", []byte("upper\n")) // looked up in other cases
	write("case/sub2/file.txt", []byte("lower\n"))
	write("empty.txt", nil)
	if err := os.MkdirAll(filepath.Join(mnt, "empty dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int64{1, 2, 7} {
		write(fmt.Sprintf("exact/x%d.bin", k), rnd(k*cluster))
		write(fmt.Sprintf("exact/x%d-minus.bin", k), rnd(k*cluster-1))
		write(fmt.Sprintf("exact/x%d-plus.bin", k), rnd(k*cluster+1))
	}
	write("big.bin", rnd(40*cluster+17))
	for i := 0; i < many; i++ {
		name := fmt.Sprintf("many/f%05d.txt", i)
		if i%4 == 0 {
			name = fmt.Sprintf("many/%05d a longer name that takes three entries.txt", i)
		}
		write(name, []byte(fmt.Sprintf("file %d\n", i)))
	}
	// Holes, then files written in turns.
	for i := 0; i < 10; i++ {
		write(fmt.Sprintf("holes/h%02d", i), rnd(2*cluster))
	}
	for i := 0; i < 10; i += 2 {
		if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("holes/h%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var fs []*os.File
	for i := 0; i < 3; i++ {
		f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("frag/interleaved %d.bin", i)))
		if os.IsNotExist(err) {
			os.Mkdir(filepath.Join(mnt, "frag"), 0o755)
			f, err = os.Create(filepath.Join(mnt, fmt.Sprintf("frag/interleaved %d.bin", i)))
		}
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for round := 0; round < 6; round++ {
		for i, f := range fs {
			if _, err := f.Write(rnd(cluster + int64(i*100))); err != nil {
				t.Fatal(err)
			}
			f.Sync()
		}
	}
	for _, f := range fs {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write("frag/into the holes.bin", rnd(7*cluster+5))
	write("gone/deleted.bin", rnd(3*cluster))
	write("gone/kept.txt", []byte("kept\n"))
	if err := os.Remove(filepath.Join(mnt, "gone/deleted.bin")); err != nil {
		t.Fatal(err)
	}
	times := []time.Time{
		time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
		// exfat-fuse takes 2100 for a leap year: past it, it writes
		// and reads the day before (the entry says so).
		time.Date(2099, 12, 31, 23, 59, 58, 0, time.UTC),
		time.Date(2024, 2, 29, 12, 34, 57, 730_000_000, time.UTC),
	}
	i := 0
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			os.Chtimes(p, times[i%len(times)], times[i%len(times)])
			i++
		}
		return nil
	})
}

// treeOf is every entry below root: by path, "dir", or "file:" with its
// size and SHA-free content, and its mtime in seconds.
type treeEntry struct {
	dir   bool
	data  []byte
	mtime int64
}

func treeOf(t testing.TB, root string) map[string]treeEntry {
	t.Helper()
	m := map[string]treeEntry{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		e := treeEntry{dir: fi.IsDir(), mtime: fi.ModTime().Unix()}
		if !e.dir {
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		m[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameTrees fails the test unless a and b hold the same entries, file
// contents and (if times) mtimes to the second.
func sameTrees(t testing.TB, a, b map[string]treeEntry, times bool) {
	t.Helper()
	for p, x := range a {
		y, ok := b[p]
		switch {
		case !ok:
			t.Errorf("%s: missing", p)
		case x.dir != y.dir || !bytes.Equal(x.data, y.data):
			t.Errorf("%s: differs (dir %v/%v, %d/%d bytes)", p, x.dir, y.dir, len(x.data), len(y.data))
		case times && !x.dir && x.mtime != y.mtime:
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(y.mtime, 0).UTC(), time.Unix(x.mtime, 0).UTC())
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%s: unexpected", p)
		}
	}
	if len(a) < 20 {
		t.Errorf("only %d entries compared", len(a))
	}
}

// geometry reads what a test needs of img's boot sector.
type geometry struct {
	ss, cs, fatOff, heapOff int64
	clusters                uint32
	root                    uint32
}

func geometryOf(t testing.TB, img []byte) geometry {
	le := binary.LittleEndian
	ss := int64(1) << img[108]
	return geometry{
		ss: ss, cs: ss << img[109],
		fatOff:   int64(le.Uint32(img[80:])) * ss,
		heapOff:  int64(le.Uint32(img[88:])) * ss,
		clusters: le.Uint32(img[92:]),
		root:     le.Uint32(img[96:]),
	}
}

func (g geometry) clusterOff(c uint32) int64 { return g.heapOff + int64(c-2)*g.cs }

// fixBoot rewrites the checksum sector of the boot region at byte at.
func fixBoot(img []byte, at, ss int64) {
	sum := bootChecksum(img[at : at+11*ss])
	for i := at + 11*ss; i < at+12*ss; i += 4 {
		binary.LittleEndian.PutUint32(img[i:], sum)
	}
}

// findSet finds the entry set of the file named name in img (the first
// whose name entries spell it) and returns its file entry's byte.
func findSet(t testing.TB, img []byte, name string) int64 {
	t.Helper()
	var u []byte
	for _, r := range name {
		u = binary.LittleEndian.AppendUint16(u, uint16(r))
	}
	if len(name) > 15 {
		u = u[:30]
	}
	for from := 0; ; {
		i := bytes.Index(img[from:], u)
		if i < 0 {
			t.Fatalf("no entry set of %q", name)
		}
		at := from + i
		if at%entrySize == 2 {
			// A name entry's characters start at byte 2; the file entry
			// is two entries before the first name entry.
			fe := int64(at-2) - 2*entrySize
			if img[fe] == typeFile && img[fe+entrySize] == typeStream && img[at-2] == typeName {
				return fe
			}
		}
		from = at + 1
	}
}

// fixSet rewrites the checksum of the entry set at byte fe.
func fixSet(img []byte, fe int64) {
	n := int64(img[fe+1]) + 1
	binary.LittleEndian.PutUint16(img[fe+2:], setChecksum(img[fe:fe+n*entrySize]))
}

// writeFile writes b to a new file in a test's temporary directory.
func writeFile(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func bitsOf(n int64) int {
	b := 0
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

// runTool runs a tool that may fail (fsck.exfat finding damage) and
// returns its output; a tool that is missing fails the test.
func runTool(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test and is not installed", name)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	return string(out), err
}
