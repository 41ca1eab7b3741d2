// Package storetest is the conformance suite every store.Place passes, as
// restic's backends pass theirs: a Place's own tests call Test with a
// function that makes an empty Place.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"

	"github.com/platter-dev/platter/internal/store"
)

// Test runs the suite against the Places newPlace makes, each empty and
// the test's own: first as they are, then wrapped in store.Split (every
// Place must hold split volumes too), with the volume tests.
func Test(t *testing.T, newPlace func(t *testing.T) store.Place) {
	for _, c := range []struct {
		name  string
		place func(t *testing.T) (store.Place, store.Place) // the Place, and what holds its objects
		split int64
	}{
		{"plain", func(t *testing.T) (store.Place, store.Place) { p := newPlace(t); return p, p }, 0},
		{"split", func(t *testing.T) (store.Place, store.Place) { p := newPlace(t); return store.Split(p), p }, 0},
		{"volumes", func(t *testing.T) (store.Place, store.Place) { p := newPlace(t); return store.Split(p), p }, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &suite{place: c.place, split: c.split}
			t.Run("RoundTrip", s.roundTrip)
			t.Run("ParallelReads", s.parallelReads)
			t.Run("NothingBeforeCommit", s.nothingBeforeCommit)
			t.Run("Abort", s.abort)
			t.Run("Exists", s.exists)
			t.Run("Force", s.force)
			t.Run("ForceAbortKeepsOld", s.forceAbortKeepsOld)
			t.Run("NotFound", s.notFound)
			t.Run("Remove", s.remove)
			t.Run("List", s.list)
			t.Run("Empty", s.empty)
			if c.split > 0 {
				t.Run("VolumeSizes", s.volumeSizes)
				t.Run("ExactMultiple", s.exactMultiple)
				t.Run("ReplaceWithFewerVolumes", s.replaceWithFewer)
				t.Run("MissingVolume", s.missingVolume)
			}
		})
	}
}

type suite struct {
	place func(t *testing.T) (store.Place, store.Place)
	split int64
}

var ctx = context.Background()

