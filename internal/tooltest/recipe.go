package tooltest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recipe writes the files of a test filesystem below dir (a mounted one,
// or a tree to copy in), making directories as needed. A failure fails
// the test.
type recipe struct {
	t   testing.TB
	dir string
}

func (r recipe) file(p string, b []byte) {
	r.t.Helper()
	r.mkdir(path.Dir(p))
	if err := os.WriteFile(filepath.Join(r.dir, p), b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r recipe) mkdir(p string) {
	r.t.Helper()
	if err := os.MkdirAll(filepath.Join(r.dir, p), 0o755); err != nil {
		r.t.Fatal(err)
	}
}

// names writes the names every recipe holds, data making its files'
// bytes: a tree levels deep and long names in several scripts.
func (r recipe) names(levels int, data func(n int64) []byte) {
	r.t.Helper()
	deep := "Deep"
	for i := 1; i <= levels; i++ {
		deep = path.Join(deep, fmt.Sprintf("level %02d", i))
	}
	r.file(path.Join(deep, "deep file.txt"), []byte("at the bottom\n"))
	r.file("Ünïcödé ✓ 名前.txt", data(1000))
	r.file("Ελληνικά κείμενα/Ωμέγα.txt", data(77))
	r.file(strings.Repeat("Long náme ", 20)+"end.txt", data(10))
}

// sizes writes the sizes every recipe holds, data making its files'
// bytes: an empty file and an empty directory, files of 1, 2 and 7
// clusters and a byte either side, and a file of 40 clusters
// ("big.bin").
func (r recipe) sizes(cluster int64, data func(n int64) []byte) {
	r.t.Helper()
	r.file("empty.txt", nil)
	r.mkdir("empty dir")
	for _, k := range []int64{1, 2, 7} {
		r.file(fmt.Sprintf("exact/x%d.bin", k), data(k*cluster))
		r.file(fmt.Sprintf("exact/x%d-minus.bin", k), data(k*cluster-1))
		r.file(fmt.Sprintf("exact/x%d-plus.bin", k), data(k*cluster+1))
	}
	r.file("big.bin", data(40*cluster+17))
}

// stamp sets the times of the files (not directories) below dir to
// times, one after the other in turn.
func (r recipe) stamp(times []time.Time) {
	i := 0
	filepath.Walk(r.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			os.Chtimes(p, times[i%len(times)], times[i%len(times)])
			i++
		}
		return nil
	})
}
