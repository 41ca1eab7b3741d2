package ptable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

// Tables written by Layout are judged by sgdisk -v, sfdisk --verify and
// their listings (compareSfdisk, compareSgdisk), and read back with Read.

// writeDisk writes tb into a fresh sparse file of tb.DiskSize bytes.
func writeDisk(t testing.TB, tb *Table, orig *Original) string {
	t.Helper()
	p := blank(t, tb.DiskSize)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tb.Write(f, orig); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return p
}

// original reads the Original of the disk at path, whose table is tb.
func original(t testing.TB, path string, tb *Table) *Original {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o, err := ReadOriginal(f, tb)
	if err != nil {
		t.Fatalf("ReadOriginal %s: %v", path, err)
	}
	return o
}

// verify runs the tools' own checks of the table at path (a file with
// 512-byte sectors or a block device).
func verify(t *testing.T, path string, kind string) {
	t.Helper()
	if kind == "gpt" {
		// sgdisk finds no problems in a table it could not load either.
		if out := run(t, "sgdisk", "-v", path); !strings.Contains(out, "No problems found") || strings.Contains(out, "Creating new GPT") {
			t.Errorf("sgdisk -v %s:\n%s", path, out)
		}
	}
	if out := run(t, "sfdisk", "--verify", path); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk --verify %s:\n%s", path, out)
	}
}

// judge checks the table at path against want: the tools' checks, their
// listings field by field, and Read giving want back.
func judge(t *testing.T, path string, want *Table) {
	t.Helper()
	verify(t, path, want.Kind)
	compareSfdisk(t, path, want)
	if want.Kind == "gpt" {
		compareSgdisk(t, path, want)
	}
	sameTable(t, mustRead(t, path, want.SectorSize), want)
}

// sameTable compares what a table says (not where its structures were).
func sameTable(t testing.TB, got, want *Table) {
	t.Helper()
	g, w := *got, *want
	g.Structures, w.Structures = nil, nil
	if len(g.Warnings) != 0 {
		t.Errorf("warnings reading the written table: %q", g.Warnings)
	}
	g.Warnings, w.Warnings = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("read back as\n%s\nwant\n%s", dump(&g), dump(&w))
	}
}

func dump(tb *Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s %d-byte sectors, %d bytes, id %s\n", tb.Kind, tb.SectorSize, tb.DiskSize, tb.DiskID)
	if tb.Extended != nil {
		fmt.Fprintf(&b, "  extended %+v\n", *tb.Extended)
	}
	for _, p := range tb.Partitions {
		fmt.Fprintf(&b, "  %+v\n", p)
	}
	return b.String()
}

// spans are the byte ranges pieces cover, merged.
func spans(pieces []Piece) []block.Extent {
	var es []block.Extent
	for _, p := range pieces {
		es = append(es, block.Extent{Off: p.Off, Len: int64(len(p.Data))})
	}
	return block.MergeExtents(es)
}

// same reports whether the files at a and b hold the same bytes in es.
func sameBytes(t *testing.T, a, b string, es []block.Extent) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	for _, e := range es {
		ba, bb := make([]byte, e.Len), make([]byte, e.Len)
		if err := readFull(fa, ba, e.Off); err != nil {
			t.Fatal(err)
		}
		if err := readFull(fb, bb, e.Off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ba, bb) {
			i := 0
			for ba[i] == bb[i] {
				i++
			}
			t.Errorf("bytes %d-%d differ first at byte %d: % x, original % x", e.Off, e.End()-1, e.Off+int64(i), bb[i:min(i+16, len(bb))], ba[i:min(i+16, len(ba))])
		}
	}
}

