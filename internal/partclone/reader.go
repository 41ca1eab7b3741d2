package partclone

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

// Reader reads an image front to back: the header and bitmap when it is
// made, then the used blocks in order, each checksum verified as soon as
// the blocks it covers have been read.
type Reader struct {
	h   *Header
	bm  *Bitmap
	r   *bufio.Reader
	pos int64 // image bytes consumed

	next   int64 // the block to look for the next used block from
	done   int64 // used blocks read
	sum    *summer
	inSum  int64 // blocks in the running checksum
	first  int64 // the first block of the running checksum
	last   int64 // the last block read
	stride int64 // bytes of each stored checksum: ChecksumSize, or 8 (0001's 64-bit bug)
	v1bug  int   // format 0001: 0 not known yet, 1 no bug, 2 the 64-bit bug
	buf    []byte
	err    error

	volumes []string // the files of a split image, for errors
	stream  *Stream
}

// runBytes bounds the blocks Next returns at once.
const runBytes = 1 << 20

// NewReader reads the header and bitmap of the image r streams. size is
// the bytes r holds (-1 when not known, as for a decompressed stream): a
// bitmap or data larger than that is refused up front.
func NewReader(r io.Reader, size int64) (*Reader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	left := int64(-1)
	if size >= 0 {
		left = size - h.Size
	}
	var bm *Bitmap
	if h.BitmapMode == BitmapNone {
		if bm, err = noBitmap(h, left); err != nil {
			return nil, err
		}
	} else if bm, err = readBitmap(br, h, h.Size, left); err != nil {
		return nil, err
	}
	rd := &Reader{h: h, bm: bm, r: br, pos: h.DataOffset(), sum: newSummer(h), stride: h.ChecksumSize}
	if h.Version == 1 {
		// The 64-bit bug is told apart at the second block.
		rd.v1bug = 0
	} else {
		rd.v1bug = 1
	}
	if size >= 0 {
		if need := h.dataSize(bm.Used(), h.ChecksumSize); need > size-h.DataOffset() {
			return nil, &FormatError{Off: size, Msg: fmt.Sprintf("image of %d bytes is cut short: %d used blocks of %d bytes and their checksums need %d bytes after byte %d",
				size, bm.Used(), h.BlockSize, need, h.DataOffset()), Err: io.ErrUnexpectedEOF}
		}
	}
	return rd, nil
}

// noBitmap is the bitmap of an image that stores every block; its size
// is bounded by what the image can hold.
func noBitmap(h *Header, left int64) (*Bitmap, error) {
	limit := int64(1 << 27) // blocks, when the image's size is not known
	if left >= 0 {
		limit = left / h.BlockSize
	}
	if h.TotalBlocks > limit {
		return nil, &FormatError{Off: h.Size, Msg: fmt.Sprintf("an image without a bitmap claims %d blocks of %d bytes, more than it can hold", h.TotalBlocks, h.BlockSize)}
	}
	return allBitmap(h.TotalBlocks), nil
}

// Header is the image's header.
func (r *Reader) Header() *Header { return r.h }

// Bitmap is the image's map of used blocks.
func (r *Reader) Bitmap() *Bitmap { return r.bm }

// Next returns the next run of used blocks: their bytes on the device
// from off, len(data) of them, valid until the next call. It returns
// io.EOF after the last used block and its checksum. A checksum that does
// not match is a *ChecksumError: the blocks it covers, returned by this
// call or the ones before, are not to be trusted.
func (r *Reader) Next() (off int64, data []byte, err error) {
	if r.err != nil {
		return 0, nil, r.err
	}
	off, data, err = r.next1()
	if err != nil && err != io.EOF && r.volumes != nil {
		err = inVolumes(err, r.volumes, r.stream)
	}
	if err != nil {
		r.err = err
	}
	return off, data, err
}

