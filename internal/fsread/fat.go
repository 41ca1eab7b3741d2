package fsread

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/fat"
)

// fatFS reads FAT12/16/32 with Platter's own reader (internal/fs/fat).
// It finds the first entry of a name, as checked lists it, and returns
// errors on damage, never panics (FuzzFiles holds it to that): it needs
// no guard.
type fatFS struct{ f *fat.Files }

func fatEntry(f fat.File) Entry {
	return Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime}
}

// readDir lists a directory. The reader leaves out "." and ".." by their
// 8.3 names; a long name "..", or any other, is handed up for checked to
// judge.
func (x fatFS) readDir(dir string) ([]dirent, error) {
	fs, err := x.f.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirent, 0, len(fs))
	for _, f := range fs {
		out = append(out, dirent{Entry: fatEntry(f)})
	}
	return out, nil
}

func (x fatFS) stat(name string) (Entry, error) {
	f, err := x.f.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	return fatEntry(f), nil
}

func (x fatFS) open(name string) (io.ReadCloser, error) { return x.f.Open(name) }
