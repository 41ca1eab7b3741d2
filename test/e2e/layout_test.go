package e2e

import (
	"bytes"
	"encoding/json"
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

// sizedFile makes an empty file of size bytes: the target disk of a
// restore --layout, whose size is the file's.
func sizedFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil || os.Truncate(p, size) != nil {
		t.Fatalf("make %s: %v", p, err)
	}
	return p
}

// gptFields is what sgdisk says of partition n: its type, unique GUID and
// name, which a new layout keeps.
func gptFields(t *testing.T, disk string, n int) string {
	var keep []string
	for _, l := range strings.Split(sh(t, "sgdisk", "-i", strconv.Itoa(n), disk), "\n") {
		if strings.HasPrefix(l, "Partition GUID code") || strings.HasPrefix(l, "Partition unique GUID") ||
			strings.HasPrefix(l, "Partition name") || strings.HasPrefix(l, "Attribute flags") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// fsSize is the size the filesystem in img says it has.
func fsSize(t *testing.T, fs, img string) int64 {
	switch fs {
	case "ext4":
		var blocks, bs int64
		for _, l := range strings.Split(sh(t, "dumpe2fs", "-h", img), "\n") {
			if v, ok := strings.CutPrefix(l, "Block count:"); ok {
				blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
			if v, ok := strings.CutPrefix(l, "Block size:"); ok {
				bs, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		return blocks * bs
	case "ntfs":
		b := readAt(t, img, 512, 0)
		return int64(le64(b[40:])) * 512
	}
	t.Fatalf("fsSize: %s", fs)
	return 0
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// The GPT fixture (ESP FAT32, ext4, NTFS, 8 MiB of unknown bytes) restored
// onto a disk half its size (fit: ext4 and NTFS shrunk on an overlay of
// the image, partitions moved down) and onto one twice its size (grow:
// ext4 takes the new space, the partitions after it move to the end):
// the tables check clean and keep every GUID, type and name; every
// filesystem checks clean with the same files, UUID and label; the
// unknown partition is byte for byte the same; a grown filesystem fills
// its partition.
func TestLayoutFitGrow(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{
		{"fit", 128 << 20, []string{"--layout", "fit"}},
		{"grow", 512 << 20, []string{"--layout", "grow", "--grow-partition", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := sizedFile(t, c.size)
			ok(t, append(append([]string{"restore", "--progress", "none"}, c.args...), img, target)...)
			checkLayout(t, disk, target, c.name, c.size)
		})
	}
}

// checkLayout judges target, the GPT fixture disk laid out anew onto a
// disk of size bytes by restore or clone with --layout mode (fit, or grow
// with partition 2 taking the new space): the tables check clean and keep
// every GUID, type and name; every filesystem checks clean with the same
// files, UUID and label; the unknown partition is byte for byte the same;
// fit shrinks ext4 and NTFS and keeps the ESP; grow fills the disk.
func checkLayout(t *testing.T, disk, target, mode string, size int64) {
	t.Helper()
	src := sfdiskParts(t, disk)
	fss := map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"}
	if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	sh(t, "sfdisk", "--verify", target)
	parts := sfdiskParts(t, target)
	if len(parts) != len(src) {
		t.Fatalf("%d partitions, want %d", len(parts), len(src))
	}
	if a, b := sh(t, "sgdisk", "-p", disk), sh(t, "sgdisk", "-p", target); !strings.Contains(b, diskGUID(a)) {
		t.Errorf("the disk GUID changed:\n%s\n---\n%s", a, b)
	}
	for n := range src {
		if a, b := gptFields(t, disk, n), gptFields(t, target, n); a != b {
			t.Errorf("partition %d: sgdisk -i differs:\n%s\n---\n%s", n, a, b)
		}
		if parts[n].start%(1<<20) != 0 {
			t.Errorf("partition %d starts at %d, not 1 MiB aligned", n, parts[n].start)
		}
	}
	for n, fs := range fss {
		p := extract(t, target, parts[n])
		checkPartition(t, p, fs, disk+".files/p"+strconv.Itoa(n))
		was := extract(t, disk, src[n])
		for _, tag := range []string{"UUID", "LABEL"} {
			if a, b := blkidTag(t, was, tag), blkidTag(t, p, tag); a != b {
				t.Errorf("partition %d: %s %q, was %q", n, tag, b, a)
			}
		}
	}
	if !bytes.Equal(readAt(t, disk, int(src[4].size), src[4].start), readAt(t, target, int(src[4].size), parts[4].start)) {
		t.Error("the unknown partition's bytes differ")
	}
	switch mode {
	case "fit":
		for _, n := range []int{2, 3} {
			if parts[n].size >= src[n].size {
				t.Errorf("partition %d: %d bytes, not smaller than %d", n, parts[n].size, src[n].size)
			}
		}
		if parts[1] != src[1] {
			t.Errorf("the EFI system partition moved or changed size: %+v, was %+v", parts[1], src[1])
		}
	case "grow":
		if parts[2].size < src[2].size+200<<20 {
			t.Errorf("partition 2 is %d bytes, did not take the new space", parts[2].size)
		}
		if got := fsSize(t, "ext4", extract(t, target, parts[2])); got < parts[2].size*95/100 {
			t.Errorf("ext4 is %d bytes in a %d-byte partition", got, parts[2].size)
		}
		if end := parts[4].start + parts[4].size; end < size-(1<<20)-33*512 {
			t.Errorf("the last partition ends at %d, not at the disk's end (%d)", end, size)
		}
	}
}

func diskGUID(sgdiskP string) string {
	for _, l := range strings.Split(sgdiskP, "\n") {
		if v, ok := strings.CutPrefix(l, "Disk identifier (GUID): "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "(none)"
}

func blkidTag(t *testing.T, img, tag string) string {
	out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", tag, img).Output()
	return strings.TrimSpace(string(out))
}

// A target too small for the data is refused before anything is written,
// naming the shortfall; --plan prints the layout and writes nothing; a
// larger block device without --layout is refused with the choices.
func TestLayoutRefusals(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)

	small := sizedFile(t, 48<<20)
	writeAt(t, small, []byte("untouched"), 0)
	_, stderr, code := run(t, "restore", "--progress", "none", "--layout", "fit", img, small)
	if code == 0 || !strings.Contains(stderr, "bytes too small") {
		t.Errorf("fit onto 48 MiB: exit %d, %q; want a refusal naming the shortfall", code, stderr)
	}
	if !bytes.Equal(readAt(t, small, 9, 0), []byte("untouched")) {
		t.Error("the refused target was written")
	}

	target := sizedFile(t, 128<<20)
	out := ok(t, "restore", "--json", "--plan", "--layout", "fit", img, target)
	var plan struct {
		Layout     string `json:"layout"`
		Partitions []struct {
			Index    int    `json:"index"`
			NewStart int64  `json:"new_start"`
			NewSize  int64  `json:"new_size"`
			Resize   string `json:"resize"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || plan.Layout != "fit" || len(plan.Partitions) != 4 {
		t.Errorf("--plan --json: %v\n%s", err, out)
	}
	if b := readAt(t, target, 1<<20, 0); !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Error("--plan wrote to the target")
	}

	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", sizedFile(t, 300<<20)))
	t.Cleanup(func() { sh(t, "losetup", "-d", loop) })
	_, stderr, code = run(t, "restore", "--yes", "--progress", "none", img, loop)
	if code != 2 || !strings.Contains(stderr, "--layout grow") || !strings.Contains(stderr, "nothing was written") {
		t.Errorf("a larger device without --layout: exit %d, %q", code, stderr)
	}
}

// The MBR fixture (FAT16, ext4, and an extended partition holding ext2
// and NTFS) onto a disk of 128 MiB, restored from its image and cloned
// from the disk: FAT16 keeps its size (it cannot be resized), ext4, ext2
// and NTFS shrink, the logical partitions move down with their EBRs; the
// boot code and the boot loader's gap before the first partition come
// back byte for byte; the clone's table is the restore's.
func TestLayoutFitMBR(t *testing.T) {
	disk := fixture(t, "mbr-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	restored := sizedFile(t, 128<<20)
	ok(t, "restore", "--progress", "none", "--layout", "fit", img, restored)
	cloned := sizedFile(t, 128<<20)
	ok(t, "clone", "--progress", "none", "--layout", "fit", disk, cloned)
	for _, target := range []string{restored, cloned} {
		sh(t, "sfdisk", "--verify", target)
		src, parts := sfdiskParts(t, disk), sfdiskParts(t, target)
		if len(parts) != len(src) {
			t.Fatalf("%d partitions (with the extended one), want %d", len(parts), len(src))
		}
		sameBytes(t, disk, target, 0, 440, "boot code")
		sameBytes(t, disk, target, 512, src[1].start-512, "the boot loader's gap")
		if parts[1] != src[1] {
			t.Errorf("FAT16 moved or was resized: %+v, was %+v", parts[1], src[1])
		}
		for n, fs := range map[int]string{1: "fat16", 2: "ext4", 5: "ext2", 6: "ntfs"} {
			checkPartition(t, extract(t, target, parts[n]), fs, disk+".files/p"+strconv.Itoa(n))
		}
		if parts[6].start >= src[6].start {
			t.Errorf("the last logical partition did not move down: %d, was %d", parts[6].start, src[6].start)
		}
	}
	if a, b := sfdiskDump(t, restored), sfdiskDump(t, cloned); a != b {
		t.Errorf("sfdisk -d of restore and clone differ:\n%s\n---\n%s", a, b)
	}
}

// A 512-byte-sector image (restore) or disk (clone) onto a disk of
// 4096-byte sectors of the same size: the table is written anew in the
// target's sectors, the partitions stay at the same bytes.
func TestLayoutSectors512To4K(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	for _, how := range [][2]string{{"restore", img}, {"clone", disk}} {
		t.Run(how[0], func(t *testing.T) {
			target := sizedFile(t, 256<<20)
			dev := loop(t, target, "-b", "4096")
			ok(t, how[0], "--yes", "--progress", "none", how[1], dev)
			if out := sh(t, "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
				t.Errorf("sgdisk -v:\n%s", out)
			}
			src, parts := sfdiskParts(t, disk), sfdiskParts(t, dev)
			for n := range src {
				if parts[n] != src[n] {
					t.Errorf("partition %d at %+v, was %+v", n, parts[n], src[n])
				}
			}
			for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
				checkPartition(t, extract(t, target, parts[n]), fs, disk+".files/p"+strconv.Itoa(n))
			}
		})
	}
}

// --layout keep onto a larger disk keeps every partition where it was
// and moves the GPT's backup header to the disk's new last sector, as
// firmware and sgdisk -v expect.
func TestLayoutKeepLarger(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	target := sizedFile(t, 2*info(t, img).SourceSize)
	dev := loop(t, target)
	ok(t, "restore", "--yes", "--progress", "none", "--layout", "keep", img, dev)
	if out := sh(t, "sgdisk", "-v", dev); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	src, parts := sfdiskParts(t, disk), sfdiskParts(t, dev)
	for n := range src {
		if parts[n] != src[n] {
			t.Errorf("partition %d at %+v, was %+v", n, parts[n], src[n])
		}
		if got, want := gptFields(t, dev, n), gptFields(t, disk, n); got != want {
			t.Errorf("partition %d: %s, was %s", n, got, want)
		}
	}
	if got, want := blkidTag(t, dev, "PTUUID"), blkidTag(t, disk, "PTUUID"); got != want {
		t.Errorf("disk GUID %s, was %s", got, want)
	}
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		checkPartition(t, extract(t, target, parts[n]), fs, disk+".files/p"+strconv.Itoa(n))
	}
}

// A GPT disk with XFS (grows, cannot shrink) and btrfs (both ways), each
// made by its mkfs from a tree: fit onto a smaller disk keeps XFS whole
// and shrinks btrfs (the kernel's resize, on the overlay); grow gives the
// new space to XFS (--grow-partition 1: btrfs moves to the end) or to
// btrfs (the last). Judged by xfs_repair -n, btrfs check, both mounted
// with every file compared, and the grown filesystem filling its
// partition. Each is done by restore from an image of the disk and by
// clone from the disk itself.
func TestLayoutXFSBtrfs(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	sh(t, "bash", filepath.Join(fixtures, "files.sh"), tree)
	disk := xfsGarbage(t, filepath.Join(dir, "disk.img"), 760<<20)
	sh(t, "sgdisk", "-n", "1:1M:+320M", "-t", "1:8300", "-c", "1:xfs", "-n", "2:0:+400M", "-t", "2:8300", "-c", "2:btrfs", disk)
	src := sfdiskParts(t, disk)
	xfsPart := xfsGarbage(t, filepath.Join(dir, "xfs.img"), src[1].size)
	sh(t, "mkfs.xfs", "-q", "-f", "-K", xfsPart)
	mnt, done := tooltest.Mount(t, xfsPart, "")
	sh(t, "cp", "-a", tree+"/.", mnt)
	done()
	btrfsPart := xfsGarbage(t, filepath.Join(dir, "btrfs.img"), src[2].size)
	sh(t, "mkfs.btrfs", "-q", "-f", "--nodiscard", "--rootdir", tree, btrfsPart)
	for n, p := range map[int]string{1: xfsPart, 2: btrfsPart} {
		sh(t, "dd", "if="+p, "of="+disk, "bs=1M", "seek="+strconv.FormatInt(src[n].start>>20, 10), "conv=notrunc", "status=none")
	}
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)

	for _, c := range []struct {
		name  string
		size  int64
		args  []string
		grown int
	}{
		{"fit", 640 << 20, []string{"--layout", "fit"}, 0},
		{"grow-xfs", 1280 << 20, []string{"--layout", "grow", "--grow-partition", "1"}, 1},
		{"grow-btrfs", 1280 << 20, []string{"--layout", "grow"}, 2},
	} {
		for _, how := range [][2]string{{"restore", img}, {"clone", disk}} {
			t.Run(c.name+"-"+how[0], func(t *testing.T) {
				target := sizedFile(t, c.size)
				ok(t, append(append([]string{how[0], "--progress", "none"}, c.args...), how[1], target)...)
				checkXFSBtrfs(t, disk, target, tree, c.name, c.grown)
			})
		}
	}
}

// checkXFSBtrfs judges target, TestLayoutXFSBtrfs's disk laid out anew
// in mode (fit, or grow with partition grown taking the new space).
func checkXFSBtrfs(t *testing.T, disk, target, tree, mode string, grown int) {
	src := sfdiskParts(t, disk)
	if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	parts := sfdiskParts(t, target)
	x, b := extract(t, target, parts[1]), extract(t, target, parts[2])
	xfsRepairClean(t, x)
	sh(t, "btrfs", "check", "--readonly", b)
	for n, p := range map[int]string{1: x, 2: b} {
		opts := "ro"
		if n == 1 {
			opts = "ro,nouuid"
		}
		mnt, done := tooltest.Mount(t, p, opts)
		sameTree(t, tree, mnt)
		done()
		if a, got := blkidTag(t, extract(t, disk, src[n]), "UUID"), blkidTag(t, p, "UUID"); a != got {
			t.Errorf("partition %d: UUID %q, was %q", n, got, a)
		}
	}
	if mode == "fit" {
		if parts[1] != src[1] {
			t.Errorf("XFS moved or was resized: %+v, was %+v", parts[1], src[1])
		}
		if parts[2].size >= src[2].size {
			t.Errorf("btrfs is %d bytes, not smaller than %d", parts[2].size, src[2].size)
		}
	}
	if grown != 0 {
		g := parts[grown]
		if g.size < src[grown].size+400<<20 {
			t.Errorf("partition %d is %d bytes: it did not take the new space", grown, g.size)
		}
		var fsBytes int64
		if grown == 1 {
			dblocks, bs, _, _ := xfsCounts(t, x)
			fsBytes = dblocks * bs
		} else {
			for _, l := range strings.Split(sh(t, "btrfs", "inspect-internal", "dump-super", b), "\n") {
				if v, ok := strings.CutPrefix(l, "dev_item.total_bytes"); ok {
					fsBytes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				}
			}
		}
		if fsBytes < g.size*95/100 {
			t.Errorf("the grown filesystem is %d bytes in a %d-byte partition", fsBytes, g.size)
		}
	}
}

// Ctrl-C while a filesystem is being shrunk on the overlay (of the image,
// or of the source disk for clone): nothing is left behind (no overlay
// file, no window mount, no loop device), the target is untouched, since
// nothing is written before the shrinking ends, and so is the source.
func TestLayoutInterrupt(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	sum := sh(t, "sha256sum", disk)
	for _, c := range []struct{ name, cmd, from string }{{"restore", "restore", img}, {"clone", "clone", disk}} {
		t.Run(c.name, func(t *testing.T) {
			target := sizedFile(t, 128<<20)
			writeAt(t, target, []byte("untouched"), 0)
			tmp := t.TempDir()
			cmd := exec.Command(platter, c.cmd, "--progress", "none", "--layout", "fit", c.from, target)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Interrupt once a window onto the overlay is mounted.
			deadline := time.Now().Add(30 * time.Second)
			for !mountedUnder(t, tmp) {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					t.Fatal("no window was mounted under TMPDIR within 30 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGINT)
			if err := cmd.Wait(); err == nil {
				t.Fatalf("the %s finished despite Ctrl-C:\n%s", c.cmd, stderr.String())
			}
			if mountedUnder(t, tmp) {
				t.Errorf("a mount under %s is left after Ctrl-C", tmp)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("left in TMPDIR after Ctrl-C: %v", left)
			}
			if out := sh(t, "losetup", "-a"); strings.Contains(out, tmp) {
				t.Errorf("a loop device is left on the overlay:\n%s", out)
			}
			if !bytes.Equal(readAt(t, target, 9, 0), []byte("untouched")) {
				t.Error("the target was written before the shrinking was done")
			}
		})
	}
	if sh(t, "sha256sum", disk) != sum {
		t.Error("the source disk changed")
	}
}

// mountedUnder says whether anything is mounted below dir.
func mountedUnder(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			return true
		}
	}
	return false
}

// A disk restored onto a new layout, then changed (a file added, one
// removed, one rewritten), rolled back with --delta --layout: the same
// plan is made again and only the blocks that differ are written; the
// filesystems come back clean with the image's files.
func TestLayoutDelta(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{
		{"fit", 128 << 20, []string{"--layout", "fit"}},
		{"grow", 512 << 20, []string{"--layout", "grow", "--grow-partition", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := sizedFile(t, c.size)
			ok(t, append(append([]string{"restore", "--progress", "none"}, c.args...), img, target)...)
			parts := sfdiskParts(t, target)
			dev := loop(t, target, "-o", strconv.FormatInt(parts[2].start, 10), "--sizelimit", strconv.FormatInt(parts[2].size, 10))
			mnt, done := tooltest.Mount(t, dev, "")
			os.WriteFile(filepath.Join(mnt, "new-file"), bytes.Repeat([]byte("changed "), 100000), 0o644)
			ents, _ := os.ReadDir(mnt)
			for _, e := range ents {
				if !e.IsDir() && e.Name() != "new-file" {
					os.Remove(filepath.Join(mnt, e.Name()))
					break
				}
			}
			done()
			sh(t, "losetup", "-d", dev)

			var sum struct {
				Written int64 `json:"bytes_written"`
			}
			out := ok(t, append(append([]string{"restore", "--json", "--progress", "none", "--delta"}, c.args...), img, target)...)
			if err := json.Unmarshal([]byte(out), &sum); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if sum.Written <= 0 || sum.Written > 16<<20 {
				t.Errorf("the delta wrote %d bytes; want some, and far less than the disk", sum.Written)
			}
			if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
				t.Errorf("sgdisk -v:\n%s", out)
			}
			if got := sfdiskParts(t, target); got[2] != parts[2] {
				t.Errorf("partition 2 at %+v, was %+v", got[2], parts[2])
			}
			for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
				checkPartition(t, extract(t, target, parts[n]), fs, disk+".files/p"+strconv.Itoa(n))
			}
			if c.name == "grow" {
				if got := fsSize(t, "ext4", extract(t, target, parts[2])); got < parts[2].size*95/100 {
					t.Errorf("ext4 is %d bytes in a %d-byte partition after the delta", got, parts[2].size)
				}
			}
		})
	}
}
