// Package fsread lists and reads the files of a filesystem inside an
// image, without mounting it: ext2/3/4 through Platter's own reader
// (internal/fsmap/ext), FAT12/16/32 through github.com/diskfs/go-diskfs,
// NTFS through www.velocidex.com/golang/go-ntfs. Extract copies them out.
//
// An image is untrusted: every name read out of it passes CheckName at
// one boundary, the FS that Open returns, before anything can use it.
package fsread

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/platter-dev/platter/internal/fsmap/ext"
	"github.com/platter-dev/platter/internal/fsmap/fat"
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
		// go-diskfs follows a looping cluster chain until memory runs out.
		if err := fat.CheckChains(r, size); err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		d, err := safely("go-diskfs", "read", "the "+fs+" filesystem", func() (diskfs, error) { return openFAT(r, size, fs) })
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		rd = guarded{&diskfsFS{fs: d}, "go-diskfs"}
	case "ntfs":
		f, err := safely("go-ntfs", "read", "the ntfs filesystem", func() (*ntfsFS, error) { return openNTFS(r) })
		if err != nil {
			return nil, err
		}
		rd = guarded{f, "go-ntfs"}
	default:
		return nil, fmt.Errorf("cannot read files of a %s filesystem", fs)
	}
	return &checked{r: rd, fold: fold, skipped: o.Skipped}, nil
}

// openFAT reads a FAT filesystem with go-diskfs.
func openFAT(r io.ReaderAt, size int64, fs string) (diskfs, error) {
	st := &storage{r: r, size: size}
	// The boot sector decides the FAT type, not the name an image
	// recorded: images made before small FAT32 volumes were told from
	// FAT16 name them fat12 or fat16.
	if kind, err := fat.Kind(r, size); err == nil {
		fs = kind
	}
	switch fs {
	case "fat12":
		return fat12.Read(st, size, 0, 512)
	case "fat16":
		return fat16.Read(st, size, 0, 512)
	}
	return fat32.Read(st, size, 0, 512)
}

// clean turns a user's path into go-diskfs's form ("." for the root).
func clean(p string) string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

type diskfs interface {
	ReadDir(string) ([]iofs.DirEntry, error)
	Open(string) (iofs.File, error)
	Stat(string) (iofs.FileInfo, error)
}

// diskfsFS is a go-diskfs FAT filesystem: no symlinks, no permissions.
type diskfsFS struct {
	fs diskfs
}

func (d *diskfsFS) entry(fi iofs.FileInfo) Entry {
	e := Entry{Name: fi.Name(), Mode: fi.Mode(), Size: fi.Size(), ModTime: fi.ModTime()}
	if fi.IsDir() {
		e.Mode |= iofs.ModeDir // go-diskfs's FAT sets IsDir but not the mode bit
		if e.Mode.Perm() == 0 {
			e.Mode |= 0o755
		}
	} else if e.Mode.Perm() == 0 {
		e.Mode |= 0o644 // FAT has no permissions
	}
	if e.Mode.IsDir() {
		e.Size = 0
	}
	return e
}

// readDir lists a directory. go-diskfs leaves out the "." and ".."
// entries by their short names; a long name "..", or any other, is
// handed up for checked to judge.
func (d *diskfsFS) readDir(dir string) ([]dirent, error) {
	ents, err := d.fs.ReadDir(clean(dir))
	if err != nil {
		return nil, err
	}
	out := make([]dirent, 0, len(ents))
	for _, de := range ents {
		fi, err := de.Info()
		if err != nil {
			out = append(out, dirent{Entry: Entry{Name: de.Name()}, err: err})
			continue
		}
		out = append(out, dirent{Entry: d.entry(fi)})
	}
	return out, nil
}

func (d *diskfsFS) stat(name string) (Entry, error) {
	if clean(name) == "." {
		return Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	fi, err := d.fs.Stat(clean(name))
	if err != nil {
		return Entry{}, err
	}
	return d.entry(fi), nil
}

// open opens a file. go-diskfs opens the last entry whose long or short
// name matches without regard to case; checked lists the first of such
// names. When more than one entry answers to the name, the first is
// opened by its short name, which must then answer for it alone.
func (d *diskfsFS) open(name string) (io.ReadCloser, error) {
	p := clean(name)
	if p != "." {
		dir, base := path.Dir(p), path.Base(p)
		ents, err := d.fs.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		if first, n := fatMatches(ents, base); n > 1 {
			short := shortName(first)
			if _, m := fatMatches(ents, short); short == "" || m != 1 {
				return nil, fmt.Errorf("%s: %d entries answer to this name, and the first has no short name of its own", name, n)
			}
			p = path.Join(dir, short)
		}
	}
	f, err := d.fs.Open(p)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// fatMatches counts the entries go-diskfs would take for name, and
// returns the first whose (long) name it is: the one checked lists.
func fatMatches(ents []iofs.DirEntry, name string) (first iofs.FileInfo, n int) {
	for _, de := range ents {
		fi, err := de.Info()
		if err != nil {
			continue
		}
		if strings.EqualFold(fi.Name(), name) {
			n++
			if first == nil {
				first = fi
			}
		} else if strings.EqualFold(shortName(fi), name) {
			n++
		}
	}
	return first, n
}

func shortName(fi iofs.FileInfo) string {
	if s, ok := fi.(interface{ ShortName() string }); ok {
		return s.ShortName()
	}
	return ""
}

// storage is go-diskfs's backend over an io.ReaderAt, read-only.
type storage struct {
	r    io.ReaderAt
	size int64
	pos  int64
}

func (s *storage) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }

func (s *storage) Read(p []byte) (int, error) {
	n, err := s.r.ReadAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}

func (s *storage) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += s.pos
	case io.SeekEnd:
		off += s.size
	}
	if off < 0 {
		return 0, errors.New("fsread: seek before the start")
	}
	s.pos = off
	return off, nil
}

func (s *storage) Stat() (iofs.FileInfo, error)            { return sizeInfo(s.size), nil }
func (s *storage) Close() error                            { return nil }
func (s *storage) Sys() (*os.File, error)                  { return nil, backend.ErrNotSuitable }
func (s *storage) Writable() (backend.WritableFile, error) { return nil, backend.ErrIncorrectOpenMode }
func (s *storage) Path() string                            { return "" }

type sizeInfo int64

func (s sizeInfo) Name() string        { return "image" }
func (s sizeInfo) Size() int64         { return int64(s) }
func (s sizeInfo) Mode() iofs.FileMode { return 0o444 }
func (s sizeInfo) ModTime() time.Time  { return time.Time{} }
func (s sizeInfo) IsDir() bool         { return false }
func (s sizeInfo) Sys() any            { return nil }
