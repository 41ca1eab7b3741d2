// Package exfat is all Platter knows of exFAT (FS describes it to the
// registry, internal/fsmap): which of its sectors hold data (Detect), its
// files (OpenFiles), what holds each byte (Owners: which file, directory
// or metadata a failing disk's unreadable sectors hit) and its label and
// serial number (vfs.go).
//
// An exFAT volume is two boot regions of 12 sectors each (the main one
// at sector 0, its backup at sector 12), one FAT or, with TexFAT, two,
// and a cluster heap. The heap holds, as files of the root directory
// would, the allocation bitmap (one bit per cluster), the up-case table
// that decides which names match, and the root directory itself. The
// bitmap, not the FAT, says which clusters are in use: a file written
// in one piece has no FAT chain at all (its stream extension says
// "NoFatChain").
//
// Layout and checksums are those of Microsoft's exFAT specification;
// where it leaves a choice open, Platter does as the Linux kernel and
// exfatprogs (fsck.exfat) do, and says so where it does.
package exfat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	bootSectors = 12 // a boot region: boot sector, 8 extended boot sectors, OEM parameters, a reserved sector, the checksum sector

	entrySize = 32
	// maxDirBytes is the most a directory holds (the specification's
	// 256 MiB); a chain of directory clusters past it is damage.
	maxDirBytes = 256 << 20

	fatEnd = 0xffffffff // the last cluster of a chain
	fatBad = 0xfffffff7

	// VolumeFlags (boot sector byte 106).
	flagActiveFAT = 0x0001 // TexFAT: the second FAT and bitmap are the ones in use
	flagDirty     = 0x0002
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "exfat", Off: off, Msg: fmt.Sprintf(format, args...)}
}

func notMine(why string) error { return fmt.Errorf("exfat: %s: %w", why, block.ErrNotMine) }

// volume is the geometry of an exFAT volume, from the boot region it was
// read from, and the FAT through which chains are followed.
type volume struct {
	r           io.ReaderAt
	sectorSize  int64
	clusterSize int64
	length      int64  // bytes of the volume (VolumeLength)
	fatOff      int64  // byte of the first FAT
	fatLen      int64  // bytes of one FAT
	fats        int    // 1, or 2 with TexFAT
	active      int    // the FAT (and bitmap) in use: 0, or 1 when VolumeFlags say so
	heapOff     int64  // byte of cluster 2
	clusters    uint32 // ClusterCount: clusters 2 to clusters+1 exist
	root        uint32 // the root directory's first cluster
	serial      uint32
	flags       uint16
	// mainDamage, when set, says why the main boot region was not used:
	// the backup's was.
	mainDamage error

	fatMu sync.Mutex
	fat   [fatSlots]fatPiece
	tick  uint64
}

// fatSlots pieces of fatPieceSize bytes of the active FAT are kept: files
// written side by side interleave their clusters.
const (
	fatSlots     = 4
	fatPieceSize = 64 << 10
)

type fatPiece struct {
	n    int64 // its index: FAT byte offset / fatPieceSize
	buf  []byte
	used uint64
	ok   bool
}

// sectorSizes are the sizes a boot sector may give (BytesPerSectorShift 9
// to 12): where to look for the backup boot region when the main one
// cannot say.
var sectorSizes = []int64{512, 1024, 2048, 4096}

// open reads the boot region of the exFAT volume in the size bytes of r:
// the main one, or, when it is damaged (a checksum that does not match,
// impossible geometry), the backup one, as fsck.exfat restores it. A
// main boot sector that does not name exFAT is not exFAT (an error
// wrapping block.ErrNotMine), whatever sector 12 holds: fsck.exfat and
// blkid see none there, and a backup region left behind by an exFAT
// since formatted over must not be taken for one. Both regions
// damaged: the main one's *block.CorruptError.
func open(r io.ReaderAt, size int64) (*volume, error) {
	if size < 2*bootSectors*512 {
		return nil, notMine("too small")
	}
	var s [512]byte
	if err := readFull(r, s[:], 0); err != nil {
		return nil, fmt.Errorf("exfat: read boot sector: %w", err)
	}
	if string(s[3:11]) != "EXFAT   " {
		return nil, notMine("no exFAT boot sector")
	}
	v, mainErr := bootRegion(r, size, 0)
	if mainErr == nil {
		return v, nil
	}
	var ce *block.CorruptError
	if !errors.As(mainErr, &ce) {
		return nil, mainErr
	}
	sizes := sectorSizes
	if shift := s[108]; shift >= 9 && shift <= 12 {
		// The main one's sector size first: a damaged checksum leaves
		// it right.
		sizes = append([]int64{1 << shift}, sectorSizes...)
	}
	for _, ss := range sizes {
		at := bootSectors * ss
		if at+bootSectors*ss > size {
			continue
		}
		var b [512]byte
		if err := readFull(r, b[:], at); err != nil {
			return nil, fmt.Errorf("exfat: read backup boot sector at byte %d: %w", at, err)
		}
		if string(b[3:11]) != "EXFAT   " || int64(1)<<(b[108]&31) != ss {
			continue
		}
		if v, err := bootRegion(r, size, at); err == nil {
			v.mainDamage = mainErr
			return v, nil
		}
	}
	return nil, mainErr
}

