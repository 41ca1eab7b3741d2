package btrfs

// The chunk map: btrfs addresses everything by logical byte; a chunk
// maps a logical range to one or more stripes on devices. The system
// chunks are in the superblock (sys_chunk_array), enough to read the
// chunk tree, which holds them all.

import (
	"encoding/binary"
	"sort"
)

const (
	chunkItemLen = 0x30 // struct btrfs_chunk without its stripes
	stripeLen    = 0x20 // struct btrfs_stripe

	keyChunkItem = 228

	bgRAID0   = 0x8
	bgRAID1   = 0x10
	bgDUP     = 0x20
	bgRAID10  = 0x40
	bgRAID5   = 0x80
	bgRAID6   = 0x100
	bgRAID1C3 = 0x200
	bgRAID1C4 = 0x400
	bgProfile = bgRAID0 | bgRAID1 | bgDUP | bgRAID10 | bgRAID5 | bgRAID6 | bgRAID1C3 | bgRAID1C4
	bgKind    = 0x1 | 0x2 | 0x4 // data, system, metadata

	// maxLogical bounds logical addresses and lengths so that sums of two
	// never overflow.
	maxLogical = 1 << 62
)

type stripe struct {
	devid uint64
	off   int64
}

// chunk maps logical bytes [logical, logical+length).
type chunk struct {
	logical, length int64
	typ             uint64
	stripeLen       int64
	subStripes      int64
	stripes         []stripe
}

// segment is one stripe of a chunk on this device: bytes [phys,
// phys+len) of it hold stripe k of c.
type segment struct {
	phys, len int64
	c         *chunk
	k         int64
}

// parity is the number of parity stripes of a RAID5/6 chunk.
func (c *chunk) parity() int64 {
	switch c.typ & bgProfile {
	case bgRAID5:
		return 1
	case bgRAID6:
		return 2
	}
	return 0
}

// layout says how many stripes hold a copy of each byte, and over how
// many groups of stripes the chunk is striped (in stripeLen pieces).
func (c *chunk) layout() (copies, groups int64) {
	n := int64(len(c.stripes))
	switch c.typ & bgProfile {
	case bgRAID0:
		return 1, n
	case bgRAID10:
		return c.subStripes, n / c.subStripes
	case bgRAID5, bgRAID6:
		return 1, n - c.parity()
	}
	return n, 1 // single, DUP, RAID1, RAID1C3, RAID1C4: each stripe a whole copy
}

// devLen is the length of each of the chunk's stripes on its device.
func (c *chunk) devLen() int64 {
	_, groups := c.layout()
	return c.length / groups
}

