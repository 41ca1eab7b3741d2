// Package xfs finds the used blocks of an XFS filesystem (FS describes
// it to the registry, internal/fsmap): every block its free-space
// B-trees do not call free, as far as the filesystem says it can be
// trusted (trust.go, log.go). Its files Platter leaves to the kernel,
// but it knows which file, directory or metadata holds each byte
// (Owners, owners.go: what a failing disk's unreadable sectors hit).
//
// XFS splits its data device into allocation groups (AGs). Each AG
// starts with four sectors of headers (a superblock, the AGF, the AGI,
// the AGFL) and keeps its free space in two B-trees the AGF roots: the
// bnobt (free extents by block number) and the cntbt (the same extents
// by length). Everything else in the AG (inodes, directories, file data,
// the B-trees themselves, the internal log, the blocks on the AGFL) is
// allocated, so "used" is simply "not in the bnobt", whatever features
// (reflink, rmapbt, sparse inodes) the filesystem has.
//
// The map is read a window at a time: fill looks the window up in the
// bnobt of each AG it covers, through a small cache of B-tree blocks,
// and never holds a whole AG's free space in memory.
package xfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	bbSize      = 512        // XFS's "basic block": disk and log addresses count in these
	nullAGBlock = 0xffffffff // no sibling

	versionMask    = 0x000f
	versionLogV2   = 0x0400 // sb_versionnum: version 2 log records
	versionMoreBit = 0x8000 // sb_features2 is valid
	features2Lazy  = 0x0002 // sb_features2: lazy superblock counters

	roCompatRmapbt = 0x2

	incompatMetaUUID    = 1 << 2
	incompatNeedsRepair = 1 << 4
	// incompatKnown are the incompat features whose AG headers and
	// free-space B-trees are the ones read here: ftype, sparse inodes,
	// meta_uuid, bigtime, needsrepair (refused separately), nrext64,
	// exchange-range, parent pointers, metadir.
	incompatKnown = 1<<9 - 1

	// Fields of the superblock (big-endian, byte offsets).
	sbBlockSize  = 0x04
	sbDBlocks    = 0x08
	sbUUID       = 0x20
	sbLogStart   = 0x30
	sbAGBlocks   = 0x54
	sbAGCount    = 0x58
	sbLogBlocks  = 0x60
	sbVersion    = 0x64
	sbSectSize   = 0x66
	sbFname      = 0x6c
	sbBlockLog   = 0x78
	sbSectLog    = 0x79
	sbAGBlkLog   = 0x7c
	sbInProgress = 0x7e
	sbFDBlocks   = 0x90
	sbFeatures2  = 0xc8
	sbROCompat   = 0xd4
	sbIncompat   = 0xd8
	sbCRC        = 0xe0
	sbLSN        = 0xf0
	sbMetaUUID   = 0xf8

	minAGBytes = 16 << 20 // XFS_MIN_AG_BYTES
	minAGBlks  = 64       // XFS_MIN_AG_BLOCKS
	maxAGBytes = 1 << 40  // XFS_MAX_AG_BYTES
)

var be = binary.BigEndian

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "xfs", Off: off, Msg: fmt.Sprintf(format, args...)}
}

