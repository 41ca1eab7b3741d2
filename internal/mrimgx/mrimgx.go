// Package mrimgx reads Macrium Reflect X image files (.mrimgx), the
// format Macrium publishes (github.com/macrium/mrimgx_file_layout:
// docs/FILE_LAYOUT.md), as the disk they were made from.
//
// A file ends in a 20-byte footer (the offset of the root metadata
// block list, then "MACRIUM_FILE"). Metadata blocks are lists of
// 32-byte headers (name, length, MD5 of the stored bytes, flags) each
// followed by its bytes. The root list holds $JSON, which describes the
// disks and partitions and says where the disk metadata begins
// (index_file_position): per disk a list holding $TRACK0 (the disk's
// first bytes, up to the first partition) and $EPT (the EBRs of an MBR
// disk), then per partition a list ending in $INDEX: the FAT reserved
// sectors' index and the data block index, one entry per block of the
// partition's fixed grid (file position, MD5 of the plain bytes, stored
// length, file number), a stored length of 0 being a block not saved.
//
// The data block index is read in place, never loaded whole: an entry is
// 30 bytes at a known offset, so a disk of any size opens in memory
// bounded by its number of partitions. Every block read is checked
// against its MD5; a mismatch names the block and the disk bytes it
// covers.
//
// Open finds the rest of a backup set beside the file, as Reflect does
// (same extension and image ID, increment number up to the file's): the
// parts of a split image hold data only and the last part the index,
// whose entries name the file holding each block (file_number); an
// increment with a delta index lists the blocks changed, laid over the
// newest full index before it.
//
// An encrypted set opens with its password (docs/ENCRYPTION.md: AES-CBC
// per block, IVs from the image ID, disk, partition and block numbers,
// the key from PBKDF2; see crypt.go).
//
// Not read yet, and refused with an error saying so: compressed or
// encrypted $INDEX blocks, compressors other than zstd, file-and-folder
// backups.
package mrimgx

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/ptable"
)

// ErrNotMrimgx is a file without the Macrium Reflect X footer.
var ErrNotMrimgx = errors.New("not a Macrium Reflect X image")

// ErrUnsupported is an image that holds what this package does not read.
var ErrUnsupported = errors.New("not supported yet")

// ErrMissing is a file of a backup set that is not beside the one opened.
var ErrMissing = errors.New("a file of the backup set is missing")

// ErrChecksum is a block whose MD5 does not match its index.
var ErrChecksum = errors.New("MD5 mismatch")

// ErrDecode is a stored block that does not decode (its zstd frame is
// damaged, or was decrypted with a wrong key): damage, as a mismatch is.
var ErrDecode = errors.New("the stored block does not decode")

// ErrDamaged is an image whose structures cannot be what Reflect wrote
// (files of a set that disagree, impossible geometry, overlapping
// partitions): a FormatError, or an error that says what disagrees.
var ErrDamaged = errors.New("damaged image")

// damageError is damage that no one byte offset names.
type damageError struct{ msg string }

func (e *damageError) Error() string        { return e.msg }
func (e *damageError) Is(target error) bool { return target == ErrDamaged }

func damagef(format string, args ...any) error {
	return &damageError{msg: fmt.Sprintf(format, args...)}
}

// FormatError is a damaged structure at a byte offset of the file.
type FormatError struct {
	Off int64
	Msg string
	Err error // the cause, when there is one (ErrMissing, ErrUnsupported)
}

func (e *FormatError) Unwrap() error { return e.Err }

func (e *FormatError) Error() string {
	return fmt.Sprintf("mrimgx: damaged image at byte %d: %s", e.Off, e.Msg)
}

func bad(off int64, format string, args ...any) error {
	e := &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok && e.Err == nil {
			e.Err = err
		}
	}
	return e
}

const (
	footerLen    = 20
	headerLen    = 32
	entryLen     = 30 // DataBlockIndexElement, packed
	deltaLen     = 34 // DeltaDataBlock, packed
	bootRecLen   = 512
	reservedStep = 4 << 20 // reserved sectors are cut into 4 MiB blocks
	maxTrack0    = 1 << 20
	maxJSON      = 64 << 20
	maxBlockSize = 64 << 20
	maxMetaList  = 256 // blocks in one metadata list
	maxDisks     = 128
	maxParts     = 1024
	cacheBlocks  = 16
	// maxDeltaIndex bounds a delta index held in memory: 8M changed
	// blocks, 512 GiB of 64 KiB blocks.
	maxDeltaIndex = 8 << 20 * deltaLen
)

var magic = []byte("MACRIUM_FILE")

// Header is what the $JSON block says of the image (the fields this
// package uses; JSON is the whole text).
type Header struct {
	Compression struct {
		Level  string `json:"compression_level"`
		Method string `json:"compression_method"`
	} `json:"_compression"`
	Encryption struct {
		Enable        bool   `json:"enable"`
		AES           string `json:"aes_type"`
		HMAC          string `json:"hmac"`
		KeyDerivation string `json:"key_derivation"`
		KeyIterations int    `json:"key_iterations"`
	} `json:"_encryption"`
	Header struct {
		BackupFormat      string `json:"backup_format"`
		BackupType        string `json:"backup_type"`
		DeltaIndex        bool   `json:"delta_index"`
		MergedFiles       []int  `json:"merged_files"`
		FileNumber        int    `json:"file_number"`
		ImageID           string `json:"imageid"`
		IncrementNumber   int    `json:"increment_number"`
		IndexFilePosition int64  `json:"index_file_position"`
		SplitFile         bool   `json:"split_file"`
		BackupTime        int64  `json:"backup_time"`
		NetbiosName       string `json:"netbios_name"`
	} `json:"_header"`
	Disks []DiskJSON `json:"disks"`
	JSON  []byte     `json:"-"`
}

// DiskJSON is one disk of the $JSON block.
type DiskJSON struct {
	Geometry struct {
		BytesPerSector int64 `json:"bytes_per_sector"`
		DiskSize       int64 `json:"disk_size"`
	} `json:"_geometry"`
	Header struct {
		DiskFormat    string `json:"disk_format"`
		DiskNumber    int    `json:"disk_number"`
		DiskSignature string `json:"disk_signature"`
	} `json:"_header"`
	Partitions []PartitionJSON `json:"partitions"`
}

