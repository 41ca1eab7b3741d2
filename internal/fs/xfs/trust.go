package xfs

// This file decides whether an XFS filesystem's free-space B-trees can be
// followed. They cannot when mounting or repairing it may need blocks
// they call free:
//
//   - its log holds changes not yet written home (log.go): the AGFs and
//     B-trees at home are older than the filesystem, and mounting
//     replays the log over them;
//   - xfs_repair would rebuild them: the superblock fails its checksum,
//     says mkfs never finished or that it needs repair; an AGF or AGFL
//     is damaged; the bnobt or cntbt is damaged (a block's magic,
//     checksum, disk address, owner, level, record count, siblings or
//     keys, a free extent outside its AG, over its headers or the log,
//     or out of order); the two trees do not hold the same extents; or
//     their totals disagree with the AGF's free-block count, longest
//     extent and B-tree block count, or with the superblock's free-block
//     count (below);
//   - on v5, what was read is not one filesystem at one moment: a
//     superblock, AGF, AGFL or B-tree block stamped with a log sequence
//     number past the log's last record (xfs_repair: "metadata LSN
//     ahead of log"), or, with a covered log, a superblock older than
//     the log's last update of it. Both are what a mounted XFS read
//     through its device's page cache gives when that cache holds pages
//     from before (XFS writes around it), as well as damage.
//
// sb_fdblocks: on a filesystem with lazy counters (every v5 one, and v4
// made with lazy-count=1) the kernel keeps the free count in memory and
// writes it to the superblock only when it unmounts, freezes or covers
// an idle log. After a clean unmount it trusts that count at the next
// mount, so it must equal what the AGFs hold (the free extents, the AGFL
// blocks and the B-tree blocks past each root, as the kernel and
// xfs_repair count it); xfs_repair reports a difference. When the log is
// covered (frozen, or idle while mounted) the count written is the free
// space less what the mounted kernel held in reserve, so it may only be
// smaller; the kernel counts again from the AGFs when it mounts such a
// filesystem. Either way a larger count than the AGFs hold is damage.

import (
	"bytes"
	"errors"
	"fmt"
)

// repairs ends every reason given for damage.
const repairs = ": xfs_repair would repair it, and may need blocks its free-space B-trees call free"

// distrust returns why the filesystem's free-space B-trees cannot be
// followed ("" when they can).
func (f *fs) distrust() (string, error) {
	switch {
	case f.sbBadCRC:
		return "has a superblock that fails its checksum" + repairs, nil
	case f.inProgress:
		return "was never finished by mkfs (sb_inprogress is set): Linux does not mount it", nil
	case f.incompat&incompatNeedsRepair != 0:
		return "is marked as needing repair (the needsrepair feature)" + repairs, nil
	case f.incompat&^incompatKnown != 0:
		return fmt.Sprintf("uses incompatible features Platter does not know (%#x), which may change how it keeps free space", f.incompat&^incompatKnown), nil
	case f.logStart < 0:
		return "keeps its log on another device: whether that log holds changes not yet written home cannot be told from this one", nil
	}
	state, why, err := f.logState()
	if err != nil || why != "" {
		return why, err
	}
	// The superblock is written home when the log is covered, after the
	// record that logs it last: one that is older was read from a cache
	// that predates the filesystem's last writes (a mounted XFS read
	// through its device's page cache), or is damaged.
	if why := f.lsnAhead(f.sbLSN); why != "" {
		return "has a superblock that " + why + repairs, nil
	}
	if f.crc && state == logCovered && f.sbLSN != f.sbLogLSN {
		return fmt.Sprintf("has a superblock last written at log sequence number %s, but its log last updates it at %s: what was read predates the filesystem's last writes (a cache?), or it is damaged", lsnString(f.sbLSN), lsnString(f.sbLogLSN)), nil
	}
	counted, err := f.checkAGs()
	var d *damage
	if errors.As(err, &d) {
		return "is damaged (" + d.msg + ")" + repairs, nil
	}
	if err != nil {
		return "", err
	}
	switch {
	case state == logClean && f.fdBlocks != uint64(counted):
		return fmt.Sprintf("was cleanly unmounted, but its superblock counts %d free blocks and its AGs %d%s", f.fdBlocks, counted, repairs), nil
	case f.fdBlocks > uint64(counted):
		return fmt.Sprintf("has a superblock that counts %d free blocks, more than its AGs hold (%d)%s", f.fdBlocks, counted, repairs), nil
	}
	return "", nil
}

