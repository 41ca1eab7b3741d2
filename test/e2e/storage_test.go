package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// volumes lists the files of a split image in dir: NAME, NAME.002, ...
// in order, with their sizes.
func volumes(t *testing.T, img string) (names []string, sizes []int64) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(img))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(img)
	for _, e := range ents {
		if e.Name() == base || strings.HasPrefix(e.Name(), base+".") && len(e.Name()) == len(base)+4 {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(filepath.Dir(img), n))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	return names, sizes
}

// sameFiles fails the test unless the two files hold the same bytes.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Errorf("%s and %s differ: %s", a, b, out)
	}
}

// mbrParts is what the MBR fixture holds.
var mbrParts = map[int]string{1: "fat16", 2: "ext4", 5: "ext2", 6: "ntfs"}

// A disk made by sfdisk and mkfs with files in it, imaged as volumes of
// 4 MiB: every reader reads it as it reads the image in one file, judged
// by the tools: restore (fsck clean, every file, the same bytes as from
// a one-file image), verify, info, list, mount (the disk and the files),
// ls and extract, serve (qemu-img compare through NBD).
func TestSplitVolumes(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", disk, img)
	names, sizes := volumes(t, img)
	if len(names) < 3 {
		t.Fatalf("volumes %v: want several", names)
	}
	var total int64
	for i, n := range names {
		if want := fmt.Sprintf("disk.platter.%03d", i+1); i > 0 && n != want {
			t.Errorf("volume %d is %s, want %s", i+1, n, want)
		}
		if i < len(names)-1 && sizes[i] != 4<<20 || sizes[i] > 4<<20 || sizes[i] == 0 {
			t.Errorf("%s is %d bytes", n, sizes[i])
		}
		if m := fileMode(t, filepath.Join(dir, n)); m != 0o600 {
			t.Errorf("%s has mode %v", n, m)
		}
		total += sizes[i]
	}
	if out := ok(t, "verify", img); !strings.Contains(out, "OK") {
		t.Errorf("verify: %s", out)
	}
	if j := info(t, img); j.ImageBytes != total || j.Table != "mbr" {
		t.Errorf("info: %d bytes, table %s; the volumes hold %d", j.ImageBytes, j.Table, total)
	}
	if out := ok(t, "list", dir); strings.Count(out, "disk.platter") != 1 || !strings.Contains(out, "it restores") {
		t.Errorf("list shows:\n%s", out)
	}

	// Restore: clean filesystems with every file, and the bytes a
	// one-file image of the same disk restores.
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--progress", "none", img, back)
	one := filepath.Join(t.TempDir(), "one.platter")
	ok(t, "create", "--progress", "none", disk, one)
	oneBack := filepath.Join(t.TempDir(), "one.img")
	ok(t, "restore", "--progress", "none", one, oneBack)
	sameFiles(t, back, oneBack)
	if sfdiskDump(t, back) != sfdiskDump(t, disk) {
		t.Error("the restored table differs")
	}
	parts := sfdiskParts(t, disk)
	for n, fs := range mbrParts {
		t.Run(fmt.Sprintf("restored p%d", n), func(t *testing.T) {
			checkPartition(t, extract(t, back, parts[n]), fs, fmt.Sprintf("%s.files/p%d", disk, n))
		})
	}

	// mount: the disk as restored; the files of the ext4 partition.
	mnt := mountDaemon(t, img)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "disk.img"), back); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare of the mounted disk: %s", out)
	}
	files := t.TempDir()
	ok(t, "mount", "--daemon", "--files", img+":2", files)
	t.Cleanup(func() { run(t, "umount", files) })
	got := t.TempDir()
	sh(t, "cp", "-a", files+"/.", got)
	os.RemoveAll(filepath.Join(got, "lost+found"))
	sameTree(t, disk+".files/p2", got)

	// ls and extract.
	checkExtract(t, img, 2, "ext4", disk+".files/p2")
	checkExtract(t, img, 5, "ext2", disk+".files/p5")

	// serve: the disk through NBD is the restored disk.
	addr, _ := startServe(t, img)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", back); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare through NBD: %s", out)
	}

	// An existing split image is not overwritten without --force; with
	// it, an image of fewer volumes leaves none of the old ones behind.
	if _, stderr, code := run(t, "create", "--progress", "none", "--split", "4M", disk, img); code == 0 || !strings.Contains(stderr, "exists") {
		t.Errorf("create over a split image: exit %d, %s", code, stderr)
	}
	ok(t, "create", "--progress", "none", "--force", "--split", "16M", disk, img)
	if n, _ := volumes(t, img); len(n) >= len(names) {
		t.Errorf("after a create of 16 MiB volumes over it: %v", n)
	}
	ok(t, "verify", img)
}

