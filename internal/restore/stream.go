package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/zeebo/blake3"
)

// A restore from a stream (standard input) writes each chunk as its frame
// goes by, at the place the layout block gives, and learns only at the
// end, from the index, what the disk must hold: a chunk deduplicated
// against an earlier frame, a chunk of a live image whose frame was
// superseded, a zero chunk, a chunk of a parent image. Those are put
// right at the end from bytes already on the target (checked by BLAKE3
// before use), which is why the target must read back.
//
// The chunks that hold the partition tables (the disk's first and last
// MiB) are held in memory and written last, after everything checked,
// and those two MiB are zeroed before the first write: a stream cut short
// leaves a target that does not look like a disk.

// StreamTarget is a Target that reads back what was written to it.
type StreamTarget interface {
	Target
	io.ReaderAt
}

// StreamOptions are the options of Stream.
type StreamOptions struct {
	// Fresh says every byte of the target reads as zero already.
	Fresh    bool
	Progress Progress
	// TempDir is where chunks that a later frame overwrites are kept
	// until the index says whether they are needed ("": os.TempDir()).
	TempDir string
	// Parents attaches the parents of an incremental or differential
	// image (its metadata names one); nil refuses such an image.
	Parents func(img *image.Reader) error
	// Writers is how many frames are checked and written at once while
	// the next ones are read (0: four per core, at most 16, and at most
	// 256 MiB of chunks).
	Writers int
}

// ErrNoLayout is the error of restoring a version 1 image from a stream:
// it has no layout block, so nothing can be placed before its end.
var ErrNoLayout = errors.New("a version 1 image has no layout block, so it cannot be restored from a stream: save it to a file first and restore the file")

// tableEdge is how much of each end of the disk is held back: the MBR and
// the primary GPT at the start, the backup GPT at the end.
const tableEdge = 1 << 20