// agfInfo is what an AGF says of its AG.
type agfInfo struct {
	off                         int64
	roots, levels               [3]int64 // bnobt, cntbt, rmapbt
	flFirst, flLast, flCount    int64
	freeBlks, longest, btreeBlk int64
	rmapBlocks                  int64
}

// readAGF reads and checks AG ag's AGF (the sector after its superblock)
// as the kernel's AGF verifier does.
func (f *fs) readAGF(ag int64, buf []byte) (*agfInfo, error) {
	off := f.agOffset(ag, 0) + f.sectSize
	if _, err := f.r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("xfs: read AG %d's AGF at byte %d: %w", ag, off, err)
	}
	u := func(at int) int64 { return int64(be.Uint32(buf[at:])) }
	a := &agfInfo{off: off, flFirst: u(40), flLast: u(44), flCount: u(48), freeBlks: u(52), longest: u(56), btreeBlk: u(60), rmapBlocks: u(80)}
	for i := range 3 {
		a.roots[i], a.levels[i] = u(16+4*i), u(28+4*i)
	}
	bad := func(format string, args ...any) error {
		return damaged(off, "AG %d's AGF %s", ag, fmt.Sprintf(format, args...))
	}
	length := f.agLen(ag)
	switch {
	case string(buf[:4]) != "XAGF" || u(4) != 1:
		return nil, bad("has no XAGF magic")
	case f.crc && !crcOK(buf, 216):
		return nil, bad("fails its checksum")
	case f.crc && !bytes.Equal(buf[64:80], f.metaUUID[:]):
		return nil, bad("belongs to another filesystem (UUID)")
	case u(8) != ag:
		return nil, bad("says it is AG %d's", u(8))
	case u(12) != length:
		return nil, bad("says the AG has %d blocks, not %d", u(12), length)
	case a.flFirst >= f.agflSize || a.flLast >= f.agflSize || a.flCount > f.agflSize:
		return nil, bad("has free list first %d, last %d, count %d in an AGFL of %d", a.flFirst, a.flLast, a.flCount, f.agflSize)
	case a.freeBlks > length || a.longest > a.freeBlks || a.btreeBlk > length || a.rmapBlocks > length:
		return nil, bad("counts %d free blocks, a longest extent of %d, %d B-tree blocks in %d", a.freeBlks, a.longest, a.btreeBlk, length)
	}
	if f.crc {
		if why := f.lsnAhead(be.Uint64(buf[208:])); why != "" {
			return nil, bad("%s", why)
		}
	}
	for i, name := range []string{"bnobt", "cntbt"} {
		if a.levels[i] < 1 || a.levels[i] > f.maxLevels {
			return nil, bad("says its %s is %d levels high", name, a.levels[i])
		}
		if a.roots[i] < f.firstFree || a.roots[i] >= length {
			return nil, bad("puts its %s root at block %d, outside the AG", name, a.roots[i])
		}
	}
	return a, nil
}

