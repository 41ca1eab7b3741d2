//go:build linux

package track

// This file is the BPF tracker: a program on block:block_rq_complete sets
// bits in a bitmap that Take swaps out through shared memory. It runs in
// the completion path itself, so unlike the tracefs tracker there is no
// buffer to overrun and nothing to drain: a bit is set before the writer
// learns that its write is done.

import (
	"bufio"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/block"
)

// kernelSector is the unit of the tracepoint's sector and nr_sector
// fields: the kernel counts 512-byte sectors whatever the device's own
// sector size.
const kernelSector = 512

const (
	minGrain  = 4096     // bytes of the device per bit
	maxBitmap = 64 << 20 // bytes; the grain grows to stay within this
)

// Tracker records the byte ranges of a block device written since the
// last Take. Take returns them merged, sorted and relative to the device;
// every write completed before Take was called is included, and an error
// wrapping ErrLost means some may be missing. Close stops tracking.
type Tracker interface {
	Take() ([]block.Extent, error)
	Close() error
}

// Start starts a tracker for the block device at path. kind chooses it:
// "bpf", "tracefs", or "" for BPF if it loads and tracefs otherwise. The
// string returned names the tracker used.
func Start(path, kind string, opts Options) (Tracker, string, error) {
	switch kind {
	case "bpf":
		t, err := StartBPF(path, opts)
		if err != nil {
			return nil, "", err
		}
		return t, "bpf", nil
	case "tracefs":
		t, err := StartTracefs(path, opts)
		if err != nil {
			return nil, "", err
		}
		return t, "tracefs", nil
	case "":
	default:
		return nil, "", fmt.Errorf("track: unknown tracker %q (want bpf or tracefs)", kind)
	}
	// A device neither tracker can watch fails once, not twice.
	if _, _, _, err := locate(path); err != nil {
		return nil, "", err
	}
	b, errBPF := StartBPF(path, opts)
	if errBPF == nil {
		return b, "bpf", nil
	}
	t, err := StartTracefs(path, opts)
	if err != nil {
		return nil, "", fmt.Errorf("%w; and the tracefs fallback: %w", errBPF, err)
	}
	return t, "tracefs", nil
}

// BPF tracks the completed writes to one block device with a BPF program.
type BPF struct {
	size  int64 // bytes of the device
	shift uint  // log2 of the grain, the bytes of the device per bit

	dirty *ebpf.Map // the bitmap, as uint64 words
	lost  *ebpf.Map // one uint64: failures in the program
	prog  *ebpf.Program
	link  link.Link

	mu    sync.Mutex
	mem   []byte   // dirty, mapped
	words []uint64 // mem as words
}

// StartBPF starts tracking writes to the block device at path (a whole
// disk or a partition). Call Close to stop.
//
// Options are unused: the BPF tracker has no buffer to size.
func StartBPF(path string, opts Options) (*BPF, error) {
	disk, start, end, err := locate(path)
	if err != nil {
		return nil, err
	}
	if err := mountTracefs(); err != nil {
		return nil, err
	}
	f, err := rqCompleteFields()
	if err != nil {
		return nil, err
	}
	t := &BPF{size: int64(end-start) * kernelSector}
	t.shift = grainShift(t.size)
	nbits := (t.size + 1<<t.shift - 1) >> t.shift
	nwords := max((nbits+63)/64, 1)
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()

	t.dirty, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "platter_dirty",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(nwords),
		Flags:      unix.BPF_F_MMAPABLE,
	})
	if err != nil {
		return nil, fmt.Errorf("track: create BPF bitmap of %d words for %s: %w", nwords, path, err)
	}
	t.mem, err = unix.Mmap(t.dirty.FD(), 0, int(nwords*8), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("track: map BPF bitmap of %d words: %w", nwords, err)
	}
	t.words = unsafe.Slice((*uint64)(unsafe.Pointer(&t.mem[0])), nwords)
	t.lost, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "platter_lost",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("track: create BPF failure counter: %w", err)
	}

	insns := program(f, disk, start, end, t.shift-uint(bits.TrailingZeros(kernelSector)), t.dirty.FD(), t.lost.FD())
	t.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "platter_track",
		Type:         ebpf.TracePoint,
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("track: load BPF program for %s: %w", path, err)
	}
	t.link, err = link.Tracepoint("block", "block_rq_complete", t.prog, nil)
	if err != nil {
		return nil, fmt.Errorf("track: attach BPF program to block:block_rq_complete: %w", err)
	}
	ok = true
	return t, nil
}

