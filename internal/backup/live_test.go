package backup

import (
	"bytes"
	"context"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

// liveSource is a disk that a test writes while the engine reads it.
type liveSource struct {
	mu   sync.RWMutex
	data []byte
	// written since the tracker's last Take; drop loses writes on purpose
	written []block.Extent
	drop    bool
	// afterTake, if set, runs (locked) once the next Take has its answer.
	afterTake func()
}

func (s *liveSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return copy(p, s.data[off:]), nil
}
func (s *liveSource) Size() int64       { return int64(len(s.data)) }
func (s *liveSource) SectorSize() int64 { return 512 }

// write overwrites n bytes at off with fresh random bytes.
func (s *liveSource) write(rng *rand.Rand, off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rng.Read(s.data[off : off+n])
	if !s.drop {
		s.written = append(s.written, block.Extent{Off: off, Len: n})
	}
}

func (s *liveSource) Take() ([]block.Extent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.written
	s.written = nil
	if f := s.afterTake; f != nil {
		s.afterTake = nil
		f()
	}
	return d, nil
}

func (s *liveSource) snapshot() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return bytes.Clone(s.data)
}

// writeDuring makes Progress write to the source while the first copy
// runs: after the chunk at which it is called.
type writeDuring struct {
	once sync.Once
	fn   func()
}

func (w *writeDuring) Start(int64) {}
func (w *writeDuring) Add(int64)   { w.once.Do(w.fn) }
func (w *writeDuring) Less(int64)  {}

// liveRun images src live, writing to it during the first copy, before
// the sync pass and at the freeze, and returns the image's bytes and the
// source as it was at the freeze.
func liveRun(t *testing.T, src *liveSource, frozenWrite func()) ([]byte, []byte, *image.Metadata, error) {
	const cs = 64 << 10
	rng := rand.New(rand.NewSource(7))
	var atFreeze []byte
	lv := &Live{
		Tracker: src,
		Sync:    func() error { src.write(rng, 5*cs+100, 3000); return nil },
		Freeze: func() error {
			src.write(rng, 7*cs, 4096) // what the freeze itself writes back
			atFreeze = src.snapshot()
			return nil
		},
	}
	released := false
	opts := Options{ChunkSize: cs, Workers: 2, Live: lv,
		Progress: &writeDuring{fn: func() {
			src.write(rng, 1*cs+10, 100)   // copied already: copy again
			src.write(rng, 14*cs-50, 100)  // straddles two chunks
			src.write(rng, 3*cs, 2*cs+512) // several whole chunks
			src.write(rng, 0, src.Size())  // and all of it: more than a frozen pass holds
		}},
		Release: func() (*image.Snapshot, error) {
			released = true
			if frozenWrite != nil {
				t.Fatal("released although written while frozen")
			}
			return &image.Snapshot{Method: "track"}, nil
		},
	}
	if frozenWrite != nil {
		lv.Freeze = func() error { frozenWrite(); return nil }
	}
	var out bytes.Buffer
	meta, _, err := Run(context.Background(), src, &out, opts)
	if err == nil && !released {
		t.Fatal("never released")
	}
	return out.Bytes(), atFreeze, meta, err
}

func readImage(t *testing.T, img []byte) []byte {
	t.Helper()
	r, err := image.NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, e := range r.Entries() {
		b, err := r.ReadChunk(e, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	return got
}

func newLiveSource(seed int64) *liveSource {
	data := make([]byte, 16<<16+1000)
	rand.New(rand.NewSource(seed)).Read(data)
	return &liveSource{data: data}
}

// A source written during the copy, before the sync pass and by the
// freeze images as it was at the freeze; the passes are recorded.
func TestLivePasses(t *testing.T) {
	src := newLiveSource(1)
	img, want, meta, err := liveRun(t, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readImage(t, img), want) {
		t.Fatal("the image is not the source at the freeze")
	}
	var kinds []string
	for _, p := range meta.Snapshot.Passes {
		kinds = append(kinds, p.Kind)
	}
	if got := strings.Join(kinds, " "); got != "full copy sync frozen" {
		t.Fatalf("passes %q, want full copy sync frozen", got)
	}
	if p := meta.Snapshot.Passes[3]; p.DirtyBytes != 4096 || p.Chunks != 1 {
		t.Fatalf("frozen pass %+v, want 4096 bytes in 1 chunk", p)
	}
}

// The test has teeth: a tracker that misses writes gives an image that
// is not the source at the freeze.
func TestLiveLostWritesShow(t *testing.T) {
	src := newLiveSource(2)
	src.drop = true
	img, want, _, err := liveRun(t, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readImage(t, img), want) {
		t.Fatal("an image made with a tracker that misses writes matched the source: the check proves nothing")
	}
}

// A write after the freeze (a filesystem thawed under the copy, or a
// part of the disk that does not freeze) fails the run before the thaw.
func TestLiveWriteWhileFrozen(t *testing.T) {
	src := newLiveSource(3)
	_, _, _, err := liveRun(t, src, func() {
		// Written once the frozen pass has taken its dirty set.
		src.afterTake = func() { src.written = append(src.written, block.Extent{Off: 2 << 16, Len: 512}) }
	})
	if err == nil || !strings.Contains(err.Error(), "written while its filesystems were frozen") {
		t.Fatalf("err = %v", err)
	}
}
