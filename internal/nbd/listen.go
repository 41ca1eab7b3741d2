package nbd

import (
	"fmt"
	"net"
	"strings"
)

// Listen listens on address: a unix socket path (it starts with "/"),
// made 0600 so that only its owner can connect, or host:port for TCP,
// where an empty host is 127.0.0.1: the disk is offered to this machine
// alone unless another address is asked for by name.
func Listen(address string) (net.Listener, error) {
	if strings.HasPrefix(address, "/") {
		return listenUnix(address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("nbd: address %q is neither host:port, :port nor a unix socket path: %w", address, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.Listen("tcp", net.JoinHostPort(host, port))
}

// Exposed reports whether ln takes connections from other machines: a
// TCP listener on anything but a loopback address.
func Exposed(ln net.Listener) bool {
	a, ok := ln.Addr().(*net.TCPAddr)
	return ok && !a.IP.IsLoopback()
}
