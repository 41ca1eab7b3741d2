package e2e

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A 16 TiB filesystem (the largest sparse file ext4 holds here) is imaged
// in bounded memory: its 512 MiB allocation bitmap is read a window at a
// time, never held. The speed issue's target is peak memory under 300 MiB
// on any disk size. The used bytes must still be exactly what the
// filesystem counts, and every file must come back.
func TestHugeFilesystemBoundedMemory(t *testing.T) {
	dir := t.TempDir()
	const size = 16<<40 - 1<<20
	src := sparseFile(t, filepath.Join(dir, "huge.img"), size)

	// Files of several sizes, one big enough to span chunks. -N keeps
	// the inode tables small: they are all "used" and would take minutes
	// to read back as zeros.
	files := filepath.Join(dir, "files")
	os.MkdirAll(filepath.Join(files, "a", "b"), 0o755)
	for i, n := range []int{0, 1, 4095, 4097, 1 << 20, 9<<20 + 7} {
		b := make([]byte, n)
		rand.Read(b)
		os.WriteFile(filepath.Join(files, "a", strconv.Itoa(i)), b, 0o644)
		os.WriteFile(filepath.Join(files, "a", "b", "copy-"+strconv.Itoa(i)), b, 0o644)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-N", "2097152", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "-d", files, src)

	img := filepath.Join(dir, "huge.plat")
	start := time.Now()
	rss := peakRSS(t, "create", "--progress", "none", src, img)
	t.Logf("create of a 16 TiB filesystem: %v, peak RSS %d MiB", time.Since(start).Round(time.Millisecond), rss>>10)
	if rss > 300<<10 {
		t.Errorf("peak RSS %d MiB, want under 300 MiB", rss>>10)
	}

	// Used bytes as ext4 counts them: (blocks - free blocks) * block size.
	head := sh(t, "dumpe2fs", "-h", src)
	field := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindStringSubmatch(head)
		if m == nil {
			t.Fatalf("dumpe2fs -h has no %q:\n%s", name, head)
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		return v
	}
	want := (field("Block count") - field("Free blocks")) * field("Block size")
	if got := info(t, img).Partitions[0].UsedBytes; got != want {
		t.Errorf("used_bytes %d, ext4 counts %d", got, want)
	}

	ok(t, "verify", img)
	back := filepath.Join(dir, "back.img")
	// The image's 512 MiB map is decoded as a stream and its free pages
	// are never touched.
	rss = peakRSS(t, "restore", "--yes", "--progress", "none", img, back)
	t.Logf("restore: peak RSS %d MiB", rss>>10)
	if rss > 300<<10 {
		t.Errorf("restore: peak RSS %d MiB, want under 300 MiB", rss>>10)
	}
	if st, err := os.Stat(back); err != nil || st.Size() != size {
		t.Fatalf("restored %v, %v; want %d bytes", st, err, int64(size))
	}
	sameTree(t, files, extTree(t, back))
}

// peakRSS runs platter under GNU time and returns its peak resident set
// in KiB. (The rusage of a child started straight from this test counts
// the test process's own memory: Linux folds the pre-exec address space,
// shared by vfork, into the child's maximum.)
func peakRSS(t *testing.T, args ...string) int64 {
	t.Helper()
	out := filepath.Join(t.TempDir(), "rss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", out, platter}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("platter %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	kib, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("GNU time wrote %q", b)
	}
	return kib
}
