package blockdev

import (
	"os"
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

// openDirect opens path for O_DIRECT writes, or returns nil where the
// filesystem refuses them.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
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
