package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// reader reads an NTFS volume's files (through mft.go, index.go,
// stream.go and link.go) as vfs.Files: each directory lists
// what ntfs-3g lists, in the same order, and a file's data is read
// through all its extents, wherever an attribute list puts them.
type reader struct {
	v *volume

	mu    sync.Mutex
	dirs  map[string]*listing // listings by directory path
	order []string            // least recently used first
	held  int                 // entries the listings hold
}

// listing is a directory as readDir lists it, with each entry's MFT
// reference, for lookups by path.
type listing struct {
	ents []vfs.Entry
	refs []uint64
}

// cacheEntries bounds the entries of the listings kept: a lookup by
// path lists each directory on the way (fsread's Stat lists the parent
// of every name), and a mount looks up every entry of a large directory.
const cacheEntries = 1 << 17

// openFiles opens the NTFS volume in r (size bytes) for reading its
// files.
func openFiles(r io.ReaderAt, size int64) (*reader, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	return newReader(v), nil
}

func newReader(v *volume) *reader {
	return &reader{v: v, dirs: map[string]*listing{}}
}

// label reads the volume label: $VOLUME_NAME of $Volume (MFT record 3).
func (n *reader) label() (string, error) {
	f, err := n.v.file(recVolume)
	if err != nil {
		return "", err
	}
	b, err := f.value(attrVolumeName, "", 512)
	if isNoAttr(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return decodeName(b), nil
}

// listing reads directory dir ("" the root), or finds it read.
func (n *reader) listing(dir string) (*listing, error) {
	n.mu.Lock()
	if l, ok := n.dirs[dir]; ok {
		for i, d := range n.order {
			if d == dir {
				n.order = append(append(n.order[:i:i], n.order[i+1:]...), dir)
				break
			}
		}
		n.mu.Unlock()
		return l, nil
	}
	n.mu.Unlock()

	ref := uint64(recRoot)
	if dir != "" {
		parent, base := path.Split(dir)
		l, err := n.listing(strings.TrimSuffix(parent, "/"))
		if err != nil {
			return nil, err
		}
		i := l.find(base)
		switch {
		case i < 0:
			return nil, fmt.Errorf("/%s: %w", dir, iofs.ErrNotExist)
		case l.ents[i].Err != nil:
			return nil, fmt.Errorf("/%s: %w", dir, l.ents[i].Err)
		case !l.ents[i].Mode.IsDir():
			return nil, fmt.Errorf("/%s is not a directory", dir)
		}
		ref = l.refs[i]
	}
	l, err := n.read(dir, ref)
	if err != nil {
		return nil, err
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.dirs[dir]; !ok {
		n.dirs[dir] = l
		n.order = append(n.order, dir)
		n.held += len(l.ents)
		for n.held > cacheEntries && len(n.order) > 1 {
			n.held -= len(n.dirs[n.order[0]].ents)
			delete(n.dirs, n.order[0])
			n.order = n.order[1:]
		}
	}
	return l, nil
}

// find returns the index of the entry name matches, without regard to
// case (as fsread matches names): the first such entry, the one fsread
// keeps. -1 if none.
func (l *listing) find(name string) int {
	for i, d := range l.ents {
		if strings.EqualFold(d.Name, name) {
			return i
		}
	}
	return -1
}

// read lists directory dir, MFT reference ref: every entry ntfs-3g
// lists (not DOS names beside Win32 ones, not the metadata files below
// record 16, not the root's entry for itself), each described from its
// own record.
func (n *reader) read(dir string, ref uint64) (*listing, error) {
	f, err := n.v.file(ref)
	if err != nil {
		return nil, err
	}
	if f.rec.flags&recordIsDir == 0 {
		return nil, fmt.Errorf("/%s is not a directory", dir)
	}
	entries, err := f.index()
	var damage *vfs.LostEntriesError
	if errors.As(err, &damage) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	l := &listing{}
	for _, ie := range entries {
		rec := int64(ie.ref & refMask)
		if ie.space == nameDOS || rec == recRoot || rec < firstUserRecord {
			continue
		}
		e, err := n.describe(dir, ie)
		e.Err = err
		l.ents = append(l.ents, e)
		l.refs = append(l.refs, ie.ref)
	}
	if damage != nil {
		// The lost entries cannot be named: one nameless entry says
		// what was lost (vfs.Files).
		l.ents = append(l.ents, vfs.Entry{Err: damage})
		l.refs = append(l.refs, 0)
	}
	return l, nil
}

// File attributes, of $STANDARD_INFORMATION.
const (
	fileHidden = 0x02
	fileSystem = 0x04
)

// describe reads the entry ie of directory dir from its file's record:
// its type and size as ntfs-3g gives them (a directory by its record's
// flag; a symlink by its reparse point or Interix data; Interix FIFOs,
// sockets and devices), its modification time.
func (n *reader) describe(dir string, ie indexEntry) (vfs.Entry, error) {
	e := vfs.Entry{Name: ie.name, Mode: 0o644}
	f, err := n.v.file(ie.ref)
	if err != nil {
		return e, err
	}
	si, err := f.value(attrStandardInformation, "", maxSmallAttr)
	if err != nil {
		return e, err
	}
	if len(si) < 0x24 {
		return e, corrupt(f.rec.num, f.rec.off, "$STANDARD_INFORMATION of %d bytes is too short", len(si))
	}
	e.ModTime = fileTime(binary.LittleEndian.Uint64(si[8:]))
	attrs := binary.LittleEndian.Uint32(si[0x20:])
	target, err := reparse(f, dir)
	if err != nil {
		return e, fmt.Errorf("read its link: %w", err)
	}
	switch {
	case target != "":
		e.Mode, e.Size, e.Target = iofs.ModeSymlink|0o777, int64(len(target)), target
		return e, nil
	case f.rec.flags&recordIsDir != 0:
		e.Mode = iofs.ModeDir | 0o755
		return e, nil
	}
	data, err := f.stream(attrData, "")
	if err != nil {
		if isNoAttr(err) {
			return e, nil // no data: empty
		}
		return e, err
	}
	e.Size = data.size
	if attrs&fileSystem != 0 {
		return interix(e, data, attrs&fileHidden != 0)
	}
	return e, nil
}

// fileTime converts an NTFS time (100 ns units since 1601) to a time.
func fileTime(t uint64) time.Time {
	const epochDiff = 11644473600 // seconds from 1601 to 1970
	return time.Unix(int64(t/1e7)-epochDiff, int64(t%1e7)*100)
}

// ReadDir lists a directory; an entry that could not be described comes
// with its Err, and the others are listed.
func (n *reader) ReadDir(dir string) ([]vfs.Entry, error) {
	l, err := n.listing(dir)
	if err != nil {
		return nil, err
	}
	return append([]vfs.Entry(nil), l.ents...), nil
}

// entry finds name ("a/b/c", not the root) in its directory's listing.
func (n *reader) entry(name string) (vfs.Entry, uint64, error) {
	dir, base := path.Split(name)
	l, err := n.listing(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return vfs.Entry{}, 0, err
	}
	i := l.find(base)
	if i < 0 {
		return vfs.Entry{}, 0, fmt.Errorf("/%s: %w", name, iofs.ErrNotExist)
	}
	return l.ents[i], l.refs[i], l.ents[i].Err
}

func (n *reader) Stat(name string) (vfs.Entry, error) {
	name = strings.Trim(path.Clean("/"+name), "/")
	if name == "" {
		return vfs.Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	e, _, err := n.entry(name)
	if err != nil {
		return vfs.Entry{}, err
	}
	return e, nil
}

func (n *reader) Open(name string) (io.ReadCloser, error) {
	name = strings.Trim(path.Clean("/"+name), "/")
	d, ref, err := n.entry(name)
	if err != nil {
		return nil, err
	}
	if !d.Mode.IsRegular() {
		return nil, fmt.Errorf("/%s is not a regular file", name)
	}
	f, err := n.v.file(ref)
	if err != nil {
		return nil, err
	}
	data, err := f.stream(attrData, "")
	if isNoAttr(err) {
		return sectionCloser{io.NewSectionReader(strings.NewReader(""), 0, 0)}, nil
	}
	if err != nil {
		return nil, err
	}
	return sectionCloser{io.NewSectionReader(data, 0, data.size)}, nil
}

// sectionCloser is a file's reader: sequential, ReaderAt and Seeker.
type sectionCloser struct{ *io.SectionReader }

func (sectionCloser) Close() error { return nil }

// CaseInsensitive is true: NTFS matches names by its $UpCase table.
func (*reader) CaseInsensitive() bool { return true }
