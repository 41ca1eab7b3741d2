// Package image reads and writes Platter images (format version 3, see
// docs/format.md; versions 1 and 2 are read too). The Writer streams: it never
// seeks, so an image can go to a pipe or an object store. The Reader gives
// random access to any chunk through the index at the end of the file.
// An encrypted image seals every frame and block (internal/seal has the
// cryptography, this package what is sealed where).
package image

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
)

// Version is the format version this package writes. Readers accept every
// version up to it.
const Version = 3

// FlagEncrypted, in the header's and the footer's flags (version 2), says
// the image is encrypted: key slots follow the header, and every frame and
// block is sealed.
const FlagEncrypted uint32 = 1 << 0

const (
	headerSize      = 64
	footerSize      = 96
	frameHeaderSize = 64
	blockHeaderSize = 64
	entrySize       = 64
)

// Magic numbers. The header's magic is PNG-style: the high-bit first byte
// and the CR LF / LF pair catch transfers that mangled the file as text.
var (
	headerMagic = [8]byte{0x89, 'P', 'L', 'T', '\r', '\n', 0x1a, '\n'}
	footerMagic = [8]byte{'P', 'L', 'T', 'F', 'O', 'O', 'T', 0}
	frameMagic  = [4]byte{'P', 'L', 'F', 'R'}
	sealedMagic = [4]byte{'P', 'L', 'F', 'S'} // a sealed frame
	layoutMagic = [4]byte{'P', 'L', 'L', 'Y'}
	indexMagic  = [4]byte{'P', 'L', 'I', 'X'}
	metaMagic   = [4]byte{'P', 'L', 'M', 'D'}
	mapsMagic   = [4]byte{'P', 'L', 'M', 'P'}
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ID is an image's random 128-bit identity.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Entry flags.
const (
	// FlagZero marks a chunk whose bytes are all zero: no frame is stored.
	FlagZero uint32 = 1 << 0
	// FlagParent (reserved for incremental images) marks a chunk whose
	// frame lives in an ancestor image; readers of version 1 reject it.
	FlagParent uint32 = 1 << 1
)

// Entry is one index entry: where chunk Chunk of area Area is stored.
type Entry struct {
	Area     uint32   // position in Metadata.Areas
	Flags    uint32   // FlagZero, ...
	Chunk    uint64   // chunk number on the area's grid
	FrameOff int64    // image byte offset of the frame header; 0 if FlagZero
	Stored   uint32   // payload bytes in the frame (after its header)
	RawLen   uint32   // bytes of the chunk when decoded
	Hash     [32]byte // BLAKE3 of the decoded chunk
}

// Zero reports whether the chunk is all zeros and has no frame.
func (e Entry) Zero() bool { return e.Flags&FlagZero != 0 }

func (e Entry) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], e.Area)
	le.PutUint32(b[4:], e.Flags)
	le.PutUint64(b[8:], e.Chunk)
	le.PutUint64(b[16:], uint64(e.FrameOff))
	le.PutUint32(b[24:], e.Stored)
	le.PutUint32(b[28:], e.RawLen)
	copy(b[32:64], e.Hash[:])
}

func parseEntry(b []byte) Entry {
	le := binary.LittleEndian
	e := Entry{
		Area:     le.Uint32(b[0:]),
		Flags:    le.Uint32(b[4:]),
		Chunk:    le.Uint64(b[8:]),
		FrameOff: int64(le.Uint64(b[16:])),
		Stored:   le.Uint32(b[24:]),
		RawLen:   le.Uint32(b[28:]),
	}
	copy(e.Hash[:], b[32:64])
	return e
}

// frameHeader precedes every stored chunk.
type frameHeader struct {
	Codec    uint8
	Flags    uint8
	Area     uint32
	RawLen   uint32
	Chunk    uint64
	Stored   uint32
	Checksum uint32 // CRC-32C of the payload
	Hash     [32]byte
}

func (h *frameHeader) put(b []byte) {
	le := binary.LittleEndian
	copy(b[0:4], frameMagic[:])
	b[4] = h.Codec
	b[5] = h.Flags
	b[6], b[7] = 0, 0
	le.PutUint32(b[8:], h.Area)
	le.PutUint32(b[12:], h.RawLen)
	le.PutUint64(b[16:], h.Chunk)
	le.PutUint32(b[24:], h.Stored)
	le.PutUint32(b[28:], h.Checksum)
	copy(b[32:64], h.Hash[:])
}

