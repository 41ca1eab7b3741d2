// Package udf reads UDF (ECMA-167 as OSTA's Universal Disk Format
// profiles it), the filesystem of DVDs, Blu-ray discs and of the
// "bridge" discs genisoimage -udf and mkisofs -udf write (UDF and ISO
// 9660 over the same files): detection, label and UUID as blkid shows
// them, and files (read-only).
//
// This file finds the volume: the Volume Recognition Sequence, an
// Anchor Volume Descriptor Pointer, the Volume Descriptor Sequence (the
// main one, else the reserve one), its partitions and the partition
// maps of the logical volume (type 1, and the metadata partition of UDF
// 2.50 and later), and the File Set Descriptor. Every descriptor's tag is
// checked (checksum, CRC, location) and every location bounded by its
// partition and the volume: damage is a *block.CorruptError naming the
// byte where it was found, never a panic.
package udf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Descriptor tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
const (
	tagPVD  = 1
	tagAVDP = 2
	tagVDP  = 3
	tagPD   = 5
	tagLVD  = 6
	tagTD   = 8
	tagFSD  = 256
	tagFID  = 257
	tagAED  = 258
	tagFE   = 261
	tagEFE  = 266
)

const (
	vrsStart = 32768 // the Volume Recognition Sequence's first descriptor
	// maxVRS bounds the descriptors of the Volume Recognition Sequence
	// read: an ISO 9660 bridge disc puts its own (CD001) first.
	maxVRS = 64
	// maxVDS bounds the descriptors of a Volume Descriptor Sequence read,
	// Volume Descriptor Pointers followed included.
	maxVDS       = 256
	anchorSector = 256
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "udf", Off: off, Msg: fmt.Sprintf(format, args...)}
}

func notMine(why string) error { return fmt.Errorf("udf: %s: %w", why, block.ErrNotMine) }

var le = binary.LittleEndian

// volume is a UDF volume found in r: its block size, its partitions as
// the logical volume's partition maps number them, and its identity.
type volume struct {
	r    io.ReaderAt
	size int64
	bs   int64 // the logical block size: the sector size the anchor is found by

	volSetID []byte // the Primary Volume Descriptor's Volume Set Identifier (dstring)
	lvID     []byte // the Logical Volume Descriptor's Logical Volume Identifier (dstring)
	fsd      longAD // where the File Set Descriptor is
	parts    []*partition
	// mapErr says why the logical volume's partitions cannot be read (a
	// partition map of a kind Platter does not read, a damaged metadata
	// file): the volume is still found and named, its files not read.
	mapErr error
}

// partition is one partition map of the logical volume: its blocks as a
// byte space (a physical partition: a range of the volume; a metadata
// partition: the metadata file's bytes in its physical partition).
type partition struct {
	r    io.ReaderAt // the partition's bytes from 0
	size int64
	// phys maps a byte of the partition to a byte of the volume, for
	// error messages (-1 where it maps to none).
	phys func(off int64) int64
}

// longAD is a long allocation descriptor (ECMA-167 4/14.14.2): an extent
// in a partition of the logical volume.
type longAD struct {
	length uint32 // with the extent type in its top two bits
	lbn    uint32
	part   uint16
}

func parseLongAD(b []byte) longAD {
	return longAD{length: le.Uint32(b), lbn: le.Uint32(b[4:]), part: le.Uint16(b[8:])}
}

