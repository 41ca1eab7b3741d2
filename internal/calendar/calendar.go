// Package calendar parses systemd calendar expressions (OnCalendar=, see
// systemd.time(7), "CALENDAR EVENTS") and finds when they elapse, so a
// backup plan's schedule means exactly what the same line means to a
// systemd timer. The tests judge it with systemd-analyze calendar
// (systemd 252): the same expressions accepted and refused, the same
// normalized form, the same elapses.
//
// The grammar supported:
//
//	minutely hourly daily weekly monthly yearly annually anually
//	quarterly semiannually semi-annually biannually bi-annually  (any case)
//	[WEEKDAYS] [DATE] [TIME] [TIMEZONE]
//	[WEEKDAYS] @EPOCH [TIMEZONE]          (seconds since 1970; that one instant)
//
// WEEKDAYS is a comma-separated list of names (Mon or Monday, any case)
// and ranges (Mon..Fri, or Mon-Fri); a trailing comma is allowed. DATE is
// YEAR-MONTH-DAY or MONTH-DAY; DAY may follow "~" instead of "-" to count
// from the month's end (~1 is the last day, ~2 the one before, at most
// ~28). TIME is HOUR:MINUTE[:SECOND]; SECOND may have a fraction of up to
// six digits (rounded at the seventh). Each of YEAR, MONTH, DAY, HOUR,
// MINUTE and SECOND is "*" or a comma-separated list (at most 240 items)
// of values (5), ranges (1..5) and repetitions (START/STEP or
// START..STOP/STEP, as in *-*-1/7 or *:0/15; a repetition starts from a
// value, "*/15" is refused as systemd 252 refuses it). A two-digit year
// means 19YY from 70 and 20YY below. No DATE means every day, no TIME
// 00:00:00, no seconds :00. Years run from 1970 to 2199. TIMEZONE is UTC
// (any case) or an IANA zone name such as Europe/Berlin; without one,
// Next works in its argument's Location. Zone abbreviations that systemd
// reads as the local zone in standard or summer time (CET when TZ is
// Europe/Berlin) are not supported: an abbreviation that is itself a zone
// name (CET, EST, GMT) means that zone. The leap-second zones right/...
// are refused.
//
// Next follows systemd's own search step by step, and reproduces glibc's
// mktime, which that search leans on, so it agrees with systemd where
// clocks change: a time that a change skips does not elapse that day,
// and a repeated hour elapses once. Where systemd gives up its search
// (after 1000 steps; it happens around some clock changes), Next returns
// the zero Time, as a systemd timer would find no elapse.
package calendar

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Limits of the grammar, as systemd's.
const (
	minYear = 1970
	maxYear = 2199
	// maxComponents bounds a comma list (systemd refuses longer ones too).
	maxComponents = 240
	usecPerSec    = 1000000
	// allWeekdays is the bit set of Monday (bit 0) to Sunday (bit 6).
	allWeekdays = 127
)

// component is one item of a comma list: start, start..stop, start/repeat
// or start..stop/repeat. stop is -1 when there is none; repeat 0 when the
// item does not repeat. Seconds are held in microseconds.
type component struct {
	start, stop, repeat int
	pos                 int // byte offset in the expression, for errors
}

// Spec is a parsed calendar expression.
type Spec struct {
	weekdays int // bit 0 Monday ... bit 6 Sunday; -1 any day
	// Each chain is nil for "*" (seconds: a chain of 0/1s for "*").
	year, month, day, hour, minute, second []component
	endOfMonth                             bool // day counts from the month's end ("~")
	utc                                    bool
	zone                                   string // IANA name, "" for none
	loc                                    *time.Location
}

// Error is an expression refused by Parse.
type Error struct {
	Expr   string // the whole expression
	Offset int    // byte offset in Expr of the part refused
	Msg    string // what is wrong there
}

func (e *Error) Error() string {
	if e.Expr == "" {
		return "calendar expression \"\": " + e.Msg
	}
	return fmt.Sprintf("calendar expression %q: %s (at byte %d)", e.Expr, e.Msg, e.Offset)
}

