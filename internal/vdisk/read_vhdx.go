package vdisk

import (
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"io"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

// The VHDX reader ([MS-VHDX] 2.0). The first MiB holds the file
// identifier, two copies of the header (the current one has the higher
// sequence number and a valid CRC-32C) and two copies of the region
// table, which places the metadata region (block size, disk size, sector
// size) and the block allocation table (BAT). The BAT gives each payload
// block a state and a place in the file (in MiB); after every chunk
// ratio payload entries comes one entry of a sector bitmap block, which
// only differencing disks use. A header whose log GUID is set says the
// log holds writes not yet applied to the file: such a file is refused,
// as is a differencing disk. All fields are little-endian.

func init() { registerReader(VHDX, openVHDX) }

const (
	vhdxIdentifier   = "vhdxfile"
	vhdxHeaderSize   = 4 << 10
	vhdxRegionSize   = 64 << 10
	vhdxMaxRegions   = 2047
	vhdxMaxMetaItems = 2047
	vhdxMiB          = 1 << 20

	// Payload block states (the low 3 bits of a BAT entry).
	vhdxNotPresent       = 0
	vhdxUndefined        = 1
	vhdxZero             = 2
	vhdxUnmapped         = 3
	vhdxFullyPresent     = 6
	vhdxPartiallyPresent = 7
)

var vhdxCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// GUIDs as they are stored: the first three fields little-endian.
var (
	vhdxRegionBAT      = vhdxGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	vhdxRegionMetadata = vhdxGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	vhdxFileParameters = vhdxGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	vhdxVirtualSize    = vhdxGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	vhdxLogicalSector  = vhdxGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	// Items known and not needed to read a disk without a parent.
	vhdxPhysicalSector = vhdxGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	vhdxDiskID         = vhdxGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	vhdxParentLocator  = vhdxGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
)

func vhdxGUID(s string) [16]byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("vdisk: bad GUID " + s)
	}
	var g [16]byte
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g
}

type vhdxImage struct {
	f          File
	fileSize   int64
	size       int64
	blockSize  int64
	chunkRatio int64
	bat        []uint64
	batOff     int64
}

