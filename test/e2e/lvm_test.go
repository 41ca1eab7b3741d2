package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// LVM2 PVs are made here with LVM's own tools on loop devices. There is
// no device-mapper, so no LV is ever activated: an LV's bytes are read
// and written where `lvs -o seg_pe_ranges` says its extents lie, and
// its filesystem is made and filled (mkfs, mount, cp) on a file holding
// those bytes, then written back.

// lvmAttach puts path (bytes [off, off+size) of it, size > 0) on a loop
// device for the test's length.
func lvmAttach(t *testing.T, path string, off, size int64) string {
	t.Helper()
	args := []string{"-f", "--show"}
	if size > 0 {
		args = append(args, "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size))
	}
	dev := strings.TrimSpace(sh(t, "losetup", append(args, path)...))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// lvmRun runs an LVM command that sees dev alone, without device-mapper
// and without backups in /etc/lvm.
func lvmRun(t *testing.T, dev, cmd string, args ...string) string {
	t.Helper()
	t.Setenv("LVM_SUPPRESS_FD_WARNINGS", "1")
	return sh(t, cmd, append([]string{"--devices", dev, "--driverloaded", "n", "--config", "backup { backup = 0 archive = 0 }"}, args...)...)
}

// lvmReport is an LVM report with the device's name taken out.
func lvmReport(t *testing.T, dev, cmd string, args ...string) string {
	t.Helper()
	out := lvmRun(t, dev, cmd, append([]string{"--noheadings", "--units", "b", "--nosuffix", "--separator", "|"}, args...)...)
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "WARNING") {
			rows = append(rows, strings.ReplaceAll(l, dev, "DEV"))
		}
	}
	return strings.Join(rows, "\n")
}

// lvmVG reports a VG as LVM sees it: PV, VG and every LV with its UUID
// and extents. Two PVs with the same report hold the same VG.
func lvmVG(t *testing.T, dev string) string {
	t.Helper()
	return lvmReport(t, dev, "pvs", "-o", "pv_uuid,pe_start,pv_size,pv_pe_count,pv_pe_alloc_count") + "\n" +
		lvmReport(t, dev, "vgs", "-o", "vg_name,vg_uuid,vg_seqno,vg_extent_size,lv_count") + "\n" +
		lvmReport(t, dev, "lvs", "-a", "-o", "lv_name,lv_uuid,lv_size,segtype,seg_pe_ranges")
}

// lvmExtents are where each LV's extents lie, in bytes of the PV, in LV
// order, as LVM says.
func lvmExtents(t *testing.T, dev string) map[string][]block.Extent {
	t.Helper()
	num := func(s string) int64 {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return n
	}
	peStart := num(lvmReport(t, dev, "pvs", "-o", "pe_start"))
	ext := num(lvmReport(t, dev, "vgs", "-o", "vg_extent_size"))
	out := map[string][]block.Extent{}
	for _, row := range strings.Split(lvmReport(t, dev, "lvs", "-a", "-o", "lv_name,seg_pe_ranges"), "\n") {
		f := strings.Split(row, "|")
		for _, pr := range strings.Fields(f[1]) {
			ab := strings.Split(pr[strings.LastIndex(pr, ":")+1:], "-")
			a, b := num(ab[0]), num(ab[1])
			name := strings.Trim(f[0], "[]")
			out[name] = append(out[name], block.Extent{Off: peStart + a*ext, Len: (b - a + 1) * ext})
		}
	}
	return out
}

func lvmSize(es []block.Extent) int64 {
	var n int64
	for _, e := range es {
		n += e.Len
	}
	return n
}

