package btrfs

// The walk: every tree reachable from the superblock, every block of it
// checked (checksum, address, filesystem, level, generation, owner, first
// key: what the kernel checks when it reads one) before it is followed.
//
// What is read, and why:
//   - the chunk tree, the root tree and the extent tree, leaves included:
//     they say where everything is and what is allocated;
//   - the log tree (when the superblock names one), leaves included: its
//     blocks and the data extents it logged are in no extent item until
//     it is replayed at the next mount;
//   - every other tree (each subvolume and snapshot, csum, free-space,
//     device, block-group, uuid, quota, relocation trees): its internal
//     nodes, so that every block of it is known and checked down to the
//     leaves, which are marked from their parents' pointers without being
//     read (their contents are in the extent tree already).
//
// Used is the extent tree's items, every block reachable from the roots
// and what the log holds. A reachable block (the log's aside) that the
// extent tree does not hold means the extent tree misses allocations: the
// trees are then not followed at all (the map is the allocated chunks),
// as when any block fails a check.
//
// Memory is bounded by what the trees hold: the visited set and the list
// of tree blocks grow with the blocks actually read or pointed to by a
// block read, the used ranges with the extent items read (merged as they
// come, sorted by address in a healthy tree). Depth is at most 8 levels,
// one buffer per level.

import (
	"encoding/binary"
	"fmt"
	"io"
)

const (
	maxLevel = 8

	hdrLen        = 0x65 // struct btrfs_header
	hdrFsid       = 0x20
	hdrBytenr     = 0x30
	hdrGeneration = 0x50
	hdrOwner      = 0x58
	hdrNritems    = 0x60
	hdrLevel      = 0x64

	keyLen  = 17 // struct btrfs_disk_key
	itemLen = 25 // struct btrfs_item: key, data offset, data size
	ptrLen  = 33 // struct btrfs_key_ptr: key, block, generation

	keyExtentData   = 108
	keyRootItem     = 132
	keyExtentItem   = 168
	keyMetadataItem = 169

	rootTreeID   = 1
	extentTreeID = 2
	chunkTreeID  = 3
	fsTreeID     = 5
	firstFreeID  = 256
	treeLogID    = 0xfffffffffffffffa // -6

	rootItemMin = 239 // the original struct btrfs_root_item
)

// key is a btrfs key: (objectid, type, offset).
type key struct {
	objectid uint64
	typ      uint8
	offset   uint64
}

func parseKey(b []byte) key {
	le := binary.LittleEndian
	return key{le.Uint64(b), b[8], le.Uint64(b[9:])}
}

// nodeRef is what a parent (or the superblock, or a root item) says of
// a tree block.
type nodeRef struct {
	at    uint64
	level uint8
	gen   uint64 // expected generation (0: not known)
	tree  uint64 // the tree it belongs to
	first *key   // the key its first item must have (nil: a root)
}

// isFSTree says whether tree id is a subvolume's (as the kernel's
// is_fstree): its blocks may be shared with, and owned by, other
// subvolumes.
func isFSTree(id uint64) bool {
	return id == fsTreeID || int64(id) >= firstFreeID && id>>48 == 0
}

