package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func sectorSize(f *os.File) (int64, error) {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	return int64(n), err
}

// zeroRange asks the device to zero the range (BLKZEROOUT: write-zeroes
// or discard with zeroing where the device can), writing zeros itself
// where the ioctl is not supported.
func zeroRange(d *Device, off, n int64) error {
	if d.isDevice {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if errno == 0 {
			return nil
		}
	}
	return writeZeros(d, off, n)
}

// startWriteback asks the kernel to begin writing [off, off+n) of f out
// now, without waiting.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

var errInvalid error = unix.EINVAL

// openDirect opens the file f has open a second time, for O_DIRECT
// writes, or returns nil where the filesystem refuses them. It reopens
// through /proc/self/fd, never by name: the name may already be gone (an
// image's .partial is created under a private name that is then unlinked)
// or point elsewhere by now.
func openDirect(f *os.File) *os.File { return reopenDirect(f, os.O_WRONLY) }

// openDirectRead is openDirect for O_DIRECT reads.
func openDirectRead(f *os.File) *os.File { return reopenDirect(f, os.O_RDONLY) }

func reopenDirect(f *os.File, mode int) *os.File {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), mode|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	// Named as f is: an error (a full disk) names the file the caller
	// knows, never /proc/self/fd/N.
	return os.NewFile(uintptr(fd), f.Name())
}

// discard discards a device's range (BLKDISCARD) or punches a hole in a
// file (which then reads as zeros there, and keeps its size).
func discard(d *Device, off, n int64) error {
	var err error
	if d.isDevice {
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r[0]))); errno != 0 {
			err = errno
		}
	} else {
		err = unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("discard bytes %d-%d of %s: %w (%v)", off, off+n-1, d.path, errors.ErrUnsupported, err)
	}
	return fmt.Errorf("discard bytes %d-%d of %s: %w", off, off+n-1, d.path, err)
}

// ReadDirect makes aligned reads (whole sectors, aligned buffer) bypass the page
// cache with O_DIRECT: after a filesystem on the device was frozen, cached
// pages of the device may still hold blocks from before (a block that
// shared a page with metadata, or was read earlier), and only the device
// itself is sure to hold the frozen state. The imaging engine reads chunk
// data into aligned buffers; small reads of metadata stay cached, and the
// filesystem's own metadata buffers are that cache.
func (d *Device) ReadDirect() error {
	f, err := os.OpenFile(d.path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	d.directRead = f
	return nil
}

// MountedView returns the device as the filesystems mounted from it see
// it: the bytes of each of devices (the device itself or one of its
// partitions, as mountinfo names them) are read through that device's
// page cache, the rest from the device (direct where aligned, after
// ReadDirect). A mounted filesystem keeps its current metadata in its own
// device's page cache — ext4's block bitmaps are buffers there, written
// home only at a journal checkpoint — so allocation maps of a live
// filesystem are read this way; the whole disk's page cache is another
// one, and may hold pages from before the filesystem wrote them.
// Close the view when done.
func (d *Device) MountedView(devices []string) (*View, error) {
	v := &View{d: d}
	var dst unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &dst); err != nil {
		return nil, err
	}
	for _, path := range devices {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			v.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var start int64
		if st.Rdev != dst.Rdev {
			sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
			parent, err := os.ReadFile(filepath.Join(sys, "..", "dev"))
			if err != nil || strings.TrimSpace(string(parent)) != fmt.Sprintf("%d:%d", unix.Major(dst.Rdev), unix.Minor(dst.Rdev)) {
				continue // not a partition of this device
			}
			b, err := os.ReadFile(filepath.Join(sys, "start"))
			if err != nil {
				v.Close()
				return nil, fmt.Errorf("start of %s: %w", path, err)
			}
			sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				v.Close()
				return nil, fmt.Errorf("start of %s: %q", path, b)
			}
			start = sectors * 512
		}
		f, err := os.Open(path)
		if err != nil {
			v.Close()
			return nil, err
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			v.Close()
			return nil, fmt.Errorf("size of %s: %w", path, err)
		}
		v.parts = append(v.parts, viewPart{f: f, start: start, end: start + size})
	}
	return v, nil
}

// DropCache drops the clean pages of the view's devices from the page
// cache, so the next reads come from the devices. XFS and btrfs write
// their metadata past the device's page cache (each keeps its own buffer
// cache), so a page cached by an earlier read may hold a block the
// filesystem has since freed and written again; dirty pages, as ext4's
// bitmaps may be, are never dropped. Best effort: a device that refuses
// is read as it is.
func (v *View) DropCache() {
	unix.Fadvise(int(v.d.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	for _, pt := range v.parts {
		unix.Fadvise(int(pt.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
}

// Identity returns the model and serial number a block device reports in
// sysfs (empty where it reports none: loop devices, files). A partition
// answers for its disk.
func Identity(path string) (model, serial string) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", ""
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		sys = filepath.Join(sys, "..")
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(sys, "device", name))
		return strings.TrimSpace(string(b))
	}
	model, serial = read("model"), read("serial")
	if serial == "" {
		// virtio-blk (a cloud or KVM guest's disk): the serial QEMU
		// was given, on the block device itself; it has no model.
		b, _ := os.ReadFile(filepath.Join(sys, "serial"))
		serial = strings.TrimSpace(string(b))
	}
	if serial == "" {
		// SCSI and SATA disks: the unit serial number VPD page (0x80):
		// a 4-byte header, then the serial.
		if b, err := os.ReadFile(filepath.Join(sys, "device", "vpd_pg80")); err == nil && len(b) > 4 {
			serial = strings.TrimSpace(string(b[4:]))
		}
	}
	return model, serial
}
