package image

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
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
	case m.ParentDigest != hex.EncodeToString(p.content[:]):
		return bad("its content changed since this image was made from it (content digest %x, expected %s)", p.content, m.ParentDigest)
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
	case parent.SectorBySector != m.SectorBySector:
		return fmt.Errorf("sector-by-sector is %v, the parent's was %v", m.SectorBySector, parent.SectorBySector)
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

// ContentDigest identifies what the image restores to, not how it is
// stored: every chunk's area, number, length and hash, the allocation
// maps, and the metadata that describes the disk. An incremental and the
// same image consolidated into a full one have the same content digest,
// so the images made from it still find their parent: a child records
// its parent's content digest.
func (ir *Reader) ContentDigest() [32]byte { return ir.content }

func (ir *Reader) contentDigest(mapsHash [32]byte) ([32]byte, error) {
	h := blake3.New()
	var b [48]byte
	le := binary.LittleEndian
	for _, e := range ir.entries {
		le.PutUint32(b[0:], e.Area)
		le.PutUint64(b[4:], e.Chunk)
		le.PutUint32(b[12:], e.RawLen)
		copy(b[16:], e.Hash[:])
		h.Write(b[:])
	}
	h.Write(mapsHash[:])
	m := *ir.meta
	m.Type, m.Parent, m.ParentDigest, m.Compression = "", "", "", ""
	m.Areas = append([]Area(nil), m.Areas...)
	for i := range m.Areas {
		m.Areas[i].StoredBytes = 0
	}
	js, err := json.Marshal(&m)
	if err != nil {
		return [32]byte{}, err
	}
	h.Write(js)
	return [32]byte(h.Sum(nil)), nil
}

// CopyFrame returns chunk e's frame as stored (opened, if its file is
// encrypted), from whichever file of the chain holds it, after checking it
// whole (decoded and hashed): for copying into another image without
// compressing again.
func (ir *Reader) CopyFrame(e Entry) (*Frame, error) {
	r, fe, err := ir.resolve(e)
	if err != nil {
		return nil, err
	}
	fb := make([]byte, r.frameLen(fe))
	h, payload, err := r.readFrame(fe, fb)
	if err != nil {
		return nil, err
	}
	f := &Frame{Area: e.Area, Chunk: e.Chunk, RawLen: int(e.RawLen), Hash: e.Hash, Codec: codec.ID(h.Codec), Payload: payload}
	if fe.Delta() {
		d, err := parseDelta(payload, int(fe.RawLen))
		if err == nil {
			_, err = r.decodeDelta(fe, h, payload, make([]byte, fe.RawLen))
		}
		if err != nil {
			return nil, err
		}
		f.Delta, f.Base = true, d.base
		return f, nil
	}
	if _, err := r.decodeFrame(fe, h, payload, make([]byte, fe.RawLen)); err != nil {
		return nil, err
	}
	return f, nil
}

// deltaOf reads and parses the header of delta chunk e's frame (in ir's
// file).
func (ir *Reader) deltaOf(e Entry) (deltaHead, error) {
	fb := make([]byte, ir.frameLen(e))
	_, payload, err := ir.readFrame(e, fb)
	if err != nil {
		return deltaHead{}, err
	}
	d, err := parseDelta(payload, int(e.RawLen))
	if err != nil {
		return d, ir.chunkError(e, "%v", err)
	}
	return d, nil
}

// foldEncoder compresses the chunks Fold writes whole, with the image's
// own setting.
func foldEncoder(child *Reader) (*codec.Encoder, error) {
	set, err := codec.ParseSetting(child.meta.Compression)
	if err != nil {
		set = codec.DefaultSetting
	}
	return codec.NewEncoder(set, 1)
}

// holdsBase reports whether the chain of p (nil: none) holds the base of
// a delta frame, so that the frame can be copied into a child of p.
func holdsBase(p *Reader, f *Frame) bool {
	if p == nil {
		return false
	}
	be, ok := p.Lookup(f.Base.Area, f.Base.Chunk)
	return ok && be.Hash == f.Base.Hash && int(be.RawLen) == f.RawLen
}

// materialize replaces delta frame f, whose base the new parent's chain
// does not hold, by the whole chunk, encoded with enc.
func materialize(child *Reader, e Entry, f *Frame, enc *codec.Encoder) (*Frame, error) {
	data, err := child.ReadChunk(e, make([]byte, e.RawLen))
	if err != nil {
		return nil, err
	}
	id, payload := enc.Encode(make([]byte, 0, len(data)+len(data)/64+4096), data)
	return &Frame{Area: f.Area, Chunk: f.Chunk, RawLen: f.RawLen, Hash: f.Hash, Codec: id, Payload: payload}, nil
}

// foldStep is what folding does with one of the child's entries: the
// entry written, and for a chunk whose frame is copied, the file of the
// chain that holds it and its entry there (copy: the first chunk of
// that frame, which copies it; later ones share it).
type foldStep struct {
	in   Entry // the child's
	out  Entry
	from *Reader
	fe   Entry
	copy bool
}

