package ntfsclone

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/platter-dev/platter/internal/partclone"
)

// OpenFile opens the image whose first volume (or only file) is path,
// following its split volumes (NAME.aa, NAME.ab, ...) and decompressing
// it by its first bytes (ocs-sr names an ntfsclone image NAME.ntfs-img
// whatever compressed it), and reads its header. The caller closes the
// returned closer after the Reader is done.
func OpenFile(path string) (*Reader, io.Closer, error) {
	paths, err := partclone.Volumes(path)
	if err != nil {
		return nil, nil, err
	}
	s, err := partclone.OpenVolumes(paths)
	if err != nil {
		return nil, nil, err
	}
	comp, src, err := partclone.Sniff(s)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	dec, err := partclone.Decompress(comp, src)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	c := closers{dec, s}
	r, err := NewReader(dec)
	if err != nil {
		c.Close()
		return nil, nil, inVolumes(err, paths)
	}
	r.volumes = paths
	return r, c, nil
}

type closers []io.Closer

func (c closers) Close() error {
	var err error
	for _, x := range c {
		err = errors.Join(err, x.Close())
	}
	return err
}

// inVolumes adds to the error of a split image that ends early the
// volume that would come next: the one missing.
func inVolumes(err error, paths []string) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(paths) == 0 {
		return err
	}
	last := paths[len(paths)-1]
	if next := partclone.NextVolume(last); next != "" {
		return fmt.Errorf("%w (%s is the last volume there is; %w: %s?)", err, filepath.Base(last), partclone.ErrMissingVolume, filepath.Base(next))
	}
	return err
}
