//go:build unix && !linux

package fsread

import (
	"time"

	"golang.org/x/sys/unix"
)

// futimens sets the modification time of the file open as fd (and its
// access time to now), to the microsecond.
func futimens(fd int, mtime time.Time) error {
	return unix.Futimes(fd, []unix.Timeval{unix.NsecToTimeval(time.Now().UnixNano()), unix.NsecToTimeval(mtime.UnixNano())})
}
