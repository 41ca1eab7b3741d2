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
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := d.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// DropCache tells the kernel we will not read these bytes again soon.
func (d *Device) DropCache(off, n int64) {
	unix.Fadvise(int(d.f.Fd()), off, n, unix.FADV_DONTNEED)
}

// StartWriteback asks the kernel to begin writing [off, off+n) out now,
// without waiting, so the final sync finds little left to do and the
// disk works while the CPU decompresses the next chunks.
func (d *Device) StartWriteback(off, n int64) {
	unix.SyncFileRange(int(d.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// Writeback wraps a file that is written front to back and starts the
// writeback of every window bytes as soon as they are written, so a
// final sync finds little left to do.
type Writeback struct {
	f       *os.File
	off     int64
	started int64
	window  int64
}

// NewWriteback wraps f, which must be written only through the result.
func NewWriteback(f *os.File, window int64) *Writeback {
	return &Writeback{f: f, window: window}
}

func (w *Writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= w.window {
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.off
	}
	return n, err
}
