package e2e

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// LUKS inside LVM (the reverse of TestLUKSWithLVM): a PV over garbage
// with an ext4 LV ("root") and an LV ("crypt") holding a LUKS2 volume
// whose payload is an ext4. With the key, the image keeps the PV's
// metadata, root's used blocks, crypt's LUKS header and the ciphertext
// of the inner ext4's used blocks; restored, the PV passes pvck with the
// same VG, root is a clean ext4 with every file, crypt has the same LUKS
// header and decrypts to a clean ext4 with every file, and a free
// sector of its payload is fresh random bytes, not zeros.
func TestLVMWithLUKS(t *testing.T) {
	const size = 80 << 20
	pv := tooltest.Garbage(t, size)
	dev := lvmPV(t, pv, 0, 0)
	lvmCreate(t, dev, "24m", "root")
	lvmCreate(t, dev, "40m", "crypt")
	lay := lvmExtents(t, dev)
	tree := lvmTree(t, "root")
	lvmFill(t, pv, 0, lay["root"], "ext4", tree)
	// luksFormat writes an ext4 over random plaintext into the payload.
	v := luksFormat(t, lvmSize(lay["crypt"]), "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096")
	lvmScatter(t, pv, 0, lay["crypt"], v.path)
	before := lvmVG(t, dev)

	dir := t.TempDir()
	img := filepath.Join(dir, "pv.platter")
	ok(t, "create", "--progress", "none", "--luks-key-file", v.keyPath, pv, img)
	j := luksInfoOf(t, img)
	p := j.Partitions[0]
	if p.Filesystem != "lvm2" || len(j.Warnings) != 0 {
		t.Fatalf("info: %+v, warnings %q; want lvm2", p, j.Warnings)
	}
	text := ok(t, "info", img)
	for _, want := range []string{"volume root: ext4", "volume crypt: luks2", "volume crypt/payload: ext4"} {
		if !strings.Contains(text, want) {
			t.Errorf("info does not say %q:\n%s", want, text)
		}
	}
	luksSecrets(t, img, map[string][]byte{"the ext4's plaintext marker": v.marker, "the volume key": v.mk})

	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	rdev := lvmAttach(t, back, 0, 0)
	lvmRun(t, rdev, "pvck", rdev)
	if after := lvmVG(t, rdev); after != before {
		t.Errorf("the restored PV holds another VG:\n%s\n---\n%s", before, after)
	}
	lvmCheck(t, lvmGather(t, back, 0, lay["root"]), "ext4", tree)

	lv := lvmGather(t, back, 0, lay["crypt"])
	sameBytes(t, v.path, lv, 0, v.payloadOff, "the LUKS headers and keyslot areas")
	dump := func(p string) string { return strings.ReplaceAll(sh(t, "cryptsetup", "luksDump", p), p, "VOLUME") }
	if a, b := dump(v.path), dump(lv); a != b {
		t.Errorf("luksDump differs:\n%s\n---\n%s", a, b)
	}
	n := int64(len(readAll(t, v.plain)))
	got := readAll(t, lv)
	dec := filepath.Join(t.TempDir(), "decrypted.ext4")
	mustWrite(t, dec, luksCrypt(t, v.mk, got[v.payloadOff:v.payloadOff+n], v.sector, false))
	sh(t, "e2fsck", "-fn", dec)
	sameTree(t, v.tree, extTree(t, dec))

	// The last free block of the inner ext4 (past its files, away from
	// its metadata): fresh random bytes, not zeros, not the source's.
	const bs = 4096
	last := int64(-1)
	for b := range freeBlocks(t, v.plain) {
		last = max(last, b)
	}
	off := v.payloadOff + last*bs
	g := got[off : off+bs]
	if bytes.Equal(g, make([]byte, bs)) || bytes.Equal(g, readAt(t, v.path, bs, off)) {
		t.Errorf("free block %d of the LUKS LV's ext4 is restored as zeros or as the source's bytes, not fresh random bytes", last)
	}
}
