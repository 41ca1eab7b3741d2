// Package block is Platter's shared vocabulary: sources of bytes, byte
// extents, and allocation maps that say which blocks of a filesystem hold
// data.
package block

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"unsafe"
)

// Source is something Platter images: a block device or a file holding a
// raw disk, partition or bare filesystem. ReadAt must be safe for parallel
// calls.
type Source interface {
	io.ReaderAt
	// Size is the length in bytes.
	Size() int64
	// SectorSize is the logical sector size in bytes (512 or 4096).
	SectorSize() int64
}

// Extent is a byte range [Off, Off+Len).
type Extent struct {
	Off, Len int64
}

// End is the first byte after the extent.
func (e Extent) End() int64 { return e.Off + e.Len }

// MergeExtents sorts extents and joins those that overlap or touch, in
// place.
func MergeExtents(es []Extent) []Extent {
	sort.Slice(es, func(i, j int) bool { return es[i].Off < es[j].Off })
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && e.Off <= out[n-1].End() {
			out[n-1].Len = max(out[n-1].End(), e.End()) - out[n-1].Off
			continue
		}
		out = append(out, e)
	}
	return out
}

// ErrNotMine is returned (wrapped) by a filesystem detector when the bytes
// it was given do not hold its filesystem. A detector that recognises its
// filesystem but cannot read it returns a *CorruptError instead.
var ErrNotMine = errors.New("not this filesystem")

// CorruptError reports a structure that was recognised but is damaged or
// impossible, with the byte offset (relative to the start of what was
// parsed) where the problem was found.
type CorruptError struct {
	What string // the format, e.g. "ext4", "gpt"
	Off  int64  // byte offset of the bad structure
	Msg  string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: %s at byte %d", e.What, e.Msg, e.Off)
}

// DirectAlign is the alignment of buffers, offsets and lengths for
// O_DIRECT I/O: a 4 KiB page satisfies every logical block size up to
// 4 KiB.
const DirectAlign = 4096

// AlignedBuffer returns n bytes whose first byte lies on a DirectAlign
// boundary, so it can be written with O_DIRECT.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := int(-uintptr(unsafe.Pointer(&b[0])) & (DirectAlign - 1))
	return b[skip : skip+n : skip+n]
}

// Stream is a device image read front to back: Next gives each run of
// saved bytes and its device offset, io.EOF after the last.
type Stream interface {
	Next() (off int64, data []byte, err error)
}

// WriteStream writes every run s gives to w at its device offset, until
// s ends or ctx does; progress (may be nil) hears the bytes written. A
// write error names the device bytes; what names s prefixes it.
func WriteStream(ctx context.Context, s Stream, w io.WriterAt, what string, progress func(n int64)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		off, data, err := s.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.WriteAt(data, off); err != nil {
			return fmt.Errorf("%s: write device bytes %d-%d: %w", what, off, off+int64(len(data))-1, err)
		}
		if progress != nil {
			progress(int64(len(data)))
		}
	}
}
