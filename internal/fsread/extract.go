//go:build unix

package fsread

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxPath bounds the path of an entry extracted: a directory that holds
// itself (a damaged or hostile image) would otherwise be copied forever,
// and no tool could open a deeper file anyway.
const maxPath = 4096

// Extractor copies files out of a filesystem read in place.
//
// Nothing it writes lands outside the directory it is given, whatever
// the destination already holds: it walks down with directory
// descriptors and never follows a symlink (openat with O_NOFOLLOW). A
// symlink or other non-directory where a directory goes is removed and
// a directory made; whatever non-directory stands where a file or
// symlink goes is removed first. Files are created 0600 (directories
// 0700) and given their mode once written, through their descriptors.
type Extractor struct {
	// Skipped, if set, is told of each entry not extracted because the
	// image could not give it (a damaged inode or chunk, a name too long
	// for this machine); Extract goes on with the rest. What ReadDir
	// itself leaves out is told to Opener.Skipped.
	Skipped func(*SkipError)
	// Owners gives each file the owner the filesystem records (ext
	// only), as tar does for root.
	Owners bool
	// DirNoFollow refuses dir itself if it is a symlink: opened with
	// O_NOFOLLOW, so that a caller's check that it is none and the open
	// are one step, with no moment in which it can be swapped for one.
	DirNoFollow bool
}

// Extracted counts what Extract wrote (regular files and their bytes)
// and the entries it skipped itself (not those ReadDir left out).
type Extracted struct {
	Files, Bytes int64
	Skipped      int
}

// Extract copies src of fsys (a file, symlink or directory with
// everything below it) to name in directory dir; with name "", src must
// be a directory and its entries are copied into dir itself. dir is the
// caller's and followed if a symlink (unless DirNoFollow); below it
// nothing is. An error
// means the destination could not be written (or ctx ended); what the
// image could not give is skipped, counted and told to Skipped.
func (x Extractor) Extract(ctx context.Context, fsys FS, src, dir, name string) (Extracted, error) {
	w := &extraction{Extractor: x, ctx: ctx, fsys: fsys}
	e, err := fsys.Stat(src)
	if err != nil {
		return w.n, err
	}
	src = path.Clean("/" + src)
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if x.DirNoFollow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(dir, flags, 0)
	if errors.Is(err, unix.ELOOP) || x.DirNoFollow && errors.Is(err, unix.ENOTDIR) {
		if fi, lerr := os.Lstat(dir); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return w.n, fmt.Errorf("%s is a symlink: extract writes only into a real directory", dir)
		}
	}
	if err != nil {
		return w.n, fmt.Errorf("open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	defer d.Close()
	if name == "" {
		if !e.Mode.IsDir() {
			return w.n, fmt.Errorf("%s is not a directory", src)
		}
		return w.n, w.fill(d, src, e)
	}
	return w.n, w.entry(d, src, name, e)
}

// extraction is one Extract under way.
type extraction struct {
	Extractor
	ctx  context.Context
	fsys FS
	n    Extracted
}

// skip counts and tells of an entry not extracted.
func (w *extraction) skip(src string, err error) {
	w.n.Skipped++
	if w.Skipped != nil {
		w.Skipped(&SkipError{Dir: path.Dir(src), Name: path.Base(src), Err: err})
	}
}

// entry writes e, found at src, as name in directory d.
func (w *extraction) entry(d *os.File, src, name string, e Entry) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if len(src) > maxPath {
		w.skip(src, fmt.Errorf("its path is longer than %d bytes (does a directory hold itself?)", maxPath))
		return nil
	}
	switch {
	case e.Mode.IsDir():
		c, err := mkdirAt(d, name)
		if err != nil {
			return w.fail(src, filepath.Join(d.Name(), name), err)
		}
		defer c.Close()
		return w.fill(c, src, e)
	case e.Mode&iofs.ModeSymlink != 0:
		return w.fail(src, filepath.Join(d.Name(), name), w.symlink(d, src, name, e))
	case e.Mode.IsRegular():
		return w.fail(src, filepath.Join(d.Name(), name), w.file(d, src, name, e))
	}
	return nil // devices, fifos, sockets: not copied
}

// fail turns what writing where (from src) answered into Extract's
// answer: nil, a skip, or the error that ends it.
func (w *extraction) fail(src, where string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENAMETOOLONG):
		// The name (or link target) is longer than this machine
		// takes: the image's doing, not the destination's.
		w.skip(src, err)
		return nil
	case w.ctx.Err() != nil:
		return w.ctx.Err()
	}
	return fmt.Errorf("extract %s: %w", where, err)
}

// fill writes directory e's entries into c, then gives c e's owner,
// mode and time (after the entries: writing them changes its time).
func (w *extraction) fill(c *os.File, src string, e Entry) error {
	ents, err := w.fsys.ReadDir(src)
	if err != nil {
		w.skip(src, fmt.Errorf("its entries could not be listed: %w", err))
	}
	for _, k := range ents {
		if err := w.entry(c, path.Join(src, k.Name), k.Name, k); err != nil {
			return err
		}
	}
	return w.fail(src, c.Name(), w.finish(c, e))
}

