package btrfs

// This file says what holds each byte of a btrfs filesystem (Owners, for
// a failing disk's report of what its unreadable sectors hit).
//
// Metadata by name: the superblock and its mirrors, the system chunks
// (which hold the chunk tree), and every tree block, on every copy (DUP,
// RAID1), named by its tree: "metadata (extent tree)", "metadata
// (checksum tree)", ...; the blocks of subvolume trees, which snapshots
// share, are all "metadata (file trees)".
//
// Files and directories by path, from the top-level subvolume (tree 5),
// each subvolume and snapshot under the path of the directory entry
// that names it: a file's bytes are those of its regular and
// preallocated extents (the part of each disk extent it refers to, the
// whole one when compressed), on every stripe and copy; inline extents
// live in tree leaves and count as metadata only. A directory keeps its
// entries in tree leaves, not blocks of its own: its bytes are the
// leaves that hold its entries.
//
// Unlike the map's walk (walk.go), this one goes on past what it cannot
// read or check: a damaged tree block loses what is below it, not the
// walk. Every block is read once per tree and trees are at most 8
// levels deep; each subvolume is walked once; what is kept grows only
// with the items read.

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	keyInodeItem = 1
	keyDirIndex  = 96

	rootDirIno  = 256                // every subvolume's root directory
	dataRelocID = 0xfffffffffffffff7 // -9

	sIFMT  = 0o170000
	sIFDIR = 0o040000
)

// ownerWalk is one walk of Owners.
type ownerWalk struct {
	*filesystem
	visit func(vfs.Owner, []block.Extent) error
	meta  map[string][]block.Extent
	named map[uint64]bool // tree blocks named already
	roots map[uint64]nodeRef
	subs  map[uint64]bool // subvolumes walked
}

// Owners walks what holds the bytes of the btrfs filesystem in the size
// bytes of r (vfs.Filesystem.Owners): metadata by name, then every
// directory and file by path. It fails only when the superblock or the
// system chunks cannot be read, or when visit fails.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	if size < superOff+superSize {
		return fmt.Errorf("btrfs: %w", block.ErrNotMine)
	}
	b := make([]byte, superSize)
	if n, err := r.ReadAt(b, superOff); n != len(b) {
		return fmt.Errorf("btrfs: read superblock at byte %d: %w", superOff, err)
	}
	if string(b[sbMagic:sbMagic+8]) != magic {
		return fmt.Errorf("btrfs: %w", block.ErrNotMine)
	}
	sb, why, err := parseSuper(b, size)
	if err != nil {
		return err
	}
	if why != "" {
		return corrupt(superOff, "%s", why)
	}
	fs := &filesystem{r: r, size: size, sb: sb}
	if err := fs.readChunks(); err != nil {
		// The chunk tree is damaged: the system chunks still say where
		// the superblock's trees are, if not the data.
		sys, serr := fs.readSysChunks()
		if serr != nil {
			return serr
		}
		if err := fs.setChunks(sys); err != nil {
			return corrupt(superOff+sbSysArray, "system chunk array: %v", err)
		}
	}
	w := &ownerWalk{filesystem: fs, visit: visit, meta: map[string][]block.Extent{}, named: map[uint64]bool{},
		roots: map[uint64]nodeRef{}, subs: map[uint64]bool{}}
	for _, off := range superMirrors {
		if off+superSize <= size {
			w.meta["superblock"] = append(w.meta["superblock"], block.Extent{Off: off, Len: superSize})
		}
	}
	for _, sg := range fs.segs {
		if sg.c.typ&0x2 != 0 {
			w.meta["system chunk"] = append(w.meta["system chunk"], block.Extent{Off: sg.phys, Len: sg.len})
		}
	}

	// The chunk and root trees, then every tree the root tree names.
	w.walk(nodeRef{at: sb.chunkRoot, level: sb.chunkLevel, gen: sb.chunkRootGen, tree: chunkTreeID}, nil)
	le := binary.LittleEndian
	var ids []uint64
	w.walk(nodeRef{at: sb.root, level: sb.rootLevel, gen: sb.generation, tree: rootTreeID}, func(b []byte, at int64) {
		items(b, at, func(k key, d []byte, _ int64) error {
			if k.typ != keyRootItem || len(d) < rootItemMin || d[0xee] >= maxLevel {
				return nil
			}
			if _, ok := w.roots[k.objectid]; !ok {
				ids = append(ids, k.objectid)
			}
			w.roots[k.objectid] = nodeRef{at: le.Uint64(d[0xb0:]), level: d[0xee], gen: le.Uint64(d[0xa0:]), tree: k.objectid}
			return nil
		})
	})
	for _, id := range ids {
		w.walk(w.roots[id], nil)
	}
	if sb.logRoot != 0 && sb.logLevel < maxLevel {
		var logs []nodeRef
		w.walk(nodeRef{at: sb.logRoot, level: sb.logLevel, gen: sb.generation + 1, tree: treeLogID}, func(b []byte, at int64) {
			items(b, at, func(k key, d []byte, _ int64) error {
				if k.typ == keyRootItem && len(d) >= rootItemMin && d[0xee] < maxLevel {
					logs = append(logs, nodeRef{at: le.Uint64(d[0xb0:]), level: d[0xee], gen: le.Uint64(d[0xa0:]), tree: treeLogID})
				}
				return nil
			})
		})
		for _, l := range logs {
			w.walk(l, nil)
		}
	}
	names := make([]string, 0, len(w.meta))
	for name := range w.meta {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, block.MergeExtents(w.meta[name])); err != nil {
			return err
		}
	}
	return w.subvolume(fsTreeID, "/")
}

