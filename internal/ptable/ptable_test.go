package ptable

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// Fixtures are made by sgdisk and sfdisk at test time and judged with
// their own listings (sfdisk --json, sgdisk -i); a missing tool fails.

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return tooltest.Run(t, name, args...)
}

// sfdiskScript partitions path with an sfdisk script.
func sfdiskScript(t testing.TB, path, script string) {
	t.Helper()
	bin, err := exec.LookPath("sfdisk")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/sfdisk"); err != nil {
			t.Fatalf("sfdisk is needed for this test and is not installed")
		}
		bin = "/usr/sbin/sfdisk"
	}
	cmd := exec.Command(bin, "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk %s: %v\n%s", path, err, out)
	}
}

// blank makes a sparse, zero-filled file of size bytes. The name has no
// trailing digit so partition nodes (disk1, disk2, ...) parse cleanly.
func blank(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// readPath reads the table of a file or block device.
func readPath(t testing.TB, path string, ss int64) (*Table, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // block devices too
	if err != nil {
		t.Fatal(err)
	}
	return Read(f, size, ss)
}

func mustRead(t testing.TB, path string, ss int64) *Table {
	t.Helper()
	tb, err := readPath(t, path, ss)
	if err != nil {
		t.Fatalf("Read %s: %v", path, err)
	}
	return tb
}

// sfdiskJSON is what `sfdisk --json` says about a disk.
type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

var trailingNumber = regexp.MustCompile(`[0-9]+$`)

// compareSfdisk checks every partition sfdisk lists against ours: index
// (from the node name), start, size, type, bootable flag, GUID and name.
func compareSfdisk(t *testing.T, path string, got *Table) {
	t.Helper()
	var j sfdiskJSON
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", path)), &j); err != nil {
		t.Fatal(err)
	}
	want := j.PartitionTable
	if kind := map[string]string{"dos": "mbr", "gpt": "gpt"}[want.Label]; got.Kind != kind {
		t.Fatalf("kind %q, sfdisk says label %q", got.Kind, want.Label)
	}
	if got.SectorSize != want.SectorSize {
		t.Errorf("sector size %d, sfdisk says %d", got.SectorSize, want.SectorSize)
	}
	if !strings.EqualFold(got.DiskID, want.ID) {
		t.Errorf("disk id %s, sfdisk says %s", got.DiskID, want.ID)
	}
	ss := want.SectorSize
	byIndex := map[int]Partition{}
	for _, p := range got.Partitions {
		byIndex[p.Index] = p
	}
	data := 0
	for _, w := range want.Partitions {
		idx, err := strconv.Atoi(trailingNumber.FindString(w.Node))
		if err != nil {
			t.Fatalf("sfdisk node %q has no number", w.Node)
		}
		if got.Kind == "mbr" && (w.Type == "5" || w.Type == "f" || w.Type == "85") {
			e := got.Extended
			if e == nil || e.Index != idx || e.Start != w.Start*ss || e.Size != w.Size*ss || e.Type != mbrType(w.Type) {
				t.Errorf("extended partition: got %+v, sfdisk says %d at sector %d, %d sectors, type %s", e, idx, w.Start, w.Size, w.Type)
			}
			continue
		}
		data++
		g, ok := byIndex[idx]
		if !ok {
			t.Errorf("partition %d (sfdisk %s) missing", idx, w.Node)
			continue
		}
		if g.Start != w.Start*ss || g.Size != w.Size*ss {
			t.Errorf("partition %d: start %d size %d, sfdisk says %d, %d", idx, g.Start, g.Size, w.Start*ss, w.Size*ss)
		}
		if got.Kind == "gpt" {
			if g.Type != w.Type || g.GUID != w.UUID || g.Name != w.Name {
				t.Errorf("partition %d: %s %s %q, sfdisk says %s %s %q", idx, g.Type, g.GUID, g.Name, w.Type, w.UUID, w.Name)
			}
		} else if g.Type != mbrType(w.Type) || g.Bootable != w.Bootable {
			t.Errorf("partition %d: type %s bootable %v, sfdisk says %s %v", idx, g.Type, g.Bootable, w.Type, w.Bootable)
		}
	}
	if len(got.Partitions) != data {
		t.Errorf("%d data partitions, sfdisk lists %d: %+v", len(got.Partitions), data, got.Partitions)
	}
}

