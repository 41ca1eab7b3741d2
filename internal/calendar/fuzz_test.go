package calendar

import (
	"testing"
	"time"
)

// FuzzParse: Parse never panics; whatever parses prints a normal form
// that parses to itself, and Next on it returns, with a time after its
// argument or none.
func FuzzParse(f *testing.F) {
	for _, e := range grammar {
		f.Add(e, int64(1767225600))
	}
	f.Add("*-02-30", int64(0))
	f.Add("Mon *-*~7..1 02:30 Europe/Berlin", int64(1774735200))
	f.Add("*:*:0/0.000001", int64(7258118399))
	f.Fuzz(func(t *testing.T, expr string, sec int64) {
		s, err := Parse(expr)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("%q: error %v is not an *Error", expr, err)
			}
			return
		}
		norm := s.String()
		s2, err := Parse(norm)
		if err != nil {
			t.Fatalf("%q: its normal form %q does not parse: %v", expr, norm, err)
		}
		if s2.String() != norm {
			t.Fatalf("%q: normal form %q parses to %q", expr, norm, s2.String())
		}
		berlin, _ := time.LoadLocation("Europe/Berlin")
		at := time.Unix(sec%(1<<40), 0).In(berlin)
		for range 3 {
			next := s.Next(at)
			if next.IsZero() {
				return
			}
			if !next.After(at) {
				t.Fatalf("%q: Next(%v) = %v, not after it", expr, at, next)
			}
			at = next
		}
	})
}
