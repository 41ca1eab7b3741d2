package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// mountedExt4 makes an ext4 filesystem of size MiB on a loop device, fills
// it from files (if not ""), mounts it read-write and returns the device
// and the mount point.
func mountedExt4(t *testing.T, sizeMiB int, files string) (dev, mnt string) {
	t.Helper()
	dir := t.TempDir()
	img := sparseFile(t, filepath.Join(dir, "fs.img"), int64(sizeMiB)<<20)
	args := []string{"-q", "-F", "-E", "nodiscard"}
	if files != "" {
		args = append(args, "-d", files)
	}
	sh(t, "mkfs.ext4", append(args, img)...)
	dev = loop(t, img)
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "mount", dev, mnt)
	t.Cleanup(func() {
		// Never leave a test's filesystem frozen, whatever failed.
		exec.Command("fsfreeze", "-u", mnt).Run()
		exec.Command("umount", mnt).Run()
	})
	return dev, mnt
}

// sparseFile makes a file of size bytes that holds no data.
func sparseFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatalf("make a %d-byte sparse file %s: %v", size, path, err)
	}
	return path
}

// startFrozen starts a create --snapshot freeze of dev that takes seconds
// (zstd:19 on slowFS) and returns once it reports the freeze, with the
// rest of its progress output.
func startFrozen(t *testing.T, dev, img string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command(platter, "create", "--snapshot", "freeze", "--max-freeze", "120s", "--compress", "zstd:19", "--progress", "json", dev, img)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stderr)
	for {
		line, err := r.ReadString('\n')
		if strings.Contains(line, `"snapshot":"frozen"`) {
			return cmd, r
		}
		if err != nil {
			cmd.Wait()
			t.Fatal("create never reported the freeze")
		}
	}
}

// writable reports whether a file can be written on mnt within limit (a
// frozen filesystem blocks the write).
func writable(mnt string, limit time.Duration) bool {
	done := make(chan error, 1)
	go func() {
		done <- os.WriteFile(filepath.Join(mnt, "probe-"+strconv.FormatInt(time.Now().UnixNano(), 10)), []byte("x"), 0o644)
	}()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(limit):
		return false
	}
}

// An image of a busy, mounted filesystem taken with --snapshot freeze is
// that filesystem at one instant: a log appended (and fsynced) record by
// record comes back as a whole prefix, and a state file rewritten after
// each record agrees with it. (This test caught the allocation maps being
// read again after the thaw: a block freed meanwhile came back as zeros.)
func TestSnapshotFreeze(t *testing.T) {
	dev, mnt := mountedExt4(t, 128, "")
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		log, err := os.OpenFile(filepath.Join(mnt, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		defer log.Close()
		for n := 0; ctx.Err() == nil; n++ {
			rec := fmt.Sprintf("record %08d %s\n", n, strings.Repeat("x", n%300))
			if _, err := log.Write([]byte(rec)); err != nil {
				t.Error(err)
				return
			}
			log.Sync()
			os.WriteFile(filepath.Join(mnt, "state"), []byte(strconv.Itoa(n)), 0o644)
			written.Store(int64(n + 1))
		}
	}()
	time.Sleep(300 * time.Millisecond)
	img := filepath.Join(t.TempDir(), "live.platter")
	_, stderr, code := run(t, "create", "--snapshot", "freeze", "--progress", "json", dev, img)
	stop()
	wg.Wait()
	if code != 0 {
		t.Fatalf("create --snapshot freeze: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `"snapshot":"frozen"`) || !strings.Contains(stderr, `"snapshot":"thawed"`) {
		t.Errorf("progress shows no freeze and thaw:\n%s", stderr)
	}
	if !writable(mnt, 2*time.Second) {
		t.Fatal("the filesystem is still frozen after create")
	}
	out := ok(t, "info", img)
	if !strings.Contains(out, "Snapshot:    "+mnt+" frozen at") {
		t.Errorf("info does not show the freeze:\n%s", out)
	}
	var js struct {
		Snapshot struct {
			Method        string  `json:"method"`
			FrozenSeconds float64 `json:"frozen_seconds"`
		} `json:"snapshot"`
	}
	jsonOut(t, img, &js)
	if js.Snapshot.Method != "freeze" || js.Snapshot.FrozenSeconds <= 0 || js.Snapshot.FrozenSeconds > 10 {
		t.Errorf("info --json snapshot = %+v", js.Snapshot)
	}

	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	// A frozen filesystem has its journal flushed: clean as it is.
	sh(t, "e2fsck", "-fn", back)
	logText := debugfsCat(t, back, "/log")
	state := strings.TrimSpace(debugfsCat(t, back, "/state"))
	lines := strings.SplitAfter(logText, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		t.Fatal("the log is empty in the image")
	}
	for n, l := range lines {
		if want := fmt.Sprintf("record %08d %s\n", n, strings.Repeat("x", n%300)); l != want {
			t.Fatalf("log line %d in the image is %q, want %q (a torn or reordered log)", n, l, want)
		}
	}
	k := len(lines)
	// The writer appends record n, then truncates the state file and
	// writes n: at the freeze it holds n, nothing (truncated, not yet
	// written) or n-1.
	if s, err := strconv.Atoi(state); state != "" && (err != nil || s != k-1 && s != k-2) {
		t.Errorf("state file holds %q with %d log records: not one instant", state, k)
	}
	if int64(k) >= written.Load() {
		t.Errorf("the image holds %d records, the writer wrote %d: the freeze came after the writer stopped?", k, written.Load())
	}
	t.Logf("image holds %d of %d records", k, written.Load())
}

func jsonOut(t *testing.T, img string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), v); err != nil {
		t.Fatal(err)
	}
}

