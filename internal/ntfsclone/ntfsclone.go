// Package ntfsclone reads the images `ntfsclone --save-image` writes
// (what `ocs-sr -q` saves an NTFS partition as: <part>.ntfs-img, piped
// through the chosen compressor and split into .aa, .ab, ...).
//
// The format, from ntfs-3g's ntfsclone.c (all little-endian):
//
//	0   16  magic "\0ntfsclone-image"
//	16  1   major version (10: the first endianness-safe one)
//	17  1   minor version (1 adds offset_to_image_data)
//	18  4   cluster size in bytes
//	22  8   device size in bytes
//	30  8   clusters of the filesystem (nr_clusters)
//	38  8   clusters in use
//	46  4   offset of the image data from byte 0 (56: 8-byte aligned)
//
// then a stream of commands for clusters 0 to nr_clusters: 0x00 and an
// 8-byte count of clusters that are not saved (zeros), or 0x01 and one
// cluster's bytes. Cluster nr_clusters is the device's tail, past the
// filesystem, which holds NTFS's backup boot sector (saved since 10.1;
// a 10.0 image may end before it), and the cluster that reaches the
// device's end is saved only up to it. So ntfsclone's restore_image
// reads it, and so does this reader.
//
// The stream has no map up front and no checksum: it can only be read
// front to back, and damage shows as an impossible command or count or a
// stream that ends early, each reported with the stream's byte offset.
package ntfsclone

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

// Magic starts every ntfsclone image.
const Magic = "\x00ntfsclone-image"

// headerSize is the bytes of the header up to and with offset_to_image_data.
const (
	headerSize    = 50
	headerSizeOld = 46 // the header without the data offset
	maxDataOffset = 1 << 20
	runBytes      = 1 << 20 // the bytes Next returns at once, at most
)

// ErrNotNtfsclone is returned (wrapped) for bytes that do not start with
// ntfsclone's magic.
var ErrNotNtfsclone = errors.New("not an ntfsclone image")

// ErrDamaged is matched (errors.Is) by every FormatError.
var ErrDamaged = errors.New("ntfsclone image damaged")

// FormatError is a structure of the image that is missing, impossible or
// cut short, at a byte offset of the (uncompressed) image stream.
type FormatError struct {
	Off int64
	Msg string
	Err error
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("ntfsclone: %s at image byte %d", e.Msg, e.Off)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

func (e *FormatError) Is(target error) bool { return target == ErrDamaged }

// Header is an ntfsclone image's header.
type Header struct {
	Major, Minor uint8
	ClusterSize  int64
	DeviceSize   int64
	Clusters     int64 // the filesystem's clusters (nr_clusters)
	InUse        int64 // clusters in use, as ntfsclone counted them
	DataOffset   int64 // where the command stream starts
}

// ParseHeader parses the header at the start of b (at least 50 bytes,
// or 46 for a minor version 0 image).
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("ntfsclone: %w (no magic at byte 0)", ErrNotNtfsclone)
	}
	if len(b) < headerSizeOld {
		return nil, &FormatError{Off: int64(len(b)), Msg: "header cut short", Err: io.ErrUnexpectedEOF}
	}
	le := binary.LittleEndian
	h := &Header{
		Major:       b[16],
		Minor:       b[17],
		ClusterSize: int64(le.Uint32(b[18:])),
		DeviceSize:  int64(le.Uint64(b[22:])),
		Clusters:    int64(le.Uint64(b[30:])),
		InUse:       int64(le.Uint64(b[38:])),
	}
	if h.Major != 10 {
		// Before 10.0 the header was in the saving machine's byte
		// order; after, the format changed in a way this reader cannot
		// know.
		return nil, &FormatError{Off: 16, Msg: fmt.Sprintf("image format version %d.%d is not one this reader knows (10.x, written by ntfsclone since 2006)", h.Major, h.Minor)}
	}
	if len(b) < headerSize {
		return nil, &FormatError{Off: int64(len(b)), Msg: "header cut short", Err: io.ErrUnexpectedEOF}
	}
	// ntfsclone skips to the data offset when it lies past the header.
	h.DataOffset = max(int64(le.Uint32(b[46:])), headerSize)
	if h.DataOffset > maxDataOffset {
		return nil, &FormatError{Off: 46, Msg: fmt.Sprintf("image data offset %d is past %d", h.DataOffset, maxDataOffset)}
	}
	cs := h.ClusterSize
	switch {
	case cs < 256 || cs > 2<<20 || cs&(cs-1) != 0:
		return nil, &FormatError{Off: 18, Msg: fmt.Sprintf("cluster size %d is not a power of two from 256 to 2 MiB", cs)}
	case h.DeviceSize <= 0 || h.DeviceSize > 1<<60:
		return nil, &FormatError{Off: 22, Msg: fmt.Sprintf("device size %d is impossible", h.DeviceSize)}
	case h.Clusters <= 0 || h.Clusters > h.DeviceSize/cs:
		return nil, &FormatError{Off: 30, Msg: fmt.Sprintf("%d clusters of %d bytes do not fit the device's %d bytes", h.Clusters, cs, h.DeviceSize)}
	case h.InUse < 0 || h.InUse > h.Clusters:
		return nil, &FormatError{Off: 38, Msg: fmt.Sprintf("%d clusters in use of %d", h.InUse, h.Clusters)}
	}
	return h, nil
}

