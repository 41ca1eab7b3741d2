package resize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/platter-dev/platter/internal/view"
)

// Scratch is a copy-on-write overlay over a disk, for shrinking its
// filesystems without writing the disk: writes go to a sparse file that
// is made private (mode 0600, in a directory of mode 0700) and unlinked
// at once, so it is gone when Close closes it, or when the process ends
// in any way, Ctrl-C and SIGKILL included.
type Scratch struct {
	*view.Overlay
}

// NewScratch makes an overlay over base in a new directory below dir
// ("" for the system's temporary directory). The space its writes take
// is on dir's filesystem until Close.
func NewScratch(dir string, base view.Device) (*Scratch, error) {
	tmp, err := os.MkdirTemp(dir, "platter-scratch-")
	if err != nil {
		return nil, fmt.Errorf("resize: scratch overlay: %w", err)
	}
	p := filepath.Join(tmp, "overlay")
	o, err := view.OpenOverlay(p, base)
	// The open file is all the overlay needs.
	rerr := errors.Join(os.Remove(p), os.Remove(tmp))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("resize: scratch overlay: %w", err)
	}
	if rerr != nil {
		o.Close()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("resize: scratch overlay: %w", rerr)
	}
	return &Scratch{Overlay: o}, nil
}

// Section is bytes [off, off+size) of the overlay as a Device: one
// partition, for a Window.
func (s *Scratch) Section(off, size int64) *view.OverlaySection {
	return &view.OverlaySection{Section: view.Section{Dev: s.Overlay, Off: off, Len: size}, O: s.Overlay}
}