// PartitionJSON is one partition of a disk in the $JSON block.
type PartitionJSON struct {
	FileSystem struct {
		Type                  string `json:"type"`
		Start                 int64  `json:"start"`
		End                   int64  `json:"end"`
		LCN0Offset            int64  `json:"lcn0_offset"`
		ReservedSectorsLength int64  `json:"reserved_sectors_byte_length"`
		VolumeLabel           string `json:"volume_label"`
	} `json:"_file_system"`
	Geometry struct {
		Start            int64 `json:"start"`
		End              int64 `json:"end"`
		Length           int64 `json:"length"`
		BootSectorOffset int64 `json:"boot_sector_offset"`
	} `json:"_geometry"`
	Header struct {
		BlockCount      int64 `json:"block_count"`
		BlockSize       int64 `json:"block_size"`
		PartitionNumber int   `json:"partition_number"`
	} `json:"_header"`
}

// Options tune Open.
type Options struct {
	// Disk is the disk_number of the disk to open; -1 opens the first.
	Disk int
	// Password opens an encrypted image.
	Password string
}

// Partition is one imaged partition and where its blocks are.
type Partition struct {
	Number    int
	FS        string
	Start     int64 // bytes from the start of the disk
	Size      int64
	BlockSize int64
	Blocks    int64 // entries in the data block index
	// DataStart is where block 0 lies on the disk (the FAT data region,
	// or the partition's start).
	DataStart int64
	// ReservedStart and ReservedLen are the FAT reserved sectors and
	// FATs, kept in their own index (ReservedLen 0: none).
	ReservedStart, ReservedLen int64

	indexFile *setFile
	index     int64   // offset in indexFile of the first data block index entry
	fullLen   int64   // entries there
	reserved  []entry // small: at most a few hundred
	delta     map[int64]entry
	used      []block.Extent
}

type entry struct {
	pos    int64
	md5    [16]byte
	length uint32
	file   uint16
}

func parseEntry(b []byte) entry {
	var e entry
	e.pos = int64(binary.LittleEndian.Uint64(b))
	copy(e.md5[:], b[8:24])
	e.length = binary.LittleEndian.Uint32(b[24:])
	e.file = binary.LittleEndian.Uint16(b[28:])
	return e
}

// Disk is one disk of a .mrimgx file, read as the disk it was imaged
// from. ReadAt is safe for parallel calls.
type Disk struct {
	Header     *Header
	Number     int
	Format     string // "gpt" or "mbr"
	Partitions []*Partition

	files    map[uint16]*setFile // by file_number (and merged_files)
	all      []*setFile
	size, ss int64
	pieces   []ptable.Piece

	dec   *zstd.Decoder
	mu    sync.Mutex
	cache map[cacheKey][]byte
	order []cacheKey
}

type cacheKey struct {
	part  *Partition
	index int64
}

// setFile is one file of a backup set.
type setFile struct {
	path   string
	r      io.ReaderAt
	size   int64
	closer io.Closer
	h      *Header
	num    uint16
	zstd   bool
	// Encrypted files: the block cipher, the IVs' cipher, the image ID.
	aes, ivAES cipher.Block
	id         [8]byte
}

// Open opens the .mrimgx file at path with the rest of its backup set:
// the files beside it with the same extension and image ID, up to its
// increment (the earlier parts of a split image, the full image and the
// increments before it), as Reflect finds them.
func Open(path string, opts Options) (*Disk, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	set := []*setFile{f}
	fail := func(err error) (*Disk, error) {
		for _, g := range set {
			g.closer.Close()
		}
		return nil, err
	}
	ext := filepath.Ext(path)
	if ents, err := os.ReadDir(filepath.Dir(path)); err == nil && ext != "" {
		for _, e := range ents {
			p := filepath.Join(filepath.Dir(path), e.Name())
			if !e.Type().IsRegular() || filepath.Ext(p) != ext || e.Name() == filepath.Base(path) {
				continue // never a symlink planted among the files
			}
			g, err := openFile(p)
			if err != nil {
				continue // not part of any set: Reflect passes over it too
			}
			if g.h.Header.ImageID != f.h.Header.ImageID || g.h.Header.IncrementNumber > f.h.Header.IncrementNumber {
				g.closer.Close()
				continue
			}
			set = append(set, g)
		}
	}
	d, err := newDisk(set, opts)
	if err != nil {
		return fail(fmt.Errorf("%w (%s)", err, path))
	}
	return d, nil
}

func openFile(path string) (*setFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mrimgx: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mrimgx: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("mrimgx: %s is not a regular file", path)
	}
	sf := &setFile{path: path, r: f, size: st.Size(), closer: f}
	if err := readHeader(sf); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return sf, nil
}

// NewReader reads the image held by r, size bytes long, alone: a block
// in another file of its set is an error.
func NewReader(r io.ReaderAt, size int64, opts Options) (*Disk, error) {
	f := &setFile{path: "the image", r: r, size: size, closer: io.NopCloser(nil)}
	if err := readHeader(f); err != nil {
		return nil, err
	}
	return newDisk([]*setFile{f}, opts)
}

// readHeader reads a file's footer and $JSON.
func readHeader(f *setFile) error {
	if f.size < footerLen {
		return bad(0, "%d bytes is too short for the %d-byte footer: %v", f.size, footerLen, ErrNotMrimgx)
	}
	foot := make([]byte, footerLen)
	if err := readFull(f.r, foot, f.size-footerLen); err != nil {
		return err
	}
	if !bytes.Equal(foot[8:], magic) {
		return fmt.Errorf("mrimgx: %w (no MACRIUM_FILE footer)", ErrNotMrimgx)
	}
	root := int64(binary.LittleEndian.Uint64(foot))
	if root < 0 || root > f.size-footerLen-headerLen {
		return bad(f.size-footerLen, "the footer points at byte %d, outside the file's %d bytes of metadata", uint64(root), f.size-footerLen)
	}
	list, _, err := readList(f, root)
	if err != nil {
		return err
	}
	js, ok := list["$JSON   "]
	if !ok {
		return bad(root, "the root metadata list has no $JSON block")
	}
	text, err := blockData(nil, f, js, maxJSON)
	if err != nil {
		return err
	}
	h := &Header{JSON: text}
	if err := json.Unmarshal(text, h); err != nil {
		return bad(js.off, "$JSON: %v", err)
	}
	if h.Header.FileNumber < 0 || h.Header.FileNumber > 0xffff {
		return bad(js.off, "$JSON: file_number %d", h.Header.FileNumber)
	}
	f.h, f.num = h, uint16(h.Header.FileNumber)
	return checkFile(f)
}

