package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// A Stream reads an image front to back from an io.Reader that cannot
// seek (standard input, a socket): the header, the key slots, the layout
// block, then the frames one at a time, each checked (CRC, BLAKE3, and
// when sealed its authentication with the offset counted so far) as it
// passes, and at the end the index, maps, metadata and footer, which
// Finish checks exactly as Open does for a file. Memory is one frame and
// one chunk at a time, plus 48 bytes per frame seen (its offset, stored
// length and hash) and the tail's first 8 MiB (the rest spills to a
// temporary file), so a stream of any size can be read.
type Stream struct {
	// TempDir is where the tail (index, maps, metadata) spills when it
	// is larger than 8 MiB ("": os.TempDir()).
	TempDir string
	// Keep, if set, says which frames to keep (their stored bytes, at
	// most 64 MiB in all) so that the Reader Finish returns can read
	// those chunks: info reads the first chunks of each partition for
	// labels and UUIDs. Other chunks of that Reader do not read.
	Keep func(area uint32, chunk uint64) bool

	r       io.Reader
	off     int64
	id      ID
	version uint16
	prefix  []byte // header, key slots, layout block
	layout  *Layout
	key     seal.Key
	ciphers *seal.Ciphers
	dec     *codec.Decoder
	frames  []seenFrame
	bad     map[int64]bool // frames that failed their checks
	kept    map[int64][]byte
	keptLen int64
	// Delta frames are kept whatever Keep says: they are decoded over
	// the parent's chunks, which the Reader Finish returns reads once
	// the parents are attached.
	deltaLen int64
	fbuf     []byte
	mu       sync.Mutex // bad and kept, for Decode
	marker   [4]byte    // the index block's marker, once met
	atIndex  bool
	done     bool
}

// seenFrame is what a Stream remembers of each frame: enough to check
// the index against it at the end.
type seenFrame struct {
	off    int64
	stored uint32
	hash   [32]byte
}

// maxKept bounds the frames a Stream keeps for its Reader (Keep).
const maxKept = 64 << 20

// maxKeptDeltas bounds the delta frames a Stream keeps: an incremental
// of scattered small changes holds a few MiB of them.
const maxKeptDeltas = 512 << 20

// StreamEndError is a stream that ends before the image does.
type StreamEndError struct {
	Off int64 // bytes read
}

func (e *StreamEndError) Error() string {
	return fmt.Sprintf("image: the stream ends at byte %d before the footer (cut short)", e.Off)
}

func (e *StreamEndError) Is(target error) bool { return target == ErrDamaged }

