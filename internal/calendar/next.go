package calendar

import (
	"time"
)

// maxIterations bounds the search, as systemd bounds its own: an
// expression that never elapses ends in the year limit long before.
const maxIterations = 1000

// maxSearchStart is far beyond maxYear: a later start finds nothing.
const maxSearchStart = 1 << 40 // seconds since 1970, about year 36812

// Next is the first elapse strictly after t (the zero Time if there is none, as for a date in the past).
// Times are computed in the expression's time zone when it names one, else in t's Location.
func (s *Spec) Next(t time.Time) time.Time {
	c := &clock{loc: t.Location()}
	switch {
	case s.utc:
		c.utc, c.loc = true, time.UTC
	case s.loc != nil:
		c.loc = s.loc
	}
	sec := t.Unix()
	if sec >= maxSearchStart {
		return time.Time{}
	}
	us := int64(t.Nanosecond() / 1000)
	if sec < 0 {
		sec, us = -1, usecPerSec-1 // elapses come no earlier than 1970
	}
	// systemd searches from the next microsecond on.
	us++
	if us == usecPerSec {
		sec, us = sec+1, 0
	}
	x := c.convert(sec)
	_, off := time.Unix(sec, 0).In(c.loc).Zone()
	c.off = -int64(off)
	frac := int(us)
	if !s.find(c, &x, &frac) {
		return time.Time{}
	}
	r, ok := c.mktime(&x)
	if !ok || r < 0 {
		return time.Time{}
	}
	return time.Unix(r, int64(frac)*1000).In(c.loc)
}

// tm is C's struct tm, with the full year and month 0-11; fields may be
// out of range until mktime normalizes them.
type tm struct {
	year, mon, mday, hour, min, sec int
	isdst                           int // 1 summer time, 0 not, -1 unknown
	wday                            int // 0 Sunday
}

// find is systemd's find_next (as of 252.39, the judge in the tests): it moves x (and usec, the microseconds
// within x's second) forward, field by field from the year down, to the
// first time every field matches. Fields are set out of range and left
// to mktime to carry, as systemd does, so that a day or an hour that the
// clock skips is treated the same way.
func (s *Spec) find(c *clock, x *tm, usec *int) bool {
	t := *x
	u := *usec
	keepDST := false
	for range maxIterations {
		c.mktime(&t) // a failure leaves t as it was; the checks below see it
		if !keepDST {
			t.isdst = -1
		}

		r := c.match(s.year, false, &t, &t.year)
		if r > 0 {
			t.mon, t.mday, t.hour, t.min, t.sec, u = 0, 1, 0, 0, 0, 0
		}
		if r < 0 || c.withinBounds(&t) <= 0 {
			return false
		}

		t.mon++
		r = c.match(s.month, false, &t, &t.mon)
		t.mon--
		if r > 0 {
			t.mday, t.hour, t.min, t.sec, u = 1, 0, 0, 0, 0
		}
		if r >= 0 {
			r = c.withinBounds(&t)
		}
		if r < 0 {
			t.year++
			t.mon, t.mday, t.hour, t.min, t.sec, u = 0, 1, 0, 0, 0, 0
			continue
		}
		if r == 0 {
			continue
		}

		r = c.match(s.day, s.endOfMonth, &t, &t.mday)
		if r > 0 {
			t.hour, t.min, t.sec, u = 0, 0, 0, 0
		}
		if r >= 0 {
			r = c.withinBounds(&t)
		}
		if r < 0 {
			t.mon++
			t.mday, t.hour, t.min, t.sec, u = 1, 0, 0, 0, 0
			continue
		}
		if r == 0 {
			continue
		}

		if !c.matchesWeekday(s.weekdays, &t) {
			t.mday++
			t.hour, t.min, t.sec, u = 0, 0, 0, 0
			continue
		}

		r = c.match(s.hour, false, &t, &t.hour)
		if r > 0 {
			t.min, t.sec, u = 0, 0, 0
		}
		if r >= 0 {
			r = c.withinBounds(&t)
		}
		if r < 0 {
			t.mday++
			t.hour, t.min, t.sec, u = 0, 0, 0, 0
			continue
		}
		if r == 0 {
			continue // the hour may not exist today (a clock change): start again from where it went
		}

		r = c.match(s.minute, false, &t, &t.min)
		if r > 0 {
			t.sec, u = 0, 0
		}
		if r >= 0 {
			r = c.withinBounds(&t)
		}
		if r < 0 {
			t.hour++
			t.min, t.sec, u = 0, 0, 0
			continue
		}
		if r == 0 {
			continue
		}

		v := t.sec*usecPerSec + u
		r = c.match(s.second, false, &t, &v)
		u = v % usecPerSec
		t.sec = v / usecPerSec
		if r >= 0 {
			r = c.withinBounds(&t)
		}
		if r < 0 {
			t.min++
			t.sec, u = 0, 0
			continue
		}
		if r == 0 {
			continue
		}

		// Not past the start on the wall clock (mktime resolved a time
		// the clock skipped to one before it): move an hour on and let
		// mktime's reading of summer time stand from now on.
		d := cmpFields(x, &t)
		if d == 0 {
			d = cmpInt(*usec, u+1)
		}
		if d >= 0 {
			keepDST = true
			t.hour++
			continue
		}

		*x = t
		*usec = u
		return true
	}
	return false
}

