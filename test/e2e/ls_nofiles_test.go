package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// TestLsNoFiles: ls of a swap area, an LVM PV or a LUKS volume says
// what the partition is and how its files are reached, if they can be,
// not to loop-mount pN.img (which is for XFS and btrfs).
func TestLsNoFiles(t *testing.T) {
	dir := t.TempDir()

	swap := filepath.Join(dir, "swap.img")
	mustWrite(t, swap, make([]byte, 1<<20))
	sh(t, "mkswap", swap)

	pv := tooltest.Garbage(t, 32<<20)
	dev := lvmPV(t, pv, 0, 0)
	lvmCreate(t, dev, "8m", "root")
	lvmCreate(t, dev, "4m", "blob")
	root := lvmExtents(t, dev)["root"]
	lv := lvmGather(t, pv, 0, root)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", lv)
	lvmScatter(t, pv, 0, root, lv)

	v := luksFormat(t, 32<<20, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096")

	for _, c := range []struct {
		name, src string
		args      []string // for create
		want      string   // after "partition 1 of IMG holds "
	}{
		{"swap", swap, nil, "swap: a swap area holds no files"},
		{"lvm2", pv, nil, "lvm2: LVM volume group vge (logical volumes root (ext4), blob (raw)), not a filesystem: " +
			"platter mount IMG DIR, then losetup -r -f --show DIR/p1.img and vgchange -ay vge give /dev/vge/LV"},
		{"luks2", v.path, []string{"--luks-key-file", v.keyPath}, "luks2: an encrypted volume: " +
			"platter mount IMG DIR, then cryptsetup open --readonly DIR/p1.img NAME (with its key) gives the ext4 inside as /dev/mapper/NAME"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(dir, c.name+".platter")
			ok(t, append(append([]string{"create", "--progress", "none"}, c.args...), c.src, img)...)
			want := "partition 1 of " + img + " holds " + strings.ReplaceAll(c.want, "IMG", img)
			_, stderr, code := run(t, "ls", img+":1")
			if code != 2 || !strings.Contains(stderr, want) || strings.Contains(stderr, "mount -o ro,loop") {
				t.Errorf("ls %s:1: exit %d, want 2 and %q:\n%s", img, code, want, stderr)
			}
			// Without :N the same partition is named, with the same advice.
			want = strings.Replace(want, "partition 1 of "+img, "partition 1", 1)
			_, stderr, code = run(t, "ls", img)
			if code != 2 || !strings.Contains(stderr, want) {
				t.Errorf("ls %s: exit %d, want 2 and %q:\n%s", img, code, want, stderr)
			}
		})
	}
}
