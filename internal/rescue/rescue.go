// Package rescue reads a failing disk the way GNU ddrescue does, for
// create --rescue: the readable bulk first, in large reads that skip
// ahead past errors; then the failed areas trimmed from their edges and
// scraped sector by sector at the device's logical sector size; then
// retries of the bad sectors. Every read is direct (no cached result is
// trusted) and has a timeout: a stalled request is reported and its
// bytes left for a later pass, never waited on for ever.
//
// Its state is a Map, saved atomically in GNU ddrescue's mapfile format
// every few seconds, so ddrescuelog reads it and a rescue interrupted
// (Ctrl-C, a crash, a disk that vanished and came back) resumes: bytes a
// previous run read are read again at full speed (the image is written
// as a stream, not kept), and known bad areas are not hammered again
// before the readable bulk is safe.
//
// The imaging engine (internal/backup) decides what to read — the used
// blocks of each filesystem — and where the bytes go; this package only
// reads and keeps the map.
package rescue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/outfile"
)

// Options tune a rescue.
type Options struct {
	// MapFile is where the map is kept ("": in memory only, no resume).
	// An existing one is resumed.
	MapFile string
	// Retries is how many more times each bad sector is read at the end.
	Retries int
	// Timeout bounds each read (0: DefaultTimeout).
	Timeout time.Duration
	// Report, if set, is told of stalled reads and map-saving trouble
	// (from any goroutine).
	Report func(msg string)
}

// DefaultTimeout is how long one read may take before it is reported as
// stalled and its bytes left for a later pass: Linux's own SCSI command
// timeout.
const DefaultTimeout = 30 * time.Second

// cluster is the unit in which a failed large read is read again in the
// first pass, and the first skip past an error: GNU ddrescue's default.
const cluster = 64 << 10

// maxSkip bounds the skip ahead after consecutive errors.
const maxSkip = 4 << 20

// saveEvery is how often a changed map is written to its file.
const saveEvery = 5 * time.Second

// Rescuer reads a source as a rescue does. Its methods are safe for
// parallel calls.
type Rescuer struct {
	src     io.ReaderAt
	size    int64
	sector  int64
	opts    Options
	resumed bool

	mu      sync.Mutex
	m       *Map
	changed bool

	stalls atomic.Int64
	failed atomic.Int64 // first-pass reads failed in a row (streak)
	stop   chan struct{}
}

// probeAfter is how many reads may fail in a row before a sector read
// well before is read again: a disk that dropped off the bus fails every
// read at once, and a rescue that went on would mark the whole disk bad.
// If that sector fails too the device is gone (ErrGone); if it reads,
// the failures are a dead area, and the rescue goes on.
const probeAfter = 256

// ErrGone says the device stopped answering: it is no longer there, or
// maxStreak reads in a row failed.
var ErrGone = errors.New("the device stopped answering")

// ErrStalled says a read did not finish within the timeout. Its buffer
// may still be written by the read, whenever the device answers: the
// caller must not use it again.
var ErrStalled = errors.New("read stalled")

// New starts a rescue of src (read with direct I/O by the caller) whose
// logical sector size is sector. An existing Options.MapFile is read and
// resumed; it must be the map of a device of src's size.
func New(src block.Source, sector int64, opts Options) (*Rescuer, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if sector <= 0 || sector&(sector-1) != 0 {
		return nil, fmt.Errorf("rescue: sector size %d", sector)
	}
	r := &Rescuer{src: src, size: src.Size(), sector: sector, opts: opts, m: NewMap(src.Size()), stop: make(chan struct{})}
	if opts.MapFile != "" {
		// Never through a symlink: the map is written back where it is.
		f, err := os.OpenFile(opts.MapFile, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("mapfile %s is a symlink: Platter reads and writes no map through a link (name the file it points to)", opts.MapFile)
		}
		switch {
		case err == nil:
			m, err := ParseMap(f, r.size)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", opts.MapFile, err)
			}
			r.m, r.resumed = m, true
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
		if err := r.Save(); err != nil {
			return nil, err
		}
		go r.saver()
	}
	return r, nil
}

// Resumed says the rescue continues from a map a previous run left.
func (r *Rescuer) Resumed() bool { return r.resumed }

// SectorSize is the unit of trimming and scraping.
func (r *Rescuer) SectorSize() int64 { return r.sector }

// Stalls is how many reads were given up as stalled.
func (r *Rescuer) Stalls() int64 { return r.stalls.Load() }

func (r *Rescuer) saver() {
	t := time.NewTicker(saveEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			changed := r.changed
			r.mu.Unlock()
			if changed {
				if err := r.Save(); err != nil && r.opts.Report != nil {
					r.opts.Report(err.Error())
				}
			}
		}
	}
}

