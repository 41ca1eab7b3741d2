package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// deltaResult is what restore --delta --json reports.
type deltaResult struct {
	Bytes int64 `json:"bytes"`
	Delta struct {
		Chunks        int64 `json:"chunks_compared"`
		Bytes         int64 `json:"bytes_compared"`
		Differed      int64 `json:"chunks_differed"`
		DifferedBytes int64 `json:"bytes_differed"`
		Written       int64 `json:"bytes_written"`
		Trimmed       int64 `json:"bytes_trimmed"`
	} `json:"delta"`
}

func deltaRestore(t *testing.T, args ...string) deltaResult {
	t.Helper()
	var r deltaResult
	out := ok(t, append([]string{"restore", "--delta", "--json", "--progress", "none"}, args...)...)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("restore --delta --json: %v\n%s", err, out)
	}
	return r
}

// changeExt mounts the ext4 filesystem at bytes [p.start, p.start+p.size)
// of disk (all of it when p.size is 0) through a loop device with
// mountOpts, lets fn change it, and unmounts and detaches it.
func changeExt(t *testing.T, disk string, p part, fn func(root string), mountOpts ...string) {
	t.Helper()
	args := []string{"-f", "--show"}
	if p.size > 0 {
		args = append(args, "-o", fmt.Sprint(p.start), "--sizelimit", fmt.Sprint(p.size))
	}
	dev := strings.TrimSpace(sh(t, "losetup", append(args, disk)...))
	defer exec.Command("losetup", "-d", dev).Run()
	mnt := t.TempDir()
	sh(t, "mount", append(mountOpts, dev, mnt)...)
	defer sh(t, "umount", mnt)
	fn(mnt)
}

// changeOnePercent changes 6 of the 600 files of the delta fixture's
// ext4 (root): two rewritten in place, one rewritten as a new file, one
// grown, one deleted, and one added.
func changeOnePercent(t *testing.T, root string) {
	t.Helper()
	path := func(i int) string { return filepath.Join(root, fmt.Sprintf("d%d/f%d.bin", i%12, i)) }
	inPlace := func(i int, off, n int64) {
		f, err := os.OpenFile(path(i), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i)}, int(n)), off); err != nil {
			t.Fatal(err)
		}
	}
	inPlace(99, 8192, 4096)
	inPlace(480, 0, 1024+(480*7919)%409600)
	if err := os.WriteFile(path(12), bytes.Repeat([]byte("new"), 30000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path(377), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("more"), 25000))
	f.Close()
	if err := os.Remove(path(250)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d3", "added.bin"), bytes.Repeat([]byte("added"), 60000), 0o644); err != nil {
		t.Fatal(err)
	}
}

// changeFAT changes one of the 100 files of the FAT at p of disk with
// mtools, and deletes another.
func changeFAT(t *testing.T, disk string, p part) {
	t.Helper()
	at := fmt.Sprintf("%s@@%d", disk, p.start)
	src := filepath.Join(t.TempDir(), "f5.bin")
	os.WriteFile(src, bytes.Repeat([]byte("fat"), 20000), 0o644)
	sh(t, "mcopy", "-o", "-i", at, src, "::/d1/f5.bin")
	sh(t, "mdel", "-i", at, "::/d2/f6.bin")
}

// changedBytes is the size of the chunk-sized windows of the disk in
// which a and b differ.
func changedBytes(t *testing.T, a, b string, chunk int64) int64 {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	var n int64
	for off := int64(0); ; off += chunk {
		ka, ea := fa.ReadAt(ba, off)
		kb, _ := fb.ReadAt(bb, off)
		if !bytes.Equal(ba[:ka], bb[:kb]) {
			n += int64(max(ka, kb))
		}
		if ea == io.EOF || ka == 0 {
			return n
		}
	}
}

// sameFile fails the test unless a and b hold the same bytes.
func sameFile(t *testing.T, a, b, what string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Errorf("%s: %v: %s", what, err, bytes.TrimSpace(out))
	}
}

// sectorsWritten is what /sys/block/DEV/stat counts as written to the
// block device dev, in 512-byte sectors.
func sectorsWritten(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		t.Fatalf("%s stat: %q", dev, b)
	}
	return n
}

