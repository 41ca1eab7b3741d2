// Package outfile creates the files Platter writes — images, restored
// disk files, overlays — readable by their owner only (an image holds
// /etc/shadow and private keys) and never through a symlink planted where
// they go. An image is written as NAME.partial under a lock, so two
// writers of one image cannot both proceed, and a half-written file never
// carries the image's name.
package outfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mode is the mode of every file Platter creates; the umask can only
// narrow it.
const Mode = 0o600

// Create makes a new file at path, open for reading and writing, mode
// 0600. It fails if anything is at path already, a symlink included.
func Create(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, Mode)
}

// OpenOrCreate opens the existing file at path for reading and writing,
// or creates it with mode 0600: for files a user names and reuses (an
// overlay). It says whether it created the file. A symlink at path is
// refused, not followed: one planted where the file goes would have it
// written through.
func OpenOrCreate(path string) (*os.File, bool, error) {
	f, err := Create(path)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, false, err
	}
	f, err = os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, false, fmt.Errorf("%s is a symlink: Platter writes through no link (name the file it points to)", path)
	}
	return f, false, err
}

// ErrNotFile says the name a file is to take is held by something that
// is not a regular file: a device node, a directory, a FIFO. Writing
// NAME.partial and renaming it over a device node destroys the node
// (a swapped SOURCE and IMAGE), so that is refused before anything is
// written.
var ErrNotFile = errors.New("not a regular file")

// Replaceable fails with ErrNotFile unless path does not exist, is a
// regular file or is a symlink (a rename replaces the link, never what
// it points at).
func Replaceable(path string) error {
	st, err := os.Lstat(path)
	if err != nil || st.Mode().IsRegular() || st.Mode()&os.ModeSymlink != 0 {
		return nil
	}
	what := "a special file"
	switch {
	case st.Mode()&os.ModeDevice != 0:
		what = "a device"
	case st.IsDir():
		what = "a directory"
	}
	return fmt.Errorf("%s is %s, %w", path, what, ErrNotFile)
}

// BusyError says another process is writing the same image.
type BusyError struct {
	Path string // the image
	PID  int    // the writer, 0 if not known
}

func (e *BusyError) Error() string {
	who := "another platter"
	if e.PID > 0 {
		who = fmt.Sprintf("another platter (process %d)", e.PID)
	}
	return fmt.Sprintf("%s is being written by %s: its %s is locked; wait for it to finish or stop it", e.Path, who, filepath.Base(e.Path)+".partial")
}

// Partial is the file an image is written to until it is complete: PATH
// .partial, locked for as long as it is open. A .partial left by a
// writer that died (no lock) is replaced; one being written is not.
type Partial struct {
	f     *os.File
	path  string // PATH.partial
	final string
	done  bool
}

// NewPartial creates PATH.partial for writing the image PATH, mode 0600,
// locked. It fails with a *BusyError while another process writes PATH,
// and with ErrNotFile if PATH is a device or a directory.
func NewPartial(final string) (*Partial, error) {
	if err := Replaceable(final); err != nil {
		return nil, err
	}
	path := final + ".partial"
	// The file is made under a private name and locked before it takes
	// the .partial name, so no one ever sees it unlocked.
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+".partial-"+hex.EncodeToString(suffix[:]))
	f, err := Create(tmp)
	if err != nil {
		// The user named the image, not this private name (a missing
		// directory, a read-only one).
		var pe *os.PathError
		if errors.As(err, &pe) {
			pe.Path = final
		}
		return nil, err
	}
	fail := func(err error) (*Partial, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := lock(f); err != nil {
		return fail(fmt.Errorf("lock %s: %w", tmp, err))
	}
	err = os.Link(tmp, path)
	switch {
	case err == nil:
		os.Remove(tmp)
	case errors.Is(err, os.ErrExist):
		// A .partial is there: refuse if its writer lives, else take
		// its place (rename replaces the name, never what it points at).
		if pid, busy := held(path); busy {
			return fail(&BusyError{Path: final, PID: pid})
		}
		if err := os.Rename(tmp, path); err != nil {
			return fail(err)
		}
	default:
		// A filesystem without hard links: rename, which replaces a
		// .partial left behind, so check for a live writer first.
		if pid, busy := held(path); busy {
			return fail(&BusyError{Path: final, PID: pid})
		}
		if err := os.Rename(tmp, path); err != nil {
			return fail(err)
		}
	}
	return &Partial{f: f, path: path, final: final}, nil
}

// Named gives err, if it is about the .partial (by either of its
// names), as the error of the image the user named: the .partial's
// names and what was wrapped around them (a writer's offset in the
// .partial) say nothing to the user, and a wrapper's message cannot be
// renamed after it is made. Other errors are returned as they are.
func (p *Partial) Named(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && (pe.Path == p.path || pe.Path == p.f.Name()) {
		return &os.PathError{Op: pe.Op, Path: p.final, Err: pe.Err}
	}
	return err
}

// File is the open .partial.
func (p *Partial) File() *os.File { return p.f }

// Name is the .partial's path.
func (p *Partial) Name() string { return p.path }

// ErrExists says the image was there before Commit, which did not
// replace it.
var ErrExists = errors.New("the image file exists")

// Commit syncs the .partial and gives it the image's name: replacing a
// file there if replace (never a device or a directory: ErrNotFile), else failing with ErrExists if one appeared
// meanwhile. The directory is synced, so the name survives a crash.
func (p *Partial) Commit(replace bool) error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p.path, err)
	}
	if replace {
		// Something may have taken the name since NewPartial.
		if err := Replaceable(p.final); err != nil {
			return err
		}
		if err := os.Rename(p.path, p.final); err != nil {
			return err
		}
	} else {
		// Link fails if the image appeared meanwhile; rename would
		// clobber it.
		switch err := os.Link(p.path, p.final); {
		case errors.Is(err, os.ErrExist):
			return fmt.Errorf("%s: %w", p.final, ErrExists)
		case err != nil: // no hard links here
			if _, err := os.Lstat(p.final); err == nil {
				return fmt.Errorf("%s: %w", p.final, ErrExists)
			}
			if err := os.Rename(p.path, p.final); err != nil {
				return err
			}
		default:
			os.Remove(p.path)
		}
	}
	p.done = true
	err := p.f.Close()
	SyncDir(filepath.Dir(p.final))
	return err
}

// Abort removes the .partial, unless Commit gave it the image's name.
// It is safe to call after Commit.
func (p *Partial) Abort() {
	if p.done {
		return
	}
	p.done = true
	// Only while it is still ours: the lock is held until Close.
	if st, err := os.Lstat(p.path); err == nil {
		if fst, err := p.f.Stat(); err == nil && os.SameFile(st, fst) {
			os.Remove(p.path)
		}
	}
	p.f.Close()
}

// lock takes a write lock on the whole file (POSIX, so another process
// can learn who holds it), failing at once if it is held.
func lock(f *os.File) error {
	return unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Whence: 0})
}

// held reports whether a live process holds the lock of the file at
// path, and which.
func held(path string) (int, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, false // gone, or a symlink: no writer of ours
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		return 0, false
	}
	if lk.Type == unix.F_UNLCK {
		return 0, false
	}
	return int(lk.Pid), true
}

// SyncDir syncs a directory, so the names in it survive a crash.
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
