// Package lvm reads an LVM2 physical volume (Container describes it to
// the registry, internal/fsmap): its label, its metadata areas and the
// volume group's metadata text in them, and from those the place of
// every logical volume's extents on the PV. Detect answers with one map
// over the PV: its own headers and metadata areas, byte for byte, plus,
// for each LV, the used blocks of the filesystem inside it (found by the
// detector it is given) where they lie on the PV. An LV whose blocks
// cannot be followed that way (thin pools, snapshots, caches, an LV on
// other PVs too, an LV with no filesystem Platter knows) counts whole;
// free extents hold nothing. The volumes found inside an LV (a LUKS
// payload) are listed under its name, and an LV whose map asks for its
// free blocks to be restored random (an opened LUKS volume) makes the
// whole PV's map ask for it.
//
// The on-disk layout (LVM2's lib/format_text/layout.h, lib/label):
//
//	label, in one of the first 4 512-byte sectors:
//	  0  "LABELONE"   8  sector of the label   16 CRC of bytes 20-511
//	  20 offset of the PV header (32)          24 "LVM2 001"
//	PV header: 32-byte UUID, device size, then lists of (offset, size)
//	  pairs ending with a zero pair: data areas, metadata areas, and
//	  (extension version >= 1) boot loader areas
//	metadata area header (512 bytes at each metadata area's start):
//	  0 CRC of bytes 4-511   4 magic " LVM2 x[5A%r0N*>"   20 version (1)
//	  24 the area's start    32 its size
//	  40 raw locations (offset in the area, size, CRC, flags): the
//	     first is the committed metadata text, in a ring after the header
//
// Every CRC is LVM's: CRC-32 (IEEE) from 0xf597a6cf without the final
// inversion.
package lvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

const (
	labelScan     = 4 // sectors LVM looks for its label in
	labelID       = "LABELONE"
	labelType     = "LVM2 001"
	mdaMagic      = " LVM2 x[5A%r0N*>"
	mdaHeaderSize = 512
	crcInit       = 0xf597a6cf
	locnIgnored   = 1 // RAW_LOCN_IGNORED: a metadata area not kept up to date

	// keepFirst is kept at the start of every PV whatever pe_start says:
	// the label, the first metadata area and what boot loaders put there.
	keepFirst = 1 << 20
)

// Inner finds the filesystem in a volume and its used blocks: nil, nil
// when there is none it knows, an error when it is damaged.
type Inner func(r io.ReaderAt, size int64) (*block.Usage, error)

func lvmCRC(crc uint32, b []byte) uint32 {
	return ^crc32.Update(^crc, crc32.IEEETable, b)
}

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "lvm2", Off: off, Msg: fmt.Sprintf(format, args...)}
}

// locn is an (offset, size) pair of the PV header, in bytes of the PV.
type locn struct{ off, size int64 }

// label is the PV label and header.
type label struct {
	off   int64 // byte of the label sector
	uuid  string
	data  []locn
	mdas  []locn
	boots []locn
}