// match sets *val to the earliest value of chain at or after it: 1 if
// that changed *val, 0 if *val matched, -1 if no value is left (the
// caller moves the next larger field on). A nil chain matches anything.
func (c *clock) match(chain []component, endOfMonth bool, t *tm, val *int) int {
	if len(chain) == 0 {
		return 0
	}
	d, found := -1, false
	for _, x := range chain {
		start, stop := x.start, x.stop
		if endOfMonth {
			start = c.endOfMonth(t, x.start)
			stop = c.endOfMonth(t, x.stop)
			if stop > 0 {
				start, stop = stop, start
			}
		}
		if start >= *val {
			if !found || start < d {
				d, found = start, true
			}
		} else if x.repeat > 0 {
			k := start + x.repeat*((*val-start+x.repeat-1)/x.repeat)
			if (!found || k < d) && (stop < 0 || k <= stop) {
				d, found = k, true
			}
		}
	}
	if !found {
		return -1
	}
	r := 0
	if *val != d {
		r = 1
	}
	*val = d
	return r
}

// endOfMonth is the day of t's month that is day-1 days before its last,
// or -1 when there is none.
func (c *clock) endOfMonth(t *tm, day int) int {
	e := *t
	e.mon++
	e.mday = 1 - day
	if _, ok := c.mktime(&e); !ok || e.mon != t.mon {
		return -1
	}
	return e.mday
}

// withinBounds normalizes x: 1 if it was a real time already, 0 if it
// was carried forward (x is then the start of the field that changed:
// March 33 becomes April 1, not 2), -1 if it went backward or past
// maxYear.
func (c *clock) withinBounds(x *tm) int {
	if x.year > maxYear {
		return -1
	}
	t := *x
	if _, ok := c.mktime(&t); !ok {
		return -1
	}
	var d int
	switch {
	case t.year != x.year:
		d = cmpInt(t.year, x.year)
		t.mon = 0
	case t.mon != x.mon:
		d = cmpInt(t.mon, x.mon)
		t.mday = 1
	case t.mday != x.mday:
		d = cmpInt(t.mday, x.mday)
		t.hour = 0
	case t.hour != x.hour:
		d = cmpInt(t.hour, x.hour)
		t.min = 0
	case t.min != x.min:
		d = cmpInt(t.min, x.min)
		t.sec = 0
	default:
		d = cmpInt(t.sec, x.sec)
	}
	switch {
	case d < 0:
		return -1
	case d > 0:
		*x = t
		return 0
	}
	return 1
}

// cmpFields compares two normalized times field by field, as wall-clock
// readings.
func cmpFields(a, b *tm) int {
	for _, f := range [][2]int{{a.year, b.year}, {a.mon, b.mon}, {a.mday, b.mday}, {a.hour, b.hour}, {a.min, b.min}, {a.sec, b.sec}} {
		if d := cmpInt(f[0], f[1]); d != 0 {
			return d
		}
	}
	return 0
}

