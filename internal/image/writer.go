package image

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"slices"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// Writer writes an image front to back: the header (and, encrypted, the
// key slots), the layout block, then one frame per stored chunk, then the
// index, the maps, the metadata and the footer. It never seeks. It is not
// safe for concurrent use; the backup engine feeds it from one goroutine.
type Writer struct {
	// TempDir is where index entries and compressed blocks spill once
	// they outgrow memory ("": os.TempDir()). The backup engine points it
	// beside the image.
	TempDir string

	w       io.Writer
	off     int64
	id      ID
	head    [headerSize]byte
	flags   uint32
	layout  Layout
	created time.Time
	ciphers *seal.Ciphers // nil: not encrypted
	scratch [frameHeaderSize]byte
	sealBuf []byte // a sealed frame being made
	index   *spool // entries given to AddEntry
	entries uint64
	last    Entry
	// Entries given to Replace, by chunk: they replace the spooled entry
	// of their chunk, or join the index where the chunk has none.
	replaced map[chunkKey]Entry
}

type chunkKey struct {
	area  uint32
	chunk uint64
}

func (k chunkKey) less(o chunkKey) bool {
	return k.area < o.area || k.area == o.area && k.chunk < o.chunk
}

// Head is what an image starts with: known before its first frame.
type Head struct {
	ID      ID
	Created time.Time
	// Layout is written in the layout block before the first frame; the
	// metadata given to Finish must describe the same.
	Layout Layout
	// Keys, if set, encrypt the image: its data key seals every frame
	// and block, its slots are written after the header.
	Keys *Keys
}

// NewWriter writes the image header, the key slots of an encrypted image
// and the layout block to w.
func NewWriter(w io.Writer, h Head) (*Writer, error) {
	iw := &Writer{w: w, id: h.ID, layout: h.Layout, created: h.Created}
	created := h.Created.UnixNano()
	if h.Keys != nil {
		// The time is in the sealed metadata; the header is plaintext.
		iw.flags, created = FlagEncrypted, 0
		c := h.Keys.Data.Ciphers()
		iw.ciphers = &c
	}
	putHeader(iw.head[:], h.ID, created, iw.flags)
	if err := iw.write(iw.head[:]); err != nil {
		return nil, err
	}
	if h.Keys != nil {
		b, err := h.Keys.Slots.Encode(h.ID)
		if err != nil {
			return nil, err
		}
		for range 2 { // copies A and B
			if err := iw.write(b); err != nil {
				return nil, err
			}
		}
	}
	lb := h.Layout.encode()
	err := iw.writeStream(layoutMagic, func(out io.Writer) error {
		_, err := out.Write(lb)
		return err
	})
	if err != nil {
		return nil, err
	}
	return iw, nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.off += int64(n)
	if err != nil {
		return w.writeError(err)
	}
	return nil
}

// writeError says where writing the image failed, in the user's words:
// "/backup/x.platter: no space left on device (at byte 16777216 of the
// image)", not the system call's.
func (w *Writer) writeError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w (at byte %d of the image)", pe.Path, pe.Err, w.off)
	}
	return fmt.Errorf("%w (at byte %d of the image)", err, w.off)
}

// Offset is the number of bytes written so far.
func (w *Writer) Offset() int64 { return w.off }

// Frame is one chunk ready to be written.
type Frame struct {
	Area    uint32
	Chunk   uint64
	RawLen  int
	Hash    [32]byte
	Codec   codec.ID
	Payload []byte
	// Delta: Payload is a delta over a chunk of the parent's chain (a
	// delta header, then the sub-blocks; Codec encodes the sub-blocks).
	Delta bool
	Base  DeltaBase // of a delta: the chunk of the parent's chain it is laid over
}

// WriteFrame writes f and returns the image offset of its frame. In an
// encrypted image the frame, header included, is sealed with a fresh
// nonce and its offset in the associated data.
func (w *Writer) WriteFrame(f *Frame) (int64, error) {
	off := w.off
	h := frameHeader{
		Codec:    uint8(f.Codec),
		Area:     f.Area,
		RawLen:   uint32(f.RawLen),
		Chunk:    f.Chunk,
		Stored:   uint32(len(f.Payload)),
		Checksum: crc(f.Payload),
		Hash:     f.Hash,
	}
	if f.Delta {
		h.Flags = frameDelta
	}
	if w.ciphers != nil {
		if err := w.writeSealedFrame(&h, f.Payload); err != nil {
			return 0, err
		}
		return off, nil
	}
	h.put(w.scratch[:])
	if err := w.write(w.scratch[:]); err != nil {
		return 0, err
	}
	if err := w.write(f.Payload); err != nil {
		return 0, err
	}
	return off, nil
}

