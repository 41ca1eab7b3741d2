package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Platter reads NTFS itself, as ntfs-3g does: MFT records with their
// update-sequence fixups, attributes wherever an $ATTRIBUTE_LIST puts
// them (a large directory's index and a fragmented file's data live in
// extension records), run lists, and (index.go) directory indexes.
// go-ntfs, which it replaced, read only the first extent of a split
// $INDEX_ALLOCATION and the first 21 of a file's $DATA, listed the stale
// entries of index blocks the $BITMAP marks free, took names from the
// file's record instead of the directory's index (DOS names listed, hard
// links lost), and cut some compressed files short. Every number here
// comes off the disk: each is checked before it is used, nothing is
// allocated by a count the disk claims, and a damaged volume is an
// error naming the MFT record, never a panic.

const (
	attrStandardInformation = 0x10
	attrList                = 0x20
	attrVolumeName          = 0x60
	attrVolumeInfo          = 0x70
	attrData                = 0x80
	attrIndexRoot           = 0x90
	attrIndexAllocation     = 0xa0
	attrBitmap              = 0xb0
	attrReparsePoint        = 0xc0
	attrEnd                 = 0xffffffff

	recordInUse = 0x01
	recordIsDir = 0x02

	flagCompressed = 0x00ff // an attribute's compression method bits
	flagEncrypted  = 0x4000

	refMask = 1<<48 - 1

	// Bounds on what the disk may claim. NTFS's own limits are lower.
	maxAttrList   = 1 << 20 // bytes of an $ATTRIBUTE_LIST
	maxExtensions = 1 << 14 // extension records of one file
	maxRuns       = 1 << 21 // runs of one attribute, all extents
	maxSmallAttr  = 64 << 10
)

