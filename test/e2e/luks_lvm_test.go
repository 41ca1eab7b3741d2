package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ubuntu's encrypted install: a LUKS2 partition whose payload is an LVM
// PV holding the root ext4 and a swap LV. With the key, the image keeps
// the headers, the LVM label and metadata, and the ciphertext of the
// ext4's used blocks and the swap's header page only; restored, the
// payload decrypts to a PV that pvck accepts with the same VG, the root
// LV is a clean ext4 with every file, and the sectors nothing uses are
// fresh random bytes, not zeros.
func TestLUKSWithLVM(t *testing.T) {
	const size = 96 << 20
	v := luksFormat(t, size, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096")
	// The payload's plaintext: random bytes (a used disk), a PV over
	// them with "root" (ext4) and "swap".
	plain := filepath.Join(t.TempDir(), "pv.img")
	n := int64(len(readAll(t, v.plain)))
	mustWrite(t, plain, luksCrypt(t, v.mk, readAll(t, v.path)[v.payloadOff:v.payloadOff+n], v.sector, false))
	dev := lvmPV(t, plain, 0, 0)
	lvmCreate(t, dev, "48m", "root")
	lvmCreate(t, dev, "16m", "swap")
	lay := lvmExtents(t, dev)
	tree := lvmTree(t, "root")
	lvmFill(t, plain, 0, lay["root"], "ext4", tree)
	swap := lvmGather(t, plain, 0, lay["swap"])
	sh(t, "mkswap", "-L", "cryptswap", swap)
	writeAt(t, plain, readAll(t, swap), lay["swap"][0].Off)
	before := lvmVG(t, dev)
	writeAt(t, v.path, luksCrypt(t, v.mk, readAll(t, plain), v.sector, true), v.payloadOff)

	dir := t.TempDir()
	img := filepath.Join(dir, "luks.platter")
	ok(t, "create", "--progress", "none", "--luks-key-file", v.keyPath, v.path, img)
	j := luksInfoOf(t, img)
	p := j.Partitions[0]
	if p.Filesystem != "luks2" || len(j.Warnings) != 0 || len(p.Volumes) == 0 || p.Volumes[0].Filesystem != "lvm2" {
		t.Fatalf("info: %+v, warnings %q; want luks2 holding lvm2", p, j.Warnings)
	}
	ext4 := lvmGather(t, plain, 0, lay["root"])
	if used := ext4Used(t, ext4); p.UsedBytes < used || p.UsedBytes > used+v.payloadOff+4<<20 {
		t.Errorf("%d bytes used; the ext4 uses %d, and the headers and LVM metadata take a few MiB more", p.UsedBytes, used)
	}
	if j.ImageBytes > size/2 {
		t.Errorf("image %d bytes of a %d-byte volume", j.ImageBytes, size)
	}
	text := ok(t, "info", img)
	for _, want := range []string{"volume payload: lvm2", "volume payload/root: ext4", "volume payload/swap: swap"} {
		if !strings.Contains(text, want) {
			t.Errorf("info does not say %q:\n%s", want, text)
		}
	}
	luksSecrets(t, img, map[string][]byte{"the ext4's plaintext marker": v.marker, "the volume key": v.mk})

	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	sameBytes(t, v.path, back, 0, v.payloadOff, "the LUKS headers and keyslot areas")
	dec := filepath.Join(t.TempDir(), "pv.img")
	got := readAll(t, back)
	mustWrite(t, dec, luksCrypt(t, v.mk, got[v.payloadOff:v.payloadOff+n], v.sector, false))
	rdev := lvmAttach(t, dec, 0, 0)
	lvmRun(t, rdev, "pvck", rdev)
	if after := lvmVG(t, rdev); after != before {
		t.Errorf("the restored payload holds another VG:\n%s\n---\n%s", before, after)
	}
	lvmCheck(t, lvmGather(t, dec, 0, lay["root"]), "ext4", tree)
	if a, b := blkidOf(t, swap, "LABEL"), blkidOf(t, lvmGather(t, dec, 0, lay["swap"]), "LABEL"); a != b || a != "cryptswap" {
		t.Errorf("swap label %q, restored %q", a, b)
	}
	// Past the swap's header page nothing is used: fresh random bytes.
	sw := v.payloadOff + lay["swap"][0].Off + 64<<10
	if g := got[sw : sw+4096]; bytes.Equal(g, make([]byte, 4096)) || bytes.Equal(g, readAt(t, v.path, 4096, sw)) {
		t.Error("a free sector of the swap LV is restored as zeros or as the source's bytes, not fresh random bytes")
	}
	os.Remove(dec)
}
