// Package ntfs is all Platter knows of NTFS (FS describes it to the
// registry): it finds the used clusters of a volume from its $Bitmap
// metadata file, as far as the volume says it can be trusted (ntfs.go,
// trust.go); it reads its files as ntfs-3g shows them (files.go, with
// index.go, stream.go and link.go beneath); and its label and serial
// number (vfs.go); and what holds each cluster (Owners, owners.go, one
// pass over the MFT). All read the volume through one parser: the boot
// sector here, MFT records, attributes and run lists in mft.go.
package ntfs

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	stride = 512 // update sequences protect 512 bytes, whatever the sector size

	// MFT records of the metadata files read here.
	recMFT          = 0
	recLogFile      = 2
	recVolume       = 3
	recRoot         = 5 // the root directory
	recBitmap       = 6
	firstUserRecord = 16 // records below are the volume's metadata files
)

// corrupt is damage found in MFT record rec (-1: the boot sector or the
// volume as a whole), at byte off of the volume where known.
func corrupt(rec, off int64, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if rec >= 0 {
		msg = fmt.Sprintf("MFT record %d: %s", rec, msg)
	}
	return &block.CorruptError{What: "ntfs", Off: off, Msg: msg}
}

// volume is an NTFS volume's geometry and its MFT.
type volume struct {
	r            io.ReaderAt
	size         int64 // bytes of r
	sectorSize   int64
	clusterSize  int64
	totalSectors int64
	clusters     int64
	recordSize   int64
	records      int64   // records the $MFT's data holds
	mft          *stream // the $MFT's unnamed $DATA

	bitmap *stream // $Bitmap's data (Detect)
	piece  []byte  // a piece of it, read by fill
	pieceN int64   // its index (byte offset / len(piece)); -1: none
}

