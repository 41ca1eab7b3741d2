package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/rescue"
)

// Imaging a failing disk (Options.Rescue). The first run of the
// pipeline reads every chunk as rescue.Rescuer.Copy does: a chunk read
// whole is processed as on a healthy disk; one with bytes left unread is
// set aside in a spool file (raw, its unread bytes zero), so the
// readable bulk of the disk is saved before any failed area is read
// again. Then the Rescuer reads what is left of the set-aside chunks
// (skipped areas, trimming, scraping, retries) into the spool, and the
// chunks are processed from it and take their place in the index
// (Writer.Replace). Bytes never read stay zero and are listed in the
// metadata (Metadata.Rescue).

// Classifier says what the unreadable ranges of a filesystem held
// (internal/owners.Classify, given by the caller so the engine does not
// depend on every filesystem's walker): ranges are bytes of the
// filesystem of kind fs in the size bytes of r; used gives its used
// runs.
type Classifier func(r io.ReaderAt, size int64, fs string, used func(off, n int64) ([]block.Extent, error), ranges []block.Extent) ([]RangeHit, error)

// RangeHit is what part of one of the ranges given to a Classifier held.
type RangeHit struct {
	Range block.Extent
	Hit   image.Hit
}

// RescueProgress, if the Progress implements it, is told of the passes
// after the first and of the bad areas found.
type RescueProgress interface {
	RescuePhase(name string, bytes int64)
}

// rescueState is the pipeline's part of a rescue.
type rescueState struct {
	r       *rescue.Rescuer
	mu      sync.Mutex
	spool   *os.File
	slots   int64
	pending []*job // set-aside chunks, in disk order (owned by the writer goroutine)
	// wanted are the byte ranges the pending chunks read, merged: what
	// the later passes read and the report lists the unread bytes of.
	wanted []block.Extent
}

// readRescued reads the byte ranges reads (of the source, within the
// chunk) into j.buf the rescue's way. A chunk not read whole is marked
// pending, its unread bytes zero.
func (p *pipeline) readRescued(j *job, reads []block.Extent) error {
	for {
		complete, stalled := true, false
		for _, r := range reads {
			ok, err := p.rescue.r.Copy(p.ctx, j.buf[r.Off-j.off:r.End()-j.off], r.Off)
			if errors.Is(err, rescue.ErrStalled) {
				stalled = true
				break
			}
			if err != nil {
				return err
			}
			complete = complete && ok
		}
		if stalled {
			// The stalled read owns the buffer now: copy again into a
			// new one (the stalled bytes are skipped: marked failed).
			j.buf = block.AlignedBuffer(int(p.cs + p.cs/64 + 4096))[:j.n]
			continue
		}
		if !complete {
			j.pending, j.wanted = true, slices.Clone(reads)
			for _, r := range reads {
				p.rescue.r.Missing(r.Off, r.Len, func(off, n int64) { clear(j.buf[off-j.off : off+n-j.off]) })
			}
		}
		return nil
	}
}

// setAside writes a pending chunk's buffer to the spool.
func (p *pipeline) setAside(j *job) error {
	s := p.rescue
	s.mu.Lock()
	if s.spool == nil {
		f, err := os.CreateTemp(p.tempDir, "platter-rescue-")
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("spool for chunks with unreadable bytes: %w", err)
		}
		os.Remove(f.Name())
		s.spool = f
	}
	j.slot = s.slots
	s.slots++
	s.mu.Unlock()
	if _, err := s.spool.WriteAt(j.buf, j.slot*p.cs); err != nil {
		return fmt.Errorf("spool for chunks with unreadable bytes: %w", err)
	}
	return nil
}

// keepRescueMaps reads every area's allocation map whole, once, into a
// temporary file the rest of the rescue reads it from: a failing disk's
// bitmaps and FATs are not read again at every window (each read may
// fail, or find the disk gone). An area whose map cannot be read is
// imaged whole, as a raw area (its filesystem still named, for the
// report), with a note saying why.
func keepRescueMaps(l *layout, dir string) func() {
	var closers []func() error
	for i := range l.areas {
		a := &l.areas[i]
		if a.used == nil {
			continue
		}
		kept, c, err := a.used.Keep(dir)
		if err != nil {
			a.used, a.meta.BlockSize = nil, 0
			a.meta.Note = fmt.Sprintf("its allocation map could not be read from the failing disk (%v): imaged whole", err)
			continue
		}
		closers = append(closers, c)
		a.used = kept
	}
	return func() {
		for _, c := range closers {
			c()
		}
	}
}

