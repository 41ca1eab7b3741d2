// Package ntfs finds the used clusters of an NTFS volume from its
// $Bitmap metadata file.
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
}

// run maps clusters [vcn, vcn+n) of an attribute to [lcn, lcn+n) on the
// volume; lcn < 0 is a sparse run.
type run struct{ vcn, lcn, n int64 }

// Detect reads the NTFS volume in r (size bytes) and returns its used
// clusters. Not NTFS: an error wrapping block.ErrNotMine.
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
	m, err := block.NewMap(v.clusterSize, size)
	if err != nil {
		return nil, corrupt(0, "%v", err)
	}
	if err := v.markBitmap(bmRuns, m); err != nil {
		return nil, err
	}
	m.SetBytes(0, v.sectorSize) // boot sector
	// The backup boot sector sits in the last sector, just past the
	// volume's own sectors but inside the partition.
	if backup := v.totalSectors * v.sectorSize; backup+v.sectorSize <= size {
		m.SetBytes(backup, v.sectorSize)
	}
	return &block.Usage{FS: "ntfs", Used: m}, nil
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
	le := binary.LittleEndian
	usaOff, usaCount := int64(le.Uint16(rec[4:])), int64(le.Uint16(rec[6:]))
	if usaCount-1 != v.recordSize/fixupBlock || usaOff+2*usaCount > v.recordSize {
		return nil, corrupt(off+4, "update sequence array (%d entries at %d) does not fit the record", usaCount, usaOff)
	}
	usn := rec[usaOff : usaOff+2]
	for i := int64(1); i < usaCount; i++ {
		end := i*fixupBlock - 2
		if rec[end] != usn[0] || rec[end+1] != usn[1] {
			return nil, corrupt(off+end, "MFT record fixup mismatch (torn write or damage)")
		}
		copy(rec[end:end+2], rec[usaOff+2*i:usaOff+2*i+2])
	}
	return rec, nil
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

// dataRuns finds the unnamed non-resident $DATA attribute of a record
// and decodes its run list.
func (v *volume) dataRuns(rec []byte, recOff int64) ([]run, error) {
	le := binary.LittleEndian
	pos := int64(le.Uint16(rec[0x14:]))
	used := min(int64(le.Uint32(rec[0x18:])), int64(len(rec)))
	hasList := false
	for pos+16 <= used {
		typ := le.Uint32(rec[pos:])
		if typ == attrEnd {
			break
		}
		length := int64(le.Uint32(rec[pos+4:]))
		if length < 16 || pos+length > used {
			return nil, corrupt(recOff+pos, "attribute length %d runs past the record", length)
		}
		a := rec[pos : pos+length]
		if typ == attrList {
			hasList = true
		}
		if typ == attrData && a[9] == 0 { // unnamed
			if a[8] == 0 {
				return nil, corrupt(recOff+pos, "$DATA is resident")
			}
			if length < 0x40 {
				return nil, corrupt(recOff+pos, "non-resident attribute header too short")
			}
			runsOff := int64(le.Uint16(a[0x20:]))
			if runsOff >= length {
				return nil, corrupt(recOff+pos+0x20, "run list offset %d outside the attribute", runsOff)
			}
			return v.decodeRuns(a[runsOff:], int64(le.Uint64(a[0x10:])), recOff+pos+runsOff)
		}
		pos += length
	}
	if hasList {
		return nil, corrupt(recOff, "$DATA is in an attribute list extension, which is not supported")
	}
	return nil, corrupt(recOff, "no unnamed $DATA attribute")
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

// markBitmap reads $Bitmap through its runs, a bounded piece at a time.
func (v *volume) markBitmap(runs []run, m *block.Map) error {
	need := (v.clusters + 7) / 8
	// Whole clusters per piece, so each piece starts on a cluster.
	buf := make([]byte, min(max(1, (1<<20)/v.clusterSize)*v.clusterSize, need))
	var done int64 // bitmap bytes consumed
	for _, r := range runs {
		for k := int64(0); k < r.n && done < need; {
			// Bytes of this run still to read, a piece at a time.
			runBytes := (r.n - k) * v.clusterSize
			n := min(int64(len(buf)), runBytes, need-done)
			b := buf[:n]
			if r.lcn < 0 {
				clear(b)
			} else if _, err := v.r.ReadAt(b, (r.lcn+k)*v.clusterSize); err != nil {
				return fmt.Errorf("ntfs: read $Bitmap at byte %d: %w", (r.lcn+k)*v.clusterSize, err)
			}
			setBits(m, b, done*8, v.clusters)
			done += n
			k += (n + v.clusterSize - 1) / v.clusterSize
		}
	}
	if done < need {
		return corrupt(0, "$Bitmap holds %d bytes, the volume needs %d", done, need)
	}
	return nil
}

// setBits marks cluster first+i for each bit i set in b, below limit.
func setBits(m *block.Map, b []byte, first, limit int64) {
	for i, c := range b {
		base := first + int64(i)*8
		switch c {
		case 0:
		case 0xff:
			m.SetRange(base, min(8, limit-base))
		default:
			for bit := int64(0); bit < 8 && base+bit < limit; bit++ {
				if c&(1<<bit) != 0 {
					m.Set(base + bit)
				}
			}
		}
	}
}
