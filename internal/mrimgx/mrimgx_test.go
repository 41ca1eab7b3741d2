package mrimgx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/mrimgx/mrimgxtest"
	"github.com/platter-dev/platter/internal/tooltest"
)

const mib = 1 << 20

// gptDisk is a GPT disk made by real tools: an NTFS (mkntfs, files
// copied in through ntfs-3g) and a FAT32 (mkfs.fat, files copied in with
// mtools) on a disk whose free space is random bytes, as a used disk's
// is, with the partitions' used blocks read by partclone from the
// filesystems' own $Bitmap and FAT.
type gptDisk struct {
	path       string
	files      string // what the NTFS holds
	fatTree    string // what the FAT holds, as mtools read it from the source
	ntfsOff    int64
	ntfsSize   int64
	fatOff     int64
	fatSize    int64
	ntfsUsed   []block.Extent
	fatUsed    []block.Extent
	fatReserve int64
	ntfsImg    string
	fatImg     string
}

func makeGPTDisk(t *testing.T) *gptDisk {
	t.Helper()
	g := &gptDisk{ntfsOff: 1 * mib, ntfsSize: 32 * mib, fatOff: 33 * mib, fatSize: 40 * mib}
	g.files = tooltest.Files(t)

	ntfs := tooltest.Garbage(t, g.ntfsSize)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", ntfs)
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", ntfs, mnt)
	tooltest.Run(t, "cp", "-r", g.files+"/.", mnt)
	tooltest.Run(t, "fusermount", "-u", mnt)
	// partclone leaves out the backup boot sector, the volume's last
	// sector, outside its clusters; Reflect's grid covers the whole
	// partition (block_count x block_size = length in its example), and
	// ntfsfix wants the sector, so the writer saves it as Reflect must.
	g.ntfsUsed = append(tooltest.PartcloneUsed(t, "partclone.ntfs", ntfs), block.Extent{Off: g.ntfsSize - 512, Len: 512})

	fat := tooltest.MakeFAT(t, g.fatSize, 40, 2020, "-F", "32", "-s", "1")
	g.fatUsed = tooltest.PartcloneUsed(t, "partclone.fat32", fat)
	boot := make([]byte, 512)
	readAt(t, fat, boot, 0)
	le := binary.LittleEndian
	bps := int64(le.Uint16(boot[0x0b:]))
	g.fatReserve = (int64(le.Uint16(boot[0x0e:])) + int64(boot[0x10])*int64(le.Uint32(boot[0x24:]))) * bps
	g.fatTree = tooltest.MtoolsTree(t, fat)

	g.path = tooltest.Garbage(t, 80*mib)
	tooltest.Run(t, "sgdisk", "-o",
		"-n", fmt.Sprintf("1:%d:+%dM", g.ntfsOff/512, g.ntfsSize/mib), "-t", "1:0700",
		"-n", fmt.Sprintf("2:%d:+%dM", g.fatOff/512, g.fatSize/mib), "-t", "2:ef00", g.path)
	place(t, g.path, ntfs, g.ntfsOff)
	place(t, g.path, fat, g.fatOff)
	g.ntfsImg, g.fatImg = ntfs, fat
	return g
}

func (g *gptDisk) spec(compress bool) mrimgxtest.Spec {
	return mrimgxtest.Spec{
		Source: g.path, SectorSize: 512, Format: "gpt", Track0: g.ntfsOff, Compress: compress,
		Parts: []mrimgxtest.Part{
			{Number: 1, FS: "NTFS", Start: g.ntfsOff, Size: g.ntfsSize, BlockSize: 64 << 10, Used: g.ntfsUsed},
			{Number: 2, FS: "FAT32", Start: g.fatOff, Size: g.fatSize, BlockSize: 64 << 10, Reserved: g.fatReserve, Used: g.fatUsed},
		},
	}
}

func readAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func place(t *testing.T, disk, part string, off int64) {
	t.Helper()
	b, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// readOut writes the whole disk as read through d into a file.
func readOut(t *testing.T, d *Disk) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := io.Copy(f, io.NewSectionReader(d, 0, d.Size())); err != nil || n != d.Size() {
		t.Fatalf("copied %d of %d bytes: %v", n, d.Size(), err)
	}
	return out
}

func cut(t *testing.T, disk string, off, n int64) string {
	t.Helper()
	b := make([]byte, n)
	readAt(t, disk, b, off)
	p := filepath.Join(t.TempDir(), "part.img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWholeDiskGPT(t *testing.T) {
	g := makeGPTDisk(t)
	for _, compress := range []bool{true, false} {
		t.Run(fmt.Sprintf("zstd=%v", compress), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.mrimgx")
			if _, err := mrimgxtest.Write(img, g.spec(compress)); err != nil {
				t.Fatal(err)
			}
			d, err := Open(img, Options{Disk: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			var last, total int64
			if err := d.Verify(context.Background(), func(done, all int64) { last, total = done, all }); err != nil || last != total || total == 0 {
				t.Fatalf("Verify: %v (%d of %d bytes)", err, last, total)
			}
			judge(t, d, g, g.path, g.files, g.fatTree)
			// Every byte partclone would copy is in the image.
			for _, pu := range []struct {
				off  int64
				used []block.Extent
			}{{g.ntfsOff, g.ntfsUsed}, {g.fatOff, g.fatUsed}} {
				for _, e := range pu.used {
					if !covered(d.Used(), e.Off+pu.off, e.Len) {
						t.Errorf("partclone's used bytes %d+%d are not in the image", e.Off+pu.off, e.Len)
					}
				}
			}
		})
	}
}

// judge reads the whole disk out of d and checks it with the
// filesystems' own tools: the GPT (both copies) with sgdisk, the NTFS
// with ntfsfix and its files through ntfs-3g, the FAT with fsck.fat and
// its files through mtools. src, when set, is the disk the image was
// made of, which every byte the image holds must equal.
func judge(t *testing.T, d *Disk, g *gptDisk, src, ntfsTree, fatTree string) {
	t.Helper()
	if d.Size() != 80*mib || d.SectorSize() != 512 || len(d.Partitions) != 2 {
		t.Fatalf("size %d, sector %d, %d partitions", d.Size(), d.SectorSize(), len(d.Partitions))
	}
	if err := d.Verify(context.Background(), nil); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	out := readOut(t, d)
	// The table, both copies, is whole: sgdisk checks the backup made
	// from the primary.
	if v := tooltest.Run(t, "sgdisk", "-v", out); !strings.Contains(v, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", v)
	}
	if src != "" {
		want, _ := os.ReadFile(src)
		got, _ := os.ReadFile(out)
		for _, e := range d.Used() {
			if !bytes.Equal(want[e.Off:e.End()], got[e.Off:e.End()]) {
				t.Errorf("disk bytes %d-%d differ from the source", e.Off, e.End()-1)
			}
		}
	}
	ntfs := cut(t, out, g.ntfsOff, g.ntfsSize)
	tooltest.Run(t, "ntfsfix", "-n", ntfs)
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", "-o", "ro", ntfs, mnt)
	tooltest.SameTree(t, ntfsTree, mnt)
	tooltest.SameTree(t, mnt, ntfsTree)
	tooltest.Run(t, "fusermount", "-u", mnt)
	fat := cut(t, out, g.fatOff, g.fatSize)
	tooltest.Run(t, "fsck.fat", "-n", fat)
	tooltest.SameTree(t, fatTree, tooltest.MtoolsTree(t, fat))
	tooltest.SameTree(t, tooltest.MtoolsTree(t, fat), fatTree)
}

func covered(ext []block.Extent, off, n int64) bool {
	for _, e := range ext {
		if e.Off <= off && off+n <= e.End() {
			return true
		}
	}
	return false
}

// TestMD5Mismatch damages one stored block and expects the read of it to
// name the block and its disk bytes.
func TestMD5Mismatch(t *testing.T) {
	src := tooltest.Garbage(t, 4*mib)
	img := filepath.Join(t.TempDir(), "d.mrimgx")
	spec := mrimgxtest.Spec{Source: src, SectorSize: 512, Format: "mbr", Track0: 512,
		Parts: []mrimgxtest.Part{{Number: 1, FS: "unknown", Start: mib, Size: 3 * mib, BlockSize: 64 << 10, Used: []block.Extent{{Off: 0, Len: 3 * mib}}}}}
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff ^ 0x5a}, 5*(64<<10)+100) // in block 5
	f.Close()
	d, err := Open(img, Options{Disk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, 4096)
	if _, err := d.ReadAt(b, mib+4*(64<<10)); err != nil {
		t.Fatalf("block 4: %v", err)
	}
	_, err = d.ReadAt(b, mib+5*(64<<10)+4096)
	want := fmt.Sprintf("block 5 (disk bytes %d-%d", mib+5*(64<<10), mib+6*(64<<10)-1)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an MD5 mismatch naming %q", err, want)
	}
	err = d.Verify(context.Background(), nil)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Verify: got %v, want an MD5 mismatch naming %q", err, want)
	}
}

