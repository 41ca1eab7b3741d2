// Package backup is the imaging engine: source → layout → used chunks →
// parallel hash and compress → image.Writer.
package backup

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/rescue"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// DefaultChunkSize is the chunk grid step. See docs/performance.md.
const DefaultChunkSize = 8 << 20

// maxDedup bounds the table of chunk hashes that later chunks are
// deduplicated against (about 100 bytes each): duplicates of the first
// 512Ki distinct chunks (4 TiB of 8 MiB chunks) are found, and memory
// stays bounded on any disk.
const maxDedup = 512 << 10

// Progress receives the engine's progress; ui implements it. Calls come
// from several goroutines. Start's total is the bytes in use as far as
// they are known before reading: a filesystem's used blocks, and the
// whole of an area copied raw. Less takes off the total a raw area's
// zero chunks as they are found (they are not in use), so the total
// comes down to the bytes Add counts, the summary's "used", as the run
// goes, and the time left is not reckoned on bytes that need no work.
type Progress interface {
	Start(total int64)
	Add(n int64)
	Less(n int64)
}

type noProgress struct{}

func (noProgress) Start(int64) {}
func (noProgress) Add(int64)   {}
func (noProgress) Less(int64)  {}

// Options tune an imaging run. The zero value images everything,
// uncompressed; the CLI passes codec.DefaultSetting unless told otherwise.
type Options struct {
	SourceName string // recorded in the metadata
	// Host, DiskModel and DiskSerial are recorded in the metadata: where
	// the image was made, and of which device.
	Host, DiskModel, DiskSerial string
	// Keys unlock encrypted volumes (LUKS) so that only the blocks their
	// filesystems use are stored; never written to the image.
	Keys        [][]byte
	Partitions  []int // only these partition numbers (the table and gaps are always kept)
	Compression codec.Setting
	ChunkSize   int64
	Workers     int
	Tool        string // "platter VERSION"
	Progress    Progress
	TempDir     string // where the index spills once it outgrows memory ("": os.TempDir())
	// Release, if set, is called once every byte has been read from the
	// source (data and allocation maps), before the image is finished (a
	// frozen filesystem is thawed there). Its Snapshot is recorded in the metadata; an error
	// discards the image.
	Release func() (*image.Snapshot, error)
	// Live, if set, images a source that is written while it is read: see
	// live.go.
	Live *Live
	// MapSource is where the partition table and allocation maps are read
	// (nil: the source itself). Live imaging reads them through the page
	// cache and the data around it.
	MapSource block.Source
	// Parent, if set, makes the image an incremental or differential of
	// it (Type says which): chunks whose content the parent's chain holds
	// are recorded by hash, not stored. The parent's chain must be
	// attached. The source's layout must be the parent's.
	Parent *image.Reader
	Type   string // "incremental" or "differential" with Parent
	// Changed, with Parent, are the byte ranges of the source that may
	// differ from the parent's source (a VM's writes to an overlay on
	// the parent's disk): a chunk outside them whose allocation map is
	// the parent's is recorded as the parent's without being read. nil
	// reads every chunk.
	Changed []block.Extent
	// ChangedBy and ChangedNote are recorded in the metadata: how the
	// changed chunks were found ("tracker": from Changed; "read": every
	// chunk read) and, for "read", why no map was used.
	ChangedBy, ChangedNote string
	// Created is the time recorded as the image's (zero: now).
	Created time.Time
	// SectorBySector images every byte of the disk, free blocks and
	// unpartitioned space included (every non-zero chunk). An incremental
	// or differential takes its parent's choice.
	SectorBySector bool
	// Lock, if set, encrypts the image: a fresh data key wrapped for its
	// passphrase and recipients. An incremental or differential of an
	// encrypted parent must have one (the parent's: seal.Secrets.LockFor).
	Lock *seal.Lock
	// Rescue, if set, reads the source as a failing disk (create
	// --rescue; see rescue.go): read errors do not stop the run, the
	// bytes never read are stored as zeros and listed in
	// Metadata.Rescue, with what they held as Classify says.
	Rescue   *rescue.Rescuer
	Retries  int // recorded in Metadata.Rescue
	Classify Classifier
}

