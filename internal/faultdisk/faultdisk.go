// Package faultdisk serves a disk image as a failing disk, for tests of
// reading one: a FUSE filesystem holding one file, disk, whose bytes are
// those of an image file, and whose reads fail with EIO or stall where a
// Plan says. A loop device over MOUNT/disk (tooltest.FaultyDisk attaches
// one) is then a real block device with real failing reads: what a
// rescue has to meet on a dying disk, through the same kernel paths
// (O_DIRECT, the page cache, readahead, ddrescue) as a real one.
//
// Beside disk are ctl, to which lines change the plan while mounted
// (see Plan.Apply; reading it gives the plan, and why the last write it
// refused with EINVAL was refused), and stats, the counters (see Stats).
// So a shell script drives it too:
//
//	faultdisk -bad 1048576+4096 disk.img /mnt/fault &
//	losetup -f --show -r /mnt/fault/disk
//	echo 'stall 0 65536 2s' > /mnt/fault/ctl
//
// disk is opened with FUSE direct I/O (FOPEN_DIRECT_IO): the kernel keeps
// none of its bytes in the FUSE file's page cache, so a range made bad
// after a good read fails on the next read, and every read the loop
// device makes arrives here as it was made (split at MaxRead). A read
// request overlapping a bad range fails as a whole; the bytes of the
// good requests are the image's, spliced from it. Writes go through to
// the image (they fail only when the disk has vanished), but the loop
// device tooltest.FaultyDisk attaches is read-only.
//
// What the kernel makes of it, measured on Linux 6.18 with a loop device
// (buffered, not --direct-io) over disk (the sizes are this machine's;
// TestDirectRead, TestBufferedRead and TestStall check what tests may
// rely on):
//
//   - An O_DIRECT read of the loop device reaches disk as requests of the
//     same bytes: one per sector for a sector's read, and a large read
//     cut by the block layer (here at 512 KiB). It fails with EIO if one
//     of them covers a bad byte; the sectors next to a bad range read
//     back as they are, at 512- and 4096-byte logical sectors alike.
//     ddrescue -d finds exactly the bad sectors (TestDdrescue).
//   - A buffered read goes through the loop device's page cache. A
//     sequential reader's readahead grows (16 KiB, 64 KiB, ... 1 MiB
//     requests); when one fails, the kernel reads again in 4 KiB
//     requests, page by page, up to the bad page, so the reader gets
//     every byte before it, then EIO. But the cache holds the device in
//     folios of 64 KiB and more (256 KiB after that readahead), and a
//     folio whose read failed is read again whole, failing again: good
//     sectors in a folio with a bad one (a 512-byte sector's page-mates,
//     and up to 252 KiB after it here) read EIO through the cache and
//     fine with O_DIRECT. Data read before a range went bad stays in the
//     cache until it is dropped (BLKFLSBUF, or the last close of the
//     device). A rescue must read with O_DIRECT, as ddrescue -d does.
//   - A failing page is asked for again on each buffered read that
//     needs it: the kernel remembers no failure.
//   - A stall holds the whole loop device: its requests are served in
//     turn, so a read elsewhere waits behind the stalled one, as on a
//     disk busy retrying a sector. disk itself answers reads
//     concurrently (a read of MOUNT/disk is not held by another's
//     stall).
package faultdisk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MaxRead is the largest read request disk is sent: the kernel splits
// larger ones. A reply of 1 MiB (the most Linux allows) would not fit
// the pipe go-fuse splices it through.
const MaxRead = 512 << 10

// Stats counts what disk has served since the mount.
type Stats struct {
	Reads int64 // read requests answered with data
	Bytes int64 // bytes of them
	EIOs  int64 // read and write requests failed with EIO
	// Stalled counts read requests held by a stall range.
	Stalled int64
	Writes  int64 // write requests written through
}

// FS is a mounted failing disk.
type FS struct {
	dir  string
	srv  *fuse.Server
	root *root

	mu        sync.Mutex // serializes Unmount
	unmounted bool
}

// Mount serves image as dir/disk failing as plan says, with dir/ctl and
// dir/stats beside it, until Unmount. dir must be an empty directory.
// image is opened read-write if it can be (writes go through), else
// read-only (writes fail with EROFS).
func Mount(dir, image string, plan Plan) (*FS, error) {
	ro := false
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrPermission) {
		ro = true
		f, err = os.Open(image)
	}
	if err != nil {
		return nil, fmt.Errorf("faultdisk: %w", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", image)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("faultdisk: %w", err)
	}
	r := &root{img: f, ro: ro, size: st.Size()}
	r.rearmStalls()
	r.plan.Store(plan.clone())
	srv, err := fs.Mount(dir, r, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      image,
			Name:        "faultdisk",
			DirectMount: true,
			MaxWrite:    MaxRead,
			// Root's mount is used by other processes' loop devices and tools.
			AllowOther: os.Geteuid() == 0,
		},
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("faultdisk: mount at %s: %w", dir, err)
	}
	return &FS{dir: dir, srv: srv, root: r}, nil
}

