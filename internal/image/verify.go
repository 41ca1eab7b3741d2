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
	// Duplicate chunks share a frame: check each frame once.
	frameResult := map[int64]error{}
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
				if !e.Zero() {
					mu.Lock()
					prev, seen := frameResult[e.FrameOff]
					mu.Unlock()
					if seen {
						err = prev
					} else {
						_, err = ir.ReadChunk(e, buf)
						mu.Lock()
						frameResult[e.FrameOff] = err
						mu.Unlock()
					}
				}
				if err != nil {
					var ce *ChunkError
					if !errors.As(err, &ce) {
						ce = &ChunkError{Entry: e, Where: ir.Where(e), Msg: err.Error()}
					}
					ce = &ChunkError{Entry: e, Where: ir.Where(e), Msg: ce.Msg}
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
	var err error
feed:
	for i := range ir.entries {
		select {
		case ch <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(ch)
	wg.Wait()
	sort.Slice(bad, func(i, j int) bool {
		a, b := bad[i].Entry, bad[j].Entry
		return a.Area < b.Area || (a.Area == b.Area && a.Chunk < b.Chunk)
	})
	return bad, err
}
