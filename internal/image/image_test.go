package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// sampleImage writes a small image with one partition area of three
// chunks: data, zero, and a duplicate of the first.
func sampleImage(t testing.TB) ([]byte, [][]byte) {
	return sampleImageKeys(t, nil)
}

// sampleImageKeys is sampleImage, encrypted with keys (nil: plain).
func sampleImageKeys(t testing.TB, keys *Keys) ([]byte, [][]byte) {
	const cs = 4096
	var buf bytes.Buffer
	meta := &Metadata{SourceSize: 3*cs + 4, SectorSize: 512, Table: "none", ChunkSize: cs,
		Areas: []Area{{Kind: KindPartition, Index: 1, Size: 3*cs + 4, Filesystem: "ext4"}}}
	w, err := NewWriter(&buf, Head{ID: ID{1, 2, 3}, Created: time.Unix(1700000000, 0), Layout: LayoutOf(meta), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := codec.NewEncoder(codec.Setting{ID: codec.Zstd, Level: 3}, 1)
	defer enc.Close()
	c0 := bytes.Repeat([]byte("chunk zero "), cs/11+1)[:cs]
	chunks := [][]byte{c0, make([]byte, cs), c0, []byte("tail")}
	var entries []Entry
	var first int64
	for i, c := range chunks {
		e := Entry{Area: 0, Chunk: uint64(i), RawLen: uint32(len(c)), Hash: blake3.Sum256(c)}
		switch {
		case i == 1:
			e.Flags = FlagZero
		case i == 2:
			e.FrameOff = -1 // resolved by Finish
		default:
			id, p := enc.Encode(nil, c)
			off, err := w.WriteFrame(&Frame{Area: 0, Chunk: uint64(i), RawLen: len(c), Hash: e.Hash, Codec: id, Payload: p})
			if err != nil {
				t.Fatal(err)
			}
			e.FrameOff, e.Stored = off, uint32(len(p))
			if i == 0 {
				first = off
			}
		}
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	mp, _ := block.NewMap(512, 3*cs+4)
	mp.SetRange(0, 10)
	resolve := func(e *Entry) error {
		if e.Chunk != 2 {
			t.Fatalf("resolve called for chunk %d", e.Chunk)
		}
		e.FrameOff, e.Stored = first, entries[0].Stored
		return nil
	}
	if err := w.AddEntry(entries[1]); err == nil {
		t.Fatal("AddEntry took an entry out of order")
	}
	if err := w.Finish([]Bitmap{mp}, meta, resolve, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), chunks
}

func TestRoundTrip(t *testing.T) {
	img, chunks := sampleImage(t)
	r, err := NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.Entries()) != len(chunks) {
		t.Fatalf("%d entries, want %d", len(r.Entries()), len(chunks))
	}
	for i, e := range r.Entries() {
		got, err := r.ReadChunk(e, nil)
		if err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if got := r.Map(0).UsedBytes(); got != 10*512 {
		t.Fatalf("map lost bits: %d used bytes", got)
	}
}

func TestDamage(t *testing.T) {
	img, _ := sampleImage(t)
	r, err := NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	e := r.Entries()[0]
	bad := bytes.Clone(img)
	bad[e.FrameOff+frameHeaderSize+int64(e.Stored)/2] ^= 1
	r2, err := NewReader(bytes.NewReader(bad), int64(len(bad)))
	if err != nil {
		t.Fatal(err)
	}
	var ce *ChunkError
	if _, err := r2.ReadChunk(r2.Entries()[0], nil); !errors.As(err, &ce) || !errors.Is(err, ErrDamaged) {
		t.Fatalf("damaged frame read as %v", err)
	}
	for name, b := range map[string][]byte{
		"truncated": img[:len(img)-10],
		"half":      img[:len(img)/2],
		"empty":     nil,
		"foreign":   []byte("#!/bin/sh\necho hello\n"),
	} {
		if _, err := NewReader(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrDamaged) {
			t.Errorf("%s: got %v, want a damaged-image error", name, err)
		}
	}
	// Every single-byte flip in the header and layout block, and in the
	// trailer (index, metadata, footer), must be caught when the image is
	// opened.
	last := r.Entries()[len(r.Entries())-1]
	for off := int64(0); off < int64(len(img)); off++ {
		if off == r.dataStart {
			off = last.FrameOff + 64 + int64(last.Stored)
		}
		b := bytes.Clone(img)
		b[off] ^= 0x40
		if _, err := NewReader(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Fatalf("flip at byte %d not detected", off)
		}
	}
}

func FuzzReader(f *testing.F) {
	img, _ := sampleImage(f)
	f.Add(img)
	f.Add(img[:len(img)-1])
	sealed, _ := sealedSample(f)
	f.Add(sealed)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Open(bytes.NewReader(b), int64(len(b)), secrets("correct horse"))
		if err != nil {
			if !errors.Is(err, ErrDamaged) && !errors.Is(err, seal.ErrWrongPassphrase) {
				t.Fatalf("error does not say damaged: %v", err)
			}
			return
		}
		for _, e := range r.Entries() {
			r.ReadChunk(e, nil)
		}
		r.Close()
	})
}

// A spool larger than its memory share moves to a file and reads back
// every byte in order.
func TestSpoolSpills(t *testing.T) {
	s := &spool{dir: t.TempDir()}
	defer s.Close()
	var want bytes.Buffer
	for i := 0; want.Len() <= 3*spoolMemory; i++ {
		b := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1+i%5000)
		want.Write(b)
		if _, err := s.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if s.f == nil || s.Len() != int64(want.Len()) {
		t.Fatalf("spool of %d bytes: file %v, Len %d", want.Len(), s.f, s.Len())
	}
	r, err := s.reader()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, want.Len())
	}
}

// failingAt fails every read that reaches past byte from with err, as a
// disk with a bad sector or a server gone away does.
type failingAt struct {
	r    *bytes.Reader
	from int64
	err  error
}

func (f *failingAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.from {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

// TestStorageError: a frame that cannot be read because the storage
// fails is the storage's error, wrapped, not a damaged chunk: exit 1
// and the cause, not exit 3 and "bad chunk". A frame cut short by the
// end of the file is damage.
func TestStorageError(t *testing.T) {
	img, _ := sampleImage(t)
	r, err := NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	e := r.Entries()[0]
	gone := errors.New("connection refused")
	f := &failingAt{r: bytes.NewReader(img), err: gone}
	f.from = int64(len(img)) // open reads the trailer
	r2, err := NewReader(f, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	r2.SetName("s3://b/disk.platter")
	f.from = e.FrameOff
	_, err = r2.ReadChunk(e, nil)
	if !errors.Is(err, gone) || errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "s3://b/disk.platter") {
		t.Errorf("a failing store: %v; want its error, naming the image, not damage", err)
	}
	if bad, err := r2.Verify(context.Background(), 2, nil); !errors.Is(err, gone) || len(bad) != 0 {
		t.Errorf("verify over a failing store: %d bad chunks, %v; want none and its error", len(bad), err)
	}
	f.err = io.ErrUnexpectedEOF
	if _, err := r2.ReadChunk(e, nil); !errors.Is(err, ErrDamaged) {
		t.Errorf("a frame cut short: %v; want damage", err)
	}
}
