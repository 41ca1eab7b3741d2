package ptable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
)

var gptSignature = []byte("EFI PART")

const (
	// maxEntryBytes bounds the entry array a hostile header can ask for;
	// real tables use 16 KiB (128 entries of 128 bytes).
	maxEntryBytes = 1 << 20
	gptMinHeader  = 92
	gptNameOff    = 56
	gptNameLen    = 72 // 36 UTF-16 code units
)

// GPTHeader is a parsed GPT header. LBAs are in logical sectors.
type GPTHeader struct {
	Revision       uint32
	HeaderSize     uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       string
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

// EntriesLen is the length in bytes of the partition entry array. After
// ParseGPTHeader it is at most 1 MiB.
func (h *GPTHeader) EntriesLen() int64 {
	// Two uint32s multiply without overflow in a uint64, not an int64.
	return int64(min(uint64(h.NumEntries)*uint64(h.EntrySize), math.MaxInt64))
}

// ParseGPTHeader parses and checks a GPT header. sector is one whole
// logical sector; its length is the sector size the LBAs are in. It checks
// the signature, revision 1.x, the header size (92 up to the sector size),
// the header CRC32, the entry size (a multiple of 128) and count (at most
// 1 MiB of entries), and that the header, the entry array and the usable
// range lie apart and can be turned into int64 byte offsets. Damage is a
// *block.CorruptError with the offset within sector.
func ParseGPTHeader(sector []byte) (*GPTHeader, error) {
	if len(sector) < 512 {
		return nil, corrupt("gpt", 0, "header sector is %d bytes, need at least 512", len(sector))
	}
	if !bytes.Equal(sector[:8], gptSignature) {
		return nil, corrupt("gpt", 0, "no \"EFI PART\" header signature")
	}
	le := binary.LittleEndian
	h := &GPTHeader{
		Revision:       le.Uint32(sector[8:]),
		HeaderSize:     le.Uint32(sector[12:]),
		MyLBA:          le.Uint64(sector[24:]),
		AlternateLBA:   le.Uint64(sector[32:]),
		FirstUsableLBA: le.Uint64(sector[40:]),
		LastUsableLBA:  le.Uint64(sector[48:]),
		DiskGUID:       GUID(sector[56:72]),
		EntriesLBA:     le.Uint64(sector[72:]),
		NumEntries:     le.Uint32(sector[80:]),
		EntrySize:      le.Uint32(sector[84:]),
		EntriesCRC:     le.Uint32(sector[88:]),
	}
	if h.Revision>>16 != 1 {
		return nil, corrupt("gpt", 8, "unknown header revision 0x%08x", h.Revision)
	}
	if h.HeaderSize < gptMinHeader || int64(h.HeaderSize) > int64(len(sector)) {
		return nil, corrupt("gpt", 12, "header size %d is outside %d-%d", h.HeaderSize, gptMinHeader, len(sector))
	}
	hdr := bytes.Clone(sector[:h.HeaderSize])
	clear(hdr[16:20])
	if got, want := crc32.ChecksumIEEE(hdr), le.Uint32(sector[16:]); got != want {
		return nil, corrupt("gpt", 0, "header CRC mismatch (stored 0x%08x, computed 0x%08x)", want, got)
	}
	if h.EntrySize < 128 || h.EntrySize%128 != 0 {
		return nil, corrupt("gpt", 84, "entry size %d is not a multiple of 128", h.EntrySize)
	}
	if h.EntriesLen() > maxEntryBytes {
		return nil, corrupt("gpt", 80, "%d entries of %d bytes is more than %d bytes", h.NumEntries, h.EntrySize, maxEntryBytes)
	}
	ss := uint64(len(sector))
	maxLBA := uint64(math.MaxInt64) / ss // so every LBA*ss fits an int64
	entrySectors := (uint64(h.EntriesLen()) + ss - 1) / ss
	switch {
	case h.MyLBA == 0 || h.MyLBA >= maxLBA:
		return nil, corrupt("gpt", 24, "header LBA %d is impossible", h.MyLBA)
	case h.FirstUsableLBA == 0 || h.FirstUsableLBA > h.LastUsableLBA || h.LastUsableLBA >= maxLBA:
		return nil, corrupt("gpt", 40, "usable range LBA %d-%d is impossible", h.FirstUsableLBA, h.LastUsableLBA)
	case h.EntriesLBA == 0 || h.EntriesLBA >= maxLBA-entrySectors:
		return nil, corrupt("gpt", 72, "entry array LBA %d is impossible", h.EntriesLBA)
	case h.MyLBA >= h.FirstUsableLBA && h.MyLBA <= h.LastUsableLBA:
		return nil, corrupt("gpt", 24, "header LBA %d lies in the usable range LBA %d-%d", h.MyLBA, h.FirstUsableLBA, h.LastUsableLBA)
	case entrySectors > 0 && h.EntriesLBA <= h.LastUsableLBA && h.EntriesLBA+entrySectors > h.FirstUsableLBA:
		return nil, corrupt("gpt", 72, "entry array (LBA %d, %d sectors) overlaps the usable range LBA %d-%d", h.EntriesLBA, entrySectors, h.FirstUsableLBA, h.LastUsableLBA)
	case h.MyLBA >= h.EntriesLBA && h.MyLBA < h.EntriesLBA+entrySectors:
		return nil, corrupt("gpt", 72, "entry array (LBA %d, %d sectors) overlaps the header at LBA %d", h.EntriesLBA, entrySectors, h.MyLBA)
	}
	return h, nil
}

// ParseGPTEntries checks the entry array b (at least h.EntriesLen()
// bytes) against h's CRC32 and returns the used entries (type GUID not
// zero) as partitions in bytes for sectorSize, numbered by slot + 1.
// Entries must lie in h's usable range and not overlap. Damage is a
// *block.CorruptError with the offset within b.
func ParseGPTEntries(h *GPTHeader, b []byte, sectorSize int64) ([]Partition, error) {
	n := h.EntriesLen()
	if h.EntrySize < 128 || n > maxEntryBytes {
		return nil, corrupt("gpt", 0, "entry array of %d entries of %d bytes is impossible", h.NumEntries, h.EntrySize)
	}
	if int64(len(b)) < n {
		return nil, corrupt("gpt", int64(len(b)), "entry array is %d bytes, need %d", len(b), n)
	}
	if sectorSize <= 0 || h.LastUsableLBA >= uint64(math.MaxInt64/sectorSize) {
		return nil, corrupt("gpt", 0, "usable range up to LBA %d does not fit %d-byte sectors", h.LastUsableLBA, sectorSize)
	}
	if got := crc32.ChecksumIEEE(b[:n]); got != h.EntriesCRC {
		return nil, corrupt("gpt", 0, "partition entries CRC mismatch (header says 0x%08x, computed 0x%08x)", h.EntriesCRC, got)
	}
	le := binary.LittleEndian
	var out []Partition
	for i := int64(0); i < int64(h.NumEntries); i++ {
		off := i * int64(h.EntrySize)
		e := b[off : off+int64(h.EntrySize)]
		if allZero(e[:16]) {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if first > last || first < h.FirstUsableLBA || last > h.LastUsableLBA {
			return nil, corrupt("gpt", off+32, "entry %d spans LBA %d-%d, outside the usable range LBA %d-%d", i+1, first, last, h.FirstUsableLBA, h.LastUsableLBA)
		}
		out = append(out, Partition{
			Index: int(i) + 1,
			Start: int64(first) * sectorSize,
			Size:  int64(last-first+1) * sectorSize,
			Type:  GUID(e[0:16]),
			GUID:  GUID(e[16:32]),
			Attrs: le.Uint64(e[48:]),
			Name:  utf16Name(e[gptNameOff : gptNameOff+gptNameLen]),
		})
	}
	err := checkOverlap("gpt", out, func(p Partition) int64 { return int64(p.Index-1) * int64(h.EntrySize) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// gptCopy is one of the two copies of a GPT as found on the disk.
type gptCopy struct {
	hdrOff int64      // byte offset of the header
	h      *GPTHeader // nil if the header is unreadable
	hdrOK  bool       // the header fits the disk; any damage is in the entries
	parts  []Partition
}

func readGPT(r io.ReaderAt, size, ss int64, t *Table) error {
	t.Kind = "gpt"
	lastLBA := uint64(size/ss - 1)
	pri, perr := readGPTCopy(r, size, ss, 1, ss)
	// The backup is where the primary says, else in the last sector.
	backupLBA, from := lastLBA, int64(lastLBA)*ss
	if pri.h != nil && pri.h.AlternateLBA != 1 {
		backupLBA, from = pri.h.AlternateLBA, pri.hdrOff+32
	}
	bak, berr := readGPTCopy(r, size, ss, backupLBA, from)
	use := pri
	switch {
	case perr == nil && berr == nil:
		if d := differences(pri.h, bak.h); d != "" {
			t.Warnings = append(t.Warnings, fmt.Sprintf("the backup GPT at byte %d differs from the primary (%s); using the primary", bak.hdrOff, d))
		}
	case perr == nil:
		t.Warnings = append(t.Warnings, fmt.Sprintf("backup GPT is damaged (%v); the primary GPT at byte %d is fine", berr, pri.hdrOff))
	case berr == nil:
		what := "header is"
		if pri.hdrOK {
			what = "partition entries are"
		}
		t.Warnings = append(t.Warnings, fmt.Sprintf("primary GPT %s damaged (%v); using the backup GPT at byte %d", what, perr, bak.hdrOff))
		use = bak
	default:
		// Both %w: the caller sees a *block.CorruptError if either copy
		// is damaged rather than unreadable.
		return fmt.Errorf("primary GPT: %w; backup GPT: %w", perr, berr)
	}
	t.DiskID = use.h.DiskGUID
	t.Partitions = use.parts
	sortByIndex(t.Partitions)
	t.Structures = append(t.Structures, block.Extent{Off: 0, Len: ss})
	for _, c := range []gptCopy{pri, bak} {
		if c.hdrOff > 0 && c.hdrOff+ss <= size {
			t.Structures = append(t.Structures, block.Extent{Off: c.hdrOff, Len: ss})
		}
		if c.h != nil {
			off, n := int64(c.h.EntriesLBA)*ss, c.h.EntriesLen()
			n = (n + ss - 1) / ss * ss
			if n > 0 && off+n <= size {
				t.Structures = append(t.Structures, block.Extent{Off: off, Len: n})
			}
		}
	}
	return nil
}

// readGPTCopy reads and checks the GPT whose header is at lba; from is
// the byte offset of what pointed there. The returned copy has the header
// when it parsed, even if its entries are damaged, so that its alternate
// LBA can still point at the backup.
func readGPTCopy(r io.ReaderAt, size, ss int64, lba uint64, from int64) (gptCopy, error) {
	sectors := uint64(size / ss)
	if lba == 0 || lba >= sectors {
		return gptCopy{}, corrupt("gpt", from, "header LBA %d is outside the %d-sector disk", lba, sectors)
	}
	off := int64(lba) * ss
	c := gptCopy{hdrOff: off}
	b := make([]byte, ss)
	if err := readFull(r, b, off); err != nil {
		return c, fmt.Errorf("read GPT header: %w", err)
	}
	h, err := ParseGPTHeader(b)
	if err != nil {
		return c, rebase(err, off)
	}
	if h.MyLBA != lba {
		return c, corrupt("gpt", off+24, "header says it is at LBA %d, found at LBA %d", h.MyLBA, lba)
	}
	c.h = h
	if h.LastUsableLBA >= sectors {
		return c, corrupt("gpt", off+48, "last usable LBA %d is past the end of the %d-sector disk", h.LastUsableLBA, sectors)
	}
	eoff, n := int64(h.EntriesLBA)*ss, h.EntriesLen()
	if eoff+n > size {
		return c, corrupt("gpt", off+72, "entry array (bytes %d-%d) runs past the end of the %d-byte disk", eoff, eoff+n-1, size)
	}
	c.hdrOK = true
	eb := make([]byte, n)
	if err := readFull(r, eb, eoff); err != nil {
		return c, fmt.Errorf("read GPT entries: %w", err)
	}
	parts, err := ParseGPTEntries(h, eb, ss)
	if err != nil {
		return c, rebase(err, eoff)
	}
	c.parts = parts
	return c, nil
}

// differences lists what a backup header says differently from the
// primary, "" if they agree.
func differences(p, b *GPTHeader) string {
	var d []string
	if p.DiskGUID != b.DiskGUID {
		d = append(d, fmt.Sprintf("disk GUID %s, backup %s", p.DiskGUID, b.DiskGUID))
	}
	if p.FirstUsableLBA != b.FirstUsableLBA || p.LastUsableLBA != b.LastUsableLBA {
		d = append(d, fmt.Sprintf("usable LBA %d-%d, backup %d-%d", p.FirstUsableLBA, p.LastUsableLBA, b.FirstUsableLBA, b.LastUsableLBA))
	}
	if p.NumEntries != b.NumEntries || p.EntrySize != b.EntrySize || p.EntriesCRC != b.EntriesCRC {
		d = append(d, "partition entries differ")
	}
	if b.AlternateLBA != p.MyLBA {
		d = append(d, fmt.Sprintf("backup's alternate LBA is %d", b.AlternateLBA))
	}
	return strings.Join(d, "; ")
}

// GUID formats a 16-byte on-disk GUID in canonical upper-case form. The
// first three fields are little-endian, the last two big-endian.
func GUID(b []byte) string {
	if len(b) < 16 {
		return ""
	}
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16Name decodes a NUL-terminated UTF-16LE name.
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