// The image may not be written to a filesystem that would be frozen.
func TestSnapshotFreezeRefusesImageOnSource(t *testing.T) {
	dev, mnt := mountedExt4(t, 64, "")
	// --snapshot freeze, and live imaging (the default), which freezes
	// at the end.
	for _, args := range [][]string{{"--snapshot", "freeze"}, nil} {
		_, stderr, code := run(t, append(append([]string{"create"}, args...), dev, filepath.Join(mnt, "self.platter"))...)
		if code != 2 || !strings.Contains(stderr, "would freeze") {
			t.Fatalf("create %v: exit %d, want 2 and a refusal:\n%s", args, code, stderr)
		}
		if !writable(mnt, 2*time.Second) {
			t.Fatal("the filesystem is frozen after a refusal")
		}
	}
}

// slowFS is a mounted filesystem full of compressible text, so that
// create --compress zstd:19 takes seconds while it is frozen.
func slowFS(t *testing.T) (dev, mnt string) {
	files := t.TempDir()
	var b bytes.Buffer
	for i := 0; b.Len() < 48<<20; i++ {
		fmt.Fprintf(&b, "%d host%d sshd[%d]: Accepted publickey for user%d from 10.%d.%d.%d port %d\n", i, i%17, 1000+i, i%97, i%256, (i*7)%256, i%13, 30000+i%5000)
	}
	os.WriteFile(filepath.Join(files, "log.txt"), b.Bytes(), 0o644)
	return mountedExt4(t, 128, files)
}

