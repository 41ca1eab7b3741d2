package tooltest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Loop attaches file to a free loop device (losetup args, such as -r or
// -b 4096, before the file) and detaches it when the test ends.
//
// Partitions added to a loop device with addpart outlive losetup -d (the
// kernel drops them only for devices that scan their own tables), so a
// device can come with partitions a killed or unlucky earlier user left,
// and addpart on it fails "busy". Loop removes any it finds, and the
// test's own before detaching.
func Loop(t testing.TB, file string, args ...string) string {
	t.Helper()
	dev := strings.TrimSpace(Run(t, "losetup", append(append([]string{"-f", "--show"}, args...), file)...))
	ClearPartitions(dev)
	t.Cleanup(func() {
		ClearPartitions(dev)
		for range 50 {
			out, err := exec.Command("losetup", "-d", dev).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "busy") {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dev
}

// ClearPartitions deletes every partition the kernel has on dev (a loop
// device), each retried for up to 5 s while something (udev's probe, a
// closing tool) still holds it.
func ClearPartitions(dev string) {
	name := filepath.Base(dev)
	parts, _ := filepath.Glob(filepath.Join("/sys/block", name, name+"p*"))
	for _, p := range parts {
		n := strings.TrimPrefix(filepath.Base(p), name+"p")
		for range 50 {
			if exec.Command("delpart", dev, n).Run() == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
