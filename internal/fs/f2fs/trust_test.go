package f2fs

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// packs returns the block addresses and versions of img's whole
// checkpoint packs (heads and tails passing their CRCs, one version),
// the current one first.
func packs(t testing.TB, img string) (starts []int64, versions []uint64) {
	t.Helper()
	s := readSuper(t, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for _, start := range []int64{s.cpAddr, s.cpAddr + blocksPerSeg} {
		head := b[start*blockSize:][:blockSize]
		total := int64(le.Uint32(head[136:]))
		if _, ok := cpCRC(head); !ok || total < 2 || total > blocksPerSeg {
			continue
		}
		tail := b[(start+total-1)*blockSize:][:blockSize]
		if _, ok := cpCRC(tail); !ok || le.Uint64(tail) != le.Uint64(head) {
			continue
		}
		starts, versions = append(starts, start), append(versions, le.Uint64(head))
	}
	if len(starts) == 2 && int64(versions[1]-versions[0]) > 0 {
		starts[0], starts[1] = starts[1], starts[0]
		versions[0], versions[1] = versions[1], versions[0]
	}
	if len(starts) == 0 {
		t.Fatalf("%s has no whole checkpoint pack", img)
	}
	return starts, versions
}

// patchBlock applies fn to block n of img.
func patchBlock(t testing.TB, img string, n int64, fn func(b []byte)) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, blockSize)
	if _, err := f.ReadAt(b, n*blockSize); err != nil {
		t.Fatal(err)
	}
	fn(b)
	if _, err := f.WriteAt(b, n*blockSize); err != nil {
		t.Fatal(err)
	}
}

// setCRC writes a checkpoint block's CRC for its contents.
func setCRC(b []byte) {
	le := binary.LittleEndian
	off := le.Uint32(b[164:])
	c := crc(b[:off])
	if off < cpCRCMax {
		c = crcFrom(c, b[off+4:])
	}
	le.PutUint32(b[off:], c)
}

// patchCheckpoint applies fn to both checkpoint blocks of img's current
// pack and writes their CRCs again, as a kernel writing that checkpoint
// would.
func patchCheckpoint(t testing.TB, img string, fn func(cp []byte)) {
	t.Helper()
	starts, _ := packs(t, img)
	var total int64
	patchBlock(t, img, starts[0], func(b []byte) {
		total = int64(binary.LittleEndian.Uint32(b[136:]))
		fn(b)
		setCRC(b)
	})
	patchBlock(t, img, starts[0]+total-1, func(b []byte) {
		fn(b)
		setCRC(b)
	})
}

// setFlags sets and clears checkpoint flags.
func setFlags(set, clear uint32) func([]byte) {
	return func(b []byte) {
		v := binary.LittleEndian.Uint32(b[132:])
		binary.LittleEndian.PutUint32(b[132:], v&^clear|set)
	}
}

// untrusted detects img and fails unless it is F2FS, untrusted, with
// want in its warning.
func untrusted(t testing.TB, img, want string) {
	t.Helper()
	u, err := tooltest.DetectFile(t, img, Detect)
	if err != nil {
		t.Fatal(err)
	}
	if u.FS != "f2fs" || !u.Untrusted || !strings.Contains(u.Warning, want) || !strings.HasPrefix(u.Warning, "f2fs ") {
		t.Fatalf("detected %q untrusted %v, warning %q; want one naming %q", u.FS, u.Untrusted, u.Warning, want)
	}
	m := tooltest.LoadUsage(t, u)
	if m.Count() != m.Blocks() {
		t.Errorf("untrusted, but %d of %d blocks used", m.Count(), m.Blocks())
	}
}

// state is the checkpoint state dump.f2fs reports for img.
func state(t testing.TB, img string) string {
	t.Helper()
	m := regexp.MustCompile(`checkpoint state = \S+ :(.*)`).FindStringSubmatch(tooltest.Run(t, "dump.f2fs", img))
	if m == nil {
		t.Fatalf("dump.f2fs %s gives no checkpoint state", img)
	}
	return m[1]
}

func copyFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(t.TempDir(), "copy.img")
	if err := os.WriteFile(q, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return q
}

