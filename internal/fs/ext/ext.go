// Package ext is all Platter knows of ext2, ext3 and ext4 (FS describes
// it to the registry, internal/fsmap): their used blocks, from the
// block-group bitmaps (Detect) as far as the filesystem says they can be
// trusted (trust.go, journal.go), their files (OpenFiles, files.go),
// their label and UUID (vfs.go), and what holds each block (Owners,
// owners.go): a lost inode table block is "inode table" metadata, and
// the files whose inodes lived in it are lost too, so it names them.
package ext

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

const (
	superOff  = 1024
	superSize = 1024
	magic     = 0xef53

	compatHasJournal   = 0x4
	compatSparseSuper2 = 0x200

	incompatFiletype   = 0x2
	incompatRecover    = 0x4
	incompatJournalDev = 0x8
	incompatMetaBG     = 0x10
	incompat64Bit      = 0x80

	roCompatSparseSuper  = 0x1
	roCompatLargeFile    = 0x2
	roCompatBtreeDir     = 0x4
	roCompatHugeFile     = 0x8
	roCompatGdtCsum      = 0x10
	roCompatBigalloc     = 0x200
	roCompatMetadataCsum = 0x400

	bgBlockUninit = 0x2

	// Incompat features whose on-disk layout this package understands:
	// everything mke2fs makes except compression and dirdata, which only
	// change file contents, not the allocation bitmaps.
	knownIncompat = 0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000
)

// fs holds the superblock fields that locate the allocation structures.
type fs struct {
	blockSize      int64
	clusterSize    int64
	blocksCount    uint64
	firstDataBlock uint64
	blocksPerGroup uint64 // blocks (not clusters) per group
	clustersPerGrp uint64
	inodesPerGroup uint64
	inodeSize      uint64
	groups         uint64
	descSize       int64
	reservedGDT    uint64
	firstMetaBG    uint64
	compat         uint32
	incompat       uint32
	roCompat       uint32
	backupBGs      [2]uint64
}

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "ext", Off: off, Msg: fmt.Sprintf(format, args...)}
}

// Detect reads the ext2/3/4 filesystem in r (size bytes) and returns its
// used blocks. Not ext: an error wrapping block.ErrNotMine. When the
// filesystem says its bitmaps cannot be taken as they stand (its journal
// needs recovery, it records errors, its counts disagree), the Usage
// carries a Warning and allows for it: see trust.go.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	sb := make([]byte, superSize)
	if size < superOff+superSize {
		return nil, fmt.Errorf("ext: %w", block.ErrNotMine)
	}
	if n, err := r.ReadAt(sb, superOff); n != superSize {
		return nil, fmt.Errorf("ext: read superblock at byte %d: %w", superOff, err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != magic {
		return nil, fmt.Errorf("ext: %w", block.ErrNotMine)
	}
	f, err := parseSuper(sb, size)
	if err != nil {
		return nil, err
	}
	return f.detect(r, size, sb)
}

func parseSuper(sb []byte, size int64) (*fs, error) {
	le := binary.LittleEndian
	f := &fs{
		blocksCount:    uint64(le.Uint32(sb[0x4:])),
		firstDataBlock: uint64(le.Uint32(sb[0x14:])),
		compat:         le.Uint32(sb[0x5c:]),
		incompat:       le.Uint32(sb[0x60:]),
		roCompat:       le.Uint32(sb[0x64:]),
		inodesPerGroup: uint64(le.Uint32(sb[0x28:])),
		inodeSize:      128,
		reservedGDT:    uint64(le.Uint16(sb[0xce:])),
		firstMetaBG:    uint64(le.Uint32(sb[0x104:])),
		descSize:       32,
	}
	logBlock, logCluster := le.Uint32(sb[0x18:]), le.Uint32(sb[0x1c:])
	if logBlock > 6 {
		return nil, corrupt(superOff+0x18, "block size 2^(10+%d) is impossible", logBlock)
	}
	f.blockSize = 1024 << logBlock
	f.clusterSize = f.blockSize
	if f.incompat&incompatJournalDev != 0 {
		return nil, corrupt(superOff+0x60, "this is an external journal device, not a filesystem")
	}
	if unknown := f.incompat &^ knownIncompat; unknown != 0 {
		return nil, corrupt(superOff+0x60, "unknown incompatible features %#x", unknown)
	}
	if le.Uint32(sb[0x4c:]) >= 1 {
		f.inodeSize = uint64(le.Uint16(sb[0x58:]))
	}
	if f.incompat&incompat64Bit != 0 {
		f.blocksCount |= uint64(le.Uint32(sb[0x150:])) << 32
		f.descSize = int64(le.Uint16(sb[0xfe:]))
		if f.descSize < 64 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return nil, corrupt(superOff+0xfe, "group descriptor size %d is impossible", f.descSize)
		}
	}
	perGroup := uint64(le.Uint32(sb[0x20:]))
	if f.roCompat&roCompatBigalloc != 0 {
		// s_blocks_per_group counts blocks, s_clusters_per_group (where
		// s_frags_per_group was) the bitmap's bits.
		if logCluster < logBlock || logCluster > 29 {
			return nil, corrupt(superOff+0x1c, "cluster size 2^(10+%d) is impossible", logCluster)
		}
		f.clusterSize = 1024 << logCluster
		f.blocksPerGroup = perGroup
		f.clustersPerGrp = uint64(le.Uint32(sb[0x24:]))
		if f.clustersPerGrp*uint64(f.clusterSize/f.blockSize) != perGroup {
			return nil, corrupt(superOff+0x24, "%d clusters per group of %d bytes do not make %d blocks of %d bytes", f.clustersPerGrp, f.clusterSize, perGroup, f.blockSize)
		}
	} else {
		f.blocksPerGroup = perGroup
		f.clustersPerGrp = perGroup
	}
	if f.compat&compatSparseSuper2 != 0 {
		f.backupBGs = [2]uint64{uint64(le.Uint32(sb[0x24c:])), uint64(le.Uint32(sb[0x250:]))}
	}
	switch {
	case f.blocksPerGroup == 0 || f.clustersPerGrp > uint64(f.blockSize)*8:
		return nil, corrupt(superOff+0x20, "%d blocks per group is impossible for %d-byte blocks", perGroup, f.blockSize)
	case f.inodesPerGroup == 0 || f.inodeSize < 128 || f.inodeSize > uint64(f.blockSize) || f.inodeSize&(f.inodeSize-1) != 0:
		return nil, corrupt(superOff+0x28, "inode geometry (%d per group, %d bytes) is impossible", f.inodesPerGroup, f.inodeSize)
	case f.firstDataBlock >= f.blocksCount || (f.blockSize > 1024 && f.firstDataBlock != 0) || f.firstDataBlock > 1:
		return nil, corrupt(superOff+0x14, "first data block %d is impossible", f.firstDataBlock)
	case f.blocksCount > uint64(size)/uint64(f.blockSize):
		return nil, corrupt(superOff+0x4, "filesystem of %d blocks of %d bytes does not fit in %d bytes", f.blocksCount, f.blockSize, size)
	}
	f.groups = (f.blocksCount - f.firstDataBlock + f.blocksPerGroup - 1) / f.blocksPerGroup
	return f, nil
}

