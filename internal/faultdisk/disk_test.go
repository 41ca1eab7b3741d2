package faultdisk_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/faultdisk"
	"github.com/platter-dev/platter/internal/tooltest"
)

// image makes a disk image of size bytes of garbage, and returns it and
// its bytes.
func image(t *testing.T, size int64) (string, []byte) {
	img := tooltest.Garbage(t, size)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return img, b
}

// directRead reads n bytes at off of dev with O_DIRECT (past every page
// cache), as a rescue reads.
func directRead(t *testing.T, dev string, off, n int64) ([]byte, error) {
	t.Helper()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// O_DIRECT wants a buffer aligned to the logical sector: a page is.
	buf, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	k, err := unix.Pread(fd, buf, off)
	if err != nil {
		return nil, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
	}
	return append([]byte(nil), buf[:k]...), nil
}

// tracer records the read requests the disk is sent.
type tracer struct {
	mu   sync.Mutex
	reqs []faultdisk.Request
}

func trace(h *tooltest.FaultyDiskHandle) *tracer {
	tr := &tracer{}
	h.FS.Trace(func(r faultdisk.Request) {
		tr.mu.Lock()
		tr.reqs = append(tr.reqs, r)
		tr.mu.Unlock()
	})
	return tr
}

// take returns the requests since the last take.
func (tr *tracer) take() []faultdisk.Request {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	r := tr.reqs
	tr.reqs = nil
	return r
}

func has(reqs []faultdisk.Request, want faultdisk.Request) bool {
	for _, r := range reqs {
		if r == want {
			return true
		}
	}
	return false
}

// An O_DIRECT read of the loop device fails with EIO exactly when it
// covers a bad byte, and arrives at the disk as one request of the same
// bytes; its neighbours read the image's bytes.
func TestDirectRead(t *testing.T) {
	for _, ss := range []int64{512, 4096} {
		t.Run(fmt.Sprint(ss), func(t *testing.T) {
			img, want := image(t, 4<<20)
			// Half a sector into one, to half into the next: both bad.
			bad := faultdisk.Range{Off: 1<<20 + ss + ss/2, Len: ss}
			h := tooltest.FaultyDisk(t, img, int(ss), faultdisk.Plan{Bad: []faultdisk.Range{bad}})
			tr := trace(h)
			for off := int64(1<<20 - 2*ss); off < 1<<20+6*ss; off += ss {
				isBad := off == 1<<20+ss || off == 1<<20+2*ss
				got, err := directRead(t, h.Dev, off, ss)
				switch {
				case isBad && !errors.Is(err, syscall.EIO):
					t.Errorf("sector at %d (bad): %v, want EIO", off, err)
				case !isBad && err != nil:
					t.Errorf("sector at %d (good): %v", off, err)
				case !isBad && !bytes.Equal(got, want[off:off+ss]):
					t.Errorf("sector at %d reads other bytes than the image's", off)
				}
				var e syscall.Errno
				if isBad {
					e = syscall.EIO
				}
				if reqs := tr.take(); !has(reqs, faultdisk.Request{Off: off, Len: int(ss), Err: e}) {
					t.Errorf("O_DIRECT read of the sector at %d came as %v", off, reqs)
				}
			}
			if _, err := directRead(t, h.Dev, 1<<20, 1<<20); !errors.Is(err, syscall.EIO) {
				t.Errorf("a 1 MiB read over the bad range: %v, want EIO", err)
			}
			if got, err := directRead(t, h.Dev, 2<<20, 2<<20); err != nil || !bytes.Equal(got, want[2<<20:]) {
				t.Errorf("the last 2 MiB: %v, or other bytes than the image's", err)
			}

			// Nothing is cached below O_DIRECT: a sector read good, then
			// made bad, fails; made good again, it reads.
			good := int64(3 << 20)
			if _, err := directRead(t, h.Dev, good, ss); err != nil {
				t.Fatal(err)
			}
			h.SetBad(faultdisk.Range{Off: good + 1, Len: 1})
			if _, err := directRead(t, h.Dev, good, ss); !errors.Is(err, syscall.EIO) {
				t.Errorf("a sector read good, then made bad: %v, want EIO", err)
			}
			if _, err := directRead(t, h.Dev, 1<<20+ss, ss); err != nil {
				t.Errorf("SetBad kept the old bad range: %v", err)
			}
			h.Clear()
			if got, err := directRead(t, h.Dev, good, ss); err != nil || !bytes.Equal(got, want[good:good+ss]) {
				t.Errorf("after Clear: %v, or other bytes than the image's", err)
			}
			if s := h.FS.Stats(); s.EIOs < 4 || s.Reads < 10 || s.Bytes < 2<<20 {
				t.Errorf("stats %+v: too few", s)
			}
		})
	}
}

