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
)

const (
	recLogFile = 2 // MFT record number of $LogFile
	recVolume  = 3 // MFT record number of $Volume

	attrVolumeInfo = 0x70
	volumeIsDirty  = 0x0001

	restartIsClean = 0x0002 // RESTART_VOLUME_IS_CLEAN
	logNoClient    = 0xffff // LOGFILE_NO_CLIENT

	recordInUse = 0x0001

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
	off, err := v.mftOffset(recVolume)
	if err != nil {
		return "", err
	}
	rec, err := v.readRecordAt(off)
	if err != nil {
		return "", err
	}
	a, aoff, err := attribute(rec, off, attrVolumeInfo)
	if err != nil || a == nil {
		return "", err
	}
	le := binary.LittleEndian
	if a[8] != 0 || len(a) < 0x18 {
		return "", corrupt(aoff, "$VOLUME_INFORMATION is not resident")
	}
	voff, vlen := int(le.Uint16(a[0x14:])), int(le.Uint32(a[0x10:]))
	if vlen < 12 || voff > len(a) || vlen > len(a)-voff {
		return "", corrupt(aoff, "$VOLUME_INFORMATION of %d bytes at %d does not fit its attribute", vlen, voff)
	}
	if le.Uint16(a[voff+0xa:])&volumeIsDirty != 0 {
		return "is marked dirty ($Volume): Windows checks and repairs it (chkdsk) at the next boot, and may need clusters $Bitmap calls free", nil
	}
	return "", nil
}

// attribute returns the first attribute of type typ in an MFT record
// (nil: none) and its byte offset.
func attribute(rec []byte, recOff int64, typ uint32) (found []byte, at int64, err error) {
	err = attributes(rec, recOff, func(t uint32, a []byte, off int64) bool {
		if t == typ {
			found, at = a, off
			return false
		}
		return true
	})
	return found, at, err
}

// logFile reads $LogFile's restart pages as ntfs-3g does before it
// mounts (libntfs-3g/logfile.c): an empty log (0xff) is clean; else the
// newer of the two restart pages decides, and a log with clients in use
// but no "clean" flag holds records to replay. A log that is not empty
// and has no restart page is one Windows would not take as clean either.
func (v *volume) logFile() (string, error) {
	off, err := v.mftOffset(recLogFile)
	if err != nil {
		return "", err
	}
	rec, err := v.readRecordAt(off)
	if err != nil {
		return "", err
	}
	runs, err := v.dataRuns(rec, off)
	if err != nil {
		return "", fmt.Errorf("ntfs: $LogFile: %w", err)
	}
	le := binary.LittleEndian
	head := make([]byte, fixupBlock)
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
		if err := v.readRuns(runs, head, pos); err != nil {
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
			if sys >= fixupBlock && logp >= fixupBlock && sys&(sys-1) == 0 && logp&(logp-1) == 0 &&
				raOff&7 == 0 && raOff >= 0x1e && raOff+0x10 <= fixupBlock-2 {
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
			pos = fixupBlock
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

// readRuns reads len(p) bytes of an attribute whose data runs are runs
// (sorted by vcn) from byte off of its data; sparse runs read as zeros.
func (v *volume) readRuns(runs []run, p []byte, off int64) error {
	end := off + int64(len(p))
	i := sort.Search(len(runs), func(i int) bool { return (runs[i].vcn+runs[i].n)*v.clusterSize > off })
	covered := off
	for ; i < len(runs) && runs[i].vcn*v.clusterSize < end; i++ {
		r := runs[i]
		rs, re := r.vcn*v.clusterSize, (r.vcn+r.n)*v.clusterSize
		s, e := max(rs, off), min(re, end)
		if s > covered {
			break
		}
		dst := p[s-off : e-off]
		if r.lcn < 0 {
			clear(dst)
		} else {
			at := r.lcn*v.clusterSize + s - rs
			if _, err := v.r.ReadAt(dst, at); err != nil {
				return fmt.Errorf("read at byte %d: %w", at, err)
			}
		}
		covered = e
	}
	if covered < end {
		return corrupt(0, "bytes %d to %d are not mapped by the data runs", covered, end)
	}
	return nil
}

// checkRecords reads every MFT record and returns why $Bitmap cannot be
// followed when an in-use record's non-resident attributes use clusters
// it calls free (or lie outside the volume).
func (v *volume) checkRecords() (string, error) {
	var total int64
	for _, r := range v.mft {
		total = max(total, r.vcn+r.n)
	}
	records := min(total*v.clusterSize, v.clusters*v.clusterSize) / v.recordSize
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
	for first := int64(0); first < records; first += batch {
		n := min(batch, records-first)
		b := buf[:n*v.recordSize]
		if err := v.readRuns(v.mft, b, first*v.recordSize); err != nil {
			return "", fmt.Errorf("ntfs: read MFT records %d to %d: %w", first, first+n-1, err)
		}
		for k := int64(0); k < n; k++ {
			rec := b[k*v.recordSize : (k+1)*v.recordSize]
			num := first + k
			if string(rec[:4]) != "FILE" || le.Uint16(rec[0x16:])&recordInUse == 0 {
				continue
			}
			off, _ := v.mftOffset(num)
			if err := fixup(rec, off); err != nil {
				continue // a torn record: chkdsk's business, not a map to follow
			}
			why := ""
			err := attributes(rec, off, func(_ uint32, a []byte, aoff int64) bool {
				if a[8] == 0 || len(a) < 0x40 {
					return true
				}
				runsOff := int64(le.Uint16(a[0x20:]))
				if runsOff >= int64(len(a)) {
					why = fmt.Sprintf("has a damaged MFT record %d (run list outside its attribute); chkdsk would repair it", num)
					return false
				}
				rs, err := v.decodeRuns(a[runsOff:], int64(le.Uint64(a[0x10:])), aoff+runsOff)
				if err != nil {
					why = fmt.Sprintf("has a damaged MFT record %d: %v; chkdsk would repair it", num, err)
					return false
				}
				for _, r := range rs {
					if r.lcn >= 0 {
						uses = append(uses, use{r, num})
					}
				}
				return true
			})
			if err != nil {
				return fmt.Sprintf("has a damaged MFT record %d (%v); chkdsk would repair it", num, err), nil
			}
			if why != "" {
				return why, nil
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