// Save writes the map to its file atomically: a private temporary file
// beside it, synced, then renamed over it (never over a device node or
// through a symlink).
func (r *Rescuer) Save() error {
	if r.opts.MapFile == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := outfile.Replaceable(r.opts.MapFile); err != nil {
		return fmt.Errorf("mapfile %s: %w", r.opts.MapFile, err)
	}
	dir, base := filepath.Split(r.opts.MapFile)
	tmp := filepath.Join(dir, "."+base+".new")
	os.Remove(tmp)
	f, err := outfile.Create(tmp)
	if err != nil {
		return fmt.Errorf("save mapfile: %w", err)
	}
	_, err = r.m.WriteTo(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, r.opts.MapFile)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save mapfile %s: %w", r.opts.MapFile, err)
	}
	r.changed = false
	return nil
}

// Close stops the saving of the map and saves it a last time.
func (r *Rescuer) Close() error {
	if r.opts.MapFile == "" {
		return nil
	}
	select {
	case <-r.stop:
		return nil
	default:
	}
	close(r.stop)
	return r.Save()
}

func (r *Rescuer) set(off, n int64, s Status) {
	r.mu.Lock()
	r.m.Set(off, n, s)
	r.changed = true
	r.mu.Unlock()
}

// runs is Map.Runs under the lock, collected.
func (r *Rescuer) runs(off, n int64) []run {
	var out []run
	r.mu.Lock()
	r.m.Runs(off, n, func(off, n int64, s Status) { out = append(out, run{off, n, s}) })
	r.mu.Unlock()
	return out
}

// read is one read of the device, bounded by the timeout and ctx. After
// ErrStalled or ctx's end, b belongs to the read still in flight.
func (r *Rescuer) read(ctx context.Context, b []byte, off int64) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		n, err := r.src.ReadAt(b, off)
		ch <- result{n, err}
	}()
	t := time.NewTimer(r.opts.Timeout)
	defer t.Stop()
	select {
	case res := <-ch:
		if res.n == len(b) {
			res.err = nil
		} else if res.err == nil || res.err == io.EOF {
			res.err = io.ErrUnexpectedEOF
		}
		return res.n, res.err
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	case <-t.C:
		r.stalls.Add(1)
		if r.opts.Report != nil {
			r.opts.Report(fmt.Sprintf("read of bytes %d-%d stalled for %s: left for a later pass", off, off+int64(len(b)), r.opts.Timeout))
		}
		return 0, ErrStalled
	}
}

// Copy is the first pass over b's bytes at off (whole sectors, b aligned
// for direct I/O): what a previous run read and what was never tried are
// read, one large read first, and after an error in clusters that skip
// ahead past the failures (the skip doubling while errors go on), so the
// readable bulk comes first. Bytes known bad or left unread are left as
// they are in b; Missing says which. complete says every byte was read.
//
// After ErrStalled (the only error, with ctx's) b must not be used again:
// a read may still write to it. The stalled bytes are marked failed; the
// caller copies again into a new buffer, which skips them.
func (r *Rescuer) Copy(ctx context.Context, b []byte, off int64) (complete bool, err error) {
	complete = true
	for _, k := range r.runs(off, int64(len(b))) {
		if k.Status != NonTried && k.Status != Finished {
			complete = false
			continue
		}
		ok, err := r.copyRun(ctx, b[k.Off-off:k.end()-off], k.Off)
		if err != nil {
			return false, err
		}
		complete = complete && ok
	}
	return complete, nil
}

// copyRun reads b at off in the first pass' way: one read; after an
// error, the rest in pieces of 1 MiB (a failing chunk of a large read is
// not read again whole in small reads), and a failed piece in clusters
// that skip ahead past failures, the skip doubling while they go on.
func (r *Rescuer) copyRun(ctx context.Context, b []byte, off int64) (bool, error) {
	good, err := r.readOnce(ctx, b, off)
	if err != nil || good == int64(len(b)) {
		return err == nil, err
	}
	complete := true
	end := off + int64(len(b))
	for pos := off + good; pos < end; {
		k := min(piece-pos%piece, end-pos)
		n, err := r.readOnce(ctx, b[pos-off:pos-off+k], pos)
		if err != nil {
			return false, err
		}
		if n < k {
			complete = false
			if err := r.clusters(ctx, b[pos-off+n:pos-off+k], pos+n); err != nil {
				return false, err
			}
		}
		pos += k
	}
	return complete, nil
}

// piece is the unit a failed large read of the first pass is read again
// in, before clusters.
const piece = 1 << 20

