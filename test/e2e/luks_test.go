package e2e

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/image"
	"golang.org/x/crypto/xts"
)

// A LUKS volume made by cryptsetup (luksFormat works on a file; only
// opening needs device-mapper, which the tests do without): the test
// writes an ext4 into its payload itself, encrypted with the volume key
// cryptsetup reports, and judges restores with cryptsetup, e2fsck and
// debugfs.

// luksVol is a LUKS volume in a file and what cryptsetup says of it.
type luksVol struct {
	path       string // the volume (a partition's bytes)
	keyPath    string // a key file that opens keyslot 0
	passPath   string // a file holding the passphrase of keyslot 1
	version    int
	uuid       string
	cipher     string
	keyBits    int
	payloadOff int64
	sector     int64
	mk         []byte // the volume key
	plain      string // the ext4 written into the payload, in plaintext
	tree       string // what the ext4 holds
	marker     []byte // the contents of one file in it
}

// luksInfo is the part of info --json this test reads.
type luksInfo struct {
	ImageBytes int64    `json:"image_bytes"`
	Warnings   []string `json:"warnings"`
	Partitions []struct {
		Index      int    `json:"index"`
		Filesystem string `json:"filesystem"`
		Note       string `json:"note"`
		Detail     string `json:"detail"`
		UsedBytes  int64  `json:"used_bytes"`
		Size       int64  `json:"size"`
		Volumes    []struct {
			Name       string `json:"name"`
			Start      int64  `json:"start"`
			Size       int64  `json:"size"`
			Filesystem string `json:"filesystem"`
			UsedBytes  int64  `json:"used_bytes"`
			Note       string `json:"note"`
		} `json:"volumes"`
	} `json:"partitions"`
}

func luksInfoOf(t testing.TB, img string) luksInfo {
	t.Helper()
	var j luksInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	return j
}

// luksFormat makes a size-byte LUKS volume with a key file in keyslot 0
// and a passphrase in keyslot 1, and an ext4 over its whole payload.
// The KDFs are made cheap (--pbkdf-memory, --pbkdf-force-iterations):
// the tests are about the format, not the cost.
func luksFormat(t testing.TB, size int64, args ...string) *luksVol {
	t.Helper()
	dir := t.TempDir()
	v := &luksVol{path: filepath.Join(dir, "luks.img"), keyPath: filepath.Join(dir, "key"), passPath: filepath.Join(dir, "pass")}
	key := make([]byte, 256)
	rand.Read(key)
	mustWrite(t, v.keyPath, key)
	mustWrite(t, v.passPath, []byte("correct horse battery staple"))
	mustWrite(t, v.path, nil)
	if err := os.Truncate(v.path, size); err != nil {
		t.Fatal(err)
	}
	sh(t, "cryptsetup", append(append([]string{"luksFormat", "-q", "--key-file", v.keyPath}, args...), v.path)...)
	sh(t, "cryptsetup", "luksAddKey", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", v.keyPath, v.path, v.passPath)

	dump := sh(t, "cryptsetup", "luksDump", v.path)
	field := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(dump)
		if m == nil {
			t.Fatalf("luksDump has no %s:\n%s", re, dump)
		}
		return m[1]
	}
	v.version, _ = strconv.Atoi(field(`Version:\s+(\d)`))
	v.uuid = field(`UUID:\s+(\S+)`)
	if v.version == 1 {
		v.cipher = field(`Cipher name:\s+(\S+)`) + "-" + field(`Cipher mode:\s+(\S+)`)
		n, _ := strconv.ParseInt(field(`Payload offset:\s+(\d+)`), 10, 64)
		v.payloadOff, v.sector = n*512, 512
		v.keyBits, _ = strconv.Atoi(field(`MK bits:\s+(\d+)`))
	} else {
		v.cipher = field(`(?m)^\s+cipher:\s+(\S+)`)
		v.payloadOff, _ = strconv.ParseInt(field(`(?m)^\s+offset:\s+(\d+) \[bytes\]`), 10, 64)
		v.sector, _ = strconv.ParseInt(field(`(?m)^\s+sector:\s+(\d+) \[bytes\]`), 10, 64)
		v.keyBits, _ = strconv.Atoi(field(`(?m)^\s+Key:\s+(\d+) bits`))
	}
	v.mk = luksVolumeKey(t, v.path, v.keyPath)
	if v.cipher != "aes-xts-plain64" {
		t.Fatalf("the test encrypts with aes-xts-plain64 only, not %s", v.cipher)
	}

	// The tree: at least ten entries (sameTree), a marker whose
	// plaintext must never reach an image, and some megabytes.
	v.tree = filepath.Join(dir, "tree")
	v.marker = []byte(fmt.Sprintf("platter LUKS plaintext marker %x\n", key[:8]))
	os.MkdirAll(filepath.Join(v.tree, "docs", "deep"), 0o755)
	mustWrite(t, filepath.Join(v.tree, "marker.txt"), bytes.Repeat(v.marker, 100))
	for i := range 10 {
		b := make([]byte, 1000+i*97_000)
		rand.Read(b)
		mustWrite(t, filepath.Join(v.tree, "docs", fmt.Sprintf("f%d.bin", i)), b)
	}
	mustWrite(t, filepath.Join(v.tree, "docs", "deep", "text.txt"), bytes.Repeat([]byte("a line of text\n"), 5000))
	os.Symlink("docs/deep/text.txt", filepath.Join(v.tree, "link"))

	// The plaintext ext4, over random bytes (free blocks hold
	// something), encrypted into the payload with the volume key.
	n := (size - v.payloadOff) / v.sector * v.sector
	plain := make([]byte, n)
	rand.Read(plain)
	v.plain = filepath.Join(dir, "plain.ext4")
	mustWrite(t, v.plain, plain)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "4096", "-d", v.tree, v.plain)
	enc := luksCrypt(t, v.mk, readAll(t, v.plain), v.sector, true)
	writeAt(t, v.path, enc, v.payloadOff)
	sh(t, "e2fsck", "-fn", v.plain)
	return v
}

