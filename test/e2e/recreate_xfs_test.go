package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// recreateXFSFiles fills the XFS mounted at $1 with what a copy must
// carry: owners, modes (setuid, sticky), hard links across directories,
// symlinks (one dangling), a FIFO, a device node, xattrs in the user,
// trusted and security namespaces, POSIX access and default ACLs, a
// sparse file, and times set with touch -d (directories last, so their
// own times are not changed after).
const recreateXFSFiles = `set -eu
cd "$1"
mkdir -p docs/deep/er shared sticky
head -c 300000 /dev/urandom > docs/random.bin
printf 'hello xfs\n' > docs/hello.txt
for i in $(seq 1 200); do printf 'file %d\n' $i > docs/deep/er/f$i; done
head -c 5000000 /dev/urandom > shared/big
head -c 48000000 /dev/urandom > shared/bulk
ln shared/big docs/big-link
ln docs/hello.txt docs/deep/hello-link
ln -s ../docs/hello.txt shared/hello-sym
ln -s /nowhere/at/all shared/dangling
mkfifo shared/fifo
mknod shared/null c 1 3
truncate -s 64M shared/sparse
printf 'middle' | dd of=shared/sparse bs=1 seek=$((32<<20)) conv=notrunc status=none
printf 'start' | dd of=shared/sparse bs=1 seek=4096 conv=notrunc status=none
chown 1234:5678 docs/hello.txt
chown -h 4321:8765 shared/hello-sym
chown 0:100 shared/big
chmod 0640 docs/hello.txt
chmod 4755 docs/random.bin
chmod 1777 sticky
chmod 0600 shared/fifo
setfattr -n user.colour -v blue docs/hello.txt
setfattr -n user.empty docs/random.bin
setfattr -n trusted.secret -v 0xdeadbeef shared/big
setfattr -n security.platter -v labelled docs/random.bin
setfattr -n user.dir -v yes docs
head -c 3000 /dev/urandom > docs/xattr-big.bin
setfattr -n user.large -v "0x$(head -c 2000 /dev/urandom | od -An -tx1 | tr -d ' \n')" docs/xattr-big.bin
setfacl -m u:1000:rwx,g:2000:r docs/hello.txt
setfacl -d -m u:1001:rx,g:100:rwx docs/deep
setfacl -m u:1002:r-x docs/deep
touch -d '2001-02-03 04:05:06.123456789' docs/hello.txt
touch -a -d '2011-12-13 14:15:16.5' docs/hello.txt
touch -d '1999-12-31 23:59:59' shared/big docs/random.bin shared/sparse
touch -h -d '2005-05-05 05:05:05' shared/hello-sym shared/dangling
touch -d '2010-10-10 10:10:10' shared/fifo shared/null
touch -d '2020-01-01 00:00:00' docs/deep/er docs/deep docs shared sticky .
`

// xfsTreeState is everything a file-by-file copy must keep of the tree
// at root: per path its type, mode, owner, size, link count, which names
// share its inode, device number, symlink target, mtime (and atime for
// files), and content hash; then getfattr's and getfacl's dumps of every
// name and attribute.
func xfsTreeState(t *testing.T, root string) (files map[string]string, xattrs, acls string) {
	t.Helper()
	files = map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		first, ok := inodes[st.Ino]
		if !ok {
			inodes[st.Ino], first = rel, rel
		}
		s := fmt.Sprintf("mode %o uid %d gid %d nlink %d inode-of %s mtime %d.%09d", st.Mode, st.Uid, st.Gid, st.Nlink, first, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" size %d atime %d.%09d sha256 %s", st.Size, st.Atim.Sec, st.Atim.Nsec, hex.EncodeToString(h.Sum(nil)))
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + target
		case syscall.S_IFCHR, syscall.S_IFBLK:
			s += fmt.Sprintf(" rdev %d", st.Rdev)
		}
		files[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dump := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		// One block per file, in the order of the walk, which is the
		// order of the directories' entries: sorted, to compare.
		blocks := strings.Split(strings.TrimSpace(string(out)), "\n\n")
		slices.Sort(blocks)
		return strings.Join(blocks, "\n\n")
	}
	return files, dump("getfattr", "-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."), dump("getfacl", "-R", "-P", "-n", "-p", ".")
}

