//go:build linux

// Package mount shows an image in a read-only FUSE filesystem: its disk
// as files, disk.img (the whole disk) and pN.img (each partition),
// readable by any tool, loop-mountable (Mount); or the files of a
// filesystem inside it (MountFiles).
package mount

import (
	"context"
	"errors"
	"fmt"
	"github.com/platter-dev/platter/internal/blockdev"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/view"
)

// File is one file of the view.
type File struct {
	Name    string
	Dev     view.Device
	ModTime time.Time // when the image was made
	// Log, if set, is told about reads that fail (a damaged chunk).
	Log func(format string, args ...any)
}

// Mount mounts the files read-only at dir and returns the running server
// (Wait for it; Unmount ends it). dir must be an empty directory that is
// not a mount point already.
func Mount(dir string, files []File, source string) (*fuse.Server, error) {
	if err := CheckMountPoint(dir); err != nil {
		return nil, err
	}
	return mountRoot(dir, &rootNode{files: files}, source)
}

// mountRoot mounts root read-only at dir, letting the kernel keep names
// and attributes (the image never changes).
func mountRoot(dir string, root fs.InodeEmbedder, source string) (*fuse.Server, error) {
	timeout := time.Hour
	srv, err := fs.Mount(dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:  source,
			Name:    "platter",
			Options: []string{"ro"},
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("mount at %s: %w", dir, err)
	}
	return srv, nil
}

// CheckMountPoint refuses what is not an empty directory, or is a mount
// point already (busy).
func CheckMountPoint(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", dir)
	}
	if IsMountPoint(dir) {
		return fmt.Errorf("mount point %s is busy: something is mounted there already (platter umount %s?)", dir, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("mount point %s is not empty", dir)
	}
	return nil
}

// IsMountPoint says whether something is mounted at dir (its device is
// not its parent's).
func IsMountPoint(dir string) bool {
	var s, p unix.Stat_t
	return unix.Stat(dir, &s) == nil && unix.Stat(filepath.Join(dir, ".."), &p) == nil && s.Dev != p.Dev
}

// Unmount unmounts dir (a platter mount).
func Unmount(dir string) error {
	m, ok, err := blockdev.MountAt(dir)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%s is not mounted", dir)
	case m.FSType != "fuse.platter":
		return fmt.Errorf("%s is not a platter mount: %s of %s is mounted there (use umount)", dir, m.FSType, m.Device)
	}
	err = unix.Unmount(dir, 0)
	if errors.Is(err, unix.EPERM) {
		if out, ferr := exec("fusermount3", "-u", dir); ferr != nil {
			return fmt.Errorf("unmount %s: %v: %s", dir, ferr, out)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

type rootNode struct {
	fs.Inode
	files []File
}

var _ = (fs.NodeOnAdder)((*rootNode)(nil))

func (r *rootNode) OnAdd(ctx context.Context) {
	for _, f := range r.files {
		ch := r.NewPersistentInode(ctx, &fileNode{f: f}, fs.StableAttr{Mode: syscall.S_IFREG})
		r.AddChild(f.Name, ch, true)
	}
}

type fileNode struct {
	fs.Inode
	f File
}

var (
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeReader)((*fileNode)(nil))
)

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(n.f.Dev.Size())
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	t := n.f.ModTime
	out.SetTimes(&t, &t, &t)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	// The image never changes: the kernel may keep what it read.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	k, err := n.f.Dev.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		if n.f.Log != nil {
			n.f.Log("%s: read %d bytes at %d: %v", n.f.Name, len(dest), off, err)
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}