// Run images src into out and returns the metadata it wrote. It writes
// nothing after an error; the caller discards the partial output.
func Run(ctx context.Context, src block.Source, out io.Writer, opts Options) (*image.Metadata, int64, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	mapSrc := opts.MapSource
	if mapSrc == nil {
		mapSrc = src
	}
	if opts.Parent != nil {
		opts.SectorBySector = opts.Parent.Metadata().SectorBySector
	}
	dropCache(mapSrc)
	l, err := planLayout(mapSrc, opts.Partitions, opts.SectorBySector, fsmap.Options{Keys: opts.Keys})
	if err != nil {
		return nil, 0, err
	}
	if opts.Parent != nil {
		if err := sameLayout(opts.Parent, l, src, opts.SectorBySector); err != nil {
			return nil, 0, err
		}
		opts.ChunkSize = opts.Parent.Metadata().ChunkSize
		if opts.Parent.Encrypted() && opts.Lock == nil {
			return nil, 0, errors.New("backup: the parent is encrypted: an incremental or differential of it must be too (internal error: no lock given)")
		}
	}
	var id image.ID
	if _, err := rand.Read(id[:]); err != nil {
		return nil, 0, err
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Now().UTC()
	}
	head := image.Head{ID: id, Created: created, Layout: image.Layout{SourceSize: src.Size(), SectorSize: l.table.SectorSize, ChunkSize: opts.ChunkSize}}
	for _, a := range l.areas {
		head.Layout.Areas = append(head.Layout.Areas, image.LayoutArea{Kind: a.meta.Kind, Index: a.meta.Index, Start: a.meta.Start, Size: a.meta.Size})
	}
	if pr := opts.Parent; pr != nil {
		// Named before the first frame: a restore from a stream finds
		// and checks the chain before it writes.
		head.Layout.Parent = &image.ParentRef{ID: pr.ID(), Digest: pr.ContentDigest()}
	}
	if opts.Lock != nil {
		key, err := seal.NewKey()
		if err != nil {
			return nil, 0, err
		}
		slots, err := opts.Lock.Slots(id, key)
		if err != nil {
			return nil, 0, err
		}
		head.Keys = &image.Keys{Data: key, Slots: slots}
	}
	w, err := image.NewWriter(out, head)
	if err != nil {
		return nil, 0, err
	}
	w.TempDir = opts.TempDir
	enc, err := codec.NewEncoder(opts.Compression, opts.Workers)
	if err != nil {
		return nil, 0, err
	}
	defer enc.Close()

	var total int64
	for _, a := range l.areas {
		if a.used != nil {
			total += a.meta.UsedBytes
		} else {
			total += a.meta.Size
		}
	}
	opts.Progress.Start(total)

	if opts.Rescue != nil {
		// A failing disk is read once: the maps too, now, while it
		// answers (see keepRescueMaps).
		closeMaps := keepRescueMaps(l, opts.TempDir)
		defer closeMaps()
	}
	p := newPipeline(src, mapSrc, l.areas, opts.ChunkSize, enc, w, opts.Progress)
	p.detect = fsmap.Options{Keys: opts.Keys}
	p.parent = opts.Parent
	p.sourceName, p.tempDir = opts.SourceName, opts.TempDir
	if opts.Rescue != nil {
		if opts.Live != nil {
			return nil, 0, errors.New("backup: a rescue is not a live image (internal error)")
		}
		p.rescue = &rescueState{r: opts.Rescue}
	}
	if opts.Parent != nil && opts.Changed != nil {
		p.changed = map[chunkRef]bool{}
		for _, r := range p.chunksOf(opts.Changed) {
			p.changed[r] = true
		}
	}
	first := time.Now()
	if err := p.run(ctx, opts.Workers, &pass{all: true}); err != nil {
		return nil, 0, err
	}
	full := image.Pass{Kind: "full", Chunks: p.written, Seconds: time.Since(first).Seconds()}
	if p.rescue != nil {
		if err := p.completeRescue(ctx, opts.Workers); err != nil {
			return nil, 0, err
		}
	}
	var snap *image.Snapshot
	if opts.Live != nil {
		// Copies again what was written meanwhile, freezes, copies the
		// rest, thaws (opts.Release) and keeps the maps read while frozen.
		closeMaps, s, err := p.live(ctx, opts.Workers, opts.Live, opts.Release, opts.TempDir, full)
		if closeMaps != nil {
			defer closeMaps()
		}
		if err != nil {
			return nil, 0, err
		}
		snap = s
		opts.Release = func() (*image.Snapshot, error) { return snap, nil }
	}

	meta := &image.Metadata{
		Created:     created,
		Tool:        opts.Tool,
		Source:      opts.SourceName,
		Host:        opts.Host,
		DiskModel:   opts.DiskModel,
		DiskSerial:  opts.DiskSerial,
		SourceSize:  src.Size(),
		SectorSize:  l.table.SectorSize,
		Table:       l.table.Kind,
		DiskID:      l.table.DiskID,
		ChunkSize:   opts.ChunkSize,
		Compression: opts.Compression.String(),
		Warnings:    slices.Clone(l.warnings),
		NotImaged:   l.notImaged,
		Type:        "full",

		SectorBySector: opts.SectorBySector,
	}
	if p.rescue != nil {
		meta.Rescue = p.rescueReport(opts.Classify, opts.Retries)
	}
	if pr := opts.Parent; pr != nil {
		d := pr.ContentDigest()
		meta.Type, meta.Parent, meta.ParentDigest = opts.Type, pr.ID().String(), hex.EncodeToString(d[:])
		meta.ChangedBy, meta.ChangedNote = opts.ChangedBy, opts.ChangedNote
		if meta.ChangedBy == "" {
			meta.ChangedBy = "read"
		}
		meta.ReadChunks, meta.InUseChunks = p.inUse-p.unread, p.inUse
	}
	maps := make([]image.Bitmap, len(l.areas))
	for i, a := range p.areas {
		if a.used == nil {
			a.meta.UsedBytes = p.rawUsed(i)
		} else {
			maps[i] = a.used
		}
		a.meta.StoredBytes = p.stored[i]
		meta.Areas = append(meta.Areas, a.meta)
		// A partition not imaged as its filesystem says (damaged, a
		// journal to replay, unreadable) is a warning too, as it
		// stood when the image was made (for a live image, the freeze).
		if a.meta.Note != "" {
			meta.Warnings = append(meta.Warnings, a.meta.Note)
		}
	}
	// The maps are read from the source once more as they are written:
	// only then is the source let go (a frozen filesystem thawed).
	release := func(m *image.Metadata) error {
		if opts.Release == nil {
			return nil
		}
		snap, err := opts.Release()
		m.Snapshot = snap
		return err
	}
	if err := w.Finish(maps, meta, p.resolveDuplicate, release); err != nil {
		return nil, 0, err
	}
	return meta, w.Offset(), nil
}

