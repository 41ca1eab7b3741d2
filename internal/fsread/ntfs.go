package fsread

import (
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"

	ntfs "www.velocidex.com/golang/go-ntfs/parser"
)

type ntfsFS struct {
	ctx *ntfs.NTFSContext
}

func openNTFS(r io.ReaderAt) (*ntfsFS, error) {
	pr, err := ntfs.NewPagedReader(r, 4096, 1024)
	if err != nil {
		return nil, err
	}
	ctx, err := ntfs.GetNTFSContext(pr, 0)
	if err != nil {
		return nil, fmt.Errorf("read the ntfs filesystem: %w", err)
	}
	return &ntfsFS{ctx: ctx}, nil
}

// list returns a directory's entries (files and directories; no streams,
// no slack, no system files of the root, not the root's entry for
// itself). Other names are handed up as they are, for checked to judge.
func (n *ntfsFS) list(dir string) ([]*ntfs.FileInfo, error) {
	id := int64(5) // the root
	for _, part := range strings.Split(strings.Trim(path.Clean("/"+dir), "/"), "/") {
		if part == "" {
			continue
		}
		fi, err := n.find(id, part)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir {
			return nil, fmt.Errorf("%s is not a directory", dir)
		}
		if id, _, _, _, err = ntfs.ParseMFTId(fi.MFTId); err != nil {
			return nil, err
		}
	}
	entry, err := n.ctx.GetMFT(id)
	if err != nil {
		return nil, err
	}
	var out []*ntfs.FileInfo
	for _, fi := range ntfs.ListDir(n.ctx, entry) {
		if fi.IsSlack || strings.Contains(fi.Name, ":") || (id == 5 && (fi.Name == "." || strings.HasPrefix(fi.Name, "$"))) {
			continue
		}
		out = append(out, fi)
	}
	return out, nil
}

func (n *ntfsFS) find(dirID int64, name string) (*ntfs.FileInfo, error) {
	entry, err := n.ctx.GetMFT(dirID)
	if err != nil {
		return nil, err
	}
	for _, fi := range ntfs.ListDir(n.ctx, entry) {
		if !fi.IsSlack && strings.EqualFold(fi.Name, name) {
			return fi, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
}

// entry describes fi, found in directory dir. A symlink (a reparse point
// or an Interix link as ntfs-3g makes them) gets its target.
func (n *ntfsFS) entry(dir string, fi *ntfs.FileInfo) (Entry, error) {
	e := Entry{Name: fi.Name, Size: fi.Size, ModTime: fi.Mtime, Mode: 0o644}
	if fi.IsDir {
		e.Mode, e.Size = iofs.ModeDir|0o755, 0
	}
	target, err := n.link(dir, fi)
	if err != nil {
		return Entry{Name: fi.Name}, fmt.Errorf("read its link: %w", err)
	}
	if target != "" {
		e.Mode, e.Size, e.Target = iofs.ModeSymlink|0o777, int64(len(target)), target
	}
	return e, nil
}

// readDir lists a directory; an entry whose link cannot be read comes
// with the error, and the others are listed.
func (n *ntfsFS) readDir(dir string) ([]dirent, error) {
	fis, err := n.list(dir)
	if err != nil {
		return nil, err
	}
	out := make([]dirent, 0, len(fis))
	for _, fi := range fis {
		e, err := n.entry(dir, fi)
		out = append(out, dirent{Entry: e, err: err})
	}
	return out, nil
}

func (n *ntfsFS) stat(name string) (Entry, error) {
	name = strings.Trim(path.Clean("/"+name), "/")
	if name == "" {
		return Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	fis, err := n.list(path.Dir(name))
	if err != nil {
		return Entry{}, err
	}
	for _, fi := range fis {
		if strings.EqualFold(fi.Name, path.Base(name)) {
			return n.entry(path.Dir(name), fi)
		}
	}
	return Entry{}, fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
}

func (n *ntfsFS) open(name string) (io.ReadCloser, error) {
	e, err := n.stat(name)
	if err != nil {
		return nil, err
	}
	if !e.Mode.IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	rng, err := ntfs.GetDataForPath(n.ctx, strings.Trim(path.Clean("/"+name), "/"))
	if err != nil {
		return nil, err
	}
	return sectionCloser{io.NewSectionReader(readerAt{rng}, 0, e.Size)}, nil
}

// sectionCloser is a file's reader: sequential, ReaderAt and Seeker.
type sectionCloser struct{ *io.SectionReader }

func (sectionCloser) Close() error { return nil }

type readerAt struct{ r ntfs.RangeReaderAt }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }
