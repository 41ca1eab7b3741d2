package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func TestMain(m *testing.M) {
	os.Setenv("LVM_SUPPRESS_FD_WARNINGS", "1")
	os.Exit(m.Run())
}

// attach puts path on a loop device for the test's length.
func attach(t testing.TB, path string) string {
	t.Helper()
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", path))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// lvm runs an LVM command that sees dev only, with device-mapper off
// (there is none here) and no metadata backups in /etc/lvm.
func lvm(t testing.TB, dev, cmd string, args ...string) string {
	t.Helper()
	return tooltest.Run(t, cmd, append([]string{"--devices", dev, "--driverloaded", "n", "--config", "backup { backup = 0 archive = 0 }"}, args...)...)
}

// report runs an LVM reporting command and returns its rows' fields.
func report(t testing.TB, dev, cmd string, args ...string) [][]string {
	t.Helper()
	out := lvm(t, dev, cmd, append([]string{"--noheadings", "--units", "b", "--nosuffix", "--separator", "|"}, args...)...)
	var rows [][]string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "WARNING") {
			rows = append(rows, strings.Split(l, "|"))
		}
	}
	return rows
}

func atoi(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lvLayout asks LVM where each LV's extents are: a map from each LV to
// its PV byte ranges in LV order.
func lvLayout(t testing.TB, dev, vg string) (map[string][]block.Extent, int64) {
	t.Helper()
	pv := report(t, dev, "pvs", "-o", "pe_start")
	peStart := atoi(t, pv[0][0])
	ext := atoi(t, report(t, dev, "vgs", "-o", "vg_extent_size", vg)[0][0])
	out := map[string][]block.Extent{}
	for _, r := range report(t, dev, "lvs", "-a", "-o", "lv_name,seg_pe_ranges", vg) {
		for _, pr := range strings.Fields(r[1]) {
			// /dev/loopN:first-last
			ab := strings.Split(pr[strings.LastIndex(pr, ":")+1:], "-")
			a, b := atoi(t, ab[0]), atoi(t, ab[1])
			out[r[0]] = append(out[r[0]], block.Extent{Off: peStart + a*ext, Len: (b - a + 1) * ext})
		}
	}
	return out, ext
}

// TestRealVG has LVM's own tools make a VG on a PV of garbage: ext4 in
// an LV and in one fragmented by lvextend so its segments interleave
// with the others', an LV of garbage, free extents of garbage. The PV
// kept to the map must pass pvck and hold the same VG, and each ext4
// must come back clean with every file; every byte partclone copies is
// in the map, free extents are not.
func TestRealVG(t *testing.T) {
	const size = 160 * mib
	path := tooltest.Garbage(t, size)
	dev := attach(t, path)
	lvm(t, dev, "pvcreate", "-ff", "-y", dev)
	lvm(t, dev, "vgcreate", "-s", "4m", "vgt", dev)
	create := func(size, name string) {
		lvm(t, dev, "lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", size, "-n", name, "vgt")
	}
	extend := func(size, name string) { lvm(t, dev, "lvextend", "-L", size, "vgt/"+name) }
	create("24m", "root")
	create("12m", "frag")
	create("8m", "blob")
	extend("+8m", "root")
	extend("+12m", "frag")
	create("4m", "gap")
	extend("+8m", "frag")
	lvm(t, dev, "lvremove", "-y", "vgt/gap") // a free hole between LVs
	lay, ext := lvLayout(t, dev, "vgt")
	if len(lay["frag"]) != 3 || len(lay["root"]) != 2 {
		t.Fatalf("the LVs are not fragmented: %v", lay)
	}
	pv := readFile(t, path)
	trees := map[string]string{}
	for _, name := range []string{"root", "frag"} {
		tree := tooltest.Files(t)
		var lvSize int64
		for _, e := range lay[name] {
			lvSize += e.Len
		}
		scatter(pv, extImage(t, lvSize, tree), linearMap(lay[name]...))
		trees[name] = tree
	}
	if err := os.WriteFile(path, pv, 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := detect(t, pv)
	if err != nil {
		t.Fatal(err)
	}
	if u.FS != "lvm2" || u.Detail != "VG vgt, 4 MiB extents" || u.Warning != "" {
		t.Errorf("FS %q detail %q warning %q", u.FS, u.Detail, u.Warning)
	}
	want := map[string]string{"root": "ext4", "frag": "ext4", "blob": "raw"}
	if len(u.Volumes) != 3 {
		t.Fatalf("volumes: %+v", u.Volumes)
	}
	for _, v := range u.Volumes {
		var lvSize int64
		for _, e := range lay[v.Name] {
			lvSize += e.Len
		}
		if v.Filesystem != want[v.Name] || v.Start != lay[v.Name][0].Off || v.Size != lvSize {
			t.Errorf("volume %+v; LVM says it starts at byte %d, %d bytes, and it holds %s", v, lay[v.Name][0].Off, lvSize, want[v.Name])
		}
	}
	m := tooltest.LoadUsage(t, u)
	var pc int64
	for name := range trees {
		var lvSize int64
		for _, e := range lay[name] {
			lvSize += e.Len
		}
		pc += partcloneCovered(t, gather(pv, lvSize, linearMap(lay[name]...)), m, linearMap(lay[name]...))
	}
	for _, e := range lay["blob"] {
		if !allUsed(m, e.Off, 1, 0, e.Len) {
			t.Error("the blob LV is not kept whole")
		}
	}
	inLV := func(off int64) bool {
		for _, es := range lay {
			for _, e := range es {
				if off >= e.Off && off < e.End() {
					return true
				}
			}
		}
		return false
	}
	peStart := lay["root"][0].Off
	for off := peStart; off+ext <= size; off += ext {
		if !inLV(off) && m.Any(off, ext) {
			t.Errorf("free extent at byte %d is marked used", off)
		}
	}
	if used, bound := m.UsedBytes(), pc+8*mib+peStart+mib; used > bound {
		t.Errorf("%d bytes used; partclone, the blob and the metadata account for %d", used, bound)
	}

	kept := tooltest.KeepOnly(t, path, m)
	kdev := attach(t, kept)
	lvm(t, kdev, "pvck", kdev)
	same := func(cmd string, args ...string) {
		a := strings.ReplaceAll(lvm(t, dev, cmd, args...), dev, "DEV")
		b := strings.ReplaceAll(lvm(t, kdev, cmd, args...), kdev, "DEV")
		if a != b {
			t.Errorf("%s differs on the kept PV:\n%s\n---\n%s", cmd, a, b)
		}
	}
	same("pvs", "-o", "pv_uuid,pe_start,pv_size,pv_pe_count,pv_pe_alloc_count", "--units", "b")
	same("vgs", "-o", "vg_name,vg_uuid,vg_seqno,vg_extent_size,lv_count", "--units", "b")
	same("lvs", "-a", "-o", "lv_name,lv_uuid,lv_size,seg_pe_ranges,segtype", "--units", "b")
	kb := readFile(t, kept)
	for name, tree := range trees {
		var lvSize int64
		for _, e := range lay[name] {
			lvSize += e.Len
		}
		t.Run(name, func(t *testing.T) { checkExt(t, gather(kb, lvSize, linearMap(lay[name]...)), tree) })
	}
	for _, e := range lay["blob"] {
		if !bytes.Equal(kb[e.Off:e.End()], pv[e.Off:e.End()]) {
			t.Error("the blob LV's bytes changed")
		}
	}
}

// TestBuiltPVsLVMReads checks buildPV against LVM: pvck passes the PVs
// it makes and lvs sees the layouts their texts describe, so the tests
// built on it describe what LVM would.
func TestBuiltPVsLVMReads(t *testing.T) {
	const ext, peStart, peCount = mib, mib, 40
	const size = peStart + peCount*ext + mib
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	for name, c := range map[string]struct{ lvs, want string }{
		"striped": {lvText("st", visible, striped(0, 8, 8, "pv0", 10, "pv0", 2)), "st|striped|:10-13 :2-5"},
		"thin":    {thinLVs("pool", 2, 8, 12, 1), "pool|thin-pool|pool_tdata:0-7\npool_tdata|linear|:2-9\npool_tmeta|linear|:12-12\nthin1|thin|"},
		"raid1": {lvText("r", visible, "start_extent = 0\nextent_count = 4\ntype = \"raid1\"\ndevice_count = 2\nregion_size = 4096\nraids = [\n\"r_rmeta_0\", \"r_rimage_0\",\n\"r_rmeta_1\", \"r_rimage_1\"\n]") +
			lvText("r_rimage_0", hidden, linear(0, 4, "pv0", 3)) + lvText("r_rmeta_0", hidden, linear(0, 1, "pv0", 2)) +
			lvText("r_rimage_1", hidden, linear(0, 4, "pv0", 11)) + lvText("r_rmeta_1", hidden, linear(0, 1, "pv0", 10)),
			"r|raid1|r_rimage_0:0-3 r_rimage_1:0-3\nr_rimage_0|linear|:3-6\nr_rimage_1|linear|:11-14\nr_rmeta_0|linear|:2-2\nr_rmeta_1|linear|:10-10"},
	} {
		t.Run(name, func(t *testing.T) {
			pv := buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: peStart - 4096, mda2: mib, text: vgText("vgb", 3, ext/512, pvs, c.lvs)})
			path := writeTemp(t, "pv.img", pv)
			dev := attach(t, path)
			lvm(t, dev, "pvck", dev)
			var got []string
			for _, r := range report(t, dev, "lvs", "-a", "-o", "lv_name,segtype,seg_pe_ranges", "vgb") {
				r[0] = strings.Trim(r[0], "[]")
				r[2] = strings.ReplaceAll(r[2], dev, "")
				got = append(got, strings.Join(r, "|"))
			}
			if g := strings.Join(got, "\n"); g != c.want {
				t.Errorf("lvs says\n%s\nwant\n%s", g, c.want)
			}
		})
	}
}

// thinLVs is a thin pool (data at PV extent data, meta at PV extent
// meta) with one thin volume.
func thinLVs(pool string, data, dataLen, meta, metaLen int64) string {
	return lvText(pool, visible, fmt.Sprintf("start_extent = 0\nextent_count = %d\ntype = \"thin-pool\"\nmetadata = \"%s_tmeta\"\npool = \"%s_tdata\"\ntransaction_id = 1\nchunk_size = 128\ndiscards = \"passdown\"\nzero_new_blocks = 1", dataLen, pool, pool)) +
		lvText("thin1", `["READ", "WRITE", "VISIBLE"]`, fmt.Sprintf("start_extent = 0\nextent_count = 16\ntype = \"thin\"\nthin_pool = %q\ntransaction_id = 0\ndevice_id = 1", pool)) +
		lvText(pool+"_tdata", hidden, linear(0, dataLen, "pv0", data)) +
		lvText(pool+"_tmeta", hidden, linear(0, metaLen, "pv0", meta))
}

// TestCountedWhole: a thin pool and its volume, a snapshot and its
// origin, an LV on two PVs, a cached LV: each LV's extents on this PV
// count whole, with a note; the ext4 beside them is still mapped.
func TestCountedWhole(t *testing.T) {
	const ext, peStart, peCount = mib, mib, 60
	const size = peStart + peCount*ext
	tree := tooltest.Files(t)
	fs := extImage(t, 32*mib, tree)
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount) + pvText("pv1", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", size/512, peStart/512, peCount)
	data := lvText("data", visible, linear(0, 32, "pv0", 20))
	cases := []struct {
		name  string
		lvs   string
		whole [][2]int64        // PV extents counted whole
		notes map[string]string // volume -> part of its note
	}{
		{"thin", thinLVs("pool", 2, 8, 12, 1), [][2]int64{{2, 8}, {12, 1}},
			map[string]string{"pool": "thin pool", "thin1": "thin volume in pool pool"}},
		{"snapshot", lvText("snap", visible, linear(0, 4, "pv0", 2)) +
			lvText("snapshot0", `["READ"]`, "start_extent = 0\nextent_count = 32\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"data\"\ncow_store = \"snap\""),
			[][2]int64{{2, 4}, {20, 32}},
			map[string]string{"snap": "snapshot of data", "data": "origin of snapshot snap"}},
		{"two-pvs", lvText("span", visible, linear(0, 4, "pv0", 2), linear(4, 4, "pv1", 0)), [][2]int64{{2, 4}},
			map[string]string{"span": "other PVs"}},
		{"cache", lvText("cached", visible, "start_extent = 0\nextent_count = 4\ntype = \"cache\"\ncache_pool = \"cpool\"\norigin = \"cached_corig\"") +
			lvText("cached_corig", hidden, linear(0, 4, "pv0", 2)) +
			lvText("cpool", hidden, "start_extent = 0\nextent_count = 1\ntype = \"cache-pool\"\ndata = \"cpool_cdata\"\nmetadata = \"cpool_cmeta\"\nchunk_size = 128") +
			lvText("cpool_cdata", hidden, linear(0, 1, "pv0", 8)) + lvText("cpool_cmeta", hidden, linear(0, 1, "pv0", 9)),
			[][2]int64{{2, 4}, {8, 2}}, map[string]string{"cached": "cached volume"}},
		{"pvmove", lvText("moving", `["READ", "WRITE", "VISIBLE", "LOCKED"]`, linear(0, 4, "pvmove0", 0)) +
			lvText("pvmove0", `["READ", "WRITE", "PVMOVE", "LOCKED"]`, "start_extent = 0\nextent_count = 4\ntype = \"mirror\"\nmirror_count = 2\nmirrors = [\n\"pv0\", 2,\n\"pv0\", 8\n]"),
			[][2]int64{{2, 4}, {8, 4}}, map[string]string{"moving": "LOCKED"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := garbage(t, size)
			scatter(raw, fs, linearMap(block.Extent{Off: peStart + 20*ext, Len: 32 * ext}))
			lvs := c.lvs + data
			pv := buildPVOn(raw, pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: peStart - 4096, text: vgText("vgw", 9, ext/512, pvs, lvs)})
			u, err := detect(t, pv)
			if err != nil {
				t.Fatal(err)
			}
			m := tooltest.LoadUsage(t, u)
			for _, w := range c.whole {
				if !allUsed(m, peStart, ext, w[0], w[1]) {
					t.Errorf("extents %d-%d are not all kept", w[0], w[0]+w[1]-1)
				}
			}
			seen := map[string]bool{}
			for _, v := range u.Volumes {
				seen[v.Name] = true
				if want, ok := c.notes[v.Name]; ok && !strings.Contains(v.Note, want) {
					t.Errorf("volume %s: note %q, want it to say %q", v.Name, v.Note, want)
				}
				if v.Name == "data" && c.name != "snapshot" && (v.Filesystem != "ext4" || v.Note != "") {
					t.Errorf("data: %+v", v)
				}
			}
			for name := range c.notes {
				if !seen[name] {
					t.Errorf("no volume %s in %+v", name, u.Volumes)
				}
			}
			if c.name != "snapshot" {
				// data's free blocks are not kept.
				if allUsed(m, peStart, ext, 20, 32) {
					t.Error("the ext4 LV beside them is kept whole")
				}
				partcloneCovered(t, fs, m, linearMap(block.Extent{Off: peStart + 20*ext, Len: 32 * ext}))
			}
		})
	}
}

// corruptCase is a PV that must be refused as damaged.
type corruptCase struct {
	name string
	pv   []byte
	want string // part of the error
}

func corruptCases(t testing.TB) []corruptCase {
	const ext, peStart, peCount = mib, mib, 30
	const size = peStart + peCount*ext
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	good := lvText("lv", visible, linear(0, 4, "pv0", 2))
	spec := func(text string) pvSpec {
		return pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 64 << 10, text: text}
	}
	build := func(text string) []byte { return buildPV(spec(text)) }
	withVG := func(lvs string) []byte { return build(vgText("vgc", 1, ext/512, pvs, lvs)) }
	flip := func(off int64) []byte {
		b := build(vgText("vgc", 1, ext/512, pvs, good))
		b[off] ^= 0x20
		return b
	}
	le := binary.LittleEndian
	deep := strings.Repeat("a {\n", 40) + strings.Repeat("}\n", 40)
	cases := []corruptCase{
		{"label-crc", flip(512 + 100), "label checksum"},
		{"mda-header-crc", flip(4096 + 300), "metadata area header checksum"},
		{"mda-magic", flip(4096 + 6), "no LVM2 magic"},
		{"text-crc", flip(4096 + 512 + 20), "checksum"},
		{"deep-nesting", build(deep), "nested more than"},
		{"huge-number", withVG(lvText("lv", visible, "start_extent = 0\nextent_count = 99999999999999999999999\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 2]")), "out of range"},
		{"big-extent-count", withVG(lvText("lv", visible, linear(0, 1<<40, "pv0", 2))), "outside"},
		{"past-the-pv", withVG(lvText("lv", visible, linear(0, 4, "pv0", 28))), "past its 30 extents"},
		{"pe-count-past-the-partition", build(vgText("vgc", 1, ext/512, pvText("pv0", testUUID, size/512, peStart/512, 31), good)), "past the"},
		{"overlap", withVG(good + lvText("lv2", visible, linear(0, 2, "pv0", 5))), "both hold"},
		{"unknown-pv", withVG(lvText("lv", visible, linear(0, 4, "pv7", 2))), "neither a PV nor an LV"},
		{"gap-in-segments", withVG(lvText("lv", visible, linear(0, 2, "pv0", 2), linear(3, 2, "pv0", 6))), "segment starts at extent 3"},
		{"segment-count", withVG(strings.Replace(good, "segment_count = 1", "segment_count = 2", 1)), "segment_count"},
		{"leading-zero", withVG(strings.Replace(good, "extent_count = 4", "extent_count = 04", 1)), "bad number"},
		{"duplicate-key", withVG(strings.Replace(good, "extent_count = 4", "extent_count = 4\nextent_count = 9", 1)), "given twice"},
		{"unclosed", build(vgText("vgc", 1, ext/512, pvs, good)[:200]), "not closed"},
		{"not-a-vg", build("contents = \"Something else\"\nversion = 1\n"), "not LVM2 VG metadata"},
		{"unknown-type-on-pv", withVG(lvText("lv", visible, "start_extent = 0\nextent_count = 4\ntype = \"future\"\nareas = [\"pv0\", 2]")), "directly"},
		{"pv-not-in-vg", build(vgText("vgc", 1, ext/512, pvText("pv0", "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", size/512, peStart/512, peCount), good)), "not in the metadata"},
		{"stripes-count", withVG(lvText("lv", visible, striped(0, 5, 8, "pv0", 2, "pv0", 10))), "in 2 stripes"},
		{"raid-image-missing", withVG(lvText("lv", visible, "start_extent = 0\nextent_count = 4\ntype = \"raid1\"\ndevice_count = 2\nraids = [\"lv_rmeta_0\"]")), "not an LV"},
	}
	// A text location past its area.
	b := build(vgText("vgc", 1, ext/512, pvs, good))
	le.PutUint64(b[4096+40:], 1<<20)
	le.PutUint32(b[4096:], lvmCRC(crcInit, b[4096+4:4096+512]))
	cases = append(cases, corruptCase{"text-outside-area", b, "outside its"})
	// Two areas, same seqno, different texts.
	b = buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 64 << 10, mda2: mib,
		text: vgText("vgc", 4, ext/512, pvs, good), text2: vgText("vgc", 4, ext/512, pvs, "")})
	cases = append(cases, corruptCase{"areas-same-seqno", b, "same seqno"})
	return cases
}

