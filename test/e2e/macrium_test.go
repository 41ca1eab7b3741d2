package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/mrimgx/mrimgxtest"
	"github.com/platter-dev/platter/internal/tooltest"
)

// mrDisk is a disk made by real tools and what was put on each of its
// partitions, to be imaged by mrimgxtest (there is no Reflect on Linux:
// the writer follows Macrium's published layout).
type mrDisk struct {
	path  string
	spec  mrimgxtest.Spec
	parts map[int]part
	fs    map[int]string // "ntfs", "fat", "exfat"
	trees map[int]string // the files each partition holds
}

// mrGPTDisk is a GPT disk: an NTFS (mkntfs, files copied in by ntfs-3g),
// a FAT32 (mkfs.fat, files by mtools) and an exFAT (mkfs.exfat, files by
// exfat-fuse), on a disk whose free space is random bytes; each
// partition's used blocks are what partclone reads off the filesystem's
// own allocation data.
func mrGPTDisk(t *testing.T) *mrDisk {
	t.Helper()
	files := tooltest.Files(t)
	d := &mrDisk{parts: map[int]part{1: {1 * mib, 16 * mib}, 2: {17 * mib, 40 * mib}, 3: {57 * mib, 12 * mib}},
		fs: map[int]string{1: "ntfs", 2: "fat", 3: "exfat"}, trees: map[int]string{1: files, 3: files}}

	ntfs := tooltest.Garbage(t, d.parts[1].size)
	sh(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", ntfs)
	mnt := t.TempDir()
	sh(t, "ntfs-3g", ntfs, mnt)
	sh(t, "cp", "-r", files+"/.", mnt)
	sh(t, "fusermount", "-u", mnt)

	fat := tooltest.MakeFAT(t, d.parts[2].size, 30, 2020, "-F", "32", "-s", "1")
	d.trees[2] = tooltest.MtoolsTree(t, fat)

	exfat := tooltest.Garbage(t, d.parts[3].size)
	sh(t, "mkfs.exfat", "-c", "4096", exfat)
	dev, detach := tooltest.ExfatLoop(t, exfat, 0, 0, false)
	emnt, umount := tooltest.ExfatMount(t, dev, false)
	sh(t, "cp", "-r", files+"/.", emnt)
	umount()
	detach()

	d.path = tooltest.Garbage(t, 70*mib)
	sh(t, "sgdisk", "-o",
		"-n", "1:2048:+16M", "-t", "1:0700",
		"-n", "2:34816:+40M", "-t", "2:ef00",
		"-n", "3:116736:+12M", "-t", "3:0700", d.path)
	for n, img := range map[int]string{1: ntfs, 2: fat, 3: exfat} {
		placeFile(t, d.path, img, d.parts[n].start)
	}
	d.spec = mrimgxtest.Spec{Source: d.path, SectorSize: 512, Format: "gpt", Track0: mib, Compress: true}
	d.setParts(t)
	return d
}

// setParts reads each partition's used blocks off its filesystem (again,
// after a change) into the spec.
func (d *mrDisk) setParts(t *testing.T) {
	t.Helper()
	d.spec.Parts = nil
	for _, n := range []int{1, 2, 3, 5, 6} {
		p, ok := d.parts[n]
		if !ok {
			continue
		}
		img := extract(t, d.path, p)
		mp := mrimgxtest.Part{Number: n, Start: p.start, Size: p.size, BlockSize: 64 << 10}
		switch d.fs[n] {
		case "ntfs":
			// The backup boot sector, outside partclone's clusters, is
			// in Reflect's grid too.
			mp.FS, mp.Used = "NTFS", append(tooltest.PartcloneUsed(t, "partclone.ntfs", img), block.Extent{Off: p.size - 512, Len: 512})
		case "fat":
			boot := readAt(t, img, 512, 0)
			le := binary.LittleEndian
			bps := int64(le.Uint16(boot[0x0b:]))
			fats := int64(le.Uint16(boot[0x16:]))
			mp.FS, mp.Used = "FAT16", tooltest.PartcloneUsed(t, "partclone.fat16", img)
			if fats == 0 {
				fats = int64(le.Uint32(boot[0x24:]))
				mp.FS, mp.Used = "FAT32", tooltest.PartcloneUsed(t, "partclone.fat32", img)
			}
			// Everything before cluster 2: reserved sectors, FATs and a
			// FAT16's root directory.
			mp.Reserved = (int64(le.Uint16(boot[0x0e:]))+int64(boot[0x10])*fats)*bps + int64(le.Uint16(boot[0x11:]))*32
		case "exfat":
			mp.FS, mp.Used = "exFAT", tooltest.PartcloneUsed(t, "partclone.exfat", img)
		}
		d.spec.Parts = append(d.spec.Parts, mp)
	}
}

// mrMBRDisk is an MBR disk (sfdisk): a FAT16 primary and, in the
// extended partition, a FAT16 and an NTFS logical, their EBRs in $EPT.
func mrMBRDisk(t *testing.T) *mrDisk {
	t.Helper()
	d := &mrDisk{parts: map[int]part{1: {1 * mib, 12 * mib}, 5: {14 * mib, 12 * mib}, 6: {27 * mib, 13 * mib}},
		fs: map[int]string{1: "fat", 5: "fat", 6: "ntfs"}, trees: map[int]string{}}
	d.path = tooltest.Garbage(t, 40*mib)
	cmd := exec.Command("sfdisk", "-q", d.path)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, size=24576, type=6\nstart=26624, type=5\nstart=28672, size=24576, type=6\nstart=55296, type=7\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	for _, n := range []int{1, 5} {
		fat := tooltest.MakeFAT(t, d.parts[n].size, 8+n, 2020, "-F", "16")
		d.trees[n] = tooltest.MtoolsTree(t, fat)
		placeFile(t, d.path, fat, d.parts[n].start)
	}
	files := tooltest.Files(t)
	ntfs := tooltest.Garbage(t, d.parts[6].size)
	sh(t, "mkntfs", "-q", "-F", "-Q", ntfs)
	mnt := t.TempDir()
	sh(t, "ntfs-3g", ntfs, mnt)
	sh(t, "cp", "-r", files+"/.", mnt)
	sh(t, "fusermount", "-u", mnt)
	placeFile(t, d.path, ntfs, d.parts[6].start)
	d.trees[6] = files
	d.spec = mrimgxtest.Spec{Source: d.path, SectorSize: 512, Format: "mbr", Track0: mib, Compress: true, EBRs: mrEBRs(t, d.path)}
	d.setParts(t)
	return d
}

// mrEBRs is where the disk's EBRs are, read off its MBR.
func mrEBRs(t *testing.T, disk string) []int64 {
	t.Helper()
	mbr := readAt(t, disk, 512, 0)
	le := binary.LittleEndian
	var ext int64 = -1
	for i := 0; i < 4; i++ {
		if e := mbr[446+16*i:]; e[4] == 5 || e[4] == 0x0f {
			ext = int64(le.Uint32(e[8:])) * 512
		}
	}
	var out []int64
	for at := ext; at >= 0 && len(out) < 16; {
		out = append(out, at)
		next := readAt(t, disk, 512, at)[446+16:]
		if next[4] == 0 {
			break
		}
		at = ext + int64(le.Uint32(next[8:]))*512
	}
	return out
}

func placeFile(t *testing.T, disk, img string, off int64) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, disk, b, off)
}

