// Package fat is all Platter knows of FAT12, FAT16 and FAT32 (FS
// describes it to the registry, internal/fsmap): the used sectors, from
// the file allocation tables (Detect), the files (OpenFiles, files.go),
// the volume label and id (vfs.go), and what holds each sector (Owners,
// owners.go: every file's and directory's cluster chain, the FATs).
//
// The FAT type is decided as the Linux kernel (fs/fat/inode.c) and
// dosfstools (boot.c) decide it for every boot sector they accept: FAT32
// when the BPB's 16-bit FAT size is 0 and its 32-bit one is set, whatever
// the cluster count (mkfs.fat -F 32 makes such volumes with fewer than
// 65525 clusters); otherwise FAT12 below 4085 clusters and FAT16 up to
// 65524, and a FAT12/16 BPB with more clusters is refused.
package fat

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "fat", Off: off, Msg: fmt.Sprintf(format, args...)}
}

func notMine(why string) error { return fmt.Errorf("fat: %s: %w", why, block.ErrNotMine) }

// bpb is the geometry from the boot sector's BIOS parameter block.
type bpb struct {
	bytesPerSector    int64
	sectorsPerCluster int64
	reserved          int64
	fats              int64
	rootEntries       int64
	totalSectors      int64
	fatSectors        int64
	rootDirSectors    int64
	dataStart         int64 // first sector of cluster 2
	clusters          int64 // count of data clusters
	kind              string

	r      io.ReaderAt
	copies int64  // FAT copies fill reads: 1, or all of them when they disagree
	piece  []byte // a piece of FAT copy pieceC, read by fill
	pieceN int64  // its index (FAT byte offset / len(piece)); -1: none
	pieceC int64
}

// Detect reads the FAT filesystem in r (size bytes) and returns its used
// sectors. Not FAT (exFAT and NTFS included): an error wrapping
// block.ErrNotMine.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	var bs [512]byte
	if size < 512 {
		return nil, notMine("too small")
	}
	if n, err := r.ReadAt(bs[:], 0); n != len(bs) {
		return nil, fmt.Errorf("fat: read boot sector: %w", err)
	}
	b, err := parseBPB(bs[:], size)
	if err != nil {
		return nil, err
	}
	b.r, b.copies = r, 1
	differ, err := b.copiesDiffer()
	if err != nil {
		return nil, err
	}
	if differ >= 0 {
		b.copies = b.fats
	}
	u, err := block.NewUsage(b.kind, b.bytesPerSector, size, b.fill)
	if err != nil {
		return nil, err
	}
	if differ >= 0 {
		u.Warning = fmt.Sprintf("%s: its %d FAT copies disagree (first at cluster %d); fsck.fat would keep one of them: the clusters any copy calls used are stored", b.kind, b.fats, differ)
	}
	return u, nil
}

