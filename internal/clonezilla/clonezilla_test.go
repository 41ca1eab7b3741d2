package clonezilla

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/partclone"
	"github.com/platter-dev/platter/internal/tooltest"
)

// part is a partition of a fixture disk: sectors, sgdisk/sfdisk type,
// and how it is filled.
type part struct {
	start, size int64 // 512-byte sectors
	typ         string
	fill        string // "ext4", "fat32", "fat16", "swap", "" (extended)
}

// fixture is a disk saved by the real Clonezilla.
type fixture struct {
	dir   string // the image directory
	parts []part
	tree  string         // the files put in each filesystem
	raw   map[int][]byte // what each partition without a filesystem held
}

// saveDisk makes a disk of the parts (label "gpt" or "dos"), fills each
// filesystem with tree's files, and has `ocs-sr savedisk` save it, with
// compression comp (-z1p, -z9, ...) split into 1 MB volumes.
func saveDisk(t *testing.T, label string, sizeMiB int64, parts []part, comp string) *fixture {
	t.Helper()
	if _, err := exec.LookPath("ocs-sr"); err != nil {
		t.Fatal("ocs-sr (Debian's clonezilla) is needed for this test and is not installed")
	}
	work := t.TempDir()
	img := filepath.Join(work, "disk.img")
	if err := os.Truncate(createFile(t, img), sizeMiB<<20); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "label: %s\n", label)
	for _, p := range parts {
		fmt.Fprintf(&script, "start=%d, size=%d, type=%s\n", p.start, p.size, p.typ)
	}
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader(script.String())
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	loop := tooltest.Loop(t, img)
	f := &fixture{parts: parts, tree: tooltest.Files(t), raw: map[int][]byte{}}
	var rng *rand.Rand
	// Data gzip cannot shrink, so the ext4's image spans volumes.
	noise := make([]byte, 2500000)
	rng = rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(f.tree, "noise.bin"), noise, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		n := partNumber(label, i)
		size := p.size
		if p.fill == "" {
			size = 2 // an extended container, as the kernel shows it
		}
		tooltest.Run(t, "addpart", loop, fmt.Sprint(n), fmt.Sprint(p.start), fmt.Sprint(size))
		dev := fmt.Sprintf("%sp%d", loop, n)
		t.Cleanup(func() { exec.Command("delpart", loop, fmt.Sprint(n)).Run() })
		switch p.fill {
		case "ext4":
			tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "root", "-E", "nodiscard", "-d", f.tree, dev)
		case "fat32", "fat16":
			bits := strings.TrimPrefix(p.fill, "fat")
			tooltest.Run(t, "mkfs.fat", "-F", bits, "-s", "1", "-n", "ESP", dev)
			tooltest.Run(t, "mcopy", "-s", "-i", dev, filepath.Join(f.tree, "d0"), filepath.Join(f.tree, "d1"), "::/")
		case "swap":
			tooltest.Run(t, "mkswap", "-L", "myswap", dev)
		case "random":
			// No filesystem: ocs-sr saves it whole.
			b := make([]byte, p.size*512)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			clear(b[len(b)/2:]) // and zeros, as an unused half
			if err := os.WriteFile(dev, b, 0o600); err != nil {
				t.Fatal(err)
			}
			f.raw[n] = b
		}
	}
	if label == "dos" {
		// The gap after the MBR holds something to keep, as a boot
		// loader's core image would be there.
		tooltest.Run(t, "dd", "if=/dev/urandom", "of="+loop, "bs=512", "seek=1", "count=100", "conv=notrunc", "status=none")
	}
	root := filepath.Join(work, "ocsroot")
	os.MkdirAll(root, 0o755)
	cmd := exec.Command("ocs-sr", "-b", "-q2", "-j2", comp, "-i", "1", "-gm", "-gs", "-sfsck", "-scs", "-senc",
		"-or", root, "-p", "true", "savedisk", "IMG", strings.TrimPrefix(loop, "/dev/"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ocs-sr: %v\n%s", err, out)
	}
	f.dir = filepath.Join(root, "IMG")
	if _, err := os.Stat(filepath.Join(f.dir, "disk")); err != nil {
		t.Fatalf("ocs-sr made no image:\n%s", out)
	}
	return f
}

