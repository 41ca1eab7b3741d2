package f2fs

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is F2FS as the registry (internal/fsmap) knows it. Platter does
// not read its files: the kernel does, from a mounted image.
var FS = vfs.Filesystem{
	Names:  []string{"f2fs"},
	Title:  "F2FS",
	Detect: Detect,
	Identify: func(r io.ReaderAt, size int64) vfs.Identity {
		sb, err := ReadSuper(r, size)
		if err != nil {
			return vfs.Identity{}
		}
		return vfs.Identity{Label: sb.Label, UUID: sb.UUIDString()}
	},
}