// Disk is the path of the failing file, dir/disk.
func (f *FS) Disk() string { return filepath.Join(f.dir, "disk") }

// Plan is the plan in force.
func (f *FS) Plan() Plan { return *f.root.plan.Load().clone() }

// SetPlan puts p in force for every read from now on (a read already
// stalled keeps its delay).
func (f *FS) SetPlan(p Plan) { f.root.setPlan(func(q *Plan) { *q = p }) }

// Change applies change to a copy of the plan in force, and puts it in
// force.
func (f *FS) Change(change func(*Plan)) { f.root.setPlan(change) }

// Control changes the plan by lines as the ctl file takes them (see
// Plan.Apply). Nothing is changed if a line is bad.
func (f *FS) Control(lines string) error { return f.root.control(lines) }

// Stats are the counters so far.
func (f *FS) Stats() Stats { return f.root.stats() }

// Unmount unmounts dir, first ending any stall, and closes the image.
// It fails (and leaves the server running) while the disk is in use, for
// example by a loop device: detach that first.
func (f *FS) Unmount() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unmounted {
		return nil
	}
	rearm := f.root.endStalls()
	if err := f.srv.Unmount(); err != nil {
		rearm()
		return fmt.Errorf("faultdisk: unmount %s: %w", f.dir, err)
	}
	f.srv.Wait()
	f.unmounted = true
	return f.root.img.Close()
}

// Request is a read request disk was sent, as Trace reports it.
type Request struct {
	Off int64
	Len int
	Err syscall.Errno // 0, or EIO as answered
}

// Trace has fn told of every read request disk answers, from other
// goroutines, until Trace(nil): what the kernel asked for, to tests that
// check (or learn) how it splits and retries reads.
func (f *FS) Trace(fn func(Request)) {
	if fn == nil {
		f.root.trace.Store(nil)
		return
	}
	f.root.trace.Store(&fn)
}

// Wait returns when the filesystem is unmounted (by Unmount, or by
// umount from outside).
func (f *FS) Wait() { f.srv.Wait() }

// root is the directory of disk, ctl and stats, and holds what they
// share.
type root struct {
	fs.Inode
	img  *os.File
	ro   bool  // img is open read-only
	size int64 // the image's, at the mount
	plan atomic.Pointer[Plan]
	mu   sync.Mutex // serializes plan changes (reads only Load)

	reads, bytes, eios, stalled, writes atomic.Int64

	trace    atomic.Pointer[func(Request)]
	rejected atomic.Pointer[string] // why ctl last refused a write

	// unstall is closed as Unmount begins, ending the stalls in
	// progress (they would hold it); a new one replaces it if the
	// unmount fails.
	unstall atomic.Pointer[chan struct{}]
}

var _ = (fs.NodeOnAdder)((*root)(nil))

func (r *root) OnAdd(ctx context.Context) {
	add := func(name string, n fs.InodeEmbedder) {
		r.AddChild(name, r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG}), true)
	}
	add("disk", &diskNode{r: r})
	add("ctl", &textNode{r: r, text: func() string {
		s := r.plan.Load().String()
		if e := r.rejected.Load(); e != nil {
			s += "# rejected: " + *e + "\n"
		}
		return s
	}, write: func(lines string) error {
		err := r.control(lines)
		if err != nil {
			e := err.Error()
			r.rejected.Store(&e)
		}
		return err
	}})
	add("stats", &textNode{r: r, text: func() string {
		s := r.stats()
		return fmt.Sprintf("reads %d\nbytes %d\neios %d\nstalled %d\nwrites %d\n", s.Reads, s.Bytes, s.EIOs, s.Stalled, s.Writes)
	}})
}

func (r *root) setPlan(change func(*Plan)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plan.Load().clone()
	change(p)
	r.plan.Store(p.clone()) // not the caller's slices, which it may reuse
}

func (r *root) control(lines string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plan.Load().clone()
	for _, l := range strings.Split(lines, "\n") {
		if err := p.Apply(l); err != nil {
			return err
		}
	}
	r.plan.Store(p)
	return nil
}

func (r *root) stats() Stats {
	return Stats{Reads: r.reads.Load(), Bytes: r.bytes.Load(), EIOs: r.eios.Load(), Stalled: r.stalled.Load(), Writes: r.writes.Load()}
}

