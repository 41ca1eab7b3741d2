package restore

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// readMem is a target that can be read back.
type readMem struct{ memTarget }

func (t *readMem) ReadAt(p []byte, off int64) (int, error) { return copy(p, t.b[off:]), nil }

// Through Changes a target ends as if written directly, and only the
// 4 KiB blocks of the disk's grid that differed were written.
func TestChanges(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{2})
	old := make([]byte, 1<<20)
	rng.Read(old)
	tg := &readMem{memTarget{b: bytes.Clone(old)}}
	c := &Changes{T: tg}
	want := bytes.Clone(old)
	// The same bytes, unaligned: nothing written.
	if _, err := c.WriteAt(old[1000:300000], 1000); err != nil || c.Written() != 0 {
		t.Fatalf("rewriting the same bytes wrote %d (%v)", c.Written(), err)
	}
	// One byte changed in block 10, and a run across blocks 20-22.
	p := bytes.Clone(old[5000:100000])
	p[10*4096+7-5000] ^= 1
	for i := 20*4096 + 100; i < 22*4096+5; i++ {
		p[i-5000] ^= 0xff
	}
	copy(want[5000:], p)
	if _, err := c.WriteAt(p, 5000); err != nil {
		t.Fatal(err)
	}
	if c.Written() != 4*4096 || tg.written.Load() != 4*4096 {
		t.Errorf("wrote %d bytes (the target saw %d), want the 4 blocks that differ", c.Written(), tg.written.Load())
	}
	if err := c.Zero(40*4096, 3*4096); err != nil {
		t.Fatal(err)
	}
	clear(want[40*4096 : 43*4096])
	if !bytes.Equal(tg.b, want) {
		t.Error("the target does not hold what was written")
	}
	before := c.Written()
	if err := c.Zero(40*4096, 3*4096); err != nil || c.Written() != before {
		t.Errorf("zeroing zeros wrote %d bytes (%v)", c.Written()-before, err)
	}
}
