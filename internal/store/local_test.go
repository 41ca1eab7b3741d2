package store_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/store/storetest"
)

func TestDir(t *testing.T) {
	storetest.Test(t, func(t *testing.T) store.Place { return store.NewDir(t.TempDir()) })
}

// files lists a directory, hidden files and .partial files included.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// What a local directory's Sinks leave on disk: a private .partial while
// written, the image (mode 0600) once committed, nothing after Abort.
func TestDirFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := store.Split(store.NewDir(dir))
	sink, err := p.Create(ctx, "d.platter", store.CreateOptions{Split: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("platter!"), 300<<10) // 2.4 MiB: 3 volumes
	if _, err := sink.Write(data); err != nil {
		t.Fatal(err)
	}
	// The first volume is not committed before the others.
	if got := files(t, dir); len(got) != 3 || got[0] != "d.platter.002" || got[1] != "d.platter.003.partial" || got[2] != "d.platter.partial" {
		t.Errorf("while written: %v", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "d.platter.partial")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the first volume's .partial: %v %v", fi.Mode(), err)
	}
	sink.Abort()
	if got := files(t, dir); len(got) != 0 {
		t.Errorf("after Abort: %v", got)
	}

	// Committed: three volumes, mode 0600, no .partial.
	sink, err = p.Create(ctx, "d.platter", store.CreateOptions{Split: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	sink.Write(data)
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	got := files(t, dir)
	if len(got) != 3 || got[0] != "d.platter" || got[2] != "d.platter.003" {
		t.Errorf("committed: %v", got)
	}
	for _, n := range got {
		if fi, _ := os.Stat(filepath.Join(dir, n)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", n, fi.Mode())
		}
	}
	// ErrExists keeps today's message, naming the file.
	_, err = p.Create(ctx, "d.platter", store.CreateOptions{})
	if !errors.Is(err, store.ErrExists) || err.Error() != filepath.Join(dir, "d.platter")+": image file exists (use --force to overwrite)" {
		t.Errorf("over an image: %v", err)
	}
	// A volume left without its image counts as the image being there.
	if err := os.Remove(filepath.Join(dir, "d.platter")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Create(ctx, "d.platter", store.CreateOptions{}); !errors.Is(err, store.ErrExists) {
		t.Errorf("beside a volume left: %v", err)
	}
}

// A .partial planted as a symlink leads nowhere: the image is written
// beside it and the file it pointed at is untouched.
func TestDirSymlinkPartial(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	if err := os.Symlink(victim, filepath.Join(dir, "s.platter.partial")); err != nil {
		t.Fatal(err)
	}
	p := store.NewDir(dir)
	sink, err := p.Create(ctx, "s.platter", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("image"))
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the victim holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "s.platter")); string(b) != "image" {
		t.Errorf("the image holds %q", b)
	}
}

// Open refuses what is not a regular file, as readers always did.
func TestDirNotRegular(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	_, err := store.NewDir(dir).Open(context.Background(), "sub")
	if err == nil || err.Error() != filepath.Join(dir, "sub")+" is not a regular file" {
		t.Errorf("Open of a directory: %v", err)
	}
	if err := store.NewDir(dir).Remove(context.Background(), "sub"); err == nil {
		t.Error("Remove removed a directory")
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, err := store.NewDir(dir).Open(context.Background(), bad); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Open(%q): %v", bad, err)
		}
	}
}

// Create refuses a name held by a device or a directory, even with
// Force, before it writes anything: renaming the image over a device
// node destroyed it.
func TestDirCreateNotFile(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	for _, name := range []string{"fifo", "sub"} {
		for _, force := range []bool{false, true} {
			if _, err := store.NewDir(dir).Create(context.Background(), name, store.CreateOptions{Force: force}); !errors.Is(err, outfile.ErrNotFile) {
				t.Errorf("Create(%s, force %v): %v, want outfile.ErrNotFile", name, force, err)
			}
		}
	}
	if got := files(t, dir); len(got) != 2 {
		t.Errorf("Create left %q", got)
	}
}
