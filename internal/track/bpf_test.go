//go:build linux

package track

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/platter-dev/platter/internal/block"
)

// atomicOr must OR, not ADD: cilium/ebpf v0.22.0 encodes asm.OrAtomic as
// an atomic add. ORing the same bit twice into 0b0101 leaves 0b0101; two
// adds would give 0b1101.
func TestAtomicOrIsOr(t *testing.T) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(uint32(0), uint64(0b0101), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SocketFilter,
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "missing"),
			asm.Mov.Imm(asm.R1, 0b0100),
			atomicOr(asm.R0, asm.R1, 0),
			atomicOr(asm.R0, asm.R1, 0),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("missing"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	ret, _, err := prog.Test(make([]byte, 14))
	if err != nil || ret != 0 {
		t.Fatalf("run: %d, %v", ret, err)
	}
	var got uint64
	if err := m.Lookup(uint32(0), &got); err != nil {
		t.Fatal(err)
	}
	if got != 0b0101 {
		t.Fatalf("0b0101 ORed twice with 0b0100 = %#b, want 0b101 (0b1101 is two atomic adds)", got)
	}
}

// Writes completed before Take are in its answer, in whole 4 KiB grains;
// reads are not; a second Take starts afresh; Close stops tracking.
func TestBPFSeesWrites(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	tr, err := StartBPF(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	directWrite(t, dev, 1<<20, 64<<10)
	directWrite(t, dev, 1<<20, 4096) // again: its bit is ORed, not added
	directWrite(t, dev, 5<<20, 4096)
	directWrite(t, dev, 5<<20+4096, 4096)   // touches the one before: merged
	directWrite(t, dev, 256<<10-4096, 8192) // across two bitmap words
	directRead(t, dev, 9<<20, 1<<20)
	got, err := tr.Take()
	if err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{{Off: 256<<10 - 4096, Len: 8192}, {Off: 1 << 20, Len: 64 << 10}, {Off: 5 << 20, Len: 8192}}
	if !sameExtents(got, want) {
		t.Fatalf("Take = %v, want %v", got, want)
	}
	if got, err := tr.Take(); err != nil || len(got) != 0 {
		t.Fatalf("second Take = %v, %v; want nothing", got, err)
	}
	directWrite(t, dev, 60<<20+512, 512) // rounded out to its grain
	directWrite(t, dev, 64<<20-512, 512) // the last sector
	want = []block.Extent{{Off: 60 << 20, Len: 4096}, {Off: 64<<20 - 4096, Len: 4096}}
	if got, err := tr.Take(); err != nil || !sameExtents(got, want) {
		t.Fatalf("third Take = %v, %v; want %v", got, err, want)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Take(); err == nil {
		t.Fatal("Take after Close succeeded")
	}
}

// A partition's writes are found on its disk's events and reported
// relative to the partition; writes to the rest of the disk are not.
func TestBPFPartition(t *testing.T) {
	dev, part := loopPartition(t)
	tr, err := StartBPF(part, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	directWrite(t, part, 8192, 4096)        // in the partition
	directWrite(t, dev, 40<<20, 4096)       // on the disk, past the partition
	directWrite(t, dev, 1<<20-4096, 4096)   // on the disk, before it
	directWrite(t, dev, 1<<20+16384, 4096)  // on the disk, inside the partition
	directWrite(t, dev, 17<<20-4096, 8192)  // across the partition's end
	directWrite(t, dev, 1<<20-4096, 8192)   // across its start
	directWrite(t, part, 16<<20-4096, 4096) // its last grain
	got, err := tr.Take()
	if err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{{Off: 0, Len: 4096}, {Off: 8192, Len: 4096}, {Off: 16384, Len: 4096}, {Off: 16<<20 - 4096, Len: 4096}}
	if !sameExtents(got, want) {
		t.Fatalf("Take = %v, want %v", got, want)
	}
}

// Discards and zeroing are writes. A discard of the whole device is one
// request over every word of the bitmap.
func TestBPFDiscard(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	tr, err := StartBPF(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	blkdiscard(t, "-o", fmt.Sprint(8<<20), "-l", fmt.Sprint(4<<20), dev)
	blkdiscard(t, "-z", "-o", fmt.Sprint(20<<20+4096), "-l", "8192", dev)
	got, err := tr.Take()
	if err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{{Off: 8 << 20, Len: 4 << 20}, {Off: 20<<20 + 4096, Len: 8192}}
	if !sameExtents(got, want) {
		t.Fatalf("Take = %v, want %v", got, want)
	}
	blkdiscard(t, dev)
	want = []block.Extent{{Off: 0, Len: 64 << 20}}
	if got, err := tr.Take(); err != nil || !sameExtents(got, want) {
		t.Fatalf("Take after discarding all = %v, %v; want %v", got, err, want)
	}
}

func blkdiscard(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("blkdiscard", args...).CombinedOutput(); err != nil {
		t.Fatalf("blkdiscard %v: %v: %s", args, err, out)
	}
}

// A failure counted by the program makes Take fail, then and after.
func TestBPFLossIsAnError(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	tr, err := StartBPF(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.lost.Update(uint32(0), uint64(1), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := tr.Take(); !errors.Is(err, ErrLost) {
			t.Fatalf("Take %d after a failure: %v, want ErrLost", i, err)
		}
	}
}

func TestGrainShift(t *testing.T) {
	for _, c := range []struct {
		size  int64
		shift uint
	}{
		{0, 12}, {64 << 20, 12}, {2 << 40, 12}, {2<<40 + 1, 13}, {4 << 40, 13}, {1 << 50, 21},
	} {
		if got := grainShift(c.size); got != c.shift {
			t.Errorf("grainShift(%d) = %d, want %d", c.size, got, c.shift)
		}
	}
}

// Start prefers BPF, obeys a choice, and refuses what no tracker can watch.
func TestStart(t *testing.T) {
	dev := loopDevice(t, 64<<20)
	for _, c := range []struct{ kind, want string }{{"", "bpf"}, {"bpf", "bpf"}, {"tracefs", "tracefs"}} {
		tr, got, err := Start(dev, c.kind, Options{})
		if err != nil {
			t.Fatalf("Start(%q): %v", c.kind, err)
		}
		directWrite(t, dev, 1<<20, 4096)
		es, err := tr.Take()
		if err != nil || !sameExtents(es, []block.Extent{{Off: 1 << 20, Len: 4096}}) {
			t.Errorf("Start(%q): Take = %v, %v", c.kind, es, err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("Start(%q) used %q, want %q", c.kind, got, c.want)
		}
	}
	if _, _, err := Start(dev, "kprobe", Options{}); err == nil {
		t.Error("Start with an unknown kind succeeded")
	}
	if _, _, err := Start(os.DevNull, "", Options{}); err == nil {
		t.Errorf("Start(%s) succeeded", os.DevNull)
	}
}
