package iso9660

// This file reads files out of an ISO 9660 volume: its directories (by
// the Rock Ridge names when the root says Rock Ridge is there, else by
// the Joliet tree's names, else the plain ISO names, as Linux chooses),
// files of several extents (over 4 GiB) read as one, Rock Ridge's
// relocated deep directories put back where they belong.

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"slices"
	"time"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	// maxDirBytes bounds one directory's records.
	maxDirBytes = 64 << 20
	// maxDepth bounds how deep directories nest (a loop through CL
	// entries is found by the ancestors' extents before).
	maxDepth = 256
)

// ErrInterleaved is the error of opening an interleaved file (a file
// unit size in its record), which platter does not read.
var ErrInterleaved = errors.New("iso9660: the file is recorded interleaved (file unit size set), which platter does not read")

// Files is an ISO 9660 volume opened for reading its files.
type Files struct {
	v      *volume
	root   File
	tree   *vfs.Tree[File, int64]
	rock   bool // names from Rock Ridge
	joliet bool // names from the Joliet tree
	skip   int  // SUSP len_skp
}

// extent is a piece of a file's data: n bytes from byte off.
type extent struct{ off, n int64 }

// File is a directory entry.
type File struct {
	Name     string
	Mode     iofs.FileMode
	Size     int64
	ModTime  time.Time
	Target   string
	Owner    bool
	Uid, Gid uint32
	// Err, when set, says why the entry cannot be read.
	Err error

	extents []extent
	off     int64   // its record's byte; the descriptor's for the root
	parents []int64 // the extents (bytes) of the directories above it
	refuse  error   // why Open refuses it (interleaved)
	zf      bool    // compressed with zisofs: extents hold its stored bytes
	stored  int64   // of a zisofs file
}

func (f File) key() int64 {
	if len(f.extents) == 0 {
		return -1
	}
	return f.extents[0].off
}

// OpenFiles reads the descriptors of the ISO 9660 volume in the size
// bytes of r and finds how its names are recorded. Not ISO 9660: an
// error wrapping block.ErrNotMine.
func OpenFiles(r io.ReaderAt, size int64) (*Files, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	f := &Files{v: v}
	root, err := f.rootOf(v.pvd, v.pvdOff)
	if err != nil {
		return nil, err
	}
	// Rock Ridge: an SP entry in the root's "." record, and Rock Ridge
	// entries there.
	b := make([]byte, min(root.Size, v.blockSize))
	if err := readAt(v.r, b, root.extents[0].off); err != nil {
		return nil, fmt.Errorf("iso9660: read the root directory at byte %d: %w", root.extents[0].off, err)
	}
	if len(b) > 0 && int(b[0]) <= len(b) {
		if rec, ok := parseRecord(b, root.extents[0].off); ok {
			ro := v.rockRidge(rec, 0)
			if ro.sp {
				f.skip = ro.skip
				ro = v.rockRidge(rec, ro.skip)
				f.rock = ro.rr
			}
		}
	}
	if !f.rock && v.joliet != nil {
		if jr, err := f.rootOf(v.joliet, v.jolietOff); err == nil {
			root, f.joliet = jr, true
		}
	}
	f.root = root
	f.tree = vfs.NewTree(root, f.list, entry, File.key, func(s string) string { return s })
	return f, nil
}

// Names says which names the files are read by: "rock ridge", "joliet"
// or "iso9660".
func (f *Files) Names() string {
	switch {
	case f.rock:
		return "rock ridge"
	case f.joliet:
		return "joliet"
	}
	return "iso9660"
}

// rootOf is the root directory of the tree a descriptor (at byte off)
// names in its root directory record (byte 156).
func (f *Files) rootOf(desc []byte, off int64) (File, error) {
	rec, ok := parseRecord(desc[156:190], off+156)
	if !ok || rec.flags&flagDir == 0 {
		return File{}, corrupt(off+156, "the root directory record is damaged")
	}
	start := (rec.lba + rec.extAttrs) * f.v.blockSize
	if rec.length <= 0 || rec.length > maxDirBytes || start < 0 || start+rec.length > f.v.end() {
		return File{}, corrupt(off+156, "the root directory (block %d, %d bytes) lies outside the %d-byte volume", rec.lba, rec.length, f.v.end())
	}
	return File{Name: "/", Mode: iofs.ModeDir | 0o555, Size: rec.length, ModTime: rec.date, off: off + 156,
		extents: []extent{{start, rec.length}}}, nil
}

// Stat finds name: a slash-separated path relative to the root.
func (f *Files) Stat(name string) (File, error) { return f.tree.Stat(name) }

