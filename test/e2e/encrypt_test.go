package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// cheapKDF makes Argon2id take milliseconds: every test but
// TestEncryptDefaults uses it.
const cheapKDF = "1,1024,1"

// encDisk is a GPT disk with one ext4 partition whose files, names,
// label and GUIDs are distinctive, so a test can look for them in an
// image.
type encDisk struct {
	path, tree string
	names      []string // file names, each at least 16 bytes
	label      string
	uuids      []string // partition GUID, disk GUID, filesystem UUID
}

func newEncDisk(t *testing.T) encDisk {
	t.Helper()
	dir := t.TempDir()
	d := encDisk{path: filepath.Join(dir, "disk.img"), tree: filepath.Join(dir, "tree"), label: "ZEBRAORCHIDLABEL"}
	os.MkdirAll(filepath.Join(d.tree, "quartermaster-ledgers"), 0o755)
	for i := range 12 {
		name := fmt.Sprintf("zebra-orchid-manifest-%04d.txt", i)
		var b strings.Builder
		for n := range 1500 {
			fmt.Fprintf(&b, "confidential ledger %d line %d: account %x owes %d marks\n", i, n, i*7919+n*104729, n*n+i)
		}
		p := filepath.Join(d.tree, name)
		if i%3 == 0 {
			p = filepath.Join(d.tree, "quartermaster-ledgers", name)
		}
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		d.names = append(d.names, name)
	}
	random := make([]byte, 256<<10)
	rand.Read(random)
	os.WriteFile(filepath.Join(d.tree, "nightingale-keystore.bin"), random, 0o600)
	d.names = append(d.names, "nightingale-keystore.bin", "quartermaster-ledgers")
	fsUUID := "5eca1e7a-0bad-4c0f-9e11-a7c0ffee0042"
	d.uuids = []string{"7a3b1c2d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "c0ffee00-1234-4abc-9def-0123456789ab", fsUUID}
	sparseFile(t, d.path, 64<<20)
	sfdisk := fmt.Sprintf("label: gpt\nlabel-id: %s\nstart=2048, size=98304, type=L, uuid=%s, name=\"vault\"\n", d.uuids[1], d.uuids[0])
	cmd := exec.Command("sfdisk", "-q", d.path)
	cmd.Stdin = strings.NewReader(sfdisk)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-L", d.label, "-U", fsUUID, "-d", d.tree, "-E", "offset=1048576,nodiscard", d.path, "48M")
	return d
}

// secrets of the tests: a passphrase file, and an identity with its
// public key.
type encKeys struct{ pass, identity, recipient string }

func newEncKeys(t *testing.T, pass string) encKeys {
	dir := t.TempDir()
	k := encKeys{pass: filepath.Join(dir, "pass"), identity: filepath.Join(dir, "id.key")}
	os.WriteFile(k.pass, []byte(pass+"\n"), 0o600)
	k.recipient = strings.TrimSpace(ok(t, "keygen", "-o", k.identity))
	return k
}

func (k encKeys) pw() []string { return []string{"--password-file", k.pass} }
func (k encKeys) id() []string { return []string{"--identity", k.identity} }

// encCreate makes an encrypted image of src (extra: --recipient,
// --incremental ...), with the passphrase unless extra says otherwise.
func encCreate(t *testing.T, k encKeys, src, img string, extra ...string) {
	t.Helper()
	ok(t, append(append([]string{"create", "--progress", "none", "--test-kdf", cheapKDF}, extra...), src, img)...)
}

func encInfo(t *testing.T, img string, secret ...string) map[string]any {
	t.Helper()
	var j map[string]any
	if err := json.Unmarshal([]byte(ok(t, append(append([]string{"info", "--json"}, secret...), img)...)), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// restoredTree restores img to a file and returns its partition 1's
// files, after e2fsck -fn finds the filesystem clean.
func restoredTree(t *testing.T, img string, secret ...string) string {
	t.Helper()
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, append(append([]string{"restore", "--yes", "--progress", "none"}, secret...), img, back)...)
	p := sfdiskParts(t, back)[1]
	part := extract(t, back, p)
	sh(t, "e2fsck", "-fn", part)
	return extTree(t, part)
}

// An encrypted image of an ext4 disk restores byte for byte (e2fsck
// clean, every file the same), verifies, and its files list, extract and
// mount with the passphrase and with an identity; without them, or with
// wrong ones, nothing opens and the answer says why (exit 1).
func TestEncryptRoundTrip(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "correct horse battery staple")
	other := newEncKeys(t, "another passphrase")
	dir := t.TempDir()
	both := filepath.Join(dir, "both.platter")
	encCreate(t, k, d.path, both, append(k.pw(), "--encrypt", "--recipient", k.recipient)...)
	rcpt := filepath.Join(dir, "recipient.platter")
	encCreate(t, k, d.path, rcpt, "--recipient", k.recipient) // no passphrase at all

	for name, c := range map[string]struct {
		img    string
		secret []string
	}{
		"passphrase":           {both, k.pw()},
		"identity":             {both, k.id()},
		"identity, recipients": {rcpt, k.id()},
	} {
		t.Run(name, func(t *testing.T) {
			sameTree(t, d.tree, restoredTree(t, c.img, c.secret...))
			out := ok(t, append(append([]string{"verify"}, c.secret...), c.img)...)
			if !strings.Contains(out, "OK") {
				t.Errorf("verify: %s", out)
			}
			ls := ok(t, append(append([]string{"ls"}, c.secret...), c.img+":1")...)
			if !strings.Contains(ls, d.names[1]) || !strings.Contains(ls, "quartermaster-ledgers") {
				t.Errorf("ls: %s", ls)
			}
			dest := filepath.Join(t.TempDir(), "out")
			ok(t, append(append([]string{"extract"}, c.secret...), c.img+":1", "/", dest)...)
			os.RemoveAll(filepath.Join(dest, "lost+found"))
			sameTree(t, d.tree, dest)

			mnt := t.TempDir()
			ok(t, append(append([]string{"mount", "--daemon", "--files"}, c.secret...), c.img+":1", mnt)...)
			t.Cleanup(func() { tooltest.Umount(t, mnt) })
			got, err := os.ReadFile(filepath.Join(mnt, d.names[1]))
			want, _ := os.ReadFile(filepath.Join(d.tree, d.names[1]))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("mounted %s: %v, %d bytes, want %d", d.names[1], err, len(got), len(want))
			}
			tooltest.Umount(t, mnt)
		})
	}

	j := encInfo(t, both, k.pw()...)
	enc, _ := j["encryption"].(map[string]any)
	if enc == nil || !strings.Contains(fmt.Sprint(enc["passphrase"]), "argon2id") || fmt.Sprint(enc["recipients"]) != "["+k.recipient+"]" {
		t.Errorf("info --json encryption: %v", j["encryption"])
	}

	for _, c := range []struct {
		img    string
		secret []string
		want   string
	}{
		{both, other.pw(), "wrong passphrase"},
		{both, other.id(), "no identity matches"},
		{rcpt, other.id(), "no identity matches"},
		{rcpt, k.pw(), "encrypted to recipients: give an identity"},
		{both, nil, "the image is encrypted"},
	} {
		for _, op := range [][]string{{"info"}, {"verify"}, {"ls"}, {"restore", "--yes"}} {
			args := append(append(append([]string{}, op...), c.secret...), c.img)
			if op[0] == "restore" {
				args = append(args, filepath.Join(t.TempDir(), "x.img"))
			}
			if op[0] == "ls" {
				args[len(args)-1] += ":1"
			}
			_, stderr, code := run(t, args...)
			if code != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("%s with %v: exit %d, %q; want exit 1 and %q", op[0], c.secret, code, stderr, c.want)
			}
		}
	}
	// A plain image ignores the secrets given.
	plain := filepath.Join(dir, "plain.platter")
	ok(t, "create", "--progress", "none", d.path, plain)
	ok(t, append([]string{"verify"}, append(other.pw(), plain)...)...)
	if j := encInfo(t, plain); j["encryption"] != nil {
		t.Errorf("a plain image says it is encrypted: %v", j["encryption"])
	}
}