// parseChunk decodes a chunk item (b, from the chunk tree or the system
// chunk array, at device byte off) for logical address logical.
func (fs *filesystem) parseChunk(logical uint64, b []byte, off int64) (*chunk, int, error) {
	le := binary.LittleEndian
	if len(b) < chunkItemLen {
		return nil, 0, damaged(off, "chunk item of %d bytes", len(b))
	}
	n := int64(le.Uint16(b[0x2c:]))
	size := chunkItemLen + int(n)*stripeLen
	if n == 0 || size > len(b) {
		return nil, 0, damaged(off, "chunk item of %d bytes with %d stripes", len(b), n)
	}
	c := &chunk{
		logical:    int64(logical),
		length:     int64(le.Uint64(b)),
		stripeLen:  int64(le.Uint64(b[0x10:])),
		typ:        le.Uint64(b[0x18:]),
		subStripes: int64(le.Uint16(b[0x2e:])),
	}
	ss := fs.sb.sectorSize
	p := c.typ & bgProfile
	want := map[uint64]int64{bgDUP: 2, bgRAID1: 2, bgRAID1C3: 3, bgRAID1C4: 4, 0: 1}
	switch {
	case logical >= maxLogical || c.length <= 0 || c.length >= maxLogical || c.logical%ss != 0 || c.length%ss != 0:
		return nil, 0, damaged(off, "chunk at logical %d of %d bytes", logical, c.length)
	case c.stripeLen < ss || c.stripeLen > 1<<30 || c.stripeLen&(c.stripeLen-1) != 0:
		return nil, 0, damaged(off, "chunk at logical %d has stripes of %d bytes", logical, c.stripeLen)
	case c.typ&bgKind == 0 || p&(p-1) != 0:
		return nil, 0, damaged(off, "chunk at logical %d has type %#x", logical, c.typ)
	case want[p] != 0 && n != want[p]:
		return nil, 0, damaged(off, "chunk at logical %d has %d stripes for its profile %#x", logical, n, p)
	case p == bgRAID10 && (c.subStripes < 2 || n%c.subStripes != 0):
		return nil, 0, damaged(off, "RAID10 chunk at logical %d has %d stripes in groups of %d", logical, n, c.subStripes)
	case n <= c.parity():
		return nil, 0, damaged(off, "RAID5/6 chunk at logical %d has %d stripes", logical, n)
	}
	c.stripes = make([]stripe, n)
	for i := range c.stripes {
		s := b[chunkItemLen+i*stripeLen:]
		c.stripes[i] = stripe{devid: le.Uint64(s), off: int64(le.Uint64(s[8:]))}
	}
	if _, groups := c.layout(); c.length%groups != 0 {
		return nil, 0, damaged(off, "chunk at logical %d of %d bytes over %d stripe groups", logical, c.length, groups)
	}
	for _, s := range c.stripes {
		if s.devid != fs.sb.devid {
			continue
		}
		if s.off < 0 || s.off > fs.size || c.devLen() > fs.size-s.off {
			return nil, 0, damaged(off, "chunk at logical %d has a stripe at bytes %d-%d, outside the %d-byte device", logical, s.off, s.off+c.devLen()-1, fs.size)
		}
	}
	return c, size, nil
}

// readSysChunks reads the superblock's system chunk array: pairs of a
// key and a chunk item.
func (fs *filesystem) readSysChunks() ([]*chunk, error) {
	le := binary.LittleEndian
	b := fs.sb.sysArray
	var out []*chunk
	for pos := 0; pos < len(b); {
		at := int64(superOff + sbSysArray + pos)
		if len(b)-pos < keyLen {
			return nil, corrupt(at, "system chunk array ends inside a key")
		}
		if b[pos+8] != keyChunkItem {
			return nil, corrupt(at, "system chunk array holds key type %d", b[pos+8])
		}
		c, n, err := fs.parseChunk(le.Uint64(b[pos+9:]), b[pos+keyLen:], at+keyLen)
		if err != nil {
			if d, ok := err.(*damage); ok {
				return nil, corrupt(d.off, "system chunk array: %s", d.msg)
			}
			return nil, err
		}
		out = append(out, c)
		pos += keyLen + n
	}
	if len(out) == 0 {
		return nil, corrupt(superOff+sbSysArraySize, "no system chunks")
	}
	return out, nil
}

// readChunks builds the chunk map: the system chunks, then the chunk
// tree. A chunk tree that cannot be read is damage.
func (fs *filesystem) readChunks() error {
	sys, err := fs.readSysChunks()
	if err != nil {
		return err
	}
	if err := fs.setChunks(sys); err != nil {
		if d, ok := err.(*damage); ok {
			return corrupt(d.off, "system chunk array: %s", d.msg)
		}
		return err
	}
	fs.seen = map[uint64]visited{}
	var all []*chunk
	root := nodeRef{at: fs.sb.chunkRoot, level: fs.sb.chunkLevel, gen: fs.sb.chunkRootGen, tree: chunkTreeID}
	err = fs.walkTree(root, true, func(b []byte, at int64) error {
		return items(b, at, func(k key, data []byte, off int64) error {
			if k.typ != keyChunkItem {
				return nil
			}
			c, _, err := fs.parseChunk(k.offset, data, off)
			if err == nil {
				all = append(all, c)
			}
			return err
		})
	})
	if err != nil {
		return err
	}
	// A system chunk the tree lacks is kept too: more is never wrong.
	have := map[int64]bool{}
	for _, c := range all {
		have[c.logical] = true
	}
	for _, c := range sys {
		if !have[c.logical] {
			all = append(all, c)
		}
	}
	return fs.setChunks(all)
}