// checkMrDisk judges a disk restored from a Macrium image of d: the
// table (sgdisk -v, or sfdisk's dump), each filesystem clean by its own
// checker and holding exactly trees' files read by its own tools.
func checkMrDisk(t *testing.T, d *mrDisk, got string, trees map[int]string) {
	t.Helper()
	if d.spec.Format == "gpt" {
		if v := sh(t, "sgdisk", "-v", got); !strings.Contains(v, "No problems found") {
			t.Errorf("sgdisk -v:\n%s", v)
		}
	} else if a, b := sfdiskDump(t, d.path), sfdiskDump(t, got); a != b {
		t.Errorf("partition table differs:\nsource:\n%s\nrestored:\n%s", a, b)
	}
	for n, p := range d.parts {
		img := extract(t, got, p)
		switch d.fs[n] {
		case "ntfs":
			sh(t, "ntfsfix", "-n", img)
			sameTree(t, trees[n], ntfsTree(t, img))
		case "fat":
			sh(t, "fsck.fat", "-n", img)
			tooltest.SameTree(t, trees[n], tooltest.MtoolsTree(t, img))
			tooltest.SameTree(t, tooltest.MtoolsTree(t, img), trees[n])
		case "exfat":
			sh(t, "fsck.exfat", "-n", img)
			dev, detach := tooltest.ExfatLoop(t, img, 0, 0, true)
			mnt, umount := tooltest.ExfatMount(t, dev, true)
			sameTree(t, trees[n], mnt)
			umount()
			detach()
		}
	}
}

