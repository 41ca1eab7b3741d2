package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// smallFAT32 makes a FAT32 of fewer than 65525 clusters holding files
// and returns its path and its sector count as mkfs.fat made it. mtools
// reads and writes a FAT32 by its cluster count and takes such a volume
// for FAT16 (it cannot copy files in or out), and this machine has no
// kernel vfat: so mkfs.fat makes a FAT32 of more clusters, mcopy fills
// it, its BPB's sector count is cut to keep clusters clusters (the files
// lie in the first ones), and fsck.fat -a puts the free count in FSInfo
// right. blkid, fsck.fat and the kernel take the result for FAT32, as
// they take what mkfs.fat -F 32 makes on a small device.
func smallFAT32(t testing.TB, size int64, spc string, clusters int64, tree ...string) (string, uint32) {
	t.Helper()
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.fat", "-F", "32", "-s", spc, p)
	tooltest.Run(t, "mcopy", append(append([]string{"-s", "-i", p}, tree...), "::/")...)
	img, _ := os.ReadFile(p)
	b, err := parseBPB(img[:512], size)
	if err != nil || b.clusters < 65525 {
		t.Fatalf("mkfs.fat made %d clusters: %v", b.clusters, err)
	}
	le := binary.LittleEndian
	orig := le.Uint32(img[0x20:])
	setSectors(t, p, uint32(b.dataStart+clusters*b.sectorsPerCluster))
	repair(t, p)
	tooltest.Run(t, "fsck.fat", "-n", p)
	return p, orig
}

// setSectors writes the 32-bit sector count of a FAT32's boot sector and
// its backup (sector 6).
func setSectors(t testing.TB, p string, n uint32) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], n)
	for _, sector := range []int64{0, 6} {
		if _, err := f.WriteAt(b[:], sector*512+0x20); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSmallFAT32: a FAT32 of fewer than 65525 clusters (mkfs.fat -F 32
// makes one on a small device; it only warns) is FAT32 to blkid,
// fsck.fat and the kernel, whose rule is the BPB's (16-bit FAT size 0),
// and so to us: named fat32 and its 32-bit FAT read as such, so keeping
// only the sectors our map calls used leaves fsck.fat clean and every
// file intact.
func TestSmallFAT32(t *testing.T) {
	files := tooltest.Files(t)
	for _, tc := range []struct {
		name     string
		size     int64
		spc      string
		clusters int64
	}{
		{"33MiB-512B-clusters", 33 << 20, "1", 65000},
		{"80MiB-1k-clusters", 80 << 20, "2", 64000},
		{"300MiB-4k-clusters", 300 << 20, "8", 30000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, orig := smallFAT32(t, tc.size, tc.spc, tc.clusters, files+"/d0", files+"/d1", files+"/d2")
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			if v := tooltest.Blkid(t, p, "VERSION"); u.FS != "fat32" || v != "FAT32" {
				t.Fatalf("detected %s, blkid says %s", u.FS, v)
			}
			if u.Warning != "" || u.Untrusted {
				t.Errorf("a healthy FAT32 is not trusted: %s", u.Warning)
			}
			wiped := tooltest.KeepOnly(t, p, tooltest.LoadUsage(t, u))
			tooltest.Run(t, "fsck.fat", "-n", wiped)
			// mtools reads them with their first sector count back.
			setSectors(t, wiped, orig)
			got := tooltest.MtoolsTree(t, wiped)
			for _, d := range []string{"d0", "d1", "d2"} {
				tooltest.SameTree(t, filepath.Join(files, d), filepath.Join(got, d))
			}
		})
	}
}

// TestNoSectorCount: a FAT boot sector whose BPB gives no sector count is
// a FAT filesystem that is damaged, not something else: a CorruptError
// says why (and the partition is copied raw with that note).
func TestNoSectorCount(t *testing.T) {
	for _, bits := range []string{"12", "16", "32"} {
		p := tooltest.Garbage(t, 40<<20)
		tooltest.Run(t, "mkfs.fat", "-F", bits, p)
		b, _ := os.ReadFile(p)
		clear(b[0x13:0x15])
		clear(b[0x20:0x24])
		os.WriteFile(p, b, 0o644)
		_, err := detectFile(t, p)
		var ce *block.CorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "no sector count") {
			t.Errorf("FAT%s without a sector count: %v, want a CorruptError saying so", bits, err)
		}
	}
}

