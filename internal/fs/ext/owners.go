package ext

// This file says what holds each block of an ext2/3/4 filesystem
// (vfs.Filesystem.Owners), for internal/owners' report of a failing
// disk's unreadable ranges: the metadata by name, then every inode
// reachable from the root by path, once per path.
//
// A file or directory holds its data blocks, its extent tree index or
// indirect blocks, its extended attribute block and its own inode's
// bytes in the inode table: a hit on an inode table block is "inode
// table" metadata and, as surely lost, every file whose inode lives in
// it. Inline data and fast symlinks hold no blocks but their inode.
//
// Bounded by what the filesystem holds: each directory is walked once
// (a loop of directories ends there), the tree blocks read for all
// inodes are capped by the filesystem's block count (past that no more
// trees are followed), and a damaged directory or inode loses only
// itself.

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Superblock fields naming special inodes.
const (
	sbFirstIno    = 0x54
	sbUsrQuota    = 0x240
	sbGrpQuota    = 0x244
	sbPrjQuota    = 0x26c
	sbOrphanFile  = 0x280
	sbMMPBlock    = 0x168
	incompatMMP   = 0x100
	resizeIno     = 7
	journalInoNum = 8
)

// reservedNames names the reserved inodes below s_first_ino (the
// kernel's EXT4_*_INO).
var reservedNames = map[uint32]string{
	1: "bad blocks", 3: "user quota", 4: "group quota", 5: "boot loader",
	6: "undelete directory", resizeIno: "reserved GDT", journalInoNum: "journal",
	9: "exclude bitmap", 10: "replica",
}

// Owners walks what holds the blocks of the ext filesystem in the size
// bytes of r (vfs.Filesystem.Owners). Metadata names: "superblock"
// (the primary and its backups), "group descriptors", "reserved GDT"
// (and the resize inode's blocks), "block bitmap", "inode bitmap",
// "inode table", "journal" (an internal one), "MMP", "user quota",
// "group quota", "project quota", "orphan file" and the other reserved
// inodes by their use. It fails only if the filesystem cannot be
// opened, or visit fails.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	f, err := OpenFiles(r, size)
	if err != nil {
		return err
	}
	sb := make([]byte, superSize)
	if err := readFull(r, sb, superOff); err != nil {
		return fmt.Errorf("ext: read superblock at byte %d: %w", superOff, err)
	}
	w := &owners{f: f, sb: f.sb, visit: visit,
		walk: &inodeWalk{f: f.sb, r: r, budget: int(min(2*f.sb.blocksCount+1<<16, 1<<30))}}
	if err := w.meta(sb); err != nil {
		return err
	}
	return w.tree()
}

type owners struct {
	f     *Files
	sb    *fs
	visit func(vfs.Owner, []block.Extent) error
	walk  *inodeWalk
}

// blocks turns n blocks from blk into bytes, cut to the filesystem.
func (w *owners) blocks(es []block.Extent, blk, n uint64) []block.Extent {
	if blk >= w.sb.blocksCount || n == 0 {
		return es
	}
	n = min(n, w.sb.blocksCount-blk)
	e := block.Extent{Off: int64(blk) * w.sb.blockSize, Len: int64(n) * w.sb.blockSize}
	if k := len(es) - 1; k >= 0 && es[k].End() == e.Off {
		es[k].Len += e.Len
		return es
	}
	return append(es, e)
}

