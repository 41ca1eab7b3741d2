package backup

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"sync/atomic"
	"testing"

	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// An unknown filesystem is imaged raw: zero chunks get no frame and
// identical chunks share one.
func TestZeroAndDuplicateChunks(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 8*cs+1000)
	rand.New(rand.NewSource(1)).Read(data[:cs])
	copy(data[3*cs:], data[:cs]) // chunk 3 duplicates chunk 0
	copy(data[5*cs:], data[:cs]) // and so does chunk 5
	data[7*cs+10] = 1            // chunk 7: almost all zero, stored
	// chunks 1, 2, 4, 6 and the short last one are zero
	var out bytes.Buffer
	meta, _, err := Run(context.Background(), tooltest.NewMemSource(data), &out, Options{ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Table != "none" || len(meta.Areas) != 1 || meta.Areas[0].Filesystem != "raw" {
		t.Fatalf("metadata %+v", meta)
	}
	r, err := image.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	frames := map[int64]bool{}
	zeros := 0
	for _, e := range r.Entries() {
		if e.Zero() {
			zeros++
			continue
		}
		frames[e.FrameOff] = true
	}
	if len(r.Entries()) != 9 || zeros != 5 || len(frames) != 2 {
		t.Fatalf("%d entries, %d zero, %d frames; want 9, 5, 2", len(r.Entries()), zeros, len(frames))
	}
	if e := r.Entries(); e[0].FrameOff != e[3].FrameOff || e[3].FrameOff != e[5].FrameOff {
		t.Fatal("duplicates do not share a frame")
	}
	if !bytes.Equal(readImage(t, out.Bytes()), data) {
		t.Fatal("chunks do not read back as the source")
	}
}

// tally records what the engine tells its Progress.
type tally struct{ total, done, less atomic.Int64 }

func (p *tally) Start(n int64) { p.total.Store(n) }
func (p *tally) Add(n int64)   { p.done.Add(n) }
func (p *tally) Less(n int64)  { p.less.Add(n) }

// A raw area's total is its size at Start (what is in use is not known
// before it is read); its zero chunks are taken off as they are found,
// so the total ends as the bytes done: the summary's "used" (issue
// 13.7: the bar's total was the raw size until the last moment).
func TestProgressRaw(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 16*cs+1000)
	rand.New(rand.NewSource(2)).Read(data[3*cs : 5*cs])
	data[11*cs+7] = 1
	var p tally
	meta, _, err := Run(context.Background(), tooltest.NewMemSource(data), io.Discard, Options{ChunkSize: cs, Progress: &p})
	if err != nil {
		t.Fatal(err)
	}
	used := meta.Areas[0].UsedBytes
	if used != 3*cs || p.total.Load() != int64(len(data)) || p.done.Load() != used || p.total.Load()-p.less.Load() != used {
		t.Errorf("total %d, done %d, less %d; %d used", p.total.Load(), p.done.Load(), p.less.Load(), used)
	}
}

func TestCancel(t *testing.T) {
	data := make([]byte, 64<<20)
	rand.New(rand.NewSource(2)).Read(data)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if _, _, err := Run(ctx, tooltest.NewMemSource(data), &out, Options{}); err == nil {
		t.Fatal("cancelled run succeeded")
	}
}

func TestCompressionSetting(t *testing.T) {
	text := bytes.Repeat([]byte("compressible "), 1<<20)
	sizes := map[string]int{}
	for _, s := range []codec.Setting{{ID: codec.None}, {ID: codec.Zstd, Level: 3}} {
		var out bytes.Buffer
		if _, _, err := Run(context.Background(), tooltest.NewMemSource(text), &out, Options{Compression: s}); err != nil {
			t.Fatal(err)
		}
		sizes[s.String()] = out.Len()
	}
	if sizes["none"] < len(text) || sizes["zstd:3"] > len(text)/10 {
		t.Fatalf("image sizes %v for %d bytes of text", sizes, len(text))
	}
}
