package ext

// This file decides how far an ext filesystem's block bitmaps can be
// trusted, and what to copy when they cannot be taken as they stand:
//
//   - A journal that needs recovery (incompat RECOVER) holds the newest
//     state of the metadata it carries; the bitmaps at home may lack
//     recent allocations. The map is widened to what any replay needs:
//     every block a journal transaction names, every copy of a block
//     bitmap in the journal OR-ed into its group, the bitmaps of groups
//     the replay initialises, and the blocks the journal's copies of
//     inodes map. Fast-commit records are not replayed here: such a
//     filesystem is copied whole.
//   - A filesystem that records errors (s_state), or whose descriptors,
//     bitmaps and free counts disagree the way e2fsck's pass 5 and
//     partclone check (a group's free count against the zero bits of its
//     bitmap, a BLOCK_UNINIT group counted as in use, the superblock's
//     count against the groups', metadata_csum checksums), will be
//     repaired by e2fsck, which may need blocks the bitmaps call free: it
//     is copied whole.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"slices"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

const (
	stateErrors      = 0x2    // s_state: errors detected
	incompatCsumSeed = 0x2000 // s_checksum_seed holds the checksum seed

	flagHugeFile = 0x40000  // i_blocks counts filesystem blocks
	flagEAInode  = 0x200000 // the inode holds an extended attribute's value

	// maxWalk bounds the extent tree and indirect blocks read for one
	// inode the journal carries, maxWalkAll for all of them, and
	// maxExtents the runs of blocks they add to the map (a few bytes
	// each): a damaged journal cannot make the walk take minutes or
	// gigabytes. Past them the filesystem is copied whole.
	maxWalk    = 1 << 16
	maxWalkAll = 1 << 20
	maxExtents = 1 << 22
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errWalkBudget ends the walk of the inodes a journal carries when they
// map more tree blocks than maxWalkAll: the filesystem is copied whole.
var errWalkBudget = &block.CorruptError{What: "ext", Msg: fmt.Sprintf("the inodes the journal carries map more than %d tree blocks", maxWalkAll)}

// crc32c is the kernel's crc32c(seed, p): no inversion before or after.
func crc32c(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

// crc16 is the kernel's crc16 (polynomial 0x8005, reflected).
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc ^= uint16(b)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// detect reads the bitmaps of the filesystem in r and decides how far
// they can be trusted; sb is the superblock.
func (f *fs) detect(r io.ReaderAt, size int64, sb []byte) (*block.Usage, error) {
	b, err := f.readBitmaps(r)
	if err != nil {
		return nil, err
	}
	u, err := block.NewUsage(f.name(), f.clusterSize, size, b.fill)
	if err != nil {
		return nil, err
	}
	name := f.name()
	distrust := func(format string, args ...any) (*block.Usage, error) {
		u.Distrust(name + " " + fmt.Sprintf(format, args...))
		return u, nil
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x3a:])&stateErrors != 0 {
		return distrust("records errors (its superblock's state says so): e2fsck would repair it, and may need blocks its bitmaps call free")
	}
	if f.roCompat&roCompatMetadataCsum != 0 && crc32c(^uint32(0), sb[:0x3fc]) != le.Uint32(sb[0x3fc:]) {
		return distrust("superblock fails its checksum: e2fsck would repair it from a backup, and may need blocks its bitmaps call free")
	}
	seed := f.csumSeed(sb)
	if f.incompat&incompatRecover == 0 {
		why, err := f.check(r, b.meta, sb, seed, true)
		if err != nil {
			return nil, err
		}
		if why != "" {
			return distrust("has allocation data that disagrees with itself: %s; e2fsck would repair it, and may need blocks its bitmaps call free", why)
		}
		return u, nil
	}

	// Its journal needs recovery.
	j, err := f.readJournal(r, size, sb)
	var ce *block.CorruptError
	switch {
	case errors.As(err, &ce):
		return distrust("needs journal recovery, but its journal cannot be followed: %v", err)
	case err != nil:
		return nil, err
	case j.fastCommit:
		return distrust("needs recovery from fast-commit records in its journal, which Platter does not replay")
	}
	if j.committed == 0 && len(j.copies) == 0 {
		// Nothing to replay: the bitmaps at home are the newest.
		why, err := f.check(r, b.meta, sb, seed, false)
		if err != nil {
			return nil, err
		}
		if why != "" {
			return distrust("has allocation data that disagrees with itself: %s; e2fsck would repair it, and may need blocks its bitmaps call free", why)
		}
		return u, nil
	}
	view := &overlay{r: r, j: j.r, bs: f.blockSize, blocks: j.replayed}
	sb2 := make([]byte, superSize)
	if err := readFull(view, sb2, superOff); err != nil {
		return nil, fmt.Errorf("ext: read the superblock as the journal leaves it: %w", err)
	}
	f2, err := parseSuper(sb2, size)
	if errors.As(err, &ce) || (err == nil && !f.sameLayout(f2)) {
		return distrust("needs journal recovery, and its journal changes the filesystem's layout (an online resize?)")
	}
	if err != nil {
		return nil, err
	}
	b2, err := f.readBitmaps(view)
	if errors.As(err, &ce) {
		return distrust("needs journal recovery, and its group descriptors as the journal leaves them are damaged: %v", err)
	}
	if err != nil {
		return nil, err
	}
	// Damage is judged on the filesystem as the replay leaves it; a
	// mounted filesystem read through its page cache is newer than its
	// journal, and is judged as it is.
	why, err := f.check(view, b2.meta, sb, seed, false)
	if err == nil && why != "" {
		var whyHome string
		if whyHome, err = f.check(r, b.meta, sb, seed, false); err == nil && whyHome == "" {
			why = ""
		}
	}
	if err != nil {
		return nil, err
	}
	if why != "" {
		return distrust("needs journal recovery, and its allocation data as the journal leaves it disagrees with itself: %s; e2fsck would repair it, and may need blocks its bitmaps call free", why)
	}
	if err := f.widen(r, view, j, b, b2); err != nil {
		if errors.As(err, &ce) {
			return distrust("needs journal recovery, and what its journal carries cannot be followed: %v", err)
		}
		return nil, err
	}
	u.Warning = fmt.Sprintf("%s needs journal recovery (it was not cleanly unmounted, or is mounted): its journal holds %d committed transaction(s) not yet written home; the blocks it names are stored too, so the copy replays its journal as the source would", name, j.committed)
	return u, nil
}

// sameLayout says whether g describes the same block groups as f: the
// features the kernel turns on and off as it runs (orphan_present,
// large_file, ...) aside.
func (f *fs) sameLayout(g *fs) bool {
	const compat = compatSparseSuper2
	const incompat = incompat64Bit | incompatMetaBG
	const roCompat = roCompatSparseSuper | roCompatBigalloc | roCompatGdtCsum | roCompatMetadataCsum
	a, b := *f, *g
	a.compat, b.compat = a.compat&compat, b.compat&compat
	a.incompat, b.incompat = a.incompat&incompat, b.incompat&incompat
	a.roCompat, b.roCompat = a.roCompat&roCompat, b.roCompat&roCompat
	return a == b
}

// csumSeed is the metadata_csum seed (the kernel's s_csum_seed).
func (f *fs) csumSeed(sb []byte) uint32 {
	if f.incompat&incompatCsumSeed != 0 {
		return binary.LittleEndian.Uint32(sb[0x270:])
	}
	return crc32c(^uint32(0), sb[0x68:0x78])
}

// descCsumOK checks group g's descriptor checksum, where it has one.
func (f *fs) descCsumOK(raw []byte, g uint64, sb []byte, seed uint32) bool {
	le := binary.LittleEndian
	var group [4]byte
	le.PutUint32(group[:], uint32(g))
	want := le.Uint16(raw[0x1e:])
	switch {
	case f.roCompat&roCompatMetadataCsum != 0:
		c := crc32c(seed, group[:])
		c = crc32c(c, raw[:0x1e])
		c = crc32c(c, []byte{0, 0})
		c = crc32c(c, raw[0x20:])
		return uint16(c) == want
	case f.roCompat&roCompatGdtCsum != 0:
		c := crc16(0xffff, sb[0x68:0x78])
		c = crc16(c, group[:])
		c = crc16(c, raw[:0x1e])
		if f.incompat&incompat64Bit != 0 {
			c = crc16(c, raw[0x20:])
		}
		return c == want
	}
	return true
}

// groupClusters is the number of clusters in group g (the last is
// shorter).
func (f *fs) groupClusters(g uint64) uint64 {
	ratio := uint64(f.clusterSize / f.blockSize)
	n := (f.blocksCount - f.groupFirst(g) + ratio - 1) / ratio
	return min(n, f.clustersPerGrp)
}

// check compares what the group descriptors of the filesystem in r say
// with its block bitmaps, as e2fsck's pass 5 and partclone do, and
// returns why they cannot be trusted ("" when they can). meta is the
// filesystem's metadata, which a BLOCK_UNINIT group holds and nothing
// else; sb is the superblock, whose free count must agree when counts
// is set (it is not kept while a journal needs recovery).
func (f *fs) check(r io.ReaderAt, meta []block.Extent, sb []byte, seed uint32, counts bool) (string, error) {
	type gd struct {
		bitmap, free uint64
		uninit       bool
		csum         uint32
		csumHi       bool
	}
	le := binary.LittleEndian
	var descs []gd
	why := ""
	fail := func(format string, args ...any) {
		if why == "" {
			why = fmt.Sprintf(format, args...)
		}
	}
	parse := func(g uint64, d groupDesc) gd {
		x := gd{bitmap: d.blockBitmap, free: d.free, uninit: d.uninit(f), csum: uint32(le.Uint16(d.raw[0x18:]))}
		if f.descSize >= 0x3a {
			x.csum |= uint32(le.Uint16(d.raw[0x38:])) << 16
			x.csumHi = true
		}
		return x
	}
	err := f.descriptors(r, func(g uint64, d groupDesc) {
		if !f.descCsumOK(d.raw, g, sb, seed) {
			fail("the descriptor of group %d fails its checksum", g)
		}
		descs = append(descs, parse(g, d))
	})
	if err != nil {
		return "", err
	}
	if why != "" {
		return why, nil
	}
	// One group's descriptor again, for a second look.
	reread := func(g uint64, buf []byte) (gd, error) {
		db := f.descBlock(g)
		if err := readFull(r, buf, int64(db)*f.blockSize); err != nil {
			return gd{}, fmt.Errorf("ext: read group descriptors at byte %d: %w", int64(db)*f.blockSize, err)
		}
		raw := buf[int64(g%f.descsPerBlock())*f.descSize:][:f.descSize]
		d := groupDesc{blockBitmap: uint64(le.Uint32(raw[0:])), free: uint64(le.Uint16(raw[0xc:])), flags: le.Uint16(raw[0x12:]), raw: raw}
		if f.descSize >= 64 {
			d.blockBitmap |= uint64(le.Uint32(raw[0x20:])) << 32
			d.free |= uint64(le.Uint16(raw[0x2c:])) << 16
		}
		return parse(g, d), nil
	}
	bm := make([]byte, f.blockSize)
	dbuf := make([]byte, f.blockSize)
	ratio := uint64(f.clusterSize / f.blockSize)
	var sum uint64
	for g := uint64(0); g < f.groups; g++ {
		d := descs[g]
		n := f.groupClusters(g)
		if d.free > n {
			return fmt.Sprintf("the descriptor of group %d counts %d free clusters of the %d it has", g, d.free, n), nil
		}
		sum += d.free
		if d.uninit {
			first := int64(f.groupFirst(g)) * f.blockSize / f.clusterSize
			m := uint64(metaClusters(meta, f.clusterSize, first, first+int64(n)))
			if d.free+m < n {
				return fmt.Sprintf("group %d is marked BLOCK_UNINIT (never used), yet its descriptor counts %d clusters in use beyond its metadata", g, n-d.free-m), nil
			}
			continue
		}
		// A mounted filesystem read through its page cache changes while
		// it is read: look again before calling a disagreement damage.
		var zeros uint64
		for try := 0; ; try++ {
			off := int64(d.bitmap) * f.blockSize
			if err := readFull(r, bm, off); err != nil {
				return "", fmt.Errorf("ext: read block bitmap of group %d at byte %d: %w", g, off, err)
			}
			zeros = n - ones(bm, n)
			if zeros == d.free || try == 2 {
				break
			}
			nd, err := reread(g, dbuf)
			if err != nil {
				return "", err
			}
			sum += nd.free - d.free
			d = nd
			if d.uninit {
				break
			}
		}
		if d.uninit {
			continue
		}
		if zeros != d.free {
			return fmt.Sprintf("the block bitmap of group %d has %d free clusters, its descriptor counts %d", g, zeros, d.free), nil
		}
		if f.roCompat&roCompatMetadataCsum != 0 {
			c := crc32c(seed, bm[:f.clustersPerGrp/8])
			if !d.csumHi {
				c &= 0xffff
			}
			if c != d.csum {
				return fmt.Sprintf("the block bitmap of group %d fails its checksum", g), nil
			}
		}
	}
	if counts {
		free := uint64(le.Uint32(sb[0xc:]))
		if f.incompat&incompat64Bit != 0 {
			free |= uint64(le.Uint32(sb[0x158:])) << 32
		}
		if free != sum*ratio {
			return fmt.Sprintf("the superblock counts %d free blocks, its group descriptors %d", free, sum*ratio), nil
		}
	}
	return "", nil
}

// ones counts the set bits among the first n of bitmap.
func ones(bitmap []byte, n uint64) uint64 {
	var c uint64
	full := n / 8
	for _, b := range bitmap[:full] {
		c += uint64(bits.OnesCount8(b))
	}
	if rest := n % 8; rest != 0 {
		c += uint64(bits.OnesCount8(bitmap[full] & (1<<rest - 1)))
	}
	return c
}

// metaClusters counts the clusters among [lo, hi) that hold a byte of
// meta (sorted, disjoint extents).
func metaClusters(meta []block.Extent, cs, lo, hi int64) int64 {
	var n int64
	last := lo - 1 // the last cluster counted
	i := sort.Search(len(meta), func(i int) bool { return meta[i].End() > lo*cs })
	for ; i < len(meta) && meta[i].Off < hi*cs; i++ {
		s := max(meta[i].Off/cs, last+1)
		e := min((meta[i].End()+cs-1)/cs, hi)
		if s < e {
			n += e - s
			last = e - 1
		}
	}
	return n
}

// widen adds to b (the bitmaps at home, read from r) what a journal
// replay may need: every home block the journal names, every copy of a
// block bitmap, the bitmaps of groups the replay initialises (b2: the
// bitmaps as the replay leaves them, read from view), and every block the
// inodes map in the inode table blocks the replay writes (read through
// view: an older copy of an inode may point at tree blocks the newest
// state has reused).
func (f *fs) widen(r io.ReaderAt, view io.ReaderAt, j *journal, b, b2 *bitmaps) error {
	b.jr, b.extra = j.r, map[uint64][]jcopy{}
	for home := range j.copies {
		b.meta = append(b.meta, block.Extent{Off: int64(home) * f.blockSize, Len: f.blockSize})
	}
	itBlocks := f.inodeTableBlocks()
	var tables []uint64 // per group: the first block of its inode table
	note := func(fromView bool) func(g uint64, d groupDesc) {
		return func(g uint64, d groupDesc) {
			if cs := j.copies[d.blockBitmap]; len(cs) > 0 && len(b.extra[g]) == 0 {
				b.extra[g] = cs
			}
			if fromView {
				if !d.uninit(f) && b.bitmap[g] == noBitmap {
					b.bitmap[g] = b2.bitmap[g]
				}
				tables = append(tables, d.inodeTable)
			}
		}
	}
	if err := f.descriptors(r, note(false)); err != nil {
		return err
	}
	if err := f.descriptors(view, note(true)); err != nil {
		return err
	}
	// The inode table blocks the journal carries: each distinct copy's
	// inodes, their blocks merged into the metadata as they come.
	slices.Sort(tables)
	inTable := func(blk uint64) bool {
		i := sort.Search(len(tables), func(i int) bool { return tables[i] > blk }) - 1
		return i >= 0 && blk < tables[i]+itBlocks
	}
	buf := make([]byte, f.blockSize)
	w := &inodeWalk{f: f, r: view, budget: maxWalkAll}
	emit := func(blk, n uint64) {
		if blk == 0 || blk >= f.blocksCount {
			return
		}
		e := block.Extent{Off: int64(blk) * f.blockSize, Len: int64(min(n, f.blocksCount-blk)) * f.blockSize}
		if k := len(b.meta) - 1; b.meta[k].End() == e.Off {
			b.meta[k].Len += e.Len
			return
		}
		b.meta = append(b.meta, e)
	}
	for home, c := range j.replayed {
		if !inTable(home) {
			continue
		}
		if err := c.read(j.r, buf); err != nil {
			return fmt.Errorf("ext: read the journal's copy of block %d: %w", home, err)
		}
		for p := int64(0); p+int64(f.inodeSize) <= f.blockSize; p += int64(f.inodeSize) {
			// Past a damaged tree, nothing e2fsck keeps: it clears what
			// points outside the filesystem or at no tree node. Too much
			// to follow, or a read that fails, ends the walk.
			err := w.inode(buf[p:p+int64(f.inodeSize)], int64(home)*f.blockSize+p, emit)
			var ce *block.CorruptError
			if errors.Is(err, errWalkBudget) || (err != nil && !errors.As(err, &ce)) {
				return err
			}
			if len(b.meta) > maxExtents {
				if b.meta = block.MergeExtents(b.meta); len(b.meta) > maxExtents/2 {
					return corrupt(int64(home)*f.blockSize, "the inodes the journal carries map more than %d separate runs of blocks", maxExtents/2)
				}
			}
		}
	}
	b.meta = block.MergeExtents(b.meta)
	return nil
}

// inodeWalk finds the blocks an inode maps, reading its extent tree or
// indirect blocks through r.
type inodeWalk struct {
	f      *fs
	r      io.ReaderAt
	read   int // tree and indirect blocks read for the current inode
	budget int // and for all inodes, left
	bufs   [maxExtentDepth + 1][]byte
}

// inode calls emit with every block the on-disk inode raw (found at byte
// off) maps: data, unwritten extents included, extent tree and indirect
// blocks, and its extended attribute block. Free inodes (no links) map
// nothing a replay keeps.
func (w *inodeWalk) inode(raw []byte, off int64, emit func(blk, n uint64)) error {
	le := binary.LittleEndian
	mode, links, flags := le.Uint16(raw), le.Uint16(raw[0x1a:]), le.Uint32(raw[0x20:])
	if mode == 0 || links == 0 {
		return nil
	}
	if acl := uint64(le.Uint32(raw[0x68:])) | uint64(le.Uint16(raw[0x76:]))<<32; acl != 0 {
		emit(acl, 1)
	}
	n := &inode{raw: raw, mode: mode, flags: flags, size: int64(uint64(le.Uint32(raw[4:])) | uint64(le.Uint32(raw[0x6c:]))<<32)}
	switch typ := mode & modeTypeFl; {
	case typ != modeReg && typ != modeDir && typ != modeLink:
		return nil // i_block holds a device number or nothing
	case flags&flagInlineData != 0:
		return nil
	case typ == modeLink && n.fastSymlink(w.f):
		return nil
	}
	w.read = 0
	ib := raw[iBlockOff : iBlockOff+iBlockSize]
	if flags&flagExtents != 0 {
		return w.extents(ib, off+iBlockOff, -1, emit)
	}
	for i := 0; i < 12; i++ {
		if p := uint64(le.Uint32(ib[4*i:])); p != 0 {
			emit(p, 1)
		}
	}
	for level := 1; level <= 3; level++ {
		if err := w.indirect(uint64(le.Uint32(ib[4*(11+level):])), level, off, emit); err != nil {
			return err
		}
	}
	return nil
}

// block reads block blk into the walk's buffer for depth d.
func (w *inodeWalk) block(blk uint64, d int, off int64) ([]byte, error) {
	if w.read++; w.read > maxWalk {
		return nil, corrupt(off, "an inode the journal carries maps more than %d tree blocks", maxWalk)
	}
	if w.budget--; w.budget < 0 {
		return nil, fmt.Errorf("ext: at byte %d: %w", off, errWalkBudget)
	}
	if blk == 0 || blk >= w.f.blocksCount {
		return nil, corrupt(off, "an inode the journal carries points at block %d, outside the filesystem", blk)
	}
	if w.bufs[d] == nil {
		w.bufs[d] = make([]byte, w.f.blockSize)
	}
	if err := readFull(w.r, w.bufs[d], int64(blk)*w.f.blockSize); err != nil {
		return nil, fmt.Errorf("ext: read block %d: %w", blk, err)
	}
	return w.bufs[d], nil
}

func (w *inodeWalk) indirect(blk uint64, level int, off int64, emit func(blk, n uint64)) error {
	if blk == 0 {
		return nil
	}
	emit(blk, 1)
	buf, err := w.block(blk, level, off)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	for i := 0; i+4 <= len(buf); i += 4 {
		p := uint64(le.Uint32(buf[i:]))
		switch {
		case p == 0:
		case level == 1:
			emit(p, 1)
		default:
			if err := w.indirect(p, level-1, off, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// extents walks an extent tree node (buf, at byte off); parent is its
// parent's depth, -1 at the root.
func (w *inodeWalk) extents(buf []byte, off int64, parent int, emit func(blk, n uint64)) error {
	le := binary.LittleEndian
	if le.Uint16(buf) != extentMagic {
		return corrupt(off, "an inode the journal carries has extent header magic %#04x", le.Uint16(buf))
	}
	entries, depth := int(le.Uint16(buf[2:])), int(le.Uint16(buf[6:]))
	switch {
	case 12+12*entries > len(buf):
		return corrupt(off, "an extent node of %d entries does not fit %d bytes", entries, len(buf))
	case depth > maxExtentDepth || (parent >= 0 && depth != parent-1):
		return corrupt(off, "an extent node of depth %d (below depth %d)", depth, parent)
	}
	for i := 0; i < entries; i++ {
		e := buf[12+12*i:]
		if depth == 0 {
			n := uint64(le.Uint16(e[4:]))
			if n > 32768 {
				n -= 32768
			}
			emit(uint64(le.Uint32(e[8:]))|uint64(le.Uint16(e[6:]))<<32, n)
			continue
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		emit(child, 1)
		cbuf, err := w.block(child, depth, off)
		if err != nil {
			return err
		}
		if err := w.extents(cbuf, int64(child)*w.f.blockSize, depth, emit); err != nil {
			return err
		}
	}
	return nil
}