// job is one chunk moving through the pipeline.
type job struct {
	area  int
	chunk int64
	off   int64 // byte offset in the source
	n     int64 // chunk length
	used  int64 // bytes the progress counts for it
	// The allocation map of the blocks the chunk overlaps (nil for a raw
	// area); byte x of the area is byte x-mapBase of it.
	usedMap *block.Map
	mapBase int64

	buf      []byte // raw chunk
	cbuf     []byte // compressed
	payload  []byte // what goes into the frame
	codec    codec.ID
	hash     [32]byte
	zero     bool
	dup      bool
	inParent bool // the parent's chain holds the chunk as it is
	delta    bool // payload is a delta over the parent's chunk
	preset   bool // known without reading it (Options.Changed): nothing to process
	held     bool // read while frozen, processed after the thaw
	// A rescue's chunk not read whole: set aside in the spool (slot),
	// its byte ranges wanted read again later.
	pending bool
	wanted  []block.Extent
	slot    int64
	err     error
	done    chan struct{}
}

type frameRef struct {
	off    int64
	stored uint32
	delta  bool
}

type pipeline struct {
	parent   *image.Reader     // of an incremental or differential
	changed  map[chunkRef]bool // with parent: the chunks that may differ from it (nil: any)
	src      block.Source
	mapSrc   block.Source
	detect   fsmap.Options // keys for encrypted volumes, when maps are read again
	areas    []area
	cs       int64
	enc      *codec.Encoder
	w        *image.Writer
	progress Progress

	sourceName string          // in read errors
	tempDir    string          // for a rescue's spool
	rescue     *rescueState    // nil unless Options.Rescue
	ctx        context.Context // of the current run, for a rescue's long reads

	// frames holds distinct chunk hashes seen, up to maxDedup: a worker
	// claims a hash (offset -1) before compressing, the writer fills in
	// the frame.
	mu     sync.Mutex
	frames map[[32]byte]frameRef

	// masks[area][chunk] identifies the allocation map of the chunk when
	// it was last copied (0: no used block; nil for a raw area): live
	// imaging copies a chunk again when its map changed.
	masks [][]uint64
	// nonzero[area][chunk] says a chunk of a raw area was last copied
	// with data (nil for an area with a map).
	nonzero [][]bool

	// Owned by the writer goroutine.
	stored  map[int]int64
	held    []*job // pass.hold: chunks read, to be processed after the thaw
	written int    // chunks written by the last run
	inUse   int    // chunks holding used blocks, of the first pass
	unread  int    // of those, the ones taken from the parent unread
	pool    sync.Pool

	holding atomic.Int32 // chunks held so far (pass.hold)
}