func (w *owners) meta(sb []byte) error {
	f := w.sb
	le := binary.LittleEndian
	byName := map[string][]block.Extent{}
	add := func(name string, blk, n uint64) { byName[name] = w.blocks(byName[name], blk, n) }
	// The primary superblock: with the boot block before it, the first
	// block (or two 1 KiB blocks).
	byName["superblock"] = []block.Extent{{Off: 0, Len: max(f.blockSize, superOff+superSize)}}
	dpb := f.descsPerBlock()
	descBlocks := (f.groups + dpb - 1) / dpb
	for g := uint64(0); g < f.groups; g++ {
		start := f.groupFirst(g)
		hasSuper := f.hasSuper(g)
		if hasSuper && g > 0 {
			add("superblock", start, 1)
		}
		mg := g / dpb
		if f.incompat&incompatMetaBG == 0 || mg < f.firstMetaBG {
			if hasSuper {
				if f.incompat&incompatMetaBG != 0 {
					add("group descriptors", start+1, f.firstMetaBG)
				} else {
					add("group descriptors", start+1, descBlocks)
					add("reserved GDT", start+1+descBlocks, f.reservedGDT)
				}
			}
			continue
		}
		if r := g % dpb; r == 0 || r == 1 || r == dpb-1 {
			b := start
			if hasSuper {
				b++
			}
			add("group descriptors", b, 1)
		}
	}
	// OpenFiles read the descriptors: a read failing now loses the
	// groups from there on, not the walk.
	_ = f.descriptors(w.f.r, func(g uint64, d groupDesc) {
		add("block bitmap", d.blockBitmap, 1)
		add("inode bitmap", d.inodeBitmap, 1)
		add("inode table", d.inodeTable, f.inodeTableBlocks())
	})
	if f.incompat&incompatMMP != 0 {
		if b := le.Uint64(sb[sbMMPBlock:]); b != 0 {
			add("MMP", b, 1)
		}
	}
	// Special inodes: the reserved ones, and those the superblock
	// names (the journal's is 8, the quota and orphan files' may be any).
	special := map[uint32]string{}
	firstIno := uint32(11)
	if le.Uint32(sb[0x4c:]) >= 1 {
		firstIno = le.Uint32(sb[sbFirstIno:])
	}
	for ino := uint32(1); ino < min(firstIno, 1024); ino++ {
		if ino == rootIno {
			continue
		}
		name := reservedNames[ino]
		if name == "" {
			name = fmt.Sprintf("reserved inode %d", ino)
		}
		special[ino] = name
	}
	delete(special, journalInoNum)
	if f.compat&compatHasJournal != 0 {
		if ino := le.Uint32(sb[journalIno:]); ino != 0 {
			special[ino] = "journal"
		}
	}
	for at, name := range map[int]string{sbUsrQuota: "user quota", sbGrpQuota: "group quota", sbPrjQuota: "project quota", sbOrphanFile: "orphan file"} {
		if ino := le.Uint32(sb[at:]); ino != 0 && ino != rootIno {
			special[ino] = name
		}
	}
	for ino, name := range special {
		n, err := w.f.readInode(ino)
		if err != nil {
			continue
		}
		byName[name] = append(byName[name], w.inodeBlocks(n)...)
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		if es := block.MergeExtents(byName[name]); len(es) > 0 {
			if err := w.visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, es); err != nil {
				return err
			}
		}
	}
	return nil
}

// inodeBlocks is every block inode n maps (as far as its tree can be
// read), not its own bytes.
func (w *owners) inodeBlocks(n *inode) []block.Extent {
	var es []block.Extent
	// A tree that cannot be read loses the rest of the inode's blocks;
	// what was found stands.
	_ = w.walk.inode(n.raw, n.off, func(blk, k uint64) { es = w.blocks(es, blk, k) })
	return es
}

// tree walks the directories from the root, each once, and visits every
// directory and every file by path: a file with several links once per
// path, its blocks found once.
func (w *owners) tree() error {
	root, err := w.f.readInode(rootIno)
	if err != nil || root.typ() != modeDir {
		// No tree to walk; the metadata said what it could.
		return nil
	}
	type dir struct {
		n    *inode
		path string
	}
	seen := map[uint32]bool{rootIno: true}
	linked := map[uint32][]block.Extent{} // files of several links, by inode
	queue := []dir{{root, "/"}}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if err := w.own(vfs.OwnerDir, d.path, d.n, nil); err != nil {
			return err
		}
		var stop error
		// A damaged block of the directory loses its entries; the
		// others are still walked.
		_ = w.f.dirEntries(d.n, func(name []byte, ino uint32) bool {
			if string(name) == "." || string(name) == ".." {
				return true
			}
			p := strings.TrimSuffix(d.path, "/") + "/" + string(name) // as the entry holds it
			n, err := w.f.readInode(ino)
			if err != nil {
				return true
			}
			if n.typ() == modeDir {
				if !seen[ino] {
					seen[ino] = true
					queue = append(queue, dir{n, p})
				}
				return true
			}
			if n.typ() == 0 {
				return true // a free inode a damaged entry names
			}
			if links := binary.LittleEndian.Uint16(n.raw[0x1a:]); links > 1 {
				es, ok := linked[ino]
				if !ok {
					es = w.inodeBlocks(n)
					linked[ino] = es
				}
				stop = w.own(vfs.OwnerFile, p, n, es)
			} else {
				stop = w.own(vfs.OwnerFile, p, n, nil)
			}
			return stop == nil
		})
		if stop != nil {
			return stop
		}
	}
	return nil
}

// own visits inode n as kind at p: its blocks (es if found already) and
// its own bytes in the inode table.
func (w *owners) own(kind vfs.OwnerKind, p string, n *inode, es []block.Extent) error {
	if es == nil {
		es = w.inodeBlocks(n)
	}
	at := append(es[:len(es):len(es)], block.Extent{Off: n.off, Len: int64(w.sb.inodeSize)})
	return w.visit(vfs.Owner{Kind: kind, Path: p}, at)
}
