package e2e

// Sources whose allocation data cannot be taken as it stands — a crashed
// ext4 whose journal holds what its bitmaps lack, damaged bitmaps and
// counts, a FAT whose copies disagree or whose BPB is incomplete, an NTFS
// marked dirty — are imaged with every block the filesystem needs after
// its own repair or replay, and create, info and info --json say why.
// Small FAT32 volumes are FAT32, and a bigalloc fast symlink with an
// attribute block lists.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// trustInfo is what info --json says of warnings and notes.
type trustInfo struct {
	Warnings   []string `json:"warnings"`
	Partitions []struct {
		Index      int    `json:"index"`
		Filesystem string `json:"filesystem"`
		Note       string `json:"note"`
		UsedBytes  int64  `json:"used_bytes"`
		Size       int64  `json:"size"`
	} `json:"partitions"`
}

// trustCreate images src (a bare filesystem) and checks that create's
// output, info and info --json all say why its allocation data was not
// taken as it stands, with want in the reason; it returns the image.
func trustCreate(t *testing.T, src, fs, want string) (string, trustInfo) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "src.platter")
	_, stderr, code := run(t, "create", "--progress", "none", src, img)
	if code != 0 {
		t.Fatalf("create: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "warning") || !strings.Contains(stderr, want) {
		t.Errorf("create says no warning naming %q:\n%s", want, stderr)
	}
	var j trustInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != fs {
		t.Fatalf("info --json partitions %+v, want one %s", j.Partitions, fs)
	}
	if !strings.Contains(strings.Join(j.Warnings, "\n"), want) || !strings.Contains(j.Partitions[0].Note, want) {
		t.Errorf("info --json: warnings %q, note %q; want both naming %q", j.Warnings, j.Partitions[0].Note, want)
	}
	if text := ok(t, "info", img); !regexp.MustCompile(`(?m)^Warning: .*` + regexp.QuoteMeta(want)).MatchString(text) {
		t.Errorf("info says no warning naming %q:\n%s", want, text)
	}
	return img, j
}

