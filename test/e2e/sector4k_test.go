package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSectors4K images a disk with 4096-byte logical sectors (a loop
// device made with losetup -b 4096, GPT written on it) and restores it
// onto another such device.
func TestSectors4K(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk4k")
	sh(t, "truncate", "-s", "96M", backing)
	dev := loop(t, backing, "-b", "4096")
	sh(t, "sgdisk", "-n", "1:1M:+64M", "-t", "1:8300", "-c", "1:root", dev)
	parts := sfdiskParts(t, dev)
	if parts[1].start != 1<<20 {
		t.Fatalf("partition 1 at byte %d", parts[1].start)
	}
	tree := filepath.Join(dir, "tree")
	sh(t, "bash", filepath.Join(fixtures, "files.sh"), tree)
	fs := filepath.Join(dir, "fs.img")
	sh(t, "truncate", "-s", strconv.FormatInt(parts[1].size, 10), fs)
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, fs)
	sh(t, "dd", "if="+fs, "of="+dev, "bs=1M", "seek=1", "conv=notrunc", "status=none")

	img := filepath.Join(dir, "disk4k.platter")
	ok(t, "create", dev, img)
	j := info(t, img)
	if j.SectorSize != 4096 || j.Table != "gpt" || len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "ext4" {
		t.Fatalf("info: %+v", j)
	}
	target := filepath.Join(dir, "target4k")
	sh(t, "truncate", "-s", "96M", target)
	tdev := loop(t, target, "-b", "4096")
	ok(t, "restore", "--yes", img, tdev)
	a := strings.ReplaceAll(sfdiskDump(t, dev), dev, "DISK")
	b := strings.ReplaceAll(sfdiskDump(t, tdev), tdev, "DISK")
	if a != b || !strings.Contains(a, "sector-size: 4096") {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	sh(t, "sync")
	checkPartition(t, extract(t, tdev, parts[1]), "ext4", tree)
	sameBytes(t, dev, tdev, 0, 1<<20, "bytes before the first partition")
	st, _ := os.Stat(backing)
	sameBytes(t, dev, tdev, st.Size()-6*4096, 6*4096, "backup GPT")
}

// The 4096-byte-sector image back onto a 512-byte-sector disk of the same
// size (every partition is 4 KiB aligned): the table is written anew in
// 512-byte sectors, the partition at the same bytes.
func TestSectors4KTo512(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk4k")
	sh(t, "truncate", "-s", "96M", backing)
	dev := loop(t, backing, "-b", "4096")
	sh(t, "sgdisk", "-n", "1:1M:+64M", "-t", "1:8300", "-c", "1:root", dev)
	parts := sfdiskParts(t, dev)
	tree := filepath.Join(dir, "tree")
	sh(t, "bash", filepath.Join(fixtures, "files.sh"), tree)
	fs := filepath.Join(dir, "fs.img")
	sh(t, "truncate", "-s", strconv.FormatInt(parts[1].size, 10), fs)
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, fs)
	sh(t, "dd", "if="+fs, "of="+dev, "bs=1M", "seek=1", "conv=notrunc", "status=none")
	img := filepath.Join(dir, "disk4k.platter")
	ok(t, "create", dev, img)

	target := filepath.Join(dir, "target512")
	sh(t, "truncate", "-s", "96M", target)
	tdev := loop(t, target)
	ok(t, "restore", "--yes", "--progress", "none", img, tdev)
	if out := sh(t, "sgdisk", "-v", tdev); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	got := sfdiskParts(t, tdev)
	if got[1] != parts[1] || !strings.Contains(sfdiskDump(t, tdev), "sector-size: 512") {
		t.Errorf("partition 1 at %+v, was %+v\n%s", got[1], parts[1], sfdiskDump(t, tdev))
	}
	if a, b := gptFields(t, dev, 1), gptFields(t, tdev, 1); a != b {
		t.Errorf("sgdisk -i differs:\n%s\n---\n%s", a, b)
	}
	sh(t, "sync")
	checkPartition(t, extract(t, tdev, got[1]), "ext4", tree)
}