// TestUndecodable damages a compressed block so that its zstd frame no
// longer decodes: damage, named by the block, as a mismatch is.
func TestUndecodable(t *testing.T) {
	src := tooltest.Garbage(t, 2*mib)
	img := filepath.Join(t.TempDir(), "d.mrimgx")
	spec := mrimgxtest.Spec{Source: src, SectorSize: 512, Format: "mbr", Track0: 512, Compress: true,
		Parts: []mrimgxtest.Part{{Number: 1, FS: "unknown", Start: mib, Size: mib, BlockSize: 64 << 10, Used: []block.Extent{{Off: 0, Len: mib}}}}}
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, 0) // block 0's zstd magic
	f.Close()
	d, err := Open(img, Options{Disk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := fmt.Sprintf("block 0 (disk bytes %d-%d", mib, mib+(64<<10)-1)
	if _, err := d.ReadAt(make([]byte, 512), mib); !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want ErrDecode naming %q", err, want)
	}
	if err := d.Verify(context.Background(), nil); !errors.Is(err, ErrDecode) {
		t.Fatalf("Verify: got %v, want ErrDecode", err)
	}
}

// TestSplit reads an image split into several files, opened by its last
// part or its first, and names the part that is missing.
func TestSplit(t *testing.T) {
	g := makeGPTDisk(t)
	dir := t.TempDir()
	spec := g.spec(true)
	spec.SplitAt = 96 << 10
	res, err := mrimgxtest.Write(filepath.Join(dir, "D684BA87241263E2-00-00.mrimgx"), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) < 3 {
		t.Fatalf("%d files; the fixture should split into 3 or more", len(res.Files))
	}
	for _, open := range []string{res.Files[len(res.Files)-1], res.Files[0]} {
		d, err := Open(open, Options{Disk: -1})
		if err != nil {
			t.Fatal(err)
		}
		judge(t, d, g, g.path, g.files, g.fatTree)
		d.Close()
	}
	os.Remove(res.Files[1])
	_, err = Open(res.Files[len(res.Files)-1], Options{Disk: -1})
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "file 1 of the backup set") {
		t.Fatalf("got %v, want file 1 named missing", err)
	}
}