// fs is an XFS filesystem as its primary superblock describes it. Block
// numbers are "linear": AG a's block b is a*agBlocks+b, and byte
// linear*blockSize of the device (XFS's own fsblock numbers pack the AG
// number into high bits instead; logStart is converted once, here).
type fs struct {
	r    io.ReaderAt
	size int64

	blockSize int64
	sectSize  int64
	agBlocks  int64
	agCount   int64
	dBlocks   int64
	crc       bool // version 5: checksums, UUIDs and owners in every header
	lazy      bool // lazy superblock counters (sb_fdblocks is not kept exact)
	rmapbt    bool
	logV2     bool
	uuid      [16]byte // sb_uuid: what log records carry
	metaUUID  [16]byte // what v5 metadata blocks carry
	logStart  int64    // linear block of the internal log; -1: external
	logBlocks int64
	fdBlocks  uint64
	sbLSN     uint64 // v5: the log sequence number of the superblock's last write
	logLSN    uint64 // v5: that of the last log record (logState; 0: none), which no metadata may be past
	sbLogLSN  uint64 // that of the last record of a covered log, which updates the superblock
	incompat  uint32
	inProgress,
	sbBadCRC bool

	hdrLen    int64 // short-form B-tree block header
	leafRecs  int64 // records in a full leaf
	nodeRecs  int64 // keys (and pointers) in a full node
	maxLevels int64 // the highest possible bnobt/cntbt
	agflSize  int64 // entries of the AGFL
	firstFree int64 // the first AG block past the headers

	walkBufs [][]byte // the trust checks' walks: a block per level

	mu    sync.Mutex // fill's cache
	cache blockCache
	agf   struct { // the last AGF fill read
		ag          int64
		root, level int64
	}
}

// Detect reads the XFS filesystem in r (size bytes) and returns its used
// blocks. Not XFS: an error wrapping block.ErrNotMine; a superblock whose
// geometry is impossible, or that does not fit in size: a
// *block.CorruptError. A filesystem whose log holds changes not yet
// written home, whose headers or free-space B-trees are damaged or
// disagree with each other or with the superblock, or that says it needs
// repair, is untrusted: every block counts (trust.go).
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	if size < bbSize {
		return nil, fmt.Errorf("xfs: %w", block.ErrNotMine)
	}
	sb := make([]byte, bbSize)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return nil, fmt.Errorf("xfs: read superblock: %w", err)
	}
	if string(sb[:4]) != "XFSB" {
		return nil, fmt.Errorf("xfs: %w", block.ErrNotMine)
	}
	f, err := parseSuper(sb, size)
	if err != nil {
		return nil, err
	}
	f.r = r
	if f.crc {
		full := sb
		if f.sectSize > bbSize {
			full = make([]byte, f.sectSize)
			if _, err := r.ReadAt(full, 0); err != nil {
				return nil, fmt.Errorf("xfs: read superblock: %w", err)
			}
		}
		f.sbBadCRC = !crcOK(full, sbCRC)
	}
	u, err := block.NewUsage("xfs", f.blockSize, size, f.fill)
	if err != nil {
		return nil, err
	}
	why, err := f.distrust()
	if err != nil {
		return nil, err
	}
	if why != "" {
		u.Distrust("xfs " + why)
	}
	return u, nil
}

