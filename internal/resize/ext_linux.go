//go:build linux

package resize

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// ext2/3/4: e2fsprogs. resize2fs refuses a filesystem not checked since
// it was last mounted (an image of a mounted one), so e2fsck -fp checks
// it first: preen mode replays the journal and fixes only what is safe,
// and stops (exit 4) at anything that needs a person.

var (
	extBlockCount = regexp.MustCompile(`(?m)^Block count:\s+(\d+)$`)
	extBlockSize  = regexp.MustCompile(`(?m)^Block size:\s+(\d+)$`)
	extMinimum    = regexp.MustCompile(`Estimated minimum size of the filesystem: (\d+)`)
)

// extGeometry returns the block count and block size dumpe2fs reads
// from the superblock.
func extGeometry(ctx context.Context, path string) (blocks, bs int64, err error) {
	out, err := tool(ctx, path, nil, "dumpe2fs", "-h", path)
	if err != nil {
		return 0, 0, err
	}
	blocks, err1 := matchInt(extBlockCount, out)
	bs, err2 := matchInt(extBlockSize, out)
	if err1 != nil || err2 != nil || bs == 0 {
		return 0, 0, &ToolError{Tool: "dumpe2fs", Path: path, Err: fmt.Errorf("no block count and size in its output"), Output: out}
	}
	return blocks, bs, nil
}

func extSize(ctx context.Context, path string) (int64, error) {
	blocks, bs, err := extGeometry(ctx, path)
	return blocks * bs, err
}

func extMin(ctx context.Context, path string) (int64, error) {
	_, bs, err := extGeometry(ctx, path)
	if err != nil {
		return 0, err
	}
	out, err := tool(ctx, path, nil, "resize2fs", "-P", path)
	if err != nil {
		return 0, err
	}
	n, err := matchInt(extMinimum, out)
	if err != nil {
		return 0, &ToolError{Tool: "resize2fs", Args: []string{"-P"}, Path: path, Err: err, Output: out}
	}
	return n * bs, nil
}

// extResize checks the filesystem and resizes it to size, in 512-byte
// units resize2fs rounds down to its blocks.
func extResize(ctx context.Context, path string, size int64) error {
	// 1: errors were fixed; 0: none found.
	if _, err := tool(ctx, path, []int{1}, "e2fsck", "-f", "-p", path); err != nil {
		return err
	}
	_, err := tool(ctx, path, nil, "resize2fs", path, strconv.FormatInt(size/512, 10)+"s")
	return err
}

// matchInt is re's first group in s as a number.
func matchInt(re *regexp.Regexp, s string) (int64, error) {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("no %q in the output", re.String())
	}
	return strconv.ParseInt(m[1], 10, 64)
}
