package ui

import (
	"strings"
	"testing"
)

// The bar fits any width (never the last column), and says what it does
// not know.
func TestBarLine(t *testing.T) {
	for _, w := range []int{20, 40, 60, 80, 132, 300} {
		for _, c := range []struct {
			done, total int64
			rate, eta   float64
			known       bool
			final       bool
		}{
			{0, 5 << 30, 0, 0, false, false},
			{1 << 30, 5 << 30, 300 << 20, 13.7, true, false},
			{5 << 30, 5 << 30, 300 << 20, 0, true, true},
		} {
			l := barLine("restore", c.done, c.total, c.rate, c.eta, c.known, c.final, 17, w, "")
			if len(l) >= w {
				t.Errorf("width %d: %d columns: %q", w, len(l), l)
			}
			if w >= 60 && !c.known && !strings.Contains(l, "ETA unknown") {
				t.Errorf("width %d: an unknown ETA not said: %q", w, l)
			}
			if strings.Contains(l, "0:00:00") {
				t.Errorf("width %d: %q", w, l)
			}
		}
	}
}
