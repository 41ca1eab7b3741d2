package view

import (
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"

	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Device is a disk that can be read at random.
type Device interface {
	io.ReaderAt
	Size() int64
}

const overlayBlock = 4096

// Overlay is a disk whose writes go to a separate, sparse file: a block
// (4 KiB) once written is read from it, every other from the base, which
// is never written. The file holds data exactly in the blocks written, so
// an overlay reopened later knows them again (SEEK_DATA).
type Overlay struct {
	base    Device
	f       *os.File
	mu      sync.RWMutex
	written bitset // block numbers: one bit per block of the disk, bounded by its size whatever is written
}

// bitset is a set of block numbers.
type bitset []uint64

func newBitset(n int64) bitset       { return make(bitset, (n+63)/64) }
func (b bitset) has(i int64) bool    { return i >= 0 && i/64 < int64(len(b)) && b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) add(i int64)         { b[i/64] |= 1 << (i % 64) }
func (b bitset) word(i int64) uint64 { return b[i/64] }

// OpenOverlay opens (or creates) the overlay file at path over base.
func OpenOverlay(path string, base Device) (*Overlay, error) {
	f, _, err := outfile.OpenOrCreate(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case st.Size() == 0:
		if err := f.Truncate(base.Size()); err != nil {
			f.Close()
			return nil, fmt.Errorf("overlay %s: %w", path, err)
		}
	case st.Size() != base.Size():
		f.Close()
		return nil, fmt.Errorf("overlay %s is %d bytes, the image's disk %d: it belongs to another image", path, st.Size(), base.Size())
	}
	o := &Overlay{base: base, f: f, written: newBitset((base.Size() + overlayBlock - 1) / overlayBlock)}
	// The blocks written before: the file's data.
	for off := int64(0); off < base.Size(); {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data past off
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = base.Size()
		}
		for b := data / overlayBlock; b*overlayBlock < hole && b*overlayBlock < base.Size(); b++ {
			o.written.add(b)
		}
		off = hole
	}
	return o, nil
}

// Size is the disk's length.
func (o *Overlay) Size() int64 { return o.base.Size() }

// ReadAt reads written blocks from the overlay, the rest from the base.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.readAt(p, off)
}

func (o *Overlay) readAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		b := pos / overlayBlock
		n := min(len(p)-done, int((b+1)*overlayBlock-pos))
		var src io.ReaderAt = o.base
		if o.written.has(b) {
			src = o.f
		}
		k, err := src.ReadAt(p[done:done+n], pos)
		done += k
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// WriteAt writes to the overlay file, whole blocks: a block written in
// part is completed from what the disk held.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.Size() {
		return 0, errors.New("overlay: write past the end of the disk")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	first, last := off/overlayBlock, (off+int64(len(p))-1)/overlayBlock
	lo := first * overlayBlock
	buf := make([]byte, min((last+1)*overlayBlock, o.Size())-lo)
	if _, err := o.readAt(buf, lo); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	copy(buf[off-lo:], p)
	if _, err := o.f.WriteAt(buf, lo); err != nil {
		return 0, err
	}
	for b := first; b <= last; b++ {
		o.written.add(b)
	}
	return len(p), nil
}

// Written returns the runs of [off, off+n) that were written, in order,
// whole blocks clipped to the range: what a tool changed on the overlay.
func (o *Overlay) Written(off, n int64) []block.Extent {
	var runs []block.Extent
	if n <= 0 || off >= o.Size() {
		return nil
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	first, last := max(off, 0)/overlayBlock, (min(off+n, o.Size())-1)/overlayBlock
	for b := first; b <= last; b++ {
		if b%64 == 0 && o.written.word(b) == 0 && b+63 <= last {
			b += 63 // a word of blocks none written
			continue
		}
		if !o.written.has(b) {
			continue
		}
		lo, hi := max(b*overlayBlock, off), min((b+1)*overlayBlock, off+n)
		if k := len(runs) - 1; k >= 0 && runs[k].End() == lo {
			runs[k].Len += hi - lo
			continue
		}
		runs = append(runs, block.Extent{Off: lo, Len: hi - lo})
	}
	return runs
}

// Sync makes the overlay's writes durable.
func (o *Overlay) Sync() error { return o.f.Sync() }

// Close closes the overlay file.
func (o *Overlay) Close() error { return o.f.Close() }

// Section is bytes [off, off+size) of a disk: a partition.
type Section struct {
	Dev      Device
	Off, Len int64
}

// Partition is one partition of an image's disk.
type Partition struct {
	Index      int
	Filesystem string // as the image's metadata names it
	Section
}

// Partitions lists the partitions of r's disk, in the image's order, as
// sections of dev (the disk, or an overlay on it).
func Partitions(r *image.Reader, dev Device) []Partition {
	var out []Partition
	for _, a := range r.Metadata().Areas {
		if a.Kind == image.KindPartition {
			out = append(out, Partition{Index: a.Index, Filesystem: a.Filesystem, Section: Section{Dev: dev, Off: a.Start, Len: a.Size}})
		}
	}
	return out
}

func (s *Section) Size() int64 { return s.Len }

func (s *Section) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.Len {
		return 0, io.EOF
	}
	want := len(p)
	p = p[:min(int64(len(p)), s.Len-off)]
	n, err := s.Dev.ReadAt(p, s.Off+off)
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// OverlaySection is a Section of an overlay: writes go to the overlay.
type OverlaySection struct {
	Section
	O *Overlay
}

func (s *OverlaySection) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.Len {
		return 0, errors.New("overlay: write past the end of the partition")
	}
	return s.O.WriteAt(p, s.Off+off)
}

func (s *OverlaySection) Sync() error { return s.O.Sync() }
