package main

import "golang.org/x/sys/unix"

// echoOff turns the terminal's echo off and returns what turns it back
// on. A prompt is shown only after it: a line typed (or pasted) the
// moment the prompt appears must not be echoed before the reader gets to
// turn echo off itself.
func echoOff(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
