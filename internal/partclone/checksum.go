package partclone

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// summer is one running checksum of an image's mode.
type summer struct {
	mode   int
	reseed bool
	crc    uint32
	xxh    *xxhash.Digest
}

func newSummer(h *Header) *summer {
	s := &summer{mode: h.ChecksumMode, reseed: h.Reseed}
	if s.mode == ChecksumXXH64 {
		s.xxh = xxhash.New()
	}
	s.reset()
	return s
}

func (s *summer) reset() {
	s.crc = 0xFFFFFFFF
	if s.xxh != nil {
		s.xxh.Reset()
	}
}

// seed sets the running state to what a stored checksum says it was: how
// a group is verified alone when checksums carry on (not reseeded). Only
// a CRC can be seeded so.
func (s *summer) seed(stored []byte) bool {
	switch s.mode {
	case ChecksumCRC32, ChecksumCRC32v1:
		s.crc = binary.LittleEndian.Uint32(stored)
		return true
	}
	return false
}

func (s *summer) add(b []byte) {
	switch s.mode {
	case ChecksumCRC32:
		s.crc = crcUpdate(s.crc, b)
	case ChecksumCRC32v1:
		s.crc = crcUpdateV1(s.crc, b)
	case ChecksumXXH64:
		s.xxh.Write(b)
	}
}

// check compares the running checksum with stored (its first 4 or 8
// bytes) and starts the next group as the image says.
func (s *summer) check(stored []byte) bool {
	var ok bool
	switch s.mode {
	case ChecksumCRC32, ChecksumCRC32v1:
		ok = binary.LittleEndian.Uint32(stored) == s.crc
	case ChecksumXXH64:
		ok = binary.LittleEndian.Uint64(stored) == s.xxh.Sum64()
	default:
		ok = true
	}
	if s.reseed {
		s.reset()
	}
	return ok
}