// data is n random bytes, the same for the same seed.
func data(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// write creates name and writes b into it in pieces of irregular sizes,
// without committing.
func (s *suite) write(t *testing.T, p store.Place, name string, b []byte, force bool) store.Sink {
	t.Helper()
	sink, err := p.Create(ctx, name, store.CreateOptions{Force: force, Split: s.split})
	if err != nil {
		t.Fatalf("Create %s: %v", name, err)
	}
	rng := rand.New(rand.NewSource(int64(len(b))))
	for rest := b; len(rest) > 0; {
		n := min(len(rest), 1+rng.Intn(700))
		k, err := sink.Write(rest[:n])
		if err != nil || k != n {
			sink.Abort()
			t.Fatalf("Write %s: %d of %d bytes: %v", name, k, n, err)
		}
		rest = rest[n:]
	}
	return sink
}

// put writes and commits name.
func (s *suite) put(t *testing.T, p store.Place, name string, b []byte, force bool) {
	t.Helper()
	sink := s.write(t, p, name, b, force)
	if err := sink.Commit(); err != nil {
		sink.Abort()
		t.Fatalf("Commit %s: %v", name, err)
	}
	sink.Abort() // a no-op after Commit
}

// get reads name whole.
func get(t *testing.T, p store.Place, name string) []byte {
	t.Helper()
	o, err := p.Open(ctx, name)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer o.Close()
	b := make([]byte, o.Size())
	if n, err := o.ReadAt(b, 0); n != len(b) || err != nil && err != io.EOF {
		t.Fatalf("ReadAt %s: %d of %d bytes: %v", name, n, len(b), err)
	}
	return b
}

// names lists a Place.
func names(t *testing.T, p store.Place) map[string]int64 {
	t.Helper()
	ents, err := p.List(ctx)
	if err != nil {
		t.Fatalf("List %s: %v", p, err)
	}
	m := map[string]int64{}
	for _, e := range ents {
		if _, dup := m[e.Name]; dup {
			t.Errorf("List %s: %s twice", p, e.Name)
		}
		if e.ModTime.IsZero() {
			t.Errorf("List %s: %s has no time", p, e.Name)
		}
		m[e.Name] = e.Size
	}
	return m
}

func (s *suite) roundTrip(t *testing.T) {
	p, _ := s.place(t)
	want := data(1, 4321)
	s.put(t, p, "a.platter", want, false)
	o, err := p.Open(ctx, "a.platter")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != int64(len(want)) {
		t.Fatalf("Size %d, want %d", o.Size(), len(want))
	}
	if o.Name() == "" {
		t.Error("the Object has no name for messages")
	}
	if got := get(t, p, "a.platter"); !bytes.Equal(got, want) {
		t.Fatal("read back other bytes")
	}
	// Past the end: EOF, with what there is.
	b := make([]byte, 100)
	n, err := o.ReadAt(b, int64(len(want))-10)
	if n != 10 || err != io.EOF || !bytes.Equal(b[:10], want[len(want)-10:]) {
		t.Errorf("ReadAt over the end: %d bytes, %v; want 10, EOF", n, err)
	}
	if n, err := o.ReadAt(b, int64(len(want))+5); n != 0 || err != io.EOF {
		t.Errorf("ReadAt after the end: %d bytes, %v; want 0, EOF", n, err)
	}
}

// ReadAt at random offsets from many goroutines at once.
func (s *suite) parallelReads(t *testing.T) {
	p, _ := s.place(t)
	want := data(2, 9999)
	s.put(t, p, "p.platter", want, false)
	o, err := p.Open(ctx, "p.platter")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for range 200 {
				off := rng.Int63n(int64(len(want)))
				n := 1 + rng.Intn(min(3000, len(want)-int(off)))
				b := make([]byte, n)
				k, err := o.ReadAt(b, off)
				if k != n || err != nil && err != io.EOF {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d): %d, %v", n, off, k, err)
					return
				}
				if !bytes.Equal(b, want[off:off+int64(n)]) {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d): other bytes", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Until Commit, nothing carries the image's name.
func (s *suite) nothingBeforeCommit(t *testing.T) {
	p, _ := s.place(t)
	sink := s.write(t, p, "w.platter", data(3, 2500), false)
	defer sink.Abort()
	if _, err := p.Open(ctx, "w.platter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open before Commit: %v, want ErrNotFound", err)
	}
	if _, ok := names(t, p)["w.platter"]; ok {
		t.Error("listed before Commit")
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := get(t, p, "w.platter"); !bytes.Equal(got, data(3, 2500)) {
		t.Error("read back other bytes")
	}
}

// Abort leaves nothing, in the Place or what holds it.
func (s *suite) abort(t *testing.T) {
	p, under := s.place(t)
	sink := s.write(t, p, "x.platter", data(4, 3333), false)
	sink.Abort()
	sink.Abort() // twice is harmless
	if m := names(t, under); len(m) != 0 {
		t.Errorf("after Abort the Place holds %v", m)
	}
	if _, err := p.Open(ctx, "x.platter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open after Abort: %v, want ErrNotFound", err)
	}
	// The name is free again.
	s.put(t, p, "x.platter", data(5, 10), false)
}

// Without Force, an existing image is refused (at Create or at Commit)
// and left as it was.
func (s *suite) exists(t *testing.T) {
	p, _ := s.place(t)
	s.put(t, p, "e.platter", data(6, 1500), false)
	sink, err := p.Create(ctx, "e.platter", store.CreateOptions{Split: s.split})
	if err == nil {
		sink.Write(data(7, 1500))
		err = sink.Commit()
		sink.Abort()
	}
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("Create over an image without Force: %v, want ErrExists", err)
	}
	if got := get(t, p, "e.platter"); !bytes.Equal(got, data(6, 1500)) {
		t.Error("the image was changed")
	}
}

func (s *suite) force(t *testing.T) {
	p, _ := s.place(t)
	s.put(t, p, "f.platter", data(8, 2222), false)
	s.put(t, p, "f.platter", data(9, 3456), true)
	if got := get(t, p, "f.platter"); !bytes.Equal(got, data(9, 3456)) {
		t.Error("Force did not replace the image")
	}
	if m := names(t, p); len(m) != 1 || m["f.platter"] != 3456 {
		t.Errorf("List after a replace: %v", m)
	}
}

// A forced create that is aborted leaves the old image as it was.
func (s *suite) forceAbortKeepsOld(t *testing.T) {
	p, _ := s.place(t)
	s.put(t, p, "k.platter", data(10, 2500), false)
	sink := s.write(t, p, "k.platter", data(11, 4000), true)
	if got := get(t, p, "k.platter"); !bytes.Equal(got, data(10, 2500)) {
		t.Error("the old image changed before the new one was committed")
	}
	sink.Abort()
	if got := get(t, p, "k.platter"); !bytes.Equal(got, data(10, 2500)) {
		t.Error("an aborted replace changed the old image")
	}
}

