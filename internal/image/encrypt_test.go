package image

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/platter-dev/platter/internal/seal"
)

// cheap are Argon2id parameters for tests: milliseconds, not half a second.
var cheap = seal.Params{Time: 1, MemoryKiB: 64, Threads: 1}

// lockKeys makes the keys of a new image id locked by lock.
func lockKeys(t testing.TB, id ID, lock *seal.Lock) *Keys {
	t.Helper()
	key, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := lock.Slots(id, key)
	if err != nil {
		t.Fatal(err)
	}
	return &Keys{Data: key, Slots: slots}
}

func passLock(t testing.TB, pass string) *seal.Lock {
	t.Helper()
	pk, err := seal.NewPassKey([]byte(pass), cheap)
	if err != nil {
		t.Fatal(err)
	}
	return &seal.Lock{Pass: pk}
}

// sealedSample is sampleImage encrypted with passphrase "correct horse".
func sealedSample(t testing.TB) ([]byte, [][]byte) {
	return sampleImageKeys(t, lockKeys(t, ID{1, 2, 3}, passLock(t, "correct horse")))
}

func secrets(pass ...string) *seal.Secrets {
	s := &seal.Secrets{}
	for _, p := range pass {
		s.Passphrases = append(s.Passphrases, []byte(p))
	}
	return s
}

// An encrypted image reads back with its passphrase or identity; without
// one, or with the wrong one, it does not open, and that is not damage.
func TestEncryptedRoundTrip(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	lock := passLock(t, "correct horse")
	lock.Recipients = []string{id.Recipient().String()}
	img, chunks := sampleImageKeys(t, lockKeys(t, ID{1, 2, 3}, lock))
	for name, ring := range map[string]*seal.Secrets{
		"passphrase": secrets("wrong", "correct horse"),
		"identity":   {Identities: []age.Identity{other, id}},
	} {
		r, err := Open(bytes.NewReader(img), int64(len(img)), ring)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !r.Encrypted() || r.Layout() == nil || r.SlotDamage() != nil {
			t.Fatalf("%s: encrypted %v, layout %v, slot damage %v", name, r.Encrypted(), r.Layout(), r.SlotDamage())
		}
		for i, e := range r.Entries() {
			got, err := r.ReadChunk(e, nil)
			if err != nil || !bytes.Equal(got, chunks[i]) {
				t.Fatalf("%s: chunk %d: %v", name, i, err)
			}
		}
		if r.Metadata().Created.Unix() != 1700000000 {
			t.Errorf("%s: created %v", name, r.Metadata().Created)
		}
		r.Close()
	}
	for _, c := range []struct {
		ring Keyring
		want error
	}{
		{nil, seal.ErrNoSecret},
		{secrets("wrong"), seal.ErrWrongPassphrase},
		{&seal.Secrets{Identities: []age.Identity{other}}, seal.ErrNoIdentity},
	} {
		_, err := Open(bytes.NewReader(img), int64(len(img)), c.ring)
		if !errors.Is(err, c.want) || errors.Is(err, ErrDamaged) {
			t.Errorf("open with %v: %v, want %v and not damage", c.ring, err, c.want)
		}
	}
	// The header's time is zero: the real one is sealed.
	if !bytes.Equal(img[32:40], make([]byte, 8)) {
		t.Errorf("header creation time %x is not zero", img[32:40])
	}
}

// No 16-byte run of a chunk's bytes, nor the metadata's words, is in the
// file.
func TestEncryptedHidesContent(t *testing.T) {
	img, chunks := sealedSample(t)
	for _, c := range chunks {
		if bytes.Equal(c, make([]byte, len(c))) {
			continue // the zero chunk: zeros are everywhere
		}
		for i := 0; i+16 <= len(c); i++ {
			if bytes.Contains(img, c[i:i+16]) {
				t.Fatalf("the image holds bytes %d-%d of a chunk", i, i+15)
			}
		}
	}
	// Words of the metadata (a plain image's zstd keeps them whole).
	for _, word := range []string{`"filesystem"`, `ext4`, `"areas"`, `"chunk_size"`} {
		if bytes.Contains(img, []byte(word)) {
			t.Errorf("the encrypted image holds %q", word)
		}
	}
}

