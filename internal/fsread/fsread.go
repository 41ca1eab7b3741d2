// Package fsread lists and reads the files of a filesystem inside an
// image, without mounting it: ext2/3/4 through Platter's own reader
// (internal/fs/ext), FAT12/16/32 through Platter's own reader
// (internal/fs/fat), NTFS through its own (ntfs*.go): every reader
// is Platter's, checked and fuzzed, none a library that may panic.
// Extract copies them out.
//
// An image is untrusted: every name read out of it passes CheckName at
// one boundary, the FS that Open returns, before anything can use it.
package fsread

import (
	"fmt"
	"io"
	iofs "io/fs"
	"time"

	"github.com/platter-dev/platter/internal/fs/exfat"
	"github.com/platter-dev/platter/internal/fs/ext"
	"github.com/platter-dev/platter/internal/fs/fat"
)

// Entry is a file, directory or symlink.
type Entry struct {
	Name    string
	Mode    iofs.FileMode // type bits and permissions
	Size    int64
	ModTime time.Time
	Target  string // of a symlink: as the filesystem holds it, never checked
	// Owner says Uid and Gid hold the file's owner (ext only: FAT has
	// none, NTFS's are Windows SIDs).
	Owner    bool
	Uid, Gid uint32
}

// FS is a filesystem read in place, as Open returns it. Paths are
// slash-separated, relative to its root ("" or "/" is the root); "." and
// ".." in a path are resolved as text, and a path with an element
// CheckName refuses names nothing.
//
// The names it hands out are safe to join onto a directory: every name
// ReadDir returns has passed CheckName, and no directory lists two
// entries of one name (without regard to case on FAT and NTFS, as they
// match names). ReadDir leaves out an entry whose name is refused, every
// entry after the first of a name, and an entry the reader could not
// describe, and tells Opener.Skipped of each, once. Stat finds only what
// ReadDir lists; Open opens the entry Stat finds. A symlink's Target is
// the filesystem's text and may point anywhere.
type FS interface {
	ReadDir(dir string) ([]Entry, error)
	Stat(name string) (Entry, error)
	Open(name string) (io.ReadCloser, error)
}

// Opener opens filesystems, reporting what their directories leave out.
type Opener struct {
	// Skipped, if set, is told of each entry ReadDir leaves out, once,
	// with the reason (a *SkipError). The rest of the directory is
	// listed; nil drops the entries silently.
	Skipped func(*SkipError)
}

// Open reads the filesystem of kind fs ("ext2", "ext3", "ext4", "fat12",
// "fat16", "fat32", "ntfs", as image metadata names them) in the size
// bytes of r. What its directories leave out is dropped silently; see
// Opener.Open.
func Open(r io.ReaderAt, size int64, fs string) (FS, error) {
	return Opener{}.Open(r, size, fs)
}

// Open reads the filesystem of kind fs in the size bytes of r, as
// fsread.Open does, telling o.Skipped of what its directories leave out.
func (o Opener) Open(r io.ReaderAt, size int64, fs string) (FS, error) {
	var rd reader
	fold := true
	switch fs {
	case "ext2", "ext3", "ext4":
		f, err := ext.OpenFiles(r, size)
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		rd, fold = extFS{f}, false
	case "fat12", "fat16", "fat32":
		// The boot sector decides the FAT type, not the name an image
		// recorded: images made before small FAT32 volumes were told
		// from FAT16 name them fat12 or fat16.
		f, err := fat.OpenFiles(r, size)
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		rd = fatFS{f}
	case "ntfs":
		f, err := openNTFS(r)
		if err != nil {
			return nil, err
		}
		rd = f
	case "exfat":
		f, err := exfat.OpenFiles(r, size)
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		rd = exfatFS{f}
	default:
		return nil, fmt.Errorf("cannot read files of a %s filesystem", fs)
	}
	return &checked{r: rd, fold: fold, skipped: o.Skipped}, nil
}
