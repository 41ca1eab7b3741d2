package luks

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/ext"
	"github.com/platter-dev/platter/internal/tooltest"
	"golang.org/x/crypto/xts"
)

// fixture is a LUKS volume made by cryptsetup in a file, and what
// cryptsetup says of it.
type fixture struct {
	path       string
	key        []byte // the key file's contents
	version    string
	uuid       string
	cipher     string // "aes-xts-plain64"
	keyBits    int
	payloadOff int64
	sector     int64
	mk         []byte // the volume key, from luksDump --dump-volume-key
}

// fastKDF makes luksFormat's key derivation cheap: tests are about the
// format, not the cost.
var fastKDF = map[string][]string{
	"pbkdf2":   {"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
	"argon2id": {"--pbkdf", "argon2id", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2"},
	"argon2i":  {"--pbkdf", "argon2i", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"},
}

// format makes a size-byte file and runs luksFormat on it with a random
// key file.
func format(t testing.TB, size int64, args ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{path: filepath.Join(dir, "luks.img"), key: bytes.Repeat([]byte("key file bytes "), 5)}
	f.key = append(f.key, []byte(t.Name())...)
	keyPath := filepath.Join(dir, "key")
	if err := os.WriteFile(keyPath, f.key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.path, size); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "cryptsetup", append(append([]string{"luksFormat", "-q", "--key-file", keyPath}, args...), f.path)...)
	f.describe(t, keyPath)
	return f
}

// describe reads what cryptsetup's luksDump says of the volume.
func (f *fixture) describe(t testing.TB, keyPath string) {
	t.Helper()
	dump := tooltest.Run(t, "cryptsetup", "luksDump", f.path)
	field := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(dump)
		if m == nil {
			t.Fatalf("luksDump has no %s:\n%s", re, dump)
		}
		return m[1]
	}
	f.version = field(`Version:\s+(\d)`)
	f.uuid = field(`UUID:\s+(\S+)`)
	if f.version == "1" {
		f.cipher = field(`Cipher name:\s+(\S+)`) + "-" + field(`Cipher mode:\s+(\S+)`)
		n, _ := strconv.ParseInt(field(`Payload offset:\s+(\d+)`), 10, 64)
		f.payloadOff, f.sector = n*512, 512
		f.keyBits, _ = strconv.Atoi(field(`MK bits:\s+(\d+)`))
	} else {
		f.cipher = field(`(?m)^\s+cipher:\s+(\S+)`)
		f.payloadOff, _ = strconv.ParseInt(field(`(?m)^\s+offset:\s+(\d+) \[bytes\]`), 10, 64)
		f.sector, _ = strconv.ParseInt(field(`(?m)^\s+sector:\s+(\d+) \[bytes\]`), 10, 64)
		f.keyBits, _ = strconv.Atoi(field(`(?m)^\s+Key:\s+(\d+) bits`))
	}
	f.mk = volumeKey(t, f.path, keyPath)
}

// volumeKey asks cryptsetup for the volume key (cryptsetup before 2.4
// called the option --dump-master-key).
func volumeKey(t testing.TB, path, keyPath string) []byte {
	t.Helper()
	out := tooltest.Run(t, "cryptsetup", "luksDump", "--help")
	opt := "--dump-volume-key"
	if !strings.Contains(out, opt) {
		opt = "--dump-master-key"
	}
	out = tooltest.Run(t, "cryptsetup", "luksDump", opt, "-q", "--key-file", keyPath, path)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no volume key in:\n%s", out)
	}
	h := strings.Join(strings.Fields(strings.ReplaceAll(out[i+len("MK dump:"):], ":", " ")), "")
	mk, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("volume key %q: %v", h, err)
	}
	return mk
}