// readNode reads the tree block ref names from the first of its copies
// that passes every check. A block no copy of which passes is damage.
func (fs *filesystem) readNode(ref nodeRef) (b []byte, at int64, err error) {
	n := fs.sb.nodeSize
	if ref.at%uint64(fs.sb.sectorSize) != 0 || ref.at >= maxLogical {
		return nil, 0, damaged(-1, "tree block at logical %d is not aligned to the sector size", ref.at)
	}
	phys, err := fs.mirrors(int64(ref.at), n)
	if err != nil {
		return nil, 0, err
	}
	if fs.bufs[ref.level] == nil {
		fs.bufs[ref.level] = make([]byte, n)
	}
	b = fs.bufs[ref.level]
	var first error
	for _, p := range phys {
		if k, err := fs.r.ReadAt(b, p); k != len(b) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, fmt.Errorf("btrfs: read tree block at byte %d: %w", p, err)
		}
		err := fs.checkNode(b, ref, p)
		if err == nil {
			return b, p, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, 0, first
}

// checkNode checks tree block b, read at device byte p, against what
// points to it.
func (fs *filesystem) checkNode(b []byte, ref nodeRef, p int64) error {
	le := binary.LittleEndian
	name := treeName(ref.tree)
	if !fs.sb.csum.verify(b) {
		return damaged(p, "%s tree block at logical %d fails its %s checksum", name, ref.at, fs.sb.csum.name)
	}
	if at := le.Uint64(b[hdrBytenr:]); at != ref.at {
		return damaged(p, "%s tree block at logical %d says it is at %d", name, ref.at, at)
	}
	if string(b[hdrFsid:hdrFsid+16]) != string(fs.sb.metaUUID[:]) {
		return damaged(p, "%s tree block at logical %d belongs to another filesystem", name, ref.at)
	}
	if lv := b[hdrLevel]; lv != ref.level {
		return damaged(p, "%s tree block at logical %d has level %d, its parent expects %d", name, ref.at, lv, ref.level)
	}
	if g := le.Uint64(b[hdrGeneration:]); ref.gen != 0 && g != ref.gen {
		// Also what a stale copy of a block looks like: one the
		// filesystem has since freed and written again elsewhere.
		return damaged(p, "%s tree block at logical %d has generation %d, its parent expects %d", name, ref.at, g, ref.gen)
	}
	owner := le.Uint64(b[hdrOwner:])
	switch {
	case isFSTree(ref.tree):
		if !isFSTree(owner) {
			return damaged(p, "%s tree block at logical %d is owned by tree %d", name, ref.at, int64(owner))
		}
	case ref.tree < firstFreeID: // the global trees are never shared
		if owner != ref.tree {
			return damaged(p, "%s tree block at logical %d is owned by tree %d", name, ref.at, int64(owner))
		}
	}
	nr := int64(le.Uint32(b[hdrNritems:]))
	per := int64(itemLen)
	if ref.level > 0 {
		per = ptrLen
	}
	if nr > (int64(len(b))-hdrLen)/per || ref.level > 0 && nr == 0 {
		return damaged(p, "%s tree block at logical %d (level %d) claims %d items", name, ref.at, ref.level, nr)
	}
	if ref.first != nil && nr > 0 && parseKey(b[hdrLen:]) != *ref.first {
		return damaged(p, "%s tree block at logical %d does not start with the key its parent gives", name, ref.at)
	}
	return nil
}

// walkTree visits every block of the tree rooted at root, depth first.
// With leaves, it reads each leaf and calls leaf with it and the device
// offset it was read at; without, leaves are only checked to lie in a
// chunk.
//
// A block reached again is not visited again: subvolume trees share
// blocks with their snapshots (the same block, at the same level and
// generation, which is checked). Trees whose leaves are read share
// nothing, so there a block reached twice is damage (a loop, or a
// pointer into another tree), as is one reached at another level or
// generation anywhere: a loop cannot be followed, and depth is bounded
// by the levels, which only go down.
func (fs *filesystem) walkTree(root nodeRef, leaves bool, leaf func(b []byte, at int64) error) error {
	if root.level >= maxLevel {
		return damaged(-1, "%s tree root at logical %d has level %d", treeName(root.tree), root.at, root.level)
	}
	return fs.visit(root, leaves, leaf)
}

// visited is what the walk knows of a block it has reached.
type visited struct {
	read  bool // read and checked (else a leaf marked from its parent)
	level uint8
	gen   uint64
}

func (fs *filesystem) visit(ref nodeRef, leaves bool, leaf func([]byte, int64) error) error {
	name := treeName(ref.tree)
	if v, ok := fs.seen[ref.at]; ok {
		switch {
		case v.level != ref.level || ref.gen != 0 && v.gen != 0 && v.gen != ref.gen:
			return damaged(-1, "%s tree block at logical %d is reached at level %d, generation %d, and at level %d, generation %d", name, ref.at, v.level, v.gen, ref.level, ref.gen)
		case leaves:
			return damaged(-1, "%s tree block at logical %d is reached twice (a loop, or a pointer into another tree)", name, ref.at)
		}
		return nil
	}
	if ref.level == 0 && !leaves {
		if ref.at%uint64(fs.sb.sectorSize) != 0 || ref.at >= maxLogical {
			return damaged(-1, "%s tree block at logical %d is not aligned to the sector size", name, ref.at)
		}
		if err := fs.inChunk(int64(ref.at), fs.sb.nodeSize, name+" tree block"); err != nil {
			return err
		}
		fs.seen[ref.at] = visited{level: 0, gen: ref.gen}
		fs.blocks = append(fs.blocks, span{int64(ref.at), int64(ref.at) + fs.sb.nodeSize})
		return nil
	}
	b, at, err := fs.readNode(ref)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	fs.seen[ref.at] = visited{read: true, level: ref.level, gen: le.Uint64(b[hdrGeneration:])}
	fs.blocks = append(fs.blocks, span{int64(ref.at), int64(ref.at) + fs.sb.nodeSize})
	nr := int(le.Uint32(b[hdrNritems:]))
	if ref.level == 0 {
		return leaf(b, at)
	}
	for i := 0; i < nr; i++ {
		p := b[hdrLen+i*ptrLen:]
		k := parseKey(p)
		child := nodeRef{at: le.Uint64(p[keyLen:]), level: ref.level - 1, gen: le.Uint64(p[keyLen+8:]), tree: ref.tree, first: &k}
		if err := fs.visit(child, leaves, leaf); err != nil {
			return err
		}
	}
	return nil
}

// items calls fn with each item of leaf b (read at device offset at):
// its key, its data and the data's device offset.
func items(b []byte, at int64, fn func(k key, data []byte, off int64) error) error {
	le := binary.LittleEndian
	nr := int(le.Uint32(b[hdrNritems:]))
	room := len(b) - hdrLen
	for i := 0; i < nr; i++ {
		it := b[hdrLen+i*itemLen:]
		off, size := int64(le.Uint32(it[keyLen:])), int64(le.Uint32(it[keyLen+4:]))
		if off > int64(room) || size > int64(room)-off || off < int64(nr*itemLen) && size > 0 {
			return damaged(at, "leaf item %d's data (%d bytes at %d) lies outside the leaf's data area", i, size, off)
		}
		if err := fn(parseKey(it), b[hdrLen+off:hdrLen+off+size], at+hdrLen+off); err != nil {
			return err
		}
	}
	return nil
}

// root is a tree named by a root item.
type root struct {
	id  uint64
	ref nodeRef
}

// walk reads every tree and records what is in use: the extent tree's
// extents, every tree block reachable from the roots, the log tree's
// blocks and the data it logged. note, when set, says what the map
// allows for (a log to replay, an extent tree that misses blocks).
func (fs *filesystem) walk() (note string, err error) {
	le := binary.LittleEndian
	var roots []root
	err = fs.walkTree(nodeRef{at: fs.sb.root, level: fs.sb.rootLevel, gen: fs.sb.generation, tree: rootTreeID}, true,
		func(b []byte, at int64) error {
			return items(b, at, func(k key, d []byte, off int64) error {
				if k.typ != keyRootItem {
					return nil
				}
				if len(d) < rootItemMin {
					return damaged(off, "root item of tree %d is %d bytes", int64(k.objectid), len(d))
				}
				dead := le.Uint32(d[0xd8:]) == 0 || le.Uint64(d[0xdc:]) != 0 || d[0xed] != 0
				if isFSTree(k.objectid) && dead {
					// A deleted subvolume being dropped: part of it may be
					// freed already; what is left is in the extent tree.
					return nil
				}
				roots = append(roots, root{k.objectid, nodeRef{
					at: le.Uint64(d[0xb0:]), level: d[0xee], gen: le.Uint64(d[0xa0:]), tree: k.objectid,
				}})
				return nil
			})
		})
	if err != nil {
		return "", err
	}

	// The extent tree: what is allocated.
	var extents []span
	found := false
	for _, r := range roots {
		if r.id != extentTreeID {
			continue
		}
		found = true
		err := fs.walkTree(r.ref, true, func(b []byte, at int64) error {
			return items(b, at, func(k key, _ []byte, _ int64) error {
				var s span
				switch k.typ {
				case keyExtentItem:
					s = span{int64(k.objectid), int64(k.objectid) + int64(k.offset)}
				case keyMetadataItem:
					s = span{int64(k.objectid), int64(k.objectid) + fs.sb.nodeSize}
				default:
					return nil
				}
				if err := fs.inChunk(s.lo, s.hi-s.lo, "extent"); err != nil || k.offset >= maxLogical {
					return damaged(at, "extent item (%d, %d, %d) lies in no chunk", int64(k.objectid), k.typ, k.offset)
				}
				if n := len(extents); n > 0 && s.lo >= extents[n-1].lo && s.lo <= extents[n-1].hi {
					extents[n-1].hi = max(extents[n-1].hi, s.hi)
				} else {
					extents = append(extents, s)
				}
				return nil
			})
		})
		if err != nil {
			return "", err
		}
	}
	if !found {
		return "", damaged(-1, "the root tree has no extent tree")
	}
	extents = mergeSpans(extents)

	// The log tree, if a crash or a copy taken while mounted left one:
	// its blocks and the data it logged are allocated only when the next
	// mount replays it.
	var logged []span
	logFrom := len(fs.blocks)
	if fs.sb.logRoot != 0 {
		var logs []nodeRef
		err := fs.walkTree(nodeRef{at: fs.sb.logRoot, level: fs.sb.logLevel, gen: fs.sb.generation + 1, tree: treeLogID}, true,
			func(b []byte, at int64) error {
				return items(b, at, func(k key, d []byte, off int64) error {
					if k.typ != keyRootItem {
						return nil
					}
					if len(d) < rootItemMin {
						return damaged(off, "log root item is %d bytes", len(d))
					}
					logs = append(logs, nodeRef{at: le.Uint64(d[0xb0:]), level: d[0xee], gen: le.Uint64(d[0xa0:]), tree: treeLogID})
					return nil
				})
			})
		if err != nil {
			return "", err
		}
		for _, l := range logs {
			err := fs.walkTree(l, true, func(b []byte, at int64) error {
				return items(b, at, func(k key, d []byte, off int64) error {
					// struct btrfs_file_extent_item: type at 20; a regular
					// or preallocated extent's disk range at 21 and 29.
					if k.typ != keyExtentData || len(d) < 21 || d[20] == 0 {
						return nil
					}
					if len(d) < 53 {
						return damaged(off, "logged file extent item is %d bytes", len(d))
					}
					lo, n := int64(le.Uint64(d[21:])), int64(le.Uint64(d[29:]))
					if lo == 0 {
						return nil // a hole
					}
					if err := fs.inChunk(lo, n, "logged data extent"); err != nil {
						return err
					}
					logged = append(logged, span{lo, lo + n})
					return nil
				})
			})
			if err != nil {
				return "", err
			}
		}
		note = "has a log tree to replay (fsynced writes after its last commit: it was not cleanly unmounted, or is mounted); its blocks and the data it logged are stored too, so the copy replays it as the source would"
	}
	logTo := len(fs.blocks)

	// Every other tree, down to its leaves.
	for _, r := range roots {
		if r.id == extentTreeID {
			continue
		}
		if err := fs.walkTree(r.ref, false, nil); err != nil {
			return "", err
		}
	}

	// Every block reachable from a root must be in the extent tree (the
	// log's are in none until replayed): one that is not means the
	// extent tree misses allocations, and it cannot be followed.
	for i, s := range fs.blocks {
		if (i < logFrom || i >= logTo) && !covered(extents, s) {
			return "", damaged(-1, "the tree block at logical %d is reachable from the roots but not in the extent tree", s.lo)
		}
	}
	fs.used = mergeSpans(append(append(extents, logged...), fs.blocks...))
	return note, nil
}

// covered reports whether s lies inside one of the sorted spans.
func covered(spans []span, s span) bool {
	lo, hi := 0, len(spans)
	for lo < hi {
		m := (lo + hi) / 2
		if spans[m].hi <= s.lo {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(spans) && spans[lo].lo <= s.lo && s.hi <= spans[lo].hi
}

// treeName names a tree for messages.
func treeName(id uint64) string {
	switch id {
	case rootTreeID:
		return "root"
	case extentTreeID:
		return "extent"
	case chunkTreeID:
		return "chunk"
	case 4:
		return "device"
	case 7:
		return "checksum"
	case 8:
		return "quota"
	case 9:
		return "uuid"
	case 10:
		return "free-space"
	case 11:
		return "block-group"
	case treeLogID:
		return "log"
	}
	if isFSTree(id) {
		return fmt.Sprintf("subvolume %d", id)
	}
	return fmt.Sprintf("tree %d", int64(id))
}
