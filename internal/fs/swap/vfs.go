package swap

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is Linux swap as the registry (internal/fsmap) knows it: no files,
// but a label and UUID that /etc/fstab may name.
var FS = vfs.Filesystem{
	Names:  []string{"swap"},
	Title:  "swap",
	Detect: Detect,
	Identify: func(r io.ReaderAt, size int64) vfs.Identity {
		h, err := ReadHeader(r, size)
		if err != nil {
			return vfs.Identity{}
		}
		return vfs.Identity{Label: h.Label, UUID: h.UUIDString()}
	},
}
