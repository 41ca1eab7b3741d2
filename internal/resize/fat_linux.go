//go:build linux

package resize

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// FAT32: fatresize, which is libparted's FAT resizer. It
// resizes only a partition of a disk with a partition table (on a bare
// filesystem it aborts in ped_disk_get_partition_by_sector), so the
// filesystem is shown to it as partition 1 of a disk made for the
// purpose: a window over an MBR in memory (1 MiB, the partition at
// sector 2048) followed by the filesystem. What libparted writes to the
// MBR is dropped with it.
//
// What libparted does that is undone or avoided, as measured with
// fatresize 1.1.0 and libparted 3.5:
//   - it writes "NO NAME" as the boot sector's label, the OEM name
//     "MSWIN4.1" and the partition's start as the hidden sectors; the
//     original bytes are written back (in the FAT32 backup boot sector
//     too), so the label, which fsck.fat -n otherwise reports as missing,
//     and everything else blkid shows stay as they were;
//   - to reach a size FAT32 cannot, it converts FAT32 to FAT16 (and
//     fsck.fat then finds clusters to reclaim); MinSize keeps FAT32 at
//     0xfff0 clusters of 4 KiB at least (about 256 MiB) instead;
//   - it only ever makes clusters smaller, and never below 4 KiB on
//     FAT32: a FAT32 with smaller clusters (mkfs.fat's choice below
//     256 MiB, Windows' 100 MiB ESP) cannot be resized;
//   - it works in 512-byte sectors and an MBR holds 2^32 of them;
//   - on FAT16 it loses files: a 96 MiB FAT16 of 2 KiB clusters and 350
//     files shrunk to 70 MiB kept 78 of them, fsck.fat reclaiming the
//     clusters of the rest. FAT16 is refused; and every FAT is checked
//     with fsck.fat -n before (a damaged one is refused) and after.

const (
	fatHeader      = 1 << 20 // bytes before the partition in the made-up disk
	fat32Clusters  = 0xfff0  // libparted's fewest clusters for FAT32
	fat32MinSector = 8       // its smallest FAT32 cluster, in sectors
)

var fatMinimum = regexp.MustCompile(`(?m)^Min size: (\d+)$`)

// fatBoot is what a FAT boot sector says that resizing needs.
type fatBoot struct {
	raw        []byte
	bps        int64 // bytes per sector
	spc        int64 // sectors per cluster
	sectors    int64 // total
	fat32      bool
	backup     int64 // FAT32: the backup boot sector's sector, 0 if none
	labelOff   int   // where the 11-byte label is
	rootSecs   int64 // FAT16: sectors of the root directory
	reserved   int64
	clusterCnt int64
}

func readFATBoot(path string) (*fatBoot, error) {
	raw, err := readAt(path, 0, 512)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	b := &fatBoot{raw: raw}
	b.bps = int64(le.Uint16(raw[0x0b:]))
	b.spc = int64(raw[0x0d])
	b.reserved = int64(le.Uint16(raw[0x0e:]))
	nfats := int64(raw[0x10])
	rootEnts := int64(le.Uint16(raw[0x11:]))
	b.sectors = int64(le.Uint16(raw[0x13:]))
	if b.sectors == 0 {
		b.sectors = int64(le.Uint32(raw[0x20:]))
	}
	fatSz := int64(le.Uint16(raw[0x16:]))
	b.fat32 = fatSz == 0
	b.labelOff = 0x2b
	if b.fat32 {
		fatSz = int64(le.Uint32(raw[0x24:]))
		b.backup = int64(le.Uint16(raw[0x32:]))
		b.labelOff = 0x47
	}
	if raw[510] != 0x55 || raw[511] != 0xaa || b.bps < 512 || b.bps > 4096 || b.bps&(b.bps-1) != 0 || b.spc == 0 || b.spc&(b.spc-1) != 0 || nfats == 0 || b.sectors == 0 {
		return nil, fmt.Errorf("resize: %s holds no FAT boot sector this reads (%d-byte sectors, %d per cluster, %d in all)", path, b.bps, b.spc, b.sectors)
	}
	b.rootSecs = (rootEnts*32 + b.bps - 1) / b.bps
	data := b.sectors - b.reserved - nfats*fatSz - b.rootSecs
	if data > 0 {
		b.clusterCnt = data / b.spc
	}
	return b, nil
}

