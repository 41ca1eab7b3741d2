package restore

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/platter-dev/platter/internal/block"
)

// Copy writes the runs of src (offsets relative to src) onto t at to+off,
// in parallel: a partition read from a view of the image rather than from
// its chunks (one whose filesystem was shrunk on an overlay). Runs are
// copied in pieces of at most piece bytes; Progress counts bytes.
func Copy(ctx context.Context, src io.ReaderAt, t Target, runs []block.Extent, to int64, opts Options) error {
	const piece = 8 << 20
	if opts.Workers <= 0 {
		opts.Workers = min(4*runtime.GOMAXPROCS(0), 64)
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	var total int64
	for _, r := range runs {
		total += r.Len
	}
	opts.Progress.Start(total)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := make(chan block.Extent)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := block.AlignedBuffer(piece)
			for r := range ch {
				b := buf[:r.Len]
				if _, err := src.ReadAt(b, r.Off); err != nil {
					cancel(fmt.Errorf("read bytes %d..%d of the partition: %w", r.Off, r.End(), err))
					continue
				}
				if err := write(t, b, to+r.Off, opts.Fresh); err != nil {
					cancel(err)
					continue
				}
				opts.Progress.Add(r.Len)
			}
		}()
	}
feed:
	for _, r := range runs {
		for off := r.Off; off < r.End(); off += piece {
			select {
			case ch <- block.Extent{Off: off, Len: min(piece, r.End()-off)}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(ch)
	wg.Wait()
	return context.Cause(ctx)
}
