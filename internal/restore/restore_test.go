package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
	"github.com/zeebo/blake3"
)

// memTarget records what a restore writes and zeroes.
// Like a file, it takes parallel writes to different ranges.
type memTarget struct {
	b       []byte
	written atomic.Int64
	zeroed  atomic.Int64
}

func (t *memTarget) WriteAt(p []byte, off int64) (int, error) {
	t.written.Add(int64(len(p)))
	return copy(t.b[off:], p), nil
}

func (t *memTarget) Zero(off, n int64) error {
	t.zeroed.Add(n)
	clear(t.b[off : off+n])
	return nil
}

func imageOf(t *testing.T, data []byte) *image.Reader {
	var out bytes.Buffer
	_, _, err := backup.Run(context.Background(), tooltest.NewMemSource(data), &out,
		backup.Options{ChunkSize: 64 << 10, Compression: codec.DefaultSetting})
	if err != nil {
		t.Fatal(err)
	}
	r, err := image.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFreshAndDirtyTargets(t *testing.T) {
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(3)).Read(data[100<<10 : 300<<10])
	copy(data[600<<10:], bytes.Repeat([]byte("text"), 20000))
	img := imageOf(t, data)

	// A fresh (all-zero) target: zero bytes are not written at all.
	fresh := &memTarget{b: make([]byte, len(data))}
	if err := Run(context.Background(), img, fresh, Options{Fresh: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh.b, data) || fresh.written.Load() > 300<<10 {
		t.Fatalf("fresh target: equal %v, %d bytes written", bytes.Equal(fresh.b, data), fresh.written.Load())
	}
	// A target full of other data: zero chunks must be zeroed.
	dirty := &memTarget{b: bytes.Repeat([]byte{0xee}, len(data))}
	if err := Run(context.Background(), img, dirty, Options{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dirty.b, data) || dirty.zeroed.Load() == 0 {
		t.Fatalf("dirty target not restored exactly (zeroed %d)", dirty.zeroed.Load())
	}
}

func TestMissingPartition(t *testing.T) {
	img := imageOf(t, make([]byte, 256<<10))
	var pe *PartitionError
	if err := Run(context.Background(), img, &memTarget{b: make([]byte, 256<<10)}, Options{Partition: 3}); !errors.As(err, &pe) {
		t.Fatalf("restore of partition 3: %v", err)
	}
}

func TestSparseWrite(t *testing.T) {
	b := make([]byte, 5*4096+100)
	b[4096+7] = 1 // block 1
	b[4*4096] = 2 // block 4 and the short tail
	b[5*4096+99] = 3
	tg := &memTarget{b: make([]byte, len(b)+4096)}
	if err := write(tg, b, 4096, true); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tg.b[4096:4096+len(b)], b) || tg.written.Load() != 4096+4096+100 {
		t.Fatalf("sparse write wrote %d bytes", tg.written.Load())
	}
}

// filledImage writes an image of two partitions whose maps leave blocks
// free: partition 1 is marked free_fill (an opened LUKS volume's
// payload), partition 2 is not. Partition 1 has a partly used chunk, a
// zero chunk with used blocks, a wholly used chunk and chunks with no
// entry at all (none of their blocks used), the last one short.
func filledImage(t *testing.T, fill string) (*image.Reader, []byte, [2]*block.Map) {
	return filledImageOf(t, fill, true)
}

// filledImageOf is filledImage; with mask, each chunk's free bytes are
// zero in the image as create makes them, else the chunks hold the
// source's bytes there too.
func filledImageOf(t *testing.T, fill string, mask bool) (*image.Reader, []byte, [2]*block.Map) {
	const cs, bs = 64 << 10, 512
	sizes := [2]int64{5*cs + 1000, 2 * cs}
	src := make([]byte, sizes[0]+sizes[1])
	rand.New(rand.NewSource(5)).Read(src)
	var maps [2]*block.Map
	for i, n := range sizes {
		maps[i], _ = block.NewMap(bs, n)
	}
	maps[0].SetRange(0, 10)          // chunk 0: partly
	maps[0].SetRange(2*cs/bs+3, 5)   // chunk 2: partly, all zero
	maps[0].SetRange(3*cs/bs, cs/bs) // chunk 3: whole
	maps[1].SetRange(cs/bs+1, 2)     // partition 2, chunk 1
	clear(src[2*cs : 3*cs])          // chunk 2 reads as zeros
	var out bytes.Buffer
	meta := &image.Metadata{SourceSize: int64(len(src)), SectorSize: 512, Table: "none", ChunkSize: cs, Areas: []image.Area{
		{Kind: image.KindPartition, Index: 1, Start: 0, Size: sizes[0], Filesystem: "luks2", BlockSize: bs, FreeFill: fill},
		{Kind: image.KindPartition, Index: 2, Start: sizes[0], Size: sizes[1], Filesystem: "ext4", BlockSize: bs},
	}}
	w, err := image.NewWriter(&out, image.Head{ID: image.ID{9}, Created: time.Unix(1700000000, 0), Layout: image.LayoutOf(meta)})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := codec.NewEncoder(codec.DefaultSetting, 1)
	defer enc.Close()
	starts := [2]int64{0, sizes[0]}
	for area, chunks := range [][]uint64{{0, 2, 3}, {1}} {
		for _, k := range chunks {
			c := bytes.Clone(src[starts[area]+int64(k)*cs : starts[area]+int64(k+1)*cs])
			if mask {
				pos := int64(0)
				maps[area].Runs(int64(k)*cs, cs, func(e block.Extent) {
					clear(c[pos : e.Off-int64(k)*cs])
					pos = e.End() - int64(k)*cs
				})
				clear(c[pos:])
			}
			e := image.Entry{Area: uint32(area), Chunk: k, RawLen: cs, Hash: blake3.Sum256(c)}
			if bytes.Equal(c, make([]byte, cs)) {
				e.Flags = image.FlagZero
			} else {
				id, p := enc.Encode(nil, c)
				off, err := w.WriteFrame(&image.Frame{Area: uint32(area), Chunk: k, RawLen: cs, Hash: e.Hash, Codec: id, Payload: p})
				if err != nil {
					t.Fatal(err)
				}
				e.FrameOff, e.Stored = off, uint32(len(p))
			}
			if err := w.AddEntry(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Finish([]image.Bitmap{maps[0], maps[1]}, meta, nil, nil); err != nil {
		t.Fatal(err)
	}
	r, err := image.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return r, src, maps
}

// countProgress adds up what a restore reports.
type countProgress struct{ total, done atomic.Int64 }

func (p *countProgress) Start(n int64) { p.total.Store(n) }
func (p *countProgress) Add(n int64)   { p.done.Add(n) }

func TestFreeFillRandom(t *testing.T) {
	img, src, maps := filledImage(t, image.FreeFillRandom)
	n1 := maps[0].Len()
	restoreOnto := func(b []byte, o Options) []byte {
		t.Helper()
		p := &countProgress{}
		o.Progress = p
		if err := Run(context.Background(), img, &memTarget{b: b}, o); err != nil {
			t.Fatal(err)
		}
		if p.total.Load() != p.done.Load() || p.total.Load() == 0 {
			t.Errorf("progress: %d of %d", p.done.Load(), p.total.Load())
		}
		return b
	}
	check := func(name string, got []byte, base int64, m *block.Map, filled bool, old byte) {
		t.Helper()
		for i := int64(0); i < m.Blocks(); i++ {
			lo, hi := i*m.BlockSize(), min((i+1)*m.BlockSize(), m.Len())
			g, want := got[lo:hi], src[base+lo:base+hi]
			switch {
			case m.Test(i) && !bytes.Equal(g, want):
				t.Fatalf("%s: used block %d not restored", name, i)
			case !m.Test(i) && filled && (bytes.Equal(g, want) || bytes.Count(g, []byte{old}) > len(g)/8):
				t.Fatalf("%s: free block %d is not fresh random bytes: %x...", name, i, g[:16])
			case !m.Test(i) && !filled && !bytes.Equal(g, bytes.Repeat([]byte{old}, len(g))):
				t.Fatalf("%s: free block %d was written", name, i)
			}
		}
	}
	for _, fresh := range []bool{true, false} {
		old := byte(0)
		if !fresh {
			old = 0xee
		}
		a := restoreOnto(bytes.Repeat([]byte{old}, len(src)), Options{Fresh: fresh})
		check("disk", a[:n1], 0, maps[0], true, old)
		check("disk", a[n1:], n1, maps[1], false, old)
		// Every restore draws new bytes.
		b := restoreOnto(bytes.Repeat([]byte{old}, len(src)), Options{Fresh: fresh})
		for i := int64(0); i < n1; i += 512 {
			if !maps[0].Test(i/512) && bytes.Equal(a[i:i+512], b[i:i+512]) {
				t.Fatalf("two restores wrote the same free block at byte %d", i)
			}
		}
		p := restoreOnto(bytes.Repeat([]byte{old}, int(n1)), Options{Fresh: fresh, Partition: 1})
		check("partition 1", p, 0, maps[0], true, old)
		p = restoreOnto(bytes.Repeat([]byte{old}, int(maps[1].Len())), Options{Fresh: fresh, Partition: 2})
		check("partition 2", p, n1, maps[1], false, old)
	}

	// Without free_fill (every image before it), free bytes are left
	// alone as before.
	img, _, _ = filledImage(t, "")
	z := make([]byte, len(src))
	if err := Run(context.Background(), img, &memTarget{b: z}, Options{Fresh: true}); err != nil {
		t.Fatal(err)
	}
	check("no free_fill", z[:n1], 0, maps[0], false, 0)

	// A value this platter does not know is refused, not ignored.
	img, _, _ = filledImage(t, "pattern")
	err := Run(context.Background(), img, &memTarget{b: make([]byte, len(src))}, Options{})
	if err == nil || !strings.Contains(err.Error(), `free_fill "pattern"`) {
		t.Fatalf("unknown free_fill: %v", err)
	}
}
