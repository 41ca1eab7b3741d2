package image

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/zeebo/blake3"
)

// Limits that keep a hostile file from making the reader allocate or
// decode without bound: every length is checked against what the file can
// hold before anything is allocated.
const (
	// maxMetaLen bounds the decoded metadata (JSON): an honest one is a
	// few KB even with every partition a GPT can hold.
	maxMetaLen   = 4 << 20
	minChunkSize = 4 << 10
	maxChunkSize = 64 << 20
	// An index entry holds a 32-byte hash; an honest index compresses
	// about 55 times at most (a large empty raw area: all zero chunks).
	// Anything that claims more than this per stored byte is a lie.
	maxIndexExpansion = 1024
)

// Reader gives random access to the chunks of an image. Its methods are
// safe for concurrent use.
type Reader struct {
	r       io.ReaderAt
	size    int64
	id      ID
	meta    *Metadata
	entries []Entry
	digest  [32]byte
	dec     *codec.Decoder
	bufs    sync.Pool
	// deltaBufs hold a delta chunk's decoded sub-blocks.
	deltaBufs sync.Pool
	maps      []*AreaMap
	name      string  // the file, for messages
	parent    *Reader // AttachParent
	content   [32]byte
	tail      io.Closer // a streamed image's kept end (Stream.Finish)

	head      [headerSize]byte
	foot      [footerSize]byte
	layout    *Layout // nil in version 1
	dataStart int64   // where frames may begin
	// Encrypted images: the key slots, the data key and its ciphers.
	area    *seal.Area
	key     seal.Key
	ciphers *seal.Ciphers
}

// NewReader opens the plain image in r (size bytes): see Open. An
// encrypted image gives an error wrapping seal.ErrNoSecret.
func NewReader(r io.ReaderAt, size int64) (*Reader, error) {
	return Open(r, size, nil)
}

