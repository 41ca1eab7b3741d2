package vdisk

// VHD, as Microsoft's "Virtual Hard Disk Image Format Specification"
// (October 2006) lays it out; every number in it is big-endian.
//
//	dynamic (vhd):     footer copy | dynamic header | BAT | blocks... | footer
//	fixed (vhd-fixed): the disk's bytes | footer
//
// A dynamic block covers 2 MiB of the disk: a 512-byte sector bitmap,
// then the 2 MiB of data. Only blocks holding a non-zero byte of the
// source's data are allocated; inside one, all-zero 4 KiB pages are left
// as holes in the file, so the file takes about what the data takes.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/platter-dev/platter/internal/block"
)

func init() {
	register(VHD, writeVHD, false)
	register(VHDFixed, writeVHDFixed, true)
}

const (
	// vhdOutBlock is the dynamic VHD's block size: the spec's default,
	// and the only one Hyper-V and Virtual PC make.
	vhdOutBlock = 2 << 20
	// vhdOutMax is the largest VHD: 2040 GiB, Hyper-V's limit and the
	// largest qemu makes, fixed or dynamic (a dynamic VHD's BAT holds
	// 32-bit sector offsets).
	vhdOutMax = 0xff000000 * 512
	// vhdPage is the grain of the holes a writer leaves: all-zero pages
	// are not written.
	vhdPage = 4096
)

// The footer's creator. qemu reads a VHD's size from its CHS geometry
// unless the creator is one it knows writes the exact size in Current
// Size ("qem2", Hyper-V's "win ", Disk2vhd's "d2v ", Citrix's "tap\0"
// and "CTXS") or the geometry is the largest there is. CHS cannot
// express most sizes (the spec's algorithm rounds down to cylinders x
// heads x sectors per track), so a disk tagged with our own "plat"
// would come out smaller in qemu: the tests' 48 MiB disk as 39 KiB
// short, its backup GPT lost. The largest geometry (what qemu itself
// writes with -o force_size) is not the spec's, which Virtual PC,
// VirtualBox and IDE emulations hand the guest. So the geometry is the
// spec's and the creator "qem2": the tag qemu made to mean "Current
// Size is the size", which is all any reader takes from it. Hyper-V,
// Azure, VirtualBox and libvhdi read Current Size whatever the creator.
const (
	vhdCreatorApp     = "qem2"
	vhdCreatorVersion = 0x00000001 // Platter 0.1
	vhdCreatorHost    = "Wi2k"     // the spec knows only Windows and Mac hosts
)

