package xfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func detectFile(t testing.TB, p string) (*block.Usage, error) {
	return tooltest.DetectFile(t, p, Detect)
}

// small lets mkfs.xfs make filesystems under 300 MiB, as xfstests does.
func small(t testing.TB) {
	for _, k := range []string{"TEST_DIR", "TEST_DEV", "QA_CHECK_FS"} {
		t.Setenv(k, "1")
	}
}

// mkfs makes an XFS filesystem over size bytes of random data (the free
// space of a used disk), without discarding it (-K).
func mkfs(t testing.TB, size int64, args ...string) string {
	t.Helper()
	small(t)
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-K"}, args...), p)...)
	return p
}

// mount mounts img through a loop device with opts and returns the mount
// point and a func that unmounts it (also run when the test ends).
var mount = tooltest.Mount

// write fills the mounted filesystem at mnt: tooltest's files, many small
// files in many directories with some deleted, two files written in
// turns (fragmented), a large deleted file, and with reflink a shared
// copy partly rewritten.
func write(t testing.TB, mnt string, reflink bool) {
	t.Helper()
	tooltest.Run(t, "cp", "-r", tooltest.Files(t)+"/.", mnt)
	for d := range 12 {
		dir := filepath.Join(mnt, "many", fmt.Sprintf("d%02d", d))
		os.MkdirAll(dir, 0o755)
		for i := range 30 {
			n := (d*30 + i) * 1237 % 40000
			b := bytes.Repeat([]byte{byte(d), byte(i), 'x'}, n/3+1)[:n]
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				os.Remove(filepath.Join(dir, fmt.Sprintf("f%02d", i-1)))
			}
		}
	}
	os.RemoveAll(filepath.Join(mnt, "many", "d05"))
	// Hundreds of holes in one AG: free-space B-trees of more than one
	// level.
	holes := filepath.Join(mnt, "holes")
	os.Mkdir(holes, 0o755)
	for i := range 1200 {
		os.WriteFile(filepath.Join(holes, strconv.Itoa(i)), bytes.Repeat([]byte{byte(i)}, 3000+i%2*2000), 0o644)
	}
	tooltest.Run(t, "sync")
	for i := 0; i < 1200; i += 2 {
		os.Remove(filepath.Join(holes, strconv.Itoa(i)))
	}
	a, _ := os.Create(filepath.Join(mnt, "frag-a"))
	b, _ := os.Create(filepath.Join(mnt, "frag-b"))
	piece := make([]byte, 16<<10)
	for i := range 40 {
		for j := range piece {
			piece[j] = byte(i*j + 1)
		}
		a.Write(piece)
		a.Sync()
		b.Write(piece[:8<<10])
		b.Sync()
	}
	a.Close()
	b.Close()
	os.WriteFile(filepath.Join(mnt, "gone"), bytes.Repeat([]byte("gone"), 2<<20), 0o644)
	tooltest.Run(t, "sync")
	os.Remove(filepath.Join(mnt, "gone"))
	os.Symlink("many/d00/f01", filepath.Join(mnt, "link"))
	if reflink {
		tooltest.Run(t, "cp", "--reflink=always", filepath.Join(mnt, "frag-a"), filepath.Join(mnt, "frag-a.clone"))
		f, err := os.OpenFile(filepath.Join(mnt, "frag-a.clone"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("rewritten after the clone"), 100<<10)
		f.Close()
	}
	tooltest.Run(t, "sync")
}

// populate writes files into img through the kernel and returns a copy
// of its tree.
func populate(t *testing.T, img string, reflink bool) string {
	t.Helper()
	mnt, umount := mount(t, img, "rw")
	write(t, mnt, reflink)
	ref := t.TempDir()
	tooltest.Run(t, "cp", "-a", mnt+"/.", ref)
	umount()
	return ref
}

// mkfsWith makes a filesystem holding the files write makes, through a
// prototype file (mkfs.xfs -p): for v4 filesystems, which this kernel
// (without CONFIG_XFS_SUPPORT_V4) does not mount. It returns the image
// and the tree it holds.
func mkfsWith(t *testing.T, size int64, args ...string) (img, tree string) {
	t.Helper()
	tree = t.TempDir()
	write(t, tree, false)
	return mkfs(t, size, append(args, "-p", tooltest.XFSProto(t, tree))...), tree
}

