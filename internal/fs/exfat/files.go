package exfat

// This file reads files out of an exFAT volume: directories, their
// entry sets (checked against their checksums), UTF-16 names of up to
// 255 characters, file data in one piece (NoFatChain) or by the active
// FAT's chains, and ValidDataLength (what lies past it reads as zeros).
// It is read-only.
//
// Every on-disk number is checked before it is used: a damaged image
// gives a *block.CorruptError naming the cluster, entry set or byte of
// the damage, never a panic or a loop. Memory is bounded by what the
// image holds: fatSlots pieces of the FAT, a piece of one cluster of a
// directory being read, the listings of the last maxDirs directories,
// the up-case table (128 KiB), and an open file's runs, no more than
// the clusters its size needs.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

const (
	// maxDirs is how many directories' listings are kept: extracting a
	// directory opens each of its files by path.
	maxDirs = 4
	// maxPaths bounds the directories remembered by path.
	maxPaths = 1024
)

var (
	errNotDir     = errors.New("not a directory")
	errNotRegular = errors.New("not a regular file")
)

// Files is an exFAT volume opened for reading its files. Its methods are
// safe for concurrent use if the io.ReaderAt is.
type Files struct {
	v     *volume
	up    *[1 << 16]uint16 // the up-case table names are matched by
	label string

	mu    sync.Mutex
	dirs  []*listing      // the last maxDirs listed, oldest first
	paths map[string]File // directories found by path
}

// File is a directory entry.
type File struct {
	// Name is the entry's name, decoded from UTF-16 (a unit that is half
	// a surrogate pair alone becomes U+FFFD); "/" for the root.
	Name string
	// Mode is ModeDir|0755 for a directory, 0644 for a file: exFAT has
	// no permissions.
	Mode iofs.FileMode
	Size int64 // DataLength; 0 for a directory
	// ModTime is the last modification time, to 10 ms, in UTC: its UTC
	// offset applied where the entry gives one, else taken as UTC.
	ModTime time.Time
	Attr    uint16 // the FAT attributes: read-only, hidden, system, directory, archive
	// Err, when set, says why the entry cannot be read: its entry set
	// is damaged (a checksum that does not match, entries missing).
	// Name is as much of its name as could be read.
	Err error

	data data
	off  int64 // byte of its file entry; -1 for the root
}

// OpenFiles reads the boot region (the backup one when the main one is
// damaged), the up-case table and the label of the exFAT volume in the
// size bytes of r. Not exFAT: an error wrapping block.ErrNotMine.
func OpenFiles(r io.ReaderAt, size int64) (*Files, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	f := &Files{v: v}
	var up *upcaseEntry
	haveLabel := false
	le := binary.LittleEndian
	err = v.dirEntries(f.root().data, "the root directory", func(raw []byte, _ int64) bool {
		switch raw[0] {
		case typeUpcase:
			if up == nil {
				up = &upcaseEntry{sum: le.Uint32(raw[4:]), first: le.Uint32(raw[20:]), length: le.Uint64(raw[24:])}
			}
		case typeLabel:
			if !haveLabel {
				n := min(int(raw[1]), 11)
				units := make([]uint16, n)
				for i := range units {
					units[i] = le.Uint16(raw[2+2*i:])
				}
				f.label, haveLabel = string(utf16.Decode(units)), true
			}
		}
		return up == nil || !haveLabel
	})
	if err != nil {
		return nil, err
	}
	f.up = v.upcase(up)
	return f, nil
}

// Label is the volume label (its 0x83 entry), "" when it has none.
func (f *Files) Label() string { return f.label }

// Serial is the volume serial number, from the boot sector.
func (f *Files) Serial() uint32 { return f.v.serial }

// root is the root directory's entry.
func (f *Files) root() File {
	return File{Name: "/", Mode: iofs.ModeDir | 0o755, off: -1, data: data{first: f.v.root, root: true}}
}

// Stat finds name: a slash-separated path relative to the root ("", "."
// and "/" are the root). Names match as exFAT matches them, by the
// volume's up-case table; of entries whose names match, the first is
// found. A damaged entry found gives its Err.
func (f *Files) Stat(name string) (File, error) {
	return f.lookup(clean(name))
}

