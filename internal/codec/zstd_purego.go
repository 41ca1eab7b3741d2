//go:build !cgo || purego

package codec

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// defaultLevel is create's: the pure-Go encoder's level 2 is its level 1
// (SpeedFastest, 10 % larger than `zstd -3`), so it stays at 3.
const defaultLevel = 3

// EncoderName says which zstd encoder this binary uses.
const EncoderName = "pure Go (klauspost/compress)"

// DecoderName says which zstd decoder this binary uses.
const DecoderName = "pure Go (klauspost/compress)"

type chunkEncoder struct{ z *zstd.Encoder }

func newChunkEncoder(s Setting, concurrency int) (*chunkEncoder, error) {
	z, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(s.Level)),
		zstd.WithEncoderConcurrency(concurrency),
		zstd.WithEncoderCRC(false), // every chunk carries a BLAKE3 hash already
		zstd.WithZeroFrames(true),
	)
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	return &chunkEncoder{z: z}, nil
}

func (e *chunkEncoder) encode(dst, src []byte) ([]byte, bool) {
	return e.z.EncodeAll(src, dst[:0]), true
}

func (e *chunkEncoder) close() { e.z.Close() }

// chunkDecoder decodes a chunk into the caller's buffer, never past its
// capacity, with at most 1 GiB of the decoder's own memory.
type chunkDecoder struct{ z *zstd.Decoder }

func newChunkDecoder(concurrency int) (*chunkDecoder, error) {
	z, err := newGoDecoder(concurrency)
	if err != nil {
		return nil, err
	}
	return &chunkDecoder{z: z}, nil
}

// decode decodes src into dst[:cap(dst)] and returns what it wrote.
func (d *chunkDecoder) decode(dst, src []byte) ([]byte, error) {
	return d.z.DecodeAll(src, dst[:0])
}

func (d *chunkDecoder) close() { d.z.Close() }
