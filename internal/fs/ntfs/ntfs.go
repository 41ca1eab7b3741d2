// Package ntfs is all Platter knows of NTFS (FS describes it to the
// registry): it finds the used clusters of a volume from its $Bitmap
// metadata file, as far as the volume says it can be trusted (ntfs.go,
// trust.go); it reads its files as ntfs-3g shows them (files.go, with
// mft.go, index.go, stream.go and link.go beneath); and its label and
// serial number (vfs.go).
//
// The two halves still parse boot sectors, MFT records and run lists
// each their own way (volume and run here, ntfsVolume and ntfsRun in
// mft.go): the file reader's names keep their ntfs prefix until the two
// are made one.
package ntfs

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

const (
	attrList   = 0x20
	attrData   = 0x80
	attrEnd    = 0xffffffff
	fixupBlock = 512 // NTFS protects records in 512-byte strides whatever the sector size
	recBitmap  = 6   // MFT record number of $Bitmap
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "ntfs", Off: off, Msg: fmt.Sprintf(format, args...)}
}

type volume struct {
	r            io.ReaderAt
	size         int64
	sectorSize   int64
	clusterSize  int64
	totalSectors int64
	clusters     int64
	recordSize   int64
	mft          []run // the $MFT's own data runs
	bitmap       []run // $Bitmap's data runs

	piece  []byte // a piece of $Bitmap, read by fill
	pieceN int64  // its index (byte offset / len(piece)); -1: none
}

// run maps clusters [vcn, vcn+n) of an attribute to [lcn, lcn+n) on the
// volume; lcn < 0 is a sparse run.
type run struct{ vcn, lcn, n int64 }

