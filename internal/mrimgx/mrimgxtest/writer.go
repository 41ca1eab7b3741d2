// Package mrimgxtest writes Macrium Reflect X images for tests, from the
// published description (github.com/macrium/mrimgx_file_layout,
// docs/FILE_LAYOUT.md): there is no Reflect on Linux to make them. It
// writes what the reader must meet: data blocks first, then each disk's
// metadata list ($TRACK0, $EPT), each partition's list ending in
// $INDEX, the root list ($AUXDATA, $JSON) and the 20-byte footer.
package mrimgxtest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/platter-dev/platter/internal/block"
)

// Part is one partition to image from the source disk.
type Part struct {
	Number    int
	FS        string // "NTFS", "FAT32", ...
	Start     int64  // bytes from the disk's start
	Size      int64
	BlockSize int64 // 65536 is what Reflect uses
	// Reserved is the FAT reserved sectors and FATs, from the
	// partition's start; block 0 of the grid follows them (0: none).
	Reserved int64
	// Bitmap, when set, is written as the partition's $BITMAP block
	// (Reflect writes one for exFAT and ReFS; not needed to restore).
	Bitmap []byte
	// Used is the partition's used byte ranges (partition-relative),
	// read off the filesystem's own allocation data; a block of the grid
	// touching one is saved.
	Used []block.Extent
}

// Spec is a whole-disk image to write.
type Spec struct {
	Source     string // the raw disk the image is made of
	SectorSize int64
	Format     string // "gpt" or "mbr"
	Track0     int64  // bytes of the disk's first track (up to the first partition, 1 MiB at most)
	EBRs       []int64
	Parts      []Part
	Compress   bool
	// EPTStride is the $EPT entry size: 528 (the published reader's
	// unpacked struct, the default) or 522 (packed).
	EPTStride int
	// More are further disks of the same image (their Source,
	// SectorSize, Format, Track0, EBRs and Parts), disk_number 2, 3, ...
	More []Spec
	// SplitAt starts a new file of a split image once a file holds this
	// many bytes of data (0: one file).
	SplitAt int64
	// Base makes an incremental image over what Write made before:
	// Increment is its increment_number, Delta writes a delta index
	// (the changed blocks only), else a full index naming the files
	// that hold each block.
	Base      *Result
	Increment int
	Delta     bool
	// Password encrypts the image with AES of AESBits (128, 192, 256)
	// and a key of Iterations rounds of PBKDF2 (ENCRYPTION.md).
	Password   string
	AESBits    int
	Iterations int
}

const imageID = "D684BA87241263E2"

// crypt is an image's encryption, as ENCRYPTION.md describes it.
type crypt struct {
	block, iv cipher.Block
	hmac      string
}

func newCrypt(spec Spec) (*crypt, error) {
	id, _ := hex.DecodeString(imageID)
	salt := sha256.Sum256(id)
	key, err := pbkdf2.Key(sha256.New, spec.Password, salt[:], spec.Iterations, 32)
	if err != nil {
		return nil, err
	}
	c := &crypt{hmac: hex.EncodeToString(hmac.New(sha256.New, key).Sum(nil))}
	if c.block, err = aes.NewCipher(key[:spec.AESBits/8]); err != nil {
		return nil, err
	}
	ivKey := sha256.Sum256(key)
	c.iv, err = aes.NewCipher(ivKey[:])
	return c, err
}

func pad16(b []byte) []byte {
	if r := len(b) % 16; r != 0 {
		b = append(b, make([]byte, 16-r)...)
	}
	return b
}

func (c *crypt) cbc(b []byte, disk, part, index int) []byte {
	b = pad16(b)
	id, _ := hex.DecodeString(imageID)
	var in, iv [16]byte
	copy(in[:], id)
	binary.LittleEndian.PutUint16(in[8:], uint16(disk))
	binary.LittleEndian.PutUint16(in[10:], uint16(part))
	binary.LittleEndian.PutUint32(in[12:], uint32(index))
	c.iv.Encrypt(iv[:], in[:])
	cipher.NewCBCEncrypter(c.block, iv[:]).CryptBlocks(b, b)
	return b
}

func (c *crypt) ecb(b []byte) []byte {
	b = pad16(b)
	for i := 0; i < len(b); i += 16 {
		c.block.Encrypt(b[i:i+16], b[i:i+16])
	}
	return b
}

