package ntfs

// This file says what holds each cluster of an NTFS volume
// (vfs.Filesystem.Owners), for internal/owners' report of a failing
// disk's unreadable ranges. It reads the MFT once, front to back, as
// ntfscluster does: every record in use (an extension record counting
// as its base record's) holds its own bytes in the $MFT and the runs of
// its non-resident attributes ($DATA and named streams, a directory's
// $INDEX_ALLOCATION and $BITMAP, a long $ATTRIBUTE_LIST); its paths come
// from its $FILE_NAME attributes (every link but the DOS 8.3 names) and
// its parent directories'.
//
// The metadata files (records 0-15) and what lies below $Extend are
// metadata, by name: "$MFT" (all of the MFT: a hit there also names the
// file whose record it is), "$MFTMirr", "$LogFile", "$Volume",
// "$AttrDef", "$Bitmap", "$Boot", "$BadClus", "$Secure", "$UpCase",
// "$Extend", "$Extend/$UsnJrnl" and so on, the reserved records 12-15
// as "MFT record N", and the backup boot sector at the volume's end. A file whose parent cannot be found (a damaged
// or reused parent record) is named "MFT record N/NAME", without a
// leading slash: no path reaches it.
//
// Bounded by what the volume holds: records are read a piece at a time,
// each record's attributes are parsed by the checked parser of mft.go,
// and a path is built at most maxDepth directories deep (a loop of
// parents ends there).

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	attrFileName = 0x30
	recExtend    = 11
	// maxDepth bounds the directories a path is built through.
	maxDepth = 1024
	// mftPiece is how much of the MFT is read at once.
	mftPiece = 256 << 10
)

