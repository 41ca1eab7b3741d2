package owners

import (
	"bytes"
	"encoding/binary"
	"fmt"
	iofs "io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/tooltest"
)

// a case is one range and what the filesystem's own tools say it holds.
type rangeCase struct {
	name string
	at   block.Extent
	want []Hit // Range filled in by check
}

// check classifies every case's range in one call (as a rescue does)
// and wants exactly what the tools said, nothing else.
func check(t *testing.T, img, fs string, cases []rangeCase) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	u, err := fsmap.Detect(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if u.FS != fs {
		t.Fatalf("detected %s, want %s", u.FS, fs)
	}
	used := func(off, n int64) ([]block.Extent, error) {
		var out []block.Extent
		err := u.Runs(off, n, func(e block.Extent) { out = append(out, e) })
		return out, err
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].at.Off < cases[j].at.Off })
	var ranges []block.Extent
	for _, c := range cases {
		ranges = append(ranges, c.at)
	}
	hits, err := Classify(f, st.Size(), fs, used, ranges)
	if err != nil {
		t.Fatal(err)
	}
	got := map[block.Extent][]Hit{}
	for _, h := range hits {
		got[h.Range] = append(got[h.Range], h)
	}
	for _, c := range cases {
		want := c.want
		for i := range want {
			want[i].Range = c.at
			sort.Strings(want[i].Paths)
		}
		t.Logf("%s: %+v", c.name, got[c.at])
		if !reflect.DeepEqual(got[c.at], want) {
			t.Errorf("%s: bytes %d-%d hold\n  %+v\nthe tools say\n  %+v", c.name, c.at.Off, c.at.End(), got[c.at], want)
		}
		delete(got, c.at)
	}
	if len(got) > 0 {
		t.Errorf("hits for ranges not asked about: %+v", got)
	}
}

func hit(kind string, n int64, paths ...string) Hit {
	if len(paths) == 0 {
		paths = nil
	}
	return Hit{Kind: kind, Bytes: n, Paths: paths}
}

func debugfs(t *testing.T, img, cmd string) string {
	t.Helper()
	return tooltest.Run(t, "debugfs", "-R", cmd, img)
}

// extFixture makes a 32 MiB ext4 of 1 KiB blocks (four groups: backups
// of the superblock) with mkfs.ext4 -d, and a fragmented file debugfs
// writes into the hole a removed file left.
func extFixture(t *testing.T) string {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		return b
	}
	write := func(p string, n int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), data(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/thesis.odt", 20000)
	write("a/orig.bin", 8192)
	if err := os.MkdirAll(filepath.Join(src, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "a/orig.bin"), filepath.Join(src, "b/hard.bin")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 150; i++ {
		write(fmt.Sprintf("many/file-with-a-longish-name-%d.txt", i), 10)
	}
	write("filler1", 30000)
	write("filler2", 30000)
	frag := filepath.Join(dir, "frag.bin")
	if err := os.WriteFile(frag, data(70000), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "ext4.img")
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "1024", "-g", "8192", "-N", "512", "-d", src, img, "32M")
	tooltest.Run(t, "debugfs", "-w", "-R", "rm /filler1", img)
	tooltest.Run(t, "debugfs", "-w", "-R", "write "+frag+" frag.bin", img)
	tooltest.Run(t, "e2fsck", "-fn", img)
	return img
}

// extBlocks is what debugfs blocks lists of path: its data blocks.
func extBlocks(t *testing.T, img, p string) []int64 {
	t.Helper()
	var out []int64
	for _, f := range strings.Fields(lastLines(debugfs(t, img, "blocks "+p))) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("debugfs blocks %s: %q", p, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		t.Fatalf("debugfs blocks %s: none", p)
	}
	return out
}

// lastLines drops debugfs's banner.
func lastLines(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "debugfs ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// extOwner is what debugfs says holds block blk: icheck's inode,
// ncheck's paths of it, and stat's type; "" if no inode holds it.
func extOwner(t *testing.T, img string, blk int64) (kind string, ino int, paths []string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + strconv.FormatInt(blk, 10) + `\t(\d+)$`).FindStringSubmatch(debugfs(t, img, fmt.Sprintf("icheck %d", blk)))
	if m == nil {
		return "", 0, nil
	}
	ino, _ = strconv.Atoi(m[1])
	for _, l := range strings.Split(debugfs(t, img, "ncheck "+m[1]), "\n") {
		if f := strings.SplitN(l, "\t", 2); len(f) == 2 && f[0] == m[1] {
			paths = append(paths, path.Clean(f[1])) // ncheck says "//b" of a directory in the root
		}
	}
	kind = KindFile
	if strings.Contains(debugfs(t, img, "stat <"+m[1]+">"), "Type: directory") {
		kind = KindDir
	}
	return kind, ino, paths
}

