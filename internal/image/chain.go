package image

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
)

// An incremental or differential image stores only the chunks that
// differ from its parent; its other chunks have entries with FlagParent
// (and the chunk's hash), read from the parent's chain. A Reader of such
// an image needs its parent attached (AttachParent) before it reads one.

// InParent reports whether the chunk's bytes live in the parent's chain.
func (e Entry) InParent() bool { return e.Flags&FlagParent != 0 }

// SetName records the file the reader reads, for messages.
func (ir *Reader) SetName(path string) { ir.name = path }

// Name is the file the reader reads ("" if not set).
func (ir *Reader) Name() string { return ir.name }

// Parent is the attached parent's reader, or nil.
func (ir *Reader) Parent() *Reader { return ir.parent }

// Lookup returns the index entry of a chunk, if the image has one.
func (ir *Reader) Lookup(area uint32, chunk uint64) (Entry, bool) {
	i := sort.Search(len(ir.entries), func(i int) bool {
		e := ir.entries[i]
		return e.Area > area || e.Area == area && e.Chunk >= chunk
	})
	if i < len(ir.entries) && ir.entries[i].Area == area && ir.entries[i].Chunk == chunk {
		return ir.entries[i], true
	}
	return Entry{}, false
}

// ParentError reports a parent that does not belong to the image: another
// image, one changed since, or one of another disk layout.
type ParentError struct {
	Image, Parent string // files
	Msg           string
}

func (e *ParentError) Error() string {
	return fmt.Sprintf("%s cannot use %s as its parent: %s", e.Image, e.Parent, e.Msg)
}

func (e *ParentError) Is(target error) bool { return target == ErrDamaged }

// AttachParent makes p the image's parent, after checking that p is the
// image this one was made from, unchanged (its id and digest), with the
// same layout, and that p's chain has every chunk this image takes from
// it, with the same hash. p must have its own parent attached first.
func (ir *Reader) AttachParent(p *Reader) error {
	bad := func(format string, args ...any) error {
		return &ParentError{Image: ir.name, Parent: p.name, Msg: fmt.Sprintf(format, args...)}
	}
	m, pm := ir.meta, p.meta
	switch {
	case m.Parent == "":
		return bad("it is a full image")
	case p.id.String() != m.Parent:
		return bad("it is image %s, not %s", p.id, m.Parent)
	case m.ParentDigest != hex.EncodeToString(p.digest[:]):
		return bad("its index or metadata changed since this image was made from it (digest %x, expected %s)", p.digest, m.ParentDigest)
	case pm.Parent != "" && p.parent == nil:
		return bad("its own parent %s is not attached", pm.Parent)
	}
	if err := SameLayout(pm, m); err != nil {
		return bad("%v", err)
	}
	for _, e := range ir.entries {
		if !e.InParent() {
			continue
		}
		pe, ok := p.Lookup(e.Area, e.Chunk)
		if !ok || pe.Hash != e.Hash || pe.RawLen != e.RawLen {
			return bad("it does not hold %s as this image expects", ir.Where(e))
		}
	}
	ir.parent = p
	return nil
}

// SameLayout checks that an image of the source described by m can be
// made or read on the grid of parent: the same disk size, sector size,
// table, chunk size and areas. An incremental of a disk whose layout
// changed is refused.
func SameLayout(parent, m *Metadata) error {
	switch {
	case parent.SourceSize != m.SourceSize:
		return fmt.Errorf("the disk is %d bytes, the parent's was %d", m.SourceSize, parent.SourceSize)
	case parent.SectorSize != m.SectorSize:
		return fmt.Errorf("the disk has %d-byte sectors, the parent's had %d", m.SectorSize, parent.SectorSize)
	case parent.Table != m.Table || parent.DiskID != m.DiskID:
		return fmt.Errorf("the partition table is %s %s, the parent's was %s %s (another disk?)", m.Table, m.DiskID, parent.Table, parent.DiskID)
	case parent.ChunkSize != m.ChunkSize:
		return fmt.Errorf("chunks are %d bytes, the parent's were %d", m.ChunkSize, parent.ChunkSize)
	case len(parent.Areas) != len(m.Areas):
		return fmt.Errorf("the disk has %d areas (partitions and table areas), the parent's had %d: partitions were added or removed", len(m.Areas), len(parent.Areas))
	}
	for i := range m.Areas {
		a, b := &parent.Areas[i], &m.Areas[i]
		if a.Kind != b.Kind || a.Index != b.Index || a.Start != b.Start || a.Size != b.Size {
			return fmt.Errorf("%s is at byte %d, %d bytes; in the parent %s was at byte %d, %d bytes: partitions were moved or resized", b.Label(), b.Start, b.Size, a.Label(), a.Start, a.Size)
		}
		if a.Filesystem != b.Filesystem || a.BlockSize != b.BlockSize {
			return fmt.Errorf("%s holds %s, in the parent %s", b.Label(), b.Filesystem, a.Filesystem)
		}
	}
	return nil
}

// resolve returns the reader whose file holds chunk e's frame, and its
// entry there.
func (ir *Reader) resolve(e Entry) (*Reader, Entry, error) {
	r := ir
	for e.InParent() {
		if r.parent == nil {
			return nil, e, &ChunkError{Entry: e, File: r.name, Where: r.Where(e), Msg: fmt.Sprintf("the chunk is in parent %s, which is not attached", r.meta.Parent)}
		}
		pe, ok := r.parent.Lookup(e.Area, e.Chunk)
		if !ok || pe.Hash != e.Hash {
			return nil, e, &ChunkError{Entry: e, File: r.parent.name, Where: r.Where(e), Msg: "the parent does not hold the chunk"}
		}
		r, e = r.parent, pe
	}
	return r, e, nil
}

// ReadID returns the id in the header of the image file at path, without
// checking the rest of the file: for finding parents among many files.
func ReadID(path string) (ID, error) {
	f, err := os.Open(path)
	if err != nil {
		return ID{}, err
	}
	defer f.Close()
	var hb [headerSize]byte
	if _, err := io.ReadFull(f, hb[:]); err != nil || [8]byte(hb[:8]) != headerMagic || binary.LittleEndian.Uint32(hb[60:]) != crc(hb[:60]) {
		return ID{}, ErrNotImage
	}
	return ID(hb[16:32]), nil
}
