// Package imageset reads the images of a directory (any store.Place) as
// sets, one per disk, and resolves their chains: what `platter list`
// shows and what `platter prune` keeps, merges and deletes come from this
// one reading. Open is how every command opens one image of a Place.
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
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/platter-dev/platter/internal/store"
)

// Image is one image: a file, or the volumes of a split one.
type Image struct {
	// Path names the image in messages (a file's path, or s3://...).
	Path string
	// Place and Name are where it is kept.
	Place store.Place
	Name  string
	ID    string // hex; "" when even the header cannot be read
	Size  int64  // bytes of the image (all its volumes)
	// Meta is nil when the file does not open.
	Meta *image.Metadata
	// Err says why the file does not open (it is damaged, or
	// encrypted and locked: see Locked); nil if it opens.
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
	Path string // the Place, as messages name it
	// Sets are ordered by their oldest image.
	Sets []*Set
	// Damaged are the files with a Platter header that do not open: no
	// set can be told for them.
	Damaged []*Image
	// Locked are the encrypted images that no secret given opens (none
	// was given, or not theirs): their disk is in their sealed metadata.
	Locked []*Image
}

// Locked reports whether the image did not open because it is
// encrypted and no secret given unlocks it: it is not damaged.
func (im *Image) Locked() bool { return IsLocked(im.Err) }

// IsLocked reports whether err is a failure to unlock an encrypted image
// (no secret given, a wrong passphrase, no identity that matches), not
// damage.
func IsLocked(err error) bool {
	return err != nil && (errors.Is(err, seal.ErrNoSecret) || errors.Is(err, seal.ErrWrongPassphrase) || errors.Is(err, seal.ErrNoIdentity))
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

// LockedError says an image of the chain is encrypted and no secret
// given unlocks it.
type LockedError struct {
	Image *Image // the locked image
	Err   error
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s (%s) is locked: %v", Short(e.Image.ID), e.Image.Path, e.Err)
}

func (e *LockedError) Unwrap() error { return e.Err }

// Read reads every image in dir: the objects it lists (images being
// written are not listed) that start with a Platter header. An image
// that does not open is in Damaged, not an error. Parents not in dir are
// looked for in search, in order, as restore looks for them. keys unlock
// encrypted images; those they do not unlock are in Locked.
func Read(ctx context.Context, dir store.Place, search []store.Place, keys image.Keyring) (*Dir, error) {
	ents, err := dir.List(ctx)
	if err != nil {
		return nil, err
	}
	r := &reader{ctx: ctx, keys: keys, dirs: map[store.Place]map[string]string{}, opened: map[string]*Image{}, look: append([]store.Place{dir}, search...)}
	d := &Dir{Path: dir.String()}
	byName := map[string]string{}
	var imgs []*Image
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		im := open(ctx, dir, e.Name, keys)
		if im == nil {
			continue // not an image
		}
		im.InDir = true
		r.opened[key(dir, e.Name)] = im
		if im.ID != "" {
			if _, dup := byName[im.ID]; !dup {
				byName[im.ID] = e.Name
			}
		}
		switch {
		case im.Locked():
			d.Locked = append(d.Locked, im)
			continue
		case im.Err != nil:
			d.Damaged = append(d.Damaged, im)
			continue
		}
		imgs = append(imgs, im)
	}
	r.dirs[dir] = byName
	for _, im := range imgs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.resolve(im, map[*Image]bool{})
	}
	d.Sets = group(imgs)
	return d, nil
}

// key names an image of a Place in the maps of a reader.
func key(p store.Place, name string) string { return store.Path(p, name) }

// open reads one image: nil if it is not one.
func open(ctx context.Context, p store.Place, name string, keys image.Keyring) *Image {
	im := &Image{Path: store.Path(p, name), Place: p, Name: name}
	id, err := readID(ctx, p, name)
	if errors.Is(err, image.ErrNotImage) {
		return nil
	}
	if err != nil {
		im.Err = err
		return im
	}
	im.ID = id.String()
	o, ir, err := Open(ctx, p, name, keys)
	if err != nil {
		im.Err = err
		// Its size, where its volumes can be told.
		if o, err := p.Open(ctx, name); err == nil {
			im.Size = o.Size()
			o.Close()
		}
		return im
	}
	defer o.Close()
	defer ir.Close()
	im.Path, im.Size = o.Name(), o.Size()
	im.Meta, im.content = ir.Metadata(), ir.ContentDigest()
	return im
}

// readID reads the id in the header of the image called name in p (of
// its first volume: the volumes of a split image need not fit for it).
func readID(ctx context.Context, p store.Place, name string) (image.ID, error) {
	inner := p
	if u, ok := p.(interface{ Unwrap() store.Place }); ok {
		inner = u.Unwrap()
	}
	o, err := inner.Open(ctx, name)
	if err != nil {
		return image.ID{}, err
	}
	defer o.Close()
	return image.ReadIDAt(o)
}

// reader finds parents as cmd/platter's openImage does: by id, in the
// directory of the image opened (for every image of its chain), then in
// the search directories.
type reader struct {
	ctx    context.Context
	keys   image.Keyring
	dirs   map[store.Place]map[string]string // Place -> id -> first image (by name) with it
	opened map[string]*Image                 // by key
	look   []store.Place                     // the Place read, then the search Places
}

func (r *reader) find(id string) *Image {
	for _, dir := range r.look {
		name, ok := r.index(dir)[id]
		if !ok {
			continue
		}
		im := r.opened[key(dir, name)]
		if im == nil {
			im = open(r.ctx, dir, name, r.keys)
			r.opened[key(dir, name)] = im
		}
		return im
	}
	return nil
}

// index maps the ids of dir's images to their names (the first by name).
func (r *reader) index(dir store.Place) map[string]string {
	if m, ok := r.dirs[dir]; ok {
		return m
	}
	m := map[string]string{}
	r.dirs[dir] = m
	ents, err := dir.List(r.ctx)
	if err != nil {
		return m // an unreadable search directory holds nothing
	}
	for _, e := range ents {
		if id, err := readID(r.ctx, dir, e.Name); err == nil {
			if _, dup := m[id.String()]; !dup {
				m[id.String()] = e.Name
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
		var dirs []string
		for _, d := range r.look {
			dirs = append(dirs, d.String())
		}
		return &MissingError{ID: m.Parent, Child: im, Dirs: dirs}
	}
	im.Parent = p
	if p.Locked() {
		return &LockedError{Image: p, Err: p.Err}
	}
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
