package ptable

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/platter-dev/platter/internal/block"
)

// Writing a table anew is for a restore onto a disk of another size or
// sector size: partitions move, and the table must say so in the target's
// sectors. What a Table does not hold (boot code, the GPT's entry count,
// where each EBR sat) comes from the original disk as an Original.

// Piece is whole sectors of the target disk and what they hold.
type Piece struct {
	Off  int64 // bytes from the start of the disk, a multiple of the sector size
	Data []byte
}

// LayoutError is a table that cannot be written as asked. Partition is
// the Index of the partition at fault (the extended container's for the
// container), 0 when the fault is the table's as a whole.
type LayoutError struct {
	Partition int
	Reason    string
}

func (e *LayoutError) Error() string {
	if e.Partition == 0 {
		return "ptable: cannot write the table: " + e.Reason
	}
	return fmt.Sprintf("ptable: cannot write partition %d: %s", e.Partition, e.Reason)
}

func refuse(index int, format string, args ...any) error {
	return &LayoutError{Partition: index, Reason: fmt.Sprintf(format, args...)}
}

// Original is what a rewritten table keeps from the disk it was read from
// beyond the Table itself. ReadOriginal fills it; the zero value (or nil)
// is a fresh table: no boot code, 128 GPT entries of 128 bytes, a plain
// protective MBR, each EBR in the sector before its logical partition.
type Original struct {
	// SectorSize is the sector size of the original disk; CHS is in its
	// sectors.
	SectorSize int64
	// Boot is sector 0 up to the partition entries: the boot code (bytes
	// 0-439), the disk signature (440-443) and bytes 444-445 (0x5A5A on a
	// copy-protected Windows disk). All are written back, except that an
	// MBR's signature is the Table's DiskID.
	Boot [446]byte
	// CHS holds the CHS fields (start head, sector, cylinder, then end)
	// of every entry the original's MBR and EBRs held, by the sectors the
	// entry described. An entry that describes the same sectors again
	// gets them back as the original tool wrote them; any other is
	// computed as sfdisk computes it.
	CHS map[LBARange][6]byte

	// GPT: the header's revision and size, the entry array's shape, and
	// the first usable byte (libfdisk puts it at 1 MiB; 0: as low as the
	// entries allow). The first usable sector stays there unless a
	// partition now starts lower.
	FirstUsable   int64
	GPTRevision   uint32
	GPTHeaderSize uint32
	NumEntries    uint32
	EntrySize     uint32
	// Hybrid is a GPT disk's sector 0 entries by slot; all zero means a
	// single protective entry in slot 1.
	Hybrid [4]HybridEntry

	// MBR: EBRGap is, by logical partition Index, the bytes from its EBR
	// to its start. LinkType is the type of the EBR links (0x05 unless
	// the original used another).
	EBRGap   map[int]int64
	LinkType byte
}

// LBARange is the first and last sector an MBR entry describes.
type LBARange struct{ First, Last uint64 }

// HybridEntry is one slot of a GPT disk's protective MBR.
type HybridEntry struct {
	Status byte // 0x80 active
	// Type is 0 for an empty slot, 0xEE for the protective entry, any
	// other for a hybrid entry mirroring GPT partition Partition (0: it
	// mirrored none, and cannot be written).
	Type      byte
	Partition int
}

const (
	gptRevision   = 0x00010000
	typeProtect   = 0xee
	typeExtended  = 0x05
	maxMBRSectors = math.MaxUint32
	// chsMax is the last sector a CHS address reaches with 255 heads and
	// 63 sectors a track: cylinder 1023, head 254, sector 63.
	chsMax = 1024*255*63 - 1
)

