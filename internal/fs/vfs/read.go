package vfs

import (
	"fmt"
	"io"
	"sort"
)

// ReadFull reads exactly len(b) bytes at off: a short read is an error
// (io.ErrUnexpectedEOF where r gives none).
func ReadFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Section is what a file reader's Open returns for the size bytes of r:
// an io.ReadCloser that also implements io.ReaderAt (safe for parallel
// calls if r's ReadAt is) and io.Seeker. Close does nothing: it holds no
// resources of its own.
func Section(r io.ReaderAt, size int64) io.ReadCloser {
	return section{io.NewSectionReader(r, 0, size)}
}

type section struct{ *io.SectionReader }

func (section) Close() error { return nil }

// Run maps N clusters of a file, from its cluster Logical on, to the
// volume's clusters from Physical on.
type Run struct {
	Logical, N int64
	Physical   uint32
}

// Clusters reads a file of a volume that allocates clusters (FAT,
// exFAT) through its runs. ReadAt is safe for parallel calls if R's is:
// nothing in it changes.
type Clusters struct {
	R io.ReaderAt
	// Runs map every cluster of the file's Size bytes, in logical order.
	Runs        []Run
	ClusterSize int64
	// Offset is the byte where the volume's cluster c starts.
	Offset func(c uint32) int64
	// Size is the file's length; bytes from Valid on read as zeros
	// (exFAT's ValidDataLength; Size where all are written).
	Size, Valid int64
	// FS names the filesystem in errors: "fat", "exfat".
	FS string
}

func (c *Clusters) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", c.FS, off)
	}
	if off >= c.Size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), c.Size-off))
	cs := c.ClusterSize
	for done := 0; done < want; {
		pos := off + int64(done)
		if pos >= c.Valid {
			clear(p[done:want])
			break
		}
		lc := pos / cs
		i := sort.Search(len(c.Runs), func(i int) bool { return c.Runs[i].Logical+c.Runs[i].N > lc })
		if i == len(c.Runs) || c.Runs[i].Logical > lc {
			// Runs maps every cluster the size needs; guard anyway.
			return done, fmt.Errorf("%s: internal error: no cluster maps byte %d", c.FS, pos)
		}
		r := c.Runs[i]
		within := pos - r.Logical*cs
		k := int(min(r.N*cs-within, int64(want-done), c.Valid-pos))
		at := c.Offset(r.Physical) + within
		if err := ReadFull(c.R, p[done:done+k], at); err != nil {
			return done, fmt.Errorf("%s: read cluster %d at byte %d: %w", c.FS, int64(r.Physical)+within/cs, at, err)
		}
		done += k
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}
