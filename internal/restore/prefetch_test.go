package restore

import (
	"bytes"
	"context"
	"fmt"
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

// Ahead of every worker, the prefetcher asks for every frame once, in
// the file's order, and for nothing else; a restore that prefetches asks
// only for frames, none twice, and is exact.
func TestPrefetchAsksForEveryFrame(t *testing.T) {
	img, f, data := prefetchImage(t)
	var frames []prefetch
	for _, e := range img.Entries() {
		if !e.Zero() {
			frames = append(frames, prefetch{e.FrameOff, img.FrameSize(e)})
		}
	}
	tasks, err := plan(img, partitionPlace(0))
	if err != nil {
		t.Fatal(err)
	}
	p := newPrefetcher(img, tasks)
	p.window = 1 << 40
	p.run(context.Background()) // no task started: nothing is skipped
	if fmt.Sprint(f.asked) != fmt.Sprint(frames) {
		t.Fatalf("prefetched %v, want the frames %v", f.asked, frames)
	}

	f.asked = nil
	target := &memTarget{b: make([]byte, len(data))}
	if err := Run(context.Background(), img, target, Options{Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(target.b, data) {
		t.Fatal("restore differs")
	}
	isFrame := map[prefetch]bool{}
	for _, fr := range frames {
		isFrame[fr] = true
	}
	seen := map[prefetch]bool{}
	for _, q := range f.asked {
		if !isFrame[q] || seen[q] {
			t.Fatalf("prefetched %+v: a frame %v, asked before %v", q, isFrame[q], seen[q])
		}
		seen[q] = true
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
