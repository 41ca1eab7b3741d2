// Package f2fs reads what Platter needs of an F2FS filesystem (FS
// describes it to the registry, internal/fsmap): its identity (the
// superblock) and which blocks hold data. Those are every
// block before the main area (superblocks, checkpoint packs, SIT, NAT,
// SSA) and every main-area block that the current checkpoint's segment
// information table (SIT, sit.go) marks valid, as far as the
// filesystem says that table can be trusted (trust.go).
//
// The layout is fsck.f2fs's (f2fs-tools fsck/mount.c) and the kernel's
// (fs/f2fs): 4 KiB blocks in 512-block (2 MiB) segments; two superblock
// copies, in blocks 0 and 1 at byte 1024; two checkpoint packs, one a
// segment after the other, of which the valid one with the later version
// is current (checkpoint.go).
package f2fs

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	superMagic  = 0xf2f52010
	superOff    = 1024 // F2FS_SUPER_OFFSET, in blocks 0 and 1
	superLen    = 3072 // sizeof(struct f2fs_super_block)
	superCRCOff = 3068 // offsetof(struct f2fs_super_block, crc)

	blockSize    = 4096 // F2FS_BLKSIZE: the only block size Linux and f2fs-tools read
	logBlockSize = 12
	blocksPerSeg = 512 // 1 << log_blocks_per_seg, fixed at 9
	logPerSeg    = 9

	minSegments = 9            // F2FS_MIN_SEGMENTS
	maxSegments = 16 << 20 / 2 // F2FS_MAX_SEGMENT: 16 TiB of 2 MiB segments

	featureSBChecksum = 0x0800 // F2FS_FEATURE_SB_CHKSUM
	featureRO         = 0x4000 // F2FS_FEATURE_RO: made read-only, mounted read-only

	// Superblock fields fsck.f2fs reads to decide it must repair: the
	// reasons the kernel stopped checkpointing (index 0, a shutdown, is
	// not damage) and the kinds of inconsistency it met.
	stopReasonOff = 2762 // s_stop_reason[32]
	stopReasons   = 32
	errorsOff     = 2794 // s_errors[16]
	errorKinds    = 16
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "f2fs", Off: off, Msg: fmt.Sprintf(format, args...)}
}

// Super is what an F2FS superblock says.
type Super struct {
	UUID  [16]byte
	Label string // volume_name, UTF-16 on disk

	features     uint32
	blockCount   int64
	segCount     uint32 // segments from segment0 on
	segCkpt      uint32
	segSIT       uint32 // both copies
	segNAT       uint32 // both copies
	segMain      uint32
	cpAddr       int64 // = segment0_blkaddr
	sitAddr      int64
	natAddr      int64
	mainAddr     int64
	cpPayload    int64 // blocks after each pack's first (the SIT bitmap, when large)
	multiDevice  bool
	errors       bool // s_errors has a kind set
	abnormalStop bool // s_stop_reason has a reason other than a shutdown
	fromBackup   bool // the primary superblock is damaged; this is block 1's
}

// UUIDString is the UUID as blkid shows it.
func (s *Super) UUIDString() string {
	return vfs.UUID(s.UUID[:])
}

// mainEnd is the block after the main area.
func (s *Super) mainEnd() int64 { return s.mainAddr + int64(s.segMain)*blocksPerSeg }

// ReadSuper reads the superblock of the F2FS in r (size bytes): the
// primary copy, or the backup in block 1 when the primary is damaged,
// as the kernel and fsck.f2fs do. Not F2FS (no magic in the primary's
// place): an error wrapping block.ErrNotMine. Neither copy usable: a
// *block.CorruptError.
func ReadSuper(r io.ReaderAt, size int64) (*Super, error) {
	if size < 2*blockSize {
		return nil, fmt.Errorf("f2fs: %w", block.ErrNotMine)
	}
	var b [superLen]byte
	if n, err := r.ReadAt(b[:], superOff); n != len(b) {
		return nil, fmt.Errorf("f2fs: read superblock at byte %d: %w", superOff, err)
	}
	// Only the primary's magic says "F2FS": a backup alone is what is
	// left after mkswap or another mkfs wrote over an old F2FS.
	if binary.LittleEndian.Uint32(b[:]) != superMagic {
		return nil, fmt.Errorf("f2fs: %w", block.ErrNotMine)
	}
	s, err := parseSuper(b[:], superOff, size)
	if err == nil {
		return s, nil
	}
	var b2 [superLen]byte
	if n, rerr := r.ReadAt(b2[:], blockSize+superOff); n != len(b2) {
		return nil, fmt.Errorf("f2fs: read backup superblock at byte %d: %w", blockSize+superOff, rerr)
	}
	s2, err2 := parseSuper(b2[:], blockSize+superOff, size)
	if err2 != nil {
		return nil, err // the primary's damage is the one to report
	}
	s2.fromBackup = true
	return s2, nil
}