// checkAGs checks every AG's AGF, AGFL and free-space B-trees against
// each other, and returns the free blocks the filesystem counts (what
// sb_fdblocks holds): free extents, AGFL blocks, and B-tree blocks past
// each root, which the kernel counts as available.
func (f *fs) checkAGs() (int64, error) {
	var counted int64
	buf := make([]byte, f.sectSize)
	for ag := range f.agCount {
		a, err := f.readAGF(ag, buf)
		if err != nil {
			return 0, err
		}
		if err := f.checkAGFL(ag, a); err != nil {
			return 0, err
		}
		bno, err := f.walkTree(bnobt, ag, a.roots[0], a.levels[0])
		if err != nil {
			return 0, err
		}
		cnt, err := f.walkTree(cntbt, ag, a.roots[1], a.levels[1])
		if err != nil {
			return 0, err
		}
		bad := func(format string, args ...any) error {
			return damaged(a.off, "AG %d's free space disagrees with itself: %s", ag, fmt.Sprintf(format, args...))
		}
		switch {
		case bno.free != a.freeBlks || cnt.free != a.freeBlks:
			return 0, bad("the AGF counts %d free blocks, the bnobt %d, the cntbt %d", a.freeBlks, bno.free, cnt.free)
		case bno.recs != cnt.recs || bno.sum != cnt.sum:
			return 0, bad("the bnobt and the cntbt do not hold the same %d and %d extents", bno.recs, cnt.recs)
		case cnt.longest != a.longest:
			return 0, bad("the AGF's longest free extent is %d blocks, the trees' %d", a.longest, cnt.longest)
		}
		btree := bno.blocks - 1 + cnt.blocks - 1
		if f.rmapbt {
			if a.rmapBlocks < 1 {
				return 0, bad("the rmapbt has %d blocks", a.rmapBlocks)
			}
			btree += a.rmapBlocks - 1
		}
		if f.lazy && a.btreeBlk != btree {
			return 0, bad("the AGF counts %d B-tree blocks, the trees have %d", a.btreeBlk, btree)
		}
		counted += a.freeBlks + a.flCount + btree
	}
	return counted, nil
}

// checkAGFL checks AG ag's free list (the sector after the AGI): its
// header on v5, and that the blocks the AGF says it holds lie inside the
// AG. Those blocks are not in the free-space B-trees, so they count as
// used (partclone counts them free; they are few, and held for the
// B-trees' next splits).
func (f *fs) checkAGFL(ag int64, a *agfInfo) error {
	off := f.agOffset(ag, 0) + 3*f.sectSize
	b := make([]byte, f.sectSize)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return fmt.Errorf("xfs: read AG %d's AGFL at byte %d: %w", ag, off, err)
	}
	bad := func(format string, args ...any) error {
		return damaged(off, "AG %d's AGFL %s", ag, fmt.Sprintf(format, args...))
	}
	entries := b
	if f.crc {
		switch {
		case string(b[:4]) != "XAFL":
			return bad("has no XAFL magic")
		case !crcOK(b, 32):
			return bad("fails its checksum")
		case int64(be.Uint32(b[4:])) != ag:
			return bad("says it is AG %d's", be.Uint32(b[4:]))
		case !bytes.Equal(b[8:24], f.metaUUID[:]):
			return bad("belongs to another filesystem (UUID)")
		case f.lsnAhead(be.Uint64(b[24:])) != "":
			return bad("%s", f.lsnAhead(be.Uint64(b[24:])))
		}
		entries = b[36:]
	}
	// The kernel's own consistency test (xfs_agfl_needs_reset): the
	// count must be the length of the ring from first to last.
	active := int64(0)
	switch {
	case a.flCount > 0 && a.flLast >= a.flFirst:
		active = a.flLast - a.flFirst + 1
	case a.flCount > 0:
		active = f.agflSize - a.flFirst + a.flLast + 1
	}
	if active != a.flCount {
		return bad("does not hold the %d blocks the AGF counts from entry %d to %d", a.flCount, a.flFirst, a.flLast)
	}
	for k, i := int64(0), a.flFirst; k < a.flCount; k, i = k+1, (i+1)%f.agflSize {
		if bno := int64(be.Uint32(entries[4*i:])); bno < f.firstFree || bno >= f.agLen(ag) {
			return bad("lists block %d, outside the AG (entry %d)", bno, i)
		}
	}
	return nil
}
