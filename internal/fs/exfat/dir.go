package exfat

// This file reads directories: their clusters, their 32-byte entries,
// and the entry sets those make (a file entry, a stream extension, file
// name entries, perhaps benign entries of other kinds, under one
// checksum).

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"time"
	"unicode/utf16"
)

const (
	typeEnd      = 0x00 // the end of the directory: it and every entry after are free
	typeInUse    = 0x80
	typeBitmap   = 0x81
	typeUpcase   = 0x82
	typeLabel    = 0x83
	typeFile     = 0x85
	typeStream   = 0xc0
	typeName     = 0xc1
	typeVendor   = 0xe1 // vendor allocation: a benign secondary with clusters of its own
	typeSecond   = 0x40 // the category bit: secondary entry
	typeBenign   = 0x20 // the importance bit: may be ignored if unknown
	attrDir      = 0x10
	flagNoChain  = 0x02 // GeneralSecondaryFlags: NoFatChain (contiguous)
	nameUnits    = 15   // UTF-16 units of a file name entry
	maxNameUnits = 255
	maxSetLen    = 1 + 255 // a primary entry and its SecondaryCount
)

// data says where a file's or directory's bytes lie.
type data struct {
	first      uint32 // first cluster; 0: none
	length     int64  // DataLength; for the root, 0 and root set
	valid      int64  // ValidDataLength: bytes past it read as zeros
	contiguous bool   // NoFatChain: the clusters follow one another, the FAT is not read
	root       bool   // the root directory: a FAT chain to its end
}

// dirEntries calls fn with each 32-byte entry of the directory at d and
// its byte offset, in order, up to the end marker (an entry of type 0)
// or the end of the directory, or until fn returns false. what names the
// directory in errors.
func (v *volume) dirEntries(d data, what string, fn func(raw []byte, off int64) bool) error {
	// A piece of a cluster at a time: clusters are up to 32 MiB.
	piece := min(v.clusterSize, 64<<10)
	buf := make([]byte, piece)
	each := func(c uint32) (more bool, err error) {
		for p := int64(0); p < v.clusterSize; p += piece {
			off := v.clusterOff(c) + p
			if err := readFull(v.r, buf, off); err != nil {
				return false, fmt.Errorf("exfat: read cluster %d of %s at byte %d: %w", c, what, off, err)
			}
			for i := 0; i+entrySize <= len(buf); i += entrySize {
				if buf[i] == typeEnd || !fn(buf[i:i+entrySize], off+int64(i)) {
					return false, nil
				}
			}
		}
		return true, nil
	}
	if !v.valid(d.first) {
		return corrupt(v.clusterOff(2), "%s starts at cluster %d, outside the volume's clusters 2-%d", what, d.first, v.clusters+1)
	}
	limit := int64(maxDirBytes)
	if !d.root {
		if d.length > maxDirBytes {
			return corrupt(v.clusterOff(d.first), "%s is %d bytes long, more than the 256 MiB a directory may hold", what, d.length)
		}
		limit = d.length
	}
	n := (limit + v.clusterSize - 1) / v.clusterSize // clusters to read at most
	if d.contiguous {
		if int64(d.first-2)+n > int64(v.clusters) {
			return corrupt(v.clusterOff(d.first), "%s of %d clusters from cluster %d runs past the volume's last cluster %d", what, n, d.first, v.clusters+1)
		}
		for i := int64(0); i < n; i++ {
			if more, err := each(d.first + uint32(i)); !more || err != nil {
				return err
			}
		}
		return nil
	}
	ch := newChain(v, d.first, what)
	for i := int64(0); ; i++ {
		if i == n {
			if d.root {
				return corrupt(v.entryOff(ch.c), "%s runs past %d clusters (256 MiB, the most a directory holds) at cluster %d", what, n, ch.c)
			}
			return nil
		}
		if more, err := each(ch.c); !more || err != nil {
			return err
		}
		end, err := ch.next()
		if err != nil {
			return err
		}
		if end {
			if !d.root && i+1 < n {
				return corrupt(v.entryOff(ch.c), "the cluster chain of %s ends at cluster %d, its %d of the %d clusters its size needs", what, ch.c, i+1, n)
			}
			return nil
		}
	}
}

// entrySet is the entries of one file's entry set, as a directory holds
// them: 32 bytes each, as many as were found.
type entrySet struct {
	raw   []byte
	off   int64 // byte of the file entry
	short bool  // the directory ended, or another entry began, before SecondaryCount entries
}

// setReader gathers a directory's entries into entry sets.
type setReader struct {
	buf  [maxSetLen * entrySize]byte
	n    int   // entries gathered
	want int   // entries of the set being gathered; 0: none
	off  int64 // its file entry's byte
	// set is called with each file's entry set. Other primary entries
	// (the bitmap, up-case table, label, GUID) end a set and are not
	// passed on.
	set func(entrySet)
}

// entry takes the next entry of the directory.
func (p *setReader) entry(raw []byte, off int64) {
	t := raw[0]
	switch {
	case t&typeInUse == 0:
		// Free (deleted) entries: a set they cut is damaged.
		p.flush()
	case t == typeFile:
		p.flush()
		p.want, p.n, p.off = 1+int(raw[1]), 0, off
		p.add(raw)
	case t&typeSecond != 0:
		if p.want > 0 {
			p.add(raw)
		}
		// Else a secondary entry of another primary (or none): not
		// a file's.
	default:
		p.flush()
	}
}

