package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/image"
)

// Split returns p with split volumes: Create with CreateOptions.Split
// writes the image as NAME, NAME.002, NAME.003, ..., each at most Split
// bytes; Open, List and Remove take a split image as one. Volumes are
// plain byte ranges of the image (concatenated, they are the image a
// single file would hold), so nothing in the format changes and any
// Place can hold them.
//
// Every volume is committed as it fills, except the first, which is
// committed last: nothing carries the image's name until every volume is
// there, and Abort removes the volumes committed. An image replaced
// (Force) keeps all its volumes until the new one is complete: then every
// new volume is pending until Commit (a local directory holds one open
// file per volume meanwhile).
func Split(p Place) Place { return &splitPlace{p: p} }

type splitPlace struct{ p Place }

// Unwrap is the Place the volumes are kept in.
func (s *splitPlace) Unwrap() Place { return s.p }

func (s *splitPlace) String() string { return s.p.String() }

// VolumeName is the name of volume k (from 1) of the image called name
// (or at the path name): name, name.002, name.003, ...
func VolumeName(name string, k int) string { return volumeName(name, k) }

func volumeName(name string, k int) string {
	if k == 1 {
		return name
	}
	return fmt.Sprintf("%s.%03d", name, k)
}

// VolumeError says a volume of a split image is missing, is not where
// the image needs it, or is of another image. It answers
// errors.Is(err, image.ErrDamaged).
type VolumeError struct {
	Volume string // how messages name the volume: a path, or s3://...
	Msg    string
	Err    error // the cause, if any
}

func (e *VolumeError) Error() string {
	s := e.Volume + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *VolumeError) Unwrap() error        { return e.Err }
func (e *VolumeError) Is(target error) bool { return target == image.ErrDamaged }

// Open opens the image called name and every volume found beside it.
// Each volume but the last must be as long as the first (Create makes
// them so), the last at most as long, and the numbers must follow each
// other: a missing, truncated or oversized volume is a *VolumeError
// naming it. What a split cannot show by sizes alone (a volume of
// another image of the same volume size, volumes renamed into each
// other's place) the image's own checks find: see Volumes.
func (s *splitPlace) Open(ctx context.Context, name string) (Object, error) {
	first, err := s.p.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	vols := []Object{first}
	fail := func(err error) (Object, error) {
		for _, v := range vols {
			v.Close()
		}
		return nil, err
	}
	for k := 2; ; k++ {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		o, err := s.p.Open(ctx, volumeName(name, k))
		if errors.Is(err, ErrNotFound) {
			// The volumes end here, unless one after this is there.
			next, nerr := s.p.Open(ctx, volumeName(name, k+1))
			if nerr == nil {
				next.Close()
				return fail(&VolumeError{Volume: Path(s.p, volumeName(name, k)), Msg: fmt.Sprintf("volume %d of %s is missing (%s is there)", k, name, volumeName(name, k+1))})
			}
			break
		}
		if err != nil {
			return fail(err)
		}
		vols = append(vols, o)
	}
	if len(vols) == 1 {
		return first, nil
	}
	size := first.Size()
	for i, v := range vols {
		last := i == len(vols)-1
		switch {
		case size == 0:
			return fail(&VolumeError{Volume: first.Name(), Msg: "the first volume of a split image is empty"})
		case !last && v.Size() != size:
			return fail(&VolumeError{Volume: v.Name(), Msg: fmt.Sprintf("volume %d is %d bytes, not %d as every volume but the last (the size of the first): it is truncated, or of another image", i+1, v.Size(), size)})
		case last && (v.Size() == 0 || v.Size() > size):
			return fail(&VolumeError{Volume: v.Name(), Msg: fmt.Sprintf("volume %d, the last, is %d bytes: it must hold 1 to %d (the size of the first); it is of another image, or volumes were renamed", i+1, v.Size(), size)})
		}
	}
	o := &volumes{name: first.Name()}
	var off int64
	for _, v := range vols {
		o.vols = append(o.vols, Volume{Object: v, Off: off})
		off += v.Size()
	}
	o.size = off
	return o, nil
}

// Volume is one volume of a split image: an Object, at Off in the image.
type Volume struct {
	Object
	Off int64
}

// Volumes lists the volumes of an Object that Split opened, in order;
// nil for an image in one piece. A reader that knows the format checks
// that each holds its part of the image, and names the volume where it
// finds damage (the image offset is in [Off, Off+Size())).
func Volumes(o Object) []Volume {
	if v, ok := o.(*volumes); ok {
		return v.vols
	}
	return nil
}

// VolumeAt is the volume of o that holds image byte off; nil when o is
// not split or off is outside it.
func VolumeAt(o Object, off int64) *Volume {
	vols := Volumes(o)
	i := sort.Search(len(vols), func(i int) bool { return vols[i].Off+vols[i].Size() > off })
	if i == len(vols) || off < 0 {
		return nil
	}
	return &vols[i]
}

// volumes reads the concatenation of a split image's volumes.
type volumes struct {
	name string
	vols []Volume
	size int64
}

func (o *volumes) Size() int64  { return o.size }
func (o *volumes) Name() string { return o.name }