// bootRegion reads and checks the boot region at byte at (0: the main
// one) and returns the geometry its boot sector gives.
func bootRegion(r io.ReaderAt, size, at int64) (*volume, error) {
	var s [512]byte
	if err := readFull(r, s[:], at); err != nil {
		return nil, fmt.Errorf("exfat: read boot sector at byte %d: %w", at, err)
	}
	le := binary.LittleEndian
	if string(s[3:11]) != "EXFAT   " {
		return nil, corrupt(at+3, "the boot sector does not name exFAT")
	}
	for i := 11; i < 64; i++ {
		// Where a FAT boot sector keeps its BPB: zero on exFAT, so
		// that no FAT driver takes it for one (and the kernel checks).
		if s[i] != 0 {
			return nil, corrupt(at+int64(i), "the boot sector's bytes 11-63 are not zero")
		}
	}
	if le.Uint16(s[510:]) != 0xaa55 {
		return nil, corrupt(at+510, "the boot sector has no 0xAA55 signature")
	}
	sectorShift, clusterShift := uint(s[108]), uint(s[109])
	if sectorShift < 9 || sectorShift > 12 {
		return nil, corrupt(at+108, "sectors of 2^%d bytes (exFAT has 512 to 4096)", sectorShift)
	}
	if clusterShift > 25-sectorShift {
		return nil, corrupt(at+109, "clusters of 2^%d sectors of 2^%d bytes, more than 32 MiB", clusterShift, sectorShift)
	}
	ss := int64(1) << sectorShift
	if at+bootSectors*ss > size {
		return nil, corrupt(at, "the boot region of %d-byte sectors does not fit", ss)
	}
	region := make([]byte, bootSectors*ss)
	if err := readFull(r, region, at); err != nil {
		return nil, fmt.Errorf("exfat: read boot region at byte %d: %w", at, err)
	}
	sum := bootChecksum(region[:11*ss])
	for i := 11 * ss; i < 12*ss; i += 4 {
		if got := le.Uint32(region[i:]); got != sum {
			return nil, corrupt(at+i, "the boot region's checksum sector holds %#08x; its sectors 0-10 sum to %#08x", got, sum)
		}
	}
	v := &volume{
		r:           r,
		sectorSize:  ss,
		clusterSize: ss << clusterShift,
		fats:        int(s[110]),
		clusters:    le.Uint32(s[92:]),
		root:        le.Uint32(s[96:]),
		serial:      le.Uint32(s[100:]),
		flags:       le.Uint16(s[106:]),
	}
	volSectors := le.Uint64(s[72:])
	fatOff, fatLen, heapOff := int64(le.Uint32(s[80:])), int64(le.Uint32(s[84:])), int64(le.Uint32(s[88:]))
	switch {
	case v.fats != 1 && v.fats != 2:
		return nil, corrupt(at+110, "%d FATs (exFAT has 1, or 2 with TexFAT)", v.fats)
	case volSectors > uint64(size/ss):
		return nil, corrupt(at+72, "a volume of %d sectors of %d bytes does not fit in %d bytes", volSectors, ss, size)
	case fatOff < 2*bootSectors:
		return nil, corrupt(at+80, "the FAT starts at sector %d, inside the boot regions", fatOff)
	case fatLen == 0:
		return nil, corrupt(at+84, "a FAT of 0 sectors")
	case heapOff < fatOff+int64(v.fats)*fatLen:
		return nil, corrupt(at+88, "the cluster heap starts at sector %d, inside the %d FAT(s) of %d sectors from sector %d", heapOff, v.fats, fatLen, fatOff)
	case v.clusters == 0 || v.clusters > 0xfffffff5:
		return nil, corrupt(at+92, "a cluster count of %d", v.clusters)
	case heapOff+int64(v.clusters)<<clusterShift > int64(volSectors):
		return nil, corrupt(at+92, "%d clusters of %d sectors from sector %d do not fit in the volume's %d sectors", v.clusters, 1<<clusterShift, heapOff, volSectors)
	case fatLen*ss < (int64(v.clusters)+2)*4:
		return nil, corrupt(at+84, "a FAT of %d sectors cannot map %d clusters", fatLen, v.clusters)
	case v.root < 2 || v.root > v.clusters+1:
		return nil, corrupt(at+96, "the root directory starts at cluster %d, outside the volume's clusters 2-%d", v.root, v.clusters+1)
	}
	v.length = int64(volSectors) * ss
	v.fatOff, v.fatLen, v.heapOff = fatOff*ss, fatLen*ss, heapOff*ss
	if v.fats == 2 && v.flags&flagActiveFAT != 0 {
		// One FAT: the flag means nothing (the specification wants it
		// clear), and the kernel reads the first FAT whatever it says.
		v.active = 1
	}
	return v, nil
}

