package exfat

// This file says what holds each byte of an exFAT volume (Owners, for a
// failing disk's report of what its unreadable sectors hit): the boot
// regions, the FAT(s), the allocation bitmap(s) and the up-case table by
// name, and every directory and file by path, by its clusters: the FAT
// chain of its data length, or the contiguous run of a NoFatChain one,
// and a vendor allocation's clusters as its own.

import (
	"encoding/binary"
	"io"
	"strconv"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Owners walks what holds the bytes of the exFAT volume in the size bytes
// of r (vfs.Filesystem.Owners): "boot region" (both), "FAT",
// "allocation bitmap" and "up-case table", then every directory and file
// by path. It goes on past damage (a damaged entry set still gives its
// clusters, named by as much of its name as can be read; a broken chain
// what it reached) and fails only when no boot region can be read, or
// when visit fails. Every directory is read once, and the clusters it
// names, in all, are at most twice the volume's.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	v, err := open(r, size)
	if err != nil {
		return err
	}
	meta := func(name string, es ...block.Extent) error {
		return visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, es)
	}
	if err := meta("boot region", block.Extent{Off: 0, Len: 2 * bootSectors * v.sectorSize}); err != nil {
		return err
	}
	if err := meta("FAT", block.Extent{Off: v.fatOff, Len: int64(v.fats) * v.fatLen}); err != nil {
		return err
	}
	w := &ownerWalk{v: v, visit: visit, budget: 2*int64(v.clusters) + 64}
	root := data{first: v.root, root: true}

	// The bitmaps and the up-case table, from the root directory.
	le := binary.LittleEndian
	var named []struct {
		name string
		d    data
	}
	v.dirEntries(root, "the root directory", func(raw []byte, _ int64) bool {
		switch raw[0] {
		case typeBitmap, typeUpcase:
			name := "allocation bitmap"
			if raw[0] == typeUpcase {
				name = "up-case table"
			}
			named = append(named, struct {
				name string
				d    data
			}{name, data{first: le.Uint32(raw[20:]), length: int64(min(le.Uint64(raw[24:]), 1<<40))}})
		}
		return len(named) < 4
	})
	// Each name once: TexFAT has two bitmaps.
	held := map[string][]block.Extent{}
	for _, n := range named {
		held[n.name] = append(held[n.name], w.extents(n.d, n.name)...)
	}
	for _, name := range []string{"allocation bitmap", "up-case table"} {
		if es := held[name]; len(es) > 0 {
			if err := meta(name, block.MergeExtents(es)...); err != nil {
				return err
			}
		}
	}
	return w.tree(root)
}

type ownerWalk struct {
	v      *volume
	visit  func(vfs.Owner, []block.Extent) error
	budget int64 // clusters left to name
}

// extents returns the bytes of d's clusters: as many as its length needs
// (all of the root's chain), as far as its chain can be followed. A
// bitmap or up-case table whose chain is broken is taken as contiguous,
// as the formatters lay them out.
func (w *ownerWalk) extents(d data, what string) []block.Extent {
	v := w.v
	if w.budget <= 0 {
		return nil
	}
	if !d.root && (d.length+v.clusterSize-1)/v.clusterSize > w.budget {
		d.length = w.budget * v.clusterSize // followed no further than can be named
	}
	runs, err := v.follow(d, what)
	if err != nil && len(runs) == 0 && !d.root && v.valid(d.first) {
		n := min((d.length+v.clusterSize-1)/v.clusterSize, int64(v.clusters)-int64(d.first-2))
		runs = []vfs.Run{{Physical: d.first, N: n}}
	}
	var out []block.Extent
	for _, r := range runs {
		if w.budget < r.N {
			break
		}
		w.budget -= r.N
		out = append(out, block.Extent{Off: v.clusterOff(r.Physical), Len: r.N * v.clusterSize})
	}
	return block.MergeExtents(out)
}

// tree visits every directory from the root, and the files in them.
func (w *ownerWalk) tree(root data) error {
	v := w.v
	le := binary.LittleEndian
	type dir struct {
		d    data
		path string
	}
	stack := []dir{{root, "/"}}
	seen := map[data]bool{}
	for len(stack) > 0 {
		dd := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[dd.d] {
			continue
		}
		seen[dd.d] = true
		what := "the directory " + strconv.Quote(dd.path)
		if err := w.visit(vfs.Owner{Kind: vfs.OwnerDir, Path: dd.path}, w.extents(dd.d, what)); err != nil {
			return err
		}
		if !dd.d.root && dd.d.length == 0 || w.budget <= 0 {
			continue // empty, or past what a sound volume holds (cross-linked)
		}
		var visitErr error
		sr := setReader{set: func(s entrySet) {
			if visitErr != nil || s.len() < 2 || s.entry(1)[0] != typeStream {
				return
			}
			f, _ := v.file(s) // damaged or not: its clusters are still its
			p := vfs.OwnerPath(dd.path, f.Name)
			if f.Mode.IsDir() {
				stack = append(stack, dir{f.data, p})
				return
			}
			at := w.extents(f.data, strconv.Quote(p))
			for i := 2; i < s.len(); i++ {
				if e := s.entry(i); e[0] == typeVendor {
					// Vendor allocation: clusters of the file's own.
					vd := data{first: le.Uint32(e[20:]), length: int64(min(le.Uint64(e[24:]), 1<<62)), contiguous: e[1]&flagNoChain != 0}
					at = block.MergeExtents(append(at, w.extents(vd, strconv.Quote(p))...))
				}
			}
			visitErr = w.visit(vfs.Owner{Kind: vfs.OwnerFile, Path: p}, at)
		}}
		// A directory that cannot be read to its end loses the rest of
		// its entries, not the walk.
		v.dirEntries(dd.d, what, func(raw []byte, off int64) bool {
			sr.entry(raw, off)
			return visitErr == nil
		})
		sr.flush()
		if visitErr != nil {
			return visitErr
		}
	}
	return nil
}
