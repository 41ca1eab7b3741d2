//go:build linux

package resize

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

var xfsInfoKeys = regexp.MustCompile(`\b(isize|sectsz|crc|finobt|sparse|rmapbt|reflink|bigtime|inobtcount|nrext64|bsize|ftype|ascii-ci)=\S+?\b`)

// xfsInfoLine is the geometry and features xfs_db reports of img, the
// sizes and counts that depend on the filesystem's size left out.
func xfsInfoLine(t *testing.T, img string) string {
	var keys []string
	for _, l := range strings.Split(tooltest.Run(t, "xfs_db", "-r", "-c", "info", img), "\n") {
		if !strings.HasPrefix(l, "realtime") {
			keys = append(keys, xfsInfoKeys.FindAllString(l, -1)...)
		}
	}
	return strings.Join(keys, " ")
}

// xfsInodeFlags is what xfs_io says of the flags, project ID and extent
// size hint of a few names in the XFS in img; of proj/inherits, its
// project ID only (its extent size hint, inherited from proj, is a
// file's, which XFS does not let be set once the file has data).
func xfsInodeFlags(t *testing.T, img string) string {
	mnt, umount := tooltest.Mount(t, img, "ro,nouuid")
	defer umount()
	var out []string
	for _, p := range []string{"proj", "proj/inherits", "sizes/s3.bin", "private/key", "many", "bin/tool"} {
		s := tooltest.Run(t, "xfs_io", "-r", "-c", "stat", "-c", "lsproj", filepath.Join(mnt, p))
		for _, l := range strings.Split(s, "\n") {
			if p == "proj/inherits" && !strings.HasPrefix(l, "projid") {
				continue
			}
			if strings.HasPrefix(l, "fsxattr.xflags") || strings.HasPrefix(l, "fsxattr.projid") || strings.HasPrefix(l, "fsxattr.extsize") || strings.HasPrefix(l, "projid") {
				out = append(out, p+": "+strings.TrimSpace(l))
			}
		}
	}
	return strings.Join(out, "\n")
}

// An XFS of 1 GiB with an unusual geometry (4 KiB sectors, 1 KiB
// inodes, 8 KiB directory blocks, rmapbt without reflink; chattr flags,
// a project ID and extent size hint on a directory), shut down
// with its last file in the log only, recreated in the middle of a
// larger file with 4 KiB sectors: the new one has the same geometry,
// UUID and label, checks clean, holds the same files as the source
// mounted by the kernel (the log recovered: the last file is there), and
// nothing outside its range was written. A size below mkfs.xfs's
// smallest is refused.
func TestRecreateXFS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	src := fixture(t, 1<<30)
	tooltest.Run(t, "mkfs.xfs", "-q", "-f", "-K", "-L", "odd-xfs", "-s", "size=4096", "-i", "size=1024",
		"-n", "size=8192", "-m", "rmapbt=1,reflink=0", src)
	mnt, umount := tooltest.Mount(t, src, "rw")
	writeTree(t, mnt, true)
	// Inode flags, project IDs and a directory's extent size hint, which
	// rsync does not carry.
	tooltest.Run(t, "mkdir", filepath.Join(mnt, "proj"))
	tooltest.Run(t, "xfs_io", "-c", "chproj 42", "-c", "chattr +P", "-c", "extsize 1m", filepath.Join(mnt, "proj"))
	tooltest.Run(t, "cp", filepath.Join(mnt, "bin/tool"), filepath.Join(mnt, "proj/inherits"))
	tooltest.Run(t, "chattr", "+d", "+A", filepath.Join(mnt, "sizes/s3.bin"))
	tooltest.Run(t, "chattr", "+i", filepath.Join(mnt, "private/key"))
	tooltest.Run(t, "chattr", "+a", filepath.Join(mnt, "many"))
	// Written last, then the filesystem shut down: these are in its log
	// only.
	if err := os.WriteFile(filepath.Join(mnt, "late"), bytes.Repeat([]byte("late "), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "xfs_io", "-x", "-c", "shutdown -f", mnt)
	umount()
	if _, err := execOut("xfs_repair", "-n", src); err == nil {
		t.Fatal("the shut-down XFS checks clean: its log holds nothing")
	}

	need, err := XFSCopyMin(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if need < xfsMinSize || need > 600<<20 {
		t.Errorf("XFSCopyMin = %d; want at least mkfs.xfs's 300 MiB and well below the 1 GiB it was", need)
	}
	want := kernelFiles("xfs", "nouuid")(t, materialize(t, openDev(t, src, false), 1<<30, 1<<30))
	if _, ok := want["late"]; !ok {
		t.Fatal("the file in the log is not in the source as the kernel mounts it")
	}

	const off = 64 << 20
	dst := fixture(t, 1<<30)
	head := func() []byte {
		b := make([]byte, off)
		if _, err := openDev(t, dst, false).ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := head()
	size := (need + 4095) / 4096 * 4096
	if err := RecreateXFS(ctx, src, dst, off, size, 4096); err != nil {
		t.Fatal(err)
	}
	if l := loopsOf(dst); len(l) > 0 {
		t.Errorf("loop devices left on the target: %v", l)
	}
	d := openDev(t, dst, false)
	x := materialize(t, io.NewSectionReader(d, off, size), size, size)
	tooltest.Run(t, "xfs_repair", "-n", x)
	if a, b := xfsInfoLine(t, src), xfsInfoLine(t, x); a != b {
		t.Errorf("geometry differs:\n%s\n---\n%s", a, b)
	}
	sameIdentity(t, src, x)
	got := kernelFiles("xfs", "nouuid")(t, x)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q", p, got[p], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d names, want %d", len(got), len(want))
	}
	if a := xfsInodeFlags(t, src); !strings.Contains(a, "proj: fsxattr.projid = 42") || !strings.Contains(a, "proj: fsxattr.extsize = 1048576") ||
		!strings.Contains(a, "private/key: fsxattr.xflags = 0x80000008 ") || !strings.Contains(a, "proj/inherits: projid = 42") {
		t.Errorf("the source's flags are not what the test set:\n%s", a)
	}
	if a, b := xfsInodeFlags(t, src), xfsInodeFlags(t, x); a != b {
		t.Errorf("inode flags, project IDs, extent size hints differ:\n%s\n---\n%s", b, a)
	}
	// Outside [off, off+size): as it was.
	tail := io.NewSectionReader(d, off+size, 1<<30-off-size)
	if b, err := io.ReadAll(tail); err != nil || !bytes.Equal(b, make([]byte, len(b))) {
		t.Errorf("bytes after the new XFS were written (%v)", err)
	}
	if !bytes.Equal(head(), before) {
		t.Error("bytes before the new XFS were written")
	}

	var small *TooSmallError
	if err := RecreateXFS(ctx, src, dst, off, 200<<20, 512); !errors.As(err, &small) || small.Need != xfsMinSize {
		t.Errorf("RecreateXFS at 200 MiB: %v, want a TooSmallError naming 300 MiB", err)
	}
}

