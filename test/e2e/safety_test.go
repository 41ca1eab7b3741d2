package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

func TestDamagedChunk(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", disk, img)
	j := info(t, img, "--chunks")
	// A stored chunk of partition 2 (ext4).
	var c = -1
	for i, ch := range j.Chunks {
		if ch.Partition == 2 && !ch.Zero && ch.FrameSize > 1000 {
			c = i
			break
		}
	}
	if c < 0 {
		t.Fatal("no stored chunk of partition 2")
	}
	ch := j.Chunks[c]
	b, _ := os.ReadFile(img)
	b[ch.FrameOffset+64+(ch.FrameSize-64)/2] ^= 0x5a
	os.WriteFile(img, b, 0o644)

	out, errOut, code := run(t, "verify", img)
	if code != 3 {
		t.Fatalf("verify of a damaged image: exit %d, want 3\n%s%s", code, out, errOut)
	}
	want := "partition 2, bytes " + itoa(ch.Offset) + "-" + itoa(ch.Offset+ch.Length-1)
	if !strings.Contains(out, want) {
		t.Errorf("verify output does not name %q:\n%s", want, out)
	}
	target := filepath.Join(dir, "restored.img")
	_, errOut, code = run(t, "restore", img, target)
	if code != 3 || !strings.Contains(errOut, want) {
		t.Errorf("restore of a damaged image: exit %d, stderr %q", code, errOut)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestBadImageFiles(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", disk, img)
	good, _ := os.ReadFile(img)
	ls, _ := os.ReadFile("/bin/ls")
	for name, b := range map[string][]byte{
		"cut-100":  good[:len(good)-100],
		"cut-half": good[:len(good)/2],
		"foreign":  ls,
		"empty":    nil,
		"header":   good[:64],
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		// A file that is not an image at all was named by mistake
		// (exit 2); a damaged image is damage (exit 3).
		want := 3
		if name == "foreign" || name == "empty" {
			want = 2
		}
		for _, args := range [][]string{{"info", p}, {"verify", p}, {"restore", p, filepath.Join(dir, name+".out")}} {
			_, errOut, code := run(t, args...)
			if code != want {
				t.Errorf("%s %s: exit %d, want %d", args[0], name, code, want)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines != 0 || errOut == "" {
				t.Errorf("%s %s: want one line of error, got %q", args[0], name, errOut)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, name+".out")); err == nil {
			t.Errorf("restore of %s created its target", name)
		}
	}
}

func TestRefusals(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", disk, img)
	before, _ := os.ReadFile(img)

	// An existing image is not overwritten without --force.
	if _, errOut, code := run(t, "create", disk, img); code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("create over an existing image: exit %d, %q", code, errOut)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("existing image was changed")
	}
	ok(t, "create", "--force", disk, img)

	// Usage errors exit 2.
	for _, args := range [][]string{{"create", disk}, {"create", "--compress", "lz4", disk, img + "2"}, {"frobnicate"}, {"restore", "--bogus", img, "x"}} {
		if _, _, code := run(t, args...); code != 2 {
			t.Errorf("platter %v: exit %d, want 2", args, code)
		}
	}
}

func TestInterruptLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.raw")
	f, _ := os.Create(src)
	buf := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ { // 1 GiB of incompressible data
		for k := 0; k < len(buf); k += 8 {
			buf[k] = byte(i*31 + k)
			buf[k+3] = byte(k >> 9)
		}
		f.Write(buf)
	}
	f.Close()
	img := filepath.Join(dir, "big.platter")
	cmd := exec.Command(platter, "create", "--compress", "zstd:19", src, img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if err == nil {
		t.Fatal("create finished before it could be interrupted; make the source bigger")
	}
	for _, p := range []string{img, img + ".partial"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind after Ctrl-C", p)
		}
	}
}

func TestFullDisk(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	mnt := t.TempDir()
	sh(t, "mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt)
	defer exec.Command("umount", mnt).Run()
	img := filepath.Join(mnt, "disk.platter")
	_, errOut, code := run(t, "create", disk, img)
	if code == 0 {
		t.Fatal("create onto a full filesystem succeeded")
	}
	if !strings.Contains(errOut, "no space") {
		t.Errorf("error does not say the disk is full: %q", errOut)
	}
	ents, _ := os.ReadDir(mnt)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// loop attaches a loop device to file and detaches it when the test ends,
// deleting the partitions a test (or an earlier user) added to it first.
func loop(t *testing.T, file string, args ...string) string {
	return tooltest.Loop(t, file, args...)
}

func TestMounted(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	src := filepath.Join(dir, "fs.img")
	sh(t, "cp", "--sparse=always", disk, src)
	dev := loop(t, src)
	mnt := t.TempDir()
	sh(t, "mount", dev, mnt)
	defer exec.Command("umount", mnt).Run()

	img := filepath.Join(dir, "fs.platter")
	// Without a snapshot, refused; the file behind the loop device cannot
	// be imaged live (writes are tracked on the device): use the device.
	if _, errOut, code := run(t, "create", "--snapshot", "none", dev, img); code == 0 || !strings.Contains(errOut, "--snapshot track") || !strings.Contains(errOut, "--allow-mounted") {
		t.Errorf("create --snapshot none of mounted %s: exit %d, %q", dev, code, errOut)
	}
	if _, errOut, code := run(t, "create", src, img); code == 0 || !strings.Contains(errOut, "image "+dev+" instead") {
		t.Errorf("create of the file behind mounted %s: exit %d, %q", dev, code, errOut)
	}
	_, errOut, code := run(t, "create", "--allow-mounted", dev, img)
	if code != 0 || !strings.Contains(errOut, "warning") {
		t.Errorf("create --allow-mounted: exit %d, %q", code, errOut)
	}
	// A mounted target is refused before anything is written (even a
	// read-only mount; remounted read-only here so that the kernel itself
	// does not write to the filesystem while we compare its bytes).
	sh(t, "mount", "-o", "remount,ro", mnt)
	sh(t, "sync")
	sum := sh(t, "sha256sum", src)
	if _, errOut, code := run(t, "restore", "--yes", img, dev); code == 0 || !strings.Contains(errOut, "mounted") {
		t.Errorf("restore onto a mounted device: exit %d, %q", code, errOut)
	}
	if _, errOut, code := run(t, "restore", img, src); code == 0 || !strings.Contains(errOut, "mounted") {
		t.Errorf("restore onto a file behind a mounted loop device: exit %d, %q", code, errOut)
	}
	if sh(t, "sha256sum", src) != sum {
		t.Error("refused restore changed the target")
	}
}

func TestDeviceTargets(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", disk, img)

	// Too small: refused, untouched.
	small := filepath.Join(dir, "small")
	os.WriteFile(small, bytes.Repeat([]byte{0xab}, 64<<20), 0o644)
	dev := loop(t, small)
	if _, errOut, code := run(t, "restore", "--yes", img, dev); code == 0 || !strings.Contains(errOut, "smaller") {
		t.Errorf("restore onto a small device: exit %d, %q", code, errOut)
	}
	if b, _ := os.ReadFile(small); !bytes.Equal(b, bytes.Repeat([]byte{0xab}, 64<<20)) {
		t.Error("refused restore wrote to the small device")
	}

	// Big enough but no --yes and no terminal: refused after showing
	// what is on it now.
	target := filepath.Join(dir, "target")
	sh(t, "cp", "--sparse=always", disk, target)
	tdev := loop(t, target)
	sum := sh(t, "sha256sum", target)
	cmd := exec.Command(platter, "restore", img, tdev)
	cmd.Stdin = strings.NewReader("yes\n")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gpt") || !strings.Contains(string(out), "--yes") {
		t.Errorf("restore onto a device without --yes: %v\n%s", err, out)
	}
	if sh(t, "sha256sum", target) != sum {
		t.Error("unconfirmed restore changed the device")
	}
	// With --yes onto a device full of other data: every filesystem comes
	// back clean (zero chunks must really be zeroed on a device).
	os.WriteFile(target, bytes.Repeat([]byte{0x5c}, 256<<20), 0o644)
	ok(t, "restore", "--yes", img, tdev)
	parts := sfdiskParts(t, disk)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, target); a != b {
		t.Errorf("sfdisk -d differs after a device restore")
	}
	checkPartition(t, extract(t, target, parts[2]), "ext4", disk+".files/p2")
	checkPartition(t, extract(t, target, parts[1]), "fat32", disk+".files/p1")
	checkPartition(t, extract(t, target, parts[3]), "ntfs", disk+".files/p3")
}

func TestProgressJSON(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	stdout, stderr, code := run(t, "create", "--progress=json", disk, img)
	if code != 0 {
		t.Fatal(stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(stderr))
	lines := 0
	var last map[string]any
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("progress line is not JSON: %q", sc.Text())
		}
		lines++
	}
	if lines == 0 || last["finished"] != true || last["bytes_done"] != last["bytes_total"] {
		t.Errorf("progress: %d lines, last %v", lines, last)
	}
	if strings.Contains(stdout, "{") {
		t.Errorf("progress went to stdout: %q", stdout)
	}
	// On a pipe without the flag: no progress at all.
	_, stderr, _ = run(t, "create", "--force", disk, img)
	if stderr != "" {
		t.Errorf("stderr on a pipe: %q", stderr)
	}
}