// Open opens the image in r (size bytes): it checks the header and
// footer, unlocks an encrypted image with keys, and reads and checks the
// layout, the metadata and the whole index. Frames are read on demand. A
// failure to unlock is not damage (it does not match ErrDamaged).
func Open(r io.ReaderAt, size int64, keys Keyring) (*Reader, error) {
	ir := &Reader{r: r, size: size}
	hb := ir.head[:]
	n, err := r.ReadAt(hb, 0)
	if n < 8 || [8]byte(hb[:8]) != headerMagic {
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("image: read header: %w", err)
		}
		return nil, &notImageError{"not a Platter image (no Platter header at byte 0)"}
	}
	le := binary.LittleEndian
	if n < headerSize {
		return nil, &FormatError{Off: int64(n), Msg: "file ends inside the image header (truncated)"}
	}
	if le.Uint32(hb[60:]) != crc(hb[:60]) {
		return nil, &FormatError{Off: 0, Msg: "image header checksum mismatch"}
	}
	version := le.Uint16(hb[8:])
	if version == 0 || version > Version {
		return nil, &FormatError{Off: 8, Msg: fmt.Sprintf("image format version %d is not supported (this platter reads 1..%d)", version, Version)}
	}
	flags := le.Uint32(hb[12:])
	if version >= 2 && flags&^FlagEncrypted != 0 {
		return nil, &FormatError{Off: 12, Msg: fmt.Sprintf("image header flags %#x are not supported", flags)}
	}
	copy(ir.id[:], hb[16:32])
	ir.dataStart = headerSize

	encrypted := version >= 2 && flags&FlagEncrypted != 0
	if encrypted {
		if err := ir.readSlots(); err != nil {
			return nil, err
		}
	}

	if size < ir.dataStart+footerSize {
		return nil, &FormatError{Off: size, Msg: "file ends before the footer (truncated or unfinished image)"}
	}
	fb := ir.foot[:]
	if _, err := r.ReadAt(fb, size-footerSize); err != nil {
		return nil, fmt.Errorf("image: read footer at byte %d: %w", size-footerSize, err)
	}
	footOff := size - footerSize
	if [8]byte(fb[:8]) != footerMagic {
		return nil, &FormatError{Off: footOff, Msg: "no footer (the image is truncated or was never finished)"}
	}
	if le.Uint32(fb[92:]) != crc(fb[:92]) {
		return nil, &FormatError{Off: footOff, Msg: "footer checksum mismatch"}
	}
	f := parseFooter(fb)
	if f.ID != ir.id {
		return nil, &FormatError{Off: footOff + 16, Msg: "footer belongs to another image (id mismatch)"}
	}
	if version >= 2 && (f.Version != version || f.Flags != flags) {
		return nil, &FormatError{Off: footOff + 8, Msg: fmt.Sprintf("footer says version %d, flags %#x; the header %d, %#x", f.Version, f.Flags, version, flags)}
	}
	// Index, maps and metadata follow each other, and the footer follows
	// them. Each block is bounded by the file before any sum, so no sum
	// wraps around to where the next block should be.
	within := func(off, n int64) bool {
		return off >= ir.dataStart && off <= footOff && n >= blockHeaderSize && n <= footOff-off
	}
	if !within(f.IndexOff, f.IndexLen) || !within(f.MapsOff, f.MapsLen) || !within(f.MetaOff, f.MetaLen) ||
		f.IndexOff+f.IndexLen != f.MapsOff || f.MapsOff+f.MapsLen != f.MetaOff || f.MetaOff+f.MetaLen != footOff {
		return nil, &FormatError{Off: footOff + 32, Msg: "footer points outside the file"}
	}
	if encrypted {
		if err := ir.unlock(keys); err != nil {
			return nil, err
		}
	}
	if version >= 2 {
		if err := ir.readLayout(f.IndexOff); err != nil {
			return nil, err
		}
	}

	metaRaw, metaHash, err := ir.readBlock(f.MetaOff, f.MetaLen, metaMagic, maxMetaLen)
	if err != nil {
		return nil, err
	}
	var meta Metadata
	if err := json.Unmarshal(metaRaw, &meta); err != nil {
		return nil, &FormatError{Off: f.MetaOff, Msg: "metadata is not valid", Err: err}
	}
	if err := ir.checkMeta(&meta, f.MetaOff); err != nil {
		return nil, err
	}
	ir.meta = &meta
	if ir.layout != nil {
		if err := ir.layout.same(&meta); err != nil {
			return nil, &FormatError{Off: headerSize, Msg: err.Error()}
		}
	}

	// The index can hold at most one entry per chunk of every area, and
	// no more than its stored bytes can describe.
	var maxEntries int64
	for _, a := range meta.Areas {
		maxEntries += (a.Size + meta.ChunkSize - 1) / meta.ChunkSize
	}
	if f.EntryCount > uint64(maxEntries) {
		return nil, &FormatError{Off: footOff + 80, Msg: fmt.Sprintf("footer claims %d index entries, the areas have %d chunks", f.EntryCount, maxEntries)}
	}
	if limit := maxIndexExpansion * (f.IndexLen - blockHeaderSize); f.EntryCount > uint64(limit+(1<<20))/entrySize {
		return nil, &FormatError{Off: footOff + 80, Msg: fmt.Sprintf("footer claims %d index entries, more than the %d stored bytes of the index can describe", f.EntryCount, f.IndexLen-blockHeaderSize)}
	}
	idxHash, err := ir.readIndex(f.IndexOff, f.IndexLen, int64(f.EntryCount))
	if err != nil {
		return nil, err
	}
	mapsHash, err := ir.readMaps(f.MapsOff, f.MapsLen)
	if err != nil {
		return nil, err
	}
	h := blake3.New()
	h.Write(idxHash[:])
	h.Write(mapsHash[:])
	h.Write(metaHash[:])
	copy(ir.digest[:], h.Sum(nil))
	if ir.content, err = ir.contentDigest(mapsHash); err != nil {
		return nil, err
	}

	ir.dec, err = codec.NewDecoder(runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	return ir, nil
}

// readBlock reads and checks the metadata block at off.
func (ir *Reader) readBlock(off, length int64, magic [4]byte, maxRaw int64) ([]byte, [32]byte, error) {
	var raw []byte
	hash, err := ir.streamBlock(off, length, magic, maxRaw, func(r io.Reader, rawLen int64) error {
		raw = make([]byte, rawLen)
		_, err := io.ReadFull(r, raw)
		return err
	})
	return raw, hash, err
}

// readIndex reads the index block at off, which must hold count entries,
// checking each entry as it is decoded: memory grows only with entries
// that are really there and right.
func (ir *Reader) readIndex(off, length, count int64) ([32]byte, error) {
	return ir.streamBlock(off, length, indexMagic, count*entrySize, func(r io.Reader, rawLen int64) error {
		if rawLen != count*entrySize {
			return fmt.Errorf("index holds %d bytes, the footer says %d entries", rawLen, count)
		}
		br := bufio.NewReaderSize(r, 64<<10)
		var b [entrySize]byte
		for i := int64(0); i < count; i++ {
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return err
			}
			e := parseEntry(b[:])
			if err := ir.checkEntry(e, int(i), off); err != nil {
				return err
			}
			ir.entries = append(ir.entries, e)
		}
		return nil
	})
}

