// Package iso9660 reads ISO 9660 volumes (CD-ROM and DVD images, .iso
// files, hybrid installer images): their volume descriptors, the used
// set (the whole volume: optical filesystems are written whole), the
// label and UUID blkid shows, the files with Rock Ridge or Joliet names
// (internal/fs/vfs), and the El Torito boot catalog.
//
// Every number read from the volume is hostile: extents are bounded by
// the volume and the source's size, directory records by their sector,
// continuation areas by a count, directories by their ancestors (a
// directory whose extent is an ancestor's is a loop, refused). Damage
// is a *block.CorruptError naming the byte; nothing panics.
package iso9660

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	// descSize is the size of a volume descriptor, and where the set
	// starts is sector 16 of them, whatever the logical block size.
	descSize  = 2048
	descStart = 16 * descSize
	// maxDescs bounds the volume descriptors read before the set's
	// terminator.
	maxDescs = 64
)

// Volume descriptor types.
const (
	vdBoot       = 0
	vdPrimary    = 1
	vdSupplement = 2
	vdTerminator = 255
)

func corrupt(off int64, format string, args ...any) error {
	return &block.CorruptError{What: "iso9660", Off: off, Msg: fmt.Sprintf(format, args...)}
}

func notMine(why string) error { return fmt.Errorf("iso9660: %s: %w", why, block.ErrNotMine) }

// volume is an ISO 9660 volume as its descriptors describe it.
type volume struct {
	r         io.ReaderAt
	size      int64 // the source's bytes
	blockSize int64 // the logical block size: 2048 nearly always
	blocks    int64 // the volume space size, in logical blocks
	pvd       []byte
	joliet    []byte // the Joliet supplementary descriptor, nil without one
	bootCat   int64  // the El Torito boot catalog's logical block, -1 without one
	pvdOff    int64
	jolietOff int64
	descEnd   int64 // the first byte after the terminator
}

// open reads the volume descriptor set of the volume in r.
func open(r io.ReaderAt, size int64) (*volume, error) {
	if size < descStart+descSize {
		return nil, notMine("too small to hold a volume descriptor")
	}
	v := &volume{r: r, size: size, bootCat: -1}
	b := make([]byte, descSize)
	for i := int64(0); i < maxDescs; i++ {
		off := descStart + i*descSize
		if off+descSize > size {
			if i == 0 {
				return nil, notMine("too small")
			}
			return nil, corrupt(off, "the volume descriptor set runs past the end of the %d-byte source", size)
		}
		if err := vfs.ReadFull(r, b, off); err != nil {
			return nil, fmt.Errorf("iso9660: read the volume descriptor at byte %d: %w", off, err)
		}
		if string(b[1:6]) != "CD001" {
			if i == 0 {
				return nil, notMine(`no "CD001" volume descriptor at byte 32768`)
			}
			return nil, corrupt(off, "volume descriptor %d lacks its CD001 signature before a terminator", i)
		}
		switch b[0] {
		case vdTerminator:
			if v.pvd == nil {
				return nil, corrupt(off, "the volume descriptor set ends without a primary volume descriptor")
			}
			v.descEnd = off + descSize
			return v, v.geometry()
		case vdPrimary:
			if v.pvd == nil {
				v.pvd, v.pvdOff = bytes.Clone(b), off
			}
		case vdSupplement:
			if v.joliet == nil && b[0] == vdSupplement && jolietEscape(b[88:120]) {
				v.joliet, v.jolietOff = bytes.Clone(b), off
			}
		case vdBoot:
			if strings.HasPrefix(string(b[7:39]), "EL TORITO SPECIFICATION") {
				v.bootCat = int64(binary.LittleEndian.Uint32(b[71:]))
			}
		}
	}
	return nil, corrupt(descStart, "no volume descriptor set terminator in the first %d descriptors", maxDescs)
}

// jolietEscape says whether a supplementary descriptor's escape
// sequences name UCS-2 (Joliet levels 1-3).
func jolietEscape(esc []byte) bool {
	return bytes.HasPrefix(esc, []byte("%/@")) || bytes.HasPrefix(esc, []byte("%/C")) || bytes.HasPrefix(esc, []byte("%/E"))
}

// geometry checks the primary descriptor's block size and volume size.
func (v *volume) geometry() error {
	le := binary.LittleEndian
	v.blockSize = int64(le.Uint16(v.pvd[128:]))
	switch v.blockSize {
	case 512, 1024, 2048:
	default:
		return corrupt(v.pvdOff+128, "logical block size %d (512, 1024 or 2048 expected)", v.blockSize)
	}
	v.blocks = int64(le.Uint32(v.pvd[80:]))
	if v.blocks*v.blockSize < descStart+descSize {
		return corrupt(v.pvdOff+80, "a volume of %d blocks cannot hold its own descriptors", v.blocks)
	}
	return nil
}

// end is the first byte after the volume, within the source.
func (v *volume) end() int64 { return min(v.blocks*v.blockSize, v.size) }

