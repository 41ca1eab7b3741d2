package block

import (
	"bytes"
	"math/rand"
	"testing"
)

func TestMapRunsMatchesBits(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := 0; iter < 200; iter++ {
		bs := int64(1 + rng.Intn(4096))
		length := int64(rng.Intn(300)) * bs
		if rng.Intn(2) == 0 {
			length += int64(rng.Intn(int(bs)))
		}
		m, err := NewMap(bs, length)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]bool, m.Blocks())
		for k := 0; k < 20; k++ {
			i, n := int64(rng.Intn(int(m.Blocks())+1)), int64(rng.Intn(90))
			m.SetRange(i, n)
			for j := i; j < i+n && j < int64(len(want)); j++ {
				want[j] = true
			}
		}
		var count int64
		for i, w := range want {
			if m.Test(int64(i)) != w {
				t.Fatalf("iter %d: block %d = %v, want %v", iter, i, !w, w)
			}
			if w {
				count++
			}
		}
		if m.Count() != count {
			t.Fatalf("Count = %d, want %d", m.Count(), count)
		}
		off, n := int64(rng.Intn(int(length)+1)), int64(rng.Intn(int(length)+1))
		got := make([]bool, length)
		prevEnd := int64(-1)
		m.Runs(off, n, func(e Extent) {
			if e.Off <= prevEnd {
				t.Fatalf("runs not separated: %v after end %d", e, prevEnd)
			}
			prevEnd = e.End()
			for b := e.Off; b < e.End(); b++ {
				got[b] = true
			}
		})
		for b := int64(0); b < length; b++ {
			in := b >= off && b < off+n
			if w := in && want[b/bs]; got[b] != w {
				t.Fatalf("iter %d: byte %d in runs = %v, want %v", iter, b, got[b], w)
			}
		}
		if m.Any(off, n) != (prevEnd >= 0) {
			t.Fatalf("Any(%d,%d) disagrees with Runs", off, n)
		}
		var wt bytes.Buffer
		if _, err := m.WriteTo(&wt); err != nil || !bytes.Equal(wt.Bytes(), m.Bytes()) || int64(wt.Len()) != m.ByteLen() {
			t.Fatalf("WriteTo differs from Bytes")
		}
		back, _ := NewMap(bs, length)
		back.SetRange(0, 3) // Load replaces what was there
		if err := back.Load(m.Bytes()); err != nil {
			t.Fatal(err)
		}
		if back.Count() != m.Count() || back.UsedBytes() != m.UsedBytes() {
			t.Fatalf("round trip changed the map")
		}
	}
}

// A kept map answers every window as the map it was read from did then,
// and not as the filesystem answers later.
func TestUsageKeep(t *testing.T) {
	const bs, n = 4096, 5000
	src, _ := NewMap(bs, n*bs-100)
	rng := rand.New(rand.NewSource(3))
	for i := int64(0); i < n; i++ {
		if rng.Intn(3) == 0 {
			src.SetRange(i, int64(rng.Intn(20)))
		}
	}
	live, _ := NewMap(bs, src.Len())
	live.words = append([]uint64(nil), src.words...)
	u, err := NewUsage("test", bs, src.Len(), func(first int64, m *Map) error {
		for i := int64(0); i < m.Blocks(); i++ {
			if live.Test(first + i) {
				m.Set(i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kept, closeKept, err := u.Keep(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer closeKept()
	clear(live.words) // the filesystem changes after the map was kept
	for _, w := range [][2]int64{{0, n*bs - 100}, {3 * bs, 17 * bs}, {13*bs + 5, 4000 * bs}, {(n - 9) * bs, 9*bs - 100}} {
		got, base, err := kept.Window(w[0], w[1])
		if err != nil {
			t.Fatal(err)
		}
		for off := w[0] / bs * bs; off < w[0]+w[1]; off += bs {
			if got.Test((off-base)/bs) != src.Test(off/bs) {
				t.Fatalf("window %v: block %d is %v, kept map says %v", w, off/bs, got.Test((off-base)/bs), src.Test(off/bs))
			}
		}
	}
	if a, b := must(kept.UsedBytes()), src.UsedBytes(); a != b {
		t.Fatalf("kept map uses %d bytes, the map %d", a, b)
	}
}

func must(n int64, err error) int64 {
	if err != nil {
		panic(err)
	}
	return n
}