// Every single-bit flip anywhere in the file is caught: the image does
// not open, a slot copy is reported damaged, or a chunk does not read.
// Never does a chunk read back wrong.
func TestEncryptedBitFlips(t *testing.T) {
	img, chunks := sealedSample(t)
	ring := secrets("correct horse")
	r0, err := Open(bytes.NewReader(img), int64(len(img)), ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes; data from %d; frames at %d, %d, %d", len(img), r0.dataStart, r0.entries[0].FrameOff, r0.entries[2].FrameOff, r0.entries[3].FrameOff)
	flips := 0
	for off := 0; off < len(img); off++ {
		if off >= slotAreaOff+64 && off < slotAreaOff+seal.AreaSize && off%97 != 0 {
			continue // the slots' zero padding: a sample is enough
		}
		b := bytes.Clone(img)
		b[off] ^= 1 << (off % 8)
		flips++
		r, err := Open(bytes.NewReader(b), int64(len(b)), ring)
		if err != nil {
			continue
		}
		if r.SlotDamage() != nil {
			r.Close()
			continue
		}
		caught := false
		for i, e := range r.Entries() {
			got, err := r.ReadChunk(e, nil)
			if err != nil {
				caught = true
				continue
			}
			if !bytes.Equal(got, chunks[i]) {
				t.Fatalf("flip at byte %d: chunk %d reads back wrong", off, i)
			}
		}
		r.Close()
		if !caught {
			t.Fatalf("flip of bit %d at byte %d not detected", off%8, off)
		}
	}
	t.Logf("%d flips, all detected", flips)
}

// A frame moved within an image, or swapped with the frame at the same
// place in another image with the same passphrase, does not open; the
// error names the chunk.
func TestEncryptedFrameSwap(t *testing.T) {
	lock := passLock(t, "correct horse")
	a, _ := sampleImageKeys(t, lockKeys(t, ID{1, 2, 3}, lock))
	b, _ := sampleImageKeys(t, lockKeys(t, ID{1, 2, 3}, lock)) // the same id even
	ring := secrets("correct horse")
	ra, err := Open(bytes.NewReader(a), int64(len(a)), ring)
	if err != nil {
		t.Fatal(err)
	}
	e := ra.Entries()[0]
	n := ra.FrameSize(e)
	swapped := bytes.Clone(a)
	copy(swapped[e.FrameOff:e.FrameOff+n], b[e.FrameOff:e.FrameOff+n])
	r, err := Open(bytes.NewReader(swapped), int64(len(swapped)), ring)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ReadChunk(r.Entries()[0], nil)
	var ce *ChunkError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "partition 1, bytes 0-4095") || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("a frame of another image read as %v", err)
	}

	// Within the image: the frame of chunk 3 written where chunk 0's was
	// (padded to its length), and chunk 0's after it.
	e3 := ra.Entries()[3]
	moved := bytes.Clone(a)
	copy(moved[e.FrameOff:], a[e3.FrameOff:e3.FrameOff+ra.FrameSize(e3)])
	r, err = Open(bytes.NewReader(moved), int64(len(moved)), ring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadChunk(r.Entries()[0], nil); !errors.As(err, &ce) {
		t.Fatalf("a frame moved within the image read as %v", err)
	}
}