func openVHDX(f File, size int64, head, tail []byte, path string) (Disk, error) {
	if len(head) < 8 || string(head[:8]) != vhdxIdentifier {
		return nil, ErrNotVirtual
	}
	le := binary.LittleEndian
	if size < vhdxMiB {
		return nil, corrupt("VHDX", 0, "the file is %d bytes, shorter than its headers and region tables (1 MiB)", size)
	}

	// The current header: valid, with the higher sequence number.
	var cur []byte
	var curSeq uint64
	for _, off := range []int64{64 << 10, 128 << 10} {
		h := make([]byte, vhdxHeaderSize)
		if err := readExact(f, size, h, off, "VHDX header"); err != nil {
			return nil, err
		}
		if string(h[:4]) != "head" || !vhdxChecksumOK(h) || le.Uint16(h[66:]) != 1 {
			continue
		}
		if seq := le.Uint64(h[8:]); cur == nil || seq > curSeq {
			cur, curSeq = h, seq
		}
	}
	if cur == nil {
		return nil, corrupt("VHDX header", 64<<10, "neither copy (at bytes 65536 and 131072) is valid")
	}
	if [16]byte(cur[48:64]) != ([16]byte{}) {
		return nil, refused("the VHDX was not closed cleanly: its log holds writes not yet applied to the disk; open it once read-write (Hyper-V, or qemu-img check -r all, which replays the log) and try again")
	}

	// The region table: the first copy, or the second if the first is damaged.
	var rt []byte
	for _, off := range []int64{192 << 10, 256 << 10} {
		t := make([]byte, vhdxRegionSize)
		if err := readExact(f, size, t, off, "VHDX region table"); err != nil {
			return nil, err
		}
		if string(t[:4]) == "regi" && vhdxChecksumOK(t) {
			rt = t
			break
		}
	}
	if rt == nil {
		return nil, corrupt("VHDX region table", 192<<10, "neither copy (at bytes 196608 and 262144) is valid")
	}
	count := le.Uint32(rt[8:])
	if count > vhdxMaxRegions {
		return nil, corrupt("VHDX region table", 192<<10+8, "%d entries (at most %d)", count, vhdxMaxRegions)
	}
	var batOff, batLen, metaOff, metaLen int64
	for i := range int64(count) {
		e := rt[16+i*32:]
		id := [16]byte(e[:16])
		off, n, required := le.Uint64(e[16:]), int64(le.Uint32(e[24:])), le.Uint32(e[28:])&1 != 0
		at := 192<<10 + 16 + i*32
		if off > 1<<62 || off%vhdxMiB != 0 || off < vhdxMiB || n%vhdxMiB != 0 || !within(int64(off), n, size) {
			return nil, corrupt("VHDX region table entry", at, "region of %d bytes at byte %d is misaligned or past the end of the file (%d bytes)", n, off, size)
		}
		switch {
		case id == vhdxRegionBAT:
			batOff, batLen = int64(off), n
		case id == vhdxRegionMetadata:
			metaOff, metaLen = int64(off), n
		case required:
			return nil, refused("the VHDX has a required region this reader does not know (%x)", id)
		}
	}
	if batLen == 0 || metaLen == 0 {
		return nil, corrupt("VHDX region table", 192<<10, "no BAT or no metadata region")
	}

	// The metadata: block size, disk size, logical sector size.
	meta := make([]byte, metaLen)
	if err := readExact(f, size, meta, metaOff, "VHDX metadata region"); err != nil {
		return nil, err
	}
	if string(meta[:8]) != "metadata" {
		return nil, corrupt("VHDX metadata table", metaOff, "no \"metadata\" signature")
	}
	items := int64(le.Uint16(meta[10:]))
	if items > vhdxMaxMetaItems {
		return nil, corrupt("VHDX metadata table", metaOff+10, "%d entries (at most %d)", items, vhdxMaxMetaItems)
	}
	var params, vsize, sector []byte
	for i := range items {
		e := meta[32+i*32:]
		id := [16]byte(e[:16])
		off, n, flags := int64(le.Uint32(e[16:])), int64(le.Uint32(e[20:])), le.Uint32(e[24:])
		at := metaOff + 32 + i*32
		if n > 0 && (off < vhdxRegionSize || !within(off, n, metaLen)) {
			return nil, corrupt("VHDX metadata entry", at, "item of %d bytes at byte %d of the metadata region lies outside it", n, off)
		}
		var item []byte
		if n > 0 {
			item = meta[off : off+n]
		}
		switch {
		case id == vhdxFileParameters:
			params = item
		case id == vhdxVirtualSize:
			vsize = item
		case id == vhdxLogicalSector:
			sector = item
		case id == vhdxPhysicalSector, id == vhdxDiskID, id == vhdxParentLocator:
		case flags&4 != 0:
			return nil, refused("the VHDX has required metadata this reader does not know (%x)", id)
		}
	}
	switch {
	case len(params) < 8:
		return nil, corrupt("VHDX metadata table", metaOff, "no file parameters")
	case len(vsize) < 8:
		return nil, corrupt("VHDX metadata table", metaOff, "no virtual disk size")
	case len(sector) < 4:
		return nil, corrupt("VHDX metadata table", metaOff, "no logical sector size")
	}
	x := &vhdxImage{f: f, fileSize: size, batOff: batOff}
	x.blockSize = int64(le.Uint32(params))
	if le.Uint32(params[4:])&2 != 0 {
		return nil, refused("a differencing VHDX is read through its parent, which Platter does not follow: merge it first (Hyper-V's Merge-VHD, or qemu-img convert)")
	}
	ss := int64(le.Uint32(sector))
	x.size = int64(le.Uint64(vsize) & (1<<63 - 1))
	switch {
	case x.blockSize < vhdxMiB || x.blockSize > 256*vhdxMiB || x.blockSize&(x.blockSize-1) != 0:
		return nil, corrupt("VHDX file parameters", metaOff, "block size %d (a power of two from 1 MiB to 256 MiB)", x.blockSize)
	case ss != 512 && ss != 4096:
		return nil, corrupt("VHDX logical sector size", metaOff, "%d bytes (512 or 4096)", ss)
	case x.size > 64<<40 || x.size%ss != 0:
		return nil, corrupt("VHDX virtual disk size", metaOff, "%d bytes (a multiple of the sector size, at most 64 TiB)", x.size)
	}
	x.chunkRatio = (1 << 23) * ss / x.blockSize
	blocks := (x.size + x.blockSize - 1) / x.blockSize
	entries := blocks
	if blocks > 0 {
		entries += (blocks - 1) / x.chunkRatio
	}
	if entries*8 > batLen {
		return nil, corrupt("VHDX BAT", batOff, "region of %d bytes holds fewer than the %d entries the disk needs", batLen, entries)
	}
	raw := make([]byte, entries*8)
	if err := readExact(f, size, raw, batOff, "VHDX BAT"); err != nil {
		return nil, err
	}
	x.bat = make([]uint64, entries)
	for i := range x.bat {
		x.bat[i] = le.Uint64(raw[i*8:])
	}
	alloc, err := x.scan()
	if err != nil {
		return nil, err
	}
	return &mappedDisk{format: VHDX, size: x.size, alloc: alloc, readRun: x.readRun, closers: []io.Closer{f}}, nil
}

