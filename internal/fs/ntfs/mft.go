package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
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
	ntfsAttrStandardInformation = 0x10
	ntfsAttrList                = 0x20
	ntfsAttrData                = 0x80
	ntfsAttrIndexRoot           = 0x90
	ntfsAttrIndexAllocation     = 0xa0
	ntfsAttrBitmap              = 0xb0
	ntfsAttrReparsePoint        = 0xc0
	ntfsAttrEnd                 = 0xffffffff

	ntfsRecordInUse = 0x01
	ntfsRecordIsDir = 0x02

	ntfsAttrCompressed = 0x00ff // the compression method bits
	ntfsAttrEncrypted  = 0x4000

	ntfsRoot      = 5  // the root directory's MFT record
	ntfsFirstUser = 16 // records below are the volume's metadata files
	ntfsRefMask   = 1<<48 - 1

	ntfsStride = 512 // update sequences protect 512 bytes, whatever the sector size

	// Bounds on what the disk may claim. NTFS's own limits are lower.
	ntfsMaxAttrList   = 1 << 20 // bytes of an $ATTRIBUTE_LIST
	ntfsMaxExtensions = 1 << 14 // extension records of one file
	ntfsMaxRuns       = 1 << 21 // runs of one attribute, all extents
	ntfsMaxSmallAttr  = 64 << 10
)

// ntfsCorrupt is damage found in MFT record rec (-1: the boot sector or
// the volume as a whole), at byte off of the volume where known.
func ntfsCorrupt(rec, off int64, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if rec >= 0 {
		msg = fmt.Sprintf("MFT record %d: %s", rec, msg)
	}
	return &block.CorruptError{What: "ntfs", Off: off, Msg: msg}
}

// readFull reads len(b) bytes at off: a short read is an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ntfsVolume is an NTFS volume's geometry and its MFT.
type ntfsVolume struct {
	r           io.ReaderAt
	clusterSize int64
	clusters    int64
	recordSize  int64
	records     int64       // records the $MFT's data holds
	mft         *ntfsStream // the $MFT's unnamed $DATA
}

// openNTFSVolume reads the boot sector and the $MFT's own record.
func openNTFSVolume(r io.ReaderAt) (*ntfsVolume, error) {
	bs := make([]byte, 512)
	if err := readFull(r, bs, 0); err != nil {
		return nil, fmt.Errorf("ntfs: read the boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return nil, fmt.Errorf("ntfs: %w", block.ErrNotMine)
	}
	v, mftLCN, err := ntfsBoot(bs)
	if err != nil {
		return nil, err
	}
	v.r = r
	// Record 0 is the $MFT itself: its $DATA says where the others are.
	// Until its extents are known, the MFT is what the boot sector says.
	off := mftLCN * v.clusterSize
	b := make([]byte, v.recordSize)
	if err := readFull(r, b, off); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record 0 at byte %d: %w", off, err)
	}
	rec0, err := ntfsParseRecord(0, b, off)
	if err != nil {
		return nil, err
	}
	attrs, err := ntfsParseAttrs(rec0, v.clusterSize, v.clusters)
	if err != nil {
		return nil, err
	}
	f := &ntfsFile{v: v, rec: rec0, attrs: attrs}
	v.mft, err = f.stream(ntfsAttrData, "")
	if err != nil {
		return nil, err
	}
	if v.mft.isResident {
		return nil, ntfsCorrupt(0, off, "the $MFT's $DATA is resident")
	}
	v.records = v.mft.size / v.recordSize
	if v.records <= ntfsRoot {
		return nil, ntfsCorrupt(0, off, "the $MFT holds %d records", v.records)
	}
	for _, a := range attrs {
		if a.typ == ntfsAttrList {
			// The rest of the $MFT's extents are in extension records
			// that the first extent maps.
			if f, err = v.fileFrom(rec0, attrs); err != nil {
				return nil, err
			}
			if v.mft, err = f.stream(ntfsAttrData, ""); err != nil {
				return nil, err
			}
			v.records = v.mft.size / v.recordSize
			break
		}
	}
	return v, nil
}