// grainShift chooses the grain for a device of size bytes, as a power of
// two: 4 KiB, or more if the bitmap would exceed 64 MiB (disks over 2 TiB).
func grainShift(size int64) uint {
	shift := uint(bits.TrailingZeros(minGrain))
	for (size+1<<shift-1)>>shift > maxBitmap*8 {
		shift++
	}
	return shift
}

// rqFields are the byte offsets of block_rq_complete's fields in the
// record a tracepoint program gets.
type rqFields struct {
	dev, sector, nrSector, rwbs int16
}

// rqCompleteFields reads the offsets from the event's format file, as
// they move between kernel versions (fields have been added before rwbs).
func rqCompleteFields() (rqFields, error) {
	p := filepath.Join(tracefsRoot, "events", "block", "block_rq_complete", "format")
	fh, err := os.Open(p)
	if err != nil {
		return rqFields{}, fmt.Errorf("track: %w", err)
	}
	defer fh.Close()
	type field struct{ off, size int }
	found := map[string]field{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		// field:sector_t sector;	offset:16;	size:8;	signed:0;
		var name string
		var fd field
		for _, part := range strings.Split(strings.TrimSpace(sc.Text()), ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
			if !ok {
				continue
			}
			switch k {
			case "field":
				w := strings.Fields(v)
				if len(w) > 0 {
					name, _, _ = strings.Cut(w[len(w)-1], "[")
				}
			case "offset":
				fd.off, _ = strconv.Atoi(v)
			case "size":
				fd.size, _ = strconv.Atoi(v)
			}
		}
		if name != "" {
			found[name] = fd
		}
	}
	if err := sc.Err(); err != nil {
		return rqFields{}, fmt.Errorf("track: read %s: %w", p, err)
	}
	// The sizes the program's loads assume; of rwbs it reads the first byte.
	var out rqFields
	for _, w := range []struct {
		name string
		size int
		off  *int16
	}{
		{"dev", 4, &out.dev}, {"sector", 8, &out.sector}, {"nr_sector", 4, &out.nrSector}, {"rwbs", 1, &out.rwbs},
	} {
		fd, ok := found[w.name]
		switch {
		case !ok:
			return rqFields{}, fmt.Errorf("track: %s has no field %s", p, w.name)
		case fd.size < w.size || w.size > 1 && fd.size != w.size:
			return rqFields{}, fmt.Errorf("track: %s: field %s is %d bytes, want %d", p, w.name, fd.size, w.size)
		case fd.off < 8 || fd.off > 4096 || fd.off%w.size != 0:
			// The first 8 bytes (common fields) are out of a program's reach.
			return rqFields{}, fmt.Errorf("track: %s: field %s at unusable offset %d", p, w.name, fd.off)
		}
		*w.off = int16(fd.off)
	}
	return out, nil
}

