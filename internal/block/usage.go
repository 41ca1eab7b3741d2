package block

import (
	"bufio"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// Usage is a filesystem detector's answer: which filesystem it found and
// which of its blocks hold data.
//
// The allocation map is read from the filesystem a window at a time, when
// it is asked for, and never held whole: a 16 TiB filesystem of 4 KiB
// blocks has a 512 MiB bitmap, and imaging it must not need that memory.
type Usage struct {
	// FS names the filesystem or container as image metadata records
	// it: one of the Names of its package's descriptor (internal/fs/vfs),
	// "ext4", "fat32", "ntfs", "xfs", "lvm2", "luks2" and so on.
	FS string
	// Warning, when set, says why the filesystem's own allocation data
	// was not taken as it stands: a crash it has not recovered from, or
	// damage its checker would repair. The map already allows for it:
	// the detector widened it to every block the filesystem may need
	// after its own recovery (the blocks its journal names, say), or,
	// when Untrusted, it counts every block as used.
	Warning string
	// Untrusted says the allocation data could not be made safe to
	// follow (Warning says why): every block counts as used. An imager
	// copies such a filesystem whole, and keeps it named so that its
	// files can still be read.
	Untrusted bool
	// Detail describes a container beyond its name (a volume group's
	// name, a LUKS version and cipher), for info; Volumes are the
	// volumes inside it, each with the filesystem found there.
	Detail  string
	Volumes []Volume
	// FillFree says the free blocks must not be restored as zeros but as
	// fresh random bytes: they lie in an encrypted volume's payload,
	// where zeros would show which blocks are free. It holds for the
	// whole map: a container gets it when any volume inside it has it
	// (an opened LUKS volume in an LVM LV), and then every free block
	// of the container (free extents, other LVs' free blocks) is
	// restored random too.
	FillFree bool

	blockSize int64
	length    int64
	fill      FillFunc
}

// FillFunc marks in m the used blocks among blocks first, first+1, ...,
// first+m.Blocks()-1 of a filesystem; m is empty when it is called. Used
// blocks are every block the filesystem's own structures say is
// allocated, plus its metadata areas (boot sectors, superblocks, FATs,
// ...). Calls come one at a time.
type FillFunc func(first int64, m *Map) error

// Volume is a volume inside a container: a logical volume, the
// decrypted payload of an encrypted one.
type Volume struct {
	Name       string `json:"name"`
	Start      int64  `json:"start"` // where it begins in the container (its first extent)
	Size       int64  `json:"size"`
	Filesystem string `json:"filesystem"` // "raw" when none was found
	UsedBytes  int64  `json:"used_bytes"`
	Note       string `json:"note,omitempty"`
}

// NewUsage describes a filesystem whose map has blocks of blockSize bytes
// over length bytes (the whole partition) and is read by fill.
func NewUsage(fs string, blockSize, length int64, fill FillFunc) (*Usage, error) {
	if blockSize <= 0 || length < 0 {
		return nil, fmt.Errorf("block: bad map geometry: block size %d, length %d", blockSize, length)
	}
	return &Usage{FS: fs, blockSize: blockSize, length: length, fill: fill}, nil
}

// Distrust marks u untrusted for reason: from then on every block of it
// counts as used.
func (u *Usage) Distrust(reason string) {
	u.Warning, u.Untrusted = reason, true
	u.fill = func(_ int64, m *Map) error {
		m.SetRange(0, m.Blocks())
		return nil
	}
}

// BlockSize is the size of one map block in bytes.
func (u *Usage) BlockSize() int64 { return u.blockSize }

// Len is the number of bytes the map covers.
func (u *Usage) Len() int64 { return u.length }

// Blocks is the number of blocks the map covers.
func (u *Usage) Blocks() int64 { return (u.length + u.blockSize - 1) / u.blockSize }

// window returns the map of blocks [first, first+n), clipped to the end.
func (u *Usage) window(first, n int64) (*Map, error) {
	n = min(n, u.Blocks()-first)
	m, err := NewMap(u.blockSize, min(n*u.blockSize, u.length-first*u.blockSize))
	if err != nil {
		return nil, err
	}
	if err := u.fill(first, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Window returns the map of the blocks that overlap bytes [off, off+n)
// and the byte offset of its first block: byte x of the filesystem is
// byte x-base of the window.
func (u *Usage) Window(off, n int64) (m *Map, base int64, err error) {
	if off < 0 || n <= 0 || off+n > u.length {
		return nil, 0, fmt.Errorf("block: window [%d, %d) outside the %d-byte map", off, off+n, u.length)
	}
	first := off / u.blockSize
	last := (off + n - 1) / u.blockSize
	m, err = u.window(first, last-first+1)
	return m, first * u.blockSize, err
}

// scanBlocks is the window, in blocks, of the whole-map walks below: a
// multiple of 8 so each window's bitmap starts on a byte.
const scanBlocks = 1 << 20

// walk calls fn with each window of the whole map, in order.
func (u *Usage) walk(fn func(*Map) error) error {
	for first := int64(0); first < u.Blocks(); first += scanBlocks {
		m, err := u.window(first, scanBlocks)
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// UsedBytes is the number of bytes in used blocks (the last block counted
// at its real, possibly short, length). It reads the whole map.
func (u *Usage) UsedBytes() (int64, error) {
	var n int64
	err := u.walk(func(m *Map) error {
		n += m.UsedBytes()
		return nil
	})
	return n, err
}

// WriteTo writes the whole map in the form Map.Bytes gives, a window at a
// time.
func (u *Usage) WriteTo(w io.Writer) (int64, error) {
	var total int64
	err := u.walk(func(m *Map) error {
		n, err := m.WriteTo(w)
		total += n
		return err
	})
	return total, err
}

// Load reads the whole map into memory: for tests and tools that look at
// small filesystems.
func (u *Usage) Load() (*Map, error) {
	all, err := NewMap(u.blockSize, u.length)
	if err != nil {
		return nil, err
	}
	var first int64
	err = u.walk(func(m *Map) error {
		m.Runs(0, m.Len(), func(e Extent) {
			all.SetBytes(first*u.blockSize+e.Off, e.Len)
		})
		first += m.Blocks()
		return nil
	})
	return all, err
}

// Keep reads the whole map now and returns a Usage that answers from that
// copy, held in an unlinked temporary file in dir ("": os.TempDir()), not
// from the filesystem. Live imaging keeps the map read while the
// filesystem is frozen: read again after the thaw, it would describe a
// later filesystem than the image holds. Close the returned Usage's file
// with the func returned.
func (u *Usage) Keep(dir string) (*Usage, func() error, error) {
	f, err := os.CreateTemp(dir, ".platter-map-*")
	if err != nil {
		return nil, nil, fmt.Errorf("block: keep allocation map: %w", err)
	}
	os.Remove(f.Name()) // gone when closed, even after a crash
	bw := bufio.NewWriterSize(f, 1<<20)
	_, err = u.WriteTo(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("block: keep allocation map: %w", err)
	}
	kept := &Usage{FS: u.FS, Warning: u.Warning, Untrusted: u.Untrusted, Detail: u.Detail, Volumes: u.Volumes, FillFree: u.FillFree, blockSize: u.blockSize, length: u.length}
	kept.fill = func(first int64, m *Map) error {
		lo, hi := first/8, (first+m.Blocks()+7)/8
		b := make([]byte, hi-lo)
		if _, err := f.ReadAt(b, lo); err != nil {
			return fmt.Errorf("block: read kept allocation map: %w", err)
		}
		shift := first % 8
		for k, v := range b {
			for v != 0 {
				bit := int64(bits.TrailingZeros8(v))
				v &= v - 1
				m.Set(int64(k)*8 + bit - shift)
			}
		}
		return nil
	}
	return kept, f.Close, nil
}

// Runs calls fn for each maximal run of used bytes inside [off, off+n),
// in order, clipped to that range and to the map; runs that meet at a
// window of the walk are reported separately. It reads the map a window
// at a time, never the whole of it at once.
func (u *Usage) Runs(off, n int64, fn func(Extent)) error {
	end := min(off+n, u.length)
	off = max(off, 0)
	if off >= end {
		return nil
	}
	for first := off / u.blockSize; first*u.blockSize < end; first += scanBlocks {
		m, err := u.window(first, scanBlocks)
		if err != nil {
			return err
		}
		base := first * u.blockSize
		lo := max(off, base) - base
		hi := min(end, base+m.Len()) - base
		if lo < hi {
			m.Runs(lo, hi-lo, func(e Extent) { fn(Extent{Off: base + e.Off, Len: e.Len}) })
		}
	}
	return nil
}
