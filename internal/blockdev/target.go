package blockdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/outfile"
)

// Target is a restore destination.
type Target struct {
	*Device
	// Fresh is true when every byte of the target reads as zero before the
	// restore writes anything (a file created or truncated by
	// OpenTarget), so zero chunks need not be written.
	Fresh bool
	// Created is true when OpenTarget made the file: a restore that
	// fails removes it rather than leave a disk that is not one.
	Created bool
}

// StatTarget describes path without opening it for writing: whether it
// exists, is a block device, and its size. Under /dev only a block
// device is a target: a mistyped disk name (/dev/sdx) would otherwise
// become a regular file there, the size of the disk, in memory.
func StatTarget(path string) (exists, isDevice bool, size int64, err error) {
	st, err := os.Stat(path)
	inDev := underDev(path)
	if errors.Is(err, os.ErrNotExist) {
		if inDev {
			return false, false, 0, fmt.Errorf("%s does not exist: under /dev only an existing block device is written, never a new file (is the disk's name mistyped? lsblk lists them)", path)
		}
		return false, false, 0, nil
	}
	if err != nil {
		return false, false, 0, err
	}
	if inDev && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0) {
		return true, false, 0, fmt.Errorf("%s is not a block device: under /dev only a block device is written", path)
	}
	if st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
		d, err := Open(path)
		if err != nil {
			return true, true, 0, err
		}
		defer d.Close()
		return true, true, d.Size(), nil
	}
	if !st.Mode().IsRegular() {
		return true, false, 0, fmt.Errorf("%s is neither a regular file nor a block device", path)
	}
	return true, false, st.Size(), nil
}

// OpenTarget opens path for a restore of size bytes. A block device is
// opened exclusively (the kernel refuses while it is mounted) and must be
// at least size bytes. A regular file is created if missing and cut to
// exactly size bytes with no data, so it is written sparse.
func OpenTarget(path string, size int64) (*Target, error) {
	exists, isDev, devSize, err := StatTarget(path)
	if err != nil {
		return nil, err
	}
	if exists && isDev {
		if devSize < size {
			return nil, fmt.Errorf("target %s is %d bytes, smaller than the %d bytes to restore", path, devSize, size)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_EXCL, 0)
		if errors.Is(err, os.ErrPermission) {
			return nil, needRoot(path, targetError(path, err))
		}
		if err != nil {
			return nil, fmt.Errorf("%w (is it in use?)", targetError(path, err))
		}
		d, err := newDevice(f, path)
		if err != nil {
			f.Close()
			return nil, err
		}
		d.direct = openDirect(f)
		return &Target{Device: d}, nil
	}
	// A new file is private (it holds a whole disk); an existing one
	// keeps its mode.
	f, err := outfile.Create(path)
	created := err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_TRUNC, 0)
	}
	if err != nil {
		return nil, targetError(path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size target %s to %d bytes: %w", path, size, err)
	}
	d, err := newDevice(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.direct = openDirect(f)
	return &Target{Device: d, Fresh: true, Created: created}, nil
}

// OpenExisting opens path, which must exist and be exactly size bytes,
// to be restored in place (restore --delta): nothing is truncated, and
// the target is read back as well as written. A block device is opened
// exclusively, as OpenTarget does. Aligned reads and writes go around the
// page cache where the file allows it: the old state is read once, and
// caching it would only push out what the machine is using.
func OpenExisting(path string, size int64) (*Target, error) {
	exists, isDev, have, err := StatTarget(path)
	switch {
	case err != nil:
		return nil, err
	case !exists:
		return nil, fmt.Errorf("target %s does not exist", path)
	case have != size:
		return nil, fmt.Errorf("target %s is %d bytes, not the %d bytes restored", path, have, size)
	}
	flags := os.O_RDWR
	if isDev {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, os.ErrPermission) {
		return nil, needRoot(path, targetError(path, err))
	}
	if err != nil {
		return nil, targetError(path, err)
	}
	d, err := newDevice(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if d.size != size {
		d.Close()
		return nil, fmt.Errorf("target %s is %d bytes, not the %d bytes restored", path, d.size, size)
	}
	d.direct = openDirect(f)
	d.directRead = openDirectRead(f)
	if d.directRead != nil && size >= block.DirectAlign {
		// Some filesystems take O_DIRECT at open and refuse it only at
		// the first read: ask now, and read through the page cache if so.
		if _, err := d.directRead.ReadAt(block.AlignedBuffer(block.DirectAlign), 0); err != nil {
			d.directRead.Close()
			d.directRead = nil
		}
	}
	return &Target{Device: d}, nil
}

// Discard tells the target that bytes [off, off+n) hold nothing of use:
// a device discards them (BLKDISCARD: they may read as zeros or as
// before), a file gets a hole (they read as zeros). A target that cannot
// gives an error wrapping errors.ErrUnsupported.
func (t *Target) Discard(off, n int64) error {
	if n <= 0 {
		return nil
	}
	return discard(t.Device, off, n)
}

// Zero makes bytes [off, off+n) of the target read as zero.
func (t *Target) Zero(off, n int64) error {
	if t.Fresh || n <= 0 {
		return nil
	}
	return zeroRange(t.Device, off, n)
}

// underDev says whether path names something in /dev.
func underDev(path string) bool {
	abs, err := filepath.Abs(path)
	return err == nil && strings.HasPrefix(abs, "/dev/")
}

// targetError says why TARGET cannot be written, naming it as the user
// did: "target ./x/: is a directory", not "open target: open ./x/: ...".
func targetError(path string, err error) error {
	if pe, ok := err.(*fs.PathError); ok && pe.Path == path {
		err = pe.Err
	}
	return fmt.Errorf("target %s: %w", path, err)
}