// checkMrFiles extracts every partition's files from img with platter
// and compares them with trees', byte for byte.
func checkMrFiles(t *testing.T, d *mrDisk, img string, trees map[int]string, env ...string) {
	t.Helper()
	for n := range d.parts {
		got := filepath.Join(t.TempDir(), "out")
		okEnv(t, env, "extract", fmt.Sprintf("%s:%d", img, n), "/", got)
		sameTree(t, trees[n], got)
	}
}

func okEnv(t *testing.T, env []string, args ...string) string {
	t.Helper()
	o, e, code, _ := runEnv(t, env, args...)
	if code != 0 {
		t.Fatalf("platter %s: exit %d\n%s%s", strings.Join(args, " "), code, o, e)
	}
	return o
}

// mrInfoJSON is the part of info --json of a Macrium image the tests read.
type mrInfoJSON struct {
	Format     string `json:"format"`
	ImageID    string `json:"image_id"`
	BackupType string `json:"backup_type"`
	Increment  int    `json:"increment_number"`
	Encrypted  bool   `json:"encrypted"`
	Files      []struct {
		Path string `json:"path"`
	} `json:"files"`
	Disks []struct {
		Number     int    `json:"disk_number"`
		Table      string `json:"table"`
		Size       int64  `json:"size"`
		Partitions []struct {
			Number     int    `json:"number"`
			Filesystem string `json:"filesystem"`
			Start      int64  `json:"start"`
			Size       int64  `json:"size"`
			UsedBytes  int64  `json:"used_bytes"`
			BlockSize  int64  `json:"block_size"`
		} `json:"partitions"`
	} `json:"disks"`
}

func mrInfo(t *testing.T, img string, env ...string) mrInfoJSON {
	t.Helper()
	var j mrInfoJSON
	if err := json.Unmarshal([]byte(okEnv(t, env, "info", "--json", img)), &j); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	return j
}

// checkMrInfo checks what info says of an image of d.
func checkMrInfo(t *testing.T, j mrInfoJSON, d *mrDisk, typ string, files int) {
	t.Helper()
	if j.Format != "mrimgx" || j.ImageID != "D684BA87241263E2" || j.BackupType != typ || len(j.Files) != files || len(j.Disks) == 0 {
		t.Fatalf("info: %+v", j)
	}
	disk := j.Disks[0]
	if disk.Table != d.spec.Format || len(disk.Partitions) != len(d.parts) {
		t.Fatalf("info: disk %+v", disk)
	}
	for i, p := range disk.Partitions {
		sp := d.spec.Parts[i]
		if p.Number != sp.Number || p.Filesystem != sp.FS || p.Start != sp.Start || p.Size != sp.Size || p.BlockSize != 64<<10 || p.UsedBytes <= 0 || p.UsedBytes > p.Size {
			t.Errorf("info: partition %+v, the image has %d %s at %d+%d", p, sp.Number, sp.FS, sp.Start, sp.Size)
		}
	}
}