// Reader reads an image front to back.
type Reader struct {
	h    *Header
	r    *bufio.Reader
	pos  int64 // stream bytes consumed
	next int64 // the cluster the next command is about
	buf  []byte
	used []block.Extent
	err  error

	volumes []string // the files of a split image, for errors
}

// NewReader reads the header of the image r streams.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(headerSize)
	if err != nil && len(head) < headerSizeOld {
		if len(head) < len(Magic) || !bytes.HasPrefix(head, []byte(Magic)) {
			return nil, fmt.Errorf("ntfsclone: %w (%d bytes, no magic)", ErrNotNtfsclone, len(head))
		}
		return nil, &FormatError{Off: int64(len(head)), Msg: "header cut short", Err: io.ErrUnexpectedEOF}
	}
	h, err := ParseHeader(head)
	if err != nil {
		return nil, err
	}
	if _, err := br.Discard(headerSizeOld); err != nil {
		return nil, err
	}
	rd := &Reader{h: h, r: br, pos: headerSizeOld, buf: make([]byte, max(runBytes, h.ClusterSize))}
	if err := rd.skip(h.DataOffset - headerSizeOld); err != nil {
		return nil, err
	}
	return rd, nil
}

func (r *Reader) skip(n int64) error {
	m, err := r.r.Discard(int(n))
	r.pos += int64(m)
	if err != nil {
		return r.cut("image data offset", err)
	}
	return nil
}

// cut is the error of a stream that ends (or fails) where more was due.
func (r *Reader) cut(what string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &FormatError{Off: r.pos, Msg: "stream ends inside " + what, Err: err}
}

// Header is the image's header.
func (r *Reader) Header() *Header { return r.h }

// Used is the device's byte ranges the image held, sorted, of what has
// been read so far: all of them once Next has returned io.EOF. Past a
// million runs, neighbouring runs are joined across the gaps between
// them (which hold zeros): a superset, in bounded memory.
func (r *Reader) Used() []block.Extent { return r.used }

// Next returns the next run of saved bytes and their device offset, at
// most 1 MiB (or one cluster) at once; io.EOF after the last. data is
// valid until the next call.
func (r *Reader) Next() (off int64, data []byte, err error) {
	if r.err != nil {
		return 0, nil, r.err
	}
	off, data, err = r.next1()
	if err != nil {
		if err != io.EOF {
			err = inVolumes(err, r.volumes)
		}
		r.err = err
		return 0, nil, err
	}
	if n := len(r.used); n > 0 && r.used[n-1].End() == off {
		r.used[n-1].Len += int64(len(data))
	} else {
		if n >= maxRuns {
			r.used = coarser(r.used)
		}
		r.used = append(r.used, block.Extent{Off: off, Len: int64(len(data))})
	}
	return off, data, nil
}

