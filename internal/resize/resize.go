// Package resize makes a filesystem smaller or larger with its own
// tools (resize2fs, ntfsresize, fatresize, xfs_growfs, btrfs, resize.f2fs,
// mkswap), for restoring an image onto a disk of another size.
//
// The tools want a file or a block device. A Window shows any read-write
// device (an overlay over an image's disk, a section of a restore
// target) as one regular file through a private FUSE mount, so they can
// work on it without a byte reaching anything but that device; Scratch
// is a copy-on-write overlay whose file is already unlinked, so nothing
// is left behind however the process ends.
//
// MinSize, Shrink, Grow and Size take the filesystem's name as image
// metadata records it ("ext4", "ntfs", "fat32", "xfs", "btrfs", "f2fs",
// "exfat", "swap") and the path of the file or device holding it (a
// Window's Path). A filesystem that cannot be made smaller or larger here
// gives a *NotSupportedError (errors.Is ErrCannotShrink or ErrCannotGrow,
// and ErrCannotResize); a size below what the data needs gives a
// *TooSmallError naming the shortfall; a tool that fails gives a
// *ToolError quoting what it said.
//
// What each filesystem allows, as measured with Debian 12's tools
// (docs/filesystems.md has the table):
//
//	ext2/3/4  shrink, grow   e2fsck -fp, then resize2fs (minimum: resize2fs -P)
//	NTFS      shrink, grow   ntfsresize (minimum: ntfsresize --info)
//	FAT32     shrink, grow   fatresize on a disk of one MBR partition made around it
//	                         (minimum: fatresize -i), staying FAT32 (about 256 MiB at
//	                         least), clusters of 4 KiB or more; fsck.fat -n before and after
//	FAT12/16  neither        libparted does not resize FAT12, and loses files on FAT16
//	btrfs     shrink, grow   the kernel, on a loop mount (minimum: btrfs inspect-internal
//	                         min-dev-size, and never below 256 MiB, which the kernel refuses)
//	XFS       grow           xfs_growfs on a loop mount; XFS cannot shrink
//	F2FS      grow           resize.f2fs; its shrink (-s) names no minimum and, below
//	                         one, exits 0 having done nothing, so it is not used
//	swap      any size       mkswap again, keeping UUID, label and page size
//	exFAT     neither        exfatprogs has no resizer
package resize

import (
	"errors"
	"fmt"
	"io"
)

// Device is what a Window shows: a disk or partition that can be read
// and written at random. Writes through the window go to it alone.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
}

// ErrCannotResize is what every *NotSupportedError is: this filesystem
// cannot be resized this way here. ErrCannotShrink and ErrCannotGrow say
// which way.
var (
	ErrCannotResize = errors.New("resize: the filesystem cannot be resized")
	ErrCannotShrink = errors.New("resize: the filesystem cannot shrink")
	ErrCannotGrow   = errors.New("resize: the filesystem cannot grow")
)

// NotSupportedError says a filesystem cannot be made smaller (Shrink) or
// larger (!Shrink), and why. The caller keeps the partition's old size
// (growing) or refuses (shrinking).
type NotSupportedError struct {
	FS     string // as image metadata names it; "" if unknown
	Shrink bool
	Reason string
}

func (e *NotSupportedError) Error() string {
	way := "grow"
	if e.Shrink {
		way = "shrink"
	}
	fs := e.FS
	if fs == "" {
		fs = "an unknown filesystem"
	}
	return fmt.Sprintf("resize: %s cannot %s: %s", fs, way, e.Reason)
}

func (e *NotSupportedError) Is(target error) bool {
	switch target {
	case ErrCannotResize:
		return true
	case ErrCannotShrink:
		return e.Shrink
	case ErrCannotGrow:
		return !e.Shrink
	}
	return false
}

// TooSmallError says a filesystem's data needs more room than it was
// asked to shrink to.
type TooSmallError struct {
	FS, Path   string
	Need, Have int64 // bytes: the smallest it can be, and the size asked for
}

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("resize: %s on %s needs at least %d bytes, %d bytes more than the %d it was to shrink to", e.FS, e.Path, e.Need, e.Need-e.Have, e.Have)
}

// ToolError is a tool that failed: which, on what, and what it said.
type ToolError struct {
	Tool   string
	Args   []string
	Path   string // the filesystem's file or device
	Err    error  // the exit status, or why it did not run
	Output string // its standard output and error, the last 64 KiB at most
}

func (e *ToolError) Error() string {
	out := e.Output
	if out == "" {
		out = "(no output)"
	}
	return fmt.Sprintf("resize: %s on %s: %v; it said:\n%s", e.Tool, e.Path, e.Err, out)
}

func (e *ToolError) Unwrap() error { return e.Err }

// fsKind is how a filesystem name is resized: ext2/3/4 alike.
func fsKind(fs string) string {
	switch fs {
	case "ext2", "ext3", "ext4":
		return "ext"
	case "fat16", "fat32":
		return "fat"
	}
	return fs
}

func notSupported(fs string, shrink bool, format string, args ...any) error {
	return &NotSupportedError{FS: fs, Shrink: shrink, Reason: fmt.Sprintf(format, args...)}
}
