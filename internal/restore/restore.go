// Package restore writes an image back: the whole disk, or one
// partition's contents, onto a file or block device, in parallel, with
// positioned writes and only the bytes the image says are used.
package restore

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

// Target is where a restore writes.
type Target interface {
	io.WriterAt
	// Zero makes [off, off+n) read as zero; a fresh sparse file does
	// nothing, a device zeroes the range.
	Zero(off, n int64) error
}

// Progress receives the restore's progress; calls come from several
// goroutines.
type Progress interface {
	Start(total int64)
	Add(n int64)
}

type noProgress struct{}

func (noProgress) Start(int64) {}
func (noProgress) Add(int64)   {}

// Options select what to restore.
type Options struct {
	// Partition restores only that partition's contents, at offset 0 of
	// the target; 0 restores the whole disk.
	Partition int
	// Place, if set, decides for each area of the image whether it is
	// restored and at which target offset (a new layout moves
	// partitions); it overrides Partition.
	Place func(a *image.Area) (base int64, ok bool)
	// Fresh says every byte of the target reads as zero already, so zero
	// bytes need not be written (the target stays sparse).
	Fresh    bool
	Workers  int
	Progress Progress
	// Fill, if set, is written over the bytes a rescue of a failing
	// disk could not read (Metadata.Rescue), repeated from the start
	// of each sector, so they are told from real data; without it they
	// are zeros, as the image holds them.
	Fill []byte
}

// PartitionError reports a --partition the image does not hold.
type PartitionError struct {
	Want int
	Have []int
}

func (e *PartitionError) Error() string {
	var s []string
	for _, n := range e.Have {
		s = append(s, strconv.Itoa(n))
	}
	return fmt.Sprintf("the image holds no partition %d (it has: %s)", e.Want, strings.Join(s, ", "))
}

// Size is how many bytes the target must hold for opts.Partition.
func Size(img *image.Reader, partition int) (int64, error) {
	m := img.Metadata()
	if partition == 0 {
		return m.SourceSize, nil
	}
	var have []int
	for _, a := range m.Areas {
		if a.Kind == image.KindPartition {
			if a.Index == partition {
				return a.Size, nil
			}
			have = append(have, a.Index)
		}
	}
	slices.Sort(have)
	return 0, &PartitionError{Want: partition, Have: have}
}

// task is one chunk to put back.
type task struct {
	e    image.Entry
	base int64 // target offset of the chunk's area
	used *image.AreaMap
	rel  int64 // chunk offset inside its area
	// fill: write fresh random bytes over the chunk's free bytes
	// (Area.FreeFill "random"), len bytes from rel; empty: the chunk has
	// no entry, so all of it is free.
	fill  bool
	empty bool
	len   int64
}

// Run restores img onto t. It stops at the first chunk that fails its
// checks and returns that *image.ChunkError: damaged data is never written.
func Run(ctx context.Context, img *image.Reader, t Target, opts Options) error {
	if _, err := Size(img, opts.Partition); err != nil {
		return err
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers()
	}
	if opts.Progress == nil {
		opts.Progress = noProgress{}
	}
	m := img.Metadata()
	place := opts.Place
	if place == nil {
		place = partitionPlace(opts.Partition)
	}
	tasks, err := plan(img, place)
	if err != nil {
		return err
	}
	var total int64
	for _, tk := range tasks {
		total += tk.bytes()
	}
	opts.Progress.Start(total)

	// The image's frames are asked for ahead of the workers, so the disk
	// keeps reading while they decode and write.
	pf := newPrefetcher(img, tasks)
	pctx, stop := context.WithCancel(ctx)
	prefetched := make(chan struct{})
	go func() { pf.run(pctx); close(prefetched) }()
	defer func() { stop(); <-prefetched }() // done with the image before Run returns
	err = each(ctx, opts.Workers, tasks, func() func(task) error {
		// Aligned, so the target can take its writes directly.
		buf := block.AlignedBuffer(int(m.ChunkSize))[:0]
		var fill *filler
		return func(tk task) error {
			pf.start()
			err := restoreChunk(img, t, tk, buf, opts.Fresh)
			if err == nil && tk.fill {
				if fill == nil {
					fill = newFiller()
				}
				err = fill.free(t, tk)
			}
			if err == nil {
				opts.Progress.Add(tk.bytes())
			}
			return err
		}
	})
	if err != nil || len(opts.Fill) == 0 || m.Rescue == nil {
		return err
	}
	return fillUnreadable(t, m, place, opts.Fill)
}

