// Package btrfs finds the used blocks of a btrfs filesystem (FS
// describes it to the registry, internal/fsmap, with its label and
// fsid): every extent its extent tree allocates and every tree block
// reachable from its roots (the log tree and the data it logged too), on
// every stripe of every copy, plus the superblocks and the first MiB.
// Its files Platter leaves to the kernel, but it knows which file,
// directory or metadata holds each byte (Owners, owners.go: what a
// failing disk's unreadable sectors hit).
//
// The walk (walk.go) reads the superblock, the system chunks it carries,
// the chunk tree, the root tree and, from it, every tree; the map
// (fill) then turns the logical ranges it found into the device's bytes
// through the chunk map (chunks.go). A filesystem this package cannot
// follow exactly (features it does not know, damage, several devices) is
// still recognised: its map is then every allocated chunk of the device,
// which is always enough and still far smaller than the device.
package btrfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

const (
	superOff  = 64 << 10
	superSize = 4096
	magic     = "_BHRfS_M"

	// reserved is the start of the device btrfs never allocates (boot
	// loaders live there); it is kept as it is.
	reserved = 1 << 20
)

// superMirrors are where btrfs keeps copies of its superblock; the ones
// inside the device are kept.
var superMirrors = [...]int64{64 << 10, 64 << 20, 256 << 30}

// Superblock field offsets (struct btrfs_super_block).
const (
	sbFsid         = 0x20
	sbBytenr       = 0x30
	sbMagic        = 0x40
	sbGeneration   = 0x48
	sbRoot         = 0x50
	sbChunkRoot    = 0x58
	sbLogRoot      = 0x60
	sbNumDevices   = 0x88
	sbSectorSize   = 0x90
	sbNodeSize     = 0x94
	sbSysArraySize = 0xa0
	sbChunkRootGen = 0xa4
	sbCompatRO     = 0xb4
	sbIncompat     = 0xbc
	sbCsumType     = 0xc4
	sbRootLevel    = 0xc6
	sbChunkLevel   = 0xc7
	sbLogLevel     = 0xc8
	sbDevItem      = 0xc9 // devid at +0, total_bytes at +8
	sbLabel        = 0x12b
	sbMetadataUUID = 0x23b
	sbSysArray     = 0x32b
	sysArrayMax    = 2048
)

// Feature flags this package knows: a filesystem with others may keep
// data where these walks do not look, so it gets the chunk map.
const (
	incompatMetadataUUID = 0x400
	incompatKnown        = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | incompatMetadataUUID | 0x800 |
		0x10000 // simple quotas: owner refs inside extent items
	compatROKnown = 0x1 | 0x2 | 0x4 | 0x8 // free-space tree (+valid), verity, block-group tree
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "btrfs", Off: off, Msg: fmt.Sprintf(format, args...)}
}

// damage is a reason not to follow the filesystem's own trees (a bad
// checksum, a block that is not what its parent says): the map falls
// back to the allocated chunks, or to every block when even those
// cannot be read.
type damage struct {
	off int64 // device byte offset, or -1
	msg string
}

func (d *damage) Error() string {
	if d.off < 0 {
		return d.msg
	}
	return fmt.Sprintf("%s at byte %d", d.msg, d.off)
}

func damaged(off int64, format string, args ...any) error {
	return &damage{off: off, msg: fmt.Sprintf(format, args...)}
}

// super is what the walk needs of the superblock.
type super struct {
	fsid, metaUUID [16]byte
	generation     uint64
	root           uint64
	chunkRoot      uint64
	chunkRootGen   uint64
	logRoot        uint64
	rootLevel      uint8
	chunkLevel     uint8
	logLevel       uint8
	numDevices     uint64
	devid          uint64
	devTotal       int64
	sectorSize     int64
	nodeSize       int64
	compatRO       uint64
	incompat       uint64
	sysArray       []byte
	csum           csum
}

// Detect reads the btrfs filesystem in r (size bytes) and returns its
// used blocks, in blocks of its sector size. Not btrfs: an error wrapping
// block.ErrNotMine. A superblock whose fields are impossible: a
// *block.CorruptError. A superblock that fails its checksum, or a chunk
// tree that cannot be read: untrusted, every block counts. Damaged trees,
// unknown features or more than one device: a Warning, and the map is
// every chunk allocated on this device.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	u, _, err := detect(r, size)
	return u, err
}

