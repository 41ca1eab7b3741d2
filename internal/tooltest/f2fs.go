package tooltest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// F2FSClean fails the test unless fsck.f2fs, changing nothing, finds
// nothing wrong in img.
func F2FSClean(t testing.TB, img string) {
	t.Helper()
	out, err := exec.Command("fsck.f2fs", "--dry-run", img).CombinedOutput()
	if err != nil || strings.Contains(string(out), "[Fail]") || !regexp.MustCompile(`other corrupted bugs\s+\[Ok\.\.\]`).Match(out) {
		t.Errorf("fsck.f2fs --dry-run %s: %v\n%s", img, err, out)
	}
}

// SameF2FSFiles fails the test unless every entry of the trees is in the
// directory tree of the F2FS in img (as fsck.f2fs -t lists it) and every
// regular file, read out of img by its inode with dump.f2fs, is
// identical to its source in the tree, and at least least files are
// compared. If inlineFrom is set, a file small enough to be inline need
// only read back as it does from the image inlineFrom (the one img was
// made from): dump.f2fs 1.15 reads inline data at the wrong place when
// inodes have extra attributes.
func SameF2FSFiles(t testing.TB, img, inlineFrom string, least int, trees ...string) {
	t.Helper()
	inodes := map[string]string{}
	for _, m := range regexp.MustCompile(`-- (.+) <ino = 0x([0-9a-f]+)>`).FindAllStringSubmatch(Run(t, "fsck.f2fs", "-t", img), -1) {
		inodes[m[1]] = m[2]
	}
	dir := t.TempDir()
	n := 0
	for _, tree := range trees {
		filepath.Walk(tree, func(p string, fi os.FileInfo, err error) error {
			if err != nil || p == tree {
				return err
			}
			ino, ok := inodes[fi.Name()]
			if !ok {
				t.Errorf("%s: fsck.f2fs -t does not list it", p)
				return nil
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			got := f2fsDump(t, img, ino, fi.Name(), dir)
			want, _ := os.ReadFile(p)
			switch {
			case bytes.Equal(got, want):
			case inlineFrom != "" && fi.Size() < 3500:
				if was := f2fsDump(t, inlineFrom, ino, fi.Name(), dir); !bytes.Equal(got, was) {
					t.Errorf("%s (inode 0x%s) reads back %d bytes unlike the source image's %d", p, ino, len(got), len(was))
				}
			default:
				t.Errorf("%s (inode 0x%s) reads back %d bytes unlike the %d written", p, ino, len(got), len(want))
			}
			n++
			return nil
		})
	}
	if n < least {
		t.Errorf("only %d files compared", n)
	}
}

// f2fsDump reads the file of inode ino (hex) out of img with dump.f2fs,
// which writes it under its own name into dir/lost_found.
func f2fsDump(t testing.TB, img, ino, name, dir string) []byte {
	t.Helper()
	abs, _ := filepath.Abs(img)
	out := filepath.Join(dir, "lost_found", name)
	os.Remove(out)
	cmd := exec.Command("dump.f2fs", "-i", "0x"+ino, abs)
	cmd.Dir, cmd.Stdin = dir, strings.NewReader("y\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dump.f2fs -i 0x%s: %v\n%s", ino, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("dump.f2fs -i 0x%s wrote no file: %v", ino, err)
	}
	os.Remove(out)
	return b
}
