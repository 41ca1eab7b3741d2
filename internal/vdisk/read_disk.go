package vdisk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/platter-dev/platter/internal/block"
)

// What the readers share: a Disk built from a function that reads one
// run of the guest disk, the bounded cache of decoded tables, checked
// reads of the file, and the rules for files a disk file names (qcow2
// backing files, VMDK extents).

// mappedDisk is a Disk whose bytes come from readRun, which fills a
// prefix of p (at least one byte) from guest offset off and says how
// much; off and len(p) are already within the disk. Everything else a
// format shares lives here: bounds, the loop, Allocated, Close.
type mappedDisk struct {
	format  Format
	size    int64
	alloc   []block.Extent
	readRun func(p []byte, off int64) (int, error)
	closers []io.Closer
}

func (d *mappedDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vdisk: read at negative offset %d", off)
	}
	if off >= d.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if int64(len(p)) > d.size-off {
		want = p[:d.size-off]
	}
	n := 0
	for n < len(want) {
		k, err := d.readRun(want[n:], off+int64(n))
		if err != nil {
			return n, err
		}
		if k <= 0 {
			return n, fmt.Errorf("vdisk: internal error: no progress reading byte %d", off+int64(n))
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *mappedDisk) Size() int64               { return d.size }
func (d *mappedDisk) Allocated() []block.Extent { return append([]block.Extent(nil), d.alloc...) }
func (d *mappedDisk) Format() Format            { return d.format }

func (d *mappedDisk) Close() error {
	var first error
	for _, c := range d.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.closers = nil
	return first
}

// corrupt is the error for a damaged structure: what it is, where it is
// (a byte offset in the file), what is wrong. It is a *block.CorruptError,
// so the CLI calls the source damaged (exit 3).
func corrupt(what string, off int64, format string, args ...any) error {
	return &block.CorruptError{What: what, Off: off, Msg: fmt.Sprintf(format, args...)}
}

// refused is a file of the format that this package does not read (an
// encrypted qcow2, a differencing VHD): not damage, a choice, said with
// what to do instead.
func refused(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errors.ErrUnsupported)
}

// readExact reads len(b) bytes at off of a file of size bytes, or says
// which structure would lie past its end.
func readExact(f io.ReaderAt, size int64, b []byte, off int64, what string) error {
	if off < 0 || off > size || int64(len(b)) > size-off {
		return corrupt(what, off, "%d bytes would end past the end of the file (%d bytes)", len(b), size)
	}
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %s at byte %d: %w", what, off+int64(n), err)
}

// within reports whether [off, off+n) lies inside a file of size bytes,
// without overflowing.
func within(off, n, size int64) bool {
	return off >= 0 && n >= 0 && off <= size && n <= size-off
}

// tableCache keeps decoded tables (qcow2 L2 tables, VMDK grain tables,
// VHD sector bitmaps, decompressed clusters) by their file offset, up to
// a byte budget, evicting at random (map order) when full: ReadAt from
// many goroutines finds most lookups decoded already, and a disk of any
// size holds a bounded amount. Safe for parallel use; two goroutines
// that miss together both decode, and one copy is kept.
type tableCache[T any] struct {
	mu    sync.Mutex
	m     map[int64]cacheEntry[T]
	bytes int64
	max   int64
}

type cacheEntry[T any] struct {
	v    T
	size int64
}

func newTableCache[T any](max int64) *tableCache[T] {
	return &tableCache[T]{m: map[int64]cacheEntry[T]{}, max: max}
}

func (c *tableCache[T]) get(off int64) (T, bool) {
	c.mu.Lock()
	e, ok := c.m[off]
	c.mu.Unlock()
	return e.v, ok
}

func (c *tableCache[T]) put(off int64, v T, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[off]; ok || size > c.max {
		return
	}
	for k, e := range c.m {
		if c.bytes+size <= c.max {
			break
		}
		delete(c.m, k)
		c.bytes -= e.size
	}
	c.m[off] = cacheEntry[T]{v, size}
	c.bytes += size
}

// tableCacheBytes bounds each disk's cache of decoded tables: 16 MiB
// holds the L2 tables of a 1 TiB qcow2 with 64 KiB clusters twice over.
const tableCacheBytes = 16 << 20

// clusterCacheBytes bounds each disk's cache of decompressed clusters
// (compressed qcow2 clusters, streamOptimized grains), so reads smaller
// than a cluster do not decompress it again each time.
const clusterCacheBytes = 8 << 20

// extentList builds a sorted, merged list of extents from runs given in
// ascending order, merging as it goes so that memory follows the number
// of separate runs, not of clusters.
type extentList []block.Extent

func (l *extentList) add(off, n int64) {
	if n <= 0 {
		return
	}
	if k := len(*l); k > 0 && (*l)[k-1].End() >= off {
		(*l)[k-1].Len = max((*l)[k-1].End(), off+n) - (*l)[k-1].Off
		return
	}
	*l = append(*l, block.Extent{Off: off, Len: n})
}

