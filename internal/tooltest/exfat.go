package tooltest

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ExfatLoop attaches the size bytes of img from byte off (to its end if
// size is 0) to a loop device, read-only if ro, for exfat-fuse, which,
// run as root, mounts block devices only. The func detaches it, once
// exfat-fuse has let go (it writes its last sectors as it exits, after
// the unmount returns); the end of the test also runs it.
func ExfatLoop(t testing.TB, img string, off, size int64, ro bool) (dev string, detach func()) {
	t.Helper()
	args := []string{"-f", "--show", "-o", strconv.FormatInt(off, 10)}
	if size > 0 {
		args = append(args, "--sizelimit", strconv.FormatInt(size, 10))
	}
	if ro {
		args = append(args, "-r")
	}
	dev = strings.TrimSpace(Run(t, "losetup", append(args, img)...))
	done := false
	detach = func() {
		if done {
			return
		}
		done = true
		for try := 0; try < 100; try++ {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err == nil || !strings.Contains(string(out), "busy") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for try := 0; try < 100; try++ {
			if _, err := os.Stat("/sys/block/" + filepath.Base(dev) + "/loop/backing_file"); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Cleanup(detach)
	return dev, detach
}

// ExfatMount mounts the exFAT on dev with exfat-fuse (read-only if ro)
// and returns the mount point and a func that unmounts it, which the end
// of the test also runs.
func ExfatMount(t testing.TB, dev string, ro bool) (mnt string, umount func()) {
	t.Helper()
	mnt = t.TempDir()
	args := []string{dev, mnt}
	if ro {
		args = append([]string{"-o", "ro"}, args...)
	}
	Run(t, "mount.exfat-fuse", args...)
	done := false
	umount = func() {
		if done {
			return
		}
		done = true
		// The kernel may hold the mount a moment after the last use.
		for try := 0; ; try++ {
			out, err := exec.Command("fusermount", "-u", mnt).CombinedOutput()
			if err == nil || !mounted(mnt) {
				return
			}
			if try == 50 {
				t.Errorf("fusermount -u %s: %v\n%s", mnt, err, out)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Cleanup(umount)
	return mnt, umount
}

// mounted says whether a filesystem is mounted on mnt (or cannot tell).
func mounted(mnt string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	return err != nil || strings.Contains(string(b), " "+mnt+" ")
}

// ExfatFill writes the files of an exFAT test volume mounted at mnt with
// clusters of cluster bytes: a deep tree, long names in several scripts
// (one past the Basic Multilingual Plane, one of 255 characters, one of
// 255 bytes of UTF-8), names that differ in case only in other
// directories, empty files and an empty directory, files of exact
// cluster multiples and a byte either side, many files in one directory,
// files written in turns a cluster at a time (their clusters interleave:
// FAT chains) beside files written at once (in one piece: NoFatChain),
// files deleted among them, and times from 1980 to 2099 with odd seconds
// and fractions.
func ExfatFill(t testing.TB, mnt string, cluster int64, many int) {
	t.Helper()
	rng := rand.New(rand.NewSource(cluster + int64(many)))
	rnd := func(n int64) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	// Keep this order: in another, fsck.exfat 1.2.0 looped on a volume
	// of 512-byte clusters, reporting a name entry of the root directory
	// it could not find.
	r := recipe{t, mnt}
	r.names(16, rnd)
	r.file("emoji 😀 outside the BMP.txt", rnd(5))
	r.file(strings.Repeat("x", 255), rnd(3))       // 255 characters: 17 name entries
	r.file(strings.Repeat("名", 85), rnd(4))        // 85 characters, 255 bytes of UTF-8
	r.file("case/Sub/File.TXT", []byte("upper\n")) // looked up in other cases
	r.file("case/sub2/file.txt", []byte("lower\n"))
	r.sizes(cluster, rnd)
	for i := 0; i < many; i++ {
		name := fmt.Sprintf("many/f%05d.txt", i)
		if i%4 == 0 {
			name = fmt.Sprintf("many/%05d a longer name that takes three entries.txt", i)
		}
		r.file(name, []byte(fmt.Sprintf("file %d\n", i)))
	}
	// Holes, then files written in turns.
	for i := 0; i < 10; i++ {
		r.file(fmt.Sprintf("holes/h%02d", i), rnd(2*cluster))
	}
	for i := 0; i < 10; i += 2 {
		if err := os.Remove(filepath.Join(mnt, fmt.Sprintf("holes/h%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	r.mkdir("frag")
	var fs []*os.File
	for i := 0; i < 3; i++ {
		f, err := os.Create(filepath.Join(mnt, fmt.Sprintf("frag/interleaved %d.bin", i)))
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for round := 0; round < 6; round++ {
		for i, f := range fs {
			if _, err := f.Write(rnd(cluster + int64(i*100))); err != nil {
				t.Fatal(err)
			}
			f.Sync()
		}
	}
	for _, f := range fs {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.file("frag/into the holes.bin", rnd(7*cluster+5))
	r.file("gone/deleted.bin", rnd(3*cluster))
	r.file("gone/kept.txt", []byte("kept\n"))
	if err := os.Remove(filepath.Join(mnt, "gone/deleted.bin")); err != nil {
		t.Fatal(err)
	}
	r.stamp([]time.Time{
		time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
		// exfat-fuse takes 2100 for a leap year: past it, it writes
		// and reads the day before (the entry says so).
		time.Date(2099, 12, 31, 23, 59, 58, 0, time.UTC),
		time.Date(2024, 2, 29, 12, 34, 57, 730_000_000, time.UTC),
	})
}
