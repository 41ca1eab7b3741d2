//go:build linux

package resize

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// A case is one filesystem: how to make it with its files, read its
// files back, and check it.
type fsCase struct {
	fs   string
	size int64
	// make writes the filesystem with its files into img.
	make func(t *testing.T, img string)
	// files describes the files of the filesystem in img, by its own
	// tools or the kernel.
	files func(t *testing.T, img string) map[string]string
	// check fails the test unless the filesystem in img is clean.
	check func(t *testing.T, img string)
}

// kernelFiles mounts img read-only (opts added) and describes its files.
func kernelFiles(fstype, opts string) func(t *testing.T, img string) map[string]string {
	return func(t *testing.T, img string) map[string]string {
		o := "ro"
		if opts != "" {
			o += "," + opts
		}
		mnt, umount := tooltest.Mount(t, img, o)
		defer umount()
		return fullManifest(t, mnt)
	}
}

// kernelMake makes the filesystem with mkfs and fills it through a
// loop mount.
func kernelMake(fstype string, mkfs ...string) func(t *testing.T, img string) {
	return func(t *testing.T, img string) {
		tooltest.Run(t, mkfs[0], append(mkfs[1:], img)...)
		mnt, umount := tooltest.Mount(t, img, "rw")
		writeTree(t, mnt, true)
		umount()
	}
}

var (
	ext4Case = fsCase{
		fs: "ext4", size: 96 << 20,
		make:  kernelMake("ext4", "mkfs.ext4", "-q", "-F", "-L", "platter-ext", "-U", "0b1c8a35-5a4f-4d7b-9d49-0c7a77d1e2f3"),
		files: kernelFiles("ext4", ""),
		check: func(t *testing.T, img string) { tooltest.Run(t, "e2fsck", "-fn", img) },
	}
	btrfsCase = fsCase{
		fs: "btrfs", size: 400 << 20,
		make:  kernelMake("btrfs", "mkfs.btrfs", "-q", "-f", "-L", "platter-btrfs"),
		files: kernelFiles("btrfs", ""),
		check: func(t *testing.T, img string) { tooltest.Run(t, "btrfs", "check", "--readonly", img) },
	}
	xfsCase = fsCase{
		fs: "xfs", size: 320 << 20,
		make:  kernelMake("xfs", "mkfs.xfs", "-q", "-f", "-L", "platter-xfs"),
		files: kernelFiles("xfs", "nouuid"),
		check: func(t *testing.T, img string) { tooltest.Run(t, "xfs_repair", "-n", img) },
	}
	ntfsCase = fsCase{
		fs: "ntfs", size: 96 << 20,
		make: func(t *testing.T, img string) {
			tooltest.Run(t, "mkntfs", "-q", "-F", "-f", "-L", "platter-ntfs", img)
			mnt := t.TempDir()
			tooltest.Run(t, "ntfs-3g", img, mnt)
			writeTree(t, mnt, false)
			tooltest.Umount(t, mnt)
		},
		files: func(t *testing.T, img string) map[string]string {
			mnt := t.TempDir()
			tooltest.Run(t, "ntfs-3g", "-o", "ro", img, mnt)
			defer tooltest.Umount(t, mnt)
			return fullManifest(t, mnt)
		},
		check: func(t *testing.T, img string) {
			out := tooltest.Run(t, "ntfsfix", "--no-action", img)
			if !strings.Contains(out, "Checking the alternate boot sector... OK") {
				t.Errorf("ntfsfix -n:\n%s", out)
			}
		},
	}
)

// fatFiles describes a FAT's files as mtools reads them: every entry's
// name, size and time (mdir), and every file's contents.
func fatFiles(t *testing.T, img string) map[string]string {
	m := tooltest.Manifest(t, tooltest.MtoolsTree(t, img))
	for p, e := range tooltest.Mdir(t, img) {
		m["mdir:"+p] = e.Short + "|" + e.Long + "|" + e.Stamp + "|" + strings.Repeat("d", map[bool]int{true: 1}[e.Dir])
	}
	return m
}

func fatCheck(t *testing.T, img string) { tooltest.Run(t, "fsck.fat", "-n", img) }