// metaName names the blocks of tree id.
func metaName(id uint64) string {
	switch {
	case isFSTree(id):
		return "metadata (file trees)"
	case id == dataRelocID:
		return "metadata (data relocation tree)"
	}
	return "metadata (" + treeName(id) + " tree)"
}

// phys returns the device bytes that hold logical bytes [l, l+n), on
// every stripe and copy on this device (nil for what lies in no chunk).
func (fs *filesystem) phys(l, n int64) []block.Extent {
	var out []block.Extent
	for n > 0 {
		c := fs.chunkAt(l)
		if c == nil || l < 0 || n >= maxLogical {
			return out
		}
		copies, groups := c.layout()
		rel := l - c.logical
		piece := min(n, c.logical+c.length-l)
		if groups > 1 {
			piece = min(piece, c.stripeLen-rel%c.stripeLen)
		}
		if c.parity() > 0 {
			// RAID5/6: the row's data stripe rotates; not mapped here.
			l, n = l+piece, n-piece
			continue
		}
		row, within := rel/c.stripeLen, rel%c.stripeLen
		g := row % groups
		off := row/groups*c.stripeLen + within
		if groups == 1 {
			off = rel
		}
		for k := g * copies; k < (g+1)*copies && k < int64(len(c.stripes)); k++ {
			if s := c.stripes[k]; s.devid == fs.sb.devid && s.off+off+piece <= fs.size {
				out = append(out, block.Extent{Off: s.off + off, Len: piece})
			}
		}
		l, n = l+piece, n-piece
	}
	return out
}

// walk visits every block of the tree below ref once, naming each as
// metadata of its tree (also one that cannot be read: its parent says
// it is there), and calls leaf, if set, with every leaf that passes its
// checks. The walk goes on past blocks it cannot read.
func (w *ownerWalk) walk(ref nodeRef, leaf func(b []byte, at int64)) {
	seen := map[uint64]bool{}
	var visit func(ref nodeRef)
	visit = func(ref nodeRef) {
		if seen[ref.at] || ref.level >= maxLevel {
			return
		}
		seen[ref.at] = true
		if !w.named[ref.at] {
			w.named[ref.at] = true
			name := metaName(ref.tree)
			w.meta[name] = append(w.meta[name], w.phys(int64(ref.at), w.sb.nodeSize)...)
		}
		if ref.level == 0 && leaf == nil {
			return
		}
		b, at, err := w.readNode(ref)
		if err != nil {
			return
		}
		if ref.level == 0 {
			leaf(b, at)
			return
		}
		le := binary.LittleEndian
		nr := int(le.Uint32(b[hdrNritems:]))
		// Children are read into the buffers of lower levels: copy the
		// pointers out of this one first.
		kids := make([]nodeRef, 0, nr)
		for i := range nr {
			p := b[hdrLen+i*ptrLen:]
			k := parseKey(p)
			kids = append(kids, nodeRef{at: le.Uint64(p[keyLen:]), level: ref.level - 1, gen: le.Uint64(p[keyLen+8:]), tree: ref.tree, first: &k})
		}
		for _, kid := range kids {
			visit(kid)
		}
	}
	visit(ref)
}