// windows is a set of every 16-byte run of some bytes, by a hash (false
// positives are checked against the bytes).
type windows struct {
	set  map[uint64]bool
	text [][]byte
}

func windowKey(w []byte) uint64 {
	return binary.LittleEndian.Uint64(w) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(w[8:]), 29)*0x9e3779b97f4a7c15
}

func (s *windows) add(b []byte) {
	for i := 0; i+16 <= len(b); i++ {
		s.set[windowKey(b[i:i+16])] = true
	}
	s.text = append(s.text, b)
}

// found returns a 16-byte run of img that is one of the set's, or nil.
func (s *windows) found(img []byte) []byte {
	for i := 0; i+16 <= len(img); i++ {
		w := img[i : i+16]
		if !s.set[windowKey(w)] {
			continue
		}
		for _, t := range s.text {
			if bytes.Contains(t, w) {
				return w
			}
		}
	}
	return nil
}

// guidBytes is a GUID as GPT and ext4 store it: GPT mixed-endian, ext4
// in text order.
func guidBytes(s string) (gpt, plain []byte) {
	plain, _ = hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	gpt = bytes.Clone(plain)
	for _, r := range [][2]int{{0, 4}, {4, 6}, {6, 8}} {
		for i, j := r[0], r[1]-1; i < j; i, j = i+1, j-1 {
			gpt[i], gpt[j] = gpt[j], gpt[i]
		}
	}
	return gpt, plain
}