// maxHeld bounds the raw chunks a frozen pass holds in memory (128 MiB of
// 8 MiB chunks, so create stays within about 300 MiB); beyond it, chunks
// are compressed while frozen.
const maxHeld = 16

func (p *pipeline) holdSlot() bool { return p.holding.Add(1) <= maxHeld }

func newPipeline(src, mapSrc block.Source, areas []area, cs int64, enc *codec.Encoder, w *image.Writer, progress Progress) *pipeline {
	p := &pipeline{src: src, mapSrc: mapSrc, areas: areas, cs: cs, enc: enc, w: w, progress: progress,
		frames: map[[32]byte]frameRef{}, stored: map[int]int64{}}
	for _, a := range areas {
		n := (a.meta.Size + cs - 1) / cs
		if a.used != nil {
			p.masks = append(p.masks, make([]uint64, n))
			p.nonzero = append(p.nonzero, nil)
		} else {
			p.masks = append(p.masks, nil)
			p.nonzero = append(p.nonzero, make([]bool, n))
		}
	}
	return p
}

// rawUsed is the number of bytes in chunks of raw area i that hold data.
func (p *pipeline) rawUsed(i int) int64 {
	var n int64
	for k, nz := range p.nonzero[i] {
		if nz {
			n += min(p.cs, p.areas[i].meta.Size-int64(k)*p.cs)
		}
	}
	return n
}

// pass says which chunks one run of the pipeline copies.
type pass struct {
	all   bool              // every chunk: the first copy (its entries are added, later passes' replace)
	dirty map[chunkRef]bool // chunks written since they were copied
	scan  bool              // and every chunk whose allocation map changed
	hold  bool              // read now (frozen), compress later: see p.held
	jobs  []*job            // instead: these jobs, read already
}

type chunkRef struct {
	area  int
	chunk int64
}

func (p *pipeline) run(ctx context.Context, workers int, ps *pass) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.ctx = ctx
	work := make(chan *job)
	// Chunks finished out of turn wait here for the writer; deep enough
	// that a slow (compressible) chunk does not leave workers idle.
	order := make(chan *job, 4*workers)

	go func() { // producer: chunks in disk order, only those with used blocks
		defer close(work)
		defer close(order)
		p.produce(ps, func(j *job) bool {
			if j.err != nil { // the writer stops at this job
				close(j.done)
				select {
				case order <- j:
				case <-ctx.Done():
				}
				return false
			}
			select {
			case order <- j:
			case <-ctx.Done():
				return false
			}
			select {
			case work <- j:
			case <-ctx.Done():
				j.err = context.Cause(ctx)
				close(j.done)
				return false
			}
			return true
		})
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				switch {
				case j.preset:
				case ctx.Err() != nil:
					// Stopping: do not compress what will not be written.
					j.err = context.Cause(ctx)
				case ps.hold && len(ps.jobs) == 0 && p.holdSlot():
					j.held = true
					j.buf = p.buffer()[:j.n]
					j.err = p.read(&p.areas[j.area], j)
				default:
					p.process(j)
				}
				close(j.done)
			}
		}()
	}
	err := p.write(ctx, order, ps)
	if err != nil {
		cancel(err)
	}
	// Drain so the producer and workers finish before we return.
	for j := range order {
		<-j.done
	}
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = nil
		}
	}
	return err
}