// newDisk lays out one disk of a backup set: the table and geometry from
// its newest file holding metadata, the blocks from the newest full index
// with the delta indexes of the files after it laid over it.
func newDisk(set []*setFile, opts Options) (*Disk, error) {
	d := &Disk{files: map[uint16]*setFile{}, cache: map[cacheKey][]byte{}, all: set}
	sort.Slice(set, func(i, j int) bool { return set[i].num > set[j].num })
	keys := map[string][]byte{}
	for _, f := range set {
		if err := unlock(f, opts.Password, keys); err != nil {
			return nil, err
		}
	}
	for _, f := range set {
		if g, dup := d.files[f.num]; dup {
			return nil, damagef("mrimgx: %s and %s both say they are file %d of image %s", g.path, f.path, f.num, f.h.Header.ImageID)
		}
		d.files[f.num] = f
	}
	for _, f := range set {
		for _, m := range f.h.Header.MergedFiles {
			if _, ok := d.files[uint16(m)]; !ok && m >= 0 && m <= 0xffff {
				d.files[uint16(m)] = f
			}
		}
	}
	var layout, full *setFile
	var deltas []*setFile
	for _, f := range set {
		if f.h.Header.SplitFile {
			continue // data only: its index is in a later file
		}
		if layout == nil {
			layout = f
		}
		if !f.h.Header.DeltaIndex {
			full = f
			break
		}
		deltas = append(deltas, f)
	}
	switch {
	case layout == nil:
		return nil, fmt.Errorf("mrimgx: file %d of image %s is a part of a split image, and the last part, which holds the index, is not beside it: %w", set[0].num, set[0].h.Header.ImageID, ErrMissing)
	case full == nil:
		return nil, fmt.Errorf("mrimgx: image %s: no file of the set holds a full block index (the full image is not beside file %d): %w", layout.h.Header.ImageID, layout.num, ErrMissing)
	}
	d.Header = layout.h
	if err := d.walk(layout, opts, d.layDisk, func(j int, pj *PartitionJSON, list map[string]metaBlock) error {
		return d.layPartition(layout, layout == full, pj, list)
	}); err != nil {
		return nil, err
	}
	if err := d.checkOverlap(); err != nil {
		return nil, err
	}
	if layout != full {
		parts := func(f *setFile, delta bool) error {
			n := 0
			err := d.walk(f, opts, nil, func(j int, pj *PartitionJSON, list map[string]metaBlock) error {
				n++
				if j >= len(d.Partitions) || pj.Header.PartitionNumber != d.Partitions[j].Number {
					return damagef("mrimgx: file %d: its partitions are not those of file %d", f.num, layout.num)
				}
				idx, ok := list["$INDEX  "]
				if !ok {
					return damagef("mrimgx: file %d: partition %d has no $INDEX block", f.num, pj.Header.PartitionNumber)
				}
				if delta {
					return d.readDelta(f, d.Partitions[j], idx)
				}
				return d.readIndex(f, d.Partitions[j], idx)
			})
			if err == nil && n != len(d.Partitions) {
				err = damagef("mrimgx: file %d: %d partitions, file %d has %d", f.num, n, layout.num, len(d.Partitions))
			}
			return err
		}
		if err := parts(full, false); err != nil {
			return nil, err
		}
		for i := len(deltas) - 1; i >= 0; i-- { // oldest first: a later delta wins
			if err := parts(deltas[i], true); err != nil {
				return nil, err
			}
		}
		for _, p := range d.Partitions {
			p.mergeDeltas()
		}
	}
	return d, nil
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("mrimgx: read %d bytes at byte %d: %w", len(b), off, err)
}

// metaBlock is one metadata block's header and where its bytes are.
type metaBlock struct {
	off    int64 // of the header
	name   string
	length int64
	md5    [16]byte
	flags  byte
}

func (m metaBlock) data() int64 { return m.off + headerLen }

const (
	flagLast       = 1 << 0
	flagCompressed = 1 << 1
	flagEncrypted  = 1 << 2
)

// readList reads a metadata block list at off: its blocks by name and
// the offset after its last block.
func readList(f *setFile, off int64) (map[string]metaBlock, int64, error) {
	out := map[string]metaBlock{}
	hdr := make([]byte, headerLen)
	limit := f.size - footerLen
	for i := 0; ; i++ {
		if i == maxMetaList {
			return nil, 0, bad(off, "a metadata list of more than %d blocks", maxMetaList)
		}
		if off < 0 || off > limit-headerLen {
			return nil, 0, bad(off, "a metadata block header would lie outside the file (%d bytes before the footer)", limit)
		}
		if err := readFull(f.r, hdr, off); err != nil {
			return nil, 0, err
		}
		m := metaBlock{off: off, name: string(hdr[:8]), length: int64(binary.LittleEndian.Uint32(hdr[8:])), flags: hdr[28]}
		copy(m.md5[:], hdr[12:28])
		if !printable(m.name) {
			return nil, 0, bad(off, "metadata block name %q is not a block name", m.name)
		}
		if m.length > limit-m.data() {
			return nil, 0, bad(off+8, "metadata block %s says it is %d bytes; the file holds %d after it", strings.TrimSpace(m.name), m.length, limit-m.data())
		}
		if _, dup := out[m.name]; !dup {
			out[m.name] = m
		}
		off = m.data() + m.length
		if m.flags&flagLast != 0 {
			return out, off, nil
		}
	}
}