// systemNames names the metadata files by their fixed records.
var systemNames = []string{"$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "", "$Bitmap", "$Boot", "$BadClus", "$Secure", "$UpCase", "$Extend"}

// fileName is one $FILE_NAME: a link of the file into a directory.
type fileName struct {
	parent uint64 // the directory's MFT reference
	name   string
}

// mftFile is what one base record and its extensions hold.
type mftFile struct {
	seq   uint16
	dir   bool
	inUse bool // the base record itself was read and is in use
	names []fileName
	at    []block.Extent
}

// Owners walks what holds the clusters of the NTFS volume in the size
// bytes of r (vfs.Filesystem.Owners). It fails only if the volume
// cannot be opened, or visit fails.
func Owners(r io.ReaderAt, size int64, visit func(vfs.Owner, []block.Extent) error) error {
	v, err := open(r, size)
	if err != nil {
		return err
	}
	files := map[int64]*mftFile{}
	get := func(n int64) *mftFile {
		f := files[n]
		if f == nil {
			f = &mftFile{}
			files[n] = f
		}
		return f
	}
	buf := make([]byte, min(mftPiece, v.records*v.recordSize))
	per := int64(len(buf)) / v.recordSize
	for first := int64(0); first < v.records; first += per {
		k := min(per, v.records-first)
		piece := buf[:k*v.recordSize]
		if err := vfs.ReadFull(v.mft, piece, first*v.recordSize); err != nil {
			// Read the piece a record at a time: one unreadable
			// record loses only itself.
			for i := int64(0); i < k; i++ {
				b := piece[i*v.recordSize : (i+1)*v.recordSize]
				if vfs.ReadFull(v.mft, b, (first+i)*v.recordSize) != nil {
					copy(b, make([]byte, len(b)))
				}
			}
		}
		for i := int64(0); i < k; i++ {
			n := first + i
			pos := n * v.recordSize
			rec, err := parseRecord(n, piece[i*v.recordSize:(i+1)*v.recordSize], v.mft.where(pos))
			if err != nil || rec.flags&recordInUse == 0 {
				continue
			}
			base := n
			if rec.base != 0 {
				base = rec.base
			}
			if base < 0 || base >= v.records {
				continue
			}
			f := get(base)
			if base == n {
				f.seq, f.dir, f.inUse = rec.seq, rec.flags&recordIsDir != 0, true
			}
			f.at = append(f.at, v.streamBytes(v.mft, pos, v.recordSize)...)
			attrs, err := v.parseAttrs(rec)
			if err != nil {
				continue // its attributes are lost; its record is still its own
			}
			for _, a := range attrs {
				switch {
				case !a.resident:
					for _, r := range a.runs {
						if r.lcn >= 0 {
							f.at = append(f.at, block.Extent{Off: r.lcn * v.clusterSize, Len: r.n * v.clusterSize})
						}
					}
				case a.typ == attrFileName && len(a.value) >= 0x42:
					le := binary.LittleEndian
					nameLen, space := int(a.value[0x40]), a.value[0x41]
					if space == nameDOS || 0x42+2*nameLen > len(a.value) || nameLen == 0 {
						continue
					}
					f.names = append(f.names, fileName{parent: le.Uint64(a.value), name: decodeName(a.value[0x42 : 0x42+2*nameLen])})
				}
			}
		}
	}
	// The MFT, whole, is $MFT's: a record's bytes are its file's too.
	if f := files[recMFT]; f != nil {
		f.at = append(f.at, v.streamBytes(v.mft, 0, v.records*v.recordSize)...)
	}
	paths := &ntfsPaths{files: files, done: map[int64]string{}}
	nums := make([]int64, 0, len(files))
	for n, f := range files {
		if f.inUse {
			nums = append(nums, n)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for _, n := range nums {
		f := files[n]
		at := block.MergeExtents(f.at)
		if n < firstUserRecord && n != recRoot {
			name := fmt.Sprintf("MFT record %d", n)
			if n < int64(len(systemNames)) {
				name = systemNames[n]
			}
			if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: name}, at); err != nil {
				return err
			}
			continue
		}
		kind := vfs.OwnerFile
		if f.dir {
			kind = vfs.OwnerDir
		}
		if n == recRoot {
			if err := visit(vfs.Owner{Kind: vfs.OwnerDir, Path: "/"}, at); err != nil {
				return err
			}
			continue
		}
		seen := map[string]bool{}
		for _, fn := range f.names {
			p := paths.of(fn, 0)
			if seen[p] {
				continue // a Win32 and a POSIX name alike
			}
			seen[p] = true
			o := vfs.Owner{Kind: kind, Path: p}
			if p == "/$Extend" || strings.HasPrefix(p, "/$Extend/") {
				o = vfs.Owner{Kind: vfs.OwnerMeta, Path: p[1:]}
			}
			if err := visit(o, at); err != nil {
				return err
			}
		}
		if len(f.names) == 0 {
			if err := visit(vfs.Owner{Kind: kind, Path: fmt.Sprintf("MFT record %d", n)}, at); err != nil {
				return err
			}
		}
	}
	// The backup boot sector: the sector after the last the volume
	// counts, in no file.
	if end := v.totalSectors * v.sectorSize; end+v.sectorSize <= size {
		if err := visit(vfs.Owner{Kind: vfs.OwnerMeta, Path: "$Boot"}, []block.Extent{{Off: end, Len: v.sectorSize}}); err != nil {
			return err
		}
	}
	return nil
}

// streamBytes is where bytes [off, off+n) of stream s lie on the volume.
func (v *volume) streamBytes(s *stream, off, n int64) []block.Extent {
	var out []block.Extent
	cs := v.clusterSize
	for end := off + n; off < end; {
		r, ok := s.run(off / cs)
		if !ok {
			break
		}
		k := min(end, (r.vcn+r.n)*cs) - off
		if r.lcn >= 0 {
			e := block.Extent{Off: r.lcn*cs + off - r.vcn*cs, Len: k}
			if j := len(out) - 1; j >= 0 && out[j].End() == e.Off {
				out[j].Len += k
			} else {
				out = append(out, e)
			}
		}
		off += k
	}
	return out
}

// ntfsPaths builds paths from $FILE_NAME links.
type ntfsPaths struct {
	files map[int64]*mftFile
	done  map[int64]string // directories' paths ("" the root; "\x00" none)
}

// of is the path of link fn: its parent directory's, and its name.
func (p *ntfsPaths) of(fn fileName, depth int) string {
	parent := int64(fn.parent & refMask)
	dir, ok := p.dir(parent, uint16(fn.parent>>48), depth)
	if !ok {
		return fmt.Sprintf("MFT record %d/%s", parent, fn.name)
	}
	return dir + "/" + fn.name
}

// dir is the path of directory record n of sequence number seq ("" the
// root), or false if no path reaches it.
func (p *ntfsPaths) dir(n int64, seq uint16, depth int) (string, bool) {
	f := p.files[n]
	if f == nil || !f.inUse || !f.dir || (seq != 0 && seq != f.seq) || depth > maxDepth {
		return "", false
	}
	if n == recRoot {
		return "", true
	}
	if s, ok := p.done[n]; ok {
		return s, s != "\x00"
	}
	p.done[n] = "\x00" // a loop back here finds no path
	s := "\x00"
	for _, fn := range f.names {
		if parent := int64(fn.parent & refMask); parent != n {
			if d, ok := p.dir(parent, uint16(fn.parent>>48), depth+1); ok {
				s = d + "/" + fn.name
				break
			}
		}
	}
	p.done[n] = s
	return s, s != "\x00"
}
