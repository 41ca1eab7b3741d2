package btrfs

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is btrfs as the registry (internal/fsmap) knows it. Platter does
// not read its files (the kernel does, from a mounted image), but it
// knows what holds each of their bytes (Owners).
var FS = vfs.Filesystem{
	Names:    []string{"btrfs"},
	Title:    "btrfs",
	Detect:   Detect,
	Identify: identify,
	Owners:   Owners,
}

// identify: the superblock holds the fsid at 0x20 and the label at
// 0x12b.
func identify(r io.ReaderAt, _ int64) vfs.Identity {
	sb := make([]byte, 0x22b)
	if _, err := r.ReadAt(sb, superOff); err != nil || string(sb[0x40:0x48]) != magic {
		return vfs.Identity{}
	}
	return vfs.Identity{Label: vfs.CString(sb[0x12b:0x22b]), UUID: vfs.UUID(sb[0x20:0x30])}
}