func printable(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// blockData reads a metadata block whole (at most max bytes once
// decoded), checking its MD5.
// d may be nil (no decoder yet) while the header is read.
func blockData(d *Disk, f *setFile, m metaBlock, max int64) ([]byte, error) {
	name := strings.TrimSpace(m.name)
	if m.length > maxStored(max)+16 {
		return nil, bad(m.off+8, "metadata block %s is %d bytes, more than the %d it can hold", name, m.length, max)
	}
	b := make([]byte, m.length)
	if err := readFull(f.r, b, m.data()); err != nil {
		return nil, err
	}
	if sum := md5.Sum(b); sum != m.md5 {
		return nil, fmt.Errorf("mrimgx: metadata block %s at byte %d: %w (stored %x, computed %x)", name, m.off, ErrChecksum, m.md5, sum)
	}
	if m.flags&flagEncrypted != 0 {
		if err := f.decryptECB(b); err != nil {
			return nil, bad(m.data(), "metadata block %s: %v", name, err)
		}
	}
	if m.flags&flagCompressed != 0 {
		if m.flags&flagEncrypted != 0 {
			n, err := zstdFrameLen(b)
			if err != nil {
				return nil, bad(m.data(), "metadata block %s: %v", name, err)
			}
			b = b[:n]
		}
		if d == nil {
			d = &Disk{}
			defer d.Close()
		}
		out, err := d.unzstd(b, max)
		if err != nil {
			return nil, bad(m.data(), "metadata block %s: %v", name, err)
		}
		b = out
	}
	if int64(len(b)) > max+15 { // stored: no more than it holds, but AES padding
		return nil, bad(m.off+8, "metadata block %s is %d bytes, more than the %d it can hold", name, len(b), max)
	}
	return b, nil
}

func (d *Disk) decoder() (*zstd.Decoder, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dec == nil {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxBlockSize), zstd.WithDecoderMaxWindow(maxBlockSize))
		if err != nil {
			return nil, err
		}
		d.dec = dec
	}
	return d.dec, nil
}

// unzstd decodes one zstd frame into at most max bytes.
func (d *Disk) unzstd(b []byte, max int64) ([]byte, error) {
	dec, err := d.decoder()
	if err != nil {
		return nil, err
	}
	var fh zstd.Header
	if err := fh.Decode(b); err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if fh.HasFCS && fh.FrameContentSize > uint64(max) {
		return nil, fmt.Errorf("zstd frame says it holds %d bytes, more than %d", fh.FrameContentSize, max)
	}
	out, err := dec.DecodeAll(b, make([]byte, 0, min(max, 1<<20)))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if int64(len(out)) > max {
		return nil, fmt.Errorf("zstd frame holds %d bytes, more than %d", len(out), max)
	}
	return out, nil
}

// checkFile refuses what this package does not read yet.
func checkFile(f *setFile) error {
	h := f.h
	switch {
	case h.Header.BackupFormat == "file_and_folder" || h.Header.BackupFormat == "file":
		return fmt.Errorf("mrimgx: a file-and-folder backup: %w", ErrUnsupported)
	}
	switch strings.ToLower(h.Compression.Level) {
	case "none":
	default:
		if m := strings.ToLower(h.Compression.Method); m != "" && m != "zstd" {
			return fmt.Errorf("mrimgx: compression %q: %w", h.Compression.Method, ErrUnsupported)
		}
		f.zstd = true
	}
	if !h.Header.SplitFile && len(h.Disks) == 0 {
		return damagef("mrimgx: $JSON lists no disk")
	}
	if len(h.Disks) > maxDisks {
		return damagef("mrimgx: $JSON lists %d disks, more than %d", len(h.Disks), maxDisks)
	}
	return nil
}

// walk goes through a file's disk metadata from index_file_position,
// every disk's lists in order, calling onDisk (if set) and onPart for
// the chosen disk (opts.Disk, or the first).
func (d *Disk) walk(f *setFile, opts Options, onDisk func(f *setFile, dj DiskJSON, list map[string]metaBlock) error, onPart func(j int, pj *PartitionJSON, list map[string]metaBlock) error) error {
	h := f.h
	pick := 0
	if opts.Disk >= 0 {
		pick = -1
		for i, dj := range h.Disks {
			if dj.Header.DiskNumber == opts.Disk {
				pick = i
			}
		}
		if pick < 0 {
			return fmt.Errorf("mrimgx: file %d holds no disk number %d", f.num, opts.Disk)
		}
	}
	off := h.Header.IndexFilePosition
	for i, dj := range h.Disks {
		if len(dj.Partitions) > maxParts {
			return damagef("mrimgx: disk %d lists %d partitions, more than %d", dj.Header.DiskNumber, len(dj.Partitions), maxParts)
		}
		list, next, err := readList(f, off)
		if err != nil {
			return fmt.Errorf("disk %d metadata: %w", dj.Header.DiskNumber, err)
		}
		if i == pick && onDisk != nil {
			if err := onDisk(f, dj, list); err != nil {
				return err
			}
		}
		off = next
		for j := range dj.Partitions {
			pl, pnext, err := readList(f, off)
			if err != nil {
				return fmt.Errorf("disk %d partition %d metadata: %w", dj.Header.DiskNumber, dj.Partitions[j].Header.PartitionNumber, err)
			}
			if i == pick {
				if err := onPart(j, &dj.Partitions[j], pl); err != nil {
					return err
				}
			}
			off = pnext
		}
		if i == pick {
			return nil
		}
	}
	return nil
}

func (d *Disk) layDisk(f *setFile, dj DiskJSON, list map[string]metaBlock) error {
	d.Number = dj.Header.DiskNumber
	d.Format = strings.ToLower(dj.Header.DiskFormat)
	d.ss = dj.Geometry.BytesPerSector
	if d.ss < 512 || d.ss > 64<<10 || d.ss&(d.ss-1) != 0 {
		return damagef("mrimgx: disk %d: bytes_per_sector %d is not a sector size", d.Number, d.ss)
	}
	d.size = dj.Geometry.DiskSize
	if d.size <= 0 || d.size%d.ss != 0 || d.size > 1<<60 {
		return damagef("mrimgx: disk %d: disk_size %d is impossible for %d-byte sectors", d.Number, d.size, d.ss)
	}
	t0, ok := list["$TRACK0 "]
	if !ok {
		return damagef("mrimgx: file %d: disk %d has no $TRACK0 block", f.num, d.Number)
	}
	track0, err := blockData(d, f, t0, maxTrack0)
	if err != nil {
		return err
	}
	if int64(len(track0)) > d.size {
		return bad(t0.off, "$TRACK0 of %d bytes is larger than the %d-byte disk", len(track0), d.size)
	}
	d.pieces = append(d.pieces, ptable.Piece{Off: 0, Data: track0})
	if ept, ok := list["$EPT    "]; ok {
		if err := d.layEPT(f, ept); err != nil {
			return err
		}
	}
	if d.Format == "gpt" {
		if p := backupGPT(track0, d.ss, d.size); p != nil {
			d.pieces = append(d.pieces, p...)
		}
	}
	return nil
}

