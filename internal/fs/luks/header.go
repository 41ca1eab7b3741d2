package luks

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

// LUKS1 on-disk header (the LUKS1 On-Disk Format Specification 1.2.3),
// big-endian.
const (
	l1HeaderSize  = 592
	l1Keyslots    = 8
	l1SlotActive  = 0x00AC71F3
	l1SlotOff     = 208 // first keyslot
	l1SlotSize    = 48
	l1DigestSize  = 20
	sectorSize512 = 512
)

// LUKS2 binary header (the LUKS2 On-Disk Format Specification), big-endian.
const (
	l2BinSize     = 4096
	l2CsumOff     = 448
	l2CsumLen     = 64
	l2MaxKeyslots = 32 // cryptsetup's LUKS2_KEYSLOTS_MAX
	l2MaxHdrSize  = 4 << 20
)

var (
	magic1 = []byte("LUKS\xba\xbe")
	magic2 = []byte("SKUL\xba\xbe") // the LUKS2 secondary header
)

// afStripes is the only anti-forensic stripe count cryptsetup makes or
// opens.
const afStripes = 4000

// maxKeyBytes bounds a volume or keyslot key: 64 bytes is AES-256 in XTS
// mode, the largest key any supported cipher takes.
const maxKeyBytes = 64

// volume is what Platter knows of a LUKS volume from its header.
type volume struct {
	version    int // 1 or 2
	uuid       string
	cipher     string // "aes-xts-plain64": the payload's, in dm-crypt notation
	keyBytes   int    // the volume key's size
	payloadOff int64  // where the encrypted data begins
	payloadLen int64  // how many bytes of it
	sector     int64  // the encryption sector: 512 (LUKS1) or the segment's
	ivTweak    uint64 // added to the 512-byte sector number of the IV
	hdrEnd     int64  // the end of the headers and keyslot areas
	slots      []keyslot
	digest     digest
	// locked, when set, says why the payload cannot be opened whatever
	// the key (a reencryption in progress, integrity protection): it is
	// copied whole.
	locked string
}

// keyslot is one way to the volume key: a KDF over the passphrase gives
// the key of an encrypted area whose AF-merged plaintext is the volume
// key.
type keyslot struct {
	id       string
	kdf      kdf
	areaOff  int64
	areaSize int64
	cipher   string // the area's encryption
	areaKey  int    // the area's key size (the KDF's output)
	keyBytes int    // the volume key size
	afHash   string
	// skip, when set, says why this keyslot is not tried.
	skip string
}

// kdf is a key derivation: "pbkdf2" with hash and iterations, or
// "argon2i"/"argon2id" with time, memory (KiB) and cpus.
type kdf struct {
	typ        string
	hash       string
	iterations int64
	time       int64
	memory     int64
	cpus       int64
	salt       []byte
}

// digest checks a candidate volume key: PBKDF2 of it equals value.
type digest struct {
	hash       string
	iterations int64
	salt       []byte
	value      []byte
	slots      []string // keyslots it vouches for (LUKS2)
}

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "luks", Off: off, Msg: fmt.Sprintf(format, args...)}
}

var errNotMine = fmt.Errorf("luks: %w", block.ErrNotMine)

// readHeader reads and checks the header of the LUKS volume in r.
func readHeader(r io.ReaderAt, size int64) (*volume, error) {
	var b [l1HeaderSize]byte
	if size < l1HeaderSize {
		return nil, errNotMine
	}
	if n, err := r.ReadAt(b[:], 0); n != len(b) {
		return nil, fmt.Errorf("luks: read header at byte 0: %w", err)
	}
	if !bytes.Equal(b[:6], magic1) {
		return nil, errNotMine
	}
	switch v := binary.BigEndian.Uint16(b[6:]); v {
	case 1:
		return parseLUKS1(b[:], size)
	case 2:
		return readLUKS2(r, size)
	default:
		return nil, corrupt(6, "LUKS version %d is not known", v)
	}
}