// fillUnreadable writes pattern over the bytes a rescue could not read,
// where place puts them.
func fillUnreadable(t Target, m *image.Metadata, place func(a *image.Area) (int64, bool), pattern []byte) error {
	sector := max(m.Rescue.SectorSize, 1)
	for _, u := range m.Rescue.Unreadable {
		if u.Area < 0 || u.Area >= len(m.Areas) {
			return fmt.Errorf("restore: unreadable range at byte %d names area %d of %d", u.Offset, u.Area, len(m.Areas))
		}
		a := &m.Areas[u.Area]
		base, ok := place(a)
		if !ok {
			continue
		}
		if u.Offset < a.Start || u.Length < 0 || u.Offset+u.Length > a.Start+a.Size {
			return fmt.Errorf("restore: unreadable range at byte %d (%d bytes) is not inside %s", u.Offset, u.Length, a.Label())
		}
		buf := make([]byte, min(u.Length, 1<<20))
		for pos := u.Offset; pos < u.Offset+u.Length; {
			b := buf[:min(int64(len(buf)), u.Offset+u.Length-pos)]
			for i := range b {
				b[i] = pattern[int((pos+int64(i))%sector)%len(pattern)]
			}
			if err := writeAt(t, b, base+pos-a.Start); err != nil {
				return err
			}
			pos += int64(len(b))
		}
	}
	return nil
}

// plan lists the chunks to put back, in the index's order: one task per
// entry, and in areas whose free bytes are filled, one for each chunk
// without an entry too.
func plan(img *image.Reader, place func(a *image.Area) (int64, bool)) ([]task, error) {
	m := img.Metadata()
	// selected says whether area i is restored, and base where it goes.
	selected := func(a *image.Area) bool {
		_, ok := place(a)
		return ok
	}
	base := func(a *image.Area) int64 {
		b, _ := place(a)
		return b
	}
	filled := func(i int) bool { return m.Areas[i].FreeFill == image.FreeFillRandom && img.Map(i) != nil }
	for i := range m.Areas {
		if a := &m.Areas[i]; selected(a) && a.FreeFill != "" && a.FreeFill != image.FreeFillRandom {
			return nil, fmt.Errorf("%s: free_fill %q is not known to this platter (a newer one made the image)", a.Label(), a.FreeFill)
		}
	}
	var tasks []task
	// next is, per filled area, the first chunk not yet listed; fillTo
	// lists the chunks without an entry before upTo, all of them free.
	next := map[uint32]uint64{}
	fillTo := func(area uint32, upTo uint64) {
		a := &m.Areas[area]
		for k := next[area]; k < upTo; k++ {
			rel := int64(k) * m.ChunkSize
			tasks = append(tasks, task{e: image.Entry{Area: area, Chunk: k}, base: base(a), rel: rel, fill: true, empty: true, len: min(m.ChunkSize, a.Size-rel)})
		}
		next[area] = max(next[area], upTo)
	}
	for _, e := range img.Entries() {
		a := &m.Areas[e.Area]
		if !selected(a) {
			continue
		}
		tk := task{e: e, base: base(a), used: img.Map(int(e.Area)), rel: int64(e.Chunk) * m.ChunkSize, len: int64(e.RawLen)}
		if filled(int(e.Area)) {
			fillTo(e.Area, e.Chunk)
			tk.fill = true
			next[e.Area] = e.Chunk + 1
		}
		tasks = append(tasks, tk)
	}
	// The chunks of filled areas after their last entry (all of an area
	// without one) are free from there to the end.
	for i := range m.Areas {
		if a := &m.Areas[i]; selected(a) && filled(i) {
			fillTo(uint32(i), uint64((a.Size+m.ChunkSize-1)/m.ChunkSize))
		}
	}
	return tasks, nil
}

// partitionPlace restores the whole disk in place (partition 0), or one
// partition's contents at offset 0.
func partitionPlace(partition int) func(a *image.Area) (int64, bool) {
	return func(a *image.Area) (int64, bool) {
		switch {
		case partition == 0:
			return a.Start, true
		case a.Kind == image.KindPartition && a.Index == partition:
			return 0, true
		}
		return 0, false
	}
}

