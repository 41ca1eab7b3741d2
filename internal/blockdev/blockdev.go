// Package blockdev opens files and block devices as sources and targets,
// and tells whether they are in use by a mounted filesystem.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/platter-dev/platter/internal/block"
)

// Device is an open file or block device. ReadAt and WriteAt are safe for
// parallel calls.
type Device struct {
	f          *os.File
	path       string
	size       int64
	sectorSize int64 // 0 for a regular file: the caller decides
	isDevice   bool

	// direct is the same file opened with O_DIRECT (targets only, nil
	// where refused): aligned writes bypass the page cache.
	direct   *os.File
	noDirect atomic.Bool // set once a direct write is refused
	// directRead is the device opened with O_DIRECT for aligned reads
	// (ReadDirect, OpenExisting), nil otherwise.
	directRead *os.File
}

// Open opens path read-only, as a source. Platter never writes to a source.
func Open(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, needRoot(path, err)
	}
	d, err := newDevice(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func newDevice(f *os.File, path string) (*Device, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d := &Device{f: f, path: path}
	switch {
	case st.Mode().IsRegular():
		d.size = st.Size()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		d.isDevice = true
		if d.size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("size of %s: %w", path, err)
		}
		if d.sectorSize, err = sectorSize(f); err != nil {
			return nil, fmt.Errorf("sector size of %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device", path)
	}
	return d, nil
}

// ReadAt reads from the device; aligned reads go around the page cache
// after ReadDirect, and on a target opened by OpenExisting.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if d.directRead != nil && aligned(p, off, d.readAlign()) {
		return d.directRead.ReadAt(p, off)
	}
	return d.f.ReadAt(p, off)
}

// WriteAt writes to the device (targets only). Writes of whole 4 KiB
// blocks from an aligned buffer bypass the page cache where the file
// allows it: the kernel neither copies the data nor holds it dirty for a
// later sync.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if d.direct != nil && !d.noDirect.Load() && aligned(p, off, block.DirectAlign) {
		n, err := d.direct.WriteAt(p, off)
		if !errors.Is(err, errInvalid) {
			return n, err
		}
		d.noDirect.Store(true) // refused: write through the page cache from now on
	}
	return d.f.WriteAt(p, off)
}

// readAlign is the granularity of direct reads: whole logical sectors of
// a device, whole 4 KiB blocks of a file.
func (d *Device) readAlign() int64 {
	if d.sectorSize == 0 {
		return block.DirectAlign
	}
	return d.sectorSize
}

// aligned reports whether I/O of p at off can be direct: offset and length
// in whole units of align, the buffer on a boundary of align (at most
// 4 KiB, which AlignedBuffer and its sector-aligned slices keep).
func aligned(p []byte, off, align int64) bool {
	mem := min(align, block.DirectAlign)
	return len(p) > 0 && off%align == 0 && int64(len(p))%align == 0 && int64(uintptr(unsafe.Pointer(&p[0])))%mem == 0
}

// Size is the length in bytes.
func (d *Device) Size() int64 { return d.size }

// SectorSize is the logical sector size of a block device, or 0 for a
// regular file (whose sector size is found from its partition table).
func (d *Device) SectorSize() int64 { return d.sectorSize }

// IsDevice reports whether this is a block device.
func (d *Device) IsDevice() bool { return d.isDevice }

// Path is the name it was opened by.
func (d *Device) Path() string { return d.path }

// Sync flushes written data to stable storage.
func (d *Device) Sync() error { return d.f.Sync() }

// Close closes the device.
func (d *Device) Close() error {
	if d.direct != nil {
		d.direct.Close()
	}
	if d.directRead != nil {
		d.directRead.Close()
	}
	return d.f.Close()
}

// File exposes the underlying file (for ioctls and fadvise).
func (d *Device) File() *os.File { return d.f }

// StartWriteback asks the kernel to begin writing [off, off+n) out now,
// without waiting, so the final sync finds little left to do and the
// disk works while the CPU decompresses the next chunks.
func (d *Device) StartWriteback(off, n int64) { startWriteback(d.f, off, n) }

// Mount is a mounted filesystem that lives on (part of) a device.
type Mount struct {
	Device   string // what the mount table names as the source
	Point    string // mount point
	FSType   string
	ReadOnly bool
}

// writeZeros writes zero bytes over [off, off+n).
func writeZeros(d *Device, off, n int64) error {
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

// View is a device read partly through other devices: see MountedView.
type View struct {
	d     *Device
	parts []viewPart
}

type viewPart struct {
	f          *os.File
	start, end int64 // bytes of the device it covers
}

func (v *View) ReadAt(p []byte, off int64) (int, error) {
	for _, pt := range v.parts {
		if off >= pt.start && off+int64(len(p)) <= pt.end {
			return pt.f.ReadAt(p, off-pt.start)
		}
	}
	return v.d.ReadAt(p, off)
}

func (v *View) Size() int64       { return v.d.Size() }
func (v *View) SectorSize() int64 { return v.d.SectorSize() }

// Close closes the devices opened for the view (not the device).
func (v *View) Close() error {
	for _, pt := range v.parts {
		pt.f.Close()
	}
	v.parts = nil
	return nil
}

// needRoot adds a hint to a permission error on a device: disks belong
// to root.
func needRoot(path string, err error) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	if st, serr := os.Stat(path); serr == nil && st.Mode()&os.ModeDevice != 0 {
		return fmt.Errorf("%w (disk devices belong to root: run platter as root, or with sudo)", err)
	}
	return err
}
