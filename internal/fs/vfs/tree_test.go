package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"strings"
	"testing"
)

// FoldKey matches names exactly as strings.EqualFold does.
func TestFoldKey(t *testing.T) {
	words := []string{"a", "A", "ß", "ẞ", "k", "K", "\u212a", "σ", "Σ", "ς", "ǅ", "ǆ", "Ǆ", "é", "É", "ab", "aB", "i", "I", "İ", "ı", "\xff", "\xfe"}
	for _, a := range words {
		for _, b := range words {
			if (FoldKey(a) == FoldKey(b)) != strings.EqualFold(a, b) {
				t.Errorf("%q, %q: FoldKey equal %v, EqualFold %v", a, b, FoldKey(a) == FoldKey(b), strings.EqualFold(a, b))
			}
		}
	}
}

// node is an entry of a filesystem in memory, for Tree: a directory
// lists its children by their numbers.
type node struct {
	Entry
	id       int
	children []int
}

func TestTree(t *testing.T) {
	dir := func(id int, name string, children ...int) node {
		return node{Entry: Entry{Name: name, Mode: iofs.ModeDir | 0o755}, id: id, children: children}
	}
	file := func(id int, name string) node { return node{Entry: Entry{Name: name, Mode: 0o644}, id: id} }
	damaged := errors.New("entry set damaged")
	unreadable := errors.New("directory damaged")
	nodes := []node{
		dir(0, "/", 1, 2, 3, 4, 5, 6),
		dir(1, "Sub", 7, 8),
		file(2, "README"),
		file(3, "readme"), // found by no name: README comes first
		{Entry: Entry{Name: "Broken", Err: damaged}, id: 4},
		file(5, "broken"), // found by no name: Broken claims it
		dir(6, "Unreadable"),
		file(7, "a.txt"),
		dir(8, "deeper"),
	}
	reads := map[int]int{}
	tr := NewTree(nodes[0], func(d node) ([]node, error) {
		reads[d.id]++
		if d.id == 6 {
			return nil, unreadable
		}
		var out []node
		for _, c := range d.children {
			out = append(out, nodes[c])
		}
		return out, nil
	}, func(n node) Entry { return n.Entry }, func(d node) int { return d.id }, FoldKey)

	for _, c := range []struct {
		name string
		id   int
	}{{"", 0}, {"/", 0}, {".", 0}, {"readme", 2}, {"/SUB/../Readme", 2}, {"sub/A.TXT", 7}, {"Sub/deeper/", 8}} {
		if e, err := tr.Stat(c.name); err != nil || e.id != c.id {
			t.Errorf("Stat(%q): %d, %v; want %d", c.name, e.id, err, c.id)
		}
	}
	for name, want := range map[string]error{"nothing": iofs.ErrNotExist, "README/x": ErrNotDir, "broken": damaged, "sub/nothing/x": iofs.ErrNotExist} {
		if _, err := tr.Stat(name); !errors.Is(err, want) {
			t.Errorf("Stat(%q): %v, want %v", name, err, want)
		}
	}
	if _, err := tr.ReadDir("readme"); !errors.Is(err, ErrNotDir) || err.Error() != "readme: not a directory" {
		t.Errorf("ReadDir of a file: %v", err)
	}
	if _, err := tr.File("sub"); !errors.Is(err, ErrNotRegular) || err.Error() != "sub: not a regular file" {
		t.Errorf("File of a directory: %v", err)
	}
	if e, err := tr.File("SUB/a.txt"); err != nil || e.id != 7 {
		t.Errorf("File: %d, %v", e.id, err)
	}
	ents, err := tr.ReadDir("")
	if err != nil || len(ents) != 6 || ents[3].Err != damaged {
		t.Fatalf("ReadDir of the root: %v, %v", ents, err)
	}
	ents[0].Name = "changed"
	if again, _ := tr.ReadDir("/"); again[0].Name != "Sub" {
		t.Error("ReadDir hands out its listing, not a copy")
	}

	// Listings are kept: looking up a directory's files one by one reads
	// it once. A damaged directory is not kept: every look reads it.
	clear(reads)
	for range 3 {
		tr.Stat("sub/a.txt")
		tr.Stat("sub/deeper")
		if _, err := tr.ReadDir("unreadable"); !errors.Is(err, unreadable) {
			t.Errorf("ReadDir of a damaged directory: %v", err)
		}
	}
	if reads[0] != 0 || reads[1] != 0 || reads[6] != 3 {
		t.Errorf("directories read (by number): %v; want only 6, 3 times", reads)
	}
}

