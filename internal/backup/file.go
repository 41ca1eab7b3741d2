package backup

import (
	"context"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

// Sink is where an image is written, front to back: a file, split
// volumes, a pipe, an object (internal/store makes them). Nothing carries
// the image's name until Commit; Abort discards what was written and
// does nothing after Commit.
type Sink interface {
	io.Writer
	Commit() error
	Abort()
}

// ToSink images src into out and commits it, so no half-written image
// ever carries the image's name. On any error, including cancellation
// and a full disk, out is aborted (a file's .partial is removed).
func ToSink(ctx context.Context, src block.Source, out Sink, opts Options) (*image.Metadata, int64, error) {
	defer out.Abort() // a no-op once committed
	meta, n, err := Run(ctx, src, out, opts)
	if err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := out.Commit(); err != nil {
		return nil, 0, err
	}
	return meta, n, nil
}
