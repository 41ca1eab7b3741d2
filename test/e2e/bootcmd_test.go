package e2e

// platter boot (issue 18): an image's disk booted in QEMU through the
// command, the boot fixtures of bootdisk_test.go as the guests. Two boots
// in all (TCG is slow): the MBR disk with BIOS, imaged as a chain (a full
// image and an incremental of it), and the GPT disk with UEFI, encrypted.
// Each boot saves what the guest wrote (--save), so each also proves the
// saved incremental.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/tooltest"
)

// sha256File is the hex SHA-256 of a file's bytes.
func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// bootCommand runs platter boot with args and no terminal (standard input
// /dev/null), bounded by bootTimeout; it returns what it printed on each
// stream and its exit code.
func bootCommand(t *testing.T, args ...string) (stdout, stderr string, code int, took time.Duration) {
	t.Helper()
	needTools(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout(bootAccel()))
	defer cancel()
	cmd := exec.CommandContext(ctx, platter, append([]string{"boot", "--accel", bootAccel()}, args...)...)
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	defer bootLeftNothing(t, tmp)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("platter boot %v did not end within %v\nstderr:\n%s\nserial console:\n%s", args, bootTimeout(bootAccel()), e.String(), bootTail(o.String()))
	}
	code = 0
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("platter boot: %v", err)
	}
	return o.String(), e.String(), code, took
}

// platter boot boots a real disk from its image, with the firmware the
// disk needs (chosen from it), the serial console on standard output and
// no terminal; the image's files are never written; --save makes an
// incremental of the chain that verify checks, info shows with its
// parent, and restore turns into a disk whose root holds the file the
// guest wrote, clean by e2fsck. The chain's own restore does not have it.
func TestBootCommand(t *testing.T) {
	cases := []struct {
		kind     bootKind
		chain    bool // boot an incremental of the full image
		encrypt  bool
		firmware string // what boot must say it chose
	}{
		{kind: bootBIOSMBR, chain: true, firmware: "BIOS firmware (the disk has an MBR partition table"},
		{kind: bootUEFIGPT, encrypt: true, firmware: "UEFI firmware (the GPT disk has an EFI system partition (1))"},
	}
	for _, c := range cases {
		t.Run(string(c.kind), func(t *testing.T) {
			disk := bootDisk(t, c.kind)
			l := bootLayouts[c.kind]
			dir := t.TempDir()
			var secret []string
			create := []string{"create", "--progress", "none"}
			if c.encrypt {
				k := newEncKeys(t, "boot me")
				secret = k.pw()
				create = append(create, "--encrypt", "--test-kdf", cheapKDF)
			}
			full := filepath.Join(dir, "full.platter")
			ok(t, append(append(create, secret...), disk, full)...)
			img := full
			if c.chain {
				img = filepath.Join(dir, "incr.platter")
				ok(t, "create", "--progress", "none", "--incremental", full, disk, img)
			}
			sums := map[string]string{}
			for _, f := range []string{full, img} {
				sums[f] = sha256File(t, f)
			}

			saved := filepath.Join(dir, "saved.platter")
			args := append(append([]string{"--display", "none", "--memory", "256M", "--cpus", "1", "--progress", "none", "--save", saved}, secret...), img)
			stdout, stderr, code, took := bootCommand(t, args...)
			if code != 0 {
				t.Fatalf("platter boot exited %d after %v\nstderr:\n%s\nserial console:\n%s", code, took.Round(time.Millisecond), stderr, bootTail(stdout))
			}
			r, err := parseBootLog(stdout, c.kind)
			if err != nil {
				t.Fatalf("%v\nstderr:\n%s\nserial console:\n%s", err, stderr, bootTail(stdout))
			}
			if !r.Wrote || r.Run == "" {
				t.Fatalf("the guest did not write its marker (run %q): its root was not writable\nserial console:\n%s", r.Run, bootTail(stdout))
			}
			t.Logf("booted in %v (%s), run %s; stderr:\n%s", took.Round(time.Millisecond), bootAccel(), r.Run, stderr)
			for _, want := range []string{c.firmware, "the guest powered off", "saved " + saved} {
				if !strings.Contains(oneLineOf(stderr), want) {
					t.Errorf("platter boot did not say %q:\n%s", want, stderr)
				}
			}
			if bootAccel() == "tcg" && !strings.Contains(stderr, "without KVM") {
				t.Errorf("platter boot ran TCG without saying so:\n%s", stderr)
			}
			for f, sum := range sums {
				if got := sha256File(t, f); got != sum {
					t.Errorf("%s changed: sha256 %s, was %s", filepath.Base(f), got, sum)
				}
			}

			// The saved incremental: checked, a child of what was booted.
			ok(t, append(append([]string{"verify"}, secret...), saved)...)
			parent := info(t, img, secret...)
			j := info(t, saved, append([]string{"--chunks"}, secret...)...)
			if j.Type != "incremental" || len(j.Chain) < 2 || j.Chain[1].ID != parent.ID {
				t.Errorf("info of the saved image: type %q, chain %+v; want an incremental of %s", j.Type, j.Chain, parent.ID)
			}
			stored := 0
			for _, ch := range j.Chunks {
				if !ch.InParent && !ch.Zero {
					stored++
				}
			}
			if stored == 0 || stored*2 > len(j.Chunks) {
				t.Errorf("the saved image stores %d of %d chunks itself; want the few the guest changed", stored, len(j.Chunks))
			}
			t.Logf("the saved image stores %d of its %d chunks", stored, len(j.Chunks))

			// Restored, its root holds the guest's file and is clean; the
			// booted image's restore does not hold it.
			back := filepath.Join(dir, "saved.img")
			ok(t, append(append([]string{"restore", "--yes", "--progress", "none"}, secret...), saved, back)...)
			root := extract(t, back, sfdiskParts(t, back)[l.root])
			sh(t, "e2fsck", "-fn", root)
			if got, _ := debugfsRead(t, root, "/var/lib/platter/boot-run"); strings.TrimSpace(got) != r.Run {
				t.Errorf("the restored root's /var/lib/platter/boot-run holds %q, the guest wrote %q", got, r.Run)
			}
			// Boot saved only the chunks the guest wrote (or whose blocks it
			// freed), unread the rest: the same chunks as create makes of
			// the restored disk against the same parent, reading it all.
			again := filepath.Join(dir, "again.platter")
			ok(t, append(append([]string{"create", "--progress", "none", "--incremental", img}, secret...), back, again)...)
			type chunk struct {
				part             int
				off              int64
				inParent, isZero bool
			}
			chunks := func(j infoJSON) []chunk {
				var out []chunk
				for _, c := range j.Chunks {
					out = append(out, chunk{c.Partition, c.Offset, c.InParent, c.Zero})
				}
				return out
			}
			if a, b := chunks(j), chunks(info(t, again, append([]string{"--chunks"}, secret...)...)); !slices.Equal(a, b) {
				t.Errorf("boot --save made chunks\n%v\ncreate --incremental of its restore\n%v", a, b)
			}
			orig := filepath.Join(dir, "orig.img")
			ok(t, append(append([]string{"restore", "--yes", "--progress", "none"}, secret...), img, orig)...)
			if got, msg := debugfsRead(t, extract(t, orig, sfdiskParts(t, orig)[l.root]), "/var/lib/platter/boot-run"); got != "" || !strings.Contains(msg, "File not found") {
				t.Errorf("the booted image's own restore has the guest's file: %q %s", got, msg)
			}
		})
	}
}

