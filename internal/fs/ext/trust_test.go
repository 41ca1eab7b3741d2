package ext

import (
	"bytes"
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

// loopMount attaches img to a loop device and mounts it at a new
// directory with opts; the returned func unmounts and detaches (also
// run at cleanup).
func loopMount(t testing.TB, img, opts string) (mnt string, umount func()) {
	t.Helper()
	mnt = t.TempDir()
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", img))
	args := []string{dev, mnt}
	if opts != "" {
		args = []string{"-o", opts, dev, mnt}
	}
	if out, err := exec.Command(toolPath(t, "mount"), args...).CombinedOutput(); err != nil {
		exec.Command(toolPath(t, "losetup"), "-d", dev).Run()
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	done := false
	umount = func() {
		if done {
			return
		}
		done = true
		tooltest.Umount(t, mnt)
		exec.Command(toolPath(t, "losetup"), "-d", dev).Run()
	}
	t.Cleanup(umount)
	return mnt, umount
}

// writeFiles writes, appends to, links and deletes files under dir, with
// contents that differ at every offset.
func writeFiles(t testing.TB, dir string, seed uint64) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "new", "deep"), 0o755)
	for i, n := range []int{5, 4096, 70000, 1 << 20, 3<<20 + 7} {
		p := filepath.Join(dir, "new", fmt.Sprintf("f%d", i))
		if i%2 == 1 {
			p = filepath.Join(dir, "new", "deep", fmt.Sprintf("f%d", i))
		}
		if err := os.WriteFile(p, pattern(n, seed+uint64(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("f0", filepath.Join(dir, "new", "link"))
	os.Symlink(strings.Repeat("long/", 30), filepath.Join(dir, "new", "slowlink"))
	os.Remove(filepath.Join(dir, "d0", "f3.bin"))
}

// fsyncAll fsyncs every file under dir: the journal commits them,
// nothing is written home. (An fsync of a directory forces a full commit,
// which would leave a fast-commit journal nothing of its own to replay.)
func fsyncAll(t testing.TB, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
				f.Sync()
				f.Close()
			}
		}
		return nil
	})
}

// crashCopy copies img, mounted and written, as a crash would leave the
// disk: the bytes the loop device has written so far (the backing file,
// not the device's page cache, which holds metadata not yet written).
func crashCopy(t testing.TB, img string) string {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "crashed.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// replayed copies img and lets e2fsck replay its journal (and only
// that), or, with kernel, the kernel, by mounting it (e2fsck 1.47.0
// cannot replay every fast-commit journal the kernel writes).
func replayed(t testing.TB, img string, kernel bool) string {
	t.Helper()
	b, _ := os.ReadFile(img)
	p := filepath.Join(t.TempDir(), "replayed.img")
	os.WriteFile(p, b, 0o644)
	if kernel {
		_, umount := loopMount(t, p, "")
		umount()
		return p
	}
	runCodes(t, []int{0, 1}, "e2fsck", "-fy", "-E", "journal_only", p)
	return p
}

// fsckProblems runs e2fsck -fn and returns the problems it reports, one
// line each, with the numbers that vary between copies left in.
func fsckProblems(t testing.TB, img string) []string {
	t.Helper()
	out := runCodes(t, []int{0, 1, 4, 8, 12}, "e2fsck", "-fn", img)
	var probs []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "", strings.HasPrefix(l, "Pass "), strings.HasPrefix(l, "e2fsck "), strings.Contains(l, "files,"),
			strings.HasPrefix(l, filepath.Base(img)), strings.HasPrefix(l, img):
			continue
		}
		probs = append(probs, l)
	}
	return probs
}

// dumpTree copies every file of img out with debugfs rdump.
func dumpTree(t testing.TB, img string) string {
	t.Helper()
	out := t.TempDir()
	runCodes(t, []int{0}, "debugfs", "-R", "rdump / "+out, img)
	return out
}