// Parse parses a systemd OnCalendar expression (systemd.time(7), "CALENDAR EVENTS").
// A bad expression gets an error naming the expression and what is wrong where.
func Parse(expr string) (*Spec, error) {
	s := &Spec{}
	body := expr
	zoneAt := -1
	var zoneWord string
	if n := len(body); n >= 4 && strings.EqualFold(body[n-4:], " UTC") {
		s.utc = true
		body = body[:n-4]
	} else if i := strings.LastIndexByte(body, ' '); i >= 0 {
		zoneAt, zoneWord = i+1, body[i+1:]
		if rest, ok := strings.CutPrefix(zoneWord, "right/"); ok && rest != "" {
			// Leap seconds count in these zones; Go's time does not.
			return nil, &Error{Expr: expr, Offset: zoneAt, Msg: fmt.Sprintf("leap-second time zone %q is not supported (%q is the same without leap seconds)", zoneWord, rest)}
		}
		if loc, ok := loadZone(zoneWord); ok {
			s.zone, s.loc = zoneWord, loc
			body = body[:i]
			zoneAt = -1
		}
	}
	if strings.TrimSpace(expr) == "" {
		return nil, &Error{Expr: expr, Msg: "empty expression"}
	}
	p := &parser{expr: expr, s: body, spec: s}
	if err := p.parse(); err != nil {
		// A last word that is neither a zone nor part of the expression
		// is most likely a mistyped zone: say so when the rest parses.
		if zoneAt >= 0 && containsLetter(zoneWord) {
			q := &parser{expr: expr, s: expr[:zoneAt-1], spec: &Spec{}}
			if q.parse() == nil {
				return nil, &Error{Expr: expr, Offset: zoneAt, Msg: fmt.Sprintf("%q is not UTC or a known IANA time zone", zoneWord)}
			}
		}
		return nil, err
	}
	if err := s.normalize(expr); err != nil {
		return nil, err
	}
	return s, nil
}