// cstr is a NUL-terminated string field.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseLUKS1 parses the 592-byte LUKS1 header.
func parseLUKS1(b []byte, size int64) (*volume, error) {
	be := binary.BigEndian
	v := &volume{version: 1, sector: sectorSize512}
	name, mode, hash := cstr(b[8:40]), cstr(b[40:72]), cstr(b[72:104])
	v.cipher = name + "-" + mode
	v.payloadOff = int64(be.Uint32(b[104:])) * sectorSize512
	v.keyBytes = int(be.Uint32(b[108:]))
	v.uuid = cstr(b[168:208])
	if v.keyBytes <= 0 || v.keyBytes > maxKeyBytes {
		return nil, corrupt(108, "key size %d bytes is impossible", v.keyBytes)
	}
	v.digest = digest{
		hash:       hash,
		iterations: int64(be.Uint32(b[164:])),
		salt:       slices.Clone(b[132:164]),
		value:      slices.Clone(b[112:132]),
	}
	v.hdrEnd = l1HeaderSize
	for i := range l1Keyslots {
		s := b[l1SlotOff+i*l1SlotSize:]
		if be.Uint32(s) != l1SlotActive {
			continue
		}
		off := int64(l1SlotOff + i*l1SlotSize)
		ks := keyslot{
			id:       strconv.Itoa(i),
			kdf:      kdf{typ: "pbkdf2", hash: hash, iterations: int64(be.Uint32(s[4:])), salt: slices.Clone(s[8:40])},
			areaOff:  int64(be.Uint32(s[40:])) * sectorSize512,
			cipher:   v.cipher,
			areaKey:  v.keyBytes,
			keyBytes: v.keyBytes,
			afHash:   hash,
		}
		if st := be.Uint32(s[44:]); st != afStripes {
			return nil, corrupt(off+44, "keyslot %d has %d anti-forensic stripes (LUKS uses %d)", i, st, afStripes)
		}
		ks.areaSize = roundUp(int64(v.keyBytes)*afStripes, sectorSize512)
		if ks.areaOff < l1HeaderSize {
			return nil, corrupt(off+40, "keyslot %d's key material at byte %d overlaps the header", i, ks.areaOff)
		}
		v.hdrEnd = max(v.hdrEnd, ks.areaOff+ks.areaSize)
		v.slots = append(v.slots, ks)
	}
	if err := v.checkPayload(size, 104); err != nil {
		return nil, err
	}
	v.payloadLen = size - v.payloadOff
	return v, nil
}

