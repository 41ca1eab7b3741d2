package fsread

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futimens sets the modification time of the file open as fd (and its
// access time to now): utimensat with no path acts on fd itself, as
// glibc's futimens does, on every Linux.
func futimens(fd int, mtime time.Time) error {
	ts := timespec(mtime)
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
