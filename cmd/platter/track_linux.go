//go:build linux

package main

import (
	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/track"
)

// tracker is a started write tracker.
type tracker interface {
	backup.Tracker
	Close() error
}

// startTracker starts tracking writes to the source device with the
// tracker kind asks for ("auto": BPF where it loads, else tracefs) and
// says which one runs.
func startTracker(src *blockdev.Device, kind string) (tracker, string, error) {
	if kind == "auto" {
		kind = ""
	}
	return track.Start(src.Path(), kind, track.Options{})
}
