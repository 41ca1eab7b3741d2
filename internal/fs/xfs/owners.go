package xfs

// This file says what holds each byte of an XFS filesystem (Owners, for
// a failing disk's report of what its unreadable sectors hit): the
// metadata of every AG by name, the internal log, the inode chunks the
// inode B-trees list, and every file and directory by path, walked from
// the root directory.
//
// A file's bytes are its inode, its data fork's extents (in the inode,
// or in a block-map B-tree whose blocks count as the file's too) and its
// attribute fork's. A directory's are the same; its entries are read
// from its data blocks (block, leaf and node directories keep their
// entries in the same data blocks, below the leaf offset) or from the
// inode (short form). Reflinked extents are in the block map of every
// file that shares them, so each of those files is named.
//
// The walk is bounded however the filesystem lies: every B-tree block is
// read once per tree and no tree is deeper than a real one can be, each
// directory is listed once, every extent is checked against its AG, and
// the blocks read for directories and block maps together never exceed
// the filesystem's size.

import (
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	sbRootIno   = 0x38
	sbRbmIno    = 0x40
	sbRsumIno   = 0x48
	sbInodeSize = 0x68
	sbInodeLog  = 0x7a
	sbInopbLog  = 0x7b
	sbUQuotIno  = 0xa0
	sbGQuotIno  = 0xa8
	sbDirBlkLog = 0xc0
	sbPQuotIno  = 0xe8

	roCompatFinobt  = 0x1
	roCompatReflink = 0x4
	incompatFtype   = 0x1
	incompatSparse  = 0x2
	features2Ftype  = 0x200

	nullIno     = ^uint64(0)
	maxAGLevels = 9 // deeper than any AG B-tree of 2^32 blocks can be
	maxBmLevels = 10
	dirLeafOff  = 32 << 30 // XFS_DIR2_LEAF_OFFSET: a directory's data blocks lie below it
)

// ownerWalk is one walk of Owners.
type ownerWalk struct {
	*fs
	visit func(vfs.Owner, []block.Extent) error

	inoSize, inopbLog, agBlkLog int64
	dirBlk                      int64 // directory block size, bytes
	ftype, sparse               bool

	inodes map[int64][]inoRec // each AG's inode chunks, by startino; an AG missing: its inobt was unreadable
	dirs   map[uint64]bool    // directories listed
	links  map[uint64][]block.Extent
	budget int64 // blocks left to read for directories and block maps
}

// inoRec is one inode B-tree record: 64 inodes from start, hole a bit
// per 4 not allocated (sparse inodes), free a bit per free inode.
type inoRec struct {
	start uint32
	hole  uint16
	free  uint64
}

