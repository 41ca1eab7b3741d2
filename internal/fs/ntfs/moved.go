package ntfs

import (
	"encoding/binary"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// moved sets the boot sector's hidden sectors to start (a moved NTFS
// without it does not boot), in the boot sector and in its backups.
func moved(rw vfs.ReadWriterAt, size, start int64) error {
	bs, bps, err := vfs.BootSector(rw, "NTFS", 256)
	if err != nil {
		return err
	}
	at := []int64{0}
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
	for _, off := range candidates {
		var bk [512]byte
		if _, err := rw.ReadAt(bk[:], off); err == nil && string(bk[3:11]) == "NTFS    " {
			at = append(at, off)
		}
	}
	return vfs.SetHiddenSectors(rw, "NTFS", bps, start, at)
}
