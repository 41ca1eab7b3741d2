package image

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// The layout block of an incremental (version 3) names its parent's id
// and content digest, so a stream knows them before the first frame; a
// full image's names none; a version 2 block says nothing either way.
func TestLayoutParent(t *testing.T) {
	full := chainImage(t, ID{1}, [][]byte{chunk("a"), chunk("b")}, nil)
	_, incBytes := chainImageKeys(t, ID{2}, [][]byte{chunk("a"), chunk("B!")}, full, nil, nil)
	s, err := NewStream(bytes.NewReader(incBytes), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := s.Layout()
	if s.Version() != 3 || !l.NamesParent() || l.Parent == nil || l.Parent.ID != full.ID() || l.Parent.Digest != full.ContentDigest() {
		t.Fatalf("version %d, layout parent %+v; want %s, %x", s.Version(), l.Parent, full.ID(), full.ContentDigest())
	}
	_, fullBytes := chainImageKeys(t, ID{3}, [][]byte{chunk("a")}, nil, nil, nil)
	if s, err := NewStream(bytes.NewReader(fullBytes), nil); err != nil || !s.Layout().NamesParent() || s.Layout().Parent != nil {
		t.Fatalf("a full image's layout: %v", err)
	}

	// Round trips, and what a version 2 reader of the payload makes of it.
	want := LayoutOf(full.Metadata())
	want.Parent = &ParentRef{ID: ID{9}, Digest: [32]byte{8}}
	b := want.encode()
	got, err := parseLayout(b, 3)
	if err != nil || *got.Parent != *want.Parent || len(got.Areas) != len(want.Areas) {
		t.Fatalf("parse: %+v, %v", got, err)
	}
	if _, err := parseLayout(b, 2); err == nil {
		t.Error("a version 2 layout block with a parent record was taken")
	}
	want.Parent = nil
	if got, err := parseLayout(want.encode(), 2); err != nil || got.NamesParent() || got.Parent != nil {
		t.Errorf("version 2: %+v, %v", got, err)
	}
	bad := bytes.Clone(b)
	bad[28] |= 2
	if _, err := parseLayout(bad, 3); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Errorf("unknown layout flags: %v", err)
	}
	bad = b[:len(b)-1]
	if _, err := parseLayout(bad, 3); err == nil {
		t.Error("a parent record cut short was taken")
	}
}

// lyingLayout writes an image whose layout block says parent (nil: none)
// while its metadata says what meta says: damage a reader must find.
func lyingLayout(t *testing.T, parent *ParentRef, meta *Metadata, keys *Keys) []byte {
	t.Helper()
	var buf bytes.Buffer
	l := LayoutOf(meta)
	l.Parent = parent
	w, err := NewWriter(&buf, Head{ID: ID{7}, Created: time.Unix(1700000000, 0), Layout: l, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	w.layout = LayoutOf(meta) // so that Finish writes the metadata
	enc, _ := codec.NewEncoder(codec.Setting{ID: codec.Zstd, Level: 3}, 1)
	defer enc.Close()
	c := chunk("x")
	e := Entry{Chunk: 0, RawLen: 4096, Hash: blake3.Sum256(c)}
	id, p := enc.Encode(nil, c)
	if e.FrameOff, err = w.WriteFrame(&Frame{RawLen: 4096, Hash: e.Hash, Codec: id, Payload: p}); err != nil {
		t.Fatal(err)
	}
	e.Stored = uint32(len(p))
	if err := w.AddEntry(e); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish([]Bitmap{nil}, meta, nil, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A layout block whose parent is not the metadata's is damage, to a file
// reader and to a stream at its end; plain and sealed.
func TestLayoutParentDisagrees(t *testing.T) {
	meta := func(parent string, digest [32]byte) *Metadata {
		m := &Metadata{SourceSize: 4096, SectorSize: 512, Table: "none", ChunkSize: 4096, Type: "full",
			Areas: []Area{{Kind: KindPartition, Index: 1, Size: 4096, Filesystem: "raw"}}}
		if parent != "" {
			m.Type, m.Parent, m.ParentDigest = "incremental", parent, hex.EncodeToString(digest[:])
		}
		return m
	}
	a := &ParentRef{ID: ID{1}, Digest: [32]byte{1}}
	for _, tc := range []struct {
		name   string
		layout *ParentRef
		meta   *Metadata
	}{
		{"other parent", a, meta(ID{2}.String(), a.Digest)},
		{"other digest", a, meta(a.ID.String(), [32]byte{2})},
		{"no parent in the layout", nil, meta(a.ID.String(), a.Digest)},
		{"no parent in the metadata", a, meta("", [32]byte{})},
	} {
		for _, sealed := range []bool{false, true} {
			var keys *Keys
			if sealed {
				keys = lockKeys(t, ID{7}, passLock(t, "correct horse"))
			}
			img := lyingLayout(t, tc.layout, tc.meta, keys)
			ring := secrets("correct horse")
			_, err := Open(bytes.NewReader(img), int64(len(img)), ring)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "layout block") {
				t.Errorf("%s (sealed %v): Open: %v", tc.name, sealed, err)
			}
			if _, _, _, err := readStream(t, img, ring); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "layout block") {
				t.Errorf("%s (sealed %v): stream: %v", tc.name, sealed, err)
			}
		}
	}
}

// In an encrypted incremental the parent's id and digest are sealed: no
// copy of either is in the file.
func TestLayoutParentSealed(t *testing.T) {
	lock := passLock(t, "correct horse")
	ring := secrets("correct horse")
	pid := ID{0xa1, 0xb2, 0xc3, 0xd4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	full, _ := chainImageKeys(t, pid, [][]byte{chunk("a"), chunk("b")}, nil, lockKeys(t, pid, lock), ring)
	inc, incBytes := chainImageKeys(t, ID{2}, [][]byte{chunk("a"), chunk("B!")}, full, lockKeys(t, ID{2}, lock), ring)
	d := full.ContentDigest()
	id := full.ID()
	if bytes.Contains(incBytes, id[:]) || bytes.Contains(incBytes, d[:16]) || bytes.Contains(incBytes, []byte(hex.EncodeToString(id[:]))) {
		t.Fatal("the parent's id or digest is readable in the encrypted incremental")
	}
	s, err := NewStream(bytes.NewReader(incBytes), ring)
	if err != nil || s.Layout().Parent == nil || s.Layout().Parent.ID != full.ID() {
		t.Fatalf("sealed layout: %v", err)
	}
	if inc.Layout().Parent == nil || *inc.Layout().Parent != *s.Layout().Parent {
		t.Fatal("the file reader's layout names another parent")
	}
}
