//go:build linux

package cbt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/track"
)

// Options configure a tracking service.
type Options struct {
	Device  string // the block device tracked
	Dir     string // its map directory (DirFor)
	Tracker string // "bpf", "tracefs" or "" for BPF where it loads
	// Take is how often the tracker's ranges are taken, Save how often
	// the map is saved (defaults 1s and 2s).
	Take, Save time.Duration
	// Gap is the longest time between two takes before the map is
	// restarted: the service was stopped (SIGSTOP) or the machine slept
	// (default 30s).
	Gap time.Duration
	// Fault, for tests: "tracefs-overrun" gives the tracefs tracker a
	// buffer too small and a reader too slow, so that it loses events.
	Fault string
	// BootID, for tests, is recorded instead of this boot's.
	BootID string
	// Ready, if set, is called once the map is first saved.
	Ready func(*Map)
}

// request is the file create writes to ask the service for a fresh map.
const request = "request"

// lockFile is held (flock) by the running service.
const lockFile = "lock"

// ErrRunning says a service already tracks the device.
var ErrRunning = errors.New("a tracking service already runs for this device")

// Serve tracks the device until ctx ends, then saves the map as stopped.
func Serve(ctx context.Context, o Options) error {
	if o.Take <= 0 {
		o.Take = time.Second
	}
	if o.Save <= 0 {
		o.Save = 2 * time.Second
	}
	if o.Gap <= 0 {
		o.Gap = 30 * time.Second
	}
	if err := ensureDir(o.Dir); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(o.Dir, lockFile), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, outfile.Mode)
	if err != nil {
		return fmt.Errorf("cbt: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("cbt: %s: %w", o.Device, ErrRunning)
	}
	boot, err := BootID()
	if err != nil {
		return err
	}
	if o.BootID != "" {
		boot = o.BootID
	}
	tr, kind, err := startTracker(o)
	if err != nil {
		return fmt.Errorf("cbt: track %s: %w", o.Device, err)
	}
	defer func() { tr.Close() }()
	// The tracker runs: every write from now on is seen.
	start := time.Now().UTC()
	dev, err := Probe(o.Device)
	if err != nil {
		return err
	}
	m := &Map{Version: Version, Device: o.Device, DevNum: dev.DevNum, Size: dev.Size, Ident: dev.Ident, Tracker: kind,
		BootID: boot, PID: os.Getpid(), Started: start, Since: start, Filesystems: dev.Filesystems, Epochs: []Epoch{{Since: start}}}
	m.Before = before(o.Dir, boot, dev)
	os.Remove(filepath.Join(o.Dir, request))
	m.Heartbeat = time.Now().UTC()
	if err := m.Save(o.Dir); err != nil {
		return err
	}
	if o.Ready != nil {
		o.Ready(m)
	}
	// The wall clock is compared with the monotonic one at each take: a
	// step makes the instants in the map meaningless.
	lastTake, lastWall := time.Now(), time.Now().Round(0)
	lastSave := lastTake
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	// Flush wakes the service with SIGUSR1 after writing its request, so
	// a create waits for the save, not for the poll. The handler stays
	// installed after Serve returns: a late wake must not kill the
	// process (SIGUSR1's default action) while it exits.
	wake := make(chan os.Signal, 1)
	signal.Notify(wake, unix.SIGUSR1)
	take := func() {
		now := time.Now()
		es, err := tr.Take()
		if gap := now.Sub(lastTake); gap > o.Gap {
			m.reset(time.Now().UTC(), fmt.Sprintf("no take for %s (the service was held or the machine slept)", gap.Round(time.Second)))
		}
		if step := now.Round(0).Sub(lastWall) - now.Sub(lastTake); step > time.Second || step < -time.Second {
			m.reset(time.Now().UTC(), fmt.Sprintf("the wall clock stepped by %s", step.Round(time.Millisecond)))
		}
		lastTake, lastWall = now, now.Round(0)
		if err != nil {
			// Some writes may be missing: start a new tracker and map.
			tr.Close()
			m.reset(time.Now().UTC(), fmt.Sprintf("the %s tracker lost events (%v)", kind, err))
			t2, k2, err2 := startTracker(o)
			if err2 != nil {
				tr = nopTracker{}
				m.Resets = append(m.Resets, "the tracker did not restart: "+err2.Error())
				return
			}
			tr, kind = t2, k2
			m.Since = time.Now().UTC()
			m.Epochs = []Epoch{{Since: m.Since}}
			return
		}
		m.add(es)
	}
	save := func() error {
		if d, err := Probe(o.Device); err == nil {
			m.Filesystems = d.Filesystems
		}
		m.Heartbeat = time.Now().UTC()
		m.Seq++
		lastSave = time.Now()
		return m.Save(o.Dir)
	}
	for {
		select {
		case <-ctx.Done():
			take()
			m.Stopped = time.Now().UTC()
			return save()
		case <-poll.C:
		case <-wake:
		}
		if id, why, err := readRequest(o.Dir); err == nil && id != "" && id != m.Answered {
			take()
			if why != "" {
				m.reset(time.Now().UTC(), why)
			} else {
				m.split(time.Now().UTC())
			}
			m.Answered = id
			if err := save(); err != nil {
				return err
			}
			continue
		}
		if time.Since(lastTake) >= o.Take {
			take()
		}
		if time.Since(lastSave) >= o.Save {
			if err := save(); err != nil {
				return err
			}
		}
	}
}