func mbrType(sfdiskType string) string {
	v, _ := strconv.ParseUint(sfdiskType, 16, 8)
	return fmt.Sprintf("0x%02x", v)
}

// compareSgdisk checks each GPT partition against `sgdisk -i N`,
// including the attribute bits sfdisk does not print as a number.
func compareSgdisk(t *testing.T, path string, got *Table) {
	t.Helper()
	if id := regexp.MustCompile(`Disk identifier \(GUID\): (\S+)`).FindStringSubmatch(run(t, "sgdisk", "-p", path)); id == nil || id[1] != got.DiskID {
		t.Errorf("disk GUID %s, sgdisk -p says %v", got.DiskID, id)
	}
	for _, p := range got.Partitions {
		info := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(run(t, "sgdisk", "-i", strconv.Itoa(p.Index), path)))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
				info[k] = v
			}
		}
		first, _ := strconv.ParseInt(strings.Fields(info["First sector"])[0], 10, 64)
		last, _ := strconv.ParseInt(strings.Fields(info["Last sector"])[0], 10, 64)
		attrs, _ := strconv.ParseUint(info["Attribute flags"], 16, 64)
		typ := strings.Fields(info["Partition GUID code"])[0]
		// sgdisk 1.0.9 prints characters outside the BMP (surrogate
		// pairs) wrongly; sfdisk --json checks those names.
		nameOK := "'"+p.Name+"'" == info["Partition name"] || !bmpOnly(p.Name)
		ss := got.SectorSize
		if p.Start != first*ss || p.End() != (last+1)*ss || p.Type != typ || p.GUID != info["Partition unique GUID"] ||
			!nameOK || p.Attrs != attrs {
			t.Errorf("partition %d: %+v\nsgdisk -i says: %q", p.Index, p, info)
		}
	}
}

func bmpOnly(s string) bool {
	for _, r := range s {
		if r > 0xffff {
			return false
		}
	}
	return true
}

func makeGPT(t testing.TB) string {
	p := blank(t, 64<<20)
	run(t, "sgdisk",
		"-n", "1:1M:+8M", "-t", "1:EF00", "-c", "1:EFI system", "-A", "1:set:0",
		"-n", "2:0:+16M", "-t", "2:8300", "-c", "2:root", "-A", "2:set:2", "-A", "2:set:60", "-A", "2:set:63",
		"-n", "4:0:+4M", "-t", "4:0700", "-c", "4:data ünïcode €𝄞",
		"-n", "128:0:+1M", "-t", "128:8200", "-c", "128:swap",
		p)
	return p
}

func TestGPT(t *testing.T) {
	p := makeGPT(t)
	tb := mustRead(t, p, 0)
	compareSfdisk(t, p, tb)
	compareSgdisk(t, p, tb)
	if len(tb.Warnings) != 0 {
		t.Errorf("warnings on a clean disk: %v", tb.Warnings)
	}
	var idx []int
	for _, q := range tb.Partitions {
		idx = append(idx, q.Index)
	}
	if fmt.Sprint(idx) != "[1 2 4 128]" {
		t.Errorf("indexes %v, want [1 2 4 128]", idx)
	}
	if tb.Extended != nil {
		t.Errorf("extended partition on a GPT disk: %+v", tb.Extended)
	}
	// The table structures: sector 0 + primary header + entries, and the
	// backup entries + header at the end.
	size := tb.DiskSize
	want := []block.Extent{{Off: 0, Len: 34 * 512}, {Off: size - 33*512, Len: 33 * 512}}
	if fmt.Sprint(tb.Structures) != fmt.Sprint(want) {
		t.Errorf("structures %v, want %v", tb.Structures, want)
	}
}