// writeVHD writes a dynamic VHD: its tables go after the data, once the
// blocks' places are known, so out must be a regular file.
func writeVHD(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	if err := vhdSectors512(src); err != nil {
		return err
	}
	size := ceilTo(src.Size(), 512)
	if size > vhdOutMax {
		return fmt.Errorf("vhd: a %d-byte disk does not fit: VHD holds up to 2040 GiB (vhdx holds 64 TiB)", src.Size())
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f == nil {
		return errors.New("vhd (dynamic) is written to a regular file: its tables come before its data; for a pipe use vhd-fixed")
	}
	if err := writeDynamicVHD(ctx, f, src, data, size, progress); err != nil {
		return fmt.Errorf("vhd: %w", err)
	}
	return nil
}

func writeDynamicVHD(ctx context.Context, f *outFile, src Source, data []block.Extent, size int64, progress Progress) error {
	blocks := ceilDiv(size, vhdOutBlock)
	const batOff = 512 + 1024 // after the footer copy and the dynamic header
	batLen := ceilTo(blocks*4, 512)
	// Blocks start so that their data (after the 512-byte bitmap) sits
	// on 4 KiB boundaries of the file: the holes inside a block then
	// match the guest's pages. The 3.5 KiB between blocks is a hole.
	const stride = vhdOutBlock + vhdPage
	next := ceilTo(batOff+batLen+512, vhdPage) - 512 // the next block's bitmap
	end := int64(batOff + batLen)

	bat := make([]byte, batLen)
	for i := int64(0); i < blocks; i++ {
		binary.BigEndian.PutUint32(bat[i*4:], 0xffffffff) // not allocated
	}
	// Every sector of an allocated block is marked as holding data: the
	// block's zero pages are holes, which read as zeros.
	bitmap := make([]byte, 512)
	cur, at := int64(-1), int64(0) // the last block allocated; where its data is
	err := readGrains(ctx, src, data, vhdPage, nil, func(p *piece) error {
		err := p.nonZeroRuns(vhdPage, func(off, n int64) error {
			for n > 0 {
				blk := off / vhdOutBlock
				if blk != cur { // the block's first non-zero byte: allocate it
					clear(bitmap)
					for s := int64(0); s < min(vhdOutBlock, size-blk*vhdOutBlock)/512; s++ {
						bitmap[s/8] |= 0x80 >> (s % 8)
					}
					if _, err := f.WriteAt(bitmap, next); err != nil {
						return err
					}
					binary.BigEndian.PutUint32(bat[blk*4:], uint32(next/512))
					cur, at = blk, next+512
					end = at + vhdOutBlock
					next += stride
				}
				k := min(n, (blk+1)*vhdOutBlock-off)
				if _, err := f.WriteAt(p.buf[off-p.off:off-p.off+k], at+off-blk*vhdOutBlock); err != nil {
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
	footer := vhdFooter(size, 3, 512, time.Now()) // 3: dynamic
	dyn := make([]byte, 1024)
	copy(dyn, "cxsparse")
	binary.BigEndian.PutUint64(dyn[8:], ^uint64(0)) // no next structure
	binary.BigEndian.PutUint64(dyn[16:], batOff)
	binary.BigEndian.PutUint32(dyn[24:], 0x00010000) // header version 1.0
	binary.BigEndian.PutUint32(dyn[28:], uint32(blocks))
	binary.BigEndian.PutUint32(dyn[32:], vhdOutBlock)
	binary.BigEndian.PutUint32(dyn[36:], vhdSum(dyn, 36))
	for _, w := range []struct {
		what string
		b    []byte
		off  int64
	}{
		{"BAT", bat, batOff},
		{"dynamic header", dyn, 512},
		{"footer", footer, end},
		{"footer copy", footer, 0},
	} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			return fmt.Errorf("write the %s at byte %d: %w", w.what, w.off, err)
		}
	}
	return nil
}

// writeVHDFixed writes a fixed VHD: the disk's bytes, then the footer.
// The disk is rounded up to a whole MiB with zeros, as Azure requires
// of a VHD's size. To a regular file only the data's non-zero pages are
// written, the rest left as holes; to a pipe every byte goes.
func writeVHDFixed(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	if err := vhdSectors512(src); err != nil {
		return err
	}
	size := ceilTo(src.Size(), 1<<20)
	if size > vhdOutMax {
		return fmt.Errorf("vhd-fixed: a %d-byte disk does not fit: VHD holds up to 2040 GiB", src.Size())
	}
	footer := vhdFooter(size, 2, ^uint64(0), time.Now()) // 2: fixed; no next structure
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f != nil {
		err = readGrains(ctx, src, data, vhdPage, nil, func(p *piece) error {
			err := p.nonZeroRuns(vhdPage, func(off, n int64) error {
				_, err := f.WriteAt(p.buf[off-p.off:off-p.off+n], off)
				return err
			})
			if err != nil {
				return err
			}
			progress(p.data)
			return nil
		})
		if err == nil {
			_, err = f.WriteAt(footer, size)
		}
	} else {
		w := newStreamWriter(ctx, out)
		err = readGrains(ctx, src, data, vhdPage, nil, func(p *piece) error {
			if err := w.zeros(p.off - w.pos()); err != nil {
				return err
			}
			if _, err := w.Write(p.buf); err != nil { // its last page may pass the disk: still inside the MiB
				return err
			}
			progress(p.data)
			return nil
		})
		if err == nil {
			err = w.zeros(size - w.pos())
		}
		if err == nil {
			_, err = w.Write(footer)
		}
		if err == nil {
			err = w.Flush()
		}
	}
	if err != nil {
		return fmt.Errorf("vhd-fixed: %w", err)
	}
	return nil
}

// vhdSectors512 refuses a disk of 4096-byte sectors: VHD has 512-byte
// sectors only, and such a disk's partition table would not be found
// where a guest of 512-byte sectors looks for it.
func vhdSectors512(src Source) error {
	if s, ok := src.(interface{ SectorSize() int64 }); ok && s.SectorSize() > 512 {
		return fmt.Errorf("vhd: the disk has %d-byte sectors and VHD only 512-byte ones: write vhdx", s.SectorSize())
	}
	return nil
}

// vhdFooter is the 512-byte footer of a VHD of size bytes.
func vhdFooter(size int64, diskType uint32, dataOffset uint64, now time.Time) []byte {
	f := make([]byte, 512)
	be := binary.BigEndian
	copy(f, "conectix")
	be.PutUint32(f[8:], 2)           // features: the bit the spec says is always set
	be.PutUint32(f[12:], 0x00010000) // file format version 1.0
	be.PutUint64(f[16:], dataOffset)
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	be.PutUint32(f[24:], uint32(max(0, now.Sub(epoch)/time.Second)))
	copy(f[28:], vhdCreatorApp)
	be.PutUint32(f[32:], vhdCreatorVersion)
	copy(f[36:], vhdCreatorHost)
	be.PutUint64(f[40:], uint64(size)) // original size
	be.PutUint64(f[48:], uint64(size)) // current size
	c, h, s := vhdCHS(size / 512)
	be.PutUint16(f[56:], c)
	f[58], f[59] = h, s
	be.PutUint32(f[60:], diskType)
	rand.Read(f[68:84]) // unique id: a random (version 4) UUID
	f[74] = f[74]&0x0f | 0x40
	f[76] = f[76]&0x3f | 0x80
	be.PutUint32(f[64:], vhdSum(f, 64))
	return f
}

// vhdCHS is the spec's geometry for a disk of sectors 512-byte sectors:
// the largest cylinders x heads x sectors per track not above it (from
// the few shapes the algorithm allows), at most 65535 x 16 x 255.
func vhdCHS(sectors int64) (cyls uint16, heads, spt uint8) {
	sectors = min(sectors, 65535*16*255)
	var s, h, ch int64
	if sectors >= 65535*16*63 {
		s, h = 255, 16
		ch = sectors / s
	} else {
		s = 17
		ch = sectors / s
		h = max((ch+1023)/1024, 4)
		if ch >= h*1024 || h > 16 {
			s, h = 31, 16
			ch = sectors / s
		}
		if ch >= h*1024 {
			s, h = 63, 16
			ch = sectors / s
		}
	}
	return uint16(ch / h), uint8(h), uint8(s)
}

// vhdSum is a VHD structure's checksum: the ones' complement of the sum
// of its bytes, the 4-byte checksum field at at left out.
func vhdSum(b []byte, at int) uint32 {
	var sum uint32
	for i, c := range b {
		if i < at || i >= at+4 {
			sum += uint32(c)
		}
	}
	return ^sum
}
