package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"
)

// ErrExists is returned when the image file exists and overwriting was
// not asked for.
var ErrExists = errors.New("image file exists (use --force to overwrite)")

// ToFile images src into the file path atomically: it writes
// path.partial (mode 0600, locked: a second writer of path is refused),
// syncs it and gives it path's name, so no half-written file ever carries
// the image's name. On any error, including cancellation and a full disk,
// the partial file is removed.
func ToFile(ctx context.Context, src block.Source, path string, force bool, opts Options) (*image.Metadata, int64, error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return nil, 0, fmt.Errorf("%s: %w", path, ErrExists)
		}
	}
	p, err := outfile.NewPartial(path)
	if err != nil {
		return nil, 0, err
	}
	defer p.Abort() // a no-op once committed
	// Written around the page cache where the filesystem allows, in 8 MiB
	// pieces while the next fills, so the final sync is short.
	opts.TempDir = filepath.Dir(path)
	out := blockdev.NewSeqWriter(p.File(), 8<<20)
	meta, n, err := Run(ctx, src, out, opts)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		// The user named the image, not its .partial.
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == p.Name() {
			pe.Path = path
		}
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := p.Commit(force); err != nil {
		if errors.Is(err, outfile.ErrExists) {
			return nil, 0, fmt.Errorf("%s: %w", path, ErrExists)
		}
		return nil, 0, err
	}
	return meta, n, nil
}