// inode is what a subvolume's tree says of one inode.
type inode struct {
	dir     bool
	known   bool // its inode item was read
	at      []block.Extent
	entries []dirEntry
}

// dirEntry is a name in a directory: an inode of the same subvolume, or
// the root of another (sub is its id).
type dirEntry struct {
	index uint64
	name  string
	ino   uint64
	sub   uint64
}

// subvolume walks subvolume id's tree and visits its directories and
// files, its root directory at path.
func (w *ownerWalk) subvolume(id uint64, path string) error {
	ref, ok := w.roots[id]
	if !ok || w.subs[id] {
		return nil
	}
	w.subs[id] = true
	le := binary.LittleEndian
	inodes := map[uint64]*inode{}
	get := func(ino uint64) *inode {
		in := inodes[ino]
		if in == nil {
			in = &inode{}
			inodes[ino] = in
		}
		return in
	}
	w.walk(ref, func(b []byte, at int64) {
		logical := le.Uint64(b[hdrBytenr:])
		var leafAt []block.Extent
		items(b, at, func(k key, d []byte, _ int64) error {
			switch k.typ {
			case keyInodeItem:
				if len(d) >= 56 {
					in := get(k.objectid)
					in.known = true
					in.dir = le.Uint32(d[52:])&sIFMT == sIFDIR
				}
			case keyDirIndex:
				// struct btrfs_dir_item: location key, transid, data_len,
				// name_len, type, name.
				if len(d) < 30 {
					return nil
				}
				loc := parseKey(d)
				nl := int(le.Uint16(d[27:]))
				if 30+nl > len(d) || nl == 0 {
					return nil
				}
				e := dirEntry{index: k.offset, name: string(d[30 : 30+nl])}
				switch loc.typ {
				case keyInodeItem:
					e.ino = loc.objectid
				case keyRootItem:
					e.sub = loc.objectid
				default:
					return nil
				}
				in := get(k.objectid)
				in.entries = append(in.entries, e)
				if leafAt == nil {
					leafAt = w.phys(int64(logical), w.sb.nodeSize)
				}
				if n := len(in.at); n == 0 || in.at[n-1] != leafAt[0] {
					in.at = append(in.at, leafAt...)
				}
			case keyExtentData:
				// struct btrfs_file_extent_item: compression at 16, type
				// at 20; a regular or preallocated extent's disk range at
				// 21 and 29, the part of it the file uses at 37 and 45.
				if len(d) < 53 || d[20] == 0 {
					return nil
				}
				lo, n := int64(le.Uint64(d[21:])), int64(le.Uint64(d[29:]))
				off, used := int64(le.Uint64(d[37:])), int64(le.Uint64(d[45:]))
				if lo == 0 || n <= 0 || n >= maxLogical || lo >= maxLogical {
					return nil // a hole
				}
				if d[16] == 0 && off >= 0 && used > 0 && off < n && used <= n-off {
					lo, n = lo+off, used
				}
				in := get(k.objectid)
				in.at = append(in.at, w.phys(lo, n)...)
			}
			return nil
		})
	})

	type dir struct {
		ino  uint64
		path string
	}
	dirs := map[uint64]bool{rootDirIno: true}
	stack := []dir{{rootDirIno, path}}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		in := inodes[d.ino]
		if in == nil {
			continue
		}
		if err := w.visit(vfs.Owner{Kind: vfs.OwnerDir, Path: d.path}, block.MergeExtents(in.at)); err != nil {
			return err
		}
		sort.Slice(in.entries, func(i, j int) bool { return in.entries[i].index < in.entries[j].index })
		var subs []dirEntry
		for _, e := range in.entries {
			p := vfs.OwnerPath(d.path, e.name)
			if e.sub != 0 {
				subs = append(subs, dirEntry{name: p, sub: e.sub})
				continue
			}
			child := inodes[e.ino]
			switch {
			case child == nil || !child.known || dirs[e.ino]:
			case child.dir:
				dirs[e.ino] = true
				stack = append(stack, dir{e.ino, p})
			default:
				child.at = block.MergeExtents(child.at)
				if err := w.visit(vfs.Owner{Kind: vfs.OwnerFile, Path: p}, child.at); err != nil {
					return err
				}
			}
		}
		for _, s := range subs {
			if err := w.subvolume(s.sub, s.name); err != nil {
				return err
			}
		}
	}
	return nil
}