// streamBlock reads and checks the block at off and passes its decoded
// bytes (rawLen of them, at most maxRaw) to consume as a stream: neither
// the stored nor the decoded bytes are ever whole in memory. consume must
// read to the end; the stored bytes' checksum and the decoded bytes' hash
// are checked after it returns.
func (ir *Reader) streamBlock(off, length int64, magic [4]byte, maxRaw int64, consume func(r io.Reader, rawLen int64) error) ([32]byte, error) {
	var hb [blockHeaderSize]byte
	var body io.Reader
	var bodyLen int64
	if ir.ciphers != nil {
		sr, plain, err := ir.openSealedBlock(off, length, magic)
		if err != nil {
			return [32]byte{}, err
		}
		if _, err := io.ReadFull(sr, hb[:]); err != nil {
			if fe := sealError(err, off, magic); fe != nil {
				return [32]byte{}, fe
			}
			return [32]byte{}, fmt.Errorf("image: read %s block at byte %d: %w", magic[:], off, err)
		}
		body, bodyLen = sr, plain-blockHeaderSize
	} else {
		if _, err := ir.r.ReadAt(hb[:], off); err != nil {
			return [32]byte{}, fmt.Errorf("image: read block header at byte %d: %w", off, err)
		}
		body, bodyLen = io.NewSectionReader(ir.r, off+blockHeaderSize, length-blockHeaderSize), length-blockHeaderSize
	}
	h, err := parseBlockHeader(hb[:], magic)
	if err != nil {
		return [32]byte{}, &FormatError{Off: off, Msg: err.Error()}
	}
	if int64(h.Stored) != bodyLen {
		return h.Hash, &FormatError{Off: off + 16, Msg: fmt.Sprintf("%s block length %d does not match the footer's %d", magic[:], h.Stored, bodyLen)}
	}
	if int64(h.RawLen) > maxRaw || h.RawLen > 1<<62 {
		return h.Hash, &FormatError{Off: off + 8, Msg: fmt.Sprintf("%s block claims %d bytes, more than the %d possible", magic[:], h.RawLen, maxRaw)}
	}
	crcr := &crcReader{r: io.LimitReader(body, bodyLen)}
	dec, err := codec.NewBlockReader(codec.ID(h.Codec), crcr, int64(h.Stored), int64(h.RawLen))
	if err != nil {
		return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block does not decode", magic[:]), Err: err}
	}
	defer dec.Close()
	hasher := blake3.New()
	if err := consume(io.TeeReader(dec, hasher), int64(h.RawLen)); err != nil {
		if fe := sealError(err, off, magic); fe != nil {
			return h.Hash, fe
		}
		var fe *FormatError
		if errors.As(err, &fe) {
			return h.Hash, err
		}
		if derr := crcr.drain(); derr == nil && crcr.sum != h.StoredCRC {
			return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block checksum mismatch", magic[:])}
		} else if fe := sealError(derr, off, magic); fe != nil {
			return h.Hash, fe
		}
		return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block does not decode", magic[:]), Err: err}
	}
	// The decoder says whether more follows than the header claims.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		if fe := sealError(err, off, magic); fe != nil {
			return h.Hash, fe
		}
		return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block does not decode", magic[:]), Err: err}
	}
	if err := crcr.drain(); err != nil {
		if fe := sealError(err, off, magic); fe != nil {
			return h.Hash, fe
		}
		return h.Hash, fmt.Errorf("image: read %s block at byte %d: %w", magic[:], off, err)
	}
	if crcr.sum != h.StoredCRC {
		return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block checksum mismatch", magic[:])}
	}
	if [32]byte(hasher.Sum(nil)) != h.Hash {
		return h.Hash, &FormatError{Off: off + blockHeaderSize, Msg: fmt.Sprintf("%s block hash mismatch", magic[:])}
	}
	// A sealed stream must end here too (its last segment is checked
	// when it is read).
	if ir.ciphers != nil {
		if _, err := io.Copy(io.Discard, body); err != nil {
			if fe := sealError(err, off, magic); fe != nil {
				return h.Hash, fe
			}
			return h.Hash, fmt.Errorf("image: read %s block at byte %d: %w", magic[:], off, err)
		}
	}
	return h.Hash, nil
}

