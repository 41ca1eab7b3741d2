package vdisk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
)

// raw: the disk byte for byte. To a regular file only the non-zero 4 KiB
// blocks of Data are written, at their offsets, and the size is set: the
// file is sparse. To anything else (a pipe, a device) every byte goes,
// zeros included, front to back.

func init() { register(Raw, writeRaw, true) }

// rawBlock is the unit raw leaves a hole for: a filesystem block.
const rawBlock = 4 << 10

func writeRaw(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f != nil {
		err = writeRawFile(ctx, f, src, data, progress)
	} else {
		err = writeRawStream(ctx, out, src, data, progress)
	}
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	return nil
}

func writeRawFile(ctx context.Context, f *outFile, src Source, data []block.Extent, progress Progress) error {
	size := src.Size()
	err := readGrains(ctx, src, data, rawBlock, nil, func(p *piece) error {
		end := min(p.off+int64(len(p.buf)), size)
		err := p.nonZeroRuns(rawBlock, func(off, n int64) error {
			_, err := f.WriteAt(p.buf[off-p.off:min(off+n, end)-p.off], off)
			return err
		})
		if err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err != nil {
		return err
	}
	return f.Truncate(size)
}

func writeRawStream(ctx context.Context, out Output, src Source, data []block.Extent, progress Progress) error {
	size := src.Size()
	w := newStreamWriter(ctx, out)
	err := readGrains(ctx, src, data, rawBlock, nil, func(p *piece) error {
		if err := w.zeros(p.off - w.pos()); err != nil {
			return err
		}
		if _, err := w.Write(p.buf[:min(int64(len(p.buf)), size-p.off)]); err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err != nil {
		return err
	}
	if err := w.zeros(size - w.pos()); err != nil {
		return err
	}
	return w.Flush()
}

// What the writers of raw.go, qcow2.go and vmdk.go share: Data checked,
// walked on a grid of grains (a format's allocation unit), read ahead in
// parallel and handed back in order, and an output that is either a
// regular file written in place or a stream written front to back.

// ErrBadData is a Source whose Data breaks its contract: extents out of
// order, overlapping, or outside the disk.
var ErrBadData = errors.New("vdisk: bad data extents")

// checkData returns src.Data() without its empty extents, or an error
// naming the first extent that breaks the contract.
func checkData(src Source) ([]block.Extent, error) {
	data, size := src.Data(), src.Size()
	if size <= 0 {
		// No VM has one, and neither qcow2 nor VMDK describes one cleanly.
		return nil, fmt.Errorf("%w: a disk of %d bytes", ErrBadData, size)
	}
	empty := 0
	var prev int64
	for i, e := range data {
		if e.Off < 0 || e.Len < 0 || e.Off > size || e.Len > size-e.Off {
			return nil, fmt.Errorf("%w: extent %d (bytes %d+%d) is outside the disk's %d bytes", ErrBadData, i, e.Off, e.Len, size)
		}
		if e.Len == 0 {
			empty++
			continue
		}
		if e.Off < prev {
			return nil, fmt.Errorf("%w: extent %d (byte %d) starts before the end of the one before it (byte %d)", ErrBadData, i, e.Off, prev)
		}
		prev = e.End()
	}
	if empty == 0 {
		return data, nil
	}
	kept := make([]block.Extent, 0, len(data)-empty)
	for _, e := range data {
		if e.Len > 0 {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

// coverRuns calls fn with each run [start, end) of whole grains that
// data touches, in order, runs that touch merged: the grains a format
// with that allocation unit may allocate. end may pass the disk's end
// when its last grain is short.
func coverRuns(data []block.Extent, grain int64, fn func(start, end int64) error) error {
	for i := 0; i < len(data); {
		start := data[i].Off / grain * grain
		end := ceilTo(data[i].End(), grain)
		i++
		for i < len(data) && data[i].Off/grain*grain <= end {
			end = max(end, ceilTo(data[i].End(), grain))
			i++
		}
		if err := fn(start, end); err != nil {
			return err
		}
	}
	return nil
}

func ceilTo(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

func ceilDiv(n, d int64) int64 { return (n + d - 1) / d }

// pieceSize is how much of the disk one read covers: long reads and
// writes, and with the pieces in flight still tens of MiB. Pieces start
// and end on multiples of it, so one never straddles a VMDK grain table
// (32 MiB) or a qcow2 L2 table (512 MiB).
const pieceSize = 4 << 20

// A piece is whole grains of the disk as the output holds them: Data's
// bytes, zero everywhere else (past the disk's end too).
type piece struct {
	off  int64          // on the disk; a multiple of the grain
	buf  []byte         // whole grains
	ext  []block.Extent // Data's extents that touch it
	data int64          // bytes of Data in it, for progress
	zero []bool         // zero[i]: grain i is all zero

	// What a format's work made of it (vmdk-stream: its compressed
	// grains, and where each starts in out, -1 for a zero grain).
	out []byte
	at  []int

	err  error
	done chan struct{}
}

// nonZeroRuns calls fn with each run of the piece's non-zero grains as
// (disk offset, length).
func (p *piece) nonZeroRuns(grain int64, fn func(off, n int64) error) error {
	for i := 0; i < len(p.zero); {
		if p.zero[i] {
			i++
			continue
		}
		j := i + 1
		for j < len(p.zero) && !p.zero[j] {
			j++
		}
		if err := fn(p.off+int64(i)*grain, int64(j-i)*grain); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// readGrains reads the grains data touches (coverRuns) in pieces, on
// several goroutines, each piece's grains checked for zeros and then
// given to work (if not nil) there; deliver gets the pieces in disk
// order on the calling goroutine. The first error, or ctx's, stops it.
// Memory is a few pieces per worker, whatever the disk's size.
func readGrains(ctx context.Context, src Source, data []block.Extent, grain int64, work func(*piece) error, deliver func(*piece) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := min(runtime.GOMAXPROCS(0), 16)
	free := make(chan *piece, workers+2)
	for range cap(free) {
		free <- &piece{done: make(chan struct{}, 1)} // its buffer made when first used
	}
	jobs := make(chan *piece)
	order := make(chan *piece, cap(free))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				p.err = p.read(src, grain)
				if p.err == nil && work != nil {
					p.err = work(p)
				}
				p.done <- struct{}{}
			}
		}()
	}
	go func() {
		defer close(order)
		defer close(jobs)
		next := 0 // the first extent that may touch the next piece
		coverRuns(data, grain, func(start, end int64) error {
			for off := start; off < end; {
				n := min(end, (off/pieceSize+1)*pieceSize) - off
				var p *piece
				select {
				case p = <-free:
				case <-ctx.Done():
					return ctx.Err()
				}
				for next < len(data) && data[next].End() <= off {
					next++
				}
				last := next
				p.data = 0
				for last < len(data) && data[last].Off < off+n {
					p.data += min(data[last].End(), off+n) - max(data[last].Off, off)
					last++
				}
				if p.buf == nil {
					p.buf = block.AlignedBuffer(pieceSize) // for direct writes
				}
				p.off, p.buf, p.ext, p.err = off, p.buf[:n], data[next:last], nil
				select {
				case jobs <- p:
				case <-ctx.Done():
					return ctx.Err()
				}
				select {
				case order <- p:
				case <-ctx.Done():
					return ctx.Err()
				}
				off += n
			}
			return nil
		})
	}()
	var err error
	for p := range order {
		<-p.done
		if err == nil {
			err = p.err
		}
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = deliver(p)
		}
		if err != nil {
			cancel()
		}
		free <- p
	}
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// read fills the piece from src and marks its zero grains.
func (p *piece) read(src Source, grain int64) error {
	pos := p.off
	for _, e := range p.ext {
		lo, hi := max(e.Off, p.off), min(e.End(), p.off+int64(len(p.buf)))
		clear(p.buf[pos-p.off : lo-p.off])
		n, err := src.ReadAt(p.buf[lo-p.off:hi-p.off], lo)
		if int64(n) < hi-lo {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read the source at byte %d: %w", lo+int64(n), err)
		}
		pos = hi
	}
	clear(p.buf[pos-p.off:])
	p.zero = p.zero[:0]
	for g := int64(0); g < int64(len(p.buf)); g += grain {
		p.zero = append(p.zero, allZero(p.buf[g:g+grain]))
	}
	return nil
}

// zeroBuf is read only: what zero bytes are compared with and written
// from.
var zeroBuf = make([]byte, 1<<20)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBuf))
		if !bytes.Equal(b[:n], zeroBuf[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// An outFile is a regular file written in place: its aligned writes of
// whole 4 KiB blocks (the data, from the pieces' aligned buffers) bypass
// the page cache, as a restore's writes do (blockdev.FileWriter); the
// tables and headers go through it.
type outFile struct {
	*os.File
	w *blockdev.FileWriter
}

func (o *outFile) WriteAt(p []byte, off int64) (int, error) { return o.w.WriteAt(p, off) }

// release closes the direct descriptor (nil: nothing to do); the file
// stays open for its owner to sync and close.
func (o *outFile) release() {
	if o != nil {
		o.w.Close()
	}
}

// regularFile returns out as a file to write in place and leave holes
// in, or nil when out is a pipe, socket or device to be written front to
// back. A file that already holds bytes is refused: its holes would show
// them.
func regularFile(out Output) (*outFile, error) {
	f, ok := out.(*os.File)
	if !ok {
		return nil, nil
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil
	}
	if st.Size() != 0 {
		return nil, fmt.Errorf("vdisk: the output %s is not empty (%d bytes)", f.Name(), st.Size())
	}
	return &outFile{File: f, w: blockdev.NewFileWriter(f)}, nil
}

// A streamWriter writes front to back, buffered, and counts.
type streamWriter struct {
	*bufio.Writer
	ctx context.Context
	n   int64 // bytes handed on so far
}

func newStreamWriter(ctx context.Context, w io.Writer) *streamWriter {
	s := &streamWriter{ctx: ctx}
	s.Writer = bufio.NewWriterSize(countingWriter{w, &s.n}, 1<<20)
	return s
}

// pos is where the next byte written lands.
func (s *streamWriter) pos() int64 { return s.n + int64(s.Buffered()) }

// zeros writes n zero bytes: terabytes of them, to a raw stream of a
// large empty disk, so it listens to ctx.
func (s *streamWriter) zeros(n int64) error {
	for n > 0 {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		k := min(n, int64(len(zeroBuf)))
		if _, err := s.Write(zeroBuf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}
