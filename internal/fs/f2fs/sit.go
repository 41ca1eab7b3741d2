package f2fs

// The SIT (segment information table) has an entry for each main-area
// segment: a count of its valid blocks (the segment's type in the top six
// bits), a 512-bit map of them, most significant bit first, and an age;
// 55 entries fill a block. The SIT area holds two copies of each block,
// the second half of the area a copy of the first, and the current
// checkpoint's SIT version bitmap says which copy is current, block by
// block (current_sit_addr). Entries in the SIT journal are newer than
// either copy.

import (
	"encoding/binary"

	"github.com/platter-dev/platter/internal/block"
)

const (
	sitEntrySize = 74
	sitPerBlock  = blockSize / sitEntrySize
	sitMapOff    = 2
	sitMapSize   = blocksPerSeg / 8
	vblocksBits  = 10 // the count's bits; the type is above them
)

// sitEntry returns the SIT entry of main-area segment seg (seg below
// sb.segMain), valid until the next call.
func (f *fsys) sitEntry(seg uint32) ([]byte, error) {
	if e, ok := f.journal[seg]; ok {
		return e, nil
	}
	n := int64(seg / sitPerBlock)
	if f.piece == nil || f.pieceN != n {
		if f.piece == nil {
			f.piece = make([]byte, blockSize)
		}
		addr := f.sb.sitAddr + n
		if testBit(f.cp.sitBitmap, n) {
			addr += int64(f.sb.segSIT/2) * blocksPerSeg
		}
		f.pieceN = -1
		if err := f.readBlock(f.piece, addr); err != nil {
			return nil, err
		}
		f.pieceN = n
	}
	off := int(seg%sitPerBlock) * sitEntrySize
	return f.piece[off : off+sitEntrySize], nil
}

// testBit is f2fs_test_bit: bit n of b, most significant bit first.
func testBit(b []byte, n int64) bool {
	return n>>3 < int64(len(b)) && b[n>>3]&(0x80>>(n&7)) != 0
}

// fill marks the used blocks among blocks first, first+1, ...: every
// block before the main area, and the valid blocks of the main area.
// Blocks after it (the rest of the last zone, the rest of the partition)
// hold nothing.
func (f *fsys) fill(first int64, m *block.Map) error {
	end := first + m.Blocks()
	if first < f.sb.mainAddr {
		m.SetRange(0, min(end, f.sb.mainAddr)-first)
	}
	lo, hi := max(first, f.sb.mainAddr), min(end, f.sb.mainEnd())
	for b := lo; b < hi; {
		seg := uint32((b - f.sb.mainAddr) / blocksPerSeg)
		segStart := f.sb.mainAddr + int64(seg)*blocksPerSeg
		segEnd := min(segStart+blocksPerSeg, hi)
		e, err := f.sitEntry(seg)
		if err != nil {
			return err
		}
		vmap := e[sitMapOff : sitMapOff+sitMapSize]
		for b < segEnd {
			off := b - segStart
			v := vmap[off>>3]
			switch {
			case off&7 == 0 && b+8 <= segEnd && v == 0:
				b += 8
			case off&7 == 0 && b+8 <= segEnd && v == 0xff:
				m.SetRange(b-first, 8)
				b += 8
			default:
				if v&(0x80>>(off&7)) != 0 {
					m.Set(b - first)
				}
				b++
			}
		}
	}
	return nil
}

// vblocks splits a SIT entry's count and type.
func vblocks(e []byte) (count, typ int) {
	v := binary.LittleEndian.Uint16(e)
	return int(v & (1<<vblocksBits - 1)), int(v >> vblocksBits)
}
