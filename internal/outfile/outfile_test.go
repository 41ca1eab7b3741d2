package outfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// An image is never renamed over what is not a regular file: a device
// node (here a FIFO, which needs no root) or a directory at IMAGE is
// refused before anything is written, and one that appears there while
// the image is written is refused at Commit, and kept.
func TestNotFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, p := range []string{fifo, sub} {
		if _, err := NewPartial(p); !errors.Is(err, ErrNotFile) {
			t.Errorf("NewPartial(%s): %v, want ErrNotFile", p, err)
		}
		if _, err := os.Lstat(p + ".partial"); err == nil {
			t.Errorf("NewPartial(%s) left a .partial", p)
		}
	}
	if err := Replaceable(filepath.Join(dir, "none")); err != nil {
		t.Errorf("Replaceable of nothing: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := Replaceable(file); err != nil {
		t.Errorf("Replaceable of a file: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(fifo, link)
	if err := Replaceable(link); err != nil {
		t.Errorf("Replaceable of a symlink: %v", err)
	}

	late := filepath.Join(dir, "late")
	p, err := NewPartial(late)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	if err := unix.Mkfifo(late, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(true); !errors.Is(err, ErrNotFile) {
		t.Errorf("Commit over a FIFO: %v, want ErrNotFile", err)
	}
	if st, err := os.Lstat(late); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v %v", st.Mode(), err)
	}
}