// trustRestore restores img into a new file and returns it.
func trustRestore(t *testing.T, img string) string {
	t.Helper()
	back := filepath.Join(t.TempDir(), "restored.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	return back
}

// trustCopy copies a file.
func trustCopy(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// trustFile makes a file of size bytes of pseudo-random data: what the
// free space of a used disk holds.
func trustFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	b := make([]byte, size)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// trustMount loop-mounts img with opts; the func unmounts and detaches.
func trustMount(t *testing.T, img, opts string) (string, func()) {
	t.Helper()
	mnt := t.TempDir()
	dev := strings.TrimSpace(sh(t, "losetup", "-f", "--show", img))
	args := []string{dev, mnt}
	if opts != "" {
		args = append([]string{"-o", opts}, args...)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	done := false
	umount := func() {
		if !done {
			done = true
			exec.Command("umount", mnt).Run()
			exec.Command("losetup", "-d", dev).Run()
		}
	}
	t.Cleanup(umount)
	return mnt, umount
}

// trustTree is the source tree the filesystems hold (files.sh).
func trustTree(t *testing.T, nosymlink bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	args := []string{filepath.Join(fixtures, "files.sh"), dir}
	if nosymlink {
		args = append(args, "nosymlink")
	}
	sh(t, "bash", args...)
	return dir
}

// mcopyTree copies every entry of tree into the root of the FAT image.
func mcopyTree(t *testing.T, img, tree string) {
	t.Helper()
	ents, err := os.ReadDir(tree)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-s", "-i", img}
	for _, e := range ents {
		args = append(args, filepath.Join(tree, e.Name()))
	}
	sh(t, "mcopy", append(args, "::/")...)
}

// e2fsckProblems runs e2fsck -fn on img and returns what it reports, the
// image's name taken out: the set of problems it finds.
func e2fsckProblems(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("e2fsck: %v", err)
	}
	return strings.ReplaceAll(string(out), img, "IMG")
}

// A crashed ext4 — copied from its device while mounted, right after its
// files were fsynced, so their transactions are in the journal and not
// yet home — is imaged with what its journal names: after each copy
// replays its journal, the restored one holds every file of the source,
// byte for byte, and e2fsck says the same of both. With a fast-commit
// journal that has records to replay, the filesystem is copied whole.
func TestTrustCrashedExt4(t *testing.T) {
	tree := trustTree(t, false)
	for _, c := range []struct {
		name, want string
		args       []string
		fastCommit bool
	}{
		{"ext4", "needs journal recovery", nil, false},
		{"ext4-fast_commit", "fast-commit", []string{"-O", "fast_commit"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			live := trustFile(t, 128<<20)
			sh(t, "mkfs.ext4", append(append([]string{"-q", "-F", "-E", "nodiscard,lazy_itable_init=0", "-d", tree}, c.args...), live)...)
			mnt, umount := trustMount(t, live, "commit=300,noinit_itable")
			// New files, a file grown, one deleted, a new directory tree.
			os.MkdirAll(filepath.Join(mnt, "after/deep"), 0o755)
			for i, n := range []int{5, 4096, 70001, 1 << 20, 3<<20 + 7} {
				b := make([]byte, n)
				for k := range b {
					b[k] = byte(k*7 + i + k>>10)
				}
				os.WriteFile(filepath.Join(mnt, "after", fmt.Sprintf("f%d", i)), b, 0o644)
				os.WriteFile(filepath.Join(mnt, "after/deep", fmt.Sprintf("g%d", i)), b[:n/2], 0o644)
			}
			f, _ := os.OpenFile(filepath.Join(mnt, "docs/numbers.txt"), os.O_APPEND|os.O_WRONLY, 0)
			f.Write(bytes.Repeat([]byte("appended after the last checkpoint\n"), 5000))
			f.Close()
			os.Remove(filepath.Join(mnt, "bin/size-4097.bin"))
			// fsync each file: its transaction is committed to the
			// journal. (syncfs, or an fsync of a directory, forces a full
			// commit and would leave a fast-commit journal nothing of its
			// own to replay.)
			filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
						f.Sync()
						f.Close()
					}
				}
				return nil
			})
			// The crash: the bytes the device holds now (the backing
			// file, not the device's page cache).
			src := trustCopy(t, live)
			umount()
			if !strings.Contains(sh(t, "dumpe2fs", "-h", src), "needs_recovery") {
				t.Fatal("the copy does not need recovery: no crash was made")
			}

			img, _ := trustCreate(t, src, "ext4", c.want)
			back := trustRestore(t, img)

			// Replay both journals, as the kernel does at mount (e2fsck
			// 1.47.0 cannot replay every fast-commit journal: the kernel
			// does that one).
			replay := func(p string) string {
				p = trustCopy(t, p)
				if c.fastCommit {
					_, u := trustMount(t, p, "")
					u()
				} else if out, err := exec.Command("e2fsck", "-fy", "-E", "journal_only", p).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
					t.Fatalf("e2fsck -E journal_only: %v\n%s", err, out)
				}
				return p
			}
			a, b := replay(src), replay(back)
			if pa, pb := e2fsckProblems(t, a), e2fsckProblems(t, b); pa != pb {
				t.Errorf("after replay, e2fsck -fn says of the source:\n%s\nand of the restored copy:\n%s", pa, pb)
			}
			want := extTree(t, a)
			if _, err := os.Stat(filepath.Join(want, "after/f0")); err != nil {
				t.Fatalf("the replayed source lacks what was written before the crash: %v", err)
			}
			sameTree(t, want, extTree(t, b))
		})
	}
}

// A FAT32 of fewer than 65525 clusters — mkfs.fat -F 32 makes one on a
// small device — is FAT32 (as blkid, fsck.fat and the kernel say), imaged
// with a used-block map read as FAT32, restored with every file intact;
// ls and extract read it.
//
// mtools takes a FAT32 by its cluster count and cannot read or write
// such a volume, and there is no kernel vfat here: mkfs.fat makes a
// FAT32 of more clusters, mcopy fills it, its BPB's sector count is cut
// to leave fewer than 65525 clusters (the files lie in the first ones)
// and fsck.fat -a sets FSInfo's free count; to copy the files out with
// mtools, a copy gets its first sector count back.
func TestTrustSmallFAT32(t *testing.T) {
	tree := trustTree(t, true)
	for _, c := range []struct {
		name     string
		size     int64
		spc      string
		clusters int64
	}{
		{"33MiB", 33 << 20, "1", 65000},
		{"64MiB-of-1k-clusters", 128 << 20, "2", 65000},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := trustFile(t, c.size)
			sh(t, "mkfs.fat", "-F", "32", "-s", c.spc, src)
			mcopyTree(t, src, tree)
			le := binary.LittleEndian
			boot := readAt(t, src, 512, 0)
			orig := le.Uint32(boot[0x20:])
			dataStart := int64(le.Uint16(boot[0x0e:])) + int64(boot[0x10])*int64(le.Uint32(boot[0x24:]))
			spc := int64(boot[0x0d])
			setSectors := func(p string, n uint32) {
				var b [4]byte
				le.PutUint32(b[:], n)
				writeAt(t, p, b[:], 0x20)
				writeAt(t, p, b[:], 6*512+0x20) // the backup boot sector
			}
			setSectors(src, uint32(dataStart+c.clusters*spc))
			if out, err := exec.Command("fsck.fat", "-a", "-w", src).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
				t.Fatalf("fsck.fat -a: %v\n%s", err, out)
			}
			sh(t, "fsck.fat", "-n", src)
			if v := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "VERSION", src)); v != "FAT32" {
				t.Fatalf("blkid says %s", v)
			}

			img, back := fat32Restored(t, src)
			srcCopy, backCopy := trustCopy(t, src), trustCopy(t, back)
			setSectors(srcCopy, orig)
			setSectors(backCopy, orig)
			want := fatTree(t, srcCopy)
			sameTree(t, want, fatTree(t, backCopy))
			sameTree(t, tree, want)

			if ls := ok(t, "ls", img, "/bin"); !strings.Contains(ls, "random 3M.bin") {
				t.Errorf("ls /bin:\n%s", ls)
			}
			dest := filepath.Join(t.TempDir(), "out")
			ok(t, "extract", img, "/", dest)
			sameTree(t, want, dest)
		})
	}
}