// A disk restored, then about 1 % of its files changed through the
// filesystems, then delta-restored: it is byte for byte what a full
// restore onto the same changed disk makes, its filesystems check clean
// and hold the source's files, and only the blocks of chunks that differ
// were written (counted by platter and by the block device). With --trim
// it is byte for byte a full restore onto a new file.
func TestDelta(t *testing.T) {
	disk := fixture(t, "delta-disk.sh")
	parts := sfdiskParts(t, disk)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	const chunk = 1 << 20
	ok(t, "create", "--progress", "none", "--chunk-size", "1M", disk, img)
	full := filepath.Join(dir, "full.img")
	ok(t, "restore", "--progress", "none", img, full)

	// The older state the target holds.
	old := filepath.Join(dir, "old.img")
	sh(t, "cp", "--sparse=always", full, old)
	changeExt(t, old, parts[1], func(root string) { changeOnePercent(t, root) })
	changeFAT(t, old, parts[2])
	changed := changedBytes(t, old, full, chunk)
	if changed == 0 || changed > 40*chunk {
		t.Fatalf("the change touched %d bytes of 1 MiB windows", changed)
	}

	// What the delta must give: a full restore onto the same older
	// state, on a device (a file would be cut to nothing first).
	want := filepath.Join(dir, "want.img")
	sh(t, "cp", "--sparse=always", old, want)
	ok(t, "restore", "--yes", "--progress", "none", img, loop(t, want))

	target := filepath.Join(dir, "target.img")
	sh(t, "cp", "--sparse=always", old, target)
	dev := loop(t, target)
	before := sectorsWritten(t, dev)
	r := deltaRestore(t, "--yes", img, dev)
	devWrote := (sectorsWritten(t, dev) - before) * 512
	t.Logf("changed 1 MiB windows: %d bytes; delta: %+v; the device counted %d bytes written", changed, r.Delta, devWrote)
	sameFile(t, target, want, "delta restore and a full restore onto the same older disk")
	checkPartition(t, extract(t, target, parts[1]), "ext4", disk+".files/p1")
	checkPartition(t, extract(t, target, parts[2]), "fat32", disk+".files/p2")
	switch {
	case r.Delta.Chunks != int64(len(info(t, img, "--chunks").Chunks)):
		t.Errorf("compared %d chunks, the image has %d", r.Delta.Chunks, len(info(t, img, "--chunks").Chunks))
	case r.Delta.Differed == 0 || r.Delta.Differed*chunk > changed:
		t.Errorf("%d chunks differed; the windows that differ hold %d bytes", r.Delta.Differed, changed)
	case r.Delta.Written == 0 || float64(r.Delta.Written) > 1.2*float64(changed):
		t.Errorf("platter wrote %d bytes for %d bytes of changed chunks", r.Delta.Written, changed)
	case devWrote < r.Delta.Written || float64(devWrote) > 1.2*float64(changed):
		t.Errorf("the device was written %d bytes for %d bytes of changed chunks (platter says %d)", devWrote, changed, r.Delta.Written)
	}

	// Once more: nothing differs.
	if r := deltaRestore(t, "--yes", img, dev); r.Delta.Differed != 0 || r.Delta.Written != 0 {
		t.Errorf("a second delta: %+v", r.Delta)
	}

	// --trim onto a file: the free bytes read as zeros, as on a new file.
	trimmed := filepath.Join(dir, "trimmed.img")
	sh(t, "cp", "--sparse=always", old, trimmed)
	if r := deltaRestore(t, "--trim", img, trimmed); r.Delta.Trimmed == 0 {
		t.Errorf("--trim discarded nothing: %+v", r.Delta)
	}
	sameFile(t, trimmed, full, "delta restore --trim and a restore onto a new file")

	// An encrypted image of the same disk, the same way.
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("delta\n"), 0o600)
	enc := filepath.Join(dir, "enc.platter")
	ok(t, "create", "--progress", "none", "--chunk-size", "1M", "--encrypt", "--test-kdf", cheapKDF, "--password-file", pass, disk, enc)
	sh(t, "cp", "--sparse=always", old, trimmed)
	deltaRestore(t, "--trim", "--password-file", pass, enc, trimmed)
	sameFile(t, trimmed, full, "delta restore --trim of an encrypted image")
}

