//go:build linux

package resize

import (
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
)

// NTFS: ntfsresize. --force makes it ask nothing (and go on with a
// volume marked for chkdsk). It marks every volume it resizes for a
// chkdsk at Windows' next boot, as it says; ntfsfix -n finds that
// clean.
//
// The volume's size is its boot sector's sector count plus one: the
// sector after the last holds the backup boot sector. ntfsresize writes
// that copy at the end of the device, not of the volume, so a volume
// shrunk inside a larger device would have none where ntfsfix and
// Windows look once the partition is cut to the volume; ntfsResize
// writes it there itself.

var ntfsMinimum = regexp.MustCompile(`You might resize at (\d+) bytes`)

// ntfsGeometry reads the sector size and sector count of the boot
// sector.
func ntfsGeometry(path string) (bps, sectors int64, boot []byte, err error) {
	boot, err = readAt(path, 0, 512)
	if err != nil {
		return 0, 0, nil, err
	}
	if string(boot[3:11]) != "NTFS    " {
		return 0, 0, nil, fmt.Errorf("resize: %s holds no NTFS boot sector", path)
	}
	bps = int64(binary.LittleEndian.Uint16(boot[0x0b:]))
	sectors = int64(binary.LittleEndian.Uint64(boot[0x28:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 || sectors <= 0 || sectors > 1<<48 {
		return 0, 0, nil, fmt.Errorf("resize: the NTFS boot sector of %s says %d sectors of %d bytes", path, sectors, bps)
	}
	return bps, sectors, boot, nil
}

func ntfsSize(ctx context.Context, path string) (int64, error) {
	bps, sectors, _, err := ntfsGeometry(path)
	return (sectors + 1) * bps, err
}

func ntfsMin(ctx context.Context, path string) (int64, error) {
	out, err := tool(ctx, path, nil, "ntfsresize", "--info", "--force", "--no-progress-bar", path)
	if err != nil {
		return 0, err
	}
	n, err := matchInt(ntfsMinimum, out)
	if err != nil {
		return 0, &ToolError{Tool: "ntfsresize", Args: []string{"--info"}, Path: path, Err: err, Output: out}
	}
	return n, nil
}

// ntfsResize resizes to at most size bytes (backup boot sector
// included) and puts the backup boot sector after the volume's last
// sector.
func ntfsResize(ctx context.Context, path string, size int64) error {
	if _, err := tool(ctx, path, nil, "ntfsresize", "--force", "--no-progress-bar", "--size", strconv.FormatInt(size, 10), path); err != nil {
		return err
	}
	bps, sectors, boot, err := ntfsGeometry(path)
	if err != nil {
		return err
	}
	if (sectors+1)*bps > size {
		return fmt.Errorf("resize: ntfsresize left the NTFS in %s %d bytes, more than the %d asked", path, (sectors+1)*bps, size)
	}
	if int(bps) > len(boot) {
		if boot, err = readAt(path, 0, int(bps)); err != nil {
			return err
		}
	}
	return writeAt(path, sectors*bps, boot[:bps])
}
