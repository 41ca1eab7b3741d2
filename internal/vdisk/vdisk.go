// Package vdisk writes and reads virtual machines' disk files: qcow2,
// VHDX, VHD (dynamic and fixed), VMDK (monolithicSparse and
// streamOptimized) and raw. `platter convert` writes an image's disk in
// one of them allocating only the extents that hold data; `platter
// create` reads one as a source, imaging a VM's disk by its used blocks
// without converting it first.
//
// Each format is one file of this package that registers its writer
// and, where it has one, its reader (register, registerReader).
package vdisk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

// Format names a virtual disk format, as --format takes it.
type Format string

const (
	QCOW2      Format = "qcow2"
	VHDX       Format = "vhdx"
	VHD        Format = "vhd"       // dynamic
	VHDFixed   Format = "vhd-fixed" // the disk, then a footer: what Azure takes
	VMDK       Format = "vmdk"      // monolithicSparse
	VMDKStream Format = "vmdk-stream"
	Raw        Format = "raw"
)

// Source is a disk to write as a virtual disk.
type Source interface {
	io.ReaderAt
	// Size is the disk's length in bytes.
	Size() int64
	// Data lists the extents that may hold data, sorted and disjoint;
	// every other byte reads as zero and is left unallocated in the
	// output. Bytes inside an extent may be zero too: a writer may still
	// skip its all-zero clusters.
	Data() []block.Extent
}

// Output is where a writer writes: a file (all formats), or a pipe for
// the formats that stream (Streams).
type Output interface {
	io.Writer
}

// Progress hears how many bytes of the source's data were written.
type Progress func(n int64)

// writer writes src as its format to out, front to back when the format
// streams; out is an *os.File (io.WriterAt, io.Seeker) for the others.
type writer func(ctx context.Context, out Output, src Source, progress Progress) error

var writers = map[Format]writer{}
var streams = map[Format]bool{}

// register makes f writable; stream says it needs only an io.Writer.
func register(f Format, w writer, stream bool) {
	writers[f] = w
	streams[f] = stream
}

// Formats lists the formats this build writes, sorted.
func Formats() []Format {
	var fs []Format
	for f := range writers {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i] < fs[j] })
	return fs
}

// Streams says whether f can be written to a pipe (OUTPUT -).
func Streams(f Format) bool { return streams[f] }

// ErrUnknownFormat is a --format or extension this build does not write.
var ErrUnknownFormat = errors.New("unknown virtual disk format")

// ParseFormat parses --format.
func ParseFormat(s string) (Format, error) {
	if _, ok := writers[Format(s)]; ok {
		return Format(s), nil
	}
	return "", fmt.Errorf("%w %q (want one of %s)", ErrUnknownFormat, s, list(Formats()))
}

// FormatOf is the format a file name's extension says: .qcow2, .vhdx,
// .vhd, .vmdk, .img or .raw; vhd-fixed and vmdk-stream need --format.
func FormatOf(path string) (Format, error) {
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(path), "."))
	switch ext {
	case "qcow2", "vhdx", "vhd", "vmdk", "raw":
		return ParseFormat(ext)
	case "img":
		return ParseFormat("raw")
	}
	return "", fmt.Errorf("%w: cannot tell it from %q; give --format (%s)", ErrUnknownFormat, filepath.Base(path), list(Formats()))
}

// Write writes src as format f to out.
func Write(ctx context.Context, out Output, f Format, src Source, progress Progress) error {
	w, ok := writers[f]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownFormat, f)
	}
	if progress == nil {
		progress = func(int64) {}
	}
	if !streams[f] {
		if _, ok := out.(io.WriterAt); !ok {
			return fmt.Errorf("%s cannot be written to a pipe: its tables come before its data; write it to a file", f)
		}
	}
	return w(ctx, out, src, progress)
}

func list(fs []Format) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// ErrNotVirtual is a file that is not a virtual disk of a format this
// package reads: a raw disk image, for one.
var ErrNotVirtual = errors.New("not a virtual disk file")

// Disk is a virtual disk file opened for reading, as the disk its guest
// sees.
type Disk interface {
	io.ReaderAt
	// Size is the guest disk's length in bytes.
	Size() int64
	// Allocated lists the extents the file (or its backing chain) holds
	// data for, sorted and disjoint; every other byte reads as zero.
	Allocated() []block.Extent
	Format() Format
	Close() error
}

// An opener opens f (size bytes; head its first 64 KiB or less, tail its
// last 512 bytes or less) as format's disk. It answers ErrNotVirtual
// (wrapped) when the bytes are not its format, and any other error when
// they are but cannot be read: that error says what and where.
type opener func(f File, size int64, head, tail []byte, path string) (Disk, error)

// File is an open virtual disk file.
type File interface {
	io.ReaderAt
	io.Closer
}

type reader struct {
	format Format
	open   opener
}

var readers []reader

// registerReader makes format readable by Open; readers are tried in
// the order they register.
func registerReader(format Format, open opener) {
	readers = append(readers, reader{format, open})
}