// Consolidating an encrypted chain keeps its key slots: the folded image
// opens with the same passphrase, reads the same, and every frame in it
// is sealed anew (no nonce of the old files is in the new one).
func TestEncryptedFold(t *testing.T) {
	lock := passLock(t, "correct horse")
	ring := secrets("correct horse")
	full, fullBytes := chainImageKeys(t, ID{1}, [][]byte{chunk("a"), chunk("b"), chunk("c")}, nil, lockKeys(t, ID{1}, lock), ring)
	inc, incBytes := chainImageKeys(t, ID{2}, [][]byte{chunk("a"), chunk("B!"), chunk("c")}, full, lockKeys(t, ID{2}, lock), ring)
	if err := inc.AttachParent(full); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := Fold(&buf, inc, nil, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	folded, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()), secrets("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if !folded.Encrypted() || folded.ID() != inc.ID() || folded.ContentDigest() != inc.ContentDigest() {
		t.Fatalf("folded: encrypted %v, id %s", folded.Encrypted(), folded.ID())
	}
	for i, e := range folded.Entries() {
		want, _ := inc.ReadChunk(inc.Entries()[i], nil)
		got, err := folded.ReadChunk(e, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: %v", i, err)
		}
		nonce := buf.Bytes()[e.FrameOff+8 : e.FrameOff+sealedFrameHead]
		if bytes.Contains(fullBytes, nonce) || bytes.Contains(incBytes, nonce) {
			t.Fatalf("chunk %d: its frame's nonce is in the old files", i)
		}
	}
	if folded.Keys().Slots.Pass.Salt != inc.Keys().Slots.Pass.Salt {
		t.Error("the folded image has other key slots")
	}
}

// memFile is a file in memory for Relock.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memFile) Sync() error                              { return nil }

// Relock changes the passphrase in place: the old one no longer opens
// the image, the new one does, and no byte outside the slot area changes.
// A copy torn by a crash leaves the other one in use.
func TestRelock(t *testing.T) {
	img, chunks := sealedSample(t)
	r, err := Open(bytes.NewReader(img), int64(len(img)), secrets("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := seal.NewPassKey([]byte("battery staple"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	k := r.Keys()
	slots, err := seal.Rewrap(r.ID(), k.Data, k.Slots, pk, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &memFile{b: bytes.Clone(img)}
	if err := r.Relock(f, slots); err != nil {
		t.Fatal(err)
	}
	end := slotAreaOff + seal.AreaSize
	if !bytes.Equal(f.b[:slotAreaOff], img[:slotAreaOff]) || !bytes.Equal(f.b[end:], img[end:]) {
		t.Fatal("relock changed bytes outside the key slots")
	}
	if _, err := Open(bytes.NewReader(f.b), int64(len(f.b)), secrets("correct horse")); !errors.Is(err, seal.ErrWrongPassphrase) {
		t.Fatalf("old passphrase: %v", err)
	}
	r2, err := Open(bytes.NewReader(f.b), int64(len(f.b)), secrets("battery staple"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r2.ReadChunk(r2.Entries()[0], nil); err != nil || !bytes.Equal(got, chunks[0]) {
		t.Fatalf("chunk 0 after relock: %v", err)
	}
	if r2.Keys().Slots.Generation != 2 {
		t.Errorf("generation %d after one relock", r2.Keys().Slots.Generation)
	}

	// A crash while the older copy was written: it is torn, the other
	// copy (old passphrase) is used and the damage reported.
	torn := bytes.Clone(img)
	copy(torn[slotAreaOff+seal.CopySize:], f.b[slotAreaOff+seal.CopySize:slotAreaOff+seal.CopySize+100])
	torn[slotAreaOff+seal.CopySize+5000] ^= 0xff
	r3, err := Open(bytes.NewReader(torn), int64(len(torn)), secrets("correct horse"))
	if err != nil || r3.SlotDamage() == nil {
		t.Fatalf("torn copy: %v, damage %v", err, r3.SlotDamage())
	}
	// A crash after it: copy B new and whole, copy A old.
	half := bytes.Clone(img)
	copy(half[slotAreaOff+seal.CopySize:end], f.b[slotAreaOff+seal.CopySize:end])
	if _, err := Open(bytes.NewReader(half), int64(len(half)), secrets("battery staple")); err != nil {
		t.Fatalf("after the first copy was written: %v", err)
	}
}
