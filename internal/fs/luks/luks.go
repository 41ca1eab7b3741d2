// Package luks recognises LUKS1 and LUKS2 encrypted volumes (Container
// describes it to the registry, internal/fsmap) and, with a key that
// opens one, finds which of its encrypted sectors hold the used blocks
// of the filesystem inside.
//
// The headers and keyslot areas (everything before the payload) are
// always kept byte for byte. Without a key that opens it the payload is
// kept whole: ciphertext looks random, so nothing can be told free. With
// one, the volume key is taken from a keyslot as cryptsetup does (the
// keyslot's KDF over the key, its key material decrypted and AF-merged,
// checked against the header's digest), the payload is decrypted through
// an io.ReaderAt for the detector of what it holds, and that
// filesystem's used blocks become used ciphertext sectors at the same
// offsets in the payload. Only ciphertext is ever imaged: the key and the
// plaintext stay in this package's memory while the map is read.
//
// The key derivations a header may ask for are bounded (unlock.go): a
// header is as hostile as an image.
package luks

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

// Inner finds the used blocks of the filesystem (or container) inside a
// decrypted payload: (nil, nil) when nothing is recognised.
type Inner func(r io.ReaderAt, size int64) (*block.Usage, error)

// Detect recognises a LUKS volume in r (size bytes) and returns its map
// over all of r: the headers and keyslot areas, and the payload either
// whole or, when one of keys opens it, the ciphertext sectors that hold
// what inner finds used in the plaintext. Not LUKS: an error wrapping
// block.ErrNotMine; a LUKS header that is damaged: a
// *block.CorruptError.
func Detect(r io.ReaderAt, size int64, keys [][]byte, inner Inner) (*block.Usage, error) {
	v, err := readHeader(r, size)
	if err != nil {
		return nil, err
	}
	switch {
	case v.locked != "":
		return v.whole(size, v.locked+": copied whole", len(keys) > 0)
	case len(keys) == 0:
		return v.whole(size, "locked: no key given", false)
	}
	// An unsupported payload cipher is said before any key is tried (a
	// key that does not suit it, once one is found).
	var ue *unsupportedError
	if _, err := newSectorCipher(v.cipher, make([]byte, maxKeyBytes)); errors.As(err, &ue) {
		return v.whole(size, err.Error()+": copied whole", true)
	}
	mk, why := v.unlock(r, keys)
	if mk == nil {
		note := "no key opened it"
		if why != "" {
			note += " (" + why + ")"
		}
		return v.whole(size, note+"; copied whole", true)
	}
	c, err := newSectorCipher(v.cipher, mk)
	clear(mk)
	if err != nil {
		return v.whole(size, err.Error()+"; copied whole", true)
	}
	return v.opened(r, size, c, inner)
}

// mapBlock is the granularity of the map: 4 KiB where the payload starts
// on a 4 KiB boundary (its filesystem's blocks then fall on the map's),
// else 512 bytes. It depends on the header only, so a volume imaged with
// and without its key has the same layout (an incremental of one can
// follow the other).
func (v *volume) mapBlock() int64 {
	if v.payloadOff%4096 == 0 {
		return 4096
	}
	return sectorSize512
}

func (v *volume) name() string { return fmt.Sprintf("luks%d", v.version) }

// detail is what info shows of the volume.
func (v *volume) detail() string {
	var kdfs []string
	n := 0
	for _, s := range v.slots {
		if s.kdf.typ == "" {
			continue
		}
		n++
		if !slices.Contains(kdfs, s.kdf.typ) {
			kdfs = append(kdfs, s.kdf.typ)
		}
	}
	slices.Sort(kdfs)
	d := fmt.Sprintf("UUID %s, %s, %d bits, keyslots %d", v.uuid, v.cipher, v.keyBytes*8, n)
	if len(kdfs) > 0 {
		d += " (" + strings.Join(kdfs, ", ") + ")"
	}
	return d
}