// detect is Detect that also returns the filesystem read (nil when its
// superblock could not be followed), which tests look into.
func detect(r io.ReaderAt, size int64) (*block.Usage, *filesystem, error) {
	if size < superOff+superSize {
		return nil, nil, fmt.Errorf("btrfs: %w", block.ErrNotMine)
	}
	b := make([]byte, superSize)
	if n, err := r.ReadAt(b, superOff); n != len(b) {
		return nil, nil, fmt.Errorf("btrfs: read superblock at byte %d: %w", superOff, err)
	}
	if string(b[sbMagic:sbMagic+8]) != magic {
		return nil, nil, fmt.Errorf("btrfs: %w", block.ErrNotMine)
	}
	sb, why, err := parseSuper(b, size)
	if err != nil {
		return nil, nil, err
	}
	if why != "" {
		u, err := block.NewUsage("btrfs", sb.sectorSize, size, nil)
		if err != nil {
			return nil, nil, err
		}
		u.Distrust("btrfs " + why)
		return u, nil, nil
	}
	fs := &filesystem{r: r, size: size, sb: sb}
	u, err := block.NewUsage("btrfs", sb.sectorSize, size, fs.fill)
	if err != nil {
		return nil, nil, err
	}
	if err := fs.readChunks(); err != nil {
		if d, ok := err.(*damage); ok {
			u.Distrust("btrfs chunk tree unreadable: " + d.Error() + "; its chunks are unknown")
			return u, nil, nil
		}
		return nil, nil, err
	}
	switch {
	case sb.numDevices != 1:
		fs.whole = true
		u.Warning = fmt.Sprintf("btrfs spans %d devices: this one holds only part of it; kept every chunk allocated on it (device %d)", sb.numDevices, sb.devid)
	case sb.incompat&^incompatKnown != 0 || sb.compatRO&^compatROKnown != 0:
		fs.whole = true
		u.Warning = fmt.Sprintf("btrfs has features this version does not know (incompat %#x, compat_ro %#x); kept every allocated chunk", sb.incompat&^incompatKnown, sb.compatRO&^compatROKnown)
	default:
		note, err := fs.walk()
		if err != nil {
			d, ok := err.(*damage)
			if !ok {
				return nil, nil, err
			}
			fs.whole, fs.used = true, nil
			u.Warning = "btrfs trees cannot be followed: " + d.Error() + " (damage btrfs check would report, or, on a mounted filesystem, a stale cached copy); kept every allocated chunk"
		} else if note != "" {
			u.Warning = "btrfs " + note
		}
	}
	// The map needs only the chunks and the used ranges from here on.
	fs.seen, fs.blocks, fs.bufs = nil, nil, [maxLevel][]byte{}
	return u, fs, nil
}

// parseSuper checks the superblock b. why, when set, says why it cannot
// be trusted (its checksum); sb then still has a usable sector size.
func parseSuper(b []byte, size int64) (sb *super, why string, err error) {
	le := binary.LittleEndian
	sb = &super{
		generation:   le.Uint64(b[sbGeneration:]),
		root:         le.Uint64(b[sbRoot:]),
		chunkRoot:    le.Uint64(b[sbChunkRoot:]),
		chunkRootGen: le.Uint64(b[sbChunkRootGen:]),
		logRoot:      le.Uint64(b[sbLogRoot:]),
		rootLevel:    b[sbRootLevel],
		chunkLevel:   b[sbChunkLevel],
		logLevel:     b[sbLogLevel],
		numDevices:   le.Uint64(b[sbNumDevices:]),
		devid:        le.Uint64(b[sbDevItem:]),
		devTotal:     int64(le.Uint64(b[sbDevItem+8:])),
		sectorSize:   int64(le.Uint32(b[sbSectorSize:])),
		nodeSize:     int64(le.Uint32(b[sbNodeSize:])),
		compatRO:     le.Uint64(b[sbCompatRO:]),
		incompat:     le.Uint64(b[sbIncompat:]),
	}
	copy(sb.fsid[:], b[sbFsid:])
	sb.metaUUID = sb.fsid
	if sb.incompat&incompatMetadataUUID != 0 {
		copy(sb.metaUUID[:], b[sbMetadataUUID:])
	}
	pow2 := func(v, lo, hi int64) bool { return v >= lo && v <= hi && v&(v-1) == 0 }
	saneSector := pow2(sb.sectorSize, 4096, 64<<10)
	if !saneSector {
		sb.sectorSize = 4096 // for the map of an untrusted superblock only
	}
	c, ok := csumOf(le.Uint16(b[sbCsumType:]))
	if !ok {
		return sb, fmt.Sprintf("superblock names checksum type %d, which this version does not know; its trees cannot be checked", le.Uint16(b[sbCsumType:])), nil
	}
	if !c.verify(b) {
		return sb, fmt.Sprintf("superblock at byte %d fails its %s checksum", superOff, c.name), nil
	}
	sb.csum = c
	switch {
	case !saneSector:
		return nil, "", corrupt(superOff+sbSectorSize, "sector size %d is impossible", le.Uint32(b[sbSectorSize:]))
	case !pow2(sb.nodeSize, sb.sectorSize, 64<<10):
		return nil, "", corrupt(superOff+sbNodeSize, "node size %d is impossible (sector size %d)", sb.nodeSize, sb.sectorSize)
	case le.Uint64(b[sbBytenr:]) != superOff:
		return nil, "", corrupt(superOff+sbBytenr, "superblock says it is at byte %d", le.Uint64(b[sbBytenr:]))
	case sb.rootLevel >= maxLevel || sb.chunkLevel >= maxLevel || sb.logLevel >= maxLevel:
		return nil, "", corrupt(superOff+sbRootLevel, "tree levels %d/%d/%d exceed %d", sb.rootLevel, sb.chunkLevel, sb.logLevel, maxLevel-1)
	case sb.numDevices == 0:
		return nil, "", corrupt(superOff+sbNumDevices, "no devices")
	case sb.devTotal <= 0 || sb.devTotal > size:
		return nil, "", corrupt(superOff+sbDevItem+8, "the filesystem needs %d bytes of this device, which has %d", sb.devTotal, size)
	}
	n := int64(le.Uint32(b[sbSysArraySize:]))
	if n > sysArrayMax {
		return nil, "", corrupt(superOff+sbSysArraySize, "system chunk array of %d bytes (at most %d)", n, sysArrayMax)
	}
	sb.sysArray = b[sbSysArray : sbSysArray+n]
	return sb, "", nil
}

