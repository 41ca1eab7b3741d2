package exfat

import (
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is exFAT as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"exfat"},
	Title:    "exFAT",
	Detect:   Detect,
	Identify: identify,
	Moved:    moved,
	Owners:   Owners,
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := OpenFiles(r, size)
		if err != nil {
			return nil, err
		}
		return vfs.Adapt(f, entry, true), nil
	},
}

// entry is a File as vfs.Entry. The reader finds the first entry of a
// name (by the volume's up-case table, which never matches names that
// Unicode folding keeps apart), as fsread lists it, and returns errors
// on damage, never panics (FuzzFiles holds it to that). A damaged entry
// set (a checksum that does not match, entries missing) comes up with
// its Err, named by as much of its name as could be read, for fsread to
// skip and report.
func entry(f File) vfs.Entry {
	return vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Err: f.Err}
}

// identify: the volume label (its root directory entry 0x83) and the
// volume serial number (boot sector byte 100) as blkid shows it.
func identify(r io.ReaderAt, size int64) vfs.Identity {
	f, err := OpenFiles(r, size)
	if err != nil {
		return vfs.Identity{}
	}
	s := f.Serial()
	return vfs.Identity{Label: f.Label(), UUID: fmt.Sprintf("%04X-%04X", s>>16, s&0xffff)}
}
