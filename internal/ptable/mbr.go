package ptable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

// ErrNoMBR is returned (wrapped) by ParseMBR when a sector holds no MBR
// partition table: a blank disk, or a bare filesystem's boot sector.
var ErrNoMBR = errors.New("no MBR partition table")

// MBR is a parsed master boot record.
type MBR struct {
	DiskSignature uint32 // at byte 440
	Entries       [4]MBREntry
}

// MBREntry is one of the four 16-byte partition entries of an MBR or EBR.
type MBREntry struct {
	Status   byte // 0x80 active, 0x00 inactive
	Type     byte
	StartLBA uint32
	Sectors  uint32
}

// Empty reports an unused slot. Like the Linux kernel, a slot with a type
// but no sectors counts as unused.
func (e MBREntry) Empty() bool { return e.Type == 0 || e.Sectors == 0 }

// IsExtended reports an extended-partition container type.
func (e MBREntry) IsExtended() bool { return e.Type == 0x05 || e.Type == 0x0f || e.Type == 0x85 }

// IsProtective reports the GPT protective type 0xEE.
func (e MBREntry) IsProtective() bool { return e.Type == 0xee }

// Protective reports a GPT protective (or hybrid) MBR: one with an 0xEE
// entry. The GPT then describes the disk.
func (m *MBR) Protective() bool {
	for _, e := range m.Entries {
		if !e.Empty() && e.IsProtective() {
			return true
		}
	}
	return false
}

const (
	mbrEntriesOff = 446
	mbrEntrySize  = 16
	mbrMagicOff   = 510
)

func parseEntry(b []byte) MBREntry {
	le := binary.LittleEndian
	return MBREntry{Status: b[0], Type: b[4], StartLBA: le.Uint32(b[8:]), Sectors: le.Uint32(b[12:])}
}

func entryOff(slot int) int64 { return mbrEntriesOff + int64(slot)*mbrEntrySize }

func hasMagic(sector []byte) bool {
	return len(sector) >= 512 && sector[mbrMagicOff] == 0x55 && sector[mbrMagicOff+1] == 0xaa
}

// ParseMBR parses sector 0 of a disk of diskSectors logical sectors (0 or
// less: unknown, entries are not checked against the disk's size).
//
// It returns an error wrapping ErrNoMBR when the sector holds no table,
// deciding as the Linux kernel's msdos.c does and a little more strictly:
// no 0x55AA at byte 510; a status byte other than 0x00 or 0x80; no used
// entry; or a filesystem boot sector (FAT, NTFS and exFAT also end in
// 0x55AA) whose entry bytes do not form a sensible table. A sector that
// is a table but whose entries overlap or run past the disk is a
// *block.CorruptError with the entry's byte offset. A protective MBR is
// returned unchecked: the GPT is the table then.
func ParseMBR(sector []byte, diskSectors int64) (*MBR, error) {
	if len(sector) < 512 {
		return nil, fmt.Errorf("%w: sector is %d bytes, need 512", ErrNoMBR, len(sector))
	}
	if !hasMagic(sector) {
		return nil, fmt.Errorf("%w: no 0x55AA signature at byte %d", ErrNoMBR, mbrMagicOff)
	}
	m := &MBR{DiskSignature: binary.LittleEndian.Uint32(sector[440:])}
	used := 0
	for i := range m.Entries {
		e := parseEntry(sector[entryOff(i):])
		if e.Status != 0x00 && e.Status != 0x80 {
			return nil, fmt.Errorf("%w: entry %d has status byte 0x%02x", ErrNoMBR, i+1, e.Status)
		}
		m.Entries[i] = e
		if !e.Empty() {
			used++
		}
	}
	if used == 0 {
		return nil, fmt.Errorf("%w: no partition entries", ErrNoMBR)
	}
	if m.Protective() {
		return m, nil
	}
	fs := bootSectorFS(sector)
	if err := m.check(diskSectors, fs != ""); err != nil {
		if fs != "" {
			return nil, fmt.Errorf("%w: %s boot sector (its entry bytes are not a table: %v)", ErrNoMBR, fs, err)
		}
		return nil, err
	}
	return m, nil
}

