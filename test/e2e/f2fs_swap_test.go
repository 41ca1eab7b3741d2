package e2e

// F2FS is imaged by its SIT: what lies before the main area and the
// blocks the current checkpoint calls valid, and an F2FS its checkpoint
// says was not cleanly unmounted is copied whole. A Linux swap area is
// imaged by its header page alone, which keeps its UUID and label; one
// that holds a hibernated system is copied whole. info names both, with
// label and UUID.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// idInfo is what info --json says of partitions' names and notes.
type idInfo struct {
	ImageBytes int64    `json:"image_bytes"`
	Warnings   []string `json:"warnings"`
	Partitions []struct {
		Index       int    `json:"index"`
		Start       int64  `json:"start"`
		Size        int64  `json:"size"`
		Filesystem  string `json:"filesystem"`
		Label       string `json:"label"`
		UUID        string `json:"uuid"`
		Note        string `json:"note"`
		UsedBytes   int64  `json:"used_bytes"`
		StoredBytes int64  `json:"stored_bytes"`
	} `json:"partitions"`
}

func idInfoOf(t *testing.T, img string) idInfo {
	t.Helper()
	var j idInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	return j
}

// f2fsTree writes a tree of many files of many sizes, one of them several
// segments long, every name unique and starting with tag (dump.f2fs
// writes a file out under its own name), and returns it with the number
// of bytes its files hold.
func f2fsTree(t *testing.T, tag string) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	x := uint32(len(tag)+7) * 2654435761
	var total int64
	write := func(p string, b []byte) {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(b))
	}
	for d := range 4 {
		sub := filepath.Join(dir, fmt.Sprintf("%s-dir%d", tag, d), "deeper")
		os.MkdirAll(sub, 0o755)
		for i := range 50 {
			b := make([]byte, (i*i*41)%90000)
			for k := range b {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				b[k] = byte(x)
			}
			where := sub
			if i%2 == 0 {
				where = filepath.Dir(sub)
			}
			write(filepath.Join(where, fmt.Sprintf("%s-%d-%d.bin", tag, d, i)), b)
		}
	}
	big := make([]byte, 12<<20)
	for k := range big {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		big[k] = byte(x >> 3)
	}
	write(filepath.Join(dir, tag+"-large.bin"), big)
	return dir, total
}