func mustWrite(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readAll(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// luksVolumeKey asks cryptsetup for the volume key (before 2.4 the option
// was --dump-master-key).
func luksVolumeKey(t testing.TB, path, keyPath string) []byte {
	t.Helper()
	opt := "--dump-volume-key"
	if out, _ := exec.Command("cryptsetup", "luksDump", "--help").CombinedOutput(); !bytes.Contains(out, []byte(opt)) {
		opt = "--dump-master-key"
	}
	out := sh(t, "cryptsetup", "luksDump", opt, "-q", "--key-file", keyPath, path)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no volume key in:\n%s", out)
	}
	mk, err := hex.DecodeString(strings.Join(strings.Fields(out[i+len("MK dump:"):]), ""))
	if err != nil {
		t.Fatal(err)
	}
	return mk
}

// luksCrypt is the test's own aes-xts-plain64, as dm-crypt does it: each
// sector one XTS unit, its IV the sector's number in 512-byte units from
// the payload's start (LUKS never counts IVs in larger sectors). The
// unit tests check it against cryptsetup's own encryption.
func luksCrypt(t testing.TB, mk, b []byte, sector int64, encrypt bool) []byte {
	t.Helper()
	c, err := xts.NewCipher(aes.NewCipher, mk)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(b))
	for off := int64(0); off < int64(len(b)); off += sector {
		if encrypt {
			c.Encrypt(out[off:off+sector], b[off:off+sector], uint64(off/512))
		} else {
			c.Decrypt(out[off:off+sector], b[off:off+sector], uint64(off/512))
		}
	}
	return out
}