func (r *Reader) next1() (int64, []byte, error) {
	h := r.h
	if r.done == r.bm.Used() {
		if err := r.finish(); err != nil {
			return 0, nil, err
		}
		return 0, nil, io.EOF
	}
	b := r.bm.next(r.next)
	if b >= r.bm.Blocks() {
		return 0, nil, io.EOF
	}
	end := r.bm.nextFree(b)
	n := min(end-b, max(runBytes/h.BlockSize, 1))
	if r.buf == nil {
		r.buf = make([]byte, max(runBytes, h.BlockSize))
	}
	data := r.buf[:n*h.BlockSize]
	for i := int64(0); i < n; i++ {
		blk := data[i*h.BlockSize : (i+1)*h.BlockSize]
		if k, err := io.ReadFull(r.r, blk); err != nil {
			return 0, nil, r.cut(err, k, b+i)
		}
		r.pos += h.BlockSize
		if r.inSum == 0 {
			r.first = b + i
		}
		r.last = b + i
		r.sum.add(blk)
		r.inSum++
		r.done++
		if h.BlocksPerChecksum > 0 && r.inSum == h.BlocksPerChecksum {
			if err := r.checkSum(); err != nil {
				return 0, nil, err
			}
		}
	}
	r.next = b + n
	return b * h.BlockSize, data, nil
}

// checkSum reads the stored checksum of the running group and compares.
func (r *Reader) checkSum() error {
	h := r.h
	var c [8]byte
	at := r.pos
	if k, err := io.ReadFull(r.r, c[:h.ChecksumSize]); err != nil {
		return r.cut(err, k, -1)
	}
	r.pos += h.ChecksumSize
	ok := r.sum.check(c[:])
	if r.v1bug == 0 {
		// Format 0001 from an old 64-bit partclone wrote each CRC in 8
		// bytes. Tell by the second block, which then starts 4 bytes
		// later: only there do its bytes give the CRC stored after them.
		r.v1bug, r.stride = 1, h.ChecksumSize
		if r.v1Bug() {
			r.v1bug, r.stride = 2, 8
		}
	}
	if extra := r.stride - h.ChecksumSize; extra > 0 {
		if k, err := r.r.Discard(int(extra)); err != nil {
			return r.cut(err, k, -1)
		}
		r.pos += extra
	}
	if !ok {
		return r.sumError(at)
	}
	r.inSum = 0
	return nil
}

// v1Bug says whether the block after the first of a format 0001 image
// sits after 4 bytes more than its CRC.
func (r *Reader) v1Bug() bool {
	if r.bm.Used() < 2 {
		return false
	}
	bs := int(r.h.BlockSize)
	p, _ := r.r.Peek(bs + 8)
	try := func(skip int) bool {
		if len(p) < skip+bs+4 {
			return false
		}
		s := *r.sum // 0001 carries the CRC on from block to block
		s.add(p[skip : skip+bs])
		return s.check(p[skip+bs : skip+bs+4])
	}
	return !try(0) && try(4)
}

// finish checks the checksum after the last, partial group.
func (r *Reader) finish() error {
	if r.inSum > 0 && r.h.BlocksPerChecksum > 0 {
		return r.checkSum()
	}
	return nil
}

func (r *Reader) sumError(at int64) error {
	bs := r.h.BlockSize
	return &ChecksumError{First: r.first, Last: r.last, Off: r.first * bs, End: (r.last + 1) * bs, ImageOff: at, Mode: r.h.ChecksumName()}
}

// cut is the error of an image that ends early: k bytes into what was
// being read, block blk (-1: a checksum).
func (r *Reader) cut(err error, k int, blk int64) error {
	what := "a checksum"
	if blk >= 0 {
		what = fmt.Sprintf("block %d (device byte %d)", blk, blk*r.h.BlockSize)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &FormatError{Off: r.pos + int64(k), Msg: fmt.Sprintf("image ends inside %s, after %d of %d used blocks", what, r.done, r.bm.Used()), Err: err}
	}
	// A decompressor's error: the compressed stream is damaged or cut.
	return &FormatError{Off: r.pos + int64(k), Msg: fmt.Sprintf("cannot read %s, after %d of %d used blocks", what, r.done, r.bm.Used()), Err: err}
}

// WriteTo writes every used block to w at its device offset, verifying
// every checksum; progress (may be nil) hears the bytes written.
func (r *Reader) WriteTo(ctx context.Context, w io.WriterAt, progress func(n int64)) error {
	return block.WriteStream(ctx, r, w, "partclone", progress)
}