// program assembles the tracepoint program. For each completed request
// on disk that is not a read and carries data, it clips the request's
// sectors to [start, end), turns them into the bits [lo, hi] of the
// bitmap (one bit per 1<<shift sectors from start), and has setWords OR
// each word they touch, through bpf_loop so a request over the whole disk
// costs one iteration per 64 bits. Anything that goes wrong increments
// the counter in lost.
func program(f rqFields, disk uint32, start, end uint64, shift uint, dirty, lost int) asm.Instructions {
	const (
		ctx   = asm.R6
		count = asm.R7
	)
	// The main function's stack: the bits to set, read by setWords, and
	// the key of the failure counter at -24.
	const hiBit, loBit = -16, -8
	insns := asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Reg(ctx, asm.R1), funcInfo("platter_track", "ctx")),
		asm.LoadMem(asm.R2, ctx, f.dev, asm.Word),
		asm.JNE.Imm32(asm.R2, int32(disk), "out"),
		asm.LoadMem(asm.R2, ctx, f.rwbs, asm.Byte),
		asm.JEq.Imm(asm.R2, 'R', "out"),
		asm.LoadMem(asm.R3, ctx, f.nrSector, asm.Word),
		asm.JEq.Imm(asm.R3, 0, "out"), // a flush
		asm.LoadMem(asm.R2, ctx, f.sector, asm.DWord),
		asm.Add.Reg(asm.R3, asm.R2),
		// [R2, R3) is the request; clip it to the device.
		asm.LoadImm(asm.R4, int64(start), asm.DWord),
		asm.JGE.Reg(asm.R2, asm.R4, "lo_ok"),
		asm.Mov.Reg(asm.R2, asm.R4),
		asm.LoadImm(asm.R5, int64(end), asm.DWord).WithSymbol("lo_ok"),
		asm.JLE.Reg(asm.R3, asm.R5, "hi_ok"),
		asm.Mov.Reg(asm.R3, asm.R5),
		asm.JGE.Reg(asm.R2, asm.R3, "out").WithSymbol("hi_ok"), // another partition
		asm.Sub.Reg(asm.R2, asm.R4),
		asm.Sub.Reg(asm.R3, asm.R4),
		asm.Sub.Imm(asm.R3, 1),
		asm.RSh.Imm(asm.R2, int32(shift)),
		asm.RSh.Imm(asm.R3, int32(shift)),
		asm.StoreMem(asm.RFP, loBit, asm.R2, asm.DWord),
		asm.StoreMem(asm.RFP, hiBit, asm.R3, asm.DWord),
		// Words lo>>6 through hi>>6.
		asm.RSh.Imm(asm.R2, 6),
		asm.RSh.Imm(asm.R3, 6),
		asm.Mov.Reg(count, asm.R3),
		asm.Sub.Reg(count, asm.R2),
		asm.Add.Imm(count, 1),
		asm.Mov.Reg(asm.R1, count),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("set_words"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, hiBit),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		// bpf_loop answers the iterations run, or an error (too many).
		asm.JEq.Reg(asm.R0, count, "out"),
	}
	insns = append(insns, countLost(lost, -24, "out")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)

	// setWords(i, ctx): ORs into word lo>>6 + i the bits of [lo, hi] it
	// holds. ctx points at the main function's hiBit.
	const (
		word = asm.R6
		mask = asm.R7
		lo   = asm.R8
		hi   = asm.R9
	)
	insns = append(insns,
		btf.WithFuncMetadata(asm.LoadMem(hi, asm.R2, 0, asm.DWord), funcInfo("set_words", "index", "ctx")).WithSymbol("set_words"),
		asm.LoadMem(lo, asm.R2, loBit-hiBit, asm.DWord),
		asm.Mov.Reg(word, lo),
		asm.RSh.Imm(word, 6),
		asm.Add.Reg(word, asm.R1),
		asm.Mov.Imm(mask, -1),
		// The first word starts at bit lo&63.
		asm.Mov.Reg(asm.R1, lo),
		asm.RSh.Imm(asm.R1, 6),
		asm.JNE.Reg(word, asm.R1, "not_first"),
		asm.And.Imm(lo, 63),
		asm.LSh.Reg(mask, lo),
		// The last word ends at bit hi&63.
		asm.Mov.Reg(asm.R1, hi).WithSymbol("not_first"),
		asm.RSh.Imm(asm.R1, 6),
		asm.JNE.Reg(word, asm.R1, "not_last"),
		asm.And.Imm(hi, 63),
		asm.Mov.Imm(asm.R1, 63),
		asm.Sub.Reg(asm.R1, hi),
		asm.Mov.Imm(asm.R2, -1),
		asm.RSh.Reg(asm.R2, asm.R1),
		asm.And.Reg(mask, asm.R2),
		// A word past the map is refused by the lookup: counted as lost.
		asm.StoreMem(asm.RFP, -4, word, asm.Word).WithSymbol("not_last"),
		asm.LoadMapPtr(asm.R1, dirty),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "word_missing"),
		atomicOr(asm.R0, mask, 0),
		asm.Mov.Imm(asm.R0, 0), // go on
		asm.Return(),
	)
	missing := countLost(lost, -4, "cb_out")
	missing[0] = missing[0].WithSymbol("word_missing")
	insns = append(insns, missing...)
	return append(insns,
		asm.Mov.Imm(asm.R0, 1).WithSymbol("cb_out"), // stop
		asm.Return(),
	)
}

