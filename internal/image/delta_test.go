package image

import (
	"bytes"
	"context"
	"encoding/hex"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

const deltaCS = 64 << 10

// deltaImage writes an image of one raw area of chunks (64 KiB each) as
// the backup engine does: a chunk the parent's chain holds is a
// reference, a changed one is a delta over the parent's when smaller.
// It returns the reader (parent attached) and the file's bytes.
func deltaImage(t *testing.T, id ID, chunks [][]byte, parent *Reader) (*Reader, []byte, int) {
	t.Helper()
	var buf bytes.Buffer
	size := int64(len(chunks)) * deltaCS
	meta := &Metadata{SourceSize: size, SectorSize: 512, Table: "none", ChunkSize: deltaCS, Type: "full",
		Areas: []Area{{Kind: KindPartition, Index: 1, Size: size, Filesystem: "raw"}}}
	if parent != nil {
		d := parent.ContentDigest()
		meta.Type, meta.Parent, meta.ParentDigest = "incremental", parent.ID().String(), hex.EncodeToString(d[:])
	}
	w, err := NewWriter(&buf, Head{ID: id, Created: time.Unix(1700000000, 0), Layout: LayoutOf(meta)})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := codec.NewEncoder(codec.Setting{ID: codec.Zstd, Level: 3}, 1)
	defer enc.Close()
	deltas := 0
	for i, c := range chunks {
		e := Entry{Chunk: uint64(i), RawLen: deltaCS, Hash: blake3.Sum256(c)}
		pe, ok := parentEntry(parent, uint64(i))
		if ok && pe.Hash == e.Hash {
			e.Flags = FlagParent
		} else {
			f := &Frame{Chunk: uint64(i), RawLen: deltaCS, Hash: e.Hash}
			f.Codec, f.Payload = enc.Encode(nil, c)
			if ok {
				old, err := parent.ReadChunk(pe, nil)
				if err != nil {
					t.Fatal(err)
				}
				bm, n := DiffBlocks(old, c, DeltaBlock, nil)
				if n > 0 && n < deltaCS/DeltaBlock {
					p := AppendDeltaHeader(nil, DeltaBlock, DeltaBase{Chunk: uint64(i), Hash: pe.Hash}, bm)
					id, data := enc.Encode(nil, AppendDeltaBlocks(nil, c, DeltaBlock, bm))
					f.Codec, f.Payload, f.Delta = id, append(p, data...), true
					e.Flags = FlagDelta
					deltas++
				}
			}
			if e.FrameOff, err = w.WriteFrame(f); err != nil {
				t.Fatal(err)
			}
			e.Stored = uint32(len(f.Payload))
		}
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finish([]Bitmap{nil}, meta, nil, nil); err != nil {
		t.Fatal(err)
	}
	return openDelta(t, buf.Bytes(), parent), buf.Bytes(), deltas
}

func openDelta(t *testing.T, b []byte, parent *Reader) *Reader {
	t.Helper()
	r, err := Open(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if parent != nil {
		if err := r.AttachParent(parent); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func randChunks(rng *rand.Rand, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, deltaCS)
		// Half random, half text: compressible, not trivially.
		rng.Read(out[i][:deltaCS/2])
		copy(out[i][deltaCS/2:], strings.Repeat("platter delta ", deltaCS/2/14+1))
	}
	return out
}

// scribble changes a few sub-blocks of some chunks (and the tail of the
// last sub-block of chunk 0, a partial write).
func scribble(rng *rand.Rand, chunks [][]byte) [][]byte {
	out := make([][]byte, len(chunks))
	for i, c := range chunks {
		out[i] = bytes.Clone(c)
		if i%2 == 1 {
			continue
		}
		for k := 0; k < 3; k++ {
			off := rng.Intn(deltaCS - 100)
			rng.Read(out[i][off : off+100])
		}
	}
	return out
}

func checkChunks(t *testing.T, r *Reader, want [][]byte) {
	t.Helper()
	for _, e := range r.Entries() {
		got, err := r.ReadChunk(e, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", e.Chunk, err)
		}
		if !bytes.Equal(got, want[e.Chunk]) {
			t.Fatalf("chunk %d differs", e.Chunk)
		}
	}
	bad, err := r.Verify(context.Background(), 2, nil)
	if err != nil || len(bad) > 0 {
		t.Fatalf("verify: %v %v", bad, err)
	}
}

// A chain full → inc1 (deltas) → inc2 (deltas over deltas) reads back
// exactly, and folding keeps it exact: into its parent (deltas copied or
// made whole) and into a full image (every delta made whole).
func TestDeltaChain(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	v0 := randChunks(rng, 6)
	v1 := scribble(rng, v0)
	v2 := scribble(rng, v1)
	full, fullB, _ := deltaImage(t, ID{1}, v0, nil)
	inc1, inc1B, d1 := deltaImage(t, ID{2}, v1, full)
	inc2, _, d2 := deltaImage(t, ID{3}, v2, inc1)
	if d1 == 0 || d2 == 0 {
		t.Fatalf("no deltas written (%d, %d)", d1, d2)
	}
	if len(inc1B) > len(fullB)/4 {
		t.Errorf("incremental of a few sub-blocks is %d bytes, the full %d", len(inc1B), len(fullB))
	}
	checkChunks(t, full, v0)
	checkChunks(t, inc1, v1)
	checkChunks(t, inc2, v2)

	// inc2 folded onto full (inc1 pruned): its deltas over inc1's
	// chunks are made whole.
	var b bytes.Buffer
	if _, err := Fold(&b, inc2, full, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	checkChunks(t, openDelta(t, b.Bytes(), full), v2)
	// inc1 folded into a full image.
	b.Reset()
	if _, err := Fold(&b, inc1, nil, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	nf := openDelta(t, b.Bytes(), nil)
	for _, e := range nf.Entries() {
		if e.Delta() {
			t.Fatalf("full image keeps delta chunk %d", e.Chunk)
		}
	}
	checkChunks(t, nf, v1)
	// inc2 onto the folded full (same content as inc1): deltas kept.
	b.Reset()
	if _, err := Fold(&b, inc2, inc1, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	kept := openDelta(t, b.Bytes(), inc1)
	n := 0
	for _, e := range kept.Entries() {
		if e.Delta() {
			n++
		}
	}
	if n != d2 {
		t.Errorf("fold onto the same parent kept %d of %d deltas", n, d2)
	}
	checkChunks(t, kept, v2)
}

// A damaged delta frame is a bad chunk; a damaged base makes the delta
// over it bad too; neither panics.
func TestDeltaDamage(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	v0 := randChunks(rng, 4)
	v1 := scribble(rng, v0)
	full, fullB, _ := deltaImage(t, ID{1}, v0, nil)
	inc, incB, _ := deltaImage(t, ID{2}, v1, full)
	var de Entry
	for _, e := range inc.Entries() {
		if e.Delta() {
			de = e
			break
		}
	}
	if !de.Delta() {
		t.Fatal("no delta chunk")
	}
	// A byte of the delta's payload.
	bad := bytes.Clone(incB)
	bad[de.FrameOff+frameHeaderSize+deltaHeadSize+3] ^= 0x40
	r := openDelta(t, bad, full)
	errs, err := r.Verify(context.Background(), 2, nil)
	if err != nil || len(errs) != 1 || errs[0].Entry.Chunk != de.Chunk {
		t.Fatalf("damaged delta frame: %v %v", errs, err)
	}
	// The base's frame, in the parent.
	pe, _ := full.Lookup(0, de.Chunk)
	badP := bytes.Clone(fullB)
	badP[pe.FrameOff+frameHeaderSize+10] ^= 0x40
	// (The parent's content digest covers its index, not its frames,
	// so it still attaches.)
	p := openDelta(t, badP, nil)
	r = openDelta(t, incB, p)
	errs, err = r.Verify(context.Background(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ce := range errs {
		if ce.Entry.Chunk == de.Chunk && strings.Contains(ce.Msg, "delta over") {
			found = true
		}
	}
	if !found {
		t.Fatalf("delta over a damaged base not reported: %v", errs)
	}
	// No parent attached: a clear error.
	r = openDelta(t, incB, nil)
	if _, err := r.ReadChunk(de, nil); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Fatalf("delta without its parent: %v", err)
	}
}

func TestDeltaParse(t *testing.T) {
	base := bytes.Repeat([]byte{1}, 10000) // sub-blocks of 4096, 4096, 1808
	c := bytes.Clone(base)
	c[9999] = 2
	c[0] = 3
	bm, n := DiffBlocks(base, c, 4096, nil)
	if n != 2 || bm[0] != 0b101 {
		t.Fatalf("bitmap %08b, %d changed", bm, n)
	}
	p := AppendDeltaHeader(nil, 4096, DeltaBase{}, bm)
	blocks := AppendDeltaBlocks(nil, c, 4096, bm)
	if len(blocks) != 4096+1808 {
		t.Fatalf("%d bytes of sub-blocks", len(blocks))
	}
	d, err := parseDelta(append(p, blocks...), len(c))
	if err != nil || d.dataLen != len(blocks) {
		t.Fatalf("parse: %v, %d", err, d.dataLen)
	}
	out := bytes.Clone(base)
	d.patch(out, blocks)
	if !bytes.Equal(out, c) {
		t.Fatal("patched chunk differs")
	}
	for _, tc := range []struct {
		name string
		mod  func([]byte) []byte
	}{
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"size", func(b []byte) []byte { b[5] = 0x03; return b }},
		{"tiny size", func(b []byte) []byte { b[4], b[5] = 0, 1; return b }},
		{"bits past the end", func(b []byte) []byte { b[deltaHeadSize] |= 0x80; return b }},
		{"short", func(b []byte) []byte { return b[:deltaHeadSize] }},
	} {
		if _, err := parseDelta(tc.mod(bytes.Clone(p)), len(c)); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// FuzzDelta feeds hostile delta payloads to the parser and the patch:
// errors, never a panic, and a patch only of what the header describes.
func FuzzDelta(f *testing.F) {
	base := bytes.Repeat([]byte("ab"), 5000)
	c := bytes.Clone(base)
	c[4097] = 'x'
	bm, _ := DiffBlocks(base, c, 4096, nil)
	f.Add(append(AppendDeltaHeader(nil, 4096, DeltaBase{}, bm), AppendDeltaBlocks(nil, c, 4096, bm)...), 10000)
	f.Add(AppendDeltaHeader(nil, 512, DeltaBase{Area: 7}, make([]byte, 3)), 9000)
	f.Fuzz(func(t *testing.T, payload []byte, rawLen int) {
		if rawLen <= 0 || rawLen > 1<<20 {
			return
		}
		d, err := parseDelta(payload, rawLen)
		if err != nil {
			return
		}
		if d.dataLen < 0 || d.dataLen > rawLen {
			t.Fatalf("decoded length %d for a %d-byte chunk", d.dataLen, rawLen)
		}
		// As stored uncompressed: the reader decodes exactly dataLen.
		if len(d.data) != d.dataLen {
			return
		}
		out := make([]byte, rawLen)
		d.patch(out, d.data)
	})
}
