// Package seal is the cryptography of encrypted images (docs/format.md,
// "Encryption"): a random data key per image, the key slots that wrap it
// (an Argon2id passphrase slot, age X25519 recipient slots), and the
// AES-256-GCM sealing of frames and of block streams. It knows nothing of
// the image layout: internal/image says what is sealed, at which offset
// and with which associated data.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// Cipher names the cipher of frames and blocks, as info shows it.
const Cipher = "XAES-256-GCM"

// KeySize is the size of a data key, NonceSize of a nonce and Overhead of
// the tag each sealed message carries.
const (
	KeySize   = 32
	NonceSize = 24
	Overhead  = 16
)

// Key is an image's data key: random, made once per image, never written
// anywhere but wrapped in the image's key slots.
type Key [KeySize]byte

// NewKey returns a fresh random data key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("seal: random data key: %w", err)
	}
	return k, nil
}

// Purposes of the keys derived from a data key: each use has its own key,
// so a message sealed for one can never be opened as another.
const (
	purposeFrame = "platter 2026 image format v2 frame key"
	purposeBlock = "platter 2026 image format v2 block key"
	purposeList  = "platter 2026 image format v2 recipient list key"
)

// derive returns k's key for purpose.
func (k *Key) derive(purpose string) [KeySize]byte {
	var sub [KeySize]byte
	blake3.DeriveKey(purpose, k[:], sub[:])
	return sub
}

// AEAD is XAES-256-GCM (c2sp.org/XAES-256-GCM): AES-256-GCM with 24-byte
// nonces. The first 12 bytes of a nonce derive, with the AEAD's key (in
// NIST SP 800-108r1's counter mode with AES-256-CMAC), a fresh AES-256
// key; the last 12 are the GCM nonce under it. A random nonce thus seals
// each frame under a key of its own, and a stream (one nonce prefix,
// numbered segments) under one key per block, so no key and GCM nonce
// pair repeats however often consolidate and prune seal again with the
// same data key. Its methods are cipher.AEAD's; it is safe for concurrent
// use.
type AEAD struct {
	c  cipher.Block // AES-256 with the AEAD's key
	k1 [aes.BlockSize]byte
}

var _ cipher.AEAD = (*AEAD)(nil)

// keyPart is how much of a nonce derives the AES key; the rest is the
// GCM nonce.
const keyPart = 12

func newAEAD(key [KeySize]byte) *AEAD {
	c, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // the key size is right by construction
	}
	a := &AEAD{c: c}
	// K1 = L·x in GF(2^128), L = AES(0): CMAC's first subkey.
	var l [aes.BlockSize]byte
	c.Encrypt(l[:], l[:])
	for i := range l {
		a.k1[i] = l[i] << 1
		if i+1 < len(l) {
			a.k1[i] |= l[i+1] >> 7
		}
	}
	if l[0]&0x80 != 0 {
		a.k1[aes.BlockSize-1] ^= 0x87
	}
	return a
}

// gcm returns AES-256-GCM under the key the nonce's first 12 bytes
// derive: AES(M1 ⊕ K1) ‖ AES(M2 ⊕ K1), Mi = 0 ‖ i ‖ "X" ‖ 0 ‖ nonce[:12].
func (a *AEAD) gcm(nonce []byte) cipher.AEAD {
	var k [2 * aes.BlockSize]byte
	for i := range 2 {
		m := k[i*aes.BlockSize : (i+1)*aes.BlockSize]
		m[1], m[2] = byte(i+1), 'X'
		copy(m[4:], nonce[:keyPart])
		subtle.XORBytes(m, m, a.k1[:])
		a.c.Encrypt(m, m)
	}
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

func checkNonce(nonce []byte) {
	if len(nonce) != NonceSize {
		panic("seal: incorrect nonce length given to AEAD")
	}
}

// NonceSize is the nonce size Seal and Open take.
func (a *AEAD) NonceSize() int { return NonceSize }

// Overhead is the length of the tag each message gains.
func (a *AEAD) Overhead() int { return Overhead }

// Seal is cipher.AEAD's Seal with a 24-byte nonce.
func (a *AEAD) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	checkNonce(nonce)
	return a.gcm(nonce).Seal(dst, nonce[keyPart:], plaintext, additionalData)
}

// Open is cipher.AEAD's Open with a 24-byte nonce.
func (a *AEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	checkNonce(nonce)
	return a.gcm(nonce).Open(dst, nonce[keyPart:], ciphertext, additionalData)
}

// Ciphers are the AEADs an image's data key gives: one for frames, one
// for the index, maps, metadata and layout blocks. They are safe for
// concurrent use.
type Ciphers struct {
	Frame, Block *AEAD
}

// Ciphers derives the frame and block ciphers of k.
func (k *Key) Ciphers() Ciphers {
	return Ciphers{Frame: newAEAD(k.derive(purposeFrame)), Block: newAEAD(k.derive(purposeBlock))}
}

// Nonce returns a fresh random 24-byte nonce. With AEAD a random nonce
// picks one AES key of 2^96 and a GCM nonce of 2^96 under it, so frames
// sealed again by consolidate and prune need no counter (docs/format.md,
// "Why it is built this way", gives the bounds).
func Nonce() ([NonceSize]byte, error) {
	var n [NonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("seal: random nonce: %w", err)
	}
	return n, nil
}

// Errors of unlocking. None of them means the image is damaged: the
// secrets given are not the ones that open it.
var (
	// ErrWrongPassphrase: no passphrase given opens the passphrase slot.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrNoIdentity: no identity given opens a recipient slot.
	ErrNoIdentity = errors.New("no identity matches")
	// ErrNoSecret: the image is encrypted and nothing was given to
	// unlock it with.
	ErrNoSecret = errors.New("the image is encrypted: give its passphrase or an identity")
)

// ErrOpen is matched by errors of sealed bytes that do not open: changed,
// damaged, moved or from another image.
var ErrOpen = errors.New("sealed bytes do not open")