// encrypt is the test's own encoder, written from the dm-crypt
// documentation and checked against cryptsetup's own encryption in
// TestCryptsetupEncrypted: each sector encrypted with the IV of its
// number in 512-byte units. It is kept out of the race detector, which
// made it most of these tests' time and has nothing to check in it.
//
//go:norace
func encrypt(t testing.TB, spec string, mk, plain []byte, sector int64) []byte {
	t.Helper()
	out := make([]byte, len(plain))
	xc, _ := xts.NewCipher(aes.NewCipher, mk)
	cb, _ := aes.NewCipher(mk)
	salt := sha256.Sum256(mk)
	essiv, _ := aes.NewCipher(salt[:])
	for off := int64(0); off < int64(len(plain)); off += sector {
		iv := uint64(off / 512)
		src, dst := plain[off:off+sector], out[off:off+sector]
		switch spec {
		case "aes-xts-plain64":
			xc.Encrypt(dst, src, iv)
		case "aes-cbc-essiv:sha256":
			ivb := make([]byte, 16)
			binary.LittleEndian.PutUint64(ivb, iv)
			essiv.Encrypt(ivb, ivb)
			cipher.NewCBCEncrypter(cb, ivb).CryptBlocks(dst, src)
		default:
			t.Fatalf("the test cannot encrypt with %s", spec)
		}
	}
	return out
}

// withExt4 makes an ext4 of every whole sector of the payload over
// garbage (free blocks hold something), with tooltest.Files in it, and
// writes it encrypted into the payload. It returns the plaintext file.
func (f *fixture) withExt4(t testing.TB) string {
	t.Helper()
	st, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	n := (st.Size() - f.payloadOff) / f.sector * f.sector
	plain := tooltest.Garbage(t, n)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "4096", "-d", tooltest.Files(t), plain)
	b, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(f.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := out.WriteAt(encrypt(t, f.cipher, f.mk, b, f.sector), f.payloadOff); err != nil {
		t.Fatal(err)
	}
	return plain
}

// inner is what fsmap gives a container: ext's detector, nil for
// anything else.
func inner(r io.ReaderAt, size int64) (*block.Usage, error) {
	u, err := ext.Detect(r, size)
	if errors.Is(err, block.ErrNotMine) {
		return nil, nil
	}
	return u, err
}

func detect(t testing.TB, path string, keys ...[]byte) (*block.Usage, error) {
	t.Helper()
	return tooltest.DetectFile(t, path, func(r io.ReaderAt, size int64) (*block.Usage, error) {
		return Detect(r, size, keys, inner)
	})
}

// wantMap is the map a volume opened over ext4 must have, built from
// ext's own map of the plaintext file: everything outside the payload's
// whole sectors, and each encryption sector holding a used block.
func (f *fixture) wantMap(t testing.TB, plain string, size, blockSize int64) *block.Map {
	t.Helper()
	eu, err := tooltest.DetectFile(t, plain, ext.Detect)
	if err != nil {
		t.Fatal(err)
	}
	em := tooltest.LoadUsage(t, eu)
	want, _ := block.NewMap(blockSize, size)
	want.SetBytes(0, f.payloadOff)
	plainLen := em.Len()
	want.SetBytes(f.payloadOff+plainLen, size-f.payloadOff-plainLen)
	em.Runs(0, plainLen, func(e block.Extent) {
		a := e.Off / f.sector * f.sector
		b := (e.End() + f.sector - 1) / f.sector * f.sector
		want.SetBytes(f.payloadOff+a, b-a)
	})
	return want
}