// layEPT places the EBRs of the $EPT block: a uint32 count, then the
// entries, each a 512-byte boot record, its disk byte offset (uint64)
// and partition number (uint16). The published reader declares the
// entry without packing (528 bytes with padding); the document's layout
// packs it (522). Either is taken, by which one the length fits.
func (d *Disk) layEPT(f *setFile, m metaBlock) error {
	b, err := blockData(d, f, m, 1<<20)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return bad(m.data(), "$EPT of %d bytes holds no count", len(b))
	}
	n := int64(binary.LittleEndian.Uint32(b))
	rest := int64(len(b) - 4)
	var stride int64
	// An encrypted block is padded to whole AES blocks.
	padded := func(stride int64) bool {
		return m.flags&flagEncrypted != 0 && n <= rest/stride && rest-n*stride < 16
	}
	switch {
	case n == 0:
		return nil
	case rest == n*528:
		stride = 528
	case rest == n*522:
		stride = 522
	case padded(528):
		stride = 528
	case padded(522):
		stride = 522
	default:
		return bad(m.data(), "$EPT counts %d entries in %d bytes", n, rest)
	}
	for i := int64(0); i < n; i++ {
		e := b[4+i*stride:]
		off := int64(binary.LittleEndian.Uint64(e[bootRecLen:]))
		if off < 0 || off%d.ss != 0 || off > d.size-bootRecLen {
			return bad(m.data()+4+i*stride+bootRecLen, "$EPT entry %d is at disk byte %d, outside the %d-byte disk", i, off, d.size)
		}
		d.pieces = append(d.pieces, ptable.Piece{Off: off, Data: e[:bootRecLen:bootRecLen]})
	}
	return nil
}

// backupGPT makes the backup GPT from the primary held in track0: the
// image keeps only the disk's first bytes, and the backup header and
// entries at its end are what a whole disk would have.
func backupGPT(track0 []byte, ss, size int64) []ptable.Piece {
	if int64(len(track0)) < 2*ss {
		return nil
	}
	h, err := ptable.ParseGPTHeader(track0[ss : 2*ss])
	if err != nil || h.MyLBA != 1 {
		return nil
	}
	n := h.EntriesLen()
	eoff := int64(h.EntriesLBA) * ss
	if eoff+n > int64(len(track0)) || int64(h.AlternateLBA) != size/ss-1 {
		return nil
	}
	entries := track0[eoff : eoff+n]
	esec := (n + ss - 1) / ss
	bEntriesLBA := int64(h.AlternateLBA) - esec
	if bEntriesLBA <= int64(h.LastUsableLBA) {
		return nil
	}
	hdr := bytes.Clone(track0[ss : 2*ss])
	le := binary.LittleEndian
	le.PutUint64(hdr[24:], h.AlternateLBA)
	le.PutUint64(hdr[32:], h.MyLBA)
	le.PutUint64(hdr[72:], uint64(bEntriesLBA))
	clear(hdr[16:20])
	le.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:h.HeaderSize]))
	return []ptable.Piece{
		{Off: bEntriesLBA * ss, Data: bytes.Clone(entries)},
		{Off: int64(h.AlternateLBA) * ss, Data: hdr},
	}
}

// layPartition checks a partition's geometry against the disk and reads
// its $INDEX block: uint32 count and the reserved sectors' entries, then
// uint32 count and the data block entries, 30 bytes each.
func (d *Disk) layPartition(f *setFile, full bool, pj *PartitionJSON, list map[string]metaBlock) error {
	p := &Partition{
		Number:    pj.Header.PartitionNumber,
		FS:        pj.FileSystem.Type,
		Start:     pj.Geometry.Start,
		Size:      pj.Geometry.Length,
		BlockSize: pj.Header.BlockSize,
	}
	where := fmt.Sprintf("mrimgx: disk %d partition %d", d.Number, p.Number)
	if p.Size == 0 && pj.Geometry.End > p.Start {
		p.Size = pj.Geometry.End - p.Start + 1
	}
	if p.Start < 0 || p.Size <= 0 || p.Start > d.size || p.Size > d.size-p.Start {
		return fmt.Errorf("%s: bytes %d+%d lie outside the %d-byte disk", where, p.Start, p.Size, d.size)
	}
	if p.BlockSize < d.ss || p.BlockSize%d.ss != 0 || p.BlockSize > maxBlockSize {
		return fmt.Errorf("%s: block_size %d is not a whole number of %d-byte sectors up to %d", where, p.BlockSize, d.ss, maxBlockSize)
	}
	fs := pj.FileSystem
	if fs.LCN0Offset < fs.Start || fs.LCN0Offset-fs.Start > p.Size {
		return fmt.Errorf("%s: lcn0_offset %d is outside the file system at %d", where, fs.LCN0Offset, fs.Start)
	}
	p.DataStart = p.Start + fs.LCN0Offset - fs.Start
	p.ReservedStart = p.Start + pj.Geometry.BootSectorOffset
	p.ReservedLen = fs.ReservedSectorsLength
	if pj.Geometry.BootSectorOffset < 0 || p.ReservedLen < 0 || pj.Geometry.BootSectorOffset > p.Size || p.ReservedLen > p.Start+p.Size-p.ReservedStart {
		return fmt.Errorf("%s: reserved sectors (%d bytes at %d) lie outside the partition", where, p.ReservedLen, pj.Geometry.BootSectorOffset)
	}
	d.Partitions = append(d.Partitions, p)
	if !full {
		return nil // the index is a delta, read over the full one
	}
	idx, ok := list["$INDEX  "]
	if !ok {
		return fmt.Errorf("%s has no $INDEX block", where)
	}
	return d.readIndex(f, p, idx)
}