func (p *setReader) add(raw []byte) {
	copy(p.buf[p.n*entrySize:], raw)
	p.n++
	if p.n == p.want {
		p.set(entrySet{raw: p.buf[:p.n*entrySize], off: p.off})
		p.want = 0
	}
}

// flush hands over a set cut short; call it at the end of the directory.
func (p *setReader) flush() {
	if p.want > 0 {
		p.set(entrySet{raw: p.buf[:p.n*entrySize], off: p.off, short: true})
		p.want = 0
	}
}

// setChecksum is the checksum of an entry set that its file entry holds
// (bytes 2-3, left out of the sum).
func setChecksum(raw []byte) uint16 {
	var sum uint16
	for i, c := range raw {
		if i == 2 || i == 3 {
			continue
		}
		sum = (sum<<15 | sum>>1) + uint16(c)
	}
	return sum
}

// entry returns entry i of s.
func (s entrySet) entry(i int) []byte { return s.raw[i*entrySize : (i+1)*entrySize] }

func (s entrySet) len() int { return len(s.raw) / entrySize }

// file decodes an entry set. A set that is damaged (cut short, a
// checksum that does not match, no stream extension or name, an unknown
// critical entry) comes back with err saying so, and with as much of
// its name as can be read: a directory lists it as damaged. The data of
// its stream extension is given whenever there is one, damage or not.
func (v *volume) file(s entrySet) (f File, err error) {
	le := binary.LittleEndian
	fe := s.entry(0)
	f = File{off: s.off, Attr: le.Uint16(fe[4:])}
	f.Mode = 0o644
	if f.Attr&attrDir != 0 {
		f.Mode = fs.ModeDir | 0o755
	}
	f.ModTime = timestamp(le.Uint32(fe[12:]), fe[21], fe[23])
	// The name, as far as it goes.
	want := maxNameUnits
	hasStream := s.len() > 1 && s.entry(1)[0] == typeStream
	if hasStream {
		st := s.entry(1)
		want = int(st[3])
		f.data = data{
			first:      le.Uint32(st[20:]),
			length:     int64(min(le.Uint64(st[24:]), 1<<62)),
			valid:      int64(min(le.Uint64(st[8:]), 1<<62)),
			contiguous: st[1]&flagNoChain != 0,
		}
	}
	var units []uint16
	names := 0
	for i := 2; i < s.len() && s.entry(i)[0] == typeName && len(units) < want; i++ {
		for k := 0; k < nameUnits && len(units) < want; k++ {
			units = append(units, le.Uint16(s.entry(i)[2+2*k:]))
		}
		names++
	}
	if !hasStream {
		// No name length: the name entries' padding is not the name.
		for len(units) > 0 && units[len(units)-1] == 0 {
			units = units[:len(units)-1]
		}
	}
	f.Name = string(utf16.Decode(units))
	damaged := func(format string, args ...any) (File, error) {
		if f.Name == "" {
			f.Name = fmt.Sprintf("(entry at byte %d)", s.off)
		}
		return f, corrupt(s.off, "the entry set of %q: "+format, append([]any{f.Name}, args...)...)
	}
	switch {
	case s.short:
		return damaged("%d entries of the %d its file entry counts, cut short by another entry or the directory's end", s.len(), int(fe[1])+1)
	case le.Uint16(fe[2:]) != setChecksum(s.raw):
		return damaged("its checksum is %#04x, its entries sum to %#04x", le.Uint16(fe[2:]), setChecksum(s.raw))
	case !hasStream:
		return damaged("it has no stream extension")
	case want == 0:
		return damaged("a name of 0 characters")
	case names != (want+nameUnits-1)/nameUnits:
		return damaged("a name of %d characters in %d file name entries", want, names)
	}
	for i := 2 + names; i < s.len(); i++ {
		if t := s.entry(i)[0]; t&typeBenign == 0 {
			return damaged("an unknown critical entry of type %#02x", t)
		}
	}
	switch d := f.data; {
	case d.valid > d.length:
		return damaged("its valid data length %d is past its data length %d", d.valid, d.length)
	case d.length > int64(v.clusters)*v.clusterSize:
		return damaged("a data length of %d bytes, more than the volume's %d clusters hold", d.length, v.clusters)
	case d.length > 0 && !v.valid(d.first):
		return damaged("its data starts at cluster %d, outside the volume's clusters 2-%d", d.first, v.clusters+1)
	}
	if f.Mode.IsDir() {
		// A directory's size is the clusters it has, not a length
		// anyone reads: it is shown as 0, as for the other readers.
		f.data.valid = f.data.length
	} else {
		f.Size = f.data.length
	}
	return f, nil
}

// timestamp decodes an exFAT timestamp (local time, 2-second steps),
// its 10-millisecond increment (0-199) and its UTC offset (bit 7: the
// offset is given; bits 0-6: signed, in 15 minutes) as UTC. Without an
// offset it is taken as UTC, as the zone it was written in is unknown. A
// day or month of 0 is taken as 1.
func timestamp(ts uint32, inc10ms, utcOff byte) time.Time {
	t := time.Date(1980+int(ts>>25), time.Month(max(1, ts>>21&0xf)), int(max(1, ts>>16&0x1f)),
		int(ts>>11&0x1f), int(ts>>5&0x3f), 2*int(ts&0x1f), 0, time.UTC)
	if inc10ms < 200 {
		t = t.Add(time.Duration(inc10ms) * 10 * time.Millisecond)
	}
	if utcOff&0x80 != 0 {
		quarters := int(int8(utcOff<<1) >> 1)
		t = t.Add(-time.Duration(quarters) * 15 * time.Minute)
	}
	return t
}
