// Package partclone reads the images partclone writes (partclone.<fs> -c,
// and so every Clonezilla image of a partition): image formats 0001
// (partclone 0.2.x) and 0002 (0.3.x and later), with every checksum mode
// those formats have.
//
// An image is a header, a bitmap of the filesystem's blocks (format 0001:
// a byte per block, then the magic "BiTmAgIc"; 0002: a bit per block, then
// the bitmap's CRC32), then the used blocks in order, a checksum after
// every BlocksPerChecksum of them and one after the last, partial group.
// Nothing in the image says where a block is but the bitmap: block N's
// place in the file is its rank among the used blocks, plus the checksums
// before it.
//
// Reader reads an image as a stream (the images are compressed, split
// into volumes: Volumes, Decompress), verifying every checksum as it
// goes. Image reads an uncompressed image in place at random, from a rank
// index of the bitmap. Both report a damaged checksum as a *ChecksumError
// naming the blocks it covers and their bytes on the device.
//
// Every image is hostile input: sizes are checked against each other and
// against the file's size when it is known, nothing is allocated from a
// count read off the image beyond what the image can hold, and a
// truncated image is an error naming where it ends.
package partclone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// ErrNotPartclone is returned (wrapped) for bytes that do not start with
// partclone's magic.
var ErrNotPartclone = errors.New("not a partclone image")

// ErrDamaged is matched (errors.Is) by every error that means the image's
// bytes are wrong: FormatError and ChecksumError.
var ErrDamaged = errors.New("partclone image damaged")

// FormatError is a structure of the image that is missing, impossible or
// cut short, at a byte offset of the (uncompressed) image stream.
type FormatError struct {
	Off int64
	Msg string
	Err error
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("partclone: %s at image byte %d", e.Msg, e.Off)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

func (e *FormatError) Is(target error) bool { return target == ErrDamaged }

// ChecksumError is a checksum that does not match the blocks it covers:
// blocks First to Last of the filesystem (used blocks in between, free
// ones skipped), bytes Off to End-1 of the device. ImageOff is where the
// stored checksum is in the uncompressed image stream.
type ChecksumError struct {
	First, Last int64
	Off, End    int64
	ImageOff    int64
	Mode        string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("partclone: %s checksum mismatch for blocks %d-%d (device bytes %d-%d), checksum at image byte %d",
		e.Mode, e.First, e.Last, e.Off, e.End-1, e.ImageOff)
}

func (e *ChecksumError) Is(target error) bool { return target == ErrDamaged }

// Checksum modes, as format 0002 stores them.
const (
	ChecksumNone  = 0x00
	ChecksumCRC32 = 0x20
	ChecksumXXH64 = 0x30
	// ChecksumCRC32v1 is format 0001's CRC32: partclone 0.2.x's crc32
	// read the block's first byte block-size times (a missing ++), and
	// never reseeded it: each block's CRC carries on from the one before.
	ChecksumCRC32v1 = 0xFF
)

// Bitmap modes, as format 0002 stores them.
const (
	BitmapNone = 0x00
	BitmapBit  = 0x01
	BitmapByte = 0x08
)

const (
	magic       = "partclone-image"
	bitMagic    = "BiTmAgIc"
	v1HeadSize  = 36 + 28 + 4096 // head, fs info, 4 KiB of options nobody read
	v2HeadSize  = 36 + 52 + 18 + 4
	maxHeadSize = v1HeadSize
	// maxBlockSize bounds a block: NTFS clusters go to 2 MiB, nothing
	// partclone reads has more.
	maxBlockSize = 64 << 20
	// maxBlocks bounds a bitmap (2^40 blocks: a 128 GiB bitmap of bits);
	// what is allocated is bounded again by the bytes the image holds.
	maxBlocks = 1 << 40
)

// Header is what an image says of itself.
type Header struct {
	Version          int    // 1 or 2
	FS               string // "EXTFS", "FAT", "NTFS", "XFS", "BTRFS", ...
	PartcloneVersion string // "0.3.23"; "" in format 0001
	CPUBits          int    // 32 or 64; 0 in format 0001
	BlockSize        int64
	DeviceSize       int64 // bytes of the partition it came from
	TotalBlocks      int64
	UsedBlocks       int64 // as the filesystem counted them (the bitmap rules)

	ChecksumMode      int   // Checksum*
	ChecksumSize      int64 // bytes per checksum: 0, 4 or 8
	BlocksPerChecksum int64 // used blocks per checksum; 0: no checksums
	Reseed            bool  // each checksum starts afresh (else it carries on)
	BitmapMode        int   // Bitmap*

	// Size is the header's own length in bytes: where the bitmap starts.
	Size int64
}

// ChecksumName names the checksum mode as partclone.info does.
func (h *Header) ChecksumName() string {
	switch h.ChecksumMode {
	case ChecksumNone:
		return "NONE"
	case ChecksumCRC32:
		return "CRC32"
	case ChecksumXXH64:
		return "XXH64"
	case ChecksumCRC32v1:
		return "CRC32_0001"
	}
	return fmt.Sprintf("unknown (0x%x)", h.ChecksumMode)
}

// BitmapSize is the bitmap's length in the image, with what follows it
// (format 0001's magic, 0002's CRC32).
func (h *Header) BitmapSize() int64 {
	switch h.BitmapMode {
	case BitmapBit:
		return (h.TotalBlocks+7)/8 + 4
	case BitmapByte:
		if h.Version == 1 {
			return h.TotalBlocks + int64(len(bitMagic))
		}
		return h.TotalBlocks + 4
	}
	return 0
}

// DataOffset is where the first used block is in the image stream.
func (h *Header) DataOffset() int64 { return h.Size + h.BitmapSize() }

// DataSize is the bytes of blocks and checksums that follow the bitmap
// for used used blocks, checksum stride cs (ChecksumSize, or 8 for a
// format 0001 image with the 64-bit bug).
func (h *Header) dataSize(used, cs int64) int64 {
	n := used * h.BlockSize
	if h.BlocksPerChecksum > 0 && used > 0 {
		n += (used + h.BlocksPerChecksum - 1) / h.BlocksPerChecksum * cs
	}
	return n
}

// ParseHeader parses an image's header from its first bytes (at least
// 110 for format 0002, 4160 for 0001; fewer is a truncation error).
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: no %q magic at byte 0", ErrNotPartclone, magic)
	}
	if len(b) < 36 {
		return nil, &FormatError{Off: int64(len(b)), Msg: "header cut short"}
	}
	// The version is at byte 30 in format 0001 and at 30 in 0002 too (0001:
	// magic[15] fs[15]; 0002: magic[16] partclone version[14]).
	switch v := string(b[30:34]); v {
	case "0001":
		return parseV1(b)
	case "0002":
		return parseV2(b)
	default:
		return nil, &FormatError{Off: 30, Msg: fmt.Sprintf("image format %q is not one this reader knows (0001, 0002)", printable(b[30:34]))}
	}
}

