//go:build linux

package resize

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// TestWindowWritesOnlyOverlay writes through a window over an overlay
// (with the file API and through a loop device) and checks that the
// overlay holds the writes, the base file is unchanged, the file cannot
// grow, and Close leaves nothing behind.
func TestWindowWritesOnlyOverlay(t *testing.T) {
	base := tooltest.Garbage(t, 8<<20)
	before := fileHash(t, base)
	s, err := NewScratch(t.TempDir(), openDev(t, base, false))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := OpenWindow(s.Overlay)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dir := filepath.Dir(filepath.Dir(w.Path()))
	st, err := os.Stat(w.Path())
	if err != nil || st.Size() != 8<<20 || st.Mode().Perm() != 0o600 {
		t.Fatalf("window file: %v, %v", st, err)
	}
	f, err := os.OpenFile(w.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("written through the window "), 1000)
	if _, err := f.WriteAt(msg, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 8<<20); err == nil {
		t.Error("a write past the end of the window succeeded")
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A loop device over the window, as mount and xfs_growfs use it.
	loop, err := attachLoop(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "dd", "if=/dev/zero", "of="+loop, "bs=4096", "seek=1000", "count=10", "oflag=direct", "conv=notrunc", "status=none")
	if err := detachLoop(loop); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := s.ReadAt(got, 12345); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("the overlay does not hold what was written: %v", err)
	}
	z := make([]byte, 40960)
	if _, err := s.ReadAt(z, 1000*4096); err != nil || !bytes.Equal(z, make([]byte, len(z))) {
		t.Errorf("the overlay does not hold what the loop device wrote: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("window directory %s left behind: %v", dir, err)
	}
	if after := fileHash(t, base); after != before {
		t.Error("the base under the overlay changed")
	}
	// The scratch overlay's file is gone already: only its descriptor.
	ents, _ := os.ReadDir(filepath.Dir(base))
	for _, e := range ents {
		if e.Name() != filepath.Base(base) {
			t.Errorf("left in the test directory: %s", e.Name())
		}
	}
}

// TestWindowCloseAfterCancel stops a tool by cancelling its context
// while a filesystem is mounted from a loop device over the window,
// then checks that Close unmounts it, detaches the loop device and
// removes the window.
func TestWindowCloseAfterCancel(t *testing.T) {
	img := fixture(t, 32<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", img)
	w, err := OpenWindow(openDev(t, img, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mnt, _, err := loopMount(w.Path(), "ext4", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A file held open in the mount, as a killed tool's child might.
	hold, err := os.Create(filepath.Join(mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err = tool(ctx, w.Path(), nil, "sleep", "30")
	var te *ToolError
	if !errors.As(err, &te) || !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled tool: %v after %v", err, time.Since(start))
	}
	loops := loopsOf(w.Path())
	if len(loops) != 1 {
		t.Fatalf("loop devices over the window: %v", loops)
	}
	go func() { time.Sleep(time.Second); hold.Close() }()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := mountsOf(loops[0]); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if out, _ := exec.Command("losetup", "-l", "-n", "-O", "BACK-FILE", loops[0]).CombinedOutput(); len(bytes.TrimSpace(out)) != 0 && !bytes.Contains(out, []byte("No such")) {
		t.Errorf("%s still attached: %s", loops[0], out)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(w.Path()))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("window left behind: %v", err)
	}
	if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
		// The mount point of loopMount is its own; its end was not
		// run, so it may stay, but it must not be mounted.
		os.Remove(mnt)
	}
	tooltest.Run(t, "e2fsck", "-fn", img)
}