// TestIncremental changes both filesystems after a full image and reads
// the increment over it, with a delta index and with a full one; the
// full image alone still reads as it was.
func TestIncremental(t *testing.T) {
	g := makeGPTDisk(t)
	for _, delta := range []bool{true, false} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			g := *g
			g.path = cut(t, g.path, 0, 80*mib) // a disk of this test's own
			dir := t.TempDir()
			full := filepath.Join(dir, "D684BA87241263E2-00-00.mrimgx")
			base, err := mrimgxtest.Write(full, g.spec(true))
			if err != nil {
				t.Fatal(err)
			}
			oldFAT := g.fatTree
			// Change both filesystems: a file removed, one added.
			newNTFS := t.TempDir()
			tooltest.Run(t, "cp", "-r", g.files+"/.", newNTFS)
			os.Remove(filepath.Join(newNTFS, "d0", "f0.bin"))
			os.WriteFile(filepath.Join(newNTFS, "added.bin"), bytes.Repeat([]byte("increment "), 300000), 0o644)
			ntfs := cut(t, g.ntfsImg, 0, g.ntfsSize)
			mnt := t.TempDir()
			tooltest.Run(t, "ntfs-3g", ntfs, mnt)
			os.Remove(filepath.Join(mnt, "d0", "f0.bin"))
			tooltest.Run(t, "cp", filepath.Join(newNTFS, "added.bin"), mnt)
			tooltest.Run(t, "fusermount", "-u", mnt)
			fat := cut(t, g.fatImg, 0, g.fatSize)
			tooltest.Run(t, "mcopy", "-i", fat, filepath.Join(newNTFS, "added.bin"), "::/ADDED.BIN")
			g.ntfsUsed = append(tooltest.PartcloneUsed(t, "partclone.ntfs", ntfs), block.Extent{Off: g.ntfsSize - 512, Len: 512})
			g.fatUsed = tooltest.PartcloneUsed(t, "partclone.fat32", fat)
			place(t, g.path, ntfs, g.ntfsOff)
			place(t, g.path, fat, g.fatOff)
			newFAT := tooltest.MtoolsTree(t, fat)

			spec := g.spec(true)
			spec.Base, spec.Increment, spec.Delta = base, 1, delta
			inc := filepath.Join(dir, "D684BA87241263E2-01-01.mrimgx")
			inc1, err := mrimgxtest.Write(inc, spec)
			if err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(inc); st.Size() > 8*mib {
				t.Errorf("the increment is %d bytes: more than what changed", st.Size())
			}
			d, err := Open(inc, Options{Disk: -1})
			if err != nil {
				t.Fatal(err)
			}
			judge(t, d, &g, g.path, newNTFS, newFAT)
			d.Close()
			d, err = Open(full, Options{Disk: -1})
			if err != nil {
				t.Fatal(err)
			}
			judge(t, d, &g, "", g.files, oldFAT)
			d.Close()

			// A second increment over the first: a FAT file removed,
			// so a block saved by the first is now unused.
			tooltest.Run(t, "mdel", "-i", fat, "::/ADDED.BIN")
			g.fatUsed = tooltest.PartcloneUsed(t, "partclone.fat32", fat)
			place(t, g.path, fat, g.fatOff)
			newFAT2 := tooltest.MtoolsTree(t, fat)
			spec = g.spec(true)
			spec.Base, spec.Increment, spec.Delta = inc1, 2, delta
			inc2 := filepath.Join(dir, "D684BA87241263E2-02-02.mrimgx")
			if _, err := mrimgxtest.Write(inc2, spec); err != nil {
				t.Fatal(err)
			}
			d, err = Open(inc2, Options{Disk: -1})
			if err != nil {
				t.Fatal(err)
			}
			judge(t, d, &g, g.path, newNTFS, newFAT2)
			d.Close()
			// The first increment still reads as it was.
			d, err = Open(inc, Options{Disk: -1})
			if err != nil {
				t.Fatal(err)
			}
			judge(t, d, &g, "", newNTFS, newFAT)
			d.Close()
		})
	}
}

