package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ls and extract read files straight out of images, for every filesystem
// the fixtures hold: what extract copies out is every file, byte for byte.
func TestLsExtract(t *testing.T) {
	for _, c := range []struct {
		fixture string
		fs      map[int]string
	}{
		{"gpt-disk.sh", map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"}},
		{"mbr-disk.sh", map[int]string{1: "fat16", 2: "ext4", 6: "ntfs"}},
	} {
		t.Run(c.fixture, func(t *testing.T) {
			disk := fixture(t, c.fixture)
			img := filepath.Join(t.TempDir(), "disk.platter")
			ok(t, "create", "--progress", "none", disk, img)
			if c.fixture == "mbr-disk.sh" { // ext2: not yet, and says so
				if _, stderr, code := run(t, "ls", img+":5"); code == 0 || !strings.Contains(stderr, "not supported yet") {
					t.Errorf("ls of ext2: exit %d, %s", code, stderr)
				}
			}
			for n, fs := range c.fs {
				t.Run(fmt.Sprint(fs, "-", n), func(t *testing.T) {
					want := disk + ".files/p" + fmt.Sprint(n)
					dest := filepath.Join(t.TempDir(), "out")
					ok(t, "extract", fmt.Sprintf("%s:%d", img, n), "/", dest)
					os.RemoveAll(filepath.Join(dest, "lost+found")) // as extTree leaves it out
					if fs == "ntfs" {
						// NTFS symlinks are reparse points, which go-ntfs
						// does not read: not compared (docs/usage.md).
						want = withoutLinks(t, want)
						os.Remove(filepath.Join(dest, "link-to-numbers"))
					}
					sameTree(t, want, dest)
					if fs == "ext4" { // modes and times kept
						for _, f := range []string{"docs/numbers.txt", "bin/size-1.bin", "docs"} {
							a, _ := os.Lstat(filepath.Join(want, f))
							b, err := os.Lstat(filepath.Join(dest, f))
							if err != nil || a.Mode() != b.Mode() || a.ModTime().Unix() != b.ModTime().Unix() {
								t.Errorf("%s: mode %v time %v, want %v %v (%v)", f, b.Mode(), b.ModTime(), a.Mode(), a.ModTime(), err)
							}
						}
					}
					ents, _ := os.ReadDir(want)
					out := ok(t, "ls", fmt.Sprintf("%s:%d", img, n))
					for _, e := range ents {
						if !strings.Contains(out, e.Name()) {
							t.Errorf("ls does not list %s:\n%s", e.Name(), out)
						}
					}
				})
			}
		})
	}
}

// withoutLinks copies a tree without its symlinks.
func withoutLinks(t *testing.T, dir string) string {
	out := t.TempDir()
	sh(t, "cp", "-a", dir+"/.", out)
	sh(t, "find", out, "-type", "l", "-delete")
	return out
}

// A FAT12 floppy, one file extracted into an existing directory, and
// errors: no such partition, no such file, a partition with no
// filesystem platter reads.
func TestExtractFAT12(t *testing.T) {
	dir := t.TempDir()
	fs := sparseFile(t, filepath.Join(dir, "floppy.img"), 1440<<10)
	sh(t, "mkfs.fat", "-F", "12", fs)
	src := filepath.Join(dir, "hello.txt")
	os.WriteFile(src, []byte(strings.Repeat("hello fat12\n", 3000)), 0o644)
	sh(t, "mcopy", "-i", fs, src, "::/HELLO.TXT")
	img := filepath.Join(dir, "floppy.platter")
	ok(t, "create", "--progress", "none", fs, img)
	dest := t.TempDir()
	ok(t, "extract", img, "/HELLO.TXT", dest)
	got, _ := os.ReadFile(filepath.Join(dest, "HELLO.TXT"))
	want, _ := os.ReadFile(src)
	if string(got) != string(want) {
		t.Errorf("HELLO.TXT: %d bytes, want %d", len(got), len(want))
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", img + ":3"}, "no partition 3"},
		{[]string{"ls", img, "/nothing"}, "nothing"},
	} {
		if _, stderr, code := run(t, c.args...); code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %s", c.args, code, stderr)
		}
	}
}
