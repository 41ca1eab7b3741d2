package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cloneSummary is clone's --json output.
type cloneSummary struct {
	Source      string `json:"source"`
	Target      string `json:"target"`
	SourceBytes int64  `json:"source_bytes"`
	UsedBytes   int64  `json:"used_bytes"`
	Snapshot    *struct {
		Method string `json:"method"`
	} `json:"snapshot"`
}

func cloneJSON(t *testing.T, args ...string) cloneSummary {
	t.Helper()
	var s cloneSummary
	out := ok(t, append([]string{"clone", "--json", "--progress", "none"}, args...)...)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("clone --json: %v\n%s", err, out)
	}
	return s
}

// checkClone judges a clone of the GPT fixture disk with real tools: the
// table (sgdisk -v, sfdisk -d), the boot area and both GPT copies byte for
// byte, each filesystem clean with the same files, the raw partition
// byte for byte.
func checkClone(t *testing.T, disk, clone string) {
	t.Helper()
	if out := sh(t, "sgdisk", "-v", clone); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v of the clone:\n%s", out)
	}
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, clone); a != b {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	parts := sfdiskParts(t, disk)
	st, _ := os.Stat(disk)
	sameBytes(t, disk, clone, 0, parts[1].start, "bytes before the first partition")
	sameBytes(t, disk, clone, st.Size()-33*512, 33*512, "backup GPT")
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		t.Run(fmt.Sprintf("%s-%d", fs, n), func(t *testing.T) {
			checkPartition(t, extract(t, clone, parts[n]), fs, fmt.Sprintf("%s.files/p%d", disk, n))
		})
	}
	sameBytes(t, disk, clone, parts[4].start, parts[4].size, "raw partition 4")
}

// extFreeRuns lists the free block runs of the ext filesystem in file
// (dumpe2fs), in bytes.
func extFreeRuns(t *testing.T, file string) []part {
	t.Helper()
	out := sh(t, "dumpe2fs", file)
	bs, _ := strconv.ParseInt(regexp.MustCompile(`(?m)^Block size:\s+(\d+)`).FindStringSubmatch(out)[1], 10, 64)
	var runs []part
	for _, m := range regexp.MustCompile(`(?m)^\s+Free blocks: (.+)$`).FindAllStringSubmatch(out, -1) {
		for _, r := range strings.Split(m[1], ", ") {
			var a, b int64
			if n, _ := fmt.Sscanf(r, "%d-%d", &a, &b); n == 2 {
				runs = append(runs, part{a * bs, (b - a + 1) * bs})
			}
		}
	}
	if len(runs) == 0 {
		t.Fatalf("dumpe2fs lists no free blocks in %s", file)
	}
	return runs
}

