package image

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// chainImage writes an image of one raw area of the given chunks (4 KiB
// each). With parent set, chunks equal to the parent's are recorded as in
// the parent.
func chainImage(t *testing.T, id ID, chunks [][]byte, parent *Reader) *Reader {
	t.Helper()
	r, _ := chainImageKeys(t, id, chunks, parent, nil, nil)
	return r
}

// chainImageKeys is chainImage, encrypted with keys (nil: plain) and
// unlocked with ring; it returns the file's bytes too.
func chainImageKeys(t *testing.T, id ID, chunks [][]byte, parent *Reader, keys *Keys, ring Keyring) (*Reader, []byte) {
	t.Helper()
	const cs = 4096
	var buf bytes.Buffer
	meta := &Metadata{SourceSize: int64(len(chunks)) * cs, SectorSize: 512, Table: "none", ChunkSize: cs, Type: "full",
		Areas: []Area{{Kind: KindPartition, Index: 1, Size: int64(len(chunks)) * cs, Filesystem: "raw"}}}
	if parent != nil {
		d := parent.ContentDigest()
		meta.Type, meta.Parent, meta.ParentDigest = "incremental", parent.ID().String(), hex.EncodeToString(d[:])
	}
	w, err := NewWriter(&buf, Head{ID: id, Created: time.Unix(1700000000, 0), Layout: LayoutOf(meta), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := codec.NewEncoder(codec.Setting{ID: codec.Zstd, Level: 3}, 1)
	defer enc.Close()
	for i, c := range chunks {
		e := Entry{Chunk: uint64(i), RawLen: cs, Hash: blake3.Sum256(c)}
		if pe, ok := parentEntry(parent, uint64(i)); ok && pe.Hash == e.Hash {
			e.Flags = FlagParent
		} else {
			codecID, p := enc.Encode(nil, c)
			if e.FrameOff, err = w.WriteFrame(&Frame{Chunk: uint64(i), RawLen: cs, Hash: e.Hash, Codec: codecID, Payload: p}); err != nil {
				t.Fatal(err)
			}
			e.Stored = uint32(len(p))
		}
		if err := w.AddEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finish([]Bitmap{nil}, meta, nil, nil); err != nil {
		t.Fatal(err)
	}
	r, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()), ring)
	if err != nil {
		t.Fatal(err)
	}
	return r, buf.Bytes()
}

func parentEntry(p *Reader, chunk uint64) (Entry, bool) {
	if p == nil {
		return Entry{}, false
	}
	return p.Lookup(0, chunk)
}

func chunk(s string) []byte { return bytes.Repeat([]byte(s), 4096/len(s))[:4096] }

// An incremental reads its unchanged chunks from its parent, and refuses
// a parent that is not the image it was made from.
func TestChain(t *testing.T) {
	base := [][]byte{chunk("a"), chunk("b"), chunk("c")}
	full := chainImage(t, ID{1}, base, nil)
	full.SetName("full")
	inc := chainImage(t, ID{2}, [][]byte{chunk("a"), chunk("B!"), chunk("c")}, full)
	inc.SetName("inc")
	if _, err := inc.ReadChunk(inc.Entries()[0], nil); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Fatalf("read before the parent is attached: %v", err)
	}
	if err := inc.AttachParent(full); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{chunk("a"), chunk("B!"), chunk("c")} {
		got, err := inc.ReadChunk(inc.Entries()[i], nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if n := len(inc.Entries()); !inc.Entries()[0].InParent() || inc.Entries()[1].InParent() || n != 3 {
		t.Fatalf("entries %+v", inc.Entries())
	}

	// The same id with another index: changed since.
	altered := chainImage(t, ID{1}, [][]byte{chunk("a"), chunk("b"), chunk("x")}, nil)
	altered.SetName("altered")
	inc2 := chainImage(t, ID{2}, [][]byte{chunk("a"), chunk("B!"), chunk("c")}, full)
	if err := inc2.AttachParent(altered); err == nil || !strings.Contains(err.Error(), "changed since") {
		t.Fatalf("attach an altered parent: %v", err)
	}
	// Another image altogether.
	other := chainImage(t, ID{9}, base, nil)
	if err := inc2.AttachParent(other); err == nil || !strings.Contains(err.Error(), "is image") {
		t.Fatalf("attach another image: %v", err)
	}
}

// Folding an incremental into a full image keeps its id and content: it
// reads the same, and an image made from it still takes it as parent.
func TestFold(t *testing.T) {
	full := chainImage(t, ID{1}, [][]byte{chunk("a"), chunk("b"), chunk("c")}, nil)
	inc := chainImage(t, ID{2}, [][]byte{chunk("a"), chunk("B!"), chunk("c")}, full)
	if err := inc.AttachParent(full); err != nil {
		t.Fatal(err)
	}
	child := chainImage(t, ID{3}, [][]byte{chunk("a"), chunk("B!"), chunk("C?")}, inc)
	var buf bytes.Buffer
	copied, err := Fold(&buf, inc, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	folded, err := NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if copied != 3 || folded.ID() != inc.ID() || folded.ContentDigest() != inc.ContentDigest() || folded.Metadata().Parent != "" || folded.Metadata().Type != "full" {
		t.Fatalf("folded: %d frames copied, id %s, type %s, parent %q", copied, folded.ID(), folded.Metadata().Type, folded.Metadata().Parent)
	}
	for i, e := range folded.Entries() {
		want, _ := inc.ReadChunk(inc.Entries()[i], nil)
		if got, err := folded.ReadChunk(e, nil); err != nil || !bytes.Equal(got, want) || e.InParent() {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if err := child.AttachParent(folded); err != nil {
		t.Fatalf("a child of the incremental refuses it folded: %v", err)
	}
	if got, err := child.ReadChunk(child.Entries()[0], nil); err != nil || !bytes.Equal(got, chunk("a")) {
		t.Fatalf("child chunk 0 through the folded parent: %v", err)
	}
}