type entry struct {
	pos    int64
	sum    [16]byte
	length uint32
	file   uint16
}

// Result is what Write made, for an increment over it.
type Result struct {
	Files    []string // in file number order; the last holds the index
	NextFile uint16
	// Index is each partition's full index (every block, with the file
	// holding it), and Reserved its reserved sectors' entries.
	Index, Reserved [][]entry
}

// Write writes the image of spec: out, and before it, when spec.SplitAt
// cuts the data, the earlier parts of a split image (out with -NN
// before the extension). Files are created anew, 0600.
func Write(out string, spec Spec) (*Result, error) {
	disks := append([]Spec{spec}, spec.More...)
	var srcs []*os.File
	var sizes []int64
	for _, ds := range disks {
		src, err := os.Open(ds.Source)
		if err != nil {
			return nil, err
		}
		defer src.Close()
		st, err := src.Stat()
		if err != nil {
			return nil, err
		}
		srcs, sizes = append(srcs, src), append(sizes, st.Size())
	}
	var err error
	res := &Result{}
	fileNum := uint16(0)
	if spec.Base != nil {
		fileNum = spec.Base.NextFile
	}
	var f *os.File
	var w *counter
	open := func() error {
		name := out + ".part"
		fh, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		f, w = fh, &counter{w: fh}
		return nil
	}
	if err := open(); err != nil {
		return nil, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var enc *zstd.Encoder
	if spec.Compress {
		if enc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1)); err != nil {
			return nil, err
		}
		defer enc.Close()
	}
	var cr *crypt
	if spec.Password != "" {
		if cr, err = newCrypt(spec); err != nil {
			return nil, err
		}
	}
	level, method := "none", "none"
	if spec.Compress {
		level, method = "medium", "zstd"
	}
	backupType := "full"
	if spec.Base != nil {
		backupType = "incremental"
	}
	header := func(split bool, indexPos int64) map[string]any {
		enc := map[string]any{"enable": false, "key_iterations": 0}
		if cr != nil {
			enc = map[string]any{"enable": true, "aes_type": fmt.Sprintf("aes-%d", spec.AESBits), "hmac": cr.hmac,
				"key_derivation": "pbkdf2", "key_iterations": spec.Iterations}
		}
		return map[string]any{
			"_compression": map[string]any{"compression_level": level, "compression_method": method},
			"_encryption":  enc,
			"_header": map[string]any{"backup_format": "disk", "backup_type": backupType, "delta_index": spec.Base != nil && spec.Delta,
				"file_number": fileNum, "imaged_disks_count": 1, "imageid": imageID, "increment_number": spec.Increment,
				"index_file_position": indexPos, "json_version": 1, "split_file": split, "backup_time": 1713104325, "netbios_name": "FIXTURE"},
		}
	}
	// finish ends the current file with its root list and footer.
	finish := func(doc map[string]any) error {
		js, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		root := w.n
		if err := meta(w, "$AUXDATA", []byte("internal"), 0); err != nil {
			return err
		}
		if err := meta(w, "$JSON   ", js, 1); err != nil {
			return err
		}
		foot := binary.LittleEndian.AppendUint64(nil, uint64(root))
		if _, err := w.Write(append(foot, "MACRIUM_FILE"...)); err != nil {
			return err
		}
		return f.Close()
	}
	put := func(plain []byte, disk, part, index int) (entry, error) {
		if spec.SplitAt > 0 && w.n >= spec.SplitAt {
			doc := header(true, 0)
			doc["disks"] = []any{}
			if err := finish(doc); err != nil {
				return entry{}, err
			}
			name := fmt.Sprintf("%s-%02d%s", strings.TrimSuffix(out, filepath.Ext(out)), fileNum, filepath.Ext(out))
			if err := os.Rename(out+".part", name); err != nil {
				return entry{}, err
			}
			res.Files = append(res.Files, name)
			fileNum++
			if err := open(); err != nil {
				return entry{}, err
			}
		}
		e := entry{pos: w.n, sum: md5.Sum(plain), file: fileNum}
		data := plain
		if enc != nil {
			data = enc.EncodeAll(plain, nil)
		}
		if cr != nil {
			data = cr.cbc(bytes.Clone(data), disk, part, index)
		}
		e.length = uint32(len(data))
		_, err := w.Write(data)
		return e, err
	}
	reader := func(src *os.File) func(off, n int64) ([]byte, error) {
		return func(off, n int64) ([]byte, error) {
			b := make([]byte, n)
			_, err := src.ReadAt(b, off)
			return b, err
		}
	}
	// An increment (of the first disk) stores the blocks whose bytes
	// differ from the base's (by MD5), or saved now and not then.
	type diskData struct{ index, reserved [][]entry }
	var dd []diskData
	for dn, spec := range disks {
		read := reader(srcs[dn])
		var cur diskData
		for i, p := range spec.Parts {
			var resv, data []entry
			for o := int64(0); o < p.Reserved; o += 4 << 20 {
				b, err := read(p.Start+o, min(4<<20, p.Reserved-o))
				if err != nil {
					return nil, err
				}
				e, err := put(b, dn+1, p.Number, len(resv))
				if err != nil {
					return nil, err
				}
				resv = append(resv, e)
			}
			k := 0
			for o := p.Reserved; o < p.Size; o, k = o+p.BlockSize, k+1 {
				n := min(p.BlockSize, p.Size-o)
				var base entry
				if spec.Base != nil && k < len(spec.Base.Index[i]) {
					base = spec.Base.Index[i][k]
				}
				if !touches(p.Used, o, n) {
					data = append(data, entry{})
					continue
				}
				b, err := read(p.Start+o, n)
				if err != nil {
					return nil, err
				}
				if spec.Base != nil && base.length != 0 && base.sum == md5.Sum(b) {
					data = append(data, base)
					continue
				}
				e, err := put(b, dn+1, p.Number, k)
				if err != nil {
					return nil, err
				}
				data = append(data, e)
			}
			cur.index = append(cur.index, data)
			cur.reserved = append(cur.reserved, resv)
		}
		dd = append(dd, cur)
	}
	res.Index, res.Reserved = dd[0].index, dd[0].reserved
	indexPos := w.n
	var jdisks []any
	for dn, spec := range disks {
		read := reader(srcs[dn])
		flags := byte(0)
		if enc != nil {
			flags = 2
		}
		track0, err := read(0, spec.Track0)
		if err != nil {
			return nil, err
		}
		t0 := track0
		if enc != nil {
			t0 = enc.EncodeAll(track0, nil)
		}
		if cr != nil {
			t0 = cr.ecb(bytes.Clone(t0))
			flags |= 4
		}
		if len(spec.EBRs) == 0 {
			err = meta(w, "$TRACK0 ", t0, flags|1)
		} else {
			err = meta(w, "$TRACK0 ", t0, flags)
			stride := spec.EPTStride
			if stride == 0 {
				stride = 528
			}
			ept := binary.LittleEndian.AppendUint32(nil, uint32(len(spec.EBRs)))
			for i, off := range spec.EBRs {
				rec, rerr := read(off, 512)
				if rerr != nil {
					return nil, rerr
				}
				e := make([]byte, stride)
				copy(e, rec)
				binary.LittleEndian.PutUint64(e[512:], uint64(off))
				binary.LittleEndian.PutUint16(e[520:], uint16(5+i))
				ept = append(ept, e...)
			}
			if err == nil {
				if cr != nil {
					err = meta(w, "$EPT    ", cr.ecb(ept), 1|4)
				} else {
					err = meta(w, "$EPT    ", ept, 1)
				}
			}
		}
		if err != nil {
			return nil, err
		}
		var parts []any
		cur := dd[dn]
		for i, p := range spec.Parts {
			var b []byte
			b = binary.LittleEndian.AppendUint32(b, uint32(len(cur.reserved[i])))
			for _, e := range cur.reserved[i] {
				b = appendEntry(b, e)
			}
			if spec.Base != nil && spec.Delta {
				var changed []byte
				n := 0
				for k, e := range cur.index[i] {
					var base entry
					if k < len(spec.Base.Index[i]) {
						base = spec.Base.Index[i][k]
					}
					if e != base {
						changed = appendEntry(changed, e)
						changed = binary.LittleEndian.AppendUint32(changed, uint32(k))
						n++
					}
				}
				b = binary.LittleEndian.AppendUint32(b, uint32(n))
				b = append(b, changed...)
			} else {
				b = binary.LittleEndian.AppendUint32(b, uint32(len(cur.index[i])))
				for _, e := range cur.index[i] {
					b = appendEntry(b, e)
				}
			}
			if len(p.Bitmap) > 0 {
				if err := meta(w, "$BITMAP ", p.Bitmap, 0); err != nil {
					return nil, err
				}
			}
			if err := meta(w, "$INDEX  ", b, 1); err != nil {
				return nil, err
			}
			parts = append(parts, map[string]any{
				"_header": map[string]any{"block_count": len(cur.index[i]), "block_size": p.BlockSize, "partition_number": p.Number,
					"partition_file_offset": 0, "file_history_count": 1,
					"file_history": []any{map[string]any{"file_name": "C:\\fixture-00-00.mrimgx", "file_number": 0}}},
				"_geometry": map[string]any{"start": p.Start, "end": p.Start + p.Size - 1, "length": p.Size, "boot_sector_offset": 0},
				"_file_system": map[string]any{"type": p.FS, "start": p.Start, "end": p.Start + p.Size - 1,
					"lcn0_offset": p.Start + p.Reserved, "reserved_sectors_byte_length": p.Reserved, "lcn0_file_number": 0},
				"_partition_table_entry": map[string]any{"boot_sector": p.Start / spec.SectorSize, "num_sectors": p.Size / spec.SectorSize},
			})
		}
		jdisks = append(jdisks, map[string]any{
			"_geometry":  map[string]any{"bytes_per_sector": spec.SectorSize, "disk_size": sizes[dn]},
			"_header":    map[string]any{"disk_format": spec.Format, "disk_number": dn + 1, "imaged_partition_count": len(parts)},
			"partitions": parts,
		})
	}
	doc := header(false, indexPos)
	doc["disks"] = jdisks
	if err := finish(doc); err != nil {
		return nil, err
	}
	f = nil
	if err := os.Rename(out+".part", out); err != nil {
		return nil, err
	}
	res.Files = append(res.Files, out)
	res.NextFile = fileNum + 1
	return res, nil
}