// An idle GPT disk (FAT32, ext4, NTFS and a raw partition, its free space
// garbage) cloned to a file and onto a device full of other data: the
// same table and boot areas, every filesystem clean with the same files;
// the free space is not copied (the file stays sparse, and holes where
// the source's free blocks hold garbage).
func TestCloneIdle(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	st, _ := os.Stat(disk)

	t.Run("file", func(t *testing.T) {
		target := filepath.Join(dir, "clone.img")
		s := cloneJSON(t, disk, target)
		if s.Source != disk || s.Target != target || s.SourceBytes != st.Size() || s.UsedBytes <= 0 || s.UsedBytes > st.Size()/2 {
			t.Errorf("summary %+v", s)
		}
		checkClone(t, disk, target)
		var ts syscall.Stat_t
		syscall.Stat(target, &ts)
		if ts.Blocks*512 > s.UsedBytes+(1<<20) {
			t.Errorf("the clone file holds %d bytes for %d used: free space was copied", ts.Blocks*512, s.UsedBytes)
		}
		// The ext4 partition's free blocks: garbage in the source, holes
		// in the clone.
		p2 := sfdiskParts(t, disk)[2]
		f, err := os.Open(target)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		checked := 0
		for _, r := range extFreeRuns(t, extract(t, disk, p2)) {
			// The whole 4 KiB blocks of the run (the clone file's own
			// blocks; ext4's may be 1 KiB).
			lo, hi := (p2.start+r.start+4095)/4096*4096, (p2.start+r.start+r.size)/4096*4096
			if hi-lo < 64<<10 || bytes.Equal(readAt(t, disk, 4096, lo), make([]byte, 4096)) {
				continue // too small to matter, or zero in the source too
			}
			if !bytes.Equal(readAt(t, target, int(hi-lo), lo), make([]byte, hi-lo)) {
				t.Errorf("free bytes %d-%d of partition 2 hold the source's garbage in the clone", lo-p2.start, hi-p2.start-1)
			}
			if data, err := syscall.Seek(int(f.Fd()), lo, 3 /* SEEK_DATA */); err == nil && data < hi {
				t.Errorf("free bytes %d-%d of partition 2 were written to the clone (data at %d)", lo-p2.start, hi-p2.start-1, data-p2.start)
			}
			checked++
		}
		if checked == 0 {
			t.Fatal("no free run of partition 2 holds garbage in the source: the test proves nothing")
		}
	})

	t.Run("device", func(t *testing.T) {
		backing := filepath.Join(dir, "device.img")
		os.WriteFile(backing, bytes.Repeat([]byte{0x5c}, int(st.Size())), 0o600)
		dev := loop(t, backing)
		s := cloneJSON(t, "--yes", disk, dev)
		if s.Target != dev || s.SourceBytes != st.Size() {
			t.Errorf("summary %+v", s)
		}
		checkClone(t, disk, backing) // the device's bytes, its partitions named as the source's
	})

	// A larger device, with --layout keep, gets every partition where it
	// was and the GPT's backup at its new end, as restore --layout keep
	// gives. (Without --layout it is refused: TestCloneLayoutRefusals.)
	t.Run("larger device", func(t *testing.T) {
		backing := sparseFile(t, filepath.Join(dir, "larger.img"), st.Size()+64<<20)
		dev := loop(t, backing)
		ok(t, "clone", "--yes", "--progress", "none", "--layout", "keep", disk, dev)
		if out := sh(t, "sgdisk", "-v", backing); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v:\n%s", out)
		}
		src, parts := sfdiskParts(t, disk), sfdiskParts(t, backing)
		for n := range src {
			if parts[n] != src[n] {
				t.Errorf("partition %d at %+v, was %+v", n, parts[n], src[n])
			}
		}
		checkPartition(t, extract(t, backing, parts[2]), "ext4", disk+".files/p2")
	})
}