// filesystem is a btrfs read far enough to answer its map.
type filesystem struct {
	r    io.ReaderAt
	size int64
	sb   *super

	chunks []*chunk  // by logical address
	segs   []segment // the chunks' stripes on this device, by offset
	maxSeg int64     // the longest segment
	whole  bool      // map every allocated chunk, not what the trees use
	used   []span    // logical ranges in use, sorted, disjoint, apart

	// The walk's state (walk.go).
	bufs   [maxLevel][]byte   // one tree block per level being read
	seen   map[uint64]visited // tree blocks reached
	blocks []span             // tree blocks reachable from the roots
}

// span is a logical byte range [lo, hi).
type span struct{ lo, hi int64 }

// mergeSpans sorts spans and joins those that overlap or touch, in place.
func mergeSpans(s []span) []span {
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	out := s[:0]
	for _, x := range s {
		if n := len(out); n > 0 && x.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, x.hi)
			continue
		}
		out = append(out, x)
	}
	return out
}

// fill marks the used blocks among blocks [first, first+m.Blocks()): the
// first MiB, the superblock copies inside the device, and each stripe's
// bytes that hold a used logical range (every byte of every stripe when
// whole).
func (fs *filesystem) fill(first int64, m *block.Map) error {
	bs := fs.sb.sectorSize
	lo := first * bs
	hi := lo + m.Len()
	mark := func(off, n int64) {
		if s, e := max(off, lo), min(off+n, hi); s < e {
			m.SetBytes(s-lo, e-s)
		}
	}
	mark(0, min(reserved, fs.size))
	for _, off := range superMirrors {
		if off+superSize <= fs.size {
			mark(off, superSize)
		}
	}
	// Segments that start before hi; they are sorted by start, and none
	// is longer than a chunk, so scan back from there.
	i := sort.Search(len(fs.segs), func(i int) bool { return fs.segs[i].phys >= hi })
	for j := i - 1; j >= 0; j-- {
		sg := fs.segs[j]
		if sg.phys+sg.len <= lo {
			if sg.phys+fs.maxSeg <= lo {
				break
			}
			continue
		}
		s, e := max(sg.phys, lo), min(sg.phys+sg.len, hi)
		if fs.whole || sg.c.parity() > 0 {
			mark(s, e-s)
			continue
		}
		sg.logical(s, e, func(l, p, n int64) {
			fs.markUsed(l, n, func(ul, un int64) { mark(p+ul-l, un) })
		})
	}
	return nil
}

// markUsed calls fn with each piece of the used logical ranges inside
// [l, l+n).
func (fs *filesystem) markUsed(l, n int64, fn func(l, n int64)) {
	end := l + n
	k := sort.Search(len(fs.used), func(k int) bool { return fs.used[k].hi > l })
	for ; k < len(fs.used) && fs.used[k].lo < end; k++ {
		s, e := max(fs.used[k].lo, l), min(fs.used[k].hi, end)
		fn(s, e-s)
	}
}