func (b *fatBoot) size() int64 { return b.sectors * b.bps }

// check refuses what libparted cannot resize without changing the FAT
// type.
func (b *fatBoot) check(fs string, shrink bool) error {
	switch {
	case !b.fat32:
		return notSupported(fs, shrink, "fatresize (libparted 3.5) loses files resizing FAT16")
	case b.bps != 512:
		return notSupported(fs, shrink, "it has %d-byte sectors; fatresize (libparted) works in 512-byte ones", b.bps)
	case b.spc < fat32MinSector:
		return notSupported(fs, shrink, "its clusters are %d bytes; libparted keeps a FAT32 a FAT32 only with clusters of 4 KiB or more", b.spc*b.bps)
	case b.clusterCnt < 65525:
		return notSupported(fs, shrink, "its boot sector says FAT32 but it has %d clusters", b.clusterCnt)
	}
	return nil
}

// fat32Floor is the smallest FAT32 libparted can make from a boot
// sector of spc sectors per cluster: 0xfff0 clusters of 4 KiB, two FATs
// of them and 32 reserved sectors, and a cluster to align the data.
func fat32Floor() int64 {
	fat := (int64(fat32Clusters) + 2 + 127) / 128
	return (32 + 2*fat + fat32Clusters*fat32MinSector + fat32MinSector) * 512
}

// mbrLimit is the most bytes a partition at sector 2048 of an MBR holds.
const mbrLimit = (1<<32 - 1 - fatHeader/512) * 512

func fatSize(ctx context.Context, path string) (int64, error) {
	b, err := readFATBoot(path)
	if err != nil {
		return 0, err
	}
	return b.size(), nil
}

func fatMin(ctx context.Context, path string) (int64, error) {
	b, err := readFATBoot(path)
	if err != nil {
		return 0, err
	}
	if err := b.check(fatName(b), true); err != nil {
		return 0, err
	}
	if err := fatClean(ctx, path); err != nil {
		return 0, err
	}
	var out string
	err = withFATDisk(path, b.size(), b, func(disk string) error {
		var err error
		out, err = tool(ctx, path, nil, "fatresize", "--info", "-n", "1", disk)
		return err
	})
	if err != nil {
		return 0, err
	}
	n, err := matchInt(fatMinimum, out)
	if err != nil {
		return 0, &ToolError{Tool: "fatresize", Args: []string{"--info"}, Path: path, Err: err, Output: out}
	}
	if b.fat32 {
		n = max(n, fat32Floor())
	}
	return n, nil
}

func fatName(b *fatBoot) string {
	if b.fat32 {
		return "fat32"
	}
	return "fat16"
}

// fatResize resizes to at most size bytes, keeping the FAT type, and
// writes back the boot sector fields libparted changes.
func fatResize(ctx context.Context, path string, size int64) error {
	b, err := readFATBoot(path)
	if err != nil {
		return err
	}
	grow := size > b.size()
	if err := b.check(fatName(b), !grow); err != nil {
		return err
	}
	size = min(size, mbrLimit) / 512 * 512
	if err := fatClean(ctx, path); err != nil {
		return err
	}
	dev, err := deviceSize(path)
	if err != nil {
		return err
	}
	// The made-up disk ends where the filesystem may: libparted then
	// cannot go past size when it rounds.
	shown := max(b.size(), min(size, dev))
	ask := size
	// libparted rounds to its own grid, upwards at times: ask again for
	// less by what it overshot.
	for try := 0; ; try++ {
		err = withFATDisk(path, shown, b, func(disk string) error {
			_, err := tool(ctx, path, nil, "fatresize", "--force-yes", "-n", "1", "--size", strconv.FormatInt(ask, 10), disk)
			return err
		})
		if err != nil {
			return err
		}
		after, err := readFATBoot(path)
		if err != nil {
			return err
		}
		if after.fat32 != b.fat32 {
			return fmt.Errorf("resize: fatresize changed the FAT in %s from %s to %s", path, fatName(b), fatName(after))
		}
		if err := fatRestoreBoot(path, b, after); err != nil {
			return err
		}
		if after.size() <= size || try == 2 {
			return fatClean(ctx, path)
		}
		ask -= after.size() - size + 1<<20
	}
}

