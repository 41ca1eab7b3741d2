package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A sector-by-sector image holds every byte of the disk: the fixture's
// free space (deleted files' data) and unpartitioned space come back from
// a restore, the NBD export and the FUSE disk.img, each identical to the
// original disk as qemu-img judges it; ls still reads its filesystems; an
// incremental of it is sector by sector too and catches a change in free
// space.
func TestSectorBySector(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "sectors.platter")
	ok(t, "create", "--progress", "none", "--sector-by-sector", disk, img)
	if !info(t, img).SectorBySector {
		t.Error("info does not say sector by sector")
	}
	identical := func(what, a, b string) bool {
		out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", a, b).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "mismatch") {
			t.Fatalf("qemu-img compare %s: %v %s", what, err, out)
		}
		return err == nil && strings.Contains(string(out), "identical")
	}

	// Control: a normal image leaves the free space's old data out, so
	// its restore differs from the disk (or this test could not fail).
	plain := filepath.Join(dir, "plain.platter")
	ok(t, "create", "--progress", "none", disk, plain)
	plainBack := filepath.Join(dir, "plain.img")
	ok(t, "restore", "--yes", "--progress", "none", plain, plainBack)
	if identical("plain restore", disk, plainBack) {
		t.Fatal("the fixture's free space is empty: nothing to prove")
	}

	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	if !identical("restore", disk, back) {
		t.Error("the restore of a sector-by-sector image differs from the disk")
	}
	addr, _ := startServe(t, img)
	if !identical("NBD", "nbd://"+addr+"/disk", disk) {
		t.Error("the NBD export differs from the disk")
	}
	mnt := mountDaemon(t, img)
	if !identical("FUSE", filepath.Join(mnt, "disk.img"), disk) {
		t.Error("the FUSE disk.img differs from the disk")
	}
	if out := ok(t, "ls", img+":2", "/docs"); !strings.Contains(out, "numbers.txt") {
		t.Errorf("ls of partition 2:\n%s", out)
	}

	// A change in unpartitioned space (past the last partition) is caught
	// by an incremental, which follows its parent's mode.
	writeAt(t, disk, []byte(strings.Repeat("changed in free space ", 1000)), 200<<20)
	inc := filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", "--incremental", img, disk, inc)
	if !info(t, inc).SectorBySector {
		t.Error("the incremental of a sector-by-sector image is not sector by sector")
	}
	ok(t, "restore", "--yes", "--progress", "none", inc, back)
	if !identical("incremental restore", disk, back) {
		t.Error("the restore of the incremental differs from the changed disk")
	}
	// A normal image cannot have a sector-by-sector incremental.
	if _, stderr, code := run(t, "create", "--progress", "none", "--sector-by-sector", "--incremental", plain, disk, filepath.Join(dir, "x.platter")); code != 2 || !strings.Contains(stderr, "not made sector by sector") {
		t.Errorf("sector-by-sector incremental of a normal image: exit %d, %s", code, stderr)
	}
}
