package tooltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Mount mounts dev with the kernel's driver and mount options opts
// (mount -o) and returns the mount point and a func that unmounts it,
// which the end of the test also runs (thawing the filesystem first, in
// case the test froze it). A regular file is mounted through a loop
// device of its own, read-only when opts start with "ro", which is
// detached when the test ends, not at the unmount: each mount in a test
// keeps a device (and a device name) of its own, which btrfs, mounting
// copies of one filesystem at once, needs.
//
// The unmount returns once the kernel has let go of the device: should
// the filesystem live on after umount(2) (mounted again elsewhere), a
// test reading the image next would read it while it still changes.
func Mount(t testing.TB, dev, opts string) (mnt string, umount func()) {
	t.Helper()
	if st, err := os.Stat(dev); err == nil && st.Mode().IsRegular() {
		args := []string{"-f", "--show"}
		if strings.HasPrefix(opts, "ro") {
			args = append(args, "-r")
		}
		loop := strings.TrimSpace(Run(t, "losetup", append(args, dev)...))
		t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
		dev = loop
	}
	mnt = t.TempDir()
	Run(t, "mount", "-o", opts, dev, mnt)
	done := false
	umount = func() {
		if !done {
			done = true
			Umount(t, mnt)
			Released(t, dev)
		}
	}
	t.Cleanup(func() {
		if !done {
			exec.Command("fsfreeze", "-u", mnt).Run()
		}
		umount()
	})
	return mnt, umount
}

// Released waits until no filesystem holds the block device dev (it opens
// with O_EXCL) and fails the test if one still does after a minute.
func Released(t testing.TB, dev string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			return
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			t.Errorf("%s is still held after its unmount: %v", dev, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
