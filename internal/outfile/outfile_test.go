package outfile

import (
	"errors"
	"fmt"
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

// An error about the .partial, by either of its names and however it
// was wrapped, is given as the image's: the user named the image.
func TestNamed(t *testing.T) {
	final := filepath.Join(t.TempDir(), "x.platter")
	p, err := NewPartial(final)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	for _, name := range []string{p.Name(), p.File().Name()} {
		err := fmt.Errorf("write at byte 0: %w", &os.PathError{Op: "write", Path: name, Err: unix.ENOSPC})
		if got := p.Named(err); got.Error() != "write "+final+": no space left on device" || !errors.Is(got, unix.ENOSPC) {
			t.Errorf("Named(%v) = %v", err, got)
		}
	}
	other := &os.PathError{Op: "open", Path: "/elsewhere", Err: unix.ENOENT}
	if got := p.Named(other); got != error(other) {
		t.Errorf("Named(%v) = %v", other, got)
	}
}
