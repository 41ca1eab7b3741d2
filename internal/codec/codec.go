// Package codec compresses and decompresses chunks. Each codec has a
// one-byte id that is written into every frame header, so a reader knows
// how to decode a frame without any other context.
package codec

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ID identifies a codec on disk.
type ID uint8

const (
	None ID = 0 // stored as is
	Zstd ID = 1 // one zstd frame
)

func (id ID) String() string {
	switch id {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(id))
}

// ErrCorrupt is returned (wrapped) when stored bytes do not decode.
var ErrCorrupt = errors.New("the stored bytes do not decode")

// Setting is a user's choice of compression: "none", "zstd" or
// "zstd:LEVEL" with LEVEL 1..22 as in the zstd command.
type Setting struct {
	ID    ID
	Level int
}

// DefaultSetting is what create uses without --compress: the encoder's
// defaultLevel (docs/performance.md, "Choices").
var DefaultSetting = Setting{ID: Zstd, Level: defaultLevel}

func (s Setting) String() string {
	if s.ID == Zstd {
		return "zstd:" + strconv.Itoa(s.Level)
	}
	return s.ID.String()
}

// FastSetting is --compress fast: the quickest level, for when time
// matters more than the last few percent of size.
var FastSetting = Setting{ID: Zstd, Level: 1}

// ParseSetting parses the --compress flag: "none", "fast", "zstd" or
// "zstd:LEVEL".
func ParseSetting(s string) (Setting, error) {
	name, level, hasLevel := strings.Cut(s, ":")
	switch name {
	case "fast":
		if hasLevel {
			return Setting{}, fmt.Errorf("compression fast takes no level: %q", s)
		}
		return FastSetting, nil
	case "none":
		if hasLevel {
			return Setting{}, fmt.Errorf("compression none takes no level: %q", s)
		}
		return Setting{ID: None}, nil
	case "zstd":
		if !hasLevel {
			return Setting{ID: Zstd, Level: DefaultSetting.Level}, nil
		}
		n, err := strconv.Atoi(level)
		if err != nil || n < 1 || n > 22 {
			return Setting{}, fmt.Errorf("zstd level must be 1..22, got %q", level)
		}
		return Setting{ID: Zstd, Level: n}, nil
	}
	return Setting{}, fmt.Errorf("unknown compression %q (want zstd[:LEVEL], fast or none)", s)
}

// Encoder compresses chunks; Encode is safe for concurrent use.
type Encoder struct {
	setting Setting
	zenc    *chunkEncoder // nil for None
}

// NewEncoder returns an encoder for s that serves up to concurrency
// parallel callers without blocking.
func NewEncoder(s Setting, concurrency int) (*Encoder, error) {
	e := &Encoder{setting: s}
	if s.ID == Zstd {
		z, err := newChunkEncoder(s, concurrency)
		if err != nil {
			return nil, err
		}
		e.zenc = z
	}
	return e, nil
}

// Encode compresses src, appending to dst[:0]. It returns the codec
// actually used: data that does not shrink by at least 1/64 is stored as
// is (ID None, the returned slice is src) because decompressing it would
// cost time for nothing.
func (e *Encoder) Encode(dst, src []byte) (ID, []byte) {
	if e.zenc == nil {
		return None, src
	}
	if !e.worthTrying(dst, src) {
		return None, src
	}
	out, ok := e.zenc.encode(dst, src)
	if !ok || len(out) >= len(src)-len(src)/64 {
		return None, src
	}
	return Zstd, out
}

// Probe samples: spread over a chunk, each probeSize bytes.
const (
	probes    = 8
	probeSize = 16 << 10
)