// copiesDiffer compares the entries of every FAT copy with the first's,
// a piece at a time, and returns the first cluster whose entries differ
// (-1: none). Entries 0 and 1 (media byte, dirty flags) are not compared.
func (b *bpb) copiesDiffer() (int64, error) {
	if b.fats < 2 {
		return -1, nil
	}
	bits := b.entryBits()
	fatOff := b.reserved * b.bytesPerSector
	from, to := 2*bits/8, ((b.clusters+2)*bits+7)/8 // bytes of entries 2 and on
	first, other := make([]byte, fatPiece), make([]byte, fatPiece)
	for off := from; off < to; off += fatPiece {
		n := min(fatPiece, to-off)
		if _, err := b.r.ReadAt(first[:n], fatOff+off); err != nil {
			return 0, fmt.Errorf("fat: read FAT at byte %d: %w", fatOff+off, err)
		}
		for k := int64(1); k < b.fats; k++ {
			at := fatOff + k*b.fatSectors*b.bytesPerSector + off
			if _, err := b.r.ReadAt(other[:n], at); err != nil {
				return 0, fmt.Errorf("fat: read FAT copy %d at byte %d: %w", k+1, at, err)
			}
			if i := firstDiff(first[:n], other[:n]); i >= 0 {
				return (off + int64(i)) * 8 / bits, nil
			}
		}
	}
	return -1, nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func parseBPB(s []byte, size int64) (*bpb, error) {
	if string(s[3:11]) == "NTFS    " || string(s[3:11]) == "EXFAT   " {
		return nil, notMine("NTFS or exFAT boot sector")
	}
	if !(s[0] == 0xeb && s[2] == 0x90) && s[0] != 0xe9 && s[0] != 0xeb {
		return nil, notMine("no boot jump instruction")
	}
	le := binary.LittleEndian
	b := &bpb{
		bytesPerSector:    int64(le.Uint16(s[0x0b:])),
		sectorsPerCluster: int64(s[0x0d]),
		reserved:          int64(le.Uint16(s[0x0e:])),
		fats:              int64(s[0x10]),
		rootEntries:       int64(le.Uint16(s[0x11:])),
		totalSectors:      int64(le.Uint16(s[0x13:])),
		fatSectors:        int64(le.Uint16(s[0x16:])),
	}
	media := s[0x15]
	// A BPB that fails these checks is not a FAT boot sector at all (the
	// kernel's and fsck.fat's test): report "not mine".
	switch {
	case b.bytesPerSector < 512 || b.bytesPerSector > 4096 || b.bytesPerSector&(b.bytesPerSector-1) != 0:
		return nil, notMine("bytes per sector")
	case b.sectorsPerCluster == 0 || b.sectorsPerCluster&(b.sectorsPerCluster-1) != 0:
		return nil, notMine("sectors per cluster")
	case b.reserved == 0 || b.fats == 0:
		return nil, notMine("reserved sectors or FAT count")
	case media != 0xf0 && media < 0xf8:
		return nil, notMine("media byte")
	}
	// From here on the boot sector is a FAT BPB: what is wrong with it
	// is damage, not another filesystem.
	if b.totalSectors == 0 {
		b.totalSectors = int64(le.Uint32(s[0x20:]))
	}
	if b.totalSectors == 0 {
		return nil, corrupt(0x13, "the BPB gives no sector count (both its 16- and 32-bit counts are 0)")
	}
	// FAT32 when the 16-bit FAT size is 0 and the 32-bit one is set, as
	// the kernel and dosfstools decide, whatever the cluster count.
	fat32 := b.fatSectors == 0
	if fat32 {
		b.fatSectors = int64(le.Uint32(s[0x24:]))
	}
	if b.fatSectors == 0 {
		return nil, corrupt(0x16, "the BPB gives no FAT size (both its 16- and 32-bit sizes are 0)")
	}
	b.rootDirSectors = (b.rootEntries*32 + b.bytesPerSector - 1) / b.bytesPerSector
	b.dataStart = b.reserved + b.fats*b.fatSectors + b.rootDirSectors
	if b.dataStart >= b.totalSectors {
		return nil, corrupt(0x0e, "metadata (%d sectors) fills the whole %d-sector volume", b.dataStart, b.totalSectors)
	}
	b.clusters = (b.totalSectors - b.dataStart) / b.sectorsPerCluster
	switch {
	case fat32:
		b.kind = "fat32"
		if b.clusters > 0x0ffffff5 {
			return nil, corrupt(0x20, "FAT32 of %d clusters, more than its entries can number", b.clusters)
		}
		if b.rootEntries != 0 {
			return nil, corrupt(0x11, "FAT32 with %d root directory entries", b.rootEntries)
		}
	case b.clusters < 4085:
		b.kind = "fat12"
	case b.clusters < 65525:
		b.kind = "fat16"
	default:
		return nil, corrupt(0x16, "a FAT12/16 BPB (16-bit FAT size %d) for %d clusters, more than FAT16 can number", b.fatSectors, b.clusters)
	}
	if b.totalSectors > size/b.bytesPerSector {
		return nil, corrupt(0x13, "volume of %d sectors of %d bytes does not fit in %d bytes", b.totalSectors, b.bytesPerSector, size)
	}
	if need := (b.clusters + 2) * b.entryBits() / 8; need > b.fatSectors*b.bytesPerSector {
		return nil, corrupt(0x16, "FAT of %d sectors cannot map %d clusters", b.fatSectors, b.clusters)
	}
	return b, nil
}

func (b *bpb) entryBits() int64 {
	switch b.kind {
	case "fat12":
		return 12
	case "fat16":
		return 16
	}
	return 32
}

// bad is the FAT entry that marks a bad cluster. Bad clusters are not
// copied: they hold no data and reading them fails on a real disk.
func (b *bpb) bad() uint32 {
	switch b.kind {
	case "fat12":
		return 0xff7
	case "fat16":
		return 0xfff7
	}
	return 0x0ffffff7
}

// fatPiece is how much of the FAT fill reads at once: a multiple of every
// entry size (1.5, 2 and 4 bytes), so each piece starts on an entry
// boundary.
const fatPiece = 12 << 12

// fill marks the used sectors among sectors [first, first+m.Blocks()):
// the reserved sectors (boot sector, FSInfo, backup boot sector), every
// FAT copy and the FAT12/16 root directory; the sectors past the last
// whole cluster, which belong to no cluster (partclone copies them too:
// some formatters keep data there); and every cluster whose FAT entry is
// neither free nor bad, in any of the copies read.
func (b *bpb) fill(first int64, m *block.Map) error {
	end := first + m.Blocks()
	mark := func(s, e int64) {
		if s, e = max(s, first), min(e, end); s < e {
			m.SetRange(s-first, e-s)
		}
	}
	mark(0, b.dataStart)
	tail := b.dataStart + b.clusters*b.sectorsPerCluster
	mark(tail, b.totalSectors)
	if end <= b.dataStart || first >= tail {
		return nil
	}
	spc := b.sectorsPerCluster
	c0 := (max(first, b.dataStart)-b.dataStart)/spc + 2
	c1 := (min(end, tail)-b.dataStart+spc-1)/spc + 2
	bad := b.bad()
	for k := int64(0); k < max(b.copies, 1); k++ {
		for c := c0; c < c1; c++ {
			v, err := b.entryIn(k, c)
			if err != nil {
				return err
			}
			if v != 0 && v != bad {
				s := b.dataStart + (c-2)*spc
				mark(s, s+spc)
			}
		}
	}
	return nil
}

// entry reads cluster c's entry in the first FAT, through a cached piece.
func (b *bpb) entry(c int64) (uint32, error) { return b.entryIn(0, c) }

// entryIn reads cluster c's entry in FAT copy k, through a cached piece.
func (b *bpb) entryIn(k, c int64) (uint32, error) {
	bits := b.entryBits()
	at := c * bits / 8 // byte of the entry within the FAT
	if b.piece == nil {
		b.piece, b.pieceN = make([]byte, fatPiece), -1
	}
	if n := at / fatPiece; n != b.pieceN || k != b.pieceC {
		fatOff := b.reserved*b.bytesPerSector + k*b.fatSectors*b.bytesPerSector
		fatLen := ((b.clusters+2)*bits + 7) / 8
		piece := b.piece[:min(fatPiece, fatLen-n*fatPiece)]
		if _, err := b.r.ReadAt(piece, fatOff+n*fatPiece); err != nil {
			b.pieceN = -1
			return 0, fmt.Errorf("fat: read FAT copy %d at byte %d: %w", k+1, fatOff+n*fatPiece, err)
		}
		b.pieceN, b.pieceC = n, k
	}
	// Entries of FAT12 come in 3-byte pairs and a piece is a multiple
	// of 3 bytes, so both bytes of an entry are in the piece.
	return decodeEntry(b.piece[at-b.pieceN*fatPiece:], bits, c), nil
}

// decodeEntry decodes cluster c's entry at the start of p.
func decodeEntry(p []byte, bits, c int64) uint32 {
	le := binary.LittleEndian
	switch bits {
	case 12:
		w := uint32(le.Uint16(p))
		if c&1 == 1 {
			return w >> 4
		}
		return w & 0xfff
	case 16:
		return uint32(le.Uint16(p))
	}
	return le.Uint32(p) & 0x0fffffff
}