// fatClean fails unless fsck.fat -n finds nothing to change.
func fatClean(ctx context.Context, path string) error {
	out, err := tool(ctx, path, nil, "fsck.fat", "-n", path)
	if err != nil {
		return fmt.Errorf("resize: fsck.fat finds the FAT in %s not clean, not resizing it: %w", path, err)
	}
	if strings.Contains(out, "Leaving filesystem unchanged") {
		return &ToolError{Tool: "fsck.fat", Args: []string{"-n"}, Path: path, Err: errors.New("it would change the filesystem"), Output: out}
	}
	return nil
}

// fatRestoreBoot writes back into the boot sector (and the FAT32 backup
// boot sector) the OEM name, hidden sectors and label that were there
// before libparted wrote its own.
func fatRestoreBoot(path string, before, after *fatBoot) error {
	raw := bytes.Clone(after.raw)
	copy(raw[0x03:0x0b], before.raw[0x03:0x0b])
	copy(raw[0x1c:0x20], before.raw[0x1c:0x20])
	copy(raw[before.labelOff:before.labelOff+11], before.raw[before.labelOff:before.labelOff+11])
	if bytes.Equal(raw, after.raw) {
		return nil
	}
	if err := writeAt(path, 0, raw); err != nil {
		return err
	}
	if after.fat32 && after.backup > 0 && after.backup < after.reserved {
		return writeAt(path, after.backup*after.bps, raw)
	}
	return nil
}

// withFATDisk shows the filesystem at path as partition 1 of a disk:
// an MBR naming a partition of b's size at sector 2048, then shown
// bytes of path. It runs f on the disk's file.
func withFATDisk(path string, shown int64, b *fatBoot, f func(disk string) error) error {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	defer file.Close()
	hdr := make([]byte, fatHeader)
	le := binary.LittleEndian
	le.PutUint32(hdr[0x1b8:], 0x706c7472) // a disk identifier: "rtlp"
	e := hdr[0x1be:]
	e[1], e[2], e[3] = 0xfe, 0xff, 0xff // CHS: use the LBA fields
	e[4] = 0x0e                         // FAT16 (LBA)
	if b.fat32 {
		e[4] = 0x0c // FAT32 (LBA)
	}
	e[5], e[6], e[7] = 0xfe, 0xff, 0xff
	le.PutUint32(e[8:], fatHeader/512)
	le.PutUint32(e[12:], uint32(b.size()/512))
	hdr[510], hdr[511] = 0x55, 0xaa
	disk := &headedDevice{hdr: hdr, f: file, size: fatHeader + shown/512*512}
	w, err := OpenWindow(disk)
	if err != nil {
		return err
	}
	err = f(w.Path())
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = file.Sync()
	}
	return err
}

// headedDevice is hdr (kept in memory, written there) followed by the
// file f, size bytes in all.
type headedDevice struct {
	mu   sync.Mutex
	hdr  []byte
	f    *os.File
	size int64
}

func (d *headedDevice) Size() int64 { return d.size }

func (d *headedDevice) ReadAt(p []byte, off int64) (int, error) {
	return d.io(p, off, false)
}

func (d *headedDevice) WriteAt(p []byte, off int64) (int, error) {
	return d.io(p, off, true)
}

func (d *headedDevice) Sync() error { return d.f.Sync() }

func (d *headedDevice) io(p []byte, off int64, write bool) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		if write || off < 0 {
			return 0, errors.New("resize: past the end of the disk")
		}
		p = p[:max(0, d.size-off)]
	}
	done := 0
	if off < int64(len(d.hdr)) {
		d.mu.Lock()
		if write {
			done = copy(d.hdr[off:], p)
		} else {
			done = copy(p, d.hdr[off:])
		}
		d.mu.Unlock()
	}
	if done < len(p) {
		pos := off + int64(done) - int64(len(d.hdr))
		var n int
		var err error
		if write {
			n, err = d.f.WriteAt(p[done:], pos)
		} else {
			n, err = d.f.ReadAt(p[done:], pos)
		}
		done += n
		if err != nil && !(errors.Is(err, io.EOF) && !write && done == len(p)) {
			return done, err
		}
	}
	return done, nil
}
