package blockdev

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// Whatever the write sizes, the file holds exactly the bytes written,
// through O_DIRECT and through the page-cache fallback alike.
func TestSeqWriter(t *testing.T) {
	for _, direct := range []bool{true, false} {
		for _, total := range []int{0, 1, 4095, 4096, 64 << 10, 1<<20 + 3, 5<<20 + 4097} {
			path := filepath.Join(t.TempDir(), "out")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			w := NewSeqWriter(f, 1<<20)
			if direct && w.direct == nil {
				t.Fatalf("%s refuses O_DIRECT; this test needs a filesystem that takes it", path)
			}
			if !direct && w.direct != nil {
				w.direct.Close()
				w.direct = nil
			}
			rng := rand.New(rand.NewSource(int64(total)))
			want := make([]byte, total)
			rng.Read(want)
			for p := want; len(p) > 0; {
				n := min(len(p), 1+rng.Intn(300<<10))
				if k, err := w.Write(p[:n]); k != n || err != nil {
					t.Fatalf("write: %d, %v", k, err)
				}
				p = p[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("direct=%v, %d bytes: read back %d bytes (%v), not what was written", direct, total, len(got), err)
			}
		}
	}
}
