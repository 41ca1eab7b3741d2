package xfs

// The free-space B-trees: reading and checking one block, walking a whole
// tree (for the trust checks), and looking a range of blocks up in the
// bnobt (for fill).

import (
	"bytes"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32Update continues a CRC32C (Go's convention: crc32Update(0, p) is
// the CRC of p, and it chains over pieces).
func crc32Update(c uint32, p []byte) uint32 { return crc32.Update(c, castagnoli, p) }

// damage is a structure that was recognised but is wrong: the filesystem
// is not to be trusted, and the message says why.
type damage struct {
	off int64
	msg string
}

func (d *damage) Error() string { return fmt.Sprintf("%s (byte %d)", d.msg, d.off) }

func damaged(off int64, format string, args ...any) error {
	return &damage{off: off, msg: fmt.Sprintf(format, args...)}
}

// tree is one kind of free-space B-tree.
type tree struct {
	name       string
	magic, crc string // v4 and v5 block magic
	byLen      bool   // records ordered by (length, start), not start
}

var (
	bnobt = &tree{"bnobt", "ABTB", "AB3B", false}
	cntbt = &tree{"cntbt", "ABTC", "AB3C", true}
)

// node is one checked B-tree block.
type node struct {
	b           []byte
	off         int64 // byte offset
	level, n    int64
	left, right int64 // siblings; -1: none
}

// rec returns leaf record i or node key i: (start block, length).
func (f *fs) rec(nd *node, i int64) (start, n int64) {
	p := f.hdrLen + 8*i
	return int64(be.Uint32(nd.b[p:])), int64(be.Uint32(nd.b[p+4:]))
}

// ptr returns node pointer i (an AG block).
func (f *fs) ptr(nd *node, i int64) int64 {
	return int64(be.Uint32(nd.b[f.hdrLen+8*f.nodeRecs+4*i:]))
}

// readNode reads AG ag's block agbno into buf as a block of t at level,
// and checks what the kernel's verifier checks: magic, level, record
// count, siblings inside the AG and, on v5, checksum, disk address,
// owning AG and UUID.
func (f *fs) readNode(t *tree, ag, agbno, level int64, buf []byte) (*node, error) {
	if agbno < f.firstFree || agbno >= f.agLen(ag) {
		return nil, damaged(f.agOffset(ag, 0), "AG %d's %s points at block %d, outside the AG's %d blocks", ag, t.name, agbno, f.agLen(ag))
	}
	off := f.agOffset(ag, agbno)
	if _, err := f.r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("xfs: read AG %d %s block %d at byte %d: %w", ag, t.name, agbno, off, err)
	}
	nd := &node{b: buf, off: off, level: int64(be.Uint16(buf[4:])), n: int64(be.Uint16(buf[6:]))}
	magic := t.magic
	if f.crc {
		magic = t.crc
	}
	switch {
	case string(buf[:4]) != magic:
		return nil, damaged(off, "AG %d's %s block %d has no %s magic", ag, t.name, agbno, magic)
	case f.crc && !crcOK(buf, 52):
		return nil, damaged(off, "AG %d's %s block %d fails its checksum", ag, t.name, agbno)
	case f.crc && be.Uint64(buf[16:]) != uint64(off/bbSize):
		return nil, damaged(off, "AG %d's %s block %d says it lives at sector %d", ag, t.name, agbno, be.Uint64(buf[16:]))
	case f.crc && !bytes.Equal(buf[32:48], f.metaUUID[:]):
		return nil, damaged(off, "AG %d's %s block %d belongs to another filesystem (UUID)", ag, t.name, agbno)
	case f.crc && int64(be.Uint32(buf[48:])) != ag:
		return nil, damaged(off, "AG %d's %s block %d says it belongs to AG %d", ag, t.name, agbno, be.Uint32(buf[48:]))
	case nd.level != level:
		return nil, damaged(off, "AG %d's %s block %d is at level %d, not %d", ag, t.name, agbno, nd.level, level)
	case level == 0 && nd.n > f.leafRecs, level > 0 && nd.n > f.nodeRecs:
		return nil, damaged(off, "AG %d's %s block %d claims %d records", ag, t.name, agbno, nd.n)
	}
	if why := f.lsnAhead(be.Uint64(buf[24:])); why != "" {
		return nil, damaged(off, "AG %d's %s block %d %s", ag, t.name, agbno, why)
	}
	for i, p := range []*int64{&nd.left, &nd.right} {
		s := int64(be.Uint32(buf[8+4*i:]))
		if s == nullAGBlock {
			*p = -1
			continue
		}
		if s < f.firstFree || s >= f.agLen(ag) || s == agbno {
			return nil, damaged(off, "AG %d's %s block %d has a sibling at block %d", ag, t.name, agbno, s)
		}
		*p = s
	}
	return nd, nil
}

// treeStats is what a walk of a whole free-space tree found.
type treeStats struct {
	blocks  int64  // B-tree blocks
	recs    int64  // free extents
	free    int64  // free blocks
	longest int64  // the longest free extent
	sum     uint64 // a fingerprint of the set of extents, in any order
}

// mix is SplitMix64's finaliser: the fingerprint of one extent. Sums of
// them compare two trees' extents as sets without sorting either.
func mix(start, n int64) uint64 {
	x := uint64(start)<<32 | uint64(n)
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// walker walks a whole free-space tree of one AG in key order and checks
// it as xfs_repair's scan does: every block (readNode), every record
// inside the AG, past its headers and outside the log, records in strict
// key order across leaves, each child's first key equal to the key its
// parent holds for it, and siblings linked level by level.
//
// Strict key order is also what bounds the walk: a block reached twice
// (a loop, or two pointers to one child) repeats a key and stops it, so
// no set of visited blocks is needed, and however an AG lies the walk
// reads no more blocks than it has free extents, times the depth.
type walker struct {
	f       *fs
	t       *tree
	ag      int64
	log     [2]int64 // AG blocks [lo, hi) of the internal log, if in this AG
	bufs    [][]byte // one per level
	prev    []int64  // the previous block at each level (-1: none)
	prevR   []int64  // its right sibling
	st      treeStats
	lastS   int64 // the previous record
	lastN   int64
	hasLast bool
}

func (f *fs) walkTree(t *tree, ag, root, levels int64) (treeStats, error) {
	w := &walker{f: f, t: t, ag: ag, log: [2]int64{-1, -1}}
	if f.logStart >= 0 && f.logStart/f.agBlocks == ag {
		lo := f.logStart - ag*f.agBlocks
		w.log = [2]int64{lo, lo + f.logBlocks}
	}
	for len(f.walkBufs) < int(levels) {
		f.walkBufs = append(f.walkBufs, make([]byte, f.blockSize))
	}
	w.bufs = f.walkBufs
	for range levels {
		w.prev = append(w.prev, -1)
		w.prevR = append(w.prevR, -1)
	}
	if err := w.visit(root, levels-1, nil); err != nil {
		return w.st, err
	}
	for lvl := range levels {
		if w.prevR[lvl] != -1 {
			return w.st, damaged(f.agOffset(ag, w.prev[lvl]), "AG %d's %s: the last block at level %d has a right sibling %d", ag, t.name, lvl, w.prevR[lvl])
		}
	}
	return w.st, nil
}

// visit walks the subtree at agbno; key, if not nil, is the key its
// parent holds for it.
func (w *walker) visit(agbno, level int64, key *[2]int64) error {
	f, t, ag := w.f, w.t, w.ag
	nd, err := f.readNode(t, ag, agbno, level, w.bufs[level])
	if err != nil {
		return err
	}
	w.st.blocks++
	where := func(format string, args ...any) error {
		return damaged(nd.off, "AG %d's %s block %d: %s", ag, t.name, agbno, fmt.Sprintf(format, args...))
	}
	if nd.n == 0 && key != nil {
		return where("a block below the root has no records")
	}
	if nd.left != w.prev[level] || w.prevR[level] != -1 && w.prevR[level] != agbno || w.prev[level] != -1 && w.prevR[level] == -1 {
		return where("its siblings do not link it to the block before it at level %d (%d)", level, w.prev[level])
	}
	w.prev[level], w.prevR[level] = agbno, nd.right
	if key != nil {
		s, n := f.rec(nd, 0)
		if s != key[0] || t.byLen && n != key[1] {
			return where("its first key (%d, %d) is not its parent's (%d, %d)", s, n, key[0], key[1])
		}
	}
	if level > 0 {
		for i := range nd.n {
			s, n := f.rec(nd, i)
			// Each level has its own buffer: nd stays valid below.
			if err := w.visit(f.ptr(nd, i), level-1, &[2]int64{s, n}); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range nd.n {
		s, n := f.rec(nd, i)
		switch {
		case n == 0 || s < f.firstFree || s+n > f.agLen(ag):
			return where("free extent (%d, %d) is not inside the AG's blocks %d-%d", s, n, f.firstFree, f.agLen(ag)-1)
		case s < w.log[1] && s+n > w.log[0]:
			return where("free extent (%d, %d) covers part of the log", s, n)
		case w.hasLast && !t.byLen && s < w.lastS+w.lastN:
			return where("free extent (%d, %d) is out of order or overlaps (%d, %d)", s, n, w.lastS, w.lastN)
		case w.hasLast && t.byLen && (n < w.lastN || n == w.lastN && s <= w.lastS):
			return where("free extent (%d, %d) is out of order after (%d, %d)", s, n, w.lastS, w.lastN)
		}
		w.lastS, w.lastN, w.hasLast = s, n, true
		w.st.recs++
		w.st.free += n
		w.st.longest = max(w.st.longest, n)
		w.st.sum += mix(s, n)
	}
	return nil
}

// blockCache holds checked bnobt blocks for fill, whose windows come in
// order and mostly fall in the same leaves and always under the same
// nodes. It is bounded in bytes; the oldest block goes first.
type blockCache struct {
	blocks map[int64]*node
	order  []int64
	limit  int
}

const cacheBytes = 4 << 20

func (c *blockCache) get(off int64) *node { return c.blocks[off] }

func (c *blockCache) put(nd *node, blockSize int64) {
	if c.blocks == nil {
		c.blocks = map[int64]*node{}
		c.limit = max(16, int(cacheBytes/blockSize))
	}
	if len(c.order) >= c.limit {
		delete(c.blocks, c.order[0])
		c.order = c.order[1:]
	}
	c.blocks[nd.off] = nd
	c.order = append(c.order, nd.off)
}

// cachedNode is readNode through the cache.
func (f *fs) cachedNode(ag, agbno, level int64) (*node, error) {
	if agbno >= f.firstFree && agbno < f.agLen(ag) {
		if nd := f.cache.get(f.agOffset(ag, agbno)); nd != nil {
			if nd.level != level {
				return nil, damaged(nd.off, "AG %d's bnobt block %d is at level %d, not %d", ag, agbno, nd.level, level)
			}
			return nd, nil
		}
	}
	nd, err := f.readNode(bnobt, ag, agbno, level, make([]byte, f.blockSize))
	if err != nil {
		return nil, err
	}
	f.cache.put(nd, f.blockSize)
	return nd, nil
}

// freeExtents calls fn, in block order, with every free extent of AG ag
// that overlaps AG blocks [lo, hi), from its bnobt: down from the root to
// the leaf that holds the extent at or before lo, then along the leaves.
// The tree was checked whole when the filesystem was detected; these
// blocks are checked again as read, and a *damage error means it has
// changed since.
func (f *fs) freeExtents(ag, lo, hi int64, fn func(start, n int64)) error {
	root, levels, err := f.bnoRoot(ag)
	if err != nil {
		return err
	}
	agbno := root
	for level := levels - 1; level > 0; level-- {
		nd, err := f.cachedNode(ag, agbno, level)
		if err != nil {
			return err
		}
		if nd.n == 0 {
			return damaged(nd.off, "AG %d's bnobt node %d has no keys", ag, agbno)
		}
		// The last key at or before lo (keys are the first block of
		// each subtree; the extent holding lo starts at or before it).
		i := int64(0)
		for k := int64(1); k < nd.n; k++ {
			if s, _ := f.rec(nd, k); s > lo {
				break
			}
			i = k
		}
		agbno = f.ptr(nd, i)
	}
	end := int64(-1)
	for first := true; ; first = false {
		nd, err := f.cachedNode(ag, agbno, 0)
		if err != nil {
			return err
		}
		if nd.n == 0 && !first {
			return damaged(nd.off, "AG %d's bnobt leaf %d has no records", ag, agbno)
		}
		for i := range nd.n {
			s, n := f.rec(nd, i)
			if n == 0 || s < end || s+n > f.agLen(ag) {
				return damaged(nd.off, "AG %d's bnobt leaf %d: free extent (%d, %d) out of order or outside the AG", ag, agbno, s, n)
			}
			end = s + n
			if s >= hi {
				return nil
			}
			if end > lo {
				fn(s, n)
			}
		}
		if nd.right < 0 {
			return nil
		}
		agbno = nd.right
	}
}

// bnoRoot returns the bnobt root and height of AG ag from its AGF
// (checked again: see freeExtents).
func (f *fs) bnoRoot(ag int64) (root, levels int64, err error) {
	if f.agf.level > 0 && f.agf.ag == ag {
		return f.agf.root, f.agf.level, nil
	}
	a, err := f.readAGF(ag, make([]byte, f.sectSize))
	if err != nil {
		return 0, 0, err
	}
	f.agf.ag, f.agf.root, f.agf.level = ag, a.roots[0], a.levels[0]
	return a.roots[0], a.levels[0], nil
}
