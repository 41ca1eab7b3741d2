package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"sync/atomic"
	"testing"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
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
