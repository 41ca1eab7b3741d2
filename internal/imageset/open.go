package imageset

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/store"
)

// Open opens the image called name in p, unlocked with keys if it is
// encrypted, and checks it as image.Open does (header, footer, index,
// maps, metadata) and, when it is split,
// that each volume holds its own part of this image: a missing,
// truncated, reordered or foreign volume is a *store.VolumeError naming
// it (image.ErrDamaged). The caller closes both.
func Open(ctx context.Context, p store.Place, name string, keys image.Keyring) (store.Object, *image.Reader, error) {
	o, err := p.Open(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	r, err := image.Open(o, o.Size(), keys)
	if err != nil {
		o.Close()
		return nil, nil, fmt.Errorf("%s: %w", o.Name(), inVolume(o, err))
	}
	r.SetName(o.Name())
	if err := checkVolumes(ctx, o, r); err != nil {
		r.Close()
		o.Close()
		return nil, nil, err
	}
	return o, r, nil
}

// inVolume names the volume of a split image where image.NewReader found
// damage.
func inVolume(o store.Object, err error) error {
	vols := store.Volumes(o)
	if vols == nil {
		return err
	}
	if errors.Is(err, image.ErrNotImage) {
		// Damage, not a file named by mistake: the error is not wrapped
		// (ErrNotImage is a usage mistake, exit 2).
		return &store.VolumeError{Volume: vols[0].Name(), Msg: "the first volume of a split image does not start with a Platter header: volumes were renamed, or it is not the first"}
	}
	var fe *image.FormatError
	if !errors.As(err, &fe) {
		return err
	}
	v := store.VolumeAt(o, fe.Off)
	if v == nil {
		v = &vols[len(vols)-1]
	}
	msg := fmt.Sprintf("volume %d of %d holds image byte %d, where the image is damaged: a volume is of another image, truncated or missing, or volumes were renamed", index(vols, v)+1, len(vols), fe.Off)
	if v.Off == vols[len(vols)-1].Off {
		msg = fmt.Sprintf("the last volume found (%d) does not end the image: it is truncated or of another image than %s, or the volume after it (%s) is missing", len(vols), vols[0].Name(), store.VolumeName(vols[0].Name(), len(vols)+1))
	}
	return &store.VolumeError{Volume: v.Name(), Msg: msg, Err: err}
}

func index(vols []store.Volume, v *store.Volume) int {
	for i := range vols {
		if vols[i].Off == v.Off {
			return i
		}
	}
	return -1
}

// probes is how many frames of a volume are read before it is taken to
// be of another image: one damaged chunk is damage to that chunk, not a
// foreign volume.
const probes = 3

// checkVolumes reads, for each volume after the first, up to three frames
// that lie in it (whole if it has such frames, else partly) and checks
// them against the index: a volume of another image, or one renamed into
// another's place, holds other bytes there, so none of them reads; one
// that reads proves the volume. The first volume is the one whose header
// id the footer (in the last) repeats, and the index, maps and metadata
// are checked whole by image.Open.
func checkVolumes(ctx context.Context, o store.Object, r *image.Reader) error {
	vols := store.Volumes(o)
	if len(vols) < 2 {
		return nil
	}
	var frames []image.Entry
	seen := map[int64]bool{}
	for _, e := range r.Entries() {
		if e.Zero() || e.InParent() || seen[e.FrameOff] {
			continue
		}
		seen[e.FrameOff] = true
		frames = append(frames, e)
	}
	sort.Slice(frames, func(i, j int) bool { return frames[i].FrameOff < frames[j].FrameOff })
	end := func(e image.Entry) int64 { return e.FrameOff + r.FrameSize(e) }
	var buf []byte
	for i, v := range vols[1:] {
		if err := ctx.Err(); err != nil {
			return err
		}
		vEnd := v.Off + v.Size()
		// Frames that touch v: whole in it first, then those that run
		// out of it, then those that run into it or across it. Frames
		// do not overlap, so their ends are in order too.
		var inside, out, in []image.Entry
		j := sort.Search(len(frames), func(j int) bool { return end(frames[j]) > v.Off })
		for ; j < len(frames) && frames[j].FrameOff < vEnd; j++ {
			switch e := frames[j]; {
			case e.FrameOff >= v.Off && end(e) <= vEnd:
				inside = append(inside, e)
			case e.FrameOff >= v.Off:
				out = append(out, e)
			default:
				in = append(in, e)
			}
		}
		try := append(append(inside, out...), in...)
		if len(try) == 0 {
			continue // only index, maps and metadata: checked already
		}
		try = try[:min(len(try), probes)]
		var firstErr error
		for _, e := range try {
			var err error
			if e.Delta() {
				// Its base is in a parent, not found yet: the frame's
				// own checks prove the volume.
				err = r.CheckFrame(e)
			} else {
				buf, err = r.ReadChunk(e, buf[:0])
			}
			if err == nil {
				firstErr = nil
				break
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if firstErr != nil {
			which := fmt.Sprintf("volume %d of %d", i+2, len(vols))
			if len(inside) < len(try) {
				which += " (or one beside it: the frames read run across volumes)"
			}
			return &store.VolumeError{Volume: v.Name(), Msg: which + " does not hold this image's bytes (it is of another image, or volumes were renamed)", Err: firstErr}
		}
	}
	return nil
}
