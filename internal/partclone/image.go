package partclone

import (
	"fmt"
	"io"
	"sync"

	"github.com/platter-dev/platter/internal/block"
)

// Image is an uncompressed image read in place, at random, as the device
// it holds: a used block is read where its rank among the used blocks
// puts it, a free block reads as zeros. The checksum group of every block
// read is verified the first time (the whole group is read then), except
// in an image whose XXH64 checksums carry on from group to group, which
// only a Reader front to back can verify. ReadAt is safe for parallel
// calls.
type Image struct {
	r      io.ReaderAt
	h      *Header
	bm     *Bitmap
	stride int64
	size   int64

	mu       sync.Mutex
	verified []uint64 // bit g: checksum group g verified
}

// Open reads the header and bitmap of the uncompressed image r of size
// bytes.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	rd, err := NewReader(io.NewSectionReader(r, 0, size), size)
	if err != nil {
		return nil, err
	}
	h, bm := rd.h, rd.bm
	im := &Image{r: r, h: h, bm: bm, stride: h.ChecksumSize, size: max(h.DeviceSize, h.TotalBlocks*h.BlockSize)}
	if h.Version == 1 && bm.Used() >= 2 {
		// Read the first blocks to tell the 64-bit bug's 8-byte CRCs.
		for rd.v1bug == 0 {
			if _, _, err := rd.Next(); err != nil {
				return nil, err
			}
		}
		im.stride = rd.stride
	}
	if h.BlocksPerChecksum > 0 {
		groups := (bm.Used() + h.BlocksPerChecksum - 1) / h.BlocksPerChecksum
		im.verified = make([]uint64, (groups+63)/64)
	}
	if need := h.dataSize(bm.Used(), im.stride); need > size-h.DataOffset() {
		return nil, &FormatError{Off: size, Msg: fmt.Sprintf("image of %d bytes is cut short: its %d used blocks need %d bytes after byte %d", size, bm.Used(), need, h.DataOffset())}
	}
	return im, nil
}

// Header is the image's header.
func (im *Image) Header() *Header { return im.h }

// Bitmap is the image's map of used blocks.
func (im *Image) Bitmap() *Bitmap { return im.bm }

// Size is the device's length in bytes.
func (im *Image) Size() int64 { return im.size }

// Used lists the byte ranges of the used blocks.
func (im *Image) Used() []block.Extent {
	var out []block.Extent
	bs := im.h.BlockSize
	im.bm.Runs(func(first, n int64) { out = append(out, block.Extent{Off: first * bs, Len: n * bs}) })
	return out
}

// blockOff is where the used block of rank k is in the image.
func (im *Image) blockOff(k int64) int64 {
	off := im.h.DataOffset() + k*im.h.BlockSize
	if bpc := im.h.BlocksPerChecksum; bpc > 0 {
		off += k / bpc * im.stride
	}
	return off
}

// ReadAt reads the device's bytes [off, off+len(p)).
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("partclone: negative offset %d", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := im.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	clear(p)
	bs := im.h.BlockSize
	end := off + int64(len(p))
	for b := im.bm.next(off / bs); b < im.bm.Blocks() && b*bs < end; {
		run := im.bm.nextFree(b)
		k := im.bm.Rank(b)
		for b < run && b*bs < end {
			// Blocks of one checksum group are contiguous in the image.
			n := run - b
			if bpc := im.h.BlocksPerChecksum; bpc > 0 {
				n = min(n, bpc-k%bpc)
			}
			n = min(n, (end-b*bs+bs-1)/bs)
			if err := im.verify(k); err != nil {
				return 0, err
			}
			lo, hi := max(off, b*bs), min(end, (b+n)*bs)
			if _, err := im.r.ReadAt(p[lo-off:hi-off], im.blockOff(k)+lo-b*bs); err != nil {
				return 0, fmt.Errorf("partclone: read block %d at image byte %d: %w", b, im.blockOff(k), err)
			}
			b, k = b+n, k+n
		}
		b = im.bm.next(b)
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// verify checks, once, the checksum group of the used block of rank k.
func (im *Image) verify(k int64) error {
	bpc := im.h.BlocksPerChecksum
	if bpc == 0 {
		return nil
	}
	g := k / bpc
	im.mu.Lock()
	done := im.verified[g/64]&(1<<(uint(g)%64)) != 0
	im.mu.Unlock()
	if done {
		return nil
	}
	s := newSummer(im.h)
	if g > 0 && !im.h.Reseed {
		// The running checksum carries on: it starts where the stored
		// checksum of the group before left it.
		var c [8]byte
		at := im.blockOff(g*bpc) - im.stride
		if _, err := im.r.ReadAt(c[:im.h.ChecksumSize], at); err != nil {
			return fmt.Errorf("partclone: read checksum at image byte %d: %w", at, err)
		}
		if !s.seed(c[:]) {
			return nil // XXH64 carried on: only a front-to-back read verifies it
		}
	}
	first := g * bpc
	n := min(bpc, im.bm.Used()-first)
	bs := im.h.BlockSize
	buf := make([]byte, min(n*bs, runBytes))
	pos := im.blockOff(first)
	for left := n * bs; left > 0; {
		c := min(left, int64(len(buf)))
		if _, err := im.r.ReadAt(buf[:c], pos); err != nil {
			return fmt.Errorf("partclone: read image bytes %d-%d: %w", pos, pos+c-1, err)
		}
		if s.mode == ChecksumCRC32v1 {
			for i := int64(0); i < c; i += bs {
				s.add(buf[i : i+bs])
			}
		} else {
			s.add(buf[:c])
		}
		pos += c
		left -= c
	}
	var c [8]byte
	if _, err := im.r.ReadAt(c[:im.h.ChecksumSize], pos); err != nil {
		return fmt.Errorf("partclone: read checksum at image byte %d: %w", pos, err)
	}
	if !s.check(c[:]) {
		fb := im.blockAt(first)
		lb := im.blockAt(first + n - 1)
		return &ChecksumError{First: fb, Last: lb, Off: fb * bs, End: (lb + 1) * bs, ImageOff: pos, Mode: im.h.ChecksumName()}
	}
	im.mu.Lock()
	im.verified[g/64] |= 1 << (uint(g) % 64)
	im.mu.Unlock()
	return nil
}

// blockAt is the used block of rank k (the inverse of Rank).
func (im *Image) blockAt(k int64) int64 {
	lo, hi := int64(0), im.bm.Blocks()-1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if im.bm.Rank(mid+1) > k {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