// check reports used entries that start past the disk or overlap each
// other. A partition that only ends past the disk is accepted, as the
// Linux kernel accepts it (a truncated disk image): the caller images the
// part that exists. strict (for a sector that looks like a filesystem
// boot sector) also rejects an entry that ends past the disk or starts at
// sector 0, over the boot sector itself; a real table does that only for
// an isohybrid image.
func (m *MBR) check(diskSectors int64, strict bool) error {
	for i, e := range m.Entries {
		if e.Empty() {
			continue
		}
		start, end := uint64(e.StartLBA), uint64(e.StartLBA)+uint64(e.Sectors)
		if strict && start == 0 {
			return corrupt("mbr", entryOff(i), "partition %d starts at sector 0", i+1)
		}
		if diskSectors > 0 && (start >= uint64(diskSectors) || strict && end > uint64(diskSectors)) {
			return corrupt("mbr", entryOff(i), "partition %d (sectors %d-%d) runs past the end of the %d-sector disk", i+1, start, end-1, diskSectors)
		}
		for j := 0; j < i; j++ {
			o := m.Entries[j]
			if o.Empty() {
				continue
			}
			ostart, oend := uint64(o.StartLBA), uint64(o.StartLBA)+uint64(o.Sectors)
			if start < oend && ostart < end {
				return corrupt("mbr", entryOff(i), "partition %d (sectors %d-%d) overlaps partition %d (sectors %d-%d)", i+1, start, end-1, j+1, ostart, oend-1)
			}
		}
	}
	return nil
}

// bootSectorFS names the filesystem whose boot sector this looks like, or
// "" if none.
func bootSectorFS(b []byte) string {
	switch {
	case string(b[3:11]) == "NTFS    ":
		return "NTFS"
	case string(b[3:11]) == "EXFAT   ":
		return "exFAT"
	case (b[0] == 0xeb && b[2] == 0x90) || b[0] == 0xe9:
		// FAT12/16 keep the type string at 54, FAT32 at 82.
		if string(b[54:57]) == "FAT" || string(b[82:85]) == "FAT" {
			return "FAT"
		}
	}
	return ""
}

// ParseEBR parses an extended boot record: its first entry is a logical
// partition (start relative to this EBR), its second the link to the next
// EBR (start relative to the extended partition), empty at the end of the
// chain. Entries 3 and 4 are unused. Damage is a *block.CorruptError with
// the offset within the sector.
func ParseEBR(sector []byte) (logical, next MBREntry, err error) {
	if !hasMagic(sector) {
		return MBREntry{}, MBREntry{}, corrupt("mbr", mbrMagicOff, "EBR has no 0x55AA signature")
	}
	logical, next = parseEntry(sector[entryOff(0):]), parseEntry(sector[entryOff(1):])
	if logical.Status != 0x00 && logical.Status != 0x80 {
		return MBREntry{}, MBREntry{}, corrupt("mbr", entryOff(0), "EBR entry has status byte 0x%02x", logical.Status)
	}
	if !logical.Empty() && logical.IsExtended() {
		return MBREntry{}, MBREntry{}, corrupt("mbr", entryOff(0), "EBR's logical partition has extended type 0x%02x", logical.Type)
	}
	if !next.Empty() && !next.IsExtended() {
		return MBREntry{}, MBREntry{}, corrupt("mbr", entryOff(1), "EBR link has type 0x%02x, not an extended type", next.Type)
	}
	return logical, next, nil
}

// maxLogicals bounds the EBR chain against loops and hostile disks.
const maxLogicals = 1024

