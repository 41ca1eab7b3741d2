package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// bounded runs f, which must fail with an error matching ErrDamaged and
// saying want, quickly and without allocating what the image claims.
func bounded(t *testing.T, want string, f func() error) {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	err := f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	t.Logf("%v (%v, %d KiB allocated)", err, took, (after.TotalAlloc-before.TotalAlloc)>>10)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want a damaged-image error saying %q", err, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("%d MiB allocated", alloc>>20)
	}
	if took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// patch returns a copy of img with the 8-byte field at off set to v and
// the CRC-32C of the 60 (block header) or 92 (footer) bytes from start,
// kept at start+crcAt, made right again: the lie gets past the checksum.
func patch(img []byte, off int64, v uint64, start, crcAt int64) []byte {
	b := bytes.Clone(img)
	binary.LittleEndian.PutUint64(b[off:], v)
	binary.LittleEndian.PutUint32(b[start+crcAt:], crc(b[start:start+crcAt]))
	return b
}

func open(b []byte) error {
	r, err := NewReader(bytes.NewReader(b), int64(len(b)))
	if err == nil {
		r.Close()
	}
	return err
}

// The layout block and the footer lying about lengths, offsets and
// counts, with their checksums right: each image is refused as damaged
// when opened, at once, with nothing allocated for what it claims.
// (The index, maps and metadata blocks: TestHostileImages.)
func TestHostileLayoutAndFooter(t *testing.T) {
	img, _ := sampleImage(t)
	foot := int64(len(img)) - footerSize
	f := parseFooter(img[foot:])
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"layout claims 1 TiB decoded", patch(img, headerSize+8, 1<<40, headerSize, 60), "PLLY block claims 1099511627776 bytes"},
		{"layout claims 1 EiB stored", patch(img, headerSize+16, 1<<60, headerSize, 60), "more than the file holds before the index"},
		{"layout claims one stored byte too many", patch(img, headerSize+16, binary.LittleEndian.Uint64(img[headerSize+16:])+1, headerSize, 60), "PLLY"},
		{"footer claims 2^40 entries", patch(img, foot+80, 1<<40, foot, 92), "footer claims 1099511627776 index entries"},
		{"footer index 1 TiB long", patch(img, foot+40, 1<<40, foot, 92), "footer points outside the file"},
		{"footer offsets wrap around", wrapped(img, foot, f), "footer points outside the file"},
		{"footer index before the data", patch(img, foot+32, 8, foot, 92), "footer points outside the file"},
		{"footer metadata past the end", patch(img, foot+64, uint64(foot), foot, 92), "footer points outside the file"},
	} {
		t.Run(c.name, func(t *testing.T) { bounded(t, c.want, func() error { return open(c.b) }) })
	}
}

// wrapped is img with footer offsets and lengths that each look right
// and follow each other only when their sums wrap around 2^64: the index
// at 2^62, the maps at a negative offset, the metadata where it is.
func wrapped(img []byte, foot int64, f footer) []byte {
	const half = uint64(1) << 63
	x := uint64(f.MetaOff) + 100
	b := patch(img, foot+32, half/2, foot, 92)
	b = patch(b, foot+40, half/2+x, foot, 92)
	b = patch(b, foot+48, half+x, foot, 92) // -2^63 + x as an int64
	return patch(b, foot+56, half-100, foot, 92)
}

// zstdBomb is one zstd frame (RFC 8878) of RLE blocks that decodes to n
// zero bytes from 4 bytes per 128 KiB; with fcs its header also declares
// the size (a single segment: its window is the whole size).
func zstdBomb(n int64, fcs bool) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if fcs {
		b = binary.LittleEndian.AppendUint64(append(b, 0xe0), uint64(n))
	} else {
		b = append(b, 0x00, 10<<3) // a 1 MiB window
	}
	for n > 0 {
		k := min(n, 128<<10)
		n -= k
		h := uint32(k)<<3 | 1<<1 // RLE
		if n == 0 {
			h |= 1 // the last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}

// Index entries and frames lying about where a chunk's frame is, how
// long it is and what it decodes to: an entry pointing outside the data
// area or claiming more stored bytes than its chunk can need is refused
// when the image is opened; a frame whose zstd payload decodes to 1 GiB
// (with or without declaring it) is a damaged chunk when read, found
// without decoding more than the chunk.
func TestHostileFrames(t *testing.T) {
	const cs = 1 << 20
	build := func(payload []byte, lie func(e *Entry, indexAt int64)) []byte {
		t.Helper()
		var buf bytes.Buffer
		meta := &Metadata{SourceSize: cs, SectorSize: 512, Table: "none", ChunkSize: cs,
			Areas: []Area{{Kind: KindPartition, Index: 1, Size: cs, Filesystem: "raw"}}}
		w, err := NewWriter(&buf, Head{ID: ID{4, 5, 6}, Created: time.Unix(1700000000, 0), Layout: LayoutOf(meta)})
		if err != nil {
			t.Fatal(err)
		}
		h := blake3.Sum256(make([]byte, cs))
		off, err := w.WriteFrame(&Frame{Area: 0, Chunk: 0, RawLen: cs, Hash: h, Codec: codec.Zstd, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		e := Entry{Area: 0, Chunk: 0, RawLen: cs, Hash: h, FrameOff: off, Stored: uint32(len(payload))}
		if lie != nil {
			lie(&e, off+frameHeaderSize+int64(len(payload)))
		}
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish([]Bitmap{nil}, meta, nil, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	small := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 10 << 3, 1, 0, 0} // an empty last raw block
	for _, c := range []struct {
		name string
		lie  func(e *Entry, indexAt int64)
	}{
		{"entry claims 2 GiB stored", func(e *Entry, _ int64) { e.Stored = 1 << 31 }},
		{"entry's frame runs into the index", func(e *Entry, _ int64) { e.Stored += 1 }},
		{"entry's frame is in the index", func(e *Entry, at int64) { e.FrameOff = at }},
		{"entry's frame is before the data", func(e *Entry, _ int64) { e.FrameOff = headerSize }},
		{"entry's frame is past the end", func(e *Entry, _ int64) { e.FrameOff = 1 << 62 }},
		{"entry's frame end wraps around", func(e *Entry, _ int64) { e.FrameOff = 1<<63 - 10 }},
	} {
		img := build(small, c.lie)
		t.Run(c.name, func(t *testing.T) {
			bounded(t, "lies outside the data area", func() error { return open(img) })
		})
	}
	for _, fcs := range []bool{false, true} {
		img := build(zstdBomb(1<<30, fcs), nil)
		t.Run("frame decodes to 1 GiB", func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatalf("the frame's bytes are what its index says: %v", err)
			}
			defer r.Close()
			buf := make([]byte, 0, cs)
			bounded(t, "partition 1", func() error {
				_, err := r.ReadChunk(r.Entries()[0], buf)
				var ce *ChunkError
				if err != nil && !errors.As(err, &ce) {
					t.Errorf("not a *ChunkError: %v", err)
				}
				return err
			})
		})
	}
}