// ReadDir lists a directory's entries in on-disk order: every file and
// directory entry set, the damaged ones with Err set, every name as the
// directory holds it, for the caller to judge. exFAT directories hold no
// "." or "..".
func (f *Files) ReadDir(name string) ([]File, error) {
	p := clean(name)
	d, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if !d.Mode.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, errNotDir)
	}
	l, err := f.list(d)
	if err != nil {
		return nil, err
	}
	return append([]File(nil), l.files...), nil
}

// Open returns a reader of a file's contents, found as Stat finds it.
// Its clusters are found once, here: a FAT chain that ends before the
// file's size, leads outside the volume, to a bad cluster or back to a
// cluster it has passed is a *block.CorruptError naming the cluster. The
// reader also implements io.ReaderAt (safe for parallel calls) and
// io.Seeker.
func (f *Files) Open(name string) (io.ReadCloser, error) {
	p := clean(name)
	e, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if e.Mode.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, errNotRegular)
	}
	runs, err := f.v.runs(e.data, fmt.Sprintf("%q (entry at byte %d)", e.Name, e.off))
	if err != nil {
		return nil, err
	}
	c := &content{v: f.v, runs: runs, size: e.data.length, valid: e.data.valid}
	return fileReader{io.NewSectionReader(c, 0, c.size)}, nil
}

// fileReader is what Open returns.
type fileReader struct{ *io.SectionReader }

// Close does nothing: the reader holds no resources of its own.
func (fileReader) Close() error { return nil }

// clean turns a path into lookup's form: "" for the root, no slash at
// either end.
func clean(name string) string { return strings.Trim(path.Clean("/"+name), "/") }

// lookup finds the entry at p, a cleaned path.
func (f *Files) lookup(p string) (File, error) {
	if p == "" {
		return f.root(), nil
	}
	dir, base := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	d, err := f.dirAt(dir)
	if err != nil {
		return File{}, err
	}
	l, err := f.list(d)
	if err != nil {
		return File{}, err
	}
	i, ok := l.index[f.key(base)]
	if !ok {
		return File{}, fmt.Errorf("%s: %w", p, iofs.ErrNotExist)
	}
	if e := l.files[i]; e.Err != nil {
		return File{}, fmt.Errorf("%s: %w", p, e.Err)
	}
	return l.files[i], nil
}

// dirAt finds the directory at p, a cleaned path, remembering it.
func (f *Files) dirAt(p string) (File, error) {
	if p == "" {
		return f.root(), nil
	}
	f.mu.Lock()
	d, ok := f.paths[p]
	f.mu.Unlock()
	if ok {
		return d, nil
	}
	d, err := f.lookup(p)
	if err != nil {
		return File{}, err
	}
	if !d.Mode.IsDir() {
		return File{}, fmt.Errorf("%s: %w", p, errNotDir)
	}
	f.mu.Lock()
	if f.paths == nil || len(f.paths) >= maxPaths {
		f.paths = make(map[string]File)
	}
	f.paths[p] = d
	f.mu.Unlock()
	return d, nil
}

// listing is a directory's entries and, by up-cased name, the first
// entry of each name.
type listing struct {
	key   data
	files []File
	index map[string]int
}

// list returns directory d's listing, from the last maxDirs read if it is
// there.
func (f *Files) list(d File) (*listing, error) {
	f.mu.Lock()
	for _, l := range f.dirs {
		if l.key == d.data {
			f.mu.Unlock()
			return l, nil
		}
	}
	f.mu.Unlock()
	l := &listing{key: d.data, index: map[string]int{}}
	add := func(e File) {
		// A damaged entry claims its name too: no later entry of it
		// is found in its place.
		if k := f.key(e.Name); !has(l.index, k) {
			l.index[k] = len(l.files)
		}
		l.files = append(l.files, e)
	}
	sr := setReader{set: func(s entrySet) {
		e, err := f.v.file(s)
		e.Err = err
		add(e)
	}}
	what := "the root directory"
	if !d.data.root {
		what = fmt.Sprintf("the directory %q (entry at byte %d)", d.Name, d.off)
	}
	if d.data.root || d.data.length > 0 {
		if err := f.v.dirEntries(d.data, what, func(raw []byte, off int64) bool {
			sr.entry(raw, off)
			return true
		}); err != nil {
			// A damaged directory is not kept.
			return nil, err
		}
	}
	sr.flush()
	f.mu.Lock()
	if len(f.dirs) == maxDirs {
		f.dirs = append(f.dirs[:0], f.dirs[1:]...)
	}
	f.dirs = append(f.dirs, l)
	f.mu.Unlock()
	return l, nil
}

