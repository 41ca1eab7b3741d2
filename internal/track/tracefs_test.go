//go:build linux

package track

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
	"golang.org/x/sys/unix"
)

// loopDevice attaches a fresh file of size bytes to a loop device.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p, size)
	return tooltest.Loop(t, p)
}

// directWrite writes n bytes at off with O_DIRECT, so the write reaches
// the device now.
func directWrite(t *testing.T, dev string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := block.AlignedBuffer(n)
	for i := range b {
		b[i] = byte(i)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func directRead(t *testing.T, dev string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(block.AlignedBuffer(n), off); err != nil {
		t.Fatal(err)
	}
}

// Writes completed before Take are in its answer, exactly; reads are not;
// a second Take starts afresh; the instance is gone after Close.
func TestTracefsSeesWrites(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	tr, err := StartTracefs(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst := tr.inst
	directWrite(t, dev, 1<<20, 64<<10)
	directWrite(t, dev, 5<<20, 4096)
	directWrite(t, dev, 5<<20+4096, 4096) // touches the one before: merged
	directRead(t, dev, 9<<20, 1<<20)
	got, err := tr.Take()
	if err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{{Off: 1 << 20, Len: 64 << 10}, {Off: 5 << 20, Len: 8192}}
	if !sameExtents(got, want) {
		t.Fatalf("Take = %v, want %v", got, want)
	}
	if got, err := tr.Take(); err != nil || len(got) != 0 {
		t.Fatalf("second Take = %v, %v; want nothing", got, err)
	}
	directWrite(t, dev, 60<<20, 512)
	if got, err := tr.Take(); err != nil || !sameExtents(got, []block.Extent{{Off: 60 << 20, Len: 512}}) {
		t.Fatalf("third Take = %v, %v", got, err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tracing instance %s left behind: %v", inst, err)
	}
}

// A partition's writes are found on its disk's events and reported
// relative to the partition; writes to the rest of the disk are not.
func TestTracefsPartition(t *testing.T) {
	dev, part := loopPartition(t)
	tr, err := StartTracefs(part, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	directWrite(t, part, 8192, 4096)       // in the partition
	directWrite(t, dev, 40<<20, 4096)      // on the disk, past the partition
	directWrite(t, dev, 1<<20+16384, 4096) // on the disk, inside the partition
	got, err := tr.Take()
	if err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{{Off: 8192, Len: 4096}, {Off: 16384, Len: 4096}}
	if !sameExtents(got, want) {
		t.Fatalf("Take = %v, want %v", got, want)
	}
}

// A buffer too small for the writes loses events, and Take says so
// rather than answer with a partial set.
func TestTracefsLossIsAnError(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	tr, err := StartTracefs(dev, Options{BufferKB: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	// Hold the reader off while thousands of writes complete.
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := block.AlignedBuffer(512)
	tr.mu.Lock() // the reader blocks on its next event
	for i := int64(0); i < 20000; i++ {
		f.WriteAt(b, (i%100000)*512)
	}
	tr.mu.Unlock()
	if _, err := tr.Take(); !errors.Is(err, ErrLost) {
		t.Fatalf("Take after an overrun: %v, want ErrLost", err)
	}
}

// loopPartition makes a 64 MiB loop device with partition 1 at sectors
// 2048..(2048+32768), added as the kernel here parses no tables on loop
// devices.
func loopPartition(t *testing.T) (dev, part string) {
	dev = loopDevice(t, 64<<20)
	if out, err := exec.Command("addpart", dev, "1", "2048", "32768").CombinedOutput(); err != nil {
		t.Fatalf("addpart: %v: %s", err, out)
	}
	part = dev + "p1"
	if _, err := os.Stat(part); err != nil {
		t.Fatalf("partition device %s: %v", part, err)
	}
	return dev, part
}

func sameExtents(a, b []block.Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A bio-based device (zram here; device-mapper and md alike) completes no
// requests: both trackers refuse it rather than watch nothing.
func TestRefusesBioBased(t *testing.T) {
	const zram = "/sys/block/zram0"
	size, err := os.ReadFile(zram + "/disksize")
	if err != nil {
		t.Fatalf("this test needs the kernel's zram0 device: %v", err)
	}
	if strings.TrimSpace(string(size)) == "0" {
		if err := os.WriteFile(zram+"/disksize", []byte("16M"), 0); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(zram+"/reset", []byte("1"), 0)
	}
	for _, kind := range []string{"", "bpf", "tracefs"} {
		tr, _, err := Start("/dev/zram0", kind, Options{})
		if err == nil {
			tr.Close()
			t.Fatalf("tracker %q started on zram", kind)
		}
		if !strings.Contains(err.Error(), "bio-based") {
			t.Errorf("tracker %q: %v, want a refusal naming a bio-based device", kind, err)
		}
	}
}
