package udf

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fuzzSize is the size of the fuzzed volumes: the seed's bytes, then
// zeros.
const fuzzSize = 4 << 20

func vfsOf(f *Files) vfs.Files {
	if f == nil {
		return nil
	}
	return vfs.Adapt(f, entry, false)
}

// FuzzUDF opens b (then zeros) as UDF, detects, names and walks it, as
// listing and extracting would: every error is fine, a panic or a
// runaway is not. Seeds: a small genisoimage bridge disc and a mkudffs volume of
// 512-byte blocks udfclient filled, cut by seed.
//
// A fuzz worker makes none: the coordinator alone uses f.Add's seeds.
func FuzzUDF(f *testing.F) {
	if w := flag.Lookup("test.fuzzworker"); w == nil || w.Value.String() != "true" {
		seeds(f)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: fuzzSize}
		tooltest.FuzzUsage(Detect(r, r.Size))
		identify(r, r.Size)
		fs, err := OpenFiles(r, r.Size)
		tooltest.FuzzFiles(t, vfsOf(fs), err)
	})
}

func seeds(f *testing.F) {
	// A small tree: a directory, a file over a block, a Unicode name.
	src := f.TempDir()
	os.MkdirAll(filepath.Join(src, "dir", "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "dir", "two-blocks"), bytes.Repeat([]byte("x"), 2100), 0o644)
	os.WriteFile(filepath.Join(src, "dir", "sub", "file"), []byte("u"), 0o644)
	os.WriteFile(filepath.Join(src, "empty"), nil, 0o644)
	img, _, _ := udfclientFill(f, "0x0201", 512, src, 8<<20)
	b, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed(f, b))
	os.WriteFile(filepath.Join(src, "dir", "Ünï ✓"), []byte("u"), 0o644) // udfclient writes no such name
	f.Add(seed(f, bridge(f, src)))
}

// seed is a volume cut where its last partition ends (the anchor at
// sector 256 is read first; the rest, mostly zeros and copies, would
// only slow the fuzzer down).
func seed(t testing.TB, b []byte) []byte {
	v, err := open(bytes.NewReader(b), int64(len(b)))
	if err != nil || v.mapErr != nil {
		t.Fatalf("a seed: %v %v", err, v.mapErr)
	}
	end := int64(0)
	for _, p := range v.parts {
		end = max(end, p.phys(p.size))
	}
	return bytes.TrimRight(b[:end], "\x00")
}