// readLabel finds and checks the PV label. No label: ErrNotMine.
func readLabel(r io.ReaderAt, size int64) (*label, error) {
	n := min(size, labelScan*sector)
	if n < sector {
		return nil, fmt.Errorf("lvm2: %w", block.ErrNotMine)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && size <= labelScan*sector) {
		return nil, fmt.Errorf("lvm2: read label sectors: %w", err)
	}
	le := binary.LittleEndian
	for i := int64(0); (i+1)*sector <= n; i++ {
		s := b[i*sector : (i+1)*sector]
		if string(s[:8]) != labelID {
			continue
		}
		off := i * sector
		if got := le.Uint64(s[8:]); got != uint64(i) {
			return nil, corrupt(off+8, "label in sector %d says it is in sector %d", i, got)
		}
		if want, got := le.Uint32(s[16:]), lvmCRC(crcInit, s[20:]); want != got {
			return nil, corrupt(off+16, "label checksum %#08x, its bytes give %#08x", want, got)
		}
		if t := string(s[24:32]); t != labelType {
			return nil, corrupt(off+24, "label type %q, not %q", t, labelType)
		}
		h := int64(le.Uint32(s[20:]))
		if h < 32 || h > sector-40-16 {
			return nil, corrupt(off+20, "PV header at byte %d of the label sector", h)
		}
		l := &label{off: off, uuid: string(s[h : h+32])}
		for _, c := range l.uuid {
			if c <= ' ' || c > '~' {
				return nil, corrupt(off+h, "PV UUID %q is not printable", l.uuid)
			}
		}
		p := h + 40 // past the UUID and the device size
		list := func(what string) ([]locn, error) {
			var out []locn
			for {
				if p+16 > sector {
					return nil, corrupt(off+p, "PV header's %s list runs past its sector", what)
				}
				o, sz := le.Uint64(s[p:]), le.Uint64(s[p+8:])
				p += 16
				if o == 0 && sz == 0 {
					return out, nil
				}
				if o >= uint64(size) || sz > uint64(size)-o {
					return nil, corrupt(off+p-16, "%s at byte %d, %d bytes, is outside the %d-byte PV", what, o, sz, size)
				}
				out = append(out, locn{int64(o), int64(sz)})
			}
		}
		var err error
		if l.data, err = list("data area"); err != nil {
			return nil, err
		}
		if l.mdas, err = list("metadata area"); err != nil {
			return nil, err
		}
		if len(l.data) != 1 || len(l.mdas) > 2 {
			return nil, corrupt(off+h, "PV header lists %d data areas and %d metadata areas", len(l.data), len(l.mdas))
		}
		for _, m := range l.mdas {
			if m.size <= mdaHeaderSize {
				return nil, corrupt(off+h, "metadata area at byte %d is only %d bytes", m.off, m.size)
			}
		}
		// The extension (version, flags, boot loader areas) follows
		// when it fits; PVs made before it have zeros there.
		if p+8 <= sector && le.Uint32(s[p:]) >= 1 {
			p += 8
			if l.boots, err = list("boot loader area"); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	return nil, fmt.Errorf("lvm2: %w", block.ErrNotMine)
}

// metadata is one metadata area's current VG text.
type metadata struct {
	area   locn
	text   []byte
	first  int64 // bytes of text before the ring wraps
	start  int64 // PV byte of the text's first byte
	crc    uint32
	ignore bool // the area is flagged ignored
	empty  bool // no VG text (an orphan PV)
}

// pos is the PV byte of character i of the text (for error offsets).
func (m *metadata) pos(i int) int64 {
	if int64(i) < m.first {
		return m.start + int64(i)
	}
	return m.area.off + mdaHeaderSize + int64(i) - m.first
}

// readArea reads and checks a metadata area's header and, unless it is
// ignored or empty, its current text.
func readArea(r io.ReaderAt, a locn) (*metadata, error) {
	h := make([]byte, mdaHeaderSize)
	if _, err := r.ReadAt(h, a.off); err != nil {
		return nil, fmt.Errorf("lvm2: read metadata area header at byte %d: %w", a.off, err)
	}
	le := binary.LittleEndian
	if string(h[4:20]) != mdaMagic {
		return nil, corrupt(a.off+4, "metadata area header has no LVM2 magic")
	}
	if want, got := le.Uint32(h), lvmCRC(crcInit, h[4:]); want != got {
		return nil, corrupt(a.off, "metadata area header checksum %#08x, its bytes give %#08x", want, got)
	}
	if v := le.Uint32(h[20:]); v != 1 {
		return nil, corrupt(a.off+20, "metadata area version %d", v)
	}
	if st, sz := le.Uint64(h[24:]), le.Uint64(h[32:]); st != uint64(a.off) || sz != uint64(a.size) {
		return nil, corrupt(a.off+24, "metadata area header says it is at byte %d, %d bytes; the PV header says %d, %d", st, sz, a.off, a.size)
	}
	off, size := le.Uint64(h[40:]), le.Uint64(h[48:])
	m := &metadata{area: a, crc: le.Uint32(h[56:]), ignore: le.Uint32(h[60:])&locnIgnored != 0}
	if off == 0 && size == 0 {
		m.empty = true
		return m, nil
	}
	if m.ignore {
		return m, nil
	}
	ring := uint64(a.size - mdaHeaderSize)
	if off < mdaHeaderSize || off >= uint64(a.size) || size == 0 || size > ring {
		return nil, corrupt(a.off+40, "metadata text at byte %d of the area, %d bytes, is outside its %d bytes", off, size, a.size)
	}
	if size > maxText {
		return nil, corrupt(a.off+48, "metadata text of %d bytes is larger than %d", size, maxText)
	}
	m.start = a.off + int64(off)
	// The text is a ring after the header: past the area's end it goes
	// on right after the header (being no longer than the ring, it
	// never reaches its own start).
	m.first = int64(min(size, uint64(a.size)-off))
	m.text = make([]byte, size)
	if _, err := r.ReadAt(m.text[:m.first], m.start); err != nil {
		return nil, fmt.Errorf("lvm2: read metadata text at byte %d: %w", m.start, err)
	}
	if m.first < int64(size) {
		if _, err := r.ReadAt(m.text[m.first:], a.off+mdaHeaderSize); err != nil {
			return nil, fmt.Errorf("lvm2: read metadata text at byte %d: %w", a.off+mdaHeaderSize, err)
		}
	}
	if got := lvmCRC(crcInit, m.text); got != m.crc {
		return nil, corrupt(m.start, "metadata text of %d bytes: its checksum is %#08x, its bytes give %#08x", size, m.crc, got)
	}
	return m, nil
}

// vg parses a metadata area's text into its VG; errors carry the PV
// byte where the text went wrong.
func (m *metadata) vg() (*volumeGroup, error) {
	root, err := parseConfig(m.text)
	var g *volumeGroup
	if err == nil {
		g, err = parseVG(root)
	}
	var se *syntaxError
	if errors.As(err, &se) {
		return nil, corrupt(m.pos(se.off), "VG metadata: %s", se.msg)
	}
	return g, err
}

// Detect reads the LVM2 PV in r (size bytes) and returns its used
// blocks, the volume group's name and extent size as Detail and one
// Volume per LV. inner finds the filesystem in each LV. Not a PV: an
// error wrapping block.ErrNotMine. A PV whose label, metadata area or
// metadata text is damaged or not understood: a *block.CorruptError
// (the PV is then best copied whole). A PV whose layout is not on it
// (no metadata area in use): untrusted, every block counts.
func Detect(r io.ReaderAt, size int64, inner Inner) (*block.Usage, error) {
	l, err := readLabel(r, size)
	if err != nil {
		return nil, err
	}
	keep := []block.Extent{{Off: 0, Len: min(size, max(keepFirst, l.data[0].off))}}
	for _, a := range append(append([]locn(nil), l.mdas...), l.boots...) {
		keep = append(keep, block.Extent{Off: a.off, Len: a.size})
	}
	// Each metadata area in use holds the VG's text; LVM takes the
	// newest (highest seqno) and rewrites the others.
	var cur *metadata
	var g *volumeGroup
	var warnings []string
	live, orphan, ignored := 0, 0, 0
	for _, a := range l.mdas {
		m, err := readArea(r, a)
		if err != nil {
			return nil, err
		}
		switch {
		case m.ignore:
			ignored++
			continue
		case m.empty:
			orphan++
			continue
		}
		live++
		mg, err := m.vg()
		if err != nil {
			return nil, err
		}
		switch {
		case cur == nil:
			cur, g = m, mg
		case mg.name != g.name:
			return nil, corrupt(m.start, "the PV's metadata areas hold different VGs (%s and %s)", g.name, mg.name)
		case mg.seqno == g.seqno && m.crc != cur.crc:
			return nil, corrupt(m.start, "the PV's metadata areas hold different texts with the same seqno %d", g.seqno)
		case mg.seqno != g.seqno:
			warnings = append(warnings, fmt.Sprintf("the PV's metadata areas disagree (seqno %d at byte %d, %d at byte %d): the newer is used, as LVM does", g.seqno, cur.start, mg.seqno, m.start))
			if mg.seqno > g.seqno {
				cur, g = m, mg
			}
		}
	}
	switch {
	case live == 0 && orphan > 0 && ignored == 0:
		u, err := block.NewUsage("lvm2", blockSize(size, 4096), size, keepOnly(keep))
		if err != nil {
			return nil, err
		}
		u.Detail = "no volume group (an unused PV)"
		return u, nil
	case live == 0:
		u, err := block.NewUsage("lvm2", blockSize(size, 4096), size, nil)
		if err != nil {
			return nil, err
		}
		u.Distrust("LVM2 PV with no metadata area in use: its volume group's layout is kept on other PVs")
		return u, nil
	}
	var self *physVol
	for _, pv := range g.pvs {
		if pv.uuid == l.uuid {
			if self != nil {
				return nil, corrupt(cur.pos(pv.off), "VG %s lists PV %s twice (%s and %s)", g.name, l.uuid, self.name, pv.name)
			}
			self = pv
		}
	}
	if self == nil {
		return nil, corrupt(l.off+32, "PV %s is not in the metadata of VG %s it holds", l.uuid, g.name)
	}
	end := self.peStart + self.peCount*g.extent // bounded in parseVG
	if end > size {
		return nil, corrupt(cur.pos(self.off), "VG %s: PV %s's %d extents end at byte %d, past the %d-byte PV", g.name, self.name, self.peCount, end, size)
	}
	if self.peStart > keep[0].Len {
		keep[0].Len = self.peStart
	}
	lay, vols, warns, err := plan(r, g, self, inner, func(i int) int64 { return cur.pos(i) })
	if err != nil {
		return nil, err
	}
	lay.keep = block.MergeExtents(append(keep, lay.keep...))
	bs := int64(4096)
	for _, v := range vols {
		if v.usage != nil {
			bs = min(bs, v.usage.BlockSize())
		}
	}
	u, err := block.NewUsage("lvm2", blockSize(size, bs), size, lay.fill)
	if err != nil {
		return nil, err
	}
	u.Detail = fmt.Sprintf("VG %s, %s extents", g.name, sizeText(g.extent))
	for _, v := range vols {
		u.Volumes = append(u.Volumes, v.info)
		u.Volumes = append(u.Volumes, v.inner...)
		// An opened LUKS volume in an LV: its free sectors must come
		// back random, and the fill is chosen for the whole PV.
		if v.usage != nil && v.usage.FillFree {
			u.FillFree = true
		}
	}
	if w := strings.Join(append(warnings, warns...), "; "); w != "" {
		u.Warning = w
	}
	return u, nil
}

// blockSize is the map's block: at most the smallest block of the
// filesystems inside (a power of two, 512 at least), made larger when
// the map would be huge. Extents and pe_start need not be multiples of
// it: a block holding any used byte counts used.
func blockSize(size, smallest int64) int64 {
	bs := int64(512)
	for bs*2 <= smallest && bs < 4096 {
		bs *= 2
	}
	for size/bs > 1<<32 {
		bs *= 2
	}
	return bs
}

// keepOnly is the fill of a PV with no LVs: its metadata only.
func keepOnly(keep []block.Extent) block.FillFunc {
	keep = block.MergeExtents(keep)
	return func(first int64, m *block.Map) error {
		markExtents(keep, first*m.BlockSize(), m)
		return nil
	}
}

// sizeText writes an extent size as LVM users know it (4 MiB).
func sizeText(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for i < len(units)-1 && n%1024 == 0 && n >= 1024 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d %s", n, units[i])
}
