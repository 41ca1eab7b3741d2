// Package imageset reads the images of a directory as sets, one per disk,
// and resolves their chains: what `platter list` shows and what `platter
// prune` keeps, merges and deletes come from this one reading.
//
// A set is the images of one disk: those with the same
// image.Metadata.SourceKey, together with every image made from one of
// them (an incremental always belongs to its parent's set, even when the
// disk's name or serial changed between them).
package imageset

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/image"
)

// Image is one image file.
type Image struct {
	Path string
	ID   string // hex; "" when even the header cannot be read
	Size int64  // bytes of the file
	// Meta is nil when the file does not open.
	Meta *image.Metadata
	// Err says why the file does not open (it is damaged); nil if it
	// opens.
	Err error
	// Parent is the image Meta.Parent names, found the way a restore
	// finds it (beside the image, then in the search directories); nil
	// for a full image or a parent not found.
	Parent *Image
	// InDir says the image is in the directory read, not only in a
	// search directory.
	InDir bool
	// Problem says why the image does not restore: it or an image of its
	// chain is missing or damaged, or is not the image it was made from.
	// nil when every image of its chain is found and opens.
	Problem error

	content  [32]byte
	resolved bool
}

// Short is an image id as people read it: its first 8 hex digits.
func Short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// Set is the images of one disk in the directory, oldest first.
type Set struct {
	Images []*Image
}

// Newest is the set's newest image: the one whose metadata names the
// disk as it was last seen.
func (s *Set) Newest() *Image { return s.Images[len(s.Images)-1] }

// Dir is what a directory holds.
type Dir struct {
	Path string
	// Sets are ordered by their oldest image.
	Sets []*Set
	// Damaged are the files with a Platter header that do not open: no
	// set can be told for them.
	Damaged []*Image
}

// MissingError says an image of the chain names a parent that is in
// none of the directories looked in.
type MissingError struct {
	ID    string   // the parent's id
	Child *Image   // the image that names it
	Dirs  []string // where it was looked for
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("missing parent %s of %s (looked in %s)", Short(e.ID), Short(e.Child.ID), strings.Join(e.Dirs, ", "))
}

// DamagedError says an image of the chain does not open, or is not the
// parent its child was made from.
type DamagedError struct {
	Image *Image // the file at fault
	Err   error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("%s (%s): %v", Short(e.Image.ID), e.Image.Path, e.Err)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// Read reads every image in dir: regular files with a Platter header,
// `.partial` files (images being written) left out. A file that does not
// open is in Damaged, not an error. Parents not in dir are looked for in
// search, in order, as restore looks for them.
func Read(ctx context.Context, dir string, search []string) (*Dir, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	r := &reader{dirs: map[string]map[string]string{}, opened: map[string]*Image{}, look: append([]string{dir}, search...)}
	d := &Dir{Path: dir}
	byName := map[string]string{}
	var imgs []*Image
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() || strings.HasSuffix(p, ".partial") {
			continue
		}
		im := open(p)
		if im == nil {
			continue // not an image
		}
		im.InDir = true
		r.opened[p] = im
		if im.ID != "" {
			if _, dup := byName[im.ID]; !dup {
				byName[im.ID] = p
			}
		}
		if im.Err != nil {
			d.Damaged = append(d.Damaged, im)
			continue
		}
		imgs = append(imgs, im)
	}
	r.dirs[filepath.Clean(dir)] = byName
	for _, im := range imgs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.resolve(im, map[*Image]bool{})
	}
	d.Sets = group(imgs)
	return d, nil
}

// open reads one file: nil if it is not an image.
func open(path string) *Image {
	id, err := image.ReadID(path)
	if errors.Is(err, image.ErrNotImage) {
		return nil
	}
	im := &Image{Path: path}
	if err != nil {
		im.Err = err
		return im
	}
	im.ID = id.String()
	f, err := os.Open(path)
	if err != nil {
		im.Err = err
		return im
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		im.Err = err
		return im
	}
	im.Size = st.Size()
	ir, err := image.NewReader(f, st.Size())
	if err != nil {
		im.Err = err
		return im
	}
	defer ir.Close()
	im.Meta, im.content = ir.Metadata(), ir.ContentDigest()
	return im
}

