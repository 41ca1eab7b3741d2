//go:build !cgo || purego

package codec

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// EncoderName says which zstd encoder this binary uses.
const EncoderName = "pure Go (klauspost/compress)"

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