// Stream restores the whole disk held in the image s reads onto t
// (layout.SourceSize bytes). It returns the image's Reader (its metadata,
// index and maps; the caller closes it). On an error the target is
// incomplete and its first and last MiB are zero.
func Stream(ctx context.Context, s *image.Stream, t StreamTarget, opts StreamOptions) (*image.Reader, error) {
	l := s.Layout()
	if l == nil {
		return nil, ErrNoLayout
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	sr := &streamRestore{l: l, t: t, fresh: opts.Fresh, dir: opts.TempDir,
		last: map[loc]int64{}, held: map[loc][]byte{}, spilled: map[int64]int64{}}
	defer sr.close()
	size := l.SourceSize
	if err := t.Zero(0, min(tableEdge, size)); err != nil {
		return nil, fmt.Errorf("zero the target's first MiB: %w", err)
	}
	if end := max(size-tableEdge, 0); end < size {
		if err := t.Zero(end, size-end); err != nil {
			return nil, fmt.Errorf("zero the target's last MiB: %w", err)
		}
	}
	opts.Progress.Start(size)
	if err := sr.frames(ctx, s, opts); err != nil {
		return nil, err
	}
	img, err := s.Finish()
	if err != nil {
		return nil, err
	}
	if err := sr.finish(ctx, s, img, opts); err != nil {
		img.Close()
		return nil, err
	}
	return img, nil
}

type loc struct {
	area  uint32
	chunk uint64
}

// home is where a frame's chunk was first written: the chunk its header
// names.
type home struct {
	off int64
	at  loc
}

// Values of streamRestore.last that are not frames.
const (
	zeroed   int64 = -1 // zeros were written
	fromPrev int64 = -2 // a parent's chunk was written
)

type streamRestore struct {
	l     *image.Layout
	t     StreamTarget
	fresh bool
	dir   string
	// last is what was written last at each chunk: a frame's offset,
	// zeroed or fromPrev.
	last  map[loc]int64
	homes []home // by frame offset
	held  map[loc][]byte
	// Frames whose home was overwritten before the index said whether
	// they are needed: their bytes in the spill file.
	spill   *os.File
	spillN  int64
	spilled map[int64]int64

	// While frames are read, background writers check and decode them
	// and write their chunks, each frame's bytes in a buffer of bufs,
	// so that the target's writes and the checks (the BLAKE3 hash of
	// every chunk) overlap reading the next frames. A chunk is read back
	// or written again only once its write is done (wait).
	bufs     chan []byte
	jobs     chan writeJob
	writers  sync.WaitGroup
	mu       sync.Mutex
	inflight map[loc]chan struct{}
	werr     error
}

// writeJob is one frame for a background writer.
type writeJob struct {
	f     *image.PendingFrame
	buf   []byte // from bufs, returned once written
	at    loc
	pos   int64
	fresh bool
	done  chan struct{}
}

// frames reads the stream's frames and writes each chunk where its frame
// header puts it (the first chunk that had its bytes): read in order,
// checked and written in parallel, the disk's first and last MiB held
// back in memory. It returns once every write is done.
func (sr *streamRestore) frames(ctx context.Context, s *image.Stream, opts StreamOptions) error {
	cs := int(sr.l.ChunkSize)
	n := opts.Writers
	if n <= 0 {
		// At most about 256 MiB of frames in flight, whatever the
		// chunk size.
		n = max(min(4*runtime.GOMAXPROCS(0), 16, (256<<20)/cs), 2)
	}
	// A frame's stored bytes: a chunk, and what compression or
	// encryption adds. Aligned, so the target takes a chunk stored as it
	// is directly from where it was read.
	sr.bufs = make(chan []byte, n+2) // one being read, one waiting for a writer
	for range n + 2 {
		sr.bufs <- block.AlignedBuffer(cs + 8192)
	}
	sr.inflight = map[loc]chan struct{}{}
	sr.jobs = make(chan writeJob)
	for range n {
		sr.writers.Add(1)
		go func() {
			defer sr.writers.Done()
			var out []byte // a compressed chunk, decoded (a chunk stored as it is needs none)
			for j := range sr.jobs {
				if out == nil && !j.f.InPlace() {
					out = block.AlignedBuffer(cs)
				}
				f, err := j.f.Decode(out)
				if err == nil { // damaged data is never written
					err = write(sr.t, f.Data, j.pos, j.fresh)
				}
				sr.mu.Lock()
				if err != nil && sr.werr == nil {
					sr.werr = err
				}
				delete(sr.inflight, j.at)
				sr.mu.Unlock()
				close(j.done)
				if err == nil {
					opts.Progress.Add(int64(len(f.Data)))
				}
				sr.bufs <- j.buf
			}
		}()
	}
	err := sr.readFrames(ctx, s, opts)
	close(sr.jobs)
	sr.writers.Wait()
	sr.inflight = nil
	if err == nil {
		err = sr.werr
	}
	return err
}

func (sr *streamRestore) readFrames(ctx context.Context, s *image.Stream, opts StreamOptions) error {
	edgeBuf := block.AlignedBuffer(int(sr.l.ChunkSize))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := <-sr.bufs
		sr.mu.Lock()
		err := sr.werr
		sr.mu.Unlock()
		if err != nil {
			return err
		}
		p, err := s.ReadFrame(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err // damaged data is never written
		}
		if p.Delta() {
			// Kept, and written from the parent's chunk once the
			// parents are attached (finish).
			_, err := p.Decode(nil)
			sr.bufs <- buf
			if err != nil {
				return err
			}
			continue
		}
		at := loc{p.Area, p.Chunk}
		sr.homes = append(sr.homes, home{p.Off, at})
		had, err := sr.claim(at, p.Off)
		if err != nil {
			return err
		}
		if sr.edge(at) {
			f, err := p.Decode(edgeBuf)
			if err != nil {
				return err
			}
			sr.held[at] = append(sr.held[at][:0], f.Data...)
			sr.bufs <- buf
			opts.Progress.Add(int64(len(f.Data)))
			continue
		}
		pos, _ := sr.offset(at)
		done := make(chan struct{})
		sr.mu.Lock()
		sr.inflight[at] = done
		sr.mu.Unlock()
		// A chunk written before must be written whole; else zero
		// blocks need not be (a fresh target reads zero there).
		sr.jobs <- writeJob{f: p, buf: buf, at: at, pos: pos, fresh: sr.fresh && !had, done: done}
	}
}