// TestCorrupt: damaged labels, headers and texts, and texts LVM would
// never write (hostile numbers, nesting, segments past the PV, LVs
// sharing extents) are refused as damaged, never mapped and never a
// panic.
func TestCorrupt(t *testing.T) {
	for _, c := range corruptCases(t) {
		t.Run(c.name, func(t *testing.T) {
			u, err := detect(t, c.pv)
			var ce *block.CorruptError
			if !errors.As(err, &ce) || ce.What != "lvm2" {
				t.Fatalf("got %v, %v; want a CorruptError", u, err)
			}
			if !strings.Contains(err.Error(), c.want) || ce.Off <= 0 || ce.Off >= int64(len(c.pv)) {
				t.Errorf("error %q (at byte %d); want it to say %q with an offset", err, ce.Off, c.want)
			}
		})
	}
}

func TestNotMine(t *testing.T) {
	for name, b := range map[string][]byte{
		"zeros": make([]byte, 1<<20), "short": []byte("LABELONE"), "ext4": extImage(t, 32*mib, tooltest.Files(t)),
		"label-in-sector-5": func() []byte {
			b := buildPV(pvSpec{size: 4 * mib, uuid: testUUID, peStart: mib, mdaSize: 8192})
			copy(b[5*512:], b[512:1024])
			clear(b[512:1024])
			return b
		}(),
	} {
		if _, err := detect(t, b); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want ErrNotMine", name, err)
		}
	}
}

