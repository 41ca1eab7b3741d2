package calendar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The judge is systemd's own parser and search: systemd-analyze calendar
// prints the normalized form and the next elapses from a base time, with
// the process's TZ as the local zone.

// analysis is what systemd-analyze said of one expression.
type analysis struct {
	failed     bool    // it refused the expression
	normalized string  // "Normalized form:"
	elapses    []int64 // Unix seconds (it prints no fractions)
	// gaveUp: "Failed to determine next elapse" (systemd stops its
	// search after 1000 steps, as Next does). It then prints nothing
	// else of that expression, not even the elapses before.
	gaveUp bool
}

// analyze runs systemd-analyze calendar once for all exprs, under TZ=tz,
// from base, for n iterations. A missing systemd-analyze fails the test.
func analyze(t *testing.T, tz string, base time.Time, n int, exprs []string) map[string]*analysis {
	t.Helper()
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed for this test and is not installed (make deps installs systemd)")
	}
	// Its --base-time takes whole seconds; the tests' bases are whole.
	if base.Nanosecond() != 0 {
		t.Fatalf("base %v has a fraction of a second", base)
	}
	args := []string{"calendar", fmt.Sprintf("--iterations=%d", n), fmt.Sprintf("--base-time=@%d", base.Unix()), "--"}
	args = append(args, exprs...)
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "TZ="+tz, "LC_ALL=C", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("systemd-analyze: %v", err)
	}
	res := map[string]*analysis{}
	for _, e := range exprs {
		res[e] = &analysis{}
	}
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		line := sc.Text()
		for _, prefix := range []string{"Failed to parse calendar specification '", "Failed to determine next elapse for '"} {
			rest, ok := strings.CutPrefix(line, prefix)
			if !ok {
				continue
			}
			i := strings.LastIndex(rest, "': ")
			if i < 0 {
				t.Fatalf("systemd-analyze: cannot read %q", line)
			}
			a := res[rest[:i]]
			if a == nil {
				t.Fatalf("systemd-analyze names an expression not asked for: %q", line)
			}
			if strings.HasPrefix(prefix, "Failed to parse") {
				a.failed = true
			} else {
				a.gaveUp = true
			}
		}
	}
	// One block per expression parsed, in order; "Original form:" is
	// left out when it equals the normalized form.
	var ok []string
	for _, e := range exprs {
		if !res[e].failed {
			ok = append(ok, e)
		}
	}
	var cur *analysis
	next := 0
	pending := false // an elapse in local time waits for its "(in UTC)" line
	sc = bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, _ := strings.Cut(line, ": ")
		if key == "Original form" || key == "Normalized form" && (cur == nil || cur.normalized != "") {
			// An expression whose first elapse it could not find
			// ("Failed to determine next elapse") has no block.
			for next < len(ok) && val != ok[next] && res[ok[next]].gaveUp {
				next++
			}
			if next >= len(ok) {
				t.Fatalf("systemd-analyze: more answers than expressions at %q", line)
			}
			e := ok[next]
			next++
			if val != e {
				t.Fatalf("systemd-analyze (TZ=%s): answer %q for expression %q", tz, line, e)
			}
			cur = res[e]
			pending = false
		}
		switch {
		case cur == nil:
		case key == "Normalized form":
			cur.normalized = val
		case key == "Next elapse" && val == "never":
		case key == "Next elapse" || strings.HasPrefix(key, "Iter. #") || key == "(in UTC)":
			if key != "(in UTC)" && !strings.HasSuffix(val, " UTC") {
				pending = true
				continue
			}
			if key == "(in UTC)" && !pending {
				t.Fatalf("systemd-analyze: unexpected %q", line)
			}
			pending = false
			at, err := time.Parse("Mon 2006-01-02 15:04:05 MST", val)
			if err != nil {
				t.Fatalf("systemd-analyze: cannot read the time in %q: %v", line, err)
			}
			cur.elapses = append(cur.elapses, at.Unix())
		}
	}
	for e, a := range res {
		if !a.failed && !a.gaveUp && a.normalized == "" {
			t.Fatalf("systemd-analyze said nothing of %q", e)
		}
	}
	return res
}

