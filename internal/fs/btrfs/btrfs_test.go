package btrfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// layout is a btrfs as mkfs.btrfs makes it.
type layout struct {
	name string
	size int64
	args []string
}

var layouts = []layout{
	{"default-dup", 320 << 20, nil},
	{"single", 256 << 20, []string{"-m", "single", "-d", "single"}},
	{"mixed", 128 << 20, []string{"--mixed"}},
	{"nodesize-4k", 256 << 20, []string{"-n", "4096"}},
	{"nodesize-64k", 256 << 20, []string{"-n", "65536"}},
	{"quota", 256 << 20, []string{"-R", "quota"}},
	{"raid0-one-device", 256 << 20, []string{"-m", "raid0", "-d", "raid0"}},
	{"xxhash", 256 << 20, []string{"--csum", "xxhash"}},
	{"sha256", 256 << 20, []string{"--csum", "sha256"}},
	{"blake2", 256 << 20, []string{"--csum", "blake2"}},
}

// mkfs makes a btrfs of size bytes over garbage, as a used disk's free
// space holds.
func mkfs(t testing.TB, size int64, args ...string) string {
	t.Helper()
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.btrfs", append(append([]string{"-q", "-f", "--nodiscard"}, args...), p)...)
	return p
}

// writeFile writes n bytes made from seed (compressible when text).
func writeFile(t testing.TB, p string, n int, seed int64, text bool) {
	t.Helper()
	b := make([]byte, n)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if text {
			b[i] = "abcdefgh \n"[x%10]
		} else {
			b[i] = byte(x)
		}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// populate fills a btrfs through the kernel (compressed): many files,
// two subvolumes, reflinked copies, a snapshot that then diverges, and
// deletions.
func populate(t testing.TB, img string, scale int) {
	t.Helper()
	mnt, done := tooltest.Mount(t, img, "compress=zstd,nodiscard")
	defer done()
	tooltest.Run(t, "cp", "-r", tooltest.Files(t), filepath.Join(mnt, "base"))
	for _, sub := range []string{"sub1", "sub2"} {
		tooltest.Run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, sub))
	}
	for i := 0; i < 40*scale; i++ {
		writeFile(t, filepath.Join(mnt, "sub1", fmt.Sprintf("d%d/f%d", i%7, i)), 1+i*997%70000, int64(i), i%3 == 0)
		writeFile(t, filepath.Join(mnt, "sub2", fmt.Sprintf("f%d", i)), i*131%5000, int64(i+1000), i%2 == 0)
	}
	writeFile(t, filepath.Join(mnt, "sub1", "big"), 3<<20*scale, 7, false)
	writeFile(t, filepath.Join(mnt, "sub1", "text"), 2<<20*scale, 8, true)
	tooltest.Run(t, "cp", "--reflink=always", filepath.Join(mnt, "sub1", "big"), filepath.Join(mnt, "sub2", "big-reflink"))
	tooltest.Run(t, "cp", "--reflink=always", filepath.Join(mnt, "sub1", "text"), filepath.Join(mnt, "text-reflink"))
	tooltest.Run(t, "btrfs", "subvolume", "snapshot", filepath.Join(mnt, "sub1"), filepath.Join(mnt, "snap1"))
	// After the snapshot, sub1 changes: the snapshot keeps the old data.
	f, err := os.OpenFile(filepath.Join(mnt, "sub1", "big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("changed!"), 8192), 1<<20)
	f.Close()
	writeFile(t, filepath.Join(mnt, "gone"), 5<<20, 9, false)
	tooltest.Run(t, "sync")
	for _, p := range []string{"gone", "base/d0", "sub1/d3"} {
		if err := os.RemoveAll(filepath.Join(mnt, p)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10*scale; i++ {
		os.Remove(filepath.Join(mnt, "sub2", fmt.Sprintf("f%d", i*3)))
	}
}

// sameFiles fails unless two filesystem images hold the same files (all
// subvolumes and snapshots: they show as directories of the top level).
func sameFiles(t testing.TB, want, got string) {
	t.Helper()
	mw, doneW := tooltest.Mount(t, want, "ro")
	w := tooltest.Manifest(t, mw)
	doneW()
	mg, doneG := tooltest.Mount(t, got, "ro")
	g := tooltest.Manifest(t, mg)
	doneG()
	tooltest.SameManifest(t, w, g, 50)
}

// checkClean runs btrfs check and a read-only scrub (every copy of every
// block, checksums of data and metadata) on img, and fails on any error.
func checkClean(t testing.TB, img string) {
	t.Helper()
	tooltest.Run(t, "btrfs", "check", "--readonly", img)
	mnt, done := tooltest.Mount(t, img, "ro")
	defer done()
	out := tooltest.Run(t, "btrfs", "scrub", "start", "-B", "-r", mnt)
	if !strings.Contains(out, "no errors found") {
		t.Errorf("scrub of the copy:\n%s", out)
	}
}

func detectFile(t testing.TB, p string) (*block.Usage, error) {
	return tooltest.DetectFile(t, p, Detect)
}

// detectFS is detectFile that also returns the filesystem read.
func detectFS(t testing.TB, p string) (*block.Usage, *filesystem) {
	t.Helper()
	var fs *filesystem
	u, err := tooltest.DetectFile(t, p, func(r io.ReaderAt, size int64) (*block.Usage, error) {
		u, f, err := detect(r, size)
		fs = f
		return u, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return u, fs
}

// chunkMap is the map of every allocated chunk, the fallback, for
// comparison.
func chunkMap(t testing.TB, p string) *block.Map {
	u, fs := detectFS(t, p)
	fs.whole = true
	return tooltest.LoadUsage(t, u)
}

// dumped is a filesystem as btrfs inspect-internal dump-tree shows it.
type dumped struct {
	nodesize int64
	chunks   []dumpedChunk
	extents  []block.Extent // logical ranges of the extent tree's items
}

type dumpedChunk struct {
	logical, length int64
	profile         string
	stripes         []int64 // device offsets of this device's stripes
}

var (
	reChunk   = regexp.MustCompile(`key \(FIRST_CHUNK_TREE CHUNK_ITEM (\d+)\)`)
	reLength  = regexp.MustCompile(`^\s+length (\d+) owner \d+ stripe_len \d+ type (\S+)`)
	reStripe  = regexp.MustCompile(`^\s+stripe \d+ devid (\d+) offset (\d+)`)
	reExtent  = regexp.MustCompile(`key \((\d+) (EXTENT_ITEM|METADATA_ITEM) (\d+)\)`)
	reSuperKV = regexp.MustCompile(`(?m)^(\w+)\s+(\S+)`)
)

// dump reads img's chunks (of device devid) and extent items with
// btrfs-progs. extra names the filesystem's other devices.
func dump(t testing.TB, img string, devid int64, extra ...string) dumped {
	t.Helper()
	var d dumped
	kv := map[string]string{}
	for _, m := range reSuperKV.FindAllStringSubmatch(tooltest.Run(t, "btrfs", "inspect-internal", "dump-super", img), -1) {
		kv[m[1]] = m[2]
	}
	d.nodesize, _ = strconv.ParseInt(kv["nodesize"], 10, 64)
	if d.nodesize == 0 {
		t.Fatalf("dump-super gave no nodesize")
	}
	args := append([]string{"inspect-internal", "dump-tree", "--noscan"}, append([]string{img}, extra...)...)
	for _, line := range strings.Split(tooltest.Run(t, "btrfs", append(args[:3:3], append([]string{"-t", "chunk"}, args[3:]...)...)...), "\n") {
		if m := reChunk.FindStringSubmatch(line); m != nil {
			l, _ := strconv.ParseInt(m[1], 10, 64)
			d.chunks = append(d.chunks, dumpedChunk{logical: l})
			continue
		}
		if len(d.chunks) == 0 {
			continue
		}
		c := &d.chunks[len(d.chunks)-1]
		if m := reLength.FindStringSubmatch(line); m != nil {
			c.length, _ = strconv.ParseInt(m[1], 10, 64)
			c.profile = m[2]
		}
		if m := reStripe.FindStringSubmatch(line); m != nil {
			if id, _ := strconv.ParseInt(m[1], 10, 64); id == devid {
				off, _ := strconv.ParseInt(m[2], 10, 64)
				c.stripes = append(c.stripes, off)
			}
		}
	}
	for _, line := range strings.Split(tooltest.Run(t, "btrfs", append(args[:3:3], append([]string{"-t", "extent"}, args[3:]...)...)...), "\n") {
		m := reExtent.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		l, _ := strconv.ParseInt(m[1], 10, 64)
		n, _ := strconv.ParseInt(m[3], 10, 64)
		if m[2] == "METADATA_ITEM" {
			n = d.nodesize
		}
		d.extents = append(d.extents, block.Extent{Off: l, Len: n})
	}
	if len(d.chunks) == 0 || len(d.extents) == 0 {
		t.Fatalf("dump-tree of %s: %d chunks, %d extent items", img, len(d.chunks), len(d.extents))
	}
	return d
}

// device returns the device bytes that hold logical bytes [l, l+n): one
// range per copy. Only profiles whose every stripe is a whole copy.
func (d dumped) device(t testing.TB, l, n int64) []block.Extent {
	t.Helper()
	for _, c := range d.chunks {
		if l >= c.logical && l+n <= c.logical+c.length {
			// RAID0 over one device (mkfs.btrfs allows it) maps as single.
			if strings.Contains(c.profile, "RAID") && !(strings.Contains(c.profile, "RAID0") && len(c.stripes) == 1) {
				t.Fatalf("profile %s is not mapped by this test", c.profile)
			}
			var out []block.Extent
			for _, s := range c.stripes {
				out = append(out, block.Extent{Off: s + l - c.logical, Len: n})
			}
			return out
		}
	}
	t.Fatalf("logical %d+%d is in no chunk", l, n)
	return nil
}

// truth is the map btrfs's own tools give: every extent item on every
// copy, the first MiB and the superblocks inside the device.
func (d dumped) truth(t testing.TB, size int64) *block.Map {
	t.Helper()
	m, err := block.NewMap(4096, size)
	if err != nil {
		t.Fatal(err)
	}
	m.SetBytes(0, 1<<20)
	for _, off := range []int64{64 << 10, 64 << 20, 256 << 30} {
		if off+4096 <= size {
			m.SetBytes(off, 4096)
		}
	}
	for _, e := range d.extents {
		for _, p := range d.device(t, e.Off, e.Len) {
			m.SetBytes(p.Off, p.Len)
		}
	}
	return m
}

// chunks is the map of every allocated chunk of this device, as btrfs
// dump-tree lists them, with the first MiB and the superblocks.
func (d dumped) allocated(t testing.TB, size int64) *block.Map {
	t.Helper()
	m, err := block.NewMap(4096, size)
	if err != nil {
		t.Fatal(err)
	}
	m.SetBytes(0, 1<<20)
	for _, off := range []int64{64 << 10, 64 << 20, 256 << 30} {
		if off+4096 <= size {
			m.SetBytes(off, 4096)
		}
	}
	for _, c := range d.chunks {
		for _, s := range c.stripes {
			per := c.length
			if strings.Contains(c.profile, "RAID0") {
				per = c.length / int64(len(c.stripes))
			}
			m.SetBytes(s, per)
		}
	}
	return m
}

// superblock is the primary superblock of the btrfs in img.
func superblock(t testing.TB, img string) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4096)
	if _, err := f.ReadAt(b, 64<<10); err != nil {
		t.Fatal(err)
	}
	return b
}

// diff returns the bytes a marks and b does not, as runs.
func diff(a, b *block.Map) []block.Extent {
	var out []block.Extent
	a.Runs(0, a.Len(), func(e block.Extent) {
		cur := e.Off
		b.Runs(e.Off, e.Len, func(r block.Extent) {
			if r.Off > cur {
				out = append(out, block.Extent{Off: cur, Len: r.Off - cur})
			}
			cur = r.End()
		})
		if cur < e.End() {
			out = append(out, block.Extent{Off: cur, Len: e.End() - cur})
		}
	})
	return out
}

func total(es []block.Extent) (n int64) {
	for _, e := range es {
		n += e.Len
	}
	return n
}

// sameMap fails unless got marks exactly what want marks.
func sameMap(t testing.TB, what string, got, want *block.Map) {
	t.Helper()
	if miss := diff(want, got); len(miss) > 0 {
		t.Errorf("%s: %d bytes missing, first %d-%d", what, total(miss), miss[0].Off, miss[0].End()-1)
	}
	if more := diff(got, want); len(more) > 0 {
		t.Errorf("%s: %d bytes more, first %d-%d", what, total(more), more[0].Off, more[0].End()-1)
	}
}

// againstPartclone compares m with what partclone.btrfs copies: every
// byte partclone copies that m does not must be free by btrfs's own
// account (in no extent item: partclone 0.3.23 also marks file extents'
// logical addresses as if they were device offsets, and rounds to
// 16 KiB), and it logs what m keeps that partclone does not (the second
// copy of DUP chunks, which partclone never copies).
func againstPartclone(t testing.TB, img string, m, truth *block.Map, d dumped) {
	t.Helper()
	pc, err := block.NewMap(4096, m.Len())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tooltest.PartcloneUsed(t, "partclone.btrfs", img) {
		pc.SetBytes(e.Off, min(e.Len, m.Len()-e.Off))
	}
	pcOnly := diff(pc, m)
	for _, e := range pcOnly {
		if truth.Any(e.Off, e.Len) {
			t.Errorf("partclone copies bytes %d-%d, which btrfs allocates and our map lacks", e.Off, e.End()-1)
		}
	}
	var second int64
	for _, e := range diff(m, pc) {
		for _, c := range d.chunks {
			for _, s := range c.stripes[min(1, len(c.stripes)):] {
				lo, hi := max(e.Off, s), min(e.End(), s+c.length)
				second += max(0, hi-lo)
			}
		}
	}
	t.Logf("partclone.btrfs copies %d bytes, ours %d; partclone copies %d bytes btrfs calls free, and lacks %d of ours (%d of them second copies of DUP chunks)",
		pc.UsedBytes(), m.UsedBytes(), total(pcOnly), total(diff(m, pc)), second)
}

func TestAgainstTruth(t *testing.T) {
	for _, tc := range layouts {
		t.Run(tc.name, func(t *testing.T) {
			p := mkfs(t, tc.size, tc.args...)
			populate(t, p, 1)
			sb := superblock(t, p)
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			if u.FS != "btrfs" || u.Warning != "" || u.Untrusted || u.BlockSize() != 4096 || u.Len() != tc.size {
				t.Fatalf("%s, block %d, length %d, warning %q", u.FS, u.BlockSize(), u.Len(), u.Warning)
			}
			m := tooltest.LoadUsage(t, u)
			d := dump(t, p, 1)
			truth := d.truth(t, tc.size)
			sameMap(t, "map against btrfs's extent tree", m, truth)
			chunks := chunkMap(t, p)
			sameMap(t, "fallback map against btrfs's chunk tree", chunks, d.allocated(t, tc.size))
			againstPartclone(t, p, m, truth, d)
			t.Logf("used: extent tree %d bytes, allocated chunks %d bytes, device %d bytes", m.UsedBytes(), chunks.UsedBytes(), tc.size)
			// Only the used blocks, nothing else: the filesystem is whole
			// (btrfs check; scrub reads every copy of every block) and
			// holds the same files.
			kept := tooltest.KeepOnly(t, p, m)
			if now := superblock(t, p); !bytes.Equal(now, sb) {
				t.Fatalf("%s was written after its unmount (superblock generation %d, then %d): the map was made of an older filesystem", p, binary.LittleEndian.Uint64(sb[0x48:]), binary.LittleEndian.Uint64(now[0x48:]))
			}
			checkClean(t, kept)
			sameFiles(t, p, kept)
		})
	}
}

var (
	reTreeBlock = regexp.MustCompile(`(?m)^(?:leaf|node) (\d+) (?:items|level)`)
	reDataRef   = regexp.MustCompile(`extent data disk byte (\d+) nr (\d+)`)
)

// A copy of a mounted btrfs taken after an fsync holds a log tree: its
// blocks and the data it logged are in no extent item until the next
// mount replays it (partclone never copies them). The map keeps them, and
// a copy of only the used blocks replays the log and has the file.
func TestLogTree(t *testing.T) {
	p := mkfs(t, 256<<20)
	populate(t, p, 1)
	dev := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", p))
	defer exec.Command("losetup", "-d", dev).Run()
	mnt := t.TempDir()
	// A long commit interval: the fsync goes to the log, not a commit.
	tooltest.Run(t, "mount", "-o", "commit=300,nodiscard,compress=zstd", dev, mnt)
	defer exec.Command("umount", mnt).Run()
	writeFile(t, filepath.Join(mnt, "sub1", "before-commit"), 1, 1, false)
	tooltest.Run(t, "sync")
	want := map[string][]byte{}
	for i, n := range []int{300 << 10, 5000, 2 << 20} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(j*7 + i + j/4096)
		}
		if i == 2 {
			copy(b, bytes.Repeat([]byte("compressible "), n/13))
		}
		want[fmt.Sprintf("sub1/fsynced-%d", i)] = b
	}
	copied := tooltest.BtrfsLogCopy(t, dev, mnt, want)

	u, err := detectFile(t, copied)
	if err != nil {
		t.Fatal(err)
	}
	if u.Untrusted || !strings.Contains(u.Warning, "log tree") {
		t.Fatalf("warning %q, untrusted %v: want a note of the log", u.Warning, u.Untrusted)
	}
	t.Logf("warning: %s", u.Warning)
	m := tooltest.LoadUsage(t, u)
	d := dump(t, copied, 1)
	truth := d.truth(t, u.Len())
	// The log root tree, then each log tree it names (dump-tree shows
	// only the first unless asked for each).
	logDump := tooltest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "18446744073709551610", copied)
	for _, mm := range regexp.MustCompile(`TREE_LOG ROOT_ITEM \d+\)[^\n]*\n\s+generation \d+ root_dirid \d+ bytenr (\d+)`).FindAllStringSubmatch(logDump, -1) {
		logDump += tooltest.Run(t, "btrfs", "inspect-internal", "dump-tree", "--follow", "-b", mm[1], copied)
	}
	var logBlocks, logData int
	for _, mm := range reTreeBlock.FindAllStringSubmatch(logDump, -1) {
		l, _ := strconv.ParseInt(mm[1], 10, 64)
		for _, e := range d.device(t, l, d.nodesize) {
			truth.SetBytes(e.Off, e.Len)
		}
		logBlocks++
	}
	for _, mm := range reDataRef.FindAllStringSubmatch(logDump, -1) {
		l, _ := strconv.ParseInt(mm[1], 10, 64)
		n, _ := strconv.ParseInt(mm[2], 10, 64)
		if l == 0 {
			continue
		}
		for _, e := range d.device(t, l, n) {
			truth.SetBytes(e.Off, e.Len)
		}
		logData++
	}
	if logBlocks < 2 || logData == 0 {
		t.Fatalf("the log holds %d blocks and %d data extents:\n%s", logBlocks, logData, logDump)
	}
	sameMap(t, "map against the extent tree and the log tree", m, truth)
	againstPartclone(t, copied, m, truth, d)

	// The used blocks alone replay the log at mount.
	kept := tooltest.KeepOnly(t, copied, m)
	tooltest.Run(t, "btrfs", "check", "--readonly", kept)
	km, done := tooltest.Mount(t, kept, "nodiscard")
	for name, b := range want {
		if got, err := os.ReadFile(filepath.Join(km, name)); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s after the log's replay: %d bytes, %v", name, len(got), err)
		}
	}
	done()
	checkClean(t, kept)

	// What partclone keeps does not: the log's blocks are garbage there.
	var pcMap *block.Map
	pcMap, _ = block.NewMap(4096, u.Len())
	for _, e := range tooltest.PartcloneUsed(t, "partclone.btrfs", copied) {
		pcMap.SetBytes(e.Off, e.Len)
	}
	pcKept := tooltest.KeepOnly(t, copied, pcMap)
	dev2 := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", pcKept))
	defer exec.Command("losetup", "-d", dev2).Run()
	mnt2 := t.TempDir()
	if out, err := exec.Command("mount", dev2, mnt2).CombinedOutput(); err != nil {
		t.Logf("partclone's blocks alone do not mount: %s", bytes.TrimSpace(out))
	} else {
		defer exec.Command("umount", mnt2).Run()
		lost := 0
		for name, b := range want {
			if got, err := os.ReadFile(filepath.Join(mnt2, name)); err != nil || !bytes.Equal(got, b) {
				lost++
			}
		}
		t.Logf("partclone's blocks alone lose %d of %d fsynced files", lost, len(want))
		if lost == 0 {
			t.Error("partclone's blocks alone kept every fsynced file: this test no longer shows what the log needs")
		}
	}
}