// NewStream reads the start of the image in r: its header, its key slots
// (unlocked with keys, as Open does) and its layout block (version 2).
func NewStream(r io.Reader, keys Keyring) (*Stream, error) {
	s := &Stream{r: r, bad: map[int64]bool{}, kept: map[int64][]byte{}}
	hb := make([]byte, headerSize)
	n, err := io.ReadFull(r, hb)
	if n < 8 || [8]byte(hb[:8]) != headerMagic {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("image: read header: %w", err)
		}
		return nil, &notImageError{"not a Platter image (no Platter header at byte 0)"}
	}
	s.off = int64(n)
	if err != nil {
		return nil, s.readErr(err)
	}
	s.prefix = hb
	le := binary.LittleEndian
	if le.Uint32(hb[60:]) != crc(hb[:60]) {
		return nil, &FormatError{Off: 0, Msg: "image header checksum mismatch"}
	}
	s.version = le.Uint16(hb[8:])
	if s.version == 0 || s.version > Version {
		return nil, &FormatError{Off: 8, Msg: fmt.Sprintf("image format version %d is not supported (this platter reads 1..%d)", s.version, Version)}
	}
	flags := le.Uint32(hb[12:])
	if s.version >= 2 && flags&^FlagEncrypted != 0 {
		return nil, &FormatError{Off: 12, Msg: fmt.Sprintf("image header flags %#x are not supported", flags)}
	}
	copy(s.id[:], hb[16:32])
	if s.version < 2 {
		return s, nil
	}
	// The Reader's own code checks the slots and the layout block, over
	// the bytes read so far.
	ir := &Reader{id: s.id, dataStart: headerSize}
	copy(ir.head[:], hb)
	if flags&FlagEncrypted != 0 {
		b, err := s.read(seal.AreaSize)
		if err != nil {
			return nil, err
		}
		s.prefix = append(s.prefix, b...)
		ir.r = bytes.NewReader(s.prefix)
		if err := ir.readSlots(); err != nil {
			return nil, err
		}
		if err := ir.unlock(keys); err != nil {
			return nil, err
		}
		s.key, s.ciphers = ir.key, ir.ciphers
	}
	// The layout block's length is in its header; its payload is at
	// most 1 MiB decoded, so its stored bytes are bounded too.
	const maxStored = maxLayoutLen + 64<<10
	var head []byte
	var n64 int64
	if s.ciphers != nil {
		if head, err = s.read(sealedBlockHead); err != nil {
			return nil, err
		}
		n64 = int64(le.Uint64(head[8:]))
		if [4]byte(head[0:4]) == layoutMagic && (n64 < 0 || n64 > seal.SealedLen(blockHeaderSize+maxStored)) {
			return nil, &FormatError{Off: s.off - sealedBlockHead + 8, Msg: fmt.Sprintf("layout block claims %d bytes, more than a layout takes", n64)}
		}
	} else {
		if head, err = s.read(blockHeaderSize); err != nil {
			return nil, err
		}
		n64 = int64(le.Uint64(head[16:]))
		if [4]byte(head[0:4]) == layoutMagic && (n64 < 0 || n64 > maxStored) {
			return nil, &FormatError{Off: s.off - blockHeaderSize + 16, Msg: fmt.Sprintf("layout block claims %d bytes, more than a layout takes", n64)}
		}
	}
	if [4]byte(head[0:4]) != layoutMagic {
		return nil, &FormatError{Off: s.off - int64(len(head)), Msg: fmt.Sprintf("no %q block marker", layoutMagic[:])}
	}
	body, err := s.read(int(n64))
	if err != nil {
		return nil, err
	}
	s.prefix = append(append(s.prefix, head...), body...)
	ir.r = bytes.NewReader(s.prefix)
	if err := ir.readLayout(int64(len(s.prefix))); err != nil {
		return nil, err
	}
	if err := checkLayout(ir.layout); err != nil {
		return nil, &FormatError{Off: ir.dataStart - int64(len(head)) - n64, Msg: "layout block: " + err.Error()}
	}
	s.layout = ir.layout
	return s, nil
}

// checkLayout applies to a layout the checks checkMeta applies to the
// metadata: a stream places chunks by it before the metadata is read.
func checkLayout(l *Layout) error {
	switch {
	case l.ChunkSize < minChunkSize || l.ChunkSize > maxChunkSize || l.ChunkSize&(l.ChunkSize-1) != 0:
		return fmt.Errorf("chunk size %d is not a power of two in %d..%d", l.ChunkSize, minChunkSize, maxChunkSize)
	case l.SectorSize < 512 || l.SectorSize > 65536 || l.SectorSize&(l.SectorSize-1) != 0:
		return fmt.Errorf("sector size %d is impossible", l.SectorSize)
	case l.SourceSize < 0:
		return fmt.Errorf("source size %d is negative", l.SourceSize)
	}
	for i, a := range l.Areas {
		if a.Start < 0 || a.Size <= 0 || a.Start > l.SourceSize || a.Size > l.SourceSize-a.Start {
			return fmt.Errorf("area %d lies outside the %d-byte source", i, l.SourceSize)
		}
	}
	return nil
}

// read reads n bytes of the stream.
func (s *Stream) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if err := s.readInto(b); err != nil {
		return nil, err
	}
	return b, nil
}

func (s *Stream) readInto(b []byte) error {
	n, err := io.ReadFull(s.r, b)
	s.off += int64(n)
	if err != nil {
		return s.readErr(err)
	}
	return nil
}

// readErr turns an end of the stream into a StreamEndError; other
// errors are the pipe's, not damage.
func (s *Stream) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &StreamEndError{Off: s.off}
	}
	return fmt.Errorf("image: read the stream at byte %d: %w", s.off, err)
}

// ID is the image's id, from its header.
func (s *Stream) ID() ID { return s.id }

// Version is the image's format version.
func (s *Stream) Version() int { return int(s.version) }