// An incremental whose parent is split finds it by id and restores; an
// incremental written to standard output is the same image.
func TestSplitIncremental(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	dir := t.TempDir()
	full := filepath.Join(dir, "full.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", disk, full)

	// The disk changes: new boot-loader bytes (sectors 1-2047).
	changed := filepath.Join(t.TempDir(), "changed.img")
	sh(t, "cp", "--sparse=always", disk, changed)
	gap := make([]byte, 1<<20-512)
	rand.Read(gap)
	writeAt(t, changed, gap, 512)

	inc := filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", "--incremental", full, changed, inc)
	if j := info(t, inc); j.Type != "incremental" || len(j.Chain) != 2 {
		t.Fatalf("info: %+v", j)
	}
	if out := ok(t, "verify", inc); !strings.Contains(out, "OK") || !strings.Contains(out, "in 2 files") {
		t.Errorf("verify: %s", out)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--progress", "none", inc, back)
	sameBytes(t, back, changed, 0, 1<<20, "the changed boot area")
	parts := sfdiskParts(t, disk)
	for n, fs := range mbrParts {
		checkPartition(t, extract(t, back, parts[n]), fs, fmt.Sprintf("%s.files/p%d", disk, n))
	}

	// The same incremental, to a pipe.
	piped := filepath.Join(dir, "piped.platter")
	createToPipe(t, piped, "--incremental", full, changed)
	ok(t, "verify", piped)
	pipedBack := filepath.Join(t.TempDir(), "piped.img")
	ok(t, "restore", "--progress", "none", piped, pipedBack)
	sameFiles(t, back, pipedBack)

	// The parent found in a --search directory, split.
	other := t.TempDir()
	for _, n := range func() []string { n, _ := volumes(t, full); return n }() {
		os.Rename(filepath.Join(dir, n), filepath.Join(other, n))
	}
	if _, stderr, code := run(t, "verify", inc); code != 3 || !strings.Contains(stderr, "no image with id") {
		t.Errorf("verify with the parent moved away: exit %d, %s", code, stderr)
	}
	ok(t, "verify", "--search", other, inc)
}

// createToPipe runs `platter create ARGS SOURCE -` with its standard
// output a pipe, copied into out: what `platter create SOURCE - | ssh
// HOST 'cat > out'` leaves there.
func createToPipe(t *testing.T, out string, args ...string) string {
	t.Helper()
	cmd := exec.Command(platter, append(append([]string{"create", "--progress", "none"}, args...), "-")...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, pipe); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("create to a pipe: %v\n%s", err, stderr.String())
	}
	return stderr.String()
}