// surgery is a btrfs image held in memory to be damaged on purpose.
type surgery struct {
	t  testing.TB
	b  []byte
	fs *filesystem // the healthy filesystem, to find its blocks
}

func operate(t testing.TB, p string) *surgery {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	_, fs := detectFS(t, p)
	return &surgery{t: t, b: b, fs: fs}
}

// copies returns the device offsets of every copy of tree block l.
func (s *surgery) copies(l int64) []int64 {
	ps, err := s.fs.mirrors(l, s.fs.sb.nodeSize)
	if err != nil {
		s.t.Fatal(err)
	}
	return ps
}

// edit changes every copy of tree block l with fn and seals it again
// (its checksum made right) unless broken.
func (s *surgery) edit(l int64, broken bool, fn func(b []byte)) {
	for _, p := range s.copies(l) {
		b := s.b[p : p+s.fs.sb.nodeSize]
		fn(b)
		if !broken {
			s.fs.sb.csum.seal(b)
		}
	}
}

// super changes the superblock with fn and seals it again.
func (s *surgery) super(fn func(b []byte)) {
	b := s.b[superOff : superOff+superSize]
	fn(b)
	s.fs.sb.csum.seal(b)
}

// item returns the key of item i of leaf b and the offset of its data.
func item(b []byte, i int) (key, int) {
	it := b[hdrLen+i*itemLen:]
	return parseKey(it), hdrLen + int(binary.LittleEndian.Uint32(it[keyLen:]))
}

