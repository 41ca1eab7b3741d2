package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/platter-dev/platter/internal/live"
)

// liveFlags are the flags of a command that copies a source which may be
// mounted and in use (create, clone): how it is held still while copied.
type liveFlags struct {
	snapshot     string
	tracker      string
	allowMounted bool
	maxFreeze    time.Duration
	fault        string // hidden: a fault injected so tests can prove they catch it
}

// add registers the flags; verb is what the command does to a source
// ("image", "clone"), result what it makes ("image", "copy").
func (l *liveFlags) add(f *pflag.FlagSet, verb, result string) {
	f.StringVar(&l.snapshot, "snapshot", "auto", "how to "+verb+" a mounted, writable source: track (copy it live, tracking writes, then freeze it briefly for the last changes), freeze (hold it frozen for the whole copy: small volumes), none (refuse unless --allow-mounted); auto is track")
	f.StringVar(&l.tracker, "tracker", "auto", "write tracker for --snapshot track: bpf, tracefs or auto (bpf where it loads)")
	f.BoolVar(&l.allowMounted, "allow-mounted", false, verb+" a source mounted read-write anyway (the "+result+" may be inconsistent)")
	f.DurationVar(&l.maxFreeze, "max-freeze", 10*time.Second, "thaw and fail if the filesystems stay frozen longer (the whole copy with --snapshot freeze, the last pass with track)")
	f.StringVar(&l.fault, "test-fault", "", "for tests: drop-writes, tracefs-overrun or pause-frozen")
	f.MarkHidden("test-fault")
}

// check refuses values the flags do not take.
func (l *liveFlags) check() error {
	switch live.Method(l.snapshot) {
	case live.Auto, live.None, live.Freeze, live.Track:
	default:
		return usagef("--snapshot takes auto, track, freeze or none, not %q", l.snapshot)
	}
	switch l.tracker {
	case "auto", "bpf", "tracefs":
	default:
		return usagef("--tracker takes auto, bpf or tracefs, not %q", l.tracker)
	}
	return nil
}

// choose decides how source is held still (live.Choose), r hearing what
// is done to its filesystems.
func (l *liveFlags) choose(source string, r live.Reporter) (*live.Plan, error) {
	return live.Choose(source, live.Options{
		Snapshot:     live.Method(l.snapshot),
		AllowMounted: l.allowMounted,
		Tracker:      l.tracker,
		MaxFreeze:    l.maxFreeze,
		Report:       r,
		Fault:        l.fault,
	})
}
