// Package fsread lists and reads the files of a filesystem inside an
// image, without mounting it: ext2/3/4 through Platter's own reader
// (internal/fsmap/ext), FAT12/16/32 through github.com/diskfs/go-diskfs,
// NTFS through www.velocidex.com/golang/go-ntfs.
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
	Target  string // of a symlink
	// Owner says Uid and Gid hold the file's owner (ext only: FAT has
	// none, NTFS's are Windows SIDs).
	Owner    bool
	Uid, Gid uint32
}

// FS is a filesystem read in place. Paths are slash-separated, relative
// to its root ("" or "/" is the root).
type FS interface {
	ReadDir(dir string) ([]Entry, error)
	Stat(name string) (Entry, error)
	Open(name string) (io.ReadCloser, error)
}

// Open reads the filesystem of kind fs ("ext2", "ext3", "ext4", "fat12",
// "fat16", "fat32", "ntfs", as image metadata names them) in the size
// bytes of r.
func Open(r io.ReaderAt, size int64, fs string) (FS, error) {
	switch fs {
	case "ext2", "ext3", "ext4":
		f, err := ext.OpenFiles(r, size)
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		return extFS{f}, nil
	case "fat12", "fat16", "fat32":
		// go-diskfs follows a looping cluster chain until memory runs out.
		if err := fat.CheckChains(r, size); err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		d, err := safely("go-diskfs", "read", "the "+fs+" filesystem", func() (diskfs, error) { return openFAT(r, size, fs) })
		if err != nil {
			return nil, fmt.Errorf("read the %s filesystem: %w", fs, err)
		}
		return guarded{&diskfsFS{fs: d}, "go-diskfs"}, nil
	case "ntfs":
		f, err := safely("go-ntfs", "read", "the ntfs filesystem", func() (FS, error) { return openNTFS(r) })
		if err != nil {
			return nil, err
		}
		return guarded{f, "go-ntfs"}, nil
	}
	return nil, fmt.Errorf("cannot read files of a %s filesystem", fs)
}

// openFAT reads a FAT filesystem with go-diskfs.
func openFAT(r io.ReaderAt, size int64, fs string) (diskfs, error) {
	st := &storage{r: r, size: size}
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

func (d *diskfsFS) ReadDir(dir string) ([]Entry, error) {
	ents, err := d.fs.ReadDir(clean(dir))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range ents {
		if de.Name() == "." || de.Name() == ".." {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, d.entry(fi))
	}
	return out, nil
}

func (d *diskfsFS) Stat(name string) (Entry, error) {
	if clean(name) == "." {
		return Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	fi, err := d.fs.Stat(clean(name))
	if err != nil {
		return Entry{}, err
	}
	return d.entry(fi), nil
}

func (d *diskfsFS) Open(name string) (io.ReadCloser, error) {
	f, err := d.fs.Open(clean(name))
	if err != nil {
		return nil, err
	}
	return f, nil
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
