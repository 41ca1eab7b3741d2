package layout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
	// gptTail is a 512-byte-sector GPT's backup: 32 sectors of entries
	// and the header.
	gptTail = 33 * 512
)

// A Windows-like GPT disk: ESP, MSR, C: (NTFS), recovery, and a Linux
// data partition last.
func windowsDisk() Disk {
	return Disk{Size: 64 * gib, Reserved: gptTail, Parts: []Part{
		{Index: 1, Start: 1 * mib, Size: 100 * mib, Label: "partition 1 (vfat)", Fixed: true},
		{Index: 2, Start: 101 * mib, Size: 16 * mib, Label: "partition 2", Fixed: true},
		{Index: 3, Start: 117 * mib, Size: 40 * gib, Label: "partition 3 (ntfs)", Min: 12 * gib, CanGrow: true},
		{Index: 4, Start: 117*mib + 40*gib, Size: 600 * mib, Label: "partition 4 (ntfs)", Fixed: true},
		{Index: 5, Start: 717*mib + 40*gib, Size: 64*gib - gptTail - (717*mib + 40*gib) - 7*512, Label: "partition 5 (ext4)", Min: 2 * gib, CanGrow: true},
	}}
}

// check verifies what every plan must hold: partitions in order, aligned
// (all but the first, which keeps its start), not overlapping, inside the
// target's usable bytes, system partitions at their size, shrunk ones at
// least their minimum.
func check(t *testing.T, p *Plan, d Disk, tg Target) {
	t.Helper()
	end := int64(0)
	for i, m := range p.Moves {
		if i > 0 && m.NewStart%Align != 0 && m.NewStart != m.OldStart {
			t.Errorf("%s starts at %d, not 1 MiB aligned", m.Label, m.NewStart)
		}
		if m.NewStart < end+m.EBR {
			t.Errorf("%s starts at %d, inside the one before it (ends %d, EBR %d)", m.Label, m.NewStart, end, m.EBR)
		}
		end = m.NewStart + m.NewSize
		if end > tg.Size-tg.Reserved {
			t.Errorf("%s ends at %d, past the target's usable end %d", m.Label, end, tg.Size-tg.Reserved)
		}
		if m.fixed && m.NewSize != m.OldSize {
			t.Errorf("%s is a system partition, resized %d -> %d", m.Label, m.OldSize, m.NewSize)
		}
		if m.NewSize < m.OldSize && (!m.shrinkable || m.NewSize < m.min) {
			t.Errorf("%s shrunk to %d: shrinkable %v, min %d", m.Label, m.NewSize, m.shrinkable, m.min)
		}
		if (m.Resize == Shrink || m.Resize == Recreate) != (m.NewSize < m.OldSize) || (m.Resize == Enlarge) != (m.NewSize > m.OldSize && !m.Stuck) ||
			(m.Resize == Recreate) != (m.recreate && m.NewSize < m.OldSize) {
			t.Errorf("%s: resize %q for %d -> %d", m.Label, m.Resize, m.OldSize, m.NewSize)
		}
	}
	if len(p.Moves) != len(d.Parts) {
		t.Errorf("%d moves for %d partitions", len(p.Moves), len(d.Parts))
	}
}