// TestTrustHealthy: filesystems made by mke2fs and written by the kernel,
// cleanly unmounted, are trusted as they are, in every layout.
func TestTrustHealthy(t *testing.T) {
	files := tooltest.Files(t)
	t.Run("layouts", func(t *testing.T) {
		for _, tc := range mkfsLayouts {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel() // one layout's tools run while another's Go code reads
				p := tooltest.Garbage(t, tc.size)
				tooltest.Run(t, tc.mkfs, append(append([]string{"-q", "-F", "-E", "nodiscard", "-d", files}, tc.args...), p)...)
				check := func(when string) {
					u, err := detectFile(t, p)
					if err != nil {
						t.Fatal(err)
					}
					if u.Warning != "" || u.Untrusted {
						t.Errorf("%s: a healthy filesystem is not trusted: %q", when, u.Warning)
					}
				}
				check("made by mke2fs")
				mnt, umount := loopMount(t, p, "")
				writeFiles(t, mnt, 7)
				os.RemoveAll(filepath.Join(mnt, "d1"))
				umount()
				check("written by the kernel")
				runCodes(t, []int{0}, "e2fsck", "-fn", p)
			})
		}
	})
	// Grown by resize2fs (offline: online resizing needs CAP_SYS_RESOURCE,
	// which this machine's root may lack), then written by the kernel.
	t.Run("resized", func(t *testing.T) {
		p := tooltest.Garbage(t, 300<<20)
		os.Truncate(p, 64<<20)
		tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", files, p)
		os.Truncate(p, 300<<20)
		tooltest.Run(t, "resize2fs", p)
		mnt, umount := loopMount(t, p, "")
		writeFiles(t, mnt, 3)
		os.WriteFile(filepath.Join(mnt, "after-resize"), pattern(5<<20, 9), 0o644)
		umount()
		runCodes(t, []int{0}, "e2fsck", "-fn", p)
		u, err := detectFile(t, p)
		if err != nil {
			t.Fatal(err)
		}
		if u.Warning != "" || u.Untrusted {
			t.Errorf("a resized filesystem is not trusted: %q", u.Warning)
		}
	})
}

// TestTrustCrashed: an ext3/ext4 copied as a crash leaves it — files
// written and fsynced, so their transactions are committed to the journal
// but not yet written home — is imaged with the blocks its journal names:
// after each copy replays its journal, the restored one holds every file
// the source holds, byte for byte, and e2fsck finds the same. A
// fast-commit journal with records to replay is copied whole.
func TestTrustCrashed(t *testing.T) {
	files := tooltest.Files(t)
	for _, tc := range []struct {
		name, mkfs string
		args       []string
		whole      bool
	}{
		{"ext4", "mkfs.ext4", nil, false},
		{"ext4-1k-no-csum", "mkfs.ext4", []string{"-b", "1024", "-O", "^metadata_csum,^64bit"}, false},
		{"ext4-bigalloc", "mkfs.ext4", []string{"-O", "bigalloc", "-C", "16384"}, false},
		{"ext3", "mkfs.ext3", nil, false},
		{"ext4-fast_commit", "mkfs.ext4", []string{"-O", "fast_commit"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The kernel may answer an fsync with a full commit instead
			// of a fast one (an operation fast commits cannot log, or
			// timing): then the copy holds no fast-commit records and is
			// rightly trusted. The fast-commit case is made again until
			// debugfs logdump finds fast-commit records in the copy.
			for try := 1; ; try++ {
				src := crashedFS(t, tc.mkfs, tc.args, files, tc.whole)
				if !tc.whole || fastCommitted(t, src) {
					checkCrashed(t, src, tc.whole)
					return
				}
				if try == 3 {
					t.Fatal("the kernel left no fast-commit records in the crash copy in 3 tries")
				}
				t.Logf("try %d: the kernel made a full commit, no fast-commit records: again", try)
			}
		})
	}
}