// Checkpoint flags that say the filesystem needs recovery or repair
// make it untrusted; dump.f2fs reads the same flags.
func TestTrustFlags(t *testing.T) {
	img := mkfs(t, 128<<20, nil, tooltest.Files(t))
	trusted(t, img)
	for _, tc := range []struct {
		set, clear uint32
		state      string // what dump.f2fs says of it ("-x": x absent)
		want       string
	}{
		{0, cpUmount, "-unmount", "was not cleanly unmounted"},
		{cpFsck, 0, "fsck", "asks for a full check"},
		{cpError, 0, "error", "stopped after an error"},
		{cpDisabled, 0, "disabled", "checkpoint=disable"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			p := copyFile(t, img)
			patchCheckpoint(t, p, setFlags(tc.set, tc.clear))
			st := state(t, p)
			if neg := strings.TrimPrefix(tc.state, "-"); strings.Contains(st, neg) == (neg != tc.state) {
				t.Fatalf("dump.f2fs: checkpoint state %q, want %q", st, tc.state)
			}
			untrusted(t, p, tc.want)
		})
	}
	// What newer kernels record in the superblock (f2fs-tools 1.16 on
	// read it; 1.15, here, does not): errors met, and reasons they
	// stopped checkpointing, of which a shutdown is no damage.
	for _, tc := range []struct {
		off  int
		want string
	}{
		{errorsOff + 3, "recorded errors in its superblock"},
		{stopReasonOff + 2, "stopped checkpointing for a reason other than a shutdown"},
		{stopReasonOff, ""},
	} {
		p := copyFile(t, img)
		for _, n := range []int64{0, 1} {
			patchBlock(t, p, n, func(b []byte) { b[superOff+tc.off] = 1 })
		}
		if tc.want == "" {
			trusted(t, p)
		} else {
			untrusted(t, p, tc.want)
		}
	}
	// fsck.f2fs -a (what boot runs) repairs when CP_FSCK_FLAG asks, and
	// leaves the clean filesystem alone.
	p := copyFile(t, img)
	patchCheckpoint(t, p, setFlags(cpFsck, 0))
	for _, tc := range []struct {
		img  string
		fix  bool
		what string
	}{{img, false, "clean"}, {p, true, "CP_FSCK_FLAG"}} {
		out, _ := exec.Command("fsck.f2fs", "-a", "--dry-run", tc.img).CombinedOutput()
		if fixes := !strings.Contains(string(out), "No error was reported"); fixes != tc.fix {
			t.Errorf("%s: fsck.f2fs -a checks it: %v, want %v\n%s", tc.what, fixes, tc.fix, out)
		}
	}
}