// dumpe2fsAt finds a group's metadata block in dumpe2fs's listing: the
// first number after what (in group g's lines).
func dumpe2fsAt(t *testing.T, out string, g int, what string) int64 {
	t.Helper()
	i := strings.Index(out, fmt.Sprintf("\nGroup %d:", g))
	if i < 0 {
		t.Fatalf("dumpe2fs: no group %d", g)
	}
	m := regexp.MustCompile(regexp.QuoteMeta(what) + ` (\d+)`).FindStringSubmatch(out[i:])
	if m == nil {
		t.Fatalf("dumpe2fs: group %d has no %q", g, what)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func TestClassifyExt4(t *testing.T) {
	img := extFixture(t)
	const bs = 1024
	blk := func(b int64) block.Extent { return block.Extent{Off: b * bs, Len: bs} }
	var cases []rangeCase
	// A block of each file: what icheck and ncheck say of it.
	owned := func(name, p string, i int) {
		t.Helper()
		b := extBlocks(t, img, p)[i]
		kind, _, paths := extOwner(t, img, b)
		if len(paths) == 0 {
			t.Fatalf("debugfs finds no path of block %d of %s", b, p)
		}
		cases = append(cases, rangeCase{name, blk(b), []Hit{hit(kind, bs, paths...)}})
	}
	owned("a file", "/docs/thesis.odt", 3)
	frag := extBlocks(t, img, "/frag.bin")
	if frag[len(frag)-1]-frag[0] == int64(len(frag)-1) {
		t.Fatalf("/frag.bin is not fragmented: blocks %v", frag)
	}
	owned("a fragmented file's first extent", "/frag.bin", 0)
	owned("a fragmented file's last extent", "/frag.bin", len(frag)-1)
	owned("a hard-linked file", "/b/hard.bin", 2)
	owned("a directory", "/many", 1)
	if c := cases[len(cases)-2]; len(c.want[0].Paths) != 2 {
		t.Fatalf("ncheck gives the hard-linked file %v, not two paths", c.want[0].Paths)
	}
	// The journal's first block: icheck says inode 8.
	jb := extBlocks(t, img, "<8>")[0]
	if _, ino, _ := extOwner(t, img, jb); ino != 8 {
		t.Fatalf("icheck: block %d of <8> is inode %d's", jb, ino)
	}
	cases = append(cases, rangeCase{"the journal", blk(jb), []Hit{hit(KindMeta, bs, "journal")}})

	// Metadata where dumpe2fs says it is.
	dump := tooltest.Run(t, "dumpe2fs", img)
	for _, m := range []struct {
		g    int
		what string
		name string
	}{
		{0, "Primary superblock at", "superblock"},
		{1, "Backup superblock at", "superblock"},
		{3, "Group descriptors at", "group descriptors"},
		{0, "Reserved GDT blocks at", "reserved GDT"},
		{1, "Block bitmap at", "block bitmap"},
		{2, "Inode bitmap at", "inode bitmap"},
	} {
		b := dumpe2fsAt(t, dump, m.g, m.what)
		cases = append(cases, rangeCase{fmt.Sprintf("group %d: %s", m.g, m.what), blk(b), []Hit{hit(KindMeta, bs, m.name)}})
	}
	// The resize inode's blocks in a backup group's reserved GDT.
	rb := dumpe2fsAt(t, dump, 3, "Reserved GDT blocks at")
	if _, ino, _ := extOwner(t, img, rb); ino != 7 {
		t.Fatalf("icheck: reserved GDT block %d is inode %d's", rb, ino)
	}
	cases = append(cases, rangeCase{"a backup reserved GDT block", blk(rb), []Hit{hit(KindMeta, bs, "reserved GDT")}})

	// An inode: its 256 bytes in the inode table (debugfs imap) hold
	// the file as much as its data does.
	m := regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`).FindStringSubmatch(debugfs(t, img, "imap /docs/thesis.odt"))
	if m == nil {
		t.Fatal("debugfs imap /docs/thesis.odt: no location")
	}
	ib, _ := strconv.ParseInt(m[1], 10, 64)
	io, _ := strconv.ParseInt(m[2], 16, 64)
	cases = append(cases, rangeCase{"an inode", block.Extent{Off: ib*bs + io, Len: 256},
		[]Hit{hit(KindFile, 256, "/docs/thesis.odt"), hit(KindMeta, 256, "inode table")}})

	// Free space: the last block, which testb says is free.
	last := int64(32<<20)/bs - 1
	if !strings.Contains(debugfs(t, img, fmt.Sprintf("testb %d", last)), "not in use") {
		t.Fatalf("block %d is in use", last)
	}
	cases = append(cases, rangeCase{"free space", blk(last), []Hit{hit(KindFree, bs)}})

	// One range over a file's last two blocks and the two after them,
	// each judged by icheck and testb.
	fb := frag[len(frag)-1]
	var fileBytes, freeBytes int64
	for b := fb - 1; b < fb+3; b++ {
		switch kind, _, paths := extOwner(t, img, b); {
		case kind == KindFile && reflect.DeepEqual(paths, []string{"/frag.bin"}):
			fileBytes += bs
		case kind == "" && strings.Contains(debugfs(t, img, fmt.Sprintf("testb %d", b)), "not in use"):
			freeBytes += bs
		default:
			t.Fatalf("block %d: %s %v", b, kind, paths)
		}
	}
	if fileBytes != 2*bs || freeBytes != 2*bs {
		t.Fatalf("blocks %d-%d: %d bytes of /frag.bin, %d free", fb-1, fb+2, fileBytes, freeBytes)
	}
	// (The case of the last extent's last block is replaced by this.)
	for i, c := range cases {
		if c.at == blk(fb) {
			cases = append(cases[:i], cases[i+1:]...)
			break
		}
	}
	cases = append(cases, rangeCase{"a file's end and free space after it", block.Extent{Off: (fb - 1) * bs, Len: 4 * bs},
		[]Hit{hit(KindFile, fileBytes, "/frag.bin"), hit(KindFree, freeBytes)}})
	check(t, img, "ext4", cases)
}

// fatFixture makes a FAT volume of 512-byte clusters with mkfs.fat and
// mtools: a file, a directory of many entries (its chain interleaved
// with its files'), a file fragmented by filling the volume, removing a
// file and writing one larger than the hole. It returns the image, the
// clusters the removed file had that nothing took again, and fsck.fat's
// description of the volume.
func fatFixture(t *testing.T, bits string, kib int) (img string, freed []int64, info string) {
	dir := t.TempDir()
	img = filepath.Join(dir, "fat.img")
	tooltest.Run(t, "mkfs.fat", "-F", bits, "-s", "1", "-C", img, strconv.Itoa(kib))
	t.Setenv("MTOOLS_SKIP_CHECK", "1")
	put := func(name string, n int) {
		t.Helper()
		local := filepath.Join(dir, "local")
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*13 + n)
		}
		if err := os.WriteFile(local, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tooltest.Run(t, "mcopy", "-i", img, local, "::"+name)
	}
	tooltest.Run(t, "mmd", "-i", img, "::/docs", "::/many")
	put("/docs/thesis.odt", 20000)
	put("/filler1", 30000)
	for i := 1; i <= 40; i++ {
		put(fmt.Sprintf("/many/file-with-a-longish-name-%d.txt", i), 10)
	}
	m := regexp.MustCompile(`(\d+)/(\d+) clusters`).FindStringSubmatch(tooltest.Run(t, "fsck.fat", "-n", img))
	if m == nil {
		t.Fatal("fsck.fat: no cluster count")
	}
	usedC, _ := strconv.Atoi(m[1])
	allC, _ := strconv.Atoi(m[2])
	put("/big.bin", (allC-usedC-100)*512) // 100 clusters left at the end
	before := mshowfat(t, img, "/filler1")
	tooltest.Run(t, "mdel", "-i", img, "::/filler1")
	put("/frag.bin", 70000) // 137 clusters: the 100, then the hole
	taken := map[int64]bool{}
	for _, c := range mshowfat(t, img, "/frag.bin") {
		taken[c] = true
	}
	if len(taken) == 0 || !taken[before[0]] {
		t.Fatalf("frag.bin took none of the clusters filler1 left")
	}
	for _, c := range mshowfat(t, img, "/big.bin") {
		taken[c] = true
	}
	// What filler1 left and frag.bin did not take, or the volume's
	// last cluster: what mkfs.fat gave nobody, or mtools took back.
	for _, c := range append(before, int64(allC)+1) {
		if !taken[c] {
			freed = append(freed, c)
		}
	}
	if len(freed) == 0 {
		t.Fatal("frag.bin took every cluster left")
	}
	return img, freed, tooltest.Run(t, "fsck.fat", "-n", "-v", img)
}

// mshowfat lists the clusters of name's chain.
func mshowfat(t *testing.T, img, name string) []int64 {
	t.Helper()
	out := tooltest.Run(t, "mshowfat", "-i", img, "::"+name)
	var cs []int64
	for _, m := range regexp.MustCompile(`<(\d+)(?:-(\d+))?>`).FindAllStringSubmatch(out, -1) {
		a, _ := strconv.ParseInt(m[1], 10, 64)
		b := a
		if m[2] != "" {
			b, _ = strconv.ParseInt(m[2], 10, 64)
		}
		for c := a; c <= b; c++ {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		t.Fatalf("mshowfat %s: %q", name, out)
	}
	return cs
}

// fsckNumber finds the number before (or, with after set, after) what
// in fsck.fat -v's description.
func fsckNumber(t *testing.T, info, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("fsck.fat -v says nothing like %q:\n%s", re, info)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func testClassifyFAT(t *testing.T, bits string, kib int, fs string) {
	img, freed, info := fatFixture(t, bits, kib)
	const cs = 512
	data := fsckNumber(t, info, `Data area starts at byte (\d+)`)
	fat := fsckNumber(t, info, `First FAT starts at byte (\d+)`)
	perFAT := fsckNumber(t, info, `(\d+) bytes per FAT`)
	cl := func(c int64) block.Extent { return block.Extent{Off: data + (c-2)*cs, Len: cs} }
	var cases []rangeCase
	owned := func(name, p string, i int, kind string) []int64 {
		t.Helper()
		c := mshowfat(t, img, p)
		cases = append(cases, rangeCase{name, cl(c[i]), []Hit{hit(kind, cs, p)}})
		return c
	}
	owned("a file", "/docs/thesis.odt", 7, KindFile)
	frag := mshowfat(t, img, "/frag.bin")
	if frag[len(frag)-1]-frag[0] == int64(len(frag)-1) {
		t.Fatalf("/frag.bin is not fragmented: %v", frag)
	}
	owned("a fragmented file's first run", "/frag.bin", 0, KindFile)
	owned("a fragmented file's last run", "/frag.bin", len(frag)-1, KindFile)
	if many := owned("a directory", "/many", 1, KindDir); len(many) < 2 {
		t.Fatalf("/many has %d clusters", len(many))
	}
	cases = append(cases,
		rangeCase{"free space", cl(freed[len(freed)-1]), []Hit{hit(KindFree, cs)}},
		rangeCase{"the boot sector", block.Extent{Off: 0, Len: 512}, []Hit{hit(KindMeta, 512, "boot sector")}},
		rangeCase{"the first FAT", block.Extent{Off: fat, Len: 1024}, []Hit{hit(KindMeta, 1024, "FAT")}},
		rangeCase{"the second FAT's end", block.Extent{Off: fat + 2*perFAT - 512, Len: 512}, []Hit{hit(KindMeta, 512, "FAT")}},
	)
	if fs == "fat32" {
		root := mshowfat(t, img, "/")
		cases = append(cases,
			rangeCase{"the root directory", cl(root[0]), []Hit{hit(KindDir, cs, "/")}},
			rangeCase{"FSInfo", block.Extent{Off: 512, Len: 512}, []Hit{hit(KindMeta, 512, "reserved sectors")}})
	} else {
		at := fsckNumber(t, info, `Root directory starts at byte (\d+)`)
		cases = append(cases, rangeCase{"the root directory", block.Extent{Off: at + 512, Len: 1024}, []Hit{hit(KindMeta, 1024, "root directory")}})
	}
	check(t, img, fs, cases)
}

func TestClassifyFAT32(t *testing.T) { testClassifyFAT(t, "32", 40960, "fat32") }
func TestClassifyFAT16(t *testing.T) { testClassifyFAT(t, "16", 20480, "fat16") }

// ntfsFixture makes a 64 MiB NTFS of 4 KiB clusters with mkntfs and
// writes its files through ntfs-3g: a file, a hard link, a directory
// large enough for an $INDEX_ALLOCATION, a file fragmented by filling
// the volume around a hole, and a removed file whose clusters stay
// free. It returns the image and the clusters the removed file had.
func ntfsFixture(t *testing.T) (img string, freed []int64) {
	dir := t.TempDir()
	img = filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", img)
	mnt := t.TempDir()
	mount := func() {
		tooltest.Run(t, "ntfs-3g", img, mnt)
		t.Cleanup(func() { exec.Command("fusermount", "-u", mnt).Run() })
	}
	mount()
	write := func(p string, n int64) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mnt, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*11 + int(n))
		}
		if err := os.WriteFile(filepath.Join(mnt, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	avail := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * st.Bsize
	}
	write("docs/thesis.odt", 20000)
	write("a/orig.bin", 8192)
	if err := os.MkdirAll(filepath.Join(mnt, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(mnt, "a/orig.bin"), filepath.Join(mnt, "b/hard.bin")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 150; i++ {
		write(fmt.Sprintf("many/file-with-a-longish-name-%d.txt", i), 10)
	}
	// Sixty hard links of long names overflow the file's record: its
	// $FILE_NAMEs go to extension records an $ATTRIBUTE_LIST names.
	write("links/orig.dat", 9000)
	for i := 1; i <= 60; i++ {
		if err := os.Link(filepath.Join(mnt, "links/orig.dat"), filepath.Join(mnt, fmt.Sprintf("links/a-rather-long-name-for-a-hard-link-so-the-record-overflows-%d.dat", i))); err != nil {
			t.Fatal(err)
		}
	}
	write("small.txt", 6) // resident: in its MFT record only
	write("filler1", 30000)
	write("big.bin", avail()-40000)
	if err := os.Remove(filepath.Join(mnt, "filler1")); err != nil {
		t.Fatal(err)
	}
	write("frag.bin", avail()-2*4096) // the hole and the end both
	tooltest.Run(t, "fusermount", "-u", mnt)
	for _, r := range ntfsRuns(t, img, "/big.bin", 0x80) {
		for c := r[0]; c < r[0]+r[1]; c++ {
			freed = append(freed, c)
		}
	}
	mount()
	if err := os.Remove(filepath.Join(mnt, "big.bin")); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "fusermount", "-u", mnt)
	return img, freed
}

// ntfsRuns is what ntfscluster -F says of path's attribute typ: its
// runs, as LCN and length.
func ntfsRuns(t *testing.T, img, p string, typ int) [][2]int64 {
	t.Helper()
	out := tooltest.Run(t, "ntfscluster", "-F", p, img)
	var runs [][2]int64
	in := false
	for _, l := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^\s+0x([0-9a-f]+) - `).FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseInt(m[1], 16, 64)
			in = int(v) == typ
			continue
		}
		if m := regexp.MustCompile(`^\s+(\d+)\s+(\d+)\s+(\d+)\s*$`).FindStringSubmatch(l); m != nil && in {
			lcn, _ := strconv.ParseInt(m[2], 10, 64)
			n, _ := strconv.ParseInt(m[3], 10, 64)
			runs = append(runs, [2]int64{lcn, n})
		}
	}
	if len(runs) == 0 {
		t.Fatalf("ntfscluster -F %s: no runs of attribute %#x:\n%s", p, typ, out)
	}
	return runs
}

