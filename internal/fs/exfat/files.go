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
// directory being read, the listings of the few directories listed last
// (which vfs.Tree keeps), the up-case table (128 KiB), and an open
// file's runs, no more than the clusters its size needs.

import (
	"encoding/binary"
	"fmt"
	"io"
	iofs "io/fs"
	"sort"
	"time"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// Files is an exFAT volume opened for reading its files. Its methods are
// safe for concurrent use if the io.ReaderAt is.
type Files struct {
	v     *volume
	up    *[1 << 16]uint16 // the up-case table names are matched by
	label string

	tree *vfs.Tree[File, data] // entries by path, directories by their data
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
	f.tree = vfs.NewTree(f.root(), f.list, entry, func(d File) data { return d.data }, f.key)
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
func (f *Files) Stat(name string) (File, error) { return f.tree.Stat(name) }

// ReadDir lists a directory's entries in on-disk order: every file and
// directory entry set, the damaged ones with Err set, every name as the
// directory holds it, for the caller to judge. exFAT directories hold no
// "." or "..".
func (f *Files) ReadDir(name string) ([]File, error) { return f.tree.ReadDir(name) }

// Open returns a reader of a file's contents, found as Stat finds it.
// Its clusters are found once, here: a FAT chain that ends before the
// file's size, leads outside the volume, to a bad cluster or back to a
// cluster it has passed is a *block.CorruptError naming the cluster. The
// reader also implements io.ReaderAt (safe for parallel calls) and
// io.Seeker.
func (f *Files) Open(name string) (io.ReadCloser, error) {
	e, err := f.tree.File(name)
	if err != nil {
		return nil, err
	}
	runs, err := f.v.runs(e.data, fmt.Sprintf("%q (entry at byte %d)", e.Name, e.off))
	if err != nil {
		return nil, err
	}
	c := &vfs.Clusters{R: f.v.r, Runs: runs, ClusterSize: f.v.clusterSize, Offset: f.v.clusterOff,
		Size: e.data.length, Valid: e.data.valid, FS: "exfat"}
	return vfs.Section(c, c.Size), nil
}

// list reads directory d's entries, in on-disk order, the damaged entry
// sets among them.
func (f *Files) list(d File) ([]File, error) {
	var files []File
	sr := setReader{set: func(s entrySet) {
		e, err := f.v.file(s)
		e.Err = err
		files = append(files, e)
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
			return nil, err
		}
	}
	sr.flush()
	return files, nil
}

// runs finds the clusters of d's bytes: as many as its length needs, in
// one piece from its first cluster (NoFatChain), or by its FAT chain (the
// rest of a longer chain is not read, as the kernel does not read it).
func (v *volume) runs(d data, what string) ([]vfs.Run, error) {
	runs, err := v.follow(d, what)
	if err != nil {
		return nil, err
	}
	// A chain that comes back to a cluster it passed: Brent's method
	// finds a loop only past twice its length, this finds any.
	byPC := append([]vfs.Run(nil), runs...)
	sort.Slice(byPC, func(i, j int) bool { return byPC[i].Physical < byPC[j].Physical })
	for i := 1; i < len(byPC); i++ {
		if prev := byPC[i-1]; int64(prev.Physical)+prev.N > int64(byPC[i].Physical) {
			return nil, corrupt(v.entryOff(byPC[i].Physical), "the cluster chain of %s passes cluster %d twice", what, byPC[i].Physical)
		}
	}
	return runs, nil
}

// follow is runs without the check for clusters passed twice. On damage
// it also returns the runs found before it.
func (v *volume) follow(d data, what string) ([]vfs.Run, error) {
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
		return []vfs.Run{{Logical: 0, Physical: d.first, N: need}}, nil
	}
	var runs []vfs.Run
	ch := newChain(v, d.first, what)
	for i := int64(0); ; i++ {
		if k := len(runs) - 1; k >= 0 && int64(runs[k].Physical)+runs[k].N == int64(ch.c) {
			runs[k].N++
		} else {
			runs = append(runs, vfs.Run{Logical: i, Physical: ch.c, N: 1})
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
