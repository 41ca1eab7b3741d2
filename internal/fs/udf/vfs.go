package udf

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is UDF as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"udf"},
	Title:    "UDF",
	Detect:   Detect,
	Identify: identify,
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := OpenFiles(r, size)
		if err != nil {
			return nil, err
		}
		return vfs.Adapt(f, entry, false), nil
	},
}

// Detect finds the UDF volume in r (size bytes) and returns every block
// of it as used. Optical filesystems are written whole, so the whole
// track is what a disc holds; a UDF hard disk or rewritable medium has a
// Space Bitmap Descriptor Platter does not read yet, so it too is copied
// whole rather than trusted to a map Platter cannot check. Not UDF: an
// error wrapping block.ErrNotMine.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	return block.NewUsage("udf", v.bs, size, func(first int64, m *block.Map) error {
		m.SetRange(0, m.Blocks())
		return nil
	})
}

// identify: the Logical Volume Identifier as the label (blkid's LABEL)
// and the UUID blkid derives from the Volume Set Identifier.
func identify(r io.ReaderAt, size int64) vfs.Identity {
	v, err := open(r, size)
	if err != nil {
		return vfs.Identity{}
	}
	return vfs.Identity{Label: dstring(v.lvID), UUID: volSetUUID(v.volSetID)}
}

// volSetUUID is libblkid's gen_uuid_from_volset_id: the first 16 bytes
// of the Volume Set Identifier in UTF-8 (UDF 2.2.2.5 wants its first 16
// characters unique, the first 8 a hex time stamp), taken as they are
// while they are hex digits, hex-encoded from where they are not: 16
// hex digits, or "" when the identifier has fewer than 8 bytes.
func volSetUUID(d []byte) string {
	clen := max(int(d[len(d)-1])-1, 0)
	clen = min(clen, len(d)-2)
	c := d[1 : 1+clen]
	var runes []rune
	switch d[0] {
	case 8:
		for _, x := range c {
			runes = append(runes, rune(x))
		}
	case 16:
		u := make([]uint16, len(c)/2)
		for i := range u {
			u[i] = uint16(c[2*i])<<8 | uint16(c[2*i+1])
		}
		runes = utf16.Decode(u)
	default:
		return ""
	}
	var buf []byte
	for _, r := range runes {
		if r == 0 || len(buf)+utf8.RuneLen(r) > 16 {
			break
		}
		buf = utf8.AppendRune(buf, r)
	}
	if len(buf) < 8 {
		return ""
	}
	b := make([]byte, 16)
	copy(b, buf)
	hex := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
	nonhex := 16
	for i, x := range b {
		if !hex(x) {
			nonhex = i
			break
		}
	}
	switch {
	case nonhex < 8:
		return fmt.Sprintf("%x", b[:8])
	case nonhex < 16:
		return strings.ToLower(string(b[:8])) + fmt.Sprintf("%x", b[8:12])
	}
	return strings.ToLower(string(b))
}
