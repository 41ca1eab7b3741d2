package lvm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

const mib = 1 << 20

// copyMap says where an LV's bytes lie on the PV: for LV byte off, the
// PV byte and how many bytes from there are contiguous.
type copyMap func(off int64) (pv, n int64)

// linearMap is an LV made of PV byte ranges, in order.
func linearMap(ranges ...block.Extent) copyMap {
	return func(off int64) (int64, int64) {
		for _, r := range ranges {
			if off < r.Len {
				return r.Off + off, r.Len - off
			}
			off -= r.Len
		}
		panic("off past the LV")
	}
}

// stripedMap is an LV striped over areas at PV bytes areas, stripe size
// bytes each.
func stripedMap(size int64, areas ...int64) copyMap {
	n := int64(len(areas))
	return func(off int64) (int64, int64) {
		c := off / size
		return areas[c%n] + c/n*size + off%size, size - off%size
	}
}

// scatter writes lv's bytes to pv through m.
func scatter(pv, lv []byte, m copyMap) {
	for off := int64(0); off < int64(len(lv)); {
		p, n := m(off)
		n = min(n, int64(len(lv))-off)
		copy(pv[p:p+n], lv[off:off+n])
		off += n
	}
}

// gather reads size bytes of an LV from pv through m.
func gather(pv []byte, size int64, m copyMap) []byte {
	out := make([]byte, size)
	for off := int64(0); off < size; {
		p, n := m(off)
		n = min(n, size-off)
		copy(out[off:off+n], pv[p:p+n])
		off += n
	}
	return out
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// garbage is size bytes of pseudo-random data, as a used disk's free
// space holds.
func garbage(t testing.TB, size int64) []byte {
	return readFile(t, tooltest.Garbage(t, size))
}

// extImage makes an ext4 filesystem of size bytes holding tree, over
// garbage (its free blocks keep it). It first adds small files to tree
// and then deletes every third from both, so the filesystem's used
// blocks alternate with free ones and a map that confuses two places
// of the LV is caught.
func extImage(t testing.TB, size int64, tree string) []byte {
	t.Helper()
	small := filepath.Join(tree, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 240; i++ {
		b := bytes.Repeat([]byte(fmt.Sprintf("small file %d ", i)), 600)[:4096+i*7]
		if err := os.WriteFile(filepath.Join(small, fmt.Sprintf("s%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=1", "-d", tree, p)
	var cmds strings.Builder
	for i := 0; i < 240; i += 3 {
		fmt.Fprintf(&cmds, "rm /small/s%d\n", i)
		os.Remove(filepath.Join(small, fmt.Sprintf("s%d", i)))
	}
	tooltest.Run(t, "debugfs", "-w", "-f", writeTemp(t, "cmds", []byte(cmds.String())), p)
	tooltest.Run(t, "e2fsck", "-fn", p)
	return readFile(t, p)
}

// checkExt judges an LV's bytes with e2fsck and debugfs: clean, and
// holding exactly tree.
func checkExt(t testing.TB, lv []byte, tree string) {
	t.Helper()
	p := writeTemp(t, "lv.img", lv)
	tooltest.Run(t, "e2fsck", "-fn", p)
	dir := t.TempDir()
	tooltest.Run(t, "debugfs", "-R", "rdump / "+dir, p)
	os.RemoveAll(filepath.Join(dir, "lost+found"))
	tooltest.SameTree(t, tree, dir)
	tooltest.SameTree(t, dir, tree)
}

// detect runs Detect on pv with the ext detector inside.
func detect(t testing.TB, pv []byte) (*block.Usage, error) {
	t.Helper()
	return Detect(bytes.NewReader(pv), int64(len(pv)), extInner)
}

// partcloneCovered fails the test unless m (over the PV) marks every
// byte partclone.extfs copies of the LV lv, through each copy's map.
func partcloneCovered(t *testing.T, lv []byte, m *block.Map, copies ...copyMap) (pcBytes int64) {
	t.Helper()
	used := tooltest.PartcloneUsed(t, "partclone.extfs", writeTemp(t, "lv.img", lv))
	for _, e := range used {
		pcBytes += e.Len
	}
	for _, cm := range copies {
		for _, e := range used {
			for off := e.Off; off < e.End(); {
				p, n := cm(off)
				n = min(n, e.End()-off)
				var got int64
				m.Runs(p, n, func(r block.Extent) { got += r.Len })
				if got != n {
					t.Fatalf("partclone copies LV bytes %d-%d (PV bytes %d-%d); the map marks %d of them", off, off+n-1, p, p+n-1, got)
				}
				off += n
			}
		}
	}
	return pcBytes
}

// anyUsed reports whether m marks any byte of PV extents [pe, pe+n).
func anyUsed(m *block.Map, peStart, ext, pe, n int64) bool {
	return m.Any(peStart+pe*ext, n*ext)
}

// allUsed reports whether m marks every byte of PV extents [pe, pe+n).
func allUsed(m *block.Map, peStart, ext, pe, n int64) bool {
	var got int64
	m.Runs(peStart+pe*ext, n*ext, func(e block.Extent) { got += e.Len })
	return got == n*ext
}

// spy records the reader the detector hands the filesystem detector.
type spy struct {
	read map[int64][]byte // LV size -> its bytes, as read through Detect's reader
}

func (s *spy) inner(r io.ReaderAt, size int64) (*block.Usage, error) {
	b := make([]byte, size)
	// Odd-sized reads cross extent and stripe boundaries.
	for off := int64(0); off < size; off += 12345 {
		n, err := r.ReadAt(b[off:min(off+12345, size)], off)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == size) {
			return nil, err
		}
	}
	if n, err := r.ReadAt(make([]byte, 10), size-5); n != 5 || err != io.EOF {
		return nil, fmt.Errorf("read across the end: %d, %v", n, err)
	}
	s.read[size] = b
	return extInner(r, size)
}

// TestMappedLayouts builds PVs whose LV holding ext4 lies in every way
// this package maps (fragmented linear, striped on one PV, raid1 and
// mirror images, raid0 over images), beside an LV holding garbage and
// free extents of garbage, and checks: the LV reads back through
// Detect's reader as written; the map covers everything partclone
// copies of the ext4, in every copy; the garbage LV and the metadata
// count whole, free extents not at all; and the PV kept to the map gives
// back, in every copy, an ext4 that e2fsck passes holding every file.
func TestMappedLayouts(t *testing.T) {
	const ext, peStart, peCount, lvSize = mib, mib, 100, 32 * mib
	const size = peStart + peCount*ext + mib // the second metadata area after the extents
	pe := func(n int64) int64 { return peStart + n*ext }
	span := func(p, n int64) block.Extent { return block.Extent{Off: pe(p), Len: n * ext} }
	tree := tooltest.Files(t)
	fs := extImage(t, lvSize, tree)
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	blob := lvText("blob", visible, linear(0, 3, "pv0", 90))
	cases := []struct {
		name   string
		lvs    string
		copies []copyMap
		whole  [][2]int64 // extents counted whole besides blob
	}{
		{"linear-fragmented", lvText("data", visible, linear(0, 10, "pv0", 2), linear(10, 10, "pv0", 40), linear(20, 12, "pv0", 20)),
			[]copyMap{linearMap(span(2, 10), span(40, 10), span(20, 12))}, nil},
		{"striped", lvText("data", visible, striped(0, 32, 8, "pv0", 40, "pv0", 3)),
			[]copyMap{stripedMap(4<<10, pe(40), pe(3))}, nil},
		{"raid1", lvText("data", visible, "start_extent = 0\nextent_count = 32\ntype = \"raid1\"\ndevice_count = 2\nregion_size = 4096\nraids = [\n\"data_rmeta_0\", \"data_rimage_0\",\n\"data_rmeta_1\", \"data_rimage_1\"\n]") +
			lvText("data_rimage_0", hidden, linear(0, 20, "pv0", 3), linear(20, 12, "pv0", 60)) +
			lvText("data_rmeta_0", hidden, linear(0, 1, "pv0", 2)) +
			lvText("data_rimage_1", hidden, linear(0, 32, "pv0", 24)) +
			lvText("data_rmeta_1", hidden, linear(0, 1, "pv0", 23)),
			[]copyMap{linearMap(span(3, 20), span(60, 12)), linearMap(span(24, 32))},
			[][2]int64{{2, 1}, {23, 1}}},
		{"mirror", lvText("data", visible, "start_extent = 0\nextent_count = 32\ntype = \"mirror\"\nmirror_count = 2\nregion_size = 1024\nmirror_log = \"data_mlog\"\nmirrors = [\n\"data_mimage_0\", 0,\n\"data_mimage_1\", 0\n]") +
			lvText("data_mlog", hidden, linear(0, 1, "pv0", 80)) +
			lvText("data_mimage_0", hidden, linear(0, 32, "pv0", 2)) +
			lvText("data_mimage_1", hidden, linear(0, 32, "pv0", 40)),
			[]copyMap{linearMap(span(2, 32)), linearMap(span(40, 32))},
			[][2]int64{{80, 1}}},
		{"raid0", lvText("data", visible, "start_extent = 0\nextent_count = 32\ntype = \"raid0\"\nstripe_count = 2\nstripe_size = 16\nraid0_lvs = [\n\"data_rimage_0\", \"data_rimage_1\"\n]") +
			lvText("data_rimage_0", hidden, linear(0, 16, "pv0", 40)) +
			lvText("data_rimage_1", hidden, linear(0, 5, "pv0", 4), linear(5, 11, "pv0", 12)),
			[]copyMap{func(off int64) (int64, int64) {
				img1 := linearMap(span(4, 5), span(12, 11))
				p, n := stripedMap(8<<10, 0, 1<<40)(off) // area 0 at 0, area 1 at 1<<40
				if p < 1<<40 {
					return pe(40) + p, n
				}
				q, m := img1(p - 1<<40)
				return q, min(n, m)
			}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := garbage(t, size)
			for _, cm := range c.copies {
				scatter(raw, fs, cm)
			}
			text := vgText("vg0", 7, ext/512, pvs, c.lvs+blob)
			pv := buildPVOn(raw, pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: peStart - 4096, mda2: mib, text: text})
			s := &spy{read: map[int64][]byte{}}
			u, err := Detect(bytes.NewReader(pv), size, s.inner)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.read[lvSize], fs) {
				t.Fatal("the LV read through Detect's reader is not the ext4 written")
			}
			if u.FS != "lvm2" || u.Detail != "VG vg0, 1 MiB extents" || u.Warning != "" || u.Untrusted {
				t.Errorf("FS %q, detail %q, warning %q, untrusted %v", u.FS, u.Detail, u.Warning, u.Untrusted)
			}
			if len(u.Volumes) != 2 || u.Volumes[0].Name != "data" || u.Volumes[0].Filesystem != "ext4" || u.Volumes[0].Size != lvSize || u.Volumes[0].Note != "" {
				t.Fatalf("volumes %+v", u.Volumes)
			}
			if p, _ := c.copies[0](0); u.Volumes[0].Start != p {
				t.Errorf("data starts at byte %d, its first extent is at %d", u.Volumes[0].Start, p)
			}
			if b := u.Volumes[1]; b.Name != "blob" || b.Filesystem != "raw" || b.Start != pe(90) || b.UsedBytes != 3*ext || !strings.Contains(b.Note, "copied whole") {
				t.Errorf("blob: %+v", b)
			}
			m := tooltest.LoadUsage(t, u)
			pc := partcloneCovered(t, fs, m, c.copies...)
			if !allUsed(m, peStart, ext, 90, 3) || !allUsed(m, 0, 1, 0, peStart) || !allUsed(m, size-mib, 1, 0, mib) {
				t.Error("the blob LV or the metadata areas are not all kept")
			}
			for _, w := range c.whole {
				if !allUsed(m, peStart, ext, w[0], w[1]) {
					t.Errorf("extents %d-%d (raid metadata, mirror log) are not all kept", w[0], w[0]+w[1]-1)
				}
			}
			// Extents no LV holds (those no copy's map reaches) are free.
			held := map[int64]bool{90: true, 91: true, 92: true}
			for _, w := range c.whole {
				for i := w[0]; i < w[0]+w[1]; i++ {
					held[i] = true
				}
			}
			for _, cm := range c.copies {
				for off := int64(0); off < lvSize; off += 4096 {
					p, _ := cm(off)
					held[(p-peStart)/ext] = true
				}
			}
			for i := int64(0); i < peCount; i++ {
				if !held[i] && anyUsed(m, peStart, ext, i, 1) {
					t.Errorf("free extent %d is marked used", i)
				}
			}
			// What partclone copies of each copy, the blob, the raid
			// metadata and the PV's own metadata: nothing more.
			bound := int64(len(c.copies))*pc + (3+int64(len(c.whole)))*ext + peStart + mib
			if used := m.UsedBytes(); used > bound {
				t.Errorf("%d bytes used, more than the %d partclone, the whole LVs and the metadata account for", used, bound)
			}
			kept := readFile(t, tooltest.KeepOnly(t, writeTemp(t, "pv.img", pv), m))
			for i, cm := range c.copies {
				t.Run(fmt.Sprint("copy", i), func(t *testing.T) { checkExt(t, gather(kept, lvSize, cm), tree) })
			}
			if !bytes.Equal(kept[:peStart], pv[:peStart]) || !bytes.Equal(kept[size-mib:], pv[size-mib:]) {
				t.Error("the PV's metadata did not survive the map")
			}
		})
	}
}
