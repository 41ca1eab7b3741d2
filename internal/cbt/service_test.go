//go:build linux

package cbt

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func directWrite(t *testing.T, dev string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(block.AlignedBuffer(n), off); err != nil {
		t.Fatal(err)
	}
}

// The service's map holds every write completed before a Flush, in the
// epoch it came in: a write before an instant is not in the map since
// the epoch after it, and one after is. A second service is refused; a
// stop saves the map as stopped.
func TestServe(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, 64<<20)
	dev := tooltest.Loop(t, p)
	dir := filepath.Join(t.TempDir(), "maps", "dev")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Map, 1)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Device: dev, Dir: dir, Ready: func(m *Map) { ready <- m }})
	}()
	var m *Map
	select {
	case m = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	if m.Filesystems[0].Kind != KindEmpty || m.Size != 64<<20 {
		t.Fatalf("first map: %+v", m)
	}
	if err := Serve(ctx, Options{Device: dev, Dir: dir}); err == nil {
		t.Fatal("a second service started")
	}
	directWrite(t, dev, 1<<20, 8192)
	m1, d1, err := Flush(dir, dev, 10*time.Second, "")
	if err != nil || d1 == nil {
		t.Fatalf("flush: %v %v", d1, err)
	}
	// The instant is taken at once, as create records its own right
	// after the answer: the write before it is not the next image's.
	instant := time.Now()
	time.Sleep(20 * time.Millisecond)
	directWrite(t, dev, 32<<20, 4096)
	m2, _, err := Flush(dir, dev, 10*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := m1.ChangedSince(m1.Since); !slices.Equal(got, []block.Extent{{Off: 1 << 20, Len: 8192}}) {
		t.Errorf("first flush: %v", got)
	}
	if got := m2.ChangedSince(instant); !slices.Equal(got, []block.Extent{{Off: 32 << 20, Len: 4096}}) {
		t.Errorf("since the instant between the writes: %v", got)
	}
	if got := m2.ChangedSince(m2.Since); len(got) != 2 {
		t.Errorf("since the start: %v", got)
	}
	boot, _ := BootID()
	if ok, why := m2.Usable(instant, boot, d1); !ok {
		t.Errorf("usable: %v", why)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	m3, err := Load(dir)
	if err != nil || m3.Stopped.IsZero() || Running(dir) {
		t.Fatalf("after stop: %+v %v running %v", m3, err, Running(dir))
	}
	if ok, _ := m3.Usable(instant, boot, nil); ok {
		t.Error("a stopped map is usable")
	}
}
