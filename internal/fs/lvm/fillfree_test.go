package lvm

import (
	"bytes"
	"io"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

// TestInnerFillFree: an LV whose inner map asks for random free blocks
// (an opened LUKS volume) makes the PV's map ask for them; its inner
// volumes are listed under the LV's name, placed on the PV through the
// LV's segments. An LV counted whole has no free blocks to fill.
func TestInnerFillFree(t *testing.T) {
	const ext, peStart, peCount = mib, mib, 32
	const size = peStart + peCount*ext
	pvs := pvText("pv0", testUUID, size/512, peStart/512, peCount)
	plain := lvText("plain", visible, linear(0, 4, "pv0", 0))
	// crypt's LV bytes 4-7 MiB lie at PV extents 20-23.
	crypt := func(status string) string {
		return lvText("crypt", status, linear(0, 4, "pv0", 10), linear(4, 4, "pv0", 20))
	}
	// The "LUKS volume" is the 8-extent LV: its payload starts 5 MiB in.
	inner := func(r io.ReaderAt, size int64) (*block.Usage, error) {
		u, err := block.NewUsage("fake", 4096, size, func(int64, *block.Map) error { return nil })
		if err != nil || size != 8*ext {
			return u, err
		}
		u.FS, u.FillFree = "luks2", true
		u.Volumes = []block.Volume{{Name: "payload", Start: 5 * ext, Size: 3 * ext, Filesystem: "ext4"}}
		return u, nil
	}
	for _, c := range []struct {
		name    string
		lvs     string
		fill    bool
		payload int64 // PV byte of crypt/payload; 0: not listed
	}{
		{"plain only", plain, false, 0},
		{"opened LUKS LV", plain + crypt(visible), true, peStart + 21*ext},
		{"LUKS LV counted whole", plain + crypt(`["READ", "WRITE", "VISIBLE", "LOCKED"]`), false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			pv := buildPV(pvSpec{size: size, uuid: testUUID, peStart: peStart, mdaSize: peStart - 4096, text: vgText("vgf", 3, ext/512, pvs, c.lvs)})
			u, err := Detect(bytes.NewReader(pv), size, inner)
			if err != nil {
				t.Fatal(err)
			}
			if u.FillFree != c.fill {
				t.Errorf("FillFree %v, want %v", u.FillFree, c.fill)
			}
			var got int64
			for _, v := range u.Volumes {
				if v.Name == "crypt/payload" {
					got = v.Start
					if v.Filesystem != "ext4" || v.Size != 3*ext {
						t.Errorf("crypt/payload: %+v", v)
					}
				}
			}
			if got != c.payload {
				t.Errorf("crypt/payload at PV byte %d, want %d (volumes %+v)", got, c.payload, u.Volumes)
			}
		})
	}
}