// debugfsRead is a file of an ext4 image as debugfs reads it, and what
// debugfs said on stderr (where it says a file is not found).
func debugfsRead(t *testing.T, img, path string) (string, string) {
	t.Helper()
	needTools(t, "debugfs")
	cmd := exec.Command("debugfs", "-R", "cat "+path, img)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs cat %s: %v\n%s", path, err, e.String())
	}
	return o.String(), e.String()
}

// bootLeftNothing fails the test if a boot whose TMPDIR was tmp left a
// file there (its overlay, socket, UEFI variables) or a QEMU running.
func bootLeftNothing(t *testing.T, tmp string) {
	t.Helper()
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Errorf("platter boot left %s/%s behind", tmp, ents[0].Name())
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(tmp)) && bytes.Contains(b, []byte("qemu")) {
			t.Errorf("QEMU still runs: %s: %s", p, bytes.ReplaceAll(b, []byte{0}, []byte(" ")))
		}
	}
}

// --disk-bus sata puts the disk on q35's AHCI controller, as boot does
// for a disk holding an NTFS (Windows has no virtio driver inbox): the
// firmware and GRUB read the kernel and initramfs from it over SATA, so
// the fixture's init runs (it may not find its root: the initramfs
// loads only the virtio driver, and says so).
func TestBootDiskBus(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", bootDisk(t, bootBIOSMBR), img)
	stdout, stderr, code, took := bootCommand(t, "--display", "none", "--memory", "256M", "--cpus", "1", "--disk-bus", "sata", img)
	if code != 0 || !strings.Contains(oneLineOf(stderr), "a sata disk (--disk-bus sata)") || !strings.Contains(stdout, "PLATTER-BOOT-") {
		t.Errorf("platter boot --disk-bus sata: exit %d after %v\nstderr:\n%s\nserial console:\n%s", code, took.Round(time.Millisecond), stderr, bootTail(stdout))
	}
}

