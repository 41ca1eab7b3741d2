package luks

import (
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Container is LUKS1/LUKS2 as the registry (internal/fsmap) knows it:
// it unlocks the payload with env.Keys and hands it to env.Inner.
var Container = vfs.Container{
	Names: []string{"luks1", "luks2"},
	Detect: func(r io.ReaderAt, size int64, env vfs.Env) (*block.Usage, error) {
		return Detect(r, size, env.Keys, env.Inner)
	},
}
