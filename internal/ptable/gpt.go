package ptable

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
)

var gptSignature = []byte("EFI PART")

// maxEntryBytes bounds the GPT entry array a hostile header can ask for.
const maxEntryBytes = 1 << 20

// GPTHeader is a parsed GPT header.
type GPTHeader struct {
	MyLBA, AlternateLBA uint64
	FirstUsable         uint64
	LastUsable          uint64
	DiskGUID            string
	EntriesLBA          uint64
	NumEntries          uint32
	EntrySize           uint32
	EntriesCRC          uint32
}

// ParseGPTHeader parses and checks a GPT header sector: signature, size
// and header CRC.
func ParseGPTHeader(b []byte) (*GPTHeader, error) {
	if len(b) < 92 || string(b[:8]) != string(gptSignature) {
		return nil, fmt.Errorf("no GPT signature")
	}
	le := binary.LittleEndian
	hsize := le.Uint32(b[12:])
	if hsize < 92 || int(hsize) > len(b) {
		return nil, fmt.Errorf("header size %d is impossible", hsize)
	}
	hdr := make([]byte, hsize)
	copy(hdr, b[:hsize])
	clear(hdr[16:20])
	if crc32.ChecksumIEEE(hdr) != le.Uint32(b[16:]) {
		return nil, fmt.Errorf("header CRC mismatch")
	}
	h := &GPTHeader{
		MyLBA:        le.Uint64(b[24:]),
		AlternateLBA: le.Uint64(b[32:]),
		FirstUsable:  le.Uint64(b[40:]),
		LastUsable:   le.Uint64(b[48:]),
		DiskGUID:     GUID(b[56:72]),
		EntriesLBA:   le.Uint64(b[72:]),
		NumEntries:   le.Uint32(b[80:]),
		EntrySize:    le.Uint32(b[84:]),
		EntriesCRC:   le.Uint32(b[88:]),
	}
	if h.EntrySize < 128 || h.EntrySize%8 != 0 {
		return nil, fmt.Errorf("entry size %d is impossible", h.EntrySize)
	}
	if uint64(h.NumEntries)*uint64(h.EntrySize) > maxEntryBytes {
		return nil, fmt.Errorf("%d entries of %d bytes is more than %d bytes", h.NumEntries, h.EntrySize, maxEntryBytes)
	}
	if h.FirstUsable > h.LastUsable {
		return nil, fmt.Errorf("first usable LBA %d is after last usable LBA %d", h.FirstUsable, h.LastUsable)
	}
	return h, nil
}

// ParseGPTEntries checks the entry array's CRC against h and returns its
// used entries as partitions (sizes in bytes for sector size ss).
func ParseGPTEntries(h *GPTHeader, b []byte, ss int64) ([]Partition, error) {
	n := int(h.NumEntries) * int(h.EntrySize)
	if len(b) < n {
		return nil, fmt.Errorf("entry array is %d bytes, want %d", len(b), n)
	}
	if crc32.ChecksumIEEE(b[:n]) != h.EntriesCRC {
		return nil, fmt.Errorf("partition entries CRC mismatch")
	}
	le := binary.LittleEndian
	var out []Partition
	for i := 0; i < int(h.NumEntries); i++ {
		e := b[i*int(h.EntrySize):]
		if allZero(e[:16]) {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if last < first || first < h.FirstUsable || last > h.LastUsable {
			return nil, fmt.Errorf("entry %d spans LBA %d-%d, outside usable LBA %d-%d", i+1, first, last, h.FirstUsable, h.LastUsable)
		}
		out = append(out, Partition{
			Index: i + 1,
			Start: int64(first) * ss,
			Size:  int64(last-first+1) * ss,
			Type:  GUID(e[0:16]),
			GUID:  GUID(e[16:32]),
			Attrs: le.Uint64(e[48:]),
			Name:  utf16Name(e[56:128]),
		})
	}
	return out, nil
}

func readGPT(r io.ReaderAt, size, ss int64, t *Table) (*Table, error) {
	t.Kind = "gpt"
	lastLBA := size/ss - 1
	primary, perr := readGPTAt(r, size, ss, 1)
	var backupLBA uint64 = uint64(lastLBA)
	if primary.h != nil && primary.h.AlternateLBA > 1 && int64(primary.h.AlternateLBA) <= lastLBA {
		backupLBA = primary.h.AlternateLBA
	}
	backup, berr := readGPTAt(r, size, ss, backupLBA)
	switch {
	case perr == nil:
		t.DiskID, t.Partitions = primary.h.DiskGUID, primary.parts
		if berr != nil {
			t.Warnings = append(t.Warnings, fmt.Sprintf("backup GPT at byte %d is damaged (%v); the primary is fine", int64(backupLBA)*ss, berr))
		}
	case berr == nil:
		t.DiskID, t.Partitions = backup.h.DiskGUID, backup.parts
		t.Warnings = append(t.Warnings, fmt.Sprintf("primary GPT at byte %d is damaged (%v); using the backup GPT at byte %d", ss, perr, int64(backupLBA)*ss))
	default:
		return nil, corrupt("gpt", ss, "primary GPT damaged (%v) and backup GPT at byte %d damaged (%v)", perr, int64(backupLBA)*ss, berr)
	}
	// The backup GPT: from the end of the usable area to the end of the
	// disk (entries, then the header in the last sector).
	h := primary.h
	if perr != nil {
		h = backup.h
	}
	if back := int64(h.LastUsable+1) * ss; back > 0 && back < size {
		t.Structures = append(t.Structures, block.Extent{Off: back, Len: size - back})
	}
	for _, p := range t.Partitions {
		if p.End() > size {
			return nil, corrupt("gpt", ss, "partition %d ends at byte %d, past the end of the %d-byte disk", p.Index, p.End(), size)
		}
	}
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Index < t.Partitions[j].Index })
	return t, nil
}

type gptCopy struct {
	h     *GPTHeader
	parts []Partition
}

func readGPTAt(r io.ReaderAt, size, ss int64, lba uint64) (gptCopy, error) {
	off := int64(lba) * ss
	if lba == 0 || off < 0 || off+ss > size {
		return gptCopy{}, fmt.Errorf("header LBA %d is outside the disk", lba)
	}
	b := make([]byte, ss)
	if err := readFull(r, b, off); err != nil {
		return gptCopy{}, fmt.Errorf("read header: %w", err)
	}
	h, err := ParseGPTHeader(b)
	if err != nil {
		return gptCopy{}, err
	}
	if h.MyLBA != lba {
		return gptCopy{h: h}, fmt.Errorf("header says it is at LBA %d, found at LBA %d", h.MyLBA, lba)
	}
	n := int64(h.NumEntries) * int64(h.EntrySize)
	eoff := int64(h.EntriesLBA) * ss
	if h.EntriesLBA == 0 || eoff < 0 || eoff+n > size || eoff/ss != int64(h.EntriesLBA) {
		return gptCopy{h: h}, fmt.Errorf("entry array at LBA %d is outside the disk", h.EntriesLBA)
	}
	eb := make([]byte, n)
	if err := readFull(r, eb, eoff); err != nil {
		return gptCopy{h: h}, fmt.Errorf("read entries: %w", err)
	}
	parts, err := ParseGPTEntries(h, eb, ss)
	if err != nil {
		return gptCopy{h: h}, err
	}
	return gptCopy{h: h, parts: parts}, nil
}

// GUID formats a mixed-endian on-disk GUID in canonical upper-case form.
func GUID(b []byte) string {
	le := binary.LittleEndian
	return strings.ToUpper(fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16]))
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
