package restore

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ReadTarget is a target that can also be read: an older state of the
// disk being restored.
type ReadTarget interface {
	Target
	io.ReaderAt
}

// Changes writes to T only the 4 KiB blocks (of the disk's grid) whose
// bytes differ from what T holds already: any restore made through it —
// partitions at new places, a table written anew, a filesystem grown by
// its tool — becomes a delta restore, which writes what changed and
// nothing else. Safe for parallel writes to different blocks.
type Changes struct {
	T       ReadTarget
	written atomic.Int64
}

const changeBlock = 4096

var changeBufs = sync.Pool{New: func() any { return new([]byte) }}

// Written is how many bytes were written (or zeroed) because they differed.
func (c *Changes) Written() int64 { return c.written.Load() }

func (c *Changes) ReadAt(p []byte, off int64) (int, error) { return c.T.ReadAt(p, off) }

// WriteAt writes the blocks of p that differ from T's.
func (c *Changes) WriteAt(p []byte, off int64) (int, error) {
	bp := changeBufs.Get().(*[]byte)
	defer changeBufs.Put(bp)
	if cap(*bp) < len(p) {
		*bp = make([]byte, len(p))
	}
	old := (*bp)[:len(p)]
	if n, err := c.T.ReadAt(old, off); n < len(p) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read target at byte %d: %w", off+int64(n), err)
	}
	// Runs of differing blocks, each written at once.
	start := -1
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		if _, err := c.T.WriteAt(p[start:end], off+int64(start)); err != nil {
			return err
		}
		c.written.Add(int64(end - start))
		start = -1
		return nil
	}
	for i := 0; i < len(p); {
		// The block of the disk's grid that holds byte off+i.
		end := min(len(p), i+changeBlock-int((off+int64(i))%changeBlock))
		if !bytes.Equal(p[i:end], old[i:end]) {
			if start < 0 {
				start = i
			}
		} else if err := flush(i); err != nil {
			return 0, err
		}
		i = end
	}
	if err := flush(len(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Zero makes [off, off+n) zero where it is not already.
func (c *Changes) Zero(off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := c.WriteAt(zero[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}