// fixup checks and undoes the update-sequence protection of a
// multi-sector structure (an MFT record, an index block) of MFT record
// rec read at byte off, whose first bytes are its magic; what names it
// for errors.
func fixup(b []byte, rec, off int64, what string) error {
	le := binary.LittleEndian
	usaOff, usaCount := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if usaOff&1 != 0 || usaCount-1 != len(b)/stride || usaOff < 8 || usaOff+2*usaCount > len(b) {
		return corrupt(rec, off+4, "%s: update sequence array (%d entries at %d) does not fit its %d bytes", what, usaCount, usaOff, len(b))
	}
	for i := 1; i < usaCount; i++ {
		end := i*stride - 2
		if b[end] != b[usaOff] || b[end+1] != b[usaOff+1] {
			return corrupt(rec, off+int64(end), "%s: update sequence mismatch (a torn write or damage)", what)
		}
		copy(b[end:end+2], b[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// record is one MFT record, fixed up.
type record struct {
	num   int64
	off   int64 // its byte offset on the volume (-1: not known)
	b     []byte
	used  int // bytes in use
	flags uint16
	seq   uint16
	base  int64 // the base record of an extension record; 0 for a base record
}

// parseRecord checks MFT record num, read at byte off, and undoes its
// fixups in place.
func parseRecord(num int64, b []byte, off int64) (*record, error) {
	switch string(b[:4]) {
	case "FILE":
	case "BAAD":
		return nil, corrupt(num, off, "is marked bad (by chkdsk)")
	default:
		return nil, corrupt(num, off, "has no FILE signature")
	}
	if err := fixup(b, num, off, "record"); err != nil {
		return nil, err
	}
	return recordHeader(num, b, off)
}

// recordHeader reads the header of MFT record num, fixed up.
func recordHeader(num int64, b []byte, off int64) (*record, error) {
	le := binary.LittleEndian
	r := &record{
		num: num, off: off, b: b,
		seq:   le.Uint16(b[0x10:]),
		flags: le.Uint16(b[0x16:]),
		used:  int(le.Uint32(b[0x18:])),
		base:  int64(le.Uint64(b[0x20:]) & refMask),
	}
	attrOff := int(le.Uint16(b[0x14:]))
	if r.used > len(b) || r.used < 0x18 {
		return nil, corrupt(num, off+0x18, "%d bytes in use of %d", r.used, len(b))
	}
	if attrOff < 0x18 || attrOff&7 != 0 || attrOff >= r.used {
		return nil, corrupt(num, off+0x14, "first attribute at %d (of %d bytes in use)", attrOff, r.used)
	}
	return r, nil
}

// record reads MFT record n.
func (v *volume) record(n int64) (*record, error) {
	if n < 0 || n >= v.records {
		return nil, corrupt(n, -1, "is past the end of the MFT (%d records)", v.records)
	}
	b := make([]byte, v.recordSize)
	pos := n * v.recordSize
	if err := vfs.ReadFull(v.mft, b, pos); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record %d: %w", n, err)
	}
	return parseRecord(n, b, v.mft.where(pos))
}

// run maps clusters [vcn, vcn+n) of an attribute to [lcn, lcn+n) of the
// volume; lcn < 0 is a sparse run (zeros).
type run struct{ vcn, lcn, n int64 }

// attr is one attribute record: a resident value, or one extent of a
// non-resident attribute.
type attr struct {
	typ      uint32
	name     string
	flags    uint16
	id       uint16
	rec      int64 // the MFT record holding it
	off      int64 // its byte offset on the volume (-1: not known)
	resident bool
	value    []byte // resident: the value, within the record

	// Non-resident: the VCNs this extent maps and their runs; the
	// sizes are meaningful in the extent that starts at VCN 0.
	start, last int64
	runs        []run
	compUnit    uint8
	alloc, size int64
	init        int64
}

// parseAttrs parses the attributes of a record (which it keeps pointing
// into).
func (v *volume) parseAttrs(r *record) ([]attr, error) {
	le := binary.LittleEndian
	var out []attr
	pos := int(le.Uint16(r.b[0x14:]))
	at := func(p int) int64 {
		if r.off < 0 {
			return -1
		}
		return r.off + int64(p)
	}
	for {
		if pos+4 > r.used {
			return nil, corrupt(r.num, at(pos), "attributes run past the %d bytes in use without an end marker", r.used)
		}
		typ := le.Uint32(r.b[pos:])
		if typ == attrEnd {
			return out, nil
		}
		if pos+0x18 > r.used {
			return nil, corrupt(r.num, at(pos), "attribute %#x header runs past the %d bytes in use", typ, r.used)
		}
		length := int(le.Uint32(r.b[pos+4:]))
		if length < 0x18 || length > r.used-pos {
			return nil, corrupt(r.num, at(pos), "attribute %#x of %d bytes does not fit the record", typ, length)
		}
		b := r.b[pos : pos+length]
		a := attr{typ: typ, rec: r.num, off: at(pos), resident: b[8] == 0, flags: le.Uint16(b[0x0c:]), id: le.Uint16(b[0x0e:])}
		if n := int(b[9]); n > 0 {
			nameOff := int(le.Uint16(b[0x0a:]))
			if nameOff+2*n > length {
				return nil, corrupt(r.num, at(pos), "attribute %#x: its name (%d characters at %d) runs past its end", typ, n, nameOff)
			}
			a.name = decodeName(b[nameOff : nameOff+2*n])
		}
		if a.resident {
			vlen, voff := int64(le.Uint32(b[0x10:])), int64(le.Uint16(b[0x14:]))
			if voff+vlen > int64(length) {
				return nil, corrupt(r.num, at(pos), "attribute %#x: its value (%d bytes at %d) runs past its end (%d)", typ, vlen, voff, length)
			}
			a.value = b[voff : voff+vlen]
		} else {
			if length < 0x40 {
				return nil, corrupt(r.num, at(pos), "non-resident attribute %#x of %d bytes is too short", typ, length)
			}
			a.start, a.last = int64(le.Uint64(b[0x10:])), int64(le.Uint64(b[0x18:]))
			a.compUnit = b[0x22]
			a.alloc, a.size, a.init = int64(le.Uint64(b[0x28:])), int64(le.Uint64(b[0x30:])), int64(le.Uint64(b[0x38:]))
			maxVCN := math.MaxInt64 / v.clusterSize
			if a.start < 0 || a.start > maxVCN || a.last < -1 || a.last > maxVCN {
				return nil, corrupt(r.num, at(pos), "attribute %#x maps VCNs %d to %d", typ, a.start, a.last)
			}
			if a.start == 0 && (a.size < 0 || a.alloc < 0 || a.init < 0) {
				return nil, corrupt(r.num, at(pos), "attribute %#x has sizes %d, %d, %d", typ, a.alloc, a.size, a.init)
			}
			runsOff := int(le.Uint16(b[0x20:]))
			if runsOff < 0x40 || runsOff >= length {
				return nil, corrupt(r.num, at(pos+0x20), "attribute %#x: its runs at %d are outside it (%d bytes)", typ, runsOff, length)
			}
			runs, bad, err := v.decodeRuns(b[runsOff:], a.start, a.last)
			if err != nil {
				return nil, corrupt(r.num, at(pos+runsOff+bad), "attribute %#x: %v", typ, err)
			}
			a.runs = runs
		}
		out = append(out, a)
		pos += length
	}
}

// decodeRuns decodes a mapping-pairs array that starts at VCN vcn and,
// unless last is 0, ends at VCN last, as ntfs-3g checks it. On error it
// says at which byte of b. A sparse run may be longer than the volume
// (a sparse file may be larger); only an allocated one must fit in it.
func (v *volume) decodeRuns(b []byte, vcn, last int64) ([]run, int, error) {
	var out []run
	lcn, maxVCN := int64(0), math.MaxInt64/v.clusterSize
	i := 0
	for i < len(b) && b[i] != 0 {
		lenSize, offSize := int(b[i]&0x0f), int(b[i]>>4)
		if lenSize == 0 || lenSize > 8 || offSize > 8 || i+1+lenSize+offSize > len(b) {
			return nil, i, fmt.Errorf("bad run header %#x at byte %d of its runs", b[i], i)
		}
		n := leInt(b[i+1:i+1+lenSize], false)
		if n <= 0 || n > maxVCN-vcn {
			return nil, i, fmt.Errorf("run of %d clusters at VCN %d", n, vcn)
		}
		r := run{vcn: vcn, lcn: -1, n: n}
		if offSize > 0 {
			lcn += leInt(b[i+1+lenSize:i+1+lenSize+offSize], true)
			if lcn < 0 || lcn > v.clusters || n > v.clusters-lcn {
				return nil, i, fmt.Errorf("run at cluster %d (+%d) is outside the volume's %d clusters", lcn, n, v.clusters)
			}
			r.lcn = lcn
		}
		out = append(out, r)
		vcn += n
		i += 1 + lenSize + offSize
	}
	if last != 0 && vcn-1 != last {
		return nil, i, fmt.Errorf("runs end at VCN %d, the attribute says %d", vcn-1, last)
	}
	return out, 0, nil
}

// leInt decodes a little-endian integer of len(b) (1 to 8) bytes.
func leInt(b []byte, signed bool) int64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if signed && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * uint(len(b)))
	}
	return int64(v)
}

