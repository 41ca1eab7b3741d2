package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
)

// liveDisk is a GPT disk on a loop device: partition 1 (192 MiB, left
// raw) and partition 2 holding a mounted filesystem of kind fs with a directory
// "live" for a writer.
type liveDisk struct {
	dev, part, mnt string
	p2             part // partition 2's bytes on the disk
	p1             part
}

func newLiveDisk(t *testing.T, fs string) liveDisk {
	t.Helper()
	disk := sparseFile(t, filepath.Join(t.TempDir(), "disk.img"), 704<<20)
	sh(t, "sgdisk", "-n", "1:1M:+192M", "-t", "1:8300", "-n", "2:0:0", "-t", "2:8300", disk)
	parts := sfdiskParts(t, disk)
	d := liveDisk{dev: loop(t, disk), p1: parts[1], p2: parts[2]}
	// This kernel parses no partition tables on loop devices: add them.
	for n, p := range map[int]part{1: parts[1], 2: parts[2]} {
		exec.Command("delpart", d.dev, fmt.Sprint(n)).Run()
		sh(t, "addpart", d.dev, fmt.Sprint(n), fmt.Sprint(p.start/512), fmt.Sprint(p.size/512))
	}
	d.part = d.dev + "p2"
	d.mnt = mountNew(t, fs, d.part)
	return d
}