// xfsGeometryKeys are the geometry and features `xfs_db -c info` prints
// that the new XFS must share with the image's.
var xfsGeometryKeys = regexp.MustCompile(`\b(isize|sectsz|crc|finobt|sparse|rmapbt|reflink|bigtime|inobtcount|nrext64|bsize|ftype|ascii-ci)=\S+?\b`)

func xfsGeometry(t *testing.T, img string) string {
	t.Helper()
	var keys []string
	for _, l := range strings.Split(sh(t, "xfs_db", "-r", "-c", "info", img), "\n") {
		if strings.HasPrefix(l, "realtime") {
			continue
		}
		keys = append(keys, xfsGeometryKeys.FindAllString(l, -1)...)
	}
	return strings.Join(keys, " ")
}

// A GPT disk with an XFS of 1 GiB (rmapbt, 1 KiB inodes, a label, few
// files but of every kind) and an ext4, restored with --layout fit onto a
// disk of 600 MiB: without --recreate-xfs it is refused before anything
// is written, naming the XFS and the flag; --plan shows the XFS
// recreated and writes nothing; with the flag the XFS is made anew,
// smaller, and checks clean with every file, owner, mode, time, xattr,
// ACL, hard link, symlink and hole, the same geometry, UUID and label;
// the ext4 is restored as --layout fit restores it.
func TestLayoutRecreateXFS(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	sh(t, "bash", filepath.Join(fixtures, "files.sh"), tree)
	disk := sizedFile(t, 1200<<20)
	sh(t, "sgdisk", "-n", "1:1M:+1G", "-t", "1:8300", "-c", "1:xfs", "-n", "2:0:+96M", "-t", "2:8300", "-c", "2:ext4", disk)
	src := sfdiskParts(t, disk)
	xfsPart := sizedFile(t, src[1].size)
	sh(t, "mkfs.xfs", "-q", "-f", "-K", "-L", "platterxfs", "-m", "rmapbt=1", "-i", "size=1024", xfsPart)
	mnt, done := tooltest.Mount(t, xfsPart, "")
	sh(t, "bash", "-c", recreateXFSFiles, "files", mnt)
	done()
	extPart := sizedFile(t, src[2].size)
	sh(t, "mkfs.ext4", "-q", "-F", "-L", "platterext", "-d", tree, extPart)
	for n, p := range map[int]string{1: xfsPart, 2: extPart} {
		sh(t, "dd", "if="+p, "of="+disk, "bs=1M", "seek="+strconv.FormatInt(src[n].start>>20, 10), "conv=notrunc,sparse", "status=none")
	}
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)

	// The source's state, read from its own partition mounted read-only.
	srcMnt, srcDone := tooltest.Mount(t, xfsPart, "ro,nouuid")
	wantFiles, wantXattrs, wantACLs := xfsTreeState(t, srcMnt)
	srcDone()
	for _, s := range []string{"trusted.secret", "security.platter", "user.colour", "system.posix_acl_default"} {
		if !strings.Contains(wantXattrs, s) {
			t.Fatalf("the fixture has no %s:\n%s", s, wantXattrs)
		}
	}

	t.Run("file", func(t *testing.T) {
		target := sizedFile(t, 600<<20)
		untouched := func(what string) {
			t.Helper()
			var st syscall.Stat_t
			if err := syscall.Stat(target, &st); err != nil || st.Blocks != 0 {
				t.Errorf("%s wrote to the target (%d blocks allocated)", what, st.Blocks)
			}
		}
		_, stderr, code := run(t, "restore", "--progress", "none", "--layout", "fit", img, target)
		if code == 0 || !strings.Contains(stderr, "partition 1 (xfs)") || !strings.Contains(stderr, "--recreate-xfs") || !strings.Contains(stderr, "bytes too small") {
			t.Errorf("fit without --recreate-xfs: exit %d, %q; want a refusal naming the XFS partition and --recreate-xfs", code, stderr)
		}
		untouched("the refused restore")
		_, stderr, code = run(t, "restore", "--progress", "none", "--layout", "grow", "--recreate-xfs", img, target)
		if code != 2 || !strings.Contains(stderr, "--recreate-xfs goes with --layout fit") {
			t.Errorf("--recreate-xfs with grow: exit %d, %q", code, stderr)
		}
		plan := ok(t, "restore", "--plan", "--layout", "fit", "--recreate-xfs", img, target)
		if !regexp.MustCompile(`partition 1 \(xfs\): start 1048576 -> 1048576, size 1\.0 GiB -> [0-9.]+ MiB: filesystem recreated file by file`).MatchString(plan) {
			t.Errorf("--plan does not show the XFS recreated:\n%s", plan)
		}
		untouched("--plan")

		ok(t, "restore", "--progress", "none", "--layout", "fit", "--recreate-xfs", img, target)
		checkRecreated(t, disk, target, src, tree, 512)
		if xfsGeometry(t, xfsPart) != xfsGeometry(t, extract(t, target, sfdiskParts(t, target)[1])) {
			t.Errorf("the new XFS's geometry differs:\n%s\n---\n%s", xfsGeometry(t, xfsPart), xfsGeometry(t, extract(t, target, sfdiskParts(t, target)[1])))
		}
		x := extract(t, target, sfdiskParts(t, target)[1])
		newMnt, newDone := tooltest.Mount(t, x, "ro,nouuid")
		gotFiles, gotXattrs, gotACLs := xfsTreeState(t, newMnt)
		sameXFSState(t, wantFiles, gotFiles, wantXattrs, gotXattrs, wantACLs, gotACLs)
		if du := sh(t, "du", "-B1", filepath.Join(newMnt, "shared/sparse")); !regexp.MustCompile(`^\d{1,6}\s`).MatchString(du) {
			t.Errorf("the sparse file of 64 MiB is no longer sparse: du says %s", du)
		}
		newDone()
	})

	// clone --layout fit takes the flag too: the XFS made anew from the
	// source disk (on the scratch overlay), the source never written.
	t.Run("clone", func(t *testing.T) {
		target := sizedFile(t, 600<<20)
		before := sh(t, "sha256sum", disk)
		if _, stderr, code := run(t, "clone", "--progress", "none", "--layout", "fit", disk, target); code == 0 || !strings.Contains(stderr, "--recreate-xfs") {
			t.Errorf("clone fit without --recreate-xfs: exit %d, %q", code, stderr)
		}
		ok(t, "clone", "--progress", "none", "--layout", "fit", "--recreate-xfs", disk, target)
		checkRecreated(t, disk, target, src, tree, 512)
		x := extract(t, target, sfdiskParts(t, target)[1])
		newMnt, newDone := tooltest.Mount(t, x, "ro,nouuid")
		gotFiles, gotXattrs, gotACLs := xfsTreeState(t, newMnt)
		sameXFSState(t, wantFiles, gotFiles, wantXattrs, gotXattrs, wantACLs, gotACLs)
		newDone()
		if after := sh(t, "sha256sum", disk); after != before {
			t.Errorf("clone wrote to its source")
		}
	})

	// A block device of 4096-byte sectors: the table in its sectors, the
	// new XFS made with 4096-byte sectors (it cannot have less).
	t.Run("4Kn device", func(t *testing.T) {
		file := sizedFile(t, 600<<20)
		dev := loop(t, file, "-b", "4096")
		ok(t, "restore", "--yes", "--progress", "none", "--layout", "fit", "--recreate-xfs", img, dev)
		checkRecreated(t, disk, file, src, tree, 4096)
		x := extract(t, file, sfdiskParts(t, dev)[1])
		if g := xfsGeometry(t, x); !strings.Contains(g, "sectsz=4096") {
			t.Errorf("the new XFS on a 4Kn disk: %s", g)
		}
		newMnt, _ := tooltest.Mount(t, x, "ro,nouuid")
		gotFiles, gotXattrs, gotACLs := xfsTreeState(t, newMnt)
		sameXFSState(t, wantFiles, gotFiles, wantXattrs, gotXattrs, wantACLs, gotACLs)
	})

	// Ctrl-C while the files are copied into the new XFS: nothing is left
	// mounted or attached, and the temporary directory is empty.
	t.Run("interrupted", func(t *testing.T) {
		target := sizedFile(t, 600<<20)
		tmp := t.TempDir()
		cmd := exec.Command(platter, "restore", "--progress", "none", "--layout", "fit", "--recreate-xfs", img, target)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Both XFSs mounted: the copy is under way.
		deadline := time.Now().Add(60 * time.Second)
		for xfsMountsUnder(t, tmp) < 2 {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the two XFSs were not mounted under TMPDIR within 60 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err == nil {
			t.Fatalf("the restore finished despite Ctrl-C:\n%s", stderr.String())
		}
		if mountedUnder(t, tmp) {
			t.Errorf("a mount under %s is left after Ctrl-C", tmp)
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("left in TMPDIR after Ctrl-C: %v", left)
		}
		if loopOver(target) {
			t.Errorf("a loop device is left on the target:\n%s", sh(t, "losetup", "-a"))
		}
	})
}