// crcReader computes the CRC-32C of what is read through it.
type crcReader struct {
	r   io.Reader
	sum uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sum = crc32.Update(c.sum, castagnoli, p[:n])
	return n, err
}

// drain reads what the decoder left, so the checksum covers every
// stored byte.
func (c *crcReader) drain() error {
	_, err := io.Copy(io.Discard, c)
	return err
}

func (ir *Reader) checkMeta(m *Metadata, off int64) error {
	bad := func(format string, args ...any) error {
		return &FormatError{Off: off, Msg: "metadata: " + fmt.Sprintf(format, args...)}
	}
	if m.FormatVersion < 1 || m.FormatVersion > Version {
		return bad("format version %d not supported", m.FormatVersion)
	}
	if m.ID != ir.id.String() {
		return bad("image id %q does not match the header's %s", m.ID, ir.id)
	}
	if m.ChunkSize < minChunkSize || m.ChunkSize > maxChunkSize || m.ChunkSize&(m.ChunkSize-1) != 0 {
		return bad("chunk size %d is not a power of two in %d..%d", m.ChunkSize, minChunkSize, maxChunkSize)
	}
	if m.SectorSize < 512 || m.SectorSize > 65536 || m.SectorSize&(m.SectorSize-1) != 0 {
		return bad("sector size %d is impossible", m.SectorSize)
	}
	if m.SourceSize < 0 {
		return bad("source size %d is negative", m.SourceSize)
	}
	switch {
	case m.Type != "" && m.Type != "full" && m.Type != "incremental" && m.Type != "differential":
		return bad("unknown image type %q", m.Type)
	case (m.Parent == "") != (m.Type == "" || m.Type == "full"):
		return bad("a %q image with parent %q", m.Type, m.Parent)
	}
	for i := range m.Areas {
		a := &m.Areas[i]
		if a.Start < 0 || a.Size <= 0 || a.Start > m.SourceSize || a.Size > m.SourceSize-a.Start {
			return bad("area %d (%s) lies outside the %d-byte source", i, a.Label(), m.SourceSize)
		}
		if a.Kind != KindPartition && a.Kind != KindGap {
			return bad("area %d has unknown kind %q", i, a.Kind)
		}
		if a.BlockSize < 0 || a.BlockSize > maxChunkSize || a.BlockSize&(a.BlockSize-1) != 0 || (a.BlockSize > 0 && a.Size/a.BlockSize > 1<<34) {
			return bad("area %d (%s) has an impossible map block size %d", i, a.Label(), a.BlockSize)
		}
	}
	return nil
}

// readMaps reads the maps block and keeps, for every area that has a
// map, the used blocks of its chunks (which all have index entries).
func (ir *Reader) readMaps(off, length int64) ([32]byte, error) {
	var want int64
	for _, a := range ir.meta.Areas {
		if a.BlockSize > 0 {
			want += ((a.Size+a.BlockSize-1)/a.BlockSize + 7) / 8
		}
	}
	if want > maxMapsBytes {
		return [32]byte{}, &FormatError{Off: off, Msg: fmt.Sprintf("the metadata calls for allocation maps of %d bytes, more than the %d a reader decodes", want, int64(maxMapsBytes))}
	}
	ir.maps = make([]*AreaMap, len(ir.meta.Areas))
	mr := &mapsReader{ir: ir, budget: mapBudget(ir.size)}
	return ir.streamBlock(off, length, mapsMagic, want, func(r io.Reader, rawLen int64) error {
		if rawLen != want {
			return fmt.Errorf("maps block holds %d bytes, the areas need %d", rawLen, want)
		}
		for i, a := range ir.meta.Areas {
			if a.BlockSize == 0 {
				continue
			}
			m, err := mr.readArea(r, i)
			if err != nil {
				return &FormatError{Off: off + blockHeaderSize, Msg: "maps block: " + err.Error()}
			}
			ir.maps[i] = m
		}
		_, err := io.Copy(io.Discard, r) // the end check and the last bytes' hash
		return err
	})
}

