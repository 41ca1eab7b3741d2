package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/zeebo/blake3"
)

// A delta chunk (entry flag FlagDelta, frame flag frameDelta) of an
// incremental or differential is stored as a base chunk its parent's
// chain holds plus the sub-blocks of the chunk that differ from it. The
// frame's payload is a plain delta header followed by the present
// sub-blocks, concatenated and encoded with the frame's codec:
//
//	0   4  magic "PLDL"
//	4   4  sub-block size (power of two, 512 .. the chunk's length rounded up)
//	8   4  base area
//	12  8  base chunk
//	20  32 base BLAKE3 (the base chunk's hash in the parent's chain)
//	52  N  bitmap: bit i (byte i/8, least significant bit first) set when
//	       sub-block i is stored; N = ceil(ceil(RawLen/size)/8)
//	52+N   the stored sub-blocks, encoded (their decoded length follows
//	       from the bitmap: the last sub-block of a chunk may be short)
//
// The entry's hash stays the BLAKE3 of the whole chunk, checked after the
// sub-blocks are laid over the base. docs/format.md has the reasons.

// FlagDelta marks a chunk stored as a base chunk of the parent's chain
// plus the sub-blocks that differ. Readers before it reject the flag.
const FlagDelta uint32 = 1 << 2

// frameDelta, in a frame header's flags byte, marks a delta frame.
const frameDelta uint8 = 1 << 0

// DeltaBlock is the sub-block size the backup engine writes deltas at:
// filesystems write metadata (journal, bitmaps, inode tables, directory
// blocks) in 4 KiB blocks.
const DeltaBlock = 4096

const (
	deltaHeadSize = 52
	minDeltaBlock = 512
)

var deltaMagic = [4]byte{'P', 'L', 'D', 'L'}

// Delta reports whether the chunk is stored as a delta over its parent's.
func (e Entry) Delta() bool { return e.Flags&FlagDelta != 0 }

// DeltaBase names the chunk of the parent's chain a delta is laid over.
type DeltaBase struct {
	Area  uint32
	Chunk uint64
	Hash  [32]byte
}

// DiffBlocks compares chunk with base (the same length) sub-block by
// sub-block and returns the bitmap of those that differ (in bitmap's
// storage when large enough) and how many there are.
func DiffBlocks(base, chunk []byte, size int, bitmap []byte) ([]byte, int) {
	n := (len(chunk) + size - 1) / size
	nb := (n + 7) / 8
	if cap(bitmap) < nb {
		bitmap = make([]byte, nb)
	}
	bitmap = bitmap[:nb]
	clear(bitmap)
	changed := 0
	for i := 0; i < n; i++ {
		lo, hi := i*size, min((i+1)*size, len(chunk))
		if !bytes.Equal(base[lo:hi], chunk[lo:hi]) {
			bitmap[i/8] |= 1 << (i % 8)
			changed++
		}
	}
	return bitmap, changed
}

// AppendDeltaHeader appends a delta header to dst.
func AppendDeltaHeader(dst []byte, size int, base DeltaBase, bitmap []byte) []byte {
	var h [deltaHeadSize]byte
	le := binary.LittleEndian
	copy(h[0:4], deltaMagic[:])
	le.PutUint32(h[4:], uint32(size))
	le.PutUint32(h[8:], base.Area)
	le.PutUint64(h[12:], base.Chunk)
	copy(h[20:52], base.Hash[:])
	dst = append(dst, h[:]...)
	return append(dst, bitmap...)
}

// AppendDeltaBlocks appends the sub-blocks of chunk the bitmap marks.
func AppendDeltaBlocks(dst, chunk []byte, size int, bitmap []byte) []byte {
	for i := 0; i*size < len(chunk); i++ {
		if bitmap[i/8]&(1<<(i%8)) != 0 {
			dst = append(dst, chunk[i*size:min((i+1)*size, len(chunk))]...)
		}
	}
	return dst
}

// deltaHead is a parsed delta header.
type deltaHead struct {
	size    int
	base    DeltaBase
	bitmap  []byte
	data    []byte // the encoded sub-blocks
	dataLen int    // their decoded length
}