// bootCode puts recognizable bytes into sector 0 of path outside the
// partition entries: boot code, the disk signature if sig, and bytes
// 444-445.
func bootCode(t testing.TB, path string, sig bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 446)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	if !sig {
		if _, err := f.ReadAt(b[440:444], 440); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

// sgdisk syncs every disk of the machine after writing a table: the
// disks it makes are made once and kept as their non-zero blocks.
var (
	sgdiskGPT    = cached(makeGPT)
	sgdiskHybrid = cached(func(t testing.TB) string {
		p := sgdiskGPT(t)
		run(t, "sgdisk", "-h", "2:4", p)
		return p
	})
)

// cached returns make as a func that makes its disk once and gives each
// caller a fresh sparse copy.
func cached(make func(testing.TB) string) func(testing.TB) string {
	var (
		once sync.Once
		enc  []byte
		size int64
	)
	return func(t testing.TB) string {
		t.Helper()
		once.Do(func() {
			b := readFile(t, make(t))
			enc, size = encodeDisk(b), int64(len(b))
		})
		if size == 0 {
			t.Fatal("the fixture could not be made (see the first test that used it)")
		}
		p := blank(t, size)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, pt := range decodeDisk(enc, uint64(size)).patches {
			if _, err := f.WriteAt(pt.b, pt.off); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
}

func makeSfdiskGPT(t testing.TB) string {
	p := blank(t, 64<<20)
	sfdiskScript(t, p, `label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=AE30A908-5369-CD47-BDC5-A5B442E8A31F, name="EFI", attrs="LegacyBIOSBootable"
start=18432, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AD0903F9-8E0A-ED4F-A085-022E7759AD93, name="root ü", attrs="RequiredPartition GUID:60,63"
start=61440, size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"
`)
	return p
}

func makeMBRPrimaries(t testing.TB) string {
	p := blank(t, 32<<20)
	sfdiskScript(t, p, `label: dos
label-id: 0xdeadbeef
start=63, size=4033, type=c
start=4096, size=8192, type=83, bootable
start=20480, size=40960, type=8e
`)
	return p
}

// makeBigMBR is an MBR on a 10 GiB sparse disk whose partitions reach
// past cylinder 1023, where CHS addresses end.
func makeBigMBR(t testing.TB) string {
	p := blank(t, 10<<30)
	sfdiskScript(t, p, `label: dos
label-id: 0x1234abcd
start=2048, size=32768, type=6, bootable
start=34816, size=18000000, type=f
start=18100000, size=16384, type=83
start=36864, size=16384, type=83
start=55296, size=16384, type=7, bootable
start=16450000, size=100000, type=b
`)
	return p
}

// Written again unchanged, a table is the same bytes: sector 0, the
// EBRs, both GPTs. With fresh CHS fields (CHS nil) too, where sfdisk
// made the table: the CHS addresses are computed as sfdisk computes them.
func TestWriteUnchanged(t *testing.T) {
	for _, c := range []struct {
		name       string
		make       func(testing.TB) string
		sig        bool // put a disk signature into the protective MBR
		sfdiskCHS  bool
		wholeFile  bool
		structures int
	}{
		{"sgdisk GPT", sgdiskGPT, true, false, true, 2},
		{"sfdisk GPT", makeSfdiskGPT, false, true, true, 2},
		{"sgdisk hybrid MBR", sgdiskHybrid, false, true, true, 2},
		{"MBR primaries", makeMBRPrimaries, false, true, true, 1},
		{"MBR logicals", makeMBR, false, true, true, 4},
		{"MBR past cylinder 1023", makeBigMBR, false, true, false, 4},
		{"MBR empty extended", func(t testing.TB) string {
			p := blank(t, 16<<20)
			sfdiskScript(t, p, "label: dos\n,4M,83\n,,5\n")
			return p
		}, false, true, true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := c.make(t)
			bootCode(t, orig, c.sig)
			tb := mustRead(t, orig, 0)
			if len(tb.Structures) != c.structures {
				t.Fatalf("fixture has structures %v", tb.Structures)
			}
			o := original(t, orig, tb)
			fresh := *o
			fresh.CHS = nil
			for _, try := range []struct {
				name string
				o    *Original
			}{{"original CHS", o}, {"computed CHS", &fresh}} {
				if try.o == &fresh && !c.sfdiskCHS {
					continue
				}
				pieces, err := tb.Layout(try.o)
				if err != nil {
					t.Fatal(err)
				}
				written := writeDisk(t, tb, try.o)
				want := tb.Structures
				if got := spans(pieces); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: pieces cover %v, the original's table %v", try.name, got, want)
				}
				if c.wholeFile {
					want = []block.Extent{{Off: 0, Len: tb.DiskSize}}
				}
				sameBytes(t, orig, written, want)
				judge(t, written, tb)
			}
		})
	}
}

// Only the disk's size changes: the primary GPT keeps its entries, the
// backup moves to the new end.
func TestWriteGPTDiskSize(t *testing.T) {
	orig := sgdiskGPT(t)
	bootCode(t, orig, true)
	tb := mustRead(t, orig, 0)
	o := original(t, orig, tb)
	for _, size := range []int64{96 << 20, 31 << 20} {
		want := tb.Clone()
		want.DiskSize = size
		written := writeDisk(t, want, o)
		judge(t, written, want)
		// Sector 0 up to its entry, and the primary entries, unchanged.
		// sgdisk's CHS end of the 0xEE entry becomes sfdisk's 0xFFFFFF.
		sameBytes(t, orig, written, []block.Extent{{Off: 0, Len: 446 + 5}, {Off: 1024, Len: 32 * 512}})
		got := mustRead(t, written, 0)
		wantStructs := []block.Extent{{Off: 0, Len: 34 * 512}, {Off: size - 33*512, Len: 33 * 512}}
		if fmt.Sprint(got.Structures) != fmt.Sprint(wantStructs) {
			t.Errorf("%d-byte disk: structures %v, want %v", size, got.Structures, wantStructs)
		}
	}
}

// Partitions moved, grown and shrunk on a larger and a smaller disk;
// the written GPT is judged by sgdisk and sfdisk and keeps every GUID,
// name and attribute.
func TestWriteGPTMoved(t *testing.T) {
	orig := sgdiskGPT(t)
	bootCode(t, orig, true)
	tb := mustRead(t, orig, 0)
	o := original(t, orig, tb)
	const mib = 1 << 20
	byIndex := func(tb *Table, i int) *Partition {
		for k := range tb.Partitions {
			if tb.Partitions[k].Index == i {
				return &tb.Partitions[k]
			}
		}
		t.Fatalf("no partition %d", i)
		return nil
	}
	grown := tb.Clone()
	grown.DiskSize = 128 * mib
	byIndex(grown, 2).Start, byIndex(grown, 2).Size = 40*mib, 48*mib
	byIndex(grown, 4).Start = 20 * mib
	// Partition 128 ends on the last usable sector, 34 before the end.
	byIndex(grown, 128).Start = 128*mib - 33*512 - mib
	shrunk := tb.Clone()
	shrunk.DiskSize = 27 * mib
	byIndex(shrunk, 2).Start, byIndex(shrunk, 2).Size = 9*mib, 12*mib
	byIndex(shrunk, 4).Start = 21 * mib
	byIndex(shrunk, 128).Start = 25 * mib
	for _, want := range []*Table{grown, shrunk} {
		written := writeDisk(t, want, o)
		judge(t, written, want)
		sameBytes(t, orig, written, []block.Extent{{Off: 0, Len: 446}})
	}
	// One sector past the last usable sector is refused.
	bad := grown.Clone()
	byIndex(bad, 128).Start += 512
	_, err := bad.Layout(o)
	wantErr(t, err, 128, "outside the GPT's usable sectors")
}

func wantErr(t *testing.T, err error, index int, reason string) {
	t.Helper()
	var le *LayoutError
	if !errors.As(err, &le) || le.Partition != index || !strings.Contains(err.Error(), reason) {
		t.Errorf("got error %v, want a *LayoutError for partition %d: %s", err, index, reason)
		return
	}
	t.Log(err)
}

// ebrGaps reads where each logical partition's EBR is: its start minus
// the EBR's.
func ebrGaps(t *testing.T, path string, tb *Table) map[int]int64 {
	t.Helper()
	return original(t, path, tb).EBRGap
}

// Logical partitions moved with their container, grown and shrunk: the
// EBR chain is rebuilt, each EBR as far before its partition as it was
// (2048 sectors, as sfdisk aligns them) where there is room, right
// after what lies below where there is not.
func TestWriteMBRMoved(t *testing.T) {
	orig := makeMBR(t)
	bootCode(t, orig, false)
	tb := mustRead(t, orig, 0)
	o := original(t, orig, tb)
	if fmt.Sprint(o.EBRGap) != "map[5:1048576 6:1048576 7:1048576]" {
		t.Fatalf("the original's EBR gaps: %v", o.EBRGap)
	}
	const mib, s = 1 << 20, 512
	part := func(tb *Table, i int) *Partition {
		for k := range tb.Partitions {
			if tb.Partitions[k].Index == i {
				return &tb.Partitions[k]
			}
		}
		t.Fatalf("no partition %d", i)
		return nil
	}
	// 128 MiB: 1 at 1 MiB (16 MiB), extended 17-113 MiB, 4 at 113 MiB.
	grown := tb.Clone()
	grown.DiskSize = 300 * mib
	grown.Extended.Start, grown.Extended.Size = 40*mib, 200*mib
	part(grown, 5).Start = 41 * mib
	part(grown, 6).Start, part(grown, 6).Size = 60*mib, 30*mib
	part(grown, 7).Start, part(grown, 7).Size = 100*mib, 139*mib
	part(grown, 4).Start = 250 * mib
	// Packed tight: logical 6 right after 5 but one sector, 7 right
	// after 6 but 16 sectors; the extended container ends with 7.
	tight := tb.Clone()
	tight.DiskSize = 90 * mib
	tight.Extended.Start, tight.Extended.Size = 17*mib, 60*mib
	part(tight, 5).Start = 17*mib + s
	part(tight, 6).Start = part(tight, 5).End() + s
	part(tight, 7).Start = part(tight, 6).End() + 16*s
	part(tight, 7).Size = tight.Extended.End() - part(tight, 7).Start
	part(tight, 4).Start = 77 * mib
	// Chain order differs from disk order: logical 5 at the container's
	// end, its EBR at the container's start.
	shuffled := tb.Clone()
	shuffled.Extended.Start, shuffled.Extended.Size = 20*mib, 90*mib
	part(shuffled, 5).Start = 100 * mib
	part(shuffled, 6).Start = 22 * mib
	part(shuffled, 7).Start = 40 * mib
	for _, c := range []struct {
		name string
		tb   *Table
		gaps string
	}{
		{"grown", grown, "map[5:1048576 6:1048576 7:1048576]"},
		{"tight", tight, "map[5:512 6:512 7:8192]"},
		{"shuffled", shuffled, "map[5:83886080 6:1048576 7:1048576]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			written := writeDisk(t, c.tb, o)
			judge(t, written, c.tb)
			sameBytes(t, orig, written, []block.Extent{{Off: 0, Len: 446}})
			if g := ebrGaps(t, written, c.tb); fmt.Sprint(g) != c.gaps {
				t.Errorf("EBR gaps %v, want %s", g, c.gaps)
			}
		})
	}
	for _, c := range []struct {
		name   string
		change func(tb *Table)
		index  int
		reason string
	}{
		{"no room for an EBR", func(tb *Table) { part(tb, 6).Start = part(tb, 5).End() }, 6, "no free sector for its EBR"},
		{"logical at the container's start", func(tb *Table) { part(tb, 5).Start = tb.Extended.Start }, 5, "no free sector for its EBR"},
		{"logical outside the container", func(tb *Table) { tb.Extended.Size = 60 * mib }, 7, "outside extended partition 3"},
		{"primary over the container", func(tb *Table) { part(tb, 4).Start = 100 * mib }, 4, "overlap extended partition 3"},
		{"logicals overlap", func(tb *Table) { part(tb, 6).Start = part(tb, 5).Start + mib }, 6, "overlap partition 5"},
		{"past the disk", func(tb *Table) { tb.DiskSize = 120 * mib }, 4, "do not fit the 125829120-byte disk"},
		{"not whole sectors", func(tb *Table) { part(tb, 1).Size += 100 }, 1, "not whole 512-byte sectors"},
		{"a gap in the numbers", func(tb *Table) { part(tb, 7).Index = 8 }, 8, "numbered 5, 6, ..."},
		{"no extended container", func(tb *Table) { tb.Extended = nil }, 5, "needs an extended partition"},
		{"a GPT field", func(tb *Table) { part(tb, 1).Name = "x" }, 1, "no GUID, name or attributes"},
		{"type 0xee", func(tb *Table) { part(tb, 1).Type = "0xee" }, 1, "read as a GPT"},
		{"start past 2^32 sectors", func(tb *Table) {
			tb.DiskSize = 4 << 40
			part(tb, 4).Start = 1<<32*s + mib
		}, 4, "past the 2^32 sectors"},
		{"size past 2^32 sectors", func(tb *Table) {
			tb.DiskSize = 4 << 40
			part(tb, 4).Size = 1 << 32 * s
		}, 4, "more than an MBR entry's 2^32-1"},
		{"extended past 2^32 sectors", func(tb *Table) {
			tb.DiskSize = 4 << 40
			tb.Partitions = slices.DeleteFunc(tb.Partitions, func(p Partition) bool { return p.Index == 4 })
			tb.Extended.Size = 1 << 32 * s
		}, 3, "more than an MBR entry's 2^32-1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := tb.Clone()
			c.change(bad)
			_, err := bad.Layout(o)
			wantErr(t, err, c.index, c.reason)
		})
	}
}

