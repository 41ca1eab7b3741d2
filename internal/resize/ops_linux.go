//go:build linux

package resize

import (
	"context"
	"fmt"
	"os"
)

// ops is what Platter can do to one kind of filesystem; a nil func
// cannot be done (why says why).
type ops struct {
	size   func(ctx context.Context, path string) (int64, error)
	min    func(ctx context.Context, path string) (int64, error)
	shrink func(ctx context.Context, path string, size int64) error
	grow   func(ctx context.Context, path string, size int64) error
	why    string // why it cannot shrink (min and shrink nil)
	whyNot string // why it can do neither (size nil too)
}

var kinds = map[string]ops{
	"ext":   {size: extSize, min: extMin, shrink: extResize, grow: extResize},
	"ntfs":  {size: ntfsSize, min: ntfsMin, shrink: ntfsResize, grow: ntfsResize},
	"fat":   {size: fatSize, min: fatMin, shrink: fatResize, grow: fatResize},
	"btrfs": {size: btrfsSize, min: btrfsMin, shrink: btrfsResize, grow: btrfsResize},
	"xfs":   {size: xfsSize, grow: xfsGrow, why: "XFS cannot be made smaller (xfs_growfs only grows)"},
	"f2fs": {size: f2fsSize, grow: f2fsGrow,
		why: "resize.f2fs 1.15 shrinks only with -s, tells no smallest size, and below one exits 0 having done nothing"},
	"swap":  {size: swapSize, min: swapMin, shrink: swapMake, grow: swapMake},
	"exfat": {whyNot: "exfatprogs has no resizer"},
	"fat12": {whyNot: "fatresize (libparted) does not resize FAT12"},
	"luks1": {whyNot: "a LUKS volume's filesystem is encrypted: open it and resize what is inside"},
	"luks2": {whyNot: "a LUKS volume's filesystem is encrypted: open it and resize what is inside"},
	"lvm2":  {whyNot: "an LVM physical volume is resized with pvresize and its logical volumes, not here"},
}

func lookup(fs string, shrink bool) (ops, error) {
	o, ok := kinds[fsKind(fs)]
	switch {
	case !ok:
		return ops{}, notSupported(fs, shrink, "Platter does not know how to resize it")
	case o.whyNot != "":
		return ops{}, notSupported(fs, shrink, "%s", o.whyNot)
	case shrink && o.shrink == nil:
		return ops{}, notSupported(fs, true, "%s", o.why)
	}
	return o, nil
}

// Size returns the size in bytes of the filesystem named fs in the file
// or device at path: what it covers, which may be less than path holds.
func Size(ctx context.Context, fs, path string) (int64, error) {
	o, err := lookup(fs, false)
	if err != nil {
		return 0, err
	}
	return o.size(ctx, path)
}

// MinSize returns the smallest size in bytes Shrink can make the
// filesystem named fs in the file or device at path: what its tool says
// its data needs, never less than the floor of its format (FAT32 stays
// FAT32; btrfs is never below 256 MiB). It changes nothing.
func MinSize(ctx context.Context, fs, path string) (int64, error) {
	o, err := lookup(fs, true)
	if err != nil {
		return 0, err
	}
	return o.min(ctx, path)
}

// Shrink makes the filesystem named fs in the file or device at path
// the largest size it can be that is at most size bytes (its tool rounds
// down to its blocks or clusters), and returns that size. The
// filesystem is left clean by its checker, with its UUID and label.
// Below MinSize it refuses with a *TooSmallError; a size at or above the
// filesystem's own changes nothing.
func Shrink(ctx context.Context, fs, path string, size int64) (int64, error) {
	o, err := lookup(fs, true)
	if err != nil {
		return 0, err
	}
	cur, err := o.size(ctx, path)
	if err != nil {
		return 0, err
	}
	if size >= cur {
		return cur, nil
	}
	need, err := o.min(ctx, path)
	if err != nil {
		return 0, err
	}
	if size < need {
		return 0, &TooSmallError{FS: fs, Path: path, Need: need, Have: size}
	}
	if err := o.shrink(ctx, path, size); err != nil {
		return 0, err
	}
	return checkSize(ctx, o, fs, path, size, 1)
}

// Grow makes the filesystem named fs in the file or device at path the
// largest size it can be that is at most size bytes (rounded down to
// its blocks or clusters), and returns that size. size may not pass the
// end of path. A size at or below the filesystem's own changes nothing.
func Grow(ctx context.Context, fs, path string, size int64) (int64, error) {
	o, err := lookup(fs, false)
	if err != nil {
		return 0, err
	}
	room, err := deviceSize(path)
	if err != nil {
		return 0, err
	}
	if size > room {
		return 0, fmt.Errorf("resize: cannot grow the %s in %s to %d bytes: it holds %d", fs, path, size, room)
	}
	cur, err := o.size(ctx, path)
	if err != nil {
		return 0, err
	}
	if size <= cur {
		return cur, nil
	}
	if err := o.grow(ctx, path, size); err != nil {
		return 0, err
	}
	return checkSize(ctx, o, fs, path, size, cur)
}

// checkSize reads the size a resize left and fails unless it lies in
// [least, most]: a tool that said it succeeded must have done so.
func checkSize(ctx context.Context, o ops, fs, path string, most, least int64) (int64, error) {
	got, err := o.size(ctx, path)
	if err != nil {
		return 0, err
	}
	if got > most || got < least {
		return got, fmt.Errorf("resize: the %s in %s is %d bytes after resizing to %d", fs, path, got, most)
	}
	return got, nil
}

// deviceSize is the size of the file or block device at path.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("resize: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("resize: size of %s: %w", path, err)
	}
	return n, nil
}

// readAt reads n bytes of the file or device at path from byte off.
func readAt(path string, off int64, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resize: %w", err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("resize: read %d bytes of %s at byte %d: %w", n, path, off, err)
	}
	return b, nil
}

// writeAt writes b to the file or device at path at byte off, durably.
func writeAt(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	_, err = f.WriteAt(b, off)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("resize: write %d bytes of %s at byte %d: %w", len(b), path, off, err)
	}
	return nil
}

// Can says whether Platter can grow (shrink false) or shrink the
// filesystem named fs, as image metadata names it.
func Can(fs string, shrink bool) bool {
	o, err := lookup(fs, shrink)
	return err == nil && (shrink || o.grow != nil)
}