// produce makes the jobs of a pass in disk order and hands each to emit
// until it returns false. A job that carries an error stops the pass.
func (p *pipeline) produce(ps *pass, emit func(*job) bool) {
	if ps.jobs != nil {
		for _, j := range ps.jobs {
			j.held, j.done = false, make(chan struct{})
			if !emit(j) {
				return
			}
		}
		return
	}
	visit := func(i int, k int64) bool {
		a := &p.areas[i]
		off := k * p.cs
		n := min(p.cs, a.meta.Size-off)
		j := &job{area: i, chunk: k, off: a.meta.Start + off, n: n, used: n, done: make(chan struct{})}
		copyIt := ps.all || ps.dirty[chunkRef{i, k}]
		unchanged := ps.all && p.changed != nil && !p.changed[chunkRef{i, k}]
		if a.used == nil {
			if copyIt && unchanged {
				p.fromParent(j)
			}
			if copyIt {
				p.count(ps, j)
			}
			return !copyIt || emit(j)
		}
		m, base, err := a.used.Window(off, n)
		if err != nil {
			j.err = fmt.Errorf("partition %d: read allocation map: %w", a.meta.Index, err)
			return emit(j)
		}
		// What the chunk's map looks like, and how many bytes it uses.
		h, used := uint64(fnvOffset), int64(0)
		m.Runs(off-base, n, func(e block.Extent) {
			used += e.Len
			h = fnvAdd(fnvAdd(h, uint64(e.Off-(off-base))), uint64(e.Len))
		})
		if used == 0 {
			h = 0
		}
		if ps.scan && h != p.masks[i][k] {
			copyIt = true
		}
		if !copyIt {
			return true
		}
		p.masks[i][k] = h
		if used == 0 {
			return true // no used block: nothing to copy
		}
		j.usedMap, j.mapBase, j.used = m, base, used
		if unchanged && p.sameMap(i, off, n, m, base) {
			p.fromParent(j)
		}
		p.count(ps, j)
		return emit(j)
	}
	if ps.all || ps.scan {
		for i, a := range p.areas {
			for k := int64(0); k*p.cs < a.meta.Size; k++ {
				if !visit(i, k) {
					return
				}
			}
		}
		return
	}
	refs := make([]chunkRef, 0, len(ps.dirty))
	for r := range ps.dirty {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b chunkRef) int {
		if a.area != b.area {
			return cmp.Compare(a.area, b.area)
		}
		return cmp.Compare(a.chunk, b.chunk)
	})
	for _, r := range refs {
		if !visit(r.area, r.chunk) {
			return
		}
	}
}

// count counts the chunks of the first pass, and those not read.
func (p *pipeline) count(ps *pass, j *job) {
	if !ps.all {
		return
	}
	p.inUse++
	if j.preset {
		p.unread++
	}
}

// fromParent makes j the parent's chunk, unread, if the parent has an
// entry for it (else j is read as any other).
func (p *pipeline) fromParent(j *job) {
	pe, ok := p.parent.Lookup(uint32(j.area), uint64(j.chunk))
	if !ok || int64(pe.RawLen) != j.n {
		return
	}
	j.preset, j.hash = true, pe.Hash
	if pe.Zero() {
		j.zero = true
	} else {
		j.inParent = true
	}
}

