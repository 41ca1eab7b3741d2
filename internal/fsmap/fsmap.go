// Package fsmap is the registry of the filesystems and containers
// Platter knows (one package each under internal/fs, each describing
// itself with a vfs.Filesystem or vfs.Container), and finds which of
// them a partition holds and which of its blocks hold data. Reading
// files (internal/fsread), naming filesystems (Identify) and the CLI's
// messages all look filesystems up here: adding one is its package and
// one line below.
package fsmap

import (
	"errors"
	"io"
	"slices"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/btrfs"
	"github.com/platter-dev/platter/internal/fs/exfat"
	"github.com/platter-dev/platter/internal/fs/ext"
	"github.com/platter-dev/platter/internal/fs/f2fs"
	"github.com/platter-dev/platter/internal/fs/fat"
	"github.com/platter-dev/platter/internal/fs/iso9660"
	"github.com/platter-dev/platter/internal/fs/luks"
	"github.com/platter-dev/platter/internal/fs/lvm"
	"github.com/platter-dev/platter/internal/fs/ntfs"
	"github.com/platter-dev/platter/internal/fs/swap"
	"github.com/platter-dev/platter/internal/fs/udf"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/fs/xfs"
)

// Containers are the volume managers and encryption layers, tried
// before filesystems: their signatures sit where a filesystem's would be
// read as garbage.
var Containers = []vfs.Container{luks.Container, lvm.Container}

// Filesystems are the filesystems, in the order Detect tries them. NTFS
// and FAT first: both start with a boot sector whose signature a stray
// ext superblock cannot carry, while ext's magic sits at byte 1080. Swap
// last: its signature ends the first page, where a filesystem made over
// an old swap area may have left it (mkswap wipes the signatures it
// finds). The optical filesystems (Optical) come after the others,
// whose signatures sit where an ISO 9660 or UDF volume holds only its
// system area; UDF before ISO 9660, as Linux mounts with -t udf,iso9660:
// a UDF bridge disc (genisoimage -udf, DVD video) holds both, and its UDF
// is the fuller view.
var Filesystems = []vfs.Filesystem{ntfs.FS, fat.FS, ext.FS, xfs.FS, btrfs.FS, f2fs.FS, exfat.FS,
	udf.FS, iso9660.FS, swap.FS}

// Optical are the names of the optical filesystems: written whole, so
// their used set is the whole volume, and found from byte 0 of a disk
// whatever partition table it also carries (a hybrid ISO).
var Optical = []string{"udf", "iso9660"}

// DetectOptical is Detect for the optical filesystems only, in the
// registry's order: (nil, nil) when r holds none of them.
func DetectOptical(r io.ReaderAt, size int64) (*block.Usage, error) {
	for _, f := range Filesystems {
		if !slices.ContainsFunc(f.Names, func(n string) bool { return slices.Contains(Optical, n) }) {
			continue
		}
		u, err := f.Detect(r, size)
		if err == nil {
			return u, nil
		}
		if !errors.Is(err, block.ErrNotMine) {
			return nil, err
		}
	}
	return nil, nil
}

// Lookup finds the filesystem named fs, as Usage.FS and image metadata
// name it ("ext4", "fat32", "ntfs").
func Lookup(fs string) (vfs.Filesystem, bool) {
	for _, f := range Filesystems {
		for _, n := range f.Names {
			if n == fs {
				return f, true
			}
		}
	}
	return vfs.Filesystem{}, false
}

// Identify reads the label and UUID of the filesystem named fs (as
// image metadata names it) in the size bytes of r. A filesystem it does
// not know, or whose structures it cannot read, gives an empty
// Identity: this only describes.
func Identify(r io.ReaderAt, size int64, fs string) vfs.Identity {
	if f, ok := Lookup(fs); ok && f.Identify != nil {
		return f.Identify(r, size)
	}
	return vfs.Identity{}
}

// maxDepth bounds containers inside containers (LUKS on LVM on LUKS...).
const maxDepth = 4

// Options are what detection may use beyond the bytes.
type Options struct {
	Keys [][]byte // for encrypted volumes
}

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
		env := vfs.Env{Keys: o.Keys, Inner: func(r io.ReaderAt, size int64) (*block.Usage, error) {
			return detect(r, size, o, depth+1)
		}}
		for _, c := range Containers {
			u, err := c.Detect(r, size, env)
			if err == nil {
				return u, nil
			}
			if !errors.Is(err, block.ErrNotMine) {
				return nil, err
			}
		}
	}
	for _, f := range Filesystems {
		u, err := f.Detect(r, size)
		if err == nil {
			return u, nil
		}
		if !errors.Is(err, block.ErrNotMine) {
			return nil, err
		}
	}
	return nil, nil
}
