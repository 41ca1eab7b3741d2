package iso9660

// This file reads the El Torito boot catalog: the validation entry
// (checked by its checksum), the initial/default entry, and the section
// headers and entries after it (one per platform: x86 BIOS, EFI, ...).

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// maxCatalog bounds the boot catalog's bytes read (64 entries of 32).
const maxCatalog = 64 * 32

// Boot is an El Torito boot catalog.
type Boot struct {
	CatalogBlock int64 // where the catalog is, in logical blocks
	ID           string
	Entries      []BootEntry
}

// BootEntry is one boot image of a catalog.
type BootEntry struct {
	Platform  string // "x86", "PowerPC", "Mac", "EFI", or "0xNN"
	Bootable  bool
	Emulation string // "none", "1.2M floppy", "1.44M floppy", "2.88M floppy", "hard disk"
	// LoadSegment is where BIOS loads the image (0: the default 0x7C0).
	LoadSegment uint16
	// Sectors is how many 512-byte sectors are loaded.
	Sectors uint16
	// Block is the image's first logical block; Offset its byte.
	Block  int64
	Offset int64
	ID     string // the section's identifier, for a section entry
}

func platform(id byte) string {
	switch id {
	case 0:
		return "x86"
	case 1:
		return "PowerPC"
	case 2:
		return "Mac"
	case 0xef:
		return "EFI"
	}
	return fmt.Sprintf("0x%02x", id)
}

func emulation(m byte) string {
	switch m & 0x0f {
	case 0:
		return "none"
	case 1:
		return "1.2M floppy"
	case 2:
		return "1.44M floppy"
	case 3:
		return "2.88M floppy"
	case 4:
		return "hard disk"
	}
	return fmt.Sprintf("0x%02x", m&0x0f)
}

// ReadBoot reads the El Torito boot catalog of the ISO 9660 volume in
// r: nil (and no error) for a volume without a boot record. Not ISO
// 9660: an error wrapping block.ErrNotMine; a damaged catalog, a
// *block.CorruptError.
func ReadBoot(r io.ReaderAt, size int64) (*Boot, error) {
	v, err := open(r, size)
	if err != nil || v.bootCat < 0 {
		return nil, err
	}
	off := v.bootCat * v.blockSize
	n := min(int64(maxCatalog), v.end()-off)
	if off < descStart || n < 64 {
		return nil, corrupt(off, "the El Torito boot catalog (block %d) lies outside the volume", v.bootCat)
	}
	b := make([]byte, n)
	if err := readAt(r, b, off); err != nil {
		return nil, fmt.Errorf("iso9660: read the El Torito boot catalog at byte %d: %w", off, err)
	}
	le := binary.LittleEndian
	if b[0] != 1 || b[30] != 0x55 || b[31] != 0xaa {
		return nil, corrupt(off, "the El Torito boot catalog has no validation entry")
	}
	var sum uint16
	for i := 0; i < 32; i += 2 {
		sum += le.Uint16(b[i:])
	}
	if sum != 0 {
		return nil, corrupt(off, "the El Torito validation entry's checksum does not match")
	}
	bt := &Boot{CatalogBlock: v.bootCat, ID: strings.TrimRight(string(b[4:28]), " \x00")}
	entry := func(e []byte, plat byte, id string) BootEntry {
		lba := int64(le.Uint32(e[8:]))
		return BootEntry{Platform: platform(plat), Bootable: e[0] == 0x88, Emulation: emulation(e[1]),
			LoadSegment: le.Uint16(e[2:]), Sectors: le.Uint16(e[6:]), Block: lba, Offset: lba * v.blockSize, ID: id}
	}
	bt.Entries = append(bt.Entries, entry(b[32:64], b[1], ""))
	for pos := 64; pos+32 <= len(b); {
		h := b[pos : pos+32]
		if h[0] != 0x90 && h[0] != 0x91 {
			break
		}
		plat, count, id := h[1], int(le.Uint16(h[2:])), strings.TrimRight(string(h[4:32]), " \x00")
		pos += 32
		for i := 0; i < count && pos+32 <= len(b); i++ {
			e := b[pos : pos+32]
			pos += 32
			if e[0] == 0x44 { // an extension record of the entry before
				i--
				continue
			}
			bt.Entries = append(bt.Entries, entry(e, plat, id))
		}
		if h[0] == 0x91 {
			break
		}
	}
	return bt, nil
}
