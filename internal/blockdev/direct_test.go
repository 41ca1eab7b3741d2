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

// The direct handle is the open file itself, reopened, not whatever its
// name holds now: an image's .partial is created under a private name that
// is unlinked once the .partial name is linked to it, and before this test
// existed every image was written through the page cache for that reason.
func TestSeqWriterRenamed(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "private"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Link(f.Name(), filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	// A planted file under the old name must not be the one written.
	if err := os.WriteFile(f.Name(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := NewSeqWriter(f, 1<<20)
	if w.direct == nil {
		t.Fatalf("the writer of a file whose first name is gone does not use O_DIRECT")
	}
	want := bytes.Repeat([]byte("platter!"), 1<<18) // 2 MiB: two direct writes
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file holds %d bytes (%v), not the 2 MiB written", len(got), err)
	}
	if fi, err := os.Stat(f.Name()); err != nil || fi.Size() != 0 {
		t.Fatalf("the file now under the old name was written to (%v)", err)
	}
}