// subtract returns a minus b; both sorted and disjoint.
func subtract(a, b []block.Extent) []block.Extent {
	var out extentList
	j := 0
	for _, e := range a {
		off, end := e.Off, e.End()
		for j < len(b) && b[j].End() <= off {
			j++
		}
		for k := j; k < len(b) && b[k].Off < end && off < end; k++ {
			if b[k].Off > off {
				out.add(off, b[k].Off-off)
			}
			off = max(off, b[k].End())
		}
		if off < end {
			out.add(off, end-off)
		}
	}
	return out
}

// clip cuts extents to [0, size).
func clip(es []block.Extent, size int64) []block.Extent {
	var out extentList
	for _, e := range es {
		if e.Off >= size {
			break
		}
		out.add(e.Off, min(e.End(), size)-e.Off)
	}
	return out
}

// union merges two sorted, disjoint lists.
func union(a, b []block.Extent) []block.Extent {
	all := append(append([]block.Extent(nil), a...), b...)
	return block.MergeExtents(all)
}

// namedFile opens a file that a disk file names (a qcow2's backing file,
// a VMDK's extent) for reading. The name is untrusted: it must name a
// regular file (never a device, a FIFO or a directory: /dev/sda or
// /dev/zero as a "backing file" would make Platter read a disk it was
// not asked to, or read forever), and a relative name is resolved from
// the directory of the file that names it, as qemu and VMware do. local
// further requires a relative name inside that directory (no "..", not
// absolute): VMDK extents. It returns the file, its size, its identity
// (to detect loops) and the path it resolved to.
func namedFile(from, name string, local bool, what string) (*os.File, int64, os.FileInfo, string, error) {
	if name == "" {
		return nil, 0, nil, "", fmt.Errorf("%s has an empty name", what)
	}
	if local && !filepath.IsLocal(filepath.FromSlash(name)) {
		return nil, 0, nil, "", fmt.Errorf("%s %q is not a file name inside %s's directory: refused (only names relative to it, without \"..\", are followed)", what, name, filepath.Base(from))
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(from), filepath.FromSlash(name))
	}
	// The kernel's pseudo files look like regular files (/proc/kcore,
	// files in /sys): never read one as a disk.
	if real, err := filepath.EvalSymlinks(p); err == nil {
		for _, dir := range []string{"/proc/", "/sys/", "/dev/"} {
			if strings.HasPrefix(real, dir) {
				return nil, 0, nil, "", fmt.Errorf("%s %q (%s) is in %s: refused", what, name, real, dir)
			}
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, nil, "", fmt.Errorf("%s %q: %w", what, name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, "", fmt.Errorf("%s %q: %w", what, name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, nil, "", fmt.Errorf("%s %q (%s) is not a regular file (%s): refused", what, name, p, st.Mode().Type())
	}
	return f, st.Size(), st, p, nil
}

// Whence values of lseek(2) that find data and holes in a sparse file
// (the same on Linux, the BSDs, macOS and illumos); elsewhere Seek fails
// and the whole file counts as data.
const (
	seekData = 3
	seekHole = 4
)

// errNoData is lseek's answer to SEEK_DATA past the last data.
var errNoData error = syscall.ENXIO

// dataExtents lists the parts of f (size bytes) that are not holes, or
// the whole file where the filesystem cannot tell.
func dataExtents(f *os.File, size int64) []block.Extent {
	whole := []block.Extent{{Off: 0, Len: size}}
	if size == 0 {
		return nil
	}
	var out extentList
	off := int64(0)
	for n := 0; off < size; n++ {
		if n > 1<<20 { // a file with a million holes: count it all
			return whole
		}
		d, err := f.Seek(off, seekData)
		if err != nil {
			if n > 0 && errors.Is(err, errNoData) {
				break // no data after off
			}
			if errors.Is(err, errNoData) {
				return nil // all hole
			}
			return whole
		}
		h, err := f.Seek(d, seekHole)
		if err != nil || h <= d {
			return whole
		}
		out.add(d, min(h, size)-d)
		off = h
	}
	return out
}

// rawDisk reads a regular file as a raw disk: a qcow2's raw backing file.
func rawDisk(f *os.File, size int64) *mappedDisk {
	return &mappedDisk{
		format:  Raw,
		size:    size,
		alloc:   dataExtents(f, size),
		readRun: func(p []byte, off int64) (int, error) { return readFileRun(f, size, p, off, "raw disk") },
		closers: []io.Closer{f},
	}
}

// readFileRun reads p from the file at off, all of it or an error.
func readFileRun(f io.ReaderAt, size int64, p []byte, off int64, what string) (int, error) {
	if err := readExact(f, size, p, off, what); err != nil {
		return 0, err
	}
	return len(p), nil
}
