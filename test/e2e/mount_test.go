package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountDaemon mounts img at a new directory and unmounts it when the
// test ends.
func mountDaemon(t *testing.T, img string) string {
	t.Helper()
	dir := t.TempDir()
	ok(t, "mount", "--daemon", img, dir)
	t.Cleanup(func() { run(t, "umount", dir) })
	return dir
}

// The FUSE view of an image: disk.img is the restored disk (qemu-img
// compare), each pN.img a partition that checks clean with every file,
// loop-mountable; a damaged chunk is an I/O error for its range only; bad
// mount points are refused.
func TestMount(t *testing.T) {
	disk, img, back := imagedFixture(t, "gpt-disk.sh")
	dir := filepath.Dir(img)
	mnt := mountDaemon(t, img)

	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "disk.img"), back); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		t.Run(fs, func(t *testing.T) {
			checkPartition(t, filepath.Join(mnt, fmt.Sprintf("p%d.img", n)), fs, disk+".files/p"+fmt.Sprint(n))
		})
	}
	// The kernel mounts the ext4 partition from the FUSE file.
	x := t.TempDir()
	sh(t, "mount", "-o", "loop,ro", filepath.Join(mnt, "p2.img"), x)
	t.Cleanup(func() { exec.Command("umount", x).Run() })
	got := t.TempDir()
	sh(t, "cp", "-a", x+"/.", got)
	os.RemoveAll(filepath.Join(got, "lost+found"))
	sameTree(t, disk+".files/p2", got)
	sh(t, "umount", x)

	// Busy, not a directory, not empty.
	for _, c := range []struct{ dir, want string }{
		{mnt, "busy"}, {img, "not a directory"}, {dir, "not empty"},
	} {
		if _, stderr, code := run(t, "mount", img, c.dir); code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("mount at %s: exit %d, %s", c.dir, code, stderr)
		}
	}
}

func TestMountDamagedChunk(t *testing.T) {
	img, bad := damagedImage(t)
	mnt := mountDaemon(t, img)
	out, err := exec.Command("dd", "if="+filepath.Join(mnt, "disk.img"), "of=/dev/null", "bs=4096", "count=1", fmt.Sprint("skip=", bad/4096), "iflag=direct").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Input/output error") {
		t.Errorf("read of a damaged chunk: %v %s", err, out)
	}
	other := int64(32 << 20)
	if bad == other {
		other = 0
	}
	if out, err := exec.Command("dd", "if="+filepath.Join(mnt, "disk.img"), "of=/dev/null", "bs=4096", "count=1", fmt.Sprint("skip=", other/4096), "iflag=direct").CombinedOutput(); err != nil {
		t.Errorf("read elsewhere: %v %s", err, out)
	}
}

// mount, serve and extract follow an incremental's chain, and say what is
// missing when a parent is.
func TestOpenChain(t *testing.T) {
	fs := newIncFS(t)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", fs.file, full)
	fs.change(func(root string) { writeRandom(t, filepath.Join(root, "after"), 3<<20) })
	inc := filepath.Join(set, "inc.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, fs.file, inc)
	want := fs.keep()

	mnt := mountDaemon(t, inc)
	x := t.TempDir()
	sh(t, "mount", "-o", "loop,ro", filepath.Join(mnt, "disk.img"), x)
	got := t.TempDir()
	sh(t, "cp", "-a", x+"/.", got)
	sh(t, "umount", x)
	os.RemoveAll(filepath.Join(got, "lost+found"))
	sameTree(t, want, got)
	dest := t.TempDir()
	ok(t, "extract", inc, "/after", dest)
	sameBytes(t, filepath.Join(want, "after"), filepath.Join(dest, "after"), 0, 3<<20, "after")

	away := t.TempDir()
	os.Rename(full, filepath.Join(away, "full.platter"))
	for _, args := range [][]string{
		{"mount", inc, t.TempDir()},
		{"serve", "--nbd", "127.0.0.1:0", inc},
		{"ls", inc},
	} {
		if _, stderr, code := run(t, args...); code != 3 || !strings.Contains(stderr, "no image with id") {
			t.Errorf("%s without the parent: exit %d, %s", args[0], code, stderr)
		}
	}
	ok(t, "--search", away, "ls", inc, "/after")
}