// planFold decides, entry by entry, what Fold writes: a chunk newParent's
// chain holds as it is becomes a reference; a zero chunk has no frame;
// every other chunk's frame is copied once from the file that holds it.
func planFold(child, newParent *Reader) ([]foldStep, error) {
	type where struct {
		r   *Reader
		off int64
	}
	seen := map[where]bool{}
	steps := make([]foldStep, 0, len(child.entries))
	for _, e := range child.entries {
		st := foldStep{in: e, out: Entry{Area: e.Area, Chunk: e.Chunk, RawLen: e.RawLen, Hash: e.Hash}}
		if newParent != nil {
			if pe, ok := newParent.Lookup(e.Area, e.Chunk); ok && pe.Hash == e.Hash {
				st.out.Flags = FlagParent
			}
		}
		switch {
		case st.out.Flags == FlagParent:
		case e.Zero():
			st.out.Flags = FlagZero
		default:
			r, fe, err := child.resolve(e)
			if err != nil {
				return nil, err
			}
			st.from, st.fe = r, fe
			st.copy = !seen[where{r, fe.FrameOff}]
			seen[where{r, fe.FrameOff}] = true
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// FoldCost is what Fold would write, without writing it.
type FoldCost struct {
	// FrameBytes are the frames (headers included) the new file holds;
	// CopiedFrames and CopiedBytes those of them that come from the
	// other files of the chain (the rest are the child's own).
	FrameBytes   int64
	CopiedFrames int
	CopiedBytes  int64
	// OwnBytes are the frames the child's file holds now.
	OwnBytes int64
}

// PlanFold returns what Fold(w, child, newParent) would write.
func PlanFold(child, newParent *Reader) (FoldCost, error) {
	steps, err := planFold(child, newParent)
	if err != nil {
		return FoldCost{}, err
	}
	var c FoldCost
	var enc *codec.Encoder
	own := map[int64]bool{}
	for _, e := range child.entries {
		if !e.InParent() && !e.Zero() && !own[e.FrameOff] {
			own[e.FrameOff] = true
			c.OwnBytes += child.frameLen(e)
		}
	}
	for _, st := range steps {
		if !st.copy {
			continue
		}
		// The new file's frames are sealed as the child's are.
		n := child.frameLen(st.fe)
		if st.fe.Delta() {
			// A delta whose base the new parent's chain does not
			// hold is written whole (a cost of a dry run: such
			// chunks are decoded and compressed to be counted).
			d, err := st.from.deltaOf(st.fe)
			if err != nil {
				return FoldCost{}, err
			}
			if !holdsBase(newParent, &Frame{RawLen: int(st.fe.RawLen), Base: d.base}) {
				// Compressed as Fold will: exactly what it writes.
				if enc == nil {
					if enc, err = foldEncoder(child); err != nil {
						return FoldCost{}, err
					}
					defer enc.Close()
				}
				f, err := materialize(child, st.in, &Frame{RawLen: int(st.fe.RawLen)}, enc)
				if err != nil {
					return FoldCost{}, err
				}
				n = child.frameLen(Entry{Stored: uint32(len(f.Payload))})
			}
		}
		c.FrameBytes += n
		if st.from != child {
			c.CopiedFrames++
			c.CopiedBytes += n
		}
	}
	return c, nil
}

// Fold writes to w the image child with the same id and content, but
// newParent as its parent (nil: a full image). A chunk newParent's chain
// holds as it is is recorded as in the parent; every other chunk's frame
// is copied in from the file of child's chain that holds it. An encrypted
// child stays encrypted with its own key slots: each frame is opened with
// the key of the file it comes from and sealed again at its new offset
// with a fresh nonce. It returns how many frames it copied.
func Fold(w io.Writer, child, newParent *Reader, tempDir string) (int, error) {
	steps, err := planFold(child, newParent)
	if err != nil {
		return 0, err
	}
	meta := *child.meta
	meta.Areas = append([]Area(nil), meta.Areas...)
	for i := range meta.Areas {
		meta.Areas[i].StoredBytes = 0
	}
	meta.Type, meta.Parent, meta.ParentDigest = "full", "", ""
	if newParent != nil {
		d := newParent.ContentDigest()
		meta.Parent, meta.ParentDigest = newParent.id.String(), hex.EncodeToString(d[:])
		if meta.Type = child.meta.Type; meta.Type == "full" || meta.Type == "" {
			meta.Type = "incremental"
		}
	}
	// The layout block names the new parent.
	iw, err := NewWriter(w, Head{ID: child.id, Created: child.meta.Created, Layout: LayoutOf(&meta), Keys: child.Keys()})
	if err != nil {
		return 0, err
	}
	iw.TempDir = tempDir
	type where struct {
		r   *Reader
		off int64
	}
	written := map[where]Entry{} // frames copied, for chunks that share one
	copied := 0
	// A delta frame whose base the new parent's chain does not hold
	// (folding into a full image, or onto another parent) is written as
	// its whole chunk, compressed again.
	var enc *codec.Encoder
	for _, st := range steps {
		out := st.out
		if st.from != nil {
			if st.copy {
				f, err := child.CopyFrame(st.in)
				if err != nil {
					return copied, err
				}
				if f.Delta && !holdsBase(newParent, f) {
					if enc == nil {
						if enc, err = foldEncoder(child); err != nil {
							return copied, err
						}
						defer enc.Close()
					}
					if f, err = materialize(child, st.in, f, enc); err != nil {
						return copied, err
					}
				}
				if f.Delta {
					out.Flags = FlagDelta
				}
				if out.FrameOff, err = iw.WriteFrame(f); err != nil {
					return copied, err
				}
				out.Stored = uint32(len(f.Payload))
				written[where{st.from, st.fe.FrameOff}] = out
				meta.Areas[out.Area].StoredBytes += iw.Offset() - out.FrameOff
				copied++
			} else {
				prev := written[where{st.from, st.fe.FrameOff}]
				out.FrameOff, out.Stored, out.Flags = prev.FrameOff, prev.Stored, prev.Flags
			}
		}
		if err := iw.AddEntry(out); err != nil {
			return copied, err
		}
	}
	maps := make([]Bitmap, len(child.maps))
	for i, m := range child.maps {
		if m != nil {
			maps[i] = m
		}
	}
	return copied, iw.Finish(maps, &meta, nil, nil)
}
