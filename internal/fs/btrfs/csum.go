package btrfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/crypto/blake2b"
)

// csumStart is where the checksummed bytes of a superblock or tree block
// begin; the checksum itself sits before, in its first csum.size bytes.
const csumStart = 0x20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// csum is one of btrfs's checksum types (csum_type in the superblock).
type csum struct {
	name string
	size int
	sum  func(b []byte, out []byte)
}

// csumOf returns checksum type t, as the kernel computes and stores it.
func csumOf(t uint16) (csum, bool) {
	switch t {
	case 0:
		return csum{"crc32c", 4, func(b, out []byte) {
			binary.LittleEndian.PutUint32(out, crc32.Checksum(b, castagnoli))
		}}, true
	case 1:
		return csum{"xxhash64", 8, func(b, out []byte) {
			binary.LittleEndian.PutUint64(out, xxhash.Sum64(b))
		}}, true
	case 2:
		return csum{"sha256", 32, func(b, out []byte) {
			s := sha256.Sum256(b)
			copy(out, s[:])
		}}, true
	case 3:
		return csum{"blake2b", 32, func(b, out []byte) {
			s := blake2b.Sum256(b)
			copy(out, s[:])
		}}, true
	}
	return csum{}, false
}

// verify reports whether block b (a superblock or a tree block) carries
// its own checksum.
func (c csum) verify(b []byte) bool {
	var out [32]byte
	c.sum(b[csumStart:], out[:c.size])
	return bytes.Equal(out[:c.size], b[:c.size])
}

// seal writes b's checksum into it (for tests and the fuzz target).
func (c csum) seal(b []byte) {
	var out [32]byte
	c.sum(b[csumStart:], out[:c.size])
	copy(b, out[:c.size])
}
