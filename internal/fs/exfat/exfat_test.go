package exfat

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
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

// inUse is the bytes dump.exfat says are in use in img: every sector
// before the cluster heap and the clusters its bitmap marks.
func inUse(t testing.TB, img string) int64 {
	t.Helper()
	out := tooltest.Run(t, "dump.exfat", img)
	num := func(key string) int64 {
		m := regexp.MustCompile(key + `:\s+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dump.exfat says no %q:\n%s", key, out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	g := geometryOf(t, b)
	return g.heapOff + (num("Total Clusters")-num("Free Clusters"))*num("Cluster size")
}

// Platter's used sectors are partclone's, byte for byte, on volumes of
// 512-byte, 4 KiB and 128 KiB clusters (and of 4 KiB sectors) filled
// through exfat-fuse: what
// dump.exfat counts in use, with nothing of the garbage in the free
// clusters. With every other sector wiped, fsck.exfat finds the volume
// clean and exfat-fuse reads every file as before.
func TestDetectMatchesPartclone(t *testing.T) {
	for _, c := range []struct {
		name                  string
		size, sector, cluster int64
		many                  int
	}{
		{"512-byte clusters", 48 << 20, 512, 512, 200},
		{"4k clusters", 96 << 20, 512, 4 << 10, 600},
		{"128k clusters", 160 << 20, 512, 128 << 10, 100},
		{"4k sectors", 96 << 20, 4096, 16 << 10, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := populatedSectors(t, c.size, c.sector, c.cluster, c.many)
			u, err := detectFile(t, img)
			if err != nil {
				t.Fatal(err)
			}
			if u.FS != "exfat" || u.Warning != "" || u.Untrusted {
				t.Fatalf("detected %s, warning %q, untrusted %v", u.FS, u.Warning, u.Untrusted)
			}
			if b := tooltest.Blkid(t, img, "TYPE"); b != "exfat" {
				t.Fatalf("blkid says %s", b)
			}
			m := tooltest.LoadUsage(t, u)
			if extra := tooltest.CompareWithPartclone(t, "partclone.exfat", img, m); extra != 0 {
				t.Errorf("%d bytes more than partclone", extra)
			}
			if got, want := m.UsedBytes(), inUse(t, img); got != want {
				t.Errorf("%d bytes used, dump.exfat says %d", got, want)
			}
			if got := m.UsedBytes(); got > c.size/3 {
				t.Errorf("%d of %d bytes used", got, c.size)
			}
			wiped := tooltest.KeepOnly(t, img, m)
			tooltest.Run(t, "fsck.exfat", "-n", wiped)
			src, umount := mount(t, img, true)
			want := treeOf(t, src)
			umount()
			dst, umount := mount(t, wiped, true)
			sameTrees(t, want, treeOf(t, dst), true)
			umount()
		})
	}
}

func TestNotExfat(t *testing.T) {
	zeros := tooltest.Garbage(t, 4<<20)
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	ext := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", ext)
	ntfs := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", ntfs)
	fat := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.fat", fat)
	for name, p := range map[string]string{"zeros": zeros, "random": tooltest.Garbage(t, 1<<20), "tiny": tooltest.Garbage(t, 4096), "ext4": ext, "ntfs": ntfs, "fat": fat} {
		if _, err := detectFile(t, p); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: Detect: %v, want ErrNotMine", name, err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if _, err := OpenFiles(f, st.Size()); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: OpenFiles: %v, want ErrNotMine", name, err)
		}
		f.Close()
	}
}

// usedOf is the whole map of the volume in b.
func usedOf(t testing.TB, b []byte) (*block.Usage, *block.Map) {
	t.Helper()
	u, err := detectFile(t, writeFile(t, b))
	if err != nil {
		t.Fatal(err)
	}
	return u, tooltest.LoadUsage(t, u)
}

func sameMap(t testing.TB, a, b *block.Map) {
	t.Helper()
	if a.Blocks() != b.Blocks() {
		t.Fatalf("maps of %d and %d blocks", a.Blocks(), b.Blocks())
	}
	for i := int64(0); i < a.Blocks(); i++ {
		if a.Test(i) != b.Test(i) {
			t.Fatalf("sector %d: used %v, want %v", i, b.Test(i), a.Test(i))
		}
	}
}

// A damaged main boot region (a checksum that does not match, an
// impossible geometry, no boot signature) gives way to the backup one,
// with a warning; fsck.exfat agrees that it is the main one that is
// damaged. Both damaged: corrupt, for a raw copy.
func TestBackupBootRegion(t *testing.T) {
	img := populated(t, 48<<20, 4096, 20)
	orig, _ := os.ReadFile(img)
	_, want := usedOf(t, orig)
	for name, damage := range map[string]func(b []byte){
		"boot code":          func(b []byte) { b[300] ^= 0x55 },
		"extended boot":      func(b []byte) { b[3*512+7] ^= 1 },
		"checksum sector":    func(b []byte) { b[11*512] ^= 1 },
		"boot signature":     func(b []byte) { b[510] = 0 },
		"impossible cluster": func(b []byte) { b[109] = 30 },
	} {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			damage(b)
			u, got := usedOf(t, b)
			if u.FS != "exfat" || u.Untrusted || !strings.Contains(u.Warning, "main boot region is damaged") || !strings.Contains(u.Warning, "backup boot region") {
				t.Errorf("%s, untrusted %v, warning %q", u.FS, u.Untrusted, u.Warning)
			}
			sameMap(t, want, got)
			f, err := OpenFiles(&tooltest.SparseReader{B: b, Size: int64(len(b))}, int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Stat("Deep/level 01"); err != nil {
				t.Error(err)
			}
		})
	}
	// fsck.exfat finds the same damage.
	b := append([]byte(nil), orig...)
	b[300] ^= 0x55
	out, _ := runTool(t, "fsck.exfat", "-n", writeFile(t, b))
	if !strings.Contains(out, "checksum") && !strings.Contains(out, "boot region") {
		t.Errorf("fsck.exfat finds no damaged boot region:\n%s", out)
	}
	// A boot sector that does not name exFAT is not exFAT, whatever
	// sector 12 holds: fsck.exfat and blkid see none either.
	b = append([]byte(nil), orig...)
	clear(b[:512])
	if _, err := detectFile(t, writeFile(t, b)); !errors.Is(err, block.ErrNotMine) {
		t.Errorf("boot sector wiped: %v, want ErrNotMine", err)
	}
	// Both regions damaged: corrupt.
	b = append([]byte(nil), orig...)
	b[300] ^= 0x55
	b[12*512+300] ^= 0x55
	var ce *block.CorruptError
	if _, err := detectFile(t, writeFile(t, b)); !errors.As(err, &ce) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("both boot regions damaged: %v, want a checksum's CorruptError", err)
	}
	// The backup alone damaged: the main one is read, as by the kernel.
	b = append([]byte(nil), orig...)
	b[12*512+300] ^= 0x55
	if u, got := usedOf(t, b); u.Warning != "" {
		t.Errorf("backup damaged: warning %q", u.Warning)
	} else {
		sameMap(t, want, got)
	}
}

// A volume marked dirty gets a warning; its bitmap agrees with its tree
// (exfat-fuse writes it as it goes), so the map is the clean one's.
// When the bitmap lags (a driver that wrote directory entries and not
// yet the bitmap), the clusters the files use are kept too, so that
// after fsck.exfat -y the copy holds the source's files; the same lag
// on a volume not marked dirty is named as damage.
func TestDirty(t *testing.T) {
	img := populated(t, 48<<20, 4096, 20)
	orig, _ := os.ReadFile(img)
	_, clean := usedOf(t, orig)
	dirty := append([]byte(nil), orig...)
	binary.LittleEndian.PutUint16(dirty[106:], binary.LittleEndian.Uint16(dirty[106:])|flagDirty)
	u, got := usedOf(t, dirty)
	if !strings.Contains(u.Warning, "dirty") || u.Untrusted {
		t.Errorf("dirty: warning %q, untrusted %v", u.Warning, u.Untrusted)
	}
	sameMap(t, clean, got)

	// Clear the bits of big.bin's clusters.
	g := geometryOf(t, orig)
	fe := findSet(t, orig, "big.bin")
	first := binary.LittleEndian.Uint32(orig[fe+entrySize+20:])
	n := (int64(binary.LittleEndian.Uint64(orig[fe+entrySize+24:])) + g.cs - 1) / g.cs
	bm := bitmapOff(t, orig)
	for _, b := range [][]byte{dirty, orig} {
		for c := int64(first - 2); c < int64(first-2)+n; c++ {
			b[bm+c/8] &^= 1 << (c % 8)
		}
	}
	for name, b := range map[string][]byte{"dirty": dirty, "clean": orig} {
		t.Run(name, func(t *testing.T) {
			u, m := usedOf(t, b)
			want := "dirty"
			if name == "clean" {
				want = "calls " + strconv.FormatInt(n, 10) + " clusters free"
			}
			if !strings.Contains(u.Warning, want) || !strings.Contains(u.Warning, "big.bin") || u.Untrusted {
				t.Errorf("warning %q (want %q), untrusted %v", u.Warning, want, u.Untrusted)
			}
			for c := int64(first - 2); c < int64(first-2)+n; c++ {
				if s := (g.heapOff + c*g.cs) / g.ss; !m.Test(s) {
					t.Fatalf("cluster %d (sector %d) of big.bin not kept", c+2, s)
				}
			}
			if out, err := runTool(t, "fsck.exfat", "-n", writeFile(t, b)); err == nil {
				t.Errorf("fsck.exfat -n finds nothing wrong:\n%s", out)
			}
			// Repaired, the source and the copy hold the same files.
			src := writeFile(t, b)
			cp := tooltest.KeepOnly(t, src, m)
			runTool(t, "fsck.exfat", "-y", src)
			runTool(t, "fsck.exfat", "-y", cp)
			tooltest.Run(t, "fsck.exfat", "-n", cp)
			a, umount := mount(t, src, true)
			want2 := treeOf(t, a)
			umount()
			c, umount := mount(t, cp, true)
			sameTrees(t, want2, treeOf(t, c), true)
			umount()
		})
	}
}

// bitmapOff is the byte of the (first) allocation bitmap of img.
func bitmapOff(t testing.TB, img []byte) int64 {
	g := geometryOf(t, img)
	root := g.clusterOff(g.root)
	for i := root; i < root+g.cs; i += entrySize {
		if img[i] == typeBitmap {
			return g.clusterOff(binary.LittleEndian.Uint32(img[i+20:]))
		}
	}
	t.Fatal("no bitmap")
	return 0
}

// TexFAT (two FATs, two bitmaps; mkfs.exfat makes neither, so a volume
// it made is given them): both FATs and both bitmaps are used sectors,
// and so is a cluster either bitmap marks (the kernel reads the first,
// Windows the active one); files are read by the FAT VolumeFlags make
// active.
func TestTexFAT(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	b, _ := os.ReadFile(img)
	le := binary.LittleEndian
	g := geometryOf(t, b)
	fatLen := int64(le.Uint32(b[84:])) * g.ss
	if g.fatOff+2*fatLen > g.heapOff {
		t.Fatal("no room for a second FAT")
	}
	b[110] = 2
	le.PutUint16(b[106:], le.Uint16(b[106:])|flagActiveFAT)
	fixBoot(b, 0, g.ss)
	copy(b[12*g.ss:24*g.ss], b[:12*g.ss])
	copy(b[g.fatOff+fatLen:g.fatOff+2*fatLen], b[g.fatOff:g.fatOff+fatLen])

	// The second bitmap, in the last clusters, chained in both FATs.
	bm1 := bitmapOff(t, b)
	bmLen := (int64(g.clusters) + 7) / 8
	n := uint32((bmLen + g.cs - 1) / g.cs)
	first := g.clusters + 2 - n - 1
	bm2 := g.clusterOff(first)
	copy(b[bm2:bm2+bmLen], b[bm1:bm1+bmLen])
	setBit := func(at int64, c uint32, on bool) {
		i := int64(c - 2)
		if on {
			b[at+i/8] |= 1 << (i % 8)
		} else {
			b[at+i/8] &^= 1 << (i % 8)
		}
	}
	for c := first; c < first+n; c++ {
		setBit(bm1, c, true)
		setBit(bm2, c, true)
		next := uint32(fatEnd)
		if c+1 < first+n {
			next = c + 1
		}
		le.PutUint32(b[g.fatOff+4*int64(c):], next)
		le.PutUint32(b[g.fatOff+fatLen+4*int64(c):], next)
	}
	root := g.clusterOff(g.root)
	slot := root
	for b[slot] != typeEnd {
		slot += entrySize
	}
	e := b[slot : slot+entrySize]
	e[0], e[1] = typeBitmap, 1
	le.PutUint32(e[20:], first)
	le.PutUint64(e[24:], uint64(bmLen))

	// A cluster only the active bitmap marks, one only the other.
	onlyActive, onlyOther := first-3, first-5
	setBit(bm2, onlyActive, true)
	setBit(bm1, onlyOther, true)
	// A file whose chain the inactive FAT breaks.
	fe := findSet(t, b, "interleaved 0.bin")
	if b[fe+entrySize+1]&flagNoChain != 0 {
		t.Fatal("interleaved 0.bin is in one piece")
	}
	le.PutUint32(b[g.fatOff+4*int64(le.Uint32(b[fe+entrySize+20:])):], 0)

	u, m := usedOf(t, b)
	if u.Warning != "" || u.Untrusted {
		t.Errorf("warning %q, untrusted %v", u.Warning, u.Untrusted)
	}
	used := func(c uint32) bool { return m.Test(g.clusterOff(c) / g.ss) }
	for c := first; c < first+n; c++ {
		if !used(c) {
			t.Errorf("cluster %d of the second bitmap not used", c)
		}
	}
	if !used(onlyActive) || !used(onlyOther) {
		t.Errorf("cluster marked by the active bitmap only: used %v; by the other only: used %v", used(onlyActive), used(onlyOther))
	}
	if used(first - 4) {
		t.Errorf("free cluster %d used", first-4)
	}
	for s := int64(0); s < g.heapOff/g.ss; s++ {
		if !m.Test(s) {
			t.Fatalf("sector %d, before the cluster heap, not used", s)
		}
	}
	f := openFiles(t, b)
	r, err := f.Open("frag/interleaved 0.bin")
	if err != nil {
		t.Fatalf("read by the active FAT: %v", err)
	}
	if n, err := io.Copy(io.Discard, r); err != nil || n != 6*4096 {
		t.Errorf("read %d bytes, %v", n, err)
	}
	// With the first FAT active, the chain is broken.
	le.PutUint16(b[106:], le.Uint16(b[106:])&^flagActiveFAT)
	if _, err := openFiles(t, b).Open("frag/interleaved 0.bin"); err == nil {
		t.Error("the first FAT, active, reads the chain it breaks")
	}
}

// A volume whose bitmap cannot be found or read is copied whole, and
// keeps its name: its files are still read.
func TestUntrusted(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	orig, _ := os.ReadFile(img)
	g := geometryOf(t, orig)
	root := g.clusterOff(g.root)
	entry := func(b []byte) []byte {
		for i := root; i < root+g.cs; i += entrySize {
			if b[i] == typeBitmap {
				return b[i : i+entrySize]
			}
		}
		t.Fatal("no bitmap entry")
		return nil
	}
	for name, damage := range map[string]func(b []byte){
		"no bitmap entry": func(b []byte) { entry(b)[0] &^= typeInUse },
		"bitmap too short": func(b []byte) {
			binary.LittleEndian.PutUint64(entry(b)[24:], 1)
		},
		"bitmap outside the volume": func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b)[20:], g.clusters+5)
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			damage(b)
			u, m := usedOf(t, b)
			if u.FS != "exfat" || !u.Untrusted || !strings.Contains(u.Warning, "allocation bitmap") || !strings.Contains(u.Warning, "every sector is stored") {
				t.Errorf("%s, untrusted %v, warning %q", u.FS, u.Untrusted, u.Warning)
			}
			if m.Count() != m.Blocks() {
				t.Errorf("%d of %d sectors used", m.Count(), m.Blocks())
			}
			if _, err := openFiles(t, b).Stat("big.bin"); err != nil {
				t.Error(err)
			}
		})
	}
}