// Detect reads the NTFS volume in r (size bytes) and returns its used
// clusters. Not NTFS: an error wrapping block.ErrNotMine. A volume
// marked dirty, with a $LogFile to replay, or whose $Bitmap misses
// clusters its MFT records use, is untrusted: every cluster counts.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	var bs [512]byte
	if size < 512 {
		return nil, fmt.Errorf("ntfs: %w", block.ErrNotMine)
	}
	if n, err := r.ReadAt(bs[:], 0); n != len(bs) {
		return nil, fmt.Errorf("ntfs: read boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return nil, fmt.Errorf("ntfs: %w", block.ErrNotMine)
	}
	v, mftLCN, err := parseBoot(bs[:], size)
	if err != nil {
		return nil, err
	}
	v.r = r
	// Record 0 is $MFT itself; its $DATA says where the rest of the MFT is.
	rec0, err := v.readRecordAt(mftLCN * v.clusterSize)
	if err != nil {
		return nil, err
	}
	v.mft, err = v.dataRuns(rec0, mftLCN*v.clusterSize)
	if err != nil {
		return nil, fmt.Errorf("ntfs: $MFT: %w", err)
	}
	off, err := v.mftOffset(recBitmap)
	if err != nil {
		return nil, err
	}
	rec6, err := v.readRecordAt(off)
	if err != nil {
		return nil, err
	}
	bmRuns, err := v.dataRuns(rec6, off)
	if err != nil {
		return nil, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	// Keep the runs that hold the volume's bits; a $Bitmap is allocated
	// in whole clusters and may run a little longer.
	need, have := (v.clusters+7)/8, int64(0)
	for i, r := range bmRuns {
		if r.vcn != have/v.clusterSize {
			return nil, corrupt(off, "$Bitmap's runs start at cluster %d, not %d", r.vcn, have/v.clusterSize)
		}
		if have += r.n * v.clusterSize; have >= need {
			bmRuns = bmRuns[:i+1]
			break
		}
	}
	if have < need {
		return nil, corrupt(off, "$Bitmap holds %d bytes, the volume needs %d", have, need)
	}
	v.bitmap = bmRuns
	u, err := block.NewUsage("ntfs", v.clusterSize, size, v.fill)
	if err != nil {
		return nil, err
	}
	why, err := v.distrust()
	if err != nil {
		return nil, err
	}
	if why != "" {
		u.Distrust("ntfs " + why)
	}
	return u, nil
}

func parseBoot(b []byte, size int64) (*volume, int64, error) {
	le := binary.LittleEndian
	v := &volume{size: size, sectorSize: int64(le.Uint16(b[0x0b:]))}
	if v.sectorSize < 256 || v.sectorSize > 4096 || v.sectorSize&(v.sectorSize-1) != 0 {
		return nil, 0, corrupt(0x0b, "bytes per sector %d is impossible", v.sectorSize)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 20 {
			return nil, 0, corrupt(0x0d, "sectors per cluster 2^%d is impossible", 256-spc)
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, 0, corrupt(0x0d, "sectors per cluster %d is impossible", spc)
	}
	v.clusterSize = spc * v.sectorSize
	if v.clusterSize > 2<<20 {
		return nil, 0, corrupt(0x0d, "cluster size %d is impossible", v.clusterSize)
	}
	v.totalSectors = int64(le.Uint64(b[0x28:]))
	if v.totalSectors <= 0 || v.totalSectors > size/v.sectorSize {
		return nil, 0, corrupt(0x28, "volume of %d sectors does not fit in %d bytes", v.totalSectors, size)
	}
	v.clusters = v.totalSectors / spc
	mftLCN := int64(le.Uint64(b[0x30:]))
	if mftLCN <= 0 || mftLCN >= v.clusters {
		return nil, 0, corrupt(0x30, "$MFT cluster %d is outside the volume", mftLCN)
	}
	cpr := int8(b[0x40])
	switch {
	case cpr < 0 && cpr >= -31:
		v.recordSize = 1 << uint(-cpr)
	case cpr > 0:
		v.recordSize = int64(cpr) * v.clusterSize
	}
	if v.recordSize < fixupBlock || v.recordSize > 64<<10 || v.recordSize&(v.recordSize-1) != 0 {
		return nil, 0, corrupt(0x40, "MFT record size %d is impossible", v.recordSize)
	}
	return v, mftLCN, nil
}

// readRecordAt reads one MFT record at byte off and applies its
// update-sequence fixups.
func (v *volume) readRecordAt(off int64) ([]byte, error) {
	rec := make([]byte, v.recordSize)
	if off < 0 || off+v.recordSize > v.size {
		return nil, corrupt(off, "MFT record lies outside the volume")
	}
	if _, err := v.r.ReadAt(rec, off); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record at byte %d: %w", off, err)
	}
	if string(rec[:4]) != "FILE" {
		return nil, corrupt(off, "MFT record has no FILE signature")
	}
	if err := fixup(rec, off); err != nil {
		return nil, err
	}
	return rec, nil
}

// fixup checks and undoes the update-sequence protection of a multi-sector
// record (an MFT record, a $LogFile restart page) read at byte off.
func fixup(rec []byte, off int64) error {
	le := binary.LittleEndian
	size := int64(len(rec))
	usaOff, usaCount := int64(le.Uint16(rec[4:])), int64(le.Uint16(rec[6:]))
	if usaCount-1 != size/fixupBlock || usaOff+2*usaCount > size {
		return corrupt(off+4, "update sequence array (%d entries at %d) does not fit the record", usaCount, usaOff)
	}
	usn := rec[usaOff : usaOff+2]
	for i := int64(1); i < usaCount; i++ {
		end := i*fixupBlock - 2
		if rec[end] != usn[0] || rec[end+1] != usn[1] {
			return corrupt(off+end, "%s record fixup mismatch (torn write or damage)", rec[:4])
		}
		copy(rec[end:end+2], rec[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// mftOffset returns the volume byte offset of MFT record n.
func (v *volume) mftOffset(n int64) (int64, error) {
	pos := n * v.recordSize
	vcn, within := pos/v.clusterSize, pos%v.clusterSize
	for _, r := range v.mft {
		if vcn >= r.vcn && vcn < r.vcn+r.n && r.lcn >= 0 {
			return (r.lcn+vcn-r.vcn)*v.clusterSize + within, nil
		}
	}
	return 0, corrupt(0, "MFT record %d is not mapped by the $MFT's data runs", n)
}

// attributes calls fn with each attribute of an MFT record (its type,
// its bytes and their volume offset) until fn says stop; an attribute
// whose length runs past the record is damage.
func attributes(rec []byte, recOff int64, fn func(typ uint32, a []byte, off int64) (more bool)) error {
	le := binary.LittleEndian
	pos := int64(le.Uint16(rec[0x14:]))
	used := min(int64(le.Uint32(rec[0x18:])), int64(len(rec)))
	for pos+16 <= used {
		typ := le.Uint32(rec[pos:])
		if typ == attrEnd {
			break
		}
		length := int64(le.Uint32(rec[pos+4:]))
		if length < 16 || pos+length > used {
			return corrupt(recOff+pos, "attribute length %d runs past the record", length)
		}
		if !fn(typ, rec[pos:pos+length], recOff+pos) {
			break
		}
		pos += length
	}
	return nil
}

// dataRuns finds the unnamed non-resident $DATA attribute of a record
// and decodes its run list.
func (v *volume) dataRuns(rec []byte, recOff int64) ([]run, error) {
	le := binary.LittleEndian
	hasList := false
	var data []byte
	var dataOff int64
	err := attributes(rec, recOff, func(typ uint32, a []byte, off int64) bool {
		if typ == attrList {
			hasList = true
		}
		if typ == attrData && a[9] == 0 { // unnamed
			data, dataOff = a, off
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return nil, err
	case data == nil && hasList:
		return nil, corrupt(recOff, "$DATA is in an attribute list extension, which is not supported")
	case data == nil:
		return nil, corrupt(recOff, "no unnamed $DATA attribute")
	case data[8] == 0:
		return nil, corrupt(dataOff, "$DATA is resident")
	case len(data) < 0x40:
		return nil, corrupt(dataOff, "non-resident attribute header too short")
	}
	runsOff := int64(le.Uint16(data[0x20:]))
	if runsOff >= int64(len(data)) {
		return nil, corrupt(dataOff+0x20, "run list offset %d outside the attribute", runsOff)
	}
	return v.decodeRuns(data[runsOff:], int64(le.Uint64(data[0x10:])), dataOff+runsOff)
}

func (v *volume) decodeRuns(b []byte, vcn int64, off int64) ([]run, error) {
	var out []run
	lcn := int64(0)
	for i := 0; i < len(b) && b[i] != 0; {
		lenSize, offSize := int(b[i]&0x0f), int(b[i]>>4)
		if lenSize == 0 || lenSize > 8 || offSize > 8 || i+1+lenSize+offSize > len(b) {
			return nil, corrupt(off+int64(i), "bad data run header %#x", b[i])
		}
		n := signed(b[i+1:i+1+lenSize], false)
		if n <= 0 || n > v.clusters {
			return nil, corrupt(off+int64(i), "data run of %d clusters", n)
		}
		r := run{vcn: vcn, lcn: -1, n: n}
		if offSize > 0 {
			lcn += signed(b[i+1+lenSize:i+1+lenSize+offSize], true)
			if lcn < 0 || lcn+n > v.clusters {
				return nil, corrupt(off+int64(i), "data run at cluster %d (+%d) is outside the volume", lcn, n)
			}
			r.lcn = lcn
		}
		out = append(out, r)
		vcn += n
		i += 1 + lenSize + offSize
		if len(out) > 1<<20 {
			return nil, corrupt(off, "run list too long")
		}
	}
	return out, nil
}

// signed decodes a little-endian integer of len(b) bytes.
func signed(b []byte, isSigned bool) int64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if isSigned && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * uint(len(b)))
	}
	return int64(v)
}

// bitmapPiece is how much of $Bitmap fill reads at once.
const bitmapPiece = 64 << 10

// fill marks the used clusters among clusters [first, first+m.Blocks()):
// those $Bitmap marks, the boot sector and the backup boot sector, which
// sits in the last sector, just past the volume's own sectors but inside
// the partition.
func (v *volume) fill(first int64, m *block.Map) error {
	end := first + m.Blocks()
	lo, hi := first*v.clusterSize, first*v.clusterSize+m.Len()
	markBytes := func(off, n int64) {
		if s, e := max(off, lo), min(off+n, hi); s < e {
			m.SetBytes(s-lo, e-s)
		}
	}
	markBytes(0, v.sectorSize)
	if backup := v.totalSectors * v.sectorSize; backup+v.sectorSize <= v.size {
		markBytes(backup, v.sectorSize)
	}
	for c := first &^ 7; c < min(end, v.clusters); c += 8 {
		b, err := v.bitmapByte(c / 8)
		if err != nil {
			return err
		}
		if b == 0 {
			continue
		}
		for bit := int64(0); bit < 8; bit++ {
			if k := c + bit; b&(1<<bit) != 0 && k >= first && k < end && k < v.clusters {
				m.Set(k - first)
			}
		}
	}
	return nil
}

// bitmapByte returns byte i of $Bitmap, read through its runs a piece at a
// time.
func (v *volume) bitmapByte(i int64) (byte, error) {
	if v.piece == nil {
		v.piece, v.pieceN = make([]byte, bitmapPiece), -1
	}
	if n := i / bitmapPiece; n != v.pieceN {
		v.pieceN = -1
		need := (v.clusters + 7) / 8
		piece := v.piece[:min(bitmapPiece, need-n*bitmapPiece)]
		if err := v.readBitmap(piece, n*bitmapPiece); err != nil {
			return 0, err
		}
		v.pieceN = n
	}
	return v.piece[i-v.pieceN*bitmapPiece], nil
}

// readBitmap reads len(b) bytes of $Bitmap from byte off of its data.
func (v *volume) readBitmap(b []byte, off int64) error {
	for _, r := range v.bitmap {
		rs, re := r.vcn*v.clusterSize, (r.vcn+r.n)*v.clusterSize
		s, e := max(rs, off), min(re, off+int64(len(b)))
		if s >= e {
			continue
		}
		dst := b[s-off : e-off]
		if r.lcn < 0 {
			clear(dst)
			continue
		}
		at := r.lcn*v.clusterSize + s - rs
		if _, err := v.r.ReadAt(dst, at); err != nil {
			return fmt.Errorf("ntfs: read $Bitmap at byte %d: %w", at, err)
		}
	}
	return nil
}