// TestAreas: the text wraps round its area's ring; two areas disagree
// (the newer wins, with a warning); an unused PV keeps its metadata
// only; a PV with no metadata area counts whole.
func TestAreas(t *testing.T) {
	const ext, peStart, peCount = mib, mib, 30
	const size = peStart + peCount*ext + mib
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	lv := lvText("lv", visible, linear(0, 4, "pv0", 2))
	text := vgText("vga", 5, ext/512, pvs, lv)

	// The text starts 300 bytes before its area's end and goes on after
	// the header.
	b := buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 16 << 10, text: text, textOff: 16<<10 - 300})
	u, err := detect(t, b)
	if err != nil || len(u.Volumes) != 1 || u.Volumes[0].Name != "lv" || u.Volumes[0].UsedBytes != 4*ext {
		t.Fatalf("wrapped text: %v %+v", err, u)
	}

	old := vgText("vga", 4, ext/512, pvs, lv+lvText("gone", visible, linear(0, 2, "pv0", 10)))
	b = buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 16 << 10, mda2: mib, text: old, text2: text})
	if u, err = detect(t, b); err != nil {
		t.Fatal(err)
	}
	if len(u.Volumes) != 1 || !strings.Contains(u.Warning, "seqno 4") || !strings.Contains(u.Warning, "newer") {
		t.Errorf("areas disagreeing: warning %q, volumes %+v", u.Warning, u.Volumes)
	}
	m := tooltest.LoadUsage(t, u)
	if !allUsed(m, size-mib, 1, 0, mib) || !allUsed(m, 0, 1, 0, peStart) || anyUsed(m, peStart, ext, 10, 2) {
		t.Error("both metadata areas must be kept, and the LV only the old text had is free")
	}

	b = buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 16 << 10, mda2: mib})
	if u, err = detect(t, b); err != nil {
		t.Fatal(err)
	}
	if m = tooltest.LoadUsage(t, u); m.UsedBytes() != peStart+mib || u.Detail != "no volume group (an unused PV)" {
		t.Errorf("unused PV: %d bytes used, detail %q", m.UsedBytes(), u.Detail)
	}

	b = buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart})
	if u, err = detect(t, b); err != nil {
		t.Fatal(err)
	}
	if m = tooltest.LoadUsage(t, u); !u.Untrusted || m.UsedBytes() != size || !strings.Contains(u.Warning, "no metadata area") {
		t.Errorf("PV without metadata areas: untrusted %v, warning %q, %d of %d bytes", u.Untrusted, u.Warning, m.UsedBytes(), size)
	}
}