// endStalls ends the stalls in progress, and returns a func that lets
// later ones stall again.
func (r *root) endStalls() (rearm func()) {
	close(*r.unstall.Load())
	return r.rearmStalls
}

func (r *root) rearmStalls() {
	ch := make(chan struct{})
	r.unstall.Store(&ch)
}

// diskNode is the failing disk.
type diskNode struct {
	fs.Inode
	r *root
}

var (
	_ = (fs.NodeGetattrer)((*diskNode)(nil))
	_ = (fs.NodeSetattrer)((*diskNode)(nil))
	_ = (fs.NodeOpener)((*diskNode)(nil))
	_ = (fs.NodeReader)((*diskNode)(nil))
	_ = (fs.NodeWriter)((*diskNode)(nil))
	_ = (fs.NodeFsyncer)((*diskNode)(nil))
	_ = (fs.NodeFlusher)((*diskNode)(nil))
)

func (n *diskNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := n.r.img.Stat()
	if err != nil {
		return fs.ToErrno(err)
	}
	out.Mode = 0o600
	out.Size = uint64(st.Size())
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 4096
	out.SetTimes(nil, &[]time.Time{st.ModTime()}[0], nil)
	return 0
}

// Setattr allows only what changes nothing (an open with O_TRUNC of an
// empty disk, touch): a disk's size is fixed.
func (n *diskNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if st, err := n.r.img.Stat(); err != nil || uint64(st.Size()) != sz {
			return syscall.EPERM
		}
	}
	return n.Getattr(ctx, fh, out)
}

func (n *diskNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *diskNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	r := n.r
	delay, bad := r.plan.Load().fault(off, int64(len(dest)))
	if delay > 0 {
		r.stalled.Add(1)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done(): // the reader was interrupted
			t.Stop()
			return nil, syscall.EINTR
		case <-*r.unstall.Load():
			t.Stop()
		}
	}
	if fn := r.trace.Load(); fn != nil {
		e := syscall.Errno(0)
		if bad {
			e = syscall.EIO
		}
		(*fn)(Request{off, len(dest), e})
	}
	if bad {
		r.eios.Add(1)
		return nil, syscall.EIO
	}
	r.reads.Add(1)
	r.bytes.Add(max(0, min(int64(len(dest)), r.size-off)))
	// Spliced from the image to the kernel, not copied: healthy reads
	// go at near the image's speed.
	return fuse.ReadResultFd(r.img.Fd(), off, len(dest)), 0
}

func (n *diskNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	r := n.r
	if r.plan.Load().Vanished {
		r.eios.Add(1)
		return 0, syscall.EIO
	}
	if r.ro {
		return 0, syscall.EROFS
	}
	st, err := r.img.Stat()
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if off+int64(len(data)) > st.Size() {
		return 0, syscall.ENOSPC // a disk does not grow
	}
	k, err := r.img.WriteAt(data, off)
	if err != nil {
		return uint32(k), fs.ToErrno(err)
	}
	r.writes.Add(1)
	return uint32(k), 0
}

func (n *diskNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if n.r.plan.Load().Vanished {
		return syscall.EIO
	}
	return fs.ToErrno(n.r.img.Sync())
}

func (n *diskNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// textNode is ctl or stats: text made when read, and (ctl) lines taken
// when written.
type textNode struct {
	fs.Inode
	r     *root
	text  func() string
	write func(string) error
}

var (
	_ = (fs.NodeGetattrer)((*textNode)(nil))
	_ = (fs.NodeSetattrer)((*textNode)(nil))
	_ = (fs.NodeOpener)((*textNode)(nil))
	_ = (fs.NodeReader)((*textNode)(nil))
	_ = (fs.NodeWriter)((*textNode)(nil))
	_ = (fs.NodeFlusher)((*textNode)(nil))
)

func (n *textNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o444
	if n.write != nil {
		out.Mode = 0o644
	}
	out.Size = uint64(len(n.text()))
	return 0
}

// Setattr lets a shell's "> ctl" truncate: nothing to do.
func (n *textNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.write == nil {
		return syscall.EPERM
	}
	return n.Getattr(ctx, fh, out)
}

func (n *textNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.write == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EPERM
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *textNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	s := n.text()
	if off >= int64(len(s)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData([]byte(s[off:min(int64(len(s)), off+int64(len(dest)))])), 0
}

// Write takes whole lines: each write(2) is applied on its own, so a
// line must not be split across two (echo and printf write one).
func (n *textNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.write == nil {
		return 0, syscall.EPERM
	}
	if err := n.write(string(data)); err != nil {
		return 0, syscall.EINVAL
	}
	return uint32(len(data)), 0
}

func (n *textNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }
