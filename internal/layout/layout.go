// Package layout decides where an image's partitions go on a target disk
// of another size: `restore --layout grow` (a larger disk: one partition
// takes the new space, the others keep their places) and `--layout fit`
// (a smaller disk: filesystems shrink toward what their data needs and
// partitions move down). It only plans, in bytes; the restore carries the
// plan out (the partition table written anew, filesystems resized).
package layout

import (
	"fmt"
	"slices"
	"strings"
)

// Mode is the --layout choice.
type Mode string

const (
	Keep Mode = "keep" // the source's layout, byte for byte (the default)
	Grow Mode = "grow" // onto a larger disk: one partition takes the new space
	Fit  Mode = "fit"  // onto a smaller disk: filesystems shrink, partitions move down
)

// ParseMode parses --layout.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Keep, Grow, Fit:
		return m, nil
	}
	return "", fmt.Errorf("unknown layout %q (want keep, grow or fit)", s)
}

// Align is where partitions start: 1 MiB, as every partitioning tool
// since 2010 aligns them (good for 4 KiB sectors, SSD pages and RAID
// stripes alike).
const Align = 1 << 20

// Part is one partition of the source disk.
type Part struct {
	Index       int
	Start, Size int64
	Label       string // how messages name it: "partition 2 (ext4)"
	// Min is the smallest size its filesystem can be shrunk to, data and
	// metadata (as the filesystem's own tool computes it); 0 when it
	// cannot shrink, so the partition keeps its size.
	Min int64
	// CanGrow says its filesystem can be grown to fill a larger partition.
	CanGrow bool
	// Recreate says its filesystem is made smaller by making a new one
	// and copying its files (XFS, which cannot shrink, with
	// --recreate-xfs), not by a resizer; Min is then what the copy needs.
	Recreate bool
	// Fixed partitions keep their size whatever the mode: EFI system,
	// Microsoft reserved, recovery and BIOS boot partitions.
	Fixed bool
	// Logical is an MBR logical partition; EBR is how many bytes before
	// its start its extended boot record sits.
	Logical bool
	EBR     int64
}

// Disk is the source disk as the plan needs it.
type Disk struct {
	Size int64
	// Reserved is how many bytes at the disk's end belong to the table
	// (the backup GPT: its entries and header), none for MBR.
	Reserved int64
	Parts    []Part
}

// Target is the disk to restore onto.
type Target struct {
	Size int64
	// Reserved as Disk.Reserved, in the target's sectors.
	Reserved int64
	// Limit is the furthest a partition may end, 0 for none: an MBR
	// counts sectors in 32 bits (2 TiB with 512-byte sectors).
	Limit int64
	// Grow is the partition --grow-partition names; 0 means the last.
	Grow int
}

// Resize says what happens to a partition's filesystem.
type Resize string

const (
	NoResize Resize = ""
	Shrink   Resize = "shrink"
	Enlarge  Resize = "grow"
	// Recreate is a smaller partition whose filesystem is made anew at
	// its size and its files copied in (Part.Recreate).
	Recreate Resize = "recreate"
)

// Move is one partition's place before and after.
type Move struct {
	Index             int
	Label             string
	OldStart, OldSize int64
	NewStart, NewSize int64
	Resize            Resize
	// Stuck is a partition made larger whose filesystem cannot grow: it
	// keeps its old size inside the larger partition.
	Stuck   bool
	Logical bool
	EBR     int64 // as Part.EBR

	shrinkable, fixed, canGrow, recreate bool
	min                                  int64
}

// Plan is where every partition goes.
type Plan struct {
	Mode  Mode
	Moves []Move // in the order of their start on the disk
	// Extended is the MBR extended container's new place; zero when
	// there is none.
	ExtendedStart, ExtendedSize int64
}

// ShortError is a target too small for the data.
type ShortError struct {
	Target, Need int64
	Why          string // which partitions cannot shrink, and why
}

func (e *ShortError) Error() string {
	return fmt.Sprintf("the target is %d bytes, %d bytes too small: the partitions need at least %d bytes (%s)", e.Target, e.Need-e.Target, e.Need, e.Why)
}