// TestInnerDamage: an LV whose filesystem is damaged counts whole, with
// a warning naming the LV; an ext4 needing journal recovery is mapped
// with its warning, named too.
func TestInnerDamage(t *testing.T) {
	const ext, peStart, peCount = mib, mib, 40
	const size = peStart + peCount*ext
	fs := extImage(t, 16*mib, tooltest.Files(t))
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	raw := garbage(t, size)
	scatter(raw, fs, linearMap(block.Extent{Off: peStart + 2*ext, Len: 16 * ext}))
	pv := buildPVOn(raw, pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: 64 << 10, text: vgText("vgd", 2, ext/512, pvs, lvText("home", visible, linear(0, 16, "pv0", 2)))})
	damaged := func(r io.ReaderAt, size int64) (*block.Usage, error) {
		return nil, &block.CorruptError{What: "ext4", Off: 1024, Msg: "bad superblock"}
	}
	u, err := Detect(bytes.NewReader(pv), size, damaged)
	if err != nil {
		t.Fatal(err)
	}
	m := tooltest.LoadUsage(t, u)
	if !allUsed(m, peStart, ext, 2, 16) || !strings.Contains(u.Warning, "LV home: ext4: bad superblock") || !strings.Contains(u.Volumes[0].Note, "copied whole") {
		t.Errorf("damaged filesystem: warning %q, volume %+v", u.Warning, u.Volumes[0])
	}
	warned := func(r io.ReaderAt, size int64) (*block.Usage, error) {
		u, err := extInner(r, size)
		if u != nil {
			u.Warning = "ext4 needs journal recovery"
		}
		return u, err
	}
	if u, err = Detect(bytes.NewReader(pv), size, warned); err != nil {
		t.Fatal(err)
	}
	if m = tooltest.LoadUsage(t, u); allUsed(m, peStart, ext, 2, 16) || u.Warning != "LV home: ext4 needs journal recovery" {
		t.Errorf("warned filesystem: warning %q, counted whole %v", u.Warning, allUsed(m, peStart, ext, 2, 16))
	}
}

