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
		back, err := ReadMap(bytes.NewReader(m.Bytes()), bs, length)
		if err != nil {
			t.Fatal(err)
		}
		if back.Count() != m.Count() || back.UsedBytes() != m.UsedBytes() {
			t.Fatalf("round trip changed the map")
		}
	}
}