// A buffered read of the loop device goes through its page cache: the
// kernel reads ahead in large requests and, when one fails, reads again
// in pages (4 KiB requests) up to the bad one, so a sequential reader
// gets all bytes before it, then EIO. Good sectors in the same page, and
// in the same page-cache folio (64 KiB and more), fail buffered too: only
// O_DIRECT reads them. And what the cache holds, it hands back even once
// the range goes bad.
func TestBufferedRead(t *testing.T) {
	img, want := image(t, 4<<20)
	bad := faultdisk.Range{Off: 2<<20 + 512, Len: 512} // the second sector of a page
	h := tooltest.FaultyDisk(t, img, 512, faultdisk.Plan{Bad: []faultdisk.Range{bad}})
	tr := trace(h)
	f, err := os.Open(h.Dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Sequential reads, as cat or dd without iflag=direct.
	buf := make([]byte, 64<<10)
	var off int64
	for ; off < 4<<20; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("buffered read at %d: %v, want EIO", off, err)
			}
			break
		}
		if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("buffered read at %d: other bytes than the image's", off)
		}
	}
	if off != 2<<20 {
		t.Errorf("sequential buffered reads failed at %d, want at 2 MiB (the read holding the bad page)", off)
	}
	reqs := tr.take()
	var ahead []faultdisk.Request
	for _, r := range reqs {
		if r.Err != 0 && r.Len > 4096 {
			ahead = append(ahead, r)
		}
	}
	if len(ahead) == 0 || !has(reqs, faultdisk.Request{Off: 2 << 20, Len: 4096, Err: syscall.EIO}) {
		t.Errorf("want a failed readahead, then the bad page read alone; the disk was sent %v", reqs)
	}
	t.Logf("failed readahead requests %v; %d requests in all", ahead, len(reqs))

	// Page by page, buffered: the bad page fails, and so do good pages
	// that share a page-cache folio with it (the kernel reads the device
	// in folios of up to hundreds of KiB, and a folio whose read failed
	// is read again whole); O_DIRECT reads every good one.
	var hidden []int64
	for off := int64(2<<20 - 64<<10); off < 3<<20; off += 4096 {
		b := make([]byte, 512)
		_, err := f.ReadAt(b, off+512)
		isBad := off == 2<<20
		switch {
		case isBad && !errors.Is(err, syscall.EIO):
			t.Errorf("buffered read of the bad sector: %v, want EIO", err)
		case err != nil && !errors.Is(err, syscall.EIO):
			t.Errorf("buffered read of the sector at %d: %v", off+512, err)
		case err == nil && !bytes.Equal(b, want[off+512:off+1024]):
			t.Errorf("buffered read of the sector at %d: other bytes than the image's", off+512)
		case err != nil && !isBad:
			hidden = append(hidden, off)
			if got, err := directRead(t, h.Dev, off, 4096); err != nil || !bytes.Equal(got, want[off:off+4096]) {
				t.Errorf("O_DIRECT read of the good page at %d: %v, or other bytes than the image's", off, err)
			}
		}
	}
	if len(hidden) == 0 || hidden[0] != 2<<20+4096 || hidden[len(hidden)-1]-hidden[0] != int64(len(hidden)-1)*4096 {
		t.Errorf("good pages failing through the page cache: %v, want a run from the bad page on", hidden)
	}
	t.Logf("good pages failing buffered, readable with O_DIRECT: %d KiB after the bad one", len(hidden)*4)
	// In the bad page, the good sectors fail buffered, and read O_DIRECT.
	for _, off := range []int64{2 << 20, 2<<20 + 1024, 2<<20 + 3584} {
		if _, err := f.ReadAt(make([]byte, 512), off); !errors.Is(err, syscall.EIO) {
			t.Errorf("buffered read of the good sector at %d, in the bad page: %v, want EIO", off, err)
		}
		if got, err := directRead(t, h.Dev, off, 512); err != nil || !bytes.Equal(got, want[off:off+512]) {
			t.Errorf("O_DIRECT read of the good sector at %d: %v, or other bytes than the image's", off, err)
		}
	}

	// The page cache keeps good data of a range gone bad: only O_DIRECT
	// (or dropping the cache) sees the failure.
	cached := int64(3 << 20)
	if _, err := f.ReadAt(make([]byte, 512), cached); err != nil {
		t.Fatal(err)
	}
	h.SetBad(faultdisk.Range{Off: cached, Len: 512})
	if _, err := f.ReadAt(make([]byte, 512), cached); err != nil {
		t.Errorf("a cached page gone bad: %v (the page cache used to answer)", err)
	}
	if _, err := directRead(t, h.Dev, cached, 512); !errors.Is(err, syscall.EIO) {
		t.Errorf("O_DIRECT read of a cached page gone bad: %v, want EIO", err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 512), cached); !errors.Is(err, syscall.EIO) {
		t.Errorf("buffered read of a page gone bad, the cache dropped: %v, want EIO", err)
	}
}