// listEntry is one entry of an $ATTRIBUTE_LIST: which record holds which
// attribute (extent).
type listEntry struct {
	typ   uint32
	start int64
	ref   uint64
	id    uint16
}

func parseAttrList(b []byte) ([]listEntry, error) {
	le := binary.LittleEndian
	var out []listEntry
	for pos := 0; pos < len(b); {
		if pos+0x1a > len(b) {
			return nil, fmt.Errorf("entry at byte %d runs past its end (%d)", pos, len(b))
		}
		length := int(le.Uint16(b[pos+4:]))
		if length < 0x1a || length > len(b)-pos {
			return nil, fmt.Errorf("entry at byte %d is %d bytes long", pos, length)
		}
		if nameLen, nameOff := int(b[pos+6]), int(b[pos+7]); nameLen > 0 && nameOff+2*nameLen > length {
			return nil, fmt.Errorf("entry at byte %d: its name runs past its end", pos)
		}
		out = append(out, listEntry{
			typ:   le.Uint32(b[pos:]),
			start: int64(le.Uint64(b[pos+8:])),
			ref:   le.Uint64(b[pos+0x10:]),
			id:    le.Uint16(b[pos+0x18:]),
		})
		pos += length
	}
	return out, nil
}

// file is a file's base record and all its attributes, those in
// extension records included.
type file struct {
	v     *volume
	rec   *record
	attrs []attr
}