// Damage e2fsck would repair in an ext4's allocation data — free counts
// that disagree with the bitmap, a zeroed or flipped bitmap, BLOCK_UNINIT
// on a group in use, the superblock's count, the error state — is said by
// create and info, and the filesystem is copied whole: e2fsck -fn finds
// the restored copy exactly as the source, and every file debugfs dumps
// from the source comes back the same.
func TestTrustDamagedExt4(t *testing.T) {
	tree := trustTree(t, false)
	base := trustFile(t, 64<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "1024", "-g", "8192", "-d", tree, base)
	mnt, umount := trustMount(t, base, "")
	for i := 0; i < 4; i++ {
		sh(t, "cp", "-r", tree, filepath.Join(mnt, fmt.Sprintf("copy%d", i)))
	}
	umount()
	groupInfo := func(g int) (bitmap, free int64) {
		out := sh(t, "dumpe2fs", base)
		sect := regexp.MustCompile(fmt.Sprintf(`(?s)\nGroup %d: .*?(\nGroup |\z)`, g)).FindString(out)
		fmt.Sscanf(regexp.MustCompile(`Block bitmap at \d+`).FindString(sect), "Block bitmap at %d", &bitmap)
		fmt.Sscanf(regexp.MustCompile(`\d+ free blocks`).FindString(sect), "%d free blocks", &free)
		if bitmap == 0 || free > 8000 {
			t.Fatalf("group %d (bitmap %d, %d free) holds no files:\n%s", g, bitmap, free, sect)
		}
		return bitmap, free
	}
	bm, free := groupInfo(2)
	debugfs := func(p string, cmds ...string) {
		script := filepath.Join(t.TempDir(), "cmds")
		os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644)
		sh(t, "debugfs", "-w", "-f", script, p)
	}
	for _, c := range []struct {
		name, want string
		damage     func(p string)
	}{
		{"free-count", "group 2", func(p string) {
			debugfs(p, fmt.Sprintf("set_bg 2 free_blocks_count %d", free+200), "set_bg 2 checksum calc")
		}},
		{"bitmap-zeroed", "group 2", func(p string) { writeAt(t, p, make([]byte, 1024), bm*1024) }},
		{"bitmap-flipped", "group 2", func(p string) {
			b := readAt(t, p, 64, bm*1024+100)
			for i := range b {
				b[i] ^= 0xff
			}
			writeAt(t, p, b, bm*1024+100)
		}},
		{"block_uninit-on-used-group", "BLOCK_UNINIT", func(p string) {
			debugfs(p, "set_bg 2 flags 2", "set_bg 2 checksum calc")
		}},
		{"superblock-count", "superblock counts", func(p string) { debugfs(p, "ssv free_blocks_count 1000") }},
		{"error-state", "records errors", func(p string) { debugfs(p, "ssv state 2") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := trustCopy(t, base)
			c.damage(src)
			img, j := trustCreate(t, src, "ext4", c.want)
			if p := j.Partitions[0]; p.UsedBytes != p.Size {
				t.Errorf("used %d of %d bytes: an untrusted filesystem is copied whole", p.UsedBytes, p.Size)
			}
			back := trustRestore(t, img)
			if a, b := e2fsckProblems(t, src), e2fsckProblems(t, back); a != b {
				t.Errorf("e2fsck -fn says of the source:\n%s\nand of the restored copy:\n%s", a, b)
			}
			// debugfs reads what it can of a damaged filesystem (-c: not
			// its bitmaps, -n: whatever their checksums).
			dump := func(p string) string {
				dir := t.TempDir()
				if out, err := exec.Command("debugfs", "-c", "-n", "-R", "rdump / "+dir, p).CombinedOutput(); err != nil {
					t.Fatalf("debugfs rdump: %v\n%s", err, out)
				}
				return dir
			}
			sameTree(t, dump(src), dump(back))
		})
	}
}