// Detect reads the ISO 9660 volume in r (size bytes) and returns its
// used blocks: every block of the volume, as optical filesystems are
// written whole. Not ISO 9660: an error wrapping block.ErrNotMine. A
// volume longer than the source (a truncated image) comes back with a
// Warning.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	end := v.end()
	u, err := block.NewUsage("iso9660", descSize, size, func(first int64, m *block.Map) error {
		last := min(first+m.Blocks(), (end+descSize-1)/descSize)
		if last > first {
			m.SetRange(0, last-first)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if want := v.blocks * v.blockSize; want > size {
		u.Warning = fmt.Sprintf("iso9660: the volume is %d bytes, the source only %d: it is cut short, and its last %d bytes are missing", want, size, want-size)
	}
	return u, nil
}

// Volume is what the volume descriptors say of a volume, for info.
type Volume struct {
	Label     string // the volume identifier, Joliet's where there is one
	UUID      string // as blkid shows it: the modification time
	BlockSize int64
	Size      int64 // the volume space, in bytes
	Joliet    bool
	System    string // the system identifier
	Publisher string
	Created   time.Time
}

// ReadVolume reads the descriptors of the ISO 9660 volume in r.
func ReadVolume(r io.ReaderAt, size int64) (*Volume, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	out := &Volume{Label: v.label(), UUID: v.uuid(), BlockSize: v.blockSize, Size: v.blocks * v.blockSize, Joliet: v.joliet != nil,
		System: strings.TrimRight(string(v.pvd[8:40]), " \x00"), Publisher: strings.TrimRight(string(v.pvd[318:446]), " \x00")}
	out.Created, _ = decDate(v.pvd[813:830])
	return out, nil
}

// label is the volume identifier as blkid shows it: the primary
// descriptor's bytes as they are. With Joliet, whose label holds only 16
// characters: when the primary label begins with the Joliet one (ASCII,
// case aside), the Joliet characters then the rest of the primary label,
// each byte a Latin-1 character (as blkid merges them); else the Joliet
// label alone.
func (v *volume) label() string {
	pvd := v.pvd[40:72]
	latin1 := func(b []byte) string {
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return string(r)
	}
	trim := func(s string) string { return strings.TrimRight(s, " \x00") }
	if v.joliet == nil {
		return trim(string(pvd))
	}
	j := v.joliet[40:72]
	var out []rune
	i := 0
	for ; i < 16; i++ {
		c := rune(binary.BigEndian.Uint16(j[2*i:]))
		if c == 0 {
			break
		}
		if c >= 0x80 || unicode.ToUpper(c) != unicode.ToUpper(rune(pvd[i])) {
			// Not a truncated copy of the primary label: Joliet's own.
			return trim(ucs2(j))
		}
		out = append(out, c)
	}
	return trim(string(out) + latin1(pvd[i:]))
}

// uuid is the UUID blkid gives an ISO 9660 volume: its modification
// time (its creation time when that is unset) as "2024-01-02-03-04-05-00",
// as libblkid reads it (its modification time first, not its creation
// time: checked against blkid in TestDetectIdentify).
func (v *volume) uuid() string {
	for _, at := range []int{830, 813} {
		d := v.pvd[at : at+16]
		if allDigits(d) && !bytes.Equal(d, []byte("0000000000000000")) {
			return fmt.Sprintf("%s-%s-%s-%s-%s-%s-%s", d[0:4], d[4:6], d[6:8], d[8:10], d[10:12], d[12:14], d[14:16])
		}
	}
	return ""
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func identify(r io.ReaderAt, size int64) vfs.Identity {
	v, err := open(r, size)
	if err != nil {
		return vfs.Identity{}
	}
	return vfs.Identity{Label: v.label(), UUID: v.uuid()}
}

// ucs2 decodes big-endian UCS-2 (Joliet's names); an odd last byte is
// dropped.
func ucs2(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.BigEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// decDate reads a 17-byte descriptor date ("YYYYMMDDHHMMSScc" and an
// offset from GMT in 15-minute units).
func decDate(b []byte) (time.Time, bool) {
	if len(b) < 17 || !allDigits(b[:16]) {
		return time.Time{}, false
	}
	n := func(i, j int) int {
		x := 0
		for _, c := range b[i:j] {
			x = x*10 + int(c-'0')
		}
		return x
	}
	if n(0, 4) == 0 {
		return time.Time{}, false
	}
	zone := time.FixedZone("", int(int8(b[16]))*15*60)
	return time.Date(n(0, 4), time.Month(n(4, 6)), n(6, 8), n(8, 10), n(10, 12), n(12, 14), n(14, 16)*10e6, zone).UTC(), true
}

// recDate reads a 7-byte directory record date.
func recDate(b []byte) time.Time {
	if len(b) < 7 || b[1] == 0 {
		return time.Time{}
	}
	zone := time.FixedZone("", int(int8(b[6]))*15*60)
	return time.Date(1900+int(b[0]), time.Month(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5]), 0, zone).UTC()
}