// ReadDir lists a directory's entries in on-disk order, without "." and
// "..", relocated directories in the place Rock Ridge gives them.
func (f *Files) ReadDir(name string) ([]File, error) { return f.tree.ReadDir(name) }

// Open returns a reader of a file's contents (also an io.ReaderAt, safe
// for parallel calls, and an io.Seeker); a zisofs file's are
// decompressed. An interleaved file is refused with ErrInterleaved.
func (f *Files) Open(name string) (io.ReadCloser, error) {
	e, err := f.tree.File(name)
	if err != nil {
		return nil, err
	}
	if e.refuse != nil {
		return nil, fmt.Errorf("%s: %w", name, e.refuse)
	}
	if !e.Mode.IsRegular() {
		return nil, fmt.Errorf("%s: %w", name, vfs.ErrNotRegular)
	}
	if e.zf {
		stored := &extents{r: f.v.r, ext: e.extents, size: e.stored}
		z, err := openZisofs(stored, e.stored, e.Size, e.off, fmt.Sprintf("%q", name))
		if err != nil {
			return nil, err
		}
		return vfs.Section(z, e.Size), nil
	}
	return vfs.Section(&extents{r: f.v.r, ext: e.extents, size: e.Size}, e.Size), nil
}

// extents reads a file through its extents, in order.
type extents struct {
	r    io.ReaderAt
	ext  []extent
	size int64
}

func (x *extents) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("iso9660: negative offset %d", off)
	}
	done := 0
	pos := int64(0)
	for _, e := range x.ext {
		if done == len(p) {
			break
		}
		if off+int64(done) >= pos+e.n {
			pos += e.n
			continue
		}
		within := off + int64(done) - pos
		k := int(min(e.n-within, int64(len(p)-done)))
		if err := readAt(x.r, p[done:done+k], e.off+within); err != nil {
			return done, fmt.Errorf("iso9660: read the file at byte %d: %w", e.off+within, err)
		}
		done += k
		pos += e.n
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// readAt reads len(b) bytes at off.
func readAt(r io.ReaderAt, b []byte, off int64) error { return vfs.ReadFull(r, b, off) }

// entry is a File as vfs.Entry.
func entry(f File) vfs.Entry {
	return vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target,
		Owner: f.Owner, Uid: f.Uid, Gid: f.Gid, Err: f.Err}
}

// list reads directory d's records, in on-disk order. Damage in a sector
// loses that sector's entries (an entry with a *vfs.LostEntriesError),
// not the directory.
func (f *Files) list(d File) ([]File, error) {
	v := f.v
	if len(d.parents) >= maxDepth {
		return nil, corrupt(d.off, "directories nest more than %d deep", maxDepth)
	}
	ext := d.extents[0]
	if ext.n > maxDirBytes || ext.off < 0 || ext.off+ext.n > v.end() {
		return nil, corrupt(d.off, "the directory %q (%d bytes at byte %d) lies outside the %d-byte volume", d.Name, ext.n, ext.off, v.end())
	}
	buf := make([]byte, ext.n)
	if err := readAt(v.r, buf, ext.off); err != nil {
		return nil, fmt.Errorf("iso9660: read the directory %q at byte %d: %w", d.Name, ext.off, err)
	}
	parents := append(slices.Clone(d.parents), ext.off)
	var out []File
	var multi *File // a file of several extents being gathered
	lost := func(at int64, format string, args ...any) {
		out = append(out, File{Err: &vfs.LostEntriesError{Err: corrupt(at, format, args...)}})
	}
	for sec := int64(0); sec < ext.n; sec += descSize {
		end := min(sec+descSize, ext.n)
		for pos := sec; pos < end; {
			l := int64(buf[pos])
			if l == 0 {
				break // the rest of the sector is padding
			}
			at := ext.off + pos
			if pos+l > end {
				lost(at, "a directory record of %d bytes runs past its sector", l)
				break
			}
			rec, ok := parseRecord(buf[pos:pos+l], at)
			pos += l
			if !ok {
				lost(at, "a damaged directory record")
				continue
			}
			if len(rec.name) == 1 && rec.name[0] <= 1 {
				continue // "." and ".."
			}
			e := f.file(rec, parents)
			if e.Name == "" && e.Err == nil {
				continue // relocated, associated, or nameless
			}
			// Records of one file of several extents follow each other;
			// all but the last carry flagMulti.
			if multi != nil {
				if multi.Name == e.Name && e.Err == nil && multi.Err == nil {
					multi.extents = append(multi.extents, e.extents...)
					multi.Size += e.Size
					if rec.flags&flagMulti != 0 {
						continue
					}
					e = *multi
				} else {
					m := *multi
					m.Err = corrupt(m.off, "the file %q of several extents ends without its last record", m.Name)
					out = append(out, m)
				}
				multi = nil
			} else if rec.flags&flagMulti != 0 && e.Err == nil && !e.Mode.IsDir() {
				m := e
				multi = &m
				continue
			}
			out = append(out, e)
		}
	}
	if multi != nil {
		m := *multi
		m.Err = corrupt(m.off, "the file %q of several extents ends without its last record", m.Name)
		out = append(out, m)
	}
	return out, nil
}

