//go:build linux

package cbt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
)

// Kinds of filesystem the map records.
const (
	KindExt     = "ext"     // ext2/3/4: mount count and last write time checked
	KindXFS     = "xfs"     // no mount count or write time in its superblock: trusted on continuity
	KindBtrfs   = "btrfs"   // likewise (its generation moves at every commit)
	KindNTFS    = "ntfs"    // likewise
	KindFAT     = "fat"     // FAT12/16/32 and exFAT: likewise
	KindSwap    = "swap"    // Linux swap: rewritten at each boot, no content to keep
	KindEmpty   = "empty"   // its first 64 KiB are zeros: no filesystem
	KindUnknown = "unknown" // a signature the map cannot vouch for
)

// FS is one filesystem of the tracked device (a partition, or the device
// itself), with what its superblock says of mounts and writes.
type FS struct {
	Path       string    `json:"path"`
	Kind       string    `json:"kind"`
	MountCount int       `json:"mount_count,omitempty"` // ext: s_mnt_count
	WTime      time.Time `json:"wtime,omitzero"`        // ext: s_wtime
}

// Device is what identifies a device and its filesystems at one moment.
type Device struct {
	DevNum      string
	Size        int64
	Ident       string
	Filesystems []FS
}

// BootID is this boot's id (/proc/sys/kernel/random/boot_id).
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("cbt: boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// sysDir is the device's directory in sysfs.
func sysDir(path string) (string, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", st, fmt.Errorf("cbt: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", st, fmt.Errorf("cbt: %s is not a block device: only block devices are tracked", path)
	}
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err != nil {
		return "", st, fmt.Errorf("cbt: %s in sysfs: %w", path, err)
	}
	return sys, st, nil
}

// devName names the device's map directory: its kernel name.
func devName(path string) (string, error) {
	sys, _, err := sysDir(path)
	if err != nil {
		return "", err
	}
	return filepath.Base(sys), nil
}

// Probe reads the device's identity and its filesystems' superblocks
// (around the page cache: the kernel writes them there).
func Probe(path string) (*Device, error) {
	sys, st, err := sysDir(path)
	if err != nil {
		return nil, err
	}
	d := &Device{DevNum: fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))}
	var sectors int64
	if b, err := os.ReadFile(filepath.Join(sys, "size")); err == nil {
		fmt.Sscan(strings.TrimSpace(string(b)), &sectors)
	}
	d.Size = sectors * 512
	model, serial := blockdev.Identity(path)
	d.Ident = strings.TrimSpace(model + " " + serial)
	if b, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file")); err == nil {
		d.Ident = "loop:" + strings.TrimSpace(string(b))
	} else if b, err := os.ReadFile(filepath.Join(sys, "..", "loop", "backing_file")); err == nil {
		d.Ident = "loop:" + strings.TrimSpace(string(b))
	}
	// The filesystems: each partition of a whole disk, else the device.
	var parts []string
	ents, _ := os.ReadDir(sys)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err == nil {
			parts = append(parts, "/dev/"+e.Name())
		}
	}
	if len(parts) == 0 {
		parts = []string{path}
	}
	for _, p := range parts {
		f, err := probeFS(p)
		if err != nil {
			return nil, err
		}
		d.Filesystems = append(d.Filesystems, f)
	}
	return d, nil
}

// probeFS reads the first 128 KiB of the device at path and says which
// filesystem it holds.
func probeFS(path string) (FS, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return FS{}, fmt.Errorf("cbt: open %s: %w", path, err)
	}
	defer f.Close()
	buf := block.AlignedBuffer(128 << 10)
	n, err := f.ReadAt(buf, 0)
	if n < 4096 {
		return FS{}, fmt.Errorf("cbt: read the superblock of %s: %d bytes, %v", path, n, err)
	}
	return classify(path, buf[:n]), nil
}

// classify says which filesystem b, the start of a device, holds.
func classify(path string, b []byte) FS {
	fs := FS{Path: path, Kind: KindUnknown}
	sb := b[1024:]
	switch {
	case binary.LittleEndian.Uint16(sb[0x38:]) == 0xEF53:
		fs.Kind = KindExt
		fs.MountCount = int(binary.LittleEndian.Uint16(sb[0x34:]))
		w := int64(binary.LittleEndian.Uint32(sb[0x30:])) | int64(sb[0x274])<<32
		fs.WTime = time.Unix(w, 0).UTC()
	case bytes.Equal(b[:4], []byte("XFSB")):
		fs.Kind = KindXFS
	case len(b) >= 0x10048 && bytes.Equal(b[0x10040:0x10048], []byte("_BHRfS_M")):
		fs.Kind = KindBtrfs
	case bytes.Equal(b[3:11], []byte("NTFS    ")):
		fs.Kind = KindNTFS
	case bytes.Equal(b[3:11], []byte("EXFAT   ")),
		b[510] == 0x55 && b[511] == 0xAA && (bytes.HasPrefix(b[0x36:], []byte("FAT")) || bytes.HasPrefix(b[0x52:], []byte("FAT32"))):
		fs.Kind = KindFAT
	case bytes.Equal(b[4086:4096], []byte("SWAPSPACE2")):
		fs.Kind = KindSwap
	case !bytes.ContainsFunc(b[:64<<10], func(r rune) bool { return r != 0 }):
		fs.Kind = KindEmpty
	}
	return fs
}

// compareFS says what changed between two views of the filesystems.
func compareFS(was, now []FS, when string) []string {
	var why []string
	if len(was) != len(now) {
		return []string{fmt.Sprintf("the device had %d filesystems and has %d %s", len(was), len(now), when)}
	}
	for i := range was {
		a, b := was[i], now[i]
		switch {
		case a.Path != b.Path || a.Kind != b.Kind:
			why = append(why, fmt.Sprintf("%s held %s and now %s holds %s %s", a.Path, a.Kind, b.Path, b.Kind, when))
		case a.MountCount != b.MountCount:
			why = append(why, fmt.Sprintf("the mount count of %s went from %d to %d %s", a.Path, a.MountCount, b.MountCount, when))
		case !a.WTime.Equal(b.WTime):
			why = append(why, fmt.Sprintf("the last write time of %s went from %s to %s %s", a.Path, stamp(a.WTime), stamp(b.WTime), when))
		}
	}
	return why
}