// rootItem returns the root tree leaf holding the root item of tree id
// and the item's offset in it.
func (s *surgery) rootItem(id uint64) (leaf int64, at int) {
	l := int64(s.fs.sb.root)
	b := s.b[s.copies(l)[0]:]
	for b[hdrLevel] > 0 {
		// The last child whose first key is at most (id, ROOT_ITEM).
		nr := int(binary.LittleEndian.Uint32(b[hdrNritems:]))
		next := 0
		for i := 0; i < nr; i++ {
			k := parseKey(b[hdrLen+i*ptrLen:])
			if k.objectid < id || k.objectid == id && k.typ <= keyRootItem {
				next = i
			}
		}
		l = int64(binary.LittleEndian.Uint64(b[hdrLen+next*ptrLen+keyLen:]))
		b = s.b[s.copies(l)[0]:]
	}
	for i := 0; i < int(binary.LittleEndian.Uint32(b[hdrNritems:])); i++ {
		if k, off := item(b, i); k.objectid == id && k.typ == keyRootItem {
			return l, off
		}
	}
	s.t.Fatalf("no root item for tree %d", id)
	return 0, 0
}

// treeRoot returns the logical address and contents (first copy) of the
// root of tree id.
func (s *surgery) treeRoot(id uint64) (int64, []byte) {
	leaf, at := s.rootItem(id)
	ri := s.b[s.copies(leaf)[0]+int64(at):]
	l := int64(binary.LittleEndian.Uint64(ri[0xb0:]))
	return l, s.b[s.copies(l)[0] : s.copies(l)[0]+s.fs.sb.nodeSize]
}