// vhdxChecksumOK checks a header's or region table's CRC-32C, computed
// with its own checksum field (bytes 4-7) as zero.
func vhdxChecksumOK(b []byte) bool {
	want := binary.LittleEndian.Uint32(b[4:])
	c := crc32.Update(0, vhdxCastagnoli, b[:4])
	c = crc32.Update(c, vhdxCastagnoli, []byte{0, 0, 0, 0})
	c = crc32.Update(c, vhdxCastagnoli, b[8:])
	return c == want
}

// entry returns payload block bi's BAT entry and where it is in the file.
func (x *vhdxImage) entry(bi int64) (uint64, int64) {
	i := bi + bi/x.chunkRatio
	return x.bat[i], x.batOff + i*8
}

// scan checks every payload block's state and place and lists the
// blocks present.
func (x *vhdxImage) scan() ([]block.Extent, error) {
	var l extentList
	for bi := int64(0); bi*x.blockSize < x.size; bi++ {
		e, at := x.entry(bi)
		n := min(x.blockSize, x.size-bi*x.blockSize)
		switch e & 7 {
		case vhdxNotPresent, vhdxUndefined, vhdxZero, vhdxUnmapped:
		case vhdxFullyPresent:
			off := int64(e>>20) * vhdxMiB
			if off < vhdxMiB || !within(off, n, x.fileSize) {
				return nil, corrupt("VHDX BAT entry", at, "block %d at byte %d lies outside the file (%d bytes)", bi, off, x.fileSize)
			}
			l.add(bi*x.blockSize, n)
		case vhdxPartiallyPresent:
			return nil, corrupt("VHDX BAT entry", at, "block %d is partially present, which only a differencing disk's may be", bi)
		default:
			return nil, corrupt("VHDX BAT entry", at, "block %d has state %d", bi, e&7)
		}
	}
	return l, nil
}

func (x *vhdxImage) readRun(p []byte, off int64) (int, error) {
	bi, in := off/x.blockSize, off%x.blockSize
	n := min(int64(len(p)), x.blockSize-in)
	e, _ := x.entry(bi)
	if e&7 != vhdxFullyPresent {
		clear(p[:n])
		return int(n), nil
	}
	start := int64(e>>20) * vhdxMiB
	// Blocks that follow each other in the file too are read in one call.
	for n < int64(len(p)) && (bi+1)*x.blockSize < x.size {
		e2, _ := x.entry(bi + 1)
		if e2&7 != vhdxFullyPresent || int64(e2>>20)*vhdxMiB != start+(bi+1-off/x.blockSize)*x.blockSize {
			break
		}
		bi++
		n = min(int64(len(p)), n+x.blockSize)
	}
	return readFileRun(x.f, x.fileSize, p[:n], start+in, "VHDX payload block")
}