// checkPayload checks that the payload starts after the headers and
// keyslots and inside the device.
func (v *volume) checkPayload(size, at int64) error {
	switch {
	case v.payloadOff < v.hdrEnd:
		return corrupt(at, "the payload at byte %d overlaps the header and keyslots, which end at byte %d", v.payloadOff, v.hdrEnd)
	case v.payloadOff > size:
		return corrupt(at, "the payload at byte %d starts past the end of the %d-byte device", v.payloadOff, size)
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// l2Sizes are the header sizes (binary header and JSON area) LUKS2
// allows; the secondary header starts at the primary's size.
var l2Sizes = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// l2hdr is one LUKS2 header copy.
type l2hdr struct {
	size  int64
	seqid uint64
	uuid  string
	json  []byte
}

// readLUKS2 reads both LUKS2 header copies and uses the newer good one,
// as cryptsetup does.
func readLUKS2(r io.ReaderAt, size int64) (*volume, error) {
	h1, err1 := readL2Copy(r, size, 0, magic1)
	if errors.Is(err1, errNoCopy) { // the magic is there: the device is too short
		err1 = corrupt(0, "LUKS2 header cut short: the device is %d bytes", size)
	}
	var h2 *l2hdr
	var err2 error
	if h1 != nil {
		h2, err2 = readL2Copy(r, size, h1.size, magic2)
	} else {
		// The primary is damaged: its size field may lie, so look for
		// the secondary where each valid size would put it.
		err2 = errNoCopy
		for _, off := range l2Sizes {
			h, err := readL2Copy(r, size, off, magic2)
			if h != nil {
				h2 = h
				break
			}
			if errors.Is(err2, errNoCopy) {
				err2 = err
			}
		}
	}
	h := h1
	if h == nil || (h2 != nil && h2.seqid > h1.seqid) {
		h = h2
	}
	if h == nil {
		if err2 == nil || errors.Is(err2, errNoCopy) {
			return nil, err1
		}
		return nil, fmt.Errorf("%w; secondary header: %v", err1, err2)
	}
	v, err := parseJSON(h.json, h.size, size)
	if err != nil {
		return nil, err
	}
	v.uuid = h.uuid
	return v, nil
}

var errNoCopy = errors.New("no header there")

// readL2Copy reads and checks the LUKS2 header copy at off.
func readL2Copy(r io.ReaderAt, size, off int64, want []byte) (*l2hdr, error) {
	var b [l2BinSize]byte
	if off+l2BinSize > size {
		return nil, errNoCopy
	}
	if n, err := r.ReadAt(b[:], off); n != len(b) {
		return nil, fmt.Errorf("luks: read LUKS2 header at byte %d: %w", off, err)
	}
	be := binary.BigEndian
	if !bytes.Equal(b[:6], want) || be.Uint16(b[6:]) != 2 {
		return nil, errNoCopy
	}
	h := &l2hdr{size: int64(be.Uint64(b[8:])), seqid: be.Uint64(b[16:]), uuid: cstr(b[168:208])}
	if !slices.Contains(l2Sizes, h.size) {
		// Also bounds what is read below: at most 4 MiB.
		return nil, corrupt(off+8, "LUKS2 header size %d is not one LUKS2 allows (16 KiB to 4 MiB, a power of two)", h.size)
	}
	if ho := int64(be.Uint64(b[256:])); ho != off {
		return nil, corrupt(off+256, "LUKS2 header at byte %d says it is at byte %d", off, ho)
	}
	if off+h.size > size || (off == 0 && 2*h.size > size) {
		return nil, corrupt(off+8, "LUKS2 headers of %d bytes do not fit the %d-byte device", h.size, size)
	}
	alg := cstr(b[72:104])
	newHash := hashFunc(alg)
	if newHash == nil {
		return nil, corrupt(off+72, "LUKS2 header checksum %q is not supported", alg)
	}
	all := make([]byte, h.size)
	if n, err := r.ReadAt(all, off); int64(n) != h.size {
		return nil, fmt.Errorf("luks: read LUKS2 header at byte %d: %w", off, err)
	}
	hh := newHash()
	sum := slices.Clone(all[l2CsumOff : l2CsumOff+l2CsumLen])
	clear(all[l2CsumOff : l2CsumOff+l2CsumLen])
	hh.Write(all)
	if got := hh.Sum(nil); subtle.ConstantTimeCompare(got, sum[:len(got)]) != 1 {
		return nil, corrupt(off+l2CsumOff, "LUKS2 header checksum (%s) does not match", alg)
	}
	area := all[l2BinSize:]
	end := bytes.IndexByte(area, 0)
	if end < 0 {
		return nil, corrupt(off+l2BinSize, "LUKS2 JSON area is not NUL-terminated")
	}
	h.json = area[:end]
	return h, nil
}

// hashFunc returns the hash a LUKS header names, nil if not supported.
func hashFunc(name string) func() hash.Hash {
	switch strings.ToLower(name) {
	case "sha1":
		return sha1.New
	case "sha224":
		return sha256.New224
	case "sha256":
		return sha256.New
	case "sha384":
		return sha512.New384
	case "sha512":
		return sha512.New
	}
	return nil
}

// u64 is a LUKS2 JSON uint64: a decimal string.
type u64 string

func (s u64) value(what string) (int64, error) {
	n, err := strconv.ParseUint(string(s), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a byte count", what, string(s))
	}
	return int64(n), nil
}

// The LUKS2 JSON metadata, as far as Platter reads it.
type l2json struct {
	Keyslots map[string]l2keyslot `json:"keyslots"`
	Segments map[string]l2segment `json:"segments"`
	Digests  map[string]l2digest  `json:"digests"`
	Config   struct {
		JSONSize     u64 `json:"json_size"`
		KeyslotsSize u64 `json:"keyslots_size"`
		Requirements *struct {
			Mandatory []string `json:"mandatory"`
		} `json:"requirements"`
	} `json:"config"`
}

type l2keyslot struct {
	Type     string `json:"type"`
	KeySize  int64  `json:"key_size"`
	Priority *int64 `json:"priority"`
	AF       struct {
		Type    string `json:"type"`
		Stripes int64  `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area struct {
		Type       string `json:"type"`
		Offset     u64    `json:"offset"`
		Size       u64    `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int64  `json:"key_size"`
	} `json:"area"`
	KDF struct {
		Type       string `json:"type"`
		Hash       string `json:"hash"`
		Iterations int64  `json:"iterations"`
		Time       int64  `json:"time"`
		Memory     int64  `json:"memory"`
		CPUs       int64  `json:"cpus"`
		Salt       string `json:"salt"`
	} `json:"kdf"`
}

type l2segment struct {
	Type       string          `json:"type"`
	Offset     u64             `json:"offset"`
	Size       u64             `json:"size"`
	IVTweak    u64             `json:"iv_tweak"`
	Encryption string          `json:"encryption"`
	SectorSize int64           `json:"sector_size"`
	Integrity  json.RawMessage `json:"integrity"`
	Flags      []string        `json:"flags"`
}

type l2digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int64    `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

// parseJSON reads the LUKS2 JSON metadata of a header of hdrSize bytes
// on a size-byte device. Offsets in errors are the JSON area's.
func parseJSON(js []byte, hdrSize, size int64) (*volume, error) {
	var j l2json
	if err := json.Unmarshal(js, &j); err != nil {
		return nil, corrupt(l2BinSize, "LUKS2 JSON metadata: %v", err)
	}
	bad := func(format string, args ...any) error {
		return corrupt(l2BinSize, "LUKS2 JSON metadata: "+format, args...)
	}
	jsonSize, err := j.Config.JSONSize.value("config json_size")
	if err != nil {
		return nil, bad("%v", err)
	}
	if jsonSize != hdrSize-l2BinSize {
		return nil, bad("json_size %d does not match the %d-byte header", jsonSize, hdrSize)
	}
	ksSize, err := j.Config.KeyslotsSize.value("config keyslots_size")
	if err != nil {
		return nil, bad("%v", err)
	}
	v := &volume{version: 2, hdrEnd: 2 * hdrSize}
	if ksSize > size || v.hdrEnd+ksSize > size {
		return nil, bad("keyslots area of %d bytes does not fit the %d-byte device", ksSize, size)
	}
	areaEnd := v.hdrEnd + ksSize
	if r := j.Config.Requirements; r != nil && len(r.Mandatory) > 0 {
		v.locked = fmt.Sprintf("it requires %s, which Platter does not know", strings.Join(r.Mandatory, ", "))
	}

	// The data segment.
	segID := ""
	for _, id := range sortedKeys(j.Segments) {
		if j.Segments[id].Type == "crypt" {
			segID = id
			break
		}
	}
	if segID == "" {
		return nil, bad("no crypt segment")
	}
	seg := j.Segments[segID]
	if len(j.Segments) > 1 && v.locked == "" {
		v.locked = fmt.Sprintf("it has %d segments (a reencryption in progress?)", len(j.Segments))
	}
	if v.payloadOff, err = seg.Offset.value("segment offset"); err != nil {
		return nil, bad("%v", err)
	}
	if v.payloadOff%sectorSize512 != 0 {
		return nil, bad("segment offset %d is not a multiple of 512", v.payloadOff)
	}
	switch seg.SectorSize {
	case 512, 1024, 2048, 4096:
		v.sector = seg.SectorSize
	default:
		return nil, bad("segment sector size %d is not 512, 1024, 2048 or 4096", seg.SectorSize)
	}
	v.cipher = seg.Encryption
	if seg.IVTweak != "" {
		t, err := strconv.ParseUint(string(seg.IVTweak), 10, 64)
		if err != nil {
			return nil, bad("segment iv_tweak %q is not a number", string(seg.IVTweak))
		}
		v.ivTweak = t
	}
	if len(seg.Integrity) > 0 && string(seg.Integrity) != "null" && v.locked == "" {
		v.locked = "its data has integrity protection (dm-integrity), which Platter does not read"
	}
	for _, f := range seg.Flags {
		if v.locked == "" && strings.HasPrefix(f, "backup-") {
			v.locked = fmt.Sprintf("its segment is marked %q (a reencryption in progress)", f)
		}
	}

	// The digest of the data segment's key.
	var dg *l2digest
	for _, id := range sortedKeys(j.Digests) {
		d := j.Digests[id]
		if slices.Contains(d.Segments, segID) {
			dg = &d
			break
		}
	}
	if dg == nil {
		return nil, bad("no digest for segment %s", segID)
	}
	if dg.Type != "pbkdf2" {
		return nil, bad("digest type %q is not known", dg.Type)
	}
	v.digest = digest{hash: dg.Hash, iterations: dg.Iterations, slots: dg.Keyslots}
	if v.digest.salt, err = b64(dg.Salt, "digest salt"); err != nil {
		return nil, bad("%v", err)
	}
	if v.digest.value, err = b64(dg.Digest, "digest"); err != nil {
		return nil, bad("%v", err)
	}
	if len(v.digest.value) == 0 || len(v.digest.value) > 64 {
		return nil, bad("digest of %d bytes is impossible", len(v.digest.value))
	}

	// The keyslots, in the order cryptsetup tries them: high priority
	// first, then normal; "ignore" ones are not tried.
	if len(j.Keyslots) > l2MaxKeyslots {
		return nil, bad("%d keyslots (LUKS2 has at most %d)", len(j.Keyslots), l2MaxKeyslots)
	}
	ids := sortedKeys(j.Keyslots)
	sort.SliceStable(ids, func(a, b int) bool { return priority(j.Keyslots[ids[a]]) > priority(j.Keyslots[ids[b]]) })
	for _, id := range ids {
		k := j.Keyslots[id]
		ks := keyslot{id: id, keyBytes: int(k.KeySize), cipher: k.Area.Encryption, areaKey: int(k.Area.KeySize), afHash: k.AF.Hash}
		ks.kdf = kdf{typ: k.KDF.Type, hash: k.KDF.Hash, iterations: k.KDF.Iterations, time: k.KDF.Time, memory: k.KDF.Memory, cpus: k.KDF.CPUs}
		if ks.kdf.salt, err = b64(k.KDF.Salt, "keyslot "+id+" salt"); err != nil {
			return nil, bad("%v", err)
		}
		if ks.areaOff, err = k.Area.Offset.value("keyslot " + id + " area offset"); err != nil {
			return nil, bad("%v", err)
		}
		if ks.areaSize, err = k.Area.Size.value("keyslot " + id + " area size"); err != nil {
			return nil, bad("%v", err)
		}
		if ks.areaOff < v.hdrEnd || ks.areaSize > areaEnd || ks.areaOff > areaEnd-ks.areaSize {
			return nil, bad("keyslot %s area [%d, +%d) lies outside the keyslots area [%d, %d)", id, ks.areaOff, ks.areaSize, v.hdrEnd, areaEnd)
		}
		switch {
		case k.Type != "luks2":
			ks.skip = fmt.Sprintf("keyslot type %q", k.Type)
		case priority(k) == 0:
			ks.skip = "its priority is \"ignore\""
		case k.Area.Type != "raw":
			ks.skip = fmt.Sprintf("area type %q", k.Area.Type)
		case k.AF.Type != "luks1" || k.AF.Stripes != afStripes:
			ks.skip = fmt.Sprintf("anti-forensic splitter %q with %d stripes", k.AF.Type, k.AF.Stripes)
		case k.KeySize <= 0 || k.KeySize > maxKeyBytes:
			ks.skip = fmt.Sprintf("key size %d bytes", k.KeySize)
		case k.Area.KeySize <= 0 || k.Area.KeySize > maxKeyBytes:
			ks.skip = fmt.Sprintf("area key size %d bytes", k.Area.KeySize)
		case ks.areaSize < roundUp(k.KeySize*afStripes, sectorSize512):
			ks.skip = fmt.Sprintf("area of %d bytes, too small for its key material", ks.areaSize)
		case !slices.Contains(v.digest.slots, id):
			ks.skip = "it does not hold the data segment's key"
		}
		if v.keyBytes == 0 && ks.keyBytes > 0 && ks.keyBytes <= maxKeyBytes {
			v.keyBytes = ks.keyBytes
		}
		v.slots = append(v.slots, ks)
	}
	v.hdrEnd = areaEnd
	if err := v.checkPayload(size, l2BinSize); err != nil {
		return nil, err
	}
	v.payloadLen = size - v.payloadOff
	if seg.Size != "dynamic" {
		n, err := seg.Size.value("segment size")
		if err != nil {
			return nil, bad("%v", err)
		}
		if n > v.payloadLen {
			return nil, bad("segment of %d bytes at byte %d does not fit the %d-byte device", n, v.payloadOff, size)
		}
		v.payloadLen = n
	}
	return v, nil
}

func priority(k l2keyslot) int64 {
	if k.Priority == nil {
		return 1
	}
	return *k.Priority
}

func sortedKeys[T any](m map[string]T) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	// Numerically where they are numbers, as cryptsetup numbers them.
	sort.Slice(ks, func(a, b int) bool {
		if len(ks[a]) != len(ks[b]) {
			return len(ks[a]) < len(ks[b])
		}
		return ks[a] < ks[b]
	})
	return ks
}

func b64(s, what string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64", what)
	}
	return b, nil
}
