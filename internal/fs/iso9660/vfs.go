package iso9660

import (
	"io"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is ISO 9660 as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"iso9660"},
	Title:    "ISO 9660",
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