// kill -9 during the freeze: the guard process thaws the filesystem
// within a second.
func TestSnapshotFreezeKilled(t *testing.T) {
	dev, mnt := slowFS(t)
	img := filepath.Join(t.TempDir(), "killed.platter")
	cmd, stderr := startFrozen(t, dev, img)
	time.Sleep(200 * time.Millisecond)
	if writable(mnt, 300*time.Millisecond) {
		t.Fatal("the filesystem is not frozen during the copy")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	go func() { io.Copy(io.Discard, stderr); cmd.Wait() }()
	if !writable(mnt, time.Second) {
		t.Fatal("the filesystem is still frozen a second after platter was killed")
	}
	t.Logf("writable %v after kill -9", time.Since(killed).Round(time.Millisecond))
	if _, err := os.Stat(img); err == nil {
		t.Error("a killed create left an image under the final name")
	}
}

// A copy that outlasts --max-freeze is thawed by the watchdog and fails:
// no image, a filesystem that takes writes again.
func TestSnapshotFreezeLimit(t *testing.T) {
	dev, mnt := slowFS(t)
	img := filepath.Join(t.TempDir(), "late.platter")
	start := time.Now()
	_, stderr, code := run(t, "create", "--snapshot", "freeze", "--max-freeze", "1s", "--compress", "zstd:19", "--progress", "none", dev, img)
	if code == 0 || !strings.Contains(stderr, "max-freeze") {
		t.Fatalf("exit %d after %v, want a failure naming --max-freeze:\n%s", code, time.Since(start), stderr)
	}
	if _, err := os.Stat(img); err == nil {
		t.Error("an image was written although the freeze ended early")
	}
	if !writable(mnt, time.Second) {
		t.Fatal("the filesystem is still frozen")
	}
}

// debugfsCat returns a file's contents from an ext filesystem image.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// A whole disk with two mounted partitions: both are frozen together, so
// the image holds both at one instant, and both come back.
func TestSnapshotFreezeWholeDisk(t *testing.T) {
	dir := t.TempDir()
	disk := sparseFile(t, filepath.Join(dir, "disk.img"), 160<<20)
	sh(t, "sgdisk", "-n", "1:1M:+64M", "-t", "1:8300", "-n", "2:0:+64M", "-t", "2:8300", disk)
	dev := loop(t, disk)
	// This kernel parses no partition tables on loop devices: add them.
	for _, p := range []struct{ n, start, size string }{{"1", "2048", "131072"}, {"2", "133120", "131072"}} {
		exec.Command("delpart", dev, p.n).Run()
		sh(t, "addpart", dev, p.n, p.start, p.size)
	}
	var mnts []string
	for _, n := range []string{"1", "2"} {
		part := dev + "p" + n
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", part)
		mnt := filepath.Join(dir, "mnt"+n)
		os.Mkdir(mnt, 0o755)
		sh(t, "mount", part, mnt)
		t.Cleanup(func() {
			exec.Command("fsfreeze", "-u", mnt).Run()
			exec.Command("umount", mnt).Run()
		})
		os.WriteFile(filepath.Join(mnt, "file"), bytes.Repeat([]byte("partition "+n+"\n"), 100000), 0o644)
		mnts = append(mnts, mnt)
	}
	img := filepath.Join(dir, "disk.platter")
	_, stderr, code := run(t, "create", "--snapshot", "freeze", "--progress", "json", dev, img)
	if code != 0 {
		t.Fatalf("create: exit %d\n%s", code, stderr)
	}
	var js struct {
		Snapshot struct {
			Method      string   `json:"method"`
			Filesystems []string `json:"filesystems"`
		} `json:"snapshot"`
	}
	jsonOut(t, img, &js)
	if js.Snapshot.Method != "freeze" || len(js.Snapshot.Filesystems) != 2 {
		t.Fatalf("snapshot = %+v, want both partitions frozen", js.Snapshot)
	}
	for _, m := range mnts {
		if !writable(m, 2*time.Second) {
			t.Fatalf("%s still frozen", m)
		}
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	for i, start := range []int64{1 << 20, 65 << 20} {
		p := filepath.Join(dir, fmt.Sprintf("p%d.img", i+1))
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		in, _ := os.Open(back)
		io.Copy(out, io.NewSectionReader(in, start, 64<<20))
		in.Close()
		out.Close()
		sh(t, "e2fsck", "-fn", p)
		want := strings.Repeat(fmt.Sprintf("partition %d\n", i+1), 100000)
		if got := debugfsCat(t, p, "/file"); got != want {
			t.Errorf("partition %d: /file differs after restore (%d bytes, want %d)", i+1, len(got), len(want))
		}
	}
}

// Something else thaws the filesystem during the copy (a negative
// control: the image would mix moments): create notices and fails.
func TestSnapshotFreezeExternalThaw(t *testing.T) {
	dev, mnt := slowFS(t)
	img := filepath.Join(t.TempDir(), "thawed.platter")
	cmd, stderr := startFrozen(t, dev, img)
	sh(t, "fsfreeze", "-u", mnt)
	var rest bytes.Buffer
	io.Copy(&rest, stderr)
	err := cmd.Wait()
	if err == nil || !strings.Contains(rest.String(), "thawed by something else") {
		t.Fatalf("create after an external thaw: %v\n%s", err, rest.String())
	}
	if _, err := os.Stat(img); err == nil {
		t.Error("an image was written although the filesystem was thawed during the copy")
	}
}

// A filesystem that has no freeze (NTFS through ntfs-3g, a FUSE mount) is
// synced and copied as it is, and the image says so.
func TestSnapshotFreezeUnfreezable(t *testing.T) {
	dir := t.TempDir()
	img := sparseFile(t, filepath.Join(dir, "ntfs.img"), 64<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", img)
	dev := loop(t, img)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "ntfs-3g", dev, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	want := bytes.Repeat([]byte("written before the image\n"), 50000)
	os.WriteFile(filepath.Join(mnt, "file.txt"), want, 0o644)

	out := filepath.Join(dir, "ntfs.platter")
	_, stderr, code := run(t, "create", "--snapshot", "freeze", "--progress", "none", dev, out)
	if code != 0 || !strings.Contains(stderr, "cannot be frozen") {
		t.Fatalf("create: exit %d, want success with a warning:\n%s", code, stderr)
	}
	var js struct {
		Snapshot struct {
			Method string   `json:"method"`
			Synced []string `json:"synced"`
		} `json:"snapshot"`
	}
	jsonOut(t, out, &js)
	if js.Snapshot.Method != "freeze" || len(js.Snapshot.Synced) != 1 || js.Snapshot.Synced[0] != mnt {
		t.Fatalf("snapshot = %+v, want %s listed as synced", js.Snapshot, mnt)
	}
	if o := ok(t, "info", out); !strings.Contains(o, "could not be frozen") {
		t.Errorf("info does not say the filesystem was only synced:\n%s", o)
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", out, back)
	sh(t, "ntfsfix", "-n", back)
	got := filepath.Join(ntfsTree(t, back), "file.txt")
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("file.txt after restore: %d bytes, %v; want the %d bytes written", len(b), err, len(want))
	}
}
