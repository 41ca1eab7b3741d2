//go:build unix

package nbd

import (
	"net"
	"syscall"
)

// listenUnix creates the socket 0600 from the start (no moment when
// another user could connect), by the umask: the process's, so this is
// only for a command's start, before it opens other files.
func listenUnix(path string) (net.Listener, error) {
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
