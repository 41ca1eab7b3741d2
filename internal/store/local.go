package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/outfile"
)

// Dir is a Place over a local directory: each image is a file in it. An
// image is written as NAME.partial (mode 0600, locked, never through a
// symlink: internal/outfile), synced and renamed, so no half-written
// file ever carries its name.
type Dir struct{ path string }

// NewDir returns the Place of the directory at path.
func NewDir(path string) *Dir { return &Dir{path: path} }

// Path is the directory.
func (d *Dir) Path() string { return d.path }

func (d *Dir) String() string { return d.path }

// file is the path of the image called name.
func (d *Dir) file(name string) string { return filepath.Join(d.path, name) }

// checkName refuses a name that is not one element of a path: a Place
// never reaches outside itself.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("store: %q is not the name of an image in a directory", name)
	}
	return nil
}

// Open opens the regular file called name.
func (d *Dir) Open(ctx context.Context, name string) (Object, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	path := d.file(name)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &notFoundError{err}
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return &file{f: f, size: st.Size()}, nil
}

// notFoundError is the operating system's error for a missing file (its
// message names the path), answering errors.Is(err, ErrNotFound) too.
type notFoundError struct{ err error }

func (e *notFoundError) Error() string        { return e.err.Error() }
func (e *notFoundError) Unwrap() error        { return e.err }
func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// existsError says the file of an image exists and --force was not given.
type existsError struct{ path string }

func (e *existsError) Error() string {
	return e.path + ": image file exists (use --force to overwrite)"
}
func (e *existsError) Is(target error) bool { return target == ErrExists }

// file is an image file opened for reading; ReadAt is pread, safe for
// parallel calls.
type file struct {
	f    *os.File
	size int64
}

func (o *file) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }
func (o *file) Size() int64                             { return o.size }
func (o *file) Name() string                            { return o.f.Name() }
func (o *file) Close() error                            { return o.f.Close() }

// Stat describes the open file: which file it is, whatever its name now
// (os.SameFile).
func (o *file) Stat() (os.FileInfo, error) { return o.f.Stat() }

// Create writes NAME.partial through internal/outfile: it fails with a
// *outfile.BusyError while another process writes the same image, and
// with ErrExists if the image is there and opts.Force is not set.
func (d *Dir) Create(ctx context.Context, name string, opts CreateOptions) (Sink, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if opts.Split > 0 {
		return nil, errors.New("store: a directory writes split volumes only through store.Split")
	}
	path := d.file(name)
	// A device or directory there is refused before "exists, use
	// --force" would invite replacing it.
	if err := outfile.Replaceable(path); err != nil {
		return nil, err
	}
	if !opts.Force {
		if _, err := os.Lstat(path); err == nil {
			return nil, &existsError{path}
		}
	}
	p, err := outfile.NewPartial(path)
	if err != nil {
		return nil, err
	}
	// Written around the page cache where the filesystem allows, in 8 MiB
	// pieces while the next fills, so the final sync is short.
	return &fileSink{p: p, w: blockdev.NewSeqWriter(p.File(), 8<<20), path: path, force: opts.Force}, nil
}

// fileSink writes an image's .partial file.
type fileSink struct {
	p      *outfile.Partial
	w      *blockdev.SeqWriter // nil once closed
	path   string
	force  bool
	err    error // the first write error
	reread bool
}

func (s *fileSink) Name() string { return s.path }

func (s *fileSink) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.w == nil {
		return 0, fmt.Errorf("%s: write after the image was finished", s.path)
	}
	n, err := s.w.Write(b)
	if err != nil {
		s.err = s.named(err)
	}
	return n, s.err
}

// named says the image's name where err says its .partial's: the user
// named the image.
func (s *fileSink) named(err error) error { return s.p.Named(err) }

// flush writes what the SeqWriter holds.
func (s *fileSink) flush() error {
	if s.w == nil {
		return s.err
	}
	err := s.w.Close()
	s.w = nil
	if err != nil && s.err == nil {
		s.err = s.named(err)
	}
	return s.err
}

// Reread returns the bytes written so far, to be checked before Commit;
// nothing more may be written.
func (s *fileSink) Reread() (Object, error) {
	if err := s.flush(); err != nil {
		return nil, err
	}
	// Errors of writes the kernel deferred (a full disk) come now, not
	// after the check.
	if err := s.p.File().Sync(); err != nil {
		return nil, s.named(fmt.Errorf("sync %s: %w", s.p.Name(), err))
	}
	st, err := s.p.File().Stat()
	if err != nil {
		return nil, err
	}
	s.reread = true
	return &pending{f: s.p.File(), size: st.Size(), name: s.p.Name()}, nil
}

// pending reads a .partial that its Sink still holds open.
type pending struct {
	f    *os.File
	size int64
	name string
}

func (o *pending) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }
func (o *pending) Size() int64                             { return o.size }
func (o *pending) Name() string                            { return o.name }
func (o *pending) Close() error                            { return nil } // the Sink closes the file

// Commit syncs the .partial and gives it the image's name.
func (s *fileSink) Commit() error {
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.p.Commit(s.force); err != nil {
		if errors.Is(err, outfile.ErrExists) {
			return &existsError{s.path}
		}
		return err
	}
	return nil
}

// Abort removes the .partial, unless Commit gave it the image's name.
func (s *fileSink) Abort() {
	if s.w != nil {
		s.w.Close() // waits for a write in flight
		s.w = nil
	}
	s.p.Abort()
}

// List returns the regular files of the directory, .partial files (images
// being written) left out, by name.
func (d *Dir) List(ctx context.Context) ([]Entry, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.Type().IsRegular() || partialName(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		out = append(out, Entry{Name: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// partialName reports whether a file name is one outfile gives an image
// being written: NAME.partial, or .NAME.partial-XXXXXXXXXXXX before it is
// locked.
func partialName(name string) bool {
	return strings.HasSuffix(name, ".partial") || strings.HasPrefix(name, ".") && strings.Contains(name, ".partial-")
}

// Remove removes the file of the image called name.
func (d *Dir) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := d.file(name)
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &notFoundError{err}
	}
	if err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: not removed", path)
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err == nil {
		outfile.SyncDir(d.path)
	}
	return err
}
