package exfat

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
// returns the mount point and a func that unmounts it and detaches its
// loop device.
func mount(t testing.TB, img string, ro bool) (string, func()) {
	t.Helper()
	dev, detach := tooltest.ExfatLoop(t, img, 0, 0, ro)
	mnt, umount := tooltest.ExfatMount(t, dev, ro)
	return mnt, func() {
		umount()
		detach()
	}
}

// populated makes an exFAT of size bytes with clusters of cluster bytes
// and fills it through exfat-fuse (tooltest.ExfatFill); it returns its
// path.
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
	tooltest.ExfatFill(t, mnt, cluster, many)
	umount()
	tooltest.Run(t, "fsck.exfat", "-n", img)
	return img
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
