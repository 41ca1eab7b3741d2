package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/fs/xfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// xfsGarbage writes size bytes of pseudo-random data to path, a few MiB
// at a time: the free space of a used disk.
func xfsGarbage(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var x uint64 = 0x9e3779b97f4a7c15 ^ uint64(size)
	b := make([]byte, 4<<20)
	for n := int64(0); n < size; n += int64(len(b)) {
		for i := 0; i < len(b); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(b[i:], x)
		}
		if _, err := f.Write(b[:min(int64(len(b)), size-n)]); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// xfsFill writes about mib MiB into the mounted filesystem at mnt (or a
// plain directory): directories of files of many sizes, half of them
// random and half compressible, some deleted, symlinks, a sparse file,
// and with reflink a shared copy of a large file, partly rewritten.
func xfsFill(t *testing.T, mnt string, mib int, reflink bool) {
	t.Helper()
	var x uint64 = 88172645463325252
	rnd := func(b []byte) {
		for i := 0; i+8 <= len(b); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(b[i:], x)
		}
	}
	written := 0
	for d := 0; written < mib<<20; d++ {
		dir := filepath.Join(mnt, "tree", fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 40 {
			n := (d*40+i)*7919%(256<<10) + i%7*(1<<20)/3
			b := make([]byte, n)
			if i%2 == 0 {
				rnd(b)
			} else {
				line := fmt.Sprintf("directory %d, file %d: some words that compress well. ", d, i)
				for k := 0; k < n; k += len(line) {
					copy(b[k:], line)
				}
			}
			p := filepath.Join(dir, fmt.Sprintf("f%02d", i))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			written += n
			if i%5 == 4 {
				os.Remove(filepath.Join(dir, fmt.Sprintf("f%02d", i-2)))
				written -= (d*40+i-2)*7919%(256<<10) + (i-2)%7*(1<<20)/3
			}
		}
		os.Symlink(fmt.Sprintf("../d%03d/f01", d), filepath.Join(dir, "link"))
	}
	os.RemoveAll(filepath.Join(mnt, "tree", "d001"))
	f, err := os.Create(filepath.Join(mnt, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("far in"), 40<<20)
	f.Close()
	big := make([]byte, 12<<20)
	rnd(big)
	os.WriteFile(filepath.Join(mnt, "big"), big, 0o644)
	if reflink {
		sh(t, "cp", "--reflink=always", filepath.Join(mnt, "big"), filepath.Join(mnt, "big.clone"))
		f, err := os.OpenFile(filepath.Join(mnt, "big.clone"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("this part of the clone is its own"), 5<<20)
		f.Close()
	}
	sh(t, "sync", "-f", mnt)
}

// xfsManifest describes every entry under root (tooltest.Manifest).
var xfsManifest = tooltest.Manifest

// xfsSameFiles fails the test unless got lists exactly want.
func xfsSameFiles(t *testing.T, want, got map[string]string) {
	t.Helper()
	tooltest.SameManifest(t, want, got, 20)
}

// xfsMount mounts dev (a file gets a loop device) with opts and returns
// the mount point and its unmount.
var xfsMount = tooltest.Mount

// xfsCounts is what xfs_db says of img: its blocks, their size, the
// free blocks its AGFs count and the blocks on their free lists (which
// partclone counts free and Platter used).
func xfsCounts(t *testing.T, img string) (dblocks, bs, free, agfl int64) {
	t.Helper()
	field := func(out, name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + ` = (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("xfs_db printed no %s:\n%s", name, out)
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		return v
	}
	out := sh(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize agcount", img)
	dblocks, bs = field(out, "dblocks"), field(out, "blocksize")
	for ag := range field(out, "agcount") {
		a := sh(t, "xfs_db", "-r", "-c", fmt.Sprintf("agf %d", ag), "-c", "p freeblks flcount", img)
		free += field(a, "freeblks")
		agfl += field(a, "flcount")
	}
	return dblocks, bs, free, agfl
}

// xfsRepairClean runs xfs_repair -n and fails the test if it finds
// anything.
func xfsRepairClean(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("xfs_repair", "-n", img).CombinedOutput(); err != nil {
		t.Fatalf("xfs_repair -n: %v\n%s", err, out)
	}
}

// xfsImageInfo is what info --json says of an image's first partition,
// and its warnings.
type xfsImageInfo struct {
	Warnings   []string `json:"warnings"`
	ImageBytes int64    `json:"image_bytes"`
	Partitions []struct {
		Size       int64  `json:"size"`
		Filesystem string `json:"filesystem"`
		Note       string `json:"note"`
		Label      string `json:"label"`
		UUID       string `json:"uuid"`
		UsedBytes  int64  `json:"used_bytes"`
	} `json:"partitions"`
}

func xfsInfo(t *testing.T, img string) xfsImageInfo {
	t.Helper()
	var j xfsImageInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Partitions) != 1 {
		t.Fatalf("info lists %d partitions", len(j.Partitions))
	}
	return j
}

// xfsSum is the SHA-256 of a file.
func xfsSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// xfsProto makes an XFS filesystem on target holding the tree at dir,
// through a prototype file (mkfs.xfs -p): for v4, which this kernel
// (built without CONFIG_XFS_SUPPORT_V4) does not mount.
func xfsProto(t *testing.T, target, dir string, args ...string) {
	t.Helper()
	sh(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-K"}, args...), "-p", tooltest.XFSProto(t, dir), target)...)
}

// xfsSameFileBlocks fails the test unless every block xfs_db maps to a
// file of tree in src holds the same bytes in back: the files are
// identical where the kernel cannot mount the filesystem to read them.
func xfsSameFileBlocks(t *testing.T, src, back, tree string) {
	t.Helper()
	for _, e := range tooltest.XFSFileExtents(t, src, tree, 20) {
		sameBytes(t, src, back, e.Off, e.Len, "file blocks")
	}
}

// XFS over random data, of every layout mkfs.xfs makes (v5 defaults,
// v4, rmapbt with reflink, 1 KiB blocks, 4 KiB sectors on a 4Kn loop
// device), filled through the kernel (v4, which this kernel does not
// mount, through mkfs.xfs -p): the image keeps exactly the blocks the
// filesystem's free-space B-trees do not call free (partclone.xfs's and
// the AGFL's) and is at most 5 % larger than partclone.xfs -c | zstd -3;
// restored, xfs_repair -n finds it clean and every file is identical.
// The first layout is issue 15's: 1 GiB holding 147 MiB.
func TestXFSImage(t *testing.T) {
	for _, l := range []struct {
		name     string
		size     int64
		mib      int
		args     []string
		v4, k4   bool
		noReflnk bool
	}{
		{name: "v5 defaults", size: 1 << 30, mib: 147},
		{name: "rmapbt", size: 512 << 20, mib: 64, args: []string{"-m", "reflink=1,rmapbt=1"}},
		{name: "1k blocks", size: 512 << 20, mib: 64, args: []string{"-b", "size=1024"}},
		{name: "4k sectors", size: 512 << 20, mib: 64, args: []string{"-s", "size=4096"}, k4: true},
		{name: "v4", size: 512 << 20, mib: 64, args: []string{"-m", "crc=0"}, v4: true, noReflnk: true},
	} {
		t.Run(l.name, func(t *testing.T) {
			dir := t.TempDir()
			file := xfsGarbage(t, filepath.Join(dir, "xfs.img"), l.size)
			src := file
			if l.k4 {
				src = loop(t, file, "-b", "4096")
			}
			var want map[string]string
			tree := ""
			if l.v4 {
				tree = t.TempDir()
				xfsFill(t, tree, l.mib, false)
				xfsProto(t, src, tree, l.args...)
				want = xfsManifest(t, tree)
			} else {
				sh(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-K", "-L", "platter-xfs"}, l.args...), src)...)
				mnt, umount := xfsMount(t, src, "rw")
				xfsFill(t, mnt, l.mib, !l.noReflnk)
				want = xfsManifest(t, mnt)
				umount()
			}

			img := filepath.Join(dir, "xfs.platter")
			start := time.Now()
			ok(t, "create", "--progress", "none", src, img)
			took := time.Since(start)
			j := xfsInfo(t, img)
			p := j.Partitions[0]
			dblocks, bs, free, agfl := xfsCounts(t, file)
			if p.Filesystem != "xfs" || len(j.Warnings) != 0 || p.Note != "" {
				t.Errorf("partition %+v, warnings %q; want a trusted xfs", p, j.Warnings)
			}
			if want := (dblocks - free) * bs; p.UsedBytes != want {
				t.Errorf("used_bytes %d; the AGFs leave %d of %d blocks of %d bytes not free (%d)", p.UsedBytes, dblocks-free, dblocks, bs, want)
			}
			pcz, pcTook := partcloneZstd(t, "partclone.xfs", file)
			ratio := float64(j.ImageBytes) / float64(pcz)
			t.Logf("%s, %d MiB written: platter %d bytes in %v, partclone.xfs -c | zstd -3 %d bytes in %v: %.3fx; used %d bytes (%d AGFL blocks)",
				l.name, l.mib, j.ImageBytes, took.Round(time.Millisecond), pcz, pcTook.Round(time.Millisecond), ratio, p.UsedBytes, agfl)
			if ratio > 1.05 {
				t.Errorf("image %d bytes, %.3fx partclone | zstd's %d", j.ImageBytes, ratio, pcz)
			}

			// The map: partclone's used blocks and the AGFL's, no more.
			u, err := tooltest.DetectFile(t, file, xfs.Detect)
			if err != nil {
				t.Fatal(err)
			}
			m, err := u.Load()
			if err != nil {
				t.Fatal(err)
			}
			if extra := tooltest.CompareWithPartclone(t, "partclone.xfs", file, m); extra != agfl*bs {
				t.Errorf("%d bytes more than partclone; the AGFLs hold %d blocks", extra, agfl)
			}

			// ls cannot read XFS: it says how to reach the files.
			if _, stderr, code := run(t, "ls", img); code != 2 || !strings.Contains(stderr, "platter mount "+img+" DIR, then mount -o ro,loop DIR/p1.img") {
				t.Errorf("ls of an XFS image: exit %d, want 2 and the way in through mount:\n%s", code, stderr)
			}

			back := filepath.Join(dir, "back.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			for _, e := range tooltest.PartcloneUsed(t, "partclone.xfs", file) {
				sameBytes(t, file, back, e.Off, e.Len, "bytes partclone copies")
			}
			xfsRepairClean(t, back)
			if l.v4 {
				xfsSameFileBlocks(t, file, back, tree)
				return
			}
			rdev := back
			if l.k4 {
				rdev = loop(t, back, "-b", "4096")
			}
			mnt, _ := xfsMount(t, rdev, "ro")
			xfsSameFiles(t, want, xfsManifest(t, mnt))
		})
	}
}

// info names an XFS partition's filesystem, label and UUID (as blkid
// reads them).
func TestXFSInfoIdentity(t *testing.T) {
	dir := t.TempDir()
	src := sparseFile(t, filepath.Join(dir, "xfs.img"), 320<<20)
	sh(t, "mkfs.xfs", "-q", "-f", "-L", "platter-xfs", src)
	img := filepath.Join(dir, "xfs.platter")
	ok(t, "create", "--progress", "none", src, img)
	p := xfsInfo(t, img).Partitions[0]
	uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", src))
	if p.Filesystem != "xfs" || p.Label != "platter-xfs" || !strings.EqualFold(p.UUID, uuid) {
		t.Errorf("info: filesystem %q, label %q, UUID %q; want xfs, platter-xfs, %s", p.Filesystem, p.Label, p.UUID, uuid)
	}
	if text := ok(t, "info", img); !strings.Contains(text, "platter-xfs") {
		t.Errorf("info does not show the label:\n%s", text)
	}
}

// xfsSmall makes a 384 MiB XFS over random data on a loop device of
// file, fills it and returns the device, its mount point, the files'
// manifest and the unmount.
func xfsSmall(t *testing.T, file string) (dev, mnt string, want map[string]string, umount func()) {
	t.Helper()
	xfsGarbage(t, file, 384<<20)
	dev = loop(t, file)
	sh(t, "mkfs.xfs", "-q", "-f", "-K", dev)
	mnt, umount = xfsMount(t, dev, "rw")
	xfsFill(t, mnt, 48, true)
	return dev, mnt, xfsManifest(t, mnt), umount
}

// xfsWhole images a filesystem Platter must not trust and checks that it
// said why (want), copied every block, and restores it byte for byte.
func xfsWhole(t *testing.T, src, want string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "xfs.platter")
	_, stderr, code := run(t, "create", "--progress", "none", src, img)
	if code != 0 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, want) {
		t.Fatalf("create: exit %d, %q; want a warning saying %q", code, stderr, want)
	}
	j := xfsInfo(t, img)
	p := j.Partitions[0]
	if p.Filesystem != "xfs" || p.UsedBytes != p.Size || !strings.Contains(p.Note, want) || len(j.Warnings) != 1 {
		t.Errorf("info: %+v, warnings %q; want xfs, every byte used, a note saying %q", p, j.Warnings, want)
	}
	if text := ok(t, "info", img); !strings.Contains(text, "Warning:") {
		t.Errorf("info shows no warning:\n%s", text)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	if xfsSum(t, back) != xfsSum(t, src) {
		t.Error("the restored filesystem differs from the source")
	}
	return back
}

// Damage xfs_repair finds (made with xfs_db: an AGF and a bnobt block
// with bad checksums, an AGF whose free count disagrees with its
// B-trees) is reported and the filesystem copied whole: the restored
// copy is the source byte for byte.
func TestXFSDamaged(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.img")
	_, _, _, umount := xfsSmall(t, clean)
	umount()
	free1 := sh(t, "xfs_db", "-r", "-c", "agf 1", "-c", "p freeblks", clean)
	var n int64
	fmt.Sscanf(strings.TrimSpace(free1), "freeblks = %d", &n)
	for _, tc := range []struct {
		name string
		cmds []string
		want string
	}{
		{"AGF checksum", []string{"agf 2", "fuzz -c crc add"}, "AG 2's AGF fails its checksum"},
		{"bnobt checksum", []string{"agf 0", "addr bnoroot", "fuzz -c crc add"}, "bnobt block"},
		{"free count", []string{"agf 1", fmt.Sprintf("write -d freeblks %d", n+3)}, "AG 1's free space disagrees with itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "damaged.img")
			sh(t, "cp", "--sparse=never", clean, src)
			args := []string{"-x"}
			for _, c := range tc.cmds {
				args = append(args, "-c", c)
			}
			sh(t, "xfs_db", append(args, src)...)
			if out, err := exec.Command("xfs_repair", "-n", src).CombinedOutput(); err == nil {
				t.Fatalf("xfs_repair -n finds nothing wrong:\n%s", out)
			}
			xfsWhole(t, src, tc.want)
		})
	}
}

// An XFS whose log holds changes not written home is copied whole with
// a warning, and the copy replays its log as the source would: one
// copied while mounted after a sync (its metadata changes only in the
// log), and one shut down (xfs_io shutdown, the log forced first) and
// unmounted.
func TestXFSDirtyLog(t *testing.T) {
	file := filepath.Join(t.TempDir(), "xfs.img")
	_, mnt, want, umount := xfsSmall(t, file)
	synced := filepath.Join(t.TempDir(), "synced.img")
	sh(t, "cp", "--sparse=never", file, synced)
	t.Run("copied while mounted", func(t *testing.T) {
		back := xfsWhole(t, synced, "was not cleanly unmounted")
		m, _ := xfsMount(t, back, "rw,nouuid")
		xfsSameFiles(t, want, xfsManifest(t, m))
	})
	t.Run("shut down", func(t *testing.T) {
		os.WriteFile(filepath.Join(mnt, "late"), []byte(strings.Repeat("late ", 100000)), 0o644)
		os.RemoveAll(filepath.Join(mnt, "tree", "d003"))
		sh(t, "xfs_io", "-x", "-c", "shutdown -f", mnt)
		umount()
		xfsWhole(t, file, "was not cleanly unmounted")
	})
}

// A mounted XFS imaged through the freeze is trusted: its log, covered
// by the freeze, holds nothing but the superblock (xfs_repair -n and
// xfs_logprint still call it dirty). The image keeps only the used
// blocks, and the restored copy mounts, replaying that log, with every
// file, and checks clean.
func TestXFSFrozen(t *testing.T) {
	file := filepath.Join(t.TempDir(), "xfs.img")
	dev, _, want, _ := xfsSmall(t, file)
	img := filepath.Join(t.TempDir(), "xfs.platter")
	_, stderr, code := run(t, "create", "--snapshot", "freeze", "--progress", "none", dev, img)
	if code != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("create: exit %d\n%s", code, stderr)
	}
	j := xfsInfo(t, img)
	p := j.Partitions[0]
	if p.Filesystem != "xfs" || p.UsedBytes >= p.Size/2 || len(j.Warnings) != 0 {
		t.Errorf("info: %+v, warnings %q; want a trusted xfs", p, j.Warnings)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	if out, _ := exec.Command("xfs_logprint", "-t", back).CombinedOutput(); !strings.Contains(string(out), "DIRTY") {
		t.Errorf("the image's log is clean: it was not taken while frozen?\n%s", out)
	}
	m, umount := xfsMount(t, back, "rw,nouuid")
	xfsSameFiles(t, want, xfsManifest(t, m))
	umount()
	xfsRepairClean(t, back)
}

// The maps of a mounted XFS are read at the freeze, and XFS writes its
// metadata to the device around the device's page cache: what that cache
// holds from an earlier read (another backup, blkid, a previous pass)
// predates it. An image taken after the cache was filled, then files
// written, must still hold those files.
func TestXFSFrozenAfterCachedRead(t *testing.T) {
	file := filepath.Join(t.TempDir(), "xfs.img")
	dev, mnt, _, _ := xfsSmall(t, file)
	sh(t, "fsfreeze", "-f", mnt)
	sh(t, "fsfreeze", "-u", mnt)
	// Read the whole device through its page cache (covered log, AGFs
	// and B-trees as they are now), then allocate more.
	sh(t, "dd", "if="+dev, "of=/dev/null", "bs=1M", "status=none")
	xfsFill(t, filepath.Join(mnt, "later"), 40, false)
	want := xfsManifest(t, mnt)
	img := filepath.Join(t.TempDir(), "xfs.platter")
	ok(t, "create", "--snapshot", "freeze", "--progress", "none", dev, img)
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	m, umount := xfsMount(t, back, "rw,nouuid")
	xfsSameFiles(t, want, xfsManifest(t, m))
	umount()
	xfsRepairClean(t, back)
}

// An XFS of more than 2^32 blocks (5 TiB of 1 KiB blocks, sparse) with
// files written through the kernel: block numbers past 32 bits map
// right, the map and the image stay small, and every file comes back.
func TestXFSHuge(t *testing.T) {
	dir := t.TempDir()
	const size = 5 << 40
	src := sparseFile(t, filepath.Join(dir, "huge.img"), size)
	sh(t, "mkfs.xfs", "-q", "-f", "-K", "-b", "size=1024", "-l", "size=64m", src)
	mnt, umount := xfsMount(t, src, "rw")
	// Files in directories spread over the AGs, up to the last.
	for i := range 12 {
		d := filepath.Join(mnt, fmt.Sprintf("d%02d", i))
		os.Mkdir(d, 0o755)
		b := []byte(strings.Repeat(fmt.Sprintf("file %d of a huge filesystem\n", i), 40000+i*1000))
		if err := os.WriteFile(filepath.Join(d, "f"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "sync", "-f", mnt)
	want := xfsManifest(t, mnt)
	umount()
	dblocks, bs, free, _ := xfsCounts(t, src)
	if dblocks <= 1<<32 {
		t.Fatalf("only %d blocks", dblocks)
	}
	img := filepath.Join(dir, "huge.platter")
	start := time.Now()
	rss := peakRSS(t, "create", "--progress", "none", src, img)
	j := xfsInfo(t, img)
	t.Logf("%d blocks of %d bytes: create %v, peak RSS %d MiB, image %d bytes, used %d bytes", dblocks, bs, time.Since(start).Round(time.Millisecond), rss>>10, j.ImageBytes, j.Partitions[0].UsedBytes)
	if p := j.Partitions[0]; p.Filesystem != "xfs" || p.UsedBytes != (dblocks-free)*bs || len(j.Warnings) != 0 {
		t.Errorf("info: %+v, warnings %q; want xfs using %d bytes", p, j.Warnings, (dblocks-free)*bs)
	}
	if j.ImageBytes > 64<<20 || rss > 300<<10 {
		t.Errorf("image %d bytes, peak RSS %d MiB", j.ImageBytes, rss>>10)
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	xfsRepairClean(t, back)
	m, _ := xfsMount(t, back, "ro")
	xfsSameFiles(t, want, xfsManifest(t, m))
}