// parseSuper checks the geometry of the primary superblock (its first
// 512 bytes) the way the kernel's superblock verifier does, as far as
// reading the free space needs it.
func parseSuper(sb []byte, size int64) (*fs, error) {
	f := &fs{size: size}
	version := be.Uint16(sb[sbVersion:])
	switch version & versionMask {
	case 4:
	case 5:
		f.crc = true
	default:
		return nil, corrupt(sbVersion, "superblock version %d is not one Linux mounts (4 or 5)", version&versionMask)
	}
	f.logV2 = f.crc || version&versionLogV2 != 0
	features2 := uint32(0)
	if f.crc || version&versionMoreBit != 0 {
		features2 = be.Uint32(sb[sbFeatures2:])
	}
	f.lazy = f.crc || features2&features2Lazy != 0

	f.blockSize = int64(be.Uint32(sb[sbBlockSize:]))
	if f.blockSize < 512 || f.blockSize > 64<<10 || f.blockSize&(f.blockSize-1) != 0 || f.blockSize != 1<<sb[sbBlockLog] {
		return nil, corrupt(sbBlockSize, "block size %d (log %d) is impossible", f.blockSize, sb[sbBlockLog])
	}
	f.sectSize = int64(be.Uint16(sb[sbSectSize:]))
	if f.sectSize < 512 || f.sectSize > 32<<10 || f.sectSize&(f.sectSize-1) != 0 || f.sectSize != 1<<sb[sbSectLog] || f.sectSize > f.blockSize {
		return nil, corrupt(sbSectSize, "sector size %d (log %d) is impossible with %d-byte blocks", f.sectSize, sb[sbSectLog], f.blockSize)
	}
	f.agBlocks = int64(be.Uint32(sb[sbAGBlocks:]))
	if f.agBlocks < minAGBlks || f.agBlocks*f.blockSize < minAGBytes || f.agBlocks*f.blockSize > maxAGBytes ||
		int(sb[sbAGBlkLog]) != bits.Len64(uint64(f.agBlocks-1)) {
		return nil, corrupt(sbAGBlocks, "AG size of %d blocks (log %d) is impossible", f.agBlocks, sb[sbAGBlkLog])
	}
	f.agCount = int64(be.Uint32(sb[sbAGCount:]))
	dblocks := be.Uint64(sb[sbDBlocks:])
	if f.agCount == 0 || dblocks > uint64(f.agCount*f.agBlocks) || dblocks < uint64((f.agCount-1)*f.agBlocks+minAGBlks) {
		return nil, corrupt(sbDBlocks, "%d blocks do not make %d AGs of %d blocks", dblocks, f.agCount, f.agBlocks)
	}
	if dblocks > uint64(size/f.blockSize) {
		return nil, corrupt(sbDBlocks, "the filesystem's %d blocks of %d bytes do not fit in %d bytes", dblocks, f.blockSize, size)
	}
	f.dBlocks = int64(dblocks)
	copy(f.uuid[:], sb[sbUUID:])
	f.metaUUID = f.uuid
	f.incompat = be.Uint32(sb[sbIncompat:])
	if f.crc && f.incompat&incompatMetaUUID != 0 {
		copy(f.metaUUID[:], sb[sbMetaUUID:])
	}
	f.rmapbt = f.crc && be.Uint32(sb[sbROCompat:])&roCompatRmapbt != 0
	f.inProgress = sb[sbInProgress] != 0
	f.fdBlocks = be.Uint64(sb[sbFDBlocks:])
	if f.crc {
		f.sbLSN = be.Uint64(sb[sbLSN:])
	}

	// The internal log, given as an XFS fsblock number (AG number in the
	// bits above agblklog), lies inside one AG.
	f.logStart = -1
	f.logBlocks = int64(be.Uint32(sb[sbLogBlocks:]))
	if ls := be.Uint64(sb[sbLogStart:]); ls != 0 {
		ag, agbno := int64(ls>>sb[sbAGBlkLog]), int64(ls&(1<<sb[sbAGBlkLog]-1))
		if ag >= f.agCount || f.logBlocks <= 0 || agbno+f.logBlocks > f.agLen(ag) {
			return nil, corrupt(sbLogStart, "internal log of %d blocks at AG %d block %d is outside its AG", f.logBlocks, ag, agbno)
		}
		f.logStart = ag*f.agBlocks + agbno
	}

	f.hdrLen = 16
	agflHdr := int64(0)
	if f.crc {
		f.hdrLen, agflHdr = 56, 36
	}
	f.leafRecs = (f.blockSize - f.hdrLen) / 8
	f.nodeRecs = (f.blockSize - f.hdrLen) / 12
	f.maxLevels = maxLevels(f.leafRecs/2, f.nodeRecs/2, (f.agBlocks+1)/2)
	f.agflSize = (f.sectSize - agflHdr) / 4
	f.firstFree = 4 * f.sectSize / f.blockSize
	if 4*f.sectSize%f.blockSize != 0 {
		f.firstFree++
	}
	return f, nil
}