// No 16-byte run of any file's contents or name, of the label, or of the
// partition, disk and filesystem GUIDs (as stored and as text) is in the
// encrypted image; the plain image of the same disk holds them (so the
// search would find them).
func TestEncryptHidesPlaintext(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "correct horse battery staple")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	encCreate(t, k, d.path, img, append(k.pw(), "--encrypt", "--recipient", k.recipient)...)
	plainImg := filepath.Join(dir, "plain.platter")
	ok(t, "create", "--progress", "none", "--compress", "none", d.path, plainImg)

	s := &windows{set: map[uint64]bool{}}
	filepath.Walk(d.tree, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s.add(b)
		}
		return nil
	})
	secrets := map[string][]byte{"label": []byte(d.label)}
	for _, n := range d.names {
		secrets["name "+n] = []byte(n)
	}
	for _, u := range d.uuids {
		gpt, plain := guidBytes(u)
		secrets["guid "+u+" (GPT)"], secrets["guid "+u] = gpt, plain
		secrets["guid text "+u], secrets["GUID text "+u] = []byte(u), []byte(strings.ToUpper(u))
	}
	for what, b := range secrets {
		if len(b) < 16 {
			t.Fatalf("%s is %d bytes: the test looks for 16-byte runs", what, len(b))
		}
		s.add(b)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if w := s.found(b); w != nil {
		t.Fatalf("the encrypted image holds %q", w)
	}
	pb, _ := os.ReadFile(plainImg)
	for what, v := range map[string][]byte{"a file name": []byte(d.names[1]), "the label": []byte(d.label), "a line": []byte("confidential ledger 3 line 7")} {
		if !bytes.Contains(pb, v) {
			t.Errorf("the plain image does not hold %s: the search proves nothing", what)
		}
	}
	// The header shows no time: it is in the sealed metadata.
	if !bytes.Equal(b[32:40], make([]byte, 8)) || b[12]&1 != 1 {
		t.Errorf("header: time %x, flags %x", b[32:40], b[12:16])
	}
	t.Logf("%d bytes of image searched for %d secrets and the 16-byte runs of %d files", len(b), len(secrets), len(s.text)-len(secrets))
}

// chunkJSON is a chunk as info --json --chunks lists it.
type encChunk struct {
	Partition   int   `json:"partition"`
	Offset      int64 `json:"offset"`
	Length      int64 `json:"length"`
	FrameOffset int64 `json:"frame_offset"`
	FrameSize   int64 `json:"frame_size"`
	Zero        bool  `json:"zero"`
}

func encChunks(t *testing.T, img string, secret []string) []encChunk {
	var j struct {
		Chunks []encChunk `json:"chunks"`
	}
	out := ok(t, append(append([]string{"info", "--json", "--chunks"}, secret...), img)...)
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatal(err)
	}
	var frames []encChunk
	for _, c := range j.Chunks {
		if !c.Zero && c.FrameOffset > 0 {
			frames = append(frames, c)
		}
	}
	return frames
}

