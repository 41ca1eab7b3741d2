package vfs

import (
	"bytes"
	"fmt"
	"io"
)

// Reader is a filesystem package's own file reader, whose entries are
// its own type T (ext.File, fat.File, ...).
type Reader[T any] interface {
	ReadDir(dir string) ([]T, error)
	Stat(name string) (T, error)
	Open(name string) (io.ReadCloser, error)
}

// Adapt makes r a Files: entry describes one of r's entries (its Err
// too, which only ReadDir keeps: Stat leaves it out, as Files says);
// caseInsensitive is what CaseInsensitive says.
func Adapt[T any](r Reader[T], entry func(T) Entry, caseInsensitive bool) Files {
	return adapted[T]{r: r, entry: entry, fold: caseInsensitive}
}

type adapted[T any] struct {
	r     Reader[T]
	entry func(T) Entry
	fold  bool
}

func (a adapted[T]) ReadDir(dir string) ([]Entry, error) {
	ts, err := a.r.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(ts))
	for _, t := range ts {
		out = append(out, a.entry(t))
	}
	return out, nil
}

func (a adapted[T]) Stat(name string) (Entry, error) {
	t, err := a.r.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	e := a.entry(t)
	e.Err = nil
	return e, nil
}

func (a adapted[T]) Open(name string) (io.ReadCloser, error) { return a.r.Open(name) }

func (a adapted[T]) CaseInsensitive() bool { return a.fold }

// UUID writes 16 bytes as blkid shows a filesystem's UUID:
// 8-4-4-4-12 lower-case hex digits, in the order the bytes are stored.
func UUID(u []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// CString is b up to its first NUL: a label as a superblock stores it.
func CString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