// f2fsField is a number fsck.f2fs -l gives for img (superblock first,
// then the current checkpoint).
func f2fsField(t *testing.T, img, name string) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s+(\d+)$`).FindStringSubmatch(sh(t, "fsck.f2fs", "-l", img))
	if m == nil {
		t.Fatalf("fsck.f2fs -l %s gives no %s", img, name)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// An F2FS made over random data, loaded in two rounds (two checkpoints)
// with a few hundred files, then defragmented (moved data left behind in
// free blocks), spanning several SIT blocks: the image holds about what
// its files hold, not the garbage around them; restored, fsck.f2fs finds
// it clean, every file reads back the same, and blkid and info give it
// the same label and UUID.
func TestF2FSRoundTrip(t *testing.T) {
	const size = 384 << 20
	src := trustFile(t, size)
	sh(t, "mkfs.f2fs", "-q", "-f", "-t", "0", "-l", "platter f2fs", "-U", "3c1a9e52-7b64-4f0d-8e21-5a6b7c8d9e0f", src)
	files := trustTree(t, false)
	first, n1 := f2fsTree(t, "first")
	second, n2 := f2fsTree(t, "second")
	sh(t, "sload.f2fs", "-f", files, "-t", "/files", src)
	sh(t, "sload.f2fs", "-f", first, "-t", "/first", src)
	sh(t, "sload.f2fs", "-f", second, "-t", "/second", src)
	main, segs := f2fsField(t, src, "main_blkaddr"), f2fsField(t, src, "segment_count_main")
	if segs <= 2*55 {
		t.Fatalf("%d main segments: fewer than three SIT blocks' worth", segs)
	}
	sh(t, "defrag.f2fs", "-s", itoa(main+4*512), "-l", itoa(4*512), "-t", itoa(main+(segs-12)*512), src)
	tooltest.F2FSClean(t, src)
	var data int64 = n1 + n2
	filepath.Walk(files, func(_ string, fi os.FileInfo, _ error) error {
		if fi.Mode().IsRegular() {
			data += fi.Size()
		}
		return nil
	})

	img := filepath.Join(t.TempDir(), "f2fs.platter")
	ok(t, "create", "--progress", "none", src, img)
	j := idInfoOf(t, img)
	uuid, label := blkidOf(t, src, "UUID"), blkidOf(t, src, "LABEL")
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "f2fs" || j.Partitions[0].Label != label || !strings.EqualFold(j.Partitions[0].UUID, uuid) || label != "platter f2fs" {
		t.Fatalf("info --json: %+v; blkid says label %q, UUID %q", j.Partitions, label, uuid)
	}
	// The files' bytes are random but for files.sh's text; what lies
	// before the main area (several MiB of it never written by mkfs: the
	// garbage, there as in free space, since mkfs.f2fs -t 0 does not
	// discard, that partclone keeps too) comes on top.
	if bound := data + 16<<20; j.ImageBytes > bound {
		t.Errorf("image of %d bytes, more than the files' %d bytes + 16 MiB (the filesystem is %d)", j.ImageBytes, data, int64(size))
	}
	t.Logf("files %d bytes, used %d, image %d of a %d-byte filesystem", data, j.Partitions[0].UsedBytes, j.ImageBytes, int64(size))
	if text := ok(t, "info", img); !strings.Contains(text, "f2fs") || !strings.Contains(text, "platter f2fs") || !strings.Contains(strings.ToLower(text), strings.ToLower(uuid)) {
		t.Errorf("info does not name the filesystem, its label and UUID:\n%s", text)
	}

	back := trustRestore(t, img)
	tooltest.F2FSClean(t, back)
	for _, key := range []string{"TYPE", "UUID", "LABEL"} {
		if got, want := blkidOf(t, back, key), blkidOf(t, src, key); got != want {
			t.Errorf("blkid %s: restored %q, source %q", key, got, want)
		}
	}
	tooltest.SameF2FSFiles(t, back, "", 100, files, first, second)
}

// blkidOf is what blkid says of a key for a file.
func blkidOf(t *testing.T, p, key string) string {
	t.Helper()
	return strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", key, p))
}

// f2fsCRC is f2fs_cal_crc32: CRC-32 seeded with the F2FS magic, not
// inverted at the end.
func f2fsCRC(seed uint32, b []byte) uint32 {
	return ^crc32.Update(^seed, crc32.IEEETable, b)
}

// An F2FS whose checkpoint lacks CP_UMOUNT (the kernel rolls data
// fsynced since forward, from blocks that checkpoint calls free) is
// copied whole with a warning, and restores byte for byte.
func TestF2FSUncleanCopiedWhole(t *testing.T) {
	src := trustFile(t, 128<<20)
	sh(t, "mkfs.f2fs", "-q", "-f", "-t", "0", "-l", "unclean", src)
	sh(t, "sload.f2fs", "-f", trustTree(t, false), src)
	cp := f2fsField(t, src, "cp_blkaddr")
	le := binary.LittleEndian
	// sload.f2fs leaves both packs of one version: clear the flag in
	// both, head and tail, and write their CRCs again.
	for _, start := range []int64{cp, cp + 512} {
		total := int64(le.Uint32(readAt(t, src, 4096, start*4096)[136:]))
		if total < 2 || total > 512 {
			t.Fatalf("checkpoint pack at block %d: %d blocks", start, total)
		}
		for _, n := range []int64{start, start + total - 1} {
			b := readAt(t, src, 4096, n*4096)
			le.PutUint32(b[132:], le.Uint32(b[132:])&^1)
			off := le.Uint32(b[164:])
			c := f2fsCRC(0xf2f52010, b[:off])
			if off < 4092 {
				c = f2fsCRC(c, b[off+4:])
			}
			le.PutUint32(b[off:], c)
			writeAt(t, src, b, n*4096)
		}
	}
	if state := sh(t, "dump.f2fs", src); !strings.Contains(state, "checkpoint state") || strings.Contains(state, "unmount") {
		t.Fatalf("dump.f2fs still reads a clean unmount:\n%s", state)
	}
	img, j := trustCreate(t, src, "f2fs", "was not cleanly unmounted")
	if p := j.Partitions[0]; p.UsedBytes != p.Size {
		t.Errorf("used %d of %d bytes: not copied whole", p.UsedBytes, p.Size)
	}
	back := trustRestore(t, img)
	sameBytes(t, src, back, 0, 128<<20, "restored F2FS")
}

// A GPT disk with a 256 MiB swap partition made by mkswap over random
// data and a second one holding a hibernated system (S1SUSPEND where the
// swap signature was): the image holds about a page of the first and
// all of the second, with a warning; restored, blkid and swaplabel give
// the first the same type, UUID and label, its header page byte for
// byte, and the second is identical.
func TestSwapGPT(t *testing.T) {
	dir := t.TempDir()
	disk := sparseFile(t, filepath.Join(dir, "disk.img"), 330<<20)
	sh(t, "sgdisk", "-n", "1:1M:+256M", "-t", "1:8200", "-c", "1:swap",
		"-n", "2:0:+64M", "-t", "2:8200", "-c", "2:hibernated", disk)
	parts := sfdiskParts(t, disk)
	const (
		uuid1 = "5e0f1d2c-3b4a-4968-8776-a5b4c3d2e1f0"
		uuid2 = "0a1b2c3d-4e5f-4a6b-9c8d-7e6f5a4b3c2d"
	)
	put := func(n int, label, uuid string, sig string) {
		p := trustFile(t, parts[n].size)
		sh(t, "mkswap", "-L", label, "-U", uuid, p)
		if sig != "" {
			writeAt(t, p, []byte(sig), 4096-10)
		}
		sh(t, "dd", "if="+p, "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+itoa(parts[n].start), "conv=notrunc", "status=none")
	}
	put(1, "platter swap", uuid1, "")
	put(2, "hibernated", uuid2, "S1SUSPEND\x00")
	p1, p2 := extract(t, disk, parts[1]), extract(t, disk, parts[2])
	if blkidOf(t, p1, "TYPE") != "swap" || blkidOf(t, p2, "TYPE") != "swsuspend" {
		t.Fatalf("blkid: %s, %s", blkidOf(t, p1, "TYPE"), blkidOf(t, p2, "TYPE"))
	}

	img := filepath.Join(dir, "swap.platter")
	_, stderr, code := run(t, "create", "--progress", "none", disk, img)
	if code != 0 || !strings.Contains(stderr, "holds a hibernated system") {
		t.Fatalf("create: exit %d, no warning of the hibernated system:\n%s", code, stderr)
	}
	j := idInfoOf(t, img)
	if len(j.Partitions) != 2 {
		t.Fatalf("info --json: %+v", j.Partitions)
	}
	for _, p := range j.Partitions {
		want := map[int][2]string{1: {"platter swap", uuid1}, 2: {"hibernated", uuid2}}[p.Index]
		if p.Filesystem != "swap" || p.Label != want[0] || p.UUID != want[1] {
			t.Errorf("partition %d: %s, label %q, UUID %q; want swap, %q, %q", p.Index, p.Filesystem, p.Label, p.UUID, want[0], want[1])
		}
		switch p.Index {
		case 1:
			if p.UsedBytes != 4096 || p.Note != "" {
				t.Errorf("partition 1: %d bytes used, note %q; want its header page", p.UsedBytes, p.Note)
			}
		case 2:
			if p.UsedBytes != p.Size || !strings.Contains(p.Note, "holds a hibernated system") {
				t.Errorf("partition 2: %d of %d bytes used, note %q", p.UsedBytes, p.Size, p.Note)
			}
		}
	}
	if !strings.Contains(strings.Join(j.Warnings, "\n"), "holds a hibernated system") {
		t.Errorf("info --json warnings: %q", j.Warnings)
	}
	// The hibernated partition's random bytes, and next to nothing of
	// the 256 MiB one.
	if bound := parts[2].size + 1<<20; j.ImageBytes > bound {
		t.Errorf("image of %d bytes, more than the hibernated partition's %d + 1 MiB", j.ImageBytes, parts[2].size)
	}
	t.Logf("image %d bytes for partitions of %d and %d", j.ImageBytes, parts[1].size, parts[2].size)
	text := ok(t, "info", img)
	for _, want := range []string{"swap", "platter swap", uuid1, "hibernated", uuid2, "Warning: "} {
		if !strings.Contains(text, want) {
			t.Errorf("info does not show %q:\n%s", want, text)
		}
	}

	back := filepath.Join(dir, "restored.img")
	ok(t, "restore", "--progress", "none", img, back)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, back); a != b {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	r1 := extract(t, back, parts[1])
	for _, key := range []string{"TYPE", "UUID", "LABEL", "VERSION"} {
		if got, want := blkidOf(t, r1, key), blkidOf(t, p1, key); got != want {
			t.Errorf("blkid %s: restored %q, source %q", key, got, want)
		}
	}
	if out := sh(t, "swaplabel", r1); !strings.Contains(out, "LABEL: platter swap") || !strings.Contains(out, "UUID:  "+uuid1) {
		t.Errorf("swaplabel of the restored swap says\n%s", out)
	}
	sameBytes(t, disk, back, parts[1].start, 4096, "swap header page")
	sameBytes(t, disk, back, parts[2].start, parts[2].size, "hibernated swap partition")
}
