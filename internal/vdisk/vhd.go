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
	"io"
	"os"
	"runtime"
	"sync"
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

// vhdFile is what a writer that seeks needs of its output.
type vhdFile interface {
	io.WriterAt
	Truncate(size int64) error
}

// writeVHD writes a dynamic VHD: its tables go after the data, once the
// blocks' places are known, so out must be a file.
func writeVHD(ctx context.Context, out Output, src Source, progress Progress) error {
	f, ok := out.(vhdFile)
	if !ok {
		return errors.New("vhd: the output must be a file")
	}
	if err := vhdSectors512(src); err != nil {
		return err
	}
	size := (src.Size() + 511) &^ 511
	if size <= 0 || size > vhdOutMax {
		return fmt.Errorf("vhd: a %d-byte disk does not fit: VHD holds 512 bytes to 2040 GiB (vhdx holds 64 TiB)", src.Size())
	}
	blocks := (size + vhdOutBlock - 1) / vhdOutBlock
	const batOff = 512 + 1024 // after the footer copy and the dynamic header
	batLen := (blocks*4 + 511) &^ 511
	// Blocks start so that their data (after the 512-byte bitmap) sits
	// on 4 KiB boundaries of the file: the holes inside a block then
	// match the guest's pages. The 3.5 KiB between blocks is a hole.
	const stride = vhdOutBlock + vhdPage
	first := (batOff+batLen+512+vhdPage-1)&^(vhdPage-1) - 512
	end := int64(batOff + batLen)

	if err := vhdTruncate(f, 0); err != nil {
		return fmt.Errorf("vhd: %w", err)
	}
	bat := make([]byte, batLen)
	for i := int64(0); i < blocks; i++ {
		binary.BigEndian.PutUint32(bat[i*4:], 0xffffffff) // not allocated
	}
	// Every sector of an allocated block is marked as holding data: the
	// block's zero pages are holes, which read as zeros.
	bitmap := make([]byte, 512)
	next := first
	err := vhdScan(ctx, src, size, vhdOutBlock, func(b *vhdBlock) error {
		if !b.empty {
			n := min(vhdOutBlock, size-b.index*vhdOutBlock) / 512
			clear(bitmap)
			for s := int64(0); s < n; s++ {
				bitmap[s/8] |= 0x80 >> (s % 8)
			}
			if _, err := f.WriteAt(bitmap, next); err != nil {
				return fmt.Errorf("vhd: write block %d's bitmap at byte %d: %w", b.index, next, err)
			}
			if err := b.writeTo(f, next+512); err != nil {
				return fmt.Errorf("vhd: %w", err)
			}
			binary.BigEndian.PutUint32(bat[b.index*4:], uint32(next/512))
			end = next + 512 + vhdOutBlock
			next += stride
		}
		progress(b.data)
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
			return fmt.Errorf("vhd: write the %s at byte %d: %w", w.what, w.off, err)
		}
	}
	return nil
}