// mkfs.xfs options from xfs_db's report of a V5 and a V4 XFS, and the
// XFSs a copy cannot make again.
func TestXFSInfoArgs(t *testing.T) {
	v5 := `meta-data=/dev/loop3             isize=1024   agcount=4, agsize=65536 blks
         =                       sectsz=4096  attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=1
         =                       reflink=0    bigtime=1 inobtcount=1 nrext64=0
data     =                       bsize=4096   blocks=262144, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=8192   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=4096  sunit=1 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
`
	x := parseXFSInfo(v5)
	if err := x.recreatable(); err != nil {
		t.Error(err)
	}
	want := "-b size=4096 -s size=4096 -i size=1024,sparse=1,nrext64=0 -m crc=1,finobt=1,rmapbt=1,reflink=0,bigtime=1,inobtcount=1 -n size=8192"
	if got := strings.Join(x.mkfsArgs(512), " "); got != want {
		t.Errorf("V5:\n got %s\nwant %s", got, want)
	}
	v4 := strings.NewReplacer("crc=1", "crc=0", "finobt=1", "finobt=0", "sparse=1", "sparse=0", "rmapbt=1", "rmapbt=0", "bigtime=1", "bigtime=0",
		"inobtcount=1", "inobtcount=0", "isize=1024", "isize=256", "sectsz=4096", "sectsz=512", "ftype=1", "ftype=0", "ascii-ci=0", "ascii-ci=1").Replace(v5)
	want = "-b size=4096 -s size=4096 -i size=256,sparse=0,nrext64=0,projid32bit=1 -m crc=0,finobt=0,rmapbt=0,reflink=0,bigtime=0,inobtcount=0 -n size=8192,ftype=0,ascii-ci=1 -l lazy-count=1"
	if got := strings.Join(parseXFSInfo(v4).mkfsArgs(4096), " "); got != want {
		t.Errorf("V4 onto 4096-byte sectors:\n got %s\nwant %s", got, want)
	}
	for _, c := range []struct{ from, to string }{
		{"log      =internal log", "log      =/dev/sdb1             "},
		{"realtime =none                ", "realtime =/dev/sdc1             "},
	} {
		err := parseXFSInfo(strings.Replace(v5, c.from, c.to, 1)).recreatable()
		if !errors.Is(err, ErrCannotShrink) || !strings.Contains(err.Error(), "/dev/sd") {
			t.Errorf("%s: %v, want a refusal naming the device", c.to, err)
		}
	}
}
