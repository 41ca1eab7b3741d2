// Package block is Platter's shared vocabulary: sources of bytes, byte
// extents, and allocation maps that say which blocks of a filesystem hold
// data.
package block

import (
	"errors"
	"fmt"
	"io"
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

// Usage is a filesystem detector's answer: which filesystem it found and
// which of its blocks hold data.
type Usage struct {
	// FS names the filesystem: "ext2", "ext3", "ext4", "fat12", "fat16",
	// "fat32", "ntfs".
	FS string
	// Used marks the blocks that must be copied: every block the
	// filesystem's own structures say is allocated, plus its metadata
	// areas (boot sectors, superblocks, FATs, ...).
	Used *Map
}
