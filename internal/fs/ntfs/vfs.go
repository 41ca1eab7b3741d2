package ntfs

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is NTFS as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"ntfs"},
	Title:    "NTFS",
	Detect:   Detect,
	Identify: identify,
	Moved:    moved,
	Owners:   Owners,
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := openFiles(r, size)
		if err != nil {
			return nil, err
		}
		return f, nil
	},
}

// identify: the volume serial number (boot sector byte 0x48) as blkid
// shows it, and the $VOLUME_NAME attribute of $Volume (MFT record 3).
func identify(r io.ReaderAt, size int64) vfs.Identity {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil || string(bs[3:11]) != "NTFS    " {
		return vfs.Identity{}
	}
	id := vfs.Identity{UUID: fmt.Sprintf("%016X", binary.LittleEndian.Uint64(bs[0x48:]))}
	if n, err := openFiles(r, size); err == nil {
		id.Label, _ = n.label()
	}
	return id
}