// inMap fails the test unless every block of every file of tree, as
// xfs_db maps it in img, is used in m.
func inMap(t *testing.T, img, tree string, m *block.Map) {
	t.Helper()
	for _, e := range tooltest.XFSFileExtents(t, img, tree, 10) {
		var covered int64
		m.Runs(e.Off, e.Len, func(r block.Extent) { covered += r.Len })
		if covered != e.Len {
			t.Fatalf("the map has %d of the %d bytes of a file at %d-%d", covered, e.Len, e.Off, e.End()-1)
		}
	}
}

// xfsDB runs xfs_db -r with commands and returns the "name = value"
// fields it printed (the last of each name).
func xfsDB(t testing.TB, img string, cmds ...string) map[string]int64 {
	t.Helper()
	args := []string{"-r"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := tooltest.Run(t, "xfs_db", append(args, img)...)
	fields := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^(\w+) = (\d+)`).FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		fields[m[1]] = v
	}
	return fields
}

// counts is what xfs_db says of a filesystem's blocks: its size and
// block size, the free blocks its AGFs count and the blocks on their
// free lists.
func counts(t testing.TB, img string) (dblocks, blockSize, free, agfl int64) {
	sb := xfsDB(t, img, "sb 0", "p dblocks blocksize agcount")
	for ag := range sb["agcount"] {
		a := xfsDB(t, img, fmt.Sprintf("agf %d", ag), "p freeblks flcount")
		free += a["freeblks"]
		agfl += a["flcount"]
	}
	return sb["dblocks"], sb["blocksize"], free, agfl
}

// levels is the height of the highest bnobt of img.
func levels(t testing.TB, img string) int64 {
	h := int64(0)
	for ag := range xfsDB(t, img, "sb 0", "p agcount")["agcount"] {
		h = max(h, xfsDB(t, img, fmt.Sprintf("agf %d", ag), "p bnolevel")["bnolevel"])
	}
	return h
}

// repairClean runs xfs_repair -n and fails the test if it finds anything.
func repairClean(t testing.TB, img string) {
	t.Helper()
	if out, err := exec.Command("xfs_repair", "-n", img).CombinedOutput(); err != nil {
		t.Fatalf("xfs_repair -n %s: %v\n%s", img, err, out)
	}
}

// layouts are the mkfs.xfs layouts tested; v4 ones are filled at mkfs
// time (mkfsWith), the others through the kernel.
var layouts = []struct {
	name     string
	size     int64
	args     []string
	v4, deep bool // deep: the holes make B-trees of two levels or more
}{
	{"v5 defaults", 128 << 20, nil, false, true},
	{"rmapbt", 128 << 20, []string{"-m", "reflink=1,rmapbt=1"}, false, false},
	{"1k blocks", 96 << 20, []string{"-b", "size=1024"}, false, true},
	{"4k sectors", 128 << 20, []string{"-s", "size=4096"}, false, true},
	{"64k blocks", 256 << 20, []string{"-b", "size=65536"}, false, false},
	{"v4", 128 << 20, []string{"-m", "crc=0"}, true, false},
	{"v4 512-byte blocks, no lazy count", 64 << 20, []string{"-m", "crc=0", "-b", "size=512", "-l", "lazy-count=0"}, true, false},
}

// The used blocks of XFS filesystems of every layout are the blocks not
// in their free-space B-trees: exactly what their AGFs count as not free,
// partclone's used blocks plus the AGFL blocks (which partclone counts
// free). Keeping only them (the rest zero) leaves a filesystem
// xfs_repair finds clean, with every file (read through the kernel; on
// v4, every block xfs_db maps to a file is kept).
func TestAgainstPartclone(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			var img, ref string
			if l.v4 {
				img, ref = mkfsWith(t, l.size, l.args...)
			} else {
				img = mkfs(t, l.size, l.args...)
				ref = populate(t, img, true)
			}
			u, err := detectFile(t, img)
			if err != nil {
				t.Fatal(err)
			}
			if u.Untrusted || u.Warning != "" || u.FS != "xfs" {
				t.Fatalf("%s: untrusted %v, warning %q", u.FS, u.Untrusted, u.Warning)
			}
			m := tooltest.LoadUsage(t, u)
			dblocks, bs, free, agfl := counts(t, img)
			if l.deep && levels(t, img) < 2 {
				t.Error("no free-space B-tree of more than one level")
			}
			if u.BlockSize() != bs {
				t.Errorf("block size %d, xfs_db says %d", u.BlockSize(), bs)
			}
			if want := (dblocks - free) * bs; m.UsedBytes() != want {
				t.Errorf("used %d bytes, the AGFs count %d (%d blocks of %d, %d free)", m.UsedBytes(), want, dblocks, bs, free)
			}
			extra := tooltest.CompareWithPartclone(t, "partclone.xfs", img, m)
			if extra != agfl*bs {
				t.Errorf("%d bytes more than partclone, want the %d AGFL blocks", extra, agfl)
			}
			kept := tooltest.KeepOnly(t, img, m)
			repairClean(t, kept)
			if l.v4 {
				inMap(t, img, ref, m)
				return
			}
			mnt, _ := mount(t, kept, "ro")
			tooltest.SameTree(t, ref, mnt)
		})
	}
}

func TestNotXFS(t *testing.T) {
	zeros := tooltest.Garbage(t, 4<<20)
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	fat := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.fat", fat)
	ext := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", ext)
	tiny := filepath.Join(t.TempDir(), "tiny")
	os.WriteFile(tiny, []byte("XFSB"), 0o644)
	for name, p := range map[string]string{"zeros": zeros, "random": tooltest.Garbage(t, 1<<20), "fat": fat, "ext4": ext, "tiny": tiny} {
		if _, err := detectFile(t, p); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want ErrNotMine", name, err)
		}
	}
}

// A superblock that cannot describe the bytes given is recognised but
// unreadable: a CorruptError with the offset of the field.
func TestCorruptSuperblock(t *testing.T) {
	img := mkfs(t, 64<<20)
	b, _ := os.ReadFile(img)
	for _, tc := range []struct {
		name string
		b    []byte
		off  int64
	}{
		{"truncated", b[:32<<20], sbDBlocks},
		{"block size", patched(b, sbBlockSize, 0, 0, 0x30, 0), sbBlockSize},
		{"AG count", patched(b, sbAGCount, 0, 0, 0, 0), sbDBlocks},
		{"version", patched(b, sbVersion+1, 0xb3), sbVersion},
		{"log outside its AG", patched(b, sbLogBlocks, 0x7f, 0, 0, 0), sbLogStart},
	} {
		p := filepath.Join(t.TempDir(), "bad")
		os.WriteFile(p, tc.b, 0o644)
		var ce *block.CorruptError
		if _, err := detectFile(t, p); !errors.As(err, &ce) || ce.Off != tc.off {
			t.Errorf("%s: %v, want a CorruptError at byte %d", tc.name, err, tc.off)
		}
	}
}

// A filesystem whose log is on another device cannot say whether that
// log holds changes: untrusted (partclone refuses it outright).
func TestExternalLog(t *testing.T) {
	logdev := tooltest.Garbage(t, 16<<20)
	img := mkfs(t, 64<<20, "-l", "logdev="+logdev+",size=10m")
	u, err := detectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Untrusted || !strings.Contains(u.Warning, "keeps its log on another device") {
		t.Errorf("untrusted %v, warning %q", u.Untrusted, u.Warning)
	}
}

// Identity gives the label and UUID blkid reads.
func TestIdentity(t *testing.T) {
	img := mkfs(t, 64<<20, "-L", "twelve-chars")
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	label, uuid, err := Identity(f)
	if err != nil || label != tooltest.Blkid(t, img, "LABEL") || uuid != tooltest.Blkid(t, img, "UUID") || label != "twelve-chars" {
		t.Errorf("label %q, UUID %q, %v; blkid: %q, %q", label, uuid, err, tooltest.Blkid(t, img, "LABEL"), tooltest.Blkid(t, img, "UUID"))
	}
	if _, _, err := Identity(bytes.NewReader(make([]byte, 4096))); !errors.Is(err, block.ErrNotMine) {
		t.Errorf("zeros: %v", err)
	}
}

// patched is a copy of b with bytes p written at off.
func patched(b []byte, off int, p ...byte) []byte {
	c := bytes.Clone(b)
	copy(c[off:], p)
	return c
}

// Damage xfs_repair finds, made with xfs_db, makes the filesystem
// untrusted: every block used, and a warning that says why.
func TestDamaged(t *testing.T) {
	v5 := mkfs(t, 128<<20, "-m", "rmapbt=1")
	populate(t, v5, true)
	v4, _ := mkfsWith(t, 128<<20, "-m", "crc=0")
	free2 := xfsDB(t, v5, "agf 2", "p freeblks")["freeblks"]
	fd := xfsDB(t, v5, "sb 0", "p fdblocks")["fdblocks"]
	for _, tc := range []struct {
		name, img string
		cmds      []string
		want      string
	}{
		{"AGF checksum", v5, []string{"agf 1", "fuzz -c crc add"}, "AG 1's AGF fails its checksum"},
		{"bnobt checksum", v5, []string{"agf 0", "addr bnoroot", "fuzz -c crc add"}, "bnobt block 1 fails its checksum"},
		{"cntbt checksum", v5, []string{"agf 3", "addr cntroot", "fuzz -c crc add"}, "cntbt block 2 fails its checksum"},
		{"AGF free count", v5, []string{"agf 2", fmt.Sprintf("write -d freeblks %d", free2-1)}, "the AGF counts"},
		{"superblock free count", v5, []string{"sb 0", fmt.Sprintf("write -d fdblocks %d", fd+5)}, "superblock counts"},
		{"AGFL count", v5, []string{"agf 1", "write -d flcount 1"}, "AG 1's AGFL does not hold"},
		{"needs repair", v5, []string{"sb 0", "write -d features_incompat 0x1b"}, "needing repair"},
		{"AGF written after the log", v5, []string{"agf 1", "write -d lsn 0x7fff000000000000"}, "AG 1's AGF was written at log sequence number 2147418112:0, after the log's last record"},
		{"v4 cntbt record", v4, []string{"agf 0", "addr cntroot", "write recs[1].blockcount 3"}, "free space disagrees with itself"},
		{"v4 bnobt record over the headers", v4, []string{"agf 1", "addr bnoroot", "write recs[1].startblock 0"}, "not inside the AG"},
		{"v4 superblock free count", v4, []string{"sb 0", "write fdblocks 7"}, "superblock counts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "damaged.img")
			tooltest.Run(t, "cp", "--sparse=always", tc.img, img)
			args := []string{"-x"}
			for _, c := range tc.cmds {
				args = append(args, "-c", c)
			}
			tooltest.Run(t, "xfs_db", append(args, img)...)
			if out, err := exec.Command("xfs_repair", "-n", img).CombinedOutput(); err == nil {
				t.Fatalf("xfs_repair -n finds nothing wrong:\n%s", out)
			}
			u, err := detectFile(t, img)
			if err != nil {
				t.Fatal(err)
			}
			n, err := u.UsedBytes()
			if err != nil {
				t.Fatal(err)
			}
			if !u.Untrusted || n != u.Len() || !strings.Contains(u.Warning, tc.want) || !strings.HasPrefix(u.Warning, "xfs ") {
				t.Errorf("untrusted %v, %d of %d bytes used, warning %q; want %q", u.Untrusted, n, u.Len(), u.Warning, tc.want)
			}
			t.Log(u.Warning)
		})
	}
}

// logprint returns the head and tail of img's log as xfs_logprint sees
// them, and whether it calls the log clean.
func logprint(t testing.TB, img string) (head, tail int64, clean bool) {
	t.Helper()
	out := tooltest.Run(t, "xfs_logprint", "-t", img)
	m := regexp.MustCompile(`log tail: (\d+) head: (\d+) state: <(\w+)>`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("xfs_logprint -t:\n%s", out)
	}
	tail, _ = strconv.ParseInt(m[1], 10, 64)
	head, _ = strconv.ParseInt(m[2], 10, 64)
	return head, tail, m[3] == "CLEAN"
}

// headTail is our reading of img's log, and the cycle its first block
// was last written in (more than 1: it has wrapped).
func headTail(t testing.TB, img string) (head, tail int64, cycle uint32) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 512)
	f.ReadAt(sb, 0)
	st, _ := f.Stat()
	x, err := parseSuper(sb, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	x.r = f
	l := &xlog{f: x, off: x.logStart * x.blockSize, bbs: x.logBlocks * x.blockSize / bbSize, winAt: -1}
	head, tail, err = l.findTail()
	if err == nil {
		cycle, err = l.cycle(0)
	}
	if err != nil {
		t.Fatal(err)
	}
	return head, tail, cycle
}

// copyFile copies the file behind a mounted loop device as it is now on
// its device (the loop driver writes through the file's page cache).
func copyFile(t testing.TB, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "copy.img")
	tooltest.Run(t, "cp", "--sparse=always", src, p)
	return p
}

// The log decides: a cleanly unmounted filesystem is trusted; one copied
// while mounted after a sync (its metadata changes only in the log), or
// shut down without writing its log home, is not; one copied while
// frozen is, although xfs_repair -n and xfs_logprint call its log dirty:
// it holds nothing but the superblock, and keeping only the used blocks
// gives a filesystem that mounts (replaying its log) with every file.
// Every log's head and tail are the ones xfs_logprint finds, including a
// small log that has wrapped many times.
func TestLog(t *testing.T) {
	wrapped := false
	check := func(t *testing.T, name, img string, trusted bool, want string) *block.Usage {
		t.Helper()
		h, tl, cycle := headTail(t, img)
		lh, ltl, clean := logprint(t, img)
		if h != lh || tl != ltl {
			t.Errorf("%s: head %d tail %d; xfs_logprint: head %d tail %d", name, h, tl, lh, ltl)
		}
		u, err := detectFile(t, img)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if u.Untrusted == trusted || !strings.Contains(u.Warning, want) {
			t.Errorf("%s: untrusted %v, warning %q; want trusted %v and %q", name, u.Untrusted, u.Warning, trusted, want)
		}
		t.Logf("%s: log head %d tail %d, cycle %d (xfs_logprint: clean %v): untrusted %v %s", name, h, tl, cycle, clean, u.Untrusted, u.Warning)
		if wrapped && name != "made" && cycle < 2 {
			t.Errorf("%s: the log's first block is in cycle %d: it has not wrapped", name, cycle)
		}
		return u
	}
	for _, l := range []struct {
		name string
		args []string
	}{
		{"v5", nil},
		{"4k log sectors", []string{"-s", "size=4096"}},
		{"small log", []string{"-l", "size=1368b"}},
	} {
		t.Run(l.name, func(t *testing.T) {
			img := mkfs(t, 128<<20, l.args...)
			check(t, "made", img, true, "")
			mnt, umount := mount(t, img, "rw")
			write(t, mnt, false)
			wrapped = l.name == "small log"
			if wrapped {
				// Enough changes for the log to wrap several times.
				churn := filepath.Join(mnt, "churn")
				os.Mkdir(churn, 0o755)
				for i := range 20000 {
					p := filepath.Join(churn, strconv.Itoa(i%500))
					os.WriteFile(p, []byte(strconv.Itoa(i)), 0o644)
					if i%1000 == 999 {
						tooltest.Run(t, "sync", "-f", churn)
					}
				}
			}
			tooltest.Run(t, "sync")
			synced := copyFile(t, img)
			check(t, "mounted, synced", synced, false, "was not cleanly unmounted")

			tooltest.Run(t, "fsfreeze", "-f", mnt)
			frozen := copyFile(t, img)
			tooltest.Run(t, "fsfreeze", "-u", mnt)
			ref := t.TempDir()
			tooltest.Run(t, "cp", "-a", mnt+"/.", ref)
			if _, _, clean := logprint(t, frozen); clean {
				t.Error("xfs_logprint calls the log of a frozen filesystem clean")
			}
			u := check(t, "frozen", frozen, true, "")
			// The superblock as it was before the freeze (what a cache
			// read before then holds) is older than the log.
			stale := copyFile(t, frozen)
			sb := make([]byte, 512)
			if f, err := os.Open(synced); err == nil {
				f.ReadAt(sb, 0)
				f.Close()
			}
			if f, err := os.OpenFile(stale, os.O_WRONLY, 0); err == nil {
				f.WriteAt(sb, 0)
				f.Close()
			}
			check(t, "frozen, with the superblock from before the freeze", stale, false, "but its log last updates it at")
			kept := tooltest.KeepOnly(t, frozen, tooltest.LoadUsage(t, u))
			km, kumount := mount(t, kept, "rw,nouuid")
			tooltest.SameTree(t, ref, km)
			kumount()
			repairClean(t, kept)

			umount()
			check(t, "unmounted", img, true, "")
			repairClean(t, img)

			// Shut down with changes only in the log, then unmounted.
			mnt, umount = mount(t, img, "rw")
			os.WriteFile(filepath.Join(mnt, "late"), bytes.Repeat([]byte("late"), 1<<16), 0o644)
			os.RemoveAll(filepath.Join(mnt, "many", "d07"))
			tooltest.Run(t, "xfs_io", "-x", "-c", "shutdown -f", mnt)
			umount()
			check(t, "shut down", img, false, "was not cleanly unmounted")
		})
	}
}
