package clone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

const cs = 64 << 10 // chunk size of the tests: many chunks outside the held first and last MiB

// disk is a source that a test may write while it is read, with a write
// tracker (backup.Tracker), and may make fail.
type disk struct {
	mu      sync.RWMutex
	data    []byte
	written []block.Extent
	failAt  int64 // a read of this byte fails (-1: none)
}

func newDisk(seed int64, size int) *disk {
	rng := rand.New(rand.NewSource(seed))
	d := &disk{data: make([]byte, size), failAt: -1}
	for k := 0; k*cs < size; k++ {
		switch {
		case k%7 == 3: // zero chunks are not stored
		case k%5 == 1 && k > 5: // repeats of chunk 1: one frame for all
			copy(d.data[k*cs:], d.data[cs:2*cs])
		default:
			rng.Read(d.data[k*cs : min(size, (k+1)*cs)])
		}
	}
	return d
}

func (d *disk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.failAt >= off && d.failAt < off+int64(len(p)) {
		return 0, errors.New("injected read error")
	}
	return copy(p, d.data[off:]), nil
}
func (d *disk) Size() int64       { return int64(len(d.data)) }
func (d *disk) SectorSize() int64 { return 512 }

func (d *disk) write(rng *rand.Rand, off, n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rng.Read(d.data[off : off+n])
	d.written = append(d.written, block.Extent{Off: off, Len: n})
}

// repeat copies n bytes at from to off.
func (d *disk) repeat(off, from, n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.data[off:off+n], d.data[from:from+n])
	d.written = append(d.written, block.Extent{Off: off, Len: n})
}

func (d *disk) Take() ([]block.Extent, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.written
	d.written = nil
	return w, nil
}

func (d *disk) snapshot() []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return bytes.Clone(d.data)
}

// target is a target in memory that counts what is written and may fail
// a write.
type target struct {
	mu      sync.Mutex
	b       []byte
	written atomic.Int64
	failAt  int64 // a write of this byte fails (-1: none)
	// slowAt, if set, makes the first write of this byte take a while,
	// so later writes overtake it; onSlow runs as it starts.
	slowAt   int64
	onSlow   func()
	slowDone atomic.Bool
}

func newTarget(size int, garbage bool) *target {
	t := &target{b: make([]byte, size), failAt: -1}
	if garbage {
		rand.New(rand.NewSource(99)).Read(t.b)
	}
	return t
}