// worthTrying compresses small samples spread over a large chunk and
// reports whether any of them shrinks. Media, archives and encrypted data
// do not, and the C encoder spends as long on them as on text for no gain.
func (e *Encoder) worthTrying(dst, src []byte) bool {
	if len(src) < 4*probes*probeSize {
		return true
	}
	step := len(src) / probes
	for k := range probes {
		sample := src[k*step : k*step+probeSize]
		out, ok := e.zenc.encode(dst, sample)
		if !ok || len(out) < len(sample)-len(sample)/32 {
			return true
		}
	}
	return false
}

// Close releases the encoder's resources.
func (e *Encoder) Close() {
	if e.zenc != nil {
		e.zenc.close()
	}
}

// Decoder decompresses chunks; Decode is safe for concurrent use.
type Decoder struct {
	zdec *chunkDecoder
}

// NewDecoder returns a decoder serving up to concurrency parallel callers.
func NewDecoder(concurrency int) (*Decoder, error) {
	z, err := newChunkDecoder(concurrency)
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	return &Decoder{zdec: z}, nil
}

// newGoDecoder is the pure-Go zstd decoder of whole chunks: it never
// writes past its output's capacity and holds at most 1 GiB.
func newGoDecoder(concurrency int) (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(concurrency),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(1<<30),
	)
}

// Decode decodes src stored with codec id into dst, which must have a
// capacity of exactly the expected raw length; the result must be that
// long or the data is reported corrupt.
func (d *Decoder) Decode(id ID, dst, src []byte) ([]byte, error) {
	want := cap(dst)
	switch id {
	case None:
		if len(src) != want {
			return nil, fmt.Errorf("%w: stored chunk is %d bytes, want %d", ErrCorrupt, len(src), want)
		}
		return append(dst[:0], src...), nil
	case Zstd:
		out, err := d.zdec.decode(dst, src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if len(out) != want {
			return nil, fmt.Errorf("%w: chunk decodes to %d bytes, want %d", ErrCorrupt, len(out), want)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, uint8(id))
}

// Close releases the decoder's resources.
func (d *Decoder) Close() { d.zdec.close() }

// NewStreamEncoder returns a zstd stream writer into w, for data too
// large to hold twice in memory. Close flushes it.
func NewStreamEncoder(w io.Writer) (io.WriteCloser, error) {
	z, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	return z, nil
}

// NewBlockReader streams the decoded bytes of a stored block (stored
// bytes read from src) whose decoded length must be exactly rawLen: a
// block that decodes to more or fewer bytes, or does not decode, is an
// error wrapping ErrCorrupt from Read. The decoder's memory is bounded
// (a window of at most MaxWindow) whatever the block claims.
func NewBlockReader(id ID, src io.Reader, stored, rawLen int64) (io.ReadCloser, error) {
	switch id {
	case None:
		if stored != rawLen {
			return nil, fmt.Errorf("%w: block is %d bytes, want %d", ErrCorrupt, stored, rawLen)
		}
		return io.NopCloser(io.LimitReader(src, stored)), nil
	case Zstd:
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow), zstd.WithDecoderMaxMemory(uint64(max(rawLen, MaxWindow))))
		if err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
		return &blockReader{zr: zr, left: rawLen}, nil
	}
	return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, uint8(id))
}

// MaxWindow is the largest zstd window a block reader accepts: blocks are
// written by NewStreamEncoder, whose window is 8 MiB.
const MaxWindow = 16 << 20

// blockReader checks a zstd stream's decoded length as it is read.
type blockReader struct {
	zr   *zstd.Decoder
	left int64 // bytes still expected
}

func (b *blockReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		// The stream must end exactly here.
		var one [1]byte
		if n, err := b.zr.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w: block decodes to more bytes than its length", ErrCorrupt)
		} else if err != io.EOF {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.zr.Read(p)
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.left > 0:
		return n, fmt.Errorf("%w: block decodes to %d bytes fewer than its length", ErrCorrupt, b.left)
	case err == io.EOF:
		err = nil
	case err != nil:
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return n, err
}

func (b *blockReader) Close() error {
	b.zr.Close()
	return nil
}
