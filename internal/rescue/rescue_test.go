package rescue

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
)

// failing is a disk in memory whose chosen sectors fail to read, as a
// block device fails a request: the bytes before the first bad sector are
// read, then EIO. The engine's tests (test/e2e/rescue_test.go) read a
// real failing block device; this one checks the passes' arithmetic.
type failing struct {
	data  []byte
	bad   []block.Extent
	stall []block.Extent
	wait  time.Duration

	mu    sync.Mutex
	reads int
}

func (f *failing) Size() int64       { return int64(len(f.data)) }
func (f *failing) SectorSize() int64 { return 512 }
func (f *failing) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.reads++
	f.mu.Unlock()
	for _, s := range f.stall {
		if off < s.End() && s.Off < off+int64(len(p)) {
			time.Sleep(f.wait)
		}
	}
	end := off + int64(len(p))
	first := end
	for _, b := range f.bad {
		if off < b.End() && b.Off < end {
			first = min(first, max(b.Off, off))
		}
	}
	n := copy(p[:first-off], f.data[off:])
	if first < end {
		return n, syscall.EIO
	}
	return n, nil
}

type noProgress struct{}

func (noProgress) Phase(string, int64) {}
func (noProgress) Add(int64)           {}

// rescueAll runs a rescue of the whole of f the way the engine does:
// Copy over chunks, then Complete of what they left, and returns the
// bytes rescued (zeros where unread).
func rescueAll(t *testing.T, f *failing, opts Options) (*Rescuer, []byte) {
	t.Helper()
	r, err := New(f, 512, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(f.data))
	const chunk = 1 << 20
	var wanted []block.Extent
	ctx := context.Background()
	for off := int64(0); off < f.Size(); off += chunk {
		b := block.AlignedBuffer(chunk)
		for {
			complete, err := r.Copy(ctx, b, off)
			if errors.Is(err, ErrStalled) {
				b = block.AlignedBuffer(chunk)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if !complete {
				wanted = append(wanted, block.Extent{Off: off, Len: chunk})
				r.Missing(off, chunk, func(o, n int64) { clear(b[o-off : o-off+n]) })
			}
			break
		}
		copy(out[off:], b)
	}
	err = r.Complete(ctx, wanted, func(off int64, b []byte) error { copy(out[off:], b); return nil }, noProgress{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	return r, out
}

func TestRescueFindsExactlyTheBadSectors(t *testing.T) {
	data := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	bad := []block.Extent{{Off: 4096, Len: 512}, {Off: 1<<20 + 70000/512*512, Len: 64 << 10}, {Off: 5 << 20, Len: 1536}, {Off: 8<<20 - 512, Len: 512}}
	f := &failing{data: data, bad: bad}
	r, out := rescueAll(t, f, Options{})
	var want int64
	for _, b := range bad {
		want += b.Len
	}
	if got, _ := r.Bad(); got != want {
		t.Errorf("bad bytes %d, want %d", got, want)
	}
	unread := r.Unread([]block.Extent{{Off: 0, Len: f.Size()}})
	if len(unread) != len(bad) {
		t.Fatalf("unread %v, want %v", unread, bad)
	}
	for i := range bad {
		if unread[i] != bad[i] {
			t.Errorf("unread %v, want %v", unread[i], bad[i])
		}
	}
	// Every readable byte was rescued; every bad one is zero.
	expect := bytes.Clone(data)
	for _, b := range bad {
		clear(expect[b.Off:b.End()])
	}
	if !bytes.Equal(out, expect) {
		t.Error("rescued bytes differ from the disk's readable bytes")
	}
}

// A rescue whose map says what an earlier run found reads no bad area
// again before the rest, and ends with the same bytes and the same map.
func TestRescueResumes(t *testing.T) {
	data := bytes.Repeat([]byte("platter!"), 1<<20)
	bad := []block.Extent{{Off: 2<<20 + 4096, Len: 32 << 10}}
	mapFile := filepath.Join(t.TempDir(), "disk.map")
	f := &failing{data: data, bad: bad}
	_, first := rescueAll(t, f, Options{MapFile: mapFile})
	firstMap, err := os.ReadFile(mapFile)
	if err != nil {
		t.Fatal(err)
	}
	f2 := &failing{data: data, bad: bad}
	r2, second := rescueAll(t, f2, Options{MapFile: mapFile})
	if !r2.Resumed() {
		t.Error("not resumed from the map")
	}
	if !bytes.Equal(first, second) {
		t.Error("the resumed rescue rescued other bytes")
	}
	// The second run read the good chunks once each and no bad sector.
	if f2.reads > 8+1 {
		t.Errorf("resumed run made %d reads; the first pass of 8 chunks needs 8 (bad sectors are not read again without --retries)", f2.reads)
	}
	m1, _ := ParseMap(bytes.NewReader(firstMap), f.Size())
	m2b, _ := os.ReadFile(mapFile)
	m2, err := ParseMap(bytes.NewReader(m2b), f.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Status{Bad, Finished} {
		a, _ := m1.Bytes(s)
		b, _ := m2.Bytes(s)
		if a != b {
			t.Errorf("status %c: %d bytes then %d", s, a, b)
		}
	}
}

// Retries read bad sectors again: a sector that reads on a retry is
// rescued.
func TestRescueRetries(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 2<<20)
	f := &failing{data: data, bad: []block.Extent{{Off: 1 << 20, Len: 512}}}
	r, _ := New(f, 512, Options{Retries: 1})
	ctx := context.Background()
	b := block.AlignedBuffer(2 << 20)
	if complete, err := r.Copy(ctx, b, 0); complete || err != nil {
		t.Fatalf("complete %v, %v", complete, err)
	}
	healed := false
	put := func(off int64, p []byte) error { return nil }
	progress := &healOnRetry{f: f, healed: &healed}
	if err := r.Complete(ctx, []block.Extent{{Off: 0, Len: 2 << 20}}, put, progress); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Bad(); got != 0 {
		t.Errorf("%d bytes still bad after a retry that reads", got)
	}
}

type healOnRetry struct {
	f      *failing
	healed *bool
}

func (h *healOnRetry) Phase(name string, _ int64) {
	if name == "retry 1 of 1" {
		h.f.bad = nil
		*h.healed = true
	}
}
func (h *healOnRetry) Add(int64) {}

// A read that stalls past the timeout is given up, its bytes read later.
func TestRescueStall(t *testing.T) {
	data := bytes.Repeat([]byte{9}, 2<<20)
	f := &failing{data: data, stall: []block.Extent{{Off: 1 << 20, Len: 4096}}, wait: 300 * time.Millisecond}
	var mu sync.Mutex
	var notes []string
	r, out := rescueAll(t, f, Options{Timeout: 100 * time.Millisecond, Report: func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }})
	if r.Stalls() == 0 || len(notes) == 0 {
		t.Fatalf("no stall reported (%d, %q)", r.Stalls(), notes)
	}
	// Every sector of the stalling area stalls each time: they end bad,
	// everything else is read.
	unread := r.Unread([]block.Extent{{Off: 0, Len: f.Size()}})
	for _, u := range unread {
		if u.Off < 1<<20 || u.End() > 1<<20+4096 {
			t.Errorf("unread %v outside the stalling area", u)
		}
	}
	for i, c := range out {
		if (i < 1<<20 || i >= 1<<20+4096) && c != 9 {
			t.Fatalf("byte %d not rescued", i)
		}
	}
}

// A map file planted as a symlink is neither read nor written through.
func TestMapFileSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "secret")
	if err := os.WriteFile(target, []byte("do not read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "disk.map")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	f := &failing{data: make([]byte, 1<<20)}
	if _, err := New(f, 512, Options{MapFile: link}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("a symlinked map: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "do not read\n" {
		t.Error("the link's target was written")
	}
}