func (c *clock) matchesWeekday(bits int, x *tm) bool {
	if bits < 0 || bits >= allWeekdays {
		return true
	}
	t := *x
	if _, ok := c.mktime(&t); !ok {
		return false
	}
	k := t.wday - 1
	if t.wday == 0 {
		k = 6
	}
	return bits&(1<<k) != 0
}

// clock converts between instants and wall-clock fields in one zone the
// way C's localtime and mktime (glibc's) do, since systemd's search
// depends on how mktime resolves a time the clock skips or repeats:
// mktime starts from the offset it found last time (off) and probes.
type clock struct {
	loc *time.Location
	utc bool  // timegm: no zone at all
	off int64 // the last conversion's instant minus its wall clock, in seconds
}

// convert is localtime (or gmtime).
func (c *clock) convert(t int64) tm {
	tt := time.Unix(t, 0).In(c.loc)
	x := tm{year: tt.Year(), mon: int(tt.Month()) - 1, mday: tt.Day(),
		hour: tt.Hour(), min: tt.Minute(), sec: tt.Second(), wday: int(tt.Weekday())}
	if !c.utc && tt.IsDST() {
		x.isdst = 1
	}
	return x
}

// wall is the fields read as UTC, in seconds since 1970, carrying any
// field out of its range into the next (as mktime does).
func wall(year, mon, mday, hour, min, sec int) int64 {
	return time.Date(year, time.Month(1), 1, 0, 0, 0, 0, time.UTC).AddDate(0, mon, 0).Unix() +
		int64(mday-1)*86400 + int64(hour)*3600 + int64(min)*60 + int64(sec)
}

// mktime normalizes x and returns its instant, as glibc's mktime (or
// timegm), including its choice for a time that does not exist (the
// clock skipped it: the summer-time reading, an hour later) or exists
// twice (the one nearest the offset of the previous call).
func (c *clock) mktime(x *tm) (int64, bool) {
	if c.utc {
		t := wall(x.year, x.mon, x.mday, x.hour, x.min, x.sec)
		*x = c.convert(t)
		return t, true
	}
	// Seconds beyond 0..59 are added at the end (glibc's room for leap seconds).
	sec := min(max(x.sec, 0), 59)
	want := wall(x.year, x.mon, x.mday, x.hour, x.min, sec)
	isdst := x.isdst
	t0 := want + c.off
	t, t1, t2 := t0, t0, t0
	dst2 := false
	var got tm
	found := false
	for probes := 6; ; {
		got = c.convert(t)
		dt := want - wall(got.year, got.mon, got.mday, got.hour, got.min, got.sec)
		if dt == 0 {
			break
		}
		if t == t1 && t != t2 {
			// Oscillating around a skipped time: take one side,
			// the summer time one when no isdst was asked for.
			if isdst < 0 && b2i(dst2) <= got.isdst || isdst >= 0 && (isdst != 0) != (got.isdst != 0) {
				found = true
				break
			}
		}
		probes--
		if probes == 0 {
			return 0, false
		}
		t1, t2, t = t2, t, t+dt
		dst2 = got.isdst != 0
	}
	if !found && isdst >= 0 && (isdst != 0) != (got.isdst != 0) {
		// The right time with the wrong isdst: use the offset of a
		// neighboring time with the isdst asked for.
		const stride, durationMax = 601200, 536454000
		ok := false
	search:
		for delta := int64(stride); delta < durationMax/2+stride; delta += stride {
			for _, dir := range []int64{-1, 1} {
				ot := t + delta*dir
				o := c.convert(ot)
				if (isdst != 0) == (o.isdst != 0) {
					gt := ot + want - wall(o.year, o.mon, o.mday, o.hour, o.min, o.sec)
					t, got, ok = gt, c.convert(gt), true
					break search
				}
			}
		}
		if !ok {
			dstDifference := b2i(isdst == 0) - b2i(got.isdst == 0)
			t += 3600 * int64(dstDifference)
			got = c.convert(t)
		}
	}
	c.off = t - want
	if x.sec != sec {
		t += int64(x.sec - sec)
		got = c.convert(t)
	}
	*x = got
	return t, true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
