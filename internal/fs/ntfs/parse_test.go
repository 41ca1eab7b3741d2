package ntfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
)

// The NTFS parsers' pieces, each on bytes made to break it, and the
// whole reader fuzzed.

func TestDecodeRuns(t *testing.T) {
	v := &volume{clusterSize: 4096, clusters: 1000}
	for _, c := range []struct {
		name     string
		b        []byte
		last     int64
		want     []run
		errMatch string
	}{
		{"one run", []byte{0x21, 0x10, 0x00, 0x01, 0}, 15, []run{{0, 256, 16}}, ""},
		{"sparse between", []byte{0x11, 4, 10, 0x01, 8, 0x11, 2, 0xfe, 0}, 13, []run{{0, 10, 4}, {4, -1, 8}, {12, 8, 2}}, ""},
		{"no terminator", []byte{0x11, 4, 10}, 3, []run{{0, 10, 4}}, ""},
		{"last not checked when 0", []byte{0x11, 4, 10, 0}, 0, []run{{0, 10, 4}}, ""},
		{"empty", nil, -1, nil, ""},
		{"sparse, longer than the volume", []byte{0x03, 0, 0, 1, 0}, 65535, []run{{0, -1, 65536}}, ""},
		{"last mismatch", []byte{0x11, 4, 10, 0}, 9, nil, "runs end at VCN 3"},
		{"outside the volume", []byte{0x31, 4, 0xff, 0xff, 0x7f, 0}, 3, nil, "outside the volume"},
		{"before the volume", []byte{0x11, 4, 0xf0, 0}, 3, nil, "outside the volume"},
		{"zero length", []byte{0x11, 0, 10, 0}, 0, nil, "run of 0 clusters"},
		{"negative length", []byte{0x18, 0, 0, 0, 0, 0, 0, 0, 0x80, 1, 0}, 0, nil, "run of"},
		{"header past the end", []byte{0x44, 1, 2}, 0, nil, "bad run header"},
		{"length size 9", []byte{0x19, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 0, nil, "bad run header"},
	} {
		got, _, err := v.decodeRuns(c.b, 0, c.last)
		if c.errMatch != "" {
			if err == nil || !strings.Contains(err.Error(), c.errMatch) {
				t.Errorf("%s: %v, want %q", c.name, err, c.errMatch)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
	// A damaged run is found where it is: its header's byte.
	if _, at, err := v.decodeRuns([]byte{0x11, 4, 10, 0x44, 1}, 0, 0); at != 3 || err == nil {
		t.Errorf("a bad second run: at byte %d (%v), want 3", at, err)
	}
}

// lznt1Chunk3 is one LZNT1 chunk: the literals lit, then a
// back-reference over them making rest bytes more.
func lznt1Chunk3(lit string, rest int) []byte {
	// Position len(lit) < 16: 12 length bits.
	pt := uint16((len(lit)-1)<<12 | (rest - 3))
	data := []byte{byte(1 << len(lit))}
	data = append(data, lit...)
	data = binary.LittleEndian.AppendUint16(data, pt)
	return append(binary.LittleEndian.AppendUint16(nil, uint16(0xb000|(len(data)-1))), data...)
}

func TestLZNT1(t *testing.T) {
	dst := make([]byte, 8192)
	if err := lznt1(dst, lznt1Chunk3("abc", 9)); err != nil || string(dst[:12]) != "abcabcabcabc" || dst[12] != 0 {
		t.Errorf("back-reference: %q %v", dst[:13], err)
	}
	// A stored chunk then a compressed one: the second starts at 4 KiB.
	stored := append(binary.LittleEndian.AppendUint16(nil, 0x3fff), bytes.Repeat([]byte{'s'}, 4096)...)
	for i := range dst {
		dst[i] = 0xee
	}
	if err := lznt1(dst, append(stored, lznt1Chunk3("xy", 4)...)); err != nil || dst[4095] != 's' || string(dst[4096:4102]) != "xyxyxy" || dst[4102] != 0 || dst[8191] != 0 {
		t.Errorf("stored then compressed: %q %q %v", dst[4090:4100], dst[4096:4104], err)
	}
	for name, src := range map[string][]byte{
		"chunk past the end":     {0x10, 0xb0, 'a'},
		"back-reference first":   {0x02, 0xb0, 0x01, 0x00, 0x00},
		"back-reference too far": {0x04, 0xb0, 0x02, 'a', 0x00, 0x70},
		"stored chunk short":     {0x02, 0x30, 'a', 'b', 'c'},
		"reference cut short":    {0x02, 0xb0, 0x02, 'a', 0x00},
	} {
		if err := lznt1(dst, src); !errors.Is(err, errLZNT1) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Index nodes: entries are bounded by the node, and the last entry ends
// the list.
func TestIndexNode(t *testing.T) {
	le := binary.LittleEndian
	entry := func(ref uint64, name string, space byte) []byte {
		key := make([]byte, 0x42)
		key[0x40], key[0x41] = byte(len(name)), space
		for _, r := range name {
			key = le.AppendUint16(key, uint16(r))
		}
		e := le.AppendUint64(nil, ref)
		length := (0x10 + len(key) + 7) &^ 7
		e = le.AppendUint16(e, uint16(length))
		e = le.AppendUint16(e, uint16(len(key)))
		e = le.AppendUint32(e, 0)
		e = append(e, key...)
		return append(e, make([]byte, length-len(e))...)
	}
	end := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, indexEntryEnd, 0, 0, 0}
	node := func(entries ...[]byte) []byte {
		body := bytes.Join(entries, nil)
		h := le.AppendUint32(nil, 0x10)
		h = le.AppendUint32(h, uint32(0x10+len(body)))
		h = le.AppendUint32(h, uint32(0x10+len(body)))
		h = le.AppendUint32(h, 0)
		return append(h, body...)
	}
	var out []indexEntry
	if err := indexNode(node(entry(40, "a:b", namePOSIX), entry(41, "DOS", nameDOS), end), &out); err != nil || len(out) != 2 || out[0].name != "a:b" || out[1].space != nameDOS {
		t.Errorf("%v %+v", err, out)
	}
	for name, b := range map[string][]byte{
		"no last entry":  node(entry(40, "a", 0)),
		"key too short":  node(append(bytes.Clone(end[:8]), 0x18, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
		"name too long":  node(func() []byte { e := entry(40, "ab", 0); e[0x10+0x40] = 200; return e }(), end),
		"length 0":       node(func() []byte { e := entry(40, "ab", 0); e[8], e[9] = 0, 0; return e }(), end),
		"header short":   {1, 2, 3},
		"entries beyond": append(le.AppendUint32(le.AppendUint32(nil, 0x10), 0x1000), make([]byte, 8)...),
	} {
		out = nil
		if err := indexNode(b, &out); err == nil {
			t.Errorf("%s: no error (%+v)", name, out)
		}
	}
}

// traced is a volume whose reads are noted, a 512-byte sector at a time.
type traced struct {
	r    io.ReaderAt
	seen map[int64]bool
}

func (t *traced) ReadAt(p []byte, off int64) (int, error) {
	for s := off / 512; s*512 < off+int64(len(p)); s++ {
		t.seen[s] = true
	}
	return t.r.ReadAt(p, off)
}

// patched is a volume with some of its sectors replaced: sector
// sectors[i] by bytes [512*i, 512*i+512) of in, as far as in goes.
type patched struct {
	base []byte
	at   map[int64]int // sector -> its index in in
	in   []byte
}

func (p *patched) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(p.base)) {
		return 0, io.EOF
	}
	n := copy(b, p.base[off:])
	for s := off / 512; s*512 < off+int64(n); s++ {
		i, ok := p.at[s]
		if !ok || 512*i >= len(p.in) {
			continue
		}
		src := p.in[512*i : min(512*i+512, len(p.in))]
		lo := max(s*512, off)
		copy(b[lo-off:n], src[lo-s*512:])
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// walkFiles lists every directory of n and, if data, reads every file
// (up to 1 MiB each), ignoring errors: only panics and runaways matter.
func walkFiles(n *reader, data bool) {
	budget := 400 // entries visited
	buf := make([]byte, 64<<10)
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		ents, err := n.ReadDir(dir)
		if err != nil || depth > 8 {
			return
		}
		n.Stat(dir)
		for _, d := range ents {
			if budget--; budget < 0 {
				return
			}
			if !plain(d.Name) || d.Err != nil {
				continue
			}
			p := path.Join(dir, d.Name)
			switch {
			case d.Mode.IsDir():
				walk(p, depth+1)
			case d.Mode.IsRegular() && data:
				if rc, err := n.Open(p); err == nil {
					for off := int64(0); off < 1<<20; off += int64(len(buf)) {
						if k, err := rc.(io.ReaderAt).ReadAt(buf, off); err != nil || k < len(buf) {
							break
						}
					}
				}
			}
		}
	}
	walk("", 0)
}

// plain says name is one path element, as fsread.CheckName would (which
// this package cannot import: fsread reads NTFS through it).
func plain(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}

// FuzzNTFS opens fuzzed NTFS volumes with Platter's own reader (no
// guard: a panic is a failure) and reads everything in them. What it
// mutates is the volume's metadata, packed: the sectors the reader
// reads to list every directory (MFT records, attribute lists, index
// blocks and bitmaps), one after another; the rest of the volume is as
// ntfs-3g wrote it. (A whole volume is megabytes: too much to mutate.)
func FuzzNTFS(f *testing.F) {
	base, err := os.ReadFile(smallVolume(f, 40))
	if err != nil {
		f.Fatal(err)
	}
	tr := &traced{r: bytes.NewReader(base), seen: map[int64]bool{}}
	v, err := open(tr, int64(len(base)))
	if err != nil {
		f.Fatal(err)
	}
	walkFiles(newReader(v), false)
	var sectors []int64
	for s := range tr.seen {
		sectors = append(sectors, s)
	}
	slices.Sort(sectors)
	at := map[int64]int{}
	var seed []byte
	for i, s := range sectors {
		at[s] = i
		seed = append(seed, base[s*512:s*512+512]...)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := open(&patched{base: base, at: at, in: in}, int64(len(base)))
		if err != nil {
			return
		}
		walkFiles(newReader(v), true)
	})
}