// fastCommitted says whether debugfs logdump finds fast-commit records a
// replay would apply in img's journal: tags beyond the area's head and
// tail, of the transaction after the last full commit.
func fastCommitted(t *testing.T, img string) bool {
	out := tooltest.Run(t, "debugfs", "-R", "logdump", img)
	log, area, ok := strings.Cut(out, "*** Fast Commit Area ***")
	if !ok {
		return false
	}
	next := ""
	if m := regexp.MustCompile(`Journal starts at block \d+, transaction (\d+)`).FindStringSubmatch(log); m != nil {
		next = m[1]
	}
	for _, m := range regexp.MustCompile(`Found expected sequence (\d+), type 2 \(commit block\)`).FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		next = strconv.Itoa(n + 1)
	}
	head := regexp.MustCompile(`tag HEAD, features 0x[0-9a-f]+, tid (\d+)`).FindStringSubmatch(area)
	if head == nil || head[1] != next {
		return false
	}
	for _, l := range strings.Split(area, "\n") {
		if strings.HasPrefix(l, "tag ") && !strings.HasPrefix(l, "tag HEAD") && !strings.HasPrefix(l, "tag TAIL") {
			return true
		}
	}
	return false
}

// crashedFS makes a filesystem with mkfs and args holding files, mounts
// it, writes to it and fsyncs (with an orphan and a truncation unless
// whole), and returns a copy as a crash would leave it.
func crashedFS(t *testing.T, mkfs string, args []string, files string, whole bool) string {
	t.Helper()
	img := tooltest.Garbage(t, 128<<20)
	tooltest.Run(t, mkfs, append(append([]string{"-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-d", files}, args...), img)...)
	mnt, _ := loopMount(t, img, "commit=300,noinit_itable")
	writeFiles(t, mnt, 11)
	if !whole {
		// An open file unlinked (an orphan the recovery frees) and
		// a truncated one. (The kernel 6.18 cannot replay these
		// from fast-commit records: "Structure needs cleaning".)
		orphan, err := os.Create(filepath.Join(mnt, "orphan"))
		if err != nil {
			t.Fatal(err)
		}
		defer orphan.Close()
		orphan.Write(pattern(100000, 4))
		orphan.Sync()
		os.Remove(filepath.Join(mnt, "orphan"))
		os.Truncate(filepath.Join(mnt, "new", "deep", "f3"), 1000)
	}
	fsyncAll(t, mnt)
	return crashCopy(t, img)
}

