package backup

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
)

// Live images a source whose filesystems stay mounted and written while
// it is copied (docs/live-imaging.md): after the first copy, the chunks
// written meanwhile are copied again, pass after pass while there are
// fewer each time; then the filesystems are synced and copied once more,
// frozen, and what was written last is read before they are thawed. The
// image is the source at the freeze.
type Live struct {
	// Tracker reports the byte ranges of the source written since its
	// last Take. It must have started before Run reads anything.
	Tracker Tracker
	// Sync writes back what the filesystems hold in memory (syncfs), so
	// the frozen pass has little left to copy.
	Sync func() error
	// Freeze holds the filesystems still; Options.Release thaws them.
	Freeze func() error
	// MaxPasses bounds the copies made before the freeze (default 8).
	MaxPasses int
	// Event, if set, is told about each pass as it ends.
	Event func(image.Pass)
}

// Tracker is a write tracker (internal/track).
type Tracker interface {
	Take() ([]block.Extent, error)
}

// fewDirty is a dirty set small enough to stop the passes and freeze:
// the frozen pass reads that many chunks into memory (maxHeld) in tens of
// milliseconds and compresses them after the thaw. Copying them again
// before the freeze would only take longer.
const fewDirty = maxHeld

// maxSyncPasses bounds the passes after syncfs.
const maxSyncPasses = 4

// live runs the passes after the first copy, the freeze and the frozen
// pass, and releases the source (thaws) with release. It returns the
// snapshot release gave, with the passes recorded, and a func that frees
// the allocation maps kept while frozen (the areas' maps from then on).
func (p *pipeline) live(ctx context.Context, workers int, lv *Live, release func() (*image.Snapshot, error), tempDir string, full image.Pass) (func() error, *image.Snapshot, error) {
	maxPasses := lv.MaxPasses
	if maxPasses <= 0 {
		maxPasses = 8
	}
	passes := []image.Pass{full}
	if lv.Event != nil {
		lv.Event(full)
	}
	record := func(kind string, dirty []block.Extent, chunks int, start time.Time) {
		ps := image.Pass{Kind: kind, DirtyBytes: extentBytes(dirty), Chunks: chunks, Seconds: time.Since(start).Seconds()}
		passes = append(passes, ps)
		if lv.Event != nil {
			lv.Event(ps)
		}
	}
	// take adds the chunks written since the last take to pending.
	pending := map[chunkRef]bool{}
	var taken []block.Extent
	take := func() error {
		d, err := lv.Tracker.Take()
		if err != nil {
			return fmt.Errorf("live imaging: %w; no image was written", err)
		}
		taken = append(taken, d...)
		for _, r := range p.chunksOf(d) {
			pending[r] = true
		}
		return nil
	}
	copyPass := func(kind string, ps *pass) error {
		start := time.Now()
		if err := p.refreshMaps(); err != nil {
			return err
		}
		ps.dirty = pending
		if err := p.run(ctx, workers, ps); err != nil {
			return err
		}
		record(kind, taken, len(pending), start)
		pending, taken = map[chunkRef]bool{}, nil
		return nil
	}

	// Copy again while the dirty set shrinks.
	prev := -1
	for n := 0; n < maxPasses; n++ {
		if err := take(); err != nil {
			return nil, nil, err
		}
		if len(pending) <= fewDirty || prev >= 0 && len(pending) >= prev {
			break // small enough, or the writers are as fast as the copy
		}
		prev = len(pending)
		if err := copyPass("copy", &pass{}); err != nil {
			return nil, nil, err
		}
	}
	// What writers left in memory goes to the disk now, not during the
	// freeze (buffered writes reach the device only at writeback, so the
	// passes above may have seen little of them); each pass also copies
	// chunks whose allocation changed. Again while that shrinks.
	prev = -1
	for n := 0; n < maxSyncPasses; n++ {
		if err := lv.Sync(); err != nil {
			return nil, nil, fmt.Errorf("live imaging: sync the filesystems: %w", err)
		}
		if err := take(); err != nil {
			return nil, nil, err
		}
		chunks := len(pending)
		if err := copyPass("sync", &pass{scan: true}); err != nil {
			return nil, nil, err
		}
		if chunks <= fewDirty || prev >= 0 && chunks >= prev {
			break
		}
		prev = chunks
	}

	// Frozen: the last writes and the allocation maps are read, and
	// compressed after the thaw.
	if err := lv.Freeze(); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	if err := take(); err != nil {
		return nil, nil, err
	}
	if err := p.refreshMaps(); err != nil {
		return nil, nil, err
	}
	closeMaps, err := p.keepMaps(tempDir)
	if err != nil {
		return nil, nil, err
	}
	p.held = nil
	p.holding.Store(0)
	if err := p.run(ctx, workers, &pass{dirty: pending, scan: true, hold: true}); err != nil {
		return closeMaps, nil, err
	}
	frozenDirty, frozenChunks := taken, len(pending)
	pending, taken = map[chunkRef]bool{}, nil
	// Nothing may have been written while frozen: that would mean a
	// filesystem was thawed under us, or a part of the source that is
	// not frozen (swap, a raw partition) is in use.
	if err := take(); err != nil {
		return closeMaps, nil, err
	}
	if len(pending) > 0 {
		return closeMaps, nil, fmt.Errorf("live imaging: %d bytes of the source (from byte %d) were written while its filesystems were frozen: something thawed them, or a part of the disk that cannot be frozen (swap, a raw partition) is in use; no image was written", extentBytes(taken), taken[0].Off)
	}
	snap, err := release()
	if err != nil {
		return closeMaps, nil, err
	}
	record("frozen", frozenDirty, frozenChunks, start)
	held := p.held
	p.held = nil
	if err := p.run(ctx, workers, &pass{jobs: held}); err != nil {
		return closeMaps, nil, err
	}
	if snap != nil {
		snap.Passes = passes
	}
	return closeMaps, snap, nil
}