// open reads the boot sector of the NTFS volume in r (size bytes) and
// its $MFT's own record. Not NTFS: an error wrapping block.ErrNotMine.
func open(r io.ReaderAt, size int64) (*volume, error) {
	bs := make([]byte, 512)
	if size < int64(len(bs)) {
		return nil, fmt.Errorf("ntfs: %w", block.ErrNotMine)
	}
	if err := vfs.ReadFull(r, bs, 0); err != nil {
		return nil, fmt.Errorf("ntfs: read the boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return nil, fmt.Errorf("ntfs: %w", block.ErrNotMine)
	}
	v, mftLCN, err := parseBoot(bs, size)
	if err != nil {
		return nil, err
	}
	v.r = r
	// Record 0 is the $MFT itself: its $DATA says where the others are.
	// Until its extents are known, the MFT is what the boot sector says.
	off := mftLCN * v.clusterSize
	if off+v.recordSize > v.clusters*v.clusterSize {
		return nil, corrupt(recMFT, off, "lies outside the volume's %d clusters", v.clusters)
	}
	b := make([]byte, v.recordSize)
	if err := vfs.ReadFull(r, b, off); err != nil {
		return nil, fmt.Errorf("ntfs: read MFT record 0 at byte %d: %w", off, err)
	}
	rec0, err := parseRecord(recMFT, b, off)
	if err != nil {
		return nil, err
	}
	attrs, err := v.parseAttrs(rec0)
	if err != nil {
		return nil, err
	}
	// An attribute list places the rest of the $MFT's extents in
	// extension records that its first extent maps.
	if err := v.setMFT(&file{v: v, rec: rec0, attrs: attrs}); err != nil {
		return nil, err
	}
	f, err := v.fileFrom(rec0, attrs)
	if err == nil {
		err = v.setMFT(f)
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// setMFT reads MFT records through f's $DATA from now on: as many as
// both its size and its runs hold, and the volume could.
func (v *volume) setMFT(f *file) error {
	s, err := f.systemData()
	if err != nil {
		return err
	}
	mapped := int64(0)
	if k := len(s.runs); k > 0 {
		mapped = (s.runs[k-1].vcn + s.runs[k-1].n) * v.clusterSize
	}
	v.mft, v.records = s, min(s.size, mapped, v.clusters*v.clusterSize)/v.recordSize
	if v.records <= recRoot {
		return corrupt(recMFT, f.rec.off, "the $MFT holds %d records", v.records)
	}
	return nil
}

// parseBoot checks the boot sector b of a volume in size bytes and
// returns the volume's geometry and the $MFT's first cluster.
func parseBoot(b []byte, size int64) (*volume, int64, error) {
	le := binary.LittleEndian
	v := &volume{size: size, sectorSize: int64(le.Uint16(b[0x0b:]))}
	if v.sectorSize < 256 || v.sectorSize > 4096 || v.sectorSize&(v.sectorSize-1) != 0 {
		return nil, 0, corrupt(-1, 0x0b, "bytes per sector %d is impossible", v.sectorSize)
	}
	spc := int64(b[0x0d])
	if spc > 0x80 {
		if 256-spc > 20 {
			return nil, 0, corrupt(-1, 0x0d, "sectors per cluster 2^%d is impossible", 256-spc)
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, 0, corrupt(-1, 0x0d, "sectors per cluster %d is impossible", spc)
	}
	v.clusterSize = spc * v.sectorSize
	if v.clusterSize > 2<<20 {
		return nil, 0, corrupt(-1, 0x0d, "cluster size %d is impossible", v.clusterSize)
	}
	// 2^56 bytes keeps every byte offset of a cluster in an int64.
	v.totalSectors = int64(le.Uint64(b[0x28:]))
	if limit := min(size, 1<<56); v.totalSectors <= 0 || v.totalSectors > limit/v.sectorSize {
		return nil, 0, corrupt(-1, 0x28, "volume of %d sectors does not fit in %d bytes", v.totalSectors, limit)
	}
	v.clusters = v.totalSectors / spc
	mftLCN := int64(le.Uint64(b[0x30:]))
	if mftLCN <= 0 || mftLCN >= v.clusters {
		return nil, 0, corrupt(-1, 0x30, "$MFT cluster %d is outside the volume's %d clusters", mftLCN, v.clusters)
	}
	switch cpr := int8(b[0x40]); {
	case cpr < 0 && cpr >= -31:
		v.recordSize = 1 << uint(-cpr)
	case cpr > 0:
		v.recordSize = int64(cpr) * v.clusterSize
	}
	if v.recordSize < stride || v.recordSize > 64<<10 || v.recordSize&(v.recordSize-1) != 0 {
		return nil, 0, corrupt(-1, 0x40, "MFT record size %d is impossible", v.recordSize)
	}
	return v, mftLCN, nil
}

// systemData returns the unnamed $DATA of metadata file n.
func (v *volume) systemData(n int64) (*stream, error) {
	f, err := v.file(uint64(n))
	if err != nil {
		return nil, err
	}
	return f.systemData()
}

// Detect reads the NTFS volume in r (size bytes) and returns its used
// clusters. Not NTFS: an error wrapping block.ErrNotMine. A volume
// marked dirty, with a $LogFile to replay, or whose $Bitmap misses
// clusters its MFT records use, is untrusted: every cluster counts.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	if v.bitmap, err = v.systemData(recBitmap); err != nil {
		return nil, fmt.Errorf("ntfs: $Bitmap: %w", err)
	}
	// A $Bitmap is allocated in whole clusters and may run a little
	// longer than the volume's bits; bytes past its initialized size
	// would read as zeros (free).
	if need := (v.clusters + 7) / 8; v.bitmap.init < need {
		return nil, corrupt(recBitmap, v.mft.where(recBitmap*v.recordSize), "$Bitmap holds %d bytes, the volume needs %d", v.bitmap.init, need)
	}
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

// bitmapByte returns byte i of $Bitmap, read a piece at a time.
func (v *volume) bitmapByte(i int64) (byte, error) {
	if v.piece == nil {
		v.piece, v.pieceN = make([]byte, bitmapPiece), -1
	}
	if n := i / bitmapPiece; n != v.pieceN {
		v.pieceN = -1
		need := (v.clusters + 7) / 8
		piece := v.piece[:min(bitmapPiece, need-n*bitmapPiece)]
		if err := vfs.ReadFull(v.bitmap, piece, n*bitmapPiece); err != nil {
			return 0, err
		}
		v.pieceN = n
	}
	return v.piece[i-v.pieceN*bitmapPiece], nil
}