func (ir *Reader) checkEntry(e Entry, i int, indexOff int64) error {
	bad := func(format string, args ...any) error {
		return &FormatError{Off: indexOff + blockHeaderSize, Msg: fmt.Sprintf("index entry %d: ", i) + fmt.Sprintf(format, args...)}
	}
	if int(e.Area) >= len(ir.meta.Areas) {
		return bad("area %d does not exist", e.Area)
	}
	a := &ir.meta.Areas[e.Area]
	cs := ir.meta.ChunkSize
	if e.Chunk >= uint64((a.Size+cs-1)/cs) {
		return bad("chunk %d is past the end of %s", e.Chunk, a.Label())
	}
	if want := min(cs, a.Size-int64(e.Chunk)*cs); int64(e.RawLen) != want {
		return bad("chunk length %d, want %d", e.RawLen, want)
	}
	if e.Flags&^(FlagZero|FlagParent|FlagDelta) != 0 || e.Flags == FlagZero|FlagParent || e.Delta() && e.Flags != FlagDelta {
		return bad("unsupported flags %#x", e.Flags)
	}
	if (e.InParent() || e.Delta()) && ir.meta.Parent == "" {
		return bad("chunk is in a parent, but the image has none")
	}
	if !e.Zero() && !e.InParent() {
		// (Subtracted, not added: a frame offset near 2^63 would wrap.)
		if e.FrameOff < ir.dataStart || int64(e.Stored) > int64(e.RawLen)+1024 || e.FrameOff > indexOff-ir.frameLen(e) {
			return bad("frame at byte %d (%d bytes) lies outside the data area", e.FrameOff, e.Stored)
		}
	}
	if i > 0 {
		p := ir.entries[i-1]
		if p.Area > e.Area || (p.Area == e.Area && p.Chunk >= e.Chunk) {
			return bad("index is not sorted")
		}
	}
	return nil
}

// ID is the image's identity.
func (ir *Reader) ID() ID { return ir.id }

// Metadata describes the image. Callers must not modify it.
func (ir *Reader) Metadata() *Metadata { return ir.meta }

// Entries is the index, sorted by area and chunk. Callers must not modify it.
func (ir *Reader) Entries() []Entry { return ir.entries }

// Size is the image file's length in bytes.
func (ir *Reader) Size() int64 { return ir.size }

// Digest identifies the image's content: two copies of an image have the
// same digest. It covers the index (every chunk's hash) and the metadata.
func (ir *Reader) Digest() [32]byte { return ir.digest }

// Map is the allocation map of area i, or nil when every byte of the area
// counts as used (raw areas and gaps).
func (ir *Reader) Map(i int) *AreaMap { return ir.maps[i] }

// Where names the bytes a chunk covers, for messages:
// "partition 2, bytes 1048576-2097151".
func (ir *Reader) Where(e Entry) string {
	a := &ir.meta.Areas[e.Area]
	off := int64(e.Chunk) * ir.meta.ChunkSize
	if a.Kind == KindGap {
		return fmt.Sprintf("area outside partitions, disk bytes %d-%d", a.Start+off, a.Start+off+int64(e.RawLen)-1)
	}
	return fmt.Sprintf("partition %d, bytes %d-%d", a.Index, off, off+int64(e.RawLen)-1)
}

// ReadChunk returns the decoded, verified bytes of chunk e, using buf's
// storage if its capacity is at least e.RawLen. A chunk that fails any
// check gives a *ChunkError and no data.
func (ir *Reader) ReadChunk(e Entry, buf []byte) ([]byte, error) {
	if e.InParent() {
		r, pe, err := ir.resolve(e)
		if err != nil {
			return nil, err
		}
		return r.ReadChunk(pe, buf)
	}
	if cap(buf) < int(e.RawLen) {
		buf = make([]byte, 0, e.RawLen)
	}
	out := buf[:e.RawLen:e.RawLen]
	if e.Zero() {
		clear(out)
		return out, nil
	}
	need := int(ir.frameLen(e))
	sp, _ := ir.bufs.Get().(*[]byte)
	if sp == nil || cap(*sp) < need {
		b := make([]byte, need)
		sp = &b
	}
	defer ir.bufs.Put(sp)
	h, payload, err := ir.readFrame(e, (*sp)[:need])
	if err != nil {
		return nil, err
	}
	if e.Delta() {
		return ir.decodeDelta(e, h, payload, out)
	}
	return ir.decodeFrame(e, h, payload, out)
}

// Prefetcher is storage that can start reading a range ahead of a read
// (a local file, the volumes of a split image).
type Prefetcher interface{ Prefetch(off, n int64) }