type nopTracker struct{}

func (nopTracker) Take() ([]block.Extent, error) {
	return nil, fmt.Errorf("%w: no tracker runs", track.ErrLost)
}
func (nopTracker) Close() error { return nil }

func startTracker(o Options) (track.Tracker, string, error) {
	var topts track.Options
	kind := o.Tracker
	if o.Fault == "tracefs-overrun" {
		kind, topts.BufferKB, topts.EventDelay = "tracefs", 4, time.Millisecond
	}
	return track.Start(o.Device, kind, topts)
}

// before says what the previous map in dir, if any, tells of the time
// the service was not running: how it ended, and what changed on the
// filesystems since it last looked.
func before(dir, boot string, dev *Device) []string {
	old, err := Load(dir)
	if err != nil {
		return nil
	}
	var why []string
	if old.Stopped.IsZero() {
		why = append(why, fmt.Sprintf("the previous service (pid %d) ended without stopping, last saved at %s", old.PID, stamp(old.Heartbeat)))
	} else {
		why = append(why, fmt.Sprintf("the previous service stopped at %s", stamp(old.Stopped)))
	}
	if old.BootID != boot {
		return append(why, "the machine rebooted since")
	}
	return append(why, compareFS(old.Filesystems, dev.Filesystems, "while the service was not running")...)
}

// readRequest reads the request file, if any: an id, and a reason to
// restart the map ("" to start a new epoch).
func readRequest(dir string) (id, reset string, err error) {
	f, err := os.OpenFile(filepath.Join(dir, request), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	id, reset, _ = strings.Cut(strings.TrimSpace(string(b[:n])), " ")
	return id, reset, nil
}

// Flush asks the service tracking the device in dir for a map taken now,
// starting a new epoch (the next image's), or with reset not "" a new
// map, saying why; it returns the map with the device as read after it
// (nil if the service did not answer within wait: then the map is the
// last one saved, if any).
func Flush(dir, device string, wait time.Duration, reset string) (*Map, *Device, error) {
	m, err := Load(dir)
	if err != nil {
		return nil, nil, err
	}
	if !m.Stopped.IsZero() || !Running(dir) {
		return m, nil, nil
	}
	b := make([]byte, 8)
	rand.Read(b)
	id := hex.EncodeToString(b)
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d", request, os.Getpid()))
	os.Remove(tmp)
	f, err := outfile.Create(tmp)
	if err != nil {
		return nil, nil, fmt.Errorf("cbt: ask the service: %w", err)
	}
	f.WriteString(strings.TrimSpace(id+" "+strings.ReplaceAll(reset, "\n", " ")) + "\n")
	f.Close()
	if err := os.Rename(tmp, filepath.Join(dir, request)); err != nil {
		os.Remove(tmp)
		return nil, nil, fmt.Errorf("cbt: ask the service: %w", err)
	}
	// Wake the service (it also finds the request at its next poll, if
	// the signal cannot be sent).
	unix.Kill(m.PID, unix.SIGUSR1)
	deadline := time.Now().Add(wait)
	var seen os.FileInfo // the map last read: read again only once replaced
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		st, err := os.Lstat(filepath.Join(dir, File))
		if err != nil || seen != nil && os.SameFile(st, seen) {
			continue
		}
		seen = st
		if m2, err := Load(dir); err == nil && m2.Answered == id {
			// The image that asked records its instant after this
			// returns: it must fall more than Margin after the new
			// epoch's start, or the next incremental would take the
			// epoch before it too (the answer can come within a few
			// milliseconds of the split).
			if n := len(m2.Epochs); n > 0 {
				if wait := time.Until(m2.Epochs[n-1].Since.Add(Margin + time.Millisecond)); wait > 0 {
					time.Sleep(wait)
				}
			}
			dev, err := Probe(device)
			if err != nil {
				return nil, nil, err
			}
			return m2, dev, nil
		}
	}
	m, err = Load(dir)
	return m, nil, err
}

// Running reports whether a service holds the lock in dir.
func Running(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// Stop asks the service in dir to stop (SIGTERM) and waits for its
// final save.
func Stop(dir string, wait time.Duration) (*Map, error) {
	m, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if !Running(dir) {
		return m, fmt.Errorf("cbt: no tracking service runs for %s", m.Device)
	}
	if err := unix.Kill(m.PID, unix.SIGTERM); err != nil {
		return m, fmt.Errorf("cbt: stop the service (pid %d): %w", m.PID, err)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if !Running(dir) {
			return Load(dir)
		}
	}
	return m, fmt.Errorf("cbt: the service (pid %d) did not stop within %s", m.PID, wait)
}
