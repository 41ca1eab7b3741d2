package main

import (
	"bufio"
	"bytes"
	"errors"
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

// The command serves a failing disk to another process until a signal,
// and unmounts; a loop device over it holds it until detached.
func TestCommand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "faultdisk")
	tooltest.Run(t, "go", "build", "-o", bin, ".")
	img := tooltest.Garbage(t, 1<<20)
	want, _ := os.ReadFile(img)
	mnt := t.TempDir()

	if out, err := exec.Command(bin, "-bad", "4096", img, mnt).CombinedOutput(); err == nil || !strings.Contains(string(out), `-bad "4096": want OFF+LEN`) {
		t.Errorf("a bad -bad: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "-stall", "0+512:soon", img, mnt).CombinedOutput(); err == nil || !strings.Contains(string(out), "soon") {
		t.Errorf("a bad -stall: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "-bad", "4096+512,0x10000+1", "-stall", "8192+512:300ms", img, mnt)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var exitErr error
	exited := make(chan struct{}) // closed when it has, exitErr set
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if disk := filepath.Join(mnt, "disk"); err != nil || line != "ready "+disk+"\n" {
		t.Fatalf("first line %q, %v; stderr:\n%s", line, err, stderr.Bytes())
	}

	disk := filepath.Join(mnt, "disk")
	read := func(off int64) ([]byte, error) {
		out, err := exec.Command("dd", "if="+disk, "bs=512", "count=1", "skip="+strconv.FormatInt(off/512, 10), "status=none").Output()
		return out, err
	}
	if got, err := read(0); err != nil || !bytes.Equal(got, want[:512]) {
		t.Errorf("good sector: %v", err)
	}
	for _, off := range []int64{4096, 0x10000} {
		if _, err := read(off); err == nil {
			t.Errorf("the bad sector at %d read", off)
		}
	}
	start := time.Now()
	if _, err := read(8192); err != nil || time.Since(start) < 300*time.Millisecond {
		t.Errorf("stalled sector: %v after %v", err, time.Since(start))
	}
	if err := os.WriteFile(filepath.Join(mnt, "ctl"), []byte("clear\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := read(4096); err != nil || !bytes.Equal(got, want[4096:4608]) {
		t.Errorf("after clear: %v", err)
	}

	// Held by a loop device, it keeps serving through a signal.
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", "-r", disk))
	t.Cleanup(func() { // if the test failed before it did
		if b, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file"); strings.TrimSpace(string(b)) == disk {
			exec.Command("losetup", "-d", dev).Run()
		}
	})
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(time.Second)
	select {
	case <-exited:
		t.Fatalf("exited with a loop device over it: %v\n%s", exitErr, stderr.Bytes())
	default:
	}
	tooltest.Run(t, "dd", "if="+dev, "of=/dev/null", "bs=64k", "iflag=direct", "status=none")
	tooltest.Run(t, "losetup", "-d", dev)
	for try := 0; ; try++ {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			if exitErr != nil {
				t.Fatalf("exit: %v\n%s", exitErr, stderr.Bytes())
			}
			if !strings.Contains(stderr.String(), "still serving") {
				t.Errorf("the first signal said nothing:\n%s", stderr.Bytes())
			}
			if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after exit, %s: %v (still mounted?)", disk, err)
			}
			return
		case <-time.After(time.Second):
			if try == 10 {
				t.Fatalf("still running 10 s after the loop device went:\n%s", stderr.Bytes())
			}
		}
	}
}