func TestGPTHybridMBR(t *testing.T) {
	p := makeGPT(t)
	run(t, "sgdisk", "-h", "1:2", p) // a hybrid MBR: partitions 1 and 2 plus 0xEE
	b := readFile(t, p)
	var types []byte
	for i := 0; i < 4; i++ {
		types = append(types, b[446+16*i+4])
	}
	if !bytes.Contains(types, []byte{0xee}) || bytes.Count(types, []byte{0}) > 1 {
		t.Fatalf("sgdisk did not make a hybrid MBR: types % x", types)
	}
	tb := mustRead(t, p, 0)
	if tb.Kind != "gpt" || len(tb.Partitions) != 4 {
		t.Fatalf("hybrid MBR disk read as %s with %d partitions", tb.Kind, len(tb.Partitions))
	}
	compareSgdisk(t, p, tb)
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGPTDamaged(t *testing.T) {
	orig := makeGPT(t)
	clean := mustRead(t, orig, 0)
	good := readFile(t, orig)
	size := int64(len(good))
	priHdr, priEnt := int64(512), int64(1024)
	bakHdr, bakEnt := size-512, size-33*512
	for _, c := range []struct {
		name  string
		flip  []int64
		warn  string // "" means an error is expected
		useOK bool
	}{
		{"primary header", []int64{priHdr + 40}, fmt.Sprintf("primary GPT header is damaged (gpt: header CRC mismatch (stored 0x%08x, computed", le32(good[512+16:])), true},
		{"primary signature", []int64{priHdr}, "primary GPT header is damaged (gpt: no \"EFI PART\" header signature at byte 512); using the backup GPT at byte " + strconv.FormatInt(bakHdr, 10), true},
		{"primary entries", []int64{priEnt + 128 + 40}, "primary GPT partition entries are damaged (gpt: partition entries CRC mismatch", true},
		{"backup header", []int64{bakHdr + 60}, "backup GPT is damaged (gpt: header CRC mismatch", true},
		{"backup entries", []int64{bakEnt + 3}, "backup GPT is damaged (gpt: partition entries CRC mismatch", true},
		{"both headers", []int64{priHdr + 40, bakHdr + 40}, "", false},
		{"primary header and backup entries", []int64{priHdr + 40, bakEnt + 200}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(good)
			for _, off := range c.flip {
				b[off] ^= 0xff
			}
			p := filepath.Join(t.TempDir(), "disk")
			writeFile(t, p, b)
			tb, err := readPath(t, p, 0)
			if c.warn == "" {
				var ce *block.CorruptError
				if err == nil || !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "ptable: ") {
					t.Fatalf("both GPT copies damaged: got %v, %+v; want a *block.CorruptError", err, tb)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tb.Warnings) != 1 || !strings.Contains(tb.Warnings[0], c.warn) {
				t.Fatalf("warnings %q, want one containing %q", tb.Warnings, c.warn)
			}
			t.Log(tb.Warnings[0])
			if tb.Kind != "gpt" || tb.DiskID != clean.DiskID || fmt.Sprint(tb.Partitions) != fmt.Sprint(clean.Partitions) {
				t.Fatalf("read as %+v, want %+v", tb, clean)
			}
		})
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// loop attaches file as a loop device with 4096-byte sectors. detach
// is also run at cleanup unless it was called before.
func loop(t testing.TB, file string) (dev string, detach func()) {
	t.Helper()
	dev = strings.TrimSpace(run(t, "losetup", "-b", "4096", "-f", "--show", file))
	var once sync.Once
	detach = func() {
		once.Do(func() {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v %s", dev, err, out)
			}
		})
	}
	t.Cleanup(detach)
	return dev, detach
}

func TestGPT4K(t *testing.T) {
	file := blank(t, 64<<20)
	dev, _ := loop(t, file)
	run(t, "sgdisk", "-n", "1:1M:+8M", "-t", "1:8300", "-c", "1:root", "-A", "1:set:2",
		"-n", "3:0:0", "-t", "3:0700", "-c", "3:data", dev)
	tb := mustRead(t, dev, 4096)
	compareSfdisk(t, dev, tb)
	compareSgdisk(t, dev, tb)
	if tb.SectorSize != 4096 || tb.Kind != "gpt" || len(tb.Partitions) != 2 || tb.Partitions[0].Start != 1<<20 || len(tb.Warnings) != 0 {
		t.Fatalf("4K disk read as %+v", tb)
	}
	// 4096-byte sectors: 4 sectors of entries, first usable LBA 6.
	want := []block.Extent{{Off: 0, Len: 6 * 4096}, {Off: tb.DiskSize - 5*4096, Len: 5 * 4096}}
	if fmt.Sprint(tb.Structures) != fmt.Sprint(want) {
		t.Errorf("structures %v, want %v", tb.Structures, want)
	}
	run(t, "blockdev", "--flushbufs", dev)
	for _, path := range []string{dev, file} {
		got := mustRead(t, path, 0)
		if got.SectorSize != 4096 || fmt.Sprint(got.Partitions) != fmt.Sprint(tb.Partitions) || got.DiskID != tb.DiskID {
			t.Errorf("%s with detected sector size read as %+v, want %+v", path, got, tb)
		}
	}
	// Read with the wrong sector size, the table must not be guessed at.
	if got, err := readPath(t, file, 512); err == nil {
		t.Errorf("4K GPT read with 512-byte sectors: %+v, want an error", got)
	}
}

func makeMBR(t testing.TB) string {
	p := blank(t, 128<<20)
	// Slot 2 empty, extended in slot 3, three logicals, one empty
	// slot at the end.
	sfdiskScript(t, p, `label: dos
label-id: 0x1234abcd
disk1 : start=2048, size=32768, type=6, bootable
disk3 : start=34816, size=196608, type=f
disk4 : start=231424, size=16384, type=83
disk5 : start=36864, size=16384, type=83
disk6 : start=55296, size=16384, type=7, bootable
disk7 : start=73728, size=100000, type=b
`)
	return p
}

func TestMBRLogicals(t *testing.T) {
	p := makeMBR(t)
	tb := mustRead(t, p, 0)
	compareSfdisk(t, p, tb)
	var idx []int
	for _, q := range tb.Partitions {
		idx = append(idx, q.Index)
	}
	if fmt.Sprint(idx) != "[1 4 5 6 7]" || tb.DiskID != "0x1234abcd" || len(tb.Warnings) != 0 {
		t.Fatalf("read as %+v", tb)
	}
	if e := tb.Extended; e == nil || e.Index != 3 || e.Type != "0x0f" {
		t.Fatalf("extended %+v", tb.Extended)
	}
	// Sector 0 and one EBR before each logical, inside the extended
	// partition.
	if len(tb.Structures) != 4 || tb.Structures[0] != (block.Extent{Off: 0, Len: 512}) {
		t.Fatalf("structures %v", tb.Structures)
	}
	for i, s := range tb.Structures[1:] {
		l := tb.Partitions[2+i]
		if s.Len != 512 || s.Off < tb.Extended.Start || s.Off >= l.Start {
			t.Errorf("EBR %v for logical %+v", s, l)
		}
	}
}

func TestMBRDamaged(t *testing.T) {
	p := makeMBR(t)
	good := readFile(t, p)
	tb := mustRead(t, p, 0)
	ebr := make([]int64, 0, 3)
	for _, s := range tb.Structures[1:] {
		ebr = append(ebr, s.Off)
	}
	put32 := func(b []byte, off int64, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	ext := tb.Extended.Start
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
		off    int64 // where the error must point
	}{
		{"chain loops", func(b []byte) []byte {
			// The last EBR links back to the second.
			b[ebr[2]+446+16+4] = 0x05
			put32(b, ebr[2]+446+16+8, uint32((ebr[1]-ext)/512))
			put32(b, ebr[2]+446+16+12, 100)
			return b
		}, ebr[2] + 446 + 16},
		{"link past the extended partition", func(b []byte) []byte {
			put32(b, ebr[0]+446+16+8, 1<<30)
			return b
		}, ebr[0] + 446 + 16},
		{"logical past the extended partition", func(b []byte) []byte {
			put32(b, ebr[2]+446+12, 1<<28)
			return b
		}, ebr[2] + 446},
		{"EBR without signature", func(b []byte) []byte {
			b[ebr[1]+510] = 0
			return b
		}, ebr[1] + 510},
		{"logicals overlap", func(b []byte) []byte {
			put32(b, ebr[0]+446+12, 30000)
			return b
		}, ebr[1] + 446},
		{"primary past the disk", func(b []byte) []byte {
			return b[:200<<10]
		}, 446},
		{"primaries overlap", func(b []byte) []byte {
			put32(b, 446+12, 40000)
			return b
		}, 446 + 32},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.damage(bytes.Clone(good))
			tb, err := Read(bytes.NewReader(b), int64(len(b)), 0)
			var ce *block.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("got %+v, %v; want a *block.CorruptError", tb, err)
			}
			if ce.Off != c.off {
				t.Errorf("error %q at byte %d, want byte %d", err, ce.Off, c.off)
			}
			t.Log(err)
		})
	}
}