// ntfsLinks finds every path of each MFT record through ntfs-3g (whose
// inode numbers are MFT record numbers), as ncheck would.
func ntfsLinks(t *testing.T, img string) map[uint64][]string {
	t.Helper()
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", "-o", "ro", img, mnt)
	defer tooltest.Run(t, "fusermount", "-u", mnt)
	links := map[uint64][]string{}
	err := filepath.WalkDir(mnt, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		ino := fi.Sys().(*syscall.Stat_t).Ino
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, mnt), "/")
		links[ino] = append(links[ino], path.Clean(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// ntfsOwners is what ntfscluster says holds the cluster or sector at:
// each inode it finds, as Hits of n bytes, paths from links.
func ntfsOwners(t *testing.T, img, flag string, at int64, n int64, links map[uint64][]string) []Hit {
	t.Helper()
	out := tooltest.Run(t, "ntfscluster", flag, strconv.FormatInt(at, 10), img)
	byKind := map[string]map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^Inode (\d+) (.*)/(\$[A-Z_]+)[^/]*$`).FindAllStringSubmatch(out, -1) {
		ino, _ := strconv.ParseUint(m[1], 10, 64)
		kind, names := KindFile, links[ino]
		switch {
		case ino < 16 && ino != 5, strings.HasPrefix(m[2], "/$Extend"):
			kind, names = KindMeta, []string{strings.TrimPrefix(m[2], "/")}
		case m[3] == "$INDEX_ALLOCATION":
			kind = KindDir
		}
		if len(names) == 0 {
			t.Fatalf("ntfscluster %s %d: inode %d has no path through ntfs-3g", flag, at, ino)
		}
		if byKind[kind] == nil {
			byKind[kind] = map[string]bool{}
		}
		for _, p := range names {
			byKind[kind][p] = true
		}
	}
	var hits []Hit
	for _, kind := range []string{KindFile, KindDir, KindMeta} {
		if byKind[kind] != nil {
			hits = append(hits, hit(kind, n, sorted(byKind[kind])...))
		}
	}
	if len(hits) == 0 {
		if !strings.Contains(out, "no inode found") {
			t.Fatalf("ntfscluster %s %d: %s", flag, at, out)
		}
		hits = []Hit{hit(KindFree, n)}
	}
	return hits
}

func TestClassifyNTFS(t *testing.T) {
	img, freed := ntfsFixture(t)
	links := ntfsLinks(t, img)
	const cs = 4096
	var cases []rangeCase
	cluster := func(name string, c int64) {
		t.Helper()
		cases = append(cases, rangeCase{name, block.Extent{Off: c * cs, Len: cs}, ntfsOwners(t, img, "-c", c, cs, links)})
	}
	cluster("a file", ntfsRuns(t, img, "/docs/thesis.odt", 0x80)[0][0]+2)
	frag := ntfsRuns(t, img, "/frag.bin", 0x80)
	if len(frag) < 2 {
		t.Fatalf("/frag.bin is not fragmented: %v", frag)
	}
	cluster("a fragmented file's first run", frag[0][0])
	cluster("a fragmented file's last run", frag[len(frag)-1][0]+frag[len(frag)-1][1]-1)
	cluster("a hard-linked file", ntfsRuns(t, img, "/a/orig.bin", 0x80)[0][0])
	if c := cases[len(cases)-1]; len(c.want) != 1 || len(c.want[0].Paths) != 2 {
		t.Fatalf("ntfs-3g does not give the hard-linked file two paths: %+v", c.want)
	}
	cluster("a directory's index", ntfsRuns(t, img, "/many", 0xa0)[0][0])
	cluster("$LogFile", ntfsRuns(t, img, "/$LogFile", 0x80)[0][0]+3)
	cluster("$Boot", 0)
	cluster("free space", freed[len(freed)/2])
	if c := cases[len(cases)-1]; c.want[0].Kind != KindFree {
		t.Fatalf("the removed file's cluster is still held: %+v", c.want)
	}
	// A file's MFT record: $MFT's, and the file's (for a resident one,
	// all it has).
	b := make([]byte, 512)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mft := int64(binary.LittleEndian.Uint64(b[0x30:])) * cs
	for _, p := range []string{"/docs/thesis.odt", "/small.txt"} {
		var ino uint64
		for i, ps := range links {
			if slices.Contains(ps, p) {
				ino = i
			}
		}
		at := mft + int64(ino)*1024
		want := ntfsOwners(t, img, "-s", at/512, 1024, links)
		if len(want) != 1 || want[0].Kind != KindMeta || !reflect.DeepEqual(want[0].Paths, []string{"$MFT"}) {
			t.Fatalf("ntfscluster: sector %d is not $MFT's: %+v", at/512, want)
		}
		cases = append(cases, rangeCase{"the MFT record of " + p, block.Extent{Off: at, Len: 1024},
			[]Hit{hit(KindFile, 1024, p), want[0]}})
	}
	// The file of many links: its data and its attribute list name
	// every link; so does an extension record of it.
	cluster("a file of 61 links", ntfsRuns(t, img, "/links/orig.dat", 0x80)[0][0])
	if c := cases[len(cases)-1]; len(c.want) != 1 || len(c.want[0].Paths) != 61 {
		t.Fatalf("ntfs-3g does not give /links/orig.dat 61 paths: %+v", c.want)
	}
	cluster("an $ATTRIBUTE_LIST", ntfsRuns(t, img, "/links/orig.dat", 0x20)[0][0])
	info := tooltest.Run(t, "ntfsinfo", "-v", "-F", "/links/orig.dat", img)
	var base, ext int64 = -1, -1
	for _, m := range regexp.MustCompile(`from mft record (\d+) `).FindAllStringSubmatch(info, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		if base < 0 {
			base = n
		} else if n != base {
			ext = n
		}
	}
	if ext < 0 {
		t.Fatalf("ntfsinfo: /links/orig.dat has no extension record:\n%s", info)
	}
	at := mft + ext*1024
	want := ntfsOwners(t, img, "-s", at/512, 1024, links)
	cases = append(cases, rangeCase{"an extension record", block.Extent{Off: at, Len: 1024},
		[]Hit{hit(KindFile, 1024, cases[len(cases)-1].want[0].Paths...), want[0]}})
	check(t, img, "ntfs", cases)
}

// The blocks a file's mapping takes are the file's: an ext4 extent
// tree's leaf block and an ext3 indirect block (as icheck says); and
// the quota and orphan files are metadata by name.
func TestClassifyExtTrees(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), bytes.Repeat([]byte("b"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	// Twelve pieces apart: more extents than the inode holds.
	sparse, err := os.Create(filepath.Join(src, "sparse.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(12) {
		if _, err := sparse.WriteAt(bytes.Repeat([]byte("z"), 1024), i*20480); err != nil {
			t.Fatal(err)
		}
	}
	sparse.Close()
	const bs = 1024
	blk := func(b int64) block.Extent { return block.Extent{Off: b * bs, Len: bs} }
	owner := func(img string, b int64) []Hit {
		t.Helper()
		kind, _, paths := extOwner(t, img, b)
		if len(paths) == 0 {
			t.Fatalf("debugfs finds no path of block %d", b)
		}
		return []Hit{hit(kind, bs, paths...)}
	}
	number := func(s, re string) int64 {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no %q in\n%s", re, s)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}

	e4 := filepath.Join(dir, "ext4.img")
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "quota,orphan_file", "-d", src, e4, "8M")
	leaf := number(debugfs(t, e4, "ex /sparse.bin"), `(?m)^\s*0/\s*1\s+\d+/\s*\d+\s+\d+ -\s+\d+\s+(\d+)`)
	quota := extBlocks(t, e4, "<3>")[0]
	orphan := extBlocks(t, e4, "<12>")[0]
	for b, ino := range map[int64]int{quota: 3, orphan: 12} {
		if _, got, _ := extOwner(t, e4, b); got != ino {
			t.Fatalf("icheck: block %d is inode %d's, not %d's", b, got, ino)
		}
	}
	if !strings.Contains(tooltest.Run(t, "dumpe2fs", "-h", e4), "orphan_file") {
		t.Fatal("mkfs.ext4 made no orphan file")
	}
	check(t, e4, "ext4", []rangeCase{
		{"an extent tree leaf", blk(leaf), owner(e4, leaf)},
		{"the user quota file", blk(quota), []Hit{hit(KindMeta, bs, "user quota")}},
		{"the orphan file", blk(orphan), []Hit{hit(KindMeta, bs, "orphan file")}},
	})

	e3 := filepath.Join(dir, "ext3.img")
	tooltest.Run(t, "mkfs.ext3", "-q", "-F", "-b", "1024", "-d", src, e3, "8M")
	ind := number(debugfs(t, e3, "stat /big.bin"), `\(IND\):(\d+)`)
	check(t, e3, "ext3", []rangeCase{{"an indirect block", blk(ind), owner(e3, ind)}})
}