// checkTag checks the descriptor tag at the start of b, read from byte
// off of the volume: its checksum, its CRC over as much of b as it
// covers, its identifier (want, or any when 0) and the block it says it
// was written at (loc, unless -1).
func checkTag(b []byte, off int64, want uint16, loc int64) (uint16, error) {
	if len(b) < 16 {
		return 0, corrupt(off, "a descriptor tag cut short (%d bytes)", len(b))
	}
	var sum byte
	for i := 0; i < 16; i++ {
		if i != 4 {
			sum += b[i]
		}
	}
	id := le.Uint16(b)
	if sum != b[4] {
		return id, corrupt(off, "descriptor tag (identifier %d) checksum 0x%02x, its bytes sum to 0x%02x", id, b[4], sum)
	}
	if want != 0 && id != want {
		return id, corrupt(off, "descriptor tag identifier %d where %d belongs", id, want)
	}
	if n := int(le.Uint16(b[10:])); n > 0 {
		if 16+n > len(b) {
			return id, corrupt(off, "descriptor (identifier %d) CRC covers %d bytes, past its %d", id, n, len(b)-16)
		}
		if got, crc := crc16(b[16:16+n]), le.Uint16(b[8:]); got != crc {
			return id, corrupt(off, "descriptor (identifier %d) CRC 0x%04x, its bytes give 0x%04x", id, crc, got)
		}
	}
	if at := int64(le.Uint32(b[12:])); loc >= 0 && at != loc {
		return id, corrupt(off, "descriptor (identifier %d) says it is at block %d, found at block %d", id, at, loc)
	}
	return id, nil
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for k := 0; k < 8; k++ {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 is ECMA-167's CRC (1/7.2.6): CRC-ITU-T, x^16+x^12+x^5+1, from 0.
func crc16(b []byte) uint16 {
	var c uint16
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>8)^x]
	}
	return c
}

// recognise reads the Volume Recognition Sequence with descriptors of
// step bytes: true when it holds an NSR descriptor (NSR02, NSR03) after
// a BEA01, before its TEA01.
func recognise(r io.ReaderAt, size, step int64) bool {
	b := make([]byte, 7)
	inBEA := false
	for i := int64(0); i < maxVRS; i++ {
		off := vrsStart + i*step
		if off+7 > size || vfs.ReadFull(r, b, off) != nil {
			return false
		}
		id := string(b[1:6])
		switch {
		case id == "BEA01":
			inBEA = true
		case id == "TEA01":
			inBEA = false
		case inBEA && (id == "NSR02" || id == "NSR03"):
			return true
		case id == "CD001" || id == "CDW02" || id == "BOOT2" || inBEA:
		default:
			return false // past the sequence
		}
	}
	return false
}