// bootChecksum is the checksum of a boot region's sectors 0-10 that its
// sector 11 repeats. VolumeFlags and PercentInUse (boot sector bytes
// 106, 107 and 112) change while the volume is in use and are left out.
func bootChecksum(b []byte) uint32 {
	var sum uint32
	for i, c := range b {
		if i == 106 || i == 107 || i == 112 {
			continue
		}
		sum = (sum<<31 | sum>>1) + uint32(c)
	}
	return sum
}

// clusterOff is the byte where cluster c (2 to v.clusters+1) starts.
func (v *volume) clusterOff(c uint32) int64 {
	return v.heapOff + int64(c-2)*v.clusterSize
}

// valid says whether c is a cluster of the heap.
func (v *volume) valid(c uint32) bool { return c >= 2 && c-2 < v.clusters }

// entryOff is the byte of cluster c's entry in the active FAT.
func (v *volume) entryOff(c uint32) int64 {
	return v.fatOff + int64(v.active)*v.fatLen + 4*int64(c)
}

// fatEntry reads cluster c's entry (c valid) in the active FAT, through
// the pieces kept.
func (v *volume) fatEntry(c uint32) (uint32, error) {
	at := 4 * int64(c)
	n := at / fatPieceSize
	v.fatMu.Lock()
	defer v.fatMu.Unlock()
	v.tick++
	var s *fatPiece
	for i := range v.fat {
		if v.fat[i].ok && v.fat[i].n == n {
			s = &v.fat[i]
			break
		}
		if s == nil || v.fat[i].used < s.used {
			s = &v.fat[i] // the least recently used
		}
	}
	if !s.ok || s.n != n {
		fatBytes := 4 * (int64(v.clusters) + 2)
		if s.buf == nil {
			s.buf = make([]byte, min(fatPieceSize, fatBytes))
		}
		s.ok = false
		piece := s.buf[:min(int64(len(s.buf)), fatBytes-n*fatPieceSize)]
		base := v.fatOff + int64(v.active)*v.fatLen
		if err := readFull(v.r, piece, base+n*fatPieceSize); err != nil {
			return 0, fmt.Errorf("exfat: read FAT at byte %d: %w", base+n*fatPieceSize, err)
		}
		s.n, s.ok = n, true
	}
	s.used = v.tick
	return binary.LittleEndian.Uint32(s.buf[at-n*fatPieceSize:]), nil
}

// chain follows a cluster chain through the active FAT, for what (a file
// or directory, for messages). A chain that loops is found by Brent's
// method, in memory of one cluster however long the chain.
type chain struct {
	v     *volume
	what  string
	c     uint32 // the current cluster
	mark  uint32 // the cluster a loop would come back to
	steps int64
	power int64
}

func newChain(v *volume, first uint32, what string) *chain {
	return &chain{v: v, what: what, c: first, mark: first, power: 1}
}

// next moves to the cluster after the current one; end says the current
// one is the chain's last.
func (ch *chain) next() (end bool, err error) {
	v, c := ch.v, ch.c
	e, err := v.fatEntry(c)
	if err != nil {
		return false, err
	}
	switch {
	case e == fatEnd:
		return true, nil
	case e == fatBad:
		return false, corrupt(v.entryOff(c), "the cluster chain of %s leads from cluster %d to a cluster the FAT marks bad", ch.what, c)
	case !v.valid(e):
		return false, corrupt(v.entryOff(c), "the cluster chain of %s leads from cluster %d to cluster %#x, outside the volume's clusters 2-%d", ch.what, c, e, v.clusters+1)
	case e == ch.mark:
		return false, corrupt(v.entryOff(c), "the cluster chain of %s loops: cluster %d leads back to cluster %d", ch.what, c, e)
	}
	ch.c = e
	if ch.steps++; ch.steps == ch.power {
		ch.mark, ch.power, ch.steps = e, 2*ch.power, 0
	}
	return false, nil
}

// readFull reads exactly len(b) bytes at off.
var readFull = vfs.ReadFull