// Owners walks what holds the bytes of the XFS filesystem in the size
// bytes of r (vfs.Filesystem.Owners): metadata by name ("superblock",
// "AG headers", "AG free list", "free space B-trees", "inode B-trees",
// "rmap/refcount B-trees", "inode chunk", "log", "quota", "realtime
// bitmap", "realtime summary"), then every directory and file by path.
// It fails only when the superblock cannot be read or makes no sense, or
// when visit fails.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	if size < bbSize {
		return fmt.Errorf("xfs: %w", block.ErrNotMine)
	}
	sb := make([]byte, bbSize)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return fmt.Errorf("xfs: read superblock: %w", err)
	}
	if string(sb[:4]) != "XFSB" {
		return fmt.Errorf("xfs: %w", block.ErrNotMine)
	}
	f, err := parseSuper(sb, size)
	if err != nil {
		return err
	}
	f.r = r
	w := &ownerWalk{fs: f, visit: visit, inodes: map[int64][]inoRec{}, dirs: map[uint64]bool{}, links: map[uint64][]block.Extent{},
		budget: 2 * f.dBlocks}
	w.inoSize = int64(be.Uint16(sb[sbInodeSize:]))
	w.inopbLog, w.agBlkLog = int64(sb[sbInopbLog]), int64(sb[sbAGBlkLog])
	if w.inoSize < 256 || w.inoSize > 2048 || w.inoSize != 1<<sb[sbInodeLog] || w.inoSize<<w.inopbLog != f.blockSize {
		return corrupt(sbInodeSize, "inode size %d (%d a block) is impossible with %d-byte blocks", w.inoSize, 1<<min(sb[sbInopbLog], 63), f.blockSize)
	}
	if sb[sbDirBlkLog] > 16 || f.blockSize<<sb[sbDirBlkLog] > 64<<10 {
		return corrupt(sbDirBlkLog, "directory blocks of 2^%d blocks are impossible", sb[sbDirBlkLog])
	}
	w.dirBlk = f.blockSize << sb[sbDirBlkLog]
	if f.crc {
		w.ftype = f.incompat&incompatFtype != 0
		w.sparse = f.incompat&incompatSparse != 0
	} else if be.Uint16(sb[sbVersion:])&versionMoreBit != 0 {
		w.ftype = be.Uint32(sb[sbFeatures2:])&features2Ftype != 0
	}
	roCompat := be.Uint32(sb[sbROCompat:])
	if !f.crc {
		roCompat = 0
	}

	if err := w.agMeta(roCompat); err != nil {
		return err
	}
	if f.logStart >= 0 {
		if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: "log"}, []block.Extent{{Off: f.logStart * f.blockSize, Len: f.logBlocks * f.blockSize}}); err != nil {
			return err
		}
	}
	special := []struct {
		at   int
		name string
	}{{sbRbmIno, "realtime bitmap"}, {sbRsumIno, "realtime summary"}, {sbUQuotIno, "quota"}, {sbGQuotIno, "quota"}}
	if f.crc {
		special = append(special, struct {
			at   int
			name string
		}{sbPQuotIno, "quota"})
	}
	// Each name once: the user, group and project quota files are all
	// "quota".
	var order []string
	held := map[string][]block.Extent{}
	for _, s := range special {
		ino := be.Uint64(sb[s.at:])
		if ino == 0 || ino == nullIno {
			continue
		}
		if in := w.inode(ino); in != nil {
			if _, ok := held[s.name]; !ok {
				order = append(order, s.name)
			}
			held[s.name] = append(held[s.name], w.holds(in)...)
		}
	}
	for _, name := range order {
		if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, block.MergeExtents(held[name])); err != nil {
			return err
		}
	}
	return w.tree(be.Uint64(sb[sbRootIno:]))
}

// agTree is one kind of short-form (per-AG) B-tree: its block magic on
// v4 and v5 ("" where it has none), the bytes of a node's key and of a
// leaf's record.
type agTree struct {
	v4, v5         string
	keyLen, recLen int64
}

var (
	bnoTree  = agTree{"ABTB", "AB3B", 8, 8}
	cntTree  = agTree{"ABTC", "AB3C", 8, 8}
	inoTree  = agTree{"IABT", "IAB3", 4, 16}
	finoTree = agTree{"FIBT", "FIB3", 4, 16}
	rmapTree = agTree{"", "RMB3", 40, 24} // a node keeps a low and a high key per child
	refcTree = agTree{"", "R3FC", 4, 12}
)

