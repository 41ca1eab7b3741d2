package image

import (
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

// Limits on what the maps block can make a reader do. A chunk with used
// blocks always has an index entry, so a reader keeps the bits of those
// chunks only, and of those only the ones partly used: memory follows
// the index and the file, not the filesystem size an area claims. What it
// must still decode is bounded absolutely.
const (
	// maxMapsBytes bounds the decoded maps block: 4 GiB is the map of
	// 128 TiB of filesystems in 4 KiB blocks, and decodes in seconds.
	maxMapsBytes = 4 << 30
	// mapWindow is how much of an area's bitmap is decoded at a time.
	mapWindow = 64 << 10
)

// mapBudget is how many bytes of partly used chunks' bits a reader keeps
// for an image file of size bytes: a partly used chunk has a frame or an
// index entry in the file, so an honest image needs far less.
func mapBudget(size int64) int64 { return 64<<20 + 16*size }

// AreaMap is an area's allocation map as a reader holds it: for each
// chunk with an index entry, whether none, some or all of its blocks are
// used, and the bits of the partly used ones. Chunks without an entry
// have no used blocks.
type AreaMap struct {
	blockSize, length, chunkSize int64
	chunks                       []uint64     // chunk numbers with any used block, sorted
	parts                        []*block.Map // per chunk: its own map, or nil when all its blocks are used
}

// BlockSize is the size of one block of the map in bytes.
func (m *AreaMap) BlockSize() int64 { return m.blockSize }

// Runs calls fn for each maximal run of used bytes inside [off, off+n)
// of the area, in order, clipped to that range and to the area. Runs
// that meet at a chunk boundary are reported separately.
func (m *AreaMap) Runs(off, n int64, fn func(block.Extent)) {
	end := min(off+n, m.length)
	off = max(off, 0)
	if off >= end {
		return
	}
	first := uint64(off / m.chunkSize)
	i := sort.Search(len(m.chunks), func(i int) bool { return m.chunks[i] >= first })
	for ; i < len(m.chunks); i++ {
		rel := int64(m.chunks[i]) * m.chunkSize
		if rel >= end {
			return
		}
		lo, hi := max(off, rel), min(end, rel+m.chunkSize, m.length)
		if p := m.parts[i]; p != nil {
			p.Runs(lo-rel, hi-lo, func(e block.Extent) { fn(block.Extent{Off: rel + e.Off, Len: e.Len}) })
		} else if lo < hi {
			fn(block.Extent{Off: lo, Len: hi - lo})
		}
	}
}

// UsedBytes is the number of bytes in used blocks.
func (m *AreaMap) UsedBytes() int64 {
	var n int64
	m.Runs(0, m.length, func(e block.Extent) { n += e.Len })
	return n
}

// WriteTo writes the map in the form block.Map.Bytes gives, a window at
// a time: for copying it into another image.
func (m *AreaMap) WriteTo(w io.Writer) (int64, error) {
	bs := m.blockSize
	total := ((m.length+bs-1)/bs + 7) / 8
	winBytes := max(int64(mapWindow), m.chunkSize/bs/8)
	zeros := make([]byte, winBytes)
	var written int64
	for done := int64(0); done < total; done += winBytes {
		nb := min(winBytes, total-done)
		start := done * 8 * bs
		wlen := min(nb*8*bs, m.length-start)
		out := zeros[:nb]
		if m.any(start, wlen) {
			win, err := block.NewMap(bs, wlen)
			if err != nil {
				return written, err
			}
			m.Runs(start, wlen, func(e block.Extent) { win.SetBytes(e.Off-start, e.Len) })
			out = win.Bytes()
			for len(out) < int(nb) { // the window's padding bits
				out = append(out, 0)
			}
		}
		n, err := w.Write(out)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// any reports whether any chunk overlapping [off, off+n) has used blocks.
func (m *AreaMap) any(off, n int64) bool {
	i := sort.Search(len(m.chunks), func(i int) bool { return int64(m.chunks[i]+1)*m.chunkSize > off })
	return i < len(m.chunks) && int64(m.chunks[i])*m.chunkSize < off+n
}

// mapsReader decodes the maps block's bitmaps into AreaMaps, checking
// every used bit against the index as it goes.
type mapsReader struct {
	ir     *Reader
	budget int64 // bytes left for partly used chunks' bits
	buf    []byte
	win    *block.Map
}

// readArea reads area i's bitmap from r (the whole of it, in the form
// block.Map.Bytes gives) and keeps what the reader needs of it.
func (mr *mapsReader) readArea(r io.Reader, i int) (*AreaMap, error) {
	a := &mr.ir.meta.Areas[i]
	bs, cs := a.BlockSize, mr.ir.meta.ChunkSize
	am := &AreaMap{blockSize: bs, length: a.Size, chunkSize: cs}
	entries := mr.ir.areaEntries(uint32(i))
	// Windows cover whole chunks: the window's blocks are a multiple of
	// the blocks of a chunk (both are powers of two).
	winBytes := int64(mapWindow)
	if cs/bs/8 > winBytes {
		winBytes = cs / bs / 8
	}
	total := ((a.Size+bs-1)/bs + 7) / 8
	for done := int64(0); done < total; done += winBytes {
		nb := min(winBytes, total-done)
		if int64(cap(mr.buf)) < nb {
			mr.buf = make([]byte, nb)
		}
		b := mr.buf[:nb]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("map of %s: %w", a.Label(), err)
		}
		start := done * 8 * bs // area byte of the window's first block
		if allZero(b) {
			continue
		}
		wlen := min(nb*8*bs, a.Size-start)
		if mr.win == nil || mr.win.Len() != wlen || mr.win.BlockSize() != bs {
			var err error
			if mr.win, err = block.NewMap(bs, wlen); err != nil {
				return nil, err
			}
		}
		if err := mr.win.Load(b); err != nil {
			return nil, fmt.Errorf("map of %s: %w", a.Label(), err)
		}
		if err := mr.keep(am, a, entries, start, mr.win); err != nil {
			return nil, err
		}
	}
	return am, nil
}

// keep records the chunks of window win (area bytes [start, start+
// win.Len())) that have used blocks.
func (mr *mapsReader) keep(am *AreaMap, a *Area, entries []Entry, start int64, win *block.Map) error {
	cs := am.chunkSize
	for rel := start / cs * cs; rel < start+win.Len(); rel += cs {
		lo, hi := max(rel, start), min(rel+cs, start+win.Len(), a.Size)
		var used int64
		win.Runs(lo-start, hi-lo, func(e block.Extent) { used += e.Len })
		if used == 0 {
			continue
		}
		k := uint64(rel / cs)
		if _, ok := findChunk(entries, k); !ok {
			return fmt.Errorf("the map of %s marks blocks of bytes %d-%d used, but the index has no entry for that chunk", a.Label(), lo, hi-1)
		}
		if n := len(am.chunks); n > 0 && am.chunks[n-1] == k {
			// A block larger than a chunk, or a chunk split between
			// windows: never, since windows hold whole chunks.
			return fmt.Errorf("the map of %s: chunk %d seen twice (internal error)", a.Label(), k)
		}
		clen := min(cs, a.Size-rel)
		var part *block.Map
		if lo != rel || hi != rel+clen || used != clen {
			p, err := block.NewMap(am.blockSize, clen)
			if err != nil {
				return err
			}
			if mr.budget -= p.ByteLen(); mr.budget < 0 {
				return fmt.Errorf("the maps hold more partly used chunks than an image of this size can (%s)", a.Label())
			}
			win.Runs(lo-start, hi-lo, func(e block.Extent) { p.SetBytes(start+e.Off-rel, e.Len) })
			part = p
		}
		am.chunks = append(am.chunks, k)
		am.parts = append(am.parts, part)
	}
	return nil
}

// areaEntries is the part of the index for area i.
func (ir *Reader) areaEntries(i uint32) []Entry {
	lo := sort.Search(len(ir.entries), func(k int) bool { return ir.entries[k].Area >= i })
	hi := sort.Search(len(ir.entries), func(k int) bool { return ir.entries[k].Area > i })
	return ir.entries[lo:hi]
}

// findChunk finds chunk k among one area's entries.
func findChunk(entries []Entry, k uint64) (Entry, bool) {
	j := sort.Search(len(entries), func(j int) bool { return entries[j].Chunk >= k })
	if j < len(entries) && entries[j].Chunk == k {
		return entries[j], true
	}
	return Entry{}, false
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