// A stall holds the reads that touch it (only those) for its delay.
func TestStall(t *testing.T) {
	img, want := image(t, 4<<20)
	const delay = 700 * time.Millisecond
	stall := faultdisk.Stall{Range: faultdisk.Range{Off: 1 << 20, Len: 64 << 10}, Delay: delay}
	h := tooltest.FaultyDisk(t, img, 4096, faultdisk.Plan{Stall: []faultdisk.Stall{stall}})

	start := time.Now()
	got, err := directRead(t, h.Dev, 1<<20+32<<10, 4096)
	if took := time.Since(start); took < delay || took > delay+3*time.Second {
		t.Errorf("a read in the stalled range took %v, want about %v", took, delay)
	}
	if err != nil || !bytes.Equal(got, want[1<<20+32<<10:][:4096]) {
		t.Errorf("stalled read: %v, or other bytes than the image's", err)
	}
	start = time.Now()
	if _, err := directRead(t, h.Dev, 2<<20, 4096); err != nil || time.Since(start) >= delay {
		t.Errorf("a read outside the stall: %v after %v", err, time.Since(start))
	}

	// The server answers other reads while one stalls (read through
	// the FUSE file: the loop device queues its requests behind a
	// stalled one, as a disk busy on a sector does).
	done := make(chan time.Duration, 1)
	start = time.Now()
	go func() {
		f, err := os.Open(h.File)
		if err == nil {
			_, err = f.ReadAt(make([]byte, 4096), 1<<20)
			f.Close()
		}
		if err != nil {
			t.Errorf("stalled read of %s: %v", h.File, err)
		}
		done <- time.Since(start)
	}()
	time.Sleep(50 * time.Millisecond)
	f, err := os.Open(h.File)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 3<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	other := time.Since(start)
	if took := <-done; took < delay || other >= delay {
		t.Errorf("stalled read of the file %v, another meanwhile %v: want the stall only on the first", took, other)
	}
	// Through the loop device, the same two reads: measured, not judged.
	start = time.Now()
	go func() {
		directRead(t, h.Dev, 1<<20, 4096)
		done <- time.Since(start)
	}()
	time.Sleep(50 * time.Millisecond)
	directRead(t, h.Dev, 3<<20, 4096)
	other = time.Since(start)
	t.Logf("through the loop device: the stalled read %v, another started 50ms later %v", <-done, other)

	// Stalled and bad: EIO, after the delay.
	h.SetBad(faultdisk.Range{Off: 1 << 20, Len: 1})
	start = time.Now()
	_, err = directRead(t, h.Dev, 1<<20, 4096)
	if took := time.Since(start); !errors.Is(err, syscall.EIO) || took < delay {
		t.Errorf("a stalled bad read: %v after %v, want EIO after %v", err, took, delay)
	}
	if s := h.FS.Stats(); s.Stalled < 4 {
		t.Errorf("stats %+v: want 2 stalled", s)
	}
	h.SetStall()
	start = time.Now()
	if _, err := directRead(t, h.Dev, 1<<20+4096, 4096); err != nil || time.Since(start) >= delay {
		t.Errorf("after SetStall(): %v after %v", err, time.Since(start))
	}
}

// A vanished disk fails every read; back, it reads, its bad range still
// bad.
func TestVanish(t *testing.T) {
	img, want := image(t, 1<<20)
	h := tooltest.FaultyDisk(t, img, 512, faultdisk.Plan{Bad: []faultdisk.Range{{Off: 4096, Len: 512}}})
	if _, err := directRead(t, h.Dev, 0, 512); err != nil {
		t.Fatal(err)
	}
	h.Vanish()
	for _, off := range []int64{0, 4096, 512 << 10} {
		if _, err := directRead(t, h.Dev, off, 512); !errors.Is(err, syscall.EIO) {
			t.Errorf("vanished, the sector at %d: %v, want EIO", off, err)
		}
	}
	h.Return()
	if got, err := directRead(t, h.Dev, 0, 1<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("back, a read over the bad range: %v (%d bytes), want EIO", err, len(got))
	}
	if got, err := directRead(t, h.Dev, 8192, 1<<20-8192); err != nil || !bytes.Equal(got, want[8192:]) {
		t.Errorf("back: %v, or other bytes than the image's", err)
	}
}