// agMeta visits the metadata of every AG, and keeps the inode B-trees'
// records for the file walk.
func (w *ownerWalk) agMeta(roCompat uint32) error {
	f := w.fs
	named := map[string][]block.Extent{}
	add := func(name string, es ...block.Extent) { named[name] = append(named[name], es...) }
	hdr := make([]byte, f.sectSize)
	u := func(at int) int64 { return int64(be.Uint32(hdr[at:])) }
	for ag := range f.agCount {
		base := f.agOffset(ag, 0)
		add("superblock", block.Extent{Off: base, Len: f.sectSize})
		add("AG headers", block.Extent{Off: base + f.sectSize, Len: f.firstFree*f.blockSize - f.sectSize})

		// The AGF: the free-space B-trees, the reverse-map and refcount
		// B-trees, and the free list.
		if _, err := f.r.ReadAt(hdr, base+f.sectSize); err == nil && string(hdr[:4]) == "XAGF" && u(8) == ag {
			add("free space B-trees", w.agTree(bnoTree, ag, u(16), u(28), nil)...)
			add("free space B-trees", w.agTree(cntTree, ag, u(20), u(32), nil)...)
			if f.rmapbt {
				add("rmap/refcount B-trees", w.agTree(rmapTree, ag, u(24), u(36), nil)...)
			}
			if roCompat&roCompatReflink != 0 {
				add("rmap/refcount B-trees", w.agTree(refcTree, ag, u(88), u(92), nil)...)
			}
			first, last, count := u(40), u(44), u(48)
			if first < f.agflSize && last < f.agflSize && count <= f.agflSize {
				add("AG free list", w.agfl(ag, first, count)...)
			}
		}

		// The AGI: the inode B-trees, whose records are the inode chunks.
		if _, err := f.r.ReadAt(hdr, base+2*f.sectSize); err != nil || string(hdr[:4]) != "XAGI" || u(8) != ag {
			continue
		}
		var recs []inoRec
		ok := true
		add("inode B-trees", w.agTree(inoTree, ag, u(20), u(24), func(b []byte, n int64, off int64) {
			if off < 0 {
				ok = false
				return
			}
			for i := range n {
				p := w.shortHdr() + 16*i
				r := inoRec{start: be.Uint32(b[p:]), free: be.Uint64(b[p+8:])}
				if w.sparse {
					r.hole = be.Uint16(b[p+4:])
				}
				recs = append(recs, r)
			}
		})...)
		if f.crc && roCompat&roCompatFinobt != 0 && int(f.sectSize) >= 336 {
			add("inode B-trees", w.agTree(finoTree, ag, u(328), u(332), nil)...)
		}
		sort.Slice(recs, func(i, j int) bool { return recs[i].start < recs[j].start })
		for _, r := range recs {
			for g := range int64(16) {
				if r.hole&(1<<g) != 0 {
					continue
				}
				first := int64(r.start) + 4*g
				if (first+4-1)>>w.inopbLog >= f.agLen(ag) {
					continue
				}
				add("inode chunk", block.Extent{Off: base + first*w.inoSize, Len: 4 * w.inoSize})
			}
		}
		if ok {
			w.inodes[ag] = recs
		}
	}
	for _, name := range []string{"superblock", "AG headers", "AG free list", "free space B-trees", "inode B-trees", "rmap/refcount B-trees", "inode chunk"} {
		if es := named[name]; len(es) > 0 {
			if err := w.visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, block.MergeExtents(es)); err != nil {
				return err
			}
		}
	}
	return nil
}

// shortHdr is the length of a short-form B-tree block's header.
func (w *ownerWalk) shortHdr() int64 { return w.fs.hdrLen }

// agfl returns the blocks on AG ag's free list, count entries from first.
func (w *ownerWalk) agfl(ag, first, count int64) []block.Extent {
	f := w.fs
	b := make([]byte, f.sectSize)
	if _, err := f.r.ReadAt(b, f.agOffset(ag, 0)+3*f.sectSize); err != nil {
		return nil
	}
	if f.crc {
		if string(b[:4]) != "XAFL" {
			return nil
		}
		b = b[36:]
	}
	var out []block.Extent
	for k, i := int64(0), first; k < count; k, i = k+1, (i+1)%f.agflSize {
		if bno := int64(be.Uint32(b[4*i:])); bno >= f.firstFree && bno < f.agLen(ag) {
			out = append(out, block.Extent{Off: f.agOffset(ag, bno), Len: f.blockSize})
		}
	}
	return out
}

// agTree walks the B-tree of kind t rooted at AG ag's block root, levels
// high, and returns the bytes of its blocks; leaf, if set, gets each
// leaf's block and record count, and is called with off -1 when part of
// the tree could not be read. Each block is read once.
func (w *ownerWalk) agTree(t agTree, ag, root, levels int64, leaf func(b []byte, n, off int64)) []block.Extent {
	f := w.fs
	magic := t.v4
	if f.crc {
		magic = t.v5
	}
	lost := func() {
		if leaf != nil {
			leaf(nil, 0, -1)
		}
	}
	if magic == "" || levels < 1 || levels > maxAGLevels {
		lost()
		return nil
	}
	hdr := w.shortHdr()
	leafMax := (f.blockSize - hdr) / t.recLen
	nodeMax := (f.blockSize - hdr) / (t.keyLen + 4)
	seen := map[int64]bool{}
	var out []block.Extent
	buf := make([]byte, f.blockSize)
	type item struct{ agbno, level int64 }
	stack := []item{{root, levels - 1}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if it.agbno < f.firstFree || it.agbno >= f.agLen(ag) || seen[it.agbno] {
			lost()
			continue
		}
		seen[it.agbno] = true
		off := f.agOffset(ag, it.agbno)
		if _, err := f.r.ReadAt(buf, off); err != nil {
			// Unreadable, but the parent says it is this tree's.
			out = append(out, block.Extent{Off: off, Len: f.blockSize})
			lost()
			continue
		}
		n := int64(be.Uint16(buf[6:]))
		if string(buf[:4]) != magic || int64(be.Uint16(buf[4:])) != it.level ||
			it.level == 0 && n > leafMax || it.level > 0 && n > nodeMax {
			lost()
			continue
		}
		out = append(out, block.Extent{Off: off, Len: f.blockSize})
		if it.level == 0 {
			if leaf != nil {
				leaf(buf, n, off)
			}
			continue
		}
		for i := n - 1; i >= 0; i-- {
			stack = append(stack, item{int64(be.Uint32(buf[hdr+nodeMax*t.keyLen+4*i:])), it.level - 1})
		}
	}
	return out
}

