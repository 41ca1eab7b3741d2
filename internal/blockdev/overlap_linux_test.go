package blockdev

import (
	"os"
	"path/filepath"
	"testing"
)

// A file overlaps itself by any name (a symlink, a hard link), not
// another file, and a missing path overlaps nothing. (Partitions, loop
// devices and their files: test/e2e/clone_test.go.)
func TestOverlapFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	b := filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("disk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(a, filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(a, filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		x, y string
		want bool
	}{
		{a, a, true},
		{a, filepath.Join(dir, "sym"), true},
		{filepath.Join(dir, "hard"), a, true},
		{a, b, false},
		{a, filepath.Join(dir, "missing"), false},
	} {
		what, got, err := Overlap(tc.x, tc.y)
		if err != nil || got != tc.want {
			t.Errorf("Overlap(%s, %s) = %q, %v, %v; want %v", filepath.Base(tc.x), filepath.Base(tc.y), what, got, err, tc.want)
		}
	}
	if !SameFilesystem(a, dir) || SameFilesystem(a, "/proc") {
		t.Error("SameFilesystem: a file and its directory are on one filesystem, /proc on another")
	}
}