// readIndex checks the $INDEX block's MD5 and every entry in one pass,
// keeping only the reserved entries and the runs of saved blocks.
func (d *Disk) readIndex(f *setFile, p *Partition, m metaBlock) error {
	where := fmt.Sprintf("file %d disk %d partition %d $INDEX", f.num, d.Number, p.Number)
	if m.flags&(flagCompressed|flagEncrypted) != 0 {
		return fmt.Errorf("mrimgx: %s at byte %d is compressed or encrypted: %w", where, m.off, ErrUnsupported)
	}
	if m.length < 8 {
		return bad(m.off, "%s is %d bytes, too short for its two counts", where, m.length)
	}
	sum := md5.New()
	pos := m.data()
	end := pos + m.length
	var cnt [4]byte
	readCount := func() (int64, error) {
		if end-pos < 4 {
			return 0, bad(pos, "%s ends before a count", where)
		}
		if err := readFull(f.r, cnt[:], pos); err != nil {
			return 0, err
		}
		sum.Write(cnt[:])
		pos += 4
		return int64(binary.LittleEndian.Uint32(cnt[:])), nil
	}
	nres, err := readCount()
	if err != nil {
		return err
	}
	if nres*entryLen > end-pos-4 {
		return bad(pos-4, "%s counts %d reserved sector blocks; the block holds %d bytes after it", where, nres, end-pos)
	}
	if want := (p.ReservedLen + reservedStep - 1) / reservedStep; nres != want {
		return bad(pos-4, "%s counts %d reserved sector blocks for %d reserved bytes (%d blocks of 4 MiB)", where, nres, p.ReservedLen, want)
	}
	buf := make([]byte, nres*entryLen)
	if err := readFull(f.r, buf, pos); err != nil {
		return err
	}
	sum.Write(buf)
	if p.reserved, err = d.reservedEntries(buf, pos, where); err != nil {
		return err
	}
	pos += int64(len(buf))
	n, err := readCount()
	if err != nil {
		return err
	}
	if n*entryLen != end-pos {
		return bad(pos-4, "%s counts %d data blocks (%d bytes); the block holds %d bytes after the count", where, n, n*entryLen, end-pos)
	}
	span := p.Start + p.Size - p.DataStart
	if n > (span+p.BlockSize-1)/p.BlockSize {
		return bad(pos-4, "%s counts %d blocks of %d bytes; the partition holds %d bytes from its first block", where, n, p.BlockSize, span)
	}
	p.Blocks, p.fullLen = n, n
	p.index, p.indexFile = pos, f
	chunk := make([]byte, min(n*entryLen, 1<<20/entryLen*entryLen))
	var run block.Extent
	for i := int64(0); i < n; {
		k := min(n-i, int64(len(chunk))/entryLen)
		b := chunk[:k*entryLen]
		if err := readFull(f.r, b, pos); err != nil {
			return err
		}
		sum.Write(b)
		for j := int64(0); j < k; j++ {
			e := parseEntry(b[j*entryLen:])
			if err := d.checkEntry(e, p.BlockSize); err != nil {
				return bad(pos+j*entryLen, "%s entry %d: %v", where, i+j, err)
			}
			if e.length == 0 {
				continue
			}
			off := p.DataStart + (i+j)*p.BlockSize
			ln := min(p.BlockSize, p.Start+p.Size-off)
			if run.Len > 0 && run.End() == off {
				run.Len += ln
			} else {
				if run.Len > 0 {
					p.used = append(p.used, run)
				}
				run = block.Extent{Off: off, Len: ln}
			}
		}
		pos += k * entryLen
		i += k
	}
	if run.Len > 0 {
		p.used = append(p.used, run)
	}
	if got := [16]byte(sum.Sum(nil)); got != m.md5 {
		return fmt.Errorf("mrimgx: %s at byte %d: %w (stored %x, computed %x)", where, m.off, ErrChecksum, m.md5, got)
	}
	return nil
}

// reservedEntries parses and checks the reserved sectors' entries, at
// file byte off.
func (d *Disk) reservedEntries(buf []byte, off int64, where string) ([]entry, error) {
	var out []entry
	for i := int64(0); i < int64(len(buf))/entryLen; i++ {
		e := parseEntry(buf[i*entryLen:])
		if err := d.checkEntry(e, reservedStep); err != nil {
			return nil, bad(off+i*entryLen, "%s reserved entry %d: %v", where, i, err)
		}
		if e.length == 0 {
			return nil, bad(off+i*entryLen, "%s reserved entry %d is empty", where, i)
		}
		out = append(out, e)
	}
	return out, nil
}

// readDelta reads the $INDEX of an increment with a delta index: the
// reserved sectors' entries, which replace those before, then entries of
// 34 bytes, a block's entry and its number in the grid, laid over the
// full index. It is held in memory: it lists only the blocks changed.
func (d *Disk) readDelta(f *setFile, p *Partition, m metaBlock) error {
	where := fmt.Sprintf("file %d disk %d partition %d delta $INDEX", f.num, d.Number, p.Number)
	b, err := blockData(d, f, m, maxDeltaIndex)
	if err != nil {
		return err
	}
	fail := func(at int, format string, args ...any) error {
		return bad(m.data()+int64(at), "%s: %s", where, fmt.Sprintf(format, args...))
	}
	if len(b) < 8 {
		return fail(0, "%d bytes is too short for its two counts", len(b))
	}
	nres := int64(binary.LittleEndian.Uint32(b))
	if want := (p.ReservedLen + reservedStep - 1) / reservedStep; nres != want {
		return fail(0, "counts %d reserved sector blocks for %d reserved bytes", nres, p.ReservedLen)
	}
	if 4+nres*entryLen+4 > int64(len(b)) {
		return fail(0, "counts %d reserved sector blocks in %d bytes", nres, len(b))
	}
	res, err := d.reservedEntries(b[4:4+nres*entryLen], m.data()+4, where)
	if err != nil {
		return err
	}
	at := 4 + nres*entryLen
	n := int64(binary.LittleEndian.Uint32(b[at:]))
	at += 4
	if n*deltaLen != int64(len(b))-at {
		return fail(int(at-4), "counts %d changed blocks (%d bytes); the block holds %d after the count", n, n*deltaLen, int64(len(b))-at)
	}
	grid := (p.Start + p.Size - p.DataStart + p.BlockSize - 1) / p.BlockSize
	if p.delta == nil {
		p.delta = map[int64]entry{}
	}
	for i := int64(0); i < n; i++ {
		rec := b[at+i*deltaLen:]
		e := parseEntry(rec)
		k := int64(binary.LittleEndian.Uint32(rec[entryLen:]))
		if k >= grid {
			return fail(int(at+i*deltaLen+entryLen), "entry %d is for block %d; the partition has %d", i, k, grid)
		}
		if err := d.checkEntry(e, p.BlockSize); err != nil {
			return fail(int(at+i*deltaLen), "entry %d (block %d): %v", i, k, err)
		}
		p.delta[k] = e
		p.Blocks = max(p.Blocks, k+1)
	}
	p.reserved = res
	return nil
}