func parseFrameHeader(b []byte) (frameHeader, bool) {
	if len(b) < frameHeaderSize || [4]byte(b[0:4]) != frameMagic {
		return frameHeader{}, false
	}
	le := binary.LittleEndian
	h := frameHeader{
		Codec:    b[4],
		Flags:    b[5],
		Area:     le.Uint32(b[8:]),
		RawLen:   le.Uint32(b[12:]),
		Chunk:    le.Uint64(b[16:]),
		Stored:   le.Uint32(b[24:]),
		Checksum: le.Uint32(b[28:]),
	}
	copy(h.Hash[:], b[32:64])
	return h, true
}

// blockHeader precedes the index and the metadata.
type blockHeader struct {
	Magic  [4]byte
	Codec  uint8
	RawLen uint64
	Stored uint64
	Hash   [32]byte // BLAKE3 of the decoded payload
	// StoredCRC is the CRC-32C of the stored payload: a flip in bytes
	// that happen to decode the same is still damage worth reporting.
	StoredCRC uint32
}

func (h *blockHeader) put(b []byte) {
	le := binary.LittleEndian
	clear(b[:blockHeaderSize])
	copy(b[0:4], h.Magic[:])
	b[4] = h.Codec
	le.PutUint64(b[8:], h.RawLen)
	le.PutUint64(b[16:], h.Stored)
	copy(b[24:56], h.Hash[:])
	le.PutUint32(b[56:], h.StoredCRC)
	le.PutUint32(b[60:], crc(b[:60]))
}

func parseBlockHeader(b []byte, magic [4]byte) (blockHeader, error) {
	if [4]byte(b[0:4]) != magic {
		return blockHeader{}, fmt.Errorf("no %q block marker", magic[:])
	}
	le := binary.LittleEndian
	if le.Uint32(b[60:]) != crc(b[:60]) {
		return blockHeader{}, errors.New("block header checksum mismatch")
	}
	h := blockHeader{Magic: magic, Codec: b[4], RawLen: le.Uint64(b[8:]), Stored: le.Uint64(b[16:]), StoredCRC: le.Uint32(b[56:])}
	copy(h.Hash[:], b[24:56])
	return h, nil
}

// footer is the fixed-size end of every image.
type footer struct {
	Version    uint16
	Flags      uint32
	ID         ID
	IndexOff   int64
	IndexLen   int64 // bytes including the block header
	MapsOff    int64
	MapsLen    int64
	MetaOff    int64
	MetaLen    int64
	EntryCount uint64
}

func (f *footer) put(b []byte) {
	le := binary.LittleEndian
	clear(b[:footerSize])
	copy(b[0:8], footerMagic[:])
	le.PutUint16(b[8:], f.Version)
	le.PutUint16(b[10:], footerSize)
	le.PutUint32(b[12:], f.Flags)
	copy(b[16:32], f.ID[:])
	le.PutUint64(b[32:], uint64(f.IndexOff))
	le.PutUint64(b[40:], uint64(f.IndexLen))
	le.PutUint64(b[48:], uint64(f.MapsOff))
	le.PutUint64(b[56:], uint64(f.MapsLen))
	le.PutUint64(b[64:], uint64(f.MetaOff))
	le.PutUint64(b[72:], uint64(f.MetaLen))
	le.PutUint64(b[80:], f.EntryCount)
	le.PutUint32(b[92:], crc(b[:92]))
}

func parseFooter(b []byte) footer {
	le := binary.LittleEndian
	f := footer{
		Version:    le.Uint16(b[8:]),
		Flags:      le.Uint32(b[12:]),
		IndexOff:   int64(le.Uint64(b[32:])),
		IndexLen:   int64(le.Uint64(b[40:])),
		MapsOff:    int64(le.Uint64(b[48:])),
		MapsLen:    int64(le.Uint64(b[56:])),
		MetaOff:    int64(le.Uint64(b[64:])),
		MetaLen:    int64(le.Uint64(b[72:])),
		EntryCount: le.Uint64(b[80:]),
	}
	copy(f.ID[:], b[16:32])
	return f
}

func putHeader(b []byte, id ID, created int64, flags uint32) {
	le := binary.LittleEndian
	clear(b[:headerSize])
	copy(b[0:8], headerMagic[:])
	le.PutUint16(b[8:], Version)
	le.PutUint16(b[10:], headerSize)
	le.PutUint32(b[12:], flags)
	copy(b[16:32], id[:])
	le.PutUint64(b[32:], uint64(created))
	le.PutUint32(b[60:], crc(b[:60]))
}
