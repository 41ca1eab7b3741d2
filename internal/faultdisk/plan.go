package faultdisk

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Range is a byte range of the disk: Len bytes from byte Off.
type Range struct {
	Off, Len int64
}

// End is the byte after the range.
func (r Range) End() int64 { return r.Off + r.Len }

// overlaps says whether r shares a byte with [off, off+n).
func (r Range) overlaps(off, n int64) bool {
	return r.Len > 0 && n > 0 && r.Off < off+n && off < r.End()
}

// Stall is a range whose reads are answered only after Delay.
type Stall struct {
	Range
	Delay time.Duration
}

// Plan is what fails, and how, on the disk.
type Plan struct {
	// Bad ranges: a read request that overlaps one fails with EIO as a
	// whole, as a real disk fails a request covering a bad sector.
	Bad []Range
	// Stall ranges: a read request that overlaps one is answered (with
	// its data, or EIO if it is also bad) only after the longest Delay
	// among them.
	Stall []Stall
	// Vanished: every read and write fails with EIO at once, as on a
	// disk that dropped off the bus.
	Vanished bool
}

// fault is what a read of n bytes at off meets under p: how long it
// waits, and whether it then fails.
func (p *Plan) fault(off, n int64) (delay time.Duration, bad bool) {
	if p.Vanished {
		return 0, true
	}
	for _, s := range p.Stall {
		if s.overlaps(off, n) && s.Delay > delay {
			delay = s.Delay
		}
	}
	for _, b := range p.Bad {
		if b.overlaps(off, n) {
			return delay, true
		}
	}
	return delay, false
}

// clone copies p, so that a plan in use is never changed in place.
func (p *Plan) clone() *Plan {
	return &Plan{
		Bad:      append([]Range(nil), p.Bad...),
		Stall:    append([]Stall(nil), p.Stall...),
		Vanished: p.Vanished,
	}
}

// String is the plan in the language of the ctl file, one line each:
// writing it to ctl after "clear" sets the same plan.
func (p Plan) String() string {
	var b strings.Builder
	bad := append([]Range(nil), p.Bad...)
	sort.Slice(bad, func(i, j int) bool { return bad[i].Off < bad[j].Off })
	for _, r := range bad {
		fmt.Fprintf(&b, "bad %d %d\n", r.Off, r.Len)
	}
	for _, s := range p.Stall {
		fmt.Fprintf(&b, "stall %d %d %s\n", s.Off, s.Len, s.Delay)
	}
	if p.Vanished {
		b.WriteString("vanish\n")
	}
	return b.String()
}

// Apply changes the plan by one line of the ctl file's language:
//
//	bad OFF LEN               reads overlapping the range fail (EIO)
//	stall OFF LEN DURATION    reads overlapping the range wait DURATION (a Go duration, "1.5s")
//	clear                     no faults
//	vanish                    every read and write fails
//	return                    the disk is back (the other faults stay)
//
// OFF and LEN are bytes, decimal or 0x hex. A blank line or one starting
// with # changes nothing.
func (p *Plan) Apply(line string) error {
	f := strings.Fields(line)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return nil
	}
	want := map[string]int{"bad": 3, "stall": 4, "clear": 1, "vanish": 1, "return": 1}
	n, ok := want[f[0]]
	switch {
	case !ok:
		return fmt.Errorf("faultdisk: unknown command %q in %q (want bad, stall, clear, vanish or return)", f[0], line)
	case len(f) != n:
		return fmt.Errorf("faultdisk: %q: %s takes %d arguments", line, f[0], n-1)
	}
	var r Range
	if n >= 3 {
		var err error
		if r, err = parseRange(f[1], f[2]); err != nil {
			return fmt.Errorf("faultdisk: %q: %w", line, err)
		}
	}
	switch f[0] {
	case "bad":
		p.Bad = append(p.Bad, r)
	case "stall":
		d, err := time.ParseDuration(f[3])
		if err != nil || d < 0 {
			return fmt.Errorf("faultdisk: %q: bad duration %q", line, f[3])
		}
		p.Stall = append(p.Stall, Stall{r, d})
	case "clear":
		*p = Plan{}
	case "vanish":
		p.Vanished = true
	case "return":
		p.Vanished = false
	}
	return nil
}

func parseRange(off, n string) (Range, error) {
	o, err := strconv.ParseInt(off, 0, 64)
	if err != nil || o < 0 {
		return Range{}, fmt.Errorf("bad offset %q", off)
	}
	l, err := strconv.ParseInt(n, 0, 64)
	if err != nil || l <= 0 || o+l < o {
		return Range{}, fmt.Errorf("bad length %q", n)
	}
	return Range{o, l}, nil
}