// readOnce reads b at off, marking what it read Finished, and says how
// many bytes (whole sectors) it read; a shorter read failed at the
// sector after them. A stall marks all of b NonTrimmed and returns
// ErrStalled; ctx's end returns its cause.
func (r *Rescuer) readOnce(ctx context.Context, b []byte, off int64) (int64, error) {
	n, err := r.read(ctx, b, off)
	switch {
	case err == nil:
		r.failed.Store(0)
		r.set(off, int64(n), Finished)
		return int64(n), nil
	case ctx.Err() != nil:
		return 0, context.Cause(ctx)
	case gone(err):
		return 0, fmt.Errorf("%w (%v at byte %d)", ErrGone, err, off)
	case errors.Is(err, ErrStalled):
		r.set(off, int64(len(b)), NonTrimmed)
		return 0, err
	}
	if n == 0 {
		if err := r.failure(ctx, off); err != nil {
			r.set(off, int64(len(b)), NonTrimmed)
			return 0, err
		}
	} else {
		r.failed.Store(0)
	}
	good := int64(n) / r.sector * r.sector
	r.set(off, good, Finished)
	return good, nil
}

// failure counts a read that failed at off; after probeAfter in a row
// it reads a sector read well before, and if that fails too the device
// is gone.
func (r *Rescuer) failure(ctx context.Context, off int64) error {
	k := r.failed.Add(1)
	if k%probeAfter != 0 {
		return nil
	}
	var good int64 = -1
	r.mu.Lock()
	for _, x := range r.m.runs {
		if x.Status == Finished && x.Len >= r.sector {
			good = x.Off
			break
		}
	}
	r.mu.Unlock()
	if good < 0 {
		return nil // nothing read yet to compare with
	}
	b := block.AlignedBuffer(int(r.sector))
	if _, err := r.read(ctx, b, good); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%w: %d reads in a row failed, the last at byte %d, and byte %d, read well before, fails now too (%v)", ErrGone, k, off, good, err)
	}
	r.failed.Store(0)
	return nil
}

// gone says err means the device itself is missing (unplugged, removed),
// not a sector.
func gone(err error) bool {
	return errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO)
}

// clusters reads b at off (after a failure at off) in clusters, skipping
// ahead past failures; the skipped bytes stay non-tried, for a later
// pass.
func (r *Rescuer) clusters(ctx context.Context, b []byte, off int64) error {
	end := off + int64(len(b))
	skip := int64(cluster)
	for pos := off; pos < end; {
		k := min(cluster-pos%cluster, end-pos)
		good, err := r.readOnce(ctx, b[pos-off:pos-off+k], pos)
		if err != nil {
			return err
		}
		if good == k {
			pos += k
			skip = cluster
			continue
		}
		r.set(pos+good, k-good, NonTrimmed)
		pos += k + skip
		skip = min(2*skip, maxSkip)
	}
	return nil
}

// Missing calls fn with each range of [off, off+n) not read (yet).
func (r *Rescuer) Missing(off, n int64, fn func(off, n int64)) {
	for _, k := range r.runs(off, n) {
		if k.Status != Finished {
			fn(k.Off, k.Len)
		}
	}
}

// Progress is told what the later passes rescue.
type Progress interface {
	Phase(name string, bytes int64) // a pass starts over bytes not yet read
	Add(n int64)                    // bytes read (or given up) by it
}