// setChunks makes cs the chunk map, after checking that no two overlap.
func (fs *filesystem) setChunks(cs []*chunk) error {
	sort.Slice(cs, func(i, j int) bool { return cs[i].logical < cs[j].logical })
	for i := 1; i < len(cs); i++ {
		if p := cs[i-1]; p.logical+p.length > cs[i].logical {
			return damaged(-1, "chunks at logical %d (%d bytes) and %d overlap", p.logical, p.length, cs[i].logical)
		}
	}
	fs.chunks = cs
	fs.segs = fs.segs[:0]
	fs.maxSeg = 0
	for _, c := range cs {
		for k, s := range c.stripes {
			if s.devid == fs.sb.devid {
				fs.segs = append(fs.segs, segment{phys: s.off, len: c.devLen(), c: c, k: int64(k)})
				fs.maxSeg = max(fs.maxSeg, c.devLen())
			}
		}
	}
	sort.Slice(fs.segs, func(i, j int) bool { return fs.segs[i].phys < fs.segs[j].phys })
	for i := 1; i < len(fs.segs); i++ {
		// Device extents never overlap; allowing it would let a hostile
		// chunk tree make every window of the map walk every chunk.
		if p := fs.segs[i-1]; p.phys+p.len > fs.segs[i].phys {
			return damaged(-1, "chunks at logical %d and %d overlap on the device at byte %d", p.c.logical, fs.segs[i].c.logical, fs.segs[i].phys)
		}
	}
	return nil
}

// chunkAt returns the chunk holding logical byte l, or nil.
func (fs *filesystem) chunkAt(l int64) *chunk {
	i := sort.Search(len(fs.chunks), func(i int) bool { return fs.chunks[i].logical+fs.chunks[i].length > l })
	if i < len(fs.chunks) && fs.chunks[i].logical <= l {
		return fs.chunks[i]
	}
	return nil
}

// inChunk checks that logical bytes [l, l+n) lie in one chunk.
func (fs *filesystem) inChunk(l, n int64, what string) error {
	c := fs.chunkAt(l)
	if l < 0 || n <= 0 || n >= maxLogical || c == nil || l+n > c.logical+c.length {
		return damaged(-1, "%s at logical %d (%d bytes) is in no chunk", what, l, n)
	}
	return nil
}

// mirrors returns the device offsets on this device that hold logical
// bytes [l, l+n), one per copy.
func (fs *filesystem) mirrors(l, n int64) ([]int64, error) {
	if err := fs.inChunk(l, n, "tree block"); err != nil {
		return nil, err
	}
	c := fs.chunkAt(l)
	if c.parity() > 0 {
		return nil, damaged(-1, "tree block at logical %d is in a RAID5/6 chunk, which this version does not read", l)
	}
	copies, groups := c.layout()
	rel := l - c.logical
	row, within := rel/c.stripeLen, rel%c.stripeLen
	if groups > 1 && within+n > c.stripeLen {
		return nil, damaged(-1, "tree block at logical %d crosses a stripe boundary", l)
	}
	g := row % groups
	off := row/groups*c.stripeLen + within
	var out []int64
	for k := g * copies; k < (g+1)*copies; k++ {
		if s := c.stripes[k]; s.devid == fs.sb.devid {
			out = append(out, s.off+off)
		}
	}
	if len(out) == 0 {
		return nil, damaged(-1, "tree block at logical %d has no copy on this device", l)
	}
	return out, nil
}

// logical calls fn with the logical bytes that device bytes [s, e) of
// the segment hold, in pieces: logical l, device offset p, n bytes.
func (sg segment) logical(s, e int64, fn func(l, p, n int64)) {
	c := sg.c
	copies, groups := c.layout()
	if groups == 1 {
		fn(c.logical+s-sg.phys, s, e-s)
		return
	}
	g := sg.k / copies
	for p := s; p < e; {
		rel := p - sg.phys
		row, within := rel/c.stripeLen, rel%c.stripeLen
		n := min(c.stripeLen-within, e-p)
		fn(c.logical+(row*groups+g)*c.stripeLen+within, p, n)
		p += n
	}
}