// ReadOriginal reads from r, the disk t was read from, what Layout keeps
// of it beyond t: boot code, CHS fields, the GPT header's shape and a
// hybrid MBR's entries, where each EBR sits before its logical
// partition. r may be an image's copy of the table sectors alone.
func ReadOriginal(r io.ReaderAt, t *Table) (*Original, error) {
	ss := t.SectorSize
	if err := checkSectorSize(ss); err != nil {
		return nil, err
	}
	o := &Original{SectorSize: ss, CHS: map[LBARange][6]byte{}}
	if t.Kind != "mbr" && t.Kind != "gpt" {
		return o, nil
	}
	lba0 := make([]byte, ss)
	if err := readFull(r, lba0, 0); err != nil {
		return nil, fmt.Errorf("ptable: read sector 0: %w", err)
	}
	copy(o.Boot[:], lba0)
	for slot := range 4 {
		e := parseEntry(lba0[entryOff(slot):])
		o.keepCHS(lba0[entryOff(slot):], uint64(e.StartLBA), e)
		if t.Kind != "gpt" || e.Empty() {
			continue
		}
		h := HybridEntry{Status: e.Status, Type: e.Type}
		if !e.IsProtective() {
			for _, p := range t.Partitions {
				if p.Start == int64(e.StartLBA)*ss && p.Size == int64(e.Sectors)*ss {
					h.Partition = p.Index
				}
			}
		}
		o.Hybrid[slot] = h
	}
	if t.Kind == "gpt" {
		return o, o.readGPTShape(r, t)
	}
	if t.Extended != nil {
		return o, o.readEBRs(r, t)
	}
	return o, nil
}

// keepCHS records the CHS fields of the 16-byte entry b, whose sectors
// begin at absolute LBA first.
func (o *Original) keepCHS(b []byte, first uint64, e MBREntry) {
	if e.Empty() || len(o.CHS) >= 4+2*maxLogicals {
		return
	}
	var c [6]byte
	copy(c[:3], b[1:4])
	copy(c[3:], b[5:8])
	o.CHS[LBARange{first, first + uint64(e.Sectors) - 1}] = c
}

