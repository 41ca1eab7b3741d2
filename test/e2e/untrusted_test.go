package e2e

import (
	"bytes"
	"errors"
	"fmt"
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

// runIn runs platter in dir and returns its output, exit code, peak
// memory (bytes) and how long it took. The peak is measured by
// /usr/bin/time around platter: a child's own rusage would count the
// test process's memory it was forked from.
func runIn(t *testing.T, dir string, args ...string) (out string, code int, maxRSS int64, took time.Duration) {
	t.Helper()
	rss := filepath.Join(t.TempDir(), "rss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rss, platter}, args...)...)
	cmd.Dir = dir
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run platter: %v", err)
	}
	if strings.Contains(b.String(), "goroutine ") {
		t.Fatalf("platter %v panicked:\n%s", args, b.String())
	}
	// time writes "Command exited with non-zero status N" before the
	// figure when platter fails.
	lines := strings.Fields(string(readFile(t, rss)))
	kib, perr := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if perr != nil {
		t.Fatalf("/usr/bin/time wrote %q", lines)
	}
	return b.String(), cmd.ProcessState.ExitCode(), kib << 10, took
}

// Images whose blocks lie about their lengths (a few KB on disk, gigabytes
// when believed) are refused as damaged by every command that opens an
// image, in under 256 MiB and a few seconds.
func TestHostileImagesCLI(t *testing.T) {
	dir := t.TempDir()
	for _, h := range tooltest.HostileImages() {
		path := filepath.Join(dir, strings.NewReplacer(" ", "-", ",", "").Replace(h.Name)+".platter")
		if _, err := h.Forge.Write(path); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"info", path}, {"verify", path}, {"ls", path}} {
			out, code, rss, took := runIn(t, dir, args...)
			t.Logf("%s %s: exit %d, %d MiB, %v", args[0], h.Name, code, rss>>20, took)
			if code != 3 || !strings.Contains(out, h.Want) {
				t.Errorf("%s of %s: exit %d, want 3 and %q:\n%s", args[0], h.Name, code, h.Want, out)
			}
			if rss > 256<<20 {
				t.Errorf("%s of %s took %d MiB of memory", args[0], h.Name, rss>>20)
			}
			if took > 10*time.Second {
				t.Errorf("%s of %s took %v", args[0], h.Name, took)
			}
		}
	}
}

