package ntfs

import (
	"encoding/binary"
	"fmt"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// moved sets the boot sector's hidden sectors (the sectors before the
// partition, which Windows' boot code adds to every sector it loads; a
// moved NTFS without it does not boot) to start, in the boot sector and
// in its backups.
func moved(rw vfs.ReadWriterAt, size, start int64) error {
	var bs [512]byte
	if _, err := rw.ReadAt(bs[:], 0); err != nil {
		return fmt.Errorf("NTFS: read the boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return fmt.Errorf("NTFS: boot sector at byte 0: %d bytes per sector", bps)
	}
	if start%bps != 0 || start/bps > 1<<32-1 {
		return fmt.Errorf("NTFS: a partition start of byte %d is not a whole number of %d-byte sectors that fits in 32 bits", start, bps)
	}
	offs := []int64{28}
	// The backup boot sector: after the volume's last sector (where NTFS
	// looks for it) and in the partition's last one (where ntfsfix and
	// Windows' chkdsk look); one sector when the volume fills its
	// partition, two when it ends short of it (ntfsresize rounds down).
	var candidates []int64
	if total := binary.LittleEndian.Uint64(bs[40:]); total < uint64(size/bps) {
		candidates = append(candidates, int64(total)*bps)
	}
	if last := size/bps*bps - bps; len(candidates) == 0 || last != candidates[0] {
		candidates = append(candidates, last)
	}
	for _, at := range candidates {
		var bk [512]byte
		if _, err := rw.ReadAt(bk[:], at); err == nil && string(bk[3:11]) == "NTFS    " {
			offs = append(offs, at+28)
		}
	}
	var field [4]byte
	binary.LittleEndian.PutUint32(field[:], uint32(start/bps))
	for _, off := range offs {
		if _, err := rw.WriteAt(field[:], off); err != nil {
			return fmt.Errorf("NTFS: write the hidden sectors at byte %d: %w", off-28, err)
		}
	}
	return nil
}