// readGPTShape keeps the header fields of the primary GPT, or of the
// backup if the primary is damaged.
func (o *Original) readGPTShape(r io.ReaderAt, t *Table) error {
	ss := t.SectorSize
	b := make([]byte, ss)
	var errs []error
	for _, off := range []int64{ss, (t.DiskSize/ss - 1) * ss} {
		err := readFull(r, b, off)
		if err == nil {
			var h *GPTHeader
			if h, err = ParseGPTHeader(b); err == nil {
				o.GPTRevision, o.GPTHeaderSize = h.Revision, h.HeaderSize
				o.NumEntries, o.EntrySize = h.NumEntries, h.EntrySize
				o.FirstUsable = int64(h.FirstUsableLBA) * ss
				return nil
			}
			err = rebase(err, off)
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("ptable: neither GPT header is readable: %w", errors.Join(errs...))
}

// readEBRs follows the EBR chain as Read does, keeping each logical
// partition's distance from its EBR and every entry's CHS fields.
func (o *Original) readEBRs(r io.ReaderAt, t *Table) error {
	ss, ext := t.SectorSize, *t.Extended
	o.EBRGap = map[int]int64{}
	sector := make([]byte, ss)
	seen := map[int64]bool{}
	ebr, index := ext.Start, 5
	for n := 0; n < maxLogicals && !seen[ebr]; n++ {
		seen[ebr] = true
		if err := readFull(r, sector, ebr); err != nil {
			return fmt.Errorf("ptable: read EBR: %w", err)
		}
		if n == 0 && !hasMagic(sector) {
			return nil
		}
		logical, next, err := ParseEBR(sector)
		if err != nil {
			return fmt.Errorf("ptable: %w", rebase(err, ebr))
		}
		o.keepCHS(sector[entryOff(0):], uint64(ebr/ss)+uint64(logical.StartLBA), logical)
		o.keepCHS(sector[entryOff(1):], uint64(ext.Start/ss)+uint64(next.StartLBA), next)
		if !logical.Empty() {
			o.EBRGap[index] = int64(logical.StartLBA) * ss
			index++
		}
		if next.Empty() {
			return nil
		}
		if o.LinkType == 0 {
			o.LinkType = next.Type
		}
		ebr = ext.Start + int64(next.StartLBA)*ss
		if ebr+ss > ext.End() {
			return fmt.Errorf("ptable: %w", corrupt("mbr", ebr, "EBR link points outside extended partition %d", ext.Index))
		}
	}
	return nil
}

// withDefaults is a copy of o (nil: a fresh table) with every field a
// fresh table would have where o has none.
func (o *Original) withDefaults() Original {
	var c Original
	if o != nil {
		c = *o
	}
	if c.GPTRevision == 0 {
		c.GPTRevision = gptRevision
	}
	if c.GPTHeaderSize == 0 {
		c.GPTHeaderSize = gptMinHeader
	}
	if c.NumEntries == 0 && c.EntrySize == 0 {
		c.NumEntries, c.EntrySize = 128, 128
	}
	if c.LinkType == 0 {
		c.LinkType = typeExtended
	}
	if c.Hybrid == [4]HybridEntry{} {
		c.Hybrid[0] = HybridEntry{Type: typeProtect}
	}
	return c
}

// Clone returns a deep copy of t, for a caller to move partitions in.
func (t *Table) Clone() *Table {
	c := *t
	c.Partitions = slices.Clone(t.Partitions)
	if t.Extended != nil {
		e := *t.Extended
		c.Extended = &e
	}
	c.Structures = slices.Clone(t.Structures)
	c.Warnings = slices.Clone(t.Warnings)
	return &c
}

// WithSectorSize returns a copy of t for a disk of ss-byte logical
// sectors: the same partitions at the same bytes, to be written in
// sectors of ss. It refuses, with a *LayoutError, a partition or
// extended container whose start or size is not a multiple of ss. The
// copy has no Structures or Warnings: they were about the original disk.
func (t *Table) WithSectorSize(ss int64) (*Table, error) {
	if err := checkSectorSize(ss); err != nil {
		return nil, err
	}
	c := t.Clone()
	c.SectorSize, c.Structures, c.Warnings = ss, nil, nil
	parts := c.Partitions
	if c.Extended != nil {
		parts = append([]Partition{*c.Extended}, parts...)
	}
	for _, p := range parts {
		if p.Start%ss != 0 || p.Size%ss != 0 {
			return nil, refuse(p.Index, "bytes %d-%d are not whole %d-byte sectors", p.Start, p.End()-1, ss)
		}
	}
	return c, nil
}

// Write writes t as Layout lays it out to w, a disk of t.DiskSize bytes.
func (t *Table) Write(w io.WriterAt, orig *Original) error {
	pieces, err := t.Layout(orig)
	if err != nil {
		return err
	}
	for _, p := range pieces {
		if _, err := w.WriteAt(p.Data, p.Off); err != nil {
			return fmt.Errorf("ptable: write %d bytes of the partition table at byte %d: %w", len(p.Data), p.Off, err)
		}
	}
	return nil
}

// Layout returns the sectors that hold t on a disk of t.DiskSize bytes
// with t.SectorSize-byte sectors, sorted by offset, keeping from orig
// (nil: a fresh table) what the Table does not say.
//
// A GPT gets a protective MBR (orig's boot code; orig's hybrid entries
// moved with the partitions they mirror), both headers with the usable
// range recomputed for the disk's size and sector size, and both entry
// arrays: the primary at LBA 2, the backup and its header at the disk's
// end. An MBR gets sector 0 and, for logical partitions, one EBR each,
// the first at the extended container's start and each other as far
// before its partition as orig had it, as room allows; an empty extended
// container gets an empty EBR. A Table of Kind "none" is no pieces.
//
// A layout that cannot be written (partitions overlapping, outside the
// disk, not whole sectors, beyond what an MBR entry can address, names
// too long for a GPT entry, no room for an EBR) is a *LayoutError naming
// the partition.
func (t *Table) Layout(orig *Original) ([]Piece, error) {
	if err := checkSectorSize(t.SectorSize); err != nil {
		return nil, err
	}
	if t.Kind != "none" && t.DiskSize < t.SectorSize {
		return nil, refuse(0, "a %d-byte disk is smaller than a %d-byte sector", t.DiskSize, t.SectorSize)
	}
	o := orig.withDefaults()
	if o.SectorSize != t.SectorSize {
		o.CHS = nil // about other sectors
	}
	switch t.Kind {
	case "none":
		return nil, nil
	case "mbr":
		return t.layoutMBR(&o)
	case "gpt":
		return t.layoutGPT(&o)
	}
	return nil, refuse(0, "unknown table kind %q", t.Kind)
}

func checkSectorSize(ss int64) error {
	if ss < minSectorSize || ss > maxSectorSize || ss&(ss-1) != 0 {
		return refuse(0, "impossible sector size %d", ss)
	}
	return nil
}

// checkPlaced refuses a partition that is not whole sectors inside the
// disk, or that overlaps another.
func (t *Table) checkPlaced(parts []Partition) error {
	ss := t.SectorSize
	for _, p := range parts {
		switch {
		case p.Size <= 0:
			return refuse(p.Index, "size %d", p.Size)
		case p.Start < 0 || p.Start > t.DiskSize || p.Size > t.DiskSize-p.Start:
			return refuse(p.Index, "%d bytes from byte %d do not fit the %d-byte disk", p.Size, p.Start, t.DiskSize)
		case p.Start%ss != 0 || p.Size%ss != 0:
			return refuse(p.Index, "bytes %d-%d are not whole %d-byte sectors", p.Start, p.End()-1, ss)
		}
	}
	s := append([]Partition(nil), parts...)
	sort.Slice(s, func(i, j int) bool { return s[i].Start < s[j].Start })
	for i := 1; i < len(s); i++ {
		if s[i].Start < s[i-1].End() {
			return refuse(s[i].Index, "bytes %d-%d overlap partition %d (bytes %d-%d)", s[i].Start, s[i].End()-1, s[i-1].Index, s[i-1].Start, s[i-1].End()-1)
		}
	}
	return nil
}

// The GPT.

func (t *Table) layoutGPT(o *Original) ([]Piece, error) {
	ss := t.SectorSize
	switch {
	case o.EntrySize < 128 || o.EntrySize%128 != 0:
		return nil, refuse(0, "GPT entry size %d is not a multiple of 128", o.EntrySize)
	case uint64(o.NumEntries)*uint64(o.EntrySize) > maxEntryBytes:
		return nil, refuse(0, "%d GPT entries of %d bytes are more than %d bytes", o.NumEntries, o.EntrySize, maxEntryBytes)
	case o.GPTHeaderSize < gptMinHeader || int64(o.GPTHeaderSize) > ss:
		return nil, refuse(0, "GPT header size %d is outside %d-%d", o.GPTHeaderSize, gptMinHeader, ss)
	case o.GPTRevision>>16 != 1:
		return nil, refuse(0, "unknown GPT revision 0x%08x", o.GPTRevision)
	}
	if t.Extended != nil {
		return nil, refuse(t.Extended.Index, "a GPT has no extended partition")
	}
	diskGUID, ok := parseGUID(t.DiskID)
	if !ok {
		return nil, refuse(0, "disk GUID %q is not a GUID", t.DiskID)
	}
	entBytes := int64(o.NumEntries) * int64(o.EntrySize)
	entSectors := (entBytes + ss - 1) / ss
	sectors := t.DiskSize / ss
	// Sector 0, a header and entries at each end, and a usable sector.
	if sectors < 2*(1+entSectors)+2 {
		return nil, refuse(0, "a %d-byte disk is too small for a GPT of %d entries", t.DiskSize, o.NumEntries)
	}
	firstUsable, lastUsable := 2+entSectors, sectors-2-entSectors
	if o.FirstUsable > 0 {
		want := o.FirstUsable/ss + min(o.FirstUsable%ss, 1)
		for _, p := range t.Partitions {
			want = min(want, p.Start/ss)
		}
		if want <= lastUsable {
			firstUsable = max(firstUsable, want)
		}
	}
	if err := t.checkPlaced(t.Partitions); err != nil {
		return nil, err
	}
	entries := make([]byte, entSectors*ss)
	guids := map[[16]byte]int{}
	le := binary.LittleEndian
	for _, p := range t.Partitions {
		first, last := p.Start/ss, p.End()/ss-1
		switch {
		case p.Index < 1 || int64(p.Index) > int64(o.NumEntries):
			return nil, refuse(p.Index, "the GPT has entries 1-%d", o.NumEntries)
		case first < firstUsable || last > lastUsable:
			return nil, refuse(p.Index, "sectors %d-%d are outside the GPT's usable sectors %d-%d", first, last, firstUsable, lastUsable)
		case p.Bootable:
			return nil, refuse(p.Index, "the boot flag is an MBR field (a GPT has attribute bit 2)")
		}
		typ, ok := parseGUID(p.Type)
		if !ok || typ == [16]byte{} {
			return nil, refuse(p.Index, "type %q is not a GPT type GUID", p.Type)
		}
		id, ok := parseGUID(p.GUID)
		if !ok {
			return nil, refuse(p.Index, "partition GUID %q is not a GUID", p.GUID)
		}
		if q, dup := guids[id]; dup {
			return nil, refuse(p.Index, "partition GUID %s is also partition %d's", p.GUID, q)
		}
		guids[id] = p.Index
		name, err := encodeName(p.Name)
		if err != nil {
			return nil, refuse(p.Index, "%v", err)
		}
		e := entries[int64(p.Index-1)*int64(o.EntrySize):]
		if !allZero(e[:16]) {
			return nil, refuse(p.Index, "a second partition has this index")
		}
		copy(e[0:], typ[:])
		copy(e[16:], id[:])
		le.PutUint64(e[32:], uint64(first))
		le.PutUint64(e[40:], uint64(last))
		le.PutUint64(e[48:], p.Attrs)
		for i, u := range name {
			le.PutUint16(e[gptNameOff+2*i:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries[:entBytes])
	header := func(my, alt, entriesLBA int64) []byte {
		h := make([]byte, ss)
		copy(h, gptSignature)
		le.PutUint32(h[8:], o.GPTRevision)
		le.PutUint32(h[12:], o.GPTHeaderSize)
		le.PutUint64(h[24:], uint64(my))
		le.PutUint64(h[32:], uint64(alt))
		le.PutUint64(h[40:], uint64(firstUsable))
		le.PutUint64(h[48:], uint64(lastUsable))
		copy(h[56:72], diskGUID[:])
		le.PutUint64(h[72:], uint64(entriesLBA))
		le.PutUint32(h[80:], o.NumEntries)
		le.PutUint32(h[84:], o.EntrySize)
		le.PutUint32(h[88:], entriesCRC)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:o.GPTHeaderSize]))
		return h
	}
	pmbr, err := t.protectiveMBR(o)
	if err != nil {
		return nil, err
	}
	last := sectors - 1
	return []Piece{
		{Off: 0, Data: pmbr},
		{Off: ss, Data: header(1, last, 2)},
		{Off: 2 * ss, Data: entries},
		{Off: (last - entSectors) * ss, Data: append([]byte(nil), entries...)},
		{Off: last * ss, Data: header(last, 1, last-entSectors)},
	}, nil
}

// protectiveMBR is a GPT disk's sector 0: o's boot code and signature,
// and o's entries. The 0xEE entry covers the disk from LBA 1, or (in a
// hybrid MBR) up to the first partition the MBR mirrors, as gdisk makes
// it.
func (t *Table) protectiveMBR(o *Original) ([]byte, error) {
	ss := t.SectorSize
	b := make([]byte, ss)
	copy(b, o.Boot[:])
	b[mbrMagicOff], b[mbrMagicOff+1] = 0x55, 0xaa
	byIndex := map[int]Partition{}
	for _, p := range t.Partitions {
		byIndex[p.Index] = p
	}
	mirrorStart := int64(-1)
	for slot, h := range o.Hybrid {
		if h.Type == 0 || h.Type == typeProtect {
			continue
		}
		p, ok := byIndex[h.Partition]
		if !ok {
			return nil, refuse(0, "hybrid MBR entry %d (type 0x%02x) mirrors no GPT partition", slot+1, h.Type)
		}
		if err := mbrAddressable(p, ss, fmt.Sprintf("the hybrid MBR mirrors it in entry %d; ", slot+1)); err != nil {
			return nil, err
		}
		if mirrorStart < 0 || p.Start/ss < mirrorStart {
			mirrorStart = p.Start / ss
		}
	}
	for slot, h := range o.Hybrid {
		e := b[entryOff(slot):]
		switch h.Type {
		case 0:
		case typeProtect:
			n := uint64(min(t.DiskSize/ss-1, maxMBRSectors))
			whole := mirrorStart < 0
			if !whole {
				n = uint64(mirrorStart) - 1
			}
			o.putEntry(e, h.Status, h.Type, 1, 1, n, whole)
		default:
			p := byIndex[h.Partition]
			first := uint64(p.Start / ss)
			o.putEntry(e, h.Status, h.Type, first, first, uint64(p.Size/ss), false)
		}
	}
	return b, nil
}

// mbrAddressable refuses a partition an MBR entry cannot hold: the
// entry's start and size are 32-bit sector counts. why, if not "",
// begins the reason.
func mbrAddressable(p Partition, ss int64, why string) error {
	if p.Start/ss > maxMBRSectors {
		return refuse(p.Index, "%sit starts at sector %d, past the 2^32 sectors an MBR entry addresses", why, p.Start/ss)
	}
	if p.Size/ss > maxMBRSectors {
		return refuse(p.Index, "%sits %d sectors are more than an MBR entry's 2^32-1", why, p.Size/ss)
	}
	return nil
}

// putEntry writes a 16-byte MBR entry for the n sectors from absolute
// LBA first, stored as start (relative to the EBR or the extended
// container in an EBR). Its CHS fields are the original's for the same
// sectors, else sfdisk's: a 255-head, 63-sector geometry, addresses past
// cylinder 1023 clamped to its last sector, and, in a protective entry
// over the whole disk (protect), an end of 0xFFFFFF.
func (o *Original) putEntry(e []byte, status, typ byte, first, start, n uint64, protect bool) {
	e[0], e[4] = status, typ
	binary.LittleEndian.PutUint32(e[8:], uint32(start))
	binary.LittleEndian.PutUint32(e[12:], uint32(n))
	if c, ok := o.CHS[LBARange{first, first + n - 1}]; ok {
		copy(e[1:4], c[:3])
		copy(e[5:8], c[3:])
		return
	}
	copy(e[1:4], chs(first))
	if protect {
		copy(e[5:8], []byte{0xff, 0xff, 0xff})
	} else {
		copy(e[5:8], chs(first+n-1))
	}
}

// chs is the head, sector|cylinder-high, cylinder bytes of an LBA as
// libfdisk writes them.
func chs(lba uint64) []byte {
	lba = min(lba, chsMax)
	s := lba%63 + 1
	lba /= 63
	h, c := lba%255, lba/255
	return []byte{byte(h), byte(s) | byte(c>>2)&0xc0, byte(c)}
}

// parseGUID parses a canonical 8-4-4-4-12 GUID (either case) into its
// on-disk bytes: the first three fields little-endian.
func parseGUID(s string) ([16]byte, bool) {
	var g [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, false
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	if err != nil {
		return g, false
	}
	copy(g[:], raw)
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	return g, true
}

// encodeName is a GPT name in UTF-16, refused if it would not read back
// the same: too long, not UTF-8, or holding a NUL.
func encodeName(name string) ([]uint16, error) {
	const units = gptNameLen / 2
	// Every UTF-16 unit is at most 3 bytes of UTF-8: a longer name is
	// refused before it is converted.
	if len(name) > 3*units {
		return nil, fmt.Errorf("name is %d bytes, more than a GPT entry's %d UTF-16 units hold", len(name), units)
	}
	if !utf8.ValidString(name) || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("name %q is not UTF-8 without NULs", name)
	}
	u := utf16.Encode([]rune(name))
	if len(u) > units {
		return nil, fmt.Errorf("name %q is %d UTF-16 units, a GPT entry holds %d", name, len(u), units)
	}
	return u, nil
}

// The MBR.

func (t *Table) layoutMBR(o *Original) ([]Piece, error) {
	ss := t.SectorSize
	b := make([]byte, ss)
	copy(b, o.Boot[:])
	if t.DiskID != "" {
		sig, err := parseSignature(t.DiskID)
		if err != nil {
			return nil, refuse(0, "disk signature %q is not 0x and 8 hex digits", t.DiskID)
		}
		binary.LittleEndian.PutUint32(b[440:], sig)
	}
	b[mbrMagicOff], b[mbrMagicOff+1] = 0x55, 0xaa
	if err := t.checkPlaced(t.Partitions); err != nil {
		return nil, err
	}
	ext := t.Extended
	slots := map[int]int{} // slot → partition Index
	var logicals []Partition
	for _, p := range t.Partitions {
		typ, err := mbrTypeByte(p)
		if err != nil {
			return nil, err
		}
		switch {
		case p.GUID != "" || p.Name != "" || p.Attrs != 0:
			return nil, refuse(p.Index, "an MBR partition has no GUID, name or attributes")
		case typ == typeProtect:
			return nil, refuse(p.Index, "type 0xee would make the disk read as a GPT")
		case p.Start < ss:
			return nil, refuse(p.Index, "it starts in sector 0, the MBR")
		case p.Index < 1:
			return nil, refuse(p.Index, "MBR partitions are numbered from 1")
		}
		if err := mbrAddressable(p, ss, ""); err != nil {
			return nil, err
		}
		if p.Index > 4 {
			logicals = append(logicals, p)
			continue
		}
		if _, dup := slots[p.Index-1]; dup {
			return nil, refuse(p.Index, "a second partition has this index")
		}
		if ext != nil && ext.Index == p.Index {
			return nil, refuse(p.Index, "the extended partition also has entry %d", p.Index)
		}
		if ext != nil && p.Start < ext.End() && ext.Start < p.End() {
			return nil, refuse(p.Index, "bytes %d-%d overlap extended partition %d (bytes %d-%d)", p.Start, p.End()-1, ext.Index, ext.Start, ext.End()-1)
		}
		slots[p.Index-1] = p.Index
		o.putEntry(b[entryOff(p.Index-1):], status(p), typ, uint64(p.Start/ss), uint64(p.Start/ss), uint64(p.Size/ss), false)
	}
	pieces := []Piece{{Off: 0, Data: b}}
	if ext == nil {
		if len(logicals) > 0 {
			return nil, refuse(logicals[0].Index, "a logical partition needs an extended partition")
		}
		return pieces, nil
	}
	typ, err := mbrTypeByte(*ext)
	switch {
	case err != nil:
		return nil, err
	case !(MBREntry{Type: typ, Sectors: 1}).IsExtended():
		return nil, refuse(ext.Index, "extended partition has type 0x%02x, not 0x05, 0x0f or 0x85", typ)
	case ext.Index < 1 || ext.Index > 4:
		return nil, refuse(ext.Index, "the extended partition must be in entry 1-4")
	case ext.Start < ss:
		return nil, refuse(ext.Index, "it starts in sector 0, the MBR")
	}
	if err := t.checkPlaced([]Partition{*ext}); err != nil {
		return nil, err
	}
	if err := mbrAddressable(*ext, ss, ""); err != nil {
		return nil, err
	}
	o.putEntry(b[entryOff(ext.Index-1):], status(*ext), typ, uint64(ext.Start/ss), uint64(ext.Start/ss), uint64(ext.Size/ss), false)
	ebrs, err := t.placeEBRs(o, logicals)
	if err != nil {
		return nil, err
	}
	if len(logicals) == 0 {
		// An empty container gets an empty EBR, as sfdisk writes it: no
		// stale EBR on the target is taken for logical partitions.
		e := make([]byte, ss)
		e[mbrMagicOff], e[mbrMagicOff+1] = 0x55, 0xaa
		return append(pieces, Piece{Off: ext.Start, Data: e}), nil
	}
	for i, l := range logicals {
		e := make([]byte, ss)
		e[mbrMagicOff], e[mbrMagicOff+1] = 0x55, 0xaa
		typ, _ := mbrTypeByte(l)
		o.putEntry(e[entryOff(0):], status(l), typ, uint64(l.Start/ss), uint64((l.Start-ebrs[i])/ss), uint64(l.Size/ss), false)
		if i+1 < len(logicals) {
			next, nextEBR := logicals[i+1], ebrs[i+1]
			o.putEntry(e[entryOff(1):], 0, o.LinkType, uint64(nextEBR/ss), uint64((nextEBR-ext.Start)/ss), uint64((next.End()-nextEBR)/ss), false)
		}
		pieces = append(pieces, Piece{Off: ebrs[i], Data: e})
	}
	sort.Slice(pieces, func(i, j int) bool { return pieces[i].Off < pieces[j].Off })
	return pieces, nil
}

// placeEBRs checks the logical partitions (sorted by Index, numbered 5,
// 6, ... without a gap, inside the extended container) and returns the
// byte offset of each one's EBR: the first at the container's start,
// each other o.EBRGap before its partition (one sector if o has none),
// or lower in the free space below the partition when that is too
// little room.
func (t *Table) placeEBRs(o *Original, logicals []Partition) ([]int64, error) {
	ss, ext := t.SectorSize, *t.Extended
	if len(logicals) > maxLogicals {
		return nil, refuse(logicals[maxLogicals].Index, "more than %d logical partitions", maxLogicals)
	}
	sort.Slice(logicals, func(i, j int) bool { return logicals[i].Index < logicals[j].Index })
	taken := make([]block.Extent, 0, 2*len(logicals))
	for i, l := range logicals {
		if l.Index != 5+i {
			return nil, refuse(l.Index, "logical partitions are numbered 5, 6, ... in chain order; %d comes after %d", l.Index, 4+i)
		}
		if l.Start < ext.Start || l.End() > ext.End() {
			return nil, refuse(l.Index, "bytes %d-%d are outside extended partition %d (bytes %d-%d)", l.Start, l.End()-1, ext.Index, ext.Start, ext.End()-1)
		}
		taken = append(taken, block.Extent{Off: l.Start, Len: l.Size})
	}
	ebrs := make([]int64, len(logicals))
	for i, l := range logicals {
		ebr := ext.Start
		if i > 0 {
			gap := ss
			if g, ok := o.EBRGap[l.Index]; ok && g > 0 {
				gap = (min(g, ext.Size) + ss - 1) / ss * ss
			}
			// The free space right below the partition starts at the
			// highest end of what lies below it.
			free := ext.Start
			for _, e := range taken {
				if e.End() <= l.Start {
					free = max(free, e.End())
				}
			}
			ebr = max(l.Start-gap, free)
		}
		if ebr+ss > l.Start {
			return nil, refuse(l.Index, "no free sector for its EBR between byte %d and its start at byte %d", ebr, l.Start)
		}
		for _, q := range logicals {
			if ebr < q.End() && q.Start < ebr+ss {
				return nil, refuse(l.Index, "its EBR at byte %d would lie in partition %d", ebr, q.Index)
			}
		}
		ebrs[i] = ebr
		taken = append(taken, block.Extent{Off: ebr, Len: ss})
	}
	return ebrs, nil
}

func status(p Partition) byte {
	if p.Bootable {
		return 0x80
	}
	return 0
}

// mbrTypeByte parses an MBR type written "0x83".
func mbrTypeByte(p Partition) (byte, error) {
	s, ok := strings.CutPrefix(p.Type, "0x")
	v, err := strconv.ParseUint(s, 16, 8)
	if !ok || err != nil || len(s) != 2 || v == 0 {
		return 0, refuse(p.Index, "type %q is not an MBR type byte 0x01-0xff", p.Type)
	}
	return byte(v), nil
}

// parseSignature parses an MBR disk signature written "0x1234abcd".
func parseSignature(s string) (uint32, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || len(h) != 8 {
		return 0, errors.New("not 0x and 8 hex digits")
	}
	v, err := strconv.ParseUint(h, 16, 32)
	return uint32(v), err
}