func sameMap(t testing.TB, got, want *block.Map) {
	t.Helper()
	if got.Blocks() != want.Blocks() || got.BlockSize() != want.BlockSize() {
		t.Fatalf("map of %d blocks of %d bytes, want %d of %d", got.Blocks(), got.BlockSize(), want.Blocks(), want.BlockSize())
	}
	bad := 0
	for i := int64(0); i < got.Blocks(); i++ {
		if got.Test(i) != want.Test(i) {
			if bad < 5 {
				t.Errorf("block %d (byte %d): used %v, want %v", i, i*got.BlockSize(), got.Test(i), want.Test(i))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d blocks differ", bad)
	}
}

// formats are the volumes cryptsetup makes that the package opens.
var formats = []struct {
	name    string
	size    int64
	args    []string
	windows bool
}{
	{"luks1-xts-512", 24 << 20, append([]string{"--type", "luks1", "--hash", "sha256"}, fastKDF["pbkdf2"]...), true},
	{"luks1-xts-256-sha1", 24 << 20, append([]string{"--type", "luks1", "--hash", "sha1", "--key-size", "256"}, fastKDF["pbkdf2"]...), false},
	{"luks1-cbc-essiv", 24 << 20, append([]string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, fastKDF["pbkdf2"]...), false},
	{"luks2-argon2id-4k", 40 << 20, append([]string{"--type", "luks2", "--sector-size", "4096"}, fastKDF["argon2id"]...), true},
	{"luks2-argon2i-512", 40 << 20, append([]string{"--type", "luks2", "--sector-size", "512"}, fastKDF["argon2i"]...), false},
	{"luks2-pbkdf2-sha512-2k", 40 << 20, append([]string{"--type", "luks2", "--sector-size", "2048", "--hash", "sha512"}, fastKDF["pbkdf2"]...), false},
	{"luks2-xts-256", 40 << 20, append([]string{"--type", "luks2", "--key-size", "256"}, fastKDF["pbkdf2"]...), false},
}

func TestFormats(t *testing.T) {
	for _, tc := range formats {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := format(t, tc.size, tc.args...)
			plain := f.withExt4(t)
			fs := "luks" + f.version
			wantDetail := "UUID " + f.uuid + ", " + f.cipher + ", " + strconv.Itoa(f.keyBits) + " bits, keyslots 1"

			// No key: named, described, kept whole.
			u, err := detect(t, f.path)
			if err != nil {
				t.Fatal(err)
			}
			if u.FS != fs || !strings.HasPrefix(u.Detail, wantDetail+" (") || u.Warning != "" || u.FillFree {
				t.Errorf("no key: %s %q, warning %q, fill free %v; want %s %q", u.FS, u.Detail, u.Warning, u.FillFree, fs, wantDetail)
			}
			if n, _ := u.UsedBytes(); n != tc.size {
				t.Errorf("no key: %d bytes used, want all %d", n, tc.size)
			}
			if len(u.Volumes) != 1 || u.Volumes[0].Note != "locked: no key given" || u.Volumes[0].Start != f.payloadOff {
				t.Errorf("no key: volumes %+v", u.Volumes)
			}

			// The key: the ext4's used blocks, as ciphertext sectors.
			u, err = detect(t, f.path, []byte("not it"), f.key)
			if err != nil {
				t.Fatal(err)
			}
			if u.FS != fs || u.Warning != "" || !u.FillFree {
				t.Fatalf("key: %s, warning %q, fill free %v", u.FS, u.Warning, u.FillFree)
			}
			if len(u.Volumes) != 1 || u.Volumes[0].Filesystem != "ext4" || u.Volumes[0].Note != "" {
				t.Fatalf("key: volumes %+v", u.Volumes)
			}
			// Windows of every size agree with the whole map: checked on
			// two formats (it is slow under the race detector).
			var got *block.Map
			if tc.windows {
				got = tooltest.LoadUsage(t, u)
			} else if got, err = u.Load(); err != nil {
				t.Fatal(err)
			}
			sameMap(t, got, f.wantMap(t, plain, tc.size, u.BlockSize()))
			payload := tc.size - f.payloadOff
			if used := got.UsedBytes() - f.payloadOff; used > payload/2 {
				t.Errorf("key: %d of the payload's %d bytes used: the free blocks were not left out", used, payload)
			}
		})
	}
}

