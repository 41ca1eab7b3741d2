package image

import (
	"encoding/binary"
	"fmt"
)

// Layout is what a reader needs before the first frame to place chunks
// on the disk: the source's size and sector size, the chunk size, and the
// areas. A version 2 image has it in the layout block after the header
// (and key slots), so an image read as a stream (restore from a pipe) can
// write each chunk as its frame goes by; the metadata at the end says the
// same and more, and a reader checks that the two agree.
type Layout struct {
	SourceSize int64
	SectorSize int64
	ChunkSize  int64
	Areas      []LayoutArea
}

// LayoutArea is one area of a Layout: Area's kind, index, start and size.
type LayoutArea struct {
	Kind  string
	Index int
	Start int64
	Size  int64
}

// LayoutOf is the layout metadata m describes.
func LayoutOf(m *Metadata) Layout {
	l := Layout{SourceSize: m.SourceSize, SectorSize: m.SectorSize, ChunkSize: m.ChunkSize}
	for _, a := range m.Areas {
		l.Areas = append(l.Areas, LayoutArea{Kind: a.Kind, Index: a.Index, Start: a.Start, Size: a.Size})
	}
	return l
}

const (
	layoutHeadSize = 32
	layoutAreaSize = 32
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

// parseLayout decodes a layout block's payload. Its values are checked
// against the metadata (sameLayoutBlock), which is checked on its own.
func parseLayout(b []byte) (*Layout, error) {
	le := binary.LittleEndian
	if len(b) < layoutHeadSize {
		return nil, fmt.Errorf("layout is %d bytes", len(b))
	}
	n := int64(le.Uint32(b[24:]))
	if int64(len(b)) != layoutHeadSize+n*layoutAreaSize {
		return nil, fmt.Errorf("layout of %d areas is %d bytes", n, len(b))
	}
	l := &Layout{SourceSize: int64(le.Uint64(b[0:])), SectorSize: int64(le.Uint64(b[8:])), ChunkSize: int64(le.Uint64(b[16:]))}
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
	return nil
}
