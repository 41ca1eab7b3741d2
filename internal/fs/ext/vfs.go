package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is ext2/3/4 as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"ext2", "ext3", "ext4"},
	Title:    "ext2/3/4",
	Detect:   Detect,
	Identify: identify,
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := OpenFiles(r, size)
		if err != nil {
			return nil, err
		}
		return files{f}, nil
	},
}

// files is Files as vfs.Files. Names are bytes: "Dup" and "dup" are two
// files.
type files struct{ f *Files }

func entry(f File) vfs.Entry {
	e := vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target, Owner: true, Uid: f.Uid, Gid: f.Gid}
	if e.Mode.IsDir() {
		e.Size = 0
	}
	return e
}

// ReadDir lists a directory. Every name comes up as the directory holds
// it (a slash or NUL included) for fsread to judge; an entry whose inode
// cannot be read still fails the directory.
func (x files) ReadDir(dir string) ([]vfs.Entry, error) {
	fs, err := x.f.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]vfs.Entry, 0, len(fs))
	for _, f := range fs {
		out = append(out, entry(f))
	}
	return out, nil
}

func (x files) Stat(name string) (vfs.Entry, error) {
	f, err := x.f.Stat(name)
	if err != nil {
		return vfs.Entry{}, err
	}
	return entry(f), nil
}

func (x files) Open(name string) (io.ReadCloser, error) { return x.f.Open(name) }

func (files) CaseInsensitive() bool { return false }

// identify: s_uuid (superblock byte 0x68) and s_volume_name (0x78).
func identify(r io.ReaderAt, _ int64) vfs.Identity {
	sb := make([]byte, 256)
	if _, err := r.ReadAt(sb, superOff); err != nil || binary.LittleEndian.Uint16(sb[0x38:]) != magic {
		return vfs.Identity{}
	}
	u, label := sb[0x68:0x78], sb[0x78:0x88]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	return vfs.Identity{
		Label: string(label),
		UUID:  fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
	}
}