// Layout is the image's layout block; nil for version 1, which has none
// (such an image can be verified from a stream but not placed on a disk
// before its end).
func (s *Stream) Layout() *Layout { return s.layout }

// Offset is the number of bytes read so far.
func (s *Stream) Offset() int64 { return s.off }

// StreamFrame is one frame of a stream, checked and decoded.
type StreamFrame struct {
	Off   int64 // image offset of the frame
	Area  uint32
	Chunk uint64 // the chunk the frame header names (the first that had it)
	Hash  [32]byte
	// Data is the decoded chunk: in the buffer given to Decode or Next,
	// or, for a chunk stored as it is in a plain image, where its bytes
	// were read (the raw buffer given to ReadFrame; Next's own, valid
	// until the next call of Next).
	Data []byte
	// Delta: the frame is a delta over a parent's chunk, checked (its
	// stored bytes and header) and kept; Data is nil. The Reader Finish
	// returns reads the chunk once its parents are attached.
	Delta bool
}

// PendingFrame is a frame read from the stream whose header was checked
// against the layout, and whose contents are not checked yet: Decode
// checks and decodes them.
type PendingFrame struct {
	Off   int64 // image offset of the frame
	Area  uint32
	Chunk uint64
	// Raw is the buffer the frame's bytes were read into (the one given
	// to ReadFrame, or a larger one); it holds them until Decode returns.
	Raw []byte

	s       *Stream
	h       frameHeader
	head    [frameHeaderSize]byte // a plain frame's header, as read
	payload []byte                // the stored bytes, in Raw
	sealed  bool
	delta   bool
	// sealedBytes are a sealed frame's bytes as stored, when kept.
	sealedBytes []byte
}

// Delta reports whether the frame is a delta over a parent's chunk:
// Decode checks and keeps it, and returns no data.
func (p *PendingFrame) Delta() bool { return p.delta }

// Next reads the next frame, checks it and decodes it into buf (grown
// when too small). It returns io.EOF when the index block begins (Finish
// reads the rest). A frame that fails a check gives a *ChunkError; the
// stream goes on after it. Any other error ends the stream.
func (s *Stream) Next(buf []byte) (*StreamFrame, error) {
	p, err := s.ReadFrame(s.fbuf)
	if err != nil {
		return nil, err
	}
	s.fbuf = p.Raw
	return p.Decode(buf)
}

// ReadFrame reads the next frame into raw (grown when too small) and
// checks what its place in the stream says: its header and, in an
// encrypted image, its authentication. Decode checks the rest, and may
// run for several frames at once while the next ones are read; Finish
// and Check come after every Decode has returned. ReadFrame returns
// io.EOF when the index block begins, a *ChunkError for a frame that
// fails a check (the stream goes on after it), and any other error when
// the stream cannot go on.
func (s *Stream) ReadFrame(raw []byte) (*PendingFrame, error) {
	if s.atIndex {
		return nil, io.EOF
	}
	if s.done {
		return nil, errors.New("image: stream read after an error")
	}
	off := s.off
	var m [4]byte
	if err := s.readInto(m[:]); err != nil {
		s.done = true
		return nil, err
	}
	switch {
	case m == indexMagic:
		s.marker, s.atIndex = m, true
		return nil, io.EOF
	case m == sealedMagic && s.ciphers != nil:
		return s.sealedFrame(off, raw)
	case m == frameMagic && s.ciphers == nil:
		return s.plainFrame(off, raw)
	}
	s.done = true
	return nil, &FormatError{Off: off, Msg: "no frame or index marker"}
}

