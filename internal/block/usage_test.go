package block

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Usage.Runs, read a window at a time, gives the runs of the whole map
// loaded at once (Map.Runs), for ranges across window boundaries and
// clipped at both ends, with runs that meet at a window cut in two.
func TestUsageRuns(t *testing.T) {
	const bs = 512
	blocks := int64(3*scanBlocks + 1000)
	rng := rand.New(rand.NewPCG(1, 2))
	set := map[int64]bool{}
	for range 5000 {
		set[rng.Int64N(blocks)] = true
	}
	for i := scanBlocks - 10; i < scanBlocks+10; i++ {
		set[int64(i)] = true // a run across the first window's end
	}
	u, err := NewUsage("test", bs, blocks*bs-100, func(first int64, m *Map) error {
		for i := range m.Blocks() {
			if set[first+i] {
				m.Set(i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all, err := u.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, u.Len()}, {scanBlocks*bs - 3000, 7000}, {12345, 2*scanBlocks*bs + 99}, {u.Len() - 5000, 10000}, {-10, 100}, {u.Len(), 10}} {
		var want, got []Extent
		all.Runs(r[0], r[1], func(e Extent) { want = append(want, e) })
		if err := u.Runs(r[0], r[1], func(e Extent) { got = append(got, e) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(MergeExtents(want), MergeExtents(got)) {
			t.Errorf("runs of [%d, +%d): %d runs, want %d", r[0], r[1], len(got), len(want))
		}
	}
}