func has(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// run maps n clusters of a file from its cluster lc on to the volume's
// clusters from pc on.
type run struct {
	lc, n int64
	pc    uint32
}

// runs finds the clusters of d's bytes: as many as its length needs, in
// one piece from its first cluster (NoFatChain), or by its FAT chain (the
// rest of a longer chain is not read, as the kernel does not read it).
func (v *volume) runs(d data, what string) ([]run, error) {
	runs, err := v.follow(d, what)
	if err != nil {
		return nil, err
	}
	// A chain that comes back to a cluster it passed: Brent's method
	// finds a loop only past twice its length, this finds any.
	byPC := append([]run(nil), runs...)
	sort.Slice(byPC, func(i, j int) bool { return byPC[i].pc < byPC[j].pc })
	for i := 1; i < len(byPC); i++ {
		if prev := byPC[i-1]; int64(prev.pc)+prev.n > int64(byPC[i].pc) {
			return nil, corrupt(v.entryOff(byPC[i].pc), "the cluster chain of %s passes cluster %d twice", what, byPC[i].pc)
		}
	}
	return runs, nil
}

// follow is runs without the check for clusters passed twice. On damage
// it also returns the runs found before it.
func (v *volume) follow(d data, what string) ([]run, error) {
	if d.length == 0 && !d.root {
		return nil, nil
	}
	need := (d.length + v.clusterSize - 1) / v.clusterSize
	if d.root {
		need = maxDirBytes / v.clusterSize
	}
	switch {
	case !v.valid(d.first):
		return nil, corrupt(v.heapOff, "the data of %s starts at cluster %d, outside the volume's clusters 2-%d", what, d.first, v.clusters+1)
	case need > int64(v.clusters) && !d.root:
		return nil, corrupt(v.heapOff, "%s needs %d clusters; the volume has %d", what, need, v.clusters)
	case d.contiguous:
		if int64(d.first-2)+need > int64(v.clusters) {
			return nil, corrupt(v.clusterOff(d.first), "the %d clusters of %s from cluster %d run past the volume's last cluster %d", need, what, d.first, v.clusters+1)
		}
		return []run{{lc: 0, pc: d.first, n: need}}, nil
	}
	var runs []run
	ch := newChain(v, d.first, what)
	for i := int64(0); ; i++ {
		if k := len(runs) - 1; k >= 0 && int64(runs[k].pc)+runs[k].n == int64(ch.c) {
			runs[k].n++
		} else {
			runs = append(runs, run{lc: i, pc: ch.c, n: 1})
		}
		if i == need-1 {
			if d.root {
				return runs, corrupt(v.entryOff(ch.c), "%s runs past %d clusters (256 MiB, the most a directory holds) at cluster %d", what, need, ch.c)
			}
			return runs, nil
		}
		end, err := ch.next()
		switch {
		case err != nil:
			return runs, err
		case end && d.root:
			return runs, nil
		case end:
			return runs, corrupt(v.entryOff(ch.c), "the cluster chain of %s ends at cluster %d, its %d of the %d clusters its size needs", what, ch.c, i+1, need)
		}
	}
}

// content reads a file's data through its runs; bytes from valid on are
// zeros. ReadAt is safe for parallel calls: the runs never change.
type content struct {
	v           *volume
	runs        []run
	size, valid int64
}

func (c *content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("exfat: negative offset %d", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), c.size-off))
	cs := c.v.clusterSize
	for done := 0; done < want; {
		pos := off + int64(done)
		if pos >= c.valid {
			clear(p[done:want])
			break
		}
		lc := pos / cs
		i := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].lc+c.runs[i].n > lc })
		if i == len(c.runs) || c.runs[i].lc > lc {
			// runs maps every cluster the size needs; guard anyway.
			return done, fmt.Errorf("exfat: internal error: no cluster maps byte %d", pos)
		}
		r := c.runs[i]
		within := pos - r.lc*cs
		k := int(min(r.n*cs-within, int64(want-done), c.valid-pos))
		at := c.v.clusterOff(r.pc) + within
		if err := readFull(c.v.r, p[done:done+k], at); err != nil {
			return done, fmt.Errorf("exfat: read cluster %d at byte %d: %w", int64(r.pc)+within/cs, at, err)
		}
		done += k
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}