func (w *Writer) writeSealedFrame(h *frameHeader, payload []byte) error {
	plain := frameHeaderSize + len(payload)
	total := sealedFrameHead + plain + seal.Overhead
	if cap(w.sealBuf) < total {
		w.sealBuf = make([]byte, total)
	}
	b := w.sealBuf[:total]
	copy(b[0:4], sealedMagic[:])
	binary.LittleEndian.PutUint32(b[4:], uint32(plain+seal.Overhead))
	nonce, err := seal.Nonce()
	if err != nil {
		return err
	}
	copy(b[8:sealedFrameHead], nonce[:])
	in := b[sealedFrameHead : sealedFrameHead+plain]
	h.put(in)
	copy(in[frameHeaderSize:], payload)
	w.ciphers.Frame.Seal(in[:0], nonce[:], in, frameAD(w.id, w.off))
	return w.write(b)
}

// AddEntry records the index entry of one chunk. Entries come in area
// order and, within an area, in chunk order. A duplicate chunk whose frame
// is not known yet may carry FrameOff -1; Finish's resolve fills it in.
//
// Entries are spooled (in memory, then in a temporary file) rather than
// kept: a fully used 16 TiB disk has four million of them.
func (w *Writer) AddEntry(e Entry) error {
	if w.entries > 0 && (e.Area < w.last.Area || e.Area == w.last.Area && e.Chunk <= w.last.Chunk) {
		return fmt.Errorf("image: entry for area %d chunk %d after area %d chunk %d", e.Area, e.Chunk, w.last.Area, w.last.Chunk)
	}
	if w.index == nil {
		w.index = &spool{dir: w.TempDir}
	}
	var b [entrySize]byte
	e.put(b[:])
	if _, err := w.index.Write(b[:]); err != nil {
		return err
	}
	w.last = e
	w.entries++
	return nil
}

// Replace records a later entry for a chunk, in any order: it takes the
// place of the chunk's entry given to AddEntry (or to an earlier Replace),
// or is added if the chunk has none. Live imaging copies chunks written
// during the copy again; the frames they replace stay in the file,
// unreferenced. Replaced entries are kept in memory: there are as many as
// chunks copied again.
func (w *Writer) Replace(e Entry) {
	if w.replaced == nil {
		w.replaced = map[chunkKey]Entry{}
	}
	w.replaced[chunkKey{e.Area, e.Chunk}] = e
}

// Bitmap is an allocation map that writes the form Map.Bytes gives:
// *block.Map and *block.Usage.
type Bitmap interface {
	BlockSize() int64
	WriteTo(w io.Writer) (int64, error)
}

