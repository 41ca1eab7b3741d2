package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/xts"
)

// sectorCipher encrypts and decrypts one encryption sector in place. iv
// is the IV's sector number, as dm-crypt counts it: in 512-byte sectors
// from the start of the encrypted area, whatever the encryption sector
// size (LUKS never sets dm-crypt's iv_large_sectors), plus the segment's
// iv_tweak.
type sectorCipher interface {
	decrypt(b []byte, iv uint64)
	encrypt(b []byte, iv uint64)
}

// unsupportedError names a cipher Platter cannot decrypt.
type unsupportedError struct{ spec string }

func (e *unsupportedError) Error() string { return fmt.Sprintf("cipher %s not supported", e.spec) }

// newSectorCipher makes the cipher a dm-crypt spec names
// ("aes-xts-plain64") with key. Supported: AES in XTS with plain64 or
// plain IVs, and in CBC with essiv:sha256, plain64 or plain IVs — what
// cryptsetup has made by default (aes-cbc-essiv:sha256 until 1.6,
// aes-xts-plain64 since).
func newSectorCipher(spec string, key []byte) (sectorCipher, error) {
	name, rest, _ := strings.Cut(spec, "-")
	mode, ivgen, _ := strings.Cut(rest, "-")
	if name != "aes" {
		return nil, &unsupportedError{spec}
	}
	var iv func(uint64) uint64
	switch ivgen {
	case "plain64":
		iv = func(s uint64) uint64 { return s }
	case "plain":
		iv = func(s uint64) uint64 { return uint64(uint32(s)) }
	}
	switch {
	case mode == "xts" && iv != nil:
		switch len(key) {
		case 32, 48, 64:
		default:
			return nil, fmt.Errorf("cipher %s: a key of %d bytes does not suit it", spec, len(key))
		}
		c, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			return nil, fmt.Errorf("cipher %s: %w", spec, err)
		}
		return xtsCipher{c, iv}, nil
	case mode == "cbc" && (iv != nil || ivgen == "essiv:sha256"):
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("cipher %s: %w", spec, err)
		}
		c := &cbcCipher{b: b, iv: iv}
		if iv == nil {
			salt := sha256.Sum256(key)
			if c.essiv, err = aes.NewCipher(salt[:]); err != nil {
				return nil, err
			}
			clear(salt[:])
		}
		return c, nil
	}
	return nil, &unsupportedError{spec}
}

type xtsCipher struct {
	c  *xts.Cipher
	iv func(uint64) uint64
}

func (x xtsCipher) decrypt(b []byte, iv uint64) { x.c.Decrypt(b, b, x.iv(iv)) }
func (x xtsCipher) encrypt(b []byte, iv uint64) { x.c.Encrypt(b, b, x.iv(iv)) }

type cbcCipher struct {
	b     cipher.Block
	essiv cipher.Block        // ESSIV: the IV is the sector number encrypted with the key's hash
	iv    func(uint64) uint64 // plain, plain64: the IV is the sector number
}

func (c *cbcCipher) ivFor(s uint64) []byte {
	iv := make([]byte, aes.BlockSize)
	if c.essiv != nil {
		binary.LittleEndian.PutUint64(iv, s)
		c.essiv.Encrypt(iv, iv)
	} else {
		binary.LittleEndian.PutUint64(iv, c.iv(s))
	}
	return iv
}

func (c *cbcCipher) decrypt(b []byte, s uint64) {
	cipher.NewCBCDecrypter(c.b, c.ivFor(s)).CryptBlocks(b, b)
}

func (c *cbcCipher) encrypt(b []byte, s uint64) {
	cipher.NewCBCEncrypter(c.b, c.ivFor(s)).CryptBlocks(b, b)
}

// plainReader reads the decrypted payload: byte x of it is the plaintext
// of byte off+x of r. It is safe for parallel calls.
type plainReader struct {
	r      io.ReaderAt
	off    int64 // where the payload begins in r
	size   int64 // a whole number of sectors
	sector int64
	tweak  uint64
	c      sectorCipher
}

// maxRead bounds the buffer one ReadAt decrypts in at a time.
const maxRead = 1 << 20

func (p *plainReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("luks: read at negative offset %d", off)
	}
	done := 0
	for done < len(b) {
		at := off + int64(done)
		if at >= p.size {
			return done, io.EOF
		}
		start := at / p.sector * p.sector
		end := min(roundUp(at+int64(len(b)-done), p.sector), start+maxRead, p.size)
		buf := make([]byte, end-start)
		if n, err := p.r.ReadAt(buf, p.off+start); n != len(buf) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, fmt.Errorf("luks: read encrypted data at byte %d: %w", p.off+start, err)
		}
		for s := int64(0); s < int64(len(buf)); s += p.sector {
			p.c.decrypt(buf[s:s+p.sector], uint64(start+s)/sectorSize512+p.tweak)
		}
		done += copy(b[done:], buf[at-start:])
		clear(buf)
	}
	return done, nil
}