func (s *suite) notFound(t *testing.T) {
	p, _ := s.place(t)
	if _, err := p.Open(ctx, "none.platter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open of nothing: %v, want ErrNotFound", err)
	}
	if err := p.Remove(ctx, "none.platter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Remove of nothing: %v, want ErrNotFound", err)
	}
}

// Remove removes the image, every volume of it, and nothing else.
func (s *suite) remove(t *testing.T) {
	p, under := s.place(t)
	s.put(t, p, "r.platter", data(12, 4500), false)
	s.put(t, p, "keep.platter", data(13, 100), false)
	if err := p.Remove(ctx, "r.platter"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Open(ctx, "r.platter"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open after Remove: %v, want ErrNotFound", err)
	}
	if m := names(t, under); len(m) != 1 || m["keep.platter"] != 100 {
		t.Errorf("after Remove the Place holds %v, want keep.platter alone", m)
	}
}

// List shows each image once, with its size.
func (s *suite) list(t *testing.T) {
	p, _ := s.place(t)
	want := map[string]int64{"one.platter": 999, "two.platter": 3001, "three.platter": 1}
	for n, size := range want {
		s.put(t, p, n, data(size, int(size)), false)
	}
	got := names(t, p)
	if len(got) != len(want) {
		t.Fatalf("List: %v, want %v", got, want)
	}
	for n, size := range want {
		if got[n] != size {
			t.Errorf("List: %s is %d bytes, want %d", n, got[n], size)
		}
	}
}

// An image of no bytes is kept too.
func (s *suite) empty(t *testing.T) {
	p, _ := s.place(t)
	s.put(t, p, "z.platter", nil, false)
	if got := get(t, p, "z.platter"); len(got) != 0 {
		t.Errorf("an empty image reads %d bytes", len(got))
	}
}

// Volumes are NAME, NAME.002, ..., every one but the last exactly the
// volume size.
func (s *suite) volumeSizes(t *testing.T) {
	p, under := s.place(t)
	s.put(t, p, "v.platter", data(14, 4321), false)
	got := names(t, under)
	want := map[string]int64{"v.platter": 1000, "v.platter.002": 1000, "v.platter.003": 1000, "v.platter.004": 1000, "v.platter.005": 321}
	if len(got) != len(want) {
		t.Fatalf("volumes %v, want %v", got, want)
	}
	for n, size := range want {
		if got[n] != size {
			t.Errorf("%s is %d bytes, want %d", n, got[n], size)
		}
	}
	o, err := p.Open(ctx, "v.platter")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if vols := store.Volumes(o); len(vols) != 5 || vols[4].Off != 4000 {
		t.Errorf("Volumes: %d, want 5 with the last at 4000", len(vols))
	}
}

// An image of a whole number of volumes has no empty volume after them.
func (s *suite) exactMultiple(t *testing.T) {
	p, under := s.place(t)
	s.put(t, p, "m.platter", data(15, 3000), false)
	if got := names(t, under); len(got) != 3 || got["m.platter.003"] != 1000 {
		t.Errorf("volumes %v, want 3 of 1000 bytes", got)
	}
	if got := get(t, p, "m.platter"); !bytes.Equal(got, data(15, 3000)) {
		t.Error("read back other bytes")
	}
}

// An image replaced by a smaller one loses the volumes the new one does
// not have: they would be read as its own.
func (s *suite) replaceWithFewer(t *testing.T) {
	p, under := s.place(t)
	s.put(t, p, "s.platter", data(16, 4500), false)
	s.put(t, p, "s.platter", data(17, 1500), true)
	if got := get(t, p, "s.platter"); !bytes.Equal(got, data(17, 1500)) {
		t.Error("read back other bytes")
	}
	if got := names(t, under); len(got) != 2 {
		t.Errorf("volumes %v, want 2", got)
	}
}

// A volume missing in the middle is named.
func (s *suite) missingVolume(t *testing.T) {
	p, under := s.place(t)
	s.put(t, p, "g.platter", data(18, 4500), false)
	if err := under.Remove(ctx, "g.platter.003"); err != nil {
		t.Fatal(err)
	}
	_, err := p.Open(ctx, "g.platter")
	var ve *store.VolumeError
	if !errors.As(err, &ve) || !bytes.Contains([]byte(ve.Volume), []byte("g.platter.003")) {
		t.Errorf("Open with volume 3 missing: %v, want a VolumeError naming g.platter.003", err)
	}
}