// leaves returns the leaves of the tree whose root is at l.
func (s *surgery) leaves(l int64) []int64 {
	b := s.b[s.copies(l)[0]:]
	if b[hdrLevel] == 0 {
		return []int64{l}
	}
	var out []int64
	for i := 0; i < int(binary.LittleEndian.Uint32(b[hdrNritems:])); i++ {
		out = append(out, s.leaves(int64(binary.LittleEndian.Uint64(b[hdrLen+i*ptrLen+keyLen:])))...)
	}
	return out
}

// save writes the image to a new file.
func (s *surgery) save() string {
	p := filepath.Join(s.t.TempDir(), "damaged.img")
	if err := os.WriteFile(p, s.b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// Damage and hostile values: every case is recognised, and whenever a
// map comes back it holds at least everything btrfs's own tools call
// allocated in the healthy filesystem.
func TestDamaged(t *testing.T) {
	healthy := mkfs(t, 256<<20, "-n", "4096")
	populate(t, healthy, 2)
	d := dump(t, healthy, 1)
	truth := d.truth(t, 256<<20)
	allocated := d.allocated(t, 256<<20)
	le := binary.LittleEndian

	type want int
	const (
		exact     want = iota // the healthy map, no warning
		chunks                // a warning and the allocated chunks
		untrusted             // every block
		corruptE              // a CorruptError
	)
	for _, tc := range []struct {
		name   string
		want   want
		why    string // in the warning or error
		damage func(s *surgery)
	}{
		{"superblock checksum", untrusted, "checksum", func(s *surgery) {
			s.b[superOff+sbLabel] ^= 1
		}},
		{"unknown checksum type", untrusted, "checksum type 9", func(s *surgery) {
			le.PutUint16(s.b[superOff+sbCsumType:], 9)
		}},
		{"sector size", corruptE, "sector size", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint32(b[sbSectorSize:], 3000) })
		}},
		{"node size", corruptE, "node size", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint32(b[sbNodeSize:], 1<<20) })
		}},
		{"tree level", corruptE, "levels", func(s *surgery) {
			s.super(func(b []byte) { b[sbRootLevel] = 8 })
		}},
		{"system chunk array size", corruptE, "system chunk array", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint32(b[sbSysArraySize:], 4000) })
		}},
		{"system chunk array key", corruptE, "key type", func(s *surgery) {
			s.super(func(b []byte) { b[sbSysArray+8] = 1 })
		}},
		{"system chunk stripes", corruptE, "stripes", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint16(b[sbSysArray+keyLen+0x2c:], 500) })
		}},
		{"filesystem larger than the device", corruptE, "needs", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint64(b[sbDevItem+8:], 1<<40) })
		}},
		{"unknown incompat flag", chunks, "features", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint64(b[sbIncompat:], le.Uint64(b[sbIncompat:])|1<<40) })
		}},
		{"unknown compat_ro flag", chunks, "features", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint64(b[sbCompatRO:], le.Uint64(b[sbCompatRO:])|1<<33) })
		}},
		{"two devices", chunks, "2 devices", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint64(b[sbNumDevices:], 2) })
		}},
		{"chunk tree checksum", untrusted, "chunk tree", func(s *surgery) {
			s.edit(int64(s.fs.sb.chunkRoot), true, func(b []byte) { b[0] ^= 1 })
		}},
		{"chunk item stripes", untrusted, "stripes", func(s *surgery) {
			s.edit(int64(s.fs.sb.chunkRoot), false, func(b []byte) {
				for i := 0; ; i++ {
					if k, off := item(b, i); k.typ == keyChunkItem {
						le.PutUint16(b[off+0x2c:], 0)
						return
					}
				}
			})
		}},
		{"chunk stripe outside the device", untrusted, "outside", func(s *surgery) {
			s.edit(int64(s.fs.sb.chunkRoot), false, func(b []byte) {
				for i := 0; ; i++ {
					if k, off := item(b, i); k.typ == keyChunkItem && k.offset > 1<<20 {
						le.PutUint64(b[off+chunkItemLen+8:], 1<<40)
						return
					}
				}
			})
		}},
		{"chunk stripes overlap", untrusted, "overlap", func(s *surgery) {
			s.edit(int64(s.fs.sb.chunkRoot), false, func(b []byte) {
				var first = -1
				for i := 0; ; i++ {
					if k, off := item(b, i); k.typ == keyChunkItem {
						if first < 0 {
							first = off
							continue
						}
						copy(b[off+chunkItemLen+8:off+chunkItemLen+16], b[first+chunkItemLen+8:])
						return
					}
				}
			})
		}},
		{"root tree checksum", chunks, "checksum", func(s *surgery) {
			s.edit(int64(s.fs.sb.root), true, func(b []byte) { b[3] ^= 0x80 })
		}},
		{"root tree generation", chunks, "generation", func(s *surgery) {
			s.super(func(b []byte) { le.PutUint64(b[sbGeneration:], le.Uint64(b[sbGeneration:])+1) })
		}},
		{"extent tree level", chunks, "level", func(s *surgery) {
			leaf, at := s.rootItem(extentTreeID)
			s.edit(leaf, false, func(b []byte) { b[at+0xee] = 9 })
		}},
		{"extent tree missing", chunks, "no extent tree", func(s *surgery) {
			// The extent tree's root item becomes another item type, in
			// its leaf and in the key its parent holds for that leaf.
			leaf, _ := s.rootItem(extentTreeID)
			s.edit(leaf, false, func(b []byte) {
				for i := 0; ; i++ {
					if k, _ := item(b, i); k.objectid == extentTreeID && k.typ == keyRootItem {
						b[hdrLen+i*itemLen+8] = keyRootItem - 1
						return
					}
				}
			})
			if l := int64(s.fs.sb.root); l != leaf {
				s.edit(l, false, func(b []byte) {
					for i := 0; i < int(le.Uint32(b[hdrNritems:])); i++ {
						if k := parseKey(b[hdrLen+i*ptrLen:]); k.objectid == extentTreeID && k.typ == keyRootItem {
							b[hdrLen+i*ptrLen+8] = keyRootItem - 1
						}
					}
				})
			}
		}},
		{"extent leaf checksum, every copy", chunks, "checksum", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			s.edit(l, true, func(b []byte) { b[1] ^= 0xff })
		}},
		{"extent leaf checksum, one copy", exact, "", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			p := s.copies(l)[0]
			s.b[p+1] ^= 0xff
		}},
		{"extent item outside every chunk", chunks, "no chunk", func(s *surgery) {
			root, _ := s.treeRoot(extentTreeID)
			for _, l := range s.leaves(root) {
				b := s.b[s.copies(l)[0]:]
				for i := 1; i < int(le.Uint32(b[hdrNritems:])); i++ { // not the first: its key is in the parent too
					if k, _ := item(b, i); k.typ == keyExtentItem {
						s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+i*itemLen+9:], 1<<50) })
						return
					}
				}
			}
			s.t.Fatal("no extent item to change")
		}},
		{"leaf item outside the leaf", chunks, "outside the leaf", func(s *surgery) {
			l, b := s.treeRoot(extentTreeID)
			for b[hdrLevel] > 0 {
				l = int64(le.Uint64(b[hdrLen+keyLen:]))
				b = s.b[s.copies(l)[0]:]
			}
			s.edit(l, false, func(b []byte) { le.PutUint32(b[hdrLen+keyLen:], 1<<20) })
		}},
		{"leaf item count", chunks, "items", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			s.edit(l, false, func(b []byte) { le.PutUint32(b[hdrNritems:], 1<<31) })
		}},
		{"extent node child generation (a stale block)", chunks, "generation", func(s *surgery) {
			l, b := s.treeRoot(extentTreeID)
			if b[hdrLevel] == 0 {
				s.t.Fatal("the extent tree is one leaf")
			}
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+keyLen+8:], 12345) })
		}},
		{"extent node child first key", chunks, "key", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			s.edit(l, false, func(b []byte) { b[hdrLen+ptrLen] ^= 1 }) // the second child's key
		}},
		{"extent node points at itself", chunks, "level", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+ptrLen+keyLen:], uint64(l)) })
		}},
		// Leaves of subvolume trees are marked from their parents, not
		// read (the extent tree holds them and their data): a wrong
		// generation in a pointer to one changes nothing the map needs.
		{"subvolume node child generation", exact, "", func(s *surgery) {
			l, b := s.treeRoot(firstFreeID)
			if b[hdrLevel] != 1 {
				s.t.Fatalf("subvolume 256 has level %d", b[hdrLevel])
			}
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+keyLen+8:], 12345) })
		}},
		{"subvolume node points at itself", chunks, "level", func(s *surgery) {
			l, _ := s.treeRoot(firstFreeID)
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+keyLen:], uint64(l)) })
		}},
		{"subvolume node child outside every chunk", chunks, "no chunk", func(s *surgery) {
			l, _ := s.treeRoot(firstFreeID)
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrLen+keyLen:], 1<<50) })
		}},
		{"subvolume block of another filesystem", chunks, "another filesystem", func(s *surgery) {
			l, _ := s.treeRoot(firstFreeID)
			s.edit(l, false, func(b []byte) { b[hdrFsid] ^= 1 })
		}},
		{"subvolume block owned by the extent tree", chunks, "owned", func(s *surgery) {
			l, _ := s.treeRoot(firstFreeID)
			s.edit(l, false, func(b []byte) { le.PutUint64(b[hdrOwner:], extentTreeID) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := operate(t, healthy)
			tc.damage(s)
			p := s.save()
			u, err := detectFile(t, p)
			var ce *block.CorruptError
			switch {
			case tc.want == corruptE:
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("%v, want a CorruptError about %q", err, tc.why)
				}
				t.Logf("error: %v", err)
				return
			case err != nil:
				t.Fatal(err)
			case u.FS != "btrfs":
				t.Fatalf("detected %s", u.FS)
			}
			t.Logf("warning: %s", u.Warning)
			m, err := u.Load() // the windows are checked in TestAgainstTruth
			if err != nil {
				t.Fatal(err)
			}
			if miss := diff(truth, m); len(miss) > 0 {
				t.Errorf("%d allocated bytes missing, first %d-%d", total(miss), miss[0].Off, miss[0].End()-1)
			}
			switch tc.want {
			case exact:
				if u.Warning != "" {
					t.Errorf("warning %q for a filesystem whose trees are whole", u.Warning)
				}
				sameMap(t, "map", m, truth)
			case chunks:
				if u.Untrusted || !strings.Contains(u.Warning, tc.why) {
					t.Errorf("untrusted %v, warning %q: want a warning about %q", u.Untrusted, u.Warning, tc.why)
				}
				sameMap(t, "fallback map", m, allocated)
			case untrusted:
				if !u.Untrusted || !strings.Contains(u.Warning, tc.why) {
					t.Errorf("untrusted %v, warning %q: want untrusted for %q", u.Untrusted, u.Warning, tc.why)
				}
				if m.UsedBytes() != m.Len() {
					t.Errorf("untrusted map has %d of %d bytes", m.UsedBytes(), m.Len())
				}
			}
		})
	}
}

