//go:build !linux

package live

import (
	"errors"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
)

// tracker is a started write tracker (internal/track's, on Linux).
type tracker interface {
	backup.Tracker
	Close() error
}

func startTracker(*blockdev.Device, string, string) (tracker, string, error) {
	return nil, "", errors.New("write tracking is supported on Linux only")
}
