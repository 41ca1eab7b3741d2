package ext

import (
	"encoding/binary"
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is ext2/3/4 as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"ext2", "ext3", "ext4"},
	Title:    "ext2/3/4",
	Detect:   Detect,
	Identify: identify,
	Owners:   Owners,
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := OpenFiles(r, size)
		if err != nil {
			return nil, err
		}
		return vfs.Adapt(f, entry, false), nil
	},
}

// entry is a File as vfs.Entry; names are bytes ("Dup" and "dup" are
// two files), every one handed up as the directory holds it (a slash or
// NUL included) for fsread to judge; an entry whose inode cannot be read
// comes with Err set, for fsread to skip and name.
func entry(f File) vfs.Entry {
	e := vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target, Owner: true, Uid: f.Uid, Gid: f.Gid, Err: f.Err}
	if e.Mode.IsDir() {
		e.Size = 0
	}
	return e
}

// identify: s_uuid (superblock byte 0x68) and s_volume_name (0x78).
func identify(r io.ReaderAt, _ int64) vfs.Identity {
	sb := make([]byte, 256)
	if _, err := r.ReadAt(sb, superOff); err != nil || binary.LittleEndian.Uint16(sb[0x38:]) != magic {
		return vfs.Identity{}
	}
	return vfs.Identity{Label: vfs.CString(sb[0x78:0x88]), UUID: vfs.UUID(sb[0x68:0x78])}
}