// A damaged tree block or a feature this version does not know: the
// allocated chunks alone hold the filesystem. With the damage undone on
// the copy, btrfs check and scrub find nothing and every file is there.
func TestFallbackRestores(t *testing.T) {
	healthy := mkfs(t, 256<<20)
	populate(t, healthy, 2)
	for _, tc := range []struct {
		name      string
		damage    func(s *surgery)
		undo      func(s *surgery, b []byte)
		wantWords string
	}{
		{"extent leaf checksum", func(s *surgery) {
			l, _ := s.treeRoot(extentTreeID)
			s.edit(l, true, func(b []byte) { b[0] ^= 0xff })
		}, func(s *surgery, img []byte) {
			l, _ := s.treeRoot(extentTreeID)
			for _, p := range s.copies(l) {
				img[p] ^= 0xff
			}
		}, "checksum"},
		{"unknown incompat flag", func(s *surgery) {
			s.super(func(b []byte) { b[sbIncompat+5] |= 1 })
		}, func(s *surgery, img []byte) {
			b := img[superOff : superOff+superSize]
			b[sbIncompat+5] &^= 1
			s.fs.sb.csum.seal(b)
		}, "features"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := operate(t, healthy)
			tc.damage(s)
			p := s.save()
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			if u.Untrusted || !strings.Contains(u.Warning, tc.wantWords) {
				t.Fatalf("untrusted %v, warning %q", u.Untrusted, u.Warning)
			}
			kept := tooltest.KeepOnly(t, p, tooltest.LoadUsage(t, u))
			b, err := os.ReadFile(kept)
			if err != nil {
				t.Fatal(err)
			}
			tc.undo(operate(t, healthy), b)
			if err := os.WriteFile(kept, b, 0o644); err != nil {
				t.Fatal(err)
			}
			checkClean(t, kept)
			sameFiles(t, healthy, kept)
		})
	}
}

