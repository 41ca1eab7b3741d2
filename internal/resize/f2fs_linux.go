//go:build linux

package resize

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/fs/swap"
)

// F2FS: resize.f2fs (f2fs-tools 1.15) grows. Its exit status says
// nothing (it exits 0 having refused), so the superblock is read again
// after it.

var (
	f2fsBlocks   = regexp.MustCompile(`(?m)^block_count\s+\[0x\s*[0-9a-f]+ : (\d+)\]`)
	f2fsLogBlock = regexp.MustCompile(`(?m)^log_blocksize\s+\[0x\s*[0-9a-f]+ : (\d+)\]`)
)

func f2fsSize(ctx context.Context, path string) (int64, error) {
	out, err := tool(ctx, path, nil, "dump.f2fs", "-d", "1", path)
	if err != nil {
		return 0, err
	}
	blocks, err1 := matchInt(f2fsBlocks, out)
	lb, err2 := matchInt(f2fsLogBlock, out)
	if err := errors.Join(err1, err2); err != nil || lb < 9 || lb > 16 {
		return 0, &ToolError{Tool: "dump.f2fs", Path: path, Err: fmt.Errorf("no block count and size: %v", err), Output: out}
	}
	return blocks << lb, nil
}

// f2fsGrow grows to size, given to resize.f2fs in the device's sectors
// (512 bytes for a file).
func f2fsGrow(ctx context.Context, path string, size int64) error {
	before, err := f2fsSize(ctx, path)
	if err != nil {
		return err
	}
	ss, err := sectorSize(path)
	if err != nil {
		return err
	}
	out, err := tool(ctx, path, nil, "resize.f2fs", "-t", strconv.FormatInt(size/ss, 10), path)
	if err != nil {
		return err
	}
	after, err := f2fsSize(ctx, path)
	if err != nil {
		return err
	}
	// resize.f2fs grows by whole segments (2 MiB); less than two is no
	// growth to expect.
	if after == before && size-before >= 4<<20 {
		return &ToolError{Tool: "resize.f2fs", Path: path, Err: errors.New("the filesystem did not grow"), Output: out}
	}
	return nil
}

// sectorSize is the logical sector size of the block device at path,
// 512 for a file.
func sectorSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("resize: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("resize: %w", err)
	}
	if st.Mode().IsRegular() {
		return 512, nil
	}
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, fmt.Errorf("resize: sector size of %s: %w", path, err)
	}
	return int64(n), nil
}

// Swap holds nothing to keep (Platter stores no swapped-out pages): it
// is made again at the new size by mkswap, with the UUID, label and
// page size it had, so /etc/fstab still finds it.

// swapMinPages is the fewest pages mkswap makes an area of.
const swapMinPages = 10

func swapHeader(path string) (*swap.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resize: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return nil, fmt.Errorf("resize: %w", err)
	}
	h, err := swap.ReadHeader(f, size)
	if err != nil {
		return nil, fmt.Errorf("resize: %s: %w", path, err)
	}
	return h, nil
}

func swapSize(ctx context.Context, path string) (int64, error) {
	h, err := swapHeader(path)
	if err != nil {
		return 0, err
	}
	if h.Version != 1 {
		return 0, notSupported("swap", false, "it is a version 0 swap area")
	}
	return (int64(h.LastPage) + 1) * h.PageSize, nil
}

func swapMin(ctx context.Context, path string) (int64, error) {
	h, err := swapHeader(path)
	if err != nil {
		return 0, err
	}
	return swapMinPages * h.PageSize, nil
}

// swapMake makes the swap area again, size bytes rounded down to pages.
func swapMake(ctx context.Context, path string, size int64) error {
	h, err := swapHeader(path)
	if err != nil {
		return err
	}
	if h.Hibernated() || h.Version != 1 {
		return notSupported("swap", true, "it holds a hibernated system (%s), which mkswap would erase", h.Signature)
	}
	args := []string{"--pagesize", strconv.FormatInt(h.PageSize, 10)}
	if u := h.UUIDString(); u != "" {
		args = append(args, "--uuid", u)
	}
	if h.Label != "" {
		args = append(args, "--label", h.Label)
	}
	args = append(args, path, strconv.FormatInt(size/h.PageSize*h.PageSize/1024, 10))
	_, err = tool(ctx, path, nil, "mkswap", args...)
	return err
}