// TestHostileLayout: an LV of 12000 mirror segments all naming the same
// image extents, which has 12000 segments itself, is laid out in time
// (no pass over one list per item of another) and counted whole.
func TestHostileLayout(t *testing.T) {
	const n = 12000
	const ext, peStart = 4096, 9 * mib
	var segs, imgSegs []string
	for i := int64(0); i < n; i++ {
		segs = append(segs, fmt.Sprintf("start_extent = %d\nextent_count = 1\ntype = \"mirror\"\nmirror_count = 1\nmirrors = [\"img\", 0]", i))
		imgSegs = append(imgSegs, linear(i, 1, "pv0", i))
	}
	size := int64(peStart + n*ext)
	text := vgText("vgh", 1, ext/512, pvText("pv0", testUUID, size/512, peStart/512, n), lvText("m", visible, segs...)+lvText("img", hidden, imgSegs...))
	head := buildPV(pvSpec{size: peStart, uuid: testUUID, peStart: peStart, mdaSize: peStart - 4096, text: text})
	r := &tooltest.SparseReader{B: head, Size: size}
	start := time.Now()
	u, err := Detect(r, size, extInner)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Detect took %v", d)
	}
	if len(u.Volumes) != 1 || !strings.Contains(u.Volumes[0].Note, "not each used once") || u.Volumes[0].UsedBytes != n*ext {
		t.Errorf("volumes %+v", u.Volumes)
	}
}