// A 512-byte-sector table written for 4096-byte sectors is judged on a
// loop device with 4096-byte sectors, and written back for 512-byte
// sectors it is the original's bytes again.
func TestWriteSectorSize(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(testing.TB) string
	}{
		{"sgdisk GPT", sgdiskGPT},
		{"sfdisk GPT", makeSfdiskGPT},
		{"MBR logicals", makeMBR},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := c.make(t)
			bootCode(t, orig, false)
			tb := mustRead(t, orig, 512)
			o := original(t, orig, tb)
			want, err := tb.WithSectorSize(4096)
			if err != nil {
				t.Fatal(err)
			}
			file := writeDisk(t, want, o)
			dev, detach := loop(t, file)
			judge(t, dev, want)
			got := mustRead(t, file, 4096)
			sameTable(t, got, want)
			if tb.Kind == "gpt" {
				// Headers at LBA 1 and the last LBA, 4 sectors of
				// entries after and before them.
				ws := []block.Extent{{Off: 0, Len: 6 * 4096}, {Off: tb.DiskSize - 5*4096, Len: 5 * 4096}}
				if fmt.Sprint(got.Structures) != fmt.Sprint(ws) {
					t.Errorf("structures %v, want %v", got.Structures, ws)
				}
			}
			detach()
			// Back to 512-byte sectors with what the original kept.
			back, err := got.WithSectorSize(512)
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, orig, writeDisk(t, back, o), []block.Extent{{Off: 0, Len: tb.DiskSize}})
		})
	}
	// A partition not on a 4 KiB boundary cannot be written in 4 KiB
	// sectors.
	p := makeMBRPrimaries(t)
	tb := mustRead(t, p, 0)
	_, err := tb.WithSectorSize(4096)
	wantErr(t, err, 1, "not whole 4096-byte sectors")
	tb.SectorSize = 4096
	_, err = tb.Layout(nil)
	wantErr(t, err, 1, "not whole 4096-byte sectors")
}

