//go:build !linux

package freeze

import (
	"errors"
	"time"
)

// GuardCommand is the hidden subcommand that runs the guard process.
const GuardCommand = "__thaw-guard"

// ErrThawedEarly means a filesystem was thawed before the copy finished.
var ErrThawedEarly = errors.New("the filesystem was thawed before the copy finished")

var errUnsupported = errors.New("freezing filesystems is supported on Linux only")

// Frozen is a set of frozen filesystems.
type Frozen struct{}

// Freeze is Linux-only.
func Freeze([]string, time.Duration) (*Frozen, error) { return nil, errUnsupported }

// Expired is never closed here.
func (*Frozen) Expired() <-chan struct{} { return nil }

// Frozen is Linux-only.
func (*Frozen) Frozen() []string { return nil }

// Synced is Linux-only.
func (*Frozen) Synced() []string { return nil }

// Start is when the freeze began.
func (*Frozen) Start() time.Time { return time.Time{} }

// Thaw is Linux-only.
func (*Frozen) Thaw() (time.Duration, error) { return 0, errUnsupported }

// RunGuard is Linux-only.
func RunGuard([]string) error { return errUnsupported }

// Sync is Linux-only.
func Sync([]string) error { return errUnsupported }