// On a terminal, boot puts it in raw mode and Ctrl-] ends the VM, with
// the terminal as it was; SIGTERM ends it too (exit 143). Neither leaves
// a file or a QEMU behind. Both stop the guest early in its boot.
func TestBootStops(t *testing.T) {
	disk := bootDisk(t, bootBIOSGPT)
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	args := []string{"boot", "--accel", bootAccel(), "--memory", "256M", "--cpus", "1", img}

	t.Run("Ctrl-]", func(t *testing.T) {
		master, slave := tooltest.OpenPTY(t)
		defer master.Close()
		defer slave.Close() // kept open: the terminal's modes are read after platter ends
		before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		tmp := t.TempDir()
		cmd := exec.Command(platter, args...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var mu sync.Mutex
		var shown bytes.Buffer
		go func() {
			b := make([]byte, 4096)
			for {
				n, err := master.Read(b)
				mu.Lock()
				shown.Write(b[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		text := func() string { mu.Lock(); defer mu.Unlock(); return shown.String() }
		// The kernel's first line on the serial console: the guest runs.
		deadline := time.Now().Add(bootTimeout(bootAccel()))
		for !strings.Contains(text(), "Linux version") {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no kernel on the console within %v:\n%s", bootTimeout(bootAccel()), text())
			}
			time.Sleep(50 * time.Millisecond)
		}
		raw, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
			t.Errorf("the terminal is not raw while the VM runs: lflag %#x", raw.Lflag)
		}
		master.Write([]byte{0x1d})
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("Ctrl-] did not end platter boot within 30 s:\n%s", text())
		}
		if err != nil {
			t.Errorf("platter boot ended with %v after Ctrl-]:\n%s", err, text())
		}
		after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
			t.Errorf("the terminal was not restored: lflag %#x iflag %#x oflag %#x, was %#x %#x %#x", after.Lflag, after.Iflag, after.Oflag, before.Lflag, before.Iflag, before.Oflag)
		}
		time.Sleep(100 * time.Millisecond) // the last output read
		if out := text(); !strings.Contains(out, "Ctrl-] ends the VM") || !strings.Contains(out, "stopped the VM (Ctrl-])") {
			t.Errorf("the terminal shows:\n%s", out)
		}
		bootLeftNothing(t, tmp)
	})

	t.Run("SIGTERM", func(t *testing.T) {
		tmp := t.TempDir()
		cmd := exec.Command(platter, args...)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		var stderr bytes.Buffer
		cmd.Stdout = io.Discard
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Until QEMU runs: the boot's directory holds its socket.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if m, _ := filepath.Glob(filepath.Join(tmp, "platter-boot-*", "disk.sock")); len(m) > 0 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("platter boot did not start: %s", stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
			t.Errorf("platter boot ended with %v after SIGTERM, want exit 143: %s", err, stderr.String())
		}
		bootLeftNothing(t, tmp)
	})
}

// oneLineOf joins a text's lines (messages wrap nowhere, but be sure).
func oneLineOf(s string) string { return strings.Join(strings.Fields(s), " ") }

// boot refuses an image of one partition and says which package a
// missing QEMU is in, in one line, before anything starts.
func TestBootRefuses(t *testing.T) {
	disk := bootDisk(t, bootBIOSGPT)
	dir := t.TempDir()
	root := extract(t, disk, sfdiskParts(t, disk)[bootLayouts[bootBIOSGPT].root])
	part := filepath.Join(dir, "root.platter")
	ok(t, "create", "--progress", "none", root, part)
	if _, stderr, code := run(t, "boot", part); code != 2 || !strings.Contains(stderr, "an image of one partition") {
		t.Errorf("boot of a partition image: exit %d, %s", code, stderr)
	}

	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	cmd := exec.Command(platter, "boot", img)
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 1 || len(lines) != 1 || !strings.Contains(lines[0], "install the Debian package qemu-system-x86") {
		t.Errorf("boot without QEMU: %v, %q", err, out)
	}

	existing := filepath.Join(dir, "exists.platter")
	os.WriteFile(existing, []byte("x"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--save", existing, img}, "exists"},
		{[]string{"--uefi", "--bios", img}, "exclude each other"},
		{[]string{"--memory", "1M", img}, "--memory must be at least 64M"},
		{[]string{"--display", "sdl", img}, "--display takes none or vnc"},
		{[]string{"--cpus", "0", img}, "--cpus takes 1 to 255"},
	} {
		if _, stderr, code := run(t, append([]string{"boot"}, c.args...)...); code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("boot %v: exit %d, %s; want exit 2 saying %q", c.args, code, stderr, c.want)
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "x" {
		t.Error("--save overwrote an existing file")
	}
}
