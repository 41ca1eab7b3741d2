package tooltest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/faultdisk"
)

// FaultyDiskHandle is a failing block device made by FaultyDisk.
type FaultyDiskHandle struct {
	Dev  string        // the loop device, /dev/loopN: image it, read it
	File string        // the FUSE file under it, MOUNT/disk
	FS   *faultdisk.FS // the server: Plan, Stats, Control
	t    testing.TB
}

// FaultyDisk serves image as a failing disk (package faultdisk, in this
// process) and attaches a read-only loop device of sectorSize-byte
// logical sectors (512 or 4096) over it: h.Dev is a real block device
// whose reads fail with EIO, or stall, where plan says, read by this
// process or any other (bin/platter, ddrescue, dd). The plan can be
// changed while it is in use (SetBad, SetStall, Vanish, Return, Clear).
// The loop device uses buffered I/O on the FUSE file (never
// --direct-io=on), which is opened with FUSE direct I/O: nothing of it
// is cached below the loop device's own page cache.
//
// The kernel parses no partition table on it: a test images the whole
// device, as Platter reads the table itself, or adds the partition nodes
// it needs with h.AddPartition.
//
// When the test ends the plan is cleared, the loop device detached (once
// its last opener lets go) and then the FUSE file unmounted; a mount it
// cannot end fails the test.
func FaultyDisk(t testing.TB, image string, sectorSize int, plan faultdisk.Plan) *FaultyDiskHandle {
	t.Helper()
	if sectorSize != 512 && sectorSize != 4096 {
		t.Fatalf("FaultyDisk: sector size %d, want 512 or 4096", sectorSize)
	}
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() == 0 || st.Size()%int64(sectorSize) != 0 {
		t.Fatalf("FaultyDisk: %s is %d bytes, not a whole number of %d-byte sectors", image, st.Size(), sectorSize)
	}
	losetup := toolPath(t, "losetup")
	sweepDeadFaultyDisks()
	mnt := t.TempDir() // removed after the cleanup below, which unmounts it
	fsys, err := faultdisk.Mount(mnt, image, plan)
	if err != nil {
		t.Fatal(err)
	}
	h := &FaultyDiskHandle{File: fsys.Disk(), FS: fsys, t: t}
	t.Cleanup(func() { h.close(mnt) })
	out, err := exec.Command(losetup, "-f", "--show", "-r", "--direct-io=off", "--sector-size", fmt.Sprint(sectorSize), h.File).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup over %s: %v\n%s", h.File, err, out)
	}
	h.Dev = strings.TrimSpace(string(out))
	ClearPartitions(h.Dev)
	return h
}

// SetBad makes reads overlapping these ranges fail (and no others).
func (h *FaultyDiskHandle) SetBad(bad ...faultdisk.Range) {
	h.FS.Change(func(p *faultdisk.Plan) { p.Bad = bad })
}

// SetStall makes reads overlapping these ranges stall (and no others).
func (h *FaultyDiskHandle) SetStall(stall ...faultdisk.Stall) {
	h.FS.Change(func(p *faultdisk.Plan) { p.Stall = stall })
}

// Vanish makes every read fail, as a disk gone from the bus.
func (h *FaultyDiskHandle) Vanish() { h.FS.Change(func(p *faultdisk.Plan) { p.Vanished = true }) }

// Return brings a vanished disk back, with its bad and stalled ranges.
func (h *FaultyDiskHandle) Return() { h.FS.Change(func(p *faultdisk.Plan) { p.Vanished = false }) }

// Clear ends every fault: the disk reads as its image.
func (h *FaultyDiskHandle) Clear() { h.FS.SetPlan(faultdisk.Plan{}) }

// AddPartition adds partition n of the device, size bytes from byte off
// (multiples of 512), with addpart, and returns its node (/dev/loopNpN),
// which the end of the test removes.
func (h *FaultyDiskHandle) AddPartition(n int, off, size int64) string {
	h.t.Helper()
	Run(h.t, "addpart", h.Dev, fmt.Sprint(n), fmt.Sprint(off/512), fmt.Sprint(size/512))
	node := fmt.Sprintf("%sp%d", h.Dev, n)
	for range 50 {
		if _, err := os.Stat(node); err == nil {
			return node
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("addpart %s %d: no %s", h.Dev, n, node)
	return ""
}

// close detaches the loop device and then unmounts mnt: in the other
// order the loop device would hold the mount busy.
func (h *FaultyDiskHandle) close(mnt string) {
	h.Clear() // udev's last probe neither fails nor stalls
	if h.Dev != "" {
		ClearPartitions(h.Dev)
		// losetup -d of a device still open (udev's probe) only marks
		// it to go at its last close: wait for that.
		backing := filepath.Join("/sys/block", filepath.Base(h.Dev), "loop", "backing_file")
		gone := false
		for range 300 {
			if b, err := os.ReadFile(backing); err != nil || strings.TrimSpace(string(b)) != h.File {
				gone = true
				break
			}
			exec.Command("losetup", "-d", h.Dev).Run()
			time.Sleep(100 * time.Millisecond)
		}
		if !gone {
			h.t.Errorf("FaultyDisk: %s still holds %s after 30 s", h.Dev, h.File)
		}
	}
	var err error
	for range 100 {
		if err = h.FS.Unmount(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Never leave a mount behind for later tests: detach it lazily (its
	// server ends with this process).
	lerr := unix.Unmount(mnt, unix.MNT_DETACH)
	h.t.Errorf("FaultyDisk: %v (lazy unmount: %v)", err, lerr)
}

// toolPath finds a tool as Run does; a missing one fails the test.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s is needed for this test and is not installed", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// sweepDeadFaultyDisks detaches the loop devices over, and lazily
// unmounts, faultdisk mounts whose server is gone (a test process killed
// before its cleanup): they would hold loop devices and mount points for
// good. A live one (another test's) answers stat and is left alone.
func sweepDeadFaultyDisks() {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || g[0] != "fuse.faultdisk" {
			continue
		}
		mnt := f[4]
		if _, err := os.Stat(mnt); !errors.Is(err, unix.ENOTCONN) {
			continue
		}
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, p := range loops {
			if back, err := os.ReadFile(p); err == nil && strings.HasPrefix(string(back), mnt+"/") {
				exec.Command("losetup", "-d", "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p)))).Run()
			}
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
}
