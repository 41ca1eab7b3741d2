package block

import (
	"fmt"
	"io"
	"math/bits"
)

// Map is an allocation bitmap over a byte range of Len bytes split into
// blocks of BlockSize bytes; the last block may be short. Bit i set means
// block i (bytes [i*BlockSize, (i+1)*BlockSize)) is used.
type Map struct {
	blockSize int64
	length    int64
	words     []uint64
}

// maxMapBlocks bounds a map's size (2^34 blocks = 2 GiB of bits) so a
// hostile block count read off a disk cannot exhaust memory.
const maxMapBlocks = 1 << 34

// NewMap returns an empty map covering length bytes in blocks of blockSize.
func NewMap(blockSize, length int64) (*Map, error) {
	if blockSize <= 0 || length < 0 {
		return nil, fmt.Errorf("block: bad map geometry: block size %d, length %d", blockSize, length)
	}
	n := (length + blockSize - 1) / blockSize
	if n > maxMapBlocks {
		return nil, fmt.Errorf("block: map of %d blocks is too large", n)
	}
	return &Map{blockSize: blockSize, length: length, words: make([]uint64, (n+63)/64)}, nil
}

// BlockSize is the size of one block in bytes.
func (m *Map) BlockSize() int64 { return m.blockSize }

// Len is the number of bytes the map covers.
func (m *Map) Len() int64 { return m.length }

// Blocks is the number of blocks the map covers.
func (m *Map) Blocks() int64 { return (m.length + m.blockSize - 1) / m.blockSize }

// Set marks block i used. Out-of-range blocks are ignored.
func (m *Map) Set(i int64) {
	if i < 0 || i >= m.Blocks() {
		return
	}
	m.words[i/64] |= 1 << (uint(i) % 64)
}

// SetRange marks n blocks starting at block i used, clipped to the map.
func (m *Map) SetRange(i, n int64) {
	if i < 0 {
		n += i
		i = 0
	}
	if end := m.Blocks(); i+n > end {
		n = end - i
	}
	for n > 0 {
		w, b := i/64, uint(i)%64
		k := int64(64 - b)
		if k > n {
			k = n
		}
		var mask uint64
		if k == 64 {
			mask = ^uint64(0)
		} else {
			mask = ((1 << uint(k)) - 1) << b
		}
		m.words[w] |= mask
		i += k
		n -= k
	}
}

// SetBytes marks every block that overlaps bytes [off, off+n) used.
func (m *Map) SetBytes(off, n int64) {
	if n <= 0 {
		return
	}
	first := off / m.blockSize
	last := (off + n - 1) / m.blockSize
	m.SetRange(first, last-first+1)
}

// Test reports whether block i is used.
func (m *Map) Test(i int64) bool {
	if i < 0 || i >= m.Blocks() {
		return false
	}
	return m.words[i/64]&(1<<(uint(i)%64)) != 0
}

// Count is the number of used blocks.
func (m *Map) Count() int64 {
	var c int
	for _, w := range m.words {
		c += bits.OnesCount64(w)
	}
	return int64(c)
}

// UsedBytes is the number of bytes in used blocks (the last block counted
// at its real, possibly short, length).
func (m *Map) UsedBytes() int64 {
	var total int64
	m.Runs(0, m.length, func(e Extent) { total += e.Len })
	return total
}

// Runs calls fn for each maximal run of used bytes inside [off, off+n),
// in order, clipped to that range and to the map.
func (m *Map) Runs(off, n int64, fn func(Extent)) {
	end := off + n
	if end > m.length {
		end = m.length
	}
	if off < 0 {
		off = 0
	}
	if off >= end {
		return
	}
	i := off / m.blockSize
	last := (end - 1) / m.blockSize
	for i <= last {
		i = m.nextSet(i, last+1)
		if i > last {
			return
		}
		j := m.nextClear(i, last+1)
		s, e := i*m.blockSize, j*m.blockSize
		if s < off {
			s = off
		}
		if e > end {
			e = end
		}
		fn(Extent{Off: s, Len: e - s})
		i = j
	}
}

// Any reports whether any block overlapping [off, off+n) is used.
func (m *Map) Any(off, n int64) bool {
	found := false
	end := off + n
	if end > m.length {
		end = m.length
	}
	if off < 0 {
		off = 0
	}
	if off >= end {
		return false
	}
	i := off / m.blockSize
	last := (end - 1) / m.blockSize
	found = m.nextSet(i, last+1) <= last
	return found
}

// nextSet returns the first used block in [i, limit), or limit.
func (m *Map) nextSet(i, limit int64) int64 {
	for i < limit {
		w := m.words[i/64] >> (uint(i) % 64)
		if w != 0 {
			i += int64(bits.TrailingZeros64(w))
			if i > limit {
				return limit
			}
			return i
		}
		i = (i/64 + 1) * 64
	}
	return limit
}

// nextClear returns the first free block in [i, limit), or limit.
func (m *Map) nextClear(i, limit int64) int64 {
	for i < limit {
		w := ^m.words[i/64] >> (uint(i) % 64)
		if w != 0 {
			i += int64(bits.TrailingZeros64(w))
			if i > limit {
				return limit
			}
			return i
		}
		i = (i/64 + 1) * 64
	}
	return limit
}

// Bytes returns the bitmap as little-endian bytes: bit i of the map is
// bit i%8 of byte i/8. It is the map's on-disk form in an image.
func (m *Map) Bytes() []byte {
	n := (m.Blocks() + 7) / 8
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(m.words[i/8] >> (uint(i%8) * 8))
	}
	return out
}

// ByteLen is the length of the map's Bytes form.
func (m *Map) ByteLen() int64 { return (m.Blocks() + 7) / 8 }

// WriteTo writes the Bytes form to w a piece at a time, without making a
// copy of the whole map.
func (m *Map) WriteTo(w io.Writer) (int64, error) {
	var total int64
	buf := make([]byte, 0, 64<<10)
	n := m.ByteLen()
	for i := int64(0); i < n; i++ {
		buf = append(buf, byte(m.words[i/8]>>(uint(i%8)*8)))
		if len(buf) == cap(buf) || i == n-1 {
			k, err := w.Write(buf)
			total += int64(k)
			if err != nil {
				return total, err
			}
			buf = buf[:0]
		}
	}
	return total, nil
}

// Load replaces the map's bits with b, in the form Bytes returns; b must
// be ByteLen bytes. Bits past the last block are ignored.
func (m *Map) Load(b []byte) error {
	if int64(len(b)) != m.ByteLen() {
		return fmt.Errorf("block: %d bytes of map for %d blocks", len(b), m.Blocks())
	}
	clear(m.words)
	for i, v := range b {
		if v != 0 {
			m.words[i/8] |= uint64(v) << (uint(i%8) * 8)
		}
	}
	if r := m.Blocks() % 64; r != 0 && len(m.words) > 0 {
		m.words[len(m.words)-1] &= (1 << uint(r)) - 1
	}
	return nil
}
