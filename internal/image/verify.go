package image

import (
	"context"
	"errors"
	"sort"
	"sync"
)

// Verify reads and checks every chunk, in parallel. It returns one
// *ChunkError per damaged chunk, in index order; err is for failures that
// are not damage (cancellation). progress, if not nil, is called with the
// decoded bytes of each chunk checked.
func (ir *Reader) Verify(ctx context.Context, workers int, progress func(n int64)) ([]*ChunkError, error) {
	// Duplicate chunks share a frame, and the images of a chain share
	// their parents' frames: check each frame once.
	type frame struct {
		r   *Reader
		off int64
	}
	frameResult := map[frame]error{}
	// A read the storage fails (not the image's bytes: a disk's I/O
	// error, a server gone) stops the check: it says nothing about the
	// chunks.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var mu sync.Mutex
	var bad []*ChunkError
	ch := make(chan int)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, ir.meta.ChunkSize)
			for i := range ch {
				e := ir.entries[i]
				var err error
				r, fe, rerr := ir.resolve(e)
				switch {
				case rerr != nil:
					err = rerr
				case !fe.Zero():
					key := frame{r, fe.FrameOff}
					mu.Lock()
					prev, seen := frameResult[key]
					mu.Unlock()
					if seen {
						err = prev
					} else {
						_, err = r.ReadChunk(fe, buf)
						mu.Lock()
						frameResult[key] = err
						mu.Unlock()
					}
				}
				if err != nil && !errors.Is(err, ErrDamaged) {
					stop(err)
					err = nil
				}
				if err != nil {
					var ce *ChunkError
					if !errors.As(err, &ce) {
						ce = &ChunkError{Entry: e, Where: ir.Where(e), Msg: err.Error()}
					}
					ce = &ChunkError{Entry: e, File: ce.File, Where: ir.Where(e), Msg: ce.Msg}
					mu.Lock()
					bad = append(bad, ce)
					mu.Unlock()
				}
				if progress != nil {
					progress(int64(e.RawLen))
				}
			}
		}()
	}
feed:
	for i := range ir.entries {
		select {
		case ch <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	err := context.Cause(ctx)
	sort.Slice(bad, func(i, j int) bool {
		a, b := bad[i].Entry, bad[j].Entry
		return a.Area < b.Area || (a.Area == b.Area && a.Chunk < b.Chunk)
	})
	return bad, err
}
