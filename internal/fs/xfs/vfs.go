package xfs

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is XFS as the registry (internal/fsmap) knows it. Platter does not
// read its files (the kernel does, from a mounted image), but it knows
// what holds each of their bytes (Owners).
var FS = vfs.Filesystem{
	Names:  []string{"xfs"},
	Title:  "XFS",
	Detect: Detect,
	Identify: func(r io.ReaderAt, _ int64) vfs.Identity {
		label, uuid, err := Identity(r)
		if err != nil {
			return vfs.Identity{}
		}
		return vfs.Identity{Label: label, UUID: uuid}
	},
	Owners: Owners,
}