// file reads the file that MFT reference ref names: its record must be
// in use, a base record, and (if the reference has one) of its sequence
// number, as ntfs-3g checks.
func (v *volume) file(ref uint64) (*file, error) {
	n, seq := int64(ref&refMask), uint16(ref>>48)
	r, err := v.record(n)
	if err != nil {
		return nil, err
	}
	switch {
	case r.flags&recordInUse == 0:
		return nil, corrupt(n, r.off, "is not in use (a deleted file)")
	case seq != 0 && seq != r.seq:
		return nil, corrupt(n, r.off, "has sequence number %d, not the %d its reference gives (a deleted or reused record)", r.seq, seq)
	case r.base != 0:
		return nil, corrupt(n, r.off, "is an extension of record %d, not a file", r.base)
	}
	attrs, err := v.parseAttrs(r)
	if err != nil {
		return nil, err
	}
	return v.fileFrom(r, attrs)
}

// fileFrom gathers the attributes of base record r: its own, and those
// its $ATTRIBUTE_LIST places in extension records.
func (v *volume) fileFrom(r *record, attrs []attr) (*file, error) {
	f := &file{v: v, rec: r, attrs: attrs}
	var list *attr
	for i := range attrs {
		if attrs[i].typ == attrList {
			if list != nil {
				return nil, corrupt(r.num, attrs[i].off, "has two attribute lists")
			}
			list = &attrs[i]
		}
	}
	if list == nil {
		return f, nil
	}
	b, err := f.small(list, maxAttrList)
	if err != nil {
		return nil, err
	}
	entries, err := parseAttrList(b)
	if err != nil {
		return nil, corrupt(r.num, list.off, "$ATTRIBUTE_LIST: %v", err)
	}
	type key struct {
		typ uint32
		id  uint16
	}
	var order []int64 // extension records, as the list first names them
	want := map[int64]map[key]uint16{}
	for _, e := range entries {
		n := int64(e.ref & refMask)
		if n == r.num {
			continue
		}
		if want[n] == nil {
			if len(order) == maxExtensions {
				return nil, corrupt(r.num, list.off, "$ATTRIBUTE_LIST names more than %d extension records", maxExtensions)
			}
			order = append(order, n)
			want[n] = map[key]uint16{}
		}
		want[n][key{e.typ, e.id}] = uint16(e.ref >> 48)
	}
	for _, n := range order {
		x, err := v.record(n)
		if err != nil {
			return nil, fmt.Errorf("ntfs: MFT record %d: its attribute list: %w", r.num, err)
		}
		if x.flags&recordInUse == 0 || x.base != r.num {
			return nil, corrupt(r.num, x.off, "its attribute list names record %d, which is not its extension (in use %v, base %d)", n, x.flags&recordInUse != 0, x.base)
		}
		xa, err := v.parseAttrs(x)
		if err != nil {
			return nil, err
		}
		for _, a := range xa {
			if seq, ok := want[n][key{a.typ, a.id}]; ok {
				if seq != 0 && seq != x.seq {
					return nil, corrupt(r.num, x.off, "its attribute list names record %d of sequence number %d; it has %d", n, seq, x.seq)
				}
				f.attrs = append(f.attrs, a)
			}
		}
	}
	return f, nil
}

// errNoAttr: the file has no such attribute.
var errNoAttr = errors.New("no such attribute")

func isNoAttr(err error) bool { return errors.Is(err, errNoAttr) }

