//go:build linux

package resize

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Window shows a Device as one regular file, Path, readable and writable
// by its owner (root) alone, through a FUSE filesystem mounted on a fresh
// private directory. Tools work on the file as on a disk; every write
// goes to the device, and nowhere else. The file cannot change size.
type Window struct {
	dir, mnt, path string
	srv            *fuse.Server
	dev            Device

	mu     sync.Mutex
	closed bool
	err    error
}

// windowName is the file's name in the mount.
const windowName = "disk"

// OpenWindow mounts a window on dev. Close it: it unmounts and removes
// everything OpenWindow made.
func OpenWindow(dev Device) (*Window, error) {
	dir, err := os.MkdirTemp("", "platter-window-")
	if err != nil {
		return nil, fmt.Errorf("resize: window: %w", err)
	}
	// The kernel names a loop device's backing file by its real path:
	// detachLoopsOf compares with it.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("resize: window: %w", err)
	}
	w := &Window{dir: dir, mnt: mnt, path: filepath.Join(mnt, windowName), dev: dev}
	root := &windowRoot{file: &windowFile{dev: dev}}
	// No caching of attributes beyond a second: nothing else changes
	// them, but a long cache gains nothing either.
	ttl := time.Second
	srv, err := fs.Mount(mnt, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      "platter-window",
			Name:        "platter",
			DirectMount: true, // root: mount(2) itself, fusermount3 if refused
			// Tools write in blocks of up to 1 MiB; more per request
			// means fewer round trips.
			MaxWrite: 1 << 20,
		},
		EntryTimeout: &ttl,
		AttrTimeout:  &ttl,
	})
	if err != nil {
		os.Remove(mnt)
		os.Remove(dir)
		return nil, fmt.Errorf("resize: mount a window at %s: %w", mnt, err)
	}
	w.srv = srv
	return w, nil
}

// Path is the file that shows the device.
func (w *Window) Path() string { return w.path }

// Close ends the window, whatever state it is in and whether or not
// the context the tools ran under was cancelled: it unmounts every
// filesystem mounted from a loop device over Path and detaches those
// loop devices, unmounts the window (retrying while busy, then lazily),
// and removes its directory. Writes made before Close are on the device.
// A second Close returns the first one's answer.
func (w *Window) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	var errs []error
	// Loop devices over the window would hold it busy for ever.
	if err := detachLoopsOf(w.path); err != nil {
		errs = append(errs, err)
	}
	if err := unmountFUSE(w.mnt, w.srv); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(w.mnt); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("resize: remove window %s: %w", w.mnt, err))
	}
	if err := os.Remove(w.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("resize: remove window %s: %w", w.dir, err))
	}
	w.err = errors.Join(errs...)
	return w.err
}

// unmountFUSE unmounts the window at mnt and waits for its server to
// stop. Busy: retried for ten seconds, then detached lazily and the
// FUSE connection aborted, so the server stops even while some process
// still holds a file of it open (that process then gets errors).
func unmountFUSE(mnt string, srv *fuse.Server) error {
	var st unix.Stat_t
	statErr := unix.Stat(mnt, &st)
	err := unmountRetry(mnt, 10*time.Second)
	if err != nil {
		if lerr := unix.Unmount(mnt, unix.MNT_DETACH); lerr != nil && !errors.Is(lerr, unix.EINVAL) {
			return fmt.Errorf("resize: unmount window %s: %v; lazily: %w", mnt, err, lerr)
		}
		if statErr == nil {
			abortFUSE(st.Dev)
		}
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		if statErr == nil {
			abortFUSE(st.Dev)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("resize: the window at %s was unmounted but its server does not stop", mnt)
		}
	}
	return nil
}

// abortFUSE aborts the FUSE connection of the filesystem on dev: every
// request waiting on it fails, and the server's loop ends.
func abortFUSE(dev uint64) {
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(dev))
	os.WriteFile(p, []byte("1"), 0)
}

// unmountRetry unmounts mnt, retrying for up to wait while it is busy
// (a process that just closed a file of it, a fork holding a copy of a
// descriptor until it execs). Not mounted is not an error.
func unmountRetry(mnt string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		err := unix.Unmount(mnt, 0)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(delay)
		default:
			return fmt.Errorf("resize: unmount %s: %w", mnt, err)
		}
	}
}

type windowRoot struct {
	fs.Inode
	file *windowFile
}

var _ = (fs.NodeOnAdder)((*windowRoot)(nil))

func (r *windowRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild(windowName, ch, true)
}

// windowFile is the device as a file.
type windowFile struct {
	fs.Inode
	dev Device
}

var (
	_ = (fs.NodeGetattrer)((*windowFile)(nil))
	_ = (fs.NodeSetattrer)((*windowFile)(nil))
	_ = (fs.NodeOpener)((*windowFile)(nil))
	_ = (fs.NodeReader)((*windowFile)(nil))
	_ = (fs.NodeWriter)((*windowFile)(nil))
	_ = (fs.NodeFsyncer)((*windowFile)(nil))
	_ = (fs.NodeFlusher)((*windowFile)(nil))
)

func (n *windowFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(n.dev.Size())
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	return 0
}

// Setattr allows what does not change the file: tools open with
// O_TRUNC never, but some set times or truncate to the same size.
func (n *windowFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && sz != uint64(n.dev.Size()) {
		return syscall.EPERM
	}
	return n.Getattr(ctx, fh, out)
}

func (n *windowFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && n.dev.Size() != 0 {
		return nil, 0, syscall.EPERM
	}
	return nil, 0, 0
}

func (n *windowFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.dev.Size() {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), n.dev.Size()-off)]
	k, err := n.dev.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *windowFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 || off+int64(len(data)) > n.dev.Size() {
		return 0, syscall.ENOSPC // the file cannot grow
	}
	k, err := n.dev.WriteAt(data, off)
	if err != nil {
		return uint32(k), syscall.EIO
	}
	return uint32(k), 0
}

func (n *windowFile) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if s, ok := n.dev.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return syscall.EIO
		}
	}
	return 0
}

func (n *windowFile) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }
