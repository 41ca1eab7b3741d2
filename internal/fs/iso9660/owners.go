package iso9660

// This file says what holds each byte of an ISO 9660 volume (Owners,
// for a failing disk's report of what its unreadable sectors hit): the
// system area, the volume descriptors, the path tables and the El
// Torito boot catalog by name, then every directory and file by path,
// by its extents.

import (
	"encoding/binary"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Owners walks what holds the bytes of the ISO 9660 volume in the size
// bytes of r (vfs.Filesystem.Owners): "system area", "volume
// descriptors", "path tables", "boot catalog", then every directory and
// file by path, with the names ReadDir gives. It goes on past damage (a
// damaged directory loses its entries, not the walk) and reads each
// directory once, whatever number of records name it.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	f, err := OpenFiles(r, size)
	if err != nil {
		return err
	}
	v := f.v
	clip := func(es ...block.Extent) []block.Extent {
		var out []block.Extent
		for _, e := range es {
			if e.Off < 0 || e.Len <= 0 || e.Off >= v.end() {
				continue
			}
			e.Len = min(e.Len, v.end()-e.Off)
			out = append(out, e)
		}
		return block.MergeExtents(out)
	}
	meta := func(name string, es ...block.Extent) error {
		if es = clip(es...); len(es) == 0 {
			return nil
		}
		return visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, es)
	}
	if err := meta("system area", block.Extent{Off: 0, Len: descStart}); err != nil {
		return err
	}
	if err := meta("volume descriptors", block.Extent{Off: descStart, Len: v.descEnd - descStart}); err != nil {
		return err
	}
	var tables []block.Extent
	for _, d := range [][]byte{v.pvd, v.joliet} {
		if d == nil {
			continue
		}
		n := int64(binary.LittleEndian.Uint32(d[132:]))
		for _, at := range []int64{int64(binary.LittleEndian.Uint32(d[140:])), int64(binary.LittleEndian.Uint32(d[144:])),
			int64(binary.BigEndian.Uint32(d[148:])), int64(binary.BigEndian.Uint32(d[152:]))} {
			if at > 0 && n > 0 {
				tables = append(tables, block.Extent{Off: at * v.blockSize, Len: n})
			}
		}
	}
	if err := meta("path tables", tables...); err != nil {
		return err
	}
	if v.bootCat >= 0 {
		if err := meta("boot catalog", block.Extent{Off: v.bootCat * v.blockSize, Len: v.blockSize}); err != nil {
			return err
		}
	}
	extents := func(e File) []block.Extent {
		var es []block.Extent
		for _, x := range e.extents {
			es = append(es, block.Extent{Off: x.off, Len: x.n})
		}
		return clip(es...)
	}
	seen := map[int64]bool{}
	var walk func(dir File, p string) error
	walk = func(dir File, p string) error {
		if err := visit(vfs.Owner{Kind: vfs.OwnerDir, Path: p}, extents(dir)); err != nil {
			return err
		}
		if seen[dir.key()] {
			return nil
		}
		seen[dir.key()] = true
		ents, err := f.list(dir)
		if err != nil {
			return nil // a damaged directory loses its entries
		}
		for _, e := range ents {
			if e.Name == "" {
				continue
			}
			path := vfs.OwnerPath(p, e.Name)
			switch {
			case e.Mode.IsDir() && e.Err == nil:
				if err := walk(e, path); err != nil {
					return err
				}
			case e.Mode.IsRegular():
				if es := extents(e); len(es) > 0 {
					if err := visit(vfs.Owner{Kind: vfs.OwnerFile, Path: path}, es); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return walk(f.root, "/")
}