// writeVHDFixed writes a fixed VHD: the disk's bytes, then the footer.
// The disk is rounded up to a whole MiB with zeros, as Azure requires
// of a VHD's size. To a regular file only the data's non-zero pages are
// written, the rest left as holes; to a pipe every byte goes.
func writeVHDFixed(ctx context.Context, out Output, src Source, progress Progress) error {
	if err := vhdSectors512(src); err != nil {
		return err
	}
	const mib = 1 << 20
	size := (src.Size() + mib - 1) &^ (mib - 1)
	if size <= 0 || size > vhdOutMax {
		return fmt.Errorf("vhd-fixed: a %d-byte disk does not fit: VHD holds 1 MiB to 2040 GiB", src.Size())
	}
	footer := vhdFooter(size, 2, ^uint64(0), time.Now()) // 2: fixed, no next structure
	if f, base, ok := seekableFile(out); ok {
		if err := vhdTruncate(f, base); err != nil {
			return fmt.Errorf("vhd-fixed: %w", err)
		}
		err := vhdScan(ctx, src, size, mib, func(b *vhdBlock) error {
			if err := b.writeTo(f, base+b.index*mib); err != nil {
				return fmt.Errorf("vhd-fixed: %w", err)
			}
			progress(b.data)
			return nil
		})
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(footer, base+size); err != nil {
			return fmt.Errorf("vhd-fixed: write the footer at byte %d: %w", base+size, err)
		}
		// Leave the file's offset after the footer, as a stream would.
		if _, err := f.Seek(base+size+512, io.SeekStart); err != nil {
			return fmt.Errorf("vhd-fixed: %w", err)
		}
		return nil
	}

	zeros := make([]byte, mib)
	var pos int64
	fill := func(to int64) error {
		for pos < to {
			n, err := out.Write(zeros[:min(int64(len(zeros)), to-pos)])
			pos += int64(n)
			if err != nil {
				return fmt.Errorf("vhd-fixed: write at byte %d: %w", pos, err)
			}
		}
		return ctx.Err()
	}
	err := vhdScan(ctx, src, size, mib, func(b *vhdBlock) error {
		if err := fill(b.index * mib); err != nil {
			return err
		}
		n, err := out.Write(b.buf)
		pos += int64(n)
		if err != nil {
			return fmt.Errorf("vhd-fixed: write at byte %d: %w", pos, err)
		}
		progress(b.data)
		return nil
	})
	if err == nil {
		err = fill(size)
	}
	if err != nil {
		return err
	}
	if _, err := out.Write(footer); err != nil {
		return fmt.Errorf("vhd-fixed: write the footer at byte %d: %w", size, err)
	}
	return nil
}

// vhdTruncate drops what f holds past byte at, so that what the
// writer leaves unwritten reads as zeros. A file no longer than that is
// left alone: truncating it is not free (ext4 takes a truncate to
// nothing for a rewrite and flushes the file when it is closed).
func vhdTruncate(f vhdFile, at int64) error {
	if s, ok := f.(interface{ Stat() (os.FileInfo, error) }); ok {
		if st, err := s.Stat(); err == nil && st.Mode().IsRegular() && st.Size() <= at {
			return nil
		}
	}
	return f.Truncate(at)
}

// seekableFile says whether out is a regular file that can be written
// at offsets (not opened to append), and where it stands.
func seekableFile(out Output) (f *os.File, base int64, ok bool) {
	f, ok = out.(*os.File)
	if !ok {
		return nil, 0, false
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, 0, false
	}
	base, err = f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, false
	}
	if _, err := f.WriteAt(nil, base); err != nil { // O_APPEND refuses WriteAt
		return nil, 0, false
	}
	return f, base, true
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

// A vhdBlock is one block of a fixed grid over the disk, holding the
// source's data extents inside it and zeros elsewhere (past the disk's
// end too).
type vhdBlock struct {
	index int64  // the block covers bytes [index*len(buf), (index+1)*len(buf))
	buf   []byte // the block's bytes
	dirty []bool // per vhdPage of buf: holds a non-zero byte
	empty bool   // every byte is zero
	data  int64  // bytes of the source's Data in the block
}

// writeTo writes the block's non-zero pages at off in f, a run of them
// at a time; its zero pages are left as they are (holes, in a new file).
func (b *vhdBlock) writeTo(f io.WriterAt, off int64) error {
	for p := 0; p < len(b.dirty); {
		if !b.dirty[p] {
			p++
			continue
		}
		q := p
		for q < len(b.dirty) && b.dirty[q] {
			q++
		}
		lo, hi := p*vhdPage, min(q*vhdPage, len(b.buf))
		if _, err := f.WriteAt(b.buf[lo:hi], off+int64(lo)); err != nil {
			return fmt.Errorf("write at byte %d: %w", off+int64(lo), err)
		}
		p = q
	}
	return nil
}

