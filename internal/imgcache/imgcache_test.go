package imgcache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// source writes files a, b in a new directory and returns their paths.
func source(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range []string{"a", "b"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte("contents of "+n), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return dir, paths
}

func key(t *testing.T, paths []string) string {
	t.Helper()
	k, err := Key("test", paths)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKey(t *testing.T) {
	dir, paths := source(t)
	k := key(t, paths)
	if k2 := key(t, []string{paths[1], paths[0]}); k2 != k {
		t.Errorf("the key depends on the files' order")
	}
	if k2, _ := Key("other", paths); k2 == k {
		t.Errorf("another kind gives the same key")
	}
	if !validKey(k) {
		t.Fatalf("Key made %q, which validKey refuses", k)
	}
	// The same bytes, the same size, the time put back: still another
	// file (its change time moved).
	st, _ := os.Stat(paths[0])
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(paths[0], []byte("contents of X"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(paths[0], st.ModTime(), st.ModTime())
	changed := key(t, paths)
	if changed == k {
		t.Errorf("a file rewritten with its time put back gives the same key")
	}
	// Only touched.
	now := time.Now().Add(time.Hour)
	os.Chtimes(paths[1], now, now)
	touched := key(t, paths)
	if touched == changed {
		t.Errorf("a touched file gives the same key")
	}
	// Replaced by another file of the same size and time (a new inode).
	st, _ = os.Stat(paths[1])
	tmp := paths[1] + ".new"
	os.WriteFile(tmp, []byte("contents of b"), 0o644)
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if err := os.Rename(tmp, paths[1]); err != nil {
		t.Fatal(err)
	}
	replaced := key(t, paths)
	if replaced == touched {
		t.Errorf("a replaced file gives the same key")
	}
	// A file added.
	c := filepath.Join(dir, "c")
	os.WriteFile(c, nil, 0o644)
	if key(t, append(paths, c)) == replaced {
		t.Errorf("a file added gives the same key")
	}
	if _, err := Key("test", []string{filepath.Join(dir, "missing")}); err == nil {
		t.Errorf("a missing file has a key")
	}
}

// put writes an entry of key holding data and commits it.
func put(t *testing.T, c *Cache, k string, data []byte) {
	t.Helper()
	e, err := c.Put(k, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := e.Commit(); err != nil {
		t.Fatal(err)
	}
	e.Abort() // a no-op after Commit
	e.File().Close()
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestPutGet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "deep", "cache")
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("cache directory mode %04o, want 0700", m)
	}
	_, paths := source(t)
	k := key(t, paths)
	if _, ok := c.Get(k); ok {
		t.Fatal("an empty cache has an entry")
	}
	put(t, c, k, []byte("image"))
	if m := mode(t, c.EntryPath(k)); m != 0o600 {
		t.Errorf("entry mode %04o, want 0600", m)
	}
	f, ok := c.Get(k)
	if !ok {
		t.Fatal("the entry just committed is not found")
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "image" {
		t.Errorf("entry holds %q", b)
	}
	if err := c.Remove(k); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(k); ok {
		t.Error("a removed entry is found")
	}
	if _, ok := c.Get("../../etc/passwd"); ok {
		t.Error("a key that is a path is found")
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, paths := source(t)
	k := key(t, paths)
	e, err := c.Put(k, 10)
	if err != nil {
		t.Fatal(err)
	}
	e.Write(bytes.Repeat([]byte{1}, 3<<20))
	e.Abort()
	e.Abort()
	if err := e.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("Abort left %v", ents)
	}
	if _, ok := c.Get(k); ok {
		t.Error("an aborted entry is found")
	}
}

func TestStaleTempRemoved(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	k := key(t, func() []string { _, p := source(t); return p }())
	live, err := c.Put(k, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	// What a killed writer leaves: a temporary file nobody holds.
	stale := filepath.Join(dir, tmpPrefix+k+"-dead")
	os.WriteFile(stale, []byte("half"), 0o600)
	if _, err := c.Prune(""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Error("a dead writer's temporary file was kept")
	}
	if _, err := os.Lstat(live.f.Name()); err != nil {
		t.Errorf("a live writer's temporary file was removed: %v", err)
	}
}

func TestPruneLRU(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, 250)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var keys []string
	for i := 0; i < 3; i++ {
		_, paths := source(t)
		keys = append(keys, key(t, paths))
	}
	put(t, c, keys[0], make([]byte, 100))
	put(t, c, keys[1], make([]byte, 100))
	// The oldest is used, so the second is now the least recently used.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(c.EntryPath(keys[0]), old, old)
	os.Chtimes(c.EntryPath(keys[1]), old.Add(time.Minute), old.Add(time.Minute))
	f, ok := c.Get(keys[0])
	if !ok {
		t.Fatal("entry 0 is gone")
	}
	f.Close()
	put(t, c, keys[2], make([]byte, 100)) // 300 bytes: over the limit
	if _, err := os.Lstat(c.EntryPath(keys[1])); err == nil {
		t.Error("the least recently used entry was kept")
	}
	for _, i := range []int{0, 2} {
		if _, err := os.Lstat(c.EntryPath(keys[i])); err != nil {
			t.Errorf("entry %d was removed: %v", i, err)
		}
	}
	if n, _ := c.Usage(); n != 200 {
		t.Errorf("usage %d, want 200", n)
	}
	// An entry bigger than the whole cache is refused up front.
	if _, err := c.Put(keys[1], 251); !errors.Is(err, ErrNoRoom) {
		t.Errorf("Put over the limit: %v, want ErrNoRoom", err)
	}
	// A name not the cache's is left alone.
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, make([]byte, 1000), 0o600)
	if freed, err := c.Clear(); err != nil || freed != 200 {
		t.Errorf("Clear freed %d, %v; want 200", freed, err)
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("Clear removed a file not its own: %v", err)
	}
}

func TestConcurrentPut(t *testing.T) {
	dir := t.TempDir()
	_, paths := source(t)
	k := key(t, paths)
	data := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 2<<20) }
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each its own Cache, as separate processes have.
			c, err := Open(dir, 1<<30)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			e, err := c.Put(k, 2<<20)
			if err != nil {
				t.Error(err)
				return
			}
			for off := 0; off < 2<<20; off += 64 << 10 {
				e.Write(data(i)[off : off+64<<10])
			}
			if err := e.Commit(); err != nil {
				t.Error(err)
			}
			// What this writer committed is whole, whoever won.
			b, _ := io.ReadAll(io.NewSectionReader(e.File(), 0, 4<<20))
			e.File().Close()
			if !bytes.Equal(b, data(i)) {
				t.Errorf("writer %d reads back %d bytes not its own", i, len(b))
			}
		}()
	}
	wg.Wait()
	c, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, ok := c.Get(k)
	if !ok {
		t.Fatal("no entry after concurrent Puts")
	}
	b, _ := io.ReadAll(f)
	f.Close()
	whole := false
	for i := 0; i < 4; i++ {
		whole = whole || bytes.Equal(b, data(i))
	}
	if !whole {
		t.Errorf("the entry (%d bytes) is not any one writer's whole image", len(b))
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("cache holds %d names, want the one entry", len(ents))
	}
}

