package tooltest

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// Forge writes an image file byte by byte as docs/format.md describes it,
// independently of internal/image's writer: for tests that hand readers
// images no honest writer makes (lying lengths, decompression bombs).
// Every checksum and hash is right, so a reader gets past them to the
// lie.
type Forge struct {
	ID [16]byte
	// Frames are written between the header and the index as they are.
	Frames []byte
	// Index, Maps and Meta fill their blocks' decoded payloads.
	Index, Maps, Meta ForgedBlock
	// EntryCount is the footer's number of index entries; -1: the index
	// payload's length / 64.
	EntryCount int64
}

// ForgedBlock is one index, maps or metadata block.
type ForgedBlock struct {
	// Fill writes the decoded payload; it is zstd-compressed as written,
	// so a bomb of gigabytes never needs memory here.
	Fill func(w io.Writer) error
	// Runs, if set instead of Fill, are the payload as runs of bytes,
	// written as a hand-made zstd frame of raw and RLE blocks: gigabytes
	// of one byte value cost 4 bytes per 128 KiB and no compressor time.
	Runs []ByteRun
	// NoHash leaves the payload's hash zero instead of computing it: for
	// a bomb so large that hashing it would slow the test, and that a
	// reader must refuse before decoding.
	NoHash bool
	// ClaimRaw, if not 0, is the decoded length the block header claims
	// instead of the true one.
	ClaimRaw uint64
}

// ByteRun is Data, or N copies of Byte when Data is nil.
type ByteRun struct {
	Data []byte
	Byte byte
	N    int64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Write writes the forged image to path and returns its size.
func (f *Forge) Write(path string) (int64, error) {
	out, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	le := binary.LittleEndian
	var h [64]byte
	copy(h[0:8], "\x89PLT\r\n\x1a\n")
	le.PutUint16(h[8:], 1)
	le.PutUint16(h[10:], 64)
	copy(h[16:32], f.ID[:])
	le.PutUint64(h[32:], 1700000000000000000)
	le.PutUint32(h[60:], crc32.Checksum(h[:60], castagnoli))
	if _, err := out.Write(h[:]); err != nil {
		return 0, err
	}
	if _, err := out.Write(f.Frames); err != nil {
		return 0, err
	}
	off := int64(64 + len(f.Frames))
	var offs, lens [3]int64
	var indexRaw uint64
	for i, b := range []struct {
		magic string
		blk   ForgedBlock
	}{{"PLIX", f.Index}, {"PLMP", f.Maps}, {"PLMD", f.Meta}} {
		raw, n, err := writeBlock(out, off, b.magic, b.blk)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			indexRaw = raw
		}
		offs[i], lens[i] = off, n
		off += n
	}
	count := uint64(f.EntryCount)
	if f.EntryCount < 0 {
		count = indexRaw / 64
	}
	var ft [96]byte
	copy(ft[0:8], "PLTFOOT\x00")
	le.PutUint16(ft[8:], 1)
	le.PutUint16(ft[10:], 96)
	copy(ft[16:32], f.ID[:])
	for i := range offs {
		le.PutUint64(ft[32+16*i:], uint64(offs[i]))
		le.PutUint64(ft[40+16*i:], uint64(lens[i]))
	}
	le.PutUint64(ft[80:], count)
	le.PutUint32(ft[92:], crc32.Checksum(ft[:92], castagnoli))
	if _, err := out.Write(ft[:]); err != nil {
		return 0, err
	}
	return off + 96, out.Close()
}