// file describes record rec of a directory whose ancestors' extents (and
// its own, last) are parents. A record to leave out has no Name and no
// Err.
func (f *Files) file(rec record, parents []int64) File {
	v := f.v
	e := File{off: rec.off, ModTime: rec.date, parents: parents}
	if rec.flags&flagAssociated != 0 {
		return File{}
	}
	switch {
	case f.joliet:
		e.Name = jolietName(rec.name)
	default:
		e.Name = isoName(rec.name)
	}
	if rec.flags&flagDir != 0 {
		e.Mode = iofs.ModeDir | 0o555
	} else {
		e.Mode = 0o444
	}
	start := (rec.lba + rec.extAttrs) * v.blockSize
	length := rec.length
	e.Size = length
	if rec.unit != 0 || rec.gap != 0 {
		e.refuse = ErrInterleaved
	}
	if f.rock {
		ro := v.rockRidge(rec, f.skip)
		if ro.reloc {
			return File{} // listed where its CL entry stands
		}
		if ro.hasName {
			e.Name = string(ro.name)
		}
		if ro.hasMode {
			e.Mode = posixMode(ro.mode)
			e.Owner, e.Uid, e.Gid = true, ro.uid, ro.gid
		}
		if !ro.mtime.IsZero() {
			e.ModTime = ro.mtime
		}
		if e.Mode&iofs.ModeSymlink != 0 {
			e.Target = ro.linkTarget()
			e.Size = int64(len(e.Target))
		}
		if ro.zf && e.Mode.IsRegular() {
			e.Size, e.zf, e.stored = ro.zfSize, true, length
		}
		if ro.child >= 0 {
			// A deep directory relocated: its records are at CL's block.
			child, err := f.relocated(ro.child, rec.off)
			if err != nil {
				e.Err = err
				return e
			}
			e.Mode |= iofs.ModeDir
			start, length, e.Size = child.off, child.n, child.n
		}
		if ro.err != "" {
			e.Err = corrupt(rec.off, "the Rock Ridge entries of %q: %s", e.Name, ro.err)
			return e
		}
	}
	if e.Name == "" {
		e.Err = corrupt(rec.off, "a directory record without a name")
		return e
	}
	if e.Mode.IsDir() || e.Mode.IsRegular() {
		if length > 0 && (start < 0 || start+length > v.end()) {
			e.Err = corrupt(rec.off, "the data of %q (%d bytes at byte %d) lies past byte %d, where the volume ends (or the source, cut short)", e.Name, length, start, v.end())
			return e
		}
		e.extents = []extent{{start, length}}
	}
	if e.Mode.IsDir() {
		if e.Size == 0 || e.Size > maxDirBytes {
			e.Err = corrupt(rec.off, "the directory %q is %d bytes", e.Name, e.Size)
			return e
		}
		if slices.Contains(parents, start) {
			e.Err = corrupt(rec.off, "the directory %q is one of the directories it is in (a loop)", e.Name)
			return e
		}
	}
	return e
}

// relocated reads the "." record of a directory Rock Ridge relocated
// to block lba, for its extent.
func (f *Files) relocated(lba, at int64) (extent, error) {
	v := f.v
	start := lba * v.blockSize
	if start < 0 || start+recMin > v.end() {
		return extent{}, corrupt(at, "a relocated directory at block %d, outside the volume", lba)
	}
	b := make([]byte, 255)
	n := min(int64(len(b)), v.end()-start)
	if err := readAt(v.r, b[:n], start); err != nil {
		return extent{}, fmt.Errorf("iso9660: read the relocated directory at byte %d: %w", start, err)
	}
	rec, ok := parseRecord(b[:n], start)
	if !ok || len(rec.name) != 1 || rec.name[0] != 0 {
		return extent{}, corrupt(start, "the relocated directory's first record is not its \".\"")
	}
	off := (rec.lba + rec.extAttrs) * v.blockSize
	if off != start || rec.length <= 0 || rec.length > maxDirBytes || off+rec.length > v.end() {
		return extent{}, corrupt(start, "the relocated directory's \".\" record names %d bytes at block %d", rec.length, rec.lba)
	}
	return extent{off, rec.length}, nil
}
