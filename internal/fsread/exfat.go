package fsread

import (
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/fs/exfat"
)

// exfatFS reads exFAT with Platter's own reader (internal/fs/exfat). It
// finds the first entry of a name (by the volume's up-case table, which
// never matches names that Unicode folding keeps apart), as checked
// lists it, and returns errors on damage, never panics (FuzzFiles holds
// it to that): it needs no guard.
type exfatFS struct{ f *exfat.Files }

func exfatEntry(f exfat.File) Entry {
	return Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime}
}

// readDir lists a directory. A damaged entry set (a checksum that does
// not match, entries missing) comes up with its error, named by as much
// of its name as could be read, for checked to skip and report.
func (x exfatFS) readDir(dir string) ([]dirent, error) {
	fs, err := x.f.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirent, 0, len(fs))
	for _, f := range fs {
		out = append(out, dirent{Entry: exfatEntry(f), err: f.Err})
	}
	return out, nil
}

func (x exfatFS) stat(name string) (Entry, error) {
	f, err := x.f.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	return exfatEntry(f), nil
}

func (x exfatFS) open(name string) (io.ReadCloser, error) { return x.f.Open(name) }

// exfatIdentity: the volume label (its root directory entry 0x83) and
// the volume serial number (boot sector byte 100) as blkid shows it.
func exfatIdentity(r io.ReaderAt, size int64) Identity {
	f, err := exfat.OpenFiles(r, size)
	if err != nil {
		return Identity{}
	}
	s := f.Serial()
	return Identity{Label: f.Label(), UUID: fmt.Sprintf("%04X-%04X", s>>16, s&0xffff)}
}
