package restore

import (
	"context"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

// Copy writes the runs of src (offsets relative to src) onto t at to+off,
// in parallel: a partition read from a view of the image rather than from
// its chunks (one whose filesystem was shrunk on an overlay). Runs are
// copied in pieces of at most piece bytes; Progress counts bytes.
func Copy(ctx context.Context, src io.ReaderAt, t Target, runs []block.Extent, to int64, opts Options) error {
	const piece = 8 << 20
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers()
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	var pieces []block.Extent
	var total int64
	for _, r := range runs {
		total += r.Len
		for off := r.Off; off < r.End(); off += piece {
			pieces = append(pieces, block.Extent{Off: off, Len: min(piece, r.End()-off)})
		}
	}
	opts.Progress.Start(total)
	return each(ctx, opts.Workers, pieces, func() func(block.Extent) error {
		buf := block.AlignedBuffer(piece)
		return func(r block.Extent) error {
			b := buf[:r.Len]
			if _, err := src.ReadAt(b, r.Off); err != nil {
				return fmt.Errorf("read bytes %d..%d of the partition: %w", r.Off, r.End(), err)
			}
			if err := write(t, b, to+r.Off, opts.Fresh); err != nil {
				return err
			}
			opts.Progress.Add(r.Len)
			return nil
		}
	})
}