// maxRuns bounds the runs Used keeps (16 bytes each): an image of
// scattered clusters would otherwise hold memory in proportion to its
// size.
const maxRuns = 1 << 20

// coarser halves a sorted list of runs by joining each pair, gap and
// all: a superset, whose extra bytes read as the zeros they are.
func coarser(runs []block.Extent) []block.Extent {
	out := runs[:0]
	for i := 0; i < len(runs); i += 2 {
		e := runs[i]
		if i+1 < len(runs) {
			e.Len = runs[i+1].End() - e.Off
		}
		out = append(out, e)
	}
	return out
}

func (r *Reader) next1() (int64, []byte, error) {
	cs := r.h.ClusterSize
	first := int64(-1)
	n := int64(0) // bytes of the run in r.buf
	for {
		// ntfsclone's restore reads commands for clusters 0 to
		// nr_clusters, the last being the device's tail.
		if r.next > r.h.Clusters {
			if first >= 0 {
				return first * cs, r.buf[:n], nil
			}
			return r.end()
		}
		if first >= 0 && n+cs > int64(len(r.buf)) {
			return first * cs, r.buf[:n], nil
		}
		at := r.pos
		cmd, err := r.r.ReadByte()
		if err == io.EOF && r.next == r.h.Clusters {
			// Images before format 10.1 end without the tail.
			r.next++
			continue
		}
		if err != nil {
			return 0, nil, r.cut(fmt.Sprintf("the command for cluster %d of %d", r.next, r.h.Clusters), err)
		}
		r.pos++
		switch cmd {
		case 0:
			var c [8]byte
			m, err := io.ReadFull(r.r, c[:])
			r.pos += int64(m)
			if err != nil {
				return 0, nil, r.cut("a gap's count", err)
			}
			gap := int64(binary.LittleEndian.Uint64(c[:]))
			if gap <= 0 || gap > r.h.Clusters-r.next {
				return 0, nil, &FormatError{Off: at, Msg: fmt.Sprintf("a gap of %d clusters from cluster %d is not within the filesystem's %d", gap, r.next, r.h.Clusters)}
			}
			r.next += gap
			if first >= 0 {
				// The run ends here; the clusters after the gap start
				// the next one.
				return first * cs, r.buf[:n], nil
			}
		case 1:
			if first < 0 {
				first = r.next
			}
			// The cluster that reaches the device's end is saved only
			// up to it (the tail, holding the backup boot sector).
			size := cs
			if (r.next+1)*cs >= r.h.DeviceSize {
				size = r.h.DeviceSize - r.next*cs
			}
			m, err := io.ReadFull(r.r, r.buf[n:n+size])
			r.pos += int64(m)
			if err != nil {
				return 0, nil, r.cut(fmt.Sprintf("cluster %d", r.next), err)
			}
			n += size
			r.next++
			if size < cs {
				return first * cs, r.buf[:n], nil
			}
		default:
			return 0, nil, &FormatError{Off: at, Msg: fmt.Sprintf("command byte 0x%02x for cluster %d is neither 0x00 (gap) nor 0x01 (cluster)", cmd, r.next)}
		}
	}
}

// end checks that nothing follows the image (reading to the end lets a
// compressor check its own trailer too).
func (r *Reader) end() (int64, []byte, error) {
	if _, err := r.r.ReadByte(); err != io.EOF {
		if err != nil {
			return 0, nil, r.cut("the image's end", err)
		}
		return 0, nil, &FormatError{Off: r.pos, Msg: "bytes follow the image's last cluster"}
	}
	return 0, nil, io.EOF
}

// WriteTo writes every saved byte to w at its device offset; progress
// (may be nil) hears the bytes written.
func (r *Reader) WriteTo(ctx context.Context, w io.WriterAt, progress func(n int64)) error {
	return block.WriteStream(ctx, r, w, "ntfsclone", progress)
}