// Single-bit flips across the key slots (both copies), the layout block,
// frames, index, maps, metadata and footer are all detected: verify
// exits 3, and a restore of a flipped frame fails; never exit 0.
func TestEncryptBitFlips(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "correct horse battery staple")
	img := filepath.Join(t.TempDir(), "disk.platter")
	encCreate(t, k, d.path, img, append(k.pw(), "--encrypt")...)
	b, _ := os.ReadFile(img)
	size := int64(len(b))
	le := binary.LittleEndian
	foot := b[size-96:]
	indexOff, mapsOff, metaOff := int64(le.Uint64(foot[32:])), int64(le.Uint64(foot[48:])), int64(le.Uint64(foot[64:]))
	const slots, copySize = 64, 16 << 10
	layout := int64(slots + 2*copySize)
	layoutEnd := layout + 32 + int64(le.Uint64(b[layout+8:]))
	frames := encChunks(t, img, k.pw())
	if len(frames) < 3 {
		t.Fatalf("%d frames", len(frames))
	}
	if frames[0].FrameOffset != layoutEnd {
		t.Fatalf("the first frame is at %d, the layout block ends at %d", frames[0].FrameOffset, layoutEnd)
	}
	offs := map[string]int64{
		"header version": 8, "header id": 20,
		"slot A marker": slots + 1, "slot A generation": slots + 8, "slot A passphrase salt": slots + 64 + 4 + 14,
		"slot A wrapped key": slots + 64 + 4 + 60, "slot A padding": slots + 9000, "slot A checksum": slots + copySize - 3,
		"slot B passphrase params": slots + copySize + 64 + 5, "slot B wrapped key": slots + copySize + 64 + 4 + 80, "slot B checksum": slots + 2*copySize - 1,
		"layout marker": layout + 2, "layout length": layout + 9, "layout nonce": layout + 20, "layout body": layout + 40, "layout tag": layoutEnd - 2,
		"index header": indexOff + 5, "index body": indexOff + 50, "index end": mapsOff - 1,
		"maps header": mapsOff + 12, "maps body": (mapsOff + metaOff) / 2,
		"metadata header": metaOff + 30, "metadata body": metaOff + 70, "metadata end": size - 97,
		"footer magic": size - 93, "footer flags": size - 84, "footer index offset": size - 96 + 33, "footer entries": size - 96 + 81, "footer crc": size - 2,
	}
	for i, f := range []encChunk{frames[0], frames[len(frames)/2], frames[len(frames)-1]} {
		for what, o := range map[string]int64{"marker": 1, "length": 5, "nonce": 15, "sealed header": 40, "payload": f.FrameSize / 2, "tag": f.FrameSize - 1} {
			offs[fmt.Sprintf("frame %d %s", i, what)] = f.FrameOffset + o
		}
	}
	flipped := filepath.Join(t.TempDir(), "flipped.platter")
	for what, off := range offs {
		c := bytes.Clone(b)
		c[off] ^= 1 << (off % 8)
		if err := os.WriteFile(flipped, c, 0o600); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := run(t, append(append([]string{"verify", "--progress", "none"}, k.pw()...), flipped)...)
		if code != 3 {
			t.Errorf("%s (byte %d) flipped: verify exit %d\n%s%s", what, off, code, out, stderr)
			continue
		}
		if strings.HasPrefix(what, "frame 1 payload") {
			target := filepath.Join(t.TempDir(), "back.img")
			if _, stderr, code := run(t, append(append([]string{"restore", "--yes", "--progress", "none"}, k.pw()...), flipped, target)...); code != 3 {
				t.Errorf("restore of an image with a flipped frame: exit %d, %s", code, stderr)
			}
		}
	}
	t.Logf("%d flips, each detected", len(offs))
}

