package ptable

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// tool runs a real partitioning tool; a missing tool fails the test.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	return tooltest.Run(t, name, args...)
}

func sized(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	return p
}

func read(t testing.TB, path string, ss int64) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, _ := f.Seek(0, io.SeekEnd) // works for block devices too
	tb, err := Read(f, size, ss)
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
			Node     string          `json:"node"`
			Start    int64           `json:"start"`
			Size     int64           `json:"size"`
			Type     string          `json:"type"`
			UUID     string          `json:"uuid"`
			Name     string          `json:"name"`
			Bootable json.RawMessage `json:"bootable"`
			Attrs    string          `json:"attrs"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdisk(t *testing.T, path string) sfdiskJSON {
	var j sfdiskJSON
	if err := json.Unmarshal([]byte(tool(t, "sfdisk", "--json", path)), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// compare checks our table against sfdisk's view of the same disk.
func compare(t *testing.T, path string, got *Table) {
	t.Helper()
	want := sfdisk(t, path)
	ss := want.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	if got.Kind != want.PartitionTable.Label && !(got.Kind == "mbr" && want.PartitionTable.Label == "dos") {
		t.Fatalf("kind %q, sfdisk says %q", got.Kind, want.PartitionTable.Label)
	}
	var data []Partition
	var ext int
	for _, p := range want.PartitionTable.Partitions {
		if p.Type == "5" || p.Type == "f" || p.Type == "85" {
			ext++
			continue
		}
		_ = data
	}
	if len(got.Partitions)+ext != len(want.PartitionTable.Partitions) {
		t.Fatalf("%d partitions (+%d extended), sfdisk lists %d", len(got.Partitions), ext, len(want.PartitionTable.Partitions))
	}
	i := 0
	for _, w := range want.PartitionTable.Partitions {
		if got.Kind == "mbr" && (w.Type == "5" || w.Type == "f" || w.Type == "85") {
			if got.Extended == nil || got.Extended.Start != w.Start*ss {
				t.Errorf("extended partition at sector %d not found: %+v", w.Start, got.Extended)
			}
			continue
		}
		g := got.Partitions[i]
		i++
		num := w.Node[len(w.Node)-1:]
		if n := strings.TrimLeft(w.Node, "abcdefghijklmnopqrstuvwxyz/._-"); n != "" {
			num = n[strings.LastIndexAny(n, "abcdefghijklmnopqrstuvwxyz._-/")+1:]
		}
		if g.Start != w.Start*ss || g.Size != w.Size*ss {
			t.Errorf("partition %d: start %d size %d, sfdisk: %d, %d", g.Index, g.Start, g.Size, w.Start*ss, w.Size*ss)
		}
		if !strings.HasSuffix(w.Node, "img"+num) && !strings.HasSuffix(w.Node, num) {
			t.Errorf("partition %d: sfdisk node %s", g.Index, w.Node)
		}
		if got.Kind == "gpt" {
			if g.Type != w.Type || g.GUID != w.UUID || g.Name != w.Name {
				t.Errorf("partition %d: %s %s %q, sfdisk: %s %s %q", g.Index, g.Type, g.GUID, g.Name, w.Type, w.UUID, w.Name)
			}
		} else {
			if g.Type != "0x"+leftPad(w.Type) {
				t.Errorf("partition %d: type %s, sfdisk %s", g.Index, g.Type, w.Type)
			}
			if g.Bootable != (string(w.Bootable) == "true") {
				t.Errorf("partition %d: bootable %v, sfdisk %s", g.Index, g.Bootable, w.Bootable)
			}
		}
	}
}

func leftPad(s string) string {
	if len(s) == 1 {
		return "0" + s
	}
	return s
}

func TestGPT(t *testing.T) {
	p := sized(t, 64<<20)
	tool(t, "sgdisk", "-n", "1:1M:+8M", "-t", "1:EF00", "-c", "1:EFI system",
		"-n", "2:0:+16M", "-t", "2:8300", "-c", "2:root", "-A", "2:set:2", "-A", "2:set:60",
		"-n", "4:0:+4M", "-t", "4:0700", "-c", "4:data ünïcode", p)
	tb := read(t, p, 0)
	compare(t, p, tb)
	if len(tb.Warnings) != 0 {
		t.Errorf("warnings on a clean disk: %v", tb.Warnings)
	}
	if tb.Partitions[1].Attrs != 1<<2|1<<60 {
		t.Errorf("attributes %#x", tb.Partitions[1].Attrs)
	}
	if tb.Partitions[2].Index != 4 {
		t.Errorf("third entry numbered %d, want 4", tb.Partitions[2].Index)
	}
	if !strings.Contains(tool(t, "sgdisk", "-p", p), tb.DiskID) {
		t.Errorf("disk GUID %s not in sgdisk -p", tb.DiskID)
	}

	// Damage the primary header: the backup is used and we say so.
	b, _ := os.ReadFile(p)
	b[512+40] ^= 0xff
	os.WriteFile(p, b, 0o644)
	tb2 := read(t, p, 0)
	if len(tb2.Warnings) == 0 || !strings.Contains(tb2.Warnings[0], "primary GPT") {
		t.Fatalf("no warning for a damaged primary: %v", tb2.Warnings)
	}
	if len(tb2.Partitions) != 3 || tb2.Partitions[1] != tb.Partitions[1] {
		t.Fatalf("backup GPT read differently: %+v", tb2.Partitions)
	}
	// Damage the backup's entries too: no table can be trusted.
	b[len(b)-33*512+10] ^= 0xff
	os.WriteFile(p, b, 0o644)
	f, _ := os.Open(p)
	defer f.Close()
	if _, err := Read(f, int64(len(b)), 0); err == nil {
		t.Fatal("both GPT copies damaged, no error")
	}
}

func TestGPT4K(t *testing.T) {
	p := sized(t, 64<<20)
	loop := strings.TrimSpace(tool(t, "losetup", "-b", "4096", "-f", "--show", p))
	defer exec.Command("losetup", "-d", loop).Run()
	tool(t, "sgdisk", "-n", "1:1M:+8M", "-t", "1:8300", "-n", "2:0:0", "-t", "2:0700", loop)
	tb := read(t, loop, 4096)
	compare(t, loop, tb)
	if tb.SectorSize != 4096 || tb.Kind != "gpt" || len(tb.Partitions) != 2 || tb.Partitions[0].Start != 1<<20 {
		t.Fatalf("4K disk read as %+v", tb)
	}
	exec.Command("sync").Run()
	if ft := read(t, p, 0); ft.SectorSize != 4096 || len(ft.Partitions) != 2 || ft.Partitions[1] != tb.Partitions[1] {
		t.Fatalf("backing file read as %+v", ft)
	}
}

func TestMBRLogicals(t *testing.T) {
	p := sized(t, 128<<20)
	cmd := exec.Command("sfdisk", "-q", p)
	cmd.Stdin = strings.NewReader("label: dos\n,16M,6,*\n,16M,83\n,,5\n,8M,83\n,8M,7\n,8M,b\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	tb := read(t, p, 0)
	compare(t, p, tb)
	var idx []int
	for _, q := range tb.Partitions {
		idx = append(idx, q.Index)
	}
	if len(idx) != 5 || idx[2] != 5 || idx[4] != 7 || !tb.Partitions[0].Bootable {
		t.Fatalf("partitions %v", tb.Partitions)
	}
	if tb.Extended == nil {
		t.Fatal("no extended container")
	}
}

func TestBareFilesystemsAreNotTables(t *testing.T) {
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"fat12": {"mkfs.fat", "-F", "12", "-C", "fs", "4096"},
		"fat16": {"mkfs.fat", "-F", "16", "-C", "fs", "32768"},
		"fat32": {"mkfs.fat", "-F", "32", "-C", "fs", "70000"},
		"ntfs":  {"mkntfs", "-F", "-Q", "-q", "fs", "16384"},
		"ext4":  {"mkfs.ext4", "-q", "fs", "16M"},
	} {
		p := filepath.Join(dir, name)
		args = slicesReplace(args, "fs", p)
		if name == "ntfs" {
			os.WriteFile(p, make([]byte, 16<<20), 0o644)
		}
		tool(t, args[0], args[1:]...)
		if tb := read(t, p, 0); tb.Kind != "none" {
			t.Errorf("bare %s read as a %s table: %+v", name, tb.Kind, tb.Partitions)
		}
	}
}

func slicesReplace(a []string, from, to string) []string {
	out := append([]string(nil), a...)
	for i := range out {
		if out[i] == from {
			out[i] = to
		}
	}
	return out
}

func TestTruncated(t *testing.T) {
	p := sized(t, 32<<20)
	tool(t, "sgdisk", "-n", "1:1M:0", p)
	b, _ := os.ReadFile(p)
	for _, n := range []int{0, 100, 511, 512, 600, 1024, 4096, 1 << 20} {
		Read(bytes.NewReader(b[:n]), int64(n), 0) // must not panic
	}
}

func seeds(f *testing.F) {
	dir := f.TempDir()
	g := filepath.Join(dir, "gpt")
	os.WriteFile(g, make([]byte, 4<<20), 0o644)
	tool(f, "sgdisk", "-n", "1:2048:+1M", "-n", "2:0:0", "-c", "2:x", g)
	m := filepath.Join(dir, "mbr")
	os.WriteFile(m, make([]byte, 4<<20), 0o644)
	cmd := exec.Command("sfdisk", "-q", m)
	cmd.Stdin = strings.NewReader("label: dos\n,1M,83\n,,5\n,512K,83\n,,7\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		f.Fatalf("sfdisk: %v %s", err, out)
	}
	for _, p := range []string{g, m} {
		b, _ := os.ReadFile(p)
		// Keep the interesting parts small: the first 34 sectors and the
		// EBRs (within the first 3 MiB for the MBR disk).
		f.Add(b[:34*512])
		_ = b
	}
}

func FuzzMBR(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseMBR(b)
		Read(bytes.NewReader(b), int64(len(b)), 512)
	})
}

func FuzzGPT(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := ParseGPTHeader(b); err == nil {
			ParseGPTEntries(h, b, 512)
		}
		Read(bytes.NewReader(b), int64(len(b)), 0)
	})
}
