package image

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Layout is what a reader needs before the first frame to place chunks
// on the disk: the source's size and sector size, the chunk size, and the
// areas. A version 2 image has it in the layout block after the header
// (and key slots), so an image read as a stream (restore from a pipe) can
// write each chunk as its frame goes by; the metadata at the end says the
// same and more, and a reader checks that the two agree.
//
// From version 3 it also names the parent of an incremental or
// differential (Parent), so that a restore from a stream finds and checks
// the parent chain before it writes anything.
type Layout struct {
	SourceSize int64
	SectorSize int64
	ChunkSize  int64
	Areas      []LayoutArea
	// Parent is the image this one was made from, nil for a full image.
	// A version 2 layout block does not say (Parent nil, v2 set).
	Parent *ParentRef
	// v2 says the layout was read from a version 2 image, whose layout
	// block names no parent whether it has one or not.
	v2 bool
}

// ParentRef names the parent of an incremental or differential image: its
// id and its content digest when the child was made (the metadata's
// parent and parent_digest).
type ParentRef struct {
	ID     ID
	Digest [32]byte
}

// NamesParent says whether the layout says if the image has a parent
// (version 3 and later): Parent is then nil only for a full image.
func (l *Layout) NamesParent() bool { return !l.v2 }

// LayoutArea is one area of a Layout: Area's kind, index, start and size.
type LayoutArea struct {
	Kind  string
	Index int
	Start int64
	Size  int64
}

// LayoutOf is the layout metadata m describes. A parent or digest in m
// that is not hex of the right length gives no Parent (and a layout that
// does not agree with m: such metadata is damaged).
func LayoutOf(m *Metadata) Layout {
	l := Layout{SourceSize: m.SourceSize, SectorSize: m.SectorSize, ChunkSize: m.ChunkSize}
	for _, a := range m.Areas {
		l.Areas = append(l.Areas, LayoutArea{Kind: a.Kind, Index: a.Index, Start: a.Start, Size: a.Size})
	}
	if m.Parent != "" || m.ParentDigest != "" {
		id, err1 := hex.DecodeString(m.Parent)
		d, err2 := hex.DecodeString(m.ParentDigest)
		if err1 == nil && err2 == nil && len(id) == len(ID{}) && len(d) == 32 {
			l.Parent = &ParentRef{ID: ID(id), Digest: [32]byte(d)}
		}
	}
	return l
}

const (
	layoutHeadSize   = 32
	layoutAreaSize   = 32
	layoutParentSize = 48 // version 3: parent id (16) and content digest (32)
	// layoutHasParent, in a version 3 layout's flags, says the parent
	// record follows the areas.
	layoutHasParent = 1
	// maxLayoutLen bounds the layout block's decoded bytes: 32767 areas,
	// far more than any partition table makes.
	maxLayoutLen = 1 << 20
)

var areaKinds = []string{1: KindPartition, 2: KindGap}

func (l *Layout) encode() []byte {
	b := make([]byte, layoutHeadSize+layoutAreaSize*len(l.Areas))
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(l.SourceSize))
	le.PutUint64(b[8:], uint64(l.SectorSize))
	le.PutUint64(b[16:], uint64(l.ChunkSize))
	le.PutUint32(b[24:], uint32(len(l.Areas)))
	if l.Parent != nil {
		le.PutUint32(b[28:], layoutHasParent)
		var pb [layoutParentSize]byte
		copy(pb[:16], l.Parent.ID[:])
		copy(pb[16:], l.Parent.Digest[:])
		b = append(b, pb[:]...)
	}
	for i, a := range l.Areas {
		e := b[layoutHeadSize+i*layoutAreaSize:]
		for k, name := range areaKinds {
			if name == a.Kind && k > 0 {
				e[0] = byte(k)
			}
		}
		le.PutUint32(e[4:], uint32(a.Index))
		le.PutUint64(e[8:], uint64(a.Start))
		le.PutUint64(e[16:], uint64(a.Size))
	}
	return b
}

