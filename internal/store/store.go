// Package store is where images are kept: a file in a local directory, a
// set of numbered split volumes, an object in an S3 bucket, a pipe.
// Writers get a Sink, readers an Object; the engines (internal/image,
// internal/backup, internal/restore) see only an io.Writer and an
// io.ReaderAt with a size, and never learn where the bytes go. Which
// Place an IMAGE argument names is decided in one function (locate in
// cmd/platter/storage.go), so every command gets every kind of storage
// for free. Split wraps any Place with numbered volumes.
//
// Every Place passes one conformance suite (storetest), as restic's
// backends do.
package store

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"time"
)

// Object is a stored image opened for reading. ReadAt is safe for
// parallel calls.
type Object interface {
	io.ReaderAt
	io.Closer
	// Size is the object's length in bytes.
	Size() int64
	// Name is how messages name it: a path, or s3://BUCKET/KEY.
	Name() string
}

// Sink receives an image written once, front to back, never seeking.
// Until Commit nothing a reader would take for an image carries the
// name; Abort, after any failure or a cancelled write, removes (or never
// completes) what was written. After Commit, Abort does nothing.
type Sink interface {
	io.Writer
	Commit() error
	Abort()
	// Name is how messages name what is being written.
	Name() string
}

// Entry is one object of a Place, as List returns it.
type Entry struct {
	Name    string // relative to the Place: a file name, or a key below the prefix
	Size    int64
	ModTime time.Time
}

// Place is a directory of images: a local directory or an S3 bucket
// prefix. Names are single path elements below it ("laptop.platter").
type Place interface {
	// Open opens the image called name (all its volumes, when split).
	// It fails with an error wrapping ErrNotFound when there is none.
	Open(ctx context.Context, name string) (Object, error)
	// Create starts writing the image called name. It fails with an
	// error wrapping ErrExists when the image exists and opts.Force is
	// not set (or Commit does, if one appears meanwhile). A Place that
	// is not Split refuses opts.Split.
	Create(ctx context.Context, name string, opts CreateOptions) (Sink, error)
	// List returns the objects of the Place, images being written (not
	// committed) left out; Split lists split volumes as one image, under
	// the first volume's name, with the size of all of them.
	List(ctx context.Context) ([]Entry, error)
	// Remove removes the image called name, every volume of it. It
	// fails with an error wrapping ErrNotFound when there is none.
	Remove(ctx context.Context, name string) error
	// String names the Place in messages: a directory, s3://BUCKET/PREFIX/.
	String() string
}

// CreateOptions say how an image is written.
type CreateOptions struct {
	// Force replaces an existing image of the same name, only once the
	// new one is complete.
	Force bool
	// Split, when positive, writes numbered volumes of at most Split
	// bytes each: NAME, NAME.002, NAME.003, ...
	Split int64
}

// ErrExists says an image of that name exists and Force was not given.
var ErrExists = errors.New("image exists (use --force to overwrite)")

// ErrNotFound says no image of that name is there.
var ErrNotFound = errors.New("no such image")

// Rereader is a Sink whose bytes can be read back before Commit, so that a
// rewritten image (consolidate, prune's merges) is checked before it
// replaces the old one. Reread is called once everything is written;
// nothing may be written after it, and Commit or Abort follow as usual.
// The Object it returns is valid until then. A local directory's Sinks
// are Rereaders; an S3 upload, which is no object until it completes,
// need not be.
type Rereader interface {
	Sink
	Reread() (Object, error)
}

// Path names the image called name in p for messages, before or without
// opening it: a file's path, or s3://BUCKET/PREFIX/NAME.
func Path(p Place, name string) string {
	if dir, ok := Local(p); ok {
		return filepath.Join(dir, name)
	}
	return strings.TrimSuffix(p.String(), "/") + "/" + name
}

// Local returns the directory of a Place that is a local directory (or
// split volumes in one), and whether it is one.
func Local(p Place) (string, bool) {
	for {
		switch q := p.(type) {
		case *Dir:
			return q.Path(), true
		case interface{ Unwrap() Place }:
			p = q.Unwrap()
		default:
			return "", false
		}
	}
}

// Patcher is an Object whose bytes at the start can be replaced without
// writing the rest again, as a whole: readers see the old object or the
// new one, never a mix. passwd uses it on storage that cannot be written
// in place (an S3 object); a local file is written in place instead.
type Patcher interface {
	Object
	// Patch replaces b's bytes at off (off+len(b) at most Size) and
	// keeps every other byte. It fails, changing nothing, if the object
	// is no longer the one opened (the error wraps ErrChanged).
	Patch(ctx context.Context, off int64, b []byte) error
}

// ErrChanged says a stored object was replaced since it was opened: a
// read or a Patch of it fails rather than mix two images.
var ErrChanged = errors.New("the object changed since it was opened")
