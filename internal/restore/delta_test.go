package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

// deltaTarget is a memTarget that reads back, and discards as a file
// punches a hole: the range reads as zeros.
type deltaTarget struct {
	memTarget
	read      atomic.Int64
	mu        sync.Mutex
	discarded []block.Extent
	noDiscard bool
}

func (t *deltaTarget) ReadAt(p []byte, off int64) (int, error) {
	t.read.Add(int64(len(p)))
	return copy(p, t.b[off:]), nil
}

func (t *deltaTarget) Discard(off, n int64) error {
	if t.noDiscard {
		return fmt.Errorf("discard: %w", errors.ErrUnsupported)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.discarded = append(t.discarded, block.Extent{Off: off, Len: n})
	clear(t.b[off : off+n])
	return nil
}

func newDeltaTarget(b []byte) *deltaTarget {
	return &deltaTarget{memTarget: memTarget{b: bytes.Clone(b)}}
}

// usedOf says, for filledImage's disk, whether byte x is in a used block.
func usedOf(maps [2]*block.Map) func(x int64) bool {
	n1 := maps[0].Len()
	return func(x int64) bool {
		m := maps[0]
		if x >= n1 {
			m, x = maps[1], x-n1
		}
		return m.Test(x / m.BlockSize())
	}
}

// Every used byte comes back as the image holds it and every free byte
// stays as the target held it; only the 4 KiB blocks of chunks that
// differ are written, and garbage in free blocks does not make a chunk
// differ: the target is hashed as create hashed the source, free bytes
// as zeros.
func TestDeltaWritesWhatDiffers(t *testing.T) {
	img, src, maps := filledImage(t, "")
	used := usedOf(maps)
	const cs = 64 << 10
	n1 := maps[0].Len()

	// The old state: the source with garbage in every free byte.
	old := bytes.Clone(src)
	rng := rand.New(rand.NewSource(11))
	for x := range old {
		if !used(int64(x)) {
			old[x] = byte(rng.Intn(256))
		}
	}
	// Unchanged used bytes and new garbage in free ones: nothing differs.
	tg := newDeltaTarget(old)
	st, err := Delta(context.Background(), img, tg, DeltaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.b, old) || st.Written != 0 || st.Differed != 0 || tg.written.Load()+tg.zeroed.Load() != 0 {
		t.Fatalf("an unchanged target: %+v, %d written, %d zeroed", st, tg.written.Load(), tg.zeroed.Load())
	}
	if st.Chunks != int64(len(img.Entries())) || st.Bytes != maps[0].UsedBytes()+maps[1].UsedBytes() {
		t.Fatalf("compared %d chunks (%d bytes), the image has %d entries, %d used bytes", st.Chunks, st.Bytes, len(img.Entries()), maps[0].UsedBytes()+maps[1].UsedBytes())
	}

	// Changes: a used byte of partition 1's chunk 0, the zero chunk's
	// used blocks (chunk 2) made non-zero, two bytes 8 KiB apart in
	// chunk 3 (wholly used), partition 2's used blocks.
	changed := bytes.Clone(old)
	changed[100] ^= 1
	changed[2*cs+3*512+7] = 0x55
	changed[3*cs+5000] ^= 0xff
	changed[3*cs+5000+8192] ^= 0xff
	changed[n1+cs+512+1] ^= 1
	tg = newDeltaTarget(changed)
	p := &countProgress{}
	st, err = Delta(context.Background(), img, tg, DeltaOptions{Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	for x := range tg.b {
		if want := old[x]; tg.b[x] != want {
			t.Fatalf("byte %d (used %v): %#x, want %#x", x, used(int64(x)), tg.b[x], want)
		}
	}
	// Chunk 0's run is 10 blocks of 512 bytes: its first 4 KiB block is
	// written; chunk 2's changed byte is zeroed in its 4 KiB block of the
	// run (2.5 KiB from 1.5 KiB in); chunk 3's two 4 KiB blocks; the
	// 1 KiB run of partition 2 (which starts 1000 bytes into a block).
	if st.Differed != 4 || tg.zeroed.Load() != 2560 || tg.written.Load() != 4096+2*4096+1024 {
		t.Fatalf("%+v: %d written, %d zeroed", st, tg.written.Load(), tg.zeroed.Load())
	}
	if st.Written != tg.written.Load()+tg.zeroed.Load() {
		t.Fatalf("reports %d written, wrote %d", st.Written, tg.written.Load()+tg.zeroed.Load())
	}
	if p.total.Load() != st.Bytes || p.done.Load() != st.Bytes {
		t.Fatalf("progress %d of %d, compared %d", p.done.Load(), p.total.Load(), st.Bytes)
	}
	// Only chunks with used blocks were read, and of them little more
	// than the used span (widened to 4 KiB blocks).
	if r := tg.read.Load(); r > 4*cs+(maps[1].Len()-cs) {
		t.Fatalf("read %d bytes of the target", r)
	}
}

// With Trim, every free byte is discarded: the target is then what a
// restore writes onto a new (all-zero) file, byte for byte.
func TestDeltaTrim(t *testing.T) {
	img, src, _ := filledImage(t, "")
	want := make([]byte, len(src))
	if err := Run(context.Background(), img, &memTarget{b: want}, Options{Fresh: true}); err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(src)
	rand.New(rand.NewSource(12)).Read(old[:5000]) // a used run changed, and free bytes after it
	tg := newDeltaTarget(old)
	st, err := Delta(context.Background(), img, tg, DeltaOptions{Trim: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.b, want) {
		t.Fatal("delta with trim differs from a restore onto a new file")
	}
	var free int64
	for _, e := range tg.discarded {
		free += e.Len
	}
	if st.Trimmed != free || free != int64(len(src))-st.Bytes || st.NoDiscard {
		t.Fatalf("trimmed %d (reported %d), free bytes %d", free, st.Trimmed, int64(len(src))-st.Bytes)
	}

	// A target that cannot discard: the delta is done, the free bytes
	// stay, and the report says so.
	tg = newDeltaTarget(old)
	tg.noDiscard = true
	st, err = Delta(context.Background(), img, tg, DeltaOptions{Trim: true})
	if err != nil || !st.NoDiscard || st.Trimmed != 0 {
		t.Fatalf("no discard: %+v, %v", st, err)
	}
	for x := range want {
		if tg.b[x] != want[x] && tg.b[x] != old[x] {
			t.Fatalf("byte %d is neither the image's nor the old", x)
		}
	}

	// Partition 2 alone, at offset 0 of its own target.
	n1 := int64(5*(64<<10) + 1000)
	tg = newDeltaTarget(bytes.Repeat([]byte{0xee}, len(src)-int(n1)))
	if _, err := Delta(context.Background(), img, tg, DeltaOptions{Partition: 2, Trim: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.b, want[n1:]) {
		t.Fatal("partition 2: delta with trim differs from a restore onto a new file")
	}
}

// Trim is refused, before anything is read or written, when an area's
// free bytes are random (an encrypted volume's): zeros would show which
// sectors are in use.
func TestDeltaTrimRandomFill(t *testing.T) {
	img, src, _ := filledImage(t, image.FreeFillRandom)
	if err := CheckTrim(img, 2); err != nil {
		t.Fatalf("partition 2 has no random fill: %v", err)
	}
	tg := newDeltaTarget(make([]byte, len(src)))
	_, err := Delta(context.Background(), img, tg, DeltaOptions{Trim: true})
	if err == nil || !strings.Contains(err.Error(), "free_fill random") {
		t.Fatalf("trim of a random-filled area: %v", err)
	}
	if tg.read.Load()+tg.written.Load()+tg.zeroed.Load() != 0 {
		t.Fatal("the target was touched")
	}
	// Without trim the area's free bytes are left as they are: no fresh
	// random bytes over what is old ciphertext already.
	old := bytes.Repeat([]byte{0xee}, len(src))
	tg = newDeltaTarget(old)
	if _, err := Delta(context.Background(), img, tg, DeltaOptions{}); err != nil {
		t.Fatal(err)
	}
	// Chunk 4 of partition 1 has no used block: it is not touched.
	if !bytes.Equal(tg.b[4*64<<10:5*64<<10], old[:64<<10]) {
		t.Fatal("free bytes were written")
	}
}

// A raw image (no map: every byte counts) onto a target that starts at
// an odd sector: blocks are those of the disk, written where they differ.
func TestDeltaRaw(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(13)).Read(data[:600<<10])
	img := imageOf(t, data)
	old := bytes.Clone(data)
	old[70000] ^= 1      // a data chunk
	old[(800<<10)+3] = 9 // a zero chunk
	old[len(old)-1] = 1  // the last
	tg := newDeltaTarget(old)
	st, err := Delta(context.Background(), img, tg, DeltaOptions{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.b, data) || st.Differed != 3 || st.Written != 3*4096 {
		t.Fatalf("%+v", st)
	}
}

func TestReadUsed(t *testing.T) {
	disk := make([]byte, 64<<10)
	rand.New(rand.NewSource(14)).Read(disk)
	const at = 512 * 3 // a chunk that starts off the 4 KiB grid
	runs := []block.Extent{{Off: 100, Len: 50}, {Off: 9000, Len: 20000}, {Off: 40000, Len: 10}}
	got := block.AlignedBuffer(48 << 10)
	for i := range got {
		got[i] = 0xaa
	}
	if err := readUsed(bytes.NewReader(disk), got, at, runs); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(got))
	for _, r := range runs {
		copy(want[r.Off:r.End()], disk[at+r.Off:at+r.End()])
	}
	if !bytes.Equal(got, want) {
		t.Fatal("readUsed: not the used runs with zeros between")
	}
}

// An image whose chunks hold bytes in free blocks too (another writer's,
// or a live image's chunk whose blocks were freed before the end): no
// chunk hashes as the target's used bytes do, so each is decoded, but
// only used bytes that differ are written.
func TestDeltaUnmaskedImage(t *testing.T) {
	img, src, maps := filledImageOf(t, "", false)
	used := usedOf(maps)
	old := bytes.Clone(src)
	for x := range old {
		if !used(int64(x)) {
			old[x] = 0xee
		}
	}
	old[3*64<<10] ^= 1
	tg := newDeltaTarget(old)
	st, err := Delta(context.Background(), img, tg, DeltaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for x := range tg.b {
		if want := map[bool]byte{true: src[x], false: 0xee}[used(int64(x))]; tg.b[x] != want {
			t.Fatalf("byte %d: %#x, want %#x", x, tg.b[x], want)
		}
	}
	// Every chunk but the zero one (chunk 2: zero on both sides).
	if st.Differed != int64(len(img.Entries()))-1 || st.Written != 4096 {
		t.Fatalf("%+v", st)
	}
}
