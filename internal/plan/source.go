package plan

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ResolveSource is the device or file a plan's source names: itself,
// unless it is a directory, which stands for the whole disk holding the
// filesystem mounted there (a partition's parent disk), found through
// mountinfo and /sys/class/block.
func ResolveSource(source string) (string, error) {
	st, err := os.Stat(source)
	if err != nil {
		return "", fmt.Errorf("source %s: %w", source, err)
	}
	if !st.IsDir() {
		return source, nil
	}
	dev, err := mountedDevice(source)
	if err != nil {
		return "", err
	}
	return diskOf(dev)
}

// mountedDevice is the MAJOR:MINOR of the filesystem mounted at dir
// (the last mount there: the one in view).
func mountedDevice(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	found := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		if unescape(fs[4]) == abs {
			found = fs[2]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("source %s is a directory, and no filesystem is mounted there: name the disk (a device), or the mount point of a filesystem on it", dir)
	}
	return found, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// diskOf is /dev/NAME of the whole disk that holds the block device
// MAJOR:MINOR: its parent when it is a partition.
func diskOf(majMin string) (string, error) {
	sys, err := filepath.EvalSymlinks("/sys/dev/block/" + majMin)
	if err != nil {
		return "", fmt.Errorf("the filesystem's device %s is not a block device (a network or virtual filesystem?): name the disk to back up: %w", majMin, err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		sys = filepath.Dir(sys)
	}
	dev := "/dev/" + filepath.Base(sys)
	if _, err := os.Stat(dev); err != nil {
		return "", fmt.Errorf("disk %s: %w", dev, err)
	}
	return dev, nil
}