func (o *volumes) Close() error {
	var err error
	for _, v := range o.vols {
		err = errors.Join(err, v.Close())
	}
	return err
}

// ReadAt reads across volumes; it is as safe for parallel calls as the
// volumes' ReadAt. An error names the volume.
func (o *volumes) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", o.name, off)
	}
	n := 0
	for len(p) > 0 {
		v := VolumeAt(o, off)
		if v == nil {
			return n, io.EOF
		}
		rel := off - v.Off
		want := p[:min(int64(len(p)), v.Size()-rel)]
		k, err := v.ReadAt(want, rel)
		n, off, p = n+k, off+int64(k), p[k:]
		if k < len(want) {
			if err == nil || err == io.EOF {
				return n, &VolumeError{Volume: v.Name(), Msg: fmt.Sprintf("ends at byte %d, before its %d bytes (it was cut short while open)", rel+int64(k), v.Size()), Err: io.ErrUnexpectedEOF}
			}
			return n, fmt.Errorf("%s: %w", v.Name(), err)
		}
	}
	return n, nil
}

// Create writes the image called name: in one piece through the Place
// when opts.Split is 0, else in volumes. Either way the image takes the
// place of every volume of an image of that name before it (opts.Force),
// and without Force a volume left of one (NAME.002) counts as the image
// being there.
func (s *splitPlace) Create(ctx context.Context, name string, opts CreateOptions) (Sink, error) {
	if opts.Split < 0 {
		return nil, fmt.Errorf("store: volume size %d", opts.Split)
	}
	inner := CreateOptions{Force: opts.Force}
	first, err := s.p.Create(ctx, name, inner)
	if err != nil {
		return nil, err
	}
	if !opts.Force {
		if o, err := s.p.Open(ctx, volumeName(name, 2)); err == nil {
			o.Close()
			first.Abort()
			return nil, fmt.Errorf("%s is there, a volume of an image called %s: %w", Path(s.p, volumeName(name, 2)), name, ErrExists)
		}
	}
	ss := &splitSink{ctx: ctx, cleanup: context.WithoutCancel(ctx), p: s.p, name: name, opts: inner, limit: opts.Split, vols: []Sink{first}}
	if opts.Force {
		if o, err := s.p.Open(ctx, name); err == nil {
			o.Close()
			ss.hold = true
		}
	}
	if _, ok := first.(Rereader); !ok {
		// Volumes that cannot be read back before Commit (S3 uploads)
		// make an image that cannot either: no Reread for consolidate
		// to call, so it commits first and checks after.
		return sinkOnly{ss}, nil
	}
	return ss, nil
}

// sinkOnly is a splitSink without its Reread.
type sinkOnly struct{ s *splitSink }

func (o sinkOnly) Write(b []byte) (int, error) { return o.s.Write(b) }
func (o sinkOnly) Commit() error               { return o.s.Commit() }
func (o sinkOnly) Abort()                      { o.s.Abort() }
func (o sinkOnly) Name() string                { return o.s.Name() }

// splitSink writes volumes. A new image's volumes are committed as they
// fill, but the first, which is committed last; when an image is
// replaced, nothing is committed until every volume is written, so a
// failed write leaves the old image as it was.
type splitSink struct {
	ctx       context.Context
	cleanup   context.Context // ctx, not cancelled: for cleaning up after a cancelled write
	p         Place
	name      string
	opts      CreateOptions // for each volume: Force only
	limit     int64         // bytes per volume; 0: one piece
	vols      []Sink        // volume k is vols[k-1]; the last is being written
	n         int64         // bytes in the last
	committed int           // volumes 2..committed+1 are committed
	hold      bool          // replacing an image: commit nothing before Commit
	done      bool
	err       error
}

func (s *splitSink) Name() string { return s.vols[0].Name() }

func (s *splitSink) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.done {
		return 0, fmt.Errorf("%s: write after the image was finished", s.Name())
	}
	total := 0
	for len(b) > 0 {
		if s.limit > 0 && s.n == s.limit {
			if err := s.next(); err != nil {
				s.err = err
				return total, err
			}
		}
		part := b
		if s.limit > 0 {
			part = b[:min(int64(len(b)), s.limit-s.n)]
		}
		k, err := s.vols[len(s.vols)-1].Write(part)
		total, s.n, b = total+k, s.n+int64(k), b[k:]
		if err != nil {
			s.err = err
			return total, err
		}
	}
	return total, nil
}

// next ends the full volume and starts the next one. The volume ended is
// committed, unless it is the first or an image is being replaced; one
// held is flushed (Reread), so it holds no buffers meanwhile.
func (s *splitSink) next() error {
	k := len(s.vols)
	full := s.vols[k-1]
	if k > 1 && !s.hold {
		if err := full.Commit(); err != nil {
			return err
		}
		s.committed = k - 1
	} else if rr, ok := full.(Rereader); ok {
		o, err := rr.Reread()
		if err != nil {
			return err
		}
		o.Close()
	}
	sink, err := s.p.Create(s.ctx, volumeName(s.name, k+1), s.opts)
	if err != nil {
		return err
	}
	s.vols, s.n = append(s.vols, sink), 0
	return nil
}