func ntfsBoot(b []byte) (*ntfsVolume, int64, error) {
	le := binary.LittleEndian
	sector := int64(le.Uint16(b[0x0b:]))
	if sector < 256 || sector > 4096 || sector&(sector-1) != 0 {
		return nil, 0, ntfsCorrupt(-1, 0x0b, "bytes per sector %d is impossible", sector)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 20 {
			return nil, 0, ntfsCorrupt(-1, 0x0d, "sectors per cluster 2^%d is impossible", 256-spc)
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, 0, ntfsCorrupt(-1, 0x0d, "sectors per cluster %d is impossible", spc)
	}
	v := &ntfsVolume{clusterSize: spc * sector}
	if v.clusterSize > 2<<20 {
		return nil, 0, ntfsCorrupt(-1, 0x0d, "cluster size %d is impossible", v.clusterSize)
	}
	total := int64(le.Uint64(b[0x28:]))
	if total <= 0 || total > 1<<56/sector {
		return nil, 0, ntfsCorrupt(-1, 0x28, "volume of %d sectors is impossible", total)
	}
	v.clusters = total / spc
	mftLCN := int64(le.Uint64(b[0x30:]))
	if mftLCN <= 0 || mftLCN >= v.clusters {
		return nil, 0, ntfsCorrupt(-1, 0x30, "$MFT cluster %d is outside the volume's %d clusters", mftLCN, v.clusters)
	}
	switch cpr := int8(b[0x40]); {
	case cpr < 0 && cpr >= -31:
		v.recordSize = 1 << uint(-cpr)
	case cpr > 0:
		v.recordSize = int64(cpr) * v.clusterSize
	}
	if v.recordSize < ntfsStride || v.recordSize > 64<<10 || v.recordSize&(v.recordSize-1) != 0 {
		return nil, 0, ntfsCorrupt(-1, 0x40, "MFT record size %d is impossible", v.recordSize)
	}
	return v, mftLCN, nil
}

// ntfsFixup checks and undoes the update-sequence protection of a
// multi-sector structure (an MFT record, an index block), whose first
// bytes are its magic; what names it for errors.
func ntfsFixup(b []byte, rec, off int64, what string) error {
	le := binary.LittleEndian
	usaOff, usaCount := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if usaOff&1 != 0 || usaCount-1 != len(b)/ntfsStride || usaOff < 8 || usaOff+2*usaCount > len(b) {
		return ntfsCorrupt(rec, off+4, "%s: update sequence array (%d entries at %d) does not fit its %d bytes", what, usaCount, usaOff, len(b))
	}
	for i := 1; i < usaCount; i++ {
		end := i*ntfsStride - 2
		if b[end] != b[usaOff] || b[end+1] != b[usaOff+1] {
			return ntfsCorrupt(rec, off+int64(end), "%s: update sequence mismatch (a torn write or damage)", what)
		}
		copy(b[end:end+2], b[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// ntfsRecord is one MFT record, fixed up.
type ntfsRecord struct {
	num   int64
	off   int64 // its byte offset on the volume (-1: not known)
	b     []byte
	used  int // bytes in use
	flags uint16
	seq   uint16
	base  int64 // the base record of an extension record; 0 for a base record
}

// ntfsParseRecord checks MFT record num, read at byte off, and undoes
// its fixups in place.
func ntfsParseRecord(num int64, b []byte, off int64) (*ntfsRecord, error) {
	le := binary.LittleEndian
	switch string(b[:4]) {
	case "FILE":
	case "BAAD":
		return nil, ntfsCorrupt(num, off, "is marked bad (by chkdsk)")
	default:
		return nil, ntfsCorrupt(num, off, "has no FILE signature")
	}
	if err := ntfsFixup(b, num, off, "record"); err != nil {
		return nil, err
	}
	r := &ntfsRecord{
		num: num, off: off, b: b,
		seq:   le.Uint16(b[0x10:]),
		flags: le.Uint16(b[0x16:]),
		used:  int(le.Uint32(b[0x18:])),
		base:  int64(le.Uint64(b[0x20:]) & ntfsRefMask),
	}
	attrOff := int(le.Uint16(b[0x14:]))
	if r.used > len(b) || r.used < 0x18 {
		return nil, ntfsCorrupt(num, off+0x18, "%d bytes in use of %d", r.used, len(b))
	}
	if attrOff < 0x18 || attrOff&7 != 0 || attrOff >= r.used {
		return nil, ntfsCorrupt(num, off+0x14, "first attribute at %d (of %d bytes in use)", attrOff, r.used)
	}
	return r, nil
}

// record reads MFT record n.
func (v *ntfsVolume) record(n int64) (*ntfsRecord, error) {
	if n < 0 || n >= v.records {
		return nil, ntfsCorrupt(n, -1, "is past the end of the MFT (%d records)", v.records)
	}
	b := make([]byte, v.recordSize)
	pos := n * v.recordSize
	if err := readFull(v.mft, b, pos); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record %d: %w", n, err)
	}
	return ntfsParseRecord(n, b, v.mft.where(pos))
}

// ntfsRun maps clusters [vcn, vcn+n) of an attribute to [lcn, lcn+n)
// of the volume; lcn < 0 is a sparse run (zeros).
type ntfsRun struct{ vcn, lcn, n int64 }

// ntfsAttr is one attribute record: a resident value, or one extent of
// a non-resident attribute.
type ntfsAttr struct {
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
	runs        []ntfsRun
	compUnit    uint8
	alloc, size int64
	init        int64
}

// ntfsParseAttrs parses the attributes of a record (which it keeps
// pointing into), for a volume of clusters clusters of clusterSize.
func ntfsParseAttrs(r *ntfsRecord, clusterSize, clusters int64) ([]ntfsAttr, error) {
	le := binary.LittleEndian
	var out []ntfsAttr
	pos := int(le.Uint16(r.b[0x14:]))
	at := func(p int) int64 {
		if r.off < 0 {
			return -1
		}
		return r.off + int64(p)
	}
	for {
		if pos+4 > r.used {
			return nil, ntfsCorrupt(r.num, at(pos), "attributes run past the %d bytes in use without an end marker", r.used)
		}
		typ := le.Uint32(r.b[pos:])
		if typ == ntfsAttrEnd {
			return out, nil
		}
		if pos+0x18 > r.used {
			return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x header runs past the %d bytes in use", typ, r.used)
		}
		length := int(le.Uint32(r.b[pos+4:]))
		if length < 0x18 || length > r.used-pos {
			return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x of %d bytes does not fit the record", typ, length)
		}
		b := r.b[pos : pos+length]
		a := ntfsAttr{typ: typ, rec: r.num, off: at(pos), resident: b[8] == 0, flags: le.Uint16(b[0x0c:]), id: le.Uint16(b[0x0e:])}
		if n := int(b[9]); n > 0 {
			nameOff := int(le.Uint16(b[0x0a:]))
			if nameOff+2*n > length {
				return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x: its name (%d characters at %d) runs past its end", typ, n, nameOff)
			}
			a.name = ntfsName(b[nameOff : nameOff+2*n])
		}
		if a.resident {
			vlen, voff := int64(le.Uint32(b[0x10:])), int64(le.Uint16(b[0x14:]))
			if voff+vlen > int64(length) {
				return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x: its value (%d bytes at %d) runs past its end (%d)", typ, vlen, voff, length)
			}
			a.value = b[voff : voff+vlen]
		} else {
			if length < 0x40 {
				return nil, ntfsCorrupt(r.num, at(pos), "non-resident attribute %#x of %d bytes is too short", typ, length)
			}
			a.start, a.last = int64(le.Uint64(b[0x10:])), int64(le.Uint64(b[0x18:]))
			a.compUnit = b[0x22]
			a.alloc, a.size, a.init = int64(le.Uint64(b[0x28:])), int64(le.Uint64(b[0x30:])), int64(le.Uint64(b[0x38:]))
			maxVCN := math.MaxInt64 / clusterSize
			if a.start < 0 || a.start > maxVCN || a.last < -1 || a.last > maxVCN {
				return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x maps VCNs %d to %d", typ, a.start, a.last)
			}
			if a.start == 0 && (a.size < 0 || a.alloc < 0 || a.init < 0) {
				return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x has sizes %d, %d, %d", typ, a.alloc, a.size, a.init)
			}
			runsOff := int(le.Uint16(b[0x20:]))
			if runsOff < 0x40 || runsOff > length {
				return nil, ntfsCorrupt(r.num, at(pos), "attribute %#x: its runs at %d are outside it (%d bytes)", typ, runsOff, length)
			}
			var err error
			if a.runs, err = ntfsDecodeRuns(b[runsOff:], a.start, a.last, clusters, maxVCN); err != nil {
				return nil, ntfsCorrupt(r.num, at(pos+runsOff), "attribute %#x: %v", typ, err)
			}
		}
		out = append(out, a)
		pos += length
	}
}

// ntfsDecodeRuns decodes a mapping-pairs array that starts at VCN vcn
// and, unless last is 0, ends at VCN last, as ntfs-3g checks it.
func ntfsDecodeRuns(b []byte, vcn, last, clusters, maxVCN int64) ([]ntfsRun, error) {
	var out []ntfsRun
	lcn := int64(0)
	for i := 0; i < len(b) && b[i] != 0; {
		lenSize, offSize := int(b[i]&0x0f), int(b[i]>>4)
		if lenSize == 0 || lenSize > 8 || offSize > 8 || i+1+lenSize+offSize > len(b) {
			return nil, fmt.Errorf("bad run header %#x at byte %d of its runs", b[i], i)
		}
		n := ntfsInt(b[i+1:i+1+lenSize], false)
		if n <= 0 || n > maxVCN-vcn {
			return nil, fmt.Errorf("run of %d clusters at VCN %d", n, vcn)
		}
		r := ntfsRun{vcn: vcn, lcn: -1, n: n}
		if offSize > 0 {
			lcn += ntfsInt(b[i+1+lenSize:i+1+lenSize+offSize], true)
			if lcn < 0 || lcn > clusters || n > clusters-lcn {
				return nil, fmt.Errorf("run at cluster %d (+%d) is outside the volume's %d clusters", lcn, n, clusters)
			}
			r.lcn = lcn
		}
		out = append(out, r)
		vcn += n
		i += 1 + lenSize + offSize
	}
	if last != 0 && vcn-1 != last {
		return nil, fmt.Errorf("runs end at VCN %d, the attribute says %d", vcn-1, last)
	}
	return out, nil
}

// ntfsInt decodes a little-endian integer of len(b) (1 to 8) bytes.
func ntfsInt(b []byte, signed bool) int64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if signed && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * uint(len(b)))
	}
	return int64(v)
}

// ntfsListEntry is one entry of an $ATTRIBUTE_LIST: which record holds
// which attribute (extent).
type ntfsListEntry struct {
	typ   uint32
	start int64
	ref   uint64
	id    uint16
}

func ntfsParseAttrList(b []byte) ([]ntfsListEntry, error) {
	le := binary.LittleEndian
	var out []ntfsListEntry
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
		out = append(out, ntfsListEntry{
			typ:   le.Uint32(b[pos:]),
			start: int64(le.Uint64(b[pos+8:])),
			ref:   le.Uint64(b[pos+0x10:]),
			id:    le.Uint16(b[pos+0x18:]),
		})
		pos += length
	}
	return out, nil
}