// name decides ext2/ext3/ext4 the way blkid does: ext4 once any feature
// beyond what ext3 supports is on.
func (f *fs) name() string {
	const ext3RoCompat = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir
	const ext3Incompat = incompatFiletype | incompatRecover | incompatMetaBG
	switch {
	case f.roCompat&^ext3RoCompat != 0 || f.incompat&^ext3Incompat != 0:
		return "ext4"
	case f.compat&compatHasJournal != 0:
		return "ext3"
	}
	return "ext2"
}

func (f *fs) descsPerBlock() uint64 { return uint64(f.blockSize / f.descSize) }

// hasSuper says whether group g holds a superblock backup.
func (f *fs) hasSuper(g uint64) bool {
	switch {
	case g == 0:
		return true
	case f.compat&compatSparseSuper2 != 0:
		return g == f.backupBGs[0] || g == f.backupBGs[1]
	case g <= 1 || f.roCompat&roCompatSparseSuper == 0:
		return true
	case g&1 == 0:
		return false
	}
	return isPower(g, 3) || isPower(g, 5) || isPower(g, 7)
}

func isPower(n, base uint64) bool {
	for n%base == 0 {
		n /= base
	}
	return n == 1
}

func (f *fs) groupFirst(g uint64) uint64 { return f.firstDataBlock + g*f.blocksPerGroup }

// descBlock is the block holding group g's descriptor. The primary
// descriptors follow the block holding the superblock, which is block 1
// with 1 KiB blocks even when a bigalloc filesystem's first data block
// is 0 (as the kernel's descriptor_loc counts).
func (f *fs) descBlock(g uint64) uint64 {
	dpb := f.descsPerBlock()
	mg := g / dpb
	if f.incompat&incompatMetaBG == 0 || mg < f.firstMetaBG {
		return uint64(superOff/f.blockSize) + 1 + mg
	}
	first := mg * dpb
	b := f.groupFirst(first)
	if f.hasSuper(first) {
		b++
		if first == 0 && f.firstDataBlock == 0 && f.blockSize == 1024 {
			b++ // the boot block, then the superblock
		}
	}
	return b
}