// A disk image cut short (a failed copy, a smaller disk) keeps the
// partitions that start on it, as the Linux kernel does; the caller images
// what exists.
func TestMBRTruncatedDisk(t *testing.T) {
	whole := readFile(t, makeMBR(t))
	// Partition 4 starts at byte 118489088 and ends at 126877696.
	for _, n := range []int64{118489088 + 512, 120 << 20, 126877696 - 1} {
		b := whole[:n]
		tb, err := Read(bytes.NewReader(b), n, 0)
		if err != nil {
			t.Fatalf("cut to %d bytes: %v", n, err)
		}
		last := tb.Partitions[len(tb.Partitions)-1]
		if len(tb.Partitions) != 5 || last.Index != 7 || tb.Partitions[1].Index != 4 || tb.Partitions[1].End() <= n {
			t.Fatalf("cut to %d bytes: read as %+v", n, tb)
		}
	}
	// Cut before partition 4 starts: the table is damaged.
	if tb, err := Read(bytes.NewReader(whole[:118489088]), 118489088, 0); err == nil {
		t.Fatalf("cut at partition 4's start: read as %+v, want an error", tb)
	}
}

func TestEmptyExtended(t *testing.T) {
	p := blank(t, 16<<20)
	sfdiskScript(t, p, "label: dos\n,4M,83\n,,5\n")
	tb := mustRead(t, p, 0)
	compareSfdisk(t, p, tb)
	if len(tb.Partitions) != 1 || tb.Extended == nil || len(tb.Warnings) != 0 {
		t.Fatalf("read as %+v", tb)
	}
}