// judge compares Parse, String and n iterations of Next with systemd's
// answers for each expression, from base in zone tz.
func judge(t *testing.T, tz string, base time.Time, n int, exprs []string) (parsed int) {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	base = base.In(loc)
	seen := map[string]bool{}
	var uniq []string
	for _, e := range exprs {
		if !seen[e] {
			seen[e] = true
			uniq = append(uniq, e)
		}
	}
	want := analyze(t, tz, base, n, uniq)
	for _, e := range uniq {
		w := want[e]
		s, err := Parse(e)
		if w.failed {
			if err == nil {
				t.Errorf("%q: systemd refuses it, Parse accepted it as %q", e, s)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: systemd accepts it (%q), Parse: %v", e, w.normalized, err)
			continue
		}
		parsed++
		at := base
		var got []int64
		for i := 0; i < n; i++ {
			next := s.Next(at)
			if next.IsZero() {
				break
			}
			if !next.After(at) {
				t.Errorf("%q: Next(%v) = %v, not after it", e, at, next)
				break
			}
			got = append(got, next.Unix())
			at = next
		}
		if w.gaveUp && len(got) == n {
			t.Errorf("%q from %v in %s: systemd gives up within %d elapses, Next finds %v", e, base, tz, n, unixTimes(got))
			continue
		}
		if w.gaveUp {
			// systemd gave up within n elapses; ask for those Next
			// found: systemd must find the same and give up after.
			gaveUps++
			w = analyze(t, tz, base, max(len(got), 1), []string{e})[e]
			if len(got) > 0 && w.gaveUp {
				t.Errorf("%q from %v in %s: systemd gives up within %d elapses, Next finds %v", e, base, tz, len(got), unixTimes(got))
			}
			if len(got) == 0 && !w.gaveUp {
				t.Errorf("%q from %v in %s: Next finds none, systemd %v", e, base, tz, unixTimes(w.elapses))
			}
		}
		if w.normalized != "" && s.String() != w.normalized {
			t.Errorf("%q: String() = %q, systemd's normalized form %q", e, s.String(), w.normalized)
		}
		if !w.gaveUp && !equal(got, w.elapses) {
			t.Errorf("%q from %v in %s:\n got %v\nwant %v (systemd)", e, base, tz, unixTimes(got), unixTimes(w.elapses))
		}
	}
	return parsed
}

// gaveUps counts the expressions systemd gave up on, to see the case is
// tested.
var gaveUps int

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func unixTimes(v []int64) []string {
	var s []string
	for _, x := range v {
		s = append(s, time.Unix(x, 0).UTC().Format("2006-01-02 15:04:05Z"))
	}
	return s
}

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

// The expressions of the grammar, each judged by systemd.
var grammar = []string{
	// shorthands
	"minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually", "anually",
	"quarterly", "semiannually", "semi-annually", "biannually", "bi-annually", "DAILY", "Weekly",
	// weekdays
	"Mon", "Monday", "Mon,Wed", "Mon..Fri", "Mon-Fri", "Monday..Wednesday,Sat", "mon,TUE 12:00",
	"Sat..Sun", "Sat,Sun", "Fri,", "Sun,Mon,Tue,Thu 12:00", "Tue..Thu,Sat,Sun", "Mon..Sun",
	"Wed..Wed", "Thursday 06:00:30", "Mon,Mon,Tue",
	// dates
	"*-*-1/7", "*-*-01,15 12:30", "*-*-1..5", "2026-*-*", "2026-03-1..5 8:00", "12-25", "06-15 13:00",
	"26-04-01", "99-01-01", "2026-01-01", "2027-01-01 12:00", "*-02-29", "*-*-31", "*-04-31",
	"*-02-30", "2026..2028-02-29", "2026,2030-06-01", "*-1..12/3-1", "*-*-2..30/7", "*-3,1,2-1",
	"2199-12-31 23:59:59", "Mon 2199-12-*", "Mon *-02-29", "Fri *-*-13", "*-*-*", "1-1",
	"*-1..12-1..31", "2026-02-01..28/9",
	// days from the month's end
	"*-02~1", "*-*~1", "*-*~3..1", "*-*~7/2", "02~1", "*-*~28", "*-*~1,15", "2026-*~1..7 Sun",
	"Mon *-*~7..1", "*-*~2/1",
	// times
	"*:0/15", "*:*:*", "*:*", "*:*:0/20.5", "*:*:1.1234567", "12:00:30.25", "0..6:00", "08,20:00",
	"*:0,30", "9..17/2:00", "*:*:10..40/10", "*:*:05.000001", "23:59:59.999999", "00:00",
	"*:*:0/0.5", "12:*:0..59.5/1.25", "1,2,3:4,5:6,7", "*:00/5,07", "*:59", "0:0:0",
	"*:*:59.9999995", "*-*-* 4:5:6",
	// epoch
	"@1800000000", "@1700000000", "@0", "Fri @1800000000", "Mon @1800000000",
	"@+1800000000", "@ 1800000000", "@1800000000 Europe/Berlin", "Mon..Fri 2027-*-* 9:00 UTC", "@-0", "@-5", "@1800000000.5", "@7258118399", "@7258118400",
	// zones
	"daily Europe/Berlin", "Mon 08:00 America/New_York", "*:0/30 Asia/Kolkata", "daily Etc/UTC",
	"12:00 utc", "12:00 UTC", "*:00 Australia/Lord_Howe", "hourly Asia/Kathmandu", "daily GMT",
	"Sat *-*-* 01:30 America/Sao_Paulo", "*-*~1 23:00 Pacific/Auckland", "@1800000000 UTC",
	"weekly Europe/London", "daily CET", "daily posix/Europe/Berlin", "12:00 Etc/GMT-14", "Mon 8:00 EST5EDT",
}

func TestSystemdAgrees(t *testing.T) {
	// From a Thursday at midnight UTC, and from a base inside a minute.
	judge(t, "UTC", utc("2026-01-01 00:00:00"), 7, grammar)
	judge(t, "UTC", utc("2026-02-27 23:59:31"), 7, grammar)
	judge(t, "Asia/Tokyo", utc("2028-02-28 14:59:59"), 5, grammar)
}

// The clock changes: a skipped hour, a repeated hour, a zone whose
// change is at midnight, a half-hour change.
func TestSystemdAgreesDST(t *testing.T) {
	dst := []string{
		"*:0/30", "*-*-* 02:30", "*:30", "hourly", "02,03:15", "*:0/20", "01..04:00", "daily",
		"*-*-* 02:00:00", "*-*-* 03:00", "*:*:0/30", "*:59:59", "Sun 02:30", "*-*-* 00:00:00",
		"*-*-* 01:59:59", "*:0/15 UTC", "*:0/30 Europe/Berlin", "02:30 America/New_York",
	}
	cases := []struct {
		tz   string
		base string // UTC
	}{
		{"Europe/Berlin", "2026-03-28 22:50:00"}, // spring: 02:00 -> 03:00 on 03-29
		{"Europe/Berlin", "2026-03-29 00:40:00"},
		{"Europe/Berlin", "2026-10-24 23:40:00"}, // autumn: 03:00 -> 02:00 on 10-25
		{"Europe/Berlin", "2026-10-25 00:10:00"},
		{"Europe/Berlin", "2026-10-25 00:40:00"},
		{"Europe/Berlin", "2026-10-25 01:10:00"}, // inside the repeated hour, second time
		{"America/New_York", "2026-03-08 06:10:00"},
		{"America/New_York", "2026-11-01 05:10:00"},
		{"America/Santiago", "2026-09-06 02:30:00"}, // midnight skipped
		{"America/Santiago", "2026-09-06 03:30:00"},
		{"America/Santiago", "2026-04-05 01:30:00"},    // midnight repeated
		{"Australia/Lord_Howe", "2026-10-03 14:40:00"}, // half an hour skipped
		{"Australia/Lord_Howe", "2026-04-04 14:40:00"}, // half an hour repeated
		{"UTC", "2026-03-29 00:10:00"},
	}
	for _, c := range cases {
		judge(t, c.tz, utc(c.base), 8, dst)
	}
}

// TestSystemdAgreesRandom judges a few thousand expressions made at
// random from the grammar (and a little beyond it) the same way.
func TestSystemdAgreesRandom(t *testing.T) {
	r := rand.New(rand.NewSource(22))
	var exprs []string
	for len(exprs) < 1500 {
		exprs = append(exprs, randomExpr(r))
	}
	bases := []struct {
		tz   string
		base string
	}{
		{"UTC", "2026-12-01 22:13:29"},
		{"Europe/Berlin", "2026-03-29 00:30:00"},
		{"Europe/Berlin", "2026-10-25 00:30:00"},
		{"America/New_York", "2027-02-27 12:00:00"},
		{"America/New_York", "2026-11-01 05:20:00"},
		{"Australia/Lord_Howe", "2026-10-03 15:00:00"},
		{"America/Santiago", "2026-09-05 12:00:00"},
	}
	parsed := 0
	for _, b := range bases {
		parsed += judge(t, b.tz, utc(b.base), 6, exprs)
	}
	if gaveUps == 0 {
		t.Errorf("no expression made systemd give up: that case is untested")
	}
	// The generator must mostly make valid expressions to test Next.
	if parsed < len(bases)*len(exprs)/2 {
		t.Errorf("only %d of %d expressions parsed", parsed, len(bases)*len(exprs))
	}
}

func randomExpr(r *rand.Rand) string {
	pick := func(s ...string) string { return s[r.Intn(len(s))] }
	num := func(lo, hi int) int { return lo + r.Intn(hi-lo+1) }
	chain := func(lo, hi int, usec bool) string {
		if r.Intn(3) == 0 {
			return "*"
		}
		val := func(v int) string {
			if r.Intn(40) == 0 {
				v = hi + num(1, 5) // out of range now and then
			}
			s := fmt.Sprintf("%02d", v)
			if r.Intn(4) == 0 {
				s = fmt.Sprint(v)
			}
			if usec && r.Intn(3) == 0 {
				s += "." + fmt.Sprint(num(0, 999))
			}
			return s
		}
		var items []string
		for n := num(1, 3); n > 0; n-- {
			a := num(lo, hi)
			b := num(a, hi)
			if r.Intn(15) == 0 {
				a, b = b, a // backwards now and then
			}
			step := fmt.Sprintf("/%d", num(1, max(1, (hi-a)/2)))
			switch r.Intn(5) {
			case 0, 1:
				items = append(items, val(a))
			case 2:
				items = append(items, val(a)+".."+val(b))
			case 3:
				items = append(items, val(a)+step)
			case 4:
				items = append(items, val(a)+".."+val(b)+step)
			}
		}
		return strings.Join(items, ",")
	}
	var parts []string
	if r.Intn(3) == 0 {
		days := []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Monday", "friday", "SUN"}
		var w []string
		for n := num(1, 3); n > 0; n-- {
			d := pick(days...)
			if r.Intn(3) == 0 {
				d += pick("..", "-") + pick(days...)
			}
			w = append(w, d)
		}
		parts = append(parts, strings.Join(w, ","))
	}
	if r.Intn(10) < 7 {
		sep := "-"
		if r.Intn(6) == 0 {
			sep = "~"
		}
		day := chain(1, 31, false)
		if sep == "~" {
			day = chain(1, 10, false)
		}
		if r.Intn(3) == 0 {
			parts = append(parts, chain(1, 12, false)+sep+day)
		} else {
			parts = append(parts, pick(chain(2025, 2032, false), "*", "*", "27")+"-"+chain(1, 12, false)+sep+day)
		}
	}
	if r.Intn(10) < 7 {
		tm := chain(0, 23, false) + ":" + chain(0, 59, false)
		if r.Intn(2) == 0 {
			tm += ":" + chain(0, 59, true)
		}
		parts = append(parts, tm)
	}
	if len(parts) == 0 {
		parts = append(parts, pick("hourly", "daily", "weekly", "monthly", "quarterly", "minutely"))
	}
	if r.Intn(5) == 0 {
		parts = append(parts, pick("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "utc"))
	}
	return strings.Join(parts, " ")
}

// TestErrors: bad expressions are refused by Parse and by systemd, with
// an error naming the expression and saying what is wrong where.
func TestErrors(t *testing.T) {
	cases := []struct {
		expr   string
		offset int
		msg    string
	}{
		{"Mon..", 0, "weekday range Mon.. has no end"},
		{"Mon-", 0, "weekday range Mon- has no end"},
		{"Fri..Mon", 0, "runs backwards"},
		{"Mon.Tue", 3, "single \".\""},
		{"Mond", 0, "\"Mond\" is not a weekday"},
		{"Mon,foo", 4, "expected a weekday"},
		{"25:00", 0, "hour 25 out of range 0..23"},
		{"12:60", 3, "minute 60 out of range 0..59"},
		{"12:00:60", 6, "second 60 out of range 0..59.999999"},
		{"*-13-01", 2, "month 13 out of range 1..12"},
		{"*-01-32", 5, "day 32 out of range 1..31"},
		{"*-*~29", 4, "day 29 out of range 1..28 counted from the month's end"},
		{"1969-01-01", 0, "year 1969 out of range 1970..2199"},
		{"2200-01-01", 0, "year 2200 out of range"},
		{"foo", 0, "\"foo\" is not a weekday, a date, a time"},
		{"", 0, "empty expression"},
		{"   ", 0, ""},
		{"wee\u212aly", 0, "is not a weekday, a date, a time"}, // a Kelvin sign, not a k
		{"daily Mars/Base", 6, "\"Mars/Base\" is not UTC or a known IANA time zone"},
		{"daily Local", 6, "\"Local\" is not UTC"},
		{"12:00 CET+", 6, "not UTC or a known IANA time zone"},
		{"daily right/UTC", 6, "leap-second time zone \"right/UTC\" is not supported"},
		{"*:0/0", 2, "repeats every 0"},
		{"*:50/20", 2, "minute 50/20 never repeats within 0..59"},
		{"5..3:00", 0, "hour range 5..3 runs backwards"},
		{"12", 2, "expected \":\" after the hour"},
		{"12:00:00:00", 8, "unexpected \":00\" after the seconds"},
		{"02~1-03", 4, "\"~\" may only come before the day"},
		{"12.5:00", 2, "unexpected '.' in date or hour 12."},
		{"*:*:1.", 4, "has no digits after its \".\""},
		{"4294967296:00", 0, "hour 4294967296 is too large"},
		{"@", 0, "\"@\" must be followed by seconds"},
		{"@99999999999", 0, "year"},
		{"UTC", 0, ""},
		{" UTC", 0, "no date or time before the time zone"},
		{"*-*-* *", 7, "expected \":\" after the hour"},
		{"*/5:00", 1, "expected \"-\" or \"~\" in the date, found \"/5:00\""},
		{"daily daily", 0, ""},
		{"Mon *-*-* 12:00 Europe/Berlin UTC", 0, ""},
		{"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241:00", 852, "more than 240 values"},
	}
	var exprs []string
	for _, c := range cases {
		exprs = append(exprs, c.expr)
	}
	// systemd must refuse them all too ("" and "   " it cannot be given).
	var judged []string
	for _, e := range exprs {
		if strings.TrimSpace(e) != "" {
			judged = append(judged, e)
		}
	}
	want := analyze(t, "UTC", utc("2026-01-01 00:00:00"), 1, judged)
	// What systemd accepts and Parse refuses on purpose (package comment).
	deliberate := map[string]bool{"daily right/UTC": true}
	for _, c := range cases {
		if a := want[c.expr]; a != nil && a.failed == deliberate[c.expr] {
			t.Errorf("%q: systemd refuses it: %v, accepts it as %q", c.expr, a.failed, a.normalized)
		}
		s, err := Parse(c.expr)
		if err == nil {
			t.Errorf("%q: accepted as %q", c.expr, s)
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("%q: error %v is not an *Error", c.expr, err)
			continue
		}
		if pe.Expr != c.expr || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.expr)) {
			t.Errorf("%q: error %q does not name the expression", c.expr, err)
		}
		if c.msg != "" && (pe.Offset != c.offset || !strings.Contains(pe.Msg, c.msg)) {
			t.Errorf("%q: error %q (offset %d), want %q at %d", c.expr, err, pe.Offset, c.msg, c.offset)
		}
		if pe.Offset < 0 || pe.Offset > len(c.expr) {
			t.Errorf("%q: offset %d outside the expression", c.expr, pe.Offset)
		}
	}
}

// TestNextLocation: the answer is in the expression's zone when it names
// one, else in the argument's; a fraction of a second in the argument
// counts.
func TestNextLocation(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, ny)
	for _, c := range []struct {
		expr string
		loc  *time.Location
		want time.Time
	}{
		{"daily", ny, time.Date(2026, 6, 2, 0, 0, 0, 0, ny)},
		{"daily UTC", time.UTC, time.Date(2026, 6, 2, 0, 0, 0, 0, time.UTC)},
		{"daily Europe/Berlin", berlin, time.Date(2026, 6, 2, 0, 0, 0, 0, berlin)},
		{"*:*:*", ny, at.Add(time.Second)},
		{"*:*:0/0.000001", ny, at.Add(time.Microsecond)},
	} {
		s, err := Parse(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		got := s.Next(at)
		if !got.Equal(c.want) || got.Location().String() != c.loc.String() {
			t.Errorf("%q.Next(%v) = %v, want %v", c.expr, at, got, c.want)
		}
	}
	s, _ := Parse("*:*:*")
	frac := time.Date(2026, 6, 1, 12, 0, 0, 999999999, time.UTC)
	if got, want := s.Next(frac), time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v", frac, got, want)
	}
	s, _ = Parse("*:*:0/0.000001")
	if got, want := s.Next(frac.Add(-1500)), time.Date(2026, 6, 1, 12, 0, 0, 999999000, time.UTC); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v", frac.Add(-1500), got, want)
	}
	// Before 1970 the search starts in 1970; after 2199 nothing elapses.
	s, _ = Parse("daily UTC")
	if got, want := s.Next(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)), time.Unix(0, 0).UTC(); !got.Equal(want) {
		t.Errorf("Next(1900) = %v, want %v", got, want)
	}
	for _, far := range []time.Time{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(292277026596, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if got := s.Next(far); !got.IsZero() {
			t.Errorf("Next(%v) = %v, want none", far, got)
		}
	}
}

