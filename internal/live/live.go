// Package live copies a source whose filesystems may be mounted
// read-write (docs/live-imaging.md). It chooses how from the source's
// mounts and the user's choice — no snapshot, a freeze held for the
// whole copy, or a live copy with a write tracker and a brief freeze at
// the end — refuses what would give an inconsistent copy unasked, holds
// the freeze under a watchdog, starts the tracker, and runs the imaging
// engine with them. create uses it, and so does every command that copies
// a source (clone, scheduled runs): its messages name the flags those
// commands share (--snapshot, --tracker, --max-freeze, --allow-mounted).
// It never prints; a Reporter hears what happens.
package live

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/freeze"
	"github.com/platter-dev/platter/internal/image"
)

// Method is how a mounted, writable source is held still while it is
// copied: the values of --snapshot, and the method an image's
// image.Snapshot records.
type Method string

const (
	Auto   Method = "auto"   // Track; None with Options.AllowMounted
	Track  Method = "track"  // copy live, tracking writes, then freeze briefly for the last ones
	Freeze Method = "freeze" // hold the filesystems frozen for the whole copy
	None   Method = "none"   // copy them as they change: refused unless Options.AllowMounted
)

// Options say how to copy a source that may be mounted; a command fills
// them from its flags.
type Options struct {
	Snapshot Method // "" is Auto
	// AllowMounted copies a source mounted read-write without holding it
	// still (with Snapshot Auto or None), with a warning.
	AllowMounted bool
	Tracker      string        // for Track: "bpf", "tracefs", or "auto" or "" (BPF where it loads)
	MaxFreeze    time.Duration // the filesystems are thawed and the copy fails past it
	// Report hears what is done to the filesystems (nil: nothing).
	Report Reporter
	// Fault, for tests, breaks live imaging on purpose: "drop-writes"
	// (the tracker forgets every other range written), "tracefs-overrun"
	// (tracefs with a buffer too small and a reader too slow) or
	// "pause-frozen" (two seconds frozen before the frozen pass, for a
	// test to thaw the filesystems).
	Fault string
}

// Reporter hears, as it happens, what live imaging does to the source's
// filesystems; the CLI prints it. Calls come one at a time.
type Reporter interface {
	// Warn says something the user must know: a source copied as it
	// changes, a filesystem that could only be synced.
	Warn(msg string)
	// Tracking says the copy starts while the filesystems at points are
	// in use, writes tracked by tracker ("bpf" or "tracefs").
	Tracking(points []string, tracker string)
	// Frozen says the filesystems at points were frozen at at.
	Frozen(points []string, at time.Time)
	// Thawed says they were thawed at at, held frozen for held.
	Thawed(points []string, at time.Time, held time.Duration)
	// Pass says one pass of a live copy ended (backup.Live.Event).
	Pass(p image.Pass)
}

type noReport struct{}

func (noReport) Warn(string)                               {}
func (noReport) Tracking([]string, string)                 {}
func (noReport) Frozen([]string, time.Time)                {}
func (noReport) Thawed([]string, time.Time, time.Duration) {}
func (noReport) Pass(image.Pass)                           {}

// UsageError is a refusal of what the command line asks, which another
// choice of the user's avoids; the CLI exits 2 for it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Plan is how one source is copied, chosen before anything is read.
type Plan struct {
	// Method is None, Freeze or Track: how Mounts are held (never Auto).
	Method Method
	// Mounts are the source's filesystems mounted read-write; with none,
	// there is nothing to hold and the source is copied as it is.
	Mounts []blockdev.Mount

	source string
	opts   Options
}

// Choose reads which filesystems of source are mounted read-write and
// chooses the method. It refuses to copy them as they change (None)
// unless opts.AllowMounted says to, and warns then.
func Choose(source string, opts Options) (*Plan, error) {
	mounts, err := blockdev.Mounts(source)
	if err != nil {
		return nil, fmt.Errorf("check whether %s is mounted: %w", source, err)
	}
	return choose(source, mounts, opts)
}

