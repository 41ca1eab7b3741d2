package restore

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

// Copy puts exactly the runs asked for at their new offset, in pieces
// larger and smaller than its own, and nothing else.
func TestCopyRuns(t *testing.T) {
	src := make([]byte, 40<<20)
	rand.NewChaCha8([32]byte{1}).Read(src)
	runs := []block.Extent{{Off: 0, Len: 4096}, {Off: 1 << 20, Len: 17<<20 + 512}, {Off: 30 << 20, Len: 1}}
	const to = 3 << 20
	tg := &memTarget{b: make([]byte, to+len(src))}
	p := &countProgress{}
	if err := Copy(context.Background(), bytes.NewReader(src), tg, runs, to, Options{Workers: 3, Progress: p}); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(tg.b))
	for _, r := range runs {
		copy(want[to+r.Off:], src[r.Off:r.End()])
	}
	if !bytes.Equal(tg.b, want) {
		t.Error("the target does not hold exactly the runs copied")
	}
	if p.total.Load() != 17<<20+512+4097 || p.done.Load() != p.total.Load() {
		t.Errorf("progress %d of %d", p.done.Load(), p.total.Load())
	}
}