// writeBlock writes one block at file offset off: the payload is
// compressed into a temporary file first, since the header before it
// needs its stored length and checksum.
func writeBlock(out *os.File, off int64, magic string, b ForgedBlock) (raw uint64, n int64, err error) {
	tmp, err := os.CreateTemp("", "forge-*")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	crc := crc32.New(castagnoli)
	hash := blake3.New()
	cw := &counter{}
	if b.Runs != nil {
		var raw io.Writer = io.MultiWriter(hash, cw)
		if b.NoHash {
			raw = nil
			for _, r := range b.Runs {
				cw.n += uint64(len(r.Data)) + uint64(r.N)
			}
		}
		if err := writeRuns(io.MultiWriter(tmp, crc), raw, b.Runs); err != nil {
			return 0, 0, err
		}
	} else {
		zw, err := zstd.NewWriter(io.MultiWriter(tmp, crc), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return 0, 0, err
		}
		if b.Fill != nil {
			if err := b.Fill(io.MultiWriter(zw, hash, cw)); err != nil {
				return 0, 0, err
			}
		}
		if err := zw.Close(); err != nil {
			return 0, 0, err
		}
	}
	stored, _ := tmp.Seek(0, io.SeekCurrent)
	claim := cw.n
	if b.ClaimRaw != 0 {
		claim = b.ClaimRaw
	}
	le := binary.LittleEndian
	var h [64]byte
	copy(h[0:4], magic)
	h[4] = 1 // zstd
	le.PutUint64(h[8:], claim)
	le.PutUint64(h[16:], uint64(stored))
	if !b.NoHash {
		copy(h[24:56], hash.Sum(nil))
	}
	le.PutUint32(h[56:], crc.Sum32())
	le.PutUint32(h[60:], crc32.Checksum(h[:60], castagnoli))
	if _, err := out.WriteAt(h[:], off); err != nil {
		return 0, 0, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, 0, err
	}
	if _, err := out.Seek(off+64, io.SeekStart); err != nil {
		return 0, 0, err
	}
	if _, err := io.Copy(out, tmp); err != nil {
		return 0, 0, err
	}
	return cw.n, 64 + stored, nil
}

// writeRuns writes runs as one zstd frame (RFC 8878) to stored and their
// decoded bytes to raw (if not nil): a frame header with a 1 MiB window and no content
// size, then raw blocks for data and RLE blocks for repeated bytes, at
// most 128 KiB each, the last one flagged.
func writeRuns(stored, raw io.Writer, runs []ByteRun) error {
	const maxBlock = 128 << 10
	type blk struct {
		rle  bool
		data []byte
		b    byte
		n    int64
	}
	var blocks []blk
	for _, r := range runs {
		if r.Data != nil {
			for d := r.Data; len(d) > 0; {
				k := min(len(d), maxBlock)
				blocks = append(blocks, blk{data: d[:k], n: int64(k)})
				d = d[k:]
			}
			continue
		}
		for n := r.N; n > 0; {
			k := min(n, maxBlock)
			blocks = append(blocks, blk{rle: true, b: r.Byte, n: k})
			n -= k
		}
	}
	if len(blocks) == 0 {
		blocks = append(blocks, blk{data: []byte{}})
	}
	// Magic, frame header descriptor 0, window descriptor 1 MiB.
	if _, err := stored.Write([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 10 << 3}); err != nil {
		return err
	}
	rep := make([]byte, maxBlock)
	repByte := byte(0) // rep holds zeros
	for i, b := range blocks {
		h := uint32(b.n) << 3
		if i == len(blocks)-1 {
			h |= 1
		}
		payload := b.data
		if b.rle {
			h |= 1 << 1
			payload = []byte{b.b}
		}
		if _, err := stored.Write(append([]byte{byte(h), byte(h >> 8), byte(h >> 16)}, payload...)); err != nil {
			return err
		}
		if raw == nil {
			continue
		}
		out := b.data
		if b.rle {
			if b.b != repByte {
				for j := range rep {
					rep[j] = b.b
				}
				repByte = b.b
			}
			out = rep[:b.n]
		}
		if _, err := raw.Write(out); err != nil {
			return err
		}
	}
	return nil
}

type counter struct{ n uint64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += uint64(len(p))
	return len(p), nil
}