func readMBR(r io.ReaderAt, size, ss int64, m *MBR, t *Table) error {
	t.Kind = "mbr"
	t.DiskID = fmt.Sprintf("0x%08x", m.DiskSignature)
	offs := map[int]int64{} // partition index → byte offset of its entry
	extSlot := -1
	for i, e := range m.Entries {
		if e.Empty() {
			continue
		}
		p := Partition{
			Index: i + 1, Start: int64(e.StartLBA) * ss, Size: int64(e.Sectors) * ss,
			Type: fmt.Sprintf("0x%02x", e.Type), Bootable: e.Status == 0x80,
		}
		// ParseMBR checked the entries in sectors; a sector size other
		// than 512 only makes them bigger. A data partition may end past
		// the disk (the caller warns and images what exists); the
		// extended container, whose EBRs are read, may not.
		if p.Start >= size || e.IsExtended() && p.End() > size {
			return corrupt("mbr", entryOff(i), "partition %d (bytes %d-%d) runs past the end of the %d-byte disk", p.Index, p.Start, p.End()-1, size)
		}
		if e.IsExtended() {
			if t.Extended != nil {
				return corrupt("mbr", entryOff(i), "second extended partition (%d; the first is %d)", p.Index, t.Extended.Index)
			}
			ext := p
			t.Extended = &ext
			extSlot = i
			continue
		}
		offs[p.Index] = entryOff(i)
		t.Partitions = append(t.Partitions, p)
	}
	if t.Extended != nil {
		if err := readLogicals(r, ss, entryOff(extSlot), t, offs); err != nil {
			return err
		}
	}
	if err := checkOverlap("mbr", t.Partitions, func(p Partition) int64 { return offs[p.Index] }); err != nil {
		return err
	}
	for _, s := range t.Structures {
		for _, p := range t.Partitions {
			if s.Off < p.End() && p.Start < s.End() {
				return corrupt("mbr", offs[p.Index], "logical partition %d (bytes %d-%d) covers the EBR at byte %d", p.Index, p.Start, p.End()-1, s.Off)
			}
		}
	}
	t.Structures = block.MergeExtents(append(t.Structures, block.Extent{Off: 0, Len: ss}))
	sortByIndex(t.Partitions)
	return nil
}

// readLogicals follows the EBR chain of t.Extended, whose entry is at
// byte extEntry of sector 0. Logicals are numbered 5, 6, ... in chain
// order; an EBR with an empty first entry takes no number.
func readLogicals(r io.ReaderAt, ss, extEntry int64, t *Table, offs map[int]int64) error {
	ext := *t.Extended
	sector := make([]byte, ss)
	seen := map[int64]bool{}
	ebr, from := ext.Start, extEntry // from: the entry that points at ebr
	index := 5
	for n := 0; ; n++ {
		if n >= maxLogicals {
			return corrupt("mbr", from, "EBR chain is longer than %d", maxLogicals)
		}
		if seen[ebr] {
			return corrupt("mbr", from, "EBR chain loops back to the EBR at disk byte %d", ebr)
		}
		seen[ebr] = true
		if err := readFull(r, sector, ebr); err != nil {
			return fmt.Errorf("read EBR: %w", err)
		}
		if n == 0 && !hasMagic(sector) {
			// Some tools leave a new extended partition without an EBR;
			// the kernel then sees no logicals either.
			if !allZero(sector) {
				t.Warnings = append(t.Warnings, fmt.Sprintf("extended partition %d has no EBR signature at byte %d; treating it as empty", ext.Index, ebr+mbrMagicOff))
			}
			return nil
		}
		logical, next, err := ParseEBR(sector)
		if err != nil {
			return rebase(err, ebr)
		}
		t.Structures = append(t.Structures, block.Extent{Off: ebr, Len: ss})
		if !logical.Empty() {
			p := Partition{
				Index: index, Start: ebr + int64(logical.StartLBA)*ss, Size: int64(logical.Sectors) * ss,
				Type: fmt.Sprintf("0x%02x", logical.Type), Bootable: logical.Status == 0x80,
			}
			if logical.StartLBA == 0 || p.End() > ext.End() {
				return corrupt("mbr", ebr+entryOff(0), "logical partition %d (bytes %d-%d) lies outside the space after its EBR in extended partition %d (bytes %d-%d)",
					p.Index, p.Start, p.End()-1, ext.Index, ext.Start, ext.End()-1)
			}
			offs[p.Index] = ebr + entryOff(0)
			t.Partitions = append(t.Partitions, p)
			index++
		}
		if next.Empty() {
			return nil
		}
		from = ebr + entryOff(1)
		ebr = ext.Start + int64(next.StartLBA)*ss
		if ebr+ss > ext.End() {
			return corrupt("mbr", from, "link to the next EBR (disk byte %d) points outside extended partition %d (bytes %d-%d)", ebr, ext.Index, ext.Start, ext.End()-1)
		}
	}
}