// TestUnalignedPayload: a LUKS1 payload that does not start on a 4 KiB
// boundary (cryptsetup 2 no longer makes one; older ones and other
// tools could) is mapped in 512-byte blocks, each used 4 KiB ext4 block
// then covering parts of nine.
func TestUnalignedPayload(t *testing.T) {
	f := format(t, 24<<20, append([]string{"--type", "luks1"}, fastKDF["pbkdf2"]...)...)
	b := readFile(t, f.path)
	binary.BigEndian.PutUint32(b[104:], uint32(f.payloadOff/512+1))
	if err := os.WriteFile(f.path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f.describe(t, filepath.Join(filepath.Dir(f.path), "key"))
	if f.payloadOff%4096 == 0 {
		t.Fatalf("payload at byte %d", f.payloadOff)
	}
	plain := f.withExt4(t)
	u, err := detect(t, f.path, f.key)
	if err != nil {
		t.Fatal(err)
	}
	if u.BlockSize() != 512 || len(u.Volumes) != 1 || u.Volumes[0].Filesystem != "ext4" {
		t.Fatalf("map of %d-byte blocks, volumes %+v", u.BlockSize(), u.Volumes)
	}
	sameMap(t, tooltest.LoadUsage(t, u), f.wantMap(t, plain, 24<<20, 512))
}

// TestCryptsetupEncrypted opens a volume whose payload cryptsetup itself
// encrypted (reencrypt --encrypt, which needs no device-mapper): the
// plaintext the package reads is the filesystem that was encrypted,
// byte for byte, and the test's own encoder gives the same ciphertext.
func TestCryptsetupEncrypted(t *testing.T) {
	for _, sector := range []string{"512", "4096"} {
		t.Run(sector, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "fs.img")
			keyPath := filepath.Join(dir, "key")
			os.WriteFile(keyPath, []byte("the key"), 0o600)
			orig := tooltest.Garbage(t, 20<<20)
			tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "4096", "-d", tooltest.Files(t), orig, "12M")
			b, _ := os.ReadFile(orig)
			os.WriteFile(path, b, 0o600)
			tooltest.Run(t, "cryptsetup", append([]string{"reencrypt", "-q", "--encrypt", "--type", "luks2", "--reduce-device-size", "8M",
				"--sector-size", sector, "--key-file", keyPath}, append(fastKDF["argon2id"], path)...)...)
			f := &fixture{path: path}
			f.describe(t, keyPath)

			u, err := detect(t, path, []byte("the key"))
			if err != nil {
				t.Fatal(err)
			}
			if len(u.Volumes) != 1 || u.Volumes[0].Filesystem != "ext4" || u.Warning != "" {
				t.Fatalf("volumes %+v, warning %q", u.Volumes, u.Warning)
			}
			// What the package decrypts is the filesystem mkfs made.
			v, err := readHeader(bytes.NewReader(readFile(t, path)), 20<<20)
			if err != nil {
				t.Fatal(err)
			}
			c, err := newSectorCipher(v.cipher, f.mk)
			if err != nil {
				t.Fatal(err)
			}
			enc := readFile(t, path)
			pr := &plainReader{r: bytes.NewReader(enc), off: v.payloadOff, size: 12 << 20, sector: v.sector, c: c}
			// Samples across the filesystem (the race detector makes
			// decrypting all of it slow; the e2e test does).
			for _, off := range []int64{0, 5<<20 + 4096, 12<<20 - 256<<10} {
				got := make([]byte, 256<<10)
				if _, err := pr.ReadAt(got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, b[off:off+int64(len(got))]) {
					t.Fatalf("the decrypted payload at byte %d is not the filesystem cryptsetup encrypted", off)
				}
				// The test's encoder agrees with cryptsetup's (the IV
				// counts 512-byte sectors from the payload's start).
				e := encrypt(t, f.cipher, f.mk, append(make([]byte, off), got...), f.sector)[off:]
				if !bytes.Equal(e, enc[f.payloadOff+off:f.payloadOff+off+int64(len(got))]) {
					t.Fatalf("the test's encoder differs from cryptsetup's at byte %d", off)
				}
			}
			eu, _ := tooltest.DetectFile(t, orig, ext.Detect)
			want, _ := eu.UsedBytes()
			if u.Volumes[0].UsedBytes != want {
				t.Errorf("ext4 inside: %d bytes used, the plaintext's ext4 says %d", u.Volumes[0].UsedBytes, want)
			}
		})
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPassphraseSlot opens a second keyslot made with a passphrase (a
// passphrase is the bytes typed; a key file is its whole contents).
func TestPassphraseSlot(t *testing.T) {
	f := format(t, 28<<20, append([]string{"--type", "luks2"}, fastKDF["argon2id"]...)...)
	plain := f.withExt4(t)
	cmd := "printf %s 'correct horse' | cryptsetup luksAddKey -q " + strings.Join(fastKDF["pbkdf2"], " ") +
		" --key-file " + filepath.Join(filepath.Dir(f.path), "key") + " " + f.path + " -"
	tooltest.Run(t, "bash", "-c", cmd)
	tooltest.Run(t, "bash", "-c", "printf %s 'correct horse' | cryptsetup open --test-passphrase "+f.path)
	u, err := detect(t, f.path, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Warning != "" || len(u.Volumes) != 1 || u.Volumes[0].Filesystem != "ext4" {
		t.Fatalf("warning %q, volumes %+v", u.Warning, u.Volumes)
	}
	if !strings.HasSuffix(u.Detail, "keyslots 2 (argon2id, pbkdf2)") {
		t.Errorf("detail %q", u.Detail)
	}
	sameMap(t, tooltest.LoadUsage(t, u), f.wantMap(t, plain, 28<<20, u.BlockSize()))
}

func TestWrongKey(t *testing.T) {
	f := format(t, 12<<20, append([]string{"--type", "luks1"}, fastKDF["pbkdf2"]...)...)
	f.withExt4(t)
	u, err := detect(t, f.path, []byte("wrong"), []byte("also wrong"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(u.Warning, "no key opened it") || u.FillFree {
		t.Errorf("warning %q, fill free %v", u.Warning, u.FillFree)
	}
	if n, _ := u.UsedBytes(); n != 12<<20 {
		t.Errorf("%d bytes used, want all", n)
	}
}

func TestTruncated(t *testing.T) {
	for _, v := range []string{"\x00\x01", "\x00\x02", "\x00\x03"} {
		b := append([]byte("LUKS\xba\xbe"+v), make([]byte, 1000)...)
		_, err := Detect(bytes.NewReader(b), int64(len(b)), nil, inner)
		var ce *block.CorruptError
		if !errors.As(err, &ce) {
			t.Errorf("version %x in %d bytes: %v", v, len(b), err)
		}
	}
}

func TestNotLUKS(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":   nil,
		"zeros":   make([]byte, 1<<20),
		"garbage": readFile(t, tooltest.Garbage(t, 1<<20)),
		"short":   []byte("LUKS\xba\xbe\x00\x01"),
	} {
		if _, err := Detect(bytes.NewReader(b), int64(len(b)), nil, inner); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// l2 is a LUKS2 header made by cryptsetup, to be edited.
type l2 struct {
	b    []byte
	size int64
}

func newL2(t testing.TB, args ...string) (*l2, *fixture) {
	f := format(t, 20<<20, append([]string{"--type", "luks2"}, args...)...)
	return &l2{b: readFile(t, f.path), size: 16 << 10}, f
}

// edit rewrites the JSON of both copies and their checksums, as a
// hostile writer who knows the format would.
func (h *l2) edit(t testing.TB, fn func(js string) string) {
	for _, off := range []int64{0, h.size} {
		area := h.b[off+4096 : off+h.size]
		js := fn(string(area[:bytes.IndexByte(area, 0)]))
		if len(js) >= len(area) {
			t.Fatal("edited JSON does not fit")
		}
		clear(area)
		copy(area, js)
		h.sum(off)
	}
}

func (h *l2) sum(off int64) {
	hdr := h.b[off : off+h.size]
	clear(hdr[448 : 448+64])
	s := sha256.Sum256(hdr)
	copy(hdr[448:], s[:])
}

func (h *l2) detect(keys ...[]byte) (*block.Usage, error) {
	return Detect(bytes.NewReader(h.b), int64(len(h.b)), keys, inner)
}

func TestHostileHeaders(t *testing.T) {
	base, f := newL2(t, fastKDF["argon2id"]...)
	key := f.key
	clone := func() *l2 { return &l2{b: bytes.Clone(base.b), size: base.size} }
	sub := func(old, new string) func(string) string {
		return func(js string) string {
			if !strings.Contains(js, old) {
				t.Fatalf("no %q in %s", old, js)
			}
			return strings.Replace(js, old, new, 1)
		}
	}
	// Each refused keyslot is named with why; the volume is copied whole.
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"argon2 memory 4 GiB", `"memory":8192`, `"memory":4194304`, "exceeds the 1 GiB"},
		{"argon2 time huge", `"time":4`, `"time":4294967295`, "more work than Platter accepts"},
		{"argon2 no threads", `"cpus":2`, `"cpus":0`, "with 0 threads"},
		{"key size 0", `"key_size":64,"af"`, `"key_size":0,"af"`, "key size 0 bytes"},
		{"stripes", `"stripes":4000`, `"stripes":40000000`, "40000000 stripes"},
		{"kdf unknown", `"type":"argon2id"`, `"type":"scrypt"`, `KDF "scrypt" not supported`},
		{"keyslot cipher", `"encryption":"aes-xts-plain64","key_size":64`, `"encryption":"twofish-xts-plain64","key_size":64`, "cipher twofish-xts-plain64 not supported"},
	} {
		h := clone()
		h.edit(t, sub(tc.old, tc.new))
		u, err := h.detect(key)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !strings.Contains(u.Warning, "no key opened it") || !strings.Contains(u.Warning, tc.want) {
			t.Errorf("%s: warning %q, want %q", tc.name, u.Warning, tc.want)
		}
		if n, _ := u.UsedBytes(); n != int64(len(h.b)) {
			t.Errorf("%s: %d bytes used, want all", tc.name, n)
		}
	}

	// The digest's PBKDF2 is bounded too, before any keyslot is tried.
	h := clone()
	h.edit(t, func(js string) string {
		return regexp.MustCompile(`"iterations":\d+`).ReplaceAllString(js, `"iterations":4000000000`)
	})
	if u, err := h.detect(key); err != nil || !strings.Contains(u.Warning, "PBKDF2 with 4000000000 iterations") {
		t.Errorf("digest iterations: %v, %v", u.Warning, err)
	}

	// An unsupported payload cipher is said plainly.
	h = clone()
	h.edit(t, sub(`"encryption":"aes-xts-plain64","sector_size"`, `"encryption":"serpent-cbc-plain","sector_size"`))
	if u, err := h.detect(key); err != nil || !strings.Contains(u.Volumes[0].Note, "cipher serpent-cbc-plain not supported: copied whole") {
		t.Errorf("payload cipher: %+v, %v", u, err)
	}

	// Damage that makes the header unreadable: a CorruptError, quickly,
	// without allocating what the header claims.
	corrupts := []struct {
		name string
		fn   func(h *l2)
		want string
	}{
		{"JSON of 1 GiB", func(h *l2) {
			for _, off := range []int64{0, h.size} {
				binary.BigEndian.PutUint64(h.b[off+8:], 1<<30)
				h.sum(off)
			}
		}, "header size 1073741824"},
		{"checksum both", func(h *l2) { h.b[5000]++; h.b[h.size+5000]++ }, "checksum"},
		{"json_size", func(h *l2) { h.edit(t, sub(`"json_size":"12288"`, `"json_size":"99999999999"`)) }, "json_size"},
		{"segment offset", func(h *l2) {
			h.edit(t, sub(`"offset":"16777216"`, `"offset":"1099511627776"`))
		}, "past the end"},
		{"segment inside header", func(h *l2) { h.edit(t, sub(`"offset":"16777216"`, `"offset":"4096"`)) }, "overlaps the header"},
		{"keyslot area outside", func(h *l2) { h.edit(t, sub(`"offset":"32768"`, `"offset":"18446744073709551615"`)) }, "area offset"},
		{"too many keyslots", func(h *l2) {
			h.edit(t, func(js string) string {
				var s strings.Builder
				for i := range 40 {
					s.WriteString(`"` + strconv.Itoa(100+i) + `":{},`)
				}
				return strings.Replace(js, `"keyslots":{`, `"keyslots":{`+s.String(), 1)
			})
		}, "at most 32"},
		{"not JSON", func(h *l2) { h.edit(t, func(string) string { return "{[" }) }, "JSON"},
		{"sector size", func(h *l2) { h.edit(t, sub(`"sector_size":4096`, `"sector_size":0`)) }, "sector size 0"},
	}
	for _, tc := range corrupts {
		h := clone()
		tc.fn(h)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := h.detect(key)
		runtime.ReadMemStats(&after)
		var ce *block.CorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a CorruptError about %q", tc.name, err, tc.want)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 16<<20 {
			t.Errorf("%s: allocated %d bytes", tc.name, a)
		}
	}

	// One damaged copy: the other is used, as cryptsetup does.
	for _, off := range []int64{0, base.size} {
		h := clone()
		h.b[off+5000]++
		u, err := h.detect(key)
		if err != nil || u.Warning != "" || !strings.HasPrefix(u.Volumes[0].Note, "opened") {
			t.Errorf("copy at %d damaged: %v, %+v", off, err, u)
		}
	}
}

func TestHostileLUKS1(t *testing.T) {
	f := format(t, 12<<20, append([]string{"--type", "luks1"}, fastKDF["pbkdf2"]...)...)
	base := readFile(t, f.path)
	for _, tc := range []struct {
		name string
		off  int
		val  uint32
		want string
	}{
		{"key size 0", 108, 0, "key size 0 bytes is impossible"},
		{"key size huge", 108, 1 << 31, "is impossible"},
		{"payload past the end", 104, 1 << 30, "past the end"},
		{"payload in the header", 104, 1, "overlaps the header"},
		{"stripes", 208 + 44, 1 << 30, "anti-forensic stripes"},
		{"key material in the header", 208 + 40, 0, "overlaps the header"},
	} {
		b := bytes.Clone(base)
		binary.BigEndian.PutUint32(b[tc.off:], tc.val)
		_, err := Detect(bytes.NewReader(b), int64(len(b)), [][]byte{f.key}, inner)
		var ce *block.CorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Iterations beyond the bound: refused, named, copied whole.
	b := bytes.Clone(base)
	binary.BigEndian.PutUint32(b[208+4:], 4000000000)
	u, err := Detect(bytes.NewReader(b), int64(len(b)), [][]byte{f.key}, inner)
	if err != nil || !strings.Contains(u.Warning, "PBKDF2 with 4000000000 iterations") {
		t.Errorf("iterations: %v, %+v", err, u)
	}
}

// TestBudget: the derivations of one volume stop at four of the
// largest allowed, however many keyslots and keys there are.
func TestBudget(t *testing.T) {
	largest := kdf{typ: "pbkdf2", hash: "sha256", iterations: maxPBKDF2Work / 2}
	if c, why := largest.cost(64); c != 1024 || why != "" {
		t.Fatalf("largest PBKDF2: cost %d, %q", c, why)
	}
	if c, why := (&kdf{typ: "argon2id", time: 32, memory: maxArgonMemory, cpus: 4}).cost(64); c != 1024 || why != "" {
		t.Fatalf("largest argon2: cost %d, %q", c, why)
	}
	if maxTotalWork != 4*1024 {
		t.Fatalf("the budget is %d", maxTotalWork)
	}
	v := &volume{digest: digest{hash: "sha256", iterations: 1000, value: make([]byte, 32)}}
	ks := &keyslot{id: "7", keyBytes: 32, areaKey: 64, cipher: "aes-xts-plain64", afHash: "sha256", kdf: largest}
	mk, why := v.trySlot(bytes.NewReader(make([]byte, 1<<20)), ks, [][]byte{[]byte("k")}, &budget{left: 1000}, 1)
	if mk != nil || !strings.Contains(why, "taken all the work") {
		t.Fatalf("over budget: %q", why)
	}
}

func TestAFMergeRoundTrip(t *testing.T) {
	// AF-split by hand (LUKS1 spec, AFsplit) with known stripes; merge.
	for _, hn := range []string{"sha1", "sha256", "sha512"} {
		h := hashFunc(hn)
		key := []byte("0123456789abcdef0123456789abcdefXYZ")
		stripes := readFile(t, tooltest.Garbage(t, int64(len(key))*afStripes))
		d := make([]byte, len(key))
		for i := range afStripes - 1 {
			for j := range d {
				d[j] ^= stripes[i*len(key)+j]
			}
			diffuse(d, h)
		}
		last := stripes[(afStripes-1)*len(key):]
		for j := range d {
			last[j] = d[j] ^ key[j]
		}
		if got := afMerge(stripes, len(key), h); !bytes.Equal(got, key) {
			t.Errorf("%s: merged %x", hn, got)
		}
	}
}

// FuzzHeader parses LUKS1 and LUKS2 headers and their JSON: errors are
// fine, panics and unbounded work are not. Each input is read three
// ways: as the start of a device; as the JSON area of a LUKS2 header
// whose checksum is right (else mutations would rarely get past it);
// and, where every key derivation it asks for is tiny, with a key, so
// that keyslot areas, ciphers and the AF merge see hostile values too.
func FuzzHeader(f *testing.F) {
	for _, args := range [][]string{
		append([]string{"--type", "luks1"}, fastKDF["pbkdf2"]...),
		append([]string{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m"}, fastKDF["argon2id"]...),
	} {
		fx := format(f, 4<<20, args...)
		b := readFile(f, fx.path)
		f.Add(b[:min(len(b), 64<<10)])
		if fx.version == "2" {
			f.Add(b[4096 : bytes.IndexByte(b[4096:], 0)+4096])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		try := func(dev []byte) {
			r := &tooltest.SparseReader{B: dev, Size: 8 << 20}
			u, err := Detect(r, r.Size, nil, inner)
			tooltest.FuzzUsage(u, err)
			v, err := readHeader(r, r.Size)
			if err != nil {
				return
			}
			v.detail()
			for _, ks := range v.slots {
				if ks.kdf.iterations > 1000 || ks.kdf.time > 4 || ks.kdf.memory > 64 {
					return
				}
			}
			if v.digest.iterations <= 1000 {
				v.unlock(r, [][]byte{[]byte("k")})
			}
		}
		try(b)
		// b as the JSON area of a 16 KiB LUKS2 header.
		h := make([]byte, 16<<10)
		copy(h, magic1)
		binary.BigEndian.PutUint16(h[6:], 2)
		binary.BigEndian.PutUint64(h[8:], 16<<10)
		copy(h[72:], "sha256")
		copy(h[4096:len(h)-1], b)
		s := sha256.Sum256(h)
		copy(h[448:], s[:])
		try(h)
	})
}
