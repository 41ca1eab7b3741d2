package mrimgx

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrPassword is an encrypted image opened without its password, or
// with another.
var ErrPassword = errors.New("wrong or missing password")

// maxIterations bounds the PBKDF2 work a hostile $JSON can ask for
// (Reflect X uses 600,000).
const maxIterations = 10_000_000

// unlock derives f's key from the password as ENCRYPTION.md describes:
// PBKDF2-HMAC-SHA256 of the password, salted with SHA-256 of the 8-byte
// image ID, 32 bytes, checked against the HMAC-SHA256 (of nothing, keyed
// with the derived key) kept in $JSON. AES-128 and -192 take the first
// 16 and 24 bytes of the key. IVs are AES-256-ECB, keyed with SHA-256 of
// the derived key, of the image ID, disk and partition numbers (16 bits
// each) and block index (32 bits), little-endian.
func unlock(f *setFile, password string, keys map[string][]byte) error {
	e := f.h.Encryption
	if !e.Enable {
		return nil
	}
	if password == "" {
		return fmt.Errorf("mrimgx: file %d is encrypted (%s): give its password: %w", f.num, e.AES, ErrPassword)
	}
	var bits int
	switch strings.ToLower(e.AES) {
	case "aes-128", "aes128":
		bits = 128
	case "aes-192", "aes192":
		bits = 192
	case "aes-256", "aes256", "":
		bits = 256
	default:
		return fmt.Errorf("mrimgx: file %d: encryption %q: %w", f.num, e.AES, ErrUnsupported)
	}
	if kd := strings.ToLower(e.KeyDerivation); kd != "" && kd != "pbkdf2" {
		return fmt.Errorf("mrimgx: file %d: key derivation %q: %w", f.num, e.KeyDerivation, ErrUnsupported)
	}
	if e.KeyIterations <= 0 || e.KeyIterations > maxIterations {
		return fmt.Errorf("mrimgx: file %d: %d PBKDF2 iterations is outside 1-%d", f.num, e.KeyIterations, maxIterations)
	}
	id, err := hex.DecodeString(f.h.Header.ImageID)
	if err != nil || len(id) != 8 {
		return fmt.Errorf("mrimgx: file %d: image ID %q is not 16 hex digits", f.num, f.h.Header.ImageID)
	}
	want, err := hex.DecodeString(e.HMAC)
	if err != nil || len(want) != sha256.Size {
		return fmt.Errorf("mrimgx: file %d: the password's HMAC %q is not 64 hex digits", f.num, e.HMAC)
	}
	cacheKey := fmt.Sprintf("%x/%d", id, e.KeyIterations)
	key, ok := keys[cacheKey]
	if !ok {
		salt := sha256.Sum256(id)
		key, err = pbkdf2.Key(sha256.New, password, salt[:], e.KeyIterations, 32)
		if err != nil {
			return fmt.Errorf("mrimgx: file %d: %w", f.num, err)
		}
		keys[cacheKey] = key
	}
	mac := hmac.New(sha256.New, key)
	if !hmac.Equal(mac.Sum(nil), want) {
		return fmt.Errorf("mrimgx: file %d: %w", f.num, ErrPassword)
	}
	if f.aes, err = aes.NewCipher(key[:bits/8]); err != nil {
		return err
	}
	ivKey := sha256.Sum256(key)
	if f.ivAES, err = aes.NewCipher(ivKey[:]); err != nil {
		return err
	}
	copy(f.id[:], id)
	return nil
}

// decryptECB decrypts a metadata block in place.
func (f *setFile) decryptECB(b []byte) error {
	if f.aes == nil {
		return fmt.Errorf("an encrypted metadata block in a file whose $JSON says it is not encrypted")
	}
	if len(b)%aes.BlockSize != 0 {
		return fmt.Errorf("%d encrypted bytes are not whole AES blocks", len(b))
	}
	for i := 0; i < len(b); i += aes.BlockSize {
		f.aes.Decrypt(b[i:i+aes.BlockSize], b[i:i+aes.BlockSize])
	}
	return nil
}

// decryptCBC decrypts a data block in place: index is its number in its
// index (the reserved sectors' and the data blocks' each count from 0).
func (f *setFile) decryptCBC(b []byte, disk, part int, index int64) error {
	if len(b)%aes.BlockSize != 0 {
		return fmt.Errorf("%d encrypted bytes are not whole AES blocks", len(b))
	}
	var in, iv [aes.BlockSize]byte
	copy(in[:8], f.id[:])
	binary.LittleEndian.PutUint16(in[8:], uint16(disk))
	binary.LittleEndian.PutUint16(in[10:], uint16(part))
	binary.LittleEndian.PutUint32(in[12:], uint32(index))
	f.ivAES.Encrypt(iv[:], in[:])
	cipher.NewCBCDecrypter(f.aes, iv[:]).CryptBlocks(b, b)
	return nil
}

// zstdFrameLen is the length of the zstd frame at the start of b: an
// encrypted block is padded to whole AES blocks after it.
func zstdFrameLen(b []byte) (int, error) {
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != 0xFD2FB528 {
		return 0, fmt.Errorf("zstd: no frame")
	}
	fhd := b[4]
	n := 5
	single := fhd&0x20 != 0
	if !single {
		n++
	}
	n += []int{0, 1, 2, 4}[fhd&3]
	switch fhd >> 6 {
	case 0:
		if single {
			n++
		}
	case 1:
		n += 2
	case 2:
		n += 4
	case 3:
		n += 8
	}
	for {
		if n+3 > len(b) {
			return 0, fmt.Errorf("zstd: frame cut at byte %d", n)
		}
		h := int(b[n]) | int(b[n+1])<<8 | int(b[n+2])<<16
		n += 3
		size := h >> 3
		switch (h >> 1) & 3 {
		case 1:
			size = 1
		case 3:
			return 0, fmt.Errorf("zstd: reserved block type")
		}
		n += size
		if n > len(b) {
			return 0, fmt.Errorf("zstd: frame cut at byte %d", n)
		}
		if h&1 != 0 {
			break
		}
	}
	if fhd&4 != 0 {
		n += 4
	}
	if n > len(b) {
		return 0, fmt.Errorf("zstd: frame cut before its checksum")
	}
	return n, nil
}
