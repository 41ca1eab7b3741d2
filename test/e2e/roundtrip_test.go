package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/platter-dev/platter/internal/image"
)

// checkPartition judges one restored partition with its filesystem's
// own checker and reads every file back.
func checkPartition(t *testing.T, img, fs, tree string) {
	t.Helper()
	switch fs {
	case "ext2", "ext3", "ext4":
		sh(t, "e2fsck", "-fn", img)
		sameTree(t, tree, extTree(t, img))
	case "fat12", "fat16", "fat32":
		sh(t, "fsck.fat", "-n", img)
		sameTree(t, tree, fatTree(t, img))
	case "ntfs":
		sh(t, "ntfsfix", "-n", img)
		sameTree(t, tree, ntfsTree(t, img))
	default:
		t.Fatalf("no checker for %s", fs)
	}
}

// roundTrip images disk, verifies, restores into a new file and judges
// the result: same table, same boot area, every filesystem clean with
// the same files, raw partitions byte-identical, the target sparse.
func roundTrip(t *testing.T, disk string, wantTable string, wantFS map[int]string, raw []int) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", disk, img)
	if out := ok(t, "verify", img); !strings.Contains(out, "OK") {
		t.Errorf("verify said %q", out)
	}
	j := info(t, img)
	parts := sfdiskParts(t, disk)
	if j.Table != wantTable || j.FormatVersion != image.Version || j.ID == "" || j.ImageBytes == 0 {
		t.Errorf("info: table %q, version %d, id %q, %d bytes", j.Table, j.FormatVersion, j.ID, j.ImageBytes)
	}
	st, _ := os.Stat(disk)
	if j.SourceSize != st.Size() || j.SectorSize != 512 {
		t.Errorf("info: source %d bytes, %d-byte sectors", j.SourceSize, j.SectorSize)
	}
	if len(j.Partitions) != len(wantFS)+len(raw) {
		t.Errorf("info lists %d partitions, want %d", len(j.Partitions), len(wantFS)+len(raw))
	}
	for _, p := range j.Partitions {
		want, isRaw := wantFS[p.Index], false
		for _, r := range raw {
			isRaw = isRaw || r == p.Index
		}
		if isRaw {
			want = "raw"
		}
		if p.Filesystem != want {
			t.Errorf("partition %d: filesystem %q, want %q", p.Index, p.Filesystem, want)
		}
		if sp := parts[p.Index]; sp.start != p.Start || sp.size != p.Size {
			t.Errorf("partition %d: start %d size %d, sfdisk says %d %d", p.Index, p.Start, p.Size, sp.start, sp.size)
		}
		if p.UsedBytes <= 0 || p.StoredBytes <= 0 || p.UsedBytes > p.Size {
			t.Errorf("partition %d: used %d stored %d", p.Index, p.UsedBytes, p.StoredBytes)
		}
	}

	restored := filepath.Join(dir, "restored.img")
	ok(t, "restore", img, restored)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, restored); a != b {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	first := int64(1) << 62
	for _, p := range parts {
		first = min(first, p.start)
	}
	sameBytes(t, disk, restored, 0, first, "bytes before the first partition")
	if wantTable == "gpt" {
		sameBytes(t, disk, restored, st.Size()-33*512, 33*512, "backup GPT")
	}
	for n, fs := range wantFS {
		t.Run(fs+"-"+string(rune('0'+n)), func(t *testing.T) {
			checkPartition(t, extract(t, restored, parts[n]), fs, disk+".files/p"+string(rune('0'+n)))
		})
	}
	for _, n := range raw {
		sameBytes(t, disk, restored, parts[n].start, parts[n].size, "raw partition")
	}
	var s syscall.Stat_t
	syscall.Stat(restored, &s)
	if s.Blocks*512 > st.Size()/2 {
		t.Errorf("restored file uses %d bytes of %d: not sparse", s.Blocks*512, st.Size())
	}
}

func TestGPTDisk(t *testing.T) {
	roundTrip(t, fixture(t, "gpt-disk.sh"), "gpt", map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"}, []int{4})
}

func TestMBRDisk(t *testing.T) {
	roundTrip(t, fixture(t, "mbr-disk.sh"), "mbr", map[int]string{1: "fat16", 2: "ext4", 5: "ext2", 6: "ntfs"}, nil)
}

func TestBareFilesystem(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	img := filepath.Join(t.TempDir(), "fs.platter")
	ok(t, "create", disk, img)
	j := info(t, img)
	if j.Table != "none" || len(j.Partitions) != 1 || j.Partitions[0].Index != 1 || j.Partitions[0].Start != 0 || j.Partitions[0].Filesystem != "ext4" {
		t.Fatalf("info: %+v", j)
	}
	out := filepath.Join(t.TempDir(), "fs.img")
	ok(t, "restore", img, out)
	checkPartition(t, out, "ext4", disk+".files/p1")
	// Restoring partition 1 of a bare filesystem is the same thing.
	out2 := filepath.Join(t.TempDir(), "fs2.img")
	ok(t, "restore", "--partition", "1", img, out2)
	checkPartition(t, out2, "ext4", disk+".files/p1")
}

func TestSinglePartition(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	parts := sfdiskParts(t, disk)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", disk, img)
	p2 := filepath.Join(dir, "p2.img")
	ok(t, "restore", "--partition", "2", img, p2)
	if st, _ := os.Stat(p2); st.Size() != parts[2].size {
		t.Errorf("partition file is %d bytes, want %d", st.Size(), parts[2].size)
	}
	checkPartition(t, p2, "ext4", disk+".files/p2")
	p3 := filepath.Join(dir, "p3.img")
	ok(t, "restore", "--partition", "3", img, p3)
	checkPartition(t, p3, "ntfs", disk+".files/p3")
	if _, _, code := run(t, "restore", "--partition", "9", img, filepath.Join(dir, "p9.img")); code != 2 {
		t.Errorf("restore of a missing partition: exit %d, want 2", code)
	}

	// Only partitions 2 and 3: the table and boot area still come back.
	sel := filepath.Join(dir, "sel.platter")
	ok(t, "create", "--partitions", "2,3", disk, sel)
	if j := info(t, sel); len(j.Partitions) != 2 || j.Partitions[0].Index != 2 || j.Partitions[1].Index != 3 {
		t.Fatalf("--partitions 2,3 imaged %+v", j.Partitions)
	}
	whole := filepath.Join(dir, "whole.img")
	ok(t, "restore", sel, whole)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, whole); a != b {
		t.Errorf("sfdisk -d differs after a partial image")
	}
	sameBytes(t, disk, whole, 0, parts[1].start, "boot area")
	checkPartition(t, extract(t, whole, parts[2]), "ext4", disk+".files/p2")
	checkPartition(t, extract(t, whole, parts[3]), "ntfs", disk+".files/p3")
	if _, _, code := run(t, "create", "--partitions", "7", disk, filepath.Join(dir, "x.platter")); code != 2 {
		t.Errorf("create --partitions 7: exit %d, want 2", code)
	}
}