// Prefetch asks the storage holding chunk e's frame to start reading it
// now, where it can (a local file: the kernel's read-ahead), so that a
// ReadChunk soon after finds it in memory. It returns the bytes asked
// for, and never fails: a prefetch that cannot be done is not done.
func (ir *Reader) Prefetch(e Entry) int64 {
	r, e, err := ir.resolve(e)
	if err != nil || e.Zero() {
		return 0
	}
	p, ok := r.r.(Prefetcher)
	if !ok {
		return 0
	}
	n := r.frameLen(e)
	p.Prefetch(e.FrameOff, n)
	return n
}

// storeName names the image in messages ("the image" when unnamed).
func (ir *Reader) storeName() string {
	if ir.name == "" {
		return "the image"
	}
	return ir.name
}

func (ir *Reader) chunkError(e Entry, format string, args ...any) error {
	return &ChunkError{Entry: e, File: ir.name, Where: ir.Where(e), Msg: fmt.Sprintf(format, args...)}
}

// readFrame reads chunk e's frame into fb, which is ir.frameLen(e) long,
// opens it if sealed, and checks it against the index and its CRC. It
// returns the frame header and the payload (in fb).
func (ir *Reader) readFrame(e Entry, fb []byte) (frameHeader, []byte, error) {
	if _, err := ir.r.ReadAt(fb, e.FrameOff); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return frameHeader{}, nil, ir.chunkError(e, "read frame: %v", err)
		}
		// The storage failed (a disk's I/O error, a server gone), not
		// the image: say so, so that it is not counted as damage.
		return frameHeader{}, nil, fmt.Errorf("read %s's frame at byte %d of %s: %w", ir.Where(e), e.FrameOff, ir.storeName(), err)
	}
	if ir.ciphers != nil {
		plain := len(fb) - sealedFrameHead - seal.Overhead
		switch {
		case [4]byte(fb[0:4]) != sealedMagic:
			return frameHeader{}, nil, ir.chunkError(e, "no sealed frame marker")
		case binary.LittleEndian.Uint32(fb[4:]) != uint32(plain+seal.Overhead):
			return frameHeader{}, nil, ir.chunkError(e, "sealed frame length %d disagrees with the index (%d)", binary.LittleEndian.Uint32(fb[4:]), plain+seal.Overhead)
		}
		in, err := ir.ciphers.Frame.Open(fb[sealedFrameHead:sealedFrameHead], fb[8:sealedFrameHead], fb[sealedFrameHead:], frameAD(ir.id, e.FrameOff))
		if err != nil {
			return frameHeader{}, nil, ir.chunkError(e, "sealed frame fails authentication (changed, damaged, moved or from another image)")
		}
		fb = in
	}
	h, ok := parseFrameHeader(fb)
	switch {
	case !ok:
		return h, nil, ir.chunkError(e, "no frame marker")
	case h.Stored != e.Stored || h.RawLen != e.RawLen:
		return h, nil, ir.chunkError(e, "frame header lengths (%d stored, %d raw) disagree with the index (%d, %d)", h.Stored, h.RawLen, e.Stored, e.RawLen)
	case h.Hash != e.Hash:
		return h, nil, ir.chunkError(e, "frame header hash disagrees with the index")
	case crc(fb[frameHeaderSize:]) != h.Checksum:
		return h, nil, ir.chunkError(e, "stored bytes checksum mismatch")
	case h.Flags&^frameDelta != 0 || (h.Flags&frameDelta != 0) != e.Delta():
		return h, nil, ir.chunkError(e, "frame flags %#x disagree with the index's %#x", h.Flags, e.Flags)
	}
	return h, fb[frameHeaderSize:], nil
}

// decodeFrame decodes a checked frame's payload into out (e.RawLen long)
// and checks the chunk's BLAKE3.
func (ir *Reader) decodeFrame(e Entry, h frameHeader, payload, out []byte) ([]byte, error) {
	data, err := ir.dec.Decode(codec.ID(h.Codec), out[:0], payload)
	if err != nil {
		return nil, ir.chunkError(e, "%v", err)
	}
	if blake3.Sum256(data) != e.Hash {
		return nil, ir.chunkError(e, "BLAKE3 hash mismatch")
	}
	return data, nil
}

// Close releases the reader's decoder. It does not close the underlying file.
func (ir *Reader) Close() error {
	if ir.dec != nil {
		ir.dec.Close()
	}
	if ir.tail != nil {
		return ir.tail.Close()
	}
	return nil
}
