package rescue

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A map Platter writes is read back as it was, and GNU ddrescuelog reads
// it and counts the same bytes in each state.
func TestMapWithDdrescuelog(t *testing.T) {
	const size = 1 << 20
	m := NewMap(size)
	m.Set(0, 4096, Finished)
	m.Set(4096, 512, Bad)
	m.Set(4608, 8192, NonTrimmed)
	m.Set(65536, 1024, NonScraped)
	m.Set(131072, 65536, Finished)
	m.Set(131072+512, 512, Bad) // splits a finished run
	m.Set(4096, 512, Finished)  // merges with its neighbour
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ParseMap(bytes.NewReader(buf.Bytes()), size)
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	for _, s := range []Status{NonTried, NonTrimmed, NonScraped, Bad, Finished} {
		a, na := m.Bytes(s)
		b, nb := back.Bytes(s)
		if a != b || na != nb {
			t.Errorf("status %c: %d bytes in %d areas written, %d in %d read back", s, a, na, b, nb)
		}
	}
	if bad, areas := m.Bytes(Bad); bad != 512 || areas != 1 {
		t.Errorf("bad: %d bytes in %d areas, want 512 in 1", bad, areas)
	}
	if got, _ := m.Bytes(Finished); got != 4096+512+65536-512 {
		t.Errorf("finished: %d bytes", got)
	}

	path := filepath.Join(t.TempDir(), "map")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// ddrescuelog -l- lists the bad sectors' numbers (512-byte blocks by
	// default): exactly the one bad sector.
	out, err := exec.Command("ddrescuelog", "-b", "512", "-l-", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ddrescuelog -l-: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 1 || got[0] != "257" {
		t.Errorf("ddrescuelog lists bad sectors %q, want [257]\n%s", got, buf.String())
	}
	out, err = exec.Command("ddrescuelog", "-t", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ddrescuelog -t: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`bad-sector:\s+512 B,\s+in\s+1 area`).Match(out) {
		t.Errorf("ddrescuelog -t does not count 512 bad bytes in 1 area:\n%s", out)
	}
}

// A map ddrescue itself wrote (format of ddrescue 1.27) is read.
func TestParseDdrescueMap(t *testing.T) {
	text := `# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -d /dev/sdb out.img out.map
# Start time:   2026-11-30 10:00:00
# Current time: 2026-11-30 10:05:00
# Finished
# current_pos  current_status  current_pass
0x00010000     +               1
#      pos        size  status
0x00000000  0x00010000  +
0x00010000  0x00000200  -
0x00010200  0x0000FE00  +
`
	m, err := ParseMap(strings.NewReader(text), 0x20000)
	if err != nil {
		t.Fatal(err)
	}
	if bad, n := m.Bytes(Bad); bad != 512 || n != 1 {
		t.Errorf("bad %d in %d", bad, n)
	}
	if _, err := ParseMap(strings.NewReader(text), 0x30000); err == nil || !strings.Contains(err.Error(), "another device") {
		t.Errorf("a map of a smaller device: %v", err)
	}
}

// Maps that are not whole, ordered and bounded are refused with the line.
func TestParseMapRefuses(t *testing.T) {
	head := "0x0 ? 1\n"
	for name, text := range map[string]string{
		"no status":  "# only comments\n",
		"gap":        head + "0x0 0x100 +\n0x200 0x100 +\n",
		"overlap":    head + "0x0 0x200 +\n0x100 0x100 +\n",
		"past end":   head + "0x0 0x2000 +\n",
		"zero size":  head + "0x0 0x0 +\n",
		"bad status": head + "0x0 0x1000 X\n",
		"negative":   head + "0x0 -0x1000 +\n",
		"short":      head + "0x0 0x800 +\n",
		"long line":  head + strings.Repeat("0", 5000) + " 0x1000 +\n",
	} {
		if _, err := ParseMap(strings.NewReader(text), 0x1000); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseMap(f *testing.F) {
	f.Add([]byte("0x0 ? 1\n0x0 0x800 +\n0x800 0x800 -\n"), int64(0x1000))
	f.Add([]byte("# Mapfile\n0x00000000     +               1\n0x0 0x1000 ?\n"), int64(0x1000))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if size < 0 || size > 1<<40 {
			return
		}
		m, err := ParseMap(bytes.NewReader(b), size)
		if err != nil {
			return
		}
		var total int64
		for _, s := range []Status{NonTried, NonTrimmed, NonScraped, Bad, Finished} {
			n, _ := m.Bytes(s)
			total += n
		}
		if total != size {
			t.Fatalf("map covers %d of %d bytes", total, size)
		}
		m.Set(size/3, size/3, Bad)
		m.Runs(0, size, func(off, n int64, s Status) {
			if n <= 0 {
				t.Fatalf("empty run at %d", off)
			}
		})
	})
}
