package blockdev

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/platter-dev/platter/internal/block"
)

// SeqWriter writes a new file front to back, bypassing the page cache
// where the filesystem allows (O_DIRECT): the kernel then neither copies
// the data nor keeps it as dirty pages to write back later, which on
// `platter create` was a fifth of the CPU. Data is gathered into aligned
// buffers of size bytes and written by a background goroutine while the
// next buffer fills. The unaligned tail goes through the page cache at
// Close. Where O_DIRECT is refused, it writes through the page cache and
// starts writeback buffer by buffer, as Writeback does.
type SeqWriter struct {
	f      *os.File // the file, opened normally
	direct *os.File // the same file with O_DIRECT, nil if refused

	bufs [2][]byte
	cur  int   // index of the buffer being filled
	n    int   // bytes in it
	off  int64 // file offset of its first byte

	inflight chan error // result of the background write, if any
	busy     bool
	err      error
}

// NewSeqWriter writes to f (opened for writing, empty) through buffers of
// size bytes (a multiple of 4 KiB). Write only through the result, then
// call Close; f stays open for the caller to sync and close.
func NewSeqWriter(f *os.File, size int) *SeqWriter {
	w := &SeqWriter{f: f, inflight: make(chan error, 1)}
	w.direct = openDirect(f)
	for i := range w.bufs {
		w.bufs[i] = block.AlignedBuffer(size)
	}
	return w
}

func (w *SeqWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if w.err != nil {
			return total - len(p), w.err
		}
		k := copy(w.bufs[w.cur][w.n:], p)
		w.n += k
		p = p[k:]
		if w.n == len(w.bufs[w.cur]) {
			w.flush()
		}
	}
	return total, w.err
}

// flush hands the full current buffer to the background writer and
// switches to the other one, waiting for that one's write first.
func (w *SeqWriter) flush() {
	if w.wait(); w.err != nil {
		return
	}
	b, off := w.bufs[w.cur], w.off
	w.busy = true
	go func() { w.inflight <- w.writeAt(b, off) }()
	w.cur ^= 1
	w.off += int64(len(b))
	w.n = 0
}

func (w *SeqWriter) wait() {
	if w.busy {
		if err := <-w.inflight; err != nil && w.err == nil {
			w.err = err
		}
		w.busy = false
	}
}

// writeAt writes an aligned buffer directly, or through the page cache if
// the file cannot take direct writes.
func (w *SeqWriter) writeAt(b []byte, off int64) error {
	if w.direct != nil {
		_, err := w.direct.WriteAt(b, off)
		if !errors.Is(err, errInvalid) {
			return wrapWrite(err, off)
		}
		// Opened, but direct writes are refused (some filesystems only
		// say so here): fall back for good. Only this goroutine writes.
		w.direct.Close()
		w.direct = nil
	}
	_, err := w.f.WriteAt(b, off)
	startWriteback(w.f, off, int64(len(b)))
	return wrapWrite(err, off)
}

func wrapWrite(err error, off int64) error {
	if err != nil {
		return fmt.Errorf("write at byte %d: %w", off, err)
	}
	return nil
}

// Close writes what is buffered: its aligned part directly, the rest
// through the page cache. The caller syncs the file.
func (w *SeqWriter) Close() error {
	w.wait()
	defer func() {
		if w.direct != nil {
			w.direct.Close()
			w.direct = nil
		}
	}()
	if w.err != nil {
		return w.err
	}
	b := w.bufs[w.cur][:w.n]
	aligned := len(b) &^ (block.DirectAlign - 1)
	if aligned > 0 {
		if err := w.writeAt(b[:aligned], w.off); err != nil {
			return err
		}
	}
	if tail := b[aligned:]; len(tail) > 0 {
		if _, err := w.f.WriteAt(tail, w.off+int64(aligned)); err != nil {
			return wrapWrite(err, w.off+int64(aligned))
		}
	}
	w.off += int64(len(b))
	w.n = 0
	return nil
}

// FileWriter writes a regular file at random offsets, as the formats
// whose tables and data land in different places do (platter convert's
// qcow2, VMDK, VHDX). Writes of whole 4 KiB blocks from an aligned
// buffer at an aligned offset bypass the page cache where the filesystem
// allows it, as Device.WriteAt does for a restore's target: the kernel
// neither copies the data nor holds it dirty for the final sync. Other
// writes (tables, headers, a short tail) go through the page cache.
// WriteAt is safe for parallel calls on ranges that do not overlap.
type FileWriter struct {
	f        *os.File
	direct   *os.File // the same file with O_DIRECT, nil if refused
	noDirect atomic.Bool
}

// NewFileWriter writes to f, opened for writing; f stays the caller's to
// sync and close. Close the FileWriter first.
func NewFileWriter(f *os.File) *FileWriter {
	return &FileWriter{f: f, direct: openDirect(f)}
}

// WriteAt writes p at off.
func (w *FileWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.direct != nil && !w.noDirect.Load() && aligned(p, off, block.DirectAlign) {
		n, err := w.direct.WriteAt(p, off)
		if !errors.Is(err, errInvalid) {
			return n, err
		}
		w.noDirect.Store(true) // refused: through the page cache from now on
	}
	return w.f.WriteAt(p, off)
}

// Close closes the second, direct descriptor; the file stays open.
func (w *FileWriter) Close() error {
	if w.direct == nil {
		return nil
	}
	err := w.direct.Close()
	w.direct = nil
	return err
}