// bytes is what the task writes, for progress: its used bytes, and its
// free ones when they are filled.
func (tk task) bytes() int64 {
	if tk.fill {
		return tk.len
	}
	return tk.usedBytes()
}

func (tk task) usedBytes() int64 {
	if tk.empty {
		return 0
	}
	if tk.used == nil {
		return int64(tk.e.RawLen)
	}
	var n int64
	tk.used.Runs(tk.rel, int64(tk.e.RawLen), func(e block.Extent) { n += e.Len })
	return n
}

// runs calls fn with each used range of the chunk, relative to the chunk.
func (tk task) runs(fn func(off, n int64) error) error {
	if tk.used == nil {
		return fn(0, int64(tk.e.RawLen))
	}
	var err error
	tk.used.Runs(tk.rel, int64(tk.e.RawLen), func(e block.Extent) {
		if err == nil {
			err = fn(e.Off-tk.rel, e.Len)
		}
	})
	return err
}

func restoreChunk(img *image.Reader, t Target, tk task, buf []byte, fresh bool) error {
	if tk.empty {
		return nil
	}
	at := tk.base + tk.rel
	if tk.e.Zero() {
		return tk.runs(func(off, n int64) error { return t.Zero(at+off, n) })
	}
	data, err := img.ReadChunk(tk.e, buf)
	if err != nil {
		return err
	}
	err = tk.runs(func(off, n int64) error {
		return write(t, data[off:off+n], at+off, fresh)
	})
	if wb, ok := t.(writebacker); ok && err == nil {
		wb.StartWriteback(at, int64(tk.e.RawLen))
	}
	return err
}

// writebacker is a target that can start writing data out early.
type writebacker interface {
	StartWriteback(off, n int64)
}

// write writes b at off; on a fresh target it skips 4 KiB blocks that
// are all zero so the target stays sparse.
func write(t Target, b []byte, off int64, fresh bool) error {
	if !fresh {
		return writeAt(t, b, off)
	}
	const step = 4096
	start := -1
	for i := 0; i < len(b); i += step {
		end := min(i+step, len(b))
		if isZero(b[i:end]) {
			if start >= 0 {
				if err := writeAt(t, b[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		return writeAt(t, b[start:], off+int64(start))
	}
	return nil
}

func writeAt(t Target, b []byte, off int64) error {
	if _, err := t.WriteAt(b, off); err != nil {
		return fmt.Errorf("write target at byte %d: %w", off, err)
	}
	return nil
}

var zeros = make([]byte, 4096)

func isZero(b []byte) bool { return string(b) == string(zeros[:len(b)]) }

// filler writes fresh random bytes: ChaCha8 seeded from the system's
// random source, one per worker (about 1 GB/s a core; crypto/rand
// itself is several times slower and these bytes need not be a key,
// only unpredictable to whoever reads the restored disk).
type filler struct {
	rng *rand.ChaCha8
	buf []byte
}

// fillBuf is how much random data a filler makes at a time.
const fillBuf = 1 << 20

func newFiller() *filler {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24+: it crashes the program rather than return weak bytes)
	f := &filler{rng: rand.NewChaCha8(seed), buf: block.AlignedBuffer(fillBuf)}
	clear(seed[:])
	return f
}

// free writes random bytes over every byte of the task's chunk that its
// map leaves free.
func (f *filler) free(t Target, tk task) error {
	at := tk.base + tk.rel
	pos := int64(0)
	write := func(off, n int64) error { // chunk-relative
		for n > 0 {
			k := min(n, int64(len(f.buf)))
			b := f.buf[:k]
			f.rng.Read(b)
			if err := writeAt(t, b, at+off); err != nil {
				return err
			}
			off += k
			n -= k
		}
		return nil
	}
	var err error
	if !tk.empty {
		tk.used.Runs(tk.rel, tk.len, func(e block.Extent) {
			if err == nil && e.Off-tk.rel > pos {
				err = write(pos, e.Off-tk.rel-pos)
			}
			pos = e.End() - tk.rel
		})
	}
	if err == nil && pos < tk.len {
		err = write(pos, tk.len-pos)
	}
	return err
}
