package iso9660

// This file reads files compressed with zisofs (Rock Ridge ZF, as
// mkzftree and xorriso's --zisofs filter write them): a 16-byte header,
// a table of block pointers, and each block of 2^15-2^17 bytes
// compressed with zlib on its own (a block whose pointers are equal is
// zeros).

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

var zisofsMagic = []byte{0x37, 0xe4, 0x53, 0x96, 0xc9, 0xdb, 0xd6, 0x07}

// zisofs reads a zisofs file's size bytes from its stored bytes r.
type zisofs struct {
	r     io.ReaderAt
	size  int64
	shift uint
	ptrs  []int64 // block i is stored in [ptrs[i], ptrs[i+1])
	what  string

	mu    sync.Mutex
	last  int64 // the block in buf, -1 for none
	buf   []byte
	outOf int64
}

// openZisofs checks the header and block pointers of a zisofs file of
// stored bytes (at byte at of the volume, for errors) that reads as
// size bytes.
func openZisofs(r io.ReaderAt, stored, size, at int64, what string) (*zisofs, error) {
	var h [16]byte
	if stored < 16 || readAt(r, h[:], 0) != nil || !bytes.Equal(h[:8], zisofsMagic) {
		return nil, corrupt(at, "the zisofs file %s has no zisofs header", what)
	}
	le := binary.LittleEndian
	hsize, shift := int64(h[12])*4, uint(h[13])
	if int64(le.Uint32(h[8:])) != size || hsize < 16 || shift < 15 || shift > 17 {
		return nil, corrupt(at, "the zisofs header of %s is damaged (size %d, header %d bytes, blocks of 2^%d)", what, le.Uint32(h[8:]), hsize, shift)
	}
	n := (size + 1<<shift - 1) >> shift
	if hsize+(n+1)*4 > stored {
		return nil, corrupt(at, "the zisofs block table of %s (%d blocks) runs past its %d stored bytes", what, n, stored)
	}
	raw := make([]byte, (n+1)*4)
	if err := readAt(r, raw, hsize); err != nil {
		return nil, fmt.Errorf("iso9660: read the zisofs block table of %s: %w", what, err)
	}
	z := &zisofs{r: r, size: size, shift: shift, what: what, last: -1, outOf: stored}
	z.ptrs = make([]int64, n+1)
	for i := range z.ptrs {
		z.ptrs[i] = int64(le.Uint32(raw[4*i:]))
		if z.ptrs[i] > stored || i > 0 && z.ptrs[i] < z.ptrs[i-1] || i == 0 && z.ptrs[0] < hsize+(n+1)*4 {
			return nil, corrupt(at, "zisofs block pointer %d of %s (%d) is out of order or past its %d stored bytes", i, what, z.ptrs[i], stored)
		}
	}
	return z, nil
}

// block decompresses block i into z.buf; z.mu is held.
func (z *zisofs) block(i int64) error {
	if z.last == i {
		return nil
	}
	bs := int64(1) << z.shift
	want := min(bs, z.size-i*bs)
	if cap(z.buf) < int(bs) {
		z.buf = make([]byte, bs)
	}
	z.buf = z.buf[:want]
	z.last = -1
	from, to := z.ptrs[i], z.ptrs[i+1]
	if from == to {
		clear(z.buf)
		z.last = i
		return nil
	}
	zr, err := zlib.NewReader(io.NewSectionReader(z.r, from, to-from))
	if err != nil {
		return fmt.Errorf("iso9660: zisofs block %d of %s: %w", i, z.what, err)
	}
	defer zr.Close()
	if _, err := io.ReadFull(zr, z.buf); err != nil {
		return fmt.Errorf("iso9660: zisofs block %d of %s does not decompress to its %d bytes: %w", i, z.what, want, err)
	}
	z.last = i
	return nil
}

func (z *zisofs) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("iso9660: negative offset %d", off)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	done := 0
	for done < len(p) && off+int64(done) < z.size {
		pos := off + int64(done)
		i := pos >> z.shift
		if err := z.block(i); err != nil {
			return done, err
		}
		done += copy(p[done:], z.buf[pos-i<<z.shift:])
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}