// Hybrid MBRs move with the partitions they mirror; an 0xEE entry that
// covered the disk covers the new one.
func TestWriteHybrid(t *testing.T) {
	orig := sgdiskHybrid(t)
	tb := mustRead(t, orig, 0)
	o := original(t, orig, tb)
	if o.Hybrid[0].Type != 0xee || o.Hybrid[1].Partition != 2 || o.Hybrid[2].Partition != 4 {
		t.Fatalf("hybrid entries %+v", o.Hybrid)
	}
	moved := tb.Clone()
	moved.DiskSize = 100 << 20
	moved.Partitions[1].Start = 50 << 20
	moved.Partitions[2].Start = 80 << 20
	written := writeDisk(t, moved, o)
	judge(t, written, moved)
	m, err := ParseMBR(readFile(t, written)[:512], 0)
	if err != nil {
		t.Fatal(err)
	}
	want := [4]MBREntry{{Type: 0xee, StartLBA: 1, Sectors: 50<<11 - 1}, {Type: 0x83, StartLBA: 50 << 11, Sectors: 16 << 11}, {Type: 0x07, StartLBA: 80 << 11, Sectors: 4 << 11}}
	if m.Entries != want {
		t.Errorf("hybrid MBR entries %+v, want %+v", m.Entries, want)
	}
	gone := moved.Clone()
	gone.Partitions = slices.Delete(gone.Partitions, 2, 3)
	_, err = gone.Layout(o)
	wantErr(t, err, 0, "hybrid MBR entry 3 (type 0x07) mirrors no GPT partition")
}