// A frame copied from another image made with the same passphrase (same
// disk, same place in the file) or moved within the image is rejected,
// and the error names the chunk.
func TestEncryptFrameSwap(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "correct horse battery staple")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.platter"), filepath.Join(dir, "b.platter")
	encCreate(t, k, d.path, a, append(k.pw(), "--encrypt")...)
	encCreate(t, k, d.path, b, append(k.pw(), "--encrypt")...)
	fa, fb := encChunks(t, a, k.pw()), encChunks(t, b, k.pw())
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	var swap *encChunk
	for i := range fa {
		if i < len(fb) && fa[i] == fb[i] && fa[i].FrameSize > 1000 {
			swap = &fa[i]
			break
		}
	}
	if swap == nil {
		t.Fatal("no frame at the same place in both images")
	}
	where := regexp.MustCompile(fmt.Sprintf(`partition %d, bytes %d-%d`, swap.Partition, swap.Offset, swap.Offset+swap.Length-1))
	check := func(what string, img []byte, why string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "swapped.platter")
		os.WriteFile(p, img, 0o600)
		out, stderr, code := run(t, append(append([]string{"verify", "--progress", "none"}, k.pw()...), p)...)
		if code != 3 || !where.MatchString(out+stderr) || !strings.Contains(out+stderr, why) {
			t.Errorf("%s: verify exit %d, want 3 naming %s and %q:\n%s%s", what, code, where, why, out, stderr)
		}
	}
	c := bytes.Clone(ab)
	copy(c[swap.FrameOffset:swap.FrameOffset+swap.FrameSize], bb[swap.FrameOffset:])
	check("a frame of another image", c, "fails authentication")

	// Within the image: another frame's bytes moved to this one's place.
	// (A frame of another length is caught by its length first.)
	for _, o := range fa {
		if o.FrameOffset != swap.FrameOffset && o.FrameSize >= swap.FrameSize {
			c := bytes.Clone(ab)
			copy(c[swap.FrameOffset:swap.FrameOffset+swap.FrameSize], ab[o.FrameOffset:])
			why := "fails authentication"
			if o.FrameSize != swap.FrameSize {
				why = "sealed frame length"
			}
			check("a frame moved within the image", c, why)
			break
		}
	}
}

