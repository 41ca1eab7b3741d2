// Package fsmap finds which blocks of a filesystem hold data, by asking
// each filesystem's own detector (one subpackage per filesystem) in turn.
package fsmap

import (
	"errors"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/btrfs"
	"github.com/platter-dev/platter/internal/fs/exfat"
	"github.com/platter-dev/platter/internal/fs/f2fs"
	"github.com/platter-dev/platter/internal/fs/luks"
	"github.com/platter-dev/platter/internal/fs/lvm"
	"github.com/platter-dev/platter/internal/fs/swap"
	"github.com/platter-dev/platter/internal/fs/xfs"
	"github.com/platter-dev/platter/internal/fs/ext"
	"github.com/platter-dev/platter/internal/fs/fat"
	"github.com/platter-dev/platter/internal/fs/ntfs"
)

type detector func(r io.ReaderAt, size int64) (*block.Usage, error)

// Env is what a container's detector gets: the detector of what it holds
// (Detect itself, one level deeper) and the keys it may use.
type Env struct {
	// Inner finds the used blocks of a volume inside the container.
	Inner func(r io.ReaderAt, size int64) (*block.Usage, error)
	// Keys are key files' contents or passphrases given for encrypted
	// volumes (create --luks-key-file); a container tries each.
	Keys [][]byte
}

// container is a detector of a volume manager or an encryption layer
// (LVM2, LUKS): it maps the volumes inside r and asks env.Inner for each
// one's used blocks, and answers with a map over r (its own metadata,
// kept byte for byte, plus each volume's used blocks where they lie in
// r). Not its format: an error wrapping block.ErrNotMine.
type container func(r io.ReaderAt, size int64, env Env) (*block.Usage, error)

// containers are tried before filesystems: their signatures sit where a
// filesystem's would be read as garbage.
var containers = []container{
	func(r io.ReaderAt, size int64, env Env) (*block.Usage, error) {
		return luks.Detect(r, size, env.Keys, env.Inner)
	},
	func(r io.ReaderAt, size int64, env Env) (*block.Usage, error) { return lvm.Detect(r, size, env.Inner) },
}

// maxDepth bounds containers inside containers (LUKS on LVM on LUKS...).
const maxDepth = 4

// Options are what detection may use beyond the bytes.
type Options struct {
	Keys [][]byte // for encrypted volumes
}

// NTFS and FAT first: both start with a boot sector whose signature a
// stray ext superblock cannot carry, while ext's magic sits at byte 1080.
// Swap last: its signature ends the first page, where a filesystem made
// over an old swap area may have left it (mkswap wipes the signatures it
// finds).
var detectors = []detector{ntfs.Detect, fat.Detect, ext.Detect, xfs.Detect, btrfs.Detect, f2fs.Detect, exfat.Detect, swap.Detect}

// Detect returns the used blocks of the filesystem in r. It returns
// (nil, nil) when no detector recognises the bytes, and (nil, err) when
// one recognises its filesystem but cannot read it. A filesystem whose
// allocation data cannot be taken as it stands (a journal to replay,
// damage its checker would repair) comes back with Usage.Warning saying
// why: its map widened to what the repair or replay may need, or, when
// Usage.Untrusted, counting every block.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	return DetectWith(r, size, Options{})
}

// DetectWith is Detect with keys for encrypted volumes.
func DetectWith(r io.ReaderAt, size int64, o Options) (*block.Usage, error) {
	return detect(r, size, o, 0)
}

func detect(r io.ReaderAt, size int64, o Options, depth int) (*block.Usage, error) {
	if depth < maxDepth {
		env := Env{Keys: o.Keys, Inner: func(r io.ReaderAt, size int64) (*block.Usage, error) {
			return detect(r, size, o, depth+1)
		}}
		for _, c := range containers {
			u, err := c(r, size, env)
			if err == nil {
				return u, nil
			}
			if !errors.Is(err, block.ErrNotMine) {
				return nil, err
			}
		}
	}
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
