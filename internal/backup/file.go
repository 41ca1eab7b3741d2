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
)

// ErrExists is returned when the image file exists and overwriting was
// not asked for.
var ErrExists = errors.New("image file exists (use --force to overwrite)")

// ToFile images src into the file path atomically: it writes
// path.partial, syncs it and renames it over path, so no half-written
// file ever carries the image's name. On any error, including
// cancellation and a full disk, the partial file is removed.
func ToFile(ctx context.Context, src block.Source, path string, force bool, opts Options) (*image.Metadata, int64, error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return nil, 0, fmt.Errorf("%s: %w", path, ErrExists)
		}
	}
	partial := path + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, 0, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(partial)
		}
	}()
	// Written around the page cache where the filesystem allows, in 8 MiB
	// pieces while the next fills, so the final sync is short.
	opts.TempDir = filepath.Dir(path)
	out := blockdev.NewSeqWriter(f, 8<<20)
	meta, n, err := Run(ctx, src, out, opts)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", partial, cerr)
	}
	if err != nil {
		return nil, 0, err
	}
	if err := f.Sync(); err != nil {
		return nil, 0, fmt.Errorf("sync %s: %w", partial, err)
	}
	if err := f.Close(); err != nil {
		return nil, 0, fmt.Errorf("close %s: %w", partial, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if !force {
		// Link fails if path appeared meanwhile; rename would clobber it.
		switch err := os.Link(partial, path); {
		case errors.Is(err, os.ErrExist):
			return nil, 0, fmt.Errorf("%s: %w", path, ErrExists)
		case err != nil: // no hard links here: fall back to rename
			if err := os.Rename(partial, path); err != nil {
				return nil, 0, err
			}
		default:
			os.Remove(partial)
		}
	} else if err := os.Rename(partial, path); err != nil {
		return nil, 0, err
	}
	ok = true
	blockdev.SyncDir(filepath.Dir(path))
	return meta, n, nil
}