// file writes regular file e as name in d: whatever non-directory was
// there is removed, and the file is made new (O_EXCL), never opened
// through a link. A file the image cannot give is skipped, and nothing
// of it left.
func (w *extraction) file(d *os.File, src, name string, e Entry) error {
	r, err := w.fsys.Open(src)
	if err != nil {
		w.skip(src, err)
		return nil
	}
	defer r.Close()
	f, err := createAt(d, name)
	if err != nil {
		return err
	}
	in := &imageReader{ctx: w.ctx, r: io.LimitReader(r, e.Size)}
	n, err := io.Copy(f, in)
	bad := in.err // the image's fault: the file is skipped
	if bad != nil {
		err = nil
	} else if err == nil && n != e.Size {
		bad = fmt.Errorf("%d bytes read of %d", n, e.Size)
	}
	if err == nil && bad == nil {
		err = w.finish(f, e)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || bad != nil {
		unix.Unlinkat(int(d.Fd()), name, 0)
	}
	switch {
	case err != nil:
		return err
	case w.ctx.Err() != nil:
		return w.ctx.Err()
	case bad != nil:
		w.skip(src, bad)
		return nil
	}
	w.n.Files, w.n.Bytes = w.n.Files+1, w.n.Bytes+n
	return nil
}

// symlink writes symlink e as name in d, its target as the image holds
// it: extract never follows it.
func (w *extraction) symlink(d *os.File, src, name string, e Entry) error {
	if e.Target == "" || strings.IndexByte(e.Target, 0) >= 0 {
		w.skip(src, fmt.Errorf("symlink target %q is empty or holds a NUL byte", e.Target))
		return nil
	}
	dfd := int(d.Fd())
	var err error
	for try := 0; try < maxTries; try++ {
		if err = unlinkNonDir(dfd, name); err != nil {
			return err
		}
		if err = unix.Symlinkat(e.Target, dfd, name); !errors.Is(err, unix.EEXIST) {
			break // EEXIST: something was put there meanwhile
		}
	}
	if err != nil {
		return err
	}
	if w.Owners && e.Owner {
		if err := unix.Fchownat(dfd, name, int(e.Uid), int(e.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if !e.ModTime.IsZero() {
		ts := timespec(e.ModTime)
		return unix.UtimesNanoAt(dfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// finish gives an open file or directory its owner, then its mode
// (chown clears setuid and setgid), then its time: all through its
// descriptor, so they land on what was written.
func (w *extraction) finish(f *os.File, e Entry) error {
	if w.Owners && e.Owner {
		if err := f.Chown(int(e.Uid), int(e.Gid)); err != nil {
			return err
		}
	}
	if err := f.Chmod(e.Mode & (iofs.ModePerm | iofs.ModeSetuid | iofs.ModeSetgid | iofs.ModeSticky)); err != nil {
		return err
	}
	if e.ModTime.IsZero() {
		return nil
	}
	return futimens(int(f.Fd()), e.ModTime)
}

// maxTries bounds the retries when what stands in the destination keeps
// changing under Extract (another process racing it).
const maxTries = 8

// mkdirAt opens directory name in d, making it (0700) if there is none.
// A symlink or other non-directory standing there is removed, never
// followed.
func mkdirAt(d *os.File, name string) (*os.File, error) {
	dfd := int(d.Fd())
	for try := 0; try < maxTries; try++ {
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, err
		}
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(d.Name(), name)), nil
		}
		// ELOOP: a symlink; ENOTDIR: another non-directory; ENOENT:
		// removed meanwhile. Anything else is an answer.
		if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
		if err := unlinkNonDir(dfd, name); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("it kept changing while being made")
}

// createAt makes file name in d anew, 0600, for writing: whatever
// non-directory stood there is removed first, and O_EXCL|O_NOFOLLOW make
// sure what is opened is the file made, never a link's target.
func createAt(d *os.File, name string) (*os.File, error) {
	dfd := int(d.Fd())
	for try := 0; try < maxTries; try++ {
		if err := unlinkNonDir(dfd, name); err != nil {
			return nil, err
		}
		fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(d.Name(), name)), nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, err
		}
	}
	return nil, errors.New("it kept changing while being made")
}

// unlinkNonDir removes name from directory dfd unless it is missing; a
// directory there is an error (EISDIR), never removed.
func unlinkNonDir(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, unix.EPERM) {
		// What unlink says of a directory on some systems.
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("a directory stands where a file goes: %w", unix.EISDIR)
		}
	}
	if errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("a directory stands where a file goes: %w", err)
	}
	return err
}

// imageReader reads a file out of the image, keeping its error apart
// from the destination's (a damaged chunk skips the file; a full disk
// ends the extract), and stops when ctx ends.
type imageReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (r *imageReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// timespec is t for utimensat: now for the access time, t for the
// modification time.
func timespec(t time.Time) [2]unix.Timespec {
	return [2]unix.Timespec{unix.NsecToTimespec(time.Now().UnixNano()), unix.NsecToTimespec(t.UnixNano())}
}
