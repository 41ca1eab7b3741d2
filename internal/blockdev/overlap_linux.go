package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Overlap reports whether a and b share storage, so that writing one
// changes the other: the same file or device by any name, a partition
// and its disk (or two partitions whose ranges cross), a loop device and
// the file behind it (or another loop device of that file), a
// device-mapper or md device and the devices it is made of. what names
// the shared storage for a message. A path that does not exist overlaps
// nothing.
func Overlap(a, b string) (what string, overlap bool, err error) {
	pa, err := storage(a)
	if err != nil {
		return "", false, err
	}
	pb, err := storage(b)
	if err != nil {
		return "", false, err
	}
	for _, x := range pa {
		for _, y := range pb {
			if x.id == y.id && x.off < y.end && y.off < x.end {
				return x.name, true, nil
			}
		}
	}
	return "", false, nil
}

// piece is a byte range of one file or whole block device.
type piece struct {
	id       string // "file DEV:INO" or "dev MAJOR:MINOR"
	name     string
	off, end int64
}

const toEnd = int64(1<<63 - 1)

// storage lists the bytes that path is made of, down to whole disks and
// regular files.
func storage(path string) ([]piece, error) {
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return []piece{{id: fmt.Sprintf("file %d:%d", st.Dev, st.Ino), name: real, off: 0, end: toEnd}}, nil
	case unix.S_IFBLK:
		return devStorage(unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), 0, toEnd, 0), nil
	}
	return nil, nil
}

// devStorage lists the storage of bytes [off, end) of the block device
// major:minor, from what sysfs says of it.
func devStorage(major, minor uint32, off, end int64, depth int) []piece {
	id := fmt.Sprintf("%d:%d", major, minor)
	name := "/dev/block/" + id
	whole := []piece{{id: "dev " + id, name: name, off: off, end: end}}
	sys, err := filepath.EvalSymlinks("/sys/dev/block/" + id)
	if err != nil || depth > 8 {
		return whole
	}
	name = "/dev/" + filepath.Base(sys)
	whole[0].name = name
	// A partition: a range of its disk.
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		start, err1 := sysInt(filepath.Join(sys, "start"))
		size, err2 := sysInt(filepath.Join(sys, "size"))
		pmaj, pmin, err3 := sysDev(filepath.Join(filepath.Dir(sys), "dev"))
		if err1 != nil || err2 != nil || err3 != nil {
			return whole
		}
		// sysfs counts partitions in 512-byte units whatever the
		// sector size.
		start, size = start*512, size*512
		return devStorage(pmaj, pmin, start+off, start+min(end, size), depth+1)
	}
	// A loop device: a range of its backing file.
	if b, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file")); err == nil {
		file := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		base, _ := sysInt(filepath.Join(sys, "loop", "offset"))
		var st unix.Stat_t
		if unix.Stat(file, &st) != nil {
			return whole
		}
		fend := toEnd
		if end != toEnd {
			fend = base + end
		}
		return append(whole, piece{id: fmt.Sprintf("file %d:%d", st.Dev, st.Ino), name: file, off: base + off, end: fend})
	}
	// device-mapper, md: made of other devices (all of each, as far as
	// this knows).
	slaves, _ := os.ReadDir(filepath.Join(sys, "slaves"))
	out := whole
	for _, s := range slaves {
		smaj, smin, err := sysDev(filepath.Join(sys, "slaves", s.Name(), "dev"))
		if err == nil {
			out = append(out, devStorage(smaj, smin, 0, toEnd, depth+1)...)
		}
	}
	return out
}

func sysInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// sysDev reads a sysfs "dev" file: "major:minor".
func sysDev(path string) (uint32, uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("%s: %q", path, b)
	}
	return major, minor, nil
}