// A filesystem over two devices: each device's map is the chunks
// allocated on it (the trees may lie on the other one).
func TestTwoDevices(t *testing.T) {
	a, b := tooltest.Garbage(t, 256<<20), filepath.Join(t.TempDir(), "b.img")
	if err := os.WriteFile(b, bytes.Repeat([]byte{0xa5}, 256<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "mkfs.btrfs", "-q", "-f", "--nodiscard", "-m", "raid1", "-d", "single", a, b)
	da := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", a))
	defer exec.Command("losetup", "-d", da).Run()
	db := strings.TrimSpace(tooltest.Run(t, "losetup", "-f", "--show", b))
	defer exec.Command("losetup", "-d", db).Run()
	tooltest.Run(t, "btrfs", "device", "scan", da, db)
	mnt := t.TempDir()
	tooltest.Run(t, "mount", "-o", "nodiscard", da, mnt)
	defer exec.Command("umount", mnt).Run()
	writeFile(t, filepath.Join(mnt, "big"), 40<<20, 3, false)
	writeFile(t, filepath.Join(mnt, "big2"), 40<<20, 4, false)
	tooltest.Run(t, "umount", mnt)
	for i, p := range []string{a, b} {
		u, err := detectFile(t, p)
		if err != nil {
			t.Fatal(err)
		}
		if u.Untrusted || !strings.Contains(u.Warning, "2 devices") {
			t.Fatalf("device %d: untrusted %v, warning %q", i+1, u.Untrusted, u.Warning)
		}
		d := dump(t, p, int64(i+1), []string{b, a}[i])
		sameMap(t, fmt.Sprintf("device %d against its chunks", i+1), tooltest.LoadUsage(t, u), d.allocated(t, 256<<20))
	}
}

func TestNotBtrfs(t *testing.T) {
	zeros := filepath.Join(t.TempDir(), "zeros")
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	ext := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", ext)
	fat := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.fat", fat)
	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, make([]byte, 1000), 0o644)
	for name, p := range map[string]string{"zeros": zeros, "random": tooltest.Garbage(t, 1<<20), "ext4": ext, "fat": fat, "small": small} {
		if _, err := detectFile(t, p); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want ErrNotMine", name, err)
		}
	}
}