// Make plans disk's partitions onto t.
func Make(mode Mode, disk Disk, t Target) (*Plan, error) {
	if len(disk.Parts) == 0 {
		return nil, fmt.Errorf("the image holds no partition table to lay out anew: --layout %s needs a partitioned disk", mode)
	}
	parts := slices.Clone(disk.Parts)
	slices.SortFunc(parts, func(a, b Part) int { return int(a.Start - b.Start) })
	p := &Plan{Mode: mode}
	for _, s := range parts {
		p.Moves = append(p.Moves, Move{Index: s.Index, Label: s.Label, OldStart: s.Start, OldSize: s.Size, NewStart: s.Start, NewSize: s.Size,
			Logical: s.Logical, EBR: s.EBR, fixed: s.Fixed, canGrow: s.CanGrow && !s.Fixed, min: s.Min, recreate: s.Recreate,
			shrinkable: !s.Fixed && s.Min > 0 && s.Min < s.Size})
	}
	usableEnd := t.Size - t.Reserved
	if t.Limit > 0 {
		usableEnd = min(usableEnd, t.Limit)
	}
	switch mode {
	case Keep:
		// Every partition where it was: they must all lie on the target.
		var over *Move
		last := int64(0)
		for i := range p.Moves {
			m := &p.Moves[i]
			end := m.NewStart + m.NewSize
			if end > usableEnd && over == nil {
				over = m
			}
			last = max(last, end)
		}
		if over != nil {
			return nil, fmt.Errorf("the target is %d bytes: %s ends at byte %d, past the %d bytes the target holds for partitions; --layout keep needs a target of at least %d bytes (--layout fit moves partitions down)",
				t.Size, over.Label, over.NewStart+over.NewSize, usableEnd, last+(t.Size-usableEnd))
		}
		return p, nil
	case Grow:
		if err := p.grow(disk, t, usableEnd); err != nil {
			return nil, err
		}
	case Fit:
		if err := p.fit(usableEnd, t.Size); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown layout %q", mode)
	}
	p.extended()
	return p, nil
}

// grow keeps every partition's place up to the one that grows; that one
// takes the new space and those after it move to the end with it, their
// sizes and gaps kept.
func (p *Plan) grow(disk Disk, t Target, usableEnd int64) error {
	if usableEnd < disk.Size-disk.Reserved {
		return fmt.Errorf("the target (%d bytes) is smaller than the source disk (%d bytes): --layout grow needs a larger one; --layout fit restores onto a smaller disk", t.Size, disk.Size)
	}
	g := p.taker()
	if t.Grow != 0 {
		g = slices.IndexFunc(p.Moves, func(m Move) bool { return m.Index == t.Grow })
		if g < 0 {
			return fmt.Errorf("--grow-partition %d: the image holds no partition %d", t.Grow, t.Grow)
		}
	}
	if g < 0 || p.Moves[g].fixed {
		what := "the disk has only system partitions"
		if g >= 0 {
			what = p.Moves[g].Label + " is a system partition (EFI, reserved, recovery or BIOS boot) whose size is kept; name another"
		}
		return fmt.Errorf("--layout grow: %s", what)
	}
	p.absorb(g, usableEnd)
	p.resizes()
	return nil
}

// taker is the partition that takes a larger disk's new space: the last
// one that is not a system partition (Windows puts its recovery partition
// last); -1 if there is none.
func (p *Plan) taker() int {
	for i := len(p.Moves) - 1; i >= 0; i-- {
		if !p.Moves[i].fixed {
			return i
		}
	}
	return -1
}

// absorb gives partition g the room between the last partition's end and
// usableEnd: it grows by that much, aligned, and the partitions after it
// move up with their sizes and gaps kept. The last partition ends as
// close to usableEnd as alignment allows.
func (p *Plan) absorb(g int, usableEnd int64) {
	last := &p.Moves[len(p.Moves)-1]
	room := usableEnd - (last.NewStart + last.NewSize)
	if g == len(p.Moves)-1 {
		// Not only by whole MiBs: up to the last aligned byte.
		last.NewSize = max(last.NewSize, alignDown(usableEnd-last.NewStart))
		return
	}
	room = alignDown(room)
	if room <= 0 {
		return
	}
	p.Moves[g].NewSize += room
	for i := g + 1; i < len(p.Moves); i++ {
		p.Moves[i].NewStart += room
	}
}