// passwd changes the passphrase in place (the old one no longer opens
// the image, the new one does, and no byte outside the key slots
// changes), adds a recipient and removes it.
func TestEncryptPasswd(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "correct horse battery staple")
	nk := newEncKeys(t, "a new passphrase")
	img := filepath.Join(t.TempDir(), "disk.platter")
	encCreate(t, k, d.path, img, append(k.pw(), "--encrypt")...)
	before, _ := os.ReadFile(img)

	ok(t, append(append([]string{"passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), img)...)
	after, _ := os.ReadFile(img)
	const slotsEnd = 64 + 2*16<<10
	if len(after) != len(before) || !bytes.Equal(after[:64], before[:64]) || !bytes.Equal(after[slotsEnd:], before[slotsEnd:]) {
		t.Fatal("passwd changed bytes outside the key slots")
	}
	if bytes.Equal(after[64:slotsEnd], before[64:slotsEnd]) {
		t.Fatal("passwd changed nothing")
	}
	if _, stderr, code := run(t, append([]string{"verify"}, append(k.pw(), img)...)...); code != 1 || !strings.Contains(stderr, "wrong passphrase") {
		t.Errorf("the old passphrase: exit %d, %s", code, stderr)
	}
	ok(t, append([]string{"verify"}, append(nk.pw(), img)...)...)

	ok(t, append([]string{"passwd", "--add-recipient", k.recipient}, append(nk.pw(), img)...)...)
	sameTree(t, d.tree, restoredTree(t, img, k.id()...))
	if out := ok(t, append([]string{"info"}, append(k.id(), img)...)...); !strings.Contains(out, "recipient "+k.recipient) {
		t.Errorf("info after --add-recipient: %s", out)
	}
	ok(t, append([]string{"passwd", "--remove-recipient", k.recipient}, append(k.id(), img)...)...)
	if _, stderr, code := run(t, append([]string{"info"}, append(k.id(), img)...)...); code != 1 || !strings.Contains(stderr, "no identity matches") {
		t.Errorf("the removed recipient: exit %d, %s", code, stderr)
	}
	ok(t, append([]string{"verify"}, append(nk.pw(), img)...)...)
	final, _ := os.ReadFile(img)
	if !bytes.Equal(final[slotsEnd:], before[slotsEnd:]) {
		t.Fatal("the data changed")
	}
}

// An encrypted chain: incrementals of an encrypted image are encrypted
// with the same passphrase without being asked, restore to their files,
// and stay encrypted through consolidate and prune; an incremental with
// other secrets, or an encrypted one of a plain parent, is refused.
func TestEncryptIncremental(t *testing.T) {
	fs := newIncFS(t)
	k := newEncKeys(t, "correct horse battery staple")
	set := t.TempDir()
	dates := []string{"2026-01-01T09:00:00Z", "2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"}
	var imgs, trees []string
	for i, at := range dates {
		img := filepath.Join(set, fmt.Sprintf("img%d.platter", i))
		args := append(k.pw(), "--test-created", at)
		if i == 0 {
			args = append(args, "--encrypt")
		} else {
			fs.change(func(root string) {
				writeRandom(t, filepath.Join(root, fmt.Sprintf("new%d", i)), 1<<20)
				overwrite(t, filepath.Join(root, "dir", "big"), int64(i)<<20, 1<<20)
			})
			args = append(args, "--incremental", imgs[i-1])
		}
		encCreate(t, k, fs.file, img, args...)
		imgs, trees = append(imgs, img), append(trees, fs.keep())
	}
	for i, img := range imgs {
		j := encInfo(t, img, k.pw()...)
		if j["encryption"] == nil || (i > 0) != (j["type"] == "incremental") {
			t.Fatalf("%s: type %v, encryption %v", img, j["type"], j["encryption"])
		}
	}
	ok(t, append([]string{"verify"}, append(k.pw(), imgs[3])...)...)
	checkRestores(t, imgs[2], trees[2], k.pw()...)

	if _, stderr, code := run(t, append(append([]string{"create", "--progress", "none", "--recipient", k.recipient, "--incremental", imgs[3]}, k.pw()...), fs.file, filepath.Join(t.TempDir(), "x.platter"))...); code != 2 || !strings.Contains(stderr, "encrypted as its parent") {
		t.Errorf("an incremental with another recipient: exit %d, %s", code, stderr)
	}
	plain := filepath.Join(t.TempDir(), "plain.platter")
	ok(t, "create", "--progress", "none", fs.file, plain)
	if _, stderr, code := run(t, append(append([]string{"create", "--progress", "none", "--encrypt", "--incremental", plain}, k.pw()...), fs.file, filepath.Join(t.TempDir(), "x.platter"))...); code != 2 || !strings.Contains(stderr, "not encrypted") {
		t.Errorf("an encrypted incremental of a plain image: exit %d, %s", code, stderr)
	}

	out := ok(t, append([]string{"consolidate"}, append(k.pw(), imgs[1])...)...)
	if !strings.Contains(out, "a full image now") {
		t.Errorf("consolidate: %s", out)
	}
	if readAt(t, imgs[1], 16, 0)[12]&1 == 0 {
		t.Errorf("%s is not encrypted after consolidate", imgs[1])
	}
	checkRestores(t, imgs[1], trees[1], k.pw()...)
	checkRestores(t, imgs[3], trees[3], k.pw()...)

	ok(t, append([]string{"prune", "--keep-last", "1"}, append(k.pw(), set)...)...)
	left, _ := filepath.Glob(filepath.Join(set, "*.platter"))
	if len(left) != 1 || left[0] != imgs[3] {
		t.Fatalf("prune left %v", left)
	}
	j := encInfo(t, imgs[3], k.pw()...)
	if j["type"] != "full" || j["encryption"] == nil {
		t.Fatalf("pruned: type %v, encryption %v", j["type"], j["encryption"])
	}
	ok(t, append([]string{"verify"}, append(k.pw(), imgs[3])...)...)
	checkRestores(t, imgs[3], trees[3], k.pw()...)
	if readAt(t, imgs[3], 16, 0)[12]&1 == 0 {
		t.Errorf("%s is not encrypted after prune", imgs[3])
	}
}

// keygen writes an identity file only its owner reads and prints its
// public key; it never overwrites one.
func TestEncryptKeygen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "id.key")
	pub := strings.TrimSpace(ok(t, "keygen", "-o", p))
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, mode %v", err, st.Mode())
	}
	b, _ := os.ReadFile(p)
	if !regexp.MustCompile(`^age1[0-9a-z]{58}$`).MatchString(pub) || !strings.Contains(string(b), "AGE-SECRET-KEY-1") || !strings.Contains(string(b), pub) {
		t.Fatalf("public key %q, file:\n%s", pub, b)
	}
	if _, stderr, code := run(t, "keygen", "-o", p); code != 2 || !strings.Contains(stderr, "exists") {
		t.Errorf("keygen over an identity: exit %d, %s", code, stderr)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(after, b) {
		t.Error("keygen changed an existing identity")
	}
}

// The default Argon2id parameters (256 MiB) round-trip: the only test
// that pays for them.
func TestEncryptDefaults(t *testing.T) {
	k := newEncKeys(t, "correct horse battery staple")
	src := filepath.Join(t.TempDir(), "fs.img")
	sparseFile(t, src, 16<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", src)
	img := filepath.Join(t.TempDir(), "fs.platter")
	ok(t, append([]string{"create", "--progress", "none", "--encrypt"}, append(k.pw(), src, img)...)...)
	out := ok(t, append([]string{"info"}, append(k.pw(), img)...)...)
	if !strings.Contains(out, "argon2id t=2 m=256MiB p=4") {
		t.Errorf("info: %s", out)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, append([]string{"restore", "--yes", "--progress", "none"}, append(k.pw(), img, back)...)...)
	sh(t, "e2fsck", "-fn", back)
	sameBytes(t, src, back, 0, 16<<20, "restored filesystem")
}

// On a terminal, with nothing else given, the passphrase is asked: twice
// when an image is made (and they must match), once to read it; a
// mount --daemon asked on the terminal passes it to its child.
func TestEncryptPrompt(t *testing.T) {
	d := newEncDisk(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	create := []string{"create", "--progress", "none", "--encrypt", "--test-kdf", cheapKDF, d.path, img}
	if shown, code := runTTY(t, []answer{{"New passphrase:", "first"}, {"Repeat passphrase:", "second"}}, create...); code != 1 || !strings.Contains(shown, "differ") {
		t.Fatalf("create with two different passphrases: exit %d, %s", code, shown)
	}
	if shown, code := runTTY(t, []answer{{"New passphrase:", "typed secret"}, {"Repeat passphrase:", "typed secret"}}, create...); code != 0 || strings.Contains(shown, "typed secret") {
		t.Fatalf("create asked on the terminal: exit %d, %s", code, shown)
	}
	if shown, code := runTTY(t, []answer{{"Passphrase:", "typed secret"}}, "verify", img); code != 0 || !strings.Contains(shown, "OK") {
		t.Fatalf("verify with the passphrase typed: exit %d, %s", code, shown)
	}
	if shown, code := runTTY(t, []answer{{"Passphrase:", "nope"}}, "verify", img); code != 1 || !strings.Contains(shown, "wrong passphrase") {
		t.Fatalf("verify with a wrong passphrase typed: exit %d, %s", code, shown)
	}
	// Not asked without a terminal: the error says how to give it.
	if _, stderr, code := run(t, "verify", img); code != 1 || !strings.Contains(stderr, "--password-file") || strings.Contains(stderr, "Passphrase:") {
		t.Fatalf("verify without a terminal: exit %d, %s", code, stderr)
	}
	mnt := t.TempDir()
	if shown, code := runTTY(t, []answer{{"Passphrase:", "typed secret"}}, "mount", "--daemon", "--files", img+":1", mnt); code != 0 {
		t.Fatalf("mount --daemon with the passphrase typed: exit %d, %s", code, shown)
	}
	defer tooltest.Umount(t, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, d.names[1]))
	want, _ := os.ReadFile(filepath.Join(d.tree, d.names[1]))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("a file of the mount: %v", err)
	}
}

// list shows an encrypted image that nothing given opens as locked, not
// damaged, with its id, size and what would open it; given its
// passphrase or identity, it is listed by disk like any image. A child
// whose parent stays locked says so; a damaged image is still damaged.
// prune changes nothing while an image is locked, and says why.
func TestListEncrypted(t *testing.T) {
	d := newEncDisk(t)
	k := newEncKeys(t, "list secret")
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name+".platter") }
	ok(t, "create", "--progress", "none", d.path, path("plain"))
	encCreate(t, k, d.path, path("enc"), append(k.pw(), "--encrypt")...)
	encCreate(t, k, d.path, path("enc-inc"), append(k.pw(), "--incremental", path("enc"))...)
	encCreate(t, k, d.path, path("age"), "--recipient", k.recipient)
	sh(t, "cp", path("plain"), path("cut"))
	sh(t, "truncate", "-s", "-100", path("cut"))
	ids := map[string]string{}
	for _, name := range []string{"plain", "enc", "enc-inc", "age"} {
		ids[name] = info(t, path(name), append(k.pw(), k.id()...)...).ID
	}
	names := func(ims []listImg) string {
		var n []string
		for _, im := range ims {
			n = append(n, strings.TrimSuffix(filepath.Base(im.File), ".platter"))
		}
		sort.Strings(n)
		return strings.Join(n, " ")
	}
	inSets := func(doc listDoc) string {
		var all []listImg
		for _, s := range doc.Sets {
			all = append(all, s.Images...)
		}
		return names(all)
	}

	// Nothing given: three locked, one damaged, one restores.
	out, stderr, code := run(t, "list", dir)
	if code != 0 {
		t.Fatalf("list: exit %d\n%s", code, stderr)
	}
	t.Logf("platter list without secrets:\n%s", out)
	fits(t, "list", out)
	doc := listJSON(t, dir)
	if names(doc.Locked) != "age enc enc-inc" || names(doc.Damaged) != "cut" || inSets(doc) != "plain" {
		t.Fatalf("without secrets: locked %q, damaged %q, sets %q", names(doc.Locked), names(doc.Damaged), inSets(doc))
	}
	for _, im := range doc.Locked {
		name := strings.TrimSuffix(filepath.Base(im.File), ".platter")
		st, err := os.Stat(im.File)
		if err != nil || im.ID != ids[name] || im.Size != st.Size() || im.Restores || !strings.HasPrefix(im.Problem, "locked: ") {
			t.Errorf("%s: %+v; want id %s, size of the file, locked", name, im, ids[name])
		}
		if want := map[bool]string{true: "give an identity", false: "encrypted with a passphrase"}[name == "age"]; !strings.Contains(im.Problem, want) {
			t.Errorf("%s: %q does not say %q", name, im.Problem, want)
		}
	}
	if st, _ := os.Stat(path("cut")); doc.Damaged[0].Size != st.Size() {
		t.Errorf("cut: size %d, the file %d", doc.Damaged[0].Size, st.Size())
	}
	damaged, locked, found := strings.Cut(out, "\nlocked: ")
	if !found || strings.Contains(damaged, "enc.platter") || strings.Contains(damaged, "age.platter") ||
		!strings.Contains(locked, ids["enc"][:8]) || !strings.Contains(locked, "age.platter") || strings.Contains(locked, "cut.platter") {
		t.Errorf("the text list does not put the encrypted images apart as locked:\n%s", out)
	}

	// The passphrase opens two; the identity the third.
	doc = listJSON(t, append(k.pw(), dir)...)
	if names(doc.Locked) != "age" || inSets(doc) != "enc enc-inc plain" {
		t.Errorf("with the passphrase: locked %q, sets %q", names(doc.Locked), inSets(doc))
	}
	doc = listJSON(t, append(append(k.pw(), k.id()...), dir)...)
	if len(doc.Locked) != 0 || names(doc.Damaged) != "cut" || inSets(doc) != "age enc enc-inc plain" || len(doc.Sets) != 1 {
		t.Errorf("with both: locked %q, damaged %q, sets %q (%d)", names(doc.Locked), names(doc.Damaged), inSets(doc), len(doc.Sets))
	}
	for _, s := range doc.Sets {
		for _, im := range s.Images {
			if !im.Restores {
				t.Errorf("%s with its secrets: %s", im.File, im.Problem)
			}
		}
	}
	// A wrong passphrase: locked, and said.
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not it\n"), 0o600)
	doc = listJSON(t, "--password-file", wrong, dir)
	for _, im := range doc.Locked {
		if strings.HasPrefix(filepath.Base(im.File), "enc") && !strings.Contains(im.Problem, "wrong passphrase") {
			t.Errorf("%s with a wrong passphrase: %q", im.File, im.Problem)
		}
	}

	// The parent's passphrase changed: the child opens, its parent not.
	nk := newEncKeys(t, "another secret")
	ok(t, append(append([]string{"passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), path("enc"))...)
	doc = listJSON(t, append(k.pw(), dir)...)
	inc, _ := doc.byFile("enc-inc")
	if names(doc.Locked) != "age enc" || inc.Restores || !strings.HasPrefix(inc.Problem, "locked parent "+ids["enc"][:8]) || !strings.Contains(inc.Problem, "wrong passphrase") {
		t.Errorf("enc-inc with its parent locked: restores %v, %q; locked %q", inc.Restores, inc.Problem, names(doc.Locked))
	}

	// prune refuses, naming the locked image, exit 1 (not damage).
	os.Remove(path("cut"))
	if _, stderr, code := run(t, "prune", "--keep-last", "1", dir); code != 1 || !strings.Contains(stderr, "is encrypted and locked") {
		t.Errorf("prune with a locked image: exit %d: %s", code, stderr)
	}
}