// The kernel's own metadata_uuid feature: tree blocks carry another
// UUID than the filesystem's.
func TestMetadataUUID(t *testing.T) {
	p := mkfs(t, 256<<20)
	populate(t, p, 1)
	tooltest.Run(t, "btrfstune", "-f", "-m", p)
	u, err := detectFile(t, p)
	if err != nil || u.Warning != "" {
		t.Fatalf("%v, warning %q", err, u.Warning)
	}
	sameMap(t, "map", tooltest.LoadUsage(t, u), dump(t, p, 1).truth(t, 256<<20))
}

// packed serves the blocks of a small real btrfs that matter (its
// superblock and tree blocks) at their offsets; the rest reads as zeros.
type packed struct {
	at   map[int64]int // device block -> index in data
	data []byte
	size int64
}

const packBlock = 4096

func (p *packed) ReadAt(b []byte, off int64) (int, error) {
	clear(b)
	for i := 0; i < len(b); {
		o := off + int64(i)
		blk, in := o/packBlock, int(o%packBlock)
		n := min(len(b)-i, packBlock-in)
		if k, ok := p.at[blk]; ok && (k+1)*packBlock <= len(p.data) {
			copy(b[i:i+n], p.data[k*packBlock+in:])
		}
		i += n
	}
	if off+int64(len(b)) > p.size {
		return int(max(0, p.size-off)), io.EOF
	}
	return len(b), nil
}