// xfsMountsUnder counts the XFSs mounted below dir.
func xfsMountsUnder(t *testing.T, dir string) int {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && strings.HasPrefix(f[1], dir+"/") && f[2] == "xfs" {
			n++
		}
	}
	return n
}

// loopOver says whether a loop device is attached over file.
func loopOver(file string) bool {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == file {
			return true
		}
	}
	return false
}

// checkRecreated checks the disk restored from src onto target (a file;
// its sectors sector bytes): the table verifies and keeps every GUID and
// name, the XFS is smaller, at least 300 MiB, fills its partition and
// checks clean, with the UUID and label it had; the ext4 checks clean
// with its files, UUID and label; no loop device is left.
func checkRecreated(t *testing.T, disk, target string, src map[int]part, tree string, sector int64) {
	t.Helper()
	if sector == 512 {
		if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v:\n%s", out)
		}
	}
	dev := target
	if sector != 512 {
		dev = loop(t, target, "-b", strconv.FormatInt(sector, 10))
	}
	parts := sfdiskParts(t, dev)
	if parts[1].size >= src[1].size || parts[1].size < 300<<20 {
		t.Errorf("the XFS partition is %d bytes; want smaller than %d and at least mkfs.xfs's 300 MiB", parts[1].size, src[1].size)
	}
	if sector == 512 {
		for n := range src {
			if a, b := gptFields(t, disk, n), gptFields(t, target, n); a != b {
				t.Errorf("partition %d: sgdisk -i differs:\n%s\n---\n%s", n, a, b)
			}
		}
	}
	x := extract(t, target, parts[1])
	xfsRepairClean(t, x)
	if dblocks, bs, _, _ := xfsCounts(t, x); dblocks*bs < parts[1].size*95/100 {
		t.Errorf("the new XFS is %d bytes in a %d-byte partition", dblocks*bs, parts[1].size)
	}
	e := extract(t, target, parts[2])
	for n, p := range map[int]string{1: x, 2: e} {
		was := extract(t, disk, src[n])
		for _, tag := range []string{"UUID", "LABEL"} {
			if a, b := blkidTag(t, was, tag), blkidTag(t, p, tag); a != b || a == "" {
				t.Errorf("partition %d: %s %q, was %q", n, tag, b, a)
			}
		}
	}
	sh(t, "e2fsck", "-fn", e)
	sameTree(t, tree, extTree(t, e))
	if loopOver(target) && sector == 512 {
		t.Errorf("a loop device is left on the target:\n%s", sh(t, "losetup", "-a"))
	}
}

// sameXFSState fails the test unless the two states of xfsTreeState are
// the same.
func sameXFSState(t *testing.T, wantFiles, gotFiles map[string]string, wantXattrs, gotXattrs, wantACLs, gotACLs string) {
	t.Helper()
	for p, want := range wantFiles {
		if got := gotFiles[p]; got != want {
			t.Errorf("%s:\n got %s\nwant %s", p, got, want)
		}
	}
	for p := range gotFiles {
		if _, ok := wantFiles[p]; !ok {
			t.Errorf("%s: not in the image's XFS", p)
		}
	}
	if gotXattrs != wantXattrs {
		t.Errorf("getfattr differs:\n%s\n---\n%s", gotXattrs, wantXattrs)
	}
	if gotACLs != wantACLs {
		t.Errorf("getfacl differs:\n%s\n---\n%s", gotACLs, wantACLs)
	}
}