func TestFitHalf(t *testing.T) {
	d := windowsDisk()
	tg := Target{Size: 32 * gib, Reserved: gptTail}
	p, err := Make(Fit, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	c, data := p.Of(3), p.Of(5)
	if c.Resize != Shrink || data.Resize != Shrink {
		t.Errorf("C: %q, data: %q; both must shrink", c.Resize, data.Resize)
	}
	if last := p.Moves[len(p.Moves)-1]; last.NewStart+last.NewSize < tg.Size-tg.Reserved-Align {
		t.Errorf("the last partition ends at %d, more than 1 MiB before the usable end %d", last.NewStart+last.NewSize, tg.Size-tg.Reserved)
	}
	if p.Of(1).NewStart != 1*mib || p.Of(2).NewStart != 101*mib {
		t.Errorf("the partitions before the first shrunk one moved: %+v", p.Moves[:2])
	}
}

func TestFitTooSmall(t *testing.T) {
	d := windowsDisk()
	_, err := Make(Fit, d, Target{Size: 12 * gib, Reserved: gptTail})
	var short *ShortError
	if !errors.As(err, &short) {
		t.Fatalf("err = %v, want a *ShortError", err)
	}
	// C: needs 12 GiB + 5 %, data 2 GiB + slack, and the system partitions.
	if short.Need < 14*gib+716*mib || short.Need > 15*gib+716*mib {
		t.Errorf("need %d bytes, want about 15 GiB", short.Need)
	}
	if !strings.Contains(err.Error(), "bytes too small") || !strings.Contains(err.Error(), "partition 4 (ntfs)") {
		t.Errorf("message %q does not say the shortfall and the partitions that keep their size", err)
	}
}

// A filesystem that cannot shrink (XFS: Min 0) keeps its size; the target
// is refused only if the rest cannot make room.
func TestFitUnshrinkable(t *testing.T) {
	d := Disk{Size: 20 * gib, Reserved: gptTail, Parts: []Part{
		{Index: 1, Start: mib, Size: 10 * gib, Label: "partition 1 (xfs)", CanGrow: true},
		{Index: 2, Start: mib + 10*gib, Size: 10*gib - 2*mib, Label: "partition 2 (ext4)", Min: gib, CanGrow: true},
	}}
	tg := Target{Size: 12 * gib, Reserved: gptTail}
	p, err := Make(Fit, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	if x := p.Of(1); x.NewSize != x.OldSize || x.Resize != NoResize {
		t.Errorf("XFS resized: %+v", *x)
	}
	_, err = Make(Fit, d, Target{Size: 10 * gib, Reserved: gptTail})
	if err == nil || !strings.Contains(err.Error(), "partition 1 (xfs)") {
		t.Errorf("err = %v, want a refusal naming the XFS partition", err)
	}
}

// An XFS marked Recreate (--recreate-xfs) shrinks as any filesystem with
// a minimum does, and its resize says it is recreated; with room to
// spare it keeps its size and is not recreated; grow grows it in place.
func TestFitRecreate(t *testing.T) {
	d := Disk{Size: 20 * gib, Reserved: gptTail, Parts: []Part{
		{Index: 1, Start: mib, Size: 10 * gib, Label: "partition 1 (xfs)", CanGrow: true, Recreate: true, Min: 2 * gib},
		{Index: 2, Start: mib + 10*gib, Size: 10*gib - 2*mib, Label: "partition 2 (ext4)", Min: gib, CanGrow: true},
	}}
	tg := Target{Size: 10 * gib, Reserved: gptTail}
	p, err := Make(Fit, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	if x := p.Of(1); x.Resize != Recreate || x.NewSize >= x.OldSize || x.NewSize < 2*gib {
		t.Errorf("XFS: %+v, want recreated smaller, at least its minimum", *x)
	}
	if e := p.Of(2); e.Resize != Shrink {
		t.Errorf("ext4: %+v, want shrunk", *e)
	}
	if _, err := Make(Fit, d, Target{Size: 3 * gib, Reserved: gptTail}); err == nil {
		t.Error("a target smaller than both minimums was not refused")
	}
	for _, mode := range []Mode{Fit, Grow} {
		tg := Target{Size: 40 * gib, Reserved: gptTail, Grow: 1}
		if mode == Fit {
			tg = Target{Size: 20 * gib, Reserved: gptTail}
		}
		p, err := Make(mode, d, tg)
		if err != nil {
			t.Fatal(err)
		}
		check(t, p, d, tg)
		if x := p.Of(1); x.Resize == Recreate {
			t.Errorf("%s onto %d bytes: XFS recreated: %+v", mode, tg.Size, *x)
		}
	}
}

func TestGrowLast(t *testing.T) {
	d := windowsDisk()
	tg := Target{Size: 128 * gib, Reserved: gptTail}
	p, err := Make(Grow, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	for _, m := range p.Moves[:4] {
		if m.NewStart != m.OldStart || m.NewSize != m.OldSize {
			t.Errorf("%s changed: %+v", m.Label, m)
		}
	}
	last := p.Of(5)
	if end := last.NewStart + last.NewSize; last.Resize != Enlarge || end > tg.Size-tg.Reserved || end <= tg.Size-tg.Reserved-Align {
		t.Errorf("the last partition ends at %d (resize %q), want the usable end aligned down", last.NewStart+last.NewSize, last.Resize)
	}
}

// --grow-partition 3: C: takes the new space, the partitions after it move
// to the end with their sizes.
func TestGrowMiddle(t *testing.T) {
	d := windowsDisk()
	tg := Target{Size: 128 * gib, Reserved: gptTail, Grow: 3}
	p, err := Make(Grow, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	c, rec, data := p.Of(3), p.Of(4), p.Of(5)
	if c.NewSize != c.OldSize+64*gib || c.Resize != Enlarge {
		t.Errorf("C: %d -> %d, want 64 GiB more", c.OldSize, c.NewSize)
	}
	if rec.NewSize != rec.OldSize || rec.NewStart != rec.OldStart+64*gib || data.NewSize != data.OldSize {
		t.Errorf("the partitions after C: %+v %+v", *rec, *data)
	}
	if _, err := Make(Grow, d, Target{Size: 128 * gib, Reserved: gptTail, Grow: 1}); err == nil {
		t.Error("growing the EFI system partition was accepted")
	}
	if _, err := Make(Grow, d, Target{Size: 128 * gib, Reserved: gptTail, Grow: 9}); err == nil {
		t.Error("--grow-partition 9 of a disk without it was accepted")
	}
	if _, err := Make(Grow, d, Target{Size: 32 * gib, Reserved: gptTail}); err == nil {
		t.Error("grow onto a smaller disk was accepted")
	}
}

// A filesystem that cannot grow (exFAT) gets a larger partition and stays.
func TestGrowStuck(t *testing.T) {
	d := Disk{Size: 8 * gib, Parts: []Part{{Index: 1, Start: mib, Size: 8*gib - mib, Label: "partition 1 (exfat)"}}}
	p, err := Make(Grow, d, Target{Size: 16 * gib})
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Of(1); !m.Stuck || m.Resize != NoResize || m.NewSize != 16*gib-mib {
		t.Errorf("exFAT: %+v, want a larger partition, Stuck, no resize", *m)
	}
}

// MBR logical partitions keep their EBR's distance, and the extended
// container wraps them.
func TestFitLogicals(t *testing.T) {
	d := Disk{Size: 16 * gib, Parts: []Part{
		{Index: 1, Start: mib, Size: 4 * gib, Label: "partition 1 (ext4)", Min: gib, CanGrow: true},
		{Index: 5, Start: 4*gib + 2*mib, Size: 4 * gib, Label: "partition 5 (ext4)", Min: gib, CanGrow: true, Logical: true, EBR: mib},
		{Index: 6, Start: 8*gib + 3*mib, Size: 8*gib - 3*mib, Label: "partition 6 (ext4)", Min: gib, CanGrow: true, Logical: true, EBR: mib},
	}}
	tg := Target{Size: 8 * gib}
	p, err := Make(Fit, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	l5, l6 := p.Of(5), p.Of(6)
	if p.ExtendedStart != l5.NewStart-mib || p.ExtendedStart+p.ExtendedSize != l6.NewStart+l6.NewSize {
		t.Errorf("extended container %d+%d around %+v %+v", p.ExtendedStart, p.ExtendedSize, *l5, *l6)
	}
	if p.ExtendedStart < p.Of(1).NewStart+p.Of(1).NewSize {
		t.Errorf("the extended container overlaps partition 1")
	}
}

// The MBR limit: nothing ends past 2^32 sectors.
func TestGrowMBRLimit(t *testing.T) {
	d := Disk{Size: 1 << 40, Parts: []Part{{Index: 1, Start: mib, Size: 1<<40 - mib, Label: "partition 1 (ext4)", CanGrow: true}}}
	tg := Target{Size: 4 << 40, Limit: 1 << 41}
	p, err := Make(Grow, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Of(1); m.NewStart+m.NewSize > 1<<41 {
		t.Errorf("the partition ends at %d, past the MBR's 2 TiB", m.NewStart+m.NewSize)
	}
}

// Random disks: every plan keeps the invariants, or fit refuses with a
// shortfall.
func TestRandomLayouts(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		var d Disk
		d.Reserved = gptTail
		at := mib
		for i := 1; i <= 1+rng.IntN(6); i++ {
			size := (1 + rng.Int64N(4096)) * mib
			p := Part{Index: i, Start: at, Size: size, Label: "p", CanGrow: rng.IntN(4) > 0}
			switch rng.IntN(4) {
			case 0:
				p.Fixed = true
			case 1: // cannot shrink
			default:
				p.Min = 1 + rng.Int64N(size)
			}
			d.Parts = append(d.Parts, p)
			at += size + rng.Int64N(3)*mib
		}
		d.Size = at + rng.Int64N(3)*mib + d.Reserved
		tg := Target{Size: d.Size/4 + rng.Int64N(2*d.Size), Reserved: gptTail}
		mode := Fit
		if tg.Size >= d.Size {
			mode = []Mode{Fit, Grow}[rng.IntN(2)]
		}
		p, err := Make(mode, d, tg)
		var short *ShortError
		if errors.As(err, &short) && mode == Fit && short.Need > tg.Size {
			continue
		}
		if err != nil && mode == Grow && strings.Contains(err.Error(), "only system partitions") {
			continue
		}
		if err != nil {
			t.Fatalf("disk %d (%s onto %d): %v", n, mode, tg.Size, err)
		}
		check(t, p, d, tg)
		if t.Failed() {
			t.Fatalf("disk %d: %+v onto %+v (%s)", n, d, tg, mode)
		}
	}
}

// Keep puts every partition where it was: onto a target that does not
// hold the last one, it is refused, naming it and the size needed; onto
// one that does, nothing moves.
func TestKeep(t *testing.T) {
	d := windowsDisk()
	_, err := Make(Keep, d, Target{Size: 32 * gib, Reserved: gptTail})
	if err == nil || !strings.Contains(err.Error(), "partition 3 (ntfs)") || !strings.Contains(err.Error(), "--layout fit") ||
		!strings.Contains(err.Error(), fmt.Sprintf("at least %d bytes", d.Parts[4].Start+d.Parts[4].Size+gptTail)) {
		t.Fatalf("keep onto half the disk: %v", err)
	}
	tg := Target{Size: 64 * gib, Reserved: gptTail}
	p, err := Make(Keep, d, tg)
	if err != nil {
		t.Fatal(err)
	}
	check(t, p, d, tg)
	for _, m := range p.Moves {
		if m.NewStart != m.OldStart || m.NewSize != m.OldSize {
			t.Errorf("%s moved: %+v", m.Label, m)
		}
	}
}