// FuzzDetect also runs Owners on each input. A fuzz input is a list of edits to the packed blocks of a real btrfs
// (a flags byte, then records of a 4-byte offset, a length byte and that
// many bytes), so inputs stay small and every change lands in metadata.
// Unless flag bit 0 says not to, the superblock and every block that
// claims the filesystem's UUID are sealed again afterwards, so that the
// changes reach the parsers behind the checksums.
func FuzzDetect(f *testing.F) {
	// Made without a mount: each fuzz worker runs this.
	dir := f.TempDir()
	writeFile(f, filepath.Join(dir, "a"), 20000, 1, true)
	writeFile(f, filepath.Join(dir, "d", "b"), 3000, 2, false)
	img := mkfs(f, 16<<20, "--mixed", "--rootdir", dir)
	raw, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	fsid := raw[superOff+sbFsid : superOff+sbFsid+16]
	base := &packed{at: map[int64]int{}, size: int64(len(raw))}
	for blk := int64(0); (blk+1)*packBlock <= int64(len(raw)); blk++ {
		b := raw[blk*packBlock : (blk+1)*packBlock]
		if blk*packBlock == superOff || bytes.Equal(b[hdrFsid:hdrFsid+16], fsid) {
			base.at[blk] = len(base.data) / packBlock
			base.data = append(base.data, b...)
		}
	}
	edit := func(off int, b ...byte) []byte {
		e := binary.LittleEndian.AppendUint32(nil, uint32(off))
		return append(append(e, byte(len(b))), b...)
	}
	sb := base.at[superOff/packBlock] * packBlock
	f.Add([]byte{0})
	f.Add([]byte{1})
	f.Add(append([]byte{0}, edit(sb+sbIncompat+5, 1)...))
	f.Add(append([]byte{0}, edit(sb+sbCsumType, 1)...))
	f.Add(append([]byte{0}, edit(sb+sbNumDevices, 2)...))
	f.Add(append([]byte{0}, edit(sb+sbSysArray+keyLen+0x2c, 2)...))
	for i := 0; i < len(base.data)/packBlock; i++ {
		f.Add(append([]byte{0}, edit(i*packBlock+hdrNritems, 0xff, 0)...))
		f.Add(append([]byte{0}, edit(i*packBlock+hdrLen+keyLen, 0, 0x10)...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		data := append([]byte(nil), base.data...)
		flags, in := in[0], in[1:]
		for len(in) >= 5 {
			off := int(binary.LittleEndian.Uint32(in) % uint32(len(data)))
			n := min(int(in[4]), len(in)-5, len(data)-off)
			copy(data[off:], in[5:5+n])
			in = in[5+n:]
		}
		if flags&1 == 0 {
			b := data[sb : sb+superSize]
			if c, ok := csumOf(binary.LittleEndian.Uint16(b[sbCsumType:])); ok {
				c.seal(b)
				for i := 0; (i+1)*packBlock <= len(data); i++ {
					if b := data[i*packBlock : (i+1)*packBlock]; i*packBlock != sb && bytes.Equal(b[hdrFsid:hdrFsid+16], fsid) {
						c.seal(b)
					}
				}
			}
		}
		r := &packed{at: base.at, data: data, size: base.size}
		tooltest.FuzzUsage(Detect(r, r.size))
		// Owners, on the same damage, ends and names only the device's
		// bytes.
		Owners(r, r.size, func(o vfs.Owner, at []block.Extent) error {
			for _, e := range at {
				if e.Off < 0 || e.Len <= 0 || e.End() > r.size {
					t.Fatalf("%v: extent %d+%d outside the device", o, e.Off, e.Len)
				}
			}
			return nil
		})
	})
}