// TestTooManyClusters: a FAT12/16 BPB (16-bit FAT size) whose sectors
// make more clusters than FAT16 can number is refused by fsck.fat ("too
// many clusters"): a damaged FAT, copied raw with the reason.
func TestTooManyClusters(t *testing.T) {
	p := tooltest.Garbage(t, 64<<20)
	tooltest.Run(t, "mkfs.fat", "-F", "16", "-s", "2", p)
	b, _ := os.ReadFile(p)
	b[0x0d] = 1 // one sector per cluster: twice the clusters
	os.WriteFile(p, b, 0o644)
	if out, err := exec.Command("fsck.fat", "-n", p).CombinedOutput(); err == nil {
		t.Fatalf("fsck.fat takes it:\n%s", out)
	}
	_, err := detectFile(t, p)
	var ce *block.CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "more than FAT16 can number") {
		t.Errorf("%v, want a CorruptError saying FAT16 cannot number the clusters", err)
	}
}

// TestCopiesDiffer: when the FAT copies disagree, fsck.fat keeps one of
// them (the first, unless its media entry is broken; a user may pick
// either). Every cluster either copy calls used is stored, with a
// warning: whichever copy the repair keeps, the restored copy repairs to
// the same files as the source.
func TestCopiesDiffer(t *testing.T) {
	files := tooltest.Files(t)
	for _, bits := range []string{"12", "16", "32"} {
		t.Run("fat"+bits, func(t *testing.T) {
			size := int64(40 << 20)
			if bits == "12" {
				size = 8 << 20
			}
			p := tooltest.Garbage(t, size)
			tooltest.Run(t, "mkfs.fat", "-F", bits, p)
			tooltest.Run(t, "mcopy", "-s", "-i", p, files+"/d0", "::/")
			img, _ := os.ReadFile(p)
			b, err := parseBPB(img[:512], size)
			if err != nil {
				t.Fatal(err)
			}
			b.r = bytes.NewReader(img)
			// Free the chain of the largest file in the first FAT only.
			var first, n int64
			for cl := int64(2); cl < b.clusters+2; cl++ {
				v, _ := b.entry(cl)
				if int64(v) == cl+1 {
					k := cl
					for {
						v, _ := b.entry(k)
						if int64(v) < 2 || int64(v) > b.clusters+1 {
							break
						}
						k = int64(v)
					}
					if k-cl+1 > n {
						first, n = cl, k-cl+1
					}
					cl = k
				}
			}
			if n < 2 {
				t.Fatal("no chain to free")
			}
			for c := first; c < first+n; c++ {
				setEntry(b, img, 0, c, 0)
			}
			os.WriteFile(p, img, 0o644)
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("warning: %s", u.Warning)
			if u.Untrusted || !strings.Contains(u.Warning, "disagree") {
				t.Fatalf("untrusted %v, warning %q; want a warning that the copies disagree", u.Untrusted, u.Warning)
			}
			kept := tooltest.KeepOnly(t, p, tooltest.LoadUsage(t, u))
			for _, keep := range []int64{0, 1} {
				src, dst := keepFAT(t, p, b, keep), keepFAT(t, kept, b, keep)
				repair(t, src)
				repair(t, dst)
				tooltest.SameTree(t, tooltest.MtoolsTree(t, src), tooltest.MtoolsTree(t, dst))
			}
		})
	}
}

// repair runs fsck.fat -a, which exits 1 when it fixed something.
func repair(t testing.TB, img string) {
	t.Helper()
	path, err := exec.LookPath("fsck.fat")
	if err != nil {
		path = "/usr/sbin/fsck.fat"
	}
	out, err := exec.Command(path, "-a", "-w", img).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
		t.Fatalf("fsck.fat -a %s: %v\n%s", img, err, out)
	}
}

// keepFAT copies img with FAT copy keep written over every other: what a
// repair that keeps that copy starts from.
func keepFAT(t *testing.T, img string, b *bpb, keep int64) string {
	t.Helper()
	data, _ := os.ReadFile(img)
	size := b.fatSectors * b.bytesPerSector
	from := b.reserved*b.bytesPerSector + keep*size
	fat := bytes.Clone(data[from : from+size])
	for f := int64(0); f < b.fats; f++ {
		copy(data[b.reserved*b.bytesPerSector+f*size:], fat)
	}
	out := filepath.Join(t.TempDir(), "kept-fat.img")
	os.WriteFile(out, data, 0o644)
	return out
}
