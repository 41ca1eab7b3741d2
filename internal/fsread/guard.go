package fsread

import (
	"fmt"
	"io"
)

// guarded wraps a filesystem read by a third-party library (go-diskfs's
// FAT, go-ntfs): a panic inside it on damaged metadata (go-diskfs indexes
// past its buffers on some damaged directories) becomes an error naming
// the operation, not a crash of ls, extract or a mount. Platter's own
// readers return errors and are fuzzed instead.
type guarded struct {
	r   reader
	lib string
}

// safely runs f, turning a panic into an error.
func safely[T any](lib, op, name string, f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s %s: the filesystem is damaged (%s failed: %v)", op, name, lib, r)
		}
	}()
	return f()
}

func (g guarded) readDir(dir string) ([]dirent, error) {
	return safely(g.lib, "list", "/"+dir, func() ([]dirent, error) { return g.r.readDir(dir) })
}

func (g guarded) stat(name string) (Entry, error) {
	return safely(g.lib, "stat", "/"+name, func() (Entry, error) { return g.r.stat(name) })
}

func (g guarded) open(name string) (io.ReadCloser, error) {
	r, err := safely(g.lib, "open", "/"+name, func() (io.ReadCloser, error) { return g.r.open(name) })
	if err != nil {
		return nil, err
	}
	gr := &guardedReader{r: r, lib: g.lib, name: "/" + name}
	if _, ok := r.(io.ReaderAt); ok {
		return guardedReaderAt{gr}, nil
	}
	if _, ok := r.(io.Seeker); ok {
		return guardedSeeker{gr}, nil
	}
	return gr, nil
}

// guardedReader guards a file's reads the same way.
type guardedReader struct {
	r         io.ReadCloser
	lib, name string
}

func (g *guardedReader) Read(p []byte) (int, error) {
	return safely(g.lib, "read", g.name, func() (int, error) { return g.r.Read(p) })
}

func (g *guardedReader) Close() error {
	_, err := safely(g.lib, "close", g.name, func() (struct{}, error) { return struct{}{}, g.r.Close() })
	return err
}

type guardedReaderAt struct{ *guardedReader }

func (g guardedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return safely(g.lib, "read", g.name, func() (int, error) { return g.r.(io.ReaderAt).ReadAt(p, off) })
}

type guardedSeeker struct{ *guardedReader }

func (g guardedSeeker) Seek(off int64, whence int) (int64, error) {
	return safely(g.lib, "seek", g.name, func() (int64, error) { return g.r.(io.Seeker).Seek(off, whence) })
}
