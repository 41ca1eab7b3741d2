package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FS is FAT12/16/32 as the registry (internal/fsmap) knows it.
var FS = vfs.Filesystem{
	Names:    []string{"fat12", "fat16", "fat32"},
	Title:    "FAT",
	Detect:   Detect,
	Identify: identify,
	Moved:    moved,
	Owners:   Owners,
	// The boot sector decides the FAT type, not the name an image
	// recorded: images made before small FAT32 volumes were told from
	// FAT16 name them fat12 or fat16.
	OpenFiles: func(r io.ReaderAt, size int64) (vfs.Files, error) {
		f, err := OpenFiles(r, size)
		if err != nil {
			return nil, err
		}
		return vfs.Adapt(f, entry, true), nil
	},
}

// entry is a File as vfs.Entry. The reader finds the first entry of a
// name, as fsread lists it, leaves out "." and ".." by their 8.3 names
// (a long name "..", or any other, is handed up for fsread to judge),
// and returns errors on damage, never panics (FuzzFiles holds it to
// that).
func entry(f File) vfs.Entry {
	return vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Err: f.Err}
}

// identify: the boot sector's volume id and label (at 39 and 43, or 67
// and 71 in FAT32's extended BPB), when the extended boot signature says
// they are there. FAT32's BPB is the one whose 16-bit FAT size is 0, as
// parseBPB decides.
func identify(r io.ReaderAt, _ int64) vfs.Identity {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return vfs.Identity{}
	}
	at := 36
	if binary.LittleEndian.Uint16(bs[0x16:]) == 0 {
		at = 64
	}
	sig := bs[at+2]
	if sig != 0x29 && sig != 0x28 { // 0x28: a volume id, no label
		return vfs.Identity{}
	}
	id := binary.LittleEndian.Uint32(bs[at+3:])
	label := ""
	if sig == 0x29 {
		if label = strings.TrimRight(string(bs[at+7:at+18]), " \x00"); label == "NO NAME" {
			label = ""
		}
	}
	return vfs.Identity{Label: label, UUID: fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)}
}
