//go:build linux

package resize

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
	"github.com/platter-dev/platter/internal/view"
)

// fileDev is a file as a view.Device (read-only use) or a Device.
type fileDev struct {
	*os.File
	size int64
}

func (f *fileDev) Size() int64 { return f.size }

func openDev(t testing.TB, path string, write bool) *fileDev {
	t.Helper()
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return &fileDev{File: f, size: st.Size()}
}

// fixture makes a file of size bytes whose first 32 MiB are garbage,
// as a used disk's free space holds, and the rest a hole.
func fixture(t testing.TB, size int64) string {
	t.Helper()
	g := min(size, 32<<20)
	p := tooltest.Garbage(t, g)
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// materialize writes the first n bytes of r to a new sparse file of
// size bytes (all-zero blocks left as holes) and returns its path.
func materialize(t testing.TB, r io.ReaderAt, n, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "out.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < n; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), n-off)]
		if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func fileHash(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// writeTree fills dir with what a test filesystem holds: many small
// files, some larger ones, directories, symlinks, modes, owners (where
// owners is set) and times.
func writeTree(t testing.TB, dir string, owners bool) {
	t.Helper()
	x := uint64(12345)
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			x = x*6364136223846793005 + 1442695040888963407
			b[i] = byte(x >> 56)
		}
		return b
	}
	mk := func(p string, b []byte, mode os.FileMode) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(full, mode)
	}
	for i := 0; i < 300; i++ {
		mk(fmt.Sprintf("many/d%02d/f%03d.txt", i%12, i), data(i*37%5000), 0o644)
	}
	for i, n := range []int{0, 1, 4095, 4096, 4097, 65537, 1 << 20, 3<<20 + 5} {
		mk(fmt.Sprintf("sizes/s%d.bin", i), data(n), 0o600)
	}
	mk("bin/tool", data(9000), 0o755)
	mk("private/key", []byte("secret\n"), 0o400)
	os.MkdirAll(filepath.Join(dir, "empty/dir"), 0o700)
	os.Symlink("../sizes/s3.bin", filepath.Join(dir, "bin/link"))
	os.Symlink("/nowhere/at/all", filepath.Join(dir, "dangling"))
	stamp := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		if owners {
			os.Lchown(p, 1000+len(p)%3, 100+len(p)%2)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			stamp = stamp.Add(time.Hour + 7*time.Second)
			os.Chtimes(p, stamp, stamp)
		}
		return nil
	})
	// Directories' times last: writing into them changed them.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() && p != dir {
			os.Chtimes(p, stamp, stamp)
		}
		return err
	})
}

// fullManifest describes every entry below root: type, mode, owner,
// modification time, and contents or link target.
func fullManifest(t testing.TB, root string) map[string]string {
	t.Helper()
	m := tooltest.Manifest(t, root)
	for rel, v := range m {
		fi, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		mt := fi.ModTime().UTC().Format(time.RFC3339Nano)
		if fi.Mode()&os.ModeSymlink != 0 {
			mt = "" // symlinks' own times are not what a tree copy keeps
		}
		m[rel] = fmt.Sprintf("%s mode=%v uid=%d gid=%d mtime=%s", v, fi.Mode(), st.Uid, st.Gid, mt)
	}
	return m
}

// sameIdentity fails the test unless blkid gives both files the same
// UUID and label.
func sameIdentity(t testing.TB, a, b string) {
	t.Helper()
	for _, k := range []string{"UUID", "LABEL"} {
		x, y := blkidValue(t, a, k), blkidValue(t, b, k)
		if x != y {
			t.Errorf("blkid %s: %q before, %q after", k, x, y)
		}
	}
}

func blkidValue(t testing.TB, p, key string) string {
	t.Helper()
	// blkid exits 2 when the value is missing: that is an answer.
	out, _ := execOut("blkid", "-p", "-o", "value", "-s", key, p)
	return strings.TrimSpace(out)
}

func execOut(name string, args ...string) (string, error) {
	out, err := tool(context.Background(), "", nil, name, args...)
	return out, err
}

var _ view.Device = (*fileDev)(nil)
var _ Device = (*fileDev)(nil)
