package partclone

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/platter-dev/platter/internal/block"
)

// Bitmap is the image's map of used blocks, with a rank index: how many
// used blocks come before any block, which is where that block's data is
// in the image.
type Bitmap struct {
	words []uint64 // bit i of word i/64: block i is used
	total int64
	ranks []int64 // used blocks before word 8*k
	used  int64
}

const rankEvery = 8 // words per rank entry: 512 blocks

// Blocks is the number of blocks the bitmap covers.
func (b *Bitmap) Blocks() int64 { return b.total }

// Used is the number of used blocks: the blocks the image holds.
func (b *Bitmap) Used() int64 { return b.used }

// Test says whether block i is used.
func (b *Bitmap) Test(i int64) bool {
	if i < 0 || i >= b.total {
		return false
	}
	return b.words[i/64]&(1<<(uint(i)%64)) != 0
}

// Rank is the number of used blocks before block i.
func (b *Bitmap) Rank(i int64) int64 {
	if i <= 0 {
		return 0
	}
	if i >= b.total {
		return b.used
	}
	w := i / 64
	k := w / rankEvery
	n := b.ranks[k]
	for j := k * rankEvery; j < w; j++ {
		n += int64(bits.OnesCount64(b.words[j]))
	}
	return n + int64(bits.OnesCount64(b.words[w]&(1<<(uint(i)%64)-1)))
}

// next returns the first used block at or after i (Blocks() if none).
func (b *Bitmap) next(i int64) int64 {
	for i < b.total {
		w := b.words[i/64] >> (uint(i) % 64)
		if w != 0 {
			return min(i+int64(bits.TrailingZeros64(w)), b.total)
		}
		i = (i/64 + 1) * 64
	}
	return b.total
}

// nextFree returns the first free block at or after i (Blocks() if none).
func (b *Bitmap) nextFree(i int64) int64 {
	for i < b.total {
		w := ^b.words[i/64] >> (uint(i) % 64)
		if w != 0 {
			return min(i+int64(bits.TrailingZeros64(w)), b.total)
		}
		i = (i/64 + 1) * 64
	}
	return b.total
}

// Runs calls fn with each run of used blocks, first block and count, in
// order.
func (b *Bitmap) Runs(fn func(first, n int64)) {
	for i := b.next(0); i < b.total; {
		j := b.nextFree(i)
		fn(i, j-i)
		i = b.next(j)
	}
}

// Map returns the bitmap as a block.Map over length bytes (the device;
// blocks past it are dropped).
func (b *Bitmap) Map(blockSize, length int64) (*block.Map, error) {
	m, err := block.NewMap(blockSize, length)
	if err != nil {
		return nil, err
	}
	b.Runs(func(first, n int64) { m.SetRange(first, n) })
	return m, nil
}

func (b *Bitmap) index() {
	b.ranks = make([]int64, (len(b.words)+rankEvery-1)/rankEvery)
	var n int64
	for i, w := range b.words {
		if i%rankEvery == 0 {
			b.ranks[i/rankEvery] = n
		}
		n += int64(bits.OnesCount64(w))
	}
	b.used = n
}

// readBitmap reads h's bitmap from r, which is at image byte off. limit
// is the bytes r can still give (-1: unknown); a bitmap longer than that
// is refused before anything is allocated for it, and with an unknown
// limit the bitmap is allocated only as it arrives.
func readBitmap(r io.Reader, h *Header, off, limit int64) (*Bitmap, error) {
	size := h.BitmapSize()
	if limit >= 0 && size > limit {
		return nil, &FormatError{Off: off, Msg: fmt.Sprintf("the bitmap of %d blocks needs %d bytes; the image has %d left", h.TotalBlocks, size, limit)}
	}
	b := &Bitmap{total: h.TotalBlocks}
	nw := (h.TotalBlocks + 63) / 64
	// Grown as the bytes arrive: never more than the image gave.
	b.words = make([]uint64, 0, min(nw, 1<<17))
	buf := make([]byte, 64<<10)
	pos := int64(0) // blocks read
	crc := uint32(0xFFFFFFFF)
	for pos < h.TotalBlocks {
		var want int64
		if h.BitmapMode == BitmapByte {
			want = min(h.TotalBlocks-pos, int64(len(buf)))
		} else {
			want = min((h.TotalBlocks-pos+7)/8, int64(len(buf)))
		}
		n, err := io.ReadFull(r, buf[:want])
		if err != nil {
			return nil, &FormatError{Off: off + int64(n), Msg: "image ends inside its bitmap", Err: err}
		}
		if h.BitmapMode == BitmapByte {
			for i, v := range buf[:want] {
				blk := pos + int64(i)
				if blk%64 == 0 {
					b.words = append(b.words, 0)
				}
				if v == 1 {
					b.words[blk/64] |= 1 << (uint(blk) % 64)
				}
			}
			pos += want
		} else {
			crc = crcUpdate(crc, buf[:want])
			for i := 0; i < int(want); i += 8 {
				var w [8]byte
				copy(w[:], buf[i:want])
				b.words = append(b.words, binary.LittleEndian.Uint64(w[:]))
			}
			pos += want * 8
		}
		off += want
	}
	if r := h.TotalBlocks % 64; r != 0 && len(b.words) > 0 {
		b.words[len(b.words)-1] &= 1<<uint(r) - 1
	}
	switch {
	case h.Version == 1:
		var m [len(bitMagic)]byte
		if n, err := io.ReadFull(r, m[:]); err != nil {
			return nil, &FormatError{Off: off + int64(n), Msg: "image ends before the bitmap's magic", Err: err}
		}
		if string(m[:]) != bitMagic {
			return nil, &FormatError{Off: off, Msg: fmt.Sprintf("no %q after the bitmap (found %q)", bitMagic, printable(m[:]))}
		}
	case h.BitmapMode == BitmapByte:
		// Format 0002 with a byte map: the CRC is of the bits.
		crc = crcUpdate(0xFFFFFFFF, bitBytes(b))
		fallthrough
	default:
		var c [4]byte
		if n, err := io.ReadFull(r, c[:]); err != nil {
			return nil, &FormatError{Off: off + int64(n), Msg: "image ends before the bitmap's CRC32", Err: err}
		}
		if got := binary.LittleEndian.Uint32(c[:]); got != crc {
			return nil, &FormatError{Off: off, Msg: fmt.Sprintf("bitmap CRC32 is 0x%08x, the bitmap's bytes give 0x%08x", got, crc)}
		}
	}
	b.index()
	return b, nil
}

// allBitmap is the bitmap of an image without one: every block used.
func allBitmap(total int64) *Bitmap {
	b := &Bitmap{total: total, words: make([]uint64, (total+63)/64)}
	for i := range b.words {
		b.words[i] = ^uint64(0)
	}
	if r := total % 64; r != 0 {
		b.words[len(b.words)-1] = 1<<uint(r) - 1
	}
	b.index()
	return b
}

func bitBytes(b *Bitmap) []byte {
	out := make([]byte, (b.total+7)/8)
	for i := range out {
		out[i] = byte(b.words[i/8] >> (uint(i%8) * 8))
	}
	return out
}
