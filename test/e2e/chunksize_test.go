package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// --chunk-size: an image in 1 MiB chunks restores, serves and mounts the
// same disk as one in the default 8 MiB chunks; an incremental keeps its
// parent's; bad sizes are refused.
func TestChunkSize(t *testing.T) {
	disk, img, back := imagedFixture(t, "gpt-disk.sh")
	dir := filepath.Dir(img)
	small := filepath.Join(dir, "small.platter")
	ok(t, "create", "--progress", "none", "--chunk-size", "1M", disk, small)
	if cs := info(t, small).ChunkSize; cs != 1<<20 {
		t.Fatalf("chunk size %d, want 1 MiB", cs)
	}
	if cs := info(t, img).ChunkSize; cs != 8<<20 {
		t.Fatalf("default chunk size %d, want 8 MiB", cs)
	}
	smallBack := filepath.Join(dir, "small.img")
	ok(t, "restore", "--yes", "--progress", "none", small, smallBack)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", smallBack, back)
	addr, _ := startServe(t, small)
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", back)
	mnt := mountDaemon(t, small)
	checkPartition(t, filepath.Join(mnt, "p2.img"), "ext4", disk+".files/p2")

	inc := filepath.Join(dir, "inc.platter")
	if _, stderr, code := run(t, "create", "--progress", "none", "--chunk-size", "4M", "--incremental", small, disk, inc); code != 2 || !strings.Contains(stderr, "parent's chunk size") {
		t.Errorf("--chunk-size with --incremental: exit %d, %s", code, stderr)
	}
	ok(t, "create", "--progress", "none", "--incremental", small, disk, inc)
	if cs := info(t, inc).ChunkSize; cs != 1<<20 {
		t.Errorf("the incremental's chunk size is %d, want its parent's 1 MiB", cs)
	}
	for _, bad := range []string{"3M", "32K", "128M", "lots"} {
		if _, stderr, code := run(t, "create", "--progress", "none", "--chunk-size", bad, disk, filepath.Join(dir, "bad.platter")); code != 2 || !strings.Contains(stderr, "power of two") {
			t.Errorf("--chunk-size %s: exit %d, %s", bad, code, stderr)
		}
	}
}
