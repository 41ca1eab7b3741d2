package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// stream reads an attribute's value: resident, or through its runs
// (all its extents joined), sparse runs and bytes past the initialized
// size as zeros, compressed units decompressed (LZNT1). ReadAt is safe
// for parallel calls.
type stream struct {
	v          *volume
	rec        int64  // the file's base record, for errors
	what       string // the attribute, for errors
	isResident bool
	resident   []byte
	runs       []run // in VCN order, contiguous from VCN 0
	size, init int64
	unit       int64 // compression unit in clusters; 0: not compressed
	encrypted  bool

	mu     sync.Mutex
	cache  []byte // the compression unit last decompressed
	cacheN int64  // its number; -1: none
}

func (s *stream) corrupt(off int64, format string, args ...any) error {
	return corrupt(s.rec, s.where(off), "%s: %s", s.what, fmt.Sprintf(format, args...))
}

// run returns the run holding cluster vcn, or false.
func (s *stream) run(vcn int64) (run, bool) {
	i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].vcn+s.runs[i].n > vcn })
	if i == len(s.runs) || s.runs[i].vcn > vcn {
		return run{}, false
	}
	return s.runs[i], true
}

// where is the volume byte offset of byte off of the stream, or -1.
func (s *stream) where(off int64) int64 {
	if s == nil || s.isResident || off < 0 {
		return -1
	}
	cs := s.v.clusterSize
	r, ok := s.run(off / cs)
	if !ok || r.lcn < 0 {
		return -1
	}
	return (r.lcn+off/cs-r.vcn)*cs + off%cs
}