// open finds the UDF volume in the size bytes of r. Not UDF (no NSR
// descriptor in the Volume Recognition Sequence): an error wrapping
// block.ErrNotMine; UDF but no anchor or no readable descriptor
// sequence: a *block.CorruptError. A volume whose partitions cannot be
// read (a virtual or sparable partition map, a damaged metadata file)
// is returned, named, with mapErr saying why.
func open(r io.ReaderAt, size int64) (*volume, error) {
	found := false
	for _, step := range []int64{2048, 4096} {
		if recognise(r, size, step) {
			found = true
			break
		}
	}
	if !found {
		return nil, notMine("no NSR descriptor in a Volume Recognition Sequence at byte 32768")
	}
	var firstErr error
	for _, bs := range []int64{2048, 512, 1024, 4096} {
		n := size / bs
		for _, sector := range []int64{anchorSector, n - 256, n - 1} {
			if sector < anchorSector || (sector+1)*bs > size {
				continue
			}
			v, err := openAnchor(r, size, bs, sector)
			if err == nil {
				return v, nil
			}
			if firstErr == nil && !isNoAnchor(err) {
				firstErr = err
			}
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, corrupt(anchorSector*2048, "no Anchor Volume Descriptor Pointer at sector 256, N-256 or N-1 for blocks of 512 to 4096 bytes")
}

// errNoAnchor is an anchor that is not there (its tag not an anchor's).
type errNoAnchor struct{ error }

func isNoAnchor(err error) bool { _, ok := err.(errNoAnchor); return ok }

// openAnchor reads the anchor in sector (of bs bytes) and the volume it
// points to.
func openAnchor(r io.ReaderAt, size, bs, sector int64) (*volume, error) {
	b := make([]byte, 512)
	off := sector * bs
	if err := vfs.ReadFull(r, b, off); err != nil {
		return nil, errNoAnchor{err}
	}
	if int64(le.Uint32(b[12:])) != sector {
		// Not written for this sector: an anchor of another block size
		// (a 2048-byte volume's N-1 read as 512-byte sectors), or none.
		return nil, errNoAnchor{corrupt(off, "no anchor for block %d", sector)}
	}
	if id, err := checkTag(b, off, tagAVDP, sector); err != nil {
		if id != tagAVDP {
			return nil, errNoAnchor{err}
		}
		return nil, err
	}
	v := &volume{r: r, size: size, bs: bs}
	main := v.readVDS(int64(le.Uint32(b[16:])), int64(le.Uint32(b[20:])))
	if main.err == nil {
		v.mapErr = v.use(main)
		return v, nil
	}
	reserve := v.readVDS(int64(le.Uint32(b[24:])), int64(le.Uint32(b[28:])))
	if reserve.err != nil {
		return nil, fmt.Errorf("the main Volume Descriptor Sequence: %w (and the reserve one: %v)", main.err, reserve.err)
	}
	v.mapErr = v.use(reserve)
	return v, nil
}

// vds is what a Volume Descriptor Sequence holds: the first descriptor
// of each kind (the first Partition Descriptor of each number), as blkid
// takes them.
type vds struct {
	pvd, lvd []byte
	pds      map[uint16][]byte
	err      error
}

func (v *volume) readVDS(length, loc int64) vds {
	d := vds{pds: map[uint16][]byte{}}
	blocks := length / v.bs
	for n := 0; n < maxVDS && blocks > 0; n++ {
		off := loc * v.bs
		if loc < 0 || off+v.bs > v.size {
			d.err = corrupt(off, "the Volume Descriptor Sequence runs to block %d, past the volume's end", loc)
			return d
		}
		b := make([]byte, v.bs)
		if err := vfs.ReadFull(v.r, b, off); err != nil {
			d.err = fmt.Errorf("udf: read the volume descriptor at byte %d: %w", off, err)
			return d
		}
		id, err := checkTag(b, off, 0, loc)
		if err != nil {
			d.err = err
			return d
		}
		switch id {
		case tagPVD:
			if d.pvd == nil {
				d.pvd = b
			}
		case tagLVD:
			if d.lvd == nil {
				d.lvd = b
			}
		case tagPD:
			if n := le.Uint16(b[22:]); d.pds[n] == nil {
				d.pds[n] = b
			}
		case tagVDP:
			// The sequence goes on elsewhere (ECMA-167 3/10.3).
			length, loc = int64(le.Uint32(b[20:])), int64(le.Uint32(b[24:]))
			blocks = length / v.bs
			continue
		case tagTD:
			blocks = 0
			continue
		}
		loc++
		blocks--
	}
	switch {
	case d.pvd == nil:
		d.err = corrupt(loc*v.bs, "no Primary Volume Descriptor in the Volume Descriptor Sequence")
	case d.lvd == nil:
		d.err = corrupt(loc*v.bs, "no Logical Volume Descriptor in the Volume Descriptor Sequence")
	}
	return d
}

// use takes the volume's identity, partitions and File Set Descriptor
// from d.
func (v *volume) use(d vds) error {
	v.volSetID = d.pvd[72 : 72+128]
	lvd := d.lvd
	lvdOff := int64(le.Uint32(lvd[12:])) * v.bs
	v.lvID = lvd[84 : 84+128]
	if lbs := int64(le.Uint32(lvd[212:])); lbs != v.bs {
		return corrupt(lvdOff, "the logical volume's blocks are %d bytes, its sectors %d: not supported", lbs, v.bs)
	}
	v.fsd = parseLongAD(lvd[248:])
	mtl, nmaps := int64(le.Uint32(lvd[264:])), int64(le.Uint32(lvd[268:]))
	if 440+mtl > v.bs || nmaps > mtl/6 {
		return corrupt(lvdOff, "the partition map table of %d bytes and %d maps does not fit its block", mtl, nmaps)
	}
	maps := lvd[440 : 440+mtl]
	type meta struct {
		index, phys int
		file        uint32
		mirror      uint32
	}
	var metas []meta
	for i := int64(0); i < nmaps; i++ {
		if len(maps) < 2 || int(maps[1]) < 2 || int(maps[1]) > len(maps) {
			return corrupt(lvdOff, "partition map %d runs past the map table", i)
		}
		m := maps[:maps[1]]
		maps = maps[maps[1]:]
		switch {
		case m[0] == 1 && len(m) == 6:
			p, err := v.physical(d, le.Uint16(m[4:]), lvdOff)
			if err != nil {
				return err
			}
			v.parts = append(v.parts, p)
		case m[0] == 2 && len(m) == 64:
			ident := string(bytes.TrimRight(m[5:28], "\x00"))
			if ident != "*UDF Metadata Partition" {
				return fmt.Errorf("udf: partition map %d is a %q, which Platter does not read (at byte %d)", i, ident, lvdOff)
			}
			p, err := v.physical(d, le.Uint16(m[38:]), lvdOff)
			if err != nil {
				return err
			}
			v.parts = append(v.parts, p)
			metas = append(metas, meta{index: len(v.parts) - 1, phys: len(v.parts) - 1, file: le.Uint32(m[40:]), mirror: le.Uint32(m[44:])})
		default:
			return fmt.Errorf("udf: partition map %d of type %d and %d bytes, which Platter does not read (at byte %d)", i, m[0], len(m), lvdOff)
		}
	}
	// A metadata partition is its metadata file's bytes, in its physical
	// partition (UDF 2.50 2.2.10); its mirror stands in for a damaged one.
	for _, m := range metas {
		phys := v.parts[m.phys]
		var p *partition
		var firstErr error
		for _, at := range []uint32{m.file, m.mirror} {
			f, err := v.node(phys, m.phys, at)
			if err == nil {
				var data *fileData
				if data, err = v.data(f); err == nil {
					p = &partition{r: data, size: data.size, phys: data.phys}
					break
				}
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if p == nil {
			return fmt.Errorf("udf: the metadata partition's file and its mirror: %w", firstErr)
		}
		v.parts[m.index] = p
	}
	return nil
}

// physical is the partition numbered num by its Partition Descriptor in d.
func (v *volume) physical(d vds, num uint16, lvdOff int64) (*partition, error) {
	pd := d.pds[num]
	if pd == nil {
		return nil, corrupt(lvdOff, "a partition map names partition %d, which no Partition Descriptor describes", num)
	}
	start, n := int64(le.Uint32(pd[188:]))*v.bs, int64(le.Uint32(pd[192:]))*v.bs
	if start+n > v.size {
		return nil, corrupt(int64(le.Uint32(pd[12:]))*v.bs, "partition %d (bytes %d-%d) runs past the volume's %d bytes", num, start, start+n, v.size)
	}
	return &partition{r: io.NewSectionReader(v.r, start, n), size: n, phys: func(off int64) int64 { return start + off }}, nil
}

// block reads logical block lbn of partition part whole.
func (v *volume) block(p *partition, lbn uint32) ([]byte, int64, error) {
	off := int64(lbn) * v.bs
	at := p.phys(off)
	if off+v.bs > p.size {
		return nil, at, corrupt(p.phys(0), "block %d is past its partition's %d blocks", lbn, p.size/v.bs)
	}
	b := make([]byte, v.bs)
	if err := vfs.ReadFull(p.r, b, off); err != nil {
		return nil, at, fmt.Errorf("udf: read block %d of a partition (byte %d): %w", lbn, at, err)
	}
	return b, at, nil
}

// part is the partition of reference number ref.
func (v *volume) part(ref uint16, off int64) (*partition, error) {
	if int(ref) >= len(v.parts) {
		return nil, corrupt(off, "partition reference %d; the logical volume has %d partitions", ref, len(v.parts))
	}
	return v.parts[ref], nil
}
