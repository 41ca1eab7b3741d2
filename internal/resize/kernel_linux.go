//go:build linux

package resize

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// btrfs and XFS are resized by the kernel, mounted: through a loop
// device when path is a file (a Window), on a private directory, and
// unmounted and detached before returning, whatever happened.

var (
	btrfsDevBytes = regexp.MustCompile(`(?m)^dev_item\.total_bytes\s+(\d+)$`)
	btrfsDevices  = regexp.MustCompile(`(?m)^num_devices\s+(\d+)$`)
	btrfsSector   = regexp.MustCompile(`(?m)^sectorsize\s+(\d+)$`)
	btrfsMinimum  = regexp.MustCompile(`(?m)^(\d+) bytes`)
	xfsDBlocks    = regexp.MustCompile(`(?m)^dblocks = (\d+)$`)
	xfsBlockSize  = regexp.MustCompile(`(?m)^blocksize = (\d+)$`)
)

// btrfsFloor is the smallest device the kernel resizes btrfs to: below
// 256 MiB its resize ioctl answers EINVAL (measured on Linux 6.18).
const btrfsFloor = 256 << 20

// withMount runs f on the filesystem at path mounted at a private
// directory, and unmounts it, also when f fails or ctx is done.
func withMount(path, fstype, opts string, f func(mnt string) error) error {
	mnt, end, err := loopMount(path, fstype, opts, 0)
	if err != nil {
		return err
	}
	err = f(mnt)
	if eerr := end(); eerr != nil {
		err = errors.Join(err, eerr)
	}
	return err
}

// btrfsSuper reads what btrfs's superblock says of this device.
func btrfsSuper(ctx context.Context, path string) (devBytes, sector int64, err error) {
	out, err := tool(ctx, path, nil, "btrfs", "inspect-internal", "dump-super", path)
	if err != nil {
		return 0, 0, err
	}
	devBytes, err1 := matchInt(btrfsDevBytes, out)
	n, err2 := matchInt(btrfsDevices, out)
	sector, err3 := matchInt(btrfsSector, out)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, &ToolError{Tool: "btrfs", Args: []string{"inspect-internal", "dump-super"}, Path: path, Err: err, Output: out}
	}
	if n != 1 {
		return 0, 0, notSupported("btrfs", false, "it spans %d devices; Platter resizes a btrfs of one", n)
	}
	return devBytes, sector, nil
}

func btrfsSize(ctx context.Context, path string) (int64, error) {
	n, _, err := btrfsSuper(ctx, path)
	return n, err
}

func btrfsMin(ctx context.Context, path string) (int64, error) {
	if _, _, err := btrfsSuper(ctx, path); err != nil {
		return 0, err
	}
	var n int64
	err := withMount(path, "btrfs", "", func(mnt string) error {
		out, err := tool(ctx, path, nil, "btrfs", "inspect-internal", "min-dev-size", mnt)
		if err != nil {
			return err
		}
		if n, err = matchInt(btrfsMinimum, out); err != nil {
			return &ToolError{Tool: "btrfs", Args: []string{"inspect-internal", "min-dev-size"}, Path: path, Err: err, Output: out}
		}
		return nil
	})
	return max(n, btrfsFloor), err
}

// btrfsResize resizes device 1, the only one, to size rounded down to
// the sector size.
func btrfsResize(ctx context.Context, path string, size int64) error {
	_, sector, err := btrfsSuper(ctx, path)
	if err != nil {
		return err
	}
	size = size / sector * sector
	return withMount(path, "btrfs", "", func(mnt string) error {
		_, err := tool(ctx, path, nil, "btrfs", "filesystem", "resize", "1:"+strconv.FormatInt(size, 10), mnt)
		return err
	})
}

func xfsGeometry(ctx context.Context, path string) (blocks, bs int64, err error) {
	out, err := tool(ctx, path, nil, "xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", path)
	if err != nil {
		return 0, 0, err
	}
	blocks, err1 := matchInt(xfsDBlocks, out)
	bs, err2 := matchInt(xfsBlockSize, out)
	if err := errors.Join(err1, err2); err != nil || bs == 0 {
		return 0, 0, &ToolError{Tool: "xfs_db", Path: path, Err: fmt.Errorf("no data blocks and block size: %v", err), Output: out}
	}
	return blocks, bs, nil
}

func xfsSize(ctx context.Context, path string) (int64, error) {
	blocks, bs, err := xfsGeometry(ctx, path)
	return blocks * bs, err
}

// xfsGrow grows the data section to size rounded down to its blocks.
// nouuid: the XFS the image was made from may be mounted on this
// machine, with the same UUID.
func xfsGrow(ctx context.Context, path string, size int64) error {
	_, bs, err := xfsGeometry(ctx, path)
	if err != nil {
		return err
	}
	return withMount(path, "xfs", "nouuid", func(mnt string) error {
		_, err := tool(ctx, path, nil, "xfs_growfs", "-D", strconv.FormatInt(size/bs, 10), mnt)
		return err
	})
}
