package fsread

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/platter-dev/platter/internal/fs/f2fs"
	"github.com/platter-dev/platter/internal/fs/swap"
	"github.com/platter-dev/platter/internal/fs/xfs"
)

// Identity is what a person knows a filesystem by: its label and its
// UUID, as blkid shows them.
type Identity struct {
	Label string
	UUID  string
}

// Identify reads the label and UUID of the filesystem of kind fs (as
// image metadata names it) in r. A filesystem it does not know, or whose
// structures it cannot read, gives an empty Identity: this only describes.
func Identify(r io.ReaderAt, size int64, fs string) Identity {
	switch {
	case strings.HasPrefix(fs, "ext"):
		return extIdentity(r)
	case strings.HasPrefix(fs, "fat"):
		return fatIdentity(r, fs == "fat32")
	case fs == "ntfs":
		return ntfsIdentity(r)
	case fs == "exfat":
		return exfatIdentity(r, size)
	case fs == "btrfs":
		return btrfsIdentity(r)
	case fs == "xfs":
		if label, uuid, err := xfs.Identity(r); err == nil {
			return Identity{Label: label, UUID: uuid}
		}
	case fs == "f2fs":
		if sb, err := f2fs.ReadSuper(r, size); err == nil {
			return Identity{Label: sb.Label, UUID: sb.UUIDString()}
		}
	case fs == "swap":
		if h, err := swap.ReadHeader(r, size); err == nil {
			return Identity{Label: h.Label, UUID: h.UUIDString()}
		}
	}
	return Identity{}
}

// extIdentity: s_uuid (superblock byte 0x68) and s_volume_name (0x78).
func extIdentity(r io.ReaderAt) Identity {
	sb := make([]byte, 256)
	if _, err := r.ReadAt(sb, 1024); err != nil || binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
		return Identity{}
	}
	u := sb[0x68:0x78]
	return Identity{
		Label: cString(sb[0x78:0x88]),
		UUID:  fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
	}
}

// fatIdentity: the boot sector's volume id and label (at 39 and 43, or
// 67 and 71 in FAT32's extended BPB), when the extended boot signature
// says they are there.
func fatIdentity(r io.ReaderAt, fat32 bool) Identity {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return Identity{}
	}
	at := 36
	if fat32 {
		at = 64
	}
	sig := bs[at+2]
	if sig != 0x29 && sig != 0x28 { // 0x28: a volume id, no label
		return Identity{}
	}
	id := binary.LittleEndian.Uint32(bs[at+3:])
	label := ""
	if sig == 0x29 {
		if label = strings.TrimRight(string(bs[at+7:at+18]), " \x00"); label == "NO NAME" {
			label = ""
		}
	}
	return Identity{Label: label, UUID: fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)}
}

// ntfsIdentity: the volume serial number (boot sector byte 0x48) as
// blkid shows it, and the $VOLUME_NAME attribute of $Volume (MFT record
// 3).
func ntfsIdentity(r io.ReaderAt) Identity {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil || string(bs[3:11]) != "NTFS    " {
		return Identity{}
	}
	id := Identity{UUID: fmt.Sprintf("%016X", binary.LittleEndian.Uint64(bs[0x48:]))}
	if n, err := openNTFS(r); err == nil {
		id.Label, _ = n.label()
	}
	return id
}

// btrfsIdentity: the superblock (at byte 65536) holds the fsid at 0x20
// and the label at 0x12b.
func btrfsIdentity(r io.ReaderAt) Identity {
	sb := make([]byte, 0x22b)
	if _, err := r.ReadAt(sb, 64<<10); err != nil || string(sb[0x40:0x48]) != "_BHRfS_M" {
		return Identity{}
	}
	u := sb[0x20:0x30]
	return Identity{
		Label: cString(sb[0x12b:0x22b]),
		UUID:  fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]),
	}
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