// Images whose parents name each other: a damaged chain (exit 3).
func TestParentLoop(t *testing.T) {
	dir := t.TempDir()
	a, b := [16]byte{0xa}, [16]byte{0xb}
	forge := func(id, parent [16]byte, name string) {
		meta := strings.Replace(tooltest.MetaJSON(id, 1<<20), `"areas"`, fmt.Sprintf(`"type":"incremental","parent":"%x","parent_digest":"00","areas"`, parent), 1)
		f := tooltest.Forge{ID: id, EntryCount: -1, Meta: tooltest.ForgedBlock{Fill: tooltest.Text(meta)}}
		if _, err := f.Write(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	forge(a, b, "a.platter")
	forge(b, a, "b.platter")
	out, code, _, _ := runIn(t, dir, "info", "a.platter")
	if code != 3 || !strings.Contains(out, "loops back") {
		t.Fatalf("a chain that loops: exit %d, want 3:\n%s", code, out)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

// Two creates of one IMAGE: the second is refused, naming the first,
// and the first's image is whole. A .partial planted as a symlink or a
// hard link to another file is replaced, never written through. Every
// file platter makes is private (0600).
func TestImageWriters(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")

	first := exec.Command(platter, "create", "--progress", "none", "--compress", "zstd:19", disk, img)
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Lstat(img + ".partial"); err == nil {
			break
		}
		if i == 500 {
			first.Process.Kill()
			t.Fatalf("the first create made no %s.partial:\n%s", img, firstOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGSTOP) // held mid-write
	if m := fileMode(t, img+".partial"); m.Perm() != 0o600 {
		t.Errorf("%s.partial has mode %v, want 0600", img, m)
	}
	out, code, _, _ := runIn(t, dir, "create", "--progress", "none", "--force", disk, img)
	first.Process.Signal(syscall.SIGCONT)
	if code == 0 || !strings.Contains(out, "being written by another platter (process "+strconv.Itoa(first.Process.Pid)+")") {
		t.Errorf("a second create of the same image: exit %d\n%s", code, out)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the first create: %v\n%s", err, firstOut.String())
	}
	ok(t, "verify", img)
	if m := fileMode(t, img); m != 0o600 {
		t.Errorf("image has mode %v, want -rw-------", m)
	}

	// A .partial planted as a symlink to, or a hard link of, a victim.
	victim := filepath.Join(dir, "victim")
	for _, how := range []string{"symlink", "hardlink"} {
		os.WriteFile(victim, []byte("keep me"), 0o644)
		img2 := filepath.Join(dir, how+".platter")
		var err error
		if how == "symlink" {
			err = os.Symlink(victim, img2+".partial")
		} else {
			err = os.Link(victim, img2+".partial")
		}
		if err != nil {
			t.Fatal(err)
		}
		ok(t, "create", "--progress", "none", disk, img2)
		if b, _ := os.ReadFile(victim); string(b) != "keep me" || fileMode(t, victim) != 0o644 {
			t.Errorf("%s: the file the planted .partial led to was changed: %q %v", how, b, fileMode(t, victim))
		}
		ok(t, "verify", img2)
		if m := fileMode(t, img2); m != 0o600 {
			t.Errorf("%s: image has mode %v", how, m)
		}
		if _, err := os.Lstat(img2 + ".partial"); err == nil {
			t.Errorf("%s: a .partial is left", how)
		}
		os.Remove(victim)
	}

	// Restored files and overlays are private too.
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--progress", "none", img, back)
	if m := fileMode(t, back); m != 0o600 {
		t.Errorf("restored file has mode %v", m)
	}
	ov := filepath.Join(dir, "overlay")
	startServe(t, "--overlay", ov, img)
	if m := fileMode(t, ov); m != 0o600 {
		t.Errorf("overlay has mode %v", m)
	}
}

// restore refuses as TARGET any file of the image's chain, however it is
// named, and leaves it as it was.
func TestRestoreOntoChain(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	full, inc := filepath.Join(dir, "full.platter"), filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", disk, full)
	ok(t, "create", "--progress", "none", "--incremental", full, disk, inc)
	if err := os.Link(full, filepath.Join(dir, "full-link")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	want := map[string][]byte{}
	for _, f := range []string{full, inc} {
		b, _ := os.ReadFile(f)
		want[f] = b
	}
	for _, target := range []string{"full.platter", "./full.platter", "sub/../full.platter", full, "full-link", "inc.platter"} {
		out, code, _, _ := runIn(t, dir, "restore", "--progress", "none", "inc.platter", target)
		if code != 2 || !strings.Contains(out, "a file of the image's chain") {
			t.Errorf("restore onto %s: exit %d, want 2:\n%s", target, code, out)
		}
	}
	for f, b := range want {
		if got, _ := os.ReadFile(f); !bytes.Equal(got, b) {
			t.Errorf("%s was changed", f)
		}
	}
	ok(t, "verify", inc)
	// Nor may an incremental replace a file of its parent's chain.
	out, code, _, _ := runIn(t, dir, "create", "--progress", "none", "--force", "--incremental", "inc.platter", disk, "full.platter")
	if code != 2 || !strings.Contains(out, "a file of the parent's chain") {
		t.Errorf("create over the parent: exit %d, want 2:\n%s", code, out)
	}
	ok(t, "verify", inc)
}

// A file that backs a mounted loop device is in use however it is named:
// restore refuses it, create images it only as a mounted source.
func TestLoopBackingFile(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	live := filepath.Join(dir, "live.img")
	sh(t, "cp", disk, live)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	names := []struct{ cwd, name string }{{dir, "live.img"}, {dir, "./live.img"}, {filepath.Join(dir, "sub"), "../live.img"}, {dir, live}}
	// Mounted read-only (so nothing but platter could change the file):
	// restore refuses it by every name.
	before := sha(readFile(t, live))
	sh(t, "mount", "-o", "loop,ro", live, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for _, n := range names {
		out, code, _, _ := runIn(t, n.cwd, "restore", "--progress", "none", img, n.name)
		if code == 0 || !strings.Contains(out, "in use") || !strings.Contains(out, mnt) {
			t.Errorf("restore onto %s (in %s), mounted at %s: exit %d\n%s", n.name, n.cwd, mnt, code, out)
		}
	}
	sh(t, "umount", mnt)
	if after := sha(readFile(t, live)); !bytes.Equal(after, before) {
		t.Error("the mounted filesystem's backing file was changed")
	}
	// Mounted read-write: create does not copy it silently as it changes.
	sh(t, "mount", "-o", "loop", live, mnt)
	for _, n := range names {
		out, code, _, _ := runIn(t, n.cwd, "create", "--progress", "none", n.name, filepath.Join(dir, "x.platter"))
		if code == 0 || !strings.Contains(out, "mounted read-write at "+mnt) {
			t.Errorf("create of %s (in %s), mounted at %s: exit %d\n%s", n.name, n.cwd, mnt, code, out)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SIGINT and SIGTERM end a command promptly, with 128 + the signal's
// number as shells report it.
func TestSignalsEndCommands(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// Compressible and slow to compress: a create that takes seconds.
	b := bytes.Repeat([]byte("platter signals test line 0123456789\n"), 1<<20)
	for i := 0; i < 8; i++ {
		b[i*4096] = byte(i)
		f.Write(b)
	}
	f.Close()
	for _, c := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGINT, []string{"create", "--progress", "none", "--compress", "zstd:19", src, filepath.Join(dir, "a.platter")}},
		{syscall.SIGTERM, []string{"create", "--progress", "none", "--compress", "zstd:19", src, filepath.Join(dir, "b.platter")}},
	} {
		cmd := exec.Command(platter, c.args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		sent := time.Now()
		cmd.Process.Signal(c.sig)
		cmd.Wait()
		took := time.Since(sent)
		if code := cmd.ProcessState.ExitCode(); code != 128+int(c.sig) || took > 4*time.Second {
			t.Errorf("%v to %s: exit %d after %v, want %d within 4s\n%s", c.sig, c.args[0], code, took, 128+int(c.sig), out.String())
		}
		if m, _ := filepath.Glob(filepath.Join(dir, "*.partial")); len(m) > 0 {
			t.Errorf("left behind: %v", m)
		}
	}
}

// restore from standard input refuses as TARGET the file standard input
// is (restore - IMAGE < IMAGE) and every parent the image names, found
// by --search before anything is written; the refused files are left as
// they were.
func TestRestoreStreamOntoChain(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	full, inc := filepath.Join(dir, "full.platter"), filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", disk, full)
	ok(t, "create", "--progress", "none", "--incremental", full, disk, inc)
	if err := os.Link(full, filepath.Join(dir, "full-link")); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{full: readFile(t, full), inc: readFile(t, inc)}
	for _, c := range []struct{ in, target string }{
		{full, full}, {inc, inc}, {inc, full}, {inc, filepath.Join(dir, "full-link")},
	} {
		o, e, code := piped(t, c.in, "--search", dir, "restore", "--progress", "none", "-", c.target)
		if code != 2 || !strings.Contains(e, "a file of the image's chain") {
			t.Errorf("restore - %s < %s: exit %d, want 2\n%s%s", filepath.Base(c.target), filepath.Base(c.in), code, o, e)
		}
		for f, b := range want {
			if !bytes.Equal(readFile(t, f), b) {
				t.Errorf("restore - %s < %s changed %s", filepath.Base(c.target), filepath.Base(c.in), f)
				os.WriteFile(f, b, 0o600) // for the next case
			}
		}
	}
	ok(t, "verify", inc)
}

// restore refuses as TARGET every volume of a split image.
func TestRestoreOntoVolume(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", "--split", "4M", disk, img)
	names, _ := volumes(t, img)
	if len(names) < 3 {
		t.Fatalf("volumes %v: want several", names)
	}
	want := map[string][]byte{}
	for _, n := range names {
		want[n] = readFile(t, filepath.Join(dir, n))
	}
	for _, n := range names {
		out, code, _, _ := runIn(t, dir, "restore", "--progress", "none", "disk.platter", n)
		if code != 2 || !strings.Contains(out, "a file of the image's chain") {
			t.Errorf("restore onto %s: exit %d, want 2:\n%s", n, code, out)
		}
	}
	for n, b := range want {
		if !bytes.Equal(readFile(t, filepath.Join(dir, n)), b) {
			t.Errorf("%s was changed", n)
		}
	}
	ok(t, "verify", img)
}

// SIGTERM and SIGINT end info and verify while they are still opening
// an image (here one whose bytes stop coming: standard input held open
// after its first bytes), where nothing checks for the signal: the
// command has 3 s to stop, then platter exits anyway, 128 + the signal.
func TestSignalsEndOpening(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	img := filepath.Join(t.TempDir(), "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	head := readFile(t, img)[:4096]
	for _, c := range []struct {
		sig  syscall.Signal
		args []string
	}{
		{syscall.SIGTERM, []string{"verify", "-"}},
		{syscall.SIGINT, []string{"info", "-"}},
	} {
		cmd := exec.Command(platter, c.args...)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		in.Write(head) // and no more, the pipe kept open
		time.Sleep(500 * time.Millisecond)
		sent := time.Now()
		cmd.Process.Signal(c.sig)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		in.Close()
		took := time.Since(sent)
		if code := cmd.ProcessState.ExitCode(); code != 128+int(c.sig) || took > 4*time.Second {
			t.Errorf("%v to %v: exit %d after %v, want %d within 4s\n%s", c.sig, c.args, code, took, 128+int(c.sig), out.String())
		}
	}
}

// serve --overlay FILE where FILE is a symlink (planted beforehand,
// to an empty file or to one of the disk's size) is refused: the overlay
// is written through no link, and what the link points at is left as it
// was.
func TestOverlayPlantedLink(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	size := info(t, img).SourceSize
	for _, victimSize := range []int64{0, size} {
		victim := filepath.Join(dir, fmt.Sprintf("victim-%d", victimSize))
		if err := os.WriteFile(victim, nil, 0o644); err != nil || os.Truncate(victim, victimSize) != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, fmt.Sprintf("overlay-%d", victimSize))
		if err := os.Symlink(victim, link); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(platter, "serve", "--nbd", "127.0.0.1:0", "--overlay", link, img)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Signal(os.Interrupt)
			<-done
			t.Errorf("serve --overlay %s, a symlink to a %d-byte file, served", link, victimSize)
		}
		if code := cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(out.String(), "symlink") {
			t.Errorf("serve --overlay a symlink: exit %d\n%s", code, out.String())
		}
		if st, err := os.Stat(victim); err != nil || st.Size() != victimSize || st.Mode().Perm() != 0o644 {
			t.Errorf("the file the planted overlay led to was changed: %v %v", st.Size(), err)
		}
	}
}
