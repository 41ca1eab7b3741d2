package vdisk

// VHDX, as Microsoft's [MS-VHDX] (version 1.0) lays it out; every number
// in it is little-endian, GUIDs in Microsoft's mixed-endian form.
//
//	0       file identifier ("vhdxfile", the creator in UTF-16)
//	64 KiB  header 1, 128 KiB header 2 (CRC-32C, sequence numbers 1 and 2)
//	192 KiB region table 1, 256 KiB region table 2 (the BAT, the metadata)
//	1 MiB   log (1 MiB, empty: the headers' LogGuid is zero)
//	2 MiB   metadata (1 MiB: the table, then the items at 64 KiB)
//	3 MiB   BAT (whole MiBs)
//	then    payload blocks, 1 MiB each, in disk order
//
// Everything past the header section sits on a 1 MiB boundary, as the
// spec requires. Only blocks holding a non-zero byte of the source's
// data are allocated (PAYLOAD_BLOCK_FULLY_PRESENT); every other BAT entry
// is PAYLOAD_BLOCK_NOT_PRESENT, which reads as zeros in a disk without a
// parent, and so are the sector bitmap entries interleaved after each
// chunk of payload entries (sector bitmaps serve differencing disks
// only). Inside a block, all-zero 4 KiB pages are holes in the file.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
)

func init() {
	register(VHDX, writeVHDX, false)
}

// vhdxOutBlock is the payload block size. 1 MiB, not Hyper-V's default
// 32 MiB: Microsoft's advice for Linux guests ("Best Practices for
// running Linux on Hyper-V") is 1 MiB blocks, since ext4 and XFS spread
// their metadata over the disk and 32 MiB blocks allocate a block for
// each few KiB of it; a converted disk is allocated only where it holds
// data, so the finer the grain, the closer the file is to the data. It
// is also the grain the payload must be aligned to anyway, and keeps
// the blocks in flight small. The BAT costs 8 bytes a MiB (16 MiB for a
// 2 TiB disk), read only where allocated.
const vhdxOutBlock = 1 << 20

// vhdxOutMax is the spec's largest virtual disk: 64 TiB.
const vhdxOutMax = 64 << 40

var vhdxCRC = crc32.MakeTable(crc32.Castagnoli)

