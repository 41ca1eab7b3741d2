package plan

import (
	"fmt"
	"time"
)

// Point is an image of the plan's set as a run sees it.
type Point struct {
	Name    string
	Kind    Kind
	Created time.Time
	// Broken says why no image can be made on this one ("" when one
	// can): it or an image of its chain is missing or damaged.
	Broken string
}

// Decision is what a run at a time does.
type Decision struct {
	// Due is false when nothing is due; Next is then when something is.
	Due  bool
	Next time.Time
	// Kind is the kind of image to make; Scheduled the kind the schedule
	// asked for, when a full image is made instead, and Why says why.
	Kind      Kind
	Scheduled Kind
	Why       string
	// Parent is the image to make it on: nil for a full image.
	Parent *Point
}

// Made is an image a run made: it counts for the schedule after prune
// deleted it (else a differential merged away by prune would make the
// next run a differential again).
type Made struct {
	Kind Kind
	At   time.Time
}

// Due decides what is due at now, given the set's images oldest first
// and the images the plan's runs made (their records). A kind is due
// when no image stands for it (a full image stands for every kind, a
// differential for an incremental) or its schedule elapsed since the
// newest such image was made; the largest kind due is made. A differential or incremental that has no
// sound image to be made on becomes a full image.
func (p *Plan) Due(now time.Time, set []Point, made []Made) Decision {
	var d Decision
	for _, k := range Kinds {
		spec := p.specs[k]
		if spec == nil {
			continue
		}
		var last time.Time
		if n := newest(set, k); n != nil {
			last = n.Created
		}
		for _, m := range made {
			if m.Kind >= k && m.At.After(last) {
				last = m.At
			}
		}
		if last.IsZero() {
			d.Due, d.Kind = true, k
			continue
		}
		next := spec.Next(last)
		if next.IsZero() {
			continue // the schedule elapses no more
		}
		if !next.After(now) {
			d.Due, d.Kind = true, k
			continue
		}
		if d.Next.IsZero() || next.Before(d.Next) {
			d.Next = next
		}
	}
	if !d.Due {
		return d
	}
	d.Next = time.Time{}
	d.Scheduled = d.Kind
	switch d.Kind {
	case Differential:
		d.Parent = newest(set, Full)
		if d.Parent == nil {
			d.Kind, d.Why = Full, "a differential is due, and the set has no full image to make it on"
		}
	case Incremental:
		d.Parent = newest(set, Incremental)
		if d.Parent == nil {
			d.Kind, d.Why = Full, "an incremental is due, and the set has no image to make it on"
		}
	}
	if d.Parent != nil && d.Parent.Broken != "" {
		d.Kind, d.Why = Full, fmt.Sprintf("%s %s is due, and the chain it would be made on is broken (%s: %s)", article(d.Scheduled), d.Scheduled, d.Parent.Name, d.Parent.Broken)
		d.Parent = nil
	}
	return d
}

// newest is the newest image of the set that stands for kind k.
func newest(set []Point, k Kind) *Point {
	var n *Point
	for i := range set {
		if set[i].Kind >= k && (n == nil || !set[i].Created.Before(n.Created)) {
			n = &set[i]
		}
	}
	return n
}

func article(k Kind) string {
	if k == Incremental {
		return "an"
	}
	return "a"
}