func containsLetter(w string) bool {
	for i := 0; i < len(w); i++ {
		if c := w[i] | 0x20; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// loadZone accepts what systemd's timezone_is_valid accepts: letters,
// digits, "-", "_", "+" and single "/" between parts, naming a TZif file
// in the zone database.
func loadZone(name string) (*time.Location, bool) {
	if name == "" || name[0] == '/' || name[len(name)-1] == '/' || len(name) > 255 {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_', c == '+':
		case c == '/':
			if name[i-1] == '/' {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	if name == "Local" {
		return nil, false // Go's own word for the process's zone, not a zone file
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, false
	}
	return loc, true
}

type parser struct {
	expr string // the whole expression, for errors
	s    string // what is parsed: expr without its time zone (a prefix of expr)
	i    int
	spec *Spec
}

func (p *parser) errorf(at int, format string, args ...any) error {
	return &Error{Expr: p.expr, Offset: at, Msg: fmt.Sprintf(format, args...)}
}

// peek is the byte k ahead, 0 past the end (the expression is a C string
// to systemd, so a NUL inside it ends it there; Parse refuses NULs).
func (p *parser) peek(k int) byte {
	if p.i+k < len(p.s) {
		return p.s[p.i+k]
	}
	return 0
}

func (p *parser) atEnd() bool { return p.i >= len(p.s) }

// rest names what follows position i, for errors.
func (p *parser) rest(i int) string {
	r := p.s[i:]
	if j := strings.IndexAny(r, " "); j > 0 {
		r = r[:j]
	}
	if r == "" {
		return "end of expression"
	}
	return fmt.Sprintf("%q", r)
}

var shorthands = map[string]string{
	"minutely":      "*-*-* *:*:00",
	"hourly":        "*-*-* *:00:00",
	"daily":         "*-*-* 00:00:00",
	"weekly":        "Mon *-*-* 00:00:00",
	"monthly":       "*-*-01 00:00:00",
	"yearly":        "*-01-01 00:00:00",
	"annually":      "*-01-01 00:00:00",
	"anually":       "*-01-01 00:00:00", // systemd keeps this misspelling
	"quarterly":     "*-01,04,07,10-01 00:00:00",
	"semiannually":  "*-01,07-01 00:00:00",
	"semi-annually": "*-01,07-01 00:00:00",
	"biannually":    "*-01,07-01 00:00:00",
	"bi-annually":   "*-01,07-01 00:00:00",
}

// asciiLower folds A-Z only, as systemd compares (strings.ToLower would
// also turn the Kelvin sign into a k).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (p *parser) parse() error {
	if strings.IndexByte(p.expr, 0) >= 0 {
		return p.errorf(strings.IndexByte(p.expr, 0), "NUL byte")
	}
	if p.s == "" {
		return p.errorf(0, "no date or time before the time zone")
	}
	if long, ok := shorthands[asciiLower(p.s)]; ok {
		// The shorthand's long form parses the same way (and cannot fail).
		q := &parser{expr: long, s: long, spec: p.spec}
		return q.parse()
	}
	if err := p.weekdays(); err != nil {
		return err
	}
	epoch, err := p.date()
	if err != nil {
		return err
	}
	if !epoch {
		if err := p.time(); err != nil {
			return err
		}
	}
	if !p.atEnd() {
		return p.errorf(p.i, "unexpected %s", p.rest(p.i))
	}
	return nil
}

var dayNames = []struct {
	name string
	nr   int
}{
	{"Monday", 0}, {"Mon", 0}, {"Tuesday", 1}, {"Tue", 1}, {"Wednesday", 2}, {"Wed", 2},
	{"Thursday", 3}, {"Thu", 3}, {"Friday", 4}, {"Fri", 4}, {"Saturday", 5}, {"Sat", 5},
	{"Sunday", 6}, {"Sun", 6},
}

// weekdays parses an optional list of weekdays and ranges.
func (p *parser) weekdays() error {
	l, lpos := -1, 0
	first := true
	for {
		at := p.i
		nr := -1
		for _, d := range dayNames {
			n := len(d.name)
			if len(p.s)-p.i < n || !strings.EqualFold(p.s[p.i:p.i+n], d.name) {
				continue
			}
			if c := p.peek(n); c != 0 && c != '-' && c != '.' && c != ',' && c != ' ' {
				end := p.i + n
				for end < len(p.s) && p.s[end] != ' ' && p.s[end] != ',' && p.s[end] != '.' {
					end++
				}
				return p.errorf(at, "%q is not a weekday", p.s[at:end])
			}
			nr = d.nr
			p.spec.weekdays |= 1 << d.nr
			if l >= 0 {
				if l > nr {
					return p.errorf(lpos, "weekday range %s runs backwards (write it as two ranges)", p.s[lpos:p.i+n])
				}
				for j := l + 1; j < nr; j++ {
					p.spec.weekdays |= 1 << j
				}
			}
			p.i += n
			break
		}
		if nr < 0 {
			if first {
				return nil // no weekdays: the date follows
			}
			return p.errorf(at, "expected a weekday, found %s", p.rest(at))
		}
		switch p.peek(0) {
		case 0:
			return nil
		case ' ':
			p.skipSpaces()
			return nil
		case '.':
			if l >= 0 {
				return p.errorf(lpos, "weekday range %s has a second \"..\"", p.s[lpos:p.i])
			}
			if p.peek(1) != '.' {
				return p.errorf(p.i, "a single \".\" after a weekday (a range is Mon..Fri)")
			}
			l, lpos = nr, at
			p.i += 2
		case '-':
			if l >= 0 {
				return p.errorf(lpos, "weekday range %s has a second \"-\"", p.s[lpos:p.i])
			}
			l, lpos = nr, at
			p.i++
		case ',':
			l = -1
			p.i++
		}
		if c := p.peek(0); c == 0 || c == ' ' {
			if l >= 0 {
				return p.errorf(lpos, "weekday range %s has no end", p.s[lpos:p.i])
			}
			p.skipSpaces()
			return nil
		}
		first = false
	}
}

func (p *parser) skipSpaces() {
	for p.peek(0) == ' ' {
		p.i++
	}
}

// date parses an optional date: YEAR-MONTH-DAY, MONTH-DAY (either with
// "~" before DAY) or @EPOCH. epoch reports the last, which has no time.
func (p *parser) date() (epoch bool, err error) {
	if p.atEnd() {
		return false, nil
	}
	start := p.i
	if p.peek(0) == '@' {
		return true, p.epoch()
	}
	if containsLetter(p.s[p.i : p.i+1]) {
		return false, p.errorf(p.i, "%s is not a weekday, a date, a time or one of minutely, hourly, daily, weekly, monthly, quarterly, semiannually, yearly", p.rest(p.i))
	}
	first, err := p.chain(false, "date or hour")
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c == 0 || c == ':' {
		p.i = start // it was an hour, not a date
		return false, nil
	}
	if p.peek(0) == '~' {
		p.spec.endOfMonth = true
	} else if p.peek(0) != '-' {
		return false, p.errorf(p.i, "expected \"-\" or \"~\" in the date, found %s", p.rest(p.i))
	}
	p.i++
	second, err := p.chain(false, "month or day")
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c == 0 || c == ' ' {
		p.skipSpaces()
		p.spec.month, p.spec.day = first, second
		return false, nil
	}
	if p.spec.endOfMonth {
		return false, p.errorf(p.i, "\"~\" may only come before the day")
	}
	if p.peek(0) == '~' {
		p.spec.endOfMonth = true
	} else if p.peek(0) != '-' {
		return false, p.errorf(p.i, "expected \"-\" or \"~\" before the day, found %s", p.rest(p.i))
	}
	p.i++
	third, err := p.chain(false, "day")
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c != 0 && c != ' ' {
		return false, p.errorf(p.i, "unexpected %s after the date", p.rest(p.i))
	}
	p.skipSpaces()
	p.spec.year, p.spec.month, p.spec.day = first, second, third
	return false, nil
}

// epoch parses @SECONDS: that one instant, in UTC.
func (p *parser) epoch() error {
	at := p.i
	p.i++
	// systemd reads the number with strtoul: spaces and a sign first.
	for strings.IndexByte(" \t\n\v\f\r", p.peek(0)) >= 0 && p.peek(0) != 0 {
		p.i++
	}
	minus := p.peek(0) == '-'
	if minus || p.peek(0) == '+' {
		p.i++
	}
	v, ok := p.digits()
	if !ok {
		return p.errorf(at, "\"@\" must be followed by seconds since 1970")
	}
	if minus && v != 0 {
		return p.errorf(at, "%s is before 1970", p.s[at:p.i])
	}
	if v > math.MaxInt64/usecPerSec {
		return p.errorf(at, "@%s is too far in the future", p.s[at+1:p.i])
	}
	t := time.Unix(int64(v), 0).UTC()
	one := func(v int) []component { return []component{{start: v, stop: -1, pos: at}} }
	s := p.spec
	s.utc = true
	s.year, s.month, s.day = one(t.Year()), one(int(t.Month())), one(t.Day())
	s.hour, s.minute, s.second = one(t.Hour()), one(t.Minute()), one(t.Second()*usecPerSec)
	return nil
}

// digits reads a run of decimal digits; ok is false when there is none
// or it overflows.
func (p *parser) digits() (uint64, bool) {
	start := p.i
	var v uint64
	over := false
	for c := p.peek(0); c >= '0' && c <= '9'; c = p.peek(0) {
		if v > (math.MaxUint64-9)/10 {
			over = true
		}
		v = v*10 + uint64(c-'0')
		p.i++
	}
	return v, p.i > start && !over
}

// time parses HOUR:MINUTE[:SECOND]; none at all means 00:00:00.
func (p *parser) time() error {
	zero := func(pos int) []component { return []component{{start: 0, stop: -1, pos: pos}} }
	if p.atEnd() {
		p.spec.hour, p.spec.minute, p.spec.second = zero(p.i), zero(p.i), zero(p.i)
		return nil
	}
	h, err := p.chain(false, "hour")
	if err != nil {
		return err
	}
	if p.peek(0) != ':' {
		return p.errorf(p.i, "expected \":\" after the hour, found %s", p.rest(p.i))
	}
	p.i++
	m, err := p.chain(false, "minute")
	if err != nil {
		return err
	}
	var sec []component
	if p.atEnd() {
		sec = zero(p.i)
	} else {
		if p.peek(0) != ':' {
			return p.errorf(p.i, "expected \":\" after the minute, found %s", p.rest(p.i))
		}
		p.i++
		if sec, err = p.chain(true, "second"); err != nil {
			return err
		}
		if !p.atEnd() {
			return p.errorf(p.i, "unexpected %s after the seconds", p.rest(p.i))
		}
	}
	p.spec.hour, p.spec.minute, p.spec.second = h, m, sec
	return nil
}

// chain parses "*" or a comma list of values, ranges and repetitions.
// In seconds (usec) values are microseconds and "*" is 0/1.
func (p *parser) chain(usec bool, what string) ([]component, error) {
	if p.peek(0) == '*' {
		p.i++
		if usec {
			return []component{{start: 0, stop: -1, repeat: usecPerSec, pos: p.i - 1}}, nil
		}
		return nil, nil
	}
	var c []component
	for {
		if len(c) >= maxComponents {
			return nil, p.errorf(p.i, "more than %d values in one list", maxComponents)
		}
		at := p.i
		start, err := p.decimal(usec, what)
		if err != nil {
			return nil, err
		}
		stop, repeat := -1, 0
		if p.peek(0) == '.' && p.peek(1) == '.' {
			p.i += 2
			if stop, err = p.decimal(usec, what); err != nil {
				return nil, err
			}
			repeat = 1
			if usec {
				repeat = usecPerSec
			}
		}
		if p.peek(0) == '/' {
			p.i++
			if repeat, err = p.decimal(usec, "repetition"); err != nil {
				return nil, err
			}
			if repeat == 0 {
				return nil, p.errorf(at, "repetition %s repeats every 0", p.s[at:p.i])
			}
		} else {
			if start > math.MaxInt32-repeat {
				return nil, p.errorf(at, "%s %s is too large", what, p.s[at:p.i])
			}
			if usec && stop >= 0 && start+repeat > stop {
				return nil, p.errorf(at, "seconds range %s is shorter than its one-second step (add /STEP)", p.s[at:p.i])
			}
		}
		switch ch := p.peek(0); ch {
		case 0, ' ', ',', '-', '~', ':':
		default:
			return nil, p.errorf(p.i, "unexpected %q in %s %s", ch, what, p.s[at:p.i+1])
		}
		c = append(c, component{start: start, stop: stop, repeat: repeat, pos: at})
		if p.peek(0) != ',' {
			return c, nil
		}
		p.i++
	}
}

// decimal reads a number; in seconds, with up to six decimals (rounded
// at the seventh), as microseconds. "1..2" is a range, not a fraction.
func (p *parser) decimal(usec bool, what string) (int, error) {
	at := p.i
	if c := p.peek(0); c < '0' || c > '9' {
		return 0, p.errorf(at, "expected a number for the %s, found %s", what, p.rest(at))
	}
	v, ok := p.digits()
	if !ok || v > math.MaxInt32 {
		return 0, p.errorf(at, "%s %s is too large", what, p.s[at:p.i])
	}
	if usec {
		v *= usecPerSec
		if p.peek(0) == '.' && p.peek(1) != '.' {
			p.i++
			var add uint64
			n := 0
			for ; n < 6; n++ {
				c := p.peek(0)
				if c < '0' || c > '9' {
					if n == 0 {
						return 0, p.errorf(at, "%s %s has no digits after its \".\"", what, p.s[at:p.i])
					}
					break
				}
				add = add*10 + uint64(c-'0')
				p.i++
			}
			for ; n < 6; n++ {
				add *= 10
			}
			if c := p.peek(0); c >= '5' && c <= '9' {
				add++
			}
			for c := p.peek(0); c >= '0' && c <= '9'; c = p.peek(0) {
				p.i++
			}
			v += add
		}
		if v > math.MaxInt32 {
			return 0, p.errorf(at, "%s %s is too large", what, p.s[at:p.i])
		}
	}
	return int(v), nil
}

// normalize brings the spec to systemd's normal form (sorted lists
// without duplicates, ranges cut to a whole number of steps) and checks
// every value's range.
func (s *Spec) normalize(expr string) error {
	if s.weekdays <= 0 || s.weekdays >= allWeekdays {
		s.weekdays = -1
	}
	if s.endOfMonth && s.day == nil {
		s.endOfMonth = false
	}
	for i := range s.year {
		c := &s.year[i]
		c.start = fixYear(c.start)
		c.stop = fixYear(c.stop)
	}
	chains := []struct {
		c        *[]component
		name     string
		from, to int
		eom      bool
	}{
		{&s.year, "year", minYear, maxYear, false},
		{&s.month, "month", 1, 12, false},
		{&s.day, "day", 1, 31, s.endOfMonth},
		{&s.hour, "hour", 0, 23, false},
		{&s.minute, "minute", 0, 59, false},
		{&s.second, "second", 0, 60*usecPerSec - 1, false},
	}
	for _, ch := range chains {
		*ch.c = normalizeChain(*ch.c)
		if err := checkChain(expr, *ch.c, ch.name, ch.from, ch.to, ch.eom); err != nil {
			return err
		}
	}
	return nil
}

// fixYear turns 12 into 2012 and 89 into 1989.
func fixYear(y int) int {
	switch {
	case y >= 0 && y < 70:
		return y + 2000
	case y >= 70 && y < 100:
		return y + 1900
	}
	return y
}

func normalizeChain(c []component) []component {
	for i := range c {
		x := &c[i]
		if x.stop > x.start && x.repeat > 0 {
			x.stop -= (x.stop - x.start) % x.repeat
		}
		// A repetition that cannot fire twice, or a range of one value,
		// is that one value.
		if (x.stop > x.start && x.repeat > 0 && x.start+x.repeat > x.stop) || x.start == x.stop {
			x.repeat, x.stop = 0, -1
		}
	}
	if len(c) <= 1 {
		return c
	}
	sort.SliceStable(c, func(i, j int) bool { return compare(c[i], c[j]) < 0 })
	out := c[:1]
	for _, x := range c[1:] {
		if compare(x, out[len(out)-1]) != 0 {
			out = append(out, x)
		}
	}
	return out
}

func compare(a, b component) int {
	switch {
	case a.start != b.start:
		return cmpInt(a.start, b.start)
	case a.stop != b.stop:
		return cmpInt(a.stop, b.stop)
	}
	return cmpInt(a.repeat, b.repeat)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkChain refuses what systemd's chain_valid refuses, saying which
// value and why.
func checkChain(expr string, c []component, name string, from, to int, eom bool) error {
	bad := func(x component, format string, args ...any) error {
		return &Error{Expr: expr, Offset: x.pos, Msg: fmt.Sprintf(format, args...)}
	}
	f := func(v int) string { return formatValue(v, name == "second") }
	span := fmt.Sprintf("%s..%s", f(from), f(to))
	if eom {
		to -= 3 // at most 28 days from the end of the month
		span = "1..28 counted from the month's end"
	}
	for _, x := range c {
		if x.start < from || x.start > to {
			return bad(x, "%s %s out of range %s", name, f(x.start), span)
		}
		if x.repeat > to-from {
			return bad(x, "%s repetition /%s is longer than %s", name, f(x.repeat), span)
		}
		if x.stop >= 0 {
			if x.stop < from || x.stop > to {
				return bad(x, "%s %s out of range %s", name, f(x.stop), span)
			}
			if x.start+x.repeat > x.stop {
				return bad(x, "%s range %s..%s runs backwards", name, f(x.start), f(x.stop))
			}
		} else if (eom && x.start-x.repeat < from) || (!eom && x.start+x.repeat > to) {
			return bad(x, "%s %s/%s never repeats within %s", name, f(x.start), f(x.repeat), span)
		}
	}
	return nil
}

func formatValue(v int, usec bool) string {
	if !usec {
		return fmt.Sprint(v)
	}
	if v%usecPerSec == 0 {
		return fmt.Sprint(v / usecPerSec)
	}
	return fmt.Sprintf("%d.%06d", v/usecPerSec, v%usecPerSec)
}

// String is the normalized form, as `systemd-analyze calendar` prints it ("Normalized form:").
func (s *Spec) String() string {
	var b strings.Builder
	if s.weekdays > 0 && s.weekdays < allWeekdays {
		formatWeekdays(&b, s.weekdays)
		b.WriteByte(' ')
	}
	formatChain(&b, 4, s.year, false)
	b.WriteByte('-')
	formatChain(&b, 2, s.month, false)
	if s.endOfMonth {
		b.WriteByte('~')
	} else {
		b.WriteByte('-')
	}
	formatChain(&b, 2, s.day, false)
	b.WriteByte(' ')
	formatChain(&b, 2, s.hour, false)
	b.WriteByte(':')
	formatChain(&b, 2, s.minute, false)
	b.WriteByte(':')
	formatChain(&b, 2, s.second, true)
	if s.utc {
		b.WriteString(" UTC")
	} else if s.zone != "" {
		b.WriteString(" " + s.zone)
	}
	return b.String()
}

var shortDays = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

// formatWeekdays writes runs of three or more days as ranges, shorter
// ones as lists, as systemd does.
func formatWeekdays(b *strings.Builder, bits int) {
	l := -1
	comma := false
	x := 0
	for ; x < 7; x++ {
		if bits&(1<<x) != 0 {
			if l < 0 {
				if comma {
					b.WriteByte(',')
				}
				comma = true
				b.WriteString(shortDays[x])
				l = x
			}
		} else if l >= 0 {
			if x > l+1 {
				if x > l+2 {
					b.WriteString("..")
				} else {
					b.WriteByte(',')
				}
				b.WriteString(shortDays[x-1])
			}
			l = -1
		}
	}
	if l >= 0 && x > l+1 {
		if x > l+2 {
			b.WriteString("..")
		} else {
			b.WriteByte(',')
		}
		b.WriteString(shortDays[x-1])
	}
}

func formatChain(b *strings.Builder, width int, c []component, usec bool) {
	if isStar(c, usec) {
		b.WriteByte('*')
		return
	}
	d := 1
	if usec {
		d = usecPerSec
	}
	for i, x := range c {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%0*d", width, x.start/d)
		if x.start%d > 0 {
			fmt.Fprintf(b, ".%06d", x.start%d)
		}
		if x.stop > 0 {
			fmt.Fprintf(b, "..%0*d", width, x.stop/d)
		}
		if x.stop > 0 && x.stop%d > 0 {
			fmt.Fprintf(b, ".%06d", x.stop%d)
		}
		if x.repeat > 0 && !(x.stop > 0 && x.repeat == d) {
			fmt.Fprintf(b, "/%d", x.repeat/d)
		}
		if x.repeat%d > 0 {
			fmt.Fprintf(b, ".%06d", x.repeat%d)
		}
	}
}

// isStar tells whether a chain means every value: empty, or in seconds
// one of its items is 0/1s.
func isStar(c []component, usec bool) bool {
	if len(c) == 0 {
		return true
	}
	if usec {
		for _, x := range c {
			if x.start == 0 && x.stop < 0 && x.repeat == usecPerSec {
				return true
			}
		}
	}
	return false
}