// Complete reads what the first pass left unread of the ranges wanted
// (sorted, not overlapping, whole sectors): their non-tried bytes in
// clusters, then the failed areas trimmed from both edges and scraped
// sector by sector, then Options.Retries passes over the bad sectors.
// Each read's bytes go to put (at the source offset they were read
// from). Ranges still unread at the end are Bad.
func (r *Rescuer) Complete(ctx context.Context, wanted []block.Extent, put func(off int64, b []byte) error, progress Progress) error {
	buf := block.AlignedBuffer(cluster)
	type step struct {
		name   string
		status Status // the runs it works on; also the map's current_status meanwhile
		do     func(k run) error
	}
	// readInto reads [off, off+n) (n ≤ cluster) and hands it to put.
	readInto := func(off, n int64) (int64, error) {
		got, err := r.read(ctx, buf[:n], off)
		if errors.Is(err, ErrStalled) {
			buf = block.AlignedBuffer(cluster) // the old one is the stalled read's
		}
		switch {
		case err == nil || ctx.Err() != nil:
		case gone(err):
			return 0, fmt.Errorf("%w (%v at byte %d)", ErrGone, err, off)
		case got == 0:
			if ferr := r.failure(ctx, off); ferr != nil {
				return 0, ferr
			}
		}
		if err == nil || got > 0 {
			r.failed.Store(0)
		}
		good := int64(got) / r.sector * r.sector
		if err == nil {
			good = n
		}
		if good > 0 {
			if perr := put(off, buf[:good]); perr != nil {
				return 0, perr
			}
			r.set(off, good, Finished)
		}
		if err != nil && !errors.Is(err, ErrStalled) && good == n {
			err = nil
		}
		return good, err
	}
	isIO := func(err error) bool { return err != nil && ctx.Err() == nil && !errors.Is(err, ErrGone) }
	steps := []step{
		{"reading skipped areas", NonTried, func(k run) error {
			for pos := k.Off; pos < k.end(); {
				n := min(cluster-pos%cluster, k.end()-pos)
				good, err := readInto(pos, n)
				if err != nil && !isIO(err) {
					return err
				}
				if good < n {
					r.set(pos+good, n-good, NonTrimmed)
				}
				progress.Add(n)
				pos += n
			}
			return nil
		}},
		{"trimming", NonTrimmed, func(k run) error {
			lo, hi := k.Off, k.end()
			for lo < hi { // forward from the leading edge
				good, err := readInto(lo, r.sector)
				if err != nil && !isIO(err) {
					return err
				}
				if good == 0 {
					r.set(lo, r.sector, Bad)
					lo += r.sector
					break
				}
				progress.Add(r.sector)
				lo += r.sector
			}
			for hi > lo { // backward from the trailing edge
				good, err := readInto(hi-r.sector, r.sector)
				if err != nil && !isIO(err) {
					return err
				}
				if good == 0 {
					r.set(hi-r.sector, r.sector, Bad)
					hi -= r.sector
					break
				}
				progress.Add(r.sector)
				hi -= r.sector
			}
			if hi > lo {
				r.set(lo, hi-lo, NonScraped)
			}
			return nil
		}},
		{"scraping", NonScraped, r.sectors(readInto, isIO, progress)},
	}
	for i := range r.opts.Retries {
		steps = append(steps, step{fmt.Sprintf("retry %d of %d", i+1, r.opts.Retries), Bad, r.sectors(readInto, isIO, progress)})
	}
	for _, st := range steps {
		var todo []run
		var total int64
		for _, w := range wanted {
			for _, k := range r.runs(w.Off, w.Len) {
				if k.Status == st.status {
					todo = append(todo, k)
					total += k.Len
				}
			}
		}
		if len(todo) == 0 {
			continue
		}
		r.mu.Lock()
		r.m.SetPhase(st.status, todo[0].Off)
		r.mu.Unlock()
		progress.Phase(st.name, total)
		for _, k := range todo {
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx)
			}
			r.mu.Lock()
			r.m.pos = k.Off
			r.mu.Unlock()
			if err := st.do(k); err != nil {
				return err
			}
		}
	}
	r.mu.Lock()
	r.m.SetPhase(Finished, 0)
	r.changed = true
	r.mu.Unlock()
	return nil
}

// sectors reads a run sector by sector; those that fail are Bad.
func (r *Rescuer) sectors(readInto func(off, n int64) (int64, error), isIO func(error) bool, progress Progress) func(k run) error {
	return func(k run) error {
		for pos := k.Off; pos < k.end(); pos += r.sector {
			good, err := readInto(pos, r.sector)
			if err != nil && !isIO(err) {
				return err
			}
			if good == 0 {
				r.set(pos, r.sector, Bad)
			}
			progress.Add(r.sector)
		}
		return nil
	}
}

// Unread is every range of the source left unread, in order: bad
// sectors, and anything an interrupted run did not reach.
func (r *Rescuer) Unread(wanted []block.Extent) []block.Extent {
	var out []block.Extent
	for _, w := range wanted {
		for _, k := range r.runs(w.Off, w.Len) {
			if k.Status != Finished {
				out = append(out, block.Extent{Off: k.Off, Len: k.Len})
			}
		}
	}
	return block.MergeExtents(out)
}

// Bad is how many bytes of the source are in bad areas, and how many
// areas, as ddrescuelog counts them.
func (r *Rescuer) Bad() (int64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.Bytes(Bad)
}

// View reads the source as it was rescued: bytes read, or never tried
// (outside what was imaged), come from src (a cached reader is fine);
// bytes that failed are zeros. A read that fails now
// gives zeros too. For reading filesystem metadata to say what the
// unreadable bytes hit.
func (r *Rescuer) View(src io.ReaderAt) io.ReaderAt { return &view{r, src} }

type view struct {
	r   *Rescuer
	src io.ReaderAt
}

func (v *view) ReadAt(p []byte, off int64) (int, error) {
	if off >= v.r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), v.r.size-off)
	for _, k := range v.r.runs(off, n) {
		b := p[k.Off-off : k.end()-off]
		if k.Status == Finished || k.Status == NonTried {
			if _, err := v.src.ReadAt(b, k.Off); err == nil {
				continue
			}
		}
		clear(b)
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}
