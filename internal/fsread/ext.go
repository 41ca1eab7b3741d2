package fsread

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/ext"
)

// extFS reads ext2/3/4 with Platter's own reader (internal/fs/ext).
type extFS struct{ f *ext.Files }

func extEntry(f ext.File) Entry {
	e := Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target, Owner: true, Uid: f.Uid, Gid: f.Gid}
	if e.Mode.IsDir() {
		e.Size = 0
	}
	return e
}

// readDir lists a directory. Platter's ext reader hands every name up
// as the directory holds it (a slash or NUL included) for checked to
// judge; an entry whose inode cannot be read still fails the directory.
func (x extFS) readDir(dir string) ([]dirent, error) {
	fs, err := x.f.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirent, 0, len(fs))
	for _, f := range fs {
		out = append(out, dirent{Entry: extEntry(f)})
	}
	return out, nil
}

func (x extFS) stat(name string) (Entry, error) {
	f, err := x.f.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	return extEntry(f), nil
}

func (x extFS) open(name string) (io.ReadCloser, error) { return x.f.Open(name) }
