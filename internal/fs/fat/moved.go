package fat

import (
	"encoding/binary"
	"fmt"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// moved sets the boot sector's hidden sectors (BPB_HiddSec, the sectors
// before the partition, which DOS and Windows boot code adds to every
// sector it loads) to start, in the filesystem's sectors, in the boot
// sector and in FAT32's backup of it.
func moved(rw vfs.ReadWriterAt, size, start int64) error {
	var bs [512]byte
	if _, err := rw.ReadAt(bs[:], 0); err != nil {
		return fmt.Errorf("FAT: read the boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 {
		return fmt.Errorf("FAT: boot sector at byte 0: %d bytes per sector", bps)
	}
	if start%bps != 0 || start/bps > 1<<32-1 {
		return fmt.Errorf("FAT: a partition start of byte %d is not a whole number of %d-byte sectors that fits in 32 bits", start, bps)
	}
	sectors := []int64{0}
	if binary.LittleEndian.Uint16(bs[22:]) == 0 { // FAT32: BPB_FATSz16 is 0
		if bk := int64(binary.LittleEndian.Uint16(bs[50:])); bk != 0 && bk != 0xffff && (bk+1)*bps <= size {
			sectors = append(sectors, bk)
		}
	}
	var field [4]byte
	binary.LittleEndian.PutUint32(field[:], uint32(start/bps))
	for _, s := range sectors {
		if _, err := rw.WriteAt(field[:], s*bps+28); err != nil {
			return fmt.Errorf("FAT: write the hidden sectors of the boot sector at sector %d: %w", s, err)
		}
	}
	return nil
}