func TestNoTable(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		cmd     []string
		size    int64
		bootSig bool // the boot sector ends in 0x55AA like an MBR
	}{
		{"fat12", []string{"mkfs.fat", "-F", "12"}, 4 << 20, true},
		{"fat16", []string{"mkfs.fat", "-F", "16"}, 32 << 20, true},
		{"fat32", []string{"mkfs.fat", "-F", "32"}, 64 << 20, true},
		{"ntfs", []string{"mkntfs", "-F", "-Q", "-q"}, 16 << 20, true},
		{"exfat", []string{"mkfs.exfat"}, 16 << 20, true},
		{"ext4", []string{"mkfs.ext4", "-q", "-F"}, 16 << 20, false},
		{"zero", nil, 1 << 20, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			writeFile(t, p, nil)
			if err := os.Truncate(p, c.size); err != nil {
				t.Fatal(err)
			}
			if c.cmd != nil {
				run(t, c.cmd[0], append(c.cmd[1:], p)...)
			}
			b := readFile(t, p)
			if sig := b[510] == 0x55 && b[511] == 0xaa; sig != c.bootSig {
				t.Fatalf("0x55AA at byte 510: %v, expected %v", sig, c.bootSig)
			}
			if _, err := ParseMBR(b[:512], int64(len(b)/512)); !errors.Is(err, ErrNoMBR) {
				t.Errorf("ParseMBR: %v, want ErrNoMBR", err)
			} else {
				t.Log(err)
			}
			tb := mustRead(t, p, 0)
			if tb.Kind != "none" || len(tb.Partitions) != 0 || tb.DiskSize != c.size || tb.SectorSize != 512 {
				t.Errorf("bare %s read as %+v", c.name, tb)
			}
		})
	}
}

// TestBootCodeWithTable: FAT-looking boot code in front of a sensible
// table is still an MBR.
func TestBootCodeWithTable(t *testing.T) {
	fat := blank(t, 4<<20)
	run(t, "mkfs.fat", "-F", "12", fat)
	p := makeMBR(t)
	b := readFile(t, p)
	copy(b[:440], readFile(t, fat)[:440])
	writeFile(t, p, b)
	if bootSectorFS(b) != "FAT" {
		t.Fatal("sector 0 does not look like a FAT boot sector")
	}
	compareSfdisk(t, p, mustRead(t, p, 0))
}

