//go:build linux

// Package track records which parts of a block device are written while
// Platter copies it, so that live imaging can copy them again (issue:
// image a running system). It watches request completions
// (block:block_rq_complete), not submissions: a write is counted once the
// device has it, so a copy read after Take sees it.
//
// This file is the tracefs tracker: a private tracing instance (never the
// global buffer, which other tools use) with the event filtered to the
// device's disk. Any lost event is an error: a tracker that misses one
// write in fifty silently corrupts files while fsck stays clean.
package track

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
)

const tracefsRoot = "/sys/kernel/tracing"

// ErrLost means the tracker may have missed writes: the copy cannot be
// trusted.
var ErrLost = errors.New("write tracking lost events")

// Tracefs tracks the completed writes to one block device.
type Tracefs struct {
	inst       string
	dev        uint32 // the disk's number as the kernel encodes it in events
	start, end uint64 // the device's sectors on that disk, [start, end)
	pipe       *os.File

	mu      sync.Mutex
	dirty   []block.Extent // sectors, relative to the device
	err     error
	markers map[string]chan struct{}
	seq     int
	done    chan struct{}
	closing atomic.Bool

	eventDelay time.Duration
}

// Options tune a tracker; the zero value is the default.
type Options struct {
	BufferKB int // ring buffer per CPU (default 8192)
	// EventDelay, for tests, slows the reader of tracefs events by this
	// much per event, so that a small buffer surely overruns.
	EventDelay time.Duration
}

// StartTracefs starts tracking writes to the block device at path (a
// whole disk or a partition). Call Close to stop.
func StartTracefs(path string, opts Options) (*Tracefs, error) {
	disk, start, end, err := locate(path)
	if err != nil {
		return nil, err
	}
	if err := mountTracefs(); err != nil {
		return nil, err
	}
	t := &Tracefs{
		inst:  filepath.Join(tracefsRoot, "instances", fmt.Sprintf("platter-%d-%d", os.Getpid(), time.Now().UnixNano())),
		dev:   disk,
		start: start, end: end,
		markers: map[string]chan struct{}{},
		done:    make(chan struct{}),

		eventDelay: opts.EventDelay,
	}
	if err := os.Mkdir(t.inst, 0o700); err != nil {
		return nil, fmt.Errorf("track: create tracing instance: %w", err)
	}
	kb := opts.BufferKB
	if kb == 0 {
		kb = 8192
	}
	ev := filepath.Join(t.inst, "events", "block", "block_rq_complete")
	steps := []struct{ file, value string }{
		{filepath.Join(t.inst, "buffer_size_kb"), strconv.Itoa(kb)},
		{filepath.Join(ev, "filter"), fmt.Sprintf("dev == %d", t.dev)},
		{filepath.Join(ev, "enable"), "1"},
	}
	for _, s := range steps {
		if err := os.WriteFile(s.file, []byte(s.value), 0); err != nil {
			t.remove()
			return nil, fmt.Errorf("track: write %s: %w", s.file, err)
		}
	}
	p, err := os.Open(filepath.Join(t.inst, "trace_pipe"))
	if err != nil {
		t.remove()
		return nil, fmt.Errorf("track: open trace_pipe: %w", err)
	}
	t.pipe = p
	go t.read()
	return t, nil
}

// locate finds the disk holding the device at path, in the kernel's event
// encoding, and the device's sectors on it.
func locate(path string) (disk uint32, start, end uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, 0, fmt.Errorf("track: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, 0, fmt.Errorf("track: %s is not a block device", path)
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("track: %s in sysfs: %w", path, err)
	}
	size, err := readUint(filepath.Join(sys, "size"))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("track: size of %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		// A partition: events name its disk, in the disk's sectors.
		if start, err = readUint(filepath.Join(sys, "start")); err != nil {
			return 0, 0, 0, fmt.Errorf("track: start of %s: %w", path, err)
		}
		d, err := os.ReadFile(filepath.Join(filepath.Dir(sys), "dev"))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("track: disk of %s: %w", path, err)
		}
		var dmaj, dmin uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(d)), "%d:%d", &dmaj, &dmin); err != nil {
			return 0, 0, 0, fmt.Errorf("track: disk of %s: %q", path, d)
		}
		maj, min = dmaj, dmin
	}
	// Device-mapper, md and other bio-based devices complete no requests:
	// a tracker would see nothing and the image would be wrong.
	base := filepath.Base(sys)
	if strings.HasPrefix(base, "dm-") || strings.HasPrefix(base, "md") {
		return 0, 0, 0, fmt.Errorf("track: %s is a %s device, whose writes complete no requests the tracker can see", path, strings.TrimRight(base[:2], "-"))
	}
	// Only devices with a request queue (blk-mq) complete requests; zram,
	// pmem, brd and other bio-based drivers do not.
	diskDir := sys
	if fileExists(filepath.Join(sys, "partition")) {
		diskDir = filepath.Dir(sys)
	}
	if !fileExists(filepath.Join(diskDir, "mq")) {
		return 0, 0, 0, fmt.Errorf("track: %s is on %s, a bio-based device (no request queue): its writes complete no requests the tracker can see", path, filepath.Base(diskDir))
	}
	return maj<<20 | min, start, start + size, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// mountTracefs mounts tracefs where it belongs if it is not there yet.