func (t *target) WriteAt(p []byte, off int64) (int, error) {
	if t.failAt >= off && t.failAt < off+int64(len(p)) {
		return 0, errors.New("injected write error")
	}
	if t.slowAt > 0 && t.slowAt >= off && t.slowAt < off+int64(len(p)) {
		if !t.slowDone.Swap(true) { // not a sync.Once: the later writes must not wait
			if t.onSlow != nil {
				t.onSlow()
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	t.written.Add(int64(len(p)))
	t.mu.Lock()
	defer t.mu.Unlock()
	return copy(t.b[off:], p), nil
}

func (t *target) ReadAt(p []byte, off int64) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return copy(p, t.b[off:]), nil
}

func (t *target) Zero(off, n int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.b[off : off+n])
	return nil
}

// blank reports whether the target's first and last MiB are zero: it does
// not look like a disk.
func (t *target) blank() bool {
	z := make([]byte, 1<<20)
	return bytes.Equal(t.b[:1<<20], z) && bytes.Equal(t.b[len(t.b)-1<<20:], z)
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// A disk with repeated chunks (one frame for all), zero chunks and data
// at both ends clones to the same bytes, onto a fresh target (zeros
// never written) and onto one holding garbage.
func TestClone(t *testing.T) {
	src := newDisk(1, 6<<20+3*4096)
	for _, fresh := range []bool{true, false} {
		tg := newTarget(len(src.data), !fresh)
		res, err := Run(context.Background(), src, tg, Options{Backup: backup.Options{ChunkSize: cs}, Fresh: fresh, TempDir: t.TempDir()})
		if err != nil {
			t.Fatalf("fresh %v: %v", fresh, err)
		}
		if i := firstDiff(src.data, tg.b); i >= 0 {
			t.Fatalf("fresh %v: the clone differs from the source first at byte %d", fresh, i)
		}
		if res.Metadata.SourceSize != src.Size() || res.StreamBytes == 0 {
			t.Fatalf("fresh %v: result %+v", fresh, res)
		}
		var nonZero int64
		for k := 0; k < len(src.data); k += 4096 {
			if !bytes.Equal(src.data[k:min(k+4096, len(src.data))], make([]byte, min(4096, len(src.data)-k))) {
				nonZero += int64(min(4096, len(src.data)-k))
			}
		}
		if fresh && tg.written.Load() > nonZero {
			t.Fatalf("%d bytes written to a fresh target for %d non-zero bytes: zeros were written", tg.written.Load(), nonZero)
		}
	}
}

// A source written while it is cloned, with the writes tracked, clones
// as it was at the freeze: chunks copied again replace their first copy
// on the target, a chunk deduplicated against a frame a later copy
// replaced comes from where that frame's bytes were kept.
func TestCloneLive(t *testing.T) {
	src := newDisk(2, 8<<20)
	rng := rand.New(rand.NewSource(3))
	var atFreeze []byte
	written := false
	lv := &backup.Live{
		Tracker: src,
		Sync:    func() error { src.write(rng, 40*cs+100, 3000); return nil },
		Freeze: func() error {
			src.write(rng, 60*cs, 4096) // what the freeze itself writes back
			atFreeze = src.snapshot()
			return nil
		},
	}
	adds := 0
	prog := progressFunc(func() {
		// Once the first copy has gone past chunk 30.
		if adds++; written || adds < 30 {
			return
		}
		written = true
		src.write(rng, 20*cs+10, 100)   // copied already: copy again
		src.write(rng, 30*cs-50, 100)   // straddles two chunks
		src.write(rng, 50*cs, 2*cs+512) // several whole chunks
		src.repeat(90*cs, cs, cs)       // a new repeat of chunk 1
		src.write(rng, cs, cs)          // and chunk 1 itself, whose frame the repeats use
	})
	tg := newTarget(len(src.data), true)
	// The first copy of chunk 20 is still being written when the chunk
	// changes and its second copy comes: that must wait for it, and so
	// must keeping its bytes.
	tg.slowAt = 20*cs + 10
	tg.onSlow = func() { src.write(rand.New(rand.NewSource(4)), 20*cs+10, 100) }
	res, err := Run(context.Background(), src, tg, Options{
		Backup: backup.Options{ChunkSize: cs, Workers: 2, Live: lv, Progress: prog,
			Release: func() (*image.Snapshot, error) { return &image.Snapshot{Method: "track"}, nil }},
		TempDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(atFreeze, tg.b); i >= 0 {
		t.Fatalf("the clone differs from the source at the freeze first at byte %d (chunk %d)", i, i/cs)
	}
	if s := res.Metadata.Snapshot; s == nil || len(s.Passes) < 3 {
		t.Fatalf("snapshot %+v, want the passes of a live copy", s)
	}
}

type progressFunc func()

func (progressFunc) Start(int64) {}
func (f progressFunc) Add(int64) { f() }
func (progressFunc) Less(int64)  {}

// A clone that stops — the source cannot be read, the target cannot be
// written, the run is cancelled — returns why and leaves a target whose
// first and last MiB are zero.
func TestCloneStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*disk, *target) context.Context
		want string
	}{
		{"read error", func(d *disk, _ *target) context.Context { d.failAt = 5<<20 + 7; return context.Background() }, "injected read error"},
		{"write error", func(_ *disk, tg *target) context.Context { tg.failAt = 4<<20 + 9; return context.Background() }, "injected write error"},
		{"cancelled", func(d *disk, _ *target) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newDisk(4, 8<<20)
			tg := newTarget(len(src.data), true)
			ctx := tc.set(src, tg)
			_, err := Run(ctx, src, tg, Options{Backup: backup.Options{ChunkSize: cs}, TempDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "target's side stopped") {
				t.Fatalf("err = %v: the pipe's end, not the cause", err)
			}
			if !tg.blank() {
				t.Fatal("the target's first or last MiB is not zero: it looks like a disk")
			}
		})
	}
}

func ExampleRun() {
	src := newDisk(5, 4<<20)
	tg := newTarget(len(src.data), false)
	res, err := Run(context.Background(), src, tg, Options{Fresh: true})
	if err != nil {
		panic(err)
	}
	fmt.Println(bytes.Equal(src.data, tg.b), res.Metadata.SourceSize)
	// Output: true 4194304
}