func TestTruncated(t *testing.T) {
	g := readFile(t, makeGPT(t))
	m := readFile(t, makeMBR(t))
	for _, c := range []struct {
		name string
		b    []byte
		cuts []int64
	}{
		{"gpt", g, []int64{512 + 100, 1024, 2048, 34 * 512, 1 << 20, 5 << 20, 30 << 20, int64(len(g)) - 34*512}},
		{"mbr", m, []int64{512 + 1, 1 << 20, 18 << 20, 36864*512 + 1, 60 << 20}}, // longer: TestMBRTruncatedDisk
	} {
		for _, n := range []int64{0, 1, 100, 511} {
			tb, err := Read(bytes.NewReader(c.b[:n]), n, 0)
			if err != nil || tb.Kind != "none" {
				t.Errorf("%s cut to %d bytes: %+v, %v; want no table", c.name, n, tb, err)
			}
		}
		for _, n := range c.cuts {
			// The disk is n bytes long...
			if tb, err := Read(bytes.NewReader(c.b[:n]), n, 0); err == nil {
				t.Errorf("%s cut to %d bytes: read as %+v, want an error", c.name, n, tb)
			} else {
				t.Logf("%s cut to %d: %v", c.name, n, err)
			}
			// ... or says it is longer than the bytes there are (an
			// error only if table bytes are missing; no panic anyway).
			Read(bytes.NewReader(c.b[:n]), int64(len(c.b)), 0)
		}
	}
	// Only the backup GPT cut off: the primary is used, with a warning.
	for _, n := range []int64{int64(len(g)) - 512, int64(len(g)) - 1} {
		tb, err := Read(bytes.NewReader(g[:n]), n, 0)
		if err != nil || len(tb.Partitions) != 4 || len(tb.Warnings) != 1 || !strings.Contains(tb.Warnings[0], "backup GPT is damaged") {
			t.Errorf("gpt cut to %d bytes: %+v, %v; want the primary and a warning", n, tb, err)
		} else {
			t.Log(tb.Warnings[0])
		}
	}
}

func TestParsersRejectShortInput(t *testing.T) {
	for n := 0; n < 512; n += 7 {
		b := make([]byte, n)
		if _, err := ParseMBR(b, 0); !errors.Is(err, ErrNoMBR) {
			t.Errorf("ParseMBR(%d bytes): %v", n, err)
		}
		if _, _, err := ParseEBR(b); err == nil {
			t.Errorf("ParseEBR(%d bytes): no error", n)
		}
		if _, err := ParseGPTHeader(b); err == nil {
			t.Errorf("ParseGPTHeader(%d bytes): no error", n)
		}
	}
	if _, err := ParseGPTEntries(&GPTHeader{NumEntries: 1 << 30, EntrySize: 1 << 30}, nil, 512); err == nil {
		t.Error("ParseGPTEntries accepted a 2^60-byte entry array")
	}
}

func TestGUID(t *testing.T) {
	// The EFI system partition type as stored on disk.
	b := []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}
	if g := GUID(b); g != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" {
		t.Errorf("GUID %s", g)
	}
}

// patchDisk is a fuzzed disk: size bytes of zeros with patches laid on
// top, so that a disk image becomes a few hundred bytes of corpus (the
// fuzzer minimizes every new input byte by byte, and spends its time on
// zeros otherwise).
type patchDisk struct {
	size    int64
	patches []patch
}

type patch struct {
	off int64
	b   []byte
}

// decodeDisk reads patches encoded as (offset uint64 LE, length uint16
// LE, bytes) records.
func decodeDisk(enc []byte, size uint64) patchDisk {
	d := patchDisk{size: int64(size % (1 << 40))}
	for len(enc) >= 10 {
		off := int64(binary.LittleEndian.Uint64(enc) % (1 << 40))
		n := min(int(binary.LittleEndian.Uint16(enc[8:])), len(enc)-10)
		d.patches = append(d.patches, patch{off, enc[10 : 10+n]})
		enc = enc[10+n:]
	}
	return d
}

// encodeDisk is decodeDisk's inverse for an image: one patch per
// 512-byte block that is not all zero, trimmed of zeros at both ends.
func encodeDisk(b []byte) []byte {
	var enc []byte
	for off := 0; off < len(b); off += 512 {
		blk := b[off:min(off+512, len(b))]
		lead := len(blk) - len(bytes.TrimLeft(blk, "\x00"))
		if lead == len(blk) {
			continue
		}
		data := bytes.TrimRight(blk[lead:], "\x00")
		enc = binary.LittleEndian.AppendUint64(enc, uint64(off+lead))
		enc = binary.LittleEndian.AppendUint16(enc, uint16(len(data)))
		enc = append(enc, data...)
	}
	return enc
}