// parseDelta checks a delta payload (untrusted) for a chunk of rawLen
// bytes: the sub-block size must fit the chunk, the bitmap must cover
// exactly its sub-blocks, and the sub-blocks' decoded length follows.
func parseDelta(payload []byte, rawLen int) (deltaHead, error) {
	var d deltaHead
	if len(payload) < deltaHeadSize || [4]byte(payload[0:4]) != deltaMagic {
		return d, errors.New("no delta header")
	}
	le := binary.LittleEndian
	size := le.Uint32(payload[4:])
	if size < minDeltaBlock || size > maxChunkSize || size&(size-1) != 0 || rawLen <= 0 {
		return d, fmt.Errorf("delta sub-block size %d does not fit a %d-byte chunk", size, rawLen)
	}
	d.size = int(size)
	d.base.Area = le.Uint32(payload[8:])
	d.base.Chunk = le.Uint64(payload[12:])
	copy(d.base.Hash[:], payload[20:52])
	n := (rawLen + d.size - 1) / d.size
	nb := (n + 7) / 8
	if len(payload) < deltaHeadSize+nb {
		return d, fmt.Errorf("delta bitmap needs %d bytes, the frame holds %d", nb, len(payload)-deltaHeadSize)
	}
	d.bitmap = payload[deltaHeadSize : deltaHeadSize+nb]
	if n%8 != 0 && d.bitmap[nb-1]>>(n%8) != 0 {
		return d, errors.New("delta bitmap marks sub-blocks past the end of the chunk")
	}
	for i, b := range d.bitmap {
		c := bits.OnesCount8(b)
		d.dataLen += c * d.size
		if i == nb-1 && b&(1<<((n-1)%8)) != 0 {
			d.dataLen -= n*d.size - rawLen // the last sub-block is short
		}
	}
	d.data = payload[deltaHeadSize+nb:]
	return d, nil
}

// patch lays the decoded sub-blocks over out (the base chunk).
func (d *deltaHead) patch(out, blocks []byte) {
	for i := 0; i*d.size < len(out); i++ {
		if d.bitmap[i/8]&(1<<(i%8)) != 0 {
			lo, hi := i*d.size, min((i+1)*d.size, len(out))
			blocks = blocks[copy(out[lo:hi], blocks):]
		}
	}
}

// decodeDelta decodes delta chunk e (its frame checked: header h and
// payload) into out (e.RawLen long): the base from the parent's chain,
// then the sub-blocks over it, then the chunk's BLAKE3.
func (ir *Reader) decodeDelta(e Entry, h frameHeader, payload, out []byte) ([]byte, error) {
	d, err := parseDelta(payload, int(e.RawLen))
	if err != nil {
		return nil, ir.chunkError(e, "%v", err)
	}
	if ir.parent == nil {
		return nil, ir.chunkError(e, "the chunk is a delta over parent %s, which is not attached", ir.meta.Parent)
	}
	be, ok := ir.parent.Lookup(d.base.Area, d.base.Chunk)
	if !ok || be.Hash != d.base.Hash || be.RawLen != e.RawLen {
		return nil, ir.chunkError(e, "the chunk is a delta over a chunk the parent %s does not hold", ir.parent.name)
	}
	base, err := ir.parent.ReadChunk(be, out[:0])
	if err != nil {
		if !errors.Is(err, ErrDamaged) {
			return nil, err
		}
		var ce *ChunkError
		msg := err.Error()
		if errors.As(err, &ce) {
			msg = ce.Msg
		}
		return nil, ir.chunkError(e, "the chunk is a delta over %s of %s, which is damaged: %s", ir.parent.Where(be), ir.parent.storeName(), msg)
	}
	bp, _ := ir.deltaBufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < d.dataLen {
		b := make([]byte, d.dataLen)
		bp = &b
	}
	defer ir.deltaBufs.Put(bp)
	blocks, err := ir.dec.Decode(codec.ID(h.Codec), (*bp)[:0:d.dataLen], d.data)
	if err != nil {
		return nil, ir.chunkError(e, "delta sub-blocks: %v", err)
	}
	d.patch(base, blocks)
	if blake3.Sum256(base) != e.Hash {
		return nil, ir.chunkError(e, "BLAKE3 hash mismatch (delta over its base)")
	}
	return base, nil
}

// CheckFrame reads chunk e's frame (e must have one in this file) and
// checks it against the index, its CRC and, for a delta, its header,
// without decoding it or reading a parent: it proves the frame is this
// image's where a delta's base may not be attached yet (the volumes of
// a split image are checked before the chain is found).
func (ir *Reader) CheckFrame(e Entry) error {
	if e.Zero() || e.InParent() {
		return nil
	}
	_, payload, err := ir.readFrame(e, make([]byte, ir.frameLen(e)))
	if err != nil {
		return err
	}
	if e.Delta() {
		if _, err := parseDelta(payload, int(e.RawLen)); err != nil {
			return ir.chunkError(e, "%v", err)
		}
	}
	return nil
}