// checkMrAll runs every command on the image img of d: info, verify,
// extract, restore (judged by the filesystems' tools), import (verified,
// and restored byte for byte as the direct restore), with env. It
// returns the disk the direct restore wrote.
func checkMrAll(t *testing.T, d *mrDisk, img string, trees map[int]string, env ...string) string {
	t.Helper()
	if out := okEnv(t, env, "verify", img); !strings.Contains(out, "OK, Macrium Reflect X image") {
		t.Errorf("verify: %s", out)
	} else {
		t.Logf("verify: %s", out)
	}
	checkMrFiles(t, d, img, trees, env...)
	tmp := t.TempDir()
	direct := filepath.Join(tmp, "direct.img")
	okEnv(t, env, "restore", img, direct)
	checkMrDisk(t, d, direct, trees)
	pl := filepath.Join(tmp, "imported.platter")
	if out := okEnv(t, env, "import", img, pl); !strings.Contains(out, "from Macrium Reflect X image") || !strings.Contains(out, "every block's MD5 verified") {
		t.Errorf("import: %s", out)
	} else {
		t.Logf("import: %s", out)
	}
	if st, err := os.Stat(pl); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("import made %v (%v)", st, err)
	}
	ok(t, "verify", pl)
	fromImport := filepath.Join(tmp, "import.img")
	ok(t, "restore", pl, fromImport)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", direct, fromImport); !strings.Contains(out, "identical") {
		t.Errorf("the disk restored from the imported image differs from the one restored from the .mrimgx: %s", out)
	}
	return direct
}

