package vfs

import (
	"encoding/binary"
	"fmt"
)

// BootSector reads the boot sector of a filesystem with a BIOS parameter
// block (FAT, NTFS; name says which in errors) and its bytes per sector,
// a power of two from minSector to 4096.
func BootSector(rw ReadWriterAt, name string, minSector int64) (bs [512]byte, sector int64, err error) {
	if _, err := rw.ReadAt(bs[:], 0); err != nil {
		return bs, 0, fmt.Errorf("%s: read the boot sector: %w", name, err)
	}
	sector = int64(binary.LittleEndian.Uint16(bs[11:]))
	if sector < minSector || sector > 4096 || sector&(sector-1) != 0 {
		return bs, 0, fmt.Errorf("%s: boot sector at byte 0: %d bytes per sector", name, sector)
	}
	return bs, sector, nil
}

// SetHiddenSectors writes start, the partition's first byte on its disk,
// as the BIOS parameter block's hidden sectors (the sectors before the
// partition, which DOS and Windows boot code adds to every sector it
// loads) into the boot sectors at each of the byte offsets at.
func SetHiddenSectors(rw ReadWriterAt, name string, sector, start int64, at []int64) error {
	if start%sector != 0 || start/sector > 1<<32-1 {
		return fmt.Errorf("%s: a partition start of byte %d is not a whole number of %d-byte sectors that fits in 32 bits", name, start, sector)
	}
	var field [4]byte
	binary.LittleEndian.PutUint32(field[:], uint32(start/sector))
	for _, off := range at {
		if _, err := rw.WriteAt(field[:], off+28); err != nil {
			return fmt.Errorf("%s: write the hidden sectors of the boot sector at byte %d: %w", name, off, err)
		}
	}
	return nil
}