func (d patchDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), d.size-off))
	q := p[:n]
	clear(q)
	for _, pt := range d.patches {
		lo, hi := max(off, pt.off), min(off+int64(n), pt.off+int64(len(pt.b)))
		if lo < hi {
			copy(q[lo-off:hi-off], pt.b[lo-pt.off:])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// sectorAt reads n bytes at off of d, nil if they are not all there.
func sectorAt(d patchDisk, off, n int64) []byte {
	if off < 0 || n < 0 || n > maxEntryBytes || off > d.size-n {
		return nil
	}
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		return nil
	}
	return b
}

// addSeed adds the disk image at path, encoded, after checking that the
// encoded disk reads the same as the image.
func addSeed(f *testing.F, path string) {
	b := readFile(f, path)
	enc := encodeDisk(b)
	d := decodeDisk(enc, uint64(len(b)))
	want, err := Read(bytes.NewReader(b), int64(len(b)), 0)
	if err != nil || want.Kind == "none" || len(want.Warnings) > 0 {
		f.Fatalf("seed %s: %+v, %v", path, want, err)
	}
	if got, err := Read(d, d.size, 0); err != nil || !reflect.DeepEqual(got, want) {
		f.Fatalf("seed %s encoded: %+v, %v; want %+v", path, got, err, want)
	}
	f.Logf("seed %s: %d bytes encoded", path, len(enc))
	f.Add(enc, uint64(len(b)), false)
	f.Add(enc, uint64(len(b)), true)
}

// fixCRCs recomputes the CRCs of every GPT header d holds (both copies,
// 512- and 4096-byte sectors) so the fuzzer gets past them to the checks
// behind.
func fixCRCs(d *patchDisk) {
	le := binary.LittleEndian
	for _, ss := range []int64{512, 4096} {
		for _, off := range []int64{ss, d.size/ss*ss - ss} {
			h := sectorAt(*d, off, ss)
			if h == nil || !bytes.Equal(h[:8], gptSignature) {
				continue
			}
			hs := int64(le.Uint32(h[12:]))
			if hs < gptMinHeader || hs > ss {
				continue
			}
			n := int64(le.Uint32(h[80:])) * int64(le.Uint32(h[84:]))
			if e := sectorAt(*d, int64(le.Uint64(h[72:])%(1<<40))*ss, n); e != nil {
				le.PutUint32(h[88:], crc32.ChecksumIEEE(e))
			}
			clear(h[16:20])
			le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
			d.patches = append(d.patches, patch{off, h})
		}
	}
}

// seeds adds small real tables made by sfdisk and sgdisk (512- and
// 4096-byte sectors) to a fuzz corpus.
func seeds(f *testing.F) {
	m := blank(f, 64<<10)
	sfdiskScript(f, m, `label: dos
start=1, size=2, type=83, bootable
start=3, size=20, type=5
start=4, size=2, type=83
start=7, size=2, type=7
start=10, size=2, type=b
start=23, size=17, type=c
`)
	addSeed(f, m)
	g := blank(f, 40<<10)
	run(f, "sgdisk", "-a", "1", "-S", "4", "-n", "1:0:+10", "-c", "1:boot", "-A", "1:set:2", "-n", "2:0:0", "-c", "2:rest", g)
	addSeed(f, g)
	if w := flag.Lookup("test.fuzzworker"); w != nil && w.Value.String() == "true" {
		// A fuzz worker is killed when fuzzing stops, perhaps while the
		// loop device below is attached; the coordinator has the seeds.
		return
	}
	g4 := blank(f, 64<<10)
	dev, detach := loop(f, g4)
	run(f, "sgdisk", "-a", "1", "-S", "4", "-n", "1:0:+2", "-c", "1:a", "-n", "2:0:0", dev)
	run(f, "blockdev", "--flushbufs", dev)
	// Now, not at cleanup: fuzz workers are killed when fuzzing stops
	// and would leave the device attached.
	detach()
	addSeed(f, g4)
}

// checkRead asserts what Read promises: a damaged table is a
// *block.CorruptError (the fuzzed disk has no I/O errors), and a table
// read keeps within the disk.
func checkRead(t *testing.T, tb *Table, err error, size int64) {
	if err != nil {
		var ce *block.CorruptError
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "ptable: ") {
			t.Fatalf("Read: %v is not a ptable *block.CorruptError", err)
		}
		return
	}
	checkTable(t, tb, size)
}