// TestMacrium opens Macrium Reflect X images (written by mrimgxtest over
// disks made by real tools) with every command: a GPT disk with NTFS,
// FAT32 and exFAT, an MBR disk with logical partitions, a split set, a
// full image and an increment, an encrypted set, an image of two disks;
// and refuses damage: a bad block, a missing part, a planted symlink.
func TestMacrium(t *testing.T) {
	for _, tool := range []string{"mkntfs", "ntfs-3g", "mkfs.fat", "mkfs.exfat", "mount.exfat-fuse", "partclone.ntfs", "partclone.fat32", "partclone.exfat", "sgdisk", "sfdisk", "fsck.exfat", "ntfsfix", "fsck.fat", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test and is not installed", tool)
		}
	}
	gpt := mrGPTDisk(t)
	mbr := mrMBRDisk(t)
	const id = "D684BA87241263E2"
	write := func(dir string, spec mrimgxtest.Spec, name string) *mrimgxtest.Result {
		t.Helper()
		res, err := mrimgxtest.Write(filepath.Join(dir, name), spec)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("gpt", func(t *testing.T) {
		dir := t.TempDir()
		img := write(dir, gpt.spec, id+"-00-00.mrimgx").Files[0]
		checkMrInfo(t, mrInfo(t, img), gpt, "full", 1)
		if out := ok(t, "info", img); !strings.Contains(out, "Macrium Reflect X image") || !strings.Contains(out, "exFAT") {
			t.Errorf("info: %s", out)
		} else {
			t.Logf("info:\n%s", out)
		}
		if out := ok(t, "ls", img+":1", "/d0"); !strings.Contains(out, "f0.bin") {
			t.Errorf("ls: %s", out)
		}
		// That ls converted it into the cache: the next open reads it there.
		if _, e, code, _ := runEnv(t, nil, "-v", "ls", img+":1", "/d0"); code != 0 || !strings.Contains(e, "converted image read from the cache") {
			t.Errorf("a second ls: exit %d, not from the cache:\n%s", code, e)
		}
		direct := checkMrAll(t, gpt, img, gpt.trees)
		// The same disk through mount, serve and convert.
		mnt := mountDaemon(t, img)
		if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "disk.img"), direct); !strings.Contains(out, "identical") {
			t.Errorf("mount: %s", out)
		}
		addr, _ := startServe(t, img)
		if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", direct); !strings.Contains(out, "identical") {
			t.Errorf("serve: %s", out)
		}
		qcow := filepath.Join(t.TempDir(), "mr.qcow2")
		ok(t, "convert", img, qcow)
		if out := sh(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow, direct); !strings.Contains(out, "identical") {
			t.Errorf("convert: %s", out)
		}
		// The restore target is never the image itself; the image is
		// no incremental's parent.
		if _, e, code := run(t, "restore", img, img); code != 2 {
			t.Errorf("restore onto the image: exit %d\n%s", code, e)
		}
		if _, e, code := run(t, "create", "--incremental", img, gpt.path, filepath.Join(t.TempDir(), "inc.platter")); code != 2 || !strings.Contains(e, "is a Macrium Reflect X image") {
			t.Errorf("create --incremental X.mrimgx: exit %d\n%s", code, e)
		}
		// A byte flipped in a compressed block: it does not decode, or
		// its MD5 does not match; either is damage, named by the block.
		bad := filepath.Join(t.TempDir(), id+"-00-00.mrimgx")
		sh(t, "cp", img, bad)
		b := readAt(t, bad, 1, 40)
		writeAt(t, bad, []byte{b[0] ^ 0x5a}, 40)
		want := fmt.Sprintf("disk 1 partition 1 block 0 (disk bytes %d-%d", mib, mib+64<<10-1)
		if o, e, code := run(t, "verify", bad); code != 3 || !strings.Contains(o+e, want) {
			t.Errorf("verify of a damaged compressed block: exit %d, want 3 naming %q\n%s%s", code, want, o, e)
		}
		// Cut short, or its footer pointing outside: one line, exit 3.
		cutShort := filepath.Join(t.TempDir(), "cut.mrimgx")
		sh(t, "cp", img, cutShort)
		st, _ := os.Stat(cutShort)
		os.Truncate(cutShort, st.Size()-7)
		if o, e, code := run(t, "info", cutShort); code != 3 || !strings.Contains(e, "no MACRIUM_FILE footer") || strings.Count(strings.TrimSpace(e), "\n") != 0 {
			t.Errorf("info of a cut image: exit %d\n%s%s", code, o, e)
		}
		outside := filepath.Join(t.TempDir(), "outside.mrimgx")
		sh(t, "cp", img, outside)
		writeAt(t, outside, binary.LittleEndian.AppendUint64(nil, 1<<40), st.Size()-20)
		if o, e, code := run(t, "verify", outside); code != 3 || !strings.Contains(e, "the footer points at byte 1099511627776") {
			t.Errorf("verify of a footer pointing outside: exit %d\n%s%s", code, o, e)
		}
		// A symlink to the image is not followed.
		link := filepath.Join(t.TempDir(), "link.mrimgx")
		os.Symlink(img, link)
		if _, e, code := run(t, "import", link, filepath.Join(t.TempDir(), "x.platter")); code != 2 || !strings.Contains(e, "neither") {
			t.Errorf("import of a symlink: exit %d\n%s", code, e)
		}
	})

	// A partition image: Reflect's choice of some partitions of a disk.
	// The table and the FAT32 come back; the partitions not imaged read
	// as zeros (their source bytes are a filesystem and random garbage).
	t.Run("partition image", func(t *testing.T) {
		one := *gpt
		one.spec.Parts = nil
		for _, p := range gpt.spec.Parts {
			if p.Number == 2 {
				one.spec.Parts = append(one.spec.Parts, p)
			}
		}
		one.parts = map[int]part{2: gpt.parts[2]}
		img := write(t.TempDir(), one.spec, "part.mrimgx").Files[0]
		checkMrInfo(t, mrInfo(t, img), &one, "full", 1)
		direct := checkMrAll(t, &one, img, one.trees)
		for _, n := range []int{1, 3} {
			p := gpt.parts[n]
			if b := readAt(t, direct, int(min(p.size, 4<<20)), p.start); !bytes.Equal(b, make([]byte, len(b))) {
				t.Errorf("partition %d, not imaged, does not read as zeros", n)
			}
		}
		if _, _, code, _ := runEnv(t, nil, "ls", img+":1", "/"); code == 0 {
			t.Errorf("ls of a partition not imaged succeeded")
		}
	})

	t.Run("mbr", func(t *testing.T) {
		img := write(t.TempDir(), mbr.spec, "mbr.mrimgx").Files[0]
		checkMrInfo(t, mrInfo(t, img), mbr, "full", 1)
		checkMrAll(t, mbr, img, mbr.trees)
	})

	t.Run("two disks", func(t *testing.T) {
		spec := gpt.spec
		spec.More = []mrimgxtest.Spec{mbr.spec}
		img := write(t.TempDir(), spec, "two.mrimgx").Files[0]
		j := mrInfo(t, img)
		if len(j.Disks) != 2 || j.Disks[0].Table != "gpt" || j.Disks[1].Table != "mbr" || j.Disks[1].Number != 2 {
			t.Fatalf("info: %+v", j.Disks)
		}
		tmp := t.TempDir()
		first, second := filepath.Join(tmp, "1.img"), filepath.Join(tmp, "2.img")
		_, e, code := run(t, "restore", img, first)
		if code != 0 || !strings.Contains(e, "holds 2 disks (disk numbers 1, 2): reading disk 1; choose another with --disk N") {
			t.Fatalf("restore: exit %d\n%s", code, e)
		}
		checkMrDisk(t, gpt, first, gpt.trees)
		pl := filepath.Join(tmp, "2.platter")
		ok(t, "import", "--disk", "2", img, pl)
		ok(t, "restore", pl, second)
		checkMrDisk(t, mbr, second, mbr.trees)
		if _, e, code := run(t, "import", "--disk", "7", img, filepath.Join(tmp, "7.platter")); code == 0 || !strings.Contains(e, "no disk number 7") {
			t.Errorf("--disk 7: exit %d\n%s", code, e)
		}
		if _, e, code := run(t, "verify", "--disk", "2", pl); code != 2 || !strings.Contains(e, "--disk") {
			t.Errorf("--disk of a Platter image: exit %d\n%s", code, e)
		}
	})

	t.Run("split", func(t *testing.T) {
		dir := t.TempDir()
		spec := gpt.spec
		spec.Compress, spec.SplitAt = false, 4*mib
		res := write(dir, spec, id+"-00-00.mrimgx")
		if len(res.Files) < 3 {
			t.Fatalf("%d files; the fixture should split into 3 or more", len(res.Files))
		}
		last := res.Files[len(res.Files)-1]
		checkMrInfo(t, mrInfo(t, last), gpt, "full", len(res.Files))
		checkMrAll(t, gpt, last, gpt.trees)
		// Opened by its first part too.
		ok(t, "verify", res.Files[0])

		// A damaged stored block: named with the disk bytes it covers,
		// exit 3, and import leaves nothing.
		bad := t.TempDir()
		for _, f := range res.Files {
			sh(t, "cp", f, bad)
		}
		badLast := filepath.Join(bad, filepath.Base(last))
		first := filepath.Join(bad, filepath.Base(res.Files[0]))
		b := readAt(t, first, 1, 100)
		writeAt(t, first, []byte{b[0] ^ 0x5a}, 100) // partition 1 block 0: the NTFS boot sector
		want := fmt.Sprintf("disk 1 partition 1 block 0 (disk bytes %d-%d", mib, mib+64<<10-1)
		if o, e, code := run(t, "verify", badLast); code != 3 || !strings.Contains(o+e, want) || !strings.Contains(o+e, "MD5 mismatch") {
			t.Errorf("verify of a damaged block: exit %d, want 3 naming %q\n%s%s", code, want, o, e)
		} else {
			t.Logf("verify of a damaged block:\n%s%s", o, e)
		}
		out := filepath.Join(t.TempDir(), "out.platter")
		if o, e, code := run(t, "import", badLast, out); code != 3 || !strings.Contains(e, want) {
			t.Errorf("import of a damaged block: exit %d, want 3 naming %q\n%s%s", code, want, o, e)
		}
		for _, p := range []string{out, out + ".partial"} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("a failed import left %s", p)
			}
		}
		if _, e, code := run(t, "restore", badLast, filepath.Join(t.TempDir(), "r.img")); code != 3 || !strings.Contains(e, want) {
			t.Errorf("restore of a damaged block: exit %d\n%s", code, e)
		}

		// A missing part is named; a symlink planted in its place, to
		// the very file, is not followed.
		gone := t.TempDir()
		for _, f := range res.Files {
			sh(t, "cp", f, gone)
		}
		part1 := filepath.Join(gone, filepath.Base(res.Files[1]))
		moved := filepath.Join(t.TempDir(), "moved.mrimgx")
		sh(t, "mv", part1, moved)
		goneLast := filepath.Join(gone, filepath.Base(last))
		for _, what := range []string{"missing", "symlink"} {
			if what == "symlink" {
				if err := os.Symlink(moved, part1); err != nil {
					t.Fatal(err)
				}
			}
			for _, cmd := range [][]string{{"verify", goneLast}, {"info", goneLast}, {"import", goneLast, filepath.Join(t.TempDir(), "x.platter")}} {
				if o, e, code := run(t, cmd...); code != 3 || !strings.Contains(o+e, "file 1 of the backup set") {
					t.Errorf("%s with part 1 %s: exit %d, want 3 naming file 1\n%s%s", cmd[0], what, code, o, e)
				} else if cmd[0] == "verify" {
					t.Logf("verify with part 1 %s: %s%s", what, o, e)
				}
			}
		}
	})

	t.Run("incremental", func(t *testing.T) {
		dir := t.TempDir()
		base := write(dir, gpt.spec, id+"-00-00.mrimgx")
		// A file added to the NTFS and the exFAT of a copy of the disk,
		// one removed from the FAT32; the increment holds the change.
		d := *gpt
		d.path = filepath.Join(t.TempDir(), "changed.img")
		sh(t, "cp", "--sparse=always", gpt.path, d.path)
		d.spec.Source = d.path
		d.trees = map[int]string{}
		added := bytes.Repeat([]byte("the increment "), 100000)
		for _, n := range []int{1, 3} {
			tree := filepath.Join(t.TempDir(), "tree")
			sh(t, "cp", "-r", gpt.trees[n], tree)
			if err := os.WriteFile(filepath.Join(tree, "added.bin"), added, 0o644); err != nil {
				t.Fatal(err)
			}
			d.trees[n] = tree
		}
		ntfs := extract(t, d.path, d.parts[1])
		mnt := t.TempDir()
		sh(t, "ntfs-3g", ntfs, mnt)
		sh(t, "cp", filepath.Join(d.trees[1], "added.bin"), mnt)
		sh(t, "fusermount", "-u", mnt)
		placeFile(t, d.path, ntfs, d.parts[1].start)
		exfat := extract(t, d.path, d.parts[3])
		dev, detach := tooltest.ExfatLoop(t, exfat, 0, 0, false)
		emnt, umount := tooltest.ExfatMount(t, dev, false)
		sh(t, "cp", filepath.Join(d.trees[3], "added.bin"), emnt)
		umount()
		detach()
		placeFile(t, d.path, exfat, d.parts[3].start)
		fat := extract(t, d.path, d.parts[2])
		sh(t, "mdel", "-i", fat, "::/README.TXT")
		d.trees[2] = tooltest.MtoolsTree(t, fat)
		placeFile(t, d.path, fat, d.parts[2].start)
		d.setParts(t)
		spec := d.spec
		spec.Base, spec.Increment, spec.Delta = base, 1, true
		inc := write(dir, spec, id+"-01-01.mrimgx").Files[0]
		if st, _ := os.Stat(inc); st.Size() > 8*mib {
			t.Errorf("the increment is %d bytes: more than what changed", st.Size())
		}
		j := mrInfo(t, inc)
		checkMrInfo(t, j, &d, "incremental", 2)
		if j.Increment != 1 {
			t.Errorf("info: increment %d", j.Increment)
		}
		if out := ok(t, "ls", inc+":1", "/"); !strings.Contains(out, "added.bin") {
			t.Errorf("ls of the increment: %s", out)
		}
		if out := ok(t, "ls", base.Files[0]+":1", "/"); strings.Contains(out, "added.bin") {
			t.Errorf("ls of the full image shows the increment's file: %s", out)
		}
		checkMrAll(t, &d, inc, d.trees)
	})

	t.Run("encrypted", func(t *testing.T) {
		const pass = "pässword 1"
		spec := gpt.spec
		spec.Password, spec.AESBits, spec.Iterations = pass, 256, 1000
		img := write(t.TempDir(), spec, "enc.mrimgx").Files[0]
		env := []string{"PLATTER_PASSWORD=" + pass}
		j := mrInfo(t, img, env...)
		checkMrInfo(t, j, gpt, "full", 1)
		if !j.Encrypted {
			t.Errorf("info: not encrypted")
		}
		checkMrAll(t, gpt, img, gpt.trees, env...)
		// Its disk is never kept decrypted in the cache.
		if _, e, code, _ := runEnv(t, env, "-v", "ls", img+":1", "/"); code != 0 || !strings.Contains(e, "not cached (an encrypted image is not kept decrypted)") {
			t.Errorf("ls of an encrypted image: exit %d, cached?\n%s", code, e)
		}

		pw := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(pw, []byte(pass+"\n"), 0o600)
		if out := ok(t, "verify", "--password-file", pw, img); !strings.Contains(out, "OK") {
			t.Errorf("verify --password-file: %s", out)
		}
		// On a terminal the password is asked, once.
		shown, code := runTTY(t, []answer{{"Passphrase: ", pass}}, "verify", img)
		if code != 0 || strings.Count(shown, "Passphrase: ") != 1 || !strings.Contains(shown, "OK") {
			t.Errorf("verify on a terminal: exit %d\n%s", code, shown)
		}
		// mount --daemon passes a typed password to its child.
		mnt := t.TempDir()
		shown, code = runTTY(t, []answer{{"Passphrase: ", pass}}, "mount", "--daemon", "--files", img+":1", mnt)
		if code != 0 || strings.Count(shown, "Passphrase: ") != 1 {
			t.Fatalf("mount --daemon on a terminal: exit %d\n%s", code, shown)
		}
		t.Cleanup(func() { unmountPlatter(t, mnt) })
		got := t.TempDir()
		sh(t, "cp", "-a", mnt+"/.", got)
		sameTree(t, gpt.trees[1], got)
		unmountPlatter(t, mnt)

		// A wrong password, or none: one line, exit 1, nothing made.
		out := filepath.Join(t.TempDir(), "x.platter")
		for _, env := range [][]string{{"PLATTER_PASSWORD=password 1"}, nil} {
			for _, cmd := range [][]string{{"verify", img}, {"info", img}, {"import", img, out}} {
				o, e, code, _ := runEnv(t, env, cmd...)
				if code != 1 || !strings.Contains(e, "password") || strings.Count(strings.TrimSpace(e), "\n") != 0 {
					t.Errorf("%s with %v: exit %d, want 1 and one line about the password\n%s%s", cmd[0], env, code, o, e)
				} else if cmd[0] == "import" {
					t.Logf("import with %v: %s", env, e)
				}
			}
		}
		shown, code = runTTY(t, []answer{{"Passphrase: ", "wrong"}}, "verify", img)
		if code != 1 || !strings.Contains(shown, "wrong or missing password") {
			t.Errorf("a wrong password typed: exit %d\n%s", code, shown)
		}
		if _, err := os.Lstat(out); err == nil {
			t.Errorf("a refused import left %s", out)
		}
	})
}
