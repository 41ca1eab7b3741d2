package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// Writer writes an image front to back: the header, then one frame per
// stored chunk, then the index, the metadata and the footer. It never
// seeks. It is not safe for concurrent use; the backup engine feeds it
// from one goroutine.
type Writer struct {
	w       io.Writer
	off     int64
	id      ID
	scratch [frameHeaderSize]byte
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

// Finish writes the index (entries, in any order: they are sorted by
// area and chunk), the allocation maps (maps[i] for meta.Areas[i], nil for
// a raw area), the metadata and the footer. The caller then syncs and
// renames the file; until the footer is written the image is not valid.
func (w *Writer) Finish(entries []Entry, maps []*block.Map, meta *Metadata) error {
	if len(maps) != len(meta.Areas) {
		return fmt.Errorf("image: %d maps for %d areas", len(maps), len(meta.Areas))
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.Area != b.Area {
			return a.Area < b.Area
		}
		return a.Chunk < b.Chunk
	})
	raw := make([]byte, len(entries)*entrySize)
	for i, e := range entries {
		e.put(raw[i*entrySize:])
	}
	indexOff := w.off
	if err := w.writeBlock(indexMagic, raw); err != nil {
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
	if err := w.writeMaps(maps); err != nil {
		return err
	}
	mapsLen := w.off - mapsOff

	meta.FormatVersion = Version
	meta.ID = w.id.String()
	js, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("image: encode metadata: %w", err)
	}
	metaOff := w.off
	if err := w.writeBlock(metaMagic, js); err != nil {
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
		EntryCount: uint64(len(entries)),
	}
	var b [footerSize]byte
	f.put(b[:])
	return w.write(b[:])
}

// writeMaps writes the maps block: every map's bitmap, in area order,
// streamed through the compressor so no whole copy of a large map is
// ever made (a 16 TiB filesystem of 4 KiB blocks has a 512 MiB map).
func (w *Writer) writeMaps(maps []*block.Map) error {
	var stored bytes.Buffer
	zw, err := codec.NewStreamEncoder(&stored)
	if err != nil {
		return err
	}
	h := blake3.New()
	var raw int64
	for _, m := range maps {
		if m == nil {
			continue
		}
		n, err := m.WriteTo(io.MultiWriter(h, zw))
		raw += n
		if err != nil {
			return fmt.Errorf("image: encode allocation map: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("image: encode allocation maps: %w", err)
	}
	bh := blockHeader{Magic: mapsMagic, Codec: uint8(codec.Zstd), RawLen: uint64(raw), Stored: uint64(stored.Len()), StoredCRC: crc(stored.Bytes())}
	copy(bh.Hash[:], h.Sum(nil))
	var b [blockHeaderSize]byte
	bh.put(b[:])
	if err := w.write(b[:]); err != nil {
		return err
	}
	return w.write(stored.Bytes())
}

func (w *Writer) writeBlock(magic [4]byte, raw []byte) error {
	enc, err := codec.NewEncoder(codec.Setting{ID: codec.Zstd, Level: 3}, 1)
	if err != nil {
		return err
	}
	defer enc.Close()
	id, stored := enc.Encode(nil, raw)
	h := blockHeader{Magic: magic, Codec: uint8(id), RawLen: uint64(len(raw)), Stored: uint64(len(stored)), Hash: blake3.Sum256(raw), StoredCRC: crc(stored)}
	var b [blockHeaderSize]byte
	h.put(b[:])
	if err := w.write(b[:]); err != nil {
		return err
	}
	return w.write(stored)
}
