package restore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/view"
	"github.com/zeebo/blake3"
)

// A delta restore puts an image back onto a target that holds an older
// state of the same disk (rolling a machine back). Each chunk with an
// index entry is compared, not written: the target's bytes of the
// chunk's used runs are read, the free bytes between them taken as zero
// as create took them, and the result hashed with BLAKE3, the hash the
// index holds for the decoded chunk. Equal hashes mean the target already
// holds, over the used runs, exactly what a restore would write there; only
// for a chunk that differs is the image's chunk read and decoded, and of
// it only the 4 KiB blocks (within used runs) whose bytes differ are
// written. Bytes no chunk uses are left as they are, or discarded with
// Trim. The result over every byte a restore writes is a restore's.

// DeltaTarget is a target that reads back what it holds, and can let go
// of ranges it no longer needs.
type DeltaTarget interface {
	Target
	io.ReaderAt
	// Discard says [off, off+n) holds nothing of use (a device's
	// discard, a hole in a file): it may read as zeros afterwards, or
	// as before. A target that cannot discard gives an error wrapping
	// errors.ErrUnsupported.
	Discard(off, n int64) error
}

// DeltaOptions select what Delta restores.
type DeltaOptions struct {
	// Partition, as Options.Partition: 0 the whole disk.
	Partition int
	// Trim discards the bytes the image's allocation maps leave free
	// (after the chunks are put right), so that they read as zeros on a
	// file and give a device's flash back; without it they keep what
	// they hold.
	Trim     bool
	Workers  int
	Progress Progress
}

// DeltaStats says what a delta restore compared and wrote.
type DeltaStats struct {
	Chunks        int64 // chunks compared (every chunk with an index entry)
	Bytes         int64 // bytes compared: the used bytes of those chunks
	Differed      int64 // chunks whose bytes on the target differed from the image's
	DifferedBytes int64 // the used bytes of those chunks
	Written       int64 // bytes written (or zeroed): the blocks that differed
	Trimmed       int64 // bytes discarded (Trim)
	// NoDiscard says the target cannot discard: Trim left the free
	// bytes as they were.
	NoDiscard bool
}

// CheckTrim refuses Trim for a restore of partition (0: every area) when
// an area's free bytes must not read as zeros: an area whose free_fill is
// random (an opened LUKS volume's inside, imaged as ciphertext of its
// used blocks) would show, sector by sector, which of its blocks are in
// use, the very thing the random fill hides.
func CheckTrim(img *image.Reader, partition int) error {
	for _, a := range img.Metadata().Areas {
		if (partition == 0 || a.Kind == image.KindPartition && a.Index == partition) && a.FreeFill == image.FreeFillRandom {
			return fmt.Errorf("%s is an encrypted volume whose free sectors a restore fills with random bytes (free_fill random): discarding them would make them read as zeros and show which sectors of the volume are in use; delta-restore without --trim (its free sectors keep the ciphertext they hold)", a.Label())
		}
	}
	return nil
}