// maxStoredFrame bounds a frame's payload: a chunk plus 1 KiB.
func (s *Stream) maxStoredFrame() int64 {
	if s.layout != nil {
		return s.layout.ChunkSize + 1024
	}
	return maxChunkSize + 1024
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// plainFrame reads a frame's header, and its payload into the start of
// raw (so a chunk stored as it is lies where the caller aligned raw).
func (s *Stream) plainFrame(off int64, raw []byte) (*PendingFrame, error) {
	var hb [frameHeaderSize]byte
	copy(hb[:], frameMagic[:])
	if err := s.readInto(hb[4:]); err != nil {
		s.done = true
		return nil, err
	}
	h, _ := parseFrameHeader(hb[:])
	if int64(h.Stored) > s.maxStoredFrame() || int64(h.RawLen) > maxChunkSize {
		s.done = true
		return nil, &FormatError{Off: off + 12, Msg: fmt.Sprintf("frame claims %d stored and %d decoded bytes, more than a chunk", h.Stored, h.RawLen)}
	}
	raw = grow(raw, int(h.Stored))
	if err := s.readInto(raw); err != nil {
		s.done = true
		return nil, err
	}
	p, err := s.pending(off, h, raw, raw, hb[5:8], false)
	if p != nil {
		p.head = hb
	}
	return p, err
}

func (s *Stream) sealedFrame(off int64, raw []byte) (*PendingFrame, error) {
	var lb [4]byte
	if err := s.readInto(lb[:]); err != nil {
		s.done = true
		return nil, err
	}
	sealed := int64(binary.LittleEndian.Uint32(lb[:]))
	if sealed < frameHeaderSize+seal.Overhead || sealed > frameHeaderSize+s.maxStoredFrame()+seal.Overhead {
		s.done = true
		return nil, &FormatError{Off: off + 4, Msg: fmt.Sprintf("sealed frame claims %d bytes, more than a chunk or fewer than a frame", sealed)}
	}
	fb := grow(raw, sealedFrameHead+int(sealed))
	copy(fb, sealedMagic[:])
	copy(fb[4:], lb[:])
	if err := s.readInto(fb[8:]); err != nil {
		s.done = true
		return nil, err
	}
	var kept []byte // the sealed bytes, which Open overwrites
	// (An incremental's frame may be a delta, kept in any case.)
	if s.Keep != nil || s.layout != nil && s.layout.Parent != nil {
		kept = bytes.Clone(fb)
	}
	in, err := s.ciphers.Frame.Open(fb[sealedFrameHead:sealedFrameHead], fb[8:sealedFrameHead], fb[sealedFrameHead:], frameAD(s.id, off))
	if err != nil {
		s.markBad(off)
		return nil, &ChunkError{Entry: Entry{FrameOff: off}, Where: "a frame", Msg: "sealed frame fails authentication (changed, damaged, moved or from another image)"}
	}
	h, ok := parseFrameHeader(in)
	if !ok || int(h.Stored) != len(in)-frameHeaderSize {
		s.markBad(off)
		return nil, &ChunkError{Entry: Entry{FrameOff: off}, Where: "a frame", Msg: "sealed frame holds no frame header that fits it"}
	}
	p, err := s.pending(off, h, fb, in[frameHeaderSize:], in[5:8], true)
	if p != nil {
		p.sealedBytes = kept
	}
	if kept != nil && p != nil && !p.delta {
		s.keep(off, h, kept)
	}
	return p, err
}

func (s *Stream) markBad(off int64) {
	s.mu.Lock()
	s.bad[off] = true
	s.mu.Unlock()
}

// pending checks a frame's header against the layout and records it.
// flags are the header's flags and reserved bytes, all zero.
func (s *Stream) pending(off int64, h frameHeader, raw, payload, flags []byte, sealed bool) (*PendingFrame, error) {
	p := &PendingFrame{Off: off, Area: h.Area, Chunk: h.Chunk, Raw: raw, s: s, h: h, payload: payload, sealed: sealed}
	if flags[0]&^frameDelta|flags[1]|flags[2] != 0 {
		return nil, p.bad("frame flags %x are not zero", flags)
	}
	p.delta = flags[0]&frameDelta != 0
	if l := s.layout; l != nil {
		if int(h.Area) >= len(l.Areas) {
			return nil, p.bad("the frame names area %d; the layout has %d", h.Area, len(l.Areas))
		}
		a := l.Areas[h.Area]
		if h.Chunk >= uint64((a.Size+l.ChunkSize-1)/l.ChunkSize) {
			return nil, p.bad("the frame names chunk %d, past the end of its area", h.Chunk)
		}
		if want := min(l.ChunkSize, a.Size-int64(h.Chunk)*l.ChunkSize); int64(h.RawLen) != want {
			return nil, p.bad("chunk length %d, want %d", h.RawLen, want)
		}
	}
	if int64(h.Stored) > int64(h.RawLen)+1024 {
		return nil, p.bad("frame payload of %d bytes for a %d-byte chunk", h.Stored, h.RawLen)
	}
	if s.dec == nil {
		// Decode may run for several frames at once.
		d, err := codec.NewDecoder(runtime.GOMAXPROCS(0))
		if err != nil {
			return nil, err
		}
		s.dec = d
	}
	// Check finds a frame that fails Decode in bad.
	s.frames = append(s.frames, seenFrame{off: off, stored: h.Stored, hash: h.Hash})
	return p, nil
}

// bad marks the frame as failing its checks and describes why.
func (p *PendingFrame) bad(format string, args ...any) error {
	p.s.markBad(p.Off)
	e := Entry{Area: p.h.Area, Chunk: p.h.Chunk, FrameOff: p.Off, Stored: p.h.Stored, RawLen: p.h.RawLen, Hash: p.h.Hash}
	return &ChunkError{Entry: e, Where: p.s.where(p.h), Msg: fmt.Sprintf(format, args...)}
}

// InPlace reports whether Decode returns the chunk where ReadFrame read
// it (stored as it is in a plain image), so it needs no buffer.
func (p *PendingFrame) InPlace() bool {
	return codec.ID(p.h.Codec) == codec.None && !p.sealed
}

// Decode checks the frame's stored bytes (CRC) and decodes them into buf
// (grown when too small), checking the chunk's BLAKE3 hash. A chunk
// stored as it is in a plain image is checked where ReadFrame read it and
// returned there, not copied. A frame that fails gives a *ChunkError.
// Decode is safe to call for several frames at once.
func (p *PendingFrame) Decode(buf []byte) (*StreamFrame, error) {
	h := p.h
	if crc(p.payload) != h.Checksum {
		return nil, p.bad("stored bytes checksum mismatch")
	}
	if p.delta {
		return p.keepDelta()
	}
	var data []byte
	if p.InPlace() {
		if len(p.payload) != int(h.RawLen) {
			return nil, p.bad("%v: stored chunk is %d bytes, want %d", codec.ErrCorrupt, len(p.payload), h.RawLen)
		}
		data = p.payload
	} else {
		if cap(buf) < int(h.RawLen) {
			buf = make([]byte, 0, h.RawLen)
		}
		var err error
		data, err = p.s.dec.Decode(codec.ID(h.Codec), buf[:0:h.RawLen], p.payload)
		if err != nil {
			return nil, p.bad("%v", err)
		}
	}
	if len(data) != int(h.RawLen) {
		return nil, p.bad("decodes to %d bytes, not %d", len(data), h.RawLen)
	}
	if blake3.Sum256(data) != h.Hash {
		return nil, p.bad("BLAKE3 hash mismatch")
	}
	if !p.sealed && p.s.Keep != nil {
		p.s.keep(p.Off, h, append(p.head[:], p.payload...))
	}
	return &StreamFrame{Off: p.Off, Area: h.Area, Chunk: h.Chunk, Hash: h.Hash, Data: data}, nil
}

// keepDelta checks a delta frame's header and keeps the frame, as
// stored, for the Reader Finish returns.
func (p *PendingFrame) keepDelta() (*StreamFrame, error) {
	h := p.h
	if _, err := parseDelta(p.payload, int(h.RawLen)); err != nil {
		return nil, p.bad("%v", err)
	}
	b := p.sealedBytes
	if !p.sealed {
		b = append(p.head[:], p.payload...)
	}
	if b == nil {
		return nil, fmt.Errorf("image: internal error: sealed delta frame at byte %d not kept", p.Off)
	}
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deltaLen+int64(len(b)) > maxKeptDeltas {
		return nil, fmt.Errorf("image: the stream's delta frames exceed %d MiB, more than are kept in memory: read the image from a file", maxKeptDeltas>>20)
	}
	s.kept[p.Off] = bytes.Clone(b)
	s.deltaLen += int64(len(b))
	return &StreamFrame{Off: p.Off, Area: h.Area, Chunk: h.Chunk, Hash: h.Hash, Delta: true}, nil
}

// keep copies a frame's bytes for the Reader when Keep asks for them.
func (s *Stream) keep(off int64, h frameHeader, b []byte) {
	if s.Keep == nil || !s.Keep(h.Area, h.Chunk) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keptLen+int64(len(b)) > maxKept {
		return
	}
	s.kept[off] = bytes.Clone(b)
	s.keptLen += int64(len(b))
}

// where names the chunk a frame header names, for messages.
func (s *Stream) where(h frameHeader) string {
	l := s.layout
	if l == nil || int(h.Area) >= len(l.Areas) {
		return fmt.Sprintf("area %d, chunk %d", h.Area, h.Chunk)
	}
	a := l.Areas[h.Area]
	off := int64(h.Chunk) * l.ChunkSize
	if a.Kind == KindGap {
		return fmt.Sprintf("area outside partitions, disk bytes %d-%d", a.Start+off, a.Start+off+int64(h.RawLen)-1)
	}
	return fmt.Sprintf("partition %d, bytes %d-%d", a.Index, off, off+int64(h.RawLen)-1)
}

// Finish reads the rest of the stream once Next has returned io.EOF: the
// index, maps and metadata blocks and the footer, whose offsets must be
// where the stream counted them, and then the end of the stream. It
// checks them as Open checks a file's and returns the Reader: its
// metadata, index and maps, and the chunks Keep kept (no other chunk
// reads). Check compares the index with the frames seen.
func (s *Stream) Finish() (*Reader, error) {
	if !s.atIndex {
		return nil, errors.New("image: Finish before the index")
	}
	if s.dec != nil {
		s.dec.Close()
		s.dec = nil
	}
	t := &tail{dir: s.TempDir}
	done := false
	defer func() {
		if !done {
			t.Close()
		}
	}()
	var offs [3]int64
	first := s.marker
	for i, magic := range [][4]byte{indexMagic, mapsMagic, metaMagic} {
		have := first[:]
		if i > 0 {
			have = nil
		}
		offs[i] = s.off - int64(len(have))
		if err := s.copyBlock(t, magic, have); err != nil {
			return nil, err
		}
	}
	fb, err := s.read(footerSize)
	if err != nil {
		return nil, err
	}
	footOff := s.off - footerSize
	if err := t.write(fb); err != nil {
		return nil, err
	}
	var one [1]byte
	if n, _ := io.ReadFull(s.r, one[:]); n > 0 {
		return nil, &FormatError{Off: s.off, Msg: "the stream goes on after the footer"}
	}
	if [8]byte(fb[:8]) == footerMagic && binary.LittleEndian.Uint32(fb[92:]) == crc(fb[:92]) {
		f := parseFooter(fb)
		if f.IndexOff != offs[0] || f.MapsOff != offs[1] || f.MetaOff != offs[2] {
			return nil, &FormatError{Off: footOff + 32, Msg: fmt.Sprintf("footer puts the index, maps and metadata at bytes %d, %d, %d; the stream has them at %d, %d, %d",
				f.IndexOff, f.MapsOff, f.MetaOff, offs[0], offs[1], offs[2])}
		}
	}
	ra := &streamReaderAt{prefix: s.prefix, kept: s.kept, tail: t, tailOff: offs[0]}
	r, err := Open(ra, s.off, knownKey{id: s.id, key: s.key, ok: s.ciphers != nil})
	if err != nil {
		return nil, err
	}
	r.tail, done = t, true
	return r, nil
}

// copyBlock copies the block that begins at the stream's position (its
// first bytes, already read, in have) into t.
func (s *Stream) copyBlock(t *tail, magic [4]byte, have []byte) error {
	start := s.off - int64(len(have))
	headLen := blockHeaderSize
	if s.ciphers != nil {
		headLen = sealedBlockHead
	}
	head := make([]byte, headLen)
	copy(head, have)
	if err := s.readInto(head[len(have):]); err != nil {
		return err
	}
	if [4]byte(head[0:4]) != magic {
		return &FormatError{Off: start, Msg: fmt.Sprintf("no %q block marker", magic[:])}
	}
	var n int64
	if s.ciphers != nil {
		n = int64(binary.LittleEndian.Uint64(head[8:]))
	} else {
		n = int64(binary.LittleEndian.Uint64(head[16:]))
	}
	if n < 0 || (magic == metaMagic && n > 2*maxMetaLen+64<<10) || n > 1<<50 {
		return &FormatError{Off: start + 8, Msg: fmt.Sprintf("%s block claims %d bytes", magic[:], n)}
	}
	if err := t.write(head); err != nil {
		return err
	}
	// The bytes are copied as they come, never whole in memory.
	c, err := io.CopyN(t, s.r, n)
	s.off += c
	if err != nil {
		if t.err != nil {
			return t.err
		}
		return s.readErr(err)
	}
	return nil
}

// Check compares r's index (r from Finish) with the frames the stream
// held: every entry with a frame must name one that went by, checked,
// with the same hash and length. It returns one ChunkError per entry
// that does not, in index order.
func (s *Stream) Check(r *Reader) []*ChunkError {
	var bad []*ChunkError
	for _, e := range r.entries {
		if e.Zero() || e.InParent() {
			continue
		}
		i := sort.Search(len(s.frames), func(i int) bool { return s.frames[i].off >= e.FrameOff })
		msg := ""
		switch {
		case s.bad[e.FrameOff]:
			msg = "its frame failed its checks as it went by"
		case i == len(s.frames) || s.frames[i].off != e.FrameOff:
			msg = "the stream held no frame at that offset"
		case s.frames[i].hash != e.Hash || s.frames[i].stored != e.Stored:
			msg = "frame header hash or length disagrees with the index"
		default:
			continue
		}
		bad = append(bad, &ChunkError{Entry: e, Where: r.Where(e), Msg: msg})
	}
	return bad
}

// knownKey unlocks the one image whose data key the stream already has:
// Finish's Open costs no second key derivation.
type knownKey struct {
	id  ID
	key seal.Key
	ok  bool
}

func (k knownKey) Unlock(id [16]byte, _ *seal.Slots) (seal.Key, error) {
	if !k.ok || ID(id) != k.id {
		return seal.Key{}, seal.ErrNoSecret
	}
	return k.key, nil
}

// tail holds the end of a streamed image (index, maps, metadata,
// footer) for reading at random: in memory up to spoolMemory, then in an
// unlinked temporary file.
type tail struct {
	dir string
	mem []byte
	f   *os.File
	n   int64
	err error
}

func (t *tail) Write(p []byte) (int, error) {
	if err := t.write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *tail) write(p []byte) error {
	if t.f == nil && int64(len(t.mem))+int64(len(p)) > spoolMemory {
		f, err := os.CreateTemp(t.dir, ".platter-stream-*")
		if err != nil {
			t.err = fmt.Errorf("image: keep the end of the stream: %w", err)
			return t.err
		}
		os.Remove(f.Name()) // gone when closed, even after a crash
		t.f = f
		if _, err := f.Write(t.mem); err != nil {
			t.err = fmt.Errorf("image: keep the end of the stream: %w", err)
			return t.err
		}
		t.mem = nil
	}
	if t.f != nil {
		if _, err := t.f.Write(p); err != nil {
			t.err = fmt.Errorf("image: keep the end of the stream: %w", err)
			return t.err
		}
	} else {
		t.mem = append(t.mem, p...)
	}
	t.n += int64(len(p))
	return nil
}

func (t *tail) ReadAt(p []byte, off int64) (int, error) {
	if t.f != nil {
		return t.f.ReadAt(p, off)
	}
	if off >= int64(len(t.mem)) {
		return 0, io.EOF
	}
	n := copy(p, t.mem[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (t *tail) Close() error {
	if t.f != nil {
		return t.f.Close()
	}
	return nil
}

// ErrNotKept is the error of reading a frame of a streamed image that
// went by and was not kept.
var ErrNotKept = errors.New("image: the frame went by in the stream and was not kept")

// streamReaderAt is a streamed image as far as it was kept: the bytes
// before the first frame, the kept frames and the tail.
type streamReaderAt struct {
	prefix  []byte
	kept    map[int64][]byte
	tail    *tail
	tailOff int64
}

func (s *streamReaderAt) ReadAt(p []byte, off int64) (int, error) {
	switch {
	case off >= s.tailOff:
		return s.tail.ReadAt(p, off-s.tailOff)
	case off+int64(len(p)) <= int64(len(s.prefix)):
		return copy(p, s.prefix[off:]), nil
	}
	if b, ok := s.kept[off]; ok && len(p) <= len(b) {
		return copy(p, b), nil
	}
	return 0, ErrNotKept
}
