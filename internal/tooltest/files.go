package tooltest

import (
	"io"
	"path"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// FuzzFiles walks a fuzzed filesystem's files, as listing and extracting
// them would, for a fuzz target: it stats every entry it reaches, lists
// every directory and reads into every regular file (in order, then at
// offsets before, inside and far past its end). Errors are fine; a panic,
// a runaway or a file that reads more bytes than its size is not.
func FuzzFiles(t testing.TB, fs vfs.Files, err error) {
	t.Helper()
	if err != nil {
		return
	}
	budget := 300 // entries visited: a damaged tree can hold itself
	buf := make([]byte, 8192)
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		budget--
		if budget < 0 || depth > 8 {
			return
		}
		fi, err := fs.Stat(p)
		if err != nil {
			return
		}
		switch {
		case fi.Mode.IsDir():
			ents, err := fs.ReadDir(p)
			if err != nil {
				return
			}
			budget -= len(ents) / 16
			for _, e := range ents {
				if e.Name != "" && e.Name != "." && e.Name != ".." && !strings.ContainsRune(e.Name, '/') {
					walk(path.Join(p, e.Name), depth+1)
				}
			}
		case fi.Mode.IsRegular():
			rc, err := fs.Open(p)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, io.LimitReader(rc, 256<<10))
			if n > fi.Size {
				t.Fatalf("%s: read %d bytes of a %d-byte file", p, n, fi.Size)
			}
			ra := rc.(io.ReaderAt)
			for _, off := range []int64{fi.Size - 1, fi.Size / 2, fi.Size - 5000, 1 << 30} {
				ra.ReadAt(buf, off)
			}
			rc.Close()
		}
	}
	walk("", 0)
}