// sameMap reports whether the used blocks of [off, off+n) of area i (m,
// from byte base of the area) are the parent's there: a chunk whose
// blocks were freed or taken holds other bytes though none was written.
func (p *pipeline) sameMap(i int, off, n int64, m *block.Map, base int64) bool {
	pm := p.parent.Map(i)
	if pm == nil {
		return false
	}
	var now, was []block.Extent
	m.Runs(off-base, n, func(e block.Extent) { now = append(now, block.Extent{Off: e.Off + base, Len: e.Len}) })
	pm.Runs(off, n, func(e block.Extent) { was = append(was, e) })
	return slices.Equal(now, was)
}

// FNV-1a over 64-bit words, for fingerprints of a chunk's map.
const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

func fnvAdd(h, v uint64) uint64 {
	for range 8 {
		h = (h ^ v&0xff) * fnvPrime
		v >>= 8
	}
	return h
}

func (p *pipeline) buffer() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	// Room for compressed output that is larger than its input (random
	// data), so the encoder never has to grow and copy the buffer;
	// aligned, so a source opened with O_DIRECT can read into it.
	return block.AlignedBuffer(int(p.cs + p.cs/64 + 4096))[:p.cs]
}

func (p *pipeline) release(b []byte) {
	if b != nil {
		p.pool.Put(&b)
	}
}

// process reads, checks, hashes and compresses one chunk.
func (p *pipeline) process(j *job) {
	if j.buf == nil { // else read while frozen
		j.buf = p.buffer()[:j.n]
		if err := p.read(&p.areas[j.area], j); err != nil {
			j.err = err
			return
		}
		if j.pending {
			j.err = p.setAside(j)
			p.releaseBuf(j)
			return
		}
	}
	if allZero(j.buf) {
		j.zero = true
		p.releaseBuf(j)
		return
	}
	j.hash = blake3.Sum256(j.buf)
	var base image.Entry
	hasBase := false
	if p.parent != nil {
		pe, ok := p.parent.Lookup(uint32(j.area), uint64(j.chunk))
		if ok && pe.Hash == j.hash {
			j.inParent = true
			p.releaseBuf(j)
			return
		}
		base, hasBase = pe, ok && pe.RawLen == uint32(j.n)
	}
	p.mu.Lock()
	_, j.dup = p.frames[j.hash]
	if !j.dup && len(p.frames) < maxDedup {
		p.frames[j.hash] = frameRef{off: -1}
	}
	p.mu.Unlock()
	if j.dup {
		p.releaseBuf(j)
		return
	}
	if !hasBase || !p.tryDelta(j, base) {
		j.cbuf = p.buffer()
		j.codec, j.payload = p.enc.Encode(j.cbuf[:0], j.buf)
	}
	// A job waiting for its turn to be written holds only its payload,
	// so more of them fit in memory while a slow chunk holds the line.
	if j.codec == codec.None && !j.delta {
		p.release(j.cbuf)
		j.cbuf = nil
	} else {
		p.releaseBuf(j)
	}
}

// tryDelta makes j's payload a delta over the parent's chunk base (the
// parent's chain's entry for the same chunk) when at most half of its
// sub-blocks differ: only those are stored, so scattered small writes
// cost about what they changed. It reports whether it set j's payload;
// if not, the caller compresses the whole chunk. A parent chunk that
// cannot be read leaves the chunk to be stored whole.
func (p *pipeline) tryDelta(j *job, base image.Entry) bool {
	bb := p.buffer()
	defer p.release(bb)
	old, err := p.parent.ReadChunk(base, bb[:0])
	if err != nil {
		return false
	}
	bitmap, changed := image.DiffBlocks(old, j.buf, image.DeltaBlock, nil)
	blocks := (len(j.buf) + image.DeltaBlock - 1) / image.DeltaBlock
	// More than half the sub-blocks changed (a chunk rewritten whole,
	// new files written over free space: the contiguous case): the
	// delta saves little and would cost a second compression to
	// compare, so the chunk is stored whole. At most half changed:
	// its sub-blocks are a part of the chunk, which compresses no
	// smaller whole (but for the delta's header and bitmap, 308 bytes
	// for 8 MiB), so the whole chunk is not compressed at all.
	if changed == 0 || changed*2 > blocks {
		return false
	}
	data := image.AppendDeltaBlocks(bb[:0], j.buf, image.DeltaBlock, bitmap)
	dbuf := p.buffer()
	db := image.AppendDeltaHeader(dbuf[:0], image.DeltaBlock, image.DeltaBase{Area: uint32(j.area), Chunk: uint64(j.chunk), Hash: base.Hash}, bitmap)
	id, enc := p.enc.Encode(db[len(db):], data)
	payload := append(db, enc...)
	j.cbuf, j.payload, j.codec, j.delta = dbuf, payload, id, true
	return true
}

