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

// mount --files shows a partition's files read in place, for every
// filesystem: cp of the mount is every file, byte for byte, with ext's
// modes; a damaged chunk is an I/O error for the files in it, and the
// mount goes on; a busy mount point is refused before anything starts.
func TestMountFiles(t *testing.T) {
	disk, img, _ := imagedFixture(t, "gpt-disk.sh")
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		t.Run(fs, func(t *testing.T) {
			dir := t.TempDir()
			ok(t, "mount", "--daemon", "--files", fmt.Sprintf("%s:%d", img, n), dir)
			t.Cleanup(func() { run(t, "umount", dir) })
			got := t.TempDir()
			sh(t, "cp", "-a", dir+"/.", got)
			os.RemoveAll(filepath.Join(got, "lost+found"))
			want := disk + ".files/p" + fmt.Sprint(n)
			sameTree(t, want, got)
			if fs == "ext4" {
				for _, f := range []string{"docs/numbers.txt", "docs", "link-to-numbers"} {
					a, _ := os.Lstat(filepath.Join(want, f))
					b, err := os.Lstat(filepath.Join(dir, f))
					if err != nil || a.Mode() != b.Mode() || a.ModTime().Unix() != b.ModTime().Unix() {
						t.Errorf("%s through the mount: mode %v time %v, want %v %v (%v)", f, b.Mode(), b.ModTime(), a.Mode(), a.ModTime(), err)
					}
				}
			}
			if _, stderr, code := run(t, "mount", "--daemon", "--files", fmt.Sprintf("%s:%d", img, n), dir); code == 0 || !strings.Contains(stderr, "busy") {
				t.Errorf("mount --files on a busy mount point: exit %d, %s", code, stderr)
			}
		})
	}

	// The filesystem's first chunk damaged: it cannot be read at all,
	// and mount says which chunk.
	bad, _ := damagedImage(t)
	if _, stderr, code := run(t, "mount", "--daemon", "--files", bad, t.TempDir()); code == 0 || !strings.Contains(stderr, "bad chunk") {
		t.Errorf("mount --files of an image with its superblock's chunk damaged: exit %d, %s", code, stderr)
	}
	// A chunk of file data damaged: those files give I/O errors, the
	// others read, and the mount goes on.
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "small.txt"), []byte("fine\n"), 0o644)
	writeRandom(t, filepath.Join(tree, "big.bin"), 40<<20)
	fsImg := sparseFile(t, filepath.Join(work, "fs.img"), 64<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", tree, fsImg)
	bad = filepath.Join(work, "fs.platter")
	ok(t, "create", "--progress", "none", "--compress", "none", fsImg, bad)
	for _, c := range infoChunks(t, bad).Chunks {
		if c.FrameOffset > 0 && c.Offset >= 16<<20 {
			corrupt(t, bad, c.FrameOffset+64+100)
			break
		}
	}
	dir := t.TempDir()
	ok(t, "mount", "--daemon", "--files", bad, dir)
	t.Cleanup(func() { run(t, "umount", dir) })
	if _, err := os.ReadFile(filepath.Join(dir, "big.bin")); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("reading a file in a damaged chunk: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "small.txt")); err != nil || string(b) != "fine\n" {
		t.Errorf("small.txt after the damaged read: %q %v", b, err)
	}
}