func partNumber(label string, i int) int {
	if label == "dos" && i >= 2 {
		return i + 3 // after the extended container (2): logicals 5, 6
	}
	return i + 1
}

func createFile(t *testing.T, p string) string {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rebuild reads the whole disk through ReadAt into a file.
func rebuild(t *testing.T, d *Disk) string {
	t.Helper()
	p := createFile(t, filepath.Join(t.TempDir(), "rebuilt.raw"))
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 3<<20+517) // odd, to cross partitions and blocks
	for off := int64(0); off < d.Size(); {
		n, err := d.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatalf("ReadAt %d: %v", off, err)
		}
		if !allZero(buf[:n]) {
			f.WriteAt(buf[:n], off)
		}
		off += int64(n)
	}
	f.Truncate(d.Size())
	return p
}

// extract copies bytes [off, off+n) of a file into a file of its own.
func extract(t *testing.T, p string, off, n int64) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "part.raw")
	tooltest.Run(t, "dd", "if="+p, "of="+out, "bs=512", fmt.Sprintf("skip=%d", off/512), fmt.Sprintf("count=%d", n/512), "status=none")
	return out
}

// reference is what Clonezilla's own restore pipeline writes for a
// partition: cat the volumes | decompress | partclone.restore.
func reference(t *testing.T, p *Partition) []byte {
	t.Helper()
	dec := map[string]string{"gz": "zcat", "zst": "zstdcat", "xz": "xzcat", "bz2": "bzcat", "lz4": "lz4cat", "uncomp": "cat"}[p.Compression]
	out := filepath.Join(t.TempDir(), "ref.raw")
	script := fmt.Sprintf("cat %s | %s | partclone.restore -q -C -W -s - -O %s -L %s",
		strings.Join(p.Files, " "), dec, out, filepath.Join(t.TempDir(), "log"))
	if o, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var sfLine = regexp.MustCompile(`(?m)^\S+?(\d+) : (.*)$`)

// tableLines are an sfdisk dump's partition lines without the device.
func tableLines(s string) []string {
	var out []string
	for _, m := range sfLine.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1]+" : "+strings.Join(strings.Fields(m[2]), " "))
	}
	return out
}