// TestConcurrent: one Spec is used from many goroutines at once (run
// under -race).
func TestConcurrent(t *testing.T) {
	s, err := Parse("Mon..Fri *-*-* 02:30 Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	want := s.Next(utc("2026-03-27 12:00:00"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if got := s.Next(utc("2026-03-27 12:00:00")); !got.Equal(want) {
					t.Errorf("Next = %v, want %v", got, want)
					return
				}
				_ = s.String()
			}
		}()
	}
	wg.Wait()
}

// TestNever: expressions that never elapse (again) end their search
// quickly with the zero Time, whatever the argument.
func TestNever(t *testing.T) {
	for _, e := range []string{"*-02-30", "*-04-31", "Mon *-02-30 12:00 Europe/Berlin", "2026-01-01", "2027-02-29",
		"*-*~28 *:*:59.999999", "1970-01-01 00:00:00 UTC", "Sun 2199-12-31"} {
		s, err := Parse(e)
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Time{utc("2026-06-01 00:00:00"), utc("2199-12-31 23:59:59"), time.Unix(1<<40-1, 0)} {
			start := time.Now()
			got := s.Next(at)
			if d := time.Since(start); d > time.Second {
				t.Errorf("%q.Next(%v) took %v", e, at, d)
			}
			if e == "*-*~28 *:*:59.999999" && at.Year() == 2026 {
				if got.IsZero() {
					t.Errorf("%q.Next(%v): none", e, at)
				}
				continue
			}
			if !got.IsZero() {
				t.Errorf("%q.Next(%v) = %v, want none", e, at, got)
			}
		}
	}
}