// shrinkCase shrinks the filesystem through a window over an overlay
// of its image to its minimum and slack, and judges the first bytes of
// the overlay as a smaller partition would hold them.
func shrinkCase(t *testing.T, c fsCase, slack int64) {
	img := fixture(t, c.size)
	c.make(t, img)
	want := c.files(t, img)
	hasOwners(t, c.fs, want)
	before := fileHash(t, img)
	ctx := testCtx(t)

	s, err := NewScratch(t.TempDir(), openDev(t, img, false))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := OpenWindow(s.Overlay)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cur, err := Size(ctx, c.fs, w.Path())
	if err != nil {
		t.Fatal(err)
	}
	need, err := MinSize(ctx, c.fs, w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if need <= 0 || need >= cur {
		t.Fatalf("MinSize %d of a %d-byte %s", need, cur, c.fs)
	}
	// Asked for less than the minimum: refused, naming the shortfall.
	var small *TooSmallError
	if _, err := Shrink(ctx, c.fs, w.Path(), need-4096); !errors.As(err, &small) || small.Need-small.Have != 4096 {
		t.Errorf("shrink below the minimum: %v", err)
	}
	target := need + slack
	got, err := Shrink(ctx, c.fs, w.Path(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes, minimum %d, shrunk to %d (asked %d)", c.fs, cur, need, got, target)
	if got > target || got < need-(1<<20) || got >= cur {
		t.Errorf("shrunk to %d bytes, asked %d, minimum %d", got, target, need)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := materialize(t, s, got, got)
	c.check(t, out)
	tooltest.SameManifest(t, want, c.files(t, out), 300)
	sameIdentity(t, img, out)
	if after := fileHash(t, img); after != before {
		t.Error("the image under the overlay changed")
	}
	if n, err := Size(ctx, c.fs, out); err != nil || n != got {
		t.Errorf("the shrunk copy's filesystem is %d bytes (%v), Shrink said %d", n, err, got)
	}
	// And grown back into a partition larger than it ever was.
	growCase(t, c, out, want, c.size*3/2)
}

// hasOwners fails the test unless a filesystem that keeps owners shows
// the ones writeTree set, and times: the comparison would otherwise
// miss them.
func hasOwners(t *testing.T, fs string, m map[string]string) {
	t.Helper()
	if fs != "ext4" && fs != "btrfs" && fs != "xfs" {
		return
	}
	for _, v := range m {
		if strings.Contains(v, "uid=1001 ") && strings.Contains(v, "mtime=2001-") {
			return
		}
	}
	t.Errorf("no entry of the %s shows owner 1001 and a 2001 time", fs)
}

// growCase grows the filesystem in img, copied to the start of a file
// of size bytes, through a window over that file, and judges it.
func growCase(t *testing.T, c fsCase, img string, want map[string]string, size int64) {
	ctx := testCtx(t)
	cur, err := Size(ctx, c.fs, img)
	if err != nil {
		t.Fatal(err)
	}
	out := materialize(t, openDev(t, img, false), cur, size)
	w, err := OpenWindow(openDev(t, out, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := Grow(ctx, c.fs, w.Path(), size)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: grown from %d to %d bytes in %d", c.fs, cur, got, size)
	if got > size || got < size*95/100 {
		t.Errorf("grown to %d bytes in a partition of %d", got, size)
	}
	if n, err := Size(ctx, c.fs, out); err != nil || n != got {
		t.Errorf("the grown filesystem is %d bytes (%v), Grow said %d", n, err, got)
	}
	c.check(t, out)
	tooltest.SameManifest(t, want, c.files(t, out), 300)
	sameIdentity(t, img, out)
}

func TestExt4(t *testing.T) {
	t.Parallel()
	shrinkCase(t, ext4Case, 4<<20)
}

func TestNTFS(t *testing.T) {
	t.Parallel()
	shrinkCase(t, ntfsCase, 4<<20)
}

func TestBtrfs(t *testing.T) {
	t.Parallel()
	shrinkCase(t, btrfsCase, 8<<20)
}

func TestXFSGrows(t *testing.T) {
	t.Parallel()
	img := fixture(t, xfsCase.size)
	xfsCase.make(t, img)
	want := xfsCase.files(t, img)
	hasOwners(t, "xfs", want)
	ctx := testCtx(t)
	if _, err := MinSize(ctx, "xfs", img); !errors.Is(err, ErrCannotShrink) || !strings.Contains(err.Error(), "xfs cannot shrink") {
		t.Errorf("MinSize of an XFS: %v", err)
	}
	if _, err := Shrink(ctx, "xfs", img, 100<<20); !errors.Is(err, ErrCannotShrink) {
		t.Errorf("Shrink of an XFS: %v", err)
	}
	growCase(t, xfsCase, img, want, 600<<20)
}

// TestFAT32 shrinks and grows a FAT32 of 4 KiB clusters: it stays
// FAT32, so it shrinks to 256 MiB and a little at least.
func TestFAT32(t *testing.T) {
	// Not parallel: MakeFAT sets TZ.
	c := fsCase{fs: "fat32", size: 400 << 20, files: fatFiles, check: fatCheck}
	c.make = func(t *testing.T, img string) {
		fat := tooltest.MakeFAT(t, c.size, 300, 2099, "-F", "32", "-s", "8", "-n", "PLATTERFAT", "-i", "1234ABCD")
		if err := os.Rename(fat, img); err != nil {
			t.Fatal(err)
		}
	}
	shrinkCase(t, c, 4<<20)
}

// TestFAT16Refused: libparted 3.5 lost files shrinking a FAT16 (see
// fat_linux.go); FAT16 is refused by name, both ways.
func TestFAT16Refused(t *testing.T) {
	t.Parallel()
	img := fixture(t, 64<<20)
	tooltest.Run(t, "mkfs.fat", "-F", "16", "-s", "4", img)
	ctx := testCtx(t)
	if _, err := MinSize(ctx, "fat16", img); !errors.Is(err, ErrCannotShrink) || !strings.Contains(err.Error(), "loses files") {
		t.Errorf("MinSize: %v", err)
	}
	big := materialize(t, openDev(t, img, false), 64<<20, 96<<20)
	if _, err := Grow(ctx, "fat16", big, 96<<20); !errors.Is(err, ErrCannotGrow) {
		t.Errorf("Grow: %v", err)
	}
}

// TestFATDamagedRefused: a FAT32 fsck.fat would change is not resized.
func TestFATDamagedRefused(t *testing.T) {
	t.Parallel()
	img := fixture(t, 300<<20)
	tooltest.Run(t, "mkfs.fat", "-F", "32", "-s", "8", img)
	// A file whose directory entry names a cluster chain that is free.
	tooltest.Run(t, "mcopy", "-i", img, "/etc/os-release", "::/victim")
	b, err := readFATBoot(img)
	if err != nil {
		t.Fatal(err)
	}
	fatStart := b.reserved * b.bps
	if err := writeAt(img, fatStart+3*4, make([]byte, 4)); err != nil { // cluster 3: the file's
		t.Fatal(err)
	}
	ctx := testCtx(t)
	before := fileHash(t, img)
	_, err = Shrink(ctx, "fat32", img, 280<<20)
	if err == nil || !strings.Contains(err.Error(), "fsck.fat") {
		t.Errorf("Shrink of a damaged FAT: %v", err)
	}
	if fileHash(t, img) != before {
		t.Error("the damaged FAT was changed")
	}
}

// TestFAT32SmallClusters: libparted keeps FAT32 a FAT32 only with
// clusters of 4 KiB or more; mkfs.fat's 512-byte ones are refused by
// name rather than converted to FAT16.
func TestFAT32SmallClusters(t *testing.T) {
	t.Parallel()
	img := fixture(t, 64<<20)
	tooltest.Run(t, "mkfs.fat", "-F", "32", "-s", "1", img)
	ctx := testCtx(t)
	_, err := MinSize(ctx, "fat32", img)
	if !errors.Is(err, ErrCannotShrink) || !strings.Contains(err.Error(), "512 bytes") {
		t.Errorf("MinSize: %v", err)
	}
	big := materialize(t, openDev(t, img, false), 64<<20, 128<<20)
	if _, err := Grow(ctx, "fat32", big, 128<<20); !errors.Is(err, ErrCannotGrow) {
		t.Errorf("Grow: %v", err)
	}
}

// TestF2FSGrows grows an F2FS filled by sload.f2fs (the kernel here has
// no F2FS) and reads its files back with dump.f2fs; shrinking is
// refused.
func TestF2FSGrows(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src, true)
	img := fixture(t, 128<<20)
	tooltest.Run(t, "mkfs.f2fs", "-q", "-f", "-l", "platter-f2fs", img)
	tooltest.Run(t, "sload.f2fs", "-f", src, img)
	ctx := testCtx(t)
	if _, err := MinSize(ctx, "f2fs", img); !errors.Is(err, ErrCannotShrink) {
		t.Errorf("MinSize of an F2FS: %v", err)
	}
	const size = 256 << 20
	out := materialize(t, openDev(t, img, false), 128<<20, size)
	w, err := OpenWindow(openDev(t, out, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := Grow(ctx, "f2fs", w.Path(), size)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got < size*95/100 || got > size {
		t.Errorf("grown to %d bytes of %d", got, size)
	}
	tooltest.F2FSClean(t, out)
	tooltest.SameF2FSFiles(t, out, img, 300, src)
	sameIdentity(t, img, out)
}

// TestSwap makes a swap area again smaller and larger, keeping its
// UUID, label and page size.
func TestSwap(t *testing.T) {
	t.Parallel()
	img := fixture(t, 64<<20)
	tooltest.Run(t, "mkswap", "-L", "platter-swap", "-U", "5a3b2c1d-0e9f-4a8b-b7c6-d5e4f3a2b1c0", img)
	ctx := testCtx(t)
	w, err := OpenWindow(openDev(t, img, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := Shrink(ctx, "swap", w.Path(), 16<<20+100)
	if err != nil || got != 16<<20 {
		t.Fatalf("Shrink: %d, %v", got, err)
	}
	w.Close()
	small := materialize(t, openDev(t, img, false), got, got)
	sameIdentity(t, fixtureSwap(t), small)
	if out := tooltest.Run(t, "swaplabel", small); !strings.Contains(out, "platter-swap") {
		t.Errorf("swaplabel: %s", out)
	}
	big := materialize(t, openDev(t, small, false), got, 100<<20)
	if got, err := Grow(ctx, "swap", big, 100<<20); err != nil || got != 100<<20 {
		t.Errorf("Grow: %d, %v", got, err)
	}
	sameIdentity(t, small, big)
}

// fixtureSwap is a swap area made as TestSwap's was, for blkid.
func fixtureSwap(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "swap")
	os.WriteFile(p, nil, 0o600)
	os.Truncate(p, 1<<20)
	tooltest.Run(t, "mkswap", "-L", "platter-swap", "-U", "5a3b2c1d-0e9f-4a8b-b7c6-d5e4f3a2b1c0", p)
	return p
}

// TestRefusals: what cannot be resized says so with a typed error
// naming the filesystem; a tool that fails is quoted.
func TestRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	img := fixture(t, 32<<20)
	tooltest.Run(t, "mkfs.exfat", "-L", "platterex", img)
	for _, c := range []struct {
		fs  string
		err error
	}{{"exfat", ErrCannotShrink}, {"luks2", ErrCannotShrink}, {"lvm2", ErrCannotShrink}, {"zfs_member", ErrCannotShrink}, {"fat12", ErrCannotShrink}} {
		_, err := MinSize(ctx, c.fs, img)
		if !errors.Is(err, c.err) || !errors.Is(err, ErrCannotResize) || errors.Is(err, ErrCannotGrow) {
			t.Errorf("MinSize %s: %v", c.fs, err)
		}
		_, err = Grow(ctx, c.fs, img, 32<<20)
		if !errors.Is(err, ErrCannotGrow) || !errors.Is(err, ErrCannotResize) {
			t.Errorf("Grow %s: %v", c.fs, err)
		}
	}
	if _, err := Grow(ctx, "exfat", img, 32<<20); err == nil || !strings.Contains(err.Error(), "exfatprogs has no resizer") {
		t.Errorf("exFAT: %v", err)
	}
	// ext4's tools on what is not an ext4: their words in the error.
	_, err := Size(ctx, "ext4", img)
	var te *ToolError
	if !errors.As(err, &te) || te.Tool != "dumpe2fs" || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), "Bad magic number") {
		t.Errorf("Size of an exFAT as ext4: %v", err)
	}
	if _, err := Grow(ctx, "ext4", img, 64<<20); err == nil || !strings.Contains(err.Error(), "holds 33554432") {
		t.Errorf("Grow past the end: %v", err)
	}
	if _, err := exec.LookPath("fatresize"); err != nil {
		t.Errorf("fatresize is needed (Debian's fatresize package): %v", err)
	}
}
