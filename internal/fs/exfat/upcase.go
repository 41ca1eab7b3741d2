package exfat

// exFAT matches names without regard to case by its up-case table, which
// the volume carries (entry 0x82 of the root directory): two names match
// when their characters, up-cased by the table, are the same.

import (
	"encoding/binary"
	"strings"
	"sync"
	"unicode"
)

// upcaseEntry is the root directory's up-case table entry.
type upcaseEntry struct {
	sum    uint32
	first  uint32
	length uint64
}

// maxUpcaseBytes bounds the table read: 65536 mappings of 2 bytes, and
// room for the compression marks of a table no one compressed well.
const maxUpcaseBytes = 256 << 10

// upcase reads the volume's up-case table. A table that is missing, does
// not fit, or whose checksum does not match is replaced by the default
// one (Unicode's upper case), as the kernel replaces it.
//
// A mapping of a character to one outside its Unicode case-folding
// orbit is dropped (the character maps to itself): names that match by
// the table then always match by Unicode folding too, so that a name
// the shared name check lists (the first of those that fold equal) is
// never found in place of another by the table.
func (v *volume) upcase(e *upcaseEntry) *[1 << 16]uint16 {
	if e == nil || e.length == 0 || e.length > maxUpcaseBytes || !v.valid(e.first) {
		return defaultUpcase()
	}
	n := (int64(e.length) + v.clusterSize - 1) / v.clusterSize
	if int64(e.first-2)+n > int64(v.clusters) {
		return defaultUpcase()
	}
	// In one piece, as the kernel and fsck.exfat read it.
	b := make([]byte, e.length)
	if err := readFull(v.r, b, v.clusterOff(e.first)); err != nil {
		return defaultUpcase()
	}
	var sum uint32
	for _, c := range b {
		sum = (sum<<31 | sum>>1) + uint32(c)
	}
	if sum != e.sum {
		return defaultUpcase()
	}
	t := identity()
	// The table is compressed: 0xFFFF and a count say that many
	// characters map to themselves.
	i, skip := 0, false
	for k := 0; k+2 <= len(b) && i < len(t); k += 2 {
		u := binary.LittleEndian.Uint16(b[k:])
		switch {
		case skip:
			i += int(u)
			skip = false
		case u == 0xffff:
			skip = true
		default:
			t[i] = u
			i++
		}
	}
	sanitize(t)
	return t
}

func identity() *[1 << 16]uint16 {
	t := new([1 << 16]uint16)
	for i := range t {
		t[i] = uint16(i)
	}
	return t
}

// sanitize drops the mappings of t that leave a character's case-folding
// orbit.
func sanitize(t *[1 << 16]uint16) {
	for i, m := range t {
		if int(m) != i && !sameOrbit(rune(i), rune(m)) {
			t[i] = uint16(i)
		}
	}
}

func sameOrbit(a, b rune) bool {
	if a >= 0xd800 && a < 0xe000 || b >= 0xd800 && b < 0xe000 {
		return false // halves of surrogate pairs are no characters
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}

var (
	defaultOnce  sync.Once
	defaultTable *[1 << 16]uint16
)

// defaultUpcase is Unicode's upper case of each character of the Basic
// Multilingual Plane; callers do not change it.
func defaultUpcase() *[1 << 16]uint16 {
	defaultOnce.Do(func() {
		t := identity()
		for i := range t {
			if up := unicode.ToUpper(rune(i)); up < 1<<16 {
				t[i] = uint16(up)
			}
		}
		sanitize(t)
		defaultTable = t
	})
	return defaultTable
}

// key is name up-cased by the volume's table: names match when their
// keys are equal. Characters past the Basic Multilingual Plane map to
// themselves.
func (f *Files) key(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 1<<16 {
			return rune(f.up[r])
		}
		return r
	}, name)
}
