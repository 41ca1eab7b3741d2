//go:build linux

package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/platter-dev/platter/internal/fsread"
)

// MountFiles mounts the files of fsys (a filesystem inside an image)
// read-only at dir, as Macrium shows an image as a drive: no loop device,
// no kernel driver for the filesystem. log, if set, is told about
// operations that fail (a damaged chunk). dir is checked as for Mount.
// What fsys's directories leave out (a name that is not a plain name, a
// second entry of one name: see fsread.FS) is never shown, and the rest
// of its directory is: the kernel turns a whole directory into I/O
// errors for one name holding a slash.
func MountFiles(dir string, fsys fsread.FS, source string, log func(format string, args ...any)) (*fuse.Server, error) {
	if err := CheckMountPoint(dir); err != nil {
		return nil, err
	}
	t := &tree{fsys: fsys, log: log}
	root, err := t.stat("")
	if err != nil {
		return nil, fmt.Errorf("read the root directory: %w", err)
	}
	return mountRoot(dir, &node{t: t, path: "", e: root}, source)
}

// tree serialises calls into the filesystem reader: the FS contract
// does not promise concurrent use.
type tree struct {
	mu   sync.Mutex
	fsys fsread.FS
	log  func(format string, args ...any)
}

func (t *tree) stat(p string) (fsread.Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fsys.Stat(p)
}

func (t *tree) readDir(p string) ([]fsread.Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fsys.ReadDir(p)
}

// errno turns a reader's error into the answer for the kernel, logging
// what is not a plain "no such file".
func (t *tree) errno(op, p string, err error) syscall.Errno {
	if errors.Is(err, iofs.ErrNotExist) {
		return syscall.ENOENT
	}
	if t.log != nil {
		t.log("%s /%s: %v", op, p, err)
	}
	return syscall.EIO
}

// node is a file, directory or symlink of the tree.
type node struct {
	fs.Inode
	t    *tree
	path string // relative to the root, "" for the root
	e    fsread.Entry

	mu       sync.Mutex
	children map[string]fsread.Entry // a directory's listing, once read
}

var (
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeReaddirer)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
)

// fuseType is the S_IF type bits of an entry's mode.
func fuseType(m iofs.FileMode) uint32 {
	switch {
	case m.IsDir():
		return syscall.S_IFDIR
	case m&iofs.ModeSymlink != 0:
		return syscall.S_IFLNK
	case m&iofs.ModeCharDevice != 0:
		return syscall.S_IFCHR
	case m&iofs.ModeDevice != 0:
		return syscall.S_IFBLK
	case m&iofs.ModeNamedPipe != 0:
		return syscall.S_IFIFO
	case m&iofs.ModeSocket != 0:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

func fill(out *fuse.Attr, e fsread.Entry) {
	m := e.Mode
	out.Mode = fuseType(m) | uint32(m.Perm())
	if m&iofs.ModeSetuid != 0 {
		out.Mode |= syscall.S_ISUID
	}
	if m&iofs.ModeSetgid != 0 {
		out.Mode |= syscall.S_ISGID
	}
	if m&iofs.ModeSticky != 0 {
		out.Mode |= syscall.S_ISVTX
	}
	out.Size = uint64(e.Size)
	if m&iofs.ModeSymlink != 0 {
		out.Size = uint64(len(e.Target))
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.Nlink = 1 // hard links are not counted
	t := e.ModTime
	out.SetTimes(&t, &t, &t)
	if e.Owner {
		out.Uid, out.Gid = e.Uid, e.Gid
	}
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fill(&out.Attr, n.e)
	return 0
}

// list returns a directory's entries by name, reading them once: ls -l
// of a large directory looks every entry up, and a lookup by path scans
// the directory.
func (n *node) list() (map[string]fsread.Entry, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.children == nil {
		ents, err := n.t.readDir(n.path)
		if err != nil {
			return nil, err
		}
		n.children = make(map[string]fsread.Entry, len(ents))
		for _, e := range ents {
			n.children[e.Name] = e
		}
	}
	return n.children, nil
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	p := path.Join(n.path, name)
	kids, err := n.list()
	if err != nil {
		return nil, n.t.errno("list", n.path, err)
	}
	e, ok := kids[name]
	if !ok {
		// Not by its exact name: FAT, exFAT and NTFS match names without
		// regard to case, which the reader knows.
		if e, err = n.t.stat(p); err != nil {
			return nil, n.t.errno("stat", p, err)
		}
	}
	fill(&out.Attr, e)
	child := &node{t: n.t, path: p, e: e}
	return n.NewInode(ctx, child, fs.StableAttr{Mode: fuseType(e.Mode)}), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.t.readDir(n.path) // in the filesystem's order
	if err != nil {
		return nil, n.t.errno("list", n.path, err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		out = append(out, fuse.DirEntry{Name: e.Name, Mode: fuseType(e.Mode)})
	}
	return fs.NewListDirStream(out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.e.Mode&iofs.ModeSymlink == 0 {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.Target), 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	if !n.e.Mode.IsRegular() {
		return nil, 0, syscall.EINVAL
	}
	n.t.mu.Lock()
	r, err := n.t.fsys.Open(n.path)
	n.t.mu.Unlock()
	if err != nil {
		return nil, 0, n.t.errno("open", n.path, err)
	}
	// The image never changes: the kernel may keep what it read.
	return &handle{t: n.t, path: n.path, r: r}, fuse.FOPEN_KEEP_CACHE, 0
}

// handle reads an open file at any offset: through ReadAt where the
// reader has it, else by seeking.
type handle struct {
	t    *tree
	path string
	r    io.ReadCloser
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.t.mu.Lock()
	defer h.t.mu.Unlock()
	var k int
	var err error
	switch r := h.r.(type) {
	case io.ReaderAt:
		k, err = r.ReadAt(dest, off)
	case io.ReadSeeker:
		if _, err = r.Seek(off, io.SeekStart); err == nil {
			k, err = io.ReadFull(r, dest)
		}
	default:
		return nil, syscall.ENOTSUP
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, h.t.errno(fmt.Sprintf("read %d bytes at %d of", len(dest), off), h.path, err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.t.mu.Lock()
	defer h.t.mu.Unlock()
	h.r.Close()
	return 0
}
