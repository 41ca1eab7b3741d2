// Package block is Platter's shared vocabulary: sources of bytes, byte
// extents, and allocation maps that say which blocks of a filesystem hold
// data.
package block

import (
	"errors"
	"fmt"
	"io"
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

// Aligned reports whether b starts on a DirectAlign boundary and off and
// len(b) are multiples of it.
func Aligned(b []byte, off int64) bool {
	return len(b) > 0 && off%DirectAlign == 0 && len(b)%DirectAlign == 0 && uintptr(unsafe.Pointer(&b[0]))%DirectAlign == 0
}
