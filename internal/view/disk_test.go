package view

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// imageOf images data (a bare source: one raw area) in chunks of
// chunkSize and returns the image file's bytes.
func imageOf(t *testing.T, data []byte, chunkSize int64) []byte {
	var out bytes.Buffer
	_, _, err := backup.Run(context.Background(), tooltest.NewMemSource(data), &out,
		backup.Options{ChunkSize: chunkSize, Compression: codec.DefaultSetting})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func open(t *testing.T, img []byte) *image.Reader {
	r, err := image.NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A sequential reader gets the data, readahead running beside it.
func TestSequential(t *testing.T) {
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(1)).Read(data[:3<<20]) // the last MiB zeros
	r := open(t, imageOf(t, data, 64<<10))
	defer r.Close()
	d := New(r, 4)
	defer d.Close()
	got, err := io.ReadAll(io.NewSectionReader(d, 0, d.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, err %v; equal %v", len(got), err, bytes.Equal(got, data))
	}
}

// Closing the disk, then the image reader, right after reads that start
// readahead never leaves a readahead decoding with a closed decoder (it
// crashed `ls` once: a nil dereference in the zstd decoder).
func TestCloseWaitsForReadahead(t *testing.T) {
	data := make([]byte, 32<<20)
	rand.New(rand.NewSource(2)).Read(data)
	img := imageOf(t, data, 8<<20)
	buf := make([]byte, 4096)
	for round := 0; round < 10; round++ {
		r := open(t, img)
		d := New(r, 4)
		d.ReadAt(buf, 0)
		d.ReadAt(buf, 8<<20) // sequential: chunks 2 and 3 are decoded ahead
		d.Close()
		n := cached(d)
		r.Close()
		time.Sleep(20 * time.Millisecond)
		if m := cached(d); m != n {
			t.Fatalf("round %d: %d chunks cached when Close returned, %d after", round, n, m)
		}
	}
}

func cached(d *Disk) int {
	d.cache.mu.Lock()
	defer d.cache.mu.Unlock()
	return d.cache.lru.Len()
}

// Readers at random places, in parallel, through a cache of two chunks:
// every chunk pushed out has its buffer decoded into again, and no
// reader ever sees another chunk's bytes in the one it asked for.
func TestParallelReuse(t *testing.T) {
	data := make([]byte, 6<<20)
	rand.New(rand.NewSource(3)).Read(data[:5<<20])
	r := open(t, imageOf(t, data, 64<<10))
	defer r.Close()
	d := New(r, 2)
	defer d.Close()
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewSource(int64(10 + g)))
			buf := make([]byte, 100<<10)
			for range 300 {
				off := rng.Int63n(int64(len(data) - len(buf)))
				n := 1 + rng.Intn(len(buf))
				if _, err := d.ReadAt(buf[:n], off); err != nil {
					done <- err
					return
				}
				if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
					done <- io.ErrUnexpectedEOF
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatalf("a reader got wrong bytes or an error: %v", err)
		}
	}
	// Whether a buffer is spare when the readers stop depends on their
	// timing (each load takes the one its eviction just freed); that
	// loads were given spare buffers does not.
	d.cache.mu.Lock()
	reuse := d.cache.reuse
	d.cache.mu.Unlock()
	if reuse == 0 {
		t.Error("no load was given an evicted chunk's buffer")
	}
}