// choose is Choose for the mounts of source.
func choose(source string, mounts []blockdev.Mount, opts Options) (*Plan, error) {
	if opts.Report == nil {
		opts.Report = noReport{}
	}
	p := &Plan{Method: opts.Snapshot, source: source, opts: opts}
	// Read-only filesystems do not change while they are read.
	for _, m := range mounts {
		if !m.ReadOnly {
			p.Mounts = append(p.Mounts, m)
		}
	}
	switch p.Method {
	case Auto, "":
		p.Method = Track
		if opts.AllowMounted {
			p.Method = None // copied as it changes, with a warning
		}
	case Track, Freeze, None:
	default:
		return nil, fmt.Errorf("live: unknown snapshot method %q", p.Method)
	}
	if len(p.Mounts) == 0 || p.Method != None {
		return p, nil
	}
	if !opts.AllowMounted {
		m := p.Mounts[0]
		return nil, fmt.Errorf("%s is mounted read-write at %s (%s): an image taken while it changes may be inconsistent; pass --snapshot track to image it live (a brief freeze at the end) or --snapshot freeze to hold it still while it is copied, unmount it or remount it read-only, or pass --allow-mounted to image it anyway", m.Device, m.Point, source)
	}
	for _, m := range p.Mounts {
		opts.Report.Warn(fmt.Sprintf("%s is mounted read-write at %s: the image may be inconsistent", m.Device, m.Point))
	}
	return p, nil
}

// Held reports whether the source's filesystems are held still, frozen
// or tracked. Its chunks must then be read around the page cache
// (blockdev.Device.ReadDirect): the cache may hold blocks from before
// they were written again, or from before the freeze.
func (p *Plan) Held() bool { return len(p.Mounts) > 0 && p.Method != None }

// Run copies src, which must be the source Choose was given, by calling
// run once with opts completed for the engine: the allocation maps read
// as the mounted filesystems hold them (MapSource), the freeze or the
// tracker set up (Live), and Release thawing the filesystems and
// describing the snapshot for the image's metadata. run is one run of the
// engine into the caller's destination (backup.ToSink into an image, for
// create); the ctx it is given is cancelled, with the reason as its
// cause, when the freeze ends early (the --max-freeze watchdog, or
// something else thawed a filesystem). output is the local file the copy
// is written to, "" if it goes to no local filesystem (a pipe, an object
// store). Before run is called, Run refuses an output on a filesystem it
// would freeze (a *UsageError), a tracked source that is not a block
// device, and a tracker that does not start. Nothing is left frozen when
// Run returns.
func (p *Plan) Run(ctx context.Context, src *blockdev.Device, output string, opts backup.Options, run func(context.Context, backup.Options) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h := &holder{points: mountPoints(p.Mounts), limit: p.opts.MaxFreeze, report: p.opts.Report, ctx: ctx, cancel: cancel, method: p.Method}
	defer h.thaw() // on every error path; a no-op once thawed
	switch {
	case len(p.Mounts) == 0:
	case p.Method == None:
		opts.Release = func() (*image.Snapshot, error) {
			return &image.Snapshot{Method: string(None), Instant: time.Now().UTC(), Filesystems: h.points}, nil
		}
	default:
		if err := checkOutside(p.Mounts, output, p.Method); err != nil {
			return err
		}
		// Allocation maps as the mounted filesystems hold them.
		view, err := src.MountedView(mountDevices(p.Mounts))
		if err != nil {
			return fmt.Errorf("open the mounted filesystems of %s: %w", p.source, err)
		}
		defer view.Close()
		opts.MapSource = view
		opts.Release = h.release
		if p.Method == Freeze {
			if err := h.freeze(); err != nil {
				return err
			}
			break
		}
		if !src.IsDevice() {
			m := p.Mounts[0]
			return fmt.Errorf("%s is mounted read-write at %s through %s: image %s instead to copy it live (writes are tracked on the device), or pass --snapshot none --allow-mounted to copy the file as it changes", p.source, m.Point, m.Device, m.Device)
		}
		tr, kind, err := startTracker(src, p.opts.Tracker, p.opts.Fault)
		if err != nil {
			hint := "pass --snapshot freeze to hold the filesystems frozen for the whole copy (small volumes), or unmount them"
			return fmt.Errorf("%s is mounted read-write at %s and cannot be imaged live: %w; %s", p.Mounts[0].Device, p.Mounts[0].Point, err, hint)
		}
		defer tr.Close()
		h.tracker = kind
		p.opts.Report.Tracking(h.points, kind)
		opts.Live = &backup.Live{
			Tracker: tr,
			Sync:    func() error { return freeze.Sync(h.points) },
			Freeze:  h.freeze,
			Event:   p.opts.Report.Pass,
		}
		if p.opts.Fault == "pause-frozen" { // time for a test to thaw it
			opts.Live.Freeze = func() error {
				err := h.freeze()
				time.Sleep(2 * time.Second)
				return err
			}
		}
	}
	return run(ctx, opts)
}

