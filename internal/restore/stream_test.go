package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// readBack is a memTarget that reads back, as a stream restore needs.
type readBack struct{ memTarget }

func (t *readBack) ReadAt(p []byte, off int64) (int, error) { return copy(p, t.b[off:]), nil }

// A disk with repeated chunks (deduplicated into one frame), zero
// chunks and data in its first and last MiB restores from a stream to
// the same bytes, onto a fresh and onto a dirty target.
func TestStreamRestore(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewSource(7))
	rng.Read(data[:3*cs])
	for k := 10; k < 40; k += 3 { // copies of chunk 1
		copy(data[k*cs:], data[cs:2*cs])
	}
	rng.Read(data[len(data)-2*cs:]) // the end, where a backup GPT is
	copy(data[len(data)-cs:], data[:cs])
	var out bytes.Buffer
	if _, _, err := backup.Run(context.Background(), tooltest.NewMemSource(data), &out,
		backup.Options{ChunkSize: cs, Compression: codec.DefaultSetting}); err != nil {
		t.Fatal(err)
	}
	img := out.Bytes()
	for _, fresh := range []bool{true, false} {
		tg := &readBack{memTarget{b: make([]byte, len(data))}}
		if !fresh {
			rng.Read(tg.b)
		}
		s, err := image.NewStream(bytes.NewReader(img), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Stream(context.Background(), s, tg, StreamOptions{Fresh: fresh})
		if err != nil {
			t.Fatalf("fresh %v: %v", fresh, err)
		}
		r.Close()
		if !bytes.Equal(tg.b, data) {
			for i := range data {
				if tg.b[i] != data[i] {
					t.Fatalf("fresh %v: restored disk differs first at byte %d", fresh, i)
				}
			}
		}
	}
	// A stream cut anywhere is damage, and the target's first and last
	// MiB read as zeros: it does not look like a finished disk.
	for _, cut := range []int{200, len(img) / 3, len(img) / 2, len(img) - 500, len(img) - 97, len(img) - 1} {
		tg := &readBack{memTarget{b: make([]byte, len(data))}}
		rng.Read(tg.b)
		s, err := image.NewStream(bytes.NewReader(img[:cut]), nil)
		if err == nil {
			_, err = Stream(context.Background(), s, tg, StreamOptions{})
		}
		if !errors.Is(err, image.ErrDamaged) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if err == nil || s == nil {
			continue
		}
		if !bytes.Equal(tg.b[:1<<20], make([]byte, 1<<20)) || !bytes.Equal(tg.b[len(data)-1<<20:], make([]byte, 1<<20)) {
			t.Fatalf("cut at %d: the target's first or last MiB is not zero", cut)
		}
	}
}