// wait returns once no background write to chunk at is in flight.
func (sr *streamRestore) wait(at loc) {
	sr.mu.Lock()
	done := sr.inflight[at]
	sr.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (sr *streamRestore) close() {
	if sr.spill != nil {
		sr.spill.Close()
	}
}

// offset is the target offset of chunk at and its length.
func (sr *streamRestore) offset(at loc) (int64, int64) {
	a := sr.l.Areas[at.area]
	rel := int64(at.chunk) * sr.l.ChunkSize
	return a.Start + rel, min(sr.l.ChunkSize, a.Size-rel)
}

// edge reports whether chunk at holds bytes of the disk's first or last
// MiB, where the partition tables are.
func (sr *streamRestore) edge(at loc) bool {
	off, n := sr.offset(at)
	size := sr.l.SourceSize
	return off < tableEdge || off+n > size-tableEdge
}

// homeOf is where frame off was first written.
func (sr *streamRestore) homeOf(off int64) (loc, bool) {
	i := sort.Search(len(sr.homes), func(i int) bool { return sr.homes[i].off >= off })
	if i < len(sr.homes) && sr.homes[i].off == off {
		return sr.homes[i].at, true
	}
	return loc{}, false
}

// place writes data (frame off's chunk, or zeroed/fromPrev) at chunk at.
func (sr *streamRestore) place(at loc, off int64, data []byte) error {
	had, err := sr.claim(at, off)
	if err != nil {
		return err
	}
	if sr.edge(at) {
		sr.held[at] = append(sr.held[at][:0], data...)
		return nil
	}
	pos, _ := sr.offset(at)
	// A chunk written before must be written whole; else zero blocks
	// need not be (a fresh target reads zero there).
	return write(sr.t, data, pos, sr.fresh && !had)
}

// claim records that chunk at is about to hold off (a frame's offset, or
// zeroed/fromPrev), and says whether it held anything before.
// If at holds the only copy of an earlier frame's bytes, they are kept in
// the spill file first: the index may still name that frame.
func (sr *streamRestore) claim(at loc, off int64) (had bool, err error) {
	sr.wait(at) // what is there now is on the target
	prev, had := sr.last[at]
	if had && prev >= 0 && prev != off {
		if h, ok := sr.homeOf(prev); ok && h == at {
			if _, done := sr.spilled[prev]; !done {
				_, n := sr.offset(at)
				if err := sr.keep(at, prev, int(n)); err != nil {
					return had, err
				}
			}
		}
	}
	sr.last[at] = off
	return had, nil
}

// keep copies frame prev's bytes, now at chunk at, into the spill file.
func (sr *streamRestore) keep(at loc, prev int64, n int) error {
	b, err := sr.read(at, make([]byte, n))
	if err != nil {
		return err
	}
	if sr.spill == nil {
		f, err := os.CreateTemp(sr.dir, ".platter-restore-*")
		if err != nil {
			return fmt.Errorf("keep a chunk a later frame replaces: %w", err)
		}
		os.Remove(f.Name()) // gone when closed
		sr.spill = f
	}
	if _, err := sr.spill.WriteAt(b, sr.spillN); err != nil {
		return fmt.Errorf("keep a chunk a later frame replaces: %w", err)
	}
	sr.spilled[prev] = sr.spillN
	sr.spillN += int64(len(b))
	return nil
}

// read reads what chunk at holds now (len(b) bytes) from memory or the
// target.
func (sr *streamRestore) read(at loc, b []byte) ([]byte, error) {
	if h, ok := sr.held[at]; ok {
		return append(b[:0], h...), nil
	}
	pos, _ := sr.offset(at)
	if _, err := sr.t.ReadAt(b, pos); err != nil {
		return nil, fmt.Errorf("read back the target at byte %d: %w", pos, err)
	}
	return b, nil
}

// content is frame off's chunk (n bytes), from where it was written, or
// from the spill file.
func (sr *streamRestore) content(off int64, n int, buf []byte) ([]byte, error) {
	b := buf[:n]
	if p, ok := sr.spilled[off]; ok {
		if _, err := sr.spill.ReadAt(b, p); err != nil {
			return nil, fmt.Errorf("read back a kept chunk: %w", err)
		}
		return b, nil
	}
	h, ok := sr.homeOf(off)
	if !ok || sr.last[h] != off {
		return nil, fmt.Errorf("the bytes of the frame at image byte %d are no longer on the target (internal error)", off)
	}
	return sr.read(h, b)
}

// finish puts right, from the index, every chunk whose final bytes are
// not the frame last written there; fills the free bytes of areas that
// ask for random fill; then writes the held chunks.
func (sr *streamRestore) finish(ctx context.Context, s *image.Stream, img *image.Reader, opts StreamOptions) error {
	if bad := s.Check(img); len(bad) > 0 {
		if len(bad) > 1 {
			return fmt.Errorf("%w (and %d more damaged chunks)", bad[0], len(bad)-1)
		}
		return bad[0]
	}
	m := img.Metadata()
	if m.Parent != "" {
		if opts.Parents == nil {
			return fmt.Errorf("the image is %s image of %s: its parents are needed", m.Type, m.Parent)
		}
		if err := opts.Parents(img); err != nil {
			return err
		}
	}
	for i := range m.Areas {
		if a := &m.Areas[i]; a.FreeFill != "" && a.FreeFill != image.FreeFillRandom {
			return fmt.Errorf("%s: free_fill %q is not known to this platter (a newer one made the image)", a.Label(), a.FreeFill)
		}
	}
	buf := block.AlignedBuffer(int(m.ChunkSize))
	for _, e := range img.Entries() {
		if err := ctx.Err(); err != nil {
			return err
		}
		at := loc{e.Area, e.Chunk}
		prev, had := sr.last[at]
		switch {
		case e.Zero():
			if had && prev != zeroed {
				if err := sr.place(at, zeroed, make([]byte, e.RawLen)); err != nil {
					return err
				}
			} else if !had {
				pos, n := sr.offset(at)
				if err := sr.t.Zero(pos, n); err != nil {
					return fmt.Errorf("zero target bytes %d-%d: %w", pos, pos+n-1, err)
				}
			}
		case e.InParent() || e.Delta():
			data, err := img.ReadChunk(e, buf)
			if err != nil {
				return err
			}
			if err := sr.place(at, fromPrev, data); err != nil {
				return err
			}
		case prev != e.FrameOff || !had:
			data, err := sr.content(e.FrameOff, int(e.RawLen), buf)
			if err != nil {
				return err
			}
			if blake3.Sum256(data) != e.Hash {
				return &image.ChunkError{Entry: e, Where: img.Where(e), Msg: "the bytes read back from the target for this deduplicated chunk do not match its hash (the target changed under the restore?)"}
			}
			if err := sr.place(at, e.FrameOff, data); err != nil {
				return err
			}
		}
	}
	// Chunks written from the stream that the index does not list (a
	// live image's chunk freed after it was copied) are free: zeros.
	var stale []loc
	for at, v := range sr.last {
		if v >= 0 {
			if _, ok := img.Lookup(at.area, at.chunk); !ok {
				stale = append(stale, at)
			}
		}
	}
	for _, at := range stale {
		_, n := sr.offset(at)
		if err := sr.place(at, zeroed, make([]byte, n)); err != nil {
			return err
		}
	}
	// A chunk of an image of a filesystem in use holds its blocks as
	// they were when it was copied (a live image's first copy, say);
	// blocks freed since are free in the maps, read last (at the
	// freeze). A restore from a file writes only the used bytes: so that
	// a stream gives the same, what such chunks hold in free bytes is
	// made zero. The chunks of other images (and of one copied frozen
	// throughout) hold zeros there already: their maps made them.
	if sn := m.Snapshot; sn != nil && (sn.Method != "freeze" || len(sn.Synced) > 0) {
		if err := sr.clearFree(ctx, img); err != nil {
			return err
		}
	}
	// Random fill of free bytes, as a restore from a file gives it.
	tasks, err := plan(img, partitionPlace(0))
	if err != nil {
		return err
	}
	var fill *filler
	filled := map[uint32]bool{}
	for _, tk := range tasks {
		if !tk.fill {
			continue
		}
		filled[tk.e.Area] = true
		if fill == nil {
			fill = newFiller()
		}
		if err := fill.free(sr.t, tk); err != nil {
			return err
		}
	}
	// Last, the partition tables.
	held := make([]loc, 0, len(sr.held))
	for at := range sr.held {
		held = append(held, at)
	}
	sort.Slice(held, func(i, j int) bool {
		return held[i].area < held[j].area || held[i].area == held[j].area && held[i].chunk < held[j].chunk
	})
	for _, at := range held {
		data := sr.held[at]
		pos, _ := sr.offset(at)
		if !filled[at.area] {
			sr.free(img, at, func(off, n int64) { clear(data[off : off+n]) })
			if err := write(sr.t, data, pos, sr.fresh); err != nil {
				return err
			}
			continue
		}
		// Only the used bytes: the free ones have their random fill.
		rel := int64(at.chunk) * m.ChunkSize
		var werr error
		img.Map(int(at.area)).Runs(rel, int64(len(data)), func(x block.Extent) {
			if werr == nil {
				werr = writeAt(sr.t, data[x.Off-rel:x.End()-rel], pos+x.Off-rel)
			}
		})
		if werr != nil {
			return werr
		}
	}
	return nil
}

// free calls fn with each range of chunk at (chunk-relative) that its
// area's map leaves free; none for an area without a map (raw: every
// byte is used) or whose free bytes are filled with random bytes.
func (sr *streamRestore) free(img *image.Reader, at loc, fn func(off, n int64)) {
	a := &img.Metadata().Areas[at.area]
	mp := img.Map(int(at.area))
	if mp == nil || a.FreeFill == image.FreeFillRandom {
		return
	}
	rel := int64(at.chunk) * sr.l.ChunkSize
	_, n := sr.offset(at)
	pos := int64(0)
	mp.Runs(rel, n, func(e block.Extent) {
		if e.Off-rel > pos {
			fn(pos, e.Off-rel-pos)
		}
		pos = e.End() - rel
	})
	if pos < n {
		fn(pos, n-pos)
	}
}

// clearFree zeroes the free bytes (sr.free) of the chunks on the target
// that hold a frame's or a parent's bytes, where they are not zero; the
// held chunks are cleared as they are written.
func (sr *streamRestore) clearFree(ctx context.Context, img *image.Reader) error {
	var written []loc
	for at, v := range sr.last {
		if _, isHeld := sr.held[at]; !isHeld && (v >= 0 || v == fromPrev) {
			written = append(written, at)
		}
	}
	sort.Slice(written, func(i, j int) bool {
		return written[i].area < written[j].area || written[i].area == written[j].area && written[i].chunk < written[j].chunk
	})
	buf := make([]byte, sr.l.ChunkSize)
	for _, at := range written {
		if err := ctx.Err(); err != nil {
			return err
		}
		pos, _ := sr.offset(at)
		var err error
		sr.free(img, at, func(off, n int64) {
			if err != nil {
				return
			}
			b := buf[:n]
			if _, err = sr.t.ReadAt(b, pos+off); err != nil {
				err = fmt.Errorf("read back the target at byte %d: %w", pos+off, err)
				return
			}
			if !allZero(b) {
				clear(b)
				err = writeAt(sr.t, b, pos+off)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !isZero(b[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