// The ctl file changes the plan as the handle's methods do, from a shell
// too, and says what is in force; stats counts.
func TestCtl(t *testing.T) {
	img, _ := image(t, 1<<20)
	h := tooltest.FaultyDisk(t, img, 512, faultdisk.Plan{})
	dir := filepath.Dir(h.File)
	ctl := filepath.Join(dir, "ctl")
	sh := func(cmd string) error {
		out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", cmd, err, out)
		}
		return nil
	}
	if err := sh("echo 'bad 8192 1024' > " + ctl); err != nil {
		t.Fatal(err)
	}
	if err := sh("printf 'stall 0 512 10ms\\nbad 0x10000 512\\n' >> " + ctl); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(ctl); err != nil || string(b) != "bad 8192 1024\nbad 65536 512\nstall 0 512 10ms\n" {
		t.Errorf("ctl reads %q, %v", b, err)
	}
	for _, c := range []struct {
		off int64
		bad bool
	}{{0, false}, {8192, true}, {8704, true}, {9216, false}, {65536, true}} {
		if _, err := directRead(t, h.Dev, c.off, 512); c.bad != errors.Is(err, syscall.EIO) || (!c.bad && err != nil) {
			t.Errorf("after ctl, the sector at %d: %v (bad: %v)", c.off, err, c.bad)
		}
	}
	if err := sh("echo vanish > " + ctl); err != nil {
		t.Fatal(err)
	}
	if _, err := directRead(t, h.Dev, 0, 512); !errors.Is(err, syscall.EIO) {
		t.Errorf("after vanish: %v", err)
	}
	if err := sh("echo return > " + ctl); err != nil {
		t.Fatal(err)
	}
	if _, err := directRead(t, h.Dev, 0, 512); err != nil {
		t.Errorf("after return: %v", err)
	}
	// A bad line fails the write and changes nothing.
	if err := sh("echo 'bad 0' > " + ctl); err == nil {
		t.Error("a bad line was taken")
	}
	if err := sh("printf 'clear\\nbad x y\\n' > " + ctl); err == nil {
		t.Error("a bad second line was taken")
	}
	if p := h.FS.Plan(); len(p.Bad) != 2 {
		t.Errorf("bad lines changed the plan: %+v", p)
	}
	if b, err := os.ReadFile(ctl); err != nil || !strings.HasSuffix(string(b), "stall 0 512 10ms\n# rejected: faultdisk: \"bad x y\": bad offset \"x\"\n") {
		t.Errorf("ctl does not say why it refused a line: %q, %v", b, err)
	}
	if err := sh("echo clear > " + ctl); err != nil {
		t.Fatal(err)
	}
	if _, err := directRead(t, h.Dev, 8192, 512); err != nil {
		t.Errorf("after clear: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "stats"))
	if err != nil {
		t.Fatal(err)
	}
	stats := map[string]int64{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		n, _ := strconv.ParseInt(f[1], 10, 64)
		stats[f[0]] = n
	}
	if stats["eios"] < 4 || stats["reads"] < 3 || stats["bytes"] < 3*512 || stats["stalled"] < 1 {
		t.Errorf("stats reads %q", b)
	}
	if err := os.WriteFile(filepath.Join(dir, "stats"), []byte("clear\n"), 0o644); err == nil {
		t.Error("stats took a write")
	}
}

// ddrescue, direct, over the loop device finds exactly the bad sectors
// planted (the ranges rounded out to whole sectors), and rescues every
// other byte: the device fails as a real failing disk does to a real
// rescue tool.
func TestDdrescue(t *testing.T) {
	for _, ss := range []int64{512, 4096} {
		t.Run(fmt.Sprint(ss), func(t *testing.T) {
			img, want := image(t, 8<<20)
			bad := []faultdisk.Range{
				{Off: 2<<20 + 100, Len: 1000},  // inside one or two sectors
				{Off: 5 << 20, Len: 64 << 10},  // 64 KiB, aligned
				{Off: 8<<20 - 700, Len: 700},   // the last sectors
				{Off: 3<<20 - 1, Len: 2},       // across a sector boundary
				{Off: 6<<20 + 4095, Len: 4098}, // 3 pages' worth of edges
			}
			h := tooltest.FaultyDisk(t, img, int(ss), faultdisk.Plan{Bad: bad})
			wantBad := map[int64]bool{}
			for _, r := range bad {
				for s := r.Off / ss; s*ss < r.End(); s++ {
					wantBad[s] = true
				}
			}
			dir := t.TempDir()
			out, mapfile := filepath.Join(dir, "rescued.img"), filepath.Join(dir, "rescue.map")
			log := tooltest.Run(t, "ddrescue", "-d", "-b", fmt.Sprint(ss), "-q", h.Dev, out, mapfile)
			t.Logf("ddrescue: %s", log)
			t.Logf("ddrescuelog -t:\n%s", tooltest.Run(t, "ddrescuelog", "-t", mapfile))
			list := tooltest.Run(t, "ddrescuelog", "-b", fmt.Sprint(ss), "-l-", mapfile)
			gotBad := map[int64]bool{}
			for _, f := range strings.Fields(list) {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					t.Fatalf("ddrescuelog -l- lists %q", f)
				}
				gotBad[n] = true
			}
			for s := range wantBad {
				if !gotBad[s] {
					t.Errorf("bad sector %d (byte %d) is not bad in ddrescue's map", s, s*ss)
				}
			}
			for s := range gotBad {
				if !wantBad[s] {
					t.Errorf("sector %d (byte %d) is bad in ddrescue's map, and was not planted", s, s*ss)
				}
			}
			// Every sector not bad was rescued as the image holds it.
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			// (It does not write the bad sectors at the end.)
			end := int64(8 << 20)
			for wantBad[end/ss-1] {
				end -= ss
			}
			if int64(len(got)) != end {
				t.Fatalf("ddrescue wrote %d bytes, want %d", len(got), end)
			}
			for s := int64(0); s*ss < int64(len(got)); s++ {
				if !wantBad[s] && !bytes.Equal(got[s*ss:(s+1)*ss], want[s*ss:(s+1)*ss]) {
					t.Fatalf("ddrescue rescued other bytes than the image's in sector %d", s)
				}
			}
		})
	}
}

