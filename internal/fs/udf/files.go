package udf

// This file reads directories (their File Identifier Descriptors, the
// deleted ones and the parent's skipped), OSTA compressed Unicode names
// (8- and 16-bit), symlinks (ECMA-167 4/14.16 path components) and
// files. Memory is bounded by what the volume holds: a directory is read
// whole, up to maxDirBytes and never more than its extents map; vfs.Tree
// keeps the listings of the few directories read last.

import (
	"fmt"
	"io"
	iofs "io/fs"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	// maxDirBytes bounds a directory read: 32 MiB of identifiers, some
	// 200,000 entries of 128-character names.
	maxDirBytes = 32 << 20
	// maxLinkBytes bounds a symlink's path components read.
	maxLinkBytes = 64 << 10
)

// Files is a UDF volume opened for reading its files.
type Files struct {
	v    *volume
	root File
	tree *vfs.Tree[File, icbKey]
}

// icbKey tells one directory from another: its ICB's partition and block.
type icbKey struct {
	part int
	lbn  uint32
}

// File is a directory entry: the File Identifier Descriptor's name and
// what its ICB says.
type File struct {
	Name     string
	Mode     iofs.FileMode
	Size     int64
	ModTime  time.Time
	Uid, Gid uint32 // 0xffffffff where the entry records none
	Target   string // of a symlink
	Err      error

	node *node
	key  icbKey
}

// OpenFiles reads the UDF volume in the size bytes of r: its anchor,
// descriptor sequence, partitions, File Set Descriptor and root
// directory's entry. Not UDF: an error wrapping block.ErrNotMine.
func OpenFiles(r io.ReaderAt, size int64) (*Files, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	if v.mapErr != nil {
		return nil, v.mapErr
	}
	p, err := v.part(v.fsd.part, 0)
	if err != nil {
		return nil, err
	}
	b, at, err := v.block(p, v.fsd.lbn)
	if err != nil {
		return nil, fmt.Errorf("udf: the File Set Descriptor: %w", err)
	}
	if _, err := checkTag(b, at, tagFSD, int64(v.fsd.lbn)); err != nil {
		return nil, err
	}
	rootAD := parseLongAD(b[400:])
	f := &Files{v: v}
	f.root = f.file("/", rootAD, at)
	if f.root.Err != nil {
		return nil, f.root.Err
	}
	if !f.root.Mode.IsDir() {
		return nil, corrupt(f.root.node.at, "the root directory's entry is of file type %d", f.root.node.ftype)
	}
	f.tree = vfs.NewTree(f.root, f.list, entry, func(d File) icbKey { return d.key }, func(s string) string { return s })
	return f, nil
}

// file reads the entry of name at ad (found at byte at): a File with Err
// set where it cannot be read.
func (f *Files) file(name string, ad longAD, at int64) File {
	e := File{Name: name, key: icbKey{int(ad.part), ad.lbn}}
	p, err := f.v.part(ad.part, at)
	if err == nil {
		e.node, err = f.v.node(p, int(ad.part), ad.lbn)
	}
	if err != nil {
		e.Err = fmt.Errorf("the entry of %q: %w", name, err)
		return e
	}
	n := e.node
	e.Mode, e.Size, e.ModTime, e.Uid, e.Gid = n.mode(), n.size, n.mtime, n.uid, n.gid
	if e.Mode.IsDir() {
		e.Size = 0
	}
	if e.Mode&iofs.ModeSymlink != 0 {
		e.Target, e.Err = f.target(n)
		if e.Err != nil {
			e.Err = fmt.Errorf("the symlink %q: %w", name, e.Err)
		}
		// The length of its target, as Linux's udf driver gives a
		// symlink's size (the path components it holds are longer).
		e.Size = int64(len(e.Target))
	}
	return e
}

func entry(f File) vfs.Entry {
	return vfs.Entry{Name: f.Name, Mode: f.Mode, Size: f.Size, ModTime: f.ModTime, Target: f.Target,
		Owner: f.Uid != noID && f.Gid != noID, Uid: f.Uid, Gid: f.Gid, Err: f.Err}
}

// Stat finds name, a slash-separated path relative to the root; names
// match exactly (UDF is case-sensitive).
func (f *Files) Stat(name string) (File, error) { return f.tree.Stat(name) }

// ReadDir lists a directory in on-disk order, deleted entries and the
// parent's skipped.
func (f *Files) ReadDir(name string) ([]File, error) { return f.tree.ReadDir(name) }