// mergeDeltas lays the delta entries over the used runs of the full
// index: a changed block is saved, a block emptied is not.
func (p *Partition) mergeDeltas() {
	if len(p.delta) == 0 {
		return
	}
	var add, cut []block.Extent
	for k, e := range p.delta {
		off := p.DataStart + k*p.BlockSize
		x := block.Extent{Off: off, Len: min(p.BlockSize, p.Start+p.Size-off)}
		if e.length == 0 {
			cut = append(cut, x)
		} else {
			add = append(add, x)
		}
	}
	used := block.MergeExtents(append(p.used, add...))
	cut = block.MergeExtents(cut)
	var out []block.Extent
	j := 0
	for _, u := range used {
		for u.Len > 0 {
			for j < len(cut) && cut[j].End() <= u.Off {
				j++
			}
			if j == len(cut) || cut[j].Off >= u.End() {
				out = append(out, u)
				break
			}
			if cut[j].Off > u.Off {
				out = append(out, block.Extent{Off: u.Off, Len: cut[j].Off - u.Off})
			}
			end := u.End()
			u.Off = min(cut[j].End(), end)
			u.Len = end - u.Off
		}
	}
	p.used = out
}

// entry is block i's index entry: the newest delta's, else the full
// index's, read in place.
func (d *Disk) entry(p *Partition, i int64) (entry, error) {
	if e, ok := p.delta[i]; ok {
		return e, nil
	}
	if i >= p.fullLen {
		return entry{}, nil
	}
	raw := make([]byte, entryLen)
	if err := readFull(p.indexFile.r, raw, p.index+i*entryLen); err != nil {
		return entry{}, err
	}
	e := parseEntry(raw)
	if err := d.checkEntry(e, p.BlockSize); err != nil { // the file may have changed since Open
		return entry{}, bad(p.index+i*entryLen, "file %d disk %d partition %d entry %d: %v", p.indexFile.num, d.Number, p.Number, i, err)
	}
	return e, nil
}

// maxStored bounds a stored block: zstd never grows data by more than a
// small fraction.
func maxStored(plain int64) int64 { return plain + plain/8 + 1024 }

func (d *Disk) checkEntry(e entry, plain int64) error {
	if e.length == 0 {
		return nil
	}
	f, ok := d.files[e.file]
	if !ok {
		return fmt.Errorf("the block lies in file %d of the backup set, which is not beside this one: %w", e.file, ErrMissing)
	}
	if int64(e.length) > maxStored(plain)+16 {
		return fmt.Errorf("stored length %d is more than a %d-byte block can take", e.length, plain)
	}
	if !f.zstd && int64(e.length) > plain+15 {
		return fmt.Errorf("stored length %d of an uncompressed image is more than the %d-byte block", e.length, plain)
	}
	if e.pos < 0 || e.pos > f.size-footerLen-int64(e.length) {
		return fmt.Errorf("block at byte %d+%d lies outside file %d's %d bytes", e.pos, e.length, e.file, f.size)
	}
	return nil
}

func (d *Disk) checkOverlap() error {
	for i, p := range d.Partitions {
		for _, q := range d.Partitions[i+1:] {
			if p.Start < q.Start+q.Size && q.Start < p.Start+p.Size {
				return damagef("mrimgx: disk %d: partitions %d and %d overlap", d.Number, p.Number, q.Number)
			}
		}
	}
	return nil
}

// Size is the disk's size in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the disk's logical sector size.
func (d *Disk) SectorSize() int64 { return d.ss }

// Used is every byte range the image holds: the first track, the EBRs,
// the backup GPT made from the primary, each partition's reserved
// sectors and saved blocks. The rest reads as zeros.
func (d *Disk) Used() []block.Extent {
	var out []block.Extent
	for _, pc := range d.pieces {
		out = append(out, block.Extent{Off: pc.Off, Len: int64(len(pc.Data))})
	}
	for _, p := range d.Partitions {
		if p.ReservedLen > 0 {
			out = append(out, block.Extent{Off: p.ReservedStart, Len: p.ReservedLen})
		}
		out = append(out, p.used...)
	}
	return block.MergeExtents(out)
}

// Data is Used (what a converter's source gives).
func (d *Disk) Data() []block.Extent { return d.Used() }

// ReadAt reads the disk's bytes, checking every block it touches against
// its MD5.
func (d *Disk) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("mrimgx: negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(b)
	if rest := d.size - off; int64(len(b)) > rest {
		b = b[:rest]
	}
	clear(b)
	end := off + int64(len(b))
	for _, p := range d.Partitions {
		if err := d.readPartition(p, b, off, end); err != nil {
			return 0, err
		}
	}
	for _, pc := range d.pieces {
		lo, hi := max(off, pc.Off), min(end, pc.Off+int64(len(pc.Data)))
		if lo < hi {
			copy(b[lo-off:hi-off], pc.Data[lo-pc.Off:hi-pc.Off])
		}
	}
	if len(b) < want {
		return len(b), io.EOF
	}
	return len(b), nil
}

func (d *Disk) readPartition(p *Partition, b []byte, off, end int64) error {
	if lo, hi := max(off, p.ReservedStart), min(end, p.ReservedStart+p.ReservedLen); lo < hi {
		for i := (lo - p.ReservedStart) / reservedStep; i < int64(len(p.reserved)); i++ {
			bs := p.ReservedStart + i*reservedStep
			if bs >= hi {
				break
			}
			plain := min(reservedStep, p.ReservedLen-i*reservedStep)
			data, err := d.block(p, -1-i, p.reserved[i], plain, bs)
			if err != nil {
				return err
			}
			l, h := max(lo, bs), min(hi, bs+plain)
			copy(b[l-off:h-off], data[l-bs:h-bs])
		}
	}
	lo, hi := max(off, p.DataStart), min(end, p.Start+p.Size, p.DataStart+p.Blocks*p.BlockSize)
	if lo >= hi {
		return nil
	}
	for i := (lo - p.DataStart) / p.BlockSize; i < p.Blocks; i++ {
		bs := p.DataStart + i*p.BlockSize
		if bs >= hi {
			break
		}
		e, err := d.entry(p, i)
		if err != nil {
			return err
		}
		if e.length == 0 {
			continue
		}
		plain := min(p.BlockSize, p.Start+p.Size-bs)
		data, err := d.block(p, i, e, plain, bs)
		if err != nil {
			return err
		}
		l, h := max(lo, bs), min(hi, bs+int64(len(data)))
		if l < h {
			copy(b[l-off:h-off], data[l-bs:h-bs])
		}
	}
	return nil
}