// countLost adds one to the failure counter in the map lost, using the
// 4 bytes of stack at slot for the key, and goes on at the label done,
// which must follow.
func countLost(lost int, slot int16, done string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, slot, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, lost),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(slot)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, done),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord), // an ADD, which v0.22.0 encodes right
	}
}

// atomicOr emits *(u64 *)(dst + off) |= src, atomically.
//
// cilium/ebpf v0.22.0's asm.OrAtomic.Mem encodes an atomic ADD: Marshal
// takes the immediate, where the kernel reads the atomic operation
// (BPF_OR = 0x40), before it derives it from the OpCode. Setting the
// Constant too gives BPF_OR both with that bug and without it.
func atomicOr(dst, src asm.Register, off int16) asm.Instruction {
	ins := asm.OrAtomic.Mem(dst, src, asm.DWord, off)
	ins.Constant = int64(asm.OrAtomic >> 8)
	return ins
}

// funcInfo is the BTF the kernel needs for each function of a program
// with more than one (here: the bpf_loop callback). Its types matter
// little: static functions are checked against their code, not BTF.
func funcInfo(name string, params ...string) *btf.Func {
	u64 := &btf.Int{Name: "unsigned long long", Size: 8}
	proto := &btf.FuncProto{Return: &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}}
	for _, p := range params {
		var typ btf.Type = &btf.Pointer{Target: &btf.Void{}}
		if p == "index" {
			typ = u64
		}
		proto.Params = append(proto.Params, btf.FuncParam{Name: p, Type: typ})
	}
	return &btf.Func{Name: name, Type: proto, Linkage: btf.StaticFunc}
}

// Take returns the byte ranges of the device written (and completed)
// since the last Take, merged, and forgets them. Ranges are whole grains
// (4 KiB, more on disks over 2 TiB) clipped to the device. Every write
// completed before the call is included: the program sets its bits
// before the writer is told that the write is done. It fails with
// ErrLost if the program failed to record any write since the start.
func (t *BPF) Take() ([]block.Extent, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.words == nil {
		return nil, errors.New("track: Take on a closed BPF tracker")
	}
	var out []block.Extent
	for i := range t.words {
		if atomic.LoadUint64(&t.words[i]) == 0 {
			continue
		}
		w := atomic.SwapUint64(&t.words[i], 0)
		for w != 0 {
			lo := bits.TrailingZeros64(w)
			n := bits.TrailingZeros64(^(w >> lo)) // the run of ones from lo
			w &^= (1<<n - 1) << lo
			off := int64(i*64+lo) << t.shift
			if off >= t.size {
				break // past the device: never set
			}
			end := min(off+int64(n)<<t.shift, t.size)
			if k := len(out); k > 0 && out[k-1].End() == off {
				out[k-1].Len = end - out[k-1].Off
				continue
			}
			out = append(out, block.Extent{Off: off, Len: end - off})
		}
	}
	var n uint64
	if err := t.lost.Lookup(uint32(0), &n); err != nil {
		return nil, fmt.Errorf("track: read BPF failure counter: %w", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("%w: the BPF program failed to record %d requests", ErrLost, n)
	}
	return out, nil
}

// Close stops tracking and releases the program, its maps and memory.
func (t *BPF) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	if t.link != nil {
		if err := t.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("track: detach BPF program: %w", err))
		}
		t.link = nil
	}
	if t.prog != nil {
		if err := t.prog.Close(); err != nil {
			errs = append(errs, fmt.Errorf("track: close BPF program: %w", err))
		}
		t.prog = nil
	}
	if t.mem != nil {
		t.words = nil
		if err := unix.Munmap(t.mem); err != nil {
			errs = append(errs, fmt.Errorf("track: unmap BPF bitmap: %w", err))
		}
		t.mem = nil
	}
	for _, m := range []**ebpf.Map{&t.dirty, &t.lost} {
		if *m == nil {
			continue
		}
		if err := (*m).Close(); err != nil {
			errs = append(errs, fmt.Errorf("track: close BPF map: %w", err))
		}
		*m = nil
	}
	return errors.Join(errs...)
}
