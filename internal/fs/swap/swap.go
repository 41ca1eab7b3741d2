// Package swap recognises a Linux swap area by its header page (FS
// describes it to the registry, internal/fsmap) and says which of its
// bytes to keep: the header page alone (boot-block area, version, size,
// bad pages, UUID and label, signature), since the pages
// after it hold only what a running system swapped out, which nothing
// reads after a reboot. Kept whole, the header page makes the restored
// area the same swap to mkswap, swapon, blkid and /etc/fstab (UUID=,
// LABEL=).
//
// A swap area that holds a hibernated system is another matter: its
// pages are the image the system resumes from, and its signature says
// so. Such an area, and one of the old (version 0) format, is copied
// whole.
//
// The header (union swap_header in include/linux/swap.h) fills the first
// page, whose size is the system's page size (4 KiB on x86, up to 64 KiB
// elsewhere): 1024 bytes of boot block, then version, last_page,
// nr_badpages, the UUID, a 16-byte label, padding and the bad-page list,
// all in the writing system's byte order; the signature ends the page.
package swap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	minPage = 4 << 10
	maxPage = 64 << 10
	sigLen  = 10

	infoOff    = 1024 // after the boot block
	paddingOff = infoOff + 44
	badOff     = infoOff + 512 // the bad-page list
	// minPages is blkid's smallest swap area: a header and nine pages.
	minPages = 10
)

// Signatures at the end of the header page.
const (
	sigV1 = "SWAPSPACE2"
	sigV0 = "SWAP-SPACE"
)

// hibernation are the signatures a hibernated system leaves in place of
// the swap signature (blkid's swsuspend): the kernel's own (S1SUSPEND,
// and S2SUSPEND of its older format), uswsusp's (ULSUSPEND), TuxOnIce's
// (a binary magic) and LINHIB0001.
var hibernation = []string{"S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "\xed\xc3\x02\xe9\x98\x56\xe5\x0c", "LINHIB0001"}

// Header is what a swap area's header page says.
type Header struct {
	PageSize  int64  // the header page's size: where its signature ends
	Signature string // SWAPSPACE2, SWAP-SPACE, or a hibernation signature
	Version   uint32 // 1 (0: a version 0 area, which has no fields)
	LastPage  uint32 // the last usable page
	BadPages  uint32 // how many pages are listed as bad
	UUID      [16]byte
	Label     string
}

// Hibernated says whether the area holds a hibernated system.
func (h *Header) Hibernated() bool { return h.Signature != sigV1 && h.Signature != sigV0 }

// UUIDString is the UUID as blkid shows it; "" when it is all zeros
// (mkswap before util-linux 2.15 wrote none), as blkid gives none.
func (h *Header) UUIDString() string {
	if h.UUID == [16]byte{} {
		return ""
	}
	return vfs.UUID(h.UUID[:])
}

// ReadHeader reads the swap header of the area in r (size bytes): the
// first page size from 4 KiB to 64 KiB whose last 10 bytes are a swap or
// hibernation signature. Not a swap area: an error wrapping
// block.ErrNotMine. A version 1 header swapon would refuse (another
// version, a size the area does not have) or whose padding is not zero:
// a *block.CorruptError.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < minPages*minPage {
		return nil, fmt.Errorf("swap: %w", block.ErrNotMine)
	}
	var sig [sigLen]byte
	for ps := int64(minPage); ps <= maxPage && ps*2 <= size; ps *= 2 {
		if n, err := r.ReadAt(sig[:], ps-sigLen); n != len(sig) {
			return nil, fmt.Errorf("swap: read signature at byte %d: %w", ps-sigLen, err)
		}
		name, ok := signature(sig[:])
		if !ok {
			continue
		}
		h := &Header{PageSize: ps, Signature: name}
		if name == sigV0 {
			return h, nil // a bitmap of usable pages fills the page
		}
		if err := h.parse(r, size); err != nil {
			return nil, err
		}
		return h, nil
	}
	return nil, fmt.Errorf("swap: %w", block.ErrNotMine)
}

var signatures = append([]string{sigV1, sigV0}, hibernation...)

// signature names the signature in b, if it is one.
func signature(b []byte) (string, bool) {
	for _, s := range signatures {
		if bytes.HasPrefix(b, []byte(s)) {
			return s, true
		}
	}
	return "", false
}

// parse reads the version 1 fields, in either byte order, and checks
// them as swapon does (read_swap_header in mm/swapfile.c), and that the
// padding after them is zero, as mkswap and swaplabel leave it: bytes
// that are not a header the kernel would use are damage, copied whole.
func (h *Header) parse(r io.ReaderAt, size int64) error {
	var b [badOff - infoOff]byte // version, last_page, nr_badpages, uuid, volume_name, padding
	if n, err := r.ReadAt(b[:], infoOff); n != len(b) {
		return fmt.Errorf("swap: read header at byte %d: %w", infoOff, err)
	}
	var order binary.ByteOrder = binary.LittleEndian
	if order.Uint32(b[:]) != 1 && binary.BigEndian.Uint32(b[:]) == 1 {
		order = binary.BigEndian
	}
	h.Version, h.LastPage, h.BadPages = order.Uint32(b[0:]), order.Uint32(b[4:]), order.Uint32(b[8:])
	copy(h.UUID[:], b[12:28])
	label := b[28:44]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	h.Label = string(label)
	if h.Hibernated() {
		return nil // copied whole whatever its fields say
	}
	bad := func(off int64, format string, args ...any) error {
		return &block.CorruptError{What: "swap", Off: off, Msg: fmt.Sprintf(format, args...)}
	}
	switch maxBad := (h.PageSize - sigLen - badOff) / 4; {
	case h.Version != 1:
		return bad(infoOff, "swap header version %d is not 1", h.Version)
	case h.LastPage == 0 || int64(h.LastPage)+1 > size/h.PageSize:
		return bad(infoOff+4, "swap header's last page %d is not in the %d pages of the area", h.LastPage, size/h.PageSize)
	case int64(h.BadPages) > maxBad:
		return bad(infoOff+8, "swap header lists %d bad pages, more than the %d its page holds", h.BadPages, maxBad)
	case !zero(b[paddingOff-infoOff:]):
		return bad(paddingOff, "swap header's padding is not zero: something wrote over it")
	}
	return nil
}

// Detect reads the swap area in r (size bytes) and returns the bytes to
// keep: its header page. Not a swap area: an error wrapping
// block.ErrNotMine. An area that holds a hibernated system, or of
// version 0, is untrusted: every block counts.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	h, err := ReadHeader(r, size)
	if err != nil {
		return nil, err
	}
	u, err := block.NewUsage("swap", h.PageSize, size, func(first int64, m *block.Map) error {
		if first == 0 && m.Blocks() > 0 {
			m.Set(0) // the header page, boot block and all
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case h.Hibernated():
		sig := h.Signature
		if sig[0] > 0x7e {
			sig = "TuxOnIce"
		}
		u.Distrust(fmt.Sprintf("swap holds a hibernated system (%s signature): resuming it reads every page of the area", sig))
	case h.Signature == sigV0:
		u.Distrust("swap is of the old version 0 format (SWAP-SPACE), which Linux no longer uses: its pages are not understood")
	}
	return u, nil
}

func zero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
