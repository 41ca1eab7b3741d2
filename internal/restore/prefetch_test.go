package restore

import (
	"bytes"
	"context"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// prefetchFile is an image in memory that records what it is asked to
// prefetch.
type prefetchFile struct {
	*bytes.Reader
	mu    sync.Mutex
	asked []prefetch
	ch    chan prefetch
}

type prefetch struct{ off, n int64 }

func (f *prefetchFile) Prefetch(off, n int64) {
	f.mu.Lock()
	f.asked = append(f.asked, prefetch{off, n})
	f.mu.Unlock()
	if f.ch != nil {
		f.ch <- prefetch{off, n}
	}
}

// prefetchImage is an image of 48 chunks of 64 KiB, each stored as is
// (random bytes), a few all zero, in a file that records prefetches.
func prefetchImage(t *testing.T) (*image.Reader, *prefetchFile, []byte) {
	data := make([]byte, 48<<16)
	rand.New(rand.NewSource(9)).Read(data)
	for _, z := range []int{3, 17, 18, 40} {
		clear(data[z<<16 : (z+1)<<16])
	}
	var out bytes.Buffer
	if _, _, err := backup.Run(context.Background(), tooltest.NewMemSource(data), &out,
		backup.Options{ChunkSize: 64 << 10, Compression: codec.DefaultSetting}); err != nil {
		t.Fatal(err)
	}
	f := &prefetchFile{Reader: bytes.NewReader(out.Bytes())}
	img, err := image.NewReader(f, int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return img, f, data
}

// Every frame is asked for once, at its place in the file, and nothing
// else is; the restore is exact.
func TestPrefetchAsksForEveryFrame(t *testing.T) {
	img, f, data := prefetchImage(t)
	target := &memTarget{b: make([]byte, len(data))}
	if err := Run(context.Background(), img, target, Options{Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(target.b, data) {
		t.Fatal("restore differs")
	}
	frames := map[prefetch]bool{}
	for _, e := range img.Entries() {
		if !e.Zero() {
			frames[prefetch{e.FrameOff, img.FrameSize(e)}] = true
		}
	}
	seen := map[prefetch]bool{}
	for _, p := range f.asked {
		if !frames[p] || seen[p] {
			t.Fatalf("prefetched %+v: a frame %v, asked before %v", p, frames[p], seen[p])
		}
		seen[p] = true
	}
	// A frame may be skipped only when its worker started it first; with
	// one worker and 44 frames most are asked for ahead.
	if len(seen) < len(frames)/2 {
		t.Errorf("prefetched %d of %d frames", len(seen), len(frames))
	}
}

// The prefetcher stays within its window of the tasks started.
func TestPrefetchWindow(t *testing.T) {
	img, f, _ := prefetchImage(t)
	f.ch = make(chan prefetch, 64)
	tasks, err := plan(img, partitionPlace(0))
	if err != nil {
		t.Fatal(err)
	}
	p := newPrefetcher(img, tasks)
	frame := img.FrameSize(img.Entries()[0])
	// Chunks 0, 1, 2 and 4 (3 is all zero: nothing to read): three
	// frames within the window, then the one that takes it past.
	p.window = 3 * frame
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.run(ctx)
	expect := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-f.ch:
			case <-time.After(10 * time.Second):
				t.Fatal("prefetcher stopped before its window was full")
			}
		}
		select {
		case q := <-f.ch:
			t.Fatalf("prefetched %+v beyond its window", q)
		case <-time.After(100 * time.Millisecond):
		}
	}
	expect(4)
	p.start() // task 0 started: one frame more
	expect(1)
}