func TestSymlinksRefused(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(real, link)
	if _, err := Open(link, 1<<20); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a symlinked cache directory: %v, want ErrUnsafe", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := Open(open, 1<<20); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a cache directory others may write: %v, want ErrUnsafe", err)
	}
	if _, err := Open(real, 0); !errors.Is(err, ErrDisabled) {
		t.Errorf("a limit of 0: %v, want ErrDisabled", err)
	}

	c, err := Open(real, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, paths := source(t)
	k := key(t, paths)
	// A planted entry that points elsewhere is not read, and is removed.
	secret := filepath.Join(base, "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	os.Symlink(secret, c.EntryPath(k))
	if _, ok := c.Get(k); ok {
		t.Error("a symlinked entry was opened")
	}
	if _, err := os.Lstat(c.EntryPath(k)); err == nil {
		t.Error("a symlinked entry was kept")
	}
	// A planted entry open to others is not one of ours.
	os.WriteFile(c.EntryPath(k), []byte("planted"), 0o644)
	os.Chmod(c.EntryPath(k), 0o644)
	if _, ok := c.Get(k); ok {
		t.Error("an entry readable by others was opened")
	}
	// Committing over a planted symlink replaces the name, never writes
	// through it.
	os.Symlink(secret, c.EntryPath(k))
	put(t, c, k, []byte("image"))
	if b, _ := os.ReadFile(secret); string(b) != "secret" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	f, ok := c.Get(k)
	if !ok {
		t.Fatal("no entry after Commit over a symlink")
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "image" {
		t.Errorf("entry holds %q", b)
	}
}

func TestNotOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory of another user") // the e2e suite runs as root
	}
	dir := filepath.Join(t.TempDir(), "theirs")
	os.Mkdir(dir, 0o700)
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 1<<20); !errors.Is(err, ErrUnsafe) {
		t.Errorf("another user's cache directory: %v, want ErrUnsafe", err)
	}
	c, err := Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, paths := source(t)
	k := key(t, paths)
	os.WriteFile(c.EntryPath(k), []byte("planted"), 0o600)
	os.Chown(c.EntryPath(k), 12345, 12345)
	if _, ok := c.Get(k); ok {
		t.Error("another user's entry was opened")
	}
}

func TestLimitAndDir(t *testing.T) {
	for s, want := range map[string]int64{"": DefaultLimit, "0": 0, "500M": 500 << 20, "20G": 20 << 30, "1GiB": 1 << 30, "4096": 4096} {
		t.Setenv("PLATTER_CACHE_MAX", s)
		if got, err := Limit(); err != nil || got != want {
			t.Errorf("PLATTER_CACHE_MAX=%q: %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"-1", "lots", "99999999T"} {
		t.Setenv("PLATTER_CACHE_MAX", s)
		if _, err := Limit(); err == nil {
			t.Errorf("PLATTER_CACHE_MAX=%q accepted", s)
		}
	}
	t.Setenv("PLATTER_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/x/cache")
	if d, _ := Dir(); d != "/x/cache/platter/converted" {
		t.Errorf("Dir with XDG_CACHE_HOME: %s", d)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/ann")
	if d, _ := Dir(); d != "/home/ann/.cache/platter/converted" {
		t.Errorf("Dir with HOME: %s", d)
	}
	t.Setenv("PLATTER_CACHE", "/srv/c")
	if d, _ := Dir(); d != "/srv/c" {
		t.Errorf("Dir with PLATTER_CACHE: %s", d)
	}
}
