package fat

// This file says what holds each sector of a FAT12/16/32 volume
// (vfs.Filesystem.Owners), for internal/owners' report of a failing
// disk's unreadable ranges: "boot sector", "reserved sectors" (FAT32's
// FSInfo and backup boot sector among them), "FAT" (every copy) and
// FAT12/16's fixed "root directory"; then every directory and file by
// path, each holding its whole cluster chain in the first FAT (as
// mshowfat lists it, past what the size needs too). A file's 32-byte
// entry is its directory's, as an ext directory entry is: a hit on a
// directory's cluster loses the entries there, which the directory
// stands for.
//
// Bounded by what the volume holds: each directory is walked once (by
// its first cluster), a chain stops where it loops, ends, or leaves the
// volume's clusters, and once the chains followed have taken twice the
// volume's clusters in steps (cross-linked chains), a chain stops at the
// first cluster another already holds.

import (
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Owners walks what holds the sectors of the FAT volume in the size
// bytes of r (vfs.Filesystem.Owners). It fails only if the volume
// cannot be opened, or visit fails.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	f, err := OpenFiles(r, size)
	if err != nil {
		return err
	}
	b := f.b
	bps := b.bytesPerSector
	meta := []struct {
		name    string
		off, to int64 // sectors
	}{
		{"boot sector", 0, 1},
		{"reserved sectors", 1, b.reserved},
		{"FAT", b.reserved, b.reserved + b.fats*b.fatSectors},
		{"root directory", b.reserved + b.fats*b.fatSectors, b.dataStart},
	}
	for _, m := range meta {
		if m.to > m.off {
			if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: m.name}, []block.Extent{{Off: m.off * bps, Len: (m.to - m.off) * bps}}); err != nil {
				return err
			}
		}
	}
	w := &chains{f: f, budget: 2*int64(f.last) + 1<<16,
		mine: make([]uint64, (int64(f.last)+64)/64), held: make([]uint64, (int64(f.last)+64)/64)}
	type dir struct {
		d    File
		path string
	}
	root := f.root()
	queue := []dir{{root, "/"}}
	seen := map[uint32]bool{root.cluster: true} // 0 for FAT12/16's fixed root
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		var at []block.Extent
		if !d.d.root || b.kind == "fat32" {
			at = w.chain(d.d.cluster)
		}
		if err := visit(vfs.Owner{Kind: vfs.OwnerDir, Path: d.path}, at); err != nil {
			return err
		}
		ents, err := f.list(d.d)
		if err != nil {
			continue // its entries are lost; its chain was visited
		}
		for _, e := range ents {
			if e.Err != nil {
				continue
			}
			p := "/" + e.Name
			if d.path != "/" {
				p = d.path + p
			}
			if e.Mode.IsDir() {
				if e.cluster < 2 || e.cluster > f.last || seen[e.cluster] {
					continue // nowhere to read it, or read already (a loop)
				}
				seen[e.cluster] = true
				queue = append(queue, dir{e, p})
				continue
			}
			var at []block.Extent
			if e.cluster != 0 {
				at = w.chain(e.cluster)
			}
			if err := visit(vfs.Owner{Kind: vfs.OwnerFile, Path: p}, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// chains follows cluster chains in the first FAT.
type chains struct {
	f      *Files
	budget int64    // steps left before chains stop at others' clusters
	mine   []uint64 // a bit per cluster: on the chain being followed
	held   []uint64 // a bit per cluster: on a chain followed before
}

// chain returns the bytes of the clusters of the chain from cluster c,
// as far as it can be followed.
func (w *chains) chain(c uint32) []block.Extent {
	f := w.f
	var out []block.Extent
	var path []uint32
	defer func() {
		for _, c := range path {
			w.mine[c/64] &^= 1 << (c % 64)
		}
	}()
	for c >= 2 && c <= f.last {
		if w.mine[c/64]&(1<<(c%64)) != 0 {
			break // a loop
		}
		if w.held[c/64]&(1<<(c%64)) != 0 && w.budget <= 0 {
			break
		}
		w.budget--
		w.mine[c/64] |= 1 << (c % 64)
		w.held[c/64] |= 1 << (c % 64)
		path = append(path, c)
		off := f.clusterOff(c)
		if k := len(out) - 1; k >= 0 && out[k].End() == off {
			out[k].Len += f.clusterSize
		} else {
			out = append(out, block.Extent{Off: off, Len: f.clusterSize})
		}
		next, end, err := f.next(c, "a chain")
		if err != nil || end {
			break
		}
		c = next
	}
	return out
}