func mountTracefs() error {
	if _, err := os.Stat(filepath.Join(tracefsRoot, "instances")); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", tracefsRoot, "tracefs", 0, ""); err != nil {
		return fmt.Errorf("track: mount tracefs at %s: %w", tracefsRoot, err)
	}
	return nil
}

// read consumes the event stream.
func (t *Tracefs) read() {
	defer close(t.done)
	sc := bufio.NewScanner(t.pipe)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.handle(sc.Text())
		if t.eventDelay > 0 {
			time.Sleep(t.eventDelay)
		}
		if t.closing.Load() {
			return
		}
	}
}

// handle takes one line of trace_pipe: an event
//
//	<task>-<pid> [cpu] flags ts: block_rq_complete: 7,0 WS () 123456 + 8 none,0,0 [0]
//
// or a drain marker written by Take.
func (t *Tracefs) handle(line string) {
	if i := strings.Index(line, "platter-drain-"); i >= 0 {
		t.mu.Lock()
		if ch, ok := t.markers[strings.TrimSpace(line[i:])]; ok {
			close(ch)
			delete(t.markers, strings.TrimSpace(line[i:]))
		}
		t.mu.Unlock()
		return
	}
	i := strings.Index(line, "block_rq_complete: ")
	if i < 0 {
		return
	}
	f := strings.Fields(line[i+len("block_rq_complete: "):])
	// f: dev rwbs (cmd) sector + nr ...
	if len(f) < 6 || f[4] != "+" {
		t.fail(fmt.Errorf("track: unexpected event %q", line))
		return
	}
	rwbs := f[1]
	if strings.HasPrefix(rwbs, "R") || rwbs == "F" || rwbs == "FF" {
		return // reads, and flushes that carry no data
	}
	sector, err1 := strconv.ParseUint(f[3], 10, 64)
	n, err2 := strconv.ParseUint(f[5], 10, 64)
	if err1 != nil || err2 != nil {
		t.fail(fmt.Errorf("track: unexpected event %q", line))
		return
	}
	lo, hi := max(sector, t.start), min(sector+n, t.end)
	if lo >= hi {
		return // another partition of the disk
	}
	t.mu.Lock()
	t.dirty = append(t.dirty, block.Extent{Off: int64(lo - t.start), Len: int64(hi - lo)})
	t.mu.Unlock()
}

func (t *Tracefs) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

// Take returns the byte ranges of the device written (and completed)
// since the last Take, merged, and forgets them. Every write completed
// before the call is included: Take waits until the reader has seen a
// marker written after them. It fails with ErrLost if any event may have
// been lost since the tracker started.
func (t *Tracefs) Take() ([]block.Extent, error) {
	t.mu.Lock()
	t.seq++
	name := fmt.Sprintf("platter-drain-%d-%d", os.Getpid(), t.seq)
	ch := make(chan struct{})
	t.markers[name] = ch
	t.mu.Unlock()
	if err := os.WriteFile(filepath.Join(t.inst, "trace_marker"), []byte(name), 0); err != nil {
		return nil, fmt.Errorf("track: write drain marker: %w", err)
	}
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for drained := false; !drained; {
		// Poll for losses while waiting: the marker itself can be
		// overwritten in a full buffer and never arrive.
		if err := t.lost(); err != nil {
			return nil, err
		}
		select {
		case <-ch:
			drained = true
		case <-tick.C:
		case <-t.done:
			return nil, fmt.Errorf("track: the event stream ended")
		case <-deadline:
			return nil, fmt.Errorf("%w: the drain marker did not arrive within 10s", ErrLost)
		}
	}
	if err := t.lost(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return nil, t.err
	}
	d := mergeSectors(t.dirty)
	t.dirty = nil
	return d, nil
}

// lost reads the per-CPU buffer statistics of the instance.
func (t *Tracefs) lost() error {
	cpus, _ := filepath.Glob(filepath.Join(t.inst, "per_cpu", "cpu*", "stats"))
	if len(cpus) == 0 {
		return fmt.Errorf("track: no per-CPU statistics in %s", t.inst)
	}
	for _, p := range cpus {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("track: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "overrun", "dropped events", "commit overrun":
				if n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64); n > 0 {
					return fmt.Errorf("%w: %s %d on %s", ErrLost, strings.TrimSpace(k), n, filepath.Base(filepath.Dir(p)))
				}
			}
		}
	}
	return nil
}

// mergeSectors sorts sector extents, joins those that touch, and returns
// them in bytes.
func mergeSectors(es []block.Extent) []block.Extent {
	out := block.MergeExtents(es)
	for i := range out {
		out[i].Off *= 512
		out[i].Len *= 512
	}
	return out
}

// Close stops tracking and removes the tracing instance.
func (t *Tracefs) Close() error {
	os.WriteFile(filepath.Join(t.inst, "events", "block", "block_rq_complete", "enable"), []byte("0"), 0)
	// A last line wakes the reader, which then stops.
	t.closing.Store(true)
	os.WriteFile(filepath.Join(t.inst, "trace_marker"), []byte("platter-close"), 0)
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
	}
	t.pipe.Close()
	return t.remove()
}

func (t *Tracefs) remove() error {
	if err := unix.Rmdir(t.inst); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("track: remove tracing instance %s: %w", t.inst, err)
	}
	return nil
}