// crc is f2fs_cal_crc32: CRC-32 (IEEE, reflected) seeded with the F2FS
// magic, without the final inversion.
func crc(b []byte) uint32 {
	return ^crc32.Update(^uint32(superMagic), crc32.IEEETable, b)
}

// parseSuper checks a superblock as sanity_check_raw_super and
// sanity_check_area_boundary do (fsck/mount.c); off is where it was read.
func parseSuper(b []byte, off, size int64) (*Super, error) {
	le := binary.LittleEndian
	u32 := func(at int) uint32 { return le.Uint32(b[at:]) }
	if u32(0) != superMagic {
		return nil, corrupt(off, "superblock has no F2FS magic")
	}
	s := &Super{features: u32(2180)}
	if s.features&featureSBChecksum != 0 {
		if u32(32) != superCRCOff {
			return nil, corrupt(off+32, "superblock checksum offset %d is not %d", u32(32), superCRCOff)
		}
		if got, want := crc(b[:superCRCOff]), u32(superCRCOff); got != want {
			return nil, corrupt(off+superCRCOff, "superblock checksum %#08x does not match its contents (%#08x)", want, got)
		}
	}
	if u32(16) != logBlockSize {
		return nil, corrupt(off+16, "block size 2^%d is not the 4096 bytes Linux reads", u32(16))
	}
	if u32(20) != logPerSeg {
		return nil, corrupt(off+20, "2^%d blocks per segment, not 512", u32(20))
	}
	if ls, lspb := u32(8), u32(12); ls < 9 || ls > 12 || ls+lspb != logBlockSize {
		return nil, corrupt(off+8, "sector size 2^%d with 2^%d sectors per block is impossible", ls, lspb)
	}
	s.blockCount = int64(le.Uint64(b[36:]))
	s.segCount = u32(48)
	segsPerSec, secsPerZone, sections := u32(24), u32(28), u32(44)
	if s.segCount < minSegments || s.segCount > maxSegments {
		return nil, corrupt(off+48, "%d segments is impossible", s.segCount)
	}
	if segsPerSec == 0 || secsPerZone == 0 || sections == 0 || sections > s.segCount/segsPerSec || secsPerZone > sections {
		return nil, corrupt(off+24, "%d sections of %d segments, %d a zone, in %d segments is impossible", sections, segsPerSec, secsPerZone, s.segCount)
	}
	if int64(s.segCount) > s.blockCount>>logPerSeg {
		return nil, corrupt(off+36, "%d segments do not fit in %d blocks", s.segCount, s.blockCount)
	}
	s.cpPayload = int64(u32(1664))
	if s.cpPayload > blocksPerSeg-2 {
		return nil, corrupt(off+1664, "checkpoint payload of %d blocks does not fit a pack", s.cpPayload)
	}
	if u32(100) != 1 || u32(104) != 2 || u32(96) != 3 {
		return nil, corrupt(off+96, "reserved inode numbers (node %d, meta %d, root %d) are not 1, 2, 3", u32(100), u32(104), u32(96))
	}
	s.segCkpt, s.segSIT, s.segNAT = u32(52), u32(56), u32(60)
	segSSA := u32(64)
	s.segMain = u32(68)
	seg0 := int64(u32(72))
	s.cpAddr, s.sitAddr, s.natAddr = int64(u32(76)), int64(u32(80)), int64(u32(84))
	ssaAddr := int64(u32(88))
	s.mainAddr = int64(u32(92))
	area := func(start int64, segs uint32, next int64, what string, at int64) error {
		if start+int64(segs)*blocksPerSeg != next {
			return corrupt(off+at, "%s of %d segments from block %d does not end where the next area starts (block %d)", what, segs, start, next)
		}
		return nil
	}
	switch {
	case seg0 != s.cpAddr:
		return nil, corrupt(off+72, "segment 0 (block %d) is not the checkpoint's start (block %d)", seg0, s.cpAddr)
	case s.segCkpt < 2:
		return nil, corrupt(off+52, "%d checkpoint segments cannot hold two packs", s.segCkpt)
	case s.segSIT < 2 || s.segNAT < 2:
		return nil, corrupt(off+56, "SIT of %d and NAT of %d segments cannot hold two copies", s.segSIT, s.segNAT)
	case s.segMain == 0:
		return nil, corrupt(off+68, "no main area")
	}
	for _, e := range []error{
		area(s.cpAddr, s.segCkpt, s.sitAddr, "checkpoint area", 52),
		area(s.sitAddr, s.segSIT, s.natAddr, "SIT", 56),
		area(s.natAddr, s.segNAT, ssaAddr, "NAT", 60),
		area(ssaAddr, segSSA, s.mainAddr, "SSA", 64),
	} {
		if e != nil {
			return nil, e
		}
	}
	if s.mainEnd() > seg0+int64(s.segCount)*blocksPerSeg {
		return nil, corrupt(off+68, "main area of %d segments runs past the filesystem's %d", s.segMain, s.segCount)
	}
	if int64(s.segSIT/2)*blocksPerSeg*sitPerBlock < int64(s.segMain) {
		return nil, corrupt(off+56, "SIT of %d segments cannot describe %d main segments", s.segSIT, s.segMain)
	}
	s.multiDevice = b[2201] != 0 // devs[0].path
	if !s.multiDevice && s.mainEnd()*blockSize > size {
		return nil, corrupt(off+36, "filesystem of %d blocks does not fit in %d bytes", s.mainEnd(), size)
	}
	copy(s.UUID[:], b[108:124])
	name := make([]uint16, 0, 64)
	for i := 124; i < 124+1024; i += 2 {
		c := le.Uint16(b[i:])
		if c == 0 {
			break
		}
		name = append(name, c)
	}
	s.Label = string(utf16.Decode(name))
	for i := 1; i < stopReasons; i++ {
		s.abnormalStop = s.abnormalStop || b[stopReasonOff+i] != 0
	}
	for i := 0; i < errorKinds; i++ {
		s.errors = s.errors || b[errorsOff+i] != 0
	}
	return s, nil
}