// Many directories: a listing pushed out is read again, and what is
// found is right either way.
func TestTreeManyDirs(t *testing.T) {
	nodes := []node{{Entry: Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, id: 0}}
	for i := range 2 * maxDirs {
		d := len(nodes)
		nodes[0].children = append(nodes[0].children, d)
		nodes = append(nodes, node{Entry: Entry{Name: fmt.Sprintf("d%d", i), Mode: iofs.ModeDir | 0o755}, id: d, children: []int{d + 1}})
		nodes = append(nodes, node{Entry: Entry{Name: "f", Mode: 0o644}, id: d + 1})
	}
	reads := map[int]int{}
	tr := NewTree(nodes[0], func(d node) ([]node, error) {
		reads[d.id]++
		var out []node
		for _, c := range d.children {
			out = append(out, nodes[c])
		}
		return out, nil
	}, func(n node) Entry { return n.Entry }, func(d node) int { return d.id }, FoldKey)
	for round := range 2 {
		for i := range 2 * maxDirs {
			if e, err := tr.Stat(fmt.Sprintf("d%d/f", i)); err != nil || e.id != 2*i+2 {
				t.Fatalf("round %d: d%d/f: %d, %v", round, i, e.id, err)
			}
		}
	}
	if reads[1] != 2 {
		t.Errorf("d0 was read %d times, want twice: pushed out by the other %d", reads[1], 2*maxDirs-1)
	}
}

// Clusters reads through its runs, in any order and across runs, and
// gives zeros past Valid.
func TestClusters(t *testing.T) {
	const cs = 16
	vol := make([]byte, 20*cs)
	for i := range vol {
		vol[i] = byte(i)
	}
	// Logical clusters 0-1 at 5-6, 2 at 2, 3-4 at 10-11 (clusters are
	// numbered from 2, at byte 0).
	c := &Clusters{R: bytes.NewReader(vol), ClusterSize: cs, Size: 5*cs - 3, Valid: 4*cs + 2, FS: "test",
		Runs:   []Run{{Logical: 0, N: 2, Physical: 7}, {Logical: 2, N: 1, Physical: 4}, {Logical: 3, N: 2, Physical: 12}},
		Offset: func(c uint32) int64 { return int64(c-2) * cs }}
	var want []byte
	for _, r := range c.Runs {
		off := c.Offset(r.Physical)
		want = append(want, vol[off:off+r.N*cs]...)
	}
	want = want[:c.Size]
	clear(want[c.Valid:])
	got, err := io.ReadAll(Section(c, c.Size))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %v, %v; want %v", got, err, want)
	}
	for _, off := range []int64{0, 1, cs - 1, cs, 2*cs + 5, 4*cs + 1, c.Size - 1} {
		b := make([]byte, 7)
		n, err := c.ReadAt(b, off)
		wn := int(min(7, c.Size-off))
		if n != wn || !bytes.Equal(b[:n], want[off:off+int64(n)]) || (n < 7) != (err == io.EOF) {
			t.Errorf("ReadAt 7 at %d: %d, %v, % x; want %d, % x", off, n, err, b[:n], wn, want[off:off+int64(wn)])
		}
	}
	if _, err := c.ReadAt(make([]byte, 1), -1); err == nil || !strings.HasPrefix(err.Error(), "test: ") {
		t.Errorf("negative offset: %v", err)
	}
	if n, err := c.ReadAt(make([]byte, 1), c.Size); n != 0 || err != io.EOF {
		t.Errorf("at the end: %d, %v", n, err)
	}
	short := &Clusters{R: bytes.NewReader(vol[:5*cs]), ClusterSize: cs, Size: cs, Valid: cs, FS: "test",
		Runs: []Run{{Logical: 0, N: 1, Physical: 12}}, Offset: c.Offset}
	if _, err := short.ReadAt(make([]byte, cs), 0); !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "test: read cluster 12 at byte 160") {
		t.Errorf("past the volume: %v", err)
	}
}