// lvmGather copies an LV's bytes out of the PV at pvOff in path into a
// new file.
func lvmGather(t *testing.T, path string, pvOff int64, es []block.Extent) string {
	t.Helper()
	var b []byte
	for _, e := range es {
		b = append(b, readAt(t, path, int(e.Len), pvOff+e.Off)...)
	}
	out := filepath.Join(t.TempDir(), "lv.img")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// lvmScatter writes the LV file lv back to its extents.
func lvmScatter(t *testing.T, path string, pvOff int64, es []block.Extent, lv string) {
	t.Helper()
	b, err := os.ReadFile(lv)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		writeAt(t, path, b[:e.Len], pvOff+e.Off)
		b = b[e.Len:]
	}
}

// lvmFill makes fs in the LV (over the garbage there), mounts it, copies
// tree in and writes the LV back.
func lvmFill(t *testing.T, path string, pvOff int64, es []block.Extent, fs, tree string) {
	t.Helper()
	lv := lvmGather(t, path, pvOff, es)
	switch fs {
	case "ext4":
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", lv)
	case "xfs":
		// Small XFS for tests, as xfstests makes them.
		for _, k := range []string{"TEST_DIR", "TEST_DEV", "QA_CHECK_FS"} {
			t.Setenv(k, "1")
		}
		sh(t, "mkfs.xfs", "-q", "-f", "-K", lv)
	}
	mnt := t.TempDir()
	sh(t, "mount", "-o", "loop", lv, mnt)
	out, err := exec.Command("cp", "-a", tree+"/.", mnt).CombinedOutput()
	sh(t, "umount", mnt)
	if err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	lvmScatter(t, path, pvOff, es, lv)
}

// lvmCheck judges an LV's filesystem with its own checker and compares
// every file with tree.
func lvmCheck(t *testing.T, lv, fs, tree string) {
	t.Helper()
	switch fs {
	case "ext4":
		sh(t, "e2fsck", "-fn", lv)
		sameTree(t, tree, extTree(t, lv))
	case "xfs":
		sh(t, "xfs_repair", "-n", lv)
		mnt := t.TempDir()
		sh(t, "mount", "-o", "loop,ro", lv, mnt)
		defer sh(t, "umount", mnt)
		sameTree(t, tree, mnt)
	}
}

