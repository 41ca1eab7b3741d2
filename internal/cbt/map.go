//go:build linux

package cbt

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/outfile"
)

// Version is the map file's format version.
const Version = 1

// maxEpochs bounds the epochs kept: the oldest two are merged beyond it
// (their union, from the older's start: a map since an instant in them
// only grows).
const maxEpochs = 64

// Margin is how much earlier than an image's recorded instant the map
// must cover. The instant and the epochs' starts are read from one wall
// clock by two processes, in order (an epoch starts before the service
// answers the create that then records its instant), and a step of the
// clock restarts the map: a little slack for rounding suffices. It must
// stay well under the time between a create's request and its recorded
// instant, or each incremental would take the epoch before its parent's
// too.
const Margin = 10 * time.Millisecond

// Map is the saved state of one tracking service.
type Map struct {
	Version int    `json:"version"`
	Device  string `json:"device"`   // the path tracked
	DevNum  string `json:"dev_num"`  // major:minor
	Size    int64  `json:"size"`     // bytes of the device
	Ident   string `json:"identity"` // model/serial, or a loop device's backing file
	Tracker string `json:"tracker"`  // "bpf" or "tracefs"
	BootID  string `json:"boot_id"`
	PID     int    `json:"pid"`
	// Started is when the service started; Since when the current map
	// starts: the tracker was attached before it. A loss or gap restarts
	// the map (Since moves on) and says why in Resets.
	Started time.Time `json:"started"`
	Since   time.Time `json:"since"`
	// Heartbeat is the last save, Seq counts saves: the service saves
	// every few seconds while it runs.
	Heartbeat time.Time `json:"heartbeat"`
	Seq       uint64    `json:"seq"`
	// Stopped is when the service stopped cleanly (zero while it runs).
	Stopped time.Time `json:"stopped,omitzero"`
	// Resets say why the map restarted while the service ran; Before
	// what the service found at its start about the time before it.
	Resets []string `json:"resets,omitempty"`
	Before []string `json:"before,omitempty"`
	// Filesystems are those on the device, as last seen by the service.
	Filesystems []FS    `json:"filesystems"`
	Epochs      []Epoch `json:"epochs"`
	// Answered is the id of the last Flush request served.
	Answered string `json:"answered,omitempty"`
}

// Epoch is the ranges written from Since to the next epoch's Since (or
// the map's Heartbeat, for the last).
type Epoch struct {
	Since   time.Time  `json:"since"`
	Extents [][2]int64 `json:"extents"` // [offset, length] in bytes, sorted, merged
}

// File is the map's file name in its directory.
const File = "map.json"

// DirFor is the map directory of the device at path under root.
func DirFor(root, path string) (string, error) {
	name, err := devName(path)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, name), nil
}

// Load reads the map in dir. A missing map is an error wrapping
// os.ErrNotExist.
func Load(dir string) (*Map, error) {
	p := filepath.Join(dir, File)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cbt: open map: %w", err)
	}
	defer f.Close()
	var m Map
	dec := json.NewDecoder(f)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("cbt: read map %s: %w", p, err)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("cbt: map %s has version %d, want %d", p, m.Version, Version)
	}
	for i, e := range m.Epochs {
		prev := int64(-1)
		for _, x := range e.Extents {
			if x[0] < 0 || x[1] <= 0 || x[0] < prev || x[0] > m.Size-x[1] {
				return nil, fmt.Errorf("cbt: map %s: epoch %d: bad range [%d, +%d) of a %d-byte device", p, i, x[0], x[1], m.Size)
			}
			prev = x[0] + x[1]
		}
	}
	return &m, nil
}

// Save writes the map to dir atomically: a new file, mode 0600, synced,
// renamed over the old one. dir must be a directory, not a symlink.
func (m *Map) Save(dir string) error {
	if err := ensureDir(dir); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", File, os.Getpid()))
	os.Remove(tmp)
	f, err := outfile.Create(tmp)
	if err != nil {
		return fmt.Errorf("cbt: save map: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, File))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cbt: save map in %s: %w", dir, err)
	}
	outfile.SyncDir(dir)
	return nil
}

// ensureDir makes dir (0700) and refuses one that is a symlink or not a
// directory.
func ensureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("cbt: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cbt: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("cbt: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("cbt: %s is not a directory (a symlink?): the map is written through no link", dir)
	}
	return nil
}

// add records ranges written in the current epoch.
func (m *Map) add(es []block.Extent) {
	if len(es) == 0 {
		return
	}
	last := &m.Epochs[len(m.Epochs)-1]
	last.Extents = toPairs(union(fromPairs(last.Extents), es))
}

// split starts a new epoch at t, merging the oldest beyond maxEpochs.
func (m *Map) split(t time.Time) {
	m.Epochs = append(m.Epochs, Epoch{Since: t})
	for len(m.Epochs) > maxEpochs {
		a, b := m.Epochs[0], m.Epochs[1]
		m.Epochs[1] = Epoch{Since: a.Since, Extents: toPairs(union(fromPairs(a.Extents), fromPairs(b.Extents)))}
		m.Epochs = m.Epochs[1:]
	}
}