// releaseBuf returns the job's raw chunk buffer to the pool.
func (p *pipeline) releaseBuf(j *job) {
	p.release(j.buf)
	j.buf = nil
}

// read fills j.buf with the chunk's used bytes and zeros elsewhere, so
// free blocks (garbage on a used disk) never reach the image.
func (p *pipeline) read(a *area, j *job) error {
	rel := j.off - a.meta.Start
	if j.usedMap == nil {
		if p.rescue != nil {
			return p.readRescued(j, []block.Extent{{Off: j.off, Len: j.n}})
		}
		return p.readAt(j.buf, j.off)
	}
	runs := p.usedRuns(j)
	first, last := runs[0].Off, runs[len(runs)-1].End()
	var used int64
	for _, r := range runs {
		used += r.Len
	}
	// One large read beats many small ones unless most of the span is
	// free. Each read is widened to whole 4 KiB blocks of the source
	// (within the chunk) so that a source read with O_DIRECT (a frozen
	// filesystem's device) takes it directly; what is not a used run is
	// cleared afterwards.
	spans := runs
	if used*4 >= last-first {
		spans = []block.Extent{{Off: first, Len: last - first}}
	}
	const align = block.DirectAlign
	reads := make([]block.Extent, 0, len(spans))
	for _, sp := range spans {
		abs := a.meta.Start + sp.Off
		lo := max(rel, abs/align*align-a.meta.Start)
		hi := min(rel+j.n, (abs+sp.Len+align-1)/align*align-a.meta.Start)
		reads = append(reads, block.Extent{Off: a.meta.Start + lo, Len: hi - lo})
	}
	if p.rescue != nil {
		if err := p.readRescued(j, reads); err != nil {
			return err
		}
	} else {
		for _, r := range reads {
			if err := p.readAt(j.buf[r.Off-j.off:r.End()-j.off], r.Off); err != nil {
				return err
			}
		}
	}
	p.clearFree(j, runs)
	return nil
}

// usedRuns are the used runs of j's chunk, as bytes of its area.
func (p *pipeline) usedRuns(j *job) []block.Extent {
	rel := j.off - p.areas[j.area].meta.Start
	var runs []block.Extent
	j.usedMap.Runs(rel-j.mapBase, j.n, func(e block.Extent) {
		runs = append(runs, block.Extent{Off: e.Off + j.mapBase, Len: e.Len})
	})
	return runs
}

// clearFree zeroes the bytes of j.buf outside runs, the chunk's used
// runs (usedRuns).
func (p *pipeline) clearFree(j *job, runs []block.Extent) {
	rel := j.off - p.areas[j.area].meta.Start
	pos := rel
	for _, r := range runs {
		clear(j.buf[pos-rel : r.Off-rel])
		pos = r.End()
	}
	clear(j.buf[pos-rel:])
}

func (p *pipeline) readAt(b []byte, off int64) error {
	n, err := p.src.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &ReadError{Source: p.sourceName, Off: off + int64(n), End: off + int64(len(b)), Err: err}
}

// ReadError is a read of the source that failed: a failing disk, most
// often, which create --rescue images.
type ReadError struct {
	Source   string
	Off, End int64 // the bytes the read asked for, from the first it could not read
	Err      error
}

func (e *ReadError) Error() string {
	name := e.Source
	if name == "" {
		name = "the source"
	}
	err := e.Err
	var pe *fs.PathError // "read /dev/sdb: input/output error" names the source twice
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("cannot read %s at bytes %d-%d: %v", name, e.Off, e.End, err)
}