// fit packs the partitions from the first one's start, each at least the
// size its filesystem can shrink to, and shares what is left among them in
// proportion to what each could give up; the last takes the rest.
func (p *Plan) fit(usableEnd, targetSize int64) error {
	type need struct{ min, give int64 }
	needs := make([]need, len(p.Moves))
	var sumGive int64
	for i, m := range p.Moves {
		n := need{min: m.OldSize}
		if m.shrinkable {
			n.min = min(m.OldSize, alignUp(m.min+slack(m.min)))
			n.give = m.OldSize - n.min
		}
		needs[i] = n
		sumGive += n.give
	}
	// place lays the partitions out with sizes size(i) and returns where
	// the last one ends.
	place := func(size func(i int) int64) int64 {
		end := int64(0)
		for i := range p.Moves {
			m := &p.Moves[i]
			if i == 0 {
				m.NewStart = m.OldStart
			} else {
				// Keep an EBR's distance from its logical partition and
				// at least the alignment between partitions.
				m.NewStart = alignUp(end + max(m.EBR, 0))
			}
			m.NewSize = size(i)
			end = m.NewStart + m.NewSize
		}
		return end
	}
	need0 := place(func(i int) int64 { return needs[i].min })
	if need0 > usableEnd {
		var fixed []string
		for _, m := range p.Moves {
			if !m.shrinkable {
				fixed = append(fixed, m.Label)
			}
		}
		why := "every filesystem shrunk as far as its tool allows"
		if len(fixed) > 0 {
			why += "; these keep their size: " + strings.Join(fixed, ", ")
		}
		return &ShortError{Target: targetSize, Need: need0 + (targetSize - usableEnd), Why: why}
	}
	// Share the room left among the partitions that could give space,
	// in proportion, so each keeps as much of its free space as fits.
	room := usableEnd - need0
	if sumGive > 0 {
		spread := func(i int) int64 {
			n := needs[i]
			if n.give == 0 {
				return n.min
			}
			extra := int64(float64(room) * float64(n.give) / float64(sumGive))
			return min(n.min+alignDown(min(extra, n.give)), p.Moves[i].OldSize)
		}
		place(spread)
	}
	// The last partition that may grow takes what is left.
	if g := p.taker(); g >= 0 {
		p.absorb(g, usableEnd)
	}
	p.resizes()
	return nil
}

// resizes marks each move's filesystem resize: a partition made larger
// whose filesystem cannot grow is Stuck, its filesystem keeping its size.
func (p *Plan) resizes() {
	for i := range p.Moves {
		m := &p.Moves[i]
		switch {
		case m.NewSize < m.OldSize && m.recreate:
			m.Resize = Recreate
		case m.NewSize < m.OldSize:
			m.Resize = Shrink
		case m.NewSize > m.OldSize && m.canGrow:
			m.Resize = Enlarge
		case m.NewSize > m.OldSize:
			m.Stuck = true
		}
	}
}

// extended places an MBR extended container around its logical
// partitions: from the first one's EBR to the last one's end.
func (p *Plan) extended() {
	for _, m := range p.Moves {
		if !m.Logical {
			continue
		}
		start := m.NewStart - m.EBR
		if p.ExtendedSize == 0 || start < p.ExtendedStart {
			if p.ExtendedSize != 0 {
				p.ExtendedSize += p.ExtendedStart - start
			}
			p.ExtendedStart = start
		}
		p.ExtendedSize = max(p.ExtendedSize, m.NewStart+m.NewSize-p.ExtendedStart)
	}
}

// slack is the free space a shrunk filesystem keeps beyond its minimum:
// a twentieth, at least 16 MiB, so the system that boots from it can
// still write its logs and updates.
func slack(minSize int64) int64 { return max(minSize/20, 16<<20) }

func alignUp(n int64) int64   { return (n + Align - 1) / Align * Align }
func alignDown(n int64) int64 { return n / Align * Align }

// Changed says whether the plan moves or resizes anything.
func (p *Plan) Changed() bool {
	for _, m := range p.Moves {
		if m.NewStart != m.OldStart || m.NewSize != m.OldSize {
			return true
		}
	}
	return false
}

// Of returns the move of partition index, nil if none.
func (p *Plan) Of(index int) *Move {
	for i := range p.Moves {
		if p.Moves[i].Index == index {
			return &p.Moves[i]
		}
	}
	return nil
}