// GPT refusals name the partition and the reason.
func TestWriteGPTRefused(t *testing.T) {
	tb := mustRead(t, sgdiskGPT(t), 0)
	for _, c := range []struct {
		name   string
		change func(tb *Table)
		index  int
		reason string
	}{
		{"overlap", func(tb *Table) { tb.Partitions[1].Start = tb.Partitions[0].Start + 512 }, 2, "overlap partition 1"},
		{"before the first usable", func(tb *Table) { tb.Partitions[0].Start = 33 * 512 }, 1, "outside the GPT's usable sectors 34-"},
		{"index past the entries", func(tb *Table) { tb.Partitions[3].Index = 129 }, 129, "entries 1-128"},
		{"name too long", func(tb *Table) { tb.Partitions[0].Name = strings.Repeat("é", 37) }, 1, "37 UTF-16 units"},
		{"name very long", func(tb *Table) { tb.Partitions[0].Name = strings.Repeat("x", 1<<20) }, 1, "1048576 bytes"},
		{"NUL in a name", func(tb *Table) { tb.Partitions[0].Name = "a\x00b" }, 1, "without NULs"},
		{"zero type", func(tb *Table) { tb.Partitions[0].Type = "00000000-0000-0000-0000-000000000000" }, 1, "not a GPT type GUID"},
		{"bad GUID", func(tb *Table) { tb.Partitions[0].GUID = "not a guid" }, 1, "not a GUID"},
		{"duplicate GUID", func(tb *Table) { tb.Partitions[2].GUID = tb.Partitions[0].GUID }, 4, "also partition 1's"},
		{"negative start", func(tb *Table) { tb.Partitions[0].Start = -512 }, 1, "do not fit"},
		{"huge size", func(tb *Table) { tb.Partitions[0].Size = 1 << 62 }, 1, "do not fit"},
		{"disk too small", func(tb *Table) { tb.DiskSize = 66 * 512; tb.Partitions = nil }, 0, "too small for a GPT"},
		{"disk smaller than a sector", func(tb *Table) { tb.DiskSize = 511; tb.Partitions = nil }, 0, "smaller than a 512-byte sector"},
		{"extended partition", func(tb *Table) { tb.Extended = &Partition{Index: 3, Start: 40 << 20, Size: 1 << 20, Type: "0x05"} }, 3, "no extended partition"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := tb.Clone()
			c.change(bad)
			_, err := bad.Layout(nil)
			wantErr(t, err, c.index, c.reason)
		})
	}
}