// freeBlocks lists the blocks dumpe2fs says are free.
func freeBlocks(t testing.TB, ext4 string) map[int64]bool {
	t.Helper()
	free := map[int64]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+Free blocks: (.*)$`).FindAllStringSubmatch(sh(t, "dumpe2fs", ext4), -1) {
		for _, r := range strings.Split(m[1], ", ") {
			if r == "" {
				continue
			}
			a, b, isRange := strings.Cut(r, "-")
			lo, _ := strconv.ParseInt(a, 10, 64)
			hi := lo
			if isRange {
				hi, _ = strconv.ParseInt(b, 10, 64)
			}
			for k := lo; k <= hi; k++ {
				free[k] = true
			}
		}
	}
	if len(free) == 0 {
		t.Fatal("dumpe2fs lists no free blocks")
	}
	return free
}

// ext4Used is what dumpe2fs says the ext4 uses, in bytes.
func ext4Used(t testing.TB, ext4 string) int64 {
	h := sh(t, "dumpe2fs", "-h", ext4)
	get := func(k string) int64 {
		m := regexp.MustCompile(`(?m)^` + k + `:\s+(\d+)`).FindStringSubmatch(h)
		if m == nil {
			t.Fatalf("dumpe2fs -h has no %s", k)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	return (get("Block count") - get("Free blocks")) * get("Block size")
}

// luksSecrets fails the test if any needle appears in the decoded chunks
// of the image, its metadata, or the image file as it is.
func luksSecrets(t testing.TB, img string, needles map[string][]byte) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	r, err := image.NewReader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	meta, _ := json.Marshal(r.Metadata())
	hay := map[string][]byte{"metadata": meta, "image file": readAll(t, img)}
	buf := make([]byte, r.Metadata().ChunkSize)
	chunks := 0
	for _, e := range r.Entries() {
		if e.Zero() {
			continue
		}
		b, err := r.ReadChunk(e, buf)
		if err != nil {
			t.Fatal(err)
		}
		hay[fmt.Sprintf("chunk %d of area %d", e.Chunk, e.Area)] = bytes.Clone(b)
		chunks++
	}
	if chunks == 0 {
		t.Fatal("the image has no chunks to scan")
	}
	for where, b := range hay {
		for what, n := range needles {
			// Any 32 bytes of the needle: a part is a leak too.
			for i := 0; i < len(n); i += 32 {
				if bytes.Contains(b, n[i:min(i+32, len(n))]) {
					t.Errorf("%s holds %s (bytes %d-)", where, what, i)
					break
				}
			}
		}
	}
}

func TestLUKS2(t *testing.T) {
	dir := t.TempDir()
	// A laptop's disk: GPT, one LUKS2 partition (argon2id, 4096-byte
	// sectors as cryptsetup picks for a file) at 1 MiB.
	const partStart, partSize = 1 << 20, 56 << 20
	v := luksFormat(t, partSize, "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "16384",
		"--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", "--sector-size", "4096")
	if v.version != 2 || v.sector != 4096 {
		t.Fatalf("luksFormat made LUKS%d with %d-byte sectors", v.version, v.sector)
	}
	disk := filepath.Join(dir, "disk.img")
	mustWrite(t, disk, nil)
	os.Truncate(disk, partStart+partSize+1<<20)
	sh(t, "sgdisk", "-n", fmt.Sprintf("1:%d:+%d", partStart/512, partSize/512), "-t", "1:8309", disk)
	writeAt(t, disk, readAll(t, v.path), partStart)

	// No key: named and described, kept whole.
	nokey := filepath.Join(dir, "nokey.platter")
	ok(t, "create", disk, nokey)
	text := ok(t, "info", nokey)
	wantDetail := fmt.Sprintf("UUID %s, aes-xts-plain64, %d bits, keyslots 2 (argon2id, pbkdf2)", v.uuid, v.keyBits)
	if !strings.Contains(text, "Partition 1: luks2 "+wantDetail) || !strings.Contains(text, "locked: no key given") {
		t.Errorf("info without a key:\n%s", text)
	}
	j := luksInfoOf(t, nokey)
	if p := j.Partitions[0]; p.Filesystem != "luks2" || p.UsedBytes != partSize || len(j.Warnings) != 0 {
		t.Errorf("without a key: %+v, warnings %q", p, j.Warnings)
	}
	if j.ImageBytes < partSize-v.payloadOff {
		t.Errorf("without a key the image is %d bytes, less than the %d bytes of ciphertext", j.ImageBytes, partSize-v.payloadOff)
	}
	restored := filepath.Join(dir, "nokey.img")
	ok(t, "restore", nokey, restored)
	sameBytes(t, disk, restored, partStart, partSize, "the partition restored from an image made without a key")

	// The key: only the ciphertext of the ext4's used blocks.
	keyed := filepath.Join(dir, "key.platter")
	ok(t, "create", "--luks-key-file", v.keyPath, disk, keyed)
	j = luksInfoOf(t, keyed)
	p := j.Partitions[0]
	extUsed := ext4Used(t, v.plain)
	if p.Filesystem != "luks2" || p.Detail != wantDetail || len(j.Warnings) != 0 || len(p.Volumes) != 1 {
		t.Fatalf("with the key: %+v, warnings %q", p, j.Warnings)
	}
	if vol := p.Volumes[0]; vol.Filesystem != "ext4" || vol.UsedBytes != extUsed || vol.Start != v.payloadOff {
		t.Errorf("payload volume %+v; dumpe2fs says the ext4 uses %d bytes", vol, extUsed)
	}
	if p.UsedBytes != v.payloadOff+extUsed {
		t.Errorf("used bytes %d, want the header's %d and the ext4's %d", p.UsedBytes, v.payloadOff, extUsed)
	}
	// Everything before the payload is kept byte for byte: cryptsetup
	// fills the whole keyslots area (16 MiB by default) with random
	// bytes, which do not compress, nor does the ciphertext of the used
	// blocks.
	if j.ImageBytes > v.payloadOff+extUsed+1<<20 || j.ImageBytes*3 > 2*luksInfoOf(t, nokey).ImageBytes {
		t.Errorf("with the key the image is %d bytes; the header is %d, the ext4 uses %d", j.ImageBytes, v.payloadOff, extUsed)
	}
	t.Logf("image without a key %d bytes, with it %d; ext4 used %d of %d", luksInfoOf(t, nokey).ImageBytes, j.ImageBytes, extUsed, partSize-v.payloadOff)

	// The passphrase's keyslot opens it as well.
	pass := filepath.Join(dir, "pass.platter")
	ok(t, "create", "--luks-key-file", v.passPath, disk, pass)
	if jp := luksInfoOf(t, pass); jp.Partitions[0].UsedBytes != p.UsedBytes || len(jp.Warnings) != 0 {
		t.Errorf("with the passphrase: used %d, warnings %q", jp.Partitions[0].UsedBytes, jp.Warnings)
	}

	// A wrong key: said, and copied whole.
	wrong := filepath.Join(dir, "wrong")
	mustWrite(t, wrong, []byte("not the key"))
	wimg := filepath.Join(dir, "wrong.platter")
	_, stderr, code := run(t, "create", "--luks-key-file", wrong, disk, wimg)
	jw := luksInfoOf(t, wimg)
	if code != 0 || !strings.Contains(stderr, "no key opened it") || len(jw.Warnings) != 1 || !strings.Contains(jw.Warnings[0], "no key opened it") || jw.Partitions[0].UsedBytes != partSize {
		t.Errorf("wrong key: exit %d, stderr %q, warnings %q, used %d", code, stderr, jw.Warnings, jw.Partitions[0].UsedBytes)
	}

	// Restore: the same volume, opened by the same keys, holding the
	// same files; its free sectors fresh random bytes.
	out := filepath.Join(dir, "restored.img")
	ok(t, "restore", keyed, out)
	part := extract(t, out, sfdiskParts(t, out)[1])
	luksJudge(t, v, part)

	// Neither the image nor what a restore writes holds the key, the
	// passphrase, the volume key or plaintext.
	secrets := map[string][]byte{"the key file": readAll(t, v.keyPath), "the volume key": v.mk,
		"the marker's plaintext": v.marker, "the passphrase": readAll(t, v.passPath)}
	luksSecrets(t, keyed, secrets)
	luksSecrets(t, pass, secrets)
	luksSecrets(t, nokey, secrets)
	for what, n := range secrets {
		if bytes.Contains(readAll(t, out), n) {
			t.Errorf("the restored disk holds %s", what)
		}
	}
	f, _ := os.Open(keyed)
	st, _ := f.Stat()
	r, err := image.NewReader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range r.Metadata().Areas {
		if want := map[bool]string{true: image.FreeFillRandom}[a.Kind == image.KindPartition]; a.FreeFill != want {
			t.Errorf("%s: free_fill %q, want %q", a.Label(), a.FreeFill, want)
		}
	}
	r.Close()
	f.Close()
}

// luksJudge checks a restored volume against the source v: cryptsetup
// sees the same header and opens it with both keys; decrypted with the
// volume key it is a clean ext4 holding the tree; every used sector is
// the source's ciphertext and every free one fresh random bytes.
func luksJudge(t *testing.T, v *luksVol, part string) {
	t.Helper()
	dump := func(p string) string { return strings.ReplaceAll(sh(t, "cryptsetup", "luksDump", p), p, "VOLUME") }
	if a, b := dump(v.path), dump(part); a != b {
		t.Errorf("luksDump differs:\n%s\n---\n%s", a, b)
	}
	sameBytes(t, v.path, part, 0, v.payloadOff, "the LUKS headers and keyslot areas")
	sh(t, "cryptsetup", "open", "--test-passphrase", "--key-file", v.keyPath, part)
	sh(t, "bash", "-c", "cryptsetup open --test-passphrase "+part+" < "+v.passPath)
	if mk := luksVolumeKey(t, part, v.keyPath); !bytes.Equal(mk, v.mk) {
		t.Error("the restored volume's key differs")
	}

	src, got := readAll(t, v.path), readAll(t, part)
	n := int64(len(readAll(t, v.plain)))
	plain := luksCrypt(t, v.mk, got[v.payloadOff:v.payloadOff+n], v.sector, false)
	dec := filepath.Join(t.TempDir(), "decrypted.ext4")
	mustWrite(t, dec, plain)
	sh(t, "e2fsck", "-fn", dec)
	sameTree(t, v.tree, extTree(t, dec))

	free := freeBlocks(t, v.plain)
	const bs = 4096
	var nfree int
	for b := int64(0); b < n/bs; b++ {
		off := v.payloadOff + b*bs
		s, g := src[off:off+bs], got[off:off+bs]
		switch {
		case !free[b] && !bytes.Equal(s, g):
			t.Fatalf("used block %d: the restored ciphertext differs", b)
		case free[b] && (bytes.Equal(g, make([]byte, bs)) || bytes.Equal(g, s)):
			t.Fatalf("free block %d: restored as zeros or as the source's bytes, not fresh random bytes", b)
		case free[b]:
			nfree++
			// Random: about 16 zero bytes in 4096, never runs.
			if bytes.Count(g, []byte{0}) > 100 {
				t.Fatalf("free block %d does not look random", b)
			}
		}
	}
	if nfree == 0 {
		t.Fatal("no free block checked")
	}
}

func TestLUKS1(t *testing.T) {
	// A bare LUKS1 volume (table "none"), PBKDF2-SHA256, 512-byte sectors.
	v := luksFormat(t, 24<<20, "--type", "luks1", "--hash", "sha256", "--pbkdf-force-iterations", "1000")
	dir := t.TempDir()
	nokey, keyed := filepath.Join(dir, "nokey.platter"), filepath.Join(dir, "key.platter")
	ok(t, "create", v.path, nokey)
	if text := ok(t, "info", nokey); !strings.Contains(text, fmt.Sprintf("Partition 1: luks1 UUID %s, aes-xts-plain64, %d bits, keyslots 2 (pbkdf2)", v.uuid, v.keyBits)) {
		t.Errorf("info:\n%s", text)
	}
	ok(t, "create", "--luks-key-file", v.keyPath, v.path, keyed)
	j := luksInfoOf(t, keyed)
	extUsed := ext4Used(t, v.plain)
	if p := j.Partitions[0]; p.UsedBytes != v.payloadOff+extUsed || len(j.Warnings) != 0 || p.Volumes[0].Filesystem != "ext4" {
		t.Errorf("with the key: %+v, warnings %q; want %d bytes used", p, j.Warnings, v.payloadOff+extUsed)
	}
	if j.ImageBytes > v.payloadOff+extUsed+1<<20 || j.ImageBytes*3 > 2*luksInfoOf(t, nokey).ImageBytes {
		t.Errorf("with the key the image is %d bytes (without %d); the ext4 uses %d", j.ImageBytes, luksInfoOf(t, nokey).ImageBytes, extUsed)
	}
	out := filepath.Join(dir, "restored.img")
	ok(t, "restore", keyed, out)
	luksJudge(t, v, out)
	luksSecrets(t, keyed, map[string][]byte{"the key file": readAll(t, v.keyPath), "the volume key": v.mk, "the marker's plaintext": v.marker})
	if bytes.Contains(readAll(t, out), v.marker) {
		t.Error("the restored volume holds plaintext")
	}
}

// TestLUKSHostile: headers that ask for absurd work or lie about sizes
// are refused with the reason, the volume copied whole or raw, never a
// panic (run fails the test on one).
func TestLUKSHostile(t *testing.T) {
	v := luksFormat(t, 40<<20, "--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "8192",
		"--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1")
	base := readAll(t, v.path)
	const hdr = 16 << 10
	// edit rewrites both JSON copies and their checksums, as a writer
	// who knows the format would.
	edit := func(fn func(js string) string) []byte {
		b := bytes.Clone(base)
		for _, off := range []int{0, hdr} {
			area := b[off+4096 : off+hdr]
			js := fn(string(area[:bytes.IndexByte(area, 0)]))
			clear(area)
			copy(area, js)
			luksResum(b[off : off+hdr])
		}
		return b
	}
	sub := func(old, new string) func(string) string {
		return func(js string) string {
			if !strings.Contains(js, old) {
				t.Fatalf("no %q in the JSON", old)
			}
			return strings.Replace(js, old, new, 1)
		}
	}
	huge := bytes.Clone(base)
	for _, off := range []int{0, hdr} {
		binary.BigEndian.PutUint64(huge[off+8:], 1<<40) // hdr_size: a JSON area of a TiB
		luksResum(huge[off : off+hdr])
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
		raw  bool
	}{
		{"argon2 memory 4 GiB", edit(sub(`"memory":8192`, `"memory":4194304`)), "exceeds the 1 GiB", false},
		{"keyslot key_size 0", edit(sub(`"key_size":64,"af"`, `"key_size":0,"af"`)), "key size 0 bytes", false},
		{"JSON of a TiB", huge, "header size 1099511627776", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, img := filepath.Join(dir, "luks.img"), filepath.Join(dir, "x.platter")
			mustWrite(t, src, tc.b)
			_, stderr, code := run(t, "create", "--luks-key-file", v.keyPath, src, img)
			if code != 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			j := luksInfoOf(t, img)
			p := j.Partitions[0]
			switch {
			case tc.raw && (p.Filesystem != "raw" || !strings.Contains(p.Note, tc.want)):
				t.Errorf("%+v", p)
			case !tc.raw && (p.Filesystem != "luks2" || p.UsedBytes != int64(len(tc.b)) || !strings.Contains(j.Warnings[0], "no key opened it")):
				t.Errorf("%+v, warnings %q", p, j.Warnings)
			}
			out := filepath.Join(dir, "out.img")
			ok(t, "restore", img, out)
			if !bytes.Equal(readAll(t, out), tc.b) {
				t.Error("not restored byte for byte")
			}
		})
	}
}

// luksResum sets a LUKS2 header copy's SHA-256 checksum.
func luksResum(h []byte) {
	clear(h[448 : 448+64])
	s := sha256.Sum256(h)
	copy(h[448:], s[:])
}

// TestLUKSPassphrase: --luks-passphrase asks on the terminal, and the
// passphrase typed there opens the volume as a key file does: only the
// ciphertext of the ext4's used blocks is stored, and the restore opens
// with the same passphrase. A wrong one opens nothing: the volume is
// copied whole, with a warning that says so. Without a terminal the
// flag is a usage mistake.
func TestLUKSPassphrase(t *testing.T) {
	const size = 40 << 20
	v := luksFormat(t, size, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
	pass := string(readAll(t, v.passPath))
	dir := t.TempDir()
	img := filepath.Join(dir, "typed.platter")
	shown, code := runTTY(t, []answer{{"LUKS passphrase: ", pass}}, "create", "--progress", "none", "--luks-passphrase", v.path, img)
	if code != 0 {
		t.Fatalf("create --luks-passphrase: exit %d\n%s", code, shown)
	}
	if strings.Contains(shown, pass) {
		t.Errorf("the passphrase was echoed:\n%s", shown)
	}
	j := luksInfoOf(t, img)
	extUsed := ext4Used(t, v.plain)
	if p := j.Partitions[0]; p.UsedBytes != v.payloadOff+extUsed || len(j.Warnings) != 0 || p.Volumes[0].Filesystem != "ext4" {
		t.Errorf("with the typed passphrase: %+v, warnings %q; want %d bytes used", p, j.Warnings, v.payloadOff+extUsed)
	}
	out := filepath.Join(dir, "restored.img")
	ok(t, "restore", img, out)
	luksJudge(t, v, out)
	luksSecrets(t, img, map[string][]byte{"the passphrase": []byte(pass), "the volume key": v.mk, "the marker's plaintext": v.marker})

	wrong := filepath.Join(dir, "wrong.platter")
	shown, code = runTTY(t, []answer{{"LUKS passphrase: ", "not the passphrase"}}, "create", "--progress", "none", "--luks-passphrase", v.path, wrong)
	if code != 0 || !strings.Contains(shown, "no key opened it") {
		t.Errorf("a wrong passphrase: exit %d, want 0 and a warning that no key opened it:\n%s", code, shown)
	}
	if p := luksInfoOf(t, wrong).Partitions[0]; p.UsedBytes != size {
		t.Errorf("a wrong passphrase: %d bytes used, want the whole volume (%d)", p.UsedBytes, size)
	}

	if _, errOut, code := run(t, "create", "--luks-passphrase", v.path, filepath.Join(dir, "notty.platter")); code != 2 || !strings.Contains(errOut, "--luks-key-file") {
		t.Errorf("--luks-passphrase without a terminal: exit %d, want 2 and advice to use --luks-key-file:\n%s", code, errOut)
	}
}