// Open returns a reader of a regular file's bytes (also an io.ReaderAt
// and io.Seeker).
func (f *Files) Open(name string) (io.ReadCloser, error) {
	e, err := f.tree.File(name)
	if err != nil {
		return nil, err
	}
	d, err := f.v.data(e.node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return vfs.Section(d, d.size), nil
}

// contents reads all of n's bytes, up to limit.
func (f *Files) contents(n *node, limit int64, what string) ([]byte, error) {
	if n.size > limit {
		return nil, corrupt(n.at, "%s of %d bytes, more than the %d read", what, n.size, limit)
	}
	d, err := f.v.data(n)
	if err != nil {
		return nil, err
	}
	// The extents cover the size and lie in the volume; a size past the
	// volume's cannot.
	if n.size > f.v.size {
		return nil, corrupt(n.at, "%s of %d bytes in a volume of %d", what, n.size, f.v.size)
	}
	b := make([]byte, n.size)
	if _, err := d.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// list reads directory d's File Identifier Descriptors.
func (f *Files) list(d File) ([]File, error) {
	b, err := f.contents(d.node, maxDirBytes, "a directory")
	if err != nil {
		return nil, fmt.Errorf("the directory %q: %w", d.Name, err)
	}
	var files []File
	for pos := 0; pos < len(b); {
		rest := b[pos:]
		at := d.node.at // where the directory's entry is: messages name it
		if len(rest) < 38 {
			files = append(files, File{Err: &vfs.LostEntriesError{Err: corrupt(at, "a File Identifier Descriptor cut short at byte %d of the directory %q", pos, d.Name)}})
			break
		}
		lfi, liu := int(rest[19]), int(le.Uint16(rest[36:]))
		n := (38 + liu + lfi + 3) &^ 3
		if 38+liu+lfi > len(rest) {
			files = append(files, File{Err: &vfs.LostEntriesError{Err: corrupt(at, "a File Identifier Descriptor of %d bytes at byte %d of the directory %q runs past its end", 38+liu+lfi, pos, d.Name)}})
			break
		}
		fid := rest[:min(n, len(rest))]
		if _, err := checkTag(fid, at, tagFID, -1); err != nil {
			files = append(files, File{Err: &vfs.LostEntriesError{Err: fmt.Errorf("the File Identifier Descriptor at byte %d of the directory %q: %w", pos, d.Name, err)}})
			break
		}
		pos += n
		chars := fid[18]
		if chars&(4|8) != 0 { // deleted, or the parent
			continue
		}
		name, err := dchars(fid[38+liu : 38+liu+lfi])
		e := File{Name: name}
		if err == nil {
			e = f.file(name, parseLongAD(fid[20:]), at)
		} else {
			e.Err = fmt.Errorf("a name at byte %d of the directory %q: %w", pos-n, d.Name, err)
		}
		files = append(files, e)
	}
	return files, nil
}

// dchars decodes OSTA compressed Unicode (UDF 2.1.1): a compression ID
// (8 or 254: one byte a character; 16 or 255: two, big-endian) and the
// characters. A unit that is half a surrogate pair alone becomes U+FFFD.
func dchars(b []byte) (string, error) {
	if len(b) == 0 {
		return "", nil
	}
	c := b[1:]
	switch b[0] {
	case 8, 254:
		r := make([]rune, len(c))
		for i, x := range c {
			r[i] = rune(x)
		}
		return string(r), nil
	case 16, 255:
		if len(c)%2 != 0 {
			return "", fmt.Errorf("a 16-bit name of %d bytes", len(c))
		}
		u := make([]uint16, len(c)/2)
		for i := range u {
			u[i] = uint16(c[2*i])<<8 | uint16(c[2*i+1])
		}
		return string(utf16.Decode(u)), nil
	}
	return "", fmt.Errorf("a name of compression ID %d", b[0])
}

// dstring decodes a dstring field (its last byte the length used).
func dstring(b []byte) string {
	n := int(b[len(b)-1])
	if n == 0 || n > len(b)-1 {
		return ""
	}
	s, _ := dchars(b[:n])
	return s
}

// target reads a symlink's path components (ECMA-167 4/14.16.1) as
// Linux's udf driver joins them.
func (f *Files) target(n *node) (string, error) {
	b, err := f.contents(n, maxLinkBytes, "a symlink")
	if err != nil {
		return "", err
	}
	var parts []string
	abs := false
	for len(b) > 0 {
		if len(b) < 4 || 4+int(b[1]) > len(b) {
			return "", corrupt(n.at, "a path component cut short")
		}
		ci := b[4 : 4+int(b[1])]
		switch b[0] {
		case 1, 2: // the root
			if b[0] == 1 && len(ci) > 0 {
				break // an implementation's own root: Linux skips it
			}
			parts, abs = nil, true
		case 3:
			parts = append(parts, "..")
		case 4:
			parts = append(parts, ".")
		case 5:
			s, err := dchars(ci)
			if err != nil {
				return "", corrupt(n.at, "a path component: %v", err)
			}
			parts = append(parts, s)
		default:
			return "", corrupt(n.at, "a path component of type %d", b[0])
		}
		b = b[4+int(b[1]):]
	}
	s := strings.Join(parts, "/")
	if abs {
		s = "/" + s
	}
	return s, nil
}
