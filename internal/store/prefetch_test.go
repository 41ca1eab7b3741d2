package store

import (
	"fmt"
	"testing"
)

// prefetchObject records the prefetches a volume is asked for.
type prefetchObject struct {
	Object
	asked *[][3]int64 // volume, offset, length
	k     int64
}

func (o prefetchObject) Prefetch(off, n int64) { *o.asked = append(*o.asked, [3]int64{o.k, off, n}) }

// A prefetch across volumes reaches each volume it touches, at the
// volume's own offsets; one past the end reaches none.
func TestSplitPrefetch(t *testing.T) {
	var asked [][3]int64
	size := []int64{100, 100, 50}
	o := &volumes{name: "x", size: 250}
	var off int64
	for k, n := range size {
		o.vols = append(o.vols, Volume{Object: prefetchObject{Object: &file{size: n}, asked: &asked, k: int64(k + 1)}, Off: off})
		off += n
	}
	o.Prefetch(90, 130)
	o.Prefetch(240, 100)
	o.Prefetch(300, 10)
	want := [][3]int64{{1, 90, 10}, {2, 0, 100}, {3, 0, 20}, {3, 40, 10}}
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Fatalf("prefetches %v, want %v", asked, want)
	}
}