// What sizes and the format's own checks show about volumes that are not
// the image's: each is refused with exit 3, naming the volume.
func TestSplitDamage(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	clean := t.TempDir()
	img := filepath.Join(clean, "disk.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", disk, img)
	names, _ := volumes(t, img)
	last := len(names)
	if last < 5 {
		t.Fatalf("only %d volumes", last)
	}
	// Another disk's image, in volumes of the same size.
	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "other.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", fixture(t, "gpt-disk.sh"), other)

	vol := func(dir string, k int) string {
		if k == 1 {
			return filepath.Join(dir, "disk.platter")
		}
		return filepath.Join(dir, fmt.Sprintf("disk.platter.%03d", k))
	}
	for _, c := range []struct {
		name    string
		damage  func(dir string)
		command string
		named   int // the volume the error names
		says    string
	}{
		{"missing middle", func(dir string) { os.Remove(vol(dir, 3)) }, "verify", 3, "missing"},
		{"missing last", func(dir string) { os.Remove(vol(dir, last)) }, "info", last - 1, "is missing"},
		{"another image's", func(dir string) {
			os.Rename(filepath.Join(otherDir, "other.platter.003"), vol(dir, 3))
		}, "verify", 3, "another image"},
		{"two renamed into each other's place", func(dir string) {
			os.Rename(vol(dir, 2), vol(dir, 2)+".x")
			os.Rename(vol(dir, 3), vol(dir, 2))
			os.Rename(vol(dir, 2)+".x", vol(dir, 3))
		}, "restore", 2, "renamed"},
		{"last truncated", func(dir string) {
			fi, _ := os.Stat(vol(dir, last))
			os.Truncate(vol(dir, last), fi.Size()-1000)
		}, "restore", last, "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, n := range names {
				sh(t, "cp", filepath.Join(clean, n), dir)
			}
			c.damage(dir)
			args := []string{c.command, filepath.Join(dir, "disk.platter")}
			target := filepath.Join(dir, "back.img")
			if c.command == "restore" {
				args = append(args, target)
			}
			_, stderr, code := run(t, args...)
			if code != 3 || !strings.Contains(stderr, vol(dir, c.named)+":") || !strings.Contains(stderr, c.says) {
				t.Errorf("%s: exit %d, %s\nwant exit 3 naming %s, saying %q", c.command, code, stderr, vol(dir, c.named), c.says)
			}
			if _, err := os.Stat(target); err == nil {
				t.Error("restore left a target")
			}
		})
	}
}

// create SOURCE - writes the image to standard output: through a pipe,
// the bytes verify and restore as a file create's do; --json goes to
// standard error; a terminal is refused, and so is --split.
func TestCreateToStdout(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	dir := t.TempDir()
	piped := filepath.Join(dir, "piped.platter")
	stderr := createToPipe(t, piped, "--json", disk)
	var sum struct {
		Image      string `json:"image"`
		ID         string `json:"id"`
		ImageBytes int64  `json:"image_bytes"`
	}
	if err := json.Unmarshal([]byte(stderr), &sum); err != nil {
		t.Fatalf("--json on standard error: %v\n%s", err, stderr)
	}
	if fi, _ := os.Stat(piped); sum.Image != "-" || fi.Size() != sum.ImageBytes || info(t, piped).ID != sum.ID {
		t.Errorf("summary %+v for %d bytes", sum, fi.Size())
	}
	ok(t, "verify", piped)
	back := filepath.Join(dir, "piped.img")
	ok(t, "restore", "--progress", "none", piped, back)
	file := filepath.Join(dir, "file.platter")
	ok(t, "create", "--progress", "none", disk, file)
	fileBack := filepath.Join(dir, "file.img")
	ok(t, "restore", "--progress", "none", file, fileBack)
	sameFiles(t, back, fileBack)

	// A terminal as standard output: refused before anything is read.
	master, slave := tooltest.OpenPTY(t)
	defer master.Close()
	defer slave.Close()
	cmd := exec.Command(platter, "create", "--progress", "none", disk, "-")
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = slave, &errOut
	err := cmd.Run()
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 2 || !strings.Contains(errOut.String(), "terminal") {
		t.Errorf("create to a terminal: %v, %s", err, errOut.String())
	}
	slave.Close()
	if b, _ := io.ReadAll(master); len(b) > 0 {
		t.Errorf("create wrote %d bytes to the terminal", len(b))
	}

	if _, stderr, code := run(t, "create", "--split", "4M", disk, "-"); code != 2 || !strings.Contains(stderr, "--split") {
		t.Errorf("create --split to standard output: exit %d, %s", code, stderr)
	}
	// A reader that goes away: an error, not a death by SIGPIPE.
	cmd = exec.Command(platter, "create", "--progress", "none", disk, "-")
	pipe, _ := cmd.StdoutPipe()
	errOut.Reset()
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, pipe, 1<<20)
	pipe.Close()
	err = cmd.Wait()
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 1 || !strings.Contains(errOut.String(), "broken pipe") {
		t.Errorf("create to a pipe closed early: %v, %s", err, errOut.String())
	}
}
