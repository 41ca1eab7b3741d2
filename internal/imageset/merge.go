package imageset

import "github.com/platter-dev/platter/internal/image"

// MergeCost is what rewriting an image onto an older image of its chain
// (image.Fold, the merge of prune) writes.
type MergeCost struct {
	// Size is the image file's size now; Writes the new file's, an
	// estimate: its frames are counted exactly, the index, maps and
	// metadata are taken to stay the size they are (they differ by a few
	// KiB at most).
	Size, Writes int64
	// Frames is how many frames are copied in from the images between
	// the two (the rest are the image's own), and FrameBytes their bytes.
	Frames     int
	FrameBytes int64
}

// Grows is how much bigger the merged file will be than it is.
func (c MergeCost) Grows() int64 { return c.Writes - c.Size }

// Merge returns what image.Fold writes to rewrite child (its chain
// attached) onto newParent, one of its ancestors (nil: into a full
// image), without writing it (image.PlanFold).
func Merge(child, newParent *image.Reader) (MergeCost, error) {
	p, err := image.PlanFold(child, newParent)
	if err != nil {
		return MergeCost{}, err
	}
	size := child.Size()
	return MergeCost{Size: size, Writes: size - p.OwnBytes + p.FrameBytes, Frames: p.CopiedFrames, FrameBytes: p.CopiedBytes}, nil
}