// rescueProgress adapts the engine's Progress for rescue.Complete.
type rescueProgress struct{ p Progress }

func (r rescueProgress) Phase(name string, bytes int64) {
	if rp, ok := r.p.(RescueProgress); ok {
		rp.RescuePhase(name, bytes)
	}
}
func (r rescueProgress) Add(n int64) { r.p.Add(n) }

// completeRescue reads what the first run left unread of the pending
// chunks, then processes them.
func (p *pipeline) completeRescue(ctx context.Context, workers int) error {
	s := p.rescue
	if s.spool != nil {
		defer s.spool.Close()
	}
	for _, j := range s.pending {
		s.wanted = append(s.wanted, j.wanted...)
	}
	s.wanted = block.MergeExtents(s.wanted)
	put := func(off int64, b []byte) error {
		for len(b) > 0 {
			// The pending chunk holding off: the last starting at or before it.
			i, found := slices.BinarySearchFunc(s.pending, off, func(j *job, off int64) int {
				switch {
				case j.off+j.n <= off:
					return -1
				case j.off > off:
					return 1
				}
				return 0
			})
			if !found {
				return fmt.Errorf("rescue: byte %d is in no chunk set aside (internal error)", off)
			}
			j := s.pending[i]
			n := min(int64(len(b)), j.off+j.n-off)
			if _, err := s.spool.WriteAt(b[:n], j.slot*p.cs+off-j.off); err != nil {
				return fmt.Errorf("spool for chunks with unreadable bytes: %w", err)
			}
			off, b = off+n, b[n:]
		}
		return nil
	}
	if err := s.r.Complete(ctx, s.wanted, put, rescueProgress{p.progress}); err != nil {
		return err
	}
	// Process them from the spool, a few at a time (each holds a
	// chunk's buffer).
	batch := 2 * workers
	for i := 0; i < len(s.pending); i += batch {
		jobs := s.pending[i:min(i+batch, len(s.pending))]
		for _, j := range jobs {
			j.pending = false
			j.buf = p.buffer()[:j.n]
			if _, err := s.spool.ReadAt(j.buf, j.slot*p.cs); err != nil {
				return fmt.Errorf("spool for chunks with unreadable bytes: %w", err)
			}
			// Bytes read between the used runs (in a span read whole)
			// are free blocks: cleared as on the first read.
			if j.usedMap != nil {
				p.clearFree(j, p.usedRuns(j))
			}
		}
		if err := p.run(ctx, workers, &pass{jobs: jobs}); err != nil {
			return err
		}
	}
	return nil
}

// rescueReport lists what the rescue could not read, by area, and what
// each range held (classify, if set, reads the filesystem as rescued).
// It follows completeRescue.
func (p *pipeline) rescueReport(classify Classifier, retries int) *image.Rescue {
	s := p.rescue
	rep := &image.Rescue{SectorSize: s.r.SectorSize(), Retries: retries, Stalls: s.r.Stalls(), Unreadable: []image.Unreadable{}}
	unread := s.r.Unread(s.wanted)
	if len(unread) == 0 {
		return rep
	}
	view := s.r.View(p.mapSrc)
	for i, a := range p.areas {
		var in []block.Extent // of the area, from its start
		for _, u := range unread {
			lo, hi := max(u.Off, a.meta.Start), min(u.End(), a.meta.Start+a.meta.Size)
			if lo < hi {
				in = append(in, block.Extent{Off: lo - a.meta.Start, Len: hi - lo})
			}
		}
		if len(in) == 0 {
			continue
		}
		var hits []RangeHit
		if classify != nil && a.meta.Kind == image.KindPartition {
			var used func(off, n int64) ([]block.Extent, error)
			if a.used != nil {
				used = func(off, n int64) ([]block.Extent, error) {
					m, base, err := a.used.Window(off, n)
					if err != nil {
						return nil, err
					}
					var out []block.Extent
					m.Runs(off-base, n, func(e block.Extent) { out = append(out, block.Extent{Off: e.Off + base, Len: e.Len}) })
					return out, nil
				}
			}
			// An error leaves the ranges without hits: "cannot tell".
			hits, _ = classify(io.NewSectionReader(view, a.meta.Start, a.meta.Size), a.meta.Size, a.meta.Filesystem, used, in)
		}
		for _, r := range in {
			u := image.Unreadable{Offset: a.meta.Start + r.Off, Length: r.Len, Area: i}
			for _, h := range hits {
				if h.Range == r {
					u.Hits = append(u.Hits, h.Hit)
				}
			}
			rep.Unreadable = append(rep.Unreadable, u)
		}
	}
	return rep
}
