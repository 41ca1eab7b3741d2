// Package fsmap finds which blocks of a filesystem hold data, by asking
// each filesystem's own detector (one subpackage per filesystem) in turn.
package fsmap

import (
	"errors"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fsmap/ext"
	"github.com/platter-dev/platter/internal/fsmap/fat"
	"github.com/platter-dev/platter/internal/fsmap/ntfs"
)

type detector func(r io.ReaderAt, size int64) (*block.Usage, error)

// NTFS and FAT first: both start with a boot sector whose signature a
// stray ext superblock cannot carry, while ext's magic sits at byte 1080.
var detectors = []detector{ntfs.Detect, fat.Detect, ext.Detect}

// Detect returns the used blocks of the filesystem in r. It returns
// (nil, nil) when no detector recognises the bytes, and (nil, err) when
// one recognises its filesystem but cannot read it. A filesystem whose
// allocation data cannot be taken as it stands (a journal to replay,
// damage its checker would repair) comes back with Usage.Warning saying
// why: its map widened to what the repair or replay may need, or, when
// Usage.Untrusted, counting every block.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	for _, d := range detectors {
		u, err := d(r, size)
		if err == nil {
			return u, nil
		}
		if !errors.Is(err, block.ErrNotMine) {
			return nil, err
		}
	}
	return nil, nil
}
