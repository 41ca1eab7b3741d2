package blockdev

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mounts lists the mounted filesystems that use path: the device itself,
// one of its partitions, or — for a regular file — a loop device backed
// by the file (and that loop device's partitions).
func Mounts(path string) ([]Mount, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return nil, err
	}
	devs := map[string]bool{} // "major:minor" of every device to look for
	names := map[string]bool{real: true}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		addWithPartitions(devs, names, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	case unix.S_IFREG:
		fi, err := os.Stat(real)
		if err != nil {
			return nil, err
		}
		for _, loop := range loopsBackedBy(fi) {
			var ls unix.Stat_t
			if unix.Stat(loop, &ls) == nil {
				addWithPartitions(devs, names, unix.Major(uint64(ls.Rdev)), unix.Minor(uint64(ls.Rdev)))
				names[loop] = true
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point options ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 2 {
			continue
		}
		src := b[1]
		if rs, err := filepath.EvalSymlinks(src); err == nil {
			src = rs
		}
		if !devs[a[2]] && !names[src] {
			continue
		}
		ro := false
		for _, o := range strings.Split(a[5], ",") {
			if o == "ro" {
				ro = true
			}
		}
		out = append(out, Mount{Device: b[1], Point: unescape(a[4]), FSType: b[0], ReadOnly: ro})
	}
	return out, sc.Err()
}

// MountAt returns the filesystem mounted at dir (the last one, if
// several are stacked there).
func MountAt(dir string) (Mount, bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Mount{}, false, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Mount{}, false, err
	}
	var found Mount
	ok := false
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, cut := strings.Cut(line, " - ")
		a, f := strings.Fields(pre), strings.Fields(post)
		if !cut || len(a) < 5 || len(f) < 2 || unescape(a[4]) != abs {
			continue
		}
		found, ok = Mount{Device: f[1], Point: abs, FSType: f[0]}, true
	}
	return found, ok, nil
}

// addWithPartitions adds the device and its partitions, by number and by
// name: btrfs mounts show an anonymous device number in mountinfo, and
// only their source names the device.
func addWithPartitions(devs, names map[string]bool, major, minor uint32) {
	id := fmt.Sprintf("%d:%d", major, minor)
	devs[id] = true
	sys := "/sys/dev/block/" + id
	ents, err := os.ReadDir(sys)
	if err != nil {
		return
	}
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(sys, e.Name(), "dev")); err == nil {
			if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err == nil {
				devs[strings.TrimSpace(string(b))] = true
				names["/dev/"+e.Name()] = true
			}
		}
	}
}

// loopsBackedBy lists the loop devices whose backing file is file: the
// same file (device and inode), however it was named — relative, through
// a symlink or a hard link, or renamed since the loop device was set up
// (sysfs shows the backing file's current path).
func loopsBackedBy(file os.FileInfo) []string {
	ents, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, p := range ents {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		st, err := os.Stat(strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"))
		if err == nil && os.SameFile(st, file) {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return out
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SameFilesystem reports whether the files at a and b are on the same
// mounted filesystem.
func SameFilesystem(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}