// On bigalloc, a fast symlink with an extended attribute block counts a
// whole cluster in i_blocks; it is still fast, as the kernel reads it:
// ls lists the root with the symlinks' targets, as debugfs says them.
func TestTrustBigallocSymlink(t *testing.T) {
	src := trustFile(t, 128<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "bigalloc", "-C", "16384", "-I", "128", src)
	mnt, umount := trustMount(t, src, "")
	os.WriteFile(filepath.Join(mnt, "target"), []byte("x"), 0o644)
	os.Symlink("target", filepath.Join(mnt, "fast"))
	os.Symlink(strings.Repeat("s", 100), filepath.Join(mnt, "slow"))
	for _, l := range []string{"fast", "slow"} {
		sh(t, "setfattr", "-h", "-n", "trusted.x", "-v", strings.Repeat("v", 500), filepath.Join(mnt, l))
	}
	umount()
	stat := sh(t, "debugfs", "-R", "stat /fast", src)
	if !regexp.MustCompile(`File ACL: [1-9]`).MatchString(stat) || !strings.Contains(stat, "Blockcount: 32") {
		t.Fatalf("the fast symlink has no attribute block's cluster in i_blocks:\n%s", stat)
	}
	dest := regexp.MustCompile(`Fast link dest: "(.*)"`).FindStringSubmatch(stat)
	if dest == nil {
		t.Fatalf("debugfs does not take it for a fast symlink:\n%s", stat)
	}
	img := filepath.Join(t.TempDir(), "ba.platter")
	ok(t, "create", "--progress", "none", src, img)
	ok(t, "ls", img, "/") // 05b304c fails here: the root does not list
	ls := ok(t, "ls", "-l", img, "/")
	if !strings.Contains(ls, "fast -> "+dest[1]+"\n") || !strings.Contains(ls, "slow -> "+strings.Repeat("s", 100)) {
		t.Errorf("ls /: want fast -> %s and the slow one:\n%s", dest[1], ls)
	}
}

// A FAT whose BPB gives no sector count, or whose 16-bit FAT size makes
// it a FAT16 of more clusters than FAT16 can number (the kernel and
// fsck.fat refuse both), is a damaged FAT: copied raw, and create, info
// and info --json say why.
func TestTrustFATNoSectorCount(t *testing.T) {
	for _, c := range []struct {
		name, want string
		mkfs       []string
		damage     func(p string)
	}{
		{"no-sector-count", "no sector count", []string{"-F", "16"}, func(p string) {
			writeAt(t, p, make([]byte, 2), 0x13)
			writeAt(t, p, make([]byte, 4), 0x20)
		}},
		{"fat16-of-too-many-clusters", "more than FAT16 can number", []string{"-F", "32", "-s", "1"}, func(p string) {
			writeAt(t, p, []byte{0, 1}, 0x16) // a 16-bit FAT size of 256 sectors
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := trustFile(t, 40<<20)
			sh(t, "mkfs.fat", append(c.mkfs, src)...)
			c.damage(src)
			if out, err := exec.Command("fsck.fat", "-n", src).CombinedOutput(); err == nil {
				t.Fatalf("fsck.fat takes the damaged boot sector:\n%s", out)
			}
			img, _ := trustCreate(t, src, "raw", c.want)
			if back := trustRestore(t, img); !bytes.Equal(readAt(t, back, 40<<20, 0), readAt(t, src, 40<<20, 0)) {
				t.Error("the restored copy differs from the source")
			}
		})
	}
}