func parseV1(b []byte) (*Header, error) {
	if len(b) < v1HeadSize {
		return nil, &FormatError{Off: int64(len(b)), Msg: fmt.Sprintf("format 0001 header cut short (%d of %d bytes)", len(b), v1HeadSize)}
	}
	le := binary.LittleEndian
	h := &Header{
		Version:     1,
		FS:          cString(b[15:30]),
		BlockSize:   int64(int32(le.Uint32(b[36:]))),
		DeviceSize:  int64(le.Uint64(b[40:])),
		TotalBlocks: int64(le.Uint64(b[48:])),
		UsedBlocks:  int64(le.Uint64(b[56:])),
		// Format 0001 has no options: these are what it always was.
		ChecksumMode:      ChecksumCRC32v1,
		ChecksumSize:      4,
		BlocksPerChecksum: 1,
		Reseed:            false,
		BitmapMode:        BitmapByte,
		Size:              v1HeadSize,
	}
	if err := h.check(36); err != nil {
		return nil, err
	}
	// partclone itself takes the device to be the blocks it has.
	h.DeviceSize = h.TotalBlocks * h.BlockSize
	return h, nil
}

func parseV2(b []byte) (*Header, error) {
	if len(b) < v2HeadSize {
		return nil, &FormatError{Off: int64(len(b)), Msg: fmt.Sprintf("format 0002 header cut short (%d of %d bytes)", len(b), v2HeadSize)}
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[106:]), crcSum(b[:106]); got != want {
		return nil, &FormatError{Off: 106, Msg: fmt.Sprintf("header CRC32 is 0x%08x, the header's bytes give 0x%08x", got, want)}
	}
	if e := le.Uint16(b[34:]); e != 0xC0DE {
		return nil, &FormatError{Off: 34, Msg: fmt.Sprintf("byte order mark 0x%04x: the image was written big-endian (0xC0DE expected)", e)}
	}
	h := &Header{
		Version:           2,
		PartcloneVersion:  cString(b[16:30]),
		FS:                cString(b[36:52]),
		DeviceSize:        int64(le.Uint64(b[52:])),
		TotalBlocks:       int64(le.Uint64(b[60:])),
		UsedBlocks:        int64(le.Uint64(b[68:])),
		BlockSize:         int64(le.Uint32(b[84:])),
		CPUBits:           int(le.Uint16(b[94:])),
		ChecksumMode:      int(le.Uint16(b[96:])),
		ChecksumSize:      int64(le.Uint16(b[98:])),
		BlocksPerChecksum: int64(le.Uint32(b[100:])),
		Reseed:            b[104] != 0,
		BitmapMode:        int(b[105]),
		Size:              v2HeadSize,
	}
	if fs := le.Uint32(b[88:]); fs != 18 {
		return nil, &FormatError{Off: 88, Msg: fmt.Sprintf("options of %d bytes (format 0002 has 18)", fs)}
	}
	if v := le.Uint16(b[92:]); v != 2 {
		return nil, &FormatError{Off: 92, Msg: fmt.Sprintf("options say image version %d in a format 0002 header", v)}
	}
	switch h.ChecksumMode {
	case ChecksumNone:
		if h.ChecksumSize != 0 || h.BlocksPerChecksum != 0 {
			return nil, &FormatError{Off: 98, Msg: fmt.Sprintf("no checksum, yet %d-byte checksums every %d blocks", h.ChecksumSize, h.BlocksPerChecksum)}
		}
	case ChecksumCRC32, ChecksumXXH64:
		want := int64(4)
		if h.ChecksumMode == ChecksumXXH64 {
			want = 8
		}
		if h.ChecksumSize != want {
			return nil, &FormatError{Off: 98, Msg: fmt.Sprintf("%s checksums of %d bytes (%d expected)", h.ChecksumName(), h.ChecksumSize, want)}
		}
		if h.BlocksPerChecksum == 0 {
			return nil, &FormatError{Off: 100, Msg: "a checksum every 0 blocks"}
		}
	default:
		return nil, &FormatError{Off: 96, Msg: fmt.Sprintf("unknown checksum mode 0x%x", h.ChecksumMode)}
	}
	switch h.BitmapMode {
	case BitmapBit, BitmapByte:
	case BitmapNone:
		if h.UsedBlocks != h.TotalBlocks {
			return nil, &FormatError{Off: 105, Msg: fmt.Sprintf("no bitmap (every block stored), yet %d of %d blocks used", h.UsedBlocks, h.TotalBlocks)}
		}
	default:
		return nil, &FormatError{Off: 105, Msg: fmt.Sprintf("unknown bitmap mode 0x%x", h.BitmapMode)}
	}
	if err := h.check(52); err != nil {
		return nil, err
	}
	return h, nil
}