// checkCrashed checks the detector on src, a crashed copy: it
// warns, copies the filesystem whole only if whole (fast-commit
// records, which only the kernel replays), and what it keeps replays
// to the source's files.
func checkCrashed(t *testing.T, src string, whole bool) {
	t.Helper()
	if !strings.Contains(tooltest.Run(t, "dumpe2fs", "-h", src), "needs_recovery") {
		t.Fatal("the copy does not need recovery: the test made no crash")
	}
	u, err := detectFile(t, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warning: %s", u.Warning)
	if u.Warning == "" {
		t.Errorf("no warning for a filesystem whose journal needs recovery")
	}
	if u.Untrusted != whole {
		t.Errorf("untrusted %v, want %v", u.Untrusted, whole)
	}
	kept := tooltest.KeepOnly(t, src, tooltest.LoadUsage(t, u))
	a, b := replayed(t, src, whole), replayed(t, kept, whole)
	if pa, pb := fsckProblems(t, a), fsckProblems(t, b); strings.Join(pa, "\n") != strings.Join(pb, "\n") {
		t.Errorf("e2fsck after replay finds\n%s\nin the source and\n%s\nin the copy", strings.Join(pa, "\n"), strings.Join(pb, "\n"))
	}
	da, db := dumpTree(t, a), dumpTree(t, b)
	if _, err := os.Stat(filepath.Join(da, "new", "f0")); err != nil {
		t.Fatalf("the replayed source lacks the files written before the crash: %v", err)
	}
	tooltest.SameTree(t, da, db)
}

// debugfsBlocks returns the block bitmap location, free count and flags
// of group g, as dumpe2fs says.
func groupInfo(t testing.TB, img string, g int) (bitmap, free int64) {
	t.Helper()
	out := tooltest.Run(t, "dumpe2fs", img)
	sect := regexp.MustCompile(`(?s)\nGroup ` + strconv.Itoa(g) + `: .*?(?:\nGroup |\z)`).FindString(out)
	m := regexp.MustCompile(`Block bitmap at (\d+)`).FindStringSubmatch(sect)
	n := regexp.MustCompile(`(\d+) free (?:blocks|clusters)`).FindStringSubmatch(sect)
	if m == nil || n == nil {
		t.Fatalf("dumpe2fs says nothing of group %d:\n%s", g, sect)
	}
	bitmap, _ = strconv.ParseInt(m[1], 10, 64)
	free, _ = strconv.ParseInt(n[1], 10, 64)
	return bitmap, free
}

// TestTrustDamaged: damage e2fsck would repair in the allocation
// metadata makes the filesystem untrusted (copied whole) with the reason
// said; the same filesystem before the damage is trusted. With and
// without descriptor checksums, so the counts alone catch it too.
func TestTrustDamaged(t *testing.T) {
	files := tooltest.Files(t)
	for _, v := range []struct {
		name, mkfs string
		args       []string
		csum       bool // descriptors carry checksums (BLOCK_UNINIT is believed)
	}{
		{"ext4", "mkfs.ext4", nil, true},
		{"ext4-uninit_bg", "mkfs.ext4", []string{"-O", "^metadata_csum,uninit_bg"}, true},
		{"ext2", "mkfs.ext2", nil, false},
	} {
		t.Run(v.name, func(t *testing.T) {
			base := tooltest.Garbage(t, 64<<20)
			// Several groups, files in more than one of them.
			tooltest.Run(t, v.mkfs, append(append([]string{"-q", "-F", "-E", "nodiscard", "-b", "1024", "-g", "8192", "-d", files}, v.args...), base)...)
			mnt, umount := loopMount(t, base, "")
			for i := 0; i < 6; i++ {
				writeFiles(t, mnt, uint64(i))
				os.Rename(filepath.Join(mnt, "new"), filepath.Join(mnt, fmt.Sprintf("new%d", i)))
			}
			umount()
			u, err := detectFile(t, base)
			if err != nil || u.Untrusted || u.Warning != "" {
				t.Fatalf("before the damage: %v %+v", err, u)
			}
			healthy := tooltest.LoadUsage(t, u)
			bm, free := groupInfo(t, base, 1)
			if free > 8000 {
				t.Fatalf("group 1 has %d free blocks: no files landed there", free)
			}
			bm3, _ := groupInfo(t, base, 3)
			for _, tc := range []struct {
				name   string
				damage func(t *testing.T, img string)
				want   string // "": trusted, with a map holding every block it held
			}{
				{"free count wrong", func(t *testing.T, img string) {
					debugfs(t, img, true, fmt.Sprintf("set_bg 1 free_blocks_count %d", free+100), "set_bg 1 checksum calc")
				}, "group 1"},
				{"bitmap zeroed", func(t *testing.T, img string) {
					patch(t, img, bm*1024, make([]byte, 1024))
				}, "group 1"},
				{"bitmap bits flipped", func(t *testing.T, img string) {
					// Bits of blocks in use cleared. (Flips that keep the
					// count, on a filesystem without checksums, only an
					// inode scan finds: e2fsck's pass 1, not this.)
					b := readAt(t, img, bm*1024, 1024)
					at := bytes.Index(b, bytes.Repeat([]byte{0xff}, 16))
					if at < 0 {
						t.Fatal("no run of 128 blocks in use in group 1")
					}
					patch(t, img, bm*1024+int64(at), make([]byte, 16))
				}, "group 1"},
				{"BLOCK_UNINIT on a used group", func(t *testing.T, img string) {
					debugfs(t, img, true, "set_bg 1 flags 2", "set_bg 1 checksum calc")
				}, map[bool]string{true: "BLOCK_UNINIT", false: ""}[v.csum]},
				{"bitmap moved", func(t *testing.T, img string) {
					debugfs(t, img, true, fmt.Sprintf("set_bg 1 block_bitmap %d", bm3), "set_bg 1 checksum calc")
				}, "group 1"},
				{"descriptor checksum", func(t *testing.T, img string) {
					debugfs(t, img, true, "set_bg 2 checksum 0x1234")
				}, map[bool]string{true: "checksum", false: ""}[v.csum]},
				{"superblock free count", func(t *testing.T, img string) {
					debugfs(t, img, true, "ssv free_blocks_count 12345")
				}, "superblock counts"},
				{"error state", func(t *testing.T, img string) {
					debugfs(t, img, true, "ssv state 2")
				}, "records errors"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					img := filepath.Join(t.TempDir(), "damaged.img")
					b, _ := os.ReadFile(base)
					os.WriteFile(img, b, 0o644)
					tc.damage(t, img)
					u, err := detectFile(t, img)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("warning: %s", u.Warning)
					m := tooltest.LoadUsage(t, u)
					if tc.want == "" {
						if u.Untrusted {
							t.Fatalf("untrusted: %s", u.Warning)
						}
						healthy.Runs(0, healthy.Len(), func(e block.Extent) {
							var n int64
							m.Runs(e.Off, e.Len, func(r block.Extent) { n += r.Len })
							if n != e.Len {
								t.Errorf("bytes %d-%d were used before the damage; the map has %d of their %d bytes", e.Off, e.End()-1, n, e.Len)
							}
						})
						return
					}
					if !u.Untrusted || !strings.Contains(u.Warning, tc.want) {
						t.Fatalf("untrusted %v, warning %q; want untrusted, naming %q", u.Untrusted, u.Warning, tc.want)
					}
					if m.UsedBytes() != m.Len() {
						t.Errorf("an untrusted filesystem's map has %d of %d bytes used, want all", m.UsedBytes(), m.Len())
					}
				})
			}
		})
	}
}

