package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Swapped arguments are refused before anything is written: a device (or
// anything but a regular file) as IMAGE, a Platter image as SOURCE, an
// image as restore's TARGET with a non-image as IMAGE.
func TestSwappedArguments(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	before := readFile(t, img)

	back := filepath.Join(dir, "loop-backing")
	sh(t, "truncate", "-s", "64M", back)
	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", back))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

	for _, args := range [][]string{
		{"create", "--force", img, loop}, // image and device swapped
		{"create", img, loop},
		{"create", "--force", img, filepath.Join(dir, "new.platter")}, // an image as SOURCE
		{"create", disk, dir},                                         // a directory as IMAGE
	} {
		_, errOut, code := run(t, args...)
		if code != 2 || !(strings.Contains(errOut, "did you swap") || strings.Contains(errOut, "is a directory")) {
			t.Errorf("platter %s: exit %d, want 2 and a hint\n%s", strings.Join(args, " "), code, errOut)
		}
	}
	if st, err := os.Lstat(loop); err != nil || st.Mode()&os.ModeDevice == 0 {
		t.Fatalf("%s is no longer a device node: %v", loop, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.platter")); err == nil {
		t.Error("an image was made of an image")
	}
	_, errOut, code := run(t, "restore", "--progress", "none", disk, img)
	if code != 2 || !strings.Contains(errOut, "did you swap IMAGE and TARGET") {
		t.Errorf("restore with IMAGE and TARGET swapped: exit %d\n%s", code, errOut)
	}
	if !bytes.Equal(readFile(t, img), before) {
		t.Error("the image was changed")
	}
}

// convert, import and boot --save write their file as create writes an
// image (NAME.partial renamed over NAME): a device node at OUTPUT is
// refused, --force or not, and kept. The node is made in a temporary
// directory (for the loop device of a scratch file), so a regression
// destroys nothing of the machine's /dev.
func TestConvertOntoDevice(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	back := filepath.Join(dir, "loop-backing")
	sh(t, "truncate", "-s", "64M", back)
	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", back))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "disk")
	sh(t, "mknod", "-m", "600", node, "b", fmt.Sprint(unix.Major(st.Rdev)), fmt.Sprint(unix.Minor(st.Rdev)))
	for _, args := range [][]string{
		{"convert", "--format", "raw", "--force", img, node},
		{"convert", "--format", "qcow2", img, node},
		{"convert", "--format", "raw", img, dir},
	} {
		_, errOut, code := run(t, args...)
		if code != 2 || !strings.Contains(errOut, "not a regular file") || strings.Contains(errOut, "--force") {
			t.Errorf("platter %s: exit %d, want 2, naming what is there:\n%s", strings.Join(args, " "), code, errOut)
		}
	}
	if fi, err := os.Lstat(node); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Errorf("%s is no longer a device node: %v %v", node, fi.Mode(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*partial*")); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
}

// Errors name what the user named, in words: not the private name an
// image is written under (.NAME.partial-XXXX), not /proc/self/fd/N (the
// second descriptor writes go through), not a package's or a step's
// name (qcow2:, ext:).
func TestPlainMessages(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.platter")
	ok(t, "create", "--progress", "none", disk, img)
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	sh(t, "mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", full)
	defer exec.Command("umount", full).Run()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--progress", "none", disk, filepath.Join(full, "x.platter")}, "platter: " + filepath.Join(full, "x.platter") + ": no space left on device (at byte "},
		{[]string{"convert", "--progress", "none", img, filepath.Join(full, "x.qcow2")}, "write " + filepath.Join(full, "x.qcow2") + ": no space left on device"},
		{[]string{"convert", "--progress", "none", img, filepath.Join(full, "x.raw")}, "write " + filepath.Join(full, "x.raw") + ": no space left on device"},
		{[]string{"create", "--progress", "none", disk, filepath.Join(dir, "none", "x.platter")}, filepath.Join(dir, "none", "x.platter") + ": no such file or directory"},
		{[]string{"convert", "--progress", "none", img, filepath.Join(dir, "none", "x.qcow2")}, filepath.Join(dir, "none", "x.qcow2") + ": no such file or directory"},
		{[]string{"ls", img + ":2", "/no/such"}, "/no/such: no such file or directory"},
		{[]string{"restore", "--progress", "none", img, filepath.Join(dir, "new") + "/"}, "target " + filepath.Join(dir, "new") + "/: is a directory"},
		{[]string{"restore", "--progress", "none", "--yes", img, "/dev/platter-mistyped"}, "/dev/platter-mistyped does not exist"},
	} {
		_, errOut, code := run(t, c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("platter %s: exit %d, want 1 and %q:\n%s", strings.Join(c.args, " "), code, c.want, errOut)
		}
		for _, bad := range []string{".partial", "/proc/self", " qcow2:", " raw:", " ext:", "exit status", " image:", "open target"} {
			if strings.Contains(errOut, bad) {
				t.Errorf("platter %s says %q:\n%s", strings.Join(c.args, " "), bad, errOut)
			}
		}
	}
	if ents, _ := os.ReadDir(full); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// A restore that stops (interrupted, or at a damaged chunk) removes a
// target file it created, and says a target that existed is incomplete.
func TestStoppedRestore(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4<<20)
	for range 96 { // 384 MiB that does not compress
		rand.Read(b)
		f.Write(b)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "src.platter")
	ok(t, "create", "--progress", "none", src, img)

	// Interrupted: held when its target appears, then sent SIGINT.
	target := filepath.Join(dir, "new.img")
	cmd := exec.Command(platter, "restore", "--progress", "none", img, target)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(target); err == nil {
			break
		}
		if i == 1000 {
			cmd.Process.Kill()
			t.Fatalf("restore made no target:\n%s", out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGSTOP)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("interrupted restore: exit %d, want 130\n%s", code, out.String())
	}
	if _, err := os.Stat(target); err == nil {
		t.Errorf("an interrupted restore left %s (%d bytes)", target, len(readFile(t, target)))
	}

	// A damaged chunk: a new target is removed, an existing one is said
	// to be incomplete.
	j := infoChunks(t, img)
	var bad int64 = -1
	for _, c := range j.Chunks {
		if !c.Zero && c.FrameSize > 4096 {
			bad = c.FrameOffset + 64 + 100
		}
	}
	if bad < 0 {
		t.Fatal("no chunk to damage")
	}
	damaged := filepath.Join(dir, "damaged.platter")
	dmg := readFile(t, img)
	dmg[bad] ^= 0xff
	os.WriteFile(damaged, dmg, 0o600)
	_, errOut, code := run(t, "restore", "--progress", "none", damaged, target)
	if code != 3 || !strings.Contains(errOut, "removed") {
		t.Errorf("restore of a damaged image to a new file: exit %d\n%s", code, errOut)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("a failed restore left its new target")
	}
	existing := filepath.Join(dir, "existing.img")
	os.WriteFile(existing, []byte("old"), 0o600)
	_, errOut, code = run(t, "restore", "--progress", "none", damaged, existing)
	if code != 3 || !strings.Contains(errOut, "incomplete") {
		t.Errorf("restore of a damaged image over a file: exit %d\n%s", code, errOut)
	}
}

// Restoring the whole disk of an image of some partitions says which
// partitions of the table it does not hold.
func TestSomePartitionsRestored(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "p1.platter")
	ok(t, "create", "--progress", "none", "--partitions", "1", disk, img)
	_, errOut, code := run(t, "restore", "--progress", "none", img, filepath.Join(dir, "back.img"))
	if code != 0 || !strings.Contains(errOut, "partitions 2, 3, 4 of the disk's table were not imaged") {
		t.Errorf("restore: exit %d\n%s", code, errOut)
	}
	if o := ok(t, "info", img); !strings.Contains(o, "Not imaged:  partitions 2, 3, 4") {
		t.Errorf("info does not say which partitions were not imaged:\n%s", o)
	}
}