// A target that is not the image's disk, or not its size, is refused
// before anything is written to it; so is a delta from standard input.
func TestDeltaRefuses(t *testing.T) {
	disk := fixture(t, "delta-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	full := filepath.Join(dir, "full.img")
	ok(t, "restore", "--progress", "none", img, full)

	refused := func(target string, code int, msg string, args ...string) {
		t.Helper()
		keep := target + ".before"
		sh(t, "cp", "--sparse=always", target, keep)
		_, stderr, got := run(t, append(append([]string{"restore", "--delta", "--progress", "none"}, args...), img, target)...)
		if got != code || !strings.Contains(stderr, msg) {
			t.Errorf("%v onto %s: exit %d, want %d with %q:\n%s", args, filepath.Base(target), got, code, msg, stderr)
		}
		sameFile(t, target, keep, "a refused target")
	}
	// Another disk: the same layout, another disk GUID and partition GUIDs.
	other := filepath.Join(dir, "other.img")
	sh(t, "cp", "--sparse=always", full, other)
	sh(t, "sgdisk", "-G", other)
	refused(other, 1, "does not hold the image's disk: its disk id is")
	// Another table on a disk of the right size.
	blank := sparseFile(t, filepath.Join(dir, "blank.img"), info(t, img).SourceSize)
	sh(t, "sgdisk", "-n", "1:1M:+100M", blank)
	refused(blank, 1, "its partition 1 is bytes")
	// A partition-sized file that holds no FAT.
	blank2 := sparseFile(t, filepath.Join(dir, "blank2.img"), sfdiskParts(t, disk)[2].size)
	refused(blank2, 1, "does not hold partition 2 of the image: partition 2 of the image holds fat32", "--partition", "2")
	// Another size.
	big := filepath.Join(dir, "big.img")
	sh(t, "cp", "--sparse=always", full, big)
	sh(t, "truncate", "-s", "+1M", big)
	refused(big, 1, "a delta restore needs the same disk; nothing was written")
	refused(big, 1, "a delta restore needs the same disk; nothing was written", "--force")
	// The disk's ext4 mounted (through a loop device on the file), read
	// only: a writable mount's own writes (lazy inode-table zeroing, the
	// superblock) would reach the file while it is compared.
	mounted := filepath.Join(dir, "mounted.img")
	sh(t, "cp", "--sparse=always", full, mounted)
	changeExt(t, mounted, sfdiskParts(t, disk)[1], func(string) { refused(mounted, 1, "is in use") }, "-o", "ro,noload")
	// Usage: no target, - as the image, --trim alone.
	if _, stderr, code := run(t, "restore", "--delta", img, filepath.Join(dir, "missing.img")); code != 2 || !strings.Contains(stderr, "does not exist") {
		t.Errorf("a missing target: exit %d: %s", code, stderr)
	}
	cmd := exec.Command(platter, "restore", "--delta", "-", full)
	cmd.Stdin, _ = os.Open(img)
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "save the image to a file first") {
		t.Errorf("--delta from standard input: %v: %s", err, out)
	}
	if _, stderr, code := run(t, "restore", "--trim", img, full); code != 2 || !strings.Contains(stderr, "go with --delta") {
		t.Errorf("--trim without --delta: exit %d: %s", code, stderr)
	}

	// --force with --trim is refused where the check fails: the free
	// bytes may be another disk's data.
	refused(other, 2, "but not with --trim", "--force", "--trim")
	// --force restores onto the other disk anyway: it becomes the image's.
	_, stderr, code := run(t, "restore", "--delta", "--force", "--progress", "none", img, other)
	if code != 0 || !strings.Contains(stderr, "restoring onto it anyway (--force)") {
		t.Errorf("--force: exit %d: %s", code, stderr)
	}
	sameFile(t, other, full, "--force onto the disk with other GUIDs")
	// Now it passes the check, --trim and all.
	deltaRestore(t, "--trim", "--force", img, other)
	sameFile(t, other, full, "--trim after --force")
}

// --partition N: a delta of one partition onto a file holding an older
// state of it; a partition holding another filesystem is refused.
func TestDeltaPartition(t *testing.T) {
	disk := fixture(t, "delta-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	p1 := filepath.Join(dir, "p1.img")
	ok(t, "restore", "--progress", "none", "--partition", "1", img, p1)
	old := filepath.Join(dir, "old.img")
	sh(t, "cp", "--sparse=always", p1, old)
	changeExt(t, old, part{}, func(root string) { changeOnePercent(t, root) })

	target := filepath.Join(dir, "target.img")
	sh(t, "cp", "--sparse=always", old, target)
	r := deltaRestore(t, "--partition", "1", img, target)
	if r.Delta.Differed == 0 || r.Delta.Written == 0 || r.Delta.Written > r.Delta.DifferedBytes {
		t.Errorf("%+v", r.Delta)
	}
	checkPartition(t, target, "ext4", disk+".files/p1")
	sh(t, "cp", "--sparse=always", old, target)
	deltaRestore(t, "--partition", "1", "--trim", img, target)
	sameFile(t, target, p1, "delta restore --partition 1 --trim and a restore onto a new file")

	// Another ext4 of the same size.
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", old)
	sh(t, "cp", "--sparse=always", old, target)
	_, stderr, code := run(t, "restore", "--delta", "--partition", "1", img, target)
	if code != 1 || !strings.Contains(stderr, "does not hold partition 1 of the image: partition 1 of the image holds ext4") {
		t.Errorf("another ext4: exit %d: %s", code, stderr)
	}
	sameFile(t, target, old, "a refused partition")
}