func extentBytes(es []block.Extent) int64 {
	var n int64
	for _, e := range es {
		n += e.Len
	}
	return n
}

// chunksOf lists the chunks of the image that overlap the byte ranges es
// of the source.
func (p *pipeline) chunksOf(es []block.Extent) []chunkRef {
	var out []chunkRef
	for _, e := range es {
		for i, a := range p.areas {
			lo, hi := max(e.Off, a.meta.Start), min(e.End(), a.meta.Start+a.meta.Size)
			if lo >= hi {
				continue
			}
			for k := (lo - a.meta.Start) / p.cs; k <= (hi-1-a.meta.Start)/p.cs; k++ {
				out = append(out, chunkRef{i, k})
			}
		}
	}
	return out
}

// refreshMaps reads each filesystem's allocation map again (the detectors
// cache what they read): it changes while the filesystem is written.
func (p *pipeline) refreshMaps() error {
	dropCache(p.mapSrc)
	for i := range p.areas {
		a := &p.areas[i]
		if a.used == nil {
			continue
		}
		u, err := fsmap.DetectWith(io.NewSectionReader(p.mapSrc, a.meta.Start, a.meta.Size), a.meta.Size, p.detect)
		if err == nil && (u == nil || u.FS != a.used.FS || u.BlockSize() != a.used.BlockSize()) {
			err = fmt.Errorf("it no longer holds the same filesystem")
		}
		if err != nil {
			return fmt.Errorf("partition %d: read its %s filesystem again during live imaging: %w", a.meta.Index, a.used.FS, err)
		}
		// An untrusted filesystem's map counts every block; the note
		// says what the filesystem says of itself now (at the freeze,
		// what the image holds).
		a.used = u
		a.meta.Note = areaNote(&a.meta, u)
	}
	return nil
}

// dropCache makes the next reads of src's allocation maps come from the
// devices where src is a view of mounted devices (blockdev.View.DropCache).
func dropCache(src block.Source) {
	if v, ok := src.(interface{ DropCache() }); ok {
		v.DropCache()
	}
}

// keepMaps reads every allocation map whole (while frozen) and makes the
// areas use those copies from then on: the image's maps describe the
// filesystem at the freeze, not after the thaw.
func (p *pipeline) keepMaps(dir string) (func() error, error) {
	var closers []func() error
	closeAll := func() error {
		var first error
		for _, c := range closers {
			if err := c(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	for i := range p.areas {
		a := &p.areas[i]
		if a.used == nil {
			continue
		}
		kept, c, err := a.used.Keep(dir)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("partition %d: %w", a.meta.Index, err)
		}
		closers = append(closers, c)
		a.used = kept
		if a.meta.UsedBytes, err = kept.UsedBytes(); err != nil {
			closeAll()
			return nil, fmt.Errorf("partition %d: %w", a.meta.Index, err)
		}
	}
	return closeAll, nil
}