// superAndDescBlocks lists the blocks in group g taken by the superblock
// backup and group descriptor copies (as e2fsprogs computes them for
// groups whose bitmap was never initialised).
func (f *fs) superAndDescBlocks(g uint64, mark func(blk, n uint64)) {
	start := f.groupFirst(g)
	hasSuper := f.hasSuper(g)
	if hasSuper {
		mark(start, 1)
	}
	dpb := f.descsPerBlock()
	oldDesc := (f.groups + dpb - 1) / dpb
	if f.incompat&incompatMetaBG != 0 {
		oldDesc = f.firstMetaBG
	} else {
		oldDesc += f.reservedGDT
	}
	mg := g / dpb
	if f.incompat&incompatMetaBG == 0 || mg < f.firstMetaBG {
		if hasSuper {
			mark(start+1, oldDesc)
		}
		return
	}
	if r := g % dpb; r == 0 || r == 1 || r == dpb-1 {
		b := start
		if hasSuper {
			b++
		}
		mark(b, 1)
	}
}

// hasGroupCsum says whether the group descriptors carry checksums; only
// then does the kernel believe their BLOCK_UNINIT flags.
func (f *fs) hasGroupCsum() bool { return f.roCompat&(roCompatGdtCsum|roCompatMetadataCsum) != 0 }

// readBitmaps scans the group descriptors in r and returns what fills the
// filesystem's map over all size bytes of the partition in clusters, a
// window at a time, from the block bitmaps; bytes past the filesystem's
// last block are free. Memory is a few bytes per block group (a 16 TiB
// filesystem has 131072 groups), never the bitmap itself.
func (f *fs) readBitmaps(r io.ReaderAt) (*bitmaps, error) {
	b := &bitmaps{f: f, r: r, fsBytes: int64(f.blocksCount) * f.blockSize, cached: noBitmap}
	// The boot block (and with 1 KiB blocks, block 0 before the
	// superblock) and the superblock itself.
	b.meta = append(b.meta, block.Extent{Off: 0, Len: superOff + superSize})
	markBlocks := func(blk, n uint64) {
		if blk < f.blocksCount {
			n = min(n, f.blocksCount-blk)
			b.meta = append(b.meta, block.Extent{Off: int64(blk) * f.blockSize, Len: int64(n) * f.blockSize})
		}
	}
	b.bitmap = make([]uint64, f.groups)
	err := f.descriptors(r, func(g uint64, d groupDesc) {
		if d.first {
			markBlocks(d.block, 1)
		}
		markBlocks(d.blockBitmap, 1)
		markBlocks(d.inodeBitmap, 1)
		markBlocks(d.inodeTable, f.inodeTableBlocks())
		f.superAndDescBlocks(g, markBlocks)
		b.bitmap[g] = d.blockBitmap
		if d.uninit(f) {
			// Nothing but the metadata marked above.
			b.bitmap[g] = noBitmap
		}
	})
	if err != nil {
		return nil, err
	}
	b.meta = block.MergeExtents(b.meta)
	return b, nil
}

// groupDesc is what a group descriptor says.
type groupDesc struct {
	blockBitmap, inodeBitmap, inodeTable uint64
	flags                                uint16
	free                                 uint64 // free clusters, as counted by the descriptor
	block                                uint64 // the block holding the descriptor
	first                                bool   // the first descriptor read from that block
	// raw is the descriptor's bytes, valid only during the callback.
	raw []byte
}

// uninit says the group's block bitmap was never initialised: the kernel
// believes the flag only when descriptors carry checksums.
func (d *groupDesc) uninit(f *fs) bool { return d.flags&bgBlockUninit != 0 && f.hasGroupCsum() }

func (f *fs) inodeTableBlocks() uint64 {
	return (f.inodesPerGroup*f.inodeSize + uint64(f.blockSize) - 1) / uint64(f.blockSize)
}

