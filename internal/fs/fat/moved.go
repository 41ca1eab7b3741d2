package fat

import (
	"encoding/binary"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// moved sets the boot sector's hidden sectors (BPB_HiddSec) to start, in
// the boot sector and in FAT32's backup of it.
func moved(rw vfs.ReadWriterAt, size, start int64) error {
	bs, bps, err := vfs.BootSector(rw, "FAT", 512)
	if err != nil {
		return err
	}
	at := []int64{0}
	if binary.LittleEndian.Uint16(bs[22:]) == 0 { // FAT32: BPB_FATSz16 is 0
		if bk := int64(binary.LittleEndian.Uint16(bs[50:])); bk != 0 && bk != 0xffff && (bk+1)*bps <= size {
			at = append(at, bk*bps)
		}
	}
	return vfs.SetHiddenSectors(rw, "FAT", bps, start, at)
}