// randomTable is a random valid table: GPT or MBR (primaries, a
// hybrid, an extended container with logicals in any disk order),
// 512- or 4096-byte sectors, disks of a few MiB to a few TiB, and an
// Original with boot code, EBR gaps and (for GPT) a hybrid MBR.
func randomTable(rng *rand.Rand) (*Table, *Original) {
	types := []byte{0x83, 0x07, 0x0c, 0x82, 0x8e, 0xfd, 0x01, 0xa5}
	ss := []int64{512, 4096}[rng.Intn(2)]
	sectors := int64(1) << (12 + rng.Intn(20)) // 2 MiB to 2 TiB of 512-byte sectors
	sectors += rng.Int63n(sectors)
	tb := &Table{SectorSize: ss, DiskSize: sectors * ss}
	o := &Original{SectorSize: ss}
	rng.Read(o.Boot[:])
	// fill puts n partitions in [lo, hi) sectors, each in its own slice
	// of that range, each at least min sectors after its slice's start.
	fill := func(n int, lo, hi, min int64) [][2]int64 {
		var out [][2]int64
		if n == 0 {
			return nil
		}
		slice := (hi - lo) / int64(n)
		for i := 0; i < n && slice > min; i++ {
			s0 := lo + int64(i)*slice
			start := s0 + min + rng.Int63n(slice-min)
			size := 1 + rng.Int63n(s0+slice-start)
			out = append(out, [2]int64{start, size})
		}
		return out
	}
	if rng.Intn(2) == 0 {
		tb.Kind = "gpt"
		var g [16]byte
		rng.Read(g[:])
		tb.DiskID = GUID(g[:])
		o.NumEntries, o.EntrySize = []uint32{128, 4, 200}[rng.Intn(3)], []uint32{128, 256}[rng.Intn(2)]
		if rng.Intn(3) == 0 {
			o.FirstUsable = 1 << 20
		}
		ent := (int64(o.NumEntries)*int64(o.EntrySize) + ss - 1) / ss
		first, last := 2+ent, sectors-2-ent
		if last <= first {
			return randomTable(rng)
		}
		slots := rng.Perm(int(o.NumEntries))
		for i, r := range fill(1+rng.Intn(min(int(o.NumEntries), 8)), first, last+1, 0) {
			rng.Read(g[:])
			typ := GUID(g[:])
			rng.Read(g[:])
			tb.Partitions = append(tb.Partitions, Partition{
				Index: slots[i] + 1, Start: r[0] * ss, Size: r[1] * ss, Type: typ, GUID: GUID(g[:]),
				Name: randomName(rng), Attrs: rng.Uint64(),
			})
		}
		sortByIndex(tb.Partitions)
		if rng.Intn(3) == 0 {
			// A hybrid MBR mirroring what an MBR entry can hold.
			slot := rng.Perm(4)
			o.Hybrid[slot[0]] = HybridEntry{Type: 0xee}
			k := 1
			for _, p := range tb.Partitions {
				if k < 4 && p.End()/ss <= 1<<32 && rng.Intn(2) == 0 {
					o.Hybrid[slot[k]] = HybridEntry{Status: byte(rng.Intn(2)) * 0x80, Type: types[rng.Intn(len(types))], Partition: p.Index}
					k++
				}
			}
		}
		return tb, o
	}
	tb.Kind = "mbr"
	tb.DiskID = fmt.Sprintf("0x%08x", rng.Uint32())
	sectors = min(sectors, 1<<32)
	slots := rng.Perm(4)
	regions := fill(1+rng.Intn(4), 1, sectors, 0)
	mbrPart := func(index int, r [2]int64) Partition {
		return Partition{Index: index, Start: r[0] * ss, Size: r[1] * ss, Type: fmt.Sprintf("0x%02x", types[rng.Intn(len(types))]), Bootable: rng.Intn(3) == 0}
	}
	extAt := -1
	if rng.Intn(3) > 0 {
		extAt = rng.Intn(len(regions))
	}
	for i, r := range regions {
		if i != extAt {
			tb.Partitions = append(tb.Partitions, mbrPart(slots[i]+1, r))
			continue
		}
		tb.Extended = &Partition{Index: slots[i] + 1, Start: r[0] * ss, Size: r[1] * ss, Type: []string{"0x05", "0x0f", "0x85"}[rng.Intn(3)]}
		logicals := fill(rng.Intn(6), r[0], r[0]+r[1], 2)
		order := rng.Perm(len(logicals))
		o.EBRGap = map[int]int64{}
		for k, j := range order {
			tb.Partitions = append(tb.Partitions, mbrPart(5+k, logicals[j]))
			o.EBRGap[5+k] = rng.Int63n(4096) * 512
		}
		o.LinkType = []byte{0x05, 0x0f}[rng.Intn(2)]
	}
	sortByIndex(tb.Partitions)
	return tb, o
}