func (f *fixture) check(t *testing.T) {
	d, err := Open(f.dir, Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.VerifySums(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := d.SumFiles(); len(got) != 2 {
		t.Fatalf("sum files %v, want MD5SUMS and SHA1SUMS", got)
	}
	disk := rebuild(t, d)
	for _, p := range d.Partitions {
		if _, ok := p.src.(inPlace); ok != (p.Kind == "partclone" && p.Compression == "uncomp") {
			t.Fatalf("partition %s (%s, %s) read in place: %v", p.Name, p.Kind, p.Compression, ok)
		}
	}
	// The table: sfdisk reads back what ocs-sr dumped.
	want, err := os.ReadFile(filepath.Join(f.dir, d.Name+"-pt.sf"))
	if err != nil {
		t.Fatal(err)
	}
	got := tooltest.Run(t, "sfdisk", "-d", disk)
	if w, g := tableLines(string(want)), tableLines(got); strings.Join(w, "\n") != strings.Join(g, "\n") {
		t.Fatalf("sfdisk -d of the rebuilt disk:\n%s\nwant (%s-pt.sf):\n%s", got, d.Name, want)
	}
	if d.Table.Kind == "gpt" {
		if out := tooltest.Run(t, "sgdisk", "-v", disk); !strings.Contains(out, "No problems found") {
			t.Fatalf("sgdisk -v:\n%s", out)
		}
	}
	if h, err := os.ReadFile(filepath.Join(f.dir, d.Name+"-hidden-data-after-mbr")); err == nil {
		b, _ := os.ReadFile(disk)
		if !bytes.Equal(b[512:512+len(h)], h) || allZero(h) {
			t.Fatalf("the %d bytes after the MBR are not %s-hidden-data-after-mbr", len(h), d.Name)
		}
	} else if d.Table.Kind == "mbr" {
		t.Fatalf("ocs-sr -j2 saved no hidden data: %v", err)
	}
	used := d.Used()
	for _, p := range d.Partitions {
		t.Run(p.Name, func(t *testing.T) {
			raw := extract(t, disk, p.Start, p.Size)
			b, err := os.ReadFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			if want, ok := f.raw[p.Index]; ok {
				if !bytes.Equal(want, b) {
					t.Fatalf("partition %s (%s, %s) differs from what it held at byte %d", p.Name, p.Kind, p.FS, firstDiff(want, b))
				}
				t.Logf("partition %s: %s image, fs %s, %v", p.Name, p.Kind, p.FS, p.Files)
				return
			}
			switch p.Kind {
			case "partclone":
				ref := reference(t, p)
				if len(ref) > len(b) || !bytes.Equal(ref, b[:len(ref)]) || !allZero(b[len(ref):]) {
					t.Fatalf("partition %s differs from partclone.restore's (first difference at byte %d)", p.Name, firstDiff(ref, b))
				}
				// Every used block is in Used, and nothing outside it is
				// data.
				var inUsed int64
				for _, e := range used {
					lo, hi := max(e.Off, p.Start), min(e.End(), p.Start+p.Size)
					if lo < hi {
						inUsed += hi - lo
					}
				}
				if want := p.Header.BlockSize * p.bm.Used(); inUsed != want {
					t.Fatalf("Used covers %d bytes of %s, its image %d", inUsed, p.Name, want)
				}
				switch p.FS {
				case "ext4":
					tooltest.Run(t, "e2fsck", "-fn", raw)
					mnt, umount := tooltest.Mount(t, raw, "ro")
					tooltest.SameTree(t, f.tree, mnt)
					umount()
				case "vfat":
					tooltest.Run(t, "fsck.fat", "-n", raw)
					tooltest.SameTree(t, mtoolsWant(t, f.tree), tooltest.MtoolsTree(t, raw))
				default:
					t.Fatalf("no judge for %s", p.FS)
				}
			case "swap":
				// What mkswap writes with the saved UUID and label.
				info, _ := os.ReadFile(filepath.Join(f.dir, "swappt-"+p.Name+".info"))
				uuid := regexp.MustCompile(`UUID="([^"]+)"`).FindSubmatch(info)
				fresh := createFile(t, filepath.Join(t.TempDir(), "swap.raw"))
				os.Truncate(fresh, p.Size)
				tooltest.Run(t, "mkswap", "-L", "myswap", "-U", string(uuid[1]), fresh)
				mk, _ := os.ReadFile(fresh)
				if !bytes.Equal(mk, b) {
					t.Fatalf("swap partition differs from mkswap's at byte %d", firstDiff(mk, b))
				}
				if got := tooltest.Blkid(t, raw, "UUID"); got != string(uuid[1]) {
					t.Fatalf("swap UUID %q, saved %q", got, uuid[1])
				}
			default:
				t.Fatalf("partition %s: kind %q", p.Name, p.Kind)
			}
		})
	}
}

// mtoolsWant is the tree the FAT got: d0 and d1 of tree.
func mtoolsWant(t *testing.T, tree string) string {
	dir := t.TempDir()
	for _, s := range []string{"d0", "d1"} {
		tooltest.Run(t, "cp", "-r", filepath.Join(tree, s), dir)
	}
	return dir
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestClonezillaGPT: a GPT disk (FAT32 ESP, ext4, swap) saved by ocs-sr
// with pigz into 1 MB volumes, rebuilt and judged against Clonezilla's
// own restore pipeline; then damaged: a missing volume, a damaged strip
// of a partclone image, a file that no longer matches MD5SUMS.
func TestClonezillaGPT(t *testing.T) {
	f := saveDisk(t, "gpt", 100, []part{
		{2048, 81920, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "fat32"},
		{83968, 65536, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "ext4"},
		{149504, 55263, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "swap"},
	}, "-z1p")
	f.check(t)

	d, err := Open(f.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ext *Partition
	for _, p := range d.Partitions {
		if p.FS == "ext4" {
			ext = p
		}
	}
	d.Close()
	if ext == nil || len(ext.Files) < 2 {
		t.Fatalf("the ext4 image is not split: %+v", ext)
	}

	t.Run("missing volume", func(t *testing.T) {
		dir := copyDir(t, f.dir)
		gone := strings.Replace(filepath.Base(ext.Files[1]), ".ab", ".ab", 1)
		os.Remove(filepath.Join(dir, gone))
		_, err := Open(dir, Options{})
		if !errors.Is(err, partclone.ErrMissingVolume) || !strings.Contains(err.Error(), gone) {
			t.Fatalf("Open without %s: %v", gone, err)
		}
		t.Logf("%v", err)
	})

	t.Run("damaged strip", func(t *testing.T) {
		dir := copyDir(t, f.dir)
		stream := filepath.Join(t.TempDir(), "stream")
		sh(t, "cat "+strings.Join(ext.Files, " ")+" | zcat > "+stream)
		b, _ := os.ReadFile(stream)
		h, err := partclone.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		// A byte of the 300th used block: in the first checksum group
		// (ocs-sr's 10 MiB buffer makes 2560 blocks a group).
		b[h.DataOffset()+300*h.BlockSize+7] ^= 0xff
		os.WriteFile(stream, b, 0o600)
		for _, v := range ext.Files {
			os.Remove(filepath.Join(dir, filepath.Base(v)))
		}
		prefix := filepath.Join(dir, strings.TrimSuffix(filepath.Base(ext.Files[0]), "aa"))
		sh(t, "gzip -c < "+stream+" | split -a 2 -b 1000000 - "+prefix)
		d, err := Open(dir, Options{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.ReadAt(make([]byte, 4096), ext.Start+1024)
		var ce *partclone.ChecksumError
		if !errors.As(err, &ce) || ce.First != 0 || ce.Off != 0 || ce.Last < 300 {
			t.Fatalf("read of the damaged partition: %v", err)
		}
		t.Logf("%v", err)
		if err := d.VerifySums(context.Background()); !errors.Is(err, ErrSumMismatch) {
			t.Fatalf("VerifySums of the changed volumes: %v", err)
		}
	})
}

// TestClonezillaMBR: an MBR disk with an extended partition, logical
// partitions (FAT16, swap) and the hidden data after the MBR, saved with
// zstd.
func TestClonezillaMBR(t *testing.T) {
	f := saveDisk(t, "dos", 80, []part{
		{2048, 49152, "83", "ext4"},
		{51200, 112640, "5", ""},
		{53248, 40960, "6", "fat16"},
		{96256, 67584, "82", "swap"},
	}, "-z9")
	f.check(t)
}

func copyDir(t *testing.T, src string) string {
	dst := filepath.Join(t.TempDir(), "IMG")
	tooltest.Run(t, "cp", "-a", src, dst)
	return dst
}

func sh(t *testing.T, script string) {
	t.Helper()
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// TestClonezillaXZ: a GPT disk with an ext4 and a partition without a
// filesystem (saved whole), saved with xz.
func TestClonezillaXZ(t *testing.T) {
	f := saveDisk(t, "gpt", 48, []part{
		{2048, 49152, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "ext4"},
		{51200, 16384, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "random"},
	}, "-z5")
	f.check(t)
}

// TestClonezillaUncompressed: ocs-sr -z0, split: the partclone images are
// read in place across their volumes, nothing decoded.
func TestClonezillaUncompressed(t *testing.T) {
	f := saveDisk(t, "gpt", 40, []part{
		{2048, 40960, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "ext4"},
	}, "-z0")
	f.check(t)
}