// TestEncrypted reads images encrypted as ENCRYPTION.md describes (AES
// CBC per block, PBKDF2 key, $TRACK0 in ECB), and refuses a wrong or
// missing password.
func TestEncrypted(t *testing.T) {
	g := makeGPTDisk(t)
	for _, c := range []struct {
		bits     int
		compress bool
	}{{256, true}, {128, false}, {192, true}} {
		t.Run(fmt.Sprintf("aes-%d zstd=%v", c.bits, c.compress), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "enc.mrimgx")
			spec := g.spec(c.compress)
			spec.Password, spec.AESBits, spec.Iterations = "pässword 1", c.bits, 1000
			if _, err := mrimgxtest.Write(img, spec); err != nil {
				t.Fatal(err)
			}
			for _, pw := range []string{"", "password 1"} {
				if _, err := Open(img, Options{Disk: -1, Password: pw}); !errors.Is(err, ErrPassword) {
					t.Fatalf("password %q: got %v, want ErrPassword", pw, err)
				}
			}
			d, err := Open(img, Options{Disk: -1, Password: "pässword 1"})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			judge(t, d, g, g.path, g.files, g.fatTree)
		})
	}
}

// TestMBRLogical reads an MBR disk with logical partitions (sfdisk):
// a FAT16 primary, and in the extended partition a FAT16 and an NTFS,
// their EBRs in $EPT.
func TestMBRLogical(t *testing.T) {
	disk := tooltest.Garbage(t, 48*mib)
	script := "label: dos\nstart=2048, size=24576, type=6\nstart=26624, type=5\nstart=28672, size=24576, type=6\nstart=55296, type=7\n"
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	ebrs := ebrChain(t, disk)
	if len(ebrs) != 2 {
		t.Fatalf("EBRs %v, want 2", ebrs)
	}
	type part struct {
		num       int
		off, size int64
		fs        string
		tree      string
		used      []block.Extent
		reserved  int64
	}
	parts := []*part{{num: 1, off: 2048 * 512, size: 24576 * 512, fs: "FAT16"}, {num: 5, off: 28672 * 512, size: 24576 * 512, fs: "FAT16"}, {num: 6, off: 55296 * 512, size: 48*mib - 55296*512, fs: "NTFS"}}
	files := tooltest.Files(t)
	var spec mrimgxtest.Spec
	for _, p := range parts {
		var img string
		if p.fs == "NTFS" {
			img = tooltest.Garbage(t, p.size)
			tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", img)
			mnt := t.TempDir()
			tooltest.Run(t, "ntfs-3g", img, mnt)
			tooltest.Run(t, "cp", "-r", files+"/.", mnt)
			tooltest.Run(t, "fusermount", "-u", mnt)
			p.used = append(tooltest.PartcloneUsed(t, "partclone.ntfs", img), block.Extent{Off: p.size - 512, Len: 512})
			p.tree = files
		} else {
			img = tooltest.MakeFAT(t, p.size, 10, 2020, "-F", "16")
			p.used = tooltest.PartcloneUsed(t, "partclone.fat16", img)
			boot := make([]byte, 512)
			readAt(t, img, boot, 0)
			le := binary.LittleEndian
			bps := int64(le.Uint16(boot[0x0b:]))
			// Everything before cluster 2: reserved sectors, FATs and
			// FAT16's root directory.
			p.reserved = (int64(le.Uint16(boot[0x0e:]))+int64(boot[0x10])*int64(le.Uint16(boot[0x16:])))*bps + int64(le.Uint16(boot[0x11:]))*32
			p.tree = tooltest.MtoolsTree(t, img)
		}
		place(t, disk, img, p.off)
		spec.Parts = append(spec.Parts, mrimgxtest.Part{Number: p.num, FS: p.fs, Start: p.off, Size: p.size, BlockSize: 64 << 10, Reserved: p.reserved, Used: p.used})
	}
	spec.Source, spec.SectorSize, spec.Format, spec.Track0, spec.EBRs, spec.Compress = disk, 512, "mbr", mib, ebrs, true
	for _, pw := range []string{"", "secret"} {
		spec.Password, spec.AESBits, spec.Iterations = pw, 256, 100
		img := filepath.Join(t.TempDir(), "mbr.mrimgx")
		if _, err := mrimgxtest.Write(img, spec); err != nil {
			t.Fatal(err)
		}
		d, err := Open(img, Options{Disk: -1, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		out := readOut(t, d)
		d.Close()
		want := tooltest.Run(t, "sfdisk", "-d", disk)
		if got := tooltest.Run(t, "sfdisk", "-d", out); strings.ReplaceAll(got, out, disk) != want {
			t.Errorf("sfdisk -d:\n%s\nwant:\n%s", got, want)
		}
		for _, p := range parts {
			pi := cut(t, out, p.off, p.size)
			if p.fs == "NTFS" {
				tooltest.Run(t, "ntfsfix", "-n", pi)
				mnt := t.TempDir()
				tooltest.Run(t, "ntfs-3g", "-o", "ro", pi, mnt)
				tooltest.SameTree(t, p.tree, mnt)
				tooltest.Run(t, "fusermount", "-u", mnt)
				continue
			}
			tooltest.Run(t, "fsck.fat", "-n", pi)
			tooltest.SameTree(t, p.tree, tooltest.MtoolsTree(t, pi))
		}
	}
}

// ebrChain is where the disk's EBRs are, read off its MBR.
func ebrChain(t *testing.T, disk string) []int64 {
	t.Helper()
	mbr := make([]byte, 512)
	readAt(t, disk, mbr, 0)
	le := binary.LittleEndian
	var ext int64 = -1
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		if e[4] == 5 || e[4] == 0x0f {
			ext = int64(le.Uint32(e[8:])) * 512
		}
	}
	var out []int64
	for at := ext; at >= 0 && len(out) < 16; {
		out = append(out, at)
		ebr := make([]byte, 512)
		readAt(t, disk, ebr, at)
		next := ebr[446+16:]
		if next[4] == 0 {
			break
		}
		at = ext + int64(le.Uint32(next[8:]))*512
	}
	return out
}

// TestPartitionImage reads an image of one partition of the disk (as
// Reflect's own example is): the table and that partition; the other
// reads as zeros.
func TestPartitionImage(t *testing.T) {
	g := makeGPTDisk(t)
	spec := g.spec(true)
	spec.Parts = spec.Parts[1:]
	img := filepath.Join(t.TempDir(), "part.mrimgx")
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img, Options{Disk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Partitions) != 1 || d.Partitions[0].Number != 2 {
		t.Fatalf("partitions %+v", d.Partitions)
	}
	out := readOut(t, d)
	if v := tooltest.Run(t, "sgdisk", "-v", out); !strings.Contains(v, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", v)
	}
	ntfs, _ := os.ReadFile(cut(t, out, g.ntfsOff, g.ntfsSize))
	if !bytes.Equal(ntfs, make([]byte, len(ntfs))) {
		t.Errorf("the partition not imaged does not read as zeros")
	}
	fat := cut(t, out, g.fatOff, g.fatSize)
	tooltest.Run(t, "fsck.fat", "-n", fat)
	tooltest.SameTree(t, g.fatTree, tooltest.MtoolsTree(t, fat))
}

// TestExfat reads an exFAT partition (mkfs.exfat, files copied in
// through exfat-fuse) imaged with a $BITMAP block before its $INDEX, its
// used blocks chosen by partclone from the allocation bitmap.
func TestExfat(t *testing.T) {
	const off, size = 1 * mib, 32 * mib
	fs := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkfs.exfat", "-c", "4096", fs)
	files := tooltest.Files(t)
	dev, detach := tooltest.ExfatLoop(t, fs, 0, 0, false)
	mnt, umount := tooltest.ExfatMount(t, dev, false)
	tooltest.Run(t, "cp", "-r", files+"/.", mnt)
	umount()
	detach()
	used := tooltest.PartcloneUsed(t, "partclone.exfat", fs)
	bitmap := make([]byte, size/4096/8)
	for _, e := range used {
		for c := e.Off / 4096; c < (e.End()+4095)/4096; c++ {
			bitmap[c/8] |= 1 << (c % 8)
		}
	}
	disk := tooltest.Garbage(t, 40*mib)
	tooltest.Run(t, "sgdisk", "-o", "-n", "1:2048:+32M", "-t", "1:0700", disk)
	place(t, disk, fs, off)
	img := filepath.Join(t.TempDir(), "exfat.mrimgx")
	spec := mrimgxtest.Spec{Source: disk, SectorSize: 512, Format: "gpt", Track0: off, Compress: true,
		Parts: []mrimgxtest.Part{{Number: 1, FS: "exFAT", Start: off, Size: size, BlockSize: 64 << 10, Used: used, Bitmap: bitmap}}}
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img, Options{Disk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := readOut(t, d)
	if v := tooltest.Run(t, "sgdisk", "-v", out); !strings.Contains(v, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", v)
	}
	part := cut(t, out, off, size)
	tooltest.Run(t, "fsck.exfat", "-n", part)
	dev, _ = tooltest.ExfatLoop(t, part, 0, 0, true)
	mnt, umount = tooltest.ExfatMount(t, dev, true)
	tooltest.SameTree(t, files, mnt)
	tooltest.SameTree(t, mnt, files)
	umount()
}

// TestTwoDisks reads each disk of an image of two (their data in turn,
// then each disk's metadata lists, as FILE_LAYOUT.md draws it), chosen
// by disk_number.
func TestTwoDisks(t *testing.T) {
	var specs []mrimgxtest.Spec
	var trees []string
	for i := 0; i < 2; i++ {
		disk := tooltest.Garbage(t, 16*mib)
		cmd := exec.Command("sfdisk", "-q", disk)
		cmd.Stdin = strings.NewReader("label: dos\nstart=2048, type=6\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		fat := tooltest.MakeFAT(t, 15*mib, 5+i*10, 2020, "-F", "16")
		boot := make([]byte, 512)
		readAt(t, fat, boot, 0)
		le := binary.LittleEndian
		reserved := (int64(le.Uint16(boot[0x0e:]))+int64(boot[0x10])*int64(le.Uint16(boot[0x16:])))*512 + int64(le.Uint16(boot[0x11:]))*32
		place(t, disk, fat, mib)
		trees = append(trees, tooltest.MtoolsTree(t, fat))
		specs = append(specs, mrimgxtest.Spec{Source: disk, SectorSize: 512, Format: "mbr", Track0: mib,
			Parts: []mrimgxtest.Part{{Number: 1, FS: "FAT16", Start: mib, Size: 15 * mib, BlockSize: 64 << 10, Reserved: reserved,
				Used: tooltest.PartcloneUsed(t, "partclone.fat16", fat)}}})
	}
	spec := specs[0]
	spec.Compress, spec.More = true, specs[1:]
	img := filepath.Join(t.TempDir(), "two.mrimgx")
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{-1, 2} {
		d, err := Open(img, Options{Disk: n})
		if err != nil {
			t.Fatal(err)
		}
		if d.Number != i+1 {
			t.Fatalf("Disk %d opened disk %d", n, d.Number)
		}
		if err := d.Verify(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		out := readOut(t, d)
		d.Close()
		want := tooltest.Run(t, "sfdisk", "-d", specs[i].Source)
		if got := tooltest.Run(t, "sfdisk", "-d", out); strings.ReplaceAll(got, out, specs[i].Source) != want {
			t.Errorf("disk %d: sfdisk -d:\n%s\nwant:\n%s", i+1, got, want)
		}
		fat := cut(t, out, mib, 15*mib)
		tooltest.Run(t, "fsck.fat", "-n", fat)
		tooltest.SameTree(t, trees[i], tooltest.MtoolsTree(t, fat))
		tooltest.SameTree(t, tooltest.MtoolsTree(t, fat), trees[i])
	}
	if _, err := Open(img, Options{Disk: 7}); err == nil || !strings.Contains(err.Error(), "no disk number 7") {
		t.Fatalf("disk 7: %v", err)
	}
}