// block reads, decodes and checks one block (index < 0: a reserved
// sectors block), at most plain bytes once decoded, from a small cache.
func (d *Disk) block(p *Partition, index int64, e entry, plain, diskOff int64) ([]byte, error) {
	key := cacheKey{p, index}
	d.mu.Lock()
	if c, ok := d.cache[key]; ok {
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	name := fmt.Sprintf("block %d", index)
	if index < 0 {
		name = fmt.Sprintf("reserved sectors block %d", -1-index)
	}
	where := func() string {
		return fmt.Sprintf("mrimgx: disk %d partition %d %s (disk bytes %d-%d, file byte %d)", d.Number, p.Number, name, diskOff, diskOff+plain-1, e.pos)
	}
	f := d.files[e.file] // checkEntry saw it is there
	stored := make([]byte, e.length)
	if err := readFull(f.r, stored, e.pos); err != nil {
		return nil, fmt.Errorf("%s: %w", where(), err)
	}
	if f.aes != nil {
		if err := f.decryptCBC(stored, d.Number, p.Number, max(index, -1-index)); err != nil {
			return nil, fmt.Errorf("%s: %w", where(), err)
		}
		if f.zstd {
			n, err := zstdFrameLen(stored)
			if err != nil {
				return nil, fmt.Errorf("%s: %w: %v (a wrong key, or damage)", where(), ErrDecode, err)
			}
			stored = stored[:n]
		} else if int64(len(stored)) > plain {
			stored = stored[:plain] // padded to whole AES blocks
		}
	}
	data := stored
	if f.zstd {
		out, err := d.unzstd(stored, max(plain, p.BlockSize))
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %v", where(), ErrDecode, err)
		}
		data = out
	}
	if sum := md5.Sum(data); sum != e.md5 {
		return nil, fmt.Errorf("%s: %w (index %x, data %x)", where(), ErrChecksum, e.md5, sum)
	}
	if int64(len(data)) < plain && index < 0 {
		return nil, fmt.Errorf("%s: holds %d bytes, the reserved sectors need %d", where(), len(data), plain)
	}
	d.mu.Lock()
	if len(d.order) >= cacheBlocks {
		delete(d.cache, d.order[0])
		d.order = d.order[1:]
	}
	d.cache[key] = data
	d.order = append(d.order, key)
	d.mu.Unlock()
	return data, nil
}

// Verify reads every block the image holds, in every file of the set,
// checking each against its MD5; it returns the first damage found (the
// block and the disk bytes it covers). progress, if set, hears the
// bytes of blocks checked so far and the total.
func (d *Disk) Verify(ctx context.Context, progress func(done, total int64)) error {
	var total, done int64
	for _, p := range d.Partitions {
		total += p.ReservedLen
		for _, u := range p.used {
			total += u.Len
		}
	}
	for _, p := range d.Partitions {
		for i, e := range p.reserved {
			bs := p.ReservedStart + int64(i)*reservedStep
			plain := min(reservedStep, p.ReservedLen-int64(i)*reservedStep)
			if _, err := d.verifyBlock(p, -1-int64(i), e, plain, bs); err != nil {
				return err
			}
			done += plain
		}
		for _, u := range p.used {
			for bs := u.Off; bs < u.End(); bs += p.BlockSize {
				if err := ctx.Err(); err != nil {
					return err
				}
				i := (bs - p.DataStart) / p.BlockSize
				e, err := d.entry(p, i)
				if err != nil {
					return err
				}
				plain := min(p.BlockSize, p.Start+p.Size-bs)
				if _, err := d.verifyBlock(p, i, e, plain, bs); err != nil {
					return err
				}
				done += plain
				if progress != nil {
					progress(done, total)
				}
			}
		}
	}
	return nil
}

// verifyBlock reads a block past the cache, so that each is checked.
func (d *Disk) verifyBlock(p *Partition, index int64, e entry, plain, diskOff int64) ([]byte, error) {
	if e.length == 0 {
		return nil, nil
	}
	d.mu.Lock()
	delete(d.cache, cacheKey{p, index})
	d.mu.Unlock()
	return d.block(p, index, e, plain, diskOff)
}

// Close closes the file.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.dec != nil {
		d.dec.Close()
		d.dec = nil
	}
	d.mu.Unlock()
	var err error
	for _, f := range d.all {
		err = errors.Join(err, f.closer.Close())
	}
	return err
}

// HasFooter says whether the file at path ends in the Macrium Reflect X
// footer: what tells a .mrimgx from any other file, whatever its name.
// It reads the last 20 bytes only.
func HasFooter(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() < footerLen {
		return false
	}
	foot := make([]byte, footerLen)
	if err := readFull(f, foot, st.Size()-footerLen); err != nil {
		return false
	}
	return bytes.Equal(foot[8:], magic)
}

// SetFile is one file of the backup set a Disk was opened from.
type SetFile struct {
	Path   string
	Number int // file_number
	Size   int64
	// Split says the file is a part of a split image (data only).
	Split bool
	// Increment is its increment_number; Delta, that it holds a delta
	// index.
	Increment int
	Delta     bool
}

// Files is every file of the backup set read, by file number.
func (d *Disk) Files() []SetFile {
	var out []SetFile
	for _, f := range d.all {
		out = append(out, SetFile{Path: f.path, Number: int(f.num), Size: f.size, Split: f.h.Header.SplitFile,
			Increment: f.h.Header.IncrementNumber, Delta: f.h.Header.DeltaIndex})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// UsedBytes is the bytes of the partition the image holds: its reserved
// sectors and its saved blocks.
func (p *Partition) UsedBytes() int64 {
	n := p.ReservedLen
	for _, u := range p.used {
		n += u.Len
	}
	return n
}