// A partition node added on the failing disk fails where the disk does.
func TestPartition(t *testing.T) {
	img, want := image(t, 2<<20)
	h := tooltest.FaultyDisk(t, img, 512, faultdisk.Plan{Bad: []faultdisk.Range{{Off: 1<<20 + 512, Len: 512}}})
	part := h.AddPartition(1, 1<<20, 512<<10)
	if _, err := directRead(t, part, 512, 512); !errors.Is(err, syscall.EIO) {
		t.Errorf("the partition's bad sector: %v, want EIO", err)
	}
	if got, err := directRead(t, part, 1024, 4096); err != nil || !bytes.Equal(got, want[1<<20+1024:][:4096]) {
		t.Errorf("the partition's good sectors: %v, or other bytes than the image's", err)
	}
}

// BenchmarkRead reads a healthy failing disk with O_DIRECT in 1 MiB
// reads, against a loop device over the image itself.
func BenchmarkRead(b *testing.B) {
	const size = 256 << 20
	img := tooltest.Garbage(b, size)
	for _, c := range []struct {
		name string
		dev  func() string
	}{
		{"faultdisk", func() string { return tooltest.FaultyDisk(b, img, 512, faultdisk.Plan{}).Dev }},
		{"plain", func() string { return tooltest.Loop(b, img, "-r") }},
	} {
		b.Run(c.name, func(b *testing.B) {
			dev := c.dev()
			fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			buf, _ := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			b.SetBytes(size)
			for b.Loop() {
				for off := int64(0); off < size; off += 1 << 20 {
					if _, err := unix.Pread(fd, buf, off); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// Unmount ends a stall in progress rather than wait for it, and a
// failed Unmount (the disk busy) leaves stalls working.
func TestUnmountEndsStall(t *testing.T) {
	img, _ := image(t, 1<<20)
	mnt := t.TempDir()
	fsys, err := faultdisk.Mount(mnt, img, faultdisk.Plan{Stall: []faultdisk.Stall{{Range: faultdisk.Range{Off: 0, Len: 4096}, Delay: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fsys.Unmount() != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	f, err := os.Open(fsys.Disk())
	if err != nil {
		t.Fatal(err)
	}
	// Busy: the unmount fails, and a read still stalls.
	if err := fsys.Unmount(); err == nil {
		t.Fatal("unmounted with a file open")
	}
	read := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(make([]byte, 512), 0)
		f.Close()
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("a read did not stall after a failed unmount: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	for fsys.Unmount() != nil {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the unmount still fails after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled read goes on after the unmount")
	}
	if fsys.Unmount() != nil {
		t.Error("a second Unmount fails")
	}
}
