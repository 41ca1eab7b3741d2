package vfs

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"path"
	"strings"
	"sync"
	"unicode"
)

// The errors of a path that names the wrong kind of entry, wrapped with
// the path: "a/b: not a directory".
var (
	ErrNotDir     = errors.New("not a directory")
	ErrNotRegular = errors.New("not a regular file")
)

const (
	// maxDirs is how many directories' listings a Tree keeps:
	// extracting a directory opens each of its files by path, and a
	// scan per name would make that quadratic.
	maxDirs = 4
	// maxPaths bounds the directories a Tree remembers by path.
	maxPaths = 1024
)

// Tree finds the entries of a filesystem whose directories are read
// whole, as lists of entries E (FAT, exFAT), by path: it keeps the
// listings of the last maxDirs directories read and up to maxPaths
// directories found by path, so memory is bounded by what the
// filesystem's directories hold. Its methods are safe for concurrent use
// if its funcs are.
type Tree[E any, K comparable] struct {
	root  E
	list  func(dir E) ([]E, error)
	entry func(E) Entry
	key   func(dir E) K
	fold  func(name string) string

	mu    sync.Mutex
	dirs  []*listing[E, K] // the last maxDirs listed, oldest first
	paths map[string]E     // directories found by path
}

// listing is a directory's entries and, by folded name, the first entry
// of each name.
type listing[E any, K comparable] struct {
	key   K
	files []E
	index map[string]int
}

// NewTree finds entries from root, the root directory's entry. list
// reads a directory's entries in on-disk order (an error for a damaged
// directory, which is not kept); entry describes an entry (its name, its
// type, and in Err why it cannot be read); key tells one directory from
// another; fold maps a name to the key it matches by (names match when
// their keys are equal).
func NewTree[E any, K comparable](root E, list func(dir E) ([]E, error), entry func(E) Entry, key func(dir E) K, fold func(name string) string) *Tree[E, K] {
	return &Tree[E, K]{root: root, list: list, entry: entry, key: key, fold: fold}
}

// Stat finds name: a slash-separated path relative to the root ("", "."
// and "/" are the root). Of the entries whose names match, the first is
// found; a damaged one gives its Err.
func (t *Tree[E, K]) Stat(name string) (E, error) {
	return t.lookup(clean(name))
}

// ReadDir lists directory name's entries, in on-disk order, the damaged
// ones among them.
func (t *Tree[E, K]) ReadDir(name string) ([]E, error) {
	p := clean(name)
	d, err := t.lookup(p)
	if err != nil {
		return nil, err
	}
	if !t.entry(d).Mode.IsDir() {
		return nil, fmt.Errorf("%s: %w", p, ErrNotDir)
	}
	l, err := t.listing(d)
	if err != nil {
		return nil, err
	}
	return append([]E(nil), l.files...), nil
}

// File finds name as Stat finds it, and refuses a directory: the file a
// reader's Open opens.
func (t *Tree[E, K]) File(name string) (E, error) {
	p := clean(name)
	e, err := t.lookup(p)
	if err != nil {
		return e, err
	}
	if t.entry(e).Mode.IsDir() {
		var none E
		return none, fmt.Errorf("%s: %w", p, ErrNotRegular)
	}
	return e, nil
}

// clean turns a path into lookup's form: "" for the root, no slash at
// either end.
func clean(name string) string { return strings.Trim(path.Clean("/"+name), "/") }

// lookup finds the entry at p, a cleaned path.
func (t *Tree[E, K]) lookup(p string) (E, error) {
	var none E
	if p == "" {
		return t.root, nil
	}
	dir, base := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	d, err := t.dirAt(dir)
	if err != nil {
		return none, err
	}
	l, err := t.listing(d)
	if err != nil {
		return none, err
	}
	i, ok := l.index[t.fold(base)]
	if !ok {
		return none, fmt.Errorf("%s: %w", p, iofs.ErrNotExist)
	}
	if err := t.entry(l.files[i]).Err; err != nil {
		return none, fmt.Errorf("%s: %w", p, err)
	}
	return l.files[i], nil
}

// dirAt finds the directory at p, a cleaned path, remembering it.
func (t *Tree[E, K]) dirAt(p string) (E, error) {
	var none E
	if p == "" {
		return t.root, nil
	}
	t.mu.Lock()
	d, ok := t.paths[p]
	t.mu.Unlock()
	if ok {
		return d, nil
	}
	d, err := t.lookup(p)
	if err != nil {
		return none, err
	}
	if !t.entry(d).Mode.IsDir() {
		return none, fmt.Errorf("%s: %w", p, ErrNotDir)
	}
	t.mu.Lock()
	if t.paths == nil || len(t.paths) >= maxPaths {
		t.paths = make(map[string]E)
	}
	t.paths[p] = d
	t.mu.Unlock()
	return d, nil
}

// listing returns directory d's listing, from the last maxDirs read if it
// is there.
func (t *Tree[E, K]) listing(d E) (*listing[E, K], error) {
	key := t.key(d)
	t.mu.Lock()
	for _, l := range t.dirs {
		if l.key == key {
			t.mu.Unlock()
			return l, nil
		}
	}
	t.mu.Unlock()
	files, err := t.list(d)
	if err != nil {
		// A damaged directory is not kept.
		return nil, err
	}
	l := &listing[E, K]{key: key, files: files, index: map[string]int{}}
	for i, e := range files {
		// A damaged entry claims its name too: no later entry of it is
		// found in its place.
		if k := t.fold(t.entry(e).Name); !has(l.index, k) {
			l.index[k] = i
		}
	}
	t.mu.Lock()
	if len(t.dirs) == maxDirs {
		t.dirs = append(t.dirs[:0], t.dirs[1:]...)
	}
	t.dirs = append(t.dirs, l)
	t.mu.Unlock()
	return l, nil
}

// FoldKey maps each letter of name to the smallest of its Unicode
// simple-folding orbit: two names have one key exactly when
// strings.EqualFold says they match. It is how fsread matches names
// without regard to case, and how FAT does.
func FoldKey(name string) string {
	return strings.Map(func(r rune) rune {
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		return low
	}, name)
}

func has(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}
