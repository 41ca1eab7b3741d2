package seal

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
)

// A sealed stream (the STREAM construction of Hoang, Reyhanitabar, Rogaway
// and Vizár) cuts a block's bytes into segments of SegmentSize (the last
// one shorter, never empty) and seals each on its own, with the nonce
// prefix || segment number (7 bytes, little-endian) || last-segment flag.
// The prefix's first 12 bytes derive the AES key (AEAD), so a stream is
// sealed under one key of its own, derived once, and its segments under
// distinct GCM nonces (the prefix's last 4 bytes, the number, the flag).
// A reader opens a segment at a time, so neither the sealed nor the open
// bytes of a large index are ever whole in memory; a segment moved,
// dropped, repeated or cut off (the stream truncated at a segment
// boundary) does not open.
const (
	SegmentSize = 64 << 10
	// PrefixSize is the random part of a stream's nonces.
	PrefixSize = 16
	sealedSeg  = SegmentSize + Overhead
)

// SealedLen is the length of plain bytes sealed as a stream; plain must
// be positive.
func SealedLen(plain int64) int64 {
	segs := (plain + SegmentSize - 1) / SegmentSize
	return plain + segs*Overhead
}

// PlainLen is the length of the plain bytes of a stream sealed into
// sealed bytes, and false if no positive length seals to that.
func PlainLen(sealed int64) (int64, bool) {
	if sealed <= Overhead {
		return 0, false
	}
	segs := (sealed + sealedSeg - 1) / sealedSeg
	last := sealed - (segs-1)*sealedSeg
	if last <= Overhead {
		return 0, false
	}
	return sealed - segs*Overhead, true
}

func streamNonce(prefix *[PrefixSize]byte, seg uint64, last bool) [NonceSize]byte {
	var n [NonceSize]byte
	copy(n[:], prefix[:])
	var c [8]byte
	binary.LittleEndian.PutUint64(c[:], seg)
	copy(n[PrefixSize:PrefixSize+7], c[:7])
	if last {
		n[NonceSize-1] = 1
	}
	return n
}

// StreamWriter seals what is written to it as a stream into w. Close
// seals the last segment; nothing of it is written before.
type StreamWriter struct {
	w      io.Writer
	gcm    cipher.AEAD // under the key the prefix derives
	prefix [PrefixSize]byte
	ad     []byte
	buf    []byte // the segment being filled, with room for its tag
	seg    uint64
}

// NewStreamWriter seals into w with aead, the nonce prefix and the
// associated data ad (the same for every segment).
func NewStreamWriter(w io.Writer, aead *AEAD, prefix [PrefixSize]byte, ad []byte) *StreamWriter {
	return &StreamWriter{w: w, gcm: aead.gcm(prefix[:]), prefix: prefix, ad: ad, buf: make([]byte, 0, sealedSeg)}
}

func (s *StreamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		// A full segment is sealed only once more bytes come: until
		// then it may be the last.
		if len(s.buf) == SegmentSize {
			if err := s.flush(false); err != nil {
				return n, err
			}
		}
		k := copy(s.buf[len(s.buf):SegmentSize], p)
		s.buf = s.buf[:len(s.buf)+k]
		p, n = p[k:], n+k
	}
	return n, nil
}

func (s *StreamWriter) flush(last bool) error {
	nonce := streamNonce(&s.prefix, s.seg, last)
	out := s.gcm.Seal(s.buf[:0], nonce[keyPart:], s.buf, s.ad)
	s.seg++
	s.buf = s.buf[:0]
	_, err := s.w.Write(out)
	return err
}

// Close seals the last segment. A stream needs at least one byte.
func (s *StreamWriter) Close() error {
	if len(s.buf) == 0 && s.seg == 0 {
		return fmt.Errorf("seal: an empty stream")
	}
	if len(s.buf) == 0 {
		// Never: a full segment waits in buf until more comes.
		return fmt.Errorf("seal: internal error: no last segment")
	}
	return s.flush(true)
}

// OpenError reports a segment of a sealed stream that does not open.
type OpenError struct {
	Segment int64 // its number
	Off     int64 // its offset in the sealed bytes
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("sealed segment %d does not open (changed, damaged, moved or from another image)", e.Segment)
}

func (e *OpenError) Unwrap() error { return ErrOpen }

// StreamReader opens a sealed stream of a known sealed length, a segment
// at a time.
type StreamReader struct {
	r      io.Reader
	gcm    cipher.AEAD // under the key the prefix derives
	prefix [PrefixSize]byte
	ad     []byte
	left   int64 // sealed bytes not read yet
	seg    int64
	buf    []byte
	plain  []byte // opened bytes not returned yet
	err    error
}

// NewStreamReader opens the stream of sealed bytes (a length PlainLen
// accepts) read from r.
func NewStreamReader(r io.Reader, aead *AEAD, prefix [PrefixSize]byte, ad []byte, sealed int64) (*StreamReader, error) {
	if _, ok := PlainLen(sealed); !ok {
		return nil, fmt.Errorf("%w: %d is not the length of a sealed stream", ErrOpen, sealed)
	}
	return &StreamReader{r: r, gcm: aead.gcm(prefix[:]), prefix: prefix, ad: ad, left: sealed}, nil
}

func (s *StreamReader) Read(p []byte) (int, error) {
	for len(s.plain) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.left == 0 {
			return 0, io.EOF
		}
		n := min(s.left, sealedSeg)
		if s.buf == nil {
			s.buf = make([]byte, sealedSeg)
		}
		b := s.buf[:n]
		if _, err := io.ReadFull(s.r, b); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			s.err = err
			return 0, err
		}
		s.left -= n
		nonce := streamNonce(&s.prefix, uint64(s.seg), s.left == 0)
		plain, err := s.gcm.Open(b[:0], nonce[keyPart:], b, s.ad)
		if err != nil {
			s.err = &OpenError{Segment: s.seg, Off: s.seg * sealedSeg}
			return 0, s.err
		}
		s.plain = plain
		s.seg++
	}
	n := copy(p, s.plain)
	s.plain = s.plain[n:]
	return n, nil
}
