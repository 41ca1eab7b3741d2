package fsread

import (
	"io"

	"github.com/platter-dev/platter/internal/fsmap/ext"
)

// extFS reads ext2/3/4 with Platter's own reader (internal/fsmap/ext):
// go-diskfs v1.9.4 reads only ext4 with metadata checksums.
type extFS struct{ f *ext.Files }

func extEntry(f ext.File) Entry {
	e := Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target, Owner: true, Uid: f.Uid, Gid: f.Gid}
	if e.Mode.IsDir() {
		e.Size = 0
	}
	return e
}

func (x extFS) ReadDir(dir string) ([]Entry, error) {
	fs, err := x.f.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(fs))
	for _, f := range fs {
		out = append(out, extEntry(f))
	}
	return out, nil
}

func (x extFS) Stat(name string) (Entry, error) {
	f, err := x.f.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	return extEntry(f), nil
}

func (x extFS) Open(name string) (io.ReadCloser, error) { return x.f.Open(name) }
