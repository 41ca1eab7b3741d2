package exfat

import (
	"encoding/binary"
	"fmt"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// moved sets VolumeOffset (the partition's start in sectors) in the main
// and backup boot regions and writes each region's checksum sector anew.
func moved(rw vfs.ReadWriterAt, size, start int64) error {
	var bs [512]byte
	if _, err := rw.ReadAt(bs[:], 0); err != nil {
		return fmt.Errorf("exFAT: read the boot sector: %w", err)
	}
	shift := bs[108]
	if shift < 9 || shift > 12 {
		return fmt.Errorf("exFAT: boot sector at byte 0: BytesPerSectorShift %d", shift)
	}
	bps := int64(1) << shift
	if start%bps != 0 {
		return fmt.Errorf("exFAT: a partition start of byte %d is not a whole number of %d-byte sectors", start, bps)
	}
	if 24*bps > size {
		return fmt.Errorf("exFAT: the volume (%d bytes) is smaller than its boot regions", size)
	}
	// Main boot region: sectors 0..11; backup: 12..23. Sector 11 (of
	// each) is the checksum of sectors 0..10 repeated.
	for _, region := range []int64{0, 12 * bps} {
		b := make([]byte, 11*bps)
		if _, err := rw.ReadAt(b, region); err != nil {
			return fmt.Errorf("exFAT: read the boot region at byte %d: %w", region, err)
		}
		if string(b[3:11]) != "EXFAT   " {
			if region == 0 {
				return fmt.Errorf("exFAT: no boot sector at byte 0")
			}
			continue // no backup region to keep in step
		}
		binary.LittleEndian.PutUint64(b[64:], uint64(start/bps))
		sum := bootChecksum(b)
		sec := make([]byte, bps)
		for i := 0; i < len(sec); i += 4 {
			binary.LittleEndian.PutUint32(sec[i:], sum)
		}
		if _, err := rw.WriteAt(b[:512], region); err != nil {
			return fmt.Errorf("exFAT: write the boot sector at byte %d: %w", region, err)
		}
		if _, err := rw.WriteAt(sec, region+11*bps); err != nil {
			return fmt.Errorf("exFAT: write the boot checksum at byte %d: %w", region+11*bps, err)
		}
	}
	return nil
}