// mountNew makes a filesystem of kind fs on dev, mounts it with a
// directory "live" for a writer, and returns the mount point.
func mountNew(t *testing.T, fs, dev string) string {
	t.Helper()
	switch fs {
	case "ext4":
		sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev)
	case "xfs":
		sh(t, "mkfs.xfs", "-q", "-f", "-K", dev)
	case "btrfs":
		sh(t, "mkfs.btrfs", "-q", "-f", "--nodiscard", dev)
	}
	mnt := t.TempDir()
	sh(t, "mount", dev, mnt)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run()
		exec.Command("umount", mnt).Run()
	})
	if err := os.Mkdir(filepath.Join(mnt, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// liveImage images src with --snapshot track and returns when the
// filesystems were frozen and thawed, from its JSON progress.
func liveImage(t *testing.T, src, img string, args ...string) (frozen, thawed time.Time) {
	t.Helper()
	return liveImageWatch(t, src, img, nil, args...)
}

// liveImageWatch is liveImage calling onPass, if not nil, as each pass
// of the copy is reported (kind "full" for the first copy), while create
// goes on.
func liveImageWatch(t *testing.T, src, img string, onPass func(kind string), args ...string) (frozen, thawed time.Time) {
	t.Helper()
	cmd := exec.Command(platter, append(append([]string{"create", "--snapshot", "track", "--progress", "json"}, args...), src, img)...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		stderr.Write(sc.Bytes())
		stderr.WriteByte('\n')
		var ev struct {
			Snapshot string    `json:"snapshot"`
			Pass     string    `json:"pass"`
			At       time.Time `json:"at"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch {
		case ev.Snapshot == "frozen":
			frozen = ev.At
		case ev.Snapshot == "thawed":
			thawed = ev.At
		case ev.Pass != "" && onPass != nil:
			onPass(ev.Pass)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("create: %v\n%s", err, stderr.String())
	}
	if frozen.IsZero() || thawed.IsZero() {
		t.Fatalf("create reported no freeze and thaw:\n%s", stderr.String())
	}
	return frozen, thawed
}

// checkedMount checks the filesystem in file with its own tool and mounts
// it read-only. XFS replays its log first (an image of a frozen XFS needs
// log recovery at first mount, as XFS does after any freeze), on the copy.
func checkedMount(t *testing.T, fs, file string) string {
	t.Helper()
	opts := "ro"
	switch fs {
	case "ext4":
		sh(t, "e2fsck", "-fn", file)
	case "xfs":
		opts = "ro,nouuid" // the source, with the same UUID, is mounted
		mnt := t.TempDir()
		dev := loop(t, file)
		sh(t, "mount", "-o", "nouuid", dev, mnt)
		sh(t, "umount", mnt)
		sh(t, "xfs_repair", "-n", file)
	case "btrfs":
		sh(t, "btrfs", "check", "--readonly", file)
		btrfsOwnFsid(t, file)
	}
	root, err := mountImage(t, file, opts)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// btrfsOwnFsid gives a copy of a mounted btrfs a fsid of its own (in
// metadata_uuid, the copy's blocks unchanged), so it can be mounted beside
// its source: with two devices of one fsid the kernel's mount races udev's
// scan of the new loop device and sometimes fails with "File exists".
func btrfsOwnFsid(t *testing.T, file string) {
	t.Helper()
	sh(t, "btrfstune", "-m", file)
}

// Live imaging of a busy filesystem, for every filesystem and tracker, of
// a whole disk and of a partition: the image is the filesystem at the
// freeze, file for file and byte for byte, under a 25 MB/s writer.
func TestLiveImaging(t *testing.T) {
	var freezes []string
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		for _, tracker := range []string{"bpf", "tracefs"} {
			for _, whole := range []bool{true, false} {
				name := fmt.Sprintf("%s/%s/partition", fs, tracker)
				if whole {
					name = fmt.Sprintf("%s/%s/whole", fs, tracker)
				}
				t.Run(name, func(t *testing.T) {
					d := newLiveDisk(t, fs)
					w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, int64(len(freezes)+1))
					time.Sleep(1500 * time.Millisecond)
					src := d.part
					if whole {
						src = d.dev
					}
					img := filepath.Join(t.TempDir(), "live.platter")
					frozen, thawed := liveImage(t, src, img, "--tracker", tracker)
					time.Sleep(300 * time.Millisecond)
					ops := w.Stop()
					if lo, hi := liveWindow(ops, frozen, thawed); hi == len(ops) || lo == 0 {
						t.Fatalf("the writer did not run before and after the freeze (%d ops, %d-%d around it)", len(ops), lo, hi)
					}

					j := info(t, img)
					s := j.Snapshot
					if s == nil || s.Method != "track" || s.Tracker != tracker || len(s.Passes) < 2 {
						t.Fatalf("snapshot %+v, want track with %s and its passes", s, tracker)
					}
					freezes = append(freezes, fmt.Sprintf("%s %.0f ms", name, s.FrozenSeconds*1000))

					back := filepath.Join(t.TempDir(), "back.img")
					ok(t, "restore", "--yes", "--progress", "none", img, back)
					fsFile := back
					if whole {
						fsFile = extract(t, back, d.p2)
					}
					root := checkedMount(t, fs, fsFile)
					verifyAtFreeze(t, filepath.Join(root, "live"), ops, frozen, thawed)
				})
			}
		}
	}
	t.Logf("freezes: %s", strings.Join(freezes, ", "))
}

// The live tests have teeth: faults that would give a wrong image are
// either caught by the verifier or refused by create.
func TestLiveNegativeControls(t *testing.T) {
	// A tracker that misses writes gives an image the verifier rejects.
	t.Run("dropped writes", func(t *testing.T) {
		for attempt := range 3 {
			d := newLiveDisk(t, "ext4")
			w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, int64(100+attempt))
			time.Sleep(1500 * time.Millisecond)
			img := filepath.Join(t.TempDir(), "live.platter")
			frozen, thawed := liveImage(t, d.part, img, "--test-fault", "drop-writes")
			ops := w.Stop()
			back := filepath.Join(t.TempDir(), "back.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			root, err := mountImage(t, back, "ro,noload")
			if err != nil {
				t.Logf("attempt %d: the image does not mount (caught): %v", attempt, err)
				return
			}
			if diffs := diffAtFreeze(filepath.Join(root, "live"), ops, frozen, thawed); diffs != nil {
				t.Logf("attempt %d caught: %s", attempt, diffs[min(1, len(diffs)-1)])
				return
			}
		}
		t.Error("three images made with a tracker that drops writes all passed the verifier")
	})

	// fails runs create on a busy filesystem with args and wants it to
	// fail with a message containing want, leave no image and leave the
	// filesystem writable. before, if set, runs before create; during
	// once create has frozen.
	fails := func(t *testing.T, want string, before, during func(d liveDisk), args ...string) {
		d := newLiveDisk(t, "ext4")
		w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, 7)
		defer w.Stop()
		time.Sleep(time.Second)
		if before != nil {
			before(d)
		}
		img := filepath.Join(t.TempDir(), "live.platter")
		cmd := exec.Command(platter, append(append([]string{"create", "--snapshot", "track", "--progress", "json"}, args...), d.part, img)...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if during != nil && strings.Contains(sc.Text(), `"snapshot":"frozen"`) {
				during(d)
				during = nil
			}
		}
		err = cmd.Wait()
		if err == nil || !strings.Contains(out.String(), want) {
			t.Fatalf("create: %v, want a failure saying %q:\n%s", err, want, out.String())
		}
		if _, err := os.Stat(img); err == nil {
			t.Error("a failed create left an image")
		}
		if !writable(d.mnt, 2*time.Second) {
			t.Error("the filesystem is still frozen")
		}
	}
	// A tracefs buffer that overruns loses events: create fails. A storm
	// of small direct writes beside the writer makes sure it overruns.
	t.Run("tracefs overrun", func(t *testing.T) {
		storm := func(d liveDisk) {
			f, err := os.OpenFile(filepath.Join(d.mnt, "storm"), os.O_CREATE|os.O_WRONLY|syscall.O_DIRECT, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				b := block.AlignedBuffer(4096)
				for i := int64(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					f.WriteAt(b, i%4096*4096)
				}
			}()
			t.Cleanup(func() { close(stop); <-done; f.Close() })
		}
		fails(t, "lost events", storm, nil, "--test-fault", "tracefs-overrun")
	})
	// Thawed by something else while frozen: the writes that follow are
	// seen, and create fails.
	t.Run("external thaw", func(t *testing.T) {
		fails(t, "thawed", nil, func(d liveDisk) { sh(t, "fsfreeze", "-u", d.mnt) }, "--test-fault", "pause-frozen")
	})
	// A freeze longer than --max-freeze is ended by the watchdog.
	t.Run("max freeze", func(t *testing.T) {
		fails(t, "--max-freeze is 1ms", nil, nil, "--max-freeze", "1ms")
	})
}

// A live create to standard output keeps its temporary files (the maps
// held at the freeze) off the filesystems it freezes, wherever TMPDIR
// points: /tmp is on the root filesystem of a running system. Created
// there, the file would wait for the thaw and --max-freeze end the copy.
func TestLiveTempDirOnSource(t *testing.T) {
	d := newLiveDisk(t, "ext4")
	tmp := filepath.Join(d.mnt, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, 9)
	defer w.Stop()
	time.Sleep(500 * time.Millisecond)
	img := filepath.Join(t.TempDir(), "live.platter")
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(platter, "create", "--snapshot", "track", "--progress", "none", d.part, "-")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	err = cmd.Run()
	out.Close()
	if err != nil {
		t.Fatalf("create %s - with TMPDIR on it: %v\n%s", d.part, err, stderr.String())
	}
	if o := ok(t, "verify", img); !strings.Contains(o, "OK") {
		t.Errorf("verify: %s", o)
	}
}

// Writers faster than the copy: the dirty set stops shrinking, the passes
// stop, and the freeze is longer but within --max-freeze; the image is
// still the filesystem at the freeze, and the passes and freeze are
// reported.
func TestLiveFasterWriter(t *testing.T) {
	d := newLiveDisk(t, "ext4")
	w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 1<<40, 11) // as fast as it can
	time.Sleep(1500 * time.Millisecond)
	img := filepath.Join(t.TempDir(), "live.platter")
	frozen, thawed := liveImage(t, d.part, img, "--compress", "zstd:9")
	ops := w.Stop()
	s := info(t, img).Snapshot
	var passes []string
	for _, p := range s.Passes {
		passes = append(passes, fmt.Sprintf("%s %d chunks", p.Kind, p.Chunks))
	}
	t.Logf("%d ops; passes: %s; frozen %.0f ms", len(ops), strings.Join(passes, ", "), s.FrozenSeconds*1000)
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	verifyAtFreeze(t, filepath.Join(checkedMount(t, "ext4", back), "live"), ops, frozen, thawed)
}

// A whole disk with two busy filesystems is imaged live at one instant:
// both are frozen together, and each comes back as it was at the freeze.
func TestLiveWholeDiskTwoFilesystems(t *testing.T) {
	d := newLiveDisk(t, "xfs")
	mnt1 := mountNew(t, "ext4", d.dev+"p1")
	w1 := startLiveWriter(t, filepath.Join(mnt1, "live"), 5_000_000, 21)
	w2 := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, 22)
	time.Sleep(1500 * time.Millisecond)
	img := filepath.Join(t.TempDir(), "live.platter")
	frozen, thawed := liveImage(t, d.dev, img)
	ops1, ops2 := w1.Stop(), w2.Stop()
	if s := info(t, img).Snapshot; len(s.Filesystems) != 2 {
		t.Fatalf("frozen %v, want both filesystems", s.Filesystems)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	verifyAtFreeze(t, filepath.Join(checkedMount(t, "ext4", extract(t, back, d.p1)), "live"), ops1, frozen, thawed)
	verifyAtFreeze(t, filepath.Join(checkedMount(t, "xfs", extract(t, back, d.p2)), "live"), ops2, frozen, thawed)
}