// descriptors reads every group's descriptor in order, a block at a time,
// checks that what it points at lies inside the filesystem, and calls fn
// with it.
func (f *fs) descriptors(r io.ReaderAt, fn func(g uint64, d groupDesc)) error {
	le := binary.LittleEndian
	itBlocks := f.inodeTableBlocks()
	buf := make([]byte, f.blockSize)
	cur := ^uint64(0)
	dpb := f.descsPerBlock()
	for g := uint64(0); g < f.groups; g++ {
		db := f.descBlock(g)
		if db != cur {
			if db >= f.blocksCount {
				return corrupt(int64(db)*f.blockSize, "group descriptor block %d of group %d is past the end", db, g)
			}
			if _, err := r.ReadAt(buf, int64(db)*f.blockSize); err != nil {
				return fmt.Errorf("ext: read group descriptors at byte %d: %w", int64(db)*f.blockSize, err)
			}
		}
		raw := buf[int64(g%dpb)*f.descSize:]
		d := groupDesc{
			blockBitmap: uint64(le.Uint32(raw[0x0:])),
			inodeBitmap: uint64(le.Uint32(raw[0x4:])),
			inodeTable:  uint64(le.Uint32(raw[0x8:])),
			flags:       le.Uint16(raw[0x12:]),
			free:        uint64(le.Uint16(raw[0xc:])),
			block:       db,
			first:       db != cur,
			raw:         raw[:f.descSize],
		}
		cur = db
		if f.descSize >= 64 {
			d.blockBitmap |= uint64(le.Uint32(raw[0x20:])) << 32
			d.inodeBitmap |= uint64(le.Uint32(raw[0x24:])) << 32
			d.inodeTable |= uint64(le.Uint32(raw[0x28:])) << 32
			d.free |= uint64(le.Uint16(raw[0x2c:])) << 16
		}
		if d.blockBitmap >= f.blocksCount || d.inodeBitmap >= f.blocksCount || d.inodeTable == 0 || d.inodeTable+itBlocks > f.blocksCount {
			off := int64(db)*f.blockSize + int64(g%dpb)*f.descSize
			return corrupt(off, "group %d points outside the filesystem (bitmaps %d, %d, inode table %d)", g, d.blockBitmap, d.inodeBitmap, d.inodeTable)
		}
		fn(g, d)
	}
	return nil
}

// noBitmap marks a group whose block bitmap was never initialised.
const noBitmap = ^uint64(0)

// bitmaps reads the block bitmaps a group at a time.
type bitmaps struct {
	f       *fs
	r       io.ReaderAt
	fsBytes int64
	bitmap  []uint64       // per group: its block bitmap's block, or noBitmap
	meta    []block.Extent // metadata bytes (and blocks a journal names), sorted and disjoint

	// Copies of block bitmaps in the journal, OR-ed into their groups'
	// bits: every copy, so the map holds whatever a replay writes.
	jr    io.ReaderAt
	extra map[uint64][]jcopy // by group

	cached uint64 // the group whose bitmap buf holds
	buf    []byte
	jbuf   []byte
}

// firstCluster is the first cluster of group g.
func (b *bitmaps) firstCluster(g uint64) int64 {
	return int64(b.f.groupFirst(g)) * b.f.blockSize / b.f.clusterSize
}

func (b *bitmaps) fill(first int64, m *block.Map) error {
	f := b.f
	cs := f.clusterSize
	end := first + m.Blocks()
	fsClusters := (b.fsBytes + cs - 1) / cs
	g := uint64(0)
	if blk := uint64(first * cs / f.blockSize); blk > f.firstDataBlock {
		g = (blk - f.firstDataBlock) / f.blocksPerGroup
	}
	for ; g < f.groups && b.firstCluster(g) < end; g++ {
		gFirst := b.firstCluster(g)
		n := min(int64(f.clustersPerGrp), fsClusters-gFirst)
		lo, hi := max(first, gFirst)-gFirst, min(end, gFirst+n)-gFirst
		for _, c := range b.extra[g] {
			if b.jbuf == nil {
				b.jbuf = make([]byte, f.blockSize)
			}
			if err := c.read(b.jr, b.jbuf); err != nil {
				return fmt.Errorf("ext: read the journal's copy of the block bitmap of group %d: %w", g, err)
			}
			setBits(m, b.jbuf, lo, hi, gFirst-first)
		}
		if b.bitmap[g] == noBitmap {
			continue
		}
		if b.cached != g {
			if b.buf == nil {
				b.buf = make([]byte, f.blockSize)
			}
			off := int64(b.bitmap[g]) * f.blockSize
			if _, err := b.r.ReadAt(b.buf, off); err != nil {
				b.cached = noBitmap
				return fmt.Errorf("ext: read block bitmap of group %d at byte %d: %w", g, off, err)
			}
			b.cached = g
		}
		setBits(m, b.buf, lo, hi, gFirst-first)
	}
	// Metadata extents that overlap the window.
	lo, hi := first*cs, min(end*cs, m.Len()+first*cs)
	i := sort.Search(len(b.meta), func(i int) bool { return b.meta[i].End() > lo })
	for ; i < len(b.meta) && b.meta[i].Off < hi; i++ {
		s, e := max(b.meta[i].Off, lo), min(b.meta[i].End(), hi)
		m.SetBytes(s-lo, e-s)
	}
	return nil
}

// setBits marks block i+delta of m for each bit i in [lo, hi) set in
// bitmap.
func setBits(m *block.Map, bitmap []byte, lo, hi, delta int64) {
	for i := lo; i < hi; {
		b := bitmap[i/8]
		switch {
		case i%8 == 0 && b == 0:
			i += 8
		case i%8 == 0 && b == 0xff && i+8 <= hi:
			m.SetRange(i+delta, 8)
			i += 8
		default:
			if b&(1<<(i%8)) != 0 {
				m.Set(i + delta)
			}
			i++
		}
	}
}