// Reread reads every volume back (Rereader): those committed through the
// Place, the others from their Sinks, which must be Rereaders.
func (s *splitSink) Reread() (Object, error) {
	o := &volumes{name: s.Name()}
	for i, sink := range s.vols {
		var v Object
		var err error
		if i >= 1 && i <= s.committed {
			v, err = s.p.Open(s.ctx, volumeName(s.name, i+1))
		} else if rr, ok := sink.(Rereader); ok {
			v, err = rr.Reread()
		} else {
			err = fmt.Errorf("store: %s cannot be read back before it is committed", sink.Name())
		}
		if err != nil {
			o.Close()
			return nil, err
		}
		o.vols = append(o.vols, Volume{Object: v, Off: o.size})
		o.size += v.Size()
	}
	if len(o.vols) == 1 {
		return o.vols[0].Object, nil
	}
	return o, nil
}

// Commit commits the volumes after the first, removes volumes of an
// image replaced that the new one does not have, then commits the first.
func (s *splitSink) Commit() error {
	if s.err != nil {
		return s.err
	}
	if s.done {
		return nil
	}
	fail := func(err error) error {
		s.err = err
		return err
	}
	for i := s.committed + 1; i < len(s.vols); i++ {
		if err := s.vols[i].Commit(); err != nil {
			return fail(err)
		}
		s.committed = i
	}
	// Volumes after the new last one are of an image this one replaces
	// (or left of one): they would be read as part of it.
	after := volumeName(s.name, len(s.vols)+1)
	if o, err := s.p.Open(s.ctx, after); err == nil {
		o.Close()
		if !s.opts.Force {
			return fail(fmt.Errorf("%s is there, a volume of an image called %s: %w", Path(s.p, after), s.name, ErrExists))
		}
		if _, err := removeVolumes(s.ctx, s.p, s.name, len(s.vols)+1); err != nil {
			return fail(err)
		}
	}
	if err := s.vols[0].Commit(); err != nil {
		return fail(err)
	}
	s.done = true
	return nil
}

// removeVolumes removes volumes k, k+1, ... of the image called name,
// up to the first one missing (found by Open: a store may not tell
// whether Remove removed anything), and says how many it removed.
func removeVolumes(ctx context.Context, p Place, name string, k int) (int, error) {
	n := 0
	for ; ; k++ {
		o, err := p.Open(ctx, volumeName(name, k))
		if errors.Is(err, ErrNotFound) {
			return n, nil
		}
		if err == nil {
			o.Close()
		}
		if err := p.Remove(ctx, volumeName(name, k)); err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
		n++
	}
}

// Abort aborts the volumes not committed and removes those committed. An
// image this one was replacing is removed too if Commit failed after
// overwriting any of its volumes: what is left of it would not open.
func (s *splitSink) Abort() {
	if s.done {
		return
	}
	s.done = true
	for i, v := range s.vols {
		if i == 0 || i > s.committed {
			v.Abort()
		}
	}
	for k := 2; k < 2+s.committed; k++ {
		s.p.Remove(s.cleanup, volumeName(s.name, k))
	}
	if s.hold && s.committed > 0 {
		s.p.Remove(s.cleanup, s.name)
		removeVolumes(s.cleanup, s.p, s.name, 2+s.committed)
	}
}

// List lists the Place with each split image once, under its first
// volume's name, its size the sum of its volumes': NAME.002, NAME.003,
// ... as far as they follow each other, as Open finds them.
func (s *splitPlace) List(ctx context.Context) ([]Entry, error) {
	ents, err := s.p.List(ctx)
	if err != nil {
		return nil, err
	}
	at := map[string]int{}
	for i, e := range ents {
		at[e.Name] = i
	}
	folded := make([]bool, len(ents))
	for i := range ents {
		if folded[i] {
			continue
		}
		for k := 2; ; k++ {
			j, ok := at[volumeName(ents[i].Name, k)]
			if !ok || folded[j] {
				break
			}
			ents[i].Size += ents[j].Size
			folded[j] = true
		}
	}
	out := ents[:0:0]
	for i, e := range ents {
		if !folded[i] {
			out = append(out, e)
		}
	}
	return out, nil
}

// Remove removes the image's first volume (so it is no longer an image),
// then the others; volumes left without their first are removed too.
func (s *splitPlace) Remove(ctx context.Context, name string) error {
	err := s.p.Remove(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	n, verr := removeVolumes(ctx, s.p, name, 2)
	if verr != nil {
		return verr
	}
	if n > 0 {
		return nil // volumes were there: not "no such image"
	}
	return err
}

// Prefetch passes a prefetch on to the volumes that hold [off, off+n)
// and can take it.
func (o *volumes) Prefetch(off, n int64) {
	for n > 0 {
		v := VolumeAt(o, off)
		if v == nil {
			return
		}
		rel := off - v.Off
		k := min(n, v.Size()-rel)
		if p, ok := v.Object.(image.Prefetcher); ok {
			p.Prefetch(rel, k)
		}
		off, n = off+k, n-k
	}
}
