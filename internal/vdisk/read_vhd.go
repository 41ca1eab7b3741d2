package vdisk

import (
	"encoding/binary"
	"io"
	"os"
	"slices"

	"github.com/platter-dev/platter/internal/block"
)

// The VHD reader (Microsoft's Virtual Hard Disk Image Format
// Specification, 2006). A fixed VHD is the disk followed by a 512-byte
// footer; a dynamic one has a copy of the footer at the start, a dynamic
// header naming the block allocation table (BAT), and blocks, each a
// sector bitmap (which sectors hold data) and the block's data. A
// differencing VHD (a dynamic one whose unset sectors are its parent's)
// is refused. All fields are big-endian; sectors are 512 bytes.

func init() { registerReader(VHD, openVHD) }

const (
	vhdCookie        = "conectix"
	vhdDynamicCookie = "cxsparse"
	vhdFooterSize    = 512
	vhdDynHeaderSize = 1024
	vhdSector        = 512
	vhdUnused        = 0xffffffff // a BAT entry of a block not allocated

	vhdFixed        = 2
	vhdDynamic      = 3
	vhdDifferencing = 4
)

type vhdImage struct {
	f         File
	fileSize  int64
	size      int64
	blockSize int64
	bitmap    int64 // bytes of a block's sector bitmap (whole sectors)
	bat       []uint32
	bitmaps   *tableCache[[]byte] // nil entry: every bit set
}

func openVHD(f File, size int64, head, tail []byte, path string) (Disk, error) {
	atEnd := len(tail) >= vhdFooterSize && string(tail[len(tail)-vhdFooterSize:][:8]) == vhdCookie
	atStart := len(head) >= vhdFooterSize && string(head[:8]) == vhdCookie
	if !atEnd && !atStart {
		return nil, ErrNotVirtual
	}
	if !atEnd {
		// A dynamic VHD keeps its footer at both ends; without the one at
		// the end the file was cut short.
		return nil, corrupt("VHD footer", size-vhdFooterSize, "missing at the end of the file (%d bytes): the file is truncated", size)
	}
	footer := tail[len(tail)-vhdFooterSize:]
	footerOff := size - vhdFooterSize
	if err := vhdCheck(footer, 64, "VHD footer", footerOff); err != nil {
		return nil, err
	}
	be := binary.BigEndian
	typ := be.Uint32(footer[60:])
	vsize := vhdDiskSize(footer)
	if vsize < 0 || vsize > 1<<50 {
		return nil, corrupt("VHD footer", footerOff+48, "disk size %d bytes is impossible", vsize)
	}
	switch typ {
	case vhdFixed:
		if vsize > footerOff {
			return nil, corrupt("VHD footer", footerOff+48, "a fixed disk of %d bytes in a file of %d bytes: the file is truncated", vsize, size)
		}
		d := &mappedDisk{format: VHDFixed, size: vsize, readRun: func(p []byte, off int64) (int, error) {
			return readFileRun(f, size, p, off, "VHD data")
		}, closers: []io.Closer{f}}
		d.alloc = []block.Extent{{Off: 0, Len: vsize}}
		if osf, ok := f.(*os.File); ok {
			d.alloc = clip(dataExtents(osf, size), vsize)
		}
		if vsize == 0 {
			d.alloc = nil
		}
		return d, nil
	case vhdDynamic:
	case vhdDifferencing:
		return nil, refused("a differencing VHD is read through its parent, which Platter does not follow: merge it first (qemu-img convert -O vpc, or Hyper-V's Merge-VHD)")
	default:
		return nil, corrupt("VHD footer", footerOff+60, "disk type %d (2 fixed, 3 dynamic, 4 differencing)", typ)
	}
	if !atStart || string(head[:vhdFooterSize]) != string(footer) {
		return nil, corrupt("VHD footer", 0, "the copy at the start of a dynamic VHD differs from the footer at the end")
	}

	dynOff := be.Uint64(footer[16:])
	if dynOff > 1<<62 || !within(int64(dynOff), vhdDynHeaderSize, footerOff) {
		return nil, corrupt("VHD footer", footerOff+16, "dynamic header at byte %d is past the end of the file (%d bytes)", dynOff, size)
	}
	dh := make([]byte, vhdDynHeaderSize)
	if err := readExact(f, size, dh, int64(dynOff), "VHD dynamic header"); err != nil {
		return nil, err
	}
	if string(dh[:8]) != vhdDynamicCookie {
		return nil, corrupt("VHD dynamic header", int64(dynOff), "no %q cookie", vhdDynamicCookie)
	}
	if err := vhdCheck(dh, 36, "VHD dynamic header", int64(dynOff)); err != nil {
		return nil, err
	}
	v := &vhdImage{f: f, fileSize: size, size: vsize}
	batOff, entries, bs := be.Uint64(dh[16:]), int64(be.Uint32(dh[28:])), int64(be.Uint32(dh[32:]))
	if bs < vhdSector || bs&(bs-1) != 0 {
		return nil, corrupt("VHD dynamic header", int64(dynOff)+32, "block size %d is not a power of two of 512 bytes or more", bs)
	}
	v.blockSize = bs
	v.bitmap = (bs/vhdSector + 8*vhdSector - 1) / (8 * vhdSector) * vhdSector
	need := (vsize + bs - 1) / bs
	switch {
	case entries < need:
		return nil, corrupt("VHD dynamic header", int64(dynOff)+28, "%d table entries map less than the %d-byte disk (it needs %d)", entries, vsize, need)
	case batOff > 1<<62 || !within(int64(batOff), need*4, footerOff):
		return nil, corrupt("VHD block allocation table", int64(batOff&(1<<62-1)), "%d entries lie past the end of the file (%d bytes)", need, size)
	}
	raw := make([]byte, need*4)
	if err := readExact(f, size, raw, int64(batOff), "VHD block allocation table"); err != nil {
		return nil, err
	}
	v.bat = make([]uint32, need)
	for i := range v.bat {
		v.bat[i] = be.Uint32(raw[i*4:])
	}
	v.bitmaps = newTableCache[[]byte](tableCacheBytes)
	alloc, err := v.scan(int64(batOff))
	if err != nil {
		return nil, err
	}
	return &mappedDisk{format: VHD, size: vsize, alloc: alloc, readRun: v.readRun, closers: []io.Closer{f}}, nil
}

