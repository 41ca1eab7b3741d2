package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// runEnv runs platter with env added to its environment; it returns its
// output, exit code and the CPU time it took (user + system: on a busy
// machine a far steadier measure than the wall clock).
func runEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int, cpu time.Duration) {
	t.Helper()
	cmd := exec.Command(platter, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run platter: %v", err)
	}
	if strings.Contains(e.String(), "goroutine ") || strings.Contains(e.String(), "panic:") {
		t.Fatalf("platter %v panicked:\n%s", args, e.String())
	}
	return o.String(), e.String(), code, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// cacheEntries are the converted images in the cache directory dir.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(dir, "*.platter"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got
}

// TestClonezillaCache: a Clonezilla directory read a second time is read
// from the cache of converted images, not converted again; a file of it
// touched or replaced converts it anew; a damaged cached image is found
// and made again; PLATTER_CACHE_MAX=0 and --no-cache leave nothing.
func TestClonezillaCache(t *testing.T) {
	if _, err := exec.LookPath("ocs-sr"); err != nil {
		t.Fatal("ocs-sr (Debian's clonezilla) is needed for this test and is not installed")
	}
	src := fixture(t, "clonezilla-gpt.sh")
	// A copy of its own: this test changes the directory's files.
	dir := filepath.Join(t.TempDir(), "img")
	sh(t, "cp", "-a", src+".cz", dir)
	cache := filepath.Join(t.TempDir(), "home", "cache") // made by platter
	env := []string{"PLATTER_CACHE=" + cache}
	p2 := dir + ":2"

	// ls, checking what it lists and says.
	ls := func(args ...string) (stderr string, cpu time.Duration) {
		t.Helper()
		o, e, code, cpu := runEnv(t, env, append(append([]string{"-v"}, args...), "ls", p2, "/")...)
		if code != 0 || !strings.Contains(o, "empty.txt") {
			t.Fatalf("ls %s: exit %d\n%s%s", p2, code, o, e)
		}
		return e, cpu
	}
	// files extracts the ext4's files and compares them with the source's.
	files := func() {
		t.Helper()
		got := filepath.Join(t.TempDir(), "out")
		if o, e, code, _ := runEnv(t, env, "extract", p2, "/", got); code != 0 {
			t.Fatalf("extract: exit %d\n%s%s", code, o, e)
		}
		os.RemoveAll(filepath.Join(got, "lost+found"))
		sameTree(t, filepath.Join(src+".files", "p2"), got)
	}
	converted := func(stderr, what string) {
		t.Helper()
		if !strings.Contains(stderr, "converted in") || !strings.Contains(stderr, "into the cache") {
			t.Errorf("%s: not converted into the cache:\n%s", what, stderr)
		}
	}
	cached := func(stderr, what string) {
		t.Helper()
		if !strings.Contains(stderr, "read from the cache") || strings.Contains(stderr, "converted in") {
			t.Errorf("%s: not read from the cache:\n%s", what, stderr)
		}
	}

	// First: converted, one entry, 0600 in a 0700 directory.
	e, firstCPU := ls()
	converted(e, "first ls")
	ents := cacheEntries(t, cache)
	if len(ents) != 1 {
		t.Fatalf("after the first ls the cache holds %v, want one image", ents)
	}
	for path, want := range map[string]os.FileMode{cache: 0o700, ents[0]: 0o600} {
		if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %04o (%v)", path, st.Mode().Perm(), want, err)
		}
	}
	if out, _, code, _ := runEnv(t, nil, "info", ents[0]); code != 0 || !strings.Contains(out, "ext4") {
		t.Errorf("the cached conversion is not an image platter reads: exit %d\n%s", code, out)
	}

	// Second: from the cache, and much cheaper. Each is measured at its
	// best of three: a conversion, with --no-cache, against an open of
	// the cached image.
	e, cpu := ls()
	cached(e, "second ls")
	best := func(f func() time.Duration) time.Duration {
		b := f()
		for range 2 {
			b = min(b, f())
		}
		return b
	}
	convertCPU := best(func() time.Duration {
		e, cpu := ls("--no-cache")
		if !strings.Contains(e, "not cached (--no-cache)") {
			t.Errorf("ls --no-cache:\n%s", e)
		}
		return cpu
	})
	cachedCPU := best(func() time.Duration { _, cpu := ls(); return cpu })
	t.Logf("CPU: first ls %v, second %v; best of three: converting %v, from the cache %v", firstCPU, cpu, convertCPU, cachedCPU)
	if cachedCPU*2 > convertCPU {
		t.Errorf("ls from the cache took %v of CPU, converting %v: want well under half", cachedCPU, convertCPU)
	}
	if n := len(cacheEntries(t, cache)); n != 1 {
		t.Errorf("--no-cache and cached reads changed the cache: %d images", n)
	}
	files()

	// A volume touched: converted anew (its own entry).
	vols, _ := filepath.Glob(filepath.Join(dir, "*p2.*-ptcl-img.gz.*"))
	if len(vols) == 0 {
		t.Fatalf("no volumes of partition 2 in %s", dir)
	}
	sort.Strings(vols)
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(vols[0], later, later); err != nil {
		t.Fatal(err)
	}
	e, _ = ls()
	converted(e, "ls after a volume was touched")
	e, _ = ls()
	cached(e, "ls again after a volume was touched")

	// A volume replaced by a copy of itself (same bytes, a new file).
	b, err := os.ReadFile(vols[1])
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(vols[1])
	tmp := filepath.Join(dir, "replacement")
	os.WriteFile(tmp, b, 0o644)
	os.Chtimes(tmp, st.ModTime(), st.ModTime())
	if err := os.Rename(tmp, vols[1]); err != nil {
		t.Fatal(err)
	}
	e, _ = ls()
	converted(e, "ls after a volume was replaced")
	if n := len(cacheEntries(t, cache)); n != 3 {
		t.Errorf("the cache holds %d images, want 3 (one per state of the directory)", n)
	}

	// The newest entry's index damaged: image.Open finds it, it is
	// removed and converted again, and the files are still the source's.
	newest := func() string {
		t.Helper()
		var path string
		var at time.Time
		for _, p := range cacheEntries(t, cache) {
			if st, err := os.Stat(p); err == nil && st.ModTime().After(at) {
				path, at = p, st.ModTime()
			}
		}
		return path
	}
	entry := newest()
	damage := func(off int64) {
		t.Helper()
		f, err := os.OpenFile(entry, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 16), off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	st, _ = os.Stat(entry)
	damage(st.Size() - 200) // in the index, the metadata or the footer
	e, _ = ls()
	if !strings.Contains(e, "is damaged") || !strings.Contains(e, "converting again") {
		t.Errorf("ls of a damaged cached image did not say so:\n%s", e)
	}
	converted(e, "ls after the cached image was damaged")
	files()

	// A data frame damaged: found when read (restore reads them all),
	// exit 3, the entry removed; the next restore converts anew and gives
	// the disk.
	damage(st.Size() / 2)
	out := filepath.Join(t.TempDir(), "disk.img")
	o, e, code, _ := runEnv(t, env, "-v", "restore", "--yes", dir, out)
	if code != 3 || !strings.Contains(e, "was removed") {
		t.Errorf("restore from a cached image with a damaged frame: exit %d, want 3 and the image removed\n%s%s", code, o, e)
	}
	if _, err := os.Lstat(entry); err == nil {
		t.Errorf("the damaged cached image %s is still there", entry)
	}
	o, e, code, _ = runEnv(t, env, "-v", "restore", "--yes", dir, out)
	if code != 0 {
		t.Fatalf("restore after the damaged image was removed: exit %d\n%s%s", code, o, e)
	}
	converted(e, "restore after the damaged image was removed")
	sh(t, "sgdisk", "-v", out)
	files()

	// PLATTER_CACHE_MAX=0, and --no-cache: nothing is written.
	for _, c := range []struct {
		env  string
		args []string
	}{{"PLATTER_CACHE_MAX=0", nil}, {"", []string{"--no-cache"}}} {
		empty := filepath.Join(t.TempDir(), "cache")
		env := []string{"PLATTER_CACHE=" + empty}
		if c.env != "" {
			env = append(env, c.env)
		}
		args := append(append([]string{"-v"}, c.args...), "ls", p2, "/")
		o, e, code, _ := runEnv(t, env, args...)
		if code != 0 || !strings.Contains(o, "empty.txt") || !strings.Contains(e, "not cached") {
			t.Errorf("ls with %s %v: exit %d\n%s%s", c.env, c.args, code, o, e)
		}
		if got, _ := filepath.Glob(filepath.Join(empty, "*")); len(got) != 0 {
			t.Errorf("ls with %s %v left %v", c.env, c.args, got)
		}
	}

	// platter cache clear empties it.
	if o, e, code, _ := runEnv(t, env, "cache", "clear"); code != 0 || !strings.Contains(o, "removed") {
		t.Errorf("cache clear: exit %d\n%s%s", code, o, e)
	}
	if got := cacheEntries(t, cache); len(got) != 0 {
		t.Errorf("cache clear left %v", got)
	}
}