// With two whole packs the one of the later version is current; with
// that one torn (a CRC that fails, or head and tail of different
// versions) the other is, as for f2fs-tools; with none whole, neither
// fsck.f2fs nor the kernel can use the filesystem: untrusted, still
// F2FS. f2fs-tools write both packs alike, so pack 2 is made the newer
// here: a checkpoint a kernel wrote while mounted, without CP_UMOUNT.
func TestTrustPacks(t *testing.T) {
	img := mkfs(t, 128<<20, nil, tooltest.Files(t))
	starts, versions := packs(t, img)
	if len(starts) != 2 {
		t.Fatalf("packs at %v: want two", starts)
	}
	v := versions[0]
	pack2 := readSuper(t, img).cpAddr + blocksPerSeg
	total := int64(binary.LittleEndian.Uint32(readBlock(t, img, pack2)[136:]))
	newer := copyFile(t, img)
	for _, n := range []int64{pack2, pack2 + total - 1} {
		patchBlock(t, newer, n, func(b []byte) {
			binary.LittleEndian.PutUint64(b, v+1)
			setFlags(0, cpUmount)(b)
			setCRC(b)
		})
	}
	current := func(t *testing.T, p string, want uint64) {
		t.Helper()
		if out := tooltest.Run(t, "dump.f2fs", p); !strings.Contains(out, fmt.Sprintf("CKPT version = %x\n", want)) {
			t.Fatalf("dump.f2fs reads another checkpoint than version %#x:\n%s", want, out)
		}
	}
	current(t, newer, v+1)
	untrusted(t, newer, fmt.Sprintf("version %#x, lacks CP_UMOUNT", v+1))

	want := trusted(t, img)
	for _, tc := range []struct {
		name string
		tear func(b []byte)
	}{
		{"tail CRC", func(b []byte) { b[40] ^= 1 }},
		{"versions differ", func(b []byte) {
			binary.LittleEndian.PutUint64(b, v+2)
			setCRC(b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := copyFile(t, newer)
			patchBlock(t, p, pack2+total-1, tc.tear)
			current(t, p, v)
			sameMap(t, "older pack", trusted(t, p), want)
		})
	}
	t.Run("none", func(t *testing.T) {
		p := copyFile(t, img)
		for _, s := range starts {
			patchBlock(t, p, s, func(b []byte) { b[40] ^= 1 })
		}
		untrusted(t, p, "has no valid checkpoint")
		if out, err := exec.Command("fsck.f2fs", "--dry-run", p).CombinedOutput(); err == nil && !strings.Contains(string(out), "Can't find valid checkpoint") {
			t.Errorf("fsck.f2fs finds a checkpoint:\n%s", out)
		}
	})
}

func mustOpen(t testing.TB, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readBlock(t testing.TB, p string, n int64) []byte {
	t.Helper()
	b := make([]byte, blockSize)
	if _, err := mustOpen(t, p).ReadAt(b, n*blockSize); err != nil {
		t.Fatal(err)
	}
	return b
}

// A cleanly unmounted filesystem mounted again and written without a
// checkpoint has, where its warm node log goes on, a node of the
// checkpoint's version: the kernel rolls it forward. A stale node of an
// older version there is not.
func TestTrustRollForward(t *testing.T) {
	img := mkfs(t, 128<<20, nil, tooltest.Files(t))
	f := &fsys{r: mustOpen(t, img), sb: readSuper(t, img)}
	if why, err := f.readCheckpoint(); why != "" || err != nil {
		t.Fatalf("%s %v", why, err)
	}
	cp := f.cp
	at := f.sb.mainAddr + int64(cp.nodeSeg[warmNode])*blocksPerSeg + int64(cp.nodeOff[warmNode])
	node := func(version uint64) func([]byte) {
		return func(b []byte) {
			le := binary.LittleEndian
			clear(b)
			le.PutUint32(b[footerVersion-12:], 99)  // nid
			le.PutUint32(b[footerVersion-8:], 99)   // ino
			le.PutUint32(b[footerVersion-4:], 1<<1) // fsync mark
			if cp.flags&cpCRCRecovery != 0 {
				version |= uint64(cp.crc) << 32
			}
			le.PutUint64(b[footerVersion:], version)
		}
	}
	stale := copyFile(t, img)
	patchBlock(t, stale, at, node(cp.version-1))
	trusted(t, stale)
	p := copyFile(t, img)
	patchBlock(t, p, at, node(cp.version))
	untrusted(t, p, "holds nodes written after its last checkpoint")
}

// A SIT entry whose count and map disagree, or a SIT journal that claims
// more entries than fit, is damage fsck.f2fs repairs (by rebuilding the
// SIT from the node tree): untrusted. fsck.f2fs finds the same damage.
func TestTrustDamagedSIT(t *testing.T) {
	t.Run("entry", func(t *testing.T) {
		img := mkfs(t, 128<<20, nil, manyFiles(t, "sit"))
		f := &fsys{r: mustOpen(t, img), sb: readSuper(t, img)}
		if why, err := f.readCheckpoint(); why != "" || err != nil {
			t.Fatalf("%s %v", why, err)
		}
		if why, err := f.readJournal(); why != "" || err != nil {
			t.Fatalf("%s %v", why, err)
		}
		// The first segment with valid blocks whose entry is in the SIT
		// itself (not the journal) loses one block from its map.
		seg := uint32(0)
		for ; seg < f.sb.segMain; seg++ {
			e, err := f.sitEntry(seg)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := vblocks(e); n > 0 && f.journal[seg] == nil {
				break
			}
		}
		if seg == f.sb.segMain {
			t.Fatal("no segment with valid blocks outside the journal")
		}
		n := int64(seg / sitPerBlock)
		if testBit(f.cp.sitBitmap, n) {
			t.Fatal("SIT block in its second copy: not what f2fs-tools writes")
		}
		patchBlock(t, img, f.sb.sitAddr+n, func(b []byte) {
			e := b[int(seg%sitPerBlock)*sitEntrySize:]
			for k := sitMapOff; k < sitMapOff+sitMapSize; k++ {
				if e[k] != 0 {
					e[k] &= e[k] - 1 // its lowest set bit
					break
				}
			}
		})
		untrusted(t, img, "damaged SIT entry")
		out, _ := exec.Command("fsck.f2fs", "--dry-run", img).CombinedOutput()
		if !strings.Contains(string(out), "Wrong SIT valid blocks") {
			t.Errorf("fsck.f2fs does not see the damage:\n%s", out)
		}
	})
	t.Run("journal", func(t *testing.T) {
		img := mkfs(t, 64<<20, nil) // mkfs alone: compacted summaries, a SIT journal
		starts, _ := packs(t, img)
		f := &fsys{r: mustOpen(t, img), sb: readSuper(t, img)}
		if why, err := f.readCheckpoint(); why != "" || err != nil || f.cp.flags&cpCompactSum == 0 {
			t.Fatalf("%s %v, flags %#x", why, err, f.cp.flags)
		}
		patchBlock(t, img, starts[0]+f.cp.startSum, func(b []byte) {
			binary.LittleEndian.PutUint16(b[sumJournalSize:], sitJournalMax+1)
		})
		untrusted(t, img, "damaged SIT journal")
		out, _ := exec.Command("fsck.f2fs", "--dry-run", img).CombinedOutput()
		if !strings.Contains(string(out), "truncate n_sits") {
			t.Errorf("fsck.f2fs does not see the damage:\n%s", out)
		}
	})
}

// An F2FS whose superblock lists other devices is one this device holds
// only part of: untrusted.
func TestTrustMultiDevice(t *testing.T) {
	img := mkfs(t, 64<<20, nil)
	b, _ := os.ReadFile(img)
	copy(b[superOff+2201:], "/dev/other") // devs[0].path
	p := filepath.Join(t.TempDir(), "multi.img")
	os.WriteFile(p, b, 0o644)
	untrusted(t, p, "spans several devices")
}
