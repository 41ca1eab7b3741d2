package ptable

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

// MBR is a parsed master (or extended) boot record.
type MBR struct {
	Signature uint32 // disk signature at byte 440
	Entries   [4]MBREntry
}

// MBREntry is one of the four partition entries of an MBR or EBR.
type MBREntry struct {
	Status   byte
	Type     byte
	StartLBA uint32
	Sectors  uint32
}

// Empty reports an unused slot.
func (e MBREntry) Empty() bool { return e.Type == 0 || e.Sectors == 0 }

// Extended reports an extended-partition container type.
func (e MBREntry) Extended() bool { return e.Type == 0x05 || e.Type == 0x0f || e.Type == 0x85 }

// Protective reports a GPT protective MBR (an 0xEE entry).
func (m *MBR) Protective() bool {
	for _, e := range m.Entries {
		if e.Type == 0xee {
			return true
		}
	}
	return false
}

// ParseMBR parses sector 0 (at least 512 bytes). ok is false when the
// sector holds no partition table: no 0x55AA signature, a status byte
// other than 0x00/0x80 (the test the Linux kernel uses), or a filesystem
// boot sector (FAT, NTFS, exFAT also end in 0x55AA) with no plausible
// table.
func ParseMBR(b []byte) (m *MBR, ok bool) {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xaa {
		return nil, false
	}
	m = &MBR{Signature: binary.LittleEndian.Uint32(b[440:])}
	used := 0
	for i := range m.Entries {
		e := b[446+16*i:]
		m.Entries[i] = MBREntry{Status: e[0], Type: e[4], StartLBA: binary.LittleEndian.Uint32(e[8:]), Sectors: binary.LittleEndian.Uint32(e[12:])}
		if e[0] != 0 && e[0] != 0x80 {
			return nil, false
		}
		if !m.Entries[i].Empty() {
			used++
		}
	}
	if used == 0 {
		return nil, false
	}
	if looksLikeBootSector(b) {
		// A FAT or NTFS boot sector keeps code where the table would be.
		// Accept it as an MBR only if the entries are sane and none starts
		// at sector 0 (which would be the boot sector itself).
		for _, e := range m.Entries {
			if !e.Empty() && (e.StartLBA == 0 || e.Protective()) {
				return nil, false
			}
		}
		if !m.Protective() && overlap(m) {
			return nil, false
		}
	}
	return m, true
}

func (e MBREntry) Protective() bool { return e.Type == 0xee }

func looksLikeBootSector(b []byte) bool {
	switch {
	case string(b[3:11]) == "NTFS    ", string(b[3:11]) == "EXFAT   ":
		return true
	case (b[0] == 0xeb && b[2] == 0x90) || b[0] == 0xe9:
		return string(b[54:57]) == "FAT" || string(b[82:87]) == "FAT32"
	}
	return false
}

func overlap(m *MBR) bool {
	type span struct{ s, e uint64 }
	var sp []span
	for _, e := range m.Entries {
		if !e.Empty() {
			sp = append(sp, span{uint64(e.StartLBA), uint64(e.StartLBA) + uint64(e.Sectors)})
		}
	}
	sort.Slice(sp, func(i, j int) bool { return sp[i].s < sp[j].s })
	for i := 1; i < len(sp); i++ {
		if sp[i].s < sp[i-1].e {
			return true
		}
	}
	return false
}

// maxLogicals bounds the EBR chain against loops and hostile disks.
const maxLogicals = 1024

func readMBR(r io.ReaderAt, size, ss int64, m *MBR, t *Table) error {
	for i, e := range m.Entries {
		if e.Empty() {
			continue
		}
		p := Partition{Index: i + 1, Start: int64(e.StartLBA) * ss, Size: int64(e.Sectors) * ss,
			Type: fmt.Sprintf("0x%02x", e.Type), Bootable: e.Status == 0x80}
		if p.Start >= size {
			return corrupt("mbr", 446+16*int64(i), "partition %d starts at byte %d, past the end of the %d-byte disk", p.Index, p.Start, size)
		}
		if e.Extended() {
			if t.Extended != nil {
				return corrupt("mbr", 446+16*int64(i), "second extended partition (%d)", p.Index)
			}
			ext := p
			t.Extended = &ext
			continue
		}
		t.Partitions = append(t.Partitions, p)
	}
	if t.Extended != nil {
		if err := readLogicals(r, size, ss, t); err != nil {
			return err
		}
	}
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Index < t.Partitions[j].Index })
	return nil
}

// readLogicals follows the EBR chain: each EBR's first entry is a logical
// partition relative to the EBR, its second the next EBR relative to the
// start of the extended partition.
func readLogicals(r io.ReaderAt, size, ss int64, t *Table) error {
	ext := t.Extended
	sector := make([]byte, ss)
	seen := map[int64]bool{}
	ebr := ext.Start
	for n := 0; ; n++ {
		if n >= maxLogicals {
			return corrupt("mbr", ebr, "EBR chain longer than %d", maxLogicals)
		}
		if seen[ebr] {
			return corrupt("mbr", ebr, "EBR chain loops back")
		}
		seen[ebr] = true
		if ebr < ext.Start || ebr+ss > min(ext.End(), size) {
			return corrupt("mbr", ebr, "EBR lies outside the extended partition")
		}
		if err := readFull(r, sector, ebr); err != nil {
			return fmt.Errorf("ptable: read EBR at byte %d: %w", ebr, err)
		}
		if sector[510] != 0x55 || sector[511] != 0xaa {
			if n == 0 {
				return nil // an empty extended partition
			}
			return corrupt("mbr", ebr+510, "EBR has no 0x55AA signature")
		}
		t.Structures = append(t.Structures, block.Extent{Off: ebr, Len: ss})
		le := binary.LittleEndian
		e1 := MBREntry{Status: sector[446], Type: sector[450], StartLBA: le.Uint32(sector[454:]), Sectors: le.Uint32(sector[458:])}
		e2 := MBREntry{Type: sector[466], StartLBA: le.Uint32(sector[470:]), Sectors: le.Uint32(sector[474:])}
		if !e1.Empty() {
			p := Partition{Index: 5 + len(t.Partitions) - countPrimaries(t), Start: ebr + int64(e1.StartLBA)*ss,
				Size: int64(e1.Sectors) * ss, Type: fmt.Sprintf("0x%02x", e1.Type), Bootable: e1.Status == 0x80}
			if p.Start >= size || p.End() > ext.End() {
				return corrupt("mbr", ebr+446, "logical partition %d (bytes %d-%d) lies outside the extended partition", p.Index, p.Start, p.End())
			}
			t.Partitions = append(t.Partitions, p)
		}
		if e2.Empty() || !e2.Extended() {
			return nil
		}
		ebr = ext.Start + int64(e2.StartLBA)*ss
	}
}

func countPrimaries(t *Table) int {
	n := 0
	for _, p := range t.Partitions {
		if p.Index <= 4 {
			n++
		}
	}
	return n
}