// checkOutside refuses an output written to a filesystem of the source:
// it would be frozen (and the copy could never finish), and its writes
// would make the source change as fast as it is copied.
func checkOutside(mounted []blockdev.Mount, output string, method Method) error {
	if output == "" {
		return nil // a pipe or an object store: no filesystem of the source
	}
	point, on, err := onMount(mounted, filepath.Dir(output))
	if err != nil {
		return fmt.Errorf("image directory: %w", err)
	}
	if on {
		return &UsageError{fmt.Sprintf("IMAGE %s is on %s, which --snapshot %s would freeze: write the image to another filesystem", output, point, method)}
	}
	return nil
}

// Holds reports whether the directory dir is on a filesystem the plan
// holds still (frozen at the end of a live copy, or for all of it), and
// its mount point: temporary files written there during the copy would
// wait for the thaw. It is false for a plan that holds nothing.
func (p *Plan) Holds(dir string) (point string, held bool, err error) {
	if !p.Held() {
		return "", false, nil
	}
	return onMount(p.Mounts, dir)
}

// TempDir is a directory for the temporary files of the copy (the
// allocation maps kept at the freeze, an index or chunks that outgrow
// memory) on no filesystem the plan holds: a file created or written
// there while the filesystems are frozen would wait for the thaw, and the
// watchdog would end the copy. It is prefer if that is not held (the
// directory of a local output: Run refuses one that is), else the first
// of os.TempDir(), /dev/shm and /var/tmp that is not; "" (the system's
// default) for a plan that holds nothing. With none left, a *UsageError
// says to set TMPDIR.
func (p *Plan) TempDir(prefer string) (string, error) {
	if !p.Held() {
		return prefer, nil
	}
	var held []string
	for _, dir := range []string{prefer, os.TempDir(), "/dev/shm", "/var/tmp"} {
		if dir == "" {
			continue
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		point, on, err := p.Holds(dir)
		if err != nil {
			return "", err
		}
		if !on {
			return dir, nil
		}
		held = append(held, dir+" (on "+point+")")
	}
	return "", &UsageError{fmt.Sprintf("no directory for temporary files outside the filesystems --snapshot %s freezes (%s): set TMPDIR to a directory on another disk", p.Method, strings.Join(held, ", "))}
}

// onMount reports whether the directory dir is on one of mounted, and
// which.
func onMount(mounted []blockdev.Mount, dir string) (string, bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	ds, err := os.Stat(dir)
	if err != nil {
		return "", false, err
	}
	for _, m := range mounted {
		if ms, err := os.Stat(m.Point); err == nil && sameDevice(ds, ms) {
			return m.Point, true, nil
		}
	}
	return "", false, nil
}

func mountDevices(ms []blockdev.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Device)
	}
	return out
}

func mountPoints(ms []blockdev.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Point)
	}
	return out
}
