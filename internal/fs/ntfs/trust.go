package ntfs

// This file decides whether an NTFS volume's $Bitmap can be followed.
// It cannot when Windows would repair or replay the volume before using
// it, which may need clusters $Bitmap calls free:
//
//   - $Volume's flags mark the volume dirty (chkdsk runs at the next
//     boot);
//   - $LogFile holds records to replay (Windows crashed or hibernated:
//     "fast startup"); ntfs-3g refuses to mount such a volume;
//   - an in-use MFT record maps clusters $Bitmap calls free, as chkdsk
//     and ntfsclone check.

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	volumeIsDirty = 0x0001 // $VOLUME_INFORMATION's flags

	restartIsClean = 0x0002 // RESTART_VOLUME_IS_CLEAN
	logNoClient    = 0xffff // LOGFILE_NO_CLIENT

	// checkBatch bounds the runs held at once while they are checked
	// against $Bitmap.
	checkBatch = 1 << 20
)

// distrust returns why the volume's $Bitmap cannot be followed ("" when
// it can).
func (v *volume) distrust() (string, error) {
	if why, err := v.dirty(); why != "" || err != nil {
		return why, err
	}
	if why, err := v.logFile(); why != "" || err != nil {
		return why, err
	}
	return v.checkRecords()
}

// dirty reads $Volume's flags.
func (v *volume) dirty() (string, error) {
	f, err := v.file(recVolume)
	if err != nil {
		return "", err
	}
	for _, a := range f.attrs {
		if a.typ != attrVolumeInfo {
			continue
		}
		switch {
		case !a.resident:
			return "", corrupt(recVolume, a.off, "$VOLUME_INFORMATION is not resident")
		case len(a.value) < 12:
			return "", corrupt(recVolume, a.off, "$VOLUME_INFORMATION of %d bytes is too short", len(a.value))
		case binary.LittleEndian.Uint16(a.value[0xa:])&volumeIsDirty != 0:
			return "is marked dirty ($Volume): Windows checks and repairs it (chkdsk) at the next boot, and may need clusters $Bitmap calls free", nil
		}
		return "", nil
	}
	return "", nil
}

// logFile reads $LogFile's restart pages as ntfs-3g does before it
// mounts (libntfs-3g/logfile.c): an empty log (0xff) is clean; else the
// newer of the two restart pages decides, and a log with clients in use
// but no "clean" flag holds records to replay. A log that is not empty
// and has no restart page is one Windows would not take as clean either.
func (v *volume) logFile() (string, error) {
	log, err := v.systemData(recLogFile)
	if err != nil {
		return "", fmt.Errorf("ntfs: $LogFile: %w", err)
	}
	le := binary.LittleEndian
	head := make([]byte, stride)
	var (
		found   int
		bestLSN uint64
		flags   uint16
		inUse   uint16
		empty   = true
	)
	// Where a restart page may start: 0, then powers of two (the second
	// page sits at the system page size).
	for pos := int64(0); pos <= 64<<10 && found < 2; {
		if err := vfs.ReadFull(log, head, pos); err != nil {
			break // past the log's data
		}
		isEmpty := le.Uint32(head) == 0xffffffff
		if !isEmpty {
			empty = false
		} else if !empty {
			break
		}
		magic := string(head[:4])
		if magic == "RCRD" {
			break
		}
		if magic == "RSTR" || magic == "CHKD" {
			sys, logp := le.Uint32(head[0x10:]), le.Uint32(head[0x14:])
			raOff := int64(le.Uint16(head[0x18:]))
			if sys >= stride && logp >= stride && sys&(sys-1) == 0 && logp&(logp-1) == 0 &&
				raOff&7 == 0 && raOff >= 0x1e && raOff+0x10 <= stride-2 {
				ra := head[raOff:]
				lsn := le.Uint64(ra)
				if magic == "CHKD" {
					lsn = le.Uint64(head[8:])
				}
				if found == 0 || lsn > bestLSN {
					bestLSN, inUse, flags = lsn, le.Uint16(ra[0xc:]), le.Uint16(ra[0xe:])
				}
				found++
			}
		}
		if pos == 0 {
			pos = stride
		} else {
			pos <<= 1
		}
	}
	switch {
	case empty:
		return "", nil
	case found == 0:
		return "has a $LogFile that is neither empty nor readable (no restart page): Windows may replay or repair it, and may need clusters $Bitmap calls free", nil
	case inUse != logNoClient && flags&restartIsClean == 0:
		return "was not cleanly unmounted: its $LogFile holds records to replay (Windows crashed, or hibernated with fast startup), which may need clusters $Bitmap calls free", nil
	}
	return "", nil
}

// checkRecords reads every MFT record and returns why $Bitmap cannot be
// followed when an in-use record's non-resident attributes use clusters
// it calls free (or lie outside the volume).
func (v *volume) checkRecords() (string, error) {
	type use struct {
		run
		rec int64
	}
	var uses []use
	check := func() (string, error) {
		sort.Slice(uses, func(i, j int) bool { return uses[i].lcn < uses[j].lcn })
		for _, u := range uses {
			for c := u.lcn; c < u.lcn+u.n; {
				b, err := v.bitmapByte(c / 8)
				if err != nil {
					return "", err
				}
				if c%8 == 0 && b == 0xff && c+8 <= u.lcn+u.n {
					c += 8
					continue
				}
				if b&(1<<(c%8)) == 0 {
					return fmt.Sprintf("has clusters in use that $Bitmap calls free: MFT record %d maps cluster %d; chkdsk would repair it", u.rec, c), nil
				}
				c++
			}
		}
		uses = uses[:0]
		return "", nil
	}
	const batch = 64
	buf := make([]byte, batch*v.recordSize)
	le := binary.LittleEndian
	for first := int64(0); first < v.records; first += batch {
		n := min(batch, v.records-first)
		b := buf[:n*v.recordSize]
		if err := vfs.ReadFull(v.mft, b, first*v.recordSize); err != nil {
			return "", fmt.Errorf("ntfs: read MFT records %d to %d: %w", first, first+n-1, err)
		}
		for k := int64(0); k < n; k++ {
			b, num := b[k*v.recordSize:(k+1)*v.recordSize], first+k
			if string(b[:4]) != "FILE" || le.Uint16(b[0x16:])&recordInUse == 0 {
				continue
			}
			off := v.mft.where(num * v.recordSize)
			if err := fixup(b, num, off, "record"); err != nil {
				continue // a torn record: chkdsk's business, not a map to follow
			}
			r, err := recordHeader(num, b, off)
			var attrs []attr
			if err == nil {
				attrs, err = v.parseAttrs(r)
			}
			if err != nil {
				return fmt.Sprintf("has a damaged MFT record %d (%v); chkdsk would repair it", num, err), nil
			}
			for _, a := range attrs {
				for _, r := range a.runs {
					if r.lcn >= 0 {
						uses = append(uses, use{r, num})
					}
				}
			}
			if len(uses) >= checkBatch {
				if why, err := check(); why != "" || err != nil {
					return why, err
				}
			}
		}
	}
	return check()
}