// randomName is a GPT name of up to 36 UTF-16 units: ASCII, Latin,
// CJK and characters past the BMP, which take two units.
func randomName(rng *rand.Rand) string {
	var b strings.Builder
	units := rng.Intn(37)
	for units > 0 {
		switch rng.Intn(4) {
		case 0:
			b.WriteRune(rune(0x20 + rng.Intn(0x5f)))
		case 1:
			b.WriteRune(rune(0xc0 + rng.Intn(0x100)))
		case 2:
			b.WriteRune(rune(0x4e00 + rng.Intn(0x1000)))
		default:
			if units < 2 {
				continue
			}
			b.WriteRune(rune(0x1f300 + rng.Intn(0x100)))
			units--
		}
		units--
	}
	return b.String()
}

// piecesDisk is a disk of size bytes holding pieces, zeros elsewhere.
func piecesDisk(size int64, pieces []Piece) patchDisk {
	d := patchDisk{size: size}
	for _, p := range pieces {
		d.patches = append(d.patches, patch{p.Off, p.Data})
	}
	return d
}

// Random valid tables are written and read back the same, with their
// structures where the pieces are; what ReadOriginal finds on the
// written disk lays out the same bytes again.
func TestWriteRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(17))
	seen := map[string]int{}
	defer func() {
		// Every shape was tried.
		for _, k := range []string{"gpt", "mbr", "4096", "hybrid", "logicals", "empty extended", "entries 256"} {
			if seen[k] == 0 {
				t.Errorf("no random table was %s: %v", k, seen)
			}
		}
	}()
	for i := range 400 {
		tb, o := randomTable(rng)
		seen[tb.Kind]++
		seen[fmt.Sprint(tb.SectorSize)]++
		if o.Hybrid[0].Type+o.Hybrid[1].Type+o.Hybrid[2].Type+o.Hybrid[3].Type != 0 {
			seen["hybrid"]++
		}
		if o.EntrySize == 256 {
			seen["entries 256"]++
		}
		if tb.Extended != nil && len(o.EBRGap) > 1 {
			seen["logicals"]++
		} else if tb.Extended != nil && len(o.EBRGap) == 0 {
			seen["empty extended"]++
		}
		pieces, err := tb.Layout(o)
		if err != nil {
			t.Fatalf("table %d: %v\n%s", i, err, dump(tb))
		}
		d := piecesDisk(tb.DiskSize, pieces)
		got, err := Read(d, tb.DiskSize, tb.SectorSize)
		if err != nil {
			t.Fatalf("table %d: read back: %v\n%s", i, err, dump(tb))
		}
		sameTable(t, got, tb)
		if t.Failed() {
			t.Fatalf("table %d", i)
		}
		want := spans(pieces)
		if fmt.Sprint(got.Structures) != fmt.Sprint(want) {
			t.Fatalf("table %d: structures %v, pieces %v", i, got.Structures, want)
		}
		o2, err := ReadOriginal(d, got)
		if err != nil {
			t.Fatalf("table %d: ReadOriginal: %v", i, err)
		}
		if !bytes.Equal(o2.Boot[:440], o.Boot[:440]) || !bytes.Equal(o2.Boot[444:], o.Boot[444:]) ||
			tb.Kind == "gpt" && o2.Boot != o.Boot {
			t.Fatalf("table %d: boot code not kept", i)
		}
		for idx, g := range o2.EBRGap {
			if want := o.EBRGap[idx]; idx > 5 && g > max(want+tb.SectorSize-1, tb.SectorSize) {
				t.Errorf("table %d: logical %d's EBR is %d bytes before it, the original's %d", i, idx, g, want)
			}
		}
		again, err := got.Layout(o2)
		if err != nil || !reflect.DeepEqual(again, pieces) {
			t.Fatalf("table %d: laid out again from the written disk: %v", i, err)
		}
	}
}