// reader finds parents as cmd/platter's openImage does: by id, in the
// directory of the image opened (for every image of its chain), then in
// the search directories.
type reader struct {
	dirs   map[string]map[string]string // directory -> id -> first file (by name) with it
	opened map[string]*Image            // by path
	look   []string                     // the directory read, then the search directories
}

func (r *reader) find(id string) *Image {
	for _, dir := range r.look {
		p, ok := r.index(dir)[id]
		if !ok {
			continue
		}
		im := r.opened[p]
		if im == nil {
			im = open(p)
			r.opened[p] = im
		}
		return im
	}
	return nil
}

// index maps the ids of dir's images to their files (the first by name).
func (r *reader) index(dir string) map[string]string {
	dir = filepath.Clean(dir)
	if m, ok := r.dirs[dir]; ok {
		return m
	}
	m := map[string]string{}
	r.dirs[dir] = m
	ents, err := os.ReadDir(dir)
	if err != nil {
		return m // an unreadable search directory holds nothing
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() || strings.HasSuffix(p, ".partial") {
			continue
		}
		if id, err := image.ReadID(p); err == nil {
			if _, dup := m[id.String()]; !dup {
				m[id.String()] = p
			}
		}
	}
	return m
}

// resolve finds im's parent and sets im.Problem from its chain.
func (r *reader) resolve(im *Image, seen map[*Image]bool) error {
	if im.resolved {
		return im.Problem
	}
	if seen[im] {
		return fmt.Errorf("the chain of parents loops back to image %s", Short(im.ID))
	}
	seen[im] = true
	im.Problem = r.link(im, seen)
	im.resolved = true
	return im.Problem
}

// link checks im and the link to its parent, then the parent's chain.
func (r *reader) link(im *Image, seen map[*Image]bool) error {
	if im.Err != nil {
		return &DamagedError{Image: im, Err: im.Err}
	}
	m := im.Meta
	if m.Parent == "" {
		return nil
	}
	p := r.find(m.Parent)
	if p == nil {
		return &MissingError{ID: m.Parent, Child: im, Dirs: r.look}
	}
	im.Parent = p
	if p.Err != nil {
		return &DamagedError{Image: p, Err: p.Err}
	}
	if m.ParentDigest != hex.EncodeToString(p.content[:]) {
		return &DamagedError{Image: p, Err: fmt.Errorf("its content changed since %s was made from it", Short(im.ID))}
	}
	if err := image.SameLayout(p.Meta, m); err != nil {
		return &DamagedError{Image: p, Err: fmt.Errorf("not the layout of %s: %w", Short(im.ID), err)}
	}
	return r.resolve(p, seen)
}

// group makes the sets: images of one SourceKey, joined with the images
// of the directory made from them.
func group(imgs []*Image) []*Set {
	root := map[*Image]*Image{}
	var find func(im *Image) *Image
	find = func(im *Image) *Image {
		if p, ok := root[im]; ok && p != im {
			q := find(p)
			root[im] = q
			return q
		}
		root[im] = im
		return im
	}
	union := func(a, b *Image) { root[find(a)] = find(b) }
	byKey := map[string]*Image{}
	for _, im := range imgs {
		find(im)
		k := im.Meta.SourceKey()
		if o, ok := byKey[k]; ok {
			union(im, o)
		} else {
			byKey[k] = im
		}
		if im.Parent != nil && im.Parent.InDir && im.Parent.Meta != nil {
			union(im, im.Parent)
		}
	}
	sets := map[*Image]*Set{}
	var out []*Set
	for _, im := range imgs {
		s := sets[find(im)]
		if s == nil {
			s = &Set{}
			sets[find(im)] = s
			out = append(out, s)
		}
		s.Images = append(s.Images, im)
	}
	for _, s := range out {
		sort.SliceStable(s.Images, func(i, j int) bool { return older(s.Images[i], s.Images[j]) })
	}
	sort.SliceStable(out, func(i, j int) bool { return older(out[i].Images[0], out[j].Images[0]) })
	return out
}

func older(a, b *Image) bool {
	if !a.Meta.Created.Equal(b.Meta.Created) {
		return a.Meta.Created.Before(b.Meta.Created)
	}
	return a.Path < b.Path
}