// Delta restores img onto t, which holds an older state of the disk (or
// of the partition, with opts.Partition), writing only what differs. It
// stops at the first error; a chunk that fails its checks is never
// written. On an error the target holds some chunks of the image and
// the rest as they were: running Delta again finishes the restore.
func Delta(ctx context.Context, img *image.Reader, t DeltaTarget, opts DeltaOptions) (DeltaStats, error) {
	var st DeltaStats
	if _, err := Size(img, opts.Partition); err != nil {
		return st, err
	}
	if opts.Trim {
		if err := CheckTrim(img, opts.Partition); err != nil {
			return st, err
		}
	}
	if opts.Workers <= 0 {
		// As Run: reads of the target wait for the disk while other
		// workers hash.
		opts.Workers = defaultWorkers()
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	all, err := plan(img, partitionPlace(opts.Partition))
	if err != nil {
		return st, err
	}
	// Only chunks with an entry: the others hold no used byte, and free
	// bytes are left alone (no random fill: the target's free sectors
	// are old ciphertext already).
	tasks := all[:0]
	var total int64
	for _, tk := range all {
		if !tk.empty {
			tk.fill = false
			tasks = append(tasks, tk)
			total += tk.usedBytes()
		}
	}
	opts.Progress.Start(total)

	d := &delta{img: img, t: t, cs: img.Metadata().ChunkSize}
	err = each(ctx, opts.Workers, tasks, func() func(task) error {
		// Aligned, so that the target can be read directly.
		buf := block.AlignedBuffer(int(d.cs))
		return func(tk task) error {
			if err := d.chunk(tk, buf); err != nil {
				return err
			}
			opts.Progress.Add(tk.usedBytes())
			return nil
		}
	})
	st = d.stats()
	if err != nil {
		return st, err
	}
	if opts.Trim {
		err = d.trim(ctx, opts.Partition, &st)
	}
	return st, err
}

type delta struct {
	img *image.Reader
	t   DeltaTarget
	cs  int64

	chunks, bytes, differed, differedBytes, written atomic.Int64
	// decoded holds buffers for the image's chunks, needed only for the
	// chunks that differ.
	decoded sync.Pool
}

func (d *delta) stats() DeltaStats {
	return DeltaStats{Chunks: d.chunks.Load(), Bytes: d.bytes.Load(), Differed: d.differed.Load(),
		DifferedBytes: d.differedBytes.Load(), Written: d.written.Load()}
}

// chunk compares one chunk of the target with the image's and writes the
// blocks that differ. buf is a chunk-sized aligned buffer.
func (d *delta) chunk(tk task, buf []byte) error {
	at := tk.base + tk.rel
	var runs []block.Extent // chunk-relative
	tk.runs(func(off, n int64) error {
		runs = append(runs, block.Extent{Off: off, Len: n})
		return nil
	})
	if len(runs) == 0 {
		return nil
	}
	cur := buf[:tk.e.RawLen]
	if err := readUsed(d.t, cur, at, runs); err != nil {
		return err
	}
	used := tk.usedBytes()
	d.chunks.Add(1)
	d.bytes.Add(used)
	if tk.e.Zero() {
		if allZero(cur) {
			return nil
		}
	} else if blake3.Sum256(cur) == tk.e.Hash {
		return nil
	}
	d.differed.Add(1)
	d.differedBytes.Add(used)

	var want []byte // nil: the chunk is all zeros
	if !tk.e.Zero() {
		bp, _ := d.decoded.Get().(*[]byte)
		if bp == nil {
			b := block.AlignedBuffer(int(d.cs))
			bp = &b
		}
		defer d.decoded.Put(bp)
		var err error
		if want, err = d.img.ReadChunk(tk.e, *bp); err != nil {
			return err
		}
	}
	for _, r := range runs {
		if err := d.put(cur, want, at, r); err != nil {
			return err
		}
	}
	if wb, ok := d.t.(writebacker); ok {
		wb.StartWriteback(at, int64(tk.e.RawLen))
	}
	return nil
}

// put writes, of the used run r of the chunk at target byte at, the 4 KiB
// blocks of the disk (clipped to r) where cur, the target's bytes, differs
// from want, the image's (nil: zeros). Neighbouring blocks that differ are
// written at once.
func (d *delta) put(cur, want []byte, at int64, r block.Extent) error {
	const step = block.DirectAlign
	start := int64(-1) // chunk-relative start of the blocks that differ so far
	flush := func(end int64) error {
		if start < 0 {
			return nil
		}
		n := end - start
		var err error
		if want == nil {
			err = d.t.Zero(at+start, n)
		} else {
			err = writeAt(d.t, want[start:end], at+start)
		}
		d.written.Add(n)
		start = -1
		return err
	}
	for lo := r.Off; lo < r.End(); {
		// The end of the disk's 4 KiB block that lo lies in.
		hi := min(r.End(), ((at+lo)/step+1)*step-at)
		var same bool
		if want == nil {
			same = allZero(cur[lo:hi])
		} else {
			same = string(cur[lo:hi]) == string(want[lo:hi])
		}
		if same {
			if err := flush(lo); err != nil {
				return err
			}
		} else if start < 0 {
			start = lo
		}
		lo = hi
	}
	return flush(r.End())
}

// readUsed fills b, the chunk at target byte at, with the target's bytes
// of the used runs and zeros elsewhere: the chunk as create hashed it.
// As backup's read does, it reads one span when most of it is used, or
// the runs apart, each widened to whole 4 KiB blocks of the disk (within
// the chunk) so that the target can be read around its page cache.
func readUsed(r io.ReaderAt, b []byte, at int64, runs []block.Extent) error {
	first, last := runs[0].Off, runs[len(runs)-1].End()
	var used int64
	for _, x := range runs {
		used += x.Len
	}
	spans := runs
	if used*4 >= last-first {
		spans = []block.Extent{{Off: first, Len: last - first}}
	}
	const align = block.DirectAlign
	n := int64(len(b))
	for _, sp := range spans {
		lo := max(0, (at+sp.Off)/align*align-at)
		hi := min(n, (at+sp.End()+align-1)/align*align-at)
		if err := readFull(r, b[lo:hi], at+lo); err != nil {
			return err
		}
	}
	pos := int64(0)
	for _, x := range runs {
		clear(b[pos:x.Off])
		pos = x.End()
	}
	clear(b[pos:])
	return nil
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read target at byte %d: %w", off+int64(n), err)
}

// trim discards, of what is restored, every byte no filesystem uses: the
// ranges each area's map leaves free, and on a whole disk the space
// outside every partition of the image's table and every area kept
// (what a restore onto a new file leaves as zeros). Areas without a map
// (raw partitions, the tables and boot area) are kept whole, and so is a
// partition of the table that was not imaged.
func (d *delta) trim(ctx context.Context, partition int, st *DeltaStats) error {
	m := d.img.Metadata()
	var err error
	discard := func(off, end int64) {
		if err == nil && end > off {
			if err = ctx.Err(); err == nil {
				err = d.t.Discard(off, end-off)
			}
			if err == nil {
				st.Trimmed += end - off
			}
		}
	}
	// inside discards area a's free ranges, a placed at base.
	inside := func(i int, base int64) {
		am := d.img.Map(i)
		if am == nil {
			return
		}
		pos := int64(0)
		am.Runs(0, m.Areas[i].Size, func(e block.Extent) {
			discard(base+pos, base+e.Off)
			pos = max(pos, e.End())
		})
		discard(base+pos, base+m.Areas[i].Size)
	}
	if partition != 0 {
		for i, a := range m.Areas {
			if a.Kind == image.KindPartition && a.Index == partition {
				inside(i, 0)
			}
		}
	} else {
		keep := d.outsideKept()
		// outside discards [lo, hi), which no area covers, but for
		// what keep holds.
		outside := func(lo, hi int64) {
			for _, k := range keep {
				if k.End() <= lo || k.Off >= hi {
					continue
				}
				discard(lo, k.Off)
				lo = max(lo, k.End())
			}
			discard(lo, hi)
		}
		order := make([]int, len(m.Areas))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(m.Areas[a].Start, m.Areas[b].Start) })
		pos := int64(0)
		for _, i := range order {
			a := &m.Areas[i]
			outside(pos, a.Start)
			inside(i, a.Start)
			pos = max(pos, a.Start+a.Size)
		}
		outside(pos, m.SourceSize)
	}
	if errors.Is(err, errors.ErrUnsupported) {
		st.NoDiscard = true
		return nil
	}
	return err
}

// outsideKept is what must be kept of the disk outside the image's
// areas: the partitions of the image's own table (read from the image),
// one not imaged among them. An image whose table cannot be read keeps
// everything outside its areas.
func (d *delta) outsideKept() []block.Extent {
	m := d.img.Metadata()
	all := []block.Extent{{Off: 0, Len: m.SourceSize}}
	if m.Table == "none" {
		return nil
	}
	disk := view.New(d.img, 2)
	defer disk.Close()
	t, err := ptable.Read(disk, m.SourceSize, m.SectorSize)
	if err != nil || t.Kind != m.Table {
		return all
	}
	var keep []block.Extent
	for _, p := range t.Partitions {
		keep = append(keep, block.Extent{Off: p.Start, Len: p.Size})
	}
	slices.SortFunc(keep, func(a, b block.Extent) int { return cmp.Compare(a.Off, b.Off) })
	return keep
}
