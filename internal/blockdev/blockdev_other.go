//go:build !linux

package blockdev

import (
	"errors"
	"fmt"
	"os"
)

// Off Linux, Platter reads and restores images and files; device ioctls
// and mount checks are Linux-only for now.

func sectorSize(*os.File) (int64, error) { return 512, nil }

// DropCache does nothing off Linux.
func (v *View) DropCache() {}

func zeroRange(d *Device, off, n int64) error { return writeZeros(d, off, n) }

func startWriteback(*os.File, int64, int64) {}

var errInvalid = errors.New("unused")

func openDirect(*os.File) *os.File { return nil }

func openDirectRead(*os.File) *os.File { return nil }

func discard(*Device, int64, int64) error {
	return fmt.Errorf("discard: %w off Linux", errors.ErrUnsupported)
}

// Mounts cannot tell on this system whether a device is in use, so it
// refuses to answer for devices rather than say "not mounted".
func Mounts(path string) ([]Mount, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode()&os.ModeDevice != 0 {
		return nil, errors.New("cannot check whether a device is mounted on this system")
	}
	return nil, nil
}

// ReadDirect is Linux-only.
func (d *Device) ReadDirect() error { return errors.New("direct reads are supported on Linux only") }

// MountedView is Linux-only.
func (d *Device) MountedView([]string) (*View, error) {
	return nil, errors.New("mounted views are supported on Linux only")
}

// Identity is Linux-only.
func Identity(string) (model, serial string) { return "", "" }

// MountAt is Linux-only.
func MountAt(string) (Mount, bool, error) {
	return Mount{}, false, errors.New("mount points are read on Linux only")
}

// Overlap reports whether a and b are the same file or device; off Linux
// it cannot see partitions or loop devices.
func Overlap(a, b string) (what string, overlap bool, err error) {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 == nil && err2 == nil && os.SameFile(sa, sb) {
		return a, true, nil
	}
	return "", false, nil
}

// SameFilesystem cannot tell on this system; it says no.
func SameFilesystem(a, b string) bool { return false }