// check bounds the sizes against each other; off is where the fs info
// starts, for the error.
func (h *Header) check(off int64) error {
	switch {
	case h.BlockSize <= 0 || h.BlockSize > maxBlockSize:
		return &FormatError{Off: off, Msg: fmt.Sprintf("block size %d (1 to %d expected)", h.BlockSize, maxBlockSize)}
	case h.TotalBlocks < 0 || h.TotalBlocks > maxBlocks:
		return &FormatError{Off: off, Msg: fmt.Sprintf("%d blocks (at most %d)", uint64(h.TotalBlocks), int64(maxBlocks))}
	case h.DeviceSize < 0:
		return &FormatError{Off: off, Msg: fmt.Sprintf("device of %d bytes", uint64(h.DeviceSize))}
	case h.TotalBlocks > (1<<62)/h.BlockSize:
		return &FormatError{Off: off, Msg: fmt.Sprintf("%d blocks of %d bytes overflow", h.TotalBlocks, h.BlockSize)}
	case h.Version == 2 && h.TotalBlocks*h.BlockSize > h.DeviceSize:
		return &FormatError{Off: off, Msg: fmt.Sprintf("the bitmap claims %d blocks of %d bytes (%d bytes), more than the device's %d bytes",
			h.TotalBlocks, h.BlockSize, h.TotalBlocks*h.BlockSize, h.DeviceSize)}
	case h.UsedBlocks < 0 || h.UsedBlocks > h.TotalBlocks:
		return &FormatError{Off: off, Msg: fmt.Sprintf("%d blocks used of %d", uint64(h.UsedBlocks), h.TotalBlocks)}
	}
	return nil
}

// crcSum is partclone's CRC32: the IEEE polynomial, seeded with all ones
// and never inverted at the end.
func crcSum(b []byte) uint32 { return crcUpdate(0xFFFFFFFF, b) }

// crcUpdate carries partclone's CRC state over b. Go's crc32 inverts on
// the way in and out; partclone's state is the inverted value.
func crcUpdate(state uint32, b []byte) uint32 {
	return ^crc32.Update(^state, crc32.IEEETable, b)
}

// crcUpdateV1 is format 0001's CRC: the first byte of b, len(b) times.
func crcUpdateV1(state uint32, b []byte) uint32 {
	if len(b) == 0 {
		return state
	}
	c := b[0]
	for range len(b) {
		state = (state >> 8) ^ crc32.IEEETable[byte(state)^c]
	}
	return state
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return printable(b)
}

func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, string(b))
}

// readHeader reads and parses the header from r: the first 110 bytes,
// then the rest of a format 0001 header.
func readHeader(r io.Reader) (*Header, error) {
	b := make([]byte, v2HeadSize, maxHeadSize)
	if n, err := io.ReadFull(r, b); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &FormatError{Off: int64(n), Msg: "cannot read the header", Err: err}
		}
		if n == 0 || n >= len(magic) && string(b[:len(magic)]) != magic || n < len(magic) && !bytes.HasPrefix([]byte(magic), b[:n]) {
			return nil, fmt.Errorf("%w: no %q magic at byte 0", ErrNotPartclone, magic)
		}
		return nil, &FormatError{Off: int64(n), Msg: "image ends inside its header", Err: err}
	}
	if string(b[:len(magic)]) == magic && string(b[30:34]) == "0001" {
		b = b[:v1HeadSize]
		if n, err := io.ReadFull(r, b[v2HeadSize:]); err != nil {
			return nil, &FormatError{Off: int64(v2HeadSize + n), Msg: "image ends inside its format 0001 header", Err: err}
		}
	}
	return ParseHeader(b)
}