// When the FAT copies disagree, fsck.fat keeps one of them: the clusters
// either calls used are stored, with a warning, so whichever the repair
// keeps, the restored copy repairs to the files the source repairs to.
func TestTrustFATCopiesDiffer(t *testing.T) {
	tree := trustTree(t, true)
	src := trustFile(t, 64<<20)
	sh(t, "mkfs.fat", "-F", "16", src)
	mcopyTree(t, src, tree)
	le := binary.LittleEndian
	boot := readAt(t, src, 512, 0)
	fat1 := int64(le.Uint16(boot[0x0e:])) * 512
	fatLen := int64(le.Uint16(boot[0x16:])) * 512
	// Free, in the first FAT only, every cluster of the chains it holds
	// from cluster 100 on (inside "random 3M.bin").
	fat := readAt(t, src, int(fatLen), fat1)
	for c := 100; c < 1000; c++ {
		le.PutUint16(fat[2*c:], 0)
	}
	writeAt(t, src, fat, fat1)
	img, _ := trustCreate(t, src, "fat16", "disagree")
	back := trustRestore(t, img)
	for keep := int64(0); keep < 2; keep++ {
		repaired := func(p string) string {
			p = trustCopy(t, p)
			writeAt(t, p, readAt(t, p, int(fatLen), fat1+keep*fatLen), fat1+(1-keep)*fatLen)
			if out, err := exec.Command("fsck.fat", "-a", "-w", p).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
				t.Fatalf("fsck.fat -a: %v\n%s", err, out)
			}
			return fatTree(t, p)
		}
		a, b := repaired(src), repaired(back)
		sameTree(t, a, b)
		if keep == 1 {
			sameTree(t, tree, a) // the second FAT is intact
		}
	}
}

// An NTFS marked dirty (chkdsk runs at the next boot) is copied whole,
// with a warning; the restored copy is the source's bytes.
func TestTrustNTFSDirty(t *testing.T) {
	tree := trustTree(t, false)
	src := trustFile(t, 64<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", src)
	mnt := t.TempDir()
	sh(t, "ntfs-3g", src, mnt)
	sh(t, "cp", "-r", tree+"/.", mnt)
	sh(t, "fusermount", "-u", mnt)
	// $Volume is MFT record 3 (and so in $MFTMirr): set the dirty bit of
	// its $VOLUME_INFORMATION's flags in both.
	le := binary.LittleEndian
	boot := readAt(t, src, 512, 0)
	cluster := int64(le.Uint16(boot[0x0b:])) * int64(boot[0x0d])
	for _, at := range []int64{int64(le.Uint64(boot[0x30:])), int64(le.Uint64(boot[0x38:]))} {
		rec := at*cluster + 3*1024
		r := readAt(t, src, 1024, rec)
		if string(r[:4]) != "FILE" {
			t.Fatalf("no MFT record 3 at byte %d", rec)
		}
		for pos := int64(le.Uint16(r[0x14:])); pos+16 < 1024 && le.Uint32(r[pos:]) != 0xffffffff; pos += int64(le.Uint32(r[pos+4:])) {
			if le.Uint32(r[pos:]) == 0x70 {
				flags := rec + pos + int64(le.Uint16(r[pos+0x14:])) + 0xa
				writeAt(t, src, []byte{1}, flags)
				break
			}
		}
	}
	if out, _ := exec.Command("ntfsinfo", "-m", src).CombinedOutput(); !strings.Contains(string(out), "scheduled for check") {
		t.Fatalf("ntfsinfo does not see the dirty flag:\n%s", out)
	}
	img, j := trustCreate(t, src, "ntfs", "dirty")
	if p := j.Partitions[0]; p.UsedBytes != p.Size {
		t.Errorf("used %d of %d bytes: a dirty volume is copied whole", p.UsedBytes, p.Size)
	}
	back := trustRestore(t, img)
	if !bytes.Equal(readAt(t, back, 64<<20, 0), readAt(t, src, 64<<20, 0)) {
		t.Error("the restored copy differs from the source")
	}
	for _, p := range []string{src, back} {
		sh(t, "ntfsfix", "-d", p)
	}
	sameTree(t, ntfsTree(t, src), ntfsTree(t, back))
}

// fat32Restored images the small FAT32 src, checks that info calls it
// fat32 with a used-block map (not a raw copy), and restores it, clean
// by fsck.fat -n; it returns the image and the restored copy.
func fat32Restored(t *testing.T, src string) (img, back string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "fat.platter")
	ok(t, "create", "--progress", "none", src, img)
	var j trustInfo
	json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j)
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "fat32" {
		t.Fatalf("info --json: %+v, want fat32", j.Partitions)
	}
	if p := j.Partitions[0]; p.UsedBytes <= 0 || p.UsedBytes >= p.Size/2 {
		t.Errorf("used %d of %d bytes: not a used-block map", p.UsedBytes, p.Size)
	}
	back = trustRestore(t, img)
	sh(t, "fsck.fat", "-n", back)
	return img, back
}