// checkTable asserts what Read promises about any table it returns.
func checkTable(t *testing.T, tb *Table, size int64) {
	for i, p := range tb.Partitions {
		// Only an MBR primary may end past the disk (a truncated disk).
		primary := tb.Kind == "mbr" && p.Index <= 4
		if p.Start < 0 || p.Size <= 0 || p.Start >= size || p.End() > size && !primary {
			t.Fatalf("partition %+v outside the %d-byte disk", p, size)
		}
		if i > 0 && p.Index <= tb.Partitions[i-1].Index {
			t.Fatalf("partitions not sorted by index: %+v", tb.Partitions)
		}
		if i > 0 && tb.Kind == "mbr" && p.Index > 4 && p.Index != tb.Partitions[i-1].Index+1 && tb.Partitions[i-1].Index >= 5 {
			t.Fatalf("logicals not numbered in sequence: %+v", tb.Partitions)
		}
		for _, q := range tb.Partitions[:i] {
			if p.Start < q.End() && q.Start < p.End() {
				t.Fatalf("partitions %d and %d overlap", p.Index, q.Index)
			}
		}
	}
	if tb.Kind != "mbr" && tb.Extended != nil {
		t.Fatalf("extended partition in a %s table", tb.Kind)
	}
	for _, s := range tb.Structures {
		if s.Off < 0 || s.Len <= 0 || s.End() > size {
			t.Fatalf("structure %v outside the disk", s)
		}
	}
}

func FuzzMBR(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, enc []byte, size uint64, fixCRC bool) {
		d := decodeDisk(enc, size)
		if fixCRC {
			fixCRCs(&d)
		}
		if b := sectorAt(d, 0, 512); b != nil {
			var ce *block.CorruptError
			if _, err := ParseMBR(b, d.size/512); err != nil && !errors.Is(err, ErrNoMBR) && !errors.As(err, &ce) {
				t.Fatalf("ParseMBR: %v is neither ErrNoMBR nor a *block.CorruptError", err)
			}
		}
		for _, pt := range d.patches {
			ParseEBR(sectorAt(d, pt.off/512*512, 512))
		}
		tb, err := Read(d, d.size, 512)
		checkRead(t, tb, err, d.size)
	})
}

func FuzzGPT(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, enc []byte, size uint64, fixCRC bool) {
		d := decodeDisk(enc, size)
		if fixCRC {
			fixCRCs(&d)
		}
		for _, ss := range []int64{512, 4096} {
			for _, off := range []int64{ss, d.size/ss*ss - ss} {
				h, err := ParseGPTHeader(sectorAt(d, off, ss))
				if err != nil {
					continue
				}
				if b := sectorAt(d, int64(h.EntriesLBA%(1<<40))*ss, h.EntriesLen()); b != nil {
					ParseGPTEntries(h, b, ss)
				}
			}
		}
		tb, err := Read(d, d.size, 0)
		checkRead(t, tb, err, d.size)
	})
}

// Fits judges only the types that promise one kind of contents.
func TestFits(t *testing.T) {
	for _, c := range []struct {
		typ, fs string
		want    bool
	}{
		{"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "swap", true},
		{"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "ext4", false},
		{"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "fat32", true},
		{"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ntfs", false},
		{"E6D6D379-F507-44C2-A23C-238F2A3DF928", "lvm2", true},
		{"CA7D7CCB-63ED-4C53-861C-1742536059CC", "luks2", true},
		{"CA7D7CCB-63ED-4C53-861C-1742536059CC", "xfs", false},
		{"0x07", "exfat", true},
		{"0x07", "ext4", false},
		{"0x0c", "fat16", true},
		{"0x82", "btrfs", false},
		{"0x83", "swap", true},
		{"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "ntfs", true},
		{"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "ext4", true}, // old Linux installers used it
		{"", "ext4", true},
	} {
		if got := Fits(c.typ, c.fs); got != c.want {
			t.Errorf("Fits(%q, %q) = %v, want %v", c.typ, c.fs, got, c.want)
		}
	}
}
