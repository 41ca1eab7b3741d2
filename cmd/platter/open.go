package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/image"
)

// searchDirs are where parents are looked for after an image's own
// directory (--search).
var searchDirs []string

// chainFiles are the open files of an image and its parents.
type chainFiles []*os.File

func (c chainFiles) Close() error {
	var err error
	for _, f := range c {
		err = errors.Join(err, f.Close())
	}
	return err
}

// holding returns the file of the chain that path names (the same file,
// by device and inode, whatever the name), or "".
func (c chainFiles) holding(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	for _, f := range c {
		if fs, err := f.Stat(); err == nil && os.SameFile(st, fs) {
			return f.Name()
		}
	}
	return ""
}

// openImage opens and checks an image file and, for an incremental or
// differential, its parents (found by id beside it, then in searchDirs),
// checked to be the images it was made from; the caller closes both.
func openImage(path string) (chainFiles, *image.Reader, error) {
	var files chainFiles
	fail := func(err error) (chainFiles, *image.Reader, error) {
		files.Close()
		return nil, nil, err
	}
	f, r, err := openOne(path)
	if err != nil {
		return fail(err)
	}
	files = append(files, f)
	// The chain, newest first, then attached oldest first.
	chain := []*image.Reader{r}
	seen := map[string]bool{r.ID().String(): true}
	for cur := r; cur.Metadata().Parent != ""; {
		id := cur.Metadata().Parent
		if seen[id] {
			return fail(fmt.Errorf("%w: %s: the chain of parents loops back to image %s", image.ErrDamaged, path, id))
		}
		seen[id] = true
		ppath, err := findImage(id, path)
		if err != nil {
			return fail(fmt.Errorf("%s is %s of image %s: %w", cur.Name(), article(cur.Metadata().Type), id, err))
		}
		pf, pr, err := openOne(ppath)
		if err != nil {
			return fail(fmt.Errorf("parent of %s: %w", cur.Name(), err))
		}
		files = append(files, pf)
		chain = append(chain, pr)
		cur = pr
	}
	for i := len(chain) - 2; i >= 0; i-- {
		if err := chain[i].AttachParent(chain[i+1]); err != nil {
			return fail(err)
		}
	}
	return files, r, nil
}

func article(typ string) string {
	if typ == "incremental" {
		return "an incremental"
	}
	return "a " + typ
}

// openOne opens one image file.
func openOne(path string) (*os.File, *image.Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	r, err := image.NewReader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	r.SetName(path)
	return f, r, nil
}

// MissingParentError says where a parent image was looked for.
type MissingParentError struct {
	ID   string
	Dirs []string
}

func (e *MissingParentError) Error() string {
	return fmt.Sprintf("no image with id %s in %v (rename does not matter, the id does; point --search at the directory that holds it)", e.ID, e.Dirs)
}

func (e *MissingParentError) Is(target error) bool { return target == image.ErrDamaged }

// findImage looks for the image with id beside child, then in searchDirs,
// by reading the header of each regular file.
func findImage(id, child string) (string, error) {
	dirs := append([]string{filepath.Dir(child)}, searchDirs...)
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if got, err := image.ReadID(p); err == nil && got.String() == id {
				return p, nil
			}
		}
	}
	return "", &MissingParentError{ID: id, Dirs: dirs}
}

// splitSpec reads IMAGE[:N]: the image file and partition N (0: none
// named). A file whose name ends in :N is taken whole.
func splitSpec(spec string) (path string, part int) {
	if i := strings.LastIndex(spec, ":"); i > 0 {
		if n, err := strconv.Atoi(spec[i+1:]); err == nil && n > 0 {
			if _, err := os.Stat(spec); err != nil {
				return spec[:i], n
			}
		}
	}
	return spec, 0
}
