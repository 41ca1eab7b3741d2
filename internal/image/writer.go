package image

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// Writer writes an image front to back: the header, then one frame per
// stored chunk, then the index, the metadata and the footer. It never
// seeks. It is not safe for concurrent use; the backup engine feeds it
// from one goroutine.
type Writer struct {
	// TempDir is where index entries and compressed blocks spill once
	// they outgrow memory ("": os.TempDir()). The backup engine points it
	// beside the image.
	TempDir string

	w       io.Writer
	off     int64
	id      ID
	scratch [frameHeaderSize]byte
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

// NewWriter writes the image header to w.
func NewWriter(w io.Writer, id ID, created time.Time) (*Writer, error) {
	iw := &Writer{w: w, id: id}
	var h [headerSize]byte
	putHeader(h[:], id, created.UnixNano())
	if err := iw.write(h[:]); err != nil {
		return nil, err
	}
	return iw, nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("image: write at byte %d: %w", w.off, err)
	}
	return nil
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
}

// WriteFrame writes f and returns the image offset of its header.
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
	h.put(w.scratch[:])
	if err := w.write(w.scratch[:]); err != nil {
		return 0, err
	}
	if err := w.write(f.Payload); err != nil {
		return 0, err
	}
	return off, nil
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
	js, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("image: encode metadata: %w", err)
	}
	metaOff := w.off
	err = w.writeStream(metaMagic, func(out io.Writer) error {
		_, err := out.Write(js)
		return err
	})
	if err != nil {
		return err
	}
	f := footer{
		Version:    Version,
		ID:         w.id,
		IndexOff:   indexOff,
		IndexLen:   indexLen,
		MapsOff:    mapsOff,
		MapsLen:    mapsLen,
		MetaOff:    metaOff,
		MetaLen:    w.off - metaOff,
		EntryCount: count,
	}
	var b [footerSize]byte
	f.put(b[:])
	return w.write(b[:])
}

// writeStream writes a block whose raw bytes fill writes, streamed through
// the compressor into a spool: the block header, which comes first, needs
// the stored length and checksum, and the image is never sought back into.
// Neither the raw nor the stored bytes are ever whole in memory.
func (w *Writer) writeStream(magic [4]byte, fill func(io.Writer) error) error {
	stored := &spool{dir: w.TempDir}
	defer stored.Close()
	crcw := &crcWriter{w: stored}
	zw, err := codec.NewStreamEncoder(crcw)
	if err != nil {
		return err
	}
	h := blake3.New()
	raw := &countWriter{}
	if err := fill(io.MultiWriter(h, raw, zw)); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("image: compress block: %w", err)
	}
	bh := blockHeader{Magic: magic, Codec: uint8(codec.Zstd), RawLen: uint64(raw.n), Stored: uint64(stored.Len()), StoredCRC: crcw.sum}
	copy(bh.Hash[:], h.Sum(nil))
	var b [blockHeaderSize]byte
	bh.put(b[:])
	if err := w.write(b[:]); err != nil {
		return err
	}
	r, err := stored.reader()
	if err != nil {
		return err
	}
	n, err := io.Copy(w.w, r)
	w.off += n
	if err != nil {
		return fmt.Errorf("image: write at byte %d: %w", w.off, err)
	}
	return nil
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