// vhdDiskSize is the guest disk's size as qemu reads it: Virtual PC and
// qemu's own older files mean the CHS geometry (cylinders x heads x
// sectors per track), everything else (Hyper-V, Disk2vhd, XenServer,
// qemu's "qem2") the current size field, as does any file whose geometry
// is the largest VHD allows.
func vhdDiskSize(footer []byte) int64 {
	be := binary.BigEndian
	current := be.Uint64(footer[48:])
	chs := int64(be.Uint16(footer[56:])) * int64(footer[58]) * int64(footer[59])
	creator := string(footer[28:32])
	if (creator == "vpc " || creator == "qemu") && chs != 65535*16*255 {
		return chs * vhdSector
	}
	if current > 1<<62 {
		return -1
	}
	return int64(current)
}

// vhdCheck verifies a footer's or dynamic header's checksum (the one's
// complement of the sum of its bytes, the checksum's own left out), at
// byte at of b.
func vhdCheck(b []byte, at int, what string, off int64) error {
	want := binary.BigEndian.Uint32(b[at:])
	if got := vhdChecksum(b, at); got != want {
		return corrupt(what, off+int64(at), "checksum %#08x, computed %#08x", want, got)
	}
	return nil
}

func vhdChecksum(b []byte, at int) uint32 {
	var sum uint32
	for i, c := range b {
		if i < at || i >= at+4 {
			sum += uint32(c)
		}
	}
	return ^sum
}

// scan checks every allocated block (inside the file, not overlapping
// another: so the bitmaps read add up to less than the file holds) and lists
// the sectors their bitmaps mark as holding data.
func (v *vhdImage) scan(batOff int64) ([]block.Extent, error) {
	end := v.fileSize - vhdFooterSize
	var starts []int64
	for i, e := range v.bat {
		if e == vhdUnused {
			continue
		}
		start := int64(e) * vhdSector
		if !within(start, v.bitmap+min(v.blockSize, v.size-int64(i)*v.blockSize), end) {
			return nil, corrupt("VHD block allocation table", batOff+int64(i)*4, "block %d at byte %d lies past the end of the file (%d bytes)", i, start, v.fileSize)
		}
		starts = append(starts, start)
	}
	slices.Sort(starts)
	for i := 1; i < len(starts); i++ {
		if starts[i]-starts[i-1] < v.bitmap+v.blockSize {
			return nil, corrupt("VHD block", starts[i], "overlaps the block at byte %d", starts[i-1])
		}
	}
	var l extentList
	for i, e := range v.bat {
		if e == vhdUnused {
			continue
		}
		base := int64(i) * v.blockSize
		n := min(v.blockSize, v.size-base)
		bm, err := v.sectorBitmap(e)
		if err != nil {
			return nil, err
		}
		for s := int64(0); s < n; {
			set, k := vhdBitRun(bm, s/vhdSector, (n+vhdSector-1)/vhdSector)
			run := min(k*vhdSector, n-s)
			if set {
				l.add(base+s, run)
			}
			s += run
		}
	}
	return l, nil
}

// sectorBitmap returns the bitmap of the block whose BAT entry is e,
// nil when every bit is set (as qemu writes every block's).
func (v *vhdImage) sectorBitmap(e uint32) ([]byte, error) {
	off := int64(e) * vhdSector
	if bm, ok := v.bitmaps.get(off); ok {
		return bm, nil
	}
	bm := make([]byte, v.bitmap)
	if err := readExact(v.f, v.fileSize, bm, off, "VHD sector bitmap"); err != nil {
		return nil, err
	}
	full := true
	for _, c := range bm {
		if c != 0xff {
			full = false
			break
		}
	}
	if full {
		bm = nil
	}
	v.bitmaps.put(off, bm, int64(len(bm))+16)
	return bm, nil
}

// vhdBitRun says whether sector s of a block is marked in bm (nil: all
// are) and how many sectors from s, up to count, are marked alike. Bit 7
// of byte 0 is the block's first sector.
func vhdBitRun(bm []byte, s, count int64) (bool, int64) {
	if bm == nil {
		return true, count - s
	}
	bit := func(i int64) bool { return bm[i/8]&(0x80>>(i%8)) != 0 }
	set := bit(s)
	k := int64(1)
	for s+k < count && bit(s+k) == set {
		k++
	}
	return set, k
}

func (v *vhdImage) readRun(p []byte, off int64) (int, error) {
	bi, in := off/v.blockSize, off%v.blockSize
	n := min(int64(len(p)), v.blockSize-in)
	e := v.bat[bi]
	if e == vhdUnused {
		clear(p[:n])
		return int(n), nil
	}
	bm, err := v.sectorBitmap(e)
	if err != nil {
		return 0, err
	}
	set, k := vhdBitRun(bm, in/vhdSector, v.blockSize/vhdSector)
	n = min(n, k*vhdSector-in%vhdSector)
	if !set {
		clear(p[:n])
		return int(n), nil
	}
	return readFileRun(v.f, v.fileSize, p[:n], int64(e)*vhdSector+v.bitmap+in, "VHD block data")
}