// whole is the volume kept whole: every block used. note says why, on
// the payload's volume entry; with warn it is the map's warning too
// (keys were given and did not help).
func (v *volume) whole(size int64, note string, warn bool) (*block.Usage, error) {
	u, err := block.NewUsage(v.name(), v.mapBlock(), size, func(_ int64, m *block.Map) error {
		m.SetRange(0, m.Blocks())
		return nil
	})
	if err != nil {
		return nil, err
	}
	u.Detail = v.detail()
	u.Volumes = []block.Volume{{Name: "payload", Start: v.payloadOff, Size: v.payloadLen, Filesystem: "raw", UsedBytes: v.payloadLen, Note: note}}
	if warn {
		u.Warning = fmt.Sprintf("%s volume: %s", strings.ToUpper(v.name()), note)
	}
	return u, nil
}

// opened maps the payload through the filesystem inside it.
func (v *volume) opened(r io.ReaderAt, size int64, c sectorCipher, inner Inner) (*block.Usage, error) {
	// dm-crypt shows whole sectors only.
	plainLen := v.payloadLen / v.sector * v.sector
	pr := &plainReader{r: r, off: v.payloadOff, size: plainLen, sector: v.sector, tweak: v.ivTweak, c: c}
	iu, err := inner(pr, plainLen)
	if err != nil {
		return v.whole(size, fmt.Sprintf("opened, but what it holds cannot be read (%v); copied whole", err), true)
	}
	if iu == nil {
		return v.whole(size, "opened; no filesystem found inside: copied whole", false)
	}
	used, err := iu.UsedBytes()
	if err != nil {
		return v.whole(size, fmt.Sprintf("opened, but the %s allocation map inside cannot be read (%v); copied whole", iu.FS, err), true)
	}
	m := &payloadMap{v: v, inner: iu, plainLen: plainLen, size: size}
	u, err := block.NewUsage(v.name(), v.mapBlock(), size, m.fill)
	if err != nil {
		return nil, err
	}
	u.Detail = v.detail()
	u.Warning, u.Untrusted = iu.Warning, iu.Untrusted
	if u.Warning != "" {
		u.Warning = fmt.Sprintf("in the %s volume: %s", strings.ToUpper(v.name()), u.Warning)
	}
	// Its free sectors are restored as fresh random bytes: zeros there
	// would show which blocks are free.
	u.FillFree = true
	u.Volumes = []block.Volume{{Name: "payload", Start: v.payloadOff, Size: plainLen, Filesystem: iu.FS, UsedBytes: used, Note: iu.Detail}}
	for _, iv := range iu.Volumes {
		iv.Name = "payload/" + iv.Name
		iv.Start += v.payloadOff
		u.Volumes = append(u.Volumes, iv)
	}
	return u, nil
}

// payloadMap is the map of an opened volume: everything outside the
// payload's whole sectors used, and inside it the encryption sectors
// that hold a used block of the filesystem inside.
type payloadMap struct {
	v        *volume
	inner    *block.Usage
	plainLen int64
	size     int64
}

func (p *payloadMap) fill(first int64, m *block.Map) error {
	lo := first * m.BlockSize()
	hi := lo + m.Len()
	set := func(a, b int64) { // bytes [a, b) of the volume
		a, b = max(a, lo), min(b, hi)
		if a < b {
			m.SetBytes(a-lo, b-a)
		}
	}
	pOff, pEnd := p.v.payloadOff, p.v.payloadOff+p.plainLen
	set(0, pOff)
	set(pEnd, p.size)
	// The window in plaintext bytes, widened to whole sectors so a
	// sector cut by the window's edge is asked for whole.
	s := p.v.sector
	plo := max(lo, pOff) - pOff
	phi := min(hi, pEnd) - pOff
	if plo >= phi {
		return nil
	}
	plo = plo / s * s
	phi = min(roundUp(phi, s), p.plainLen, p.inner.Len())
	if plo >= phi {
		return nil
	}
	im, base, err := p.inner.Window(plo, phi-plo)
	if err != nil {
		return err
	}
	im.Runs(plo-base, phi-plo, func(e block.Extent) {
		a := (base + e.Off) / s * s
		b := roundUp(base+e.End(), s)
		set(pOff+a, pOff+b)
	})
	return nil
}
