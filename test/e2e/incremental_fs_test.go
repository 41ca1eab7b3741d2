package e2e

import (
	"bytes"
	"path/filepath"
	"testing"
)

// Incrementals of XFS and btrfs store only the chunks whose used blocks
// changed: after a 1 MiB file is written into a filesystem holding tens
// of MiB over random free space, every chunk the incremental stores
// differs between the restores of the full image and of the
// incremental, and the incremental restores to the filesystem with the
// new file, every file identical.
func TestIncrementalXFSBtrfs(t *testing.T) {
	for _, fs := range []string{"xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			dir := t.TempDir()
			var file string
			var mount func(opts string) (string, func())
			switch fs {
			case "xfs":
				file = xfsGarbage(t, filepath.Join(dir, "fs.img"), 512<<20)
				sh(t, "mkfs.xfs", "-q", "-f", "-K", file)
				mount = func(opts string) (string, func()) { return xfsMount(t, file, opts) }
			case "btrfs":
				file = mkBtrfs(t, 512<<20)
				mount = func(opts string) (string, func()) { return btrfsMount(t, file, opts+",nodiscard") }
			}
			mnt, umount := mount("rw")
			xfsFill(t, mnt, 48, false)
			umount()

			full := filepath.Join(dir, "full.platter")
			ok(t, "create", "--progress", "none", file, full)

			mnt, umount = mount("rw")
			writeRandom(t, filepath.Join(mnt, "new"), 1<<20)
			want := xfsManifest(t, mnt)
			umount()
			inc := filepath.Join(dir, "inc.platter")
			ok(t, "create", "--progress", "none", "--incremental", full, file, inc)

			back := filepath.Join(dir, "back.img")
			ok(t, "restore", "--yes", "--progress", "none", inc, back)
			before := filepath.Join(dir, "before.img")
			ok(t, "restore", "--yes", "--progress", "none", full, before)
			// Every chunk the incremental stores data for differs from
			// the full image's restore (free space restores as zeros in
			// both).
			ij := infoChunks(t, inc)
			stored, changed := 0, 0
			for _, c := range ij.Chunks {
				if c.InParent || c.Zero { // a zero chunk is an index entry, no data
					continue
				}
				stored++
				if !bytes.Equal(readAt(t, before, int(c.Length), c.Offset), readAt(t, back, int(c.Length), c.Offset)) {
					changed++
				}
			}
			t.Logf("%s: full image %d bytes; the incremental after a 1 MiB file %d bytes, %d chunks of data stored, %d of them changed",
				fs, info(t, full).ImageBytes, ij.ImageBytes, stored, changed)
			if stored == 0 || changed != stored {
				t.Errorf("the incremental stores data for %d chunks, of which %d changed", stored, changed)
			}

			var got map[string]string
			switch fs {
			case "xfs":
				xfsRepairClean(t, back)
				m, _ := xfsMount(t, back, "ro,nouuid")
				got = xfsManifest(t, m)
			case "btrfs":
				sh(t, "btrfs", "check", "--readonly", back)
				btrfsOwnFsid(t, back)
				m, _ := btrfsMount(t, back, "ro")
				got = xfsManifest(t, m)
			}
			if len(got) != len(want) {
				t.Errorf("%d entries restored, %d written", len(got), len(want))
			}
			xfsSameFiles(t, want, got)
			if _, ok := got["new"]; !ok {
				t.Errorf("the new file is not in the restored %s", fs)
			}
		})
	}
}