// cloneLive clones src with the snapshot flags in args and returns when
// the filesystems were frozen and thawed, from its JSON progress. env is
// added to its environment.
func cloneLive(t *testing.T, env []string, src, target string, args ...string) (frozen, thawed time.Time) {
	t.Helper()
	cmd := exec.Command(platter, append(append([]string{"clone", "--yes", "--progress", "json"}, args...), src, target)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("clone: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	for sc.Scan() {
		var ev struct {
			Op       string    `json:"op"`
			Snapshot string    `json:"snapshot"`
			At       time.Time `json:"at"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Op != "clone" {
			continue
		}
		switch ev.Snapshot {
		case "frozen":
			frozen = ev.At
		case "thawed":
			thawed = ev.At
		}
	}
	if frozen.IsZero() || thawed.IsZero() {
		t.Fatalf("clone reported no freeze and thaw:\n%s", stderr.String())
	}
	return frozen, thawed
}

// A mounted ext4 and XFS, written at 25 MB/s while the whole disk is
// cloned live (--snapshot track, onto a device, with TMPDIR on the
// filesystem it freezes at the end) or frozen (--snapshot freeze, onto a
// file): the clone checks clean and holds the writer's files as they were
// at one instant between the freeze and the thaw.
func TestCloneLive(t *testing.T) {
	seed := int64(40)
	for _, fs := range []string{"ext4", "xfs"} {
		for _, method := range []string{"track", "freeze"} {
			seed++
			t.Run(fs+"/"+method, func(t *testing.T) {
				d := newLiveDisk(t, fs)
				w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, seed)
				time.Sleep(1500 * time.Millisecond)
				target := filepath.Join(t.TempDir(), "clone.img")
				dest := target
				var env []string
				if method == "track" {
					size, err := strconv.ParseInt(strings.TrimSpace(sh(t, "blockdev", "--getsize64", d.dev)), 10, 64)
					if err != nil {
						t.Fatal(err)
					}
					sparseFile(t, target, size)
					dest = loop(t, target)
					// Temporary files written there while it is frozen
					// would wait for the thaw: the clone must go elsewhere.
					tmp := filepath.Join(d.mnt, "tmp")
					if err := os.Mkdir(tmp, 0o755); err != nil {
						t.Fatal(err)
					}
					env = []string{"TMPDIR=" + tmp}
				}
				args := []string{"--snapshot", method} // track: the default --max-freeze, 10s
				if method == "freeze" {
					args = append(args, "--max-freeze", "60s") // the whole copy
				}
				frozen, thawed := cloneLive(t, env, d.dev, dest, args...)
				time.Sleep(300 * time.Millisecond)
				ops := w.Stop()
				if lo, hi := liveWindow(ops, frozen, thawed); hi == len(ops) || lo == 0 {
					t.Fatalf("the writer did not run before and after the freeze (%d ops, %d-%d around it)", len(ops), lo, hi)
				}
				if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
					t.Errorf("sgdisk -v of the clone:\n%s", out)
				}
				root := checkedMount(t, fs, extract(t, target, d.p2))
				verifyAtFreeze(t, filepath.Join(root, "live"), ops, frozen, thawed)
			})
		}
	}
}

// The live clone test has teeth: a tracker that misses writes gives a
// clone the verifier rejects.
func TestCloneLiveDroppedWrites(t *testing.T) {
	for attempt := range 3 {
		d := newLiveDisk(t, "ext4")
		w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, int64(200+attempt))
		time.Sleep(1500 * time.Millisecond)
		target := filepath.Join(t.TempDir(), "clone.img")
		frozen, thawed := cloneLive(t, nil, d.part, target, "--snapshot", "track", "--test-fault", "drop-writes")
		ops := w.Stop()
		root, err := mountImage(t, target, "ro,noload")
		if err != nil {
			t.Logf("attempt %d: the clone does not mount (caught): %v", attempt, err)
			return
		}
		if diffs := diffAtFreeze(filepath.Join(root, "live"), ops, frozen, thawed); diffs != nil {
			t.Logf("attempt %d caught: %s", attempt, diffs[min(1, len(diffs)-1)])
			return
		}
	}
	t.Error("three clones made with a tracker that drops writes all passed the verifier")
}

// Refused before anything is written: a mounted target, the source
// itself, a partition of the source, a file on the source's filesystem,
// a smaller device, a device without --yes and without a terminal, an
// image as SOURCE or TARGET.
func TestCloneRefusals(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	st, _ := os.Stat(disk)
	src := filepath.Join(dir, "src.img")
	sh(t, "cp", "--sparse=always", disk, src)
	srcDev := loop(t, src)
	p := sfdiskParts(t, src)[2]
	sh(t, "addpart", srcDev, "2", fmt.Sprint(p.start/512), fmt.Sprint(p.size/512))
	srcSum := sh(t, "sha256sum", src)

	// A device holding a mounted filesystem.
	mountedFile := filepath.Join(dir, "mounted.img")
	sparseFile(t, mountedFile, st.Size())
	sh(t, "mkfs.ext4", "-q", "-F", mountedFile)
	mountedDev := loop(t, mountedFile)
	mnt := t.TempDir()
	sh(t, "mount", "-o", "ro", mountedDev, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	// A device smaller than the source, holding a pattern.
	smallFile := filepath.Join(dir, "small.img")
	os.WriteFile(smallFile, bytes.Repeat([]byte{0xab}, 64<<20), 0o600)
	smallDev := loop(t, smallFile)

	// A device large enough, holding a copy of the disk.
	okFile := filepath.Join(dir, "target.img")
	sh(t, "cp", "--sparse=always", disk, okFile)
	okDev := loop(t, okFile)

	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)

	// The source's partition 2 mounted: a target file there is written
	// to the source.
	srcMnt := t.TempDir()
	sh(t, "mount", "-o", "ro", srcDev+"p2", srcMnt)
	t.Cleanup(func() { exec.Command("umount", srcMnt).Run() })

	untouched := map[string]string{}
	for _, f := range []string{mountedFile, smallFile, okFile, img} {
		untouched[f] = sh(t, "sha256sum", f)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"mounted target", []string{"--yes", disk, mountedDev}, 1, []string{"in use", "mounted at " + mnt}},
		{"file behind a mounted target", []string{"--yes", disk, mountedFile}, 1, []string{"in use"}},
		{"the source itself", []string{"--yes", src, src}, 2, []string{"is the source itself"}},
		{"the source's loop device", []string{"--yes", src, srcDev}, 2, []string{"overlaps SOURCE"}},
		{"a partition of the source", []string{"--yes", srcDev, srcDev + "p2"}, 2, []string{"overlaps SOURCE"}},
		{"the disk of the source partition", []string{"--yes", srcDev + "p2", srcDev}, 2, []string{"overlaps SOURCE"}},
		{"a file on the source", []string{"--yes", srcDev, filepath.Join(srcMnt, "clone.img")}, 2, []string{"a filesystem of SOURCE"}},
		{"smaller device", []string{"--yes", disk, smallDev}, 2, []string{"smaller than", fmt.Sprint(64 << 20), fmt.Sprint(st.Size()), "--layout fit", "nothing was written"}},
		{"smaller device, --layout keep", []string{"--yes", "--layout", "keep", disk, smallDev}, 1, []string{fmt.Sprint(64 << 20), "partition 2 (ext4) ends at byte", "--layout keep needs a target of at least", "--layout fit"}},
		{"no --yes, no terminal", []string{disk, okDev}, 2, []string{"gpt", "--yes"}},
		{"image as source", []string{"--yes", img, okDev}, 2, []string{"platter restore"}},
		{"image as target", []string{disk, img}, 2, []string{"is a Platter image"}},
		{"standard output", []string{disk, "-"}, 2, []string{"platter create SOURCE -"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(platter, append([]string{"clone", "--progress", "none"}, c.args...)...)
			cmd.Stdin = strings.NewReader("yes\n") // not a terminal: no answer is read
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, isExit := err.(*exec.ExitError); isExit {
				code = ee.ExitCode()
			}
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s", code, c.code, out)
			}
			for _, s := range c.says {
				if !strings.Contains(string(out), s) {
					t.Errorf("the refusal does not say %q:\n%s", s, out)
				}
			}
		})
	}
	for f, sum := range untouched {
		if sh(t, "sha256sum", f) != sum {
			t.Errorf("a refused clone changed %s", f)
		}
	}
	if sh(t, "sha256sum", src) != srcSum {
		t.Error("a refused clone changed the source")
	}
	if _, err := os.Stat(filepath.Join(srcMnt, "clone.img")); err == nil {
		t.Error("a refused clone made a file on the source")
	}
}

// Ctrl-C during a clone: exit 130; a target file it made is removed; a
// device that held a disk is left without a partition table (its first
// and last MiB zero), never looking cloned.
func TestCloneInterrupted(t *testing.T) {
	dir := t.TempDir()
	// 1.5 GiB: a GPT disk whose partition is 1.4 GiB of random bytes
	// (raw, all copied), so a clone takes seconds.
	src := sparseFile(t, filepath.Join(dir, "src.img"), 1536<<20)
	sh(t, "sgdisk", "-n", "1:1M:+1400M", "-t", "1:8300", src)
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{7})
	buf := make([]byte, 4<<20)
	for off := int64(1 << 20); off < 1401<<20; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	interrupt := func(t *testing.T, target string) {
		t.Helper()
		cmd := exec.Command(platter, "clone", "--yes", "--progress", "json", src, target)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once it has copied something, and before it is done.
		r := bufio.NewReader(stderr)
		for {
			line, err := r.ReadString('\n')
			if strings.Contains(line, `"bytes_done"`) && !strings.Contains(line, `"bytes_done":0,`) {
				if strings.Contains(line, `"finished":true`) {
					t.Fatal("the clone finished before it could be interrupted; make the source bigger")
				}
				break
			}
			if err != nil {
				cmd.Wait()
				t.Fatal("the clone reported no progress")
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		rest, _ := io.ReadAll(r)
		err = cmd.Wait()
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 130 {
			t.Fatalf("interrupted clone: %v, want exit 130\n%s", err, rest)
		}
	}

	t.Run("file", func(t *testing.T) {
		target := filepath.Join(dir, "clone.img")
		interrupt(t, target)
		if _, err := os.Stat(target); err == nil {
			t.Error("an interrupted clone left its target file")
		}
	})
	t.Run("device", func(t *testing.T) {
		backing := sparseFile(t, filepath.Join(dir, "device.img"), 1536<<20)
		sh(t, "sgdisk", "-n", "1:1M:+100M", backing) // it holds a disk
		dev := loop(t, backing)
		interrupt(t, dev)
		if out, err := exec.Command("sfdisk", "-d", backing).CombinedOutput(); err == nil {
			t.Errorf("an interrupted clone left a partition table:\n%s", out)
		}
		zero := make([]byte, 1<<20)
		if !bytes.Equal(readAt(t, backing, 1<<20, 0), zero) || !bytes.Equal(readAt(t, backing, 1<<20, 1535<<20), zero) {
			t.Error("the first or last MiB of an interrupted clone's device is not zero")
		}
	})
}
