package fsread

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// ErrBadName is matched by every error of CheckName (a *NameError).
var ErrBadName = errors.New("name refused")

// errDuplicate marks a later entry of a name a directory already lists.
var errDuplicate = errors.New("a second entry of this name")

// CheckName says whether name, one directory entry's name as an image's
// filesystem holds it, can be one element of a path on this machine: not
// empty, not "." or "..", and without "/", "\" or NUL. The backslash is
// refused though Linux allows it: it separates paths on Windows, in
// NTFS reparse targets and drive paths, and no name a
// Windows filesystem holds legitimately contains one. Every name fsread
// hands out has passed it; it is the one place that decides.
func CheckName(name string) error {
	var why string
	switch {
	case name == "":
		why = "is empty"
	case name == "." || name == "..":
		why = `is "." or "..", not a name`
	case strings.IndexByte(name, '/') >= 0:
		why = "holds a slash"
	case strings.IndexByte(name, '\\') >= 0:
		why = "holds a backslash"
	case strings.IndexByte(name, 0) >= 0:
		why = "holds a NUL byte"
	default:
		return nil
	}
	return &NameError{Name: name, Why: why}
}

// A NameError is a name CheckName refuses, and why.
type NameError struct {
	Name, Why string
}

func (e *NameError) Error() string { return fmt.Sprintf("name %q %s", e.Name, e.Why) }

func (e *NameError) Is(target error) bool { return target == ErrBadName }

// A SkipError is an entry left out: by ReadDir (a name CheckName refuses,
// a second entry of one name, an entry the reader could not describe) or
// by Extract (a file that could not be read).
type SkipError struct {
	Dir  string // its directory: slash-separated, "/" for the root
	Name string // its name as the filesystem holds it
	Err  error
}

func (e *SkipError) Error() string {
	if e.Name == "" && !errors.Is(e.Err, ErrBadName) {
		return fmt.Sprintf("%s: entries skipped: %v", e.Dir, e.Err)
	}
	var ne *NameError
	if errors.As(e.Err, &ne) && ne.Name == e.Name {
		return fmt.Sprintf("%s: %q skipped: its name %s", e.Dir, e.Name, ne.Why)
	}
	return fmt.Sprintf("%s: %q skipped: %v", e.Dir, e.Name, e.Err)
}

func (e *SkipError) Unwrap() error { return e.Err }

// checked is every FS Open returns. It is the one boundary between the
// readers and their users: ReadDir drops (and reports once) every entry
// with a name CheckName refuses, every later entry of a name already
// listed, and every entry the reader could not describe; Stat looks
// names up in that same listing, so it finds only what ReadDir lists;
// every path given to it is cleaned and each of its elements checked.
type checked struct {
	r       vfs.Files // the filesystem's own reader: names unchecked
	fold    bool      // names match without regard to case (FAT, exFAT, NTFS)
	skipped func(*SkipError)

	mu   sync.Mutex
	told map[string]bool // entries reported, by directory and position
}

func (c *checked) ReadDir(dir string) ([]Entry, error) {
	elems, err := elements(dir)
	if err != nil {
		return nil, err
	}
	dir = strings.Join(elems, "/")
	ents, skips, err := c.list(dir)
	if err != nil {
		return nil, err
	}
	for i, s := range skips {
		c.report(dir, i, s)
	}
	return ents, nil
}

func (c *checked) Stat(name string) (Entry, error) {
	elems, err := elements(name)
	if err != nil {
		return Entry{}, err
	}
	if len(elems) == 0 {
		return c.r.Stat("")
	}
	base := elems[len(elems)-1]
	ents, skips, err := c.list(strings.Join(elems[:len(elems)-1], "/"))
	if err != nil {
		return Entry{}, err
	}
	for _, e := range ents {
		if e.Name == base {
			return e, nil
		}
	}
	if c.fold {
		k := vfs.FoldKey(base)
		for _, e := range ents {
			if vfs.FoldKey(e.Name) == k {
				return e, nil
			}
		}
	}
	for _, s := range skips {
		if s != nil && s.Name == base {
			return Entry{}, s
		}
	}
	return Entry{}, iofs.ErrNotExist
}

func (c *checked) Open(name string) (io.ReadCloser, error) {
	elems, err := elements(name)
	if err != nil {
		return nil, err
	}
	return c.r.Open(strings.Join(elems, "/"))
}

// list reads a directory and sorts its entries into those kept and those
// skipped (by position: skips[i] is nil for a kept entry).
func (c *checked) list(dir string) ([]Entry, []*SkipError, error) {
	raw, err := c.r.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	out := make([]Entry, 0, len(raw))
	skips := make([]*SkipError, len(raw))
	first := make(map[string]string, len(raw)) // by key: the name kept
	for i, d := range raw {
		var err error
		if d.Name == "" && d.Err != nil {
			err = d.Err // entries the reader could not name
		} else if err = CheckName(d.Name); err == nil {
			// An entry that cannot be read still claims its name: the
			// readers find the first entry of a name, never a later one.
			k := d.Name
			if c.fold {
				k = vfs.FoldKey(k)
			}
			if kept, dup := first[k]; dup && kept == d.Name {
				err = errDuplicate
			} else if dup {
				err = fmt.Errorf("%w (case does not count): %q is listed already", errDuplicate, kept)
			} else {
				first[k] = d.Name
				err = d.Err
			}
		}
		if err != nil {
			skips[i] = &SkipError{Dir: "/" + dir, Name: d.Name, Err: err}
			continue
		}
		out = append(out, d)
	}
	return out, skips, nil
}

// report tells skipped of s, once however often its directory is read
// (a mount reads directories again and again).
func (c *checked) report(dir string, i int, s *SkipError) {
	if s == nil || c.skipped == nil {
		return
	}
	key := dir + "\x00" + strconv.Itoa(i)
	c.mu.Lock()
	told := c.told[key]
	if !told {
		if c.told == nil {
			c.told = map[string]bool{}
		}
		c.told[key] = true
	}
	c.mu.Unlock()
	if !told {
		c.skipped(s)
	}
}

// elements cleans a path given to an FS ("." and ".." resolved
// lexically, as for any path) and checks each of its elements.
func elements(p string) ([]string, error) {
	clean := strings.Trim(path.Clean("/"+p), "/")
	if clean == "" {
		return nil, nil
	}
	elems := strings.Split(clean, "/")
	for _, e := range elems {
		if err := CheckName(e); err != nil {
			return nil, fmt.Errorf("%w (%w)", iofs.ErrNotExist, err)
		}
	}
	return elems, nil
}