// stream gathers the extents of attribute typ named name into one
// readable stream.
func (f *file) stream(typ uint32, name string) (*stream, error) {
	var ext []*attr
	for i := range f.attrs {
		if a := &f.attrs[i]; a.typ == typ && a.name == name {
			ext = append(ext, a)
		}
	}
	what := attrName(typ, name)
	rec := f.rec.num
	switch {
	case len(ext) == 0:
		return nil, fmt.Errorf("ntfs: MFT record %d: %s: %w", rec, what, errNoAttr)
	case ext[0].resident:
		if len(ext) > 1 {
			return nil, corrupt(rec, ext[1].off, "%s is resident and has %d extents", what, len(ext))
		}
		return &stream{v: f.v, rec: rec, what: what, isResident: true, resident: ext[0].value, size: int64(len(ext[0].value))}, nil
	}
	sort.SliceStable(ext, func(i, j int) bool { return ext[i].start < ext[j].start })
	first := ext[0]
	s := &stream{v: f.v, rec: rec, what: what, size: first.size, init: min(first.init, first.size), cacheN: -1}
	next, runs := int64(0), 0
	for _, a := range ext {
		switch {
		case a.resident:
			return nil, corrupt(rec, a.off, "%s has resident and non-resident extents", what)
		case a.start != next:
			return nil, corrupt(rec, a.off, "%s: an extent starts at VCN %d, not %d", what, a.start, next)
		}
		if runs += len(a.runs); runs > maxRuns {
			return nil, corrupt(rec, a.off, "%s has more than %d runs", what, maxRuns)
		}
		next = a.last + 1
		if len(a.runs) > 0 {
			next = max(next, a.runs[len(a.runs)-1].vcn+a.runs[len(a.runs)-1].n)
		}
	}
	s.runs = make([]run, 0, runs)
	for _, a := range ext {
		s.runs = append(s.runs, a.runs...)
	}
	if first.flags&flagEncrypted != 0 {
		s.encrypted = true
	} else if first.flags&flagCompressed != 0 && first.compUnit != 0 {
		// ntfs-3g reads compression units of 16 clusters of up to 4 KiB.
		if first.compUnit > 8 || f.v.clusterSize > 4096 {
			return nil, corrupt(rec, first.off, "%s: compression unit 2^%d of %d-byte clusters", what, first.compUnit, f.v.clusterSize)
		}
		s.unit = 1 << first.compUnit
	}
	return s, nil
}

// systemData returns the unnamed $DATA of a metadata file ($MFT,
// $LogFile, $Bitmap), which is read cluster by cluster: non-resident,
// neither compressed nor encrypted.
func (f *file) systemData() (*stream, error) {
	s, err := f.stream(attrData, "")
	switch {
	case isNoAttr(err):
		return nil, corrupt(f.rec.num, f.rec.off, "no unnamed $DATA attribute")
	case err != nil:
		return nil, err
	case s.isResident:
		return nil, corrupt(f.rec.num, f.rec.off, "$DATA is resident")
	case s.unit > 0 || s.encrypted:
		return nil, corrupt(f.rec.num, f.rec.off, "$DATA is compressed or encrypted")
	}
	return s, nil
}

// small reads a small attribute's value whole (at most limit bytes).
func (f *file) small(a *attr, limit int64) ([]byte, error) {
	if a.resident {
		return a.value, nil
	}
	return f.value(a.typ, a.name, limit)
}

// value reads attribute typ named name whole (at most limit bytes);
// errNoAttr if the file has none.
func (f *file) value(typ uint32, name string, limit int64) ([]byte, error) {
	s, err := f.stream(typ, name)
	if err != nil {
		return nil, err
	}
	return s.all(limit)
}

// attrName names an attribute for errors.
func attrName(typ uint32, name string) string {
	s := map[uint32]string{
		attrStandardInformation: "$STANDARD_INFORMATION", attrList: "$ATTRIBUTE_LIST",
		attrData: "$DATA", attrIndexRoot: "$INDEX_ROOT", attrIndexAllocation: "$INDEX_ALLOCATION",
		attrBitmap: "$BITMAP", attrReparsePoint: "$REPARSE_POINT",
	}[typ]
	if s == "" {
		s = fmt.Sprintf("attribute %#x", typ)
	}
	if name != "" {
		s += " " + name
	}
	return s
}

// decodeName decodes a name in little-endian UTF-16, whole: a NUL in it
// stays, for CheckName to refuse. Unpaired surrogates become U+FFFD.
func decodeName(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