// vhdScan reads, in parallel, every block of a grid of bs bytes over the
// disk's first size bytes that the source's data extents touch, and
// hands them to fn in disk order, one at a time. Blocks no extent
// touches are not read and not handed; nothing outside the extents is
// read. Memory: a few blocks per CPU.
func vhdScan(ctx context.Context, src Source, size, bs int64, fn func(*vhdBlock) error) error {
	data, err := vhdData(src)
	if err != nil {
		return err
	}
	workers := min(runtime.GOMAXPROCS(0), 8)
	depth := 2 * workers
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct {
		b    *vhdBlock
		ext  []block.Extent
		done chan error
	}
	free := make(chan *vhdBlock, depth)
	for range depth {
		free <- &vhdBlock{buf: make([]byte, bs), dirty: make([]bool, (bs+vhdPage-1)/vhdPage)}
	}
	jobs := make(chan *job)
	order := make(chan *job, depth)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := ctx.Err(); err != nil {
					j.done <- err
					continue
				}
				j.done <- j.b.read(src, j.ext)
			}
		}()
	}
	go func() {
		defer close(order)
		defer close(jobs)
		var pos int64
		for i := 0; i < len(data) && max(pos, data[i].Off) < size; {
			idx := max(pos, data[i].Off) / bs
			lo, hi := idx*bs, idx*bs+bs
			var ext []block.Extent
			for i < len(data) && data[i].Off < hi {
				a, z := max(data[i].Off, lo), min(data[i].End(), hi)
				ext = append(ext, block.Extent{Off: a, Len: z - a})
				if data[i].End() > hi {
					break
				}
				i++
			}
			pos = hi
			var b *vhdBlock
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			b.index = idx
			j := &job{b: b, ext: ext, done: make(chan error, 1)}
			select {
			case order <- j:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				// Queued in order but never read: answer for it.
				j.done <- ctx.Err()
				return
			}
		}
	}()

	for j := range order {
		if err != nil {
			continue // drain, so the producer ends
		}
		select {
		case err = <-j.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err == nil {
			err = fn(j.b)
		}
		if err != nil {
			cancel()
			continue
		}
		free <- j.b
	}
	wg.Wait()
	if err == nil {
		err = ctx.Err() // the producer stops early only when cancelled
	}
	return err
}

// read fills the block from the source's extents (absolute, inside the
// block, in order), zeros the rest, and marks its non-zero pages.
func (b *vhdBlock) read(src Source, ext []block.Extent) error {
	bs := int64(len(b.buf))
	var done int64 // bytes of buf set
	b.data = 0
	for _, e := range ext {
		at := e.Off - b.index*bs
		clear(b.buf[done:at])
		done = at + e.Len
		p := b.buf[at:done]
		n, err := src.ReadAt(p, e.Off)
		if n == len(p) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("read the disk's bytes %d-%d: %w", e.Off, e.End()-1, err)
		}
		b.data += e.Len
	}
	clear(b.buf[done:])
	clear(b.dirty)
	b.empty = true
	for _, e := range ext { // only pages the extents touch can hold data
		at := e.Off - b.index*bs
		for pg := at / vhdPage; pg*vhdPage < at+e.Len; pg++ {
			if !b.dirty[pg] && !vhdZero(b.buf[pg*vhdPage:min(pg*vhdPage+vhdPage, bs)]) {
				b.dirty[pg], b.empty = true, false
			}
		}
	}
	return nil
}

var vhdZeroPage = make([]byte, vhdPage)

func vhdZero(p []byte) bool { return string(p) == string(vhdZeroPage[:len(p)]) }

// vhdData is the source's data extents, checked: sorted, disjoint,
// inside the disk; empty ones dropped.
func vhdData(src Source) ([]block.Extent, error) {
	size := src.Size()
	var out []block.Extent
	var prev int64
	for i, e := range src.Data() {
		if e.Off < 0 || e.Len < 0 || e.Off > size || e.Len > size-e.Off {
			return nil, fmt.Errorf("data extent %d (bytes %d+%d) is outside the disk's %d bytes", i, e.Off, e.Len, size)
		}
		if e.Len == 0 {
			continue
		}
		if e.Off < prev {
			return nil, fmt.Errorf("data extent %d (byte %d) starts before the end of the one before it (byte %d)", i, e.Off, prev)
		}
		prev = e.End()
		out = append(out, e)
	}
	return out, nil
}
