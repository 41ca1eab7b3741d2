package f2fs

import (
	"bytes"
	"encoding/binary"
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

// mkfs makes an F2FS of size bytes over garbage (the free space of a
// used disk) with mkfs.f2fs and args, and loads each tree into it with
// sload.f2fs, one round (one checkpoint) each, tree i under /r<i>. It
// does not discard (-t 0): on a file, mkfs.f2fs would punch the garbage
// out.
func mkfs(t testing.TB, size int64, args []string, trees ...string) string {
	t.Helper()
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.f2fs", append(append([]string{"-q", "-f", "-t", "0"}, args...), p)...)
	for i, tree := range trees {
		tooltest.Run(t, "sload.f2fs", "-f", tree, "-t", fmt.Sprintf("/r%d", i), p)
	}
	return p
}

// manyFiles is a tree of a few hundred files of many sizes, among them
// one large enough to fill several segments, every name unique (dump.f2fs
// writes a file out under its own name).
func manyFiles(t testing.TB, tag string) string {
	t.Helper()
	dir := t.TempDir()
	x := uint32(len(tag)) * 2654435761
	for d := range 4 {
		sub := filepath.Join(dir, fmt.Sprintf("%s-dir%d", tag, d), "deeper")
		os.MkdirAll(sub, 0o755)
		for i := range 60 {
			n := (i * i * 37) % 70000
			b := make([]byte, n)
			for k := range b {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				b[k] = byte(x)
			}
			where := sub
			if i%2 == 0 {
				where = filepath.Dir(sub)
			}
			if err := os.WriteFile(filepath.Join(where, fmt.Sprintf("%s-%d-%d.bin", tag, d, i)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	big := bytes.Repeat([]byte(tag+" a large file spanning segments\n"), (9<<20)/(len(tag)+31))
	for k := 0; k < len(big); k += 4096 {
		big[k] = byte(k >> 12) // not all one block, so no two blocks alike
	}
	if err := os.WriteFile(filepath.Join(dir, tag+"-large.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

var field = regexp.MustCompile(`(?m)^(\S+):\s+(\d+)$`)

// superFields is what fsck.f2fs -l says of the superblock and the
// current checkpoint, by name.
func superFields(t testing.TB, img string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, m := range field.FindAllStringSubmatch(tooltest.Run(t, "fsck.f2fs", "-l", img), -1) {
		if _, seen := out[m[1]]; !seen {
			out[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
		}
	}
	if out["main_blkaddr"] == 0 {
		t.Fatalf("fsck.f2fs -l %s gives no main_blkaddr", img)
	}
	return out
}

var sitSeg = regexp.MustCompile(`^segno:\s+(\d+)\s+vblocks:\s*(\d+)`)

// toolMap is the used-block map f2fs-tools itself gives: every block
// before the main area (fsck.f2fs -l) and each valid block of the SIT as
// dump.f2fs -s dumps it (SIT blocks, their current copies and the
// journal, as f2fs-tools reads them).
func toolMap(t testing.TB, img string) *block.Map {
	t.Helper()
	f := superFields(t, img)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	m, err := block.NewMap(blockSize, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	main := f["main_blkaddr"]
	m.SetRange(0, main)
	dir := t.TempDir()
	abs, _ := filepath.Abs(img)
	cmd := exec.Command("dump.f2fs", "-s", "0~-1", abs)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dump.f2fs -s: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "dump_sit"))
	if err != nil {
		t.Fatal(err)
	}
	seg, segs := int64(-1), int64(0)
	var bitmap []byte
	flush := func() {
		for i, v := range bitmap {
			for k := range 8 {
				if v&(0x80>>k) != 0 {
					m.Set(main + seg*blocksPerSeg + int64(i*8+k))
				}
			}
		}
		bitmap = bitmap[:0]
	}
	for _, line := range strings.Split(string(b), "\n") {
		if s := sitSeg.FindStringSubmatch(line); s != nil {
			flush()
			seg, _ = strconv.ParseInt(s[1], 10, 64)
			segs++
			continue
		}
		if seg < 0 || strings.HasPrefix(line, "valid_blocks:") { // the closing totals
			continue
		}
		for _, h := range strings.Fields(line) {
			v, err := strconv.ParseUint(h, 16, 8)
			if err != nil {
				t.Fatalf("dump_sit line %q", line)
			}
			bitmap = append(bitmap, byte(v))
		}
	}
	flush()
	if segs != f["segment_count_main"] {
		t.Fatalf("dump.f2fs dumped %d SIT entries of %d", segs, f["segment_count_main"])
	}
	return m
}

// sameMap fails the test unless two maps mark the same blocks.
func sameMap(t testing.TB, what string, got, want *block.Map) {
	t.Helper()
	if got.Blocks() != want.Blocks() {
		t.Fatalf("%s: %d blocks, want %d", what, got.Blocks(), want.Blocks())
	}
	bad := 0
	for i := range got.Blocks() {
		if got.Test(i) != want.Test(i) {
			if bad++; bad <= 5 {
				t.Errorf("%s: block %d is %v, f2fs-tools says %v", what, i, got.Test(i), want.Test(i))
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d blocks differ", what, bad)
	}
}

// trusted detects img, fails unless its map is trusted, and returns it.
func trusted(t testing.TB, img string) *block.Map {
	t.Helper()
	u, err := tooltest.DetectFile(t, img, Detect)
	if err != nil {
		t.Fatal(err)
	}
	if u.FS != "f2fs" || u.Warning != "" || u.Untrusted {
		t.Fatalf("detected %q, warning %q", u.FS, u.Warning)
	}
	return tooltest.LoadUsage(t, u)
}

// Over layouts and features mkfs.f2fs offers, after mkfs alone (the SIT
// journal of compacted summaries is all there is of the current
// segments) and after rounds of sload.f2fs and a defrag.f2fs that leaves
// moved data behind in free blocks, the map marks exactly the blocks
// f2fs-tools' own reading of the SIT does, and no fewer than partclone
// copies; zeroing every other block leaves a filesystem fsck.f2fs calls
// clean whose every file reads back the same.
func TestAgainstTools(t *testing.T) {
	files := tooltest.Files(t)
	many, more := manyFiles(t, "first"), manyFiles(t, "second")
	for _, tc := range []struct {
		name      string
		size      int64
		args      []string
		trees     []string
		defrag    bool
		partclone bool // partclone 0.3.23's F2FS reader predates large NAT bitmaps and read-only layouts
		inlineBug bool // extra attributes: see tooltest.SameF2FSFiles
	}{
		{"mkfs only", 128 << 20, nil, nil, false, true, false},
		{"two rounds", 256 << 20, []string{"-l", "two rounds"}, []string{files, many}, false, true, false},
		{"defragmented", 192 << 20, nil, []string{many, more}, true, true, false},
		{"4 segments a section", 192 << 20, []string{"-s", "4"}, []string{many}, false, true, false},
		{"features", 192 << 20, []string{"-O", "extra_attr,inode_checksum,sb_checksum,inode_crtime,lost_found,compression"}, []string{files, more}, false, true, true},
		{"read-only", 128 << 20, []string{"-O", "ro"}, []string{files}, false, false, false},
		{"large NAT bitmap", 192 << 20, []string{"-i", "-O", "extra_attr,inode_checksum,sb_checksum"}, []string{many}, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkfs(t, tc.size, tc.args, tc.trees...)
			if tc.defrag {
				f := superFields(t, img)
				main := f["main_blkaddr"]
				tooltest.Run(t, "defrag.f2fs", "-s", fmt.Sprint(main+6*blocksPerSeg), "-l", fmt.Sprint(3*blocksPerSeg), "-t", fmt.Sprint(main+(f["segment_count_main"]-10)*blocksPerSeg), img)
			}
			tooltest.F2FSClean(t, img)
			m := trusted(t, img)
			sameMap(t, "map", m, toolMap(t, img))
			if tc.partclone {
				if extra := tooltest.CompareWithPartclone(t, "partclone.f2fs", img, m); extra != 0 {
					t.Errorf("%d bytes more than partclone", extra)
				}
			}
			if used, all := m.UsedBytes(), m.Len(); used > all/2 {
				t.Errorf("%d of %d bytes used", used, all)
			}
			kept := tooltest.KeepOnly(t, img, m)
			tooltest.F2FSClean(t, kept)
			if len(tc.trees) > 0 {
				inlineFrom := ""
				if tc.inlineBug {
					inlineFrom = img
				}
				tooltest.SameF2FSFiles(t, kept, inlineFrom, 10, tc.trees...)
			}
			if got, want := tooltest.Blkid(t, kept, "UUID"), tooltest.Blkid(t, img, "UUID"); got != want || got == "" {
				t.Errorf("UUID %q, want %q", got, want)
			}
		})
	}
}

// The SIT version bitmap picks a SIT block's copy: with each block's
// current contents moved to its second copy, the first filled with
// entries that mark every block valid, and the bitmap pointing at the
// second, the map is the same, as f2fs-tools reads it too; pointing at
// the first, it is not.
func TestSITCopies(t *testing.T) {
	img := mkfs(t, 256<<20, nil, manyFiles(t, "copies"))
	want := trusted(t, img)
	s := readSuper(t, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	half := int64(s.segSIT/2) * blocksPerSeg * blockSize
	sitBlocks := (int64(s.segMain) + sitPerBlock - 1) / sitPerBlock
	if sitBlocks < 3 {
		t.Fatalf("only %d SIT blocks", sitBlocks)
	}
	full := make([]byte, blockSize)
	for k := 0; k+sitEntrySize <= blockSize; k += sitEntrySize {
		full[k], full[k+1] = 0, 2 // 512 valid blocks, hot data
		for j := range sitMapSize {
			full[k+sitMapOff+j] = 0xff
		}
	}
	for n := range sitBlocks {
		at := s.sitAddr*blockSize + n*blockSize
		copy(b[at+half:at+half+blockSize], b[at:at+blockSize])
		copy(b[at:at+blockSize], full)
	}
	flipped := filepath.Join(t.TempDir(), "flipped.img")
	os.WriteFile(flipped, b, 0o644)
	patchCheckpoint(t, flipped, func(head []byte) {
		bm := cpBitmapOff // no payload, no large NAT bitmap here
		for n := range sitBlocks {
			head[bm+int(n/8)] |= 0x80 >> (n % 8)
		}
	})
	sameMap(t, "second copies", trusted(t, flipped), want)
	sameMap(t, "f2fs-tools on second copies", toolMap(t, flipped), want)
	// The first copies, now every block valid, are not current.
	stale := filepath.Join(t.TempDir(), "stale.img")
	os.WriteFile(stale, b, 0o644)
	if m := trusted(t, stale); m.UsedBytes() <= want.UsedBytes()*2 {
		t.Errorf("reading the first copies: %d bytes used, want far more than %d", m.UsedBytes(), want.UsedBytes())
	}
}

// readSuper reads img's superblock.
func readSuper(t testing.TB, img string) *Super {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	s, err := ReadSuper(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Bytes that are not F2FS are not F2FS; an F2FS whose primary superblock
// is damaged is read from its backup, as the kernel and fsck.f2fs do;
// both damaged, it is recognised but unreadable.
func TestSuperblocks(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(p string)
	}{
		{"zeros", func(p string) {}},
		{"ext4", func(p string) { tooltest.Run(t, "mkfs.ext4", "-q", "-F", p) }},
		{"garbage", nil},
	} {
		p := filepath.Join(t.TempDir(), "x.img")
		if tc.make == nil {
			p = tooltest.Garbage(t, 64<<20)
		} else {
			os.WriteFile(p, make([]byte, 64<<20), 0o644)
			tc.make(p)
		}
		if _, err := tooltest.DetectFile(t, p, Detect); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want not mine", tc.name, err)
		}
	}

	img := mkfs(t, 128<<20, []string{"-l", "backup", "-O", "extra_attr,sb_checksum"}, tooltest.Files(t))
	want := trusted(t, img)
	b, _ := os.ReadFile(img)
	b[superOff+124] ^= 0x20 // the label's first letter: the checksum no longer matches
	damaged := filepath.Join(t.TempDir(), "damaged.img")
	os.WriteFile(damaged, b, 0o644)
	u, err := tooltest.DetectFile(t, damaged, Detect)
	if err != nil {
		t.Fatal(err)
	}
	// The map is the backup superblock's, trusted; the damage is said.
	if u.Untrusted || !strings.Contains(u.Warning, "primary superblock") || !strings.Contains(u.Warning, "backup") {
		t.Errorf("primary damaged: untrusted %v, warning %q; want a trusted map and a warning naming the backup", u.Untrusted, u.Warning)
	}
	sameMap(t, "primary damaged", tooltest.LoadUsage(t, u), want)
	if s := readSuper(t, damaged); !s.fromBackup || s.Label != "backup" {
		t.Errorf("read the backup superblock: %v, label %q", s.fromBackup, s.Label)
	}
	tooltest.F2FSClean(t, damaged) // it reads the backup too (and would repair the primary)

	b[blockSize+superOff+124] ^= 0x20
	os.WriteFile(damaged, b, 0o644)
	var ce *block.CorruptError
	if _, err := tooltest.DetectFile(t, damaged, Detect); !errors.As(err, &ce) {
		t.Errorf("both superblocks damaged: %v, want a CorruptError", err)
	}
	if out, err := exec.Command("fsck.f2fs", "--dry-run", damaged).CombinedOutput(); err == nil && !strings.Contains(string(out), "Can't find a valid F2FS superblock") {
		t.Errorf("fsck.f2fs reads both damaged superblocks:\n%s", out)
	}
}

// The label and UUID are blkid's.
func TestIdentity(t *testing.T) {
	img := mkfs(t, 64<<20, []string{"-l", "Ünïcode label", "-U", "6f1c8b2e-0a8d-4c5e-9f3a-1b2c3d4e5f60"})
	s := readSuper(t, img)
	if got, want := s.Label, tooltest.Blkid(t, img, "LABEL"); got != want {
		t.Errorf("label %q, blkid %q", got, want)
	}
	if got, want := s.UUIDString(), tooltest.Blkid(t, img, "UUID"); got != want {
		t.Errorf("UUID %q, blkid %q", got, want)
	}
}

// sparseBlocks serves block i of b at block at[i] of a filesystem of size
// bytes, zeros elsewhere: a fuzzed input of a few metadata blocks stands
// for a whole filesystem.
type sparseBlocks struct {
	at   []int64
	b    []byte
	size int64
}

func (r *sparseBlocks) ReadAt(p []byte, off int64) (int, error) {
	sr := tooltest.SparseReader{Size: r.size}
	n, err := sr.ReadAt(p, off)
	for i, a := range r.at {
		lo, hi := max(a*blockSize, off), min((a+1)*blockSize, off+int64(n))
		src := int64(i) * blockSize
		if lo < hi && src < int64(len(r.b)) {
			copy(p[lo-off:hi-off], r.b[min(src+lo-a*blockSize, int64(len(r.b))):min(src+hi-a*blockSize, int64(len(r.b)))])
		}
	}
	return n, err
}

func FuzzDetect(f *testing.F) {
	// Seeds over zeros (free space does not matter here), so that each
	// fuzzing worker makes them quickly.
	seedImage := func(trees ...string) string {
		p := filepath.Join(f.TempDir(), "seed.img")
		if err := os.WriteFile(p, nil, 0o644); err != nil || os.Truncate(p, 128<<20) != nil {
			f.Fatal("make the seed image")
		}
		tooltest.Run(f, "mkfs.f2fs", "-q", "-f", p)
		for i, tree := range trees {
			tooltest.Run(f, "sload.f2fs", "-f", tree, "-t", fmt.Sprintf("/r%d", i), p)
		}
		return p
	}
	img, fresh := seedImage(tooltest.Files(f)), seedImage()
	s := readSuper(f, img)
	// The blocks read: both superblocks, both checkpoint packs (8 blocks
	// or fewer), the first SIT blocks of both copies, and the first main
	// segment's first blocks. The CRCs of the packs' first and last
	// blocks are made right (unless the input's first byte is odd), so
	// that fuzzing gets past them.
	var at []int64
	add := func(first, n int64) {
		for i := range n {
			at = append(at, first+i)
		}
	}
	add(0, 2)
	add(s.cpAddr, 8)
	add(s.cpAddr+blocksPerSeg, 8)
	add(s.sitAddr, 2)
	add(s.sitAddr+int64(s.segSIT/2)*blocksPerSeg, 1)
	add(s.mainAddr, 2)
	packAt := []int{2, 10} // where the packs start among the blocks
	// An input is a flags byte and patches to one of the seeds: the
	// fuzzer changes the bytes of real metadata without inputs the size
	// of all those blocks, which it could not minimise in any time.
	var bases [][]byte
	for _, p := range []string{img, fresh} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var base []byte
		for _, a := range at {
			base = append(base, b[a*blockSize:(a+1)*blockSize]...)
		}
		bases = append(bases, base)
	}
	f.Add([]byte{0})
	f.Add([]byte{2})
	f.Add([]byte{0, 0x08, 0x04, 0, 10}) // superblock byte 8, log_sectorsize: 2^10
	f.Add([]byte{1, 0x00, 0x20, 0, 0})  // the first checkpoint's version, its CRC left wrong
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		fix := in[0]&1 == 0
		b := bytes.Clone(bases[int(in[0]>>1)%len(bases)])
		for p := in[1:]; len(p) >= 4; p = p[4:] {
			off := int(p[0]) | int(p[1])<<8 | int(p[2])<<16
			b[off%len(b)] = p[3]
		}
		for _, k := range packAt {
			total := int(binary.LittleEndian.Uint32(b[k*blockSize+136:]))
			for _, k := range []int{k, k + total - 1} {
				if !fix || total < 2 || total > 8 {
					break
				}
				cp := b[k*blockSize : (k+1)*blockSize]
				if off := binary.LittleEndian.Uint32(cp[164:]); off >= cpBitmapOff && off <= cpCRCMax {
					setCRC(cp)
				}
			}
		}
		r := &sparseBlocks{at: at, b: b, size: 128 << 20}
		tooltest.FuzzUsage(Detect(r, r.size))
	})
}
