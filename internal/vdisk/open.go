package vdisk

import (
	"errors"
	"fmt"
	"os"
)

// Open opens the file at path as a virtual disk, whichever format this
// package reads it is; ErrNotVirtual (wrapped) when it is none of them.
func Open(path string) (Disk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := st.Size()
	head := make([]byte, min(size, 64<<10))
	tail := make([]byte, min(size, 512))
	if _, err := f.ReadAt(head, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := f.ReadAt(tail, size-int64(len(tail))); err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, r := range readers {
		d, err := r.open(f, size, head, tail, path)
		if errors.Is(err, ErrNotVirtual) {
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s (%s): %w", path, r.format, err)
		}
		return d, nil
	}
	f.Close()
	return nil, fmt.Errorf("%s: %w", path, ErrNotVirtual)
}