// ntfsFile is a file's base record and all its attributes, those in
// extension records included.
type ntfsFile struct {
	v     *ntfsVolume
	rec   *ntfsRecord
	attrs []ntfsAttr
}

// file reads the file that MFT reference ref names: its record must be
// in use, a base record, and (if the reference has one) of its sequence
// number, as ntfs-3g checks.
func (v *ntfsVolume) file(ref uint64) (*ntfsFile, error) {
	n, seq := int64(ref&ntfsRefMask), uint16(ref>>48)
	r, err := v.record(n)
	if err != nil {
		return nil, err
	}
	switch {
	case r.flags&ntfsRecordInUse == 0:
		return nil, ntfsCorrupt(n, r.off, "is not in use (a deleted file)")
	case seq != 0 && seq != r.seq:
		return nil, ntfsCorrupt(n, r.off, "has sequence number %d, not the %d its reference gives (a deleted or reused record)", r.seq, seq)
	case r.base != 0:
		return nil, ntfsCorrupt(n, r.off, "is an extension of record %d, not a file", r.base)
	}
	attrs, err := ntfsParseAttrs(r, v.clusterSize, v.clusters)
	if err != nil {
		return nil, err
	}
	return v.fileFrom(r, attrs)
}

// fileFrom gathers the attributes of base record r: its own, and those
// its $ATTRIBUTE_LIST places in extension records.
func (v *ntfsVolume) fileFrom(r *ntfsRecord, attrs []ntfsAttr) (*ntfsFile, error) {
	f := &ntfsFile{v: v, rec: r, attrs: attrs}
	var list *ntfsAttr
	for i := range attrs {
		if attrs[i].typ == ntfsAttrList {
			if list != nil {
				return nil, ntfsCorrupt(r.num, attrs[i].off, "has two attribute lists")
			}
			list = &attrs[i]
		}
	}
	if list == nil {
		return f, nil
	}
	b, err := f.small(list, ntfsMaxAttrList)
	if err != nil {
		return nil, err
	}
	entries, err := ntfsParseAttrList(b)
	if err != nil {
		return nil, ntfsCorrupt(r.num, list.off, "$ATTRIBUTE_LIST: %v", err)
	}
	type key struct {
		typ uint32
		id  uint16
	}
	var order []int64 // extension records, as the list first names them
	want := map[int64]map[key]uint16{}
	for _, e := range entries {
		n := int64(e.ref & ntfsRefMask)
		if n == r.num {
			continue
		}
		if want[n] == nil {
			if len(order) == ntfsMaxExtensions {
				return nil, ntfsCorrupt(r.num, list.off, "$ATTRIBUTE_LIST names more than %d extension records", ntfsMaxExtensions)
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
		if x.flags&ntfsRecordInUse == 0 || x.base != r.num {
			return nil, ntfsCorrupt(r.num, x.off, "its attribute list names record %d, which is not its extension (in use %v, base %d)", n, x.flags&ntfsRecordInUse != 0, x.base)
		}
		xa, err := ntfsParseAttrs(x, v.clusterSize, v.clusters)
		if err != nil {
			return nil, err
		}
		for _, a := range xa {
			if seq, ok := want[n][key{a.typ, a.id}]; ok {
				if seq != 0 && seq != x.seq {
					return nil, ntfsCorrupt(r.num, x.off, "its attribute list names record %d of sequence number %d; it has %d", n, seq, x.seq)
				}
				f.attrs = append(f.attrs, a)
			}
		}
	}
	return f, nil
}

// errNTFSNoAttr: the file has no such attribute.
var errNTFSNoAttr = errors.New("no such attribute")

func isNoAttr(err error) bool { return errors.Is(err, errNTFSNoAttr) }

// stream gathers the extents of attribute typ named name into one
// readable stream.
func (f *ntfsFile) stream(typ uint32, name string) (*ntfsStream, error) {
	var ext []*ntfsAttr
	for i := range f.attrs {
		if a := &f.attrs[i]; a.typ == typ && a.name == name {
			ext = append(ext, a)
		}
	}
	what := ntfsAttrName(typ, name)
	rec := f.rec.num
	switch {
	case len(ext) == 0:
		return nil, fmt.Errorf("ntfs: MFT record %d: %s: %w", rec, what, errNTFSNoAttr)
	case ext[0].resident:
		if len(ext) > 1 {
			return nil, ntfsCorrupt(rec, ext[1].off, "%s is resident and has %d extents", what, len(ext))
		}
		return &ntfsStream{v: f.v, rec: rec, what: what, isResident: true, resident: ext[0].value, size: int64(len(ext[0].value))}, nil
	}
	sort.SliceStable(ext, func(i, j int) bool { return ext[i].start < ext[j].start })
	first := ext[0]
	s := &ntfsStream{v: f.v, rec: rec, what: what, size: first.size, init: min(first.init, first.size), cacheN: -1}
	next, runs := int64(0), 0
	for _, a := range ext {
		switch {
		case a.resident:
			return nil, ntfsCorrupt(rec, a.off, "%s has resident and non-resident extents", what)
		case a.start != next:
			return nil, ntfsCorrupt(rec, a.off, "%s: an extent starts at VCN %d, not %d", what, a.start, next)
		}
		if runs += len(a.runs); runs > ntfsMaxRuns {
			return nil, ntfsCorrupt(rec, a.off, "%s has more than %d runs", what, ntfsMaxRuns)
		}
		next = a.last + 1
		if len(a.runs) > 0 {
			next = max(next, a.runs[len(a.runs)-1].vcn+a.runs[len(a.runs)-1].n)
		}
	}
	s.runs = make([]ntfsRun, 0, runs)
	for _, a := range ext {
		s.runs = append(s.runs, a.runs...)
	}
	if first.flags&ntfsAttrEncrypted != 0 {
		s.encrypted = true
	} else if first.flags&ntfsAttrCompressed != 0 && first.compUnit != 0 {
		// ntfs-3g reads compression units of 16 clusters of up to 4 KiB.
		if first.compUnit > 8 || f.v.clusterSize > 4096 {
			return nil, ntfsCorrupt(rec, first.off, "%s: compression unit 2^%d of %d-byte clusters", what, first.compUnit, f.v.clusterSize)
		}
		s.unit = 1 << first.compUnit
	}
	return s, nil
}

// small reads a small attribute's value whole (at most limit bytes).
func (f *ntfsFile) small(a *ntfsAttr, limit int64) ([]byte, error) {
	if a.resident {
		return a.value, nil
	}
	s, err := f.stream(a.typ, a.name)
	if err != nil {
		return nil, err
	}
	return s.all(limit)
}

// value reads attribute typ named name whole (at most limit bytes);
// errNTFSNoAttr if the file has none.
func (f *ntfsFile) value(typ uint32, name string, limit int64) ([]byte, error) {
	s, err := f.stream(typ, name)
	if err != nil {
		return nil, err
	}
	return s.all(limit)
}

// ntfsAttrName names an attribute for errors.
func ntfsAttrName(typ uint32, name string) string {
	s := map[uint32]string{
		ntfsAttrStandardInformation: "$STANDARD_INFORMATION", ntfsAttrList: "$ATTRIBUTE_LIST",
		ntfsAttrData: "$DATA", ntfsAttrIndexRoot: "$INDEX_ROOT", ntfsAttrIndexAllocation: "$INDEX_ALLOCATION",
		ntfsAttrBitmap: "$BITMAP", ntfsAttrReparsePoint: "$REPARSE_POINT",
	}[typ]
	if s == "" {
		s = fmt.Sprintf("attribute %#x", typ)
	}
	if name != "" {
		s += " " + name
	}
	return s
}

// ntfsName decodes a name in little-endian UTF-16, whole: a NUL in it
// stays, for CheckName to refuse. Unpaired surrogates become U+FFFD.
func ntfsName(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