// reset starts the map afresh at t, saying why.
func (m *Map) reset(t time.Time, why string) {
	m.Since = t
	m.Epochs = []Epoch{{Since: t}}
	m.Resets = append(m.Resets, fmt.Sprintf("%s: %s", t.UTC().Format(time.RFC3339), why))
	if len(m.Resets) > 16 {
		m.Resets = m.Resets[len(m.Resets)-16:]
	}
}

// ChangedSince returns the ranges that may have been written since t:
// those of every epoch ending after t-Margin.
func (m *Map) ChangedSince(t time.Time) []block.Extent {
	var out []block.Extent
	for i, e := range m.Epochs {
		end := m.Heartbeat
		if i+1 < len(m.Epochs) {
			end = m.Epochs[i+1].Since
		}
		if i+1 < len(m.Epochs) && !end.After(t.Add(-Margin)) {
			continue
		}
		out = union(out, fromPairs(e.Extents))
	}
	return out
}

// Marked is the bytes marked in the map since its start.
func (m *Map) Marked() int64 {
	var n int64
	for _, e := range m.ChangedSince(m.Since) {
		n += e.Len
	}
	return n
}

func fromPairs(ps [][2]int64) []block.Extent {
	out := make([]block.Extent, len(ps))
	for i, p := range ps {
		out[i] = block.Extent{Off: p[0], Len: p[1]}
	}
	return out
}

func toPairs(es []block.Extent) [][2]int64 {
	out := make([][2]int64, len(es))
	for i, e := range es {
		out[i] = [2]int64{e.Off, e.Len}
	}
	return out
}

// union merges two lists of ranges into one sorted list of disjoint,
// non-adjacent ranges.
func union(a, b []block.Extent) []block.Extent {
	all := append(slices.Clone(a), b...)
	slices.SortFunc(all, func(x, y block.Extent) int {
		switch {
		case x.Off < y.Off:
			return -1
		case x.Off > y.Off:
			return 1
		}
		return 0
	})
	var out []block.Extent
	for _, e := range all {
		if e.Len <= 0 {
			continue
		}
		if k := len(out); k > 0 && e.Off <= out[k-1].End() {
			out[k-1].Len = max(out[k-1].End(), e.End()) - out[k-1].Off
			continue
		}
		out = append(out, e)
	}
	return out
}

// Usable says whether the map can stand for the writes to the device
// since instant (a parent image's), and if not, why. now is the device's
// state read by the caller after a Flush (nil if the service did not
// answer). It checks that the service still runs in the boot it started
// in, that the map starts before the instant, and that the filesystems
// are as the service last saw them.
func (m *Map) Usable(instant time.Time, bootID string, now *Device) (bool, []string) {
	var why []string
	if m.BootID != bootID {
		why = append(why, fmt.Sprintf("the map was made in another boot (boot id %s, now %s): writes since the reboot were not tracked", short(m.BootID), short(bootID)))
	}
	if !m.Stopped.IsZero() {
		why = append(why, fmt.Sprintf("the tracking service stopped at %s", stamp(m.Stopped)))
	} else if now == nil {
		why = append(why, fmt.Sprintf("the tracking service (pid %d) did not answer; its last save was at %s", m.PID, stamp(m.Heartbeat)))
	}
	if m.Since.After(instant.Add(-Margin)) {
		w := fmt.Sprintf("the map starts at %s, not %s before the parent's instant %s", stamp(m.Since), Margin, stamp(instant))
		var causes []string
		if len(m.Resets) > 0 {
			causes = append(causes, "it restarted: "+m.Resets[len(m.Resets)-1])
		}
		if m.Since.Equal(m.Started) {
			causes = append(causes, "the service was not running before then")
			causes = append(causes, m.Before...)
		}
		if len(causes) > 0 {
			w += " (" + strings.Join(causes, "; ") + ")"
		}
		why = append(why, w)
	}
	if now != nil {
		if now.DevNum != m.DevNum || now.Size != m.Size || now.Ident != m.Ident {
			why = append(why, fmt.Sprintf("the device is not the one tracked (%s %d bytes %q, tracked %s %d bytes %q)", now.DevNum, now.Size, now.Ident, m.DevNum, m.Size, m.Ident))
		}
		why = append(why, compareFS(m.Filesystems, now.Filesystems, "since the service last looked")...)
		for _, f := range now.Filesystems {
			if f.Kind == KindUnknown {
				why = append(why, fmt.Sprintf("%s holds a filesystem the tracker cannot vouch for (no signature of ext2/3/4, XFS, btrfs, NTFS, FAT, exFAT or swap, and not empty)", f.Path))
			}
		}
	}
	return len(why) == 0, why
}

func short(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