// A few random tables on small disks, judged by the tools.
func TestWriteRandomTools(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	for judged := 0; judged < 16; {
		tb, o := randomTable(rng)
		// sgdisk 1.0.9 reads only 128-byte entries.
		if tb.SectorSize != 512 || tb.DiskSize > 1<<30 || len(tb.Partitions) == 0 || o.EntrySize > 128 {
			continue
		}
		judged++
		t.Logf("%s, %d partitions, extended %v, hybrid %v", tb.Kind, len(tb.Partitions), tb.Extended != nil, o.Hybrid != [4]HybridEntry{})
		judge(t, writeDisk(t, tb, o), tb)
	}
}

// FuzzWrite reads a fuzzed disk, and writes what it read anew: Layout
// either refuses with a *LayoutError or writes a table that reads back
// the same. The seeds are random valid tables.
func FuzzWrite(f *testing.F) {
	rng := rand.New(rand.NewSource(1))
	for range 30 {
		tb, o := randomTable(rng)
		pieces, err := tb.Layout(o)
		if err != nil {
			f.Fatal(err)
		}
		var enc []byte
		for _, p := range pieces {
			enc = append(enc, encodePiece(p)...)
		}
		f.Add(enc, uint64(tb.DiskSize), false)
	}
	f.Fuzz(func(t *testing.T, enc []byte, size uint64, fixCRC bool) {
		d := decodeDisk(enc, size)
		if fixCRC {
			fixCRCs(&d)
		}
		tb, err := Read(d, d.size, 0)
		if err != nil || tb.Kind == "none" {
			return
		}
		o, err := ReadOriginal(d, tb)
		if err != nil {
			t.Fatalf("ReadOriginal of a disk Read read: %v", err)
		}
		pieces, err := tb.Layout(o)
		if err != nil {
			var le *LayoutError
			if !errors.As(err, &le) {
				t.Fatalf("Layout: %v is not a *LayoutError", err)
			}
			return
		}
		for _, p := range pieces {
			if p.Off < 0 || p.Off%tb.SectorSize != 0 || int64(len(p.Data))%tb.SectorSize != 0 || p.Off+int64(len(p.Data)) > tb.DiskSize {
				t.Fatalf("piece at byte %d of %d bytes on a %d-byte disk of %d-byte sectors", p.Off, len(p.Data), tb.DiskSize, tb.SectorSize)
			}
		}
		got, err := Read(piecesDisk(tb.DiskSize, pieces), tb.DiskSize, tb.SectorSize)
		if err != nil {
			t.Fatalf("the written table: %v", err)
		}
		sameTable(t, got, tb)
	})
}

// encodePiece is encodeDisk's encoding of a piece: one patch per
// 512-byte block that is not all zero.
func encodePiece(p Piece) []byte {
	var enc []byte
	for off := 0; off < len(p.Data); off += 512 {
		for _, rec := range [][]byte{encodeDisk(p.Data[off:min(off+512, len(p.Data))])} {
			if len(rec) == 0 {
				continue
			}
			// Rebase the record's offset onto the disk.
			o := binary.LittleEndian.Uint64(rec) + uint64(p.Off) + uint64(off)
			binary.LittleEndian.PutUint64(rec, o)
			enc = append(enc, rec...)
		}
	}
	return enc
}