// Finish writes the index (the entries given to AddEntry, each passed to
// resolve first when it has FrameOff -1), the allocation maps (maps[i] for
// meta.Areas[i], nil for a raw area), the metadata and the footer. The
// caller then syncs and renames the file; until the footer is written the
// image is not valid. complete, if not nil, is called once the maps are
// written (the last read of the source) and may add to the metadata.
func (w *Writer) Finish(maps []Bitmap, meta *Metadata, resolve func(*Entry) error, complete func(*Metadata) error) error {
	if len(maps) != len(meta.Areas) {
		return fmt.Errorf("image: %d maps for %d areas", len(maps), len(meta.Areas))
	}
	if w.index == nil {
		w.index = &spool{dir: w.TempDir}
	}
	defer w.index.Close()
	indexOff := w.off
	var count uint64
	err := w.writeStream(indexMagic, func(out io.Writer) error {
		r, err := w.index.reader()
		if err != nil {
			return err
		}
		put := func(e Entry) error {
			if e.FrameOff == -1 {
				if err := resolve(&e); err != nil {
					return err
				}
			}
			var b [entrySize]byte
			e.put(b[:])
			count++
			_, err := out.Write(b[:])
			return err
		}
		// Merge the spooled entries (in order) with the replacements
		// (sorted here), the replacement winning for a chunk in both.
		keys := make([]chunkKey, 0, len(w.replaced))
		for k := range w.replaced {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b chunkKey) int {
			if a.less(b) {
				return -1
			}
			return 1
		})
		var b [entrySize]byte
		for range w.entries {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return fmt.Errorf("image: read back index entries: %w", err)
			}
			e := parseEntry(b[:])
			k := chunkKey{e.Area, e.Chunk}
			for len(keys) > 0 && keys[0].less(k) {
				if err := put(w.replaced[keys[0]]); err != nil {
					return err
				}
				keys = keys[1:]
			}
			if len(keys) > 0 && keys[0] == k {
				e = w.replaced[k]
				keys = keys[1:]
			}
			if err := put(e); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := put(w.replaced[k]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	indexLen := w.off - indexOff

	mapsOff := w.off
	for i, m := range maps {
		meta.Areas[i].BlockSize = 0
		if m != nil {
			meta.Areas[i].BlockSize = m.BlockSize()
		}
	}
	err = w.writeStream(mapsMagic, func(out io.Writer) error {
		for _, m := range maps {
			if m == nil {
				continue
			}
			if _, err := m.WriteTo(out); err != nil {
				return fmt.Errorf("image: encode allocation map: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	mapsLen := w.off - mapsOff
	if complete != nil {
		if err := complete(meta); err != nil {
			return err
		}
	}

	meta.FormatVersion = Version
	meta.ID = w.id.String()
	if meta.Created.IsZero() {
		meta.Created = w.created
	}
	if err := w.layout.same(meta); err != nil {
		return fmt.Errorf("image: %w (internal error)", err)
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("image: encode metadata: %w", err)
	}
	metaOff := w.off
	st, err := w.stage(metaMagic, func(out io.Writer) error {
		_, err := out.Write(js)
		return err
	})
	if err != nil {
		return err
	}
	defer st.stored.Close()
	f := footer{
		Version:    Version,
		Flags:      w.flags,
		ID:         w.id,
		IndexOff:   indexOff,
		IndexLen:   indexLen,
		MapsOff:    mapsOff,
		MapsLen:    mapsLen,
		MetaOff:    metaOff,
		MetaLen:    w.blockLen(st),
		EntryCount: count,
	}
	var b [footerSize]byte
	f.put(b[:])
	// The footer is plaintext; in an encrypted image its fields are in
	// the metadata's associated data, so a changed one fails to open it.
	if err := w.emit(st, w.head[:], b[:footAD]); err != nil {
		return err
	}
	return w.write(b[:])
}

// staged is a block compressed into a spool, ready to be written.
type staged struct {
	magic  [4]byte
	header [blockHeaderSize]byte
	stored *spool
}

// writeStream writes a block whose raw bytes fill writes (stage, then
// emit).
func (w *Writer) writeStream(magic [4]byte, fill func(io.Writer) error) error {
	st, err := w.stage(magic, fill)
	if err != nil {
		return err
	}
	defer st.stored.Close()
	return w.emit(st, nil, nil)
}

// stage streams the raw bytes fill writes through the compressor into a
// spool: the block header, which comes first, needs the stored length and
// checksum, and the image is never sought back into. Neither the raw nor
// the stored bytes are ever whole in memory. The caller closes the spool.
func (w *Writer) stage(magic [4]byte, fill func(io.Writer) error) (*staged, error) {
	stored := &spool{dir: w.TempDir}
	crcw := &crcWriter{w: stored}
	zw, err := codec.NewStreamEncoder(crcw)
	if err != nil {
		stored.Close()
		return nil, err
	}
	h := blake3.New()
	raw := &countWriter{}
	if err := fill(io.MultiWriter(h, raw, zw)); err != nil {
		zw.Close()
		stored.Close()
		return nil, err
	}
	if err := zw.Close(); err != nil {
		stored.Close()
		return nil, fmt.Errorf("image: compress block: %w", err)
	}
	bh := blockHeader{Magic: magic, Codec: uint8(codec.Zstd), RawLen: uint64(raw.n), Stored: uint64(stored.Len()), StoredCRC: crcw.sum}
	copy(bh.Hash[:], h.Sum(nil))
	st := &staged{magic: magic, stored: stored}
	bh.put(st.header[:])
	return st, nil
}

// blockLen is the bytes st takes in the image.
func (w *Writer) blockLen(st *staged) int64 {
	if w.ciphers != nil {
		return sealedBlockLen(st.stored.Len())
	}
	return blockHeaderSize + st.stored.Len()
}

// emit writes a staged block at the current offset: its header and stored
// bytes, or in an encrypted image both sealed as a stream behind the
// outer header. head and foot join the associated data (the metadata's).
func (w *Writer) emit(st *staged, head, foot []byte) error {
	r, err := st.stored.reader()
	if err != nil {
		return err
	}
	if w.ciphers == nil {
		if err := w.write(st.header[:]); err != nil {
			return err
		}
		n, err := io.Copy(w.w, r)
		w.off += n
		if err != nil {
			return w.writeError(err)
		}
		return nil
	}
	off := w.off
	var ob [sealedBlockHead]byte
	copy(ob[0:4], st.magic[:])
	le := binary.LittleEndian
	le.PutUint32(ob[4:], seal.SegmentSize)
	le.PutUint64(ob[8:], uint64(seal.SealedLen(blockHeaderSize+st.stored.Len())))
	prefix, err := seal.Nonce()
	if err != nil {
		return err
	}
	copy(ob[16:], prefix[:seal.PrefixSize])
	if err := w.write(ob[:]); err != nil {
		return err
	}
	sw := seal.NewStreamWriter(writerFunc(w.write), w.ciphers.Block, [seal.PrefixSize]byte(prefix[:seal.PrefixSize]), blockAD(w.id, st.magic, off, head, foot))
	if _, err := sw.Write(st.header[:]); err != nil {
		return err
	}
	if _, err := io.Copy(sw, r); err != nil {
		return err
	}
	return sw.Close()
}

// writerFunc makes Writer.write an io.Writer.
type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

type crcWriter struct {
	w   io.Writer
	sum uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	c.sum = crc32.Update(c.sum, castagnoli, p)
	return c.w.Write(p)
}