// writeVHDX writes a dynamic VHDX. Its BAT is written after the data,
// once the blocks' places are known, so out must be a regular file.
func writeVHDX(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	// The logical sector size is the disk's: a disk of 4096-byte sectors
	// keeps its partition table where its guest will look for it.
	sector := int64(512)
	if s, ok := src.(interface{ SectorSize() int64 }); ok && s.SectorSize() == 4096 {
		sector = 4096
	}
	size := ceilTo(src.Size(), sector)
	if size > vhdxOutMax {
		return fmt.Errorf("vhdx: a %d-byte disk does not fit: VHDX holds up to 64 TiB", src.Size())
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f == nil {
		return errors.New("vhdx is written to a regular file: its tables come before its data")
	}
	if err := writeVHDXFile(ctx, f, src, data, size, sector, progress); err != nil {
		return fmt.Errorf("vhdx: %w", err)
	}
	return nil
}

func writeVHDXFile(ctx context.Context, f *outFile, src Source, data []block.Extent, size, sector int64, progress Progress) error {
	const (
		mib     = 1 << 20
		logOff  = 1 * mib
		logLen  = 1 * mib
		metaOff = 2 * mib
		metaLen = 1 * mib
		batOff  = 3 * mib
	)
	// A chunk is the disk bytes one sector bitmap block (2^23 sectors)
	// covers; its payload entries are followed by that bitmap's entry.
	chunk := (int64(1) << 23) * sector / vhdxOutBlock
	blocks := ceilDiv(size, vhdxOutBlock)
	entries := blocks + (blocks-1)/chunk
	batLen := ceilTo(entries*8, mib)
	dataOff := batOff + batLen

	// The blocks written, in disk order: block placed[k] is at
	// dataOff + k MiB. Proportional to the data, not to the disk.
	var placed []int64
	err := readGrains(ctx, src, data, vhdPage, nil, func(p *piece) error {
		err := p.nonZeroRuns(vhdPage, func(off, n int64) error {
			for n > 0 {
				blk := off / vhdxOutBlock
				if len(placed) == 0 || placed[len(placed)-1] != blk { // its first non-zero byte
					placed = append(placed, blk)
				}
				at := dataOff + int64(len(placed)-1)*vhdxOutBlock + off - blk*vhdxOutBlock
				k := min(n, (blk+1)*vhdxOutBlock-off)
				if _, err := f.WriteAt(p.buf[off-p.off:off-p.off+k], at); err != nil {
					return err
				}
				off, n = off+k, n-k
			}
			return nil
		})
		if err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err != nil {
		return err
	}
	if err := vhdxWriteBAT(f, batOff, dataOff, chunk, placed); err != nil {
		return err
	}

	// The header section and the metadata.
	id := make([]byte, 64<<10)
	copy(id, "vhdxfile")
	for i, u := range utf16.Encode([]rune("Platter")) {
		binary.LittleEndian.PutUint16(id[8+2*i:], u)
	}
	fileWrite, dataWrite, page83 := vhdxRandomGUID(), vhdxRandomGUID(), vhdxRandomGUID()
	header := func(seq uint64) []byte {
		h := make([]byte, 4096)
		copy(h, "head")
		binary.LittleEndian.PutUint64(h[8:], seq)
		copy(h[16:], fileWrite[:])
		copy(h[32:], dataWrite[:])
		// LogGuid (48) zero: the log holds nothing to replay.
		binary.LittleEndian.PutUint16(h[64:], 0) // log version
		binary.LittleEndian.PutUint16(h[66:], 1) // version
		binary.LittleEndian.PutUint32(h[68:], logLen)
		binary.LittleEndian.PutUint64(h[72:], logOff)
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, vhdxCRC))
		return h
	}
	regions := make([]byte, 64<<10)
	copy(regions, "regi")
	binary.LittleEndian.PutUint32(regions[8:], 2)
	for i, r := range []struct {
		guid     [16]byte
		off, len int64
	}{
		{vhdxParseGUID("2DC27766-F623-4200-9D64-115E9BFD4A08"), batOff, batLen},   // BAT
		{vhdxParseGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E"), metaOff, metaLen}, // metadata
	} {
		e := regions[16+32*i:]
		copy(e, r.guid[:])
		binary.LittleEndian.PutUint64(e[16:], uint64(r.off))
		binary.LittleEndian.PutUint32(e[24:], uint32(r.len))
		binary.LittleEndian.PutUint32(e[28:], 1) // required
	}
	binary.LittleEndian.PutUint32(regions[4:], crc32.Checksum(regions, vhdxCRC))

	const (
		isVirtualDisk = 2
		isRequired    = 4
	)
	meta := make([]byte, 64<<10+64)
	copy(meta, "metadata")
	item := 64 << 10 // items follow the 64 KiB table
	items := []struct {
		guid  string
		value []byte
		flags uint32
	}{
		{"CAA16737-FA36-4D43-B3B6-33F0AA44E76B", vhdxLE32(vhdxOutBlock, 0), isRequired}, // file parameters: no LeaveBlocksAllocated, no parent
		{"2FA54224-CD1B-4876-B211-5DBED83BF4B8", vhdxLE64(uint64(size)), isRequired | isVirtualDisk},
		{"BECA12AB-B2E6-4523-93EF-C309E000C746", page83[:], isRequired | isVirtualDisk},
		{"8141BF1D-A96F-4709-BA47-F233A8FAAB5F", vhdxLE32(uint32(sector)), isRequired | isVirtualDisk},
		// 4096: the guest is told to keep 4 KiB alignment, as Hyper-V's own VHDXs do.
		{"CDA348C7-445D-4471-9CC9-E9885251C556", vhdxLE32(4096), isRequired | isVirtualDisk},
	}
	binary.LittleEndian.PutUint16(meta[10:], uint16(len(items)))
	for i, it := range items {
		e := meta[32+32*i:]
		g := vhdxParseGUID(it.guid)
		copy(e, g[:])
		binary.LittleEndian.PutUint32(e[16:], uint32(item))
		binary.LittleEndian.PutUint32(e[20:], uint32(len(it.value)))
		binary.LittleEndian.PutUint32(e[24:], it.flags)
		item += copy(meta[item:], it.value)
	}

	// The structures' zero tails (most of their 64 KiB) are left as
	// holes: the checksums cover them as zeros, which holes read as.
	for _, w := range []struct {
		what string
		b    []byte
		off  int64
	}{
		{"metadata items", meta[64<<10 : item], metaOff + 64<<10},
		{"metadata table", meta[:64<<10], metaOff},
		{"region table 1", regions, 192 << 10},
		{"region table 2", regions, 256 << 10},
		{"header 1", header(1), 64 << 10},
		{"header 2", header(2), 128 << 10},
		{"file identifier", id, 0},
	} {
		b := bytes.TrimRight(w.b, "\x00")
		if _, err := f.WriteAt(b, w.off); err != nil {
			return fmt.Errorf("write the %s at byte %d: %w", w.what, w.off, err)
		}
	}
	// The last payload block ends the file, its tail zero pages too.
	end := dataOff + int64(len(placed))*vhdxOutBlock
	return f.Truncate(end)
}

// vhdxWriteBAT writes the BAT entries of the placed blocks (block
// placed[k] at dataOff + k MiB), 64 KiB of the table at a time, and only
// the parts holding them: the rest is zero (NOT_PRESENT) and stays a
// hole.
func vhdxWriteBAT(f *outFile, batOff, dataOff, chunk int64, placed []int64) error {
	const piece = 64 << 10
	buf := make([]byte, piece)
	cur, lo, hi := int64(-1), int64(piece), int64(0)
	flush := func() error {
		if cur < 0 || lo >= hi {
			return nil
		}
		at := batOff + cur*piece + lo
		if _, err := f.WriteAt(buf[lo:hi], at); err != nil {
			return fmt.Errorf("write the BAT at byte %d: %w", at, err)
		}
		clear(buf)
		lo, hi = piece, 0
		return nil
	}
	for k, idx := range placed {
		pos := (idx + idx/chunk) * 8 // after every chunk, its bitmap's entry
		if pos/piece != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = pos / piece
		}
		at := pos % piece
		off := uint64(dataOff + int64(k)*vhdxOutBlock) // whole MiBs: the entry's FileOffsetMB field in place
		binary.LittleEndian.PutUint64(buf[at:], off|6) // 6: PAYLOAD_BLOCK_FULLY_PRESENT
		lo, hi = min(lo, at), max(hi, at+8)
	}
	return flush()
}

// vhdxParseGUID is a GUID written "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX"
// as VHDX stores it: the first three groups little-endian.
func vhdxParseGUID(s string) [16]byte {
	var raw [16]byte
	n := 0
	for i := 0; i+1 < len(s) && n < 16; i++ {
		if s[i] == '-' {
			continue
		}
		raw[n] = vhdxHex(s[i])<<4 | vhdxHex(s[i+1])
		n++
		i++
	}
	return [16]byte{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6],
		raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]}
}

func vhdxHex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// vhdxRandomGUID is a random (version 4) GUID as VHDX stores it.
func vhdxRandomGUID() [16]byte {
	var g [16]byte
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // the third group's top nibble, little-endian
	g[8] = g[8]&0x3f | 0x80
	return g
}

func vhdxLE32(vs ...uint32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

func vhdxLE64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