// xinode is the part of an inode the walk uses.
type xinode struct {
	ino      uint64
	b        []byte
	off      int64 // byte offset
	mode     uint16
	realtime bool
}

const (
	modeType = 0o170000
	modeDir  = 0o040000
)

// allocated says whether inode agino of AG ag is in use, as its inode
// B-tree says (true when that tree could not be read: the inode's own
// magic is all there is to go by).
func (w *ownerWalk) allocated(ag, agino int64) bool {
	recs, ok := w.inodes[ag]
	if !ok {
		return true
	}
	i := sort.Search(len(recs), func(i int) bool { return int64(recs[i].start)+64 > agino })
	if i == len(recs) || int64(recs[i].start) > agino {
		return false
	}
	k := agino - int64(recs[i].start)
	return recs[i].hole&(1<<(k/4)) == 0 && recs[i].free&(1<<k) == 0
}

// inode reads inode ino, or returns nil when it is outside the
// filesystem, not in use, unreadable or not an inode.
func (w *ownerWalk) inode(ino uint64) *xinode {
	f := w.fs
	shift := w.agBlkLog + w.inopbLog
	if shift >= 64 {
		return nil
	}
	ag, agino := int64(ino>>shift), int64(ino&(1<<shift-1))
	if ino>>shift >= uint64(f.agCount) || agino>>w.inopbLog >= f.agLen(ag) || agino>>w.inopbLog < f.firstFree || !w.allocated(ag, agino) {
		return nil
	}
	in := &xinode{ino: ino, b: make([]byte, w.inoSize), off: f.agOffset(ag, 0) + agino*w.inoSize}
	if _, err := f.r.ReadAt(in.b, in.off); err != nil || string(in.b[:2]) != "IN" || in.b[4] < 1 || in.b[4] > 3 {
		return nil
	}
	in.mode = be.Uint16(in.b[2:])
	in.realtime = be.Uint16(in.b[90:])&1 != 0
	return in
}

// forks returns the bytes of inode in's data fork (0) or attribute fork
// (1) inside the inode, and its format; nil if it has none.
func (w *ownerWalk) fork(in *xinode, which int) (b []byte, format byte) {
	core := int64(100)
	if in.b[4] == 3 {
		core = 176
	}
	forkOff := int64(in.b[82]) * 8
	if core+forkOff > w.inoSize {
		return nil, 0
	}
	if which == 0 {
		end := w.inoSize
		if forkOff > 0 {
			end = core + forkOff
		}
		return in.b[core:end], in.b[5]
	}
	if forkOff == 0 {
		return nil, 0
	}
	return in.b[core+forkOff:], in.b[83]
}

// extents is the number of extents inode in counts in a fork.
func (w *ownerWalk) extents(in *xinode, which int) int64 {
	big := in.b[4] == 3 && be.Uint64(in.b[120:])&(1<<4) != 0 // nrext64
	switch {
	case which == 0 && big:
		return int64(min(be.Uint64(in.b[24:]), 1<<40))
	case which == 0, big:
		return int64(be.Uint32(in.b[76:]))
	}
	return int64(be.Uint16(in.b[80:]))
}

// bmRec is one extent of a fork: count blocks from fsblock fsb, at block
// off of the fork.
type bmRec struct{ off, fsb, n int64 }

// extent turns an extent's fsblock (the AG number above agBlkLog bits)
// into bytes, or ok false when it is not inside one AG.
func (w *ownerWalk) extent(fsb, n int64) (block.Extent, bool) {
	f := w.fs
	ag, agbno := fsb>>w.agBlkLog, fsb&(1<<w.agBlkLog-1)
	if fsb < 0 || n <= 0 || ag >= f.agCount || agbno+n > f.agLen(ag) {
		return block.Extent{}, false
	}
	return block.Extent{Off: f.agOffset(ag, agbno), Len: n * f.blockSize}, true
}

