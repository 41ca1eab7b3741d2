// Package fsread lists and reads the files of a filesystem inside an
// image, without mounting it, through the filesystem's own package
// (internal/fs/ext, fat, exfat, ntfs: whichever the registry,
// internal/fsmap, gives a file reader): every reader is Platter's,
// checked and fuzzed, none a library that may panic. Extract copies
// them out.
//
// An image is untrusted: every name read out of it passes CheckName at
// one boundary, the FS that Open returns, before anything can use it.
package fsread

import (
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/fsmap"
)

// Entry is a file, directory or symlink. An FS never hands out one with
// Err set: ReadDir leaves such entries out.
type Entry = vfs.Entry

// FS is a filesystem read in place, as Open returns it. Paths are
// slash-separated, relative to its root ("" or "/" is the root); "." and
// ".." in a path are resolved as text, and a path with an element
// CheckName refuses names nothing.
//
// The names it hands out are safe to join onto a directory: every name
// ReadDir returns has passed CheckName, and no directory lists two
// entries of one name (without regard to case where the filesystem
// matches names so: FAT, exFAT, NTFS). ReadDir leaves out an entry whose
// name is refused, every entry after the first of a name, and an entry
// the reader could not describe, and tells Opener.Skipped of each, once. Stat finds only what
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

// Open reads the filesystem of kind fs ("ext4", "fat32", "exfat",
// "ntfs", as image metadata names them; see Readable) in the size bytes
// of r. What its directories leave out is dropped silently; see
// Opener.Open.
func Open(r io.ReaderAt, size int64, fs string) (FS, error) {
	return Opener{}.Open(r, size, fs)
}

// Open reads the filesystem of kind fs in the size bytes of r, as
// fsread.Open does, telling o.Skipped of what its directories leave out.
func (o Opener) Open(r io.ReaderAt, size int64, fs string) (FS, error) {
	f, ok := fsmap.Lookup(fs)
	if !ok || f.OpenFiles == nil {
		return nil, fmt.Errorf("cannot read files of a %s filesystem", fs)
	}
	files, err := f.OpenFiles(r, size)
	if err != nil {
		return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
	}
	return &checked{r: files, fold: files.CaseInsensitive(), skipped: o.Skipped}, nil
}

// Readable says whether Platter reads the files of a filesystem named
// fs, as image metadata names it.
func Readable(fs string) bool {
	f, ok := fsmap.Lookup(fs)
	return ok && f.OpenFiles != nil
}

// Titles names the filesystems Platter reads the files of, as a person
// names them ("ext2/3/4", "FAT", ...), in the registry's order.
func Titles() []string {
	var out []string
	for _, f := range fsmap.Filesystems {
		if f.OpenFiles != nil {
			out = append(out, f.Title)
		}
	}
	return out
}
