//go:build !unix

package main

import "os"

// sameDevice cannot tell here; freezing is Linux-only anyway.
func sameDevice(a, b os.FileInfo) bool { return false }
