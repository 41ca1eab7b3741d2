//go:build !linux

package plan

import (
	"errors"
	"os"
	"time"
)

// BusyError says another run of the plan holds its lock.
type BusyError struct {
	Plan  string
	PID   int
	Since time.Time
}

func (e *BusyError) Error() string { return "plan " + e.Plan + " is already running" }

// Lock is Linux's only: plans run under systemd.
func Lock(path, plan string, wait bool) (*os.File, error) {
	return nil, errors.New("plans run on Linux only")
}