func (e *ReadError) Unwrap() error { return e.Err }

var zeroChunk = make([]byte, 1<<20)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroChunk))
		if string(b[:n]) != string(zeroChunk[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// write consumes jobs in disk order and writes their frames.
func (p *pipeline) write(ctx context.Context, order chan *job, ps *pass) error {
	p.written = 0
	for j := range order {
		select {
		case <-j.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if j.err != nil {
			return j.err
		}
		if j.held {
			p.held = append(p.held, j)
			continue
		}
		if j.pending {
			p.rescue.pending = append(p.rescue.pending, j)
			p.progress.Add(j.used)
			continue
		}
		e := image.Entry{Area: uint32(j.area), Chunk: uint64(j.chunk), RawLen: uint32(j.n), Hash: j.hash}
		switch {
		case j.zero:
			e.Flags = image.FlagZero
		case j.inParent:
			e.Flags = image.FlagParent
		case j.dup:
			e.FrameOff = -1 // resolved once every frame is written
		default:
			off, err := p.w.WriteFrame(&image.Frame{Area: e.Area, Chunk: e.Chunk, RawLen: int(j.n), Hash: j.hash, Codec: j.codec, Payload: j.payload, Delta: j.delta})
			if err != nil {
				return err
			}
			e.FrameOff, e.Stored = off, uint32(len(j.payload))
			if j.delta {
				e.Flags = image.FlagDelta
			}
			p.mu.Lock()
			if _, ok := p.frames[j.hash]; ok {
				p.frames[j.hash] = frameRef{off: off, stored: e.Stored, delta: j.delta}
			}
			p.mu.Unlock()
			p.stored[j.area] += p.w.Offset() - off // the frame as written (sealed or not)
		}
		if nz := p.nonzero[j.area]; nz != nil {
			nz[j.chunk] = !j.zero
		}
		if ps.all {
			if err := p.w.AddEntry(e); err != nil {
				return err
			}
			if j.zero && p.areas[j.area].used == nil {
				// A raw area's zero chunk is not in use: the
				// total counted it.
				p.progress.Less(j.used)
			} else {
				p.progress.Add(j.used)
			}
		} else {
			p.w.Replace(e)
		}
		p.release(j.buf)
		p.release(j.cbuf)
		j.buf, j.cbuf = nil, nil
		p.written++
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
	}
	return nil
}

// sameLayout refuses an incremental of a source whose layout is not its
// parent's: the chunk grid would not line up.
func sameLayout(parent *image.Reader, l *layout, src block.Source, all bool) error {
	m := &image.Metadata{SourceSize: src.Size(), SectorSize: l.table.SectorSize, Table: l.table.Kind, DiskID: l.table.DiskID, ChunkSize: parent.Metadata().ChunkSize, SectorBySector: all}
	for _, a := range l.areas {
		am := a.meta
		if a.used != nil {
			am.BlockSize = a.used.BlockSize()
		}
		m.Areas = append(m.Areas, am)
	}
	if err := image.SameLayout(parent.Metadata(), m); err != nil {
		return &LayoutError{Parent: parent.Name(), Msg: err.Error()}
	}
	return nil
}

// LayoutError refuses an incremental of a source laid out differently
// from its parent.
type LayoutError struct{ Parent, Msg string }

func (e *LayoutError) Error() string {
	return fmt.Sprintf("the source is not laid out as it was for %s: %s; make a new full image", e.Parent, e.Msg)
}

// resolveDuplicate points a duplicate chunk's entry at the frame of the
// first chunk with its content, written by now.
func (p *pipeline) resolveDuplicate(e *image.Entry) error {
	f, ok := p.frames[e.Hash]
	if !ok || f.off < 0 {
		return fmt.Errorf("backup: internal error: duplicate chunk %d of area %d has no frame", e.Chunk, e.Area)
	}
	e.FrameOff, e.Stored = f.off, f.stored
	if f.delta {
		// The delta names its base: any chunk of the same content
		// can share it.
		e.Flags = image.FlagDelta
	}
	return nil
}