func touches(used []block.Extent, off, n int64) bool {
	for _, e := range used {
		if e.Off < off+n && off < e.End() {
			return true
		}
	}
	return false
}

func appendEntry(b []byte, e entry) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(e.pos))
	b = append(b, e.sum[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.length)
	return binary.LittleEndian.AppendUint16(b, e.file)
}

// meta writes one metadata block: name, length, MD5 of the stored bytes,
// flags (1 last, 2 compressed, 4 encrypted), padding.
func meta(w io.Writer, name string, data []byte, flags byte) error {
	if len(name) != 8 {
		return fmt.Errorf("block name %q is not 8 bytes", name)
	}
	h := []byte(name)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(data)))
	sum := md5.Sum(data)
	h = append(h, sum[:]...)
	h = append(h, flags, 0, 0, 0)
	if _, err := w.Write(h); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// RewriteJSON replaces the $JSON of the image at path with what edit
// makes of it: the root list is the last thing before the footer, so it
// is cut off and written again.
func RewriteJSON(path string, edit func(doc map[string]any)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) < 20 {
		return fmt.Errorf("%s is too short", path)
	}
	root := int64(binary.LittleEndian.Uint64(b[len(b)-20:]))
	off := root
	var js []byte
	for off+32 <= int64(len(b)) {
		n := int64(binary.LittleEndian.Uint32(b[off+8:]))
		if string(b[off:off+8]) == "$JSON   " {
			js = b[off+32 : off+32+n]
		}
		last := b[off+28]&1 != 0
		off += 32 + n
		if last {
			break
		}
	}
	if js == nil {
		return fmt.Errorf("%s: no $JSON", path)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return err
	}
	edit(doc)
	if js, err = json.Marshal(doc); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(root); err != nil {
		return err
	}
	if _, err := f.Seek(root, io.SeekStart); err != nil {
		return err
	}
	if err := meta(f, "$JSON   ", js, 1); err != nil {
		return err
	}
	foot := binary.LittleEndian.AppendUint64(nil, uint64(root))
	if _, err := f.Write(append(foot, "MACRIUM_FILE"...)); err != nil {
		return err
	}
	return f.Close()
}

// Section returns a JSON object inside doc by its path of keys (and
// "0", "1" for array items), for RewriteJSON's edits.
func Section(doc map[string]any, keys ...string) map[string]any {
	var cur any = doc
	for _, k := range keys {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[k]
		case []any:
			var i int
			fmt.Sscan(k, &i)
			cur = c[i]
		}
	}
	m, _ := cur.(map[string]any)
	return m
}