// bmRecs decodes n packed extent records (16 bytes each) from b.
func bmRecs(b []byte, n int64, out []bmRec) []bmRec {
	for i := range n {
		hi, lo := be.Uint64(b[16*i:]), be.Uint64(b[16*i+8:])
		out = append(out, bmRec{off: int64(hi >> 9 & (1<<54 - 1)), fsb: int64(hi&0x1ff<<43 | lo>>21), n: int64(lo & (1<<21 - 1))})
	}
	return out
}

// mapping returns the extents of a fork (in the inode, or in its
// block-map B-tree) and the bytes of that B-tree's blocks.
func (w *ownerWalk) mapping(in *xinode, which int) (recs []bmRec, btree []block.Extent) {
	b, format := w.fork(in, which)
	switch format {
	case 2: // extents: as many as the inode counts (the rest of the fork may be stale)
		return bmRecs(b, min(w.extents(in, which), int64(len(b))/16), nil), nil
	case 3: // btree: the root in the inode (level, numrecs, keys, pointers)
		if len(b) < 4 {
			return nil, nil
		}
		level, n := int64(be.Uint16(b)), int64(be.Uint16(b[2:]))
		maxRecs := int64(len(b)-4) / 16
		if level < 1 || level > maxBmLevels || n > maxRecs {
			return nil, nil
		}
		for i := range n {
			recs, btree = w.bmbt(int64(be.Uint64(b[4+maxRecs*8+8*i:])), level-1, recs, btree, map[int64]bool{})
		}
	}
	return recs, btree
}

// bmbt walks the block-map B-tree block at fsblock fsb, level high.
func (w *ownerWalk) bmbt(fsb, level int64, recs []bmRec, btree []block.Extent, seen map[int64]bool) ([]bmRec, []block.Extent) {
	f := w.fs
	e, ok := w.extent(fsb, 1)
	if !ok || seen[fsb] || w.budget <= 0 {
		return recs, btree
	}
	seen[fsb] = true
	w.budget--
	btree = append(btree, e)
	buf := make([]byte, f.blockSize)
	if _, err := f.r.ReadAt(buf, e.Off); err != nil {
		return recs, btree
	}
	magic, hdr := "BMAP", int64(24)
	if f.crc {
		magic, hdr = "BMA3", 72
	}
	n := int64(be.Uint16(buf[6:]))
	if string(buf[:4]) != magic || int64(be.Uint16(buf[4:])) != level {
		return recs, btree[:len(btree)-1]
	}
	maxRecs := (f.blockSize - hdr) / 16
	if n > maxRecs {
		return recs, btree
	}
	if level == 0 {
		return bmRecs(buf[hdr:], n, recs), btree
	}
	for i := range n {
		recs, btree = w.bmbt(int64(be.Uint64(buf[hdr+maxRecs*8+8*i:])), level-1, recs, btree, seen)
	}
	return recs, btree
}

// holds returns the bytes that hold inode in: the inode itself, its
// forks' extents (a realtime file's data is on another device) and
// their block-map B-trees.
func (w *ownerWalk) holds(in *xinode) []block.Extent {
	out := []block.Extent{{Off: in.off, Len: w.inoSize}}
	for which := range 2 {
		recs, btree := w.mapping(in, which)
		out = append(out, btree...)
		if which == 0 && in.realtime {
			continue
		}
		for _, r := range recs {
			if e, ok := w.extent(r.fsb, r.n); ok {
				out = append(out, e)
			}
		}
	}
	return block.MergeExtents(out)
}

// dirEntry is a name in a directory.
type dirEntry struct {
	name string
	ino  uint64
}