// lvmTree is a tree of files for an LV's filesystem: the fixture files
// and some more of its own.
func lvmTree(t *testing.T, name string) string {
	t.Helper()
	dir := tooltest.Files(t)
	for i := 0; i < 20; i++ {
		b := bytes.Repeat([]byte(fmt.Sprintf("%s file %d\n", name, i)), 1000+i*300)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.txt", name, i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type lvmInfo struct {
	Table      string `json:"table"`
	ImageBytes int64  `json:"image_bytes"`
	Warnings   []string
	Partitions []struct {
		Index      int            `json:"index"`
		Start      int64          `json:"start"`
		Size       int64          `json:"size"`
		Filesystem string         `json:"filesystem"`
		Note       string         `json:"note"`
		UsedBytes  int64          `json:"used_bytes"`
		Detail     string         `json:"detail"`
		Volumes    []block.Volume `json:"volumes"`
	} `json:"partitions"`
}

func lvmImageInfo(t *testing.T, img string) lvmInfo {
	t.Helper()
	var j lvmInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// lvmPV makes a VG "vge" with LVM's tools on bytes [off, off+size) of
// path (garbage) and returns the loop device of the PV.
func lvmPV(t *testing.T, path string, off, size int64) string {
	t.Helper()
	dev := lvmAttach(t, path, off, size)
	lvmRun(t, dev, "pvcreate", "-ff", "-y", dev)
	lvmRun(t, dev, "vgcreate", "-s", "4m", "vge", dev)
	return dev
}

func lvmCreate(t *testing.T, dev, size, name string) {
	lvmRun(t, dev, "lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", size, "-n", name, "vge")
}

func lvmExtend(t *testing.T, dev, size, name string) {
	lvmRun(t, dev, "lvextend", "-L", size, "vge/"+name)
}

// TestLVMGPTDisk images a GPT disk whose LVM partition (8E00) holds a
// VG over random data: ext4 in "root" and in "frag" (their segments
// interleave), XFS in "xfs", nothing Platter knows in "blob", free
// extents of garbage. The image is far smaller than the PV: at most
// the bytes partclone copies of each filesystem (XFS included), the
// blob and the metadata. Restored,
// the PV passes pvck and holds the same VG (UUIDs, extents), every
// filesystem checks clean with every file, the blob is identical; info
// lists the VG and its LVs.
func TestLVMGPTDisk(t *testing.T) {
	const diskSize = 320 << 20
	disk := tooltest.Garbage(t, diskSize)
	sh(t, "sgdisk", "-o", "-n", "1:2048:-1M", "-t", "1:8E00", "-c", "1:lvm", disk)
	p := sfdiskParts(t, disk)[1]
	dev := lvmPV(t, disk, p.start, p.size)
	lvmCreate(t, dev, "32m", "root")
	lvmCreate(t, dev, "16m", "frag")
	lvmExtend(t, dev, "+16m", "root")
	lvmExtend(t, dev, "+16m", "frag")
	lvmCreate(t, dev, "80m", "xfs")
	lvmCreate(t, dev, "12m", "blob")
	lvmExtend(t, dev, "+8m", "frag")
	lay := lvmExtents(t, dev)
	if len(lay["root"]) != 2 || len(lay["frag"]) != 3 {
		t.Fatalf("LVs not fragmented: %v", lay)
	}
	fss := map[string]string{"root": "ext4", "frag": "ext4", "xfs": "xfs"}
	trees := map[string]string{}
	for name, fs := range fss {
		trees[name] = lvmTree(t, name)
		lvmFill(t, disk, p.start, lay[name], fs, trees[name])
	}
	before := lvmVG(t, dev)

	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", disk, img)
	j := lvmImageInfo(t, img)
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "lvm2" || j.Partitions[0].Detail != "VG vge, 4 MiB extents" {
		t.Fatalf("partition: %+v", j.Partitions)
	}
	// Each LV as info shows it, against LVM's word and the files.
	vols := map[string]block.Volume{}
	for _, v := range j.Partitions[0].Volumes {
		vols[v.Name] = v
	}
	var bound int64 = 2 << 20 // the metadata area, the GPT, the image's own structures
	for _, name := range []string{"root", "frag", "xfs", "blob"} {
		v, want := vols[name], fss[name]
		if want == "" {
			want = "raw"
		}
		if v.Filesystem != want || v.Start != lay[name][0].Off || v.Size != lvmSize(lay[name]) {
			t.Errorf("volume %s: %+v; want %s at byte %d, %d bytes", name, v, want, lay[name][0].Off, lvmSize(lay[name]))
		}
		switch {
		case want == "raw":
			bound += lvmSize(lay[name])
			if v.UsedBytes != lvmSize(lay[name]) || !strings.Contains(v.Note, "copied whole") {
				t.Errorf("volume %s is not counted whole: %+v", name, v)
			}
		default:
			tool := map[string]string{"ext4": "partclone.extfs", "xfs": "partclone.xfs"}[want]
			var used int64
			for _, e := range tooltest.PartcloneUsed(t, tool, lvmGather(t, disk, p.start, lay[name])) {
				used += e.Len
			}
			bound += used
			if v.UsedBytes < used {
				t.Errorf("volume %s: %d bytes used, partclone copies %d", name, v.UsedBytes, used)
			}
		}
	}
	t.Logf("PV %d bytes; image %d bytes; bound %d", p.size, j.ImageBytes, bound)
	if j.ImageBytes > bound || j.ImageBytes > p.size/2 {
		t.Errorf("image is %d bytes, more than the %d its filesystems' used blocks, whole LVs and metadata take (PV %d)", j.ImageBytes, bound, p.size)
	}
	text := ok(t, "info", img)
	t.Logf("platter info:\n%s", text)
	for _, want := range []string{"Partition 1: lvm2 VG vge, 4 MiB extents", "volume root: ext4 at byte", "volume frag: ext4", "volume xfs: xfs", "volume blob: raw"} {
		if !strings.Contains(text, want) {
			t.Errorf("info does not say %q:\n%s", want, text)
		}
	}

	restored := filepath.Join(dir, "restored.img")
	ok(t, "restore", img, restored)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, restored); a != b {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	rdev := lvmAttach(t, restored, p.start, p.size)
	lvmRun(t, rdev, "pvck", rdev)
	if after := lvmVG(t, rdev); after != before {
		t.Errorf("the restored PV holds another VG:\n%s\n---\n%s", before, after)
	}
	sameBytes(t, disk, restored, p.start, 1<<20, "the PV's label and metadata area")
	for name, fs := range fss {
		t.Run(name, func(t *testing.T) {
			lv := lvmGather(t, restored, p.start, lay[name])
			lvmCheck(t, lv, fs, trees[name])
			// Never less than partclone's used set: every byte it
			// would copy came back.
			orig := lvmGather(t, disk, p.start, lay[name])
			for _, e := range tooltest.PartcloneUsed(t, map[string]string{"ext4": "partclone.extfs", "xfs": "partclone.xfs"}[fs], orig) {
				sameBytes(t, orig, lv, e.Off, e.Len, "bytes partclone copies")
			}
		})
	}
	for _, e := range lay["blob"] {
		sameBytes(t, disk, restored, p.start+e.Off, e.Len, "the blob LV")
	}
}

// TestLVMBarePV images a PV with no partition table: one ext4 LV and a
// second metadata area at the PV's end, both areas kept byte for byte.
func TestLVMBarePV(t *testing.T) {
	const size = 128 << 20
	pv := tooltest.Garbage(t, size)
	dev := lvmAttach(t, pv, 0, 0)
	lvmRun(t, dev, "pvcreate", "-ff", "-y", "--pvmetadatacopies", "2", dev)
	lvmRun(t, dev, "vgcreate", "-s", "4m", "vge", dev)
	lvmCreate(t, dev, "40m", "data")
	lay := lvmExtents(t, dev)
	tree := lvmTree(t, "data")
	lvmFill(t, pv, 0, lay["data"], "ext4", tree)
	before := lvmVG(t, dev)

	dir := t.TempDir()
	img := filepath.Join(dir, "pv.platter")
	ok(t, "create", pv, img)
	j := lvmImageInfo(t, img)
	if j.Table != "none" || len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "lvm2" || len(j.Partitions[0].Volumes) != 1 || j.Partitions[0].Volumes[0].Filesystem != "ext4" {
		t.Fatalf("info: %+v", j)
	}
	// Files (about 5 MiB), the ext4's own metadata, two metadata areas.
	t.Logf("PV %d bytes, image %d bytes", int64(size), j.ImageBytes)
	if j.ImageBytes > 16<<20 {
		t.Errorf("image is %d bytes", j.ImageBytes)
	}
	restored := filepath.Join(dir, "restored.img")
	ok(t, "restore", img, restored)
	rdev := lvmAttach(t, restored, 0, 0)
	lvmRun(t, rdev, "pvck", rdev)
	if after := lvmVG(t, rdev); after != before {
		t.Errorf("the restored PV holds another VG:\n%s\n---\n%s", before, after)
	}
	sameBytes(t, pv, restored, 0, 1<<20, "the PV's label and first metadata area")
	sameBytes(t, pv, restored, size-(1<<20), 1<<20, "the PV's end, with its second metadata area")
	lvmCheck(t, lvmGather(t, restored, 0, lay["data"]), "ext4", tree)
}

// TestLVMThinPool: a thin pool (LVM cannot make one without
// device-mapper, so its metadata is written with vgcfgrestore) and its
// thin volume, beside an ext4 LV. The pool's extents are copied whole,
// byte for byte, the thin volume is listed at its pool, the ext4 is
// still mapped.
func TestLVMThinPool(t *testing.T) {
	const size = 160 << 20
	pv := tooltest.Garbage(t, size)
	dev := lvmPV(t, pv, 0, 0)
	lvmCreate(t, dev, "32m", "root")
	lvmCreate(t, dev, "24m", "tp")
	lvmCreate(t, dev, "4m", "tpmeta")
	backup := filepath.Join(t.TempDir(), "vge.txt")
	lvmRun(t, dev, "vgcfgbackup", "-f", backup, "vge")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	// tp and tpmeta become the pool's hidden data and metadata LVs.
	text := strings.Replace(string(b), "\t\ttp {", "\t\ttp_tdata {", 1)
	text = strings.Replace(text, "\t\ttpmeta {", "\t\ttp_tmeta {", 1)
	lvs := strings.Index(text, "\tlogical_volumes {\n") + len("\tlogical_volumes {\n")
	text = text[:lvs] + `
		tp {
			id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 6
				type = "thin-pool"
				metadata = "tp_tmeta"
				pool = "tp_tdata"
				transaction_id = 1
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 1
			}
		}
		thin1 {
			id = "hhhhhh-iiii-jjjj-kkkk-llll-mmmm-nnnnnn"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 16
				type = "thin"
				thin_pool = "tp"
				transaction_id = 0
				device_id = 1
			}
		}
` + text[lvs:]
	// The renamed LVs lose VISIBLE.
	for _, name := range []string{"tp_tdata", "tp_tmeta"} {
		i := strings.Index(text, "\t\t"+name+" {")
		j := i + strings.Index(text[i:], "]")
		text = text[:i] + strings.Replace(text[i:j], `, "VISIBLE"`, "", 1) + text[j:]
	}
	if err := os.WriteFile(backup, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	lvmRun(t, dev, "vgcfgrestore", "--force", "-y", "-f", backup, "vge")
	lay := lvmExtents(t, dev)
	if len(lay["tp_tdata"]) != 1 || len(lay["tp_tmeta"]) != 1 {
		t.Fatalf("no thin pool: %s", lvmReport(t, dev, "lvs", "-a", "-o", "lv_name,segtype,seg_pe_ranges"))
	}
	tree := lvmTree(t, "root")
	lvmFill(t, pv, 0, lay["root"], "ext4", tree)
	before := lvmVG(t, dev)

	dir := t.TempDir()
	img := filepath.Join(dir, "pv.platter")
	ok(t, "create", pv, img)
	j := lvmImageInfo(t, img)
	vols := map[string]block.Volume{}
	for _, v := range j.Partitions[0].Volumes {
		vols[v.Name] = v
	}
	pool := lay["tp_tdata"][0].Off
	if v := vols["tp"]; v.Start != pool || v.UsedBytes != 28<<20 || !strings.Contains(v.Note, "thin pool") {
		t.Errorf("pool: %+v", v)
	}
	if v := vols["thin1"]; v.Start != pool || v.UsedBytes != 0 || !strings.Contains(v.Note, "thin volume in pool tp") {
		t.Errorf("thin volume: %+v", v)
	}
	if v := vols["root"]; v.Filesystem != "ext4" || v.UsedBytes >= 32<<20 {
		t.Errorf("root: %+v", v)
	}
	// The pool's 28 MiB of garbage, root's files and metadata, the PV's.
	t.Logf("PV %d bytes, image %d bytes", int64(size), j.ImageBytes)
	if j.ImageBytes < 28<<20 || j.ImageBytes > 40<<20 {
		t.Errorf("image is %d bytes; the pool alone is 28 MiB", j.ImageBytes)
	}
	restored := filepath.Join(dir, "restored.img")
	ok(t, "restore", img, restored)
	rdev := lvmAttach(t, restored, 0, 0)
	lvmRun(t, rdev, "pvck", rdev)
	if after := lvmVG(t, rdev); after != before {
		t.Errorf("the restored PV holds another VG:\n%s\n---\n%s", before, after)
	}
	for _, name := range []string{"tp_tdata", "tp_tmeta"} {
		for _, e := range lay[name] {
			sameBytes(t, pv, restored, e.Off, e.Len, name)
		}
	}
	lvmCheck(t, lvmGather(t, restored, 0, lay["root"]), "ext4", tree)
}

// lvmCRC is LVM's checksum: CRC-32 from 0xf597a6cf, not inverted.
func lvmCRC(b []byte) uint32 {
	return ^crc32.Update(^uint32(0xf597a6cf), crc32.IEEETable, b)
}

// lvmSetText replaces the current metadata text of the PV at path
// (one metadata area at byte 4096) with text, checksums right.
func lvmSetText(t *testing.T, path, text string) {
	t.Helper()
	le := binary.LittleEndian
	h := readAt(t, path, 512, 4096)
	if string(h[4:20]) != " LVM2 x[5A%r0N*>" {
		t.Fatal("no metadata area at byte 4096")
	}
	tb := append([]byte(text), 0)
	le.PutUint64(h[40:], 512)
	le.PutUint64(h[48:], uint64(len(tb)))
	le.PutUint32(h[56:], lvmCRC(tb))
	le.PutUint32(h, lvmCRC(h[4:]))
	writeAt(t, path, tb, 4096+512)
	writeAt(t, path, h, 4096)
}

// TestLVMDamaged: PVs whose metadata area header or text fails its
// checksum, and PVs whose texts (with right checksums) are hostile, are
// copied whole with a note saying why, and restore byte for byte;
// nothing panics.
func TestLVMDamaged(t *testing.T) {
	const size = 64 << 20
	pv := tooltest.Garbage(t, size)
	dev := lvmPV(t, pv, 0, 0)
	lvmCreate(t, dev, "16m", "data")
	lvmFill(t, pv, 0, lvmExtents(t, dev)["data"], "ext4", lvmTree(t, "data"))
	backup := filepath.Join(t.TempDir(), "vge.txt")
	lvmRun(t, dev, "vgcfgbackup", "-f", backup, "vge")
	good, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	text := string(good)
	// The real current text's offset and size, from the area header.
	h := readAt(t, pv, 512, 4096)
	off, n := binary.LittleEndian.Uint64(h[40:]), binary.LittleEndian.Uint64(h[48:])

	cases := map[string]func(path string){
		"bad-checksum": func(path string) {
			b := readAt(t, path, 1, int64(4096+off+n/2))
			writeAt(t, path, []byte{b[0] ^ 1}, int64(4096+off+n/2))
		},
		"bad-header-checksum": func(path string) {
			writeAt(t, path, []byte{0x5a}, 4096+300)
		},
		"huge-number": func(path string) {
			lvmSetText(t, path, strings.Replace(text, "extent_count = 4", "extent_count = 184467440737095516160", 1))
		},
		"deep-nesting": func(path string) {
			lvmSetText(t, path, strings.Repeat("x {\n", 5000)+strings.Repeat("}\n", 5000)+text)
		},
		"past-the-pv": func(path string) {
			lvmSetText(t, path, strings.Replace(text, "\"pv0\", 0", "\"pv0\", 14", 1))
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pv.img")
			sh(t, "cp", "--sparse=always", pv, path)
			damage(path)
			img := filepath.Join(t.TempDir(), "pv.platter")
			ok(t, "create", path, img)
			j := lvmImageInfo(t, img)
			p := j.Partitions[0]
			if p.Filesystem != "raw" || !strings.Contains(p.Note, "lvm2") || !strings.Contains(p.Note, "at byte") {
				t.Errorf("partition: filesystem %q, note %q; want raw with an lvm2 note", p.Filesystem, p.Note)
			}
			t.Log(p.Note)
			restored := filepath.Join(t.TempDir(), "restored.img")
			ok(t, "restore", img, restored)
			sameBytes(t, path, restored, 0, size, "the damaged PV")
		})
	}
}