// all reads the whole value, if it is no larger than limit.
func (s *stream) all(limit int64) ([]byte, error) {
	if s.size > limit {
		return nil, corrupt(s.rec, -1, "%s of %d bytes is larger than the %d it may be", s.what, s.size, limit)
	}
	b := make([]byte, s.size)
	if err := vfs.ReadFull(s, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

func (s *stream) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ntfs: MFT record %d: %s: read at negative offset %d", s.rec, s.what, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	var err error
	switch {
	case s.isResident:
		copy(p[:n], s.resident[off:])
	case s.encrypted:
		return 0, fmt.Errorf("ntfs: MFT record %d: %s is encrypted (EFS): its data cannot be read without the owner's key", s.rec, s.what)
	case s.unit > 0:
		err = s.readCompressed(p[:n], off)
	default:
		err = s.readRuns(p[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readRuns fills p from byte off through the runs.
func (s *stream) readRuns(p []byte, off int64) error {
	cs := s.v.clusterSize
	for len(p) > 0 {
		if off >= s.init {
			clear(p)
			return nil
		}
		r, ok := s.run(off / cs)
		if !ok {
			return s.corrupt(-1, "no run maps byte %d of its %d", off, s.size)
		}
		k := min(int64(len(p)), (r.vcn+r.n)*cs-off, s.init-off)
		if r.lcn < 0 {
			clear(p[:k])
		} else if err := vfs.ReadFull(s.v.r, p[:k], r.lcn*cs+off-r.vcn*cs); err != nil {
			return fmt.Errorf("ntfs: MFT record %d: read %s at byte %d: %w", s.rec, s.what, r.lcn*cs+off-r.vcn*cs, err)
		}
		p, off = p[k:], off+k
	}
	return nil
}

// readCompressed fills p from byte off, a compression unit at a time.
func (s *stream) readCompressed(p []byte, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ub := s.unit * s.v.clusterSize
	for len(p) > 0 {
		u := off / ub
		if s.cacheN != u {
			if s.cache == nil {
				s.cache = make([]byte, ub)
			}
			s.cacheN = -1
			if err := s.unpack(s.cache, u); err != nil {
				return err
			}
			s.cacheN = u
		}
		k := copy(p, s.cache[off-u*ub:])
		if e := off + int64(k); e > s.init {
			clear(p[max(0, s.init-off):k])
		}
		p, off = p[k:], off+int64(k)
	}
	return nil
}

// unpack reads compression unit u into out (one unit long): all sparse
// is zeros, all allocated is stored as it is, allocated clusters
// followed by sparse ones hold LZNT1 data.
func (s *stream) unpack(out []byte, u int64) error {
	cs := s.v.clusterSize
	first := u * s.unit
	alloc, sparse := int64(0), int64(0)
	var lcns []run
	for vcn := first; vcn < first+s.unit; {
		r, ok := s.run(vcn)
		if !ok {
			if vcn*cs >= s.size {
				break // the last unit may end early
			}
			return s.corrupt(-1, "no run maps cluster %d", vcn)
		}
		k := min(r.vcn+r.n, first+s.unit) - vcn
		if r.lcn < 0 {
			sparse += k
		} else {
			if sparse > 0 {
				return s.corrupt(vcn*cs, "compression unit %d has data after its sparse clusters", u)
			}
			lcns = append(lcns, run{vcn: vcn, lcn: r.lcn + vcn - r.vcn, n: k})
			alloc += k
		}
		vcn += k
	}
	if alloc == 0 {
		clear(out)
		return nil
	}
	buf := out
	if sparse > 0 {
		buf = make([]byte, alloc*cs)
	}
	pos := int64(0)
	for _, r := range lcns {
		if err := vfs.ReadFull(s.v.r, buf[pos:pos+r.n*cs], r.lcn*cs); err != nil {
			return fmt.Errorf("ntfs: MFT record %d: read %s at byte %d: %w", s.rec, s.what, r.lcn*cs, err)
		}
		pos += r.n * cs
	}
	if sparse == 0 {
		clear(out[pos:])
		return nil
	}
	if err := lznt1(out, buf); err != nil {
		return s.corrupt(first*cs, "compression unit %d: %v", u, err)
	}
	return nil
}

// lznt1ChunkSize is what one LZNT1 chunk decompresses to.
const lznt1ChunkSize = 4096

var errLZNT1 = errors.New("LZNT1 data is damaged")

// lznt1 decompresses src, a compression unit's LZNT1 chunks, into
// dst (the unit's size); what they do not fill is zero.
func lznt1(dst, src []byte) error {
	out, in := 0, 0
	for out < len(dst) && in+2 <= len(src) {
		h := int(binary.LittleEndian.Uint16(src[in:]))
		if h == 0 {
			break
		}
		size := h&0x0fff + 1
		in += 2
		if size > len(src)-in {
			return fmt.Errorf("%w: a chunk of %d bytes runs past the %d at hand", errLZNT1, size, len(src)-in)
		}
		chunk := src[in : in+size]
		in += size
		end := min(out+lznt1ChunkSize, len(dst))
		if h&0x8000 == 0 {
			// Stored: a whole 4 KiB chunk as it is.
			if size != lznt1ChunkSize {
				return fmt.Errorf("%w: a stored chunk of %d bytes", errLZNT1, size)
			}
			copy(dst[out:end], chunk)
		} else if err := lznt1Chunk(dst[out:end], chunk); err != nil {
			return err
		}
		out = end
	}
	clear(dst[out:])
	return nil
}

// lznt1Chunk decompresses one chunk into dst (at most 4 KiB); what it
// does not fill is zero.
func lznt1Chunk(dst, src []byte) error {
	out, in := 0, 0
	for in < len(src) {
		tag := src[in]
		in++
		for bit := 0; bit < 8 && in < len(src); bit, tag = bit+1, tag>>1 {
			if tag&1 == 0 {
				if out >= len(dst) {
					return fmt.Errorf("%w: a chunk decompresses past %d bytes", errLZNT1, len(dst))
				}
				dst[out] = src[in]
				out, in = out+1, in+1
				continue
			}
			if in+2 > len(src) {
				return fmt.Errorf("%w: a back-reference is cut short", errLZNT1)
			}
			if out == 0 {
				return fmt.Errorf("%w: a chunk starts with a back-reference", errLZNT1)
			}
			// The split between offset and length bits grows with the
			// position in the chunk.
			lg := 0
			for i := out - 1; i >= 0x10; i >>= 1 {
				lg++
			}
			pt := int(binary.LittleEndian.Uint16(src[in:]))
			in += 2
			back := pt>>(12-lg) + 1
			length := pt&(0xfff>>lg) + 3
			if back > out || length > len(dst)-out {
				return fmt.Errorf("%w: a back-reference of %d bytes from %d back at %d", errLZNT1, length, back, out)
			}
			for i := 0; i < length; i++ {
				dst[out+i] = dst[out-back+i]
			}
			out += length
		}
	}
	clear(dst[out:])
	return nil
}
