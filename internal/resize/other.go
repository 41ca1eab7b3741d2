//go:build !linux

package resize

import (
	"context"
	"errors"
)

// errLinux is every answer off Linux: the tools, FUSE and loop devices
// resizing needs are Linux's.
var errLinux = errors.New("resize: filesystems are resized on Linux only")

// Window is Linux's only.
type Window struct{}

func OpenWindow(dev Device) (*Window, error) { return nil, errLinux }
func (w *Window) Path() string               { return "" }
func (w *Window) Close() error               { return nil }

func Size(ctx context.Context, fs, path string) (int64, error)    { return 0, errLinux }
func MinSize(ctx context.Context, fs, path string) (int64, error) { return 0, errLinux }
func Shrink(ctx context.Context, fs, path string, size int64) (int64, error) {
	return 0, errLinux
}
func Grow(ctx context.Context, fs, path string, size int64) (int64, error) { return 0, errLinux }
func Can(fs string, shrink bool) bool                                      { return false }

func XFSCopyMin(ctx context.Context, path string) (int64, error) { return 0, errLinux }
func RecreateXFS(ctx context.Context, src, dst string, off, size, sector int64) error {
	return errLinux
}
