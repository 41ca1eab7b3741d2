package plan

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/blockdev"
)

// ResolveSource is the device or file a plan's source names: itself,
// unless it is a directory, which stands for the whole disk holding the
// filesystem mounted there (a partition's parent disk), found through
// the mount table and /sys/dev/block.
func ResolveSource(source string) (string, error) {
	st, err := os.Stat(source)
	if err != nil {
		return "", fmt.Errorf("source %s: %w", source, err)
	}
	if !st.IsDir() {
		return source, nil
	}
	m, ok, err := blockdev.MountAt(source)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("source %s is a directory, and no filesystem is mounted there: name the disk (a device), or the mount point of a filesystem on it", source)
	}
	return diskOf(m.Device)
}

// diskOf is /dev/NAME of the whole disk that holds the block device dev
// (the mount table's source: its device number, not mountinfo's, which
// is anonymous for btrfs): its parent when it is a partition.
func diskOf(dev string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("the filesystem's source %s is not a block device (a network or virtual filesystem?): name the disk to back up", dev)
	}
	majMin := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	sys, err := filepath.EvalSymlinks("/sys/dev/block/" + majMin)
	if err != nil {
		return "", fmt.Errorf("device %s (%s): %w", dev, majMin, err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		sys = filepath.Dir(sys)
	}
	disk := "/dev/" + filepath.Base(sys)
	if _, err := os.Stat(disk); err != nil {
		return "", fmt.Errorf("disk %s: %w", disk, err)
	}
	return disk, nil
}