// Detect reads the F2FS in r (size bytes) and returns its used blocks.
// Not F2FS: an error wrapping block.ErrNotMine; a superblock neither of
// whose copies can be used: a *block.CorruptError. A filesystem whose
// checkpoint cannot be followed as it stands (none valid, not cleanly
// unmounted, data to roll forward, damage fsck.f2fs would repair) is
// untrusted: every block counts.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	s, err := ReadSuper(r, size)
	if err != nil {
		return nil, err
	}
	fs := &fsys{r: r, sb: s}
	u, err := block.NewUsage("f2fs", blockSize, size, fs.fill)
	if err != nil {
		return nil, err
	}
	why, err := fs.distrust()
	if err != nil {
		return nil, err
	}
	switch {
	case why != "":
		u.Distrust("f2fs " + why)
	case s.fromBackup:
		// The backup is whole and the map follows it; the primary is
		// copied as it is (it lies before the main area), for fsck.f2fs
		// to restore from the backup as it does today.
		u.Warning = "f2fs primary superblock is damaged (its checksum or geometry is wrong): read the backup in block 1, which fsck.f2fs restores it from"
	}
	return u, nil
}

// fsys is an F2FS being read.
type fsys struct {
	r  io.ReaderAt
	sb *Super
	cp *checkpoint // the current checkpoint pack; nil until read
	// journal holds the SIT entries the current segments' summaries
	// carry, by main-area segment: they override the SIT's blocks.
	journal map[uint32][]byte

	piece  []byte // one SIT block, read by sitEntry
	pieceN int64  // its index; -1: none
}

// readBlock reads block n of the filesystem.
func (f *fsys) readBlock(p []byte, n int64) error {
	if _, err := f.r.ReadAt(p, n*blockSize); err != nil {
		return fmt.Errorf("f2fs: read block %d: %w", n, err)
	}
	return nil
}