// entries lists directory in's entries other than "." and "..".
func (w *ownerWalk) entries(in *xinode) []dirEntry {
	b, format := w.fork(in, 0)
	var out []dirEntry
	add := func(name []byte, ino uint64) {
		if s := string(name); s != "." && s != ".." {
			out = append(out, dirEntry{s, ino})
		}
	}
	ft := 0
	if w.ftype {
		ft = 1
	}
	if format == 1 { // short form, in the inode
		if size := int64(be.Uint64(in.b[56:])); size < int64(len(b)) {
			b = b[:max(size, 0)]
		}
		if len(b) < 2 {
			return nil
		}
		count, inoLen := int(b[0]), 4
		if b[1] > 0 {
			inoLen = 8
		}
		p := 2 + inoLen
		for range count {
			if p >= len(b) {
				break
			}
			nl := int(b[p])
			end := p + 3 + nl + ft + inoLen
			if nl == 0 || end > len(b) {
				break
			}
			var ino uint64
			if inoLen == 8 {
				ino = be.Uint64(b[end-8:])
			} else {
				ino = uint64(be.Uint32(b[end-4:]))
			}
			add(b[p+3:p+3+nl], ino)
			p = end
		}
		return out
	}
	recs, _ := w.mapping(in, 0)
	sort.Slice(recs, func(i, j int) bool { return recs[i].off < recs[j].off })
	f := w.fs
	per := w.dirBlk / f.blockSize
	leaf := int64(dirLeafOff) / f.blockSize
	buf := make([]byte, w.dirBlk)
	last := -per
	for _, r := range recs {
		// Records may overlap (damage): each directory block is read once.
		for lb := max(r.off-r.off%per, last+per); lb < r.off+r.n && lb < leaf; lb += per {
			last = lb
			if w.budget < per {
				return out
			}
			w.budget -= per
			if !w.dirBlock(recs, lb, buf) {
				continue
			}
			w.dataEntries(buf, ft, add)
		}
	}
	return out
}

// dirBlock reads the directory block at fork block lb through recs.
func (w *ownerWalk) dirBlock(recs []bmRec, lb int64, buf []byte) bool {
	f := w.fs
	for k := int64(0); k < w.dirBlk/f.blockSize; k++ {
		i := sort.Search(len(recs), func(i int) bool { return recs[i].off+recs[i].n > lb+k })
		if i == len(recs) || recs[i].off > lb+k {
			return false
		}
		e, ok := w.extent(recs[i].fsb+lb+k-recs[i].off, 1)
		if !ok {
			return false
		}
		if _, err := f.r.ReadAt(buf[k*f.blockSize:(k+1)*f.blockSize], e.Off); err != nil {
			return false
		}
	}
	return true
}

// dataEntries parses a directory data block (or a single-block
// directory's block) and adds its entries.
func (w *ownerWalk) dataEntries(b []byte, ft int, add func([]byte, uint64)) {
	hdr, end := 16, len(b)
	blockMagic, dataMagic := "XD2B", "XD2D"
	if w.fs.crc {
		hdr, blockMagic, dataMagic = 64, "XDB3", "XDD3"
	}
	switch string(b[:4]) {
	case blockMagic:
		// Its leaf entries and tail end it.
		count := int(be.Uint32(b[len(b)-8:]))
		if count > len(b)/8 {
			return
		}
		end = len(b) - 8 - 8*count
	case dataMagic:
	default:
		return
	}
	for p := hdr; p+12 <= end; {
		if be.Uint16(b[p:]) == 0xffff { // unused space: its length follows
			l := int(be.Uint16(b[p+2:]))
			if l < 8 || l%8 != 0 {
				return
			}
			p += l
			continue
		}
		nl := int(b[p+8])
		size := (8 + 1 + nl + ft + 2 + 7) &^ 7
		if nl == 0 || p+size > end {
			return
		}
		add(b[p+9:p+9+nl], be.Uint64(b[p:]))
		p += size
	}
}

// tree walks the directories from the root inode, visiting every
// directory once and every file once per name.
func (w *ownerWalk) tree(root uint64) error {
	type dir struct {
		in   *xinode
		path string
	}
	in := w.inode(root)
	if in == nil || in.mode&modeType != modeDir {
		return nil
	}
	w.dirs[root] = true
	stack := []dir{{in, "/"}}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if err := w.visit(vfs.Owner{Kind: vfs.OwnerDir, Path: d.path}, w.holds(d.in)); err != nil {
			return err
		}
		for _, e := range w.entries(d.in) {
			p := vfs.OwnerPath(d.path, e.name)
			if w.dirs[e.ino] {
				continue // a second name for a directory (damage), or a loop
			}
			child := w.inode(e.ino)
			if child == nil {
				continue
			}
			if child.mode&modeType == modeDir {
				w.dirs[e.ino] = true
				stack = append(stack, dir{child, p})
				continue
			}
			at, ok := w.links[e.ino]
			if !ok {
				at = w.holds(child)
				if be.Uint32(child.b[16:]) > 1 || child.b[4] == 1 {
					w.links[e.ino] = at
				}
			}
			if err := w.visit(vfs.Owner{Kind: vfs.OwnerFile, Path: p}, at); err != nil {
				return err
			}
		}
	}
	return nil
}
