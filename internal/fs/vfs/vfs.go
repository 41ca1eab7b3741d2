// Package vfs is what every filesystem package under internal/fs offers
// the rest of Platter, as Linux's VFS is what each of its filesystems
// implements: a descriptor (Filesystem, or Container for a volume
// manager or an encryption layer) holding its detector and, where
// Platter has them, its identity reader and its file reader (Files).
// internal/fsmap lists the descriptors, in the order detection tries
// them; adding a filesystem is one package exporting one descriptor and
// one line in that list.
//
// It also holds what the file readers share: Tree, which finds entries
// by path where directories are read whole (FAT, exFAT), Clusters,
// which reads a file through its runs of clusters, ReadFull and Section.
//
// vfs imports only internal/block and the standard library, so every
// filesystem package can import it.
package vfs

import (
	"fmt"
	"io"
	iofs "io/fs"
	"time"

	"github.com/platter-dev/platter/internal/block"
)

// Filesystem describes one filesystem (one family: ext2, ext3 and ext4
// are one) to the registry.
type Filesystem struct {
	// Names are the names its detector gives Usage.FS, as image
	// metadata records them: "ext2", "ext3", "ext4".
	Names []string
	// Title names it to a person, in messages: "ext2/3/4", "FAT".
	Title string
	// Detect returns the used blocks of the filesystem in the size
	// bytes of r. Not this filesystem: an error wrapping
	// block.ErrNotMine; this filesystem but unreadable: another error
	// (a *block.CorruptError where the damage is found).
	Detect func(r io.ReaderAt, size int64) (*block.Usage, error)
	// Identify, if set, reads the label and UUID of the filesystem in
	// r as blkid shows them. It only describes: whatever it cannot read
	// it leaves empty.
	Identify func(r io.ReaderAt, size int64) Identity
	// OpenFiles, if set, opens the filesystem in r for reading its
	// files with Platter's own reader; nil when Platter reads none (the
	// kernel does, from a mounted image).
	OpenFiles func(r io.ReaderAt, size int64) (Files, error)
	// Moved, if set, records in the filesystem in rw (size bytes) that
	// its partition now starts at byte start of the disk: the "hidden
	// sectors" FAT and NTFS boot code adds to every sector it loads, and
	// exFAT's VolumeOffset. A restore that moves a partition calls it;
	// filesystems that do not know where they sit leave it nil.
	Moved func(rw ReadWriterAt, size, start int64) error
	// Owners, if set, walks what holds the bytes of the filesystem in
	// the size bytes of r: every file and directory, by path, and the
	// metadata it knows by name (superblock, journal, $MFT, ...),
	// calling visit with each one's byte ranges in r. A file with
	// several paths (hard links) is visited once per path. The walk
	// goes on past what it cannot read (a damaged directory loses its
	// entries, not the walk) and stops at visit's first error, which it
	// returns. internal/owners says, for a list of byte ranges (a
	// failing disk's unreadable sectors), what each one hit.
	Owners func(r io.ReaderAt, size int64, visit func(o Owner, at []block.Extent) error) error
}

// OwnerPath is the path of name in directory dir, for Owner.Path: as
// the directory holds it, unchecked and unescaped (internal/owners hands
// paths on so; whoever prints them quotes them).
func OwnerPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// OwnerKind says what an Owner is.
type OwnerKind int

const (
	OwnerFile OwnerKind = iota + 1
	OwnerDir
	OwnerMeta
)

// Owner is what holds some bytes of a filesystem: a file or directory,
// Path its slash-separated path from the root ("/home/a/x"); or
// filesystem metadata, Path its name ("superblock", "journal",
// "inode table", "$MFT", "FAT").
type Owner struct {
	Kind OwnerKind
	Path string
}

// ReadWriterAt reads and writes at offsets: a partition being restored.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Container describes a volume manager or an encryption layer (LVM2,
// LUKS) to the registry: not a filesystem, but a map of volumes whose
// insides the filesystems' detectors read.
type Container struct {
	// Names are the names its detector gives Usage.FS: "lvm2".
	Names []string
	// Detect maps the volumes inside the size bytes of r and asks
	// env.Inner for each one's used blocks, and answers with a map
	// over r: its own metadata, kept byte for byte, plus each volume's
	// used blocks where they lie in r. Not its format: an error
	// wrapping block.ErrNotMine.
	Detect func(r io.ReaderAt, size int64, env Env) (*block.Usage, error)
}

// Env is what a container's Detect gets from detection.
type Env struct {
	// Inner finds the used blocks of a volume inside the container:
	// detection itself, one level deeper.
	Inner func(r io.ReaderAt, size int64) (*block.Usage, error)
	// Keys are key files' contents or passphrases given for encrypted
	// volumes (create --luks-key-file); a container tries each.
	Keys [][]byte
}

// Identity is what a person knows a filesystem by: its label and its
// UUID, as blkid shows them ("" where it has none).
type Identity struct {
	Label string
	UUID  string
}

// Entry is a file, directory, symlink or special file.
type Entry struct {
	Name    string
	Mode    iofs.FileMode // type bits and permissions
	Size    int64
	ModTime time.Time
	Target  string // of a symlink: as the filesystem holds it, never checked
	// Owner says Uid and Gid hold the file's owner (ext only: FAT and
	// exFAT have none, NTFS's are Windows SIDs).
	Owner    bool
	Uid, Gid uint32
	// Err, set only by Files.ReadDir, says why the entry could not be
	// described (its inode or entry set is damaged): Name is as much of
	// its name as could be read, the other fields are not to be used.
	Err error
}

// Files is a filesystem's files as its own reader finds them, before
// fsread's boundary checks them: the names it hands out are as the
// filesystem holds them, unchecked (a slash, a NUL, "..", a second
// entry of one name), and nothing may use them before fsread.CheckName
// has.
//
// The paths it is given are already cleaned and checked: slash-separated,
// relative to the root, "" the root, without "." or ".." elements. Its
// methods need not be safe for concurrent use. A damaged filesystem
// gives errors, never a panic or a loop.
type Files interface {
	// ReadDir lists directory dir in the filesystem's order. An entry
	// it can name but not describe comes with Err set, and the rest of
	// the directory is still listed. An entry with no Name, its Err a
	// *LostEntriesError, stands for entries that could not even be
	// named (a damaged directory block).
	ReadDir(dir string) ([]Entry, error)
	// Stat describes name; "" is the root. Of the entries whose names
	// match name, it finds the first ReadDir lists.
	Stat(name string) (Entry, error)
	// Open opens regular file name, the entry Stat finds.
	Open(name string) (io.ReadCloser, error)
	// CaseInsensitive says names match without regard to case (FAT,
	// exFAT, NTFS): Stat and Open find "README" by "readme".
	CaseInsensitive() bool
}

// A LostEntriesError is a part of a directory that could not be read or
// parsed (an ext directory block, an NTFS index block, the rest of a FAT
// directory's cluster chain): the entries it held cannot be named, and
// the rest of the directory was listed. Files.ReadDir hands it up as the
// Err of an entry without a name.
type LostEntriesError struct {
	Err error
}

func (e *LostEntriesError) Error() string {
	return fmt.Sprintf("a damaged part of the directory: %v", e.Err)
}

func (e *LostEntriesError) Unwrap() error { return e.Err }
