package lvm

import (
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Container is an LVM2 physical volume as the registry (internal/fsmap)
// knows it: it maps each logical volume and hands it to env.Inner.
var Container = vfs.Container{
	Names: []string{"lvm2"},
	Detect: func(r io.ReaderAt, size int64, env vfs.Env) (*block.Usage, error) {
		return Detect(r, size, env.Inner)
	},
}
