package seal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha3"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"testing"

	"filippo.io/age"
)

func sealStream(t *testing.T, key *Key, plain, ad []byte) ([PrefixSize]byte, []byte) {
	t.Helper()
	var prefix [PrefixSize]byte
	rand.Read(prefix[:])
	var out bytes.Buffer
	w := NewStreamWriter(&out, key.Ciphers().Block, prefix, ad)
	// Written in odd pieces: segment boundaries do not follow writes.
	for p := plain; len(p) > 0; {
		n := min(len(p), 1+mrand.IntN(100000))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(out.Len()) != SealedLen(int64(len(plain))) {
		t.Fatalf("%d plain bytes sealed to %d, SealedLen says %d", len(plain), out.Len(), SealedLen(int64(len(plain))))
	}
	return prefix, out.Bytes()
}

func openStream(key *Key, prefix [PrefixSize]byte, sealed, ad []byte) ([]byte, error) {
	r, err := NewStreamReader(bytes.NewReader(sealed), key.Ciphers().Block, prefix, ad, int64(len(sealed)))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// Streams of every length around the segment size open to what was
// sealed; cut at a segment boundary, reordered, with other associated
// data or another key, they do not.
func TestStream(t *testing.T) {
	key, _ := NewKey()
	other, _ := NewKey()
	ad := []byte("block at 4096")
	for _, n := range []int{1, 100, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 7, 4 * SegmentSize} {
		plain := make([]byte, n)
		rand.Read(plain)
		prefix, sealed := sealStream(t, &key, plain, ad)
		if p, ok := PlainLen(int64(len(sealed))); !ok || p != int64(n) {
			t.Fatalf("PlainLen(%d) = %d, %v; want %d", len(sealed), p, ok, n)
		}
		got, err := openStream(&key, prefix, sealed, ad)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if _, err := openStream(&key, prefix, sealed, []byte("block at 8192")); !errors.Is(err, ErrOpen) {
			t.Fatalf("%d bytes, other associated data: %v", n, err)
		}
		if _, err := openStream(&other, prefix, sealed, ad); !errors.Is(err, ErrOpen) {
			t.Fatalf("%d bytes, other key: %v", n, err)
		}
		if segs := len(sealed) / sealedSeg; segs >= 1 && len(sealed)%sealedSeg != 0 {
			// Cut after whole segments: the new last one is not marked last.
			if _, err := openStream(&key, prefix, sealed[:segs*sealedSeg], ad); !errors.Is(err, ErrOpen) {
				t.Fatalf("%d bytes cut to %d segments: %v", n, segs, err)
			}
		}
		if len(sealed) > 2*sealedSeg {
			swapped := bytes.Clone(sealed)
			copy(swapped, sealed[sealedSeg:2*sealedSeg])
			copy(swapped[sealedSeg:], sealed[:sealedSeg])
			if _, err := openStream(&key, prefix, swapped, ad); !errors.Is(err, ErrOpen) {
				t.Fatalf("%d bytes, segments swapped: %v", n, err)
			}
		}
	}
	for _, n := range []int64{0, Overhead, sealedSeg + Overhead} {
		if _, ok := PlainLen(n); ok {
			t.Errorf("PlainLen(%d) accepted", n)
		}
	}
}

var cheap = Params{Time: 1, MemoryKiB: 64, Threads: 1}

// Slots encode and decode; a passphrase and an identity unlock them, a
// chain's shared salt derives once, and LockFor reproduces the lock.
func TestSlots(t *testing.T) {
	ident, _ := age.GenerateX25519Identity()
	pk, err := NewPassKey([]byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	lock := &Lock{Pass: pk, Recipients: []string{ident.Recipient().String()}}
	id := [16]byte{7}
	key, _ := NewKey()
	s, err := lock.Slots(id, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Encode(id)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b, [16]byte{8}); err == nil {
		t.Fatal("slots of another image decoded")
	}
	sec := &Secrets{Passphrases: [][]byte{[]byte("pw")}}
	if k, err := sec.Unlock(id, d); err != nil || k != key {
		t.Fatalf("passphrase: %v", err)
	}
	if k, err := (&Secrets{Identities: []age.Identity{ident}}).Unlock(id, d); err != nil || k != key {
		t.Fatalf("identity: %v", err)
	}
	// A second image of the chain, same salt: no new derivation.
	key2, _ := NewKey()
	l2, err := sec.LockFor(id, d, key)
	if err != nil || l2.Pass != sec.keks[0].pk || len(l2.Recipients) != 1 {
		t.Fatalf("LockFor: %+v, %v", l2, err)
	}
	s2, _ := l2.Slots([16]byte{9}, key2)
	if k, err := sec.Unlock([16]byte{9}, s2); err != nil || k != key2 || len(sec.keks) != 1 {
		t.Fatalf("second image: %v, %d derivations", err, len(sec.keks))
	}
	// The slots bound to their image: copied into another, they fail.
	if _, err := sec.Unlock([16]byte{10}, d); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("slots of image 7 for image 10: %v", err)
	}
	if _, err := (&Secrets{Identities: []age.Identity{ident}}).Unlock([16]byte{10}, d); err == nil {
		t.Fatal("a recipient slot opened for another image")
	}
	// Every flip of the copy is caught by its checksum.
	for off := 0; off < CopySize; off += 13 {
		c := bytes.Clone(b)
		c[off] ^= 0x10
		if _, err := Decode(c, id); err == nil {
			t.Fatalf("flip at %d not detected", off)
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// AEAD is XAES-256-GCM: the test vectors of c2sp.org/XAES-256-GCM (the
// first with MSB(L) = 0, the second with 1) and its accumulated
// randomized test of 10 000 messages, which sweeps lengths 0-255.
func TestXAES(t *testing.T) {
	for _, v := range []struct{ key, ad, sealed string }{
		{"0101010101010101010101010101010101010101010101010101010101010101", "", "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"},
		{"0303030303030303030303030303030303030303030303030303030303030303", "c2sp.org/XAES-256-GCM", "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"},
	} {
		a := newAEAD([KeySize]byte(unhex(t, v.key)))
		nonce, plain := []byte("ABCDEFGHIJKLMNOPQRSTUVWX"), []byte("XAES-256-GCM")
		got := a.Seal(nil, nonce, plain, []byte(v.ad))
		if hex.EncodeToString(got) != v.sealed {
			t.Fatalf("key %s: sealed %x, want %s", v.key[:2], got, v.sealed)
		}
		if p, err := a.Open(nil, nonce, got, []byte(v.ad)); err != nil || !bytes.Equal(p, plain) {
			t.Fatalf("key %s: open: %q, %v", v.key[:2], p, err)
		}
		// Any other nonce byte (the key part or the GCM part) fails.
		for i := range NonceSize {
			n := bytes.Clone(nonce)
			n[i] ^= 1
			if _, err := a.Open(nil, n, got, []byte(v.ad)); err == nil {
				t.Fatalf("key %s: opened with nonce byte %d changed", v.key[:2], i)
			}
		}
	}

	seed, digest := sha3.NewSHAKE128(), sha3.NewSHAKE128()
	read := func(n int) []byte {
		b := make([]byte, n)
		seed.Read(b)
		return b
	}
	for range 10000 {
		key, nonce := read(KeySize), read(NonceSize)
		plain := read(int(read(1)[0]))
		ad := read(int(read(1)[0]))
		a := newAEAD([KeySize]byte(key))
		sealed := a.Seal(nil, nonce, plain, ad)
		if p, err := a.Open(nil, nonce, sealed, ad); err != nil || !bytes.Equal(p, plain) {
			t.Fatalf("accumulated test: open: %v", err)
		}
		digest.Write(sealed)
	}
	sum := make([]byte, 32)
	digest.Read(sum)
	if want := "e6b9edf2df6cec60c8cbd864e2211b597fb69a529160cd040d56c0c210081939"; hex.EncodeToString(sum) != want {
		t.Fatalf("accumulated test: %x, want %s", sum, want)
	}
}

// BenchmarkSeal seals a default 8 MiB frame, and a 4 KiB one (the
// smallest chunk size) where the per-message key derivation weighs most.
func BenchmarkSeal(b *testing.B) {
	key, _ := NewKey()
	a := key.Ciphers().Frame
	ad := []byte("platter 2026 frame 0123456789abcdef01234567")
	for _, n := range []int{4 << 10, 8 << 20} {
		buf := make([]byte, n+Overhead)
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				nonce, _ := Nonce()
				a.Seal(buf[:0], nonce[:], buf[:n], ad)
			}
		})
	}
}
