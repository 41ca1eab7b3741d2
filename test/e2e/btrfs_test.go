package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/btrfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// btrfs over a used disk's garbage, made by mkfs.btrfs and filled
// through the kernel, imaged, restored and judged by btrfs's own tools:
// btrfs check, a scrub that reads every copy of every block, the files
// of every subvolume and snapshot, and the extent tree as dump-tree lists
// it. The image is compared with partclone.btrfs's, piped through zstd.

// mkBtrfs makes a btrfs of size bytes over garbage and returns its file.
func mkBtrfs(t *testing.T, size int64, args ...string) string {
	t.Helper()
	p := tooltest.Garbage(t, size)
	sh(t, "mkfs.btrfs", append(append([]string{"-q", "-f", "--nodiscard"}, args...), p)...)
	return p
}

// btrfsMount mounts file through a loop device and returns the mount
// point; done unmounts it.
var btrfsMount = tooltest.Mount

// btrfsFill writes n bytes made from seed to p: random, or text (which
// compresses).
func btrfsFill(t *testing.T, p string, n int, seed uint64, text bool) {
	t.Helper()
	b := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := 0; i+8 <= n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	if text {
		for i := range b {
			b[i] = "etaoin shrdlu\n"[b[i]%14]
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// populateBtrfs fills a btrfs through the kernel with compression on:
// many small files, random and compressible data (mib MiB of each kind
// in all), subvolumes (one nested), reflinked copies across them, a
// snapshot that then diverges, and deletions whose blocks keep their
// old bytes (nodiscard).
func populateBtrfs(t *testing.T, img string, mib int) {
	t.Helper()
	mnt, done := btrfsMount(t, img, "compress=zstd,nodiscard")
	defer done()
	for _, sub := range []string{"sub1", "sub2", "sub1/nested"} {
		sh(t, "btrfs", "subvolume", "create", filepath.Join(mnt, sub))
	}
	for i := 0; i < 600; i++ {
		dir := []string{"small", "sub1/small", "sub2", "sub1/nested"}[i%4]
		btrfsFill(t, filepath.Join(mnt, dir, fmt.Sprintf("d%d/f%d", i%9, i)), i*37%6000, uint64(i), i%2 == 0)
	}
	for i := 0; i < mib/4; i++ {
		btrfsFill(t, filepath.Join(mnt, "sub1", fmt.Sprintf("random%d", i)), 3<<20+i*4099, uint64(1000+i), false)
		btrfsFill(t, filepath.Join(mnt, "sub2", fmt.Sprintf("text%d", i)), 1<<20+i*333, uint64(2000+i), true)
	}
	sh(t, "cp", "--reflink=always", filepath.Join(mnt, "sub1", "random0"), filepath.Join(mnt, "sub2", "reflink0"))
	sh(t, "cp", "--reflink=always", filepath.Join(mnt, "sub2", "text0"), filepath.Join(mnt, "reflink-text0"))
	sh(t, "btrfs", "subvolume", "snapshot", filepath.Join(mnt, "sub1"), filepath.Join(mnt, "snap1"))
	f, err := os.OpenFile(filepath.Join(mnt, "sub1", "random0"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("after the snapshot "), 50000), 1<<20)
	f.Close()
	btrfsFill(t, filepath.Join(mnt, "gone", "big"), 20<<20, 9, false)
	sh(t, "sync")
	for _, p := range []string{"gone", "small/d1", "sub1/small/d2"} {
		if err := os.RemoveAll(filepath.Join(mnt, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// btrfsTruth is what btrfs's own dump-tree says is in use: every extent
// item of the extent tree on every copy of its chunk, the first MiB and
// the superblocks (64 KiB, 64 MiB, 256 GiB) inside the device. chunks is
// every byte of every chunk, with the same extras.
func btrfsTruth(t *testing.T, img string) (truth, chunks *block.Map) {
	t.Helper()
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	nodesize := regexp.MustCompile(`(?m)^nodesize\s+(\d+)`).FindStringSubmatch(sh(t, "btrfs", "inspect-internal", "dump-super", img))
	if nodesize == nil {
		t.Fatal("dump-super shows no nodesize")
	}
	ns, _ := strconv.ParseInt(nodesize[1], 10, 64)
	type chunk struct {
		logical, length int64
		stripes         []int64
	}
	var cs []chunk
	reChunk := regexp.MustCompile(`CHUNK_ITEM (\d+)\)`)
	reLen := regexp.MustCompile(`^\s+length (\d+) owner \d+ stripe_len \d+ type (\S+)`)
	reStripe := regexp.MustCompile(`^\s+stripe \d+ devid \d+ offset (\d+)`)
	for _, line := range strings.Split(sh(t, "btrfs", "inspect-internal", "dump-tree", "-t", "chunk", img), "\n") {
		num := func(m []string) int64 { v, _ := strconv.ParseInt(m[1], 10, 64); return v }
		if m := reChunk.FindStringSubmatch(line); m != nil {
			cs = append(cs, chunk{logical: num(m)})
		} else if m := reLen.FindStringSubmatch(line); m != nil && len(cs) > 0 {
			if strings.Contains(m[2], "RAID") {
				t.Fatalf("profile %s is not mapped by this test", m[2])
			}
			cs[len(cs)-1].length = num(m)
		} else if m := reStripe.FindStringSubmatch(line); m != nil && len(cs) > 0 {
			cs[len(cs)-1].stripes = append(cs[len(cs)-1].stripes, num(m))
		}
	}
	truth, _ = block.NewMap(4096, size)
	chunks, _ = block.NewMap(4096, size)
	for _, m := range []*block.Map{truth, chunks} {
		m.SetBytes(0, 1<<20)
		for _, off := range []int64{64 << 10, 64 << 20, 256 << 30} {
			if off+4096 <= size {
				m.SetBytes(off, 4096)
			}
		}
	}
	for _, c := range cs {
		for _, s := range c.stripes {
			chunks.SetBytes(s, c.length)
		}
	}
	reExtent := regexp.MustCompile(`key \((\d+) (EXTENT_ITEM|METADATA_ITEM) (\d+)\)`)
	n := 0
	for _, m := range reExtent.FindAllStringSubmatch(sh(t, "btrfs", "inspect-internal", "dump-tree", "-t", "extent", img), -1) {
		l, _ := strconv.ParseInt(m[1], 10, 64)
		length, _ := strconv.ParseInt(m[3], 10, 64)
		if m[2] == "METADATA_ITEM" {
			length = ns
		}
		found := false
		for _, c := range cs {
			if l >= c.logical && l+length <= c.logical+c.length {
				for _, s := range c.stripes {
					truth.SetBytes(s+l-c.logical, length)
				}
				found = true
			}
		}
		if !found {
			t.Fatalf("extent %d+%d is in no chunk", l, length)
		}
		n++
	}
	if n == 0 || len(cs) == 0 {
		t.Fatalf("dump-tree of %s: %d chunks, %d extents", img, len(cs), n)
	}
	return truth, chunks
}

// mapDiff returns the runs of bytes a marks and b does not.
func mapDiff(a, b *block.Map) []block.Extent {
	var out []block.Extent
	a.Runs(0, a.Len(), func(e block.Extent) {
		cur := e.Off
		gap := func(lo, hi int64) {
			if hi > lo {
				out = append(out, block.Extent{Off: lo, Len: hi - lo})
			}
		}
		b.Runs(e.Off, e.Len, func(r block.Extent) { gap(cur, r.Off); cur = r.End() })
		gap(cur, e.End())
	})
	return out
}

func extentBytesOf(es []block.Extent) (n int64) {
	for _, e := range es {
		n += e.Len
	}
	return n
}

// btrfsInfo is the part of info --json these tests read.
type btrfsInfo struct {
	Warnings   []string `json:"warnings"`
	ImageBytes int64    `json:"image_bytes"`
	Partitions []struct {
		Filesystem string `json:"filesystem"`
		Label      string `json:"label"`
		UUID       string `json:"uuid"`
		Note       string `json:"note"`
		UsedBytes  int64  `json:"used_bytes"`
	} `json:"partitions"`
}

func infoBtrfs(t *testing.T, img string) btrfsInfo {
	t.Helper()
	var j btrfsInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "btrfs" {
		t.Fatalf("info: %+v, want one btrfs", j.Partitions)
	}
	return j
}

// checkBtrfsCopy judges a restored btrfs: btrfs check finds nothing, a
// scrub reading every copy of every block finds nothing, and it holds
// the files of want (every subvolume and snapshot) byte for byte.
func checkBtrfsCopy(t *testing.T, want, got string) {
	t.Helper()
	sh(t, "btrfs", "check", "--readonly", got)
	// The copy is mounted beside want, which has the same fsid: the
	// kernel's temp-fsid mount races udev's scan of the new loop device
	// ("File exists"), so the copy gets a metadata UUID of its own first
	// (superblocks only; the scrub still reads every copy of every block).
	btrfsOwnFsid(t, got)
	gm, gdone := btrfsMount(t, got, "ro")
	defer gdone()
	out := sh(t, "btrfs", "scrub", "start", "-B", "-r", gm)
	if !strings.Contains(out, "no errors found") {
		t.Errorf("scrub of the restored copy:\n%s", out)
	}
	t.Logf("scrub of the restored copy: %s", regexp.MustCompile(`(?m)^(Total to scrub|Error summary):.*$`).FindAllString(out, -1))
	wm, wdone := btrfsMount(t, want, "ro")
	defer wdone()
	sameTree(t, wm, gm)
}

// TestBtrfs images btrfs as mkfs.btrfs makes it and as the kernel fills
// it, and judges the restored copy with btrfs's tools. The image stores
// the extent tree's allocations on every copy (both DUP copies: the
// scrub reads them), and is at most 5 % larger than partclone's | zstd.
func TestBtrfs(t *testing.T) {
	tree := t.TempDir()
	for i := 0; i < 300; i++ {
		btrfsFill(t, filepath.Join(tree, fmt.Sprintf("d%d/f%d", i%13, i)), i*211%90000, uint64(i+5000), i%3 == 0)
	}
	cases := []struct {
		name string
		size int64
		mib  int // data to write through the kernel
		args []string
	}{
		{"dup", 1 << 30, 140, []string{"-L", "platter-dup"}},
		{"single", 512 << 20, 60, []string{"-m", "single", "-d", "single", "-L", "single"}},
		{"mixed", 256 << 20, 40, []string{"--mixed", "-L", "mixed"}},
		{"rootdir", 512 << 20, 20, []string{"--rootdir", tree}},
		{"block-group-tree", 512 << 20, 20, []string{"-O", "block-group-tree"}},
	}
	features := sh(t, "mkfs.btrfs", "-O", "list-all")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "block-group-tree" && !strings.Contains(features, "block-group-tree") {
				t.Skipf("this mkfs.btrfs cannot make a block-group tree:\n%s", features)
			}
			src := mkBtrfs(t, tc.size, tc.args...)
			populateBtrfs(t, src, tc.mib)
			img := filepath.Join(t.TempDir(), "fs.platter")
			ok(t, "create", "--progress", "none", src, img)
			j := infoBtrfs(t, img)
			p := j.Partitions[0]
			if len(j.Warnings) != 0 || p.Note != "" {
				t.Errorf("warnings %q, note %q for a healthy btrfs", j.Warnings, p.Note)
			}
			if want := tooltest.Blkid(t, src, "UUID"); p.UUID != want {
				t.Errorf("info UUID %q, blkid %q", p.UUID, want)
			}
			if want := tooltest.Blkid(t, src, "LABEL"); p.Label != want {
				t.Errorf("info label %q, blkid %q", p.Label, want)
			}
			text := ok(t, "info", img)
			if !strings.Contains(text, "btrfs UUID "+p.UUID) {
				t.Errorf("info does not name btrfs and its UUID:\n%s", text)
			}

			// The map Platter stored is exactly what btrfs allocates,
			// every copy; partclone copies bytes btrfs calls free and
			// lacks the second DUP copy.
			u, err := tooltest.DetectFile(t, src, btrfs.Detect)
			if err != nil {
				t.Fatal(err)
			}
			m := tooltest.LoadUsage(t, u)
			if m.UsedBytes() != p.UsedBytes {
				t.Errorf("image records %d used bytes, the map %d", p.UsedBytes, m.UsedBytes())
			}
			truth, chunks := btrfsTruth(t, src)
			if d := mapDiff(truth, m); len(d) > 0 {
				t.Errorf("%d allocated bytes not stored, first at %d", extentBytesOf(d), d[0].Off)
			}
			if d := mapDiff(m, truth); len(d) > 0 {
				t.Errorf("%d bytes stored that btrfs does not allocate, first at %d", extentBytesOf(d), d[0].Off)
			}
			pc, _ := block.NewMap(4096, m.Len())
			for _, e := range tooltest.PartcloneUsed(t, "partclone.btrfs", src) {
				pc.SetBytes(e.Off, min(e.Len, m.Len()-e.Off))
			}
			pcOnly := mapDiff(pc, m)
			for _, e := range pcOnly {
				if truth.Any(e.Off, e.Len) {
					t.Errorf("partclone copies bytes %d-%d, which btrfs allocates and we do not", e.Off, e.End()-1)
				}
			}
			t.Logf("used: ours %d bytes (btrfs allocates %d, in %d bytes of chunks), partclone %d; partclone copies %d bytes btrfs calls free and lacks %d of ours",
				m.UsedBytes(), truth.UsedBytes(), chunks.UsedBytes(), pc.UsedBytes(), extentBytesOf(pcOnly), extentBytesOf(mapDiff(m, pc)))

			back := filepath.Join(t.TempDir(), "back.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			checkBtrfsCopy(t, src, back)

			st, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			pcz, _ := partcloneZstd(t, "partclone.btrfs", src)
			t.Logf("image: platter %d bytes, partclone.btrfs -c | zstd -3 %d bytes (%.3fx), device %d bytes", st.Size(), pcz, float64(st.Size())/float64(pcz), tc.size)
			if float64(st.Size()) > 1.05*float64(pcz) {
				t.Errorf("platter's image is %d bytes, more than 1.05x partclone|zstd's %d", st.Size(), pcz)
			}
		})
	}
}

// copies returns the device offsets of every copy of the tree block at
// logical l, as btrfs-map-logical gives them.
func copies(t *testing.T, img string, l, n int64) []int64 {
	t.Helper()
	var out []int64
	for _, m := range regexp.MustCompile(`physical (\d+)`).FindAllStringSubmatch(sh(t, "btrfs-map-logical", "-l", fmt.Sprint(l), "-b", fmt.Sprint(n), img), -1) {
		p, _ := strconv.ParseInt(m[1], 10, 64)
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatalf("btrfs-map-logical found no copy of %d", l)
	}
	return out
}

// sealSuper writes the superblock's CRC-32C again, after a change.
func sealSuper(t *testing.T, img string) {
	t.Helper()
	sb := readAt(t, img, 4096, 64<<10)
	binary.LittleEndian.PutUint32(sb, crc32.Checksum(sb[0x20:], crc32.MakeTable(crc32.Castagnoli)))
	writeAt(t, img, sb[:4], 64<<10)
}

// sameInChunks fails unless a and b hold the same bytes in every block
// m marks.
func sameInChunks(t *testing.T, a, b string, m *block.Map) {
	t.Helper()
	var n int64
	m.Runs(0, m.Len(), func(e block.Extent) {
		for off := e.Off; off < e.End(); off += 8 << 20 {
			k := min(8<<20, e.End()-off)
			if !bytes.Equal(readAt(t, a, int(k), off), readAt(t, b, int(k), off)) {
				t.Errorf("bytes %d-%d differ", off, off+k-1)
				return
			}
			n += k
		}
	})
	t.Logf("%d bytes of chunks compared", n)
}

// A btrfs Platter cannot follow exactly — a tree block whose checksum
// fails in every copy, a feature this version does not know — is imaged
// with every allocated chunk and a warning. The restored copy holds the
// same bytes in every chunk; with the damage undone on it, btrfs check
// and a scrub find nothing and every file is there.
func TestBtrfsFallback(t *testing.T) {
	pristine := mkBtrfs(t, 512<<20)
	populateBtrfs(t, pristine, 40)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, img string) (undo func(img string))
		want   string
	}{
		{"tree block checksum", func(t *testing.T, img string) func(string) {
			// The extent tree's root block, in every copy: its stored
			// checksum no longer matches.
			root := regexp.MustCompile(`(?m)^(?:leaf|node) (\d+) `).FindStringSubmatch(sh(t, "btrfs", "inspect-internal", "dump-tree", "-t", "extent", img))
			l, _ := strconv.ParseInt(root[1], 10, 64)
			cs := copies(t, img, l, 16384)
			for _, p := range cs {
				writeAt(t, img, []byte{readAt(t, img, 1, p)[0] ^ 0xff}, p)
			}
			return func(back string) {
				for _, p := range cs {
					writeAt(t, back, []byte{readAt(t, back, 1, p)[0] ^ 0xff}, p)
				}
			}
		}, "checksum"},
		{"unknown incompat flag", func(t *testing.T, img string) func(string) {
			flip := func(img string) {
				b := readAt(t, img, 1, 64<<10+0xbc+5)
				b[0] ^= 0x01 // bit 40
				writeAt(t, img, b, 64<<10+0xbc+5)
				sealSuper(t, img)
			}
			flip(img)
			return flip
		}, "features"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src.img")
			sh(t, "cp", "--sparse=always", pristine, src)
			_, chunks := btrfsTruth(t, pristine)
			undo := tc.damage(t, src)
			img := filepath.Join(t.TempDir(), "fs.platter")
			_, stderr, code := run(t, "create", "--progress", "none", src, img)
			if code != 0 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, tc.want) {
				t.Fatalf("create: exit %d, want a warning about %q:\n%s", code, tc.want, stderr)
			}
			j := infoBtrfs(t, img)
			if len(j.Warnings) != 1 || !strings.Contains(j.Partitions[0].Note, tc.want) || !strings.Contains(j.Partitions[0].Note, "allocated chunk") {
				t.Errorf("info: warnings %q, note %q", j.Warnings, j.Partitions[0].Note)
			}
			if got := j.Partitions[0].UsedBytes; got != chunks.UsedBytes() {
				t.Errorf("%d bytes used, want every allocated chunk's %d", got, chunks.UsedBytes())
			}
			back := filepath.Join(t.TempDir(), "back.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			sameInChunks(t, src, back, chunks)
			undo(back)
			checkBtrfsCopy(t, pristine, back)
		})
	}
}

// A copy of a mounted btrfs taken after an fsync has a log tree: its
// blocks and the data it logged are in no extent item until a mount
// replays it (partclone.btrfs never copies them). Platter keeps them: the
// restored copy replays the log at its first mount and has the files.
func TestBtrfsLogTree(t *testing.T) {
	src := mkBtrfs(t, 512<<20)
	populateBtrfs(t, src, 20)
	dev := loop(t, src)
	mnt := t.TempDir()
	// A long commit interval: the fsyncs go to the log tree.
	sh(t, "mount", "-o", "commit=300,nodiscard,compress=zstd", dev, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	sh(t, "sync")
	tmp := t.TempDir()
	want := map[string][]byte{}
	for i, n := range []int{5000, 700 << 10, 3 << 20} {
		p := filepath.Join(tmp, fmt.Sprint(i))
		btrfsFill(t, p, n, uint64(7000+i), i == 2)
		want[fmt.Sprintf("sub1/fsynced-%d", i)], _ = os.ReadFile(p)
	}
	copied := tooltest.BtrfsLogCopy(t, dev, mnt, want)
	mounted = false

	img := filepath.Join(t.TempDir(), "fs.platter")
	_, stderr, code := run(t, "create", "--progress", "none", copied, img)
	if code != 0 || !strings.Contains(stderr, "log tree") {
		t.Fatalf("create: exit %d, want a note of the log tree:\n%s", code, stderr)
	}
	j := infoBtrfs(t, img)
	truth, _ := btrfsTruth(t, copied)
	if j.Partitions[0].UsedBytes <= truth.UsedBytes() {
		t.Errorf("%d bytes used, no more than the extent tree's %d: the log is not kept", j.Partitions[0].UsedBytes, truth.UsedBytes())
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	// The first read-write mount replays the log.
	bm, done := btrfsMount(t, back, "nodiscard")
	for name, b := range want {
		if got, err := os.ReadFile(filepath.Join(bm, name)); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s after the replay: %d bytes, %v", name, len(got), err)
		}
	}
	done()
	sh(t, "btrfs", "check", "--readonly", back)
	gm, gdone := btrfsMount(t, back, "ro")
	if out := sh(t, "btrfs", "scrub", "start", "-B", "-r", gm); !strings.Contains(out, "no errors found") {
		t.Errorf("scrub after the replay:\n%s", out)
	}
	gdone()
}

// A mounted btrfs imaged frozen: its map is read through the device's
// page cache, where btrfs's own tree writes (bios, past the cache) never
// land, so a page read there earlier may hold a block btrfs has since
// freed and written again. Every block is checked against the generation
// its parent names, so a stale one is never followed: the map is then
// every allocated chunk, with a note saying so. Here the cache is filled
// on purpose before the tree blocks move; the copy must be whole either
// way.
func TestBtrfsFrozenMaps(t *testing.T) {
	src := mkBtrfs(t, 512<<20)
	populateBtrfs(t, src, 20)
	dev := loop(t, src)
	mnt := t.TempDir()
	sh(t, "mount", "-o", "nodiscard", dev, mnt)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run()
		exec.Command("umount", mnt).Run()
	})
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(buf)) {
		if n, _ := f.ReadAt(buf, off); n < len(buf) {
			break
		}
	}
	f.Close()
	for round := 0; round < 3; round++ {
		for i := 0; i < 300; i++ {
			btrfsFill(t, filepath.Join(mnt, fmt.Sprintf("churn%d/f%d", round, i)), 100+i, uint64(round*1000+i), true)
		}
		os.RemoveAll(filepath.Join(mnt, fmt.Sprintf("churn%d", round-1)))
		sh(t, "sync")
	}
	img := filepath.Join(t.TempDir(), "fs.platter")
	ok(t, "create", "--snapshot", "freeze", "--progress", "none", dev, img)
	j := infoBtrfs(t, img)
	// The pipeline drops the devices' cached pages before it reads the
	// maps, so the extent tree is followed, not the allocated chunks.
	if p := j.Partitions[0]; p.Note != "" || len(j.Warnings) != 0 {
		t.Errorf("note %q, warnings %q: the frozen btrfs's tree was not followed", p.Note, j.Warnings)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	sh(t, "btrfs", "check", "--readonly", back)
	btrfsOwnFsid(t, back)
	gm, done := btrfsMount(t, back, "ro")
	defer done()
	if out := sh(t, "btrfs", "scrub", "start", "-B", "-r", gm); !strings.Contains(out, "no errors found") {
		t.Errorf("scrub of the restored copy:\n%s", out)
	}
	sameTree(t, mnt, gm)
}