// parseLayout decodes the payload of a layout block of an image of the
// given format version. Its values are checked against the metadata
// (same), which is checked on its own.
func parseLayout(b []byte, version uint16) (*Layout, error) {
	le := binary.LittleEndian
	if len(b) < layoutHeadSize {
		return nil, fmt.Errorf("layout is %d bytes", len(b))
	}
	n := int64(le.Uint32(b[24:]))
	var flags uint32
	var tail int64
	if version >= 3 {
		if flags = le.Uint32(b[28:]); flags&^layoutHasParent != 0 {
			return nil, fmt.Errorf("layout flags %#x are not supported", flags)
		}
		if flags&layoutHasParent != 0 {
			tail = layoutParentSize
		}
	}
	if int64(len(b)) != layoutHeadSize+n*layoutAreaSize+tail {
		return nil, fmt.Errorf("layout of %d areas is %d bytes", n, len(b))
	}
	l := &Layout{SourceSize: int64(le.Uint64(b[0:])), SectorSize: int64(le.Uint64(b[8:])), ChunkSize: int64(le.Uint64(b[16:])), v2: version < 3}
	if tail > 0 {
		pb := b[layoutHeadSize+n*layoutAreaSize:]
		l.Parent = &ParentRef{ID: ID(pb[:16]), Digest: [32]byte(pb[16:48])}
	}
	for i := range n {
		e := b[layoutHeadSize+i*layoutAreaSize:]
		if int(e[0]) >= len(areaKinds) || e[0] == 0 {
			return nil, fmt.Errorf("layout area %d has unknown kind %d", i, e[0])
		}
		l.Areas = append(l.Areas, LayoutArea{Kind: areaKinds[e[0]], Index: int(le.Uint32(e[4:])), Start: int64(le.Uint64(e[8:])), Size: int64(le.Uint64(e[16:]))})
	}
	return l, nil
}

// same says how l differs from the layout the metadata describes, or nil.
func (l *Layout) same(m *Metadata) error {
	want := LayoutOf(m)
	switch {
	case l.SourceSize != want.SourceSize || l.SectorSize != want.SectorSize || l.ChunkSize != want.ChunkSize:
		return fmt.Errorf("the layout block says a %d-byte source, %d-byte sectors, %d-byte chunks; the metadata %d, %d, %d",
			l.SourceSize, l.SectorSize, l.ChunkSize, want.SourceSize, want.SectorSize, want.ChunkSize)
	case len(l.Areas) != len(want.Areas):
		return fmt.Errorf("the layout block lists %d areas, the metadata %d", len(l.Areas), len(want.Areas))
	}
	for i, a := range l.Areas {
		if a != want.Areas[i] {
			return fmt.Errorf("the layout block's area %d is %+v, the metadata's %+v", i, a, want.Areas[i])
		}
	}
	if l.v2 {
		return nil
	}
	switch p, q := l.Parent, want.Parent; {
	case p == nil && (m.Parent != "" || m.ParentDigest != ""):
		return fmt.Errorf("the layout block names no parent; the metadata parent %q (digest %q)", m.Parent, m.ParentDigest)
	case p != nil && (q == nil || *p != *q):
		return fmt.Errorf("the layout block names parent %s (digest %x); the metadata parent %q (digest %q)", p.ID, p.Digest, m.Parent, m.ParentDigest)
	}
	return nil
}

// SameGrid says how the layout of o differs from l's in what places
// chunks on the disk (source and sector size, chunk size, areas), or
// nil: a parent found from a stream's layout block is checked with it
// before the child's metadata is read.
func (l *Layout) SameGrid(o *Layout) error {
	switch {
	case l.SourceSize != o.SourceSize || l.SectorSize != o.SectorSize || l.ChunkSize != o.ChunkSize:
		return fmt.Errorf("it is of a %d-byte disk with %d-byte sectors in %d-byte chunks, not %d, %d, %d",
			o.SourceSize, o.SectorSize, o.ChunkSize, l.SourceSize, l.SectorSize, l.ChunkSize)
	case len(l.Areas) != len(o.Areas):
		return fmt.Errorf("it has %d areas (partitions and table areas), not %d", len(o.Areas), len(l.Areas))
	}
	for i, a := range l.Areas {
		if b := o.Areas[i]; a != b {
			return fmt.Errorf("its area %d is a %s %d at byte %d, %d bytes; not a %s %d at byte %d, %d bytes", i, b.Kind, b.Index, b.Start, b.Size, a.Kind, a.Index, a.Start, a.Size)
		}
	}
	return nil
}
