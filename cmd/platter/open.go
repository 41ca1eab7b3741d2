package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/store"
)

// searchDirs are where parents are looked for after an image's own
// directory (--search).
var searchDirs []string

// chainFiles are the open images (files, split volumes, objects) of an
// image and its parents.
type chainFiles []store.Object

func (c chainFiles) Close() error {
	var err error
	for _, f := range c {
		err = errors.Join(err, f.Close())
	}
	return err
}

// holding returns the file of the chain that path names (the same file,
// by device and inode, whatever the name; a volume of a split image
// too), or "".
func (c chainFiles) holding(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	for _, o := range c {
		parts := []store.Object{o}
		for i, v := range store.Volumes(o) {
			if i == 0 {
				parts = parts[:0]
			}
			parts = append(parts, v.Object)
		}
		for _, f := range parts {
			if sf, ok := f.(interface{ Stat() (os.FileInfo, error) }); ok {
				if fs, err := sf.Stat(); err == nil && os.SameFile(st, fs) {
					return f.Name()
				}
			}
		}
	}
	return ""
}

// inVolume adds to the error of a bad chunk in a split image the volume
// its frame is in.
func (c chainFiles) inVolume(err error) error {
	var ce *image.ChunkError
	if !errors.As(err, &ce) {
		return err
	}
	for _, o := range c {
		if v := store.VolumeAt(o, ce.Entry.FrameOff); v != nil && o.Name() == ce.File {
			return fmt.Errorf("%w (in volume %s)", err, v.Name())
		}
	}
	return err
}

// openImage opens and checks an image and, for an incremental or
// differential, its parents (found by id beside it, then in searchDirs),
// checked to be the images it was made from; the caller closes both. A
// Clonezilla image directory or a Macrium Reflect X image is opened as
// the Platter image of its disk (foreign.go).
func openImage(path string) (chainFiles, *image.Reader, error) {
	kind := foreignKind(path)
	if err := checkDiskFlag(path, kind); err != nil {
		return nil, nil, err
	}
	if kind != "" {
		return openForeignImage(path, kind)
	}
	var files chainFiles
	fail := func(err error) (chainFiles, *image.Reader, error) {
		files.Close()
		return nil, nil, err
	}
	ctx := context.Background()
	place, name, err := imageAt(ctx, path)
	if err != nil {
		return fail(err)
	}
	f, r, err := openOne(ctx, place, name)
	if err != nil {
		return fail(err)
	}
	files = append(files, f)
	parents, err := attachChain(ctx, r, place)
	files = append(files, parents...)
	if err != nil {
		return fail(err)
	}
	return files, r, nil
}

// attachChain finds, opens, checks and attaches the parents of r (an
// image in place; nil for standard input), found by id in place, then in
// searchDirs. It returns the parents' files, to be closed by the caller
// even on error.
func attachChain(ctx context.Context, r *image.Reader, place store.Place) (chainFiles, error) {
	var files chainFiles
	// The chain, newest first, then attached oldest first.
	chain := []*image.Reader{r}
	seen := map[string]bool{r.ID().String(): true}
	for cur := r; cur.Metadata().Parent != ""; {
		id := cur.Metadata().Parent
		if seen[id] {
			return files, fmt.Errorf("%w: %s: the chain of parents loops back to image %s", image.ErrDamaged, r.Name(), id)
		}
		seen[id] = true
		pplace, pname, err := findImage(ctx, id, place)
		if err != nil {
			return files, fmt.Errorf("%s is %s of image %s: %w", cur.Name(), article(cur.Metadata().Type), id, err)
		}
		pf, pr, err := openOne(ctx, pplace, pname)
		if err != nil {
			return files, fmt.Errorf("parent of %s: %w", cur.Name(), err)
		}
		files = append(files, pf)
		chain = append(chain, pr)
		cur = pr
	}
	for i := len(chain) - 2; i >= 0; i-- {
		if err := chain[i].AttachParent(chain[i+1]); err != nil {
			return files, err
		}
	}
	return files, nil
}

func article(typ string) string {
	if typ == "incremental" {
		return "an incremental"
	}
	return "a " + typ
}

// openOne opens one image (a regular file, the volumes of a split one, an
// object), unlocks it if it is encrypted (secrets.go: the secrets given,
// or asked for on the terminal), and checks it (imageset.Open).
func openOne(ctx context.Context, place store.Place, name string) (store.Object, *image.Reader, error) {
	return imageset.Open(ctx, place, name, keyring())
}

// MissingParentError says where a parent image was looked for.
type MissingParentError struct {
	ID   string
	Dirs []string
}

func (e *MissingParentError) Error() string {
	if len(e.Dirs) == 0 {
		// An image read from standard input has no directory of its own.
		return fmt.Sprintf("no image with id %s: the parents of an image read from standard input are looked for only in the --search directories, and none was given (point --search at the directory that holds it)", e.ID)
	}
	return fmt.Sprintf("no image with id %s in %v (rename does not matter, the id does; point --search at the directory that holds it)", e.ID, e.Dirs)
}

func (e *MissingParentError) Is(target error) bool { return target == image.ErrDamaged }

// findImage looks for the image with id in the Place of its child (nil
// for an image read from standard input), then in the --search Places,
// by reading the header of each image there.
func findImage(ctx context.Context, id string, child store.Place) (store.Place, string, error) {
	search, err := searchPlaces(ctx)
	if err != nil {
		return nil, "", err
	}
	var places []store.Place
	if child != nil {
		places = append(places, child)
	}
	places = append(places, search...)
	var dirs []string
	for _, p := range places {
		dirs = append(dirs, p.String())
		ents, err := p.List(ctx)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if got, err := readID(ctx, p, e.Name); err == nil && got.String() == id {
				return p, e.Name, nil
			}
		}
	}
	return nil, "", &MissingParentError{ID: id, Dirs: dirs}
}

// readID reads the id in the header of the image called name in p.
func readID(ctx context.Context, p store.Place, name string) (image.ID, error) {
	o, err := p.Open(ctx, name)
	if err != nil {
		return image.ID{}, err
	}
	defer o.Close()
	return image.ReadIDAt(o)
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
