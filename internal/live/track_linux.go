//go:build linux

package live

import (
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/track"
)

// startTracker starts tracking writes to the source device with the
// tracker kind asks for ("auto" or "": BPF where it loads, else tracefs)
// and says which one runs. fault, for tests, breaks it on purpose:
// "drop-writes" forgets every other range written, "tracefs-overrun"
// gives tracefs a buffer too small to keep up and a reader too slow.
func startTracker(src *blockdev.Device, kind, fault string) (track.Tracker, string, error) {
	var opts track.Options
	if kind == "auto" {
		kind = ""
	}
	if fault == "tracefs-overrun" {
		kind, opts.BufferKB, opts.EventDelay = "tracefs", 4, time.Millisecond
	}
	t, name, err := track.Start(src.Path(), kind, opts)
	if err == nil && fault == "drop-writes" {
		t = dropping{t}
	}
	return t, name, err
}

// dropping is a tracker that misses writes.
type dropping struct{ track.Tracker }

func (d dropping) Take() ([]block.Extent, error) {
	es, err := d.Tracker.Take()
	var kept []block.Extent
	for i, e := range es {
		if i%2 == 0 {
			kept = append(kept, e)
		}
	}
	return kept, err
}
