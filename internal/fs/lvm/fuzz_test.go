package lvm

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// testdata/pv-head.bin.gz is the first 12 KiB of a PV made with LVM
// 2.03.16 (pvcreate; vgcreate vg0; lvcreate -L 12m root; lvcreate -L 8m
// home; lvextend -L +8m vg0/root; lvcreate -L 4m swap, all -an -Zn on a
// 64 MiB loop device), its label, header and current metadata text;
// testdata/vg0.txt is that text.

func realPVHead(t testing.TB) []byte {
	f, err := os.Open("testdata/pv-head.bin.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seedTexts are metadata texts LVM writes, and some it does not.
func seedTexts(t testing.TB) []string {
	real, err := os.ReadFile("testdata/vg0.txt")
	if err != nil {
		t.Fatal(err)
	}
	const ext, peStart, peCount = mib, mib, 100
	pvs := pvText("pv0", testUUID, 2<<20, peStart/512, peCount)
	return []string{
		string(real),
		vgText("vg0", 1, ext/512, pvs, lvText("a", visible, linear(0, 4, "pv0", 2), linear(4, 2, "pv0", 9))),
		vgText("vg0", 1, ext/512, pvs, lvText("st", visible, striped(0, 8, 8, "pv0", 10, "pv0", 2))),
		vgText("vg0", 1, ext/512, pvs, thinLVs("pool", 2, 8, 12, 1)),
		vgText("vg0", 1, ext/512, pvs, lvText("r", visible, "start_extent = 0\nextent_count = 4\ntype = \"raid1\"\ndevice_count = 2\nregion_size = 4096\nraids = [\n\"r_rmeta_0\", \"r_rimage_0\",\n\"r_rmeta_1\", \"r_rimage_1\"\n]")+
			lvText("r_rimage_0", hidden, linear(0, 4, "pv0", 3))+lvText("r_rmeta_0", hidden, linear(0, 1, "pv0", 2))+
			lvText("r_rimage_1", hidden, linear(0, 4, "pv0", 11))+lvText("r_rmeta_1", hidden, linear(0, 1, "pv0", 10))),
		"a { b = [1, -2, \"x\\\"y\", 0.5] c { } }\n",
		strings.Repeat("a {", 20),
		"n = 99999999999999999999",
		"s = \"unterminated",
	}
}

// FuzzMetadata: the config parser and the VG reader on any text either
// answer or refuse it with a syntax error; never a panic.
func FuzzMetadata(f *testing.F) {
	for _, s := range seedTexts(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		root, err := parseConfig(b)
		var se *syntaxError
		if err != nil {
			if !errors.As(err, &se) {
				t.Fatalf("not a syntax error: %v", err)
			}
			return
		}
		if _, err := parseVG(root); err != nil && !errors.As(err, &se) {
			t.Fatalf("not a syntax error: %v", err)
		}
	})
}

// fakeInner reads a volume's first and last bytes and answers by them:
// a filesystem that uses every third 4 KiB block, none, or damage.
func fakeInner(r io.ReaderAt, size int64) (*block.Usage, error) {
	b := make([]byte, 1)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, err
	}
	if _, err := r.ReadAt(make([]byte, 4096), max(0, size-4096)); err != nil && err != io.EOF {
		return nil, err
	}
	switch b[0] % 3 {
	case 1:
		return nil, nil
	case 2:
		return nil, &block.CorruptError{What: "fake", Off: 0, Msg: "damaged"}
	}
	return block.NewUsage("fake", 4096, size, func(first int64, m *block.Map) error {
		for i := int64(0); i < m.Blocks(); i++ {
			if (first+i)%3 == 0 {
				m.Set(i)
			}
		}
		return nil
	})
}

// fixCRCs sets the label's, the first metadata area header's and its
// text's checksums of a fuzzed PV head to what its bytes give, so the
// fuzzer reaches the text and the layout behind them.
func fixCRCs(b []byte) {
	le := binary.LittleEndian
	for i := 0; i < labelScan && (i+1)*sector <= len(b); i++ {
		s := b[i*sector : (i+1)*sector]
		if string(s[:8]) != labelID {
			continue
		}
		if h := int(le.Uint32(s[20:])); h >= 32 && h+40+32 <= sector {
			// The first metadata area follows the data area list.
			p := h + 40
			for p+16 <= sector && (le.Uint64(s[p:]) != 0 || le.Uint64(s[p+8:]) != 0) {
				p += 16
			}
			if p += 16; p+16 <= sector {
				if off := le.Uint64(s[p:]); off < uint64(len(b)) && uint64(len(b))-off >= mdaHeaderSize {
					fixArea(b[off:])
				}
			}
		}
		le.PutUint32(s[16:], lvmCRC(crcInit, s[20:]))
		return
	}
}

func fixArea(a []byte) {
	le := binary.LittleEndian
	h := a[:mdaHeaderSize]
	if off, n := le.Uint64(h[40:]), le.Uint64(h[48:]); off < uint64(len(a)) && n <= uint64(len(a))-off {
		le.PutUint32(h[56:], lvmCRC(crcInit, a[off:off+n]))
	}
	le.PutUint32(h, lvmCRC(crcInit, h[4:]))
}

// FuzzDetect reads a fuzzed PV head (the rest of a 1 GiB PV is zeros)
// and its whole map, as imaging it would; with fix, its checksums are
// made right first.
func FuzzDetect(f *testing.F) {
	f.Add(realPVHead(f), false)
	for _, s := range seedTexts(f) {
		f.Add(buildPV(pvSpec{size: 16 << 10, uuid: testUUID, peStart: mib, mdaSize: 12 << 10, text: s}), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			fixCRCs(b)
		}
		r := &tooltest.SparseReader{B: b, Size: 1 << 30}
		u, err := Detect(r, r.Size, fakeInner)
		if err != nil {
			var ce *block.CorruptError
			if !errors.Is(err, block.ErrNotMine) && !errors.As(err, &ce) {
				t.Fatalf("neither not-mine nor damage: %v", err)
			}
			return
		}
		tooltest.FuzzUsage(u, nil)
	})
}

// TestRealHead: the real PV head reads as LVM made it.
func TestRealHead(t *testing.T) {
	head := realPVHead(t)
	pv := append(head, make([]byte, 64<<20-len(head))...)
	u, err := Detect(bytes.NewReader(pv), int64(len(pv)), fakeInner)
	if err != nil {
		t.Fatal(err)
	}
	// lvs said: home 3-4, root 0-2 and 5-6, swap 7; pe_start 1 MiB.
	want := map[string][2]int64{"root": {mib, 20 * mib}, "home": {mib + 3*4*mib, 8 * mib}, "swap": {mib + 7*4*mib, 4 * mib}}
	if u.Detail != "VG vg0, 4 MiB extents" || len(u.Volumes) != 3 {
		t.Fatalf("%q %+v", u.Detail, u.Volumes)
	}
	for _, v := range u.Volumes {
		if w := want[v.Name]; v.Start != w[0] || v.Size != w[1] {
			t.Errorf("%+v, want start %d size %d", v, w[0], w[1])
		}
	}
}