func readAt(t testing.TB, img string, off int64, n int) []byte {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func patch(t testing.TB, img string, off int64, b []byte) {
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestFastSymlinkBigalloc: on bigalloc, a fast symlink with an extended
// attribute block counts a whole cluster in i_blocks; it is still fast
// (the kernel's ext4_inode_is_fast_symlink), so the root lists and its
// target is what debugfs says.
func TestFastSymlinkBigalloc(t *testing.T) {
	img := tooltest.Garbage(t, 128<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "bigalloc", "-C", "16384", "-I", "128", img)
	mnt, umount := loopMount(t, img, "")
	os.WriteFile(filepath.Join(mnt, "file"), []byte("x"), 0o644)
	os.Symlink("file", filepath.Join(mnt, "fast"))
	os.Symlink(strings.Repeat("t", 59), filepath.Join(mnt, "fast59"))
	os.Symlink(strings.Repeat("s", 100), filepath.Join(mnt, "slow"))
	for _, l := range []string{"fast", "fast59", "slow"} {
		tooltest.Run(t, "setfattr", "-h", "-n", "trusted.x", "-v", strings.Repeat("v", 500), filepath.Join(mnt, l))
	}
	umount()
	out := debugfs(t, img, false, "stat /fast", "stat /fast59", "stat /slow")
	if !strings.Contains(out["stat /fast"], "File ACL: ") || strings.Contains(out["stat /fast"], "File ACL: 0") {
		t.Fatalf("the symlink has no extended attribute block:\n%s", out["stat /fast"])
	}
	fs := openImage(t, img)
	ents, err := fs.ReadDir("/")
	if err != nil {
		t.Fatalf("list the root: %v", err)
	}
	got := map[string]string{}
	for _, e := range ents {
		got[e.Name] = e.Target
	}
	for _, l := range []string{"fast", "fast59", "slow"} {
		st := out["stat /"+l]
		want := ""
		if m := regexp.MustCompile(`Fast link dest: "(.*)"`).FindStringSubmatch(st); m != nil {
			want = m[1]
		} else {
			want = strings.TrimSpace(runCodes(t, []int{0}, "debugfs", "-R", "cat /"+l, img))
			if i := strings.Index(want, "\n"); i >= 0 {
				want = want[i+1:]
			}
		}
		if got[l] != want {
			t.Errorf("%s: target %q, debugfs says %q", l, got[l], want)
		}
	}
	if !bytes.Equal([]byte(got["fast"]), []byte("file")) {
		t.Errorf("fast: target %q", got["fast"])
	}
}