// maxLevels is the kernel's xfs_btree_compute_maxlevels: the height of a
// B-tree of records whose blocks are as empty as they may be.
func maxLevels(leafMin, nodeMin, records int64) int64 {
	blocks := (records + leafMin - 1) / leafMin
	h := int64(1)
	for blocks > 1 {
		blocks = (blocks + nodeMin - 1) / nodeMin
		h++
	}
	return h
}

// agLen is the number of blocks of AG ag (the last may be short).
func (f *fs) agLen(ag int64) int64 {
	if ag == f.agCount-1 {
		return f.dBlocks - ag*f.agBlocks
	}
	return f.agBlocks
}

// agOffset is the byte offset of AG ag's block agbno.
func (f *fs) agOffset(ag, agbno int64) int64 {
	return (ag*f.agBlocks + agbno) * f.blockSize
}

// fill marks the used blocks among blocks [first, first+m.Blocks()):
// every block of the filesystem its AGs' bnobts do not call free. Past
// the filesystem's last block (a partition larger than it) nothing is
// used.
func (f *fs) fill(first int64, m *block.Map) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := min(first+m.Blocks(), f.dBlocks)
	if first >= end {
		return nil
	}
	for ag := first / f.agBlocks; ag*f.agBlocks < end; ag++ {
		base := ag * f.agBlocks
		lo, hi := max(first, base)-base, min(end, base+f.agLen(ag))-base
		// Free extents come in block order: mark the gaps between them.
		at := lo
		err := f.freeExtents(ag, lo, hi, func(start, n int64) {
			if s := max(start, lo); s > at {
				m.SetRange(base+at-first, min(s, hi)-at)
			}
			at = max(at, min(start+n, hi))
		})
		var d *damage
		if errors.As(err, &d) {
			// Checked whole when detected, so the filesystem changed
			// since (a mounted one, read before its freeze): count the
			// range used, which is always safe.
			at = lo
		} else if err != nil {
			return err
		}
		if at < hi {
			m.SetRange(base+at-first, hi-at)
		}
	}
	return nil
}

// lsnAhead says why a v5 metadata block whose log sequence number is lsn
// cannot be trusted, or "" when it can: no block can have been written
// after the log's last record (the kernel and xfs_repair call that
// corruption; read through a cache, the log predates what was read).
func (f *fs) lsnAhead(lsn uint64) string {
	if !f.crc || f.logLSN == 0 || lsn <= f.logLSN {
		return ""
	}
	return fmt.Sprintf("was written at log sequence number %s, after the log's last record (%s)", lsnString(lsn), lsnString(f.logLSN))
}

// lsnString shows a log sequence number as XFS tools do: cycle:block.
func lsnString(lsn uint64) string { return fmt.Sprintf("%d:%d", lsn>>32, lsn&0xffffffff) }

// crcOK checks the CRC32C of a v5 metadata block whose checksum (stored
// little-endian) is at byte off, computed with that field as zero.
func crcOK(b []byte, off int) bool {
	return ignoreCRCs || crcOf(b, off) == binary.LittleEndian.Uint32(b[off:])
}

// ignoreCRCs passes every checksum: set by the fuzz target, whose
// mutations of v5 structures would otherwise stop at their checksums.
var ignoreCRCs bool

func crcOf(b []byte, off int) uint32 {
	var zero [4]byte
	c := crc32Update(0, b[:off])
	c = crc32Update(c, zero[:])
	return crc32Update(c, b[off+4:])
}

// Identity returns the label (sb_fname) and UUID (sb_uuid) of the XFS
// filesystem in r as blkid shows them, from its primary superblock.
func Identity(r io.ReaderAt) (label, uuid string, err error) {
	sb := make([]byte, bbSize)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return "", "", fmt.Errorf("xfs: read superblock: %w", err)
	}
	if string(sb[:4]) != "XFSB" {
		return "", "", fmt.Errorf("xfs: %w", block.ErrNotMine)
	}
	return vfs.CString(sb[sbFname : sbFname+12]), vfs.UUID(sb[sbUUID : sbUUID+16]), nil
}
