package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
	"github.com/zeebo/blake3"
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

// A live image as the passes of --snapshot track write it
// (Writer.Replace): chunks stored again in a later pass (their first
// frames superseded, one still named by a chunk deduplicated against it,
// in the middle and in the first MiB), a chunk stored then found zero, a
// frame of a chunk freed since (no entry), and chunks copied with blocks
// the maps, read at the freeze, say are free. From a stream it restores
// to what a restore of the file gives; onto a dirty target, the same but
// for chunks neither stored nor in the first or last MiB, which keep
// what they held.
func TestStreamRestoreLive(t *testing.T) {
	const cs, bs = 64 << 10, 4096
	const size = 64 * cs // chunks 0-15 and 48-63 hold the first and last MiB
	rng := rand.New(rand.NewSource(11))
	content := func() []byte {
		b := make([]byte, cs)
		rng.Read(b)
		return b
	}
	final, _ := block.NewMap(bs, size)
	meta := &image.Metadata{SourceSize: size, SectorSize: 512, Table: "none", ChunkSize: cs,
		Areas:    []image.Area{{Kind: image.KindPartition, Index: 1, Start: 0, Size: size, Filesystem: "ext4", BlockSize: bs}},
		Snapshot: &image.Snapshot{Method: "track", Tracker: "bpf"}}
	var out bytes.Buffer
	w, err := image.NewWriter(&out, image.Head{ID: image.ID{7}, Created: time.Unix(1700000000, 0), Layout: image.LayoutOf(meta)})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := codec.NewEncoder(codec.DefaultSetting, 1)
	defer enc.Close()
	frame := func(k uint64, c []byte) image.Entry {
		t.Helper()
		e := image.Entry{Chunk: k, RawLen: cs, Hash: blake3.Sum256(c)}
		id, p := enc.Encode(nil, c)
		off, err := w.WriteFrame(&image.Frame{Chunk: k, RawLen: cs, Hash: e.Hash, Codec: id, Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		e.FrameOff, e.Stored = off, uint32(len(p))
		return e
	}
	dup := func(k uint64, of image.Entry) image.Entry {
		of.Chunk = k
		return of
	}
	// The first copy. Every block of a chunk copied is used then.
	final.SetBytes(2*cs, 4*bs)        // chunk 2: 4 blocks left used
	final.SetBytes(3*cs, cs)          // chunk 3
	final.SetBytes(5*cs, cs)          // chunk 5
	final.SetBytes(20*cs, cs)         // chunk 20
	final.SetBytes(22*cs, cs)         // chunk 22 (zeros at the end)
	final.SetBytes(25*cs+5*bs, 3*bs)  // chunk 25: 3 blocks left used
	final.SetBytes(30*cs, cs)         // chunk 30
	final.SetBytes(50*cs+15*bs, 1*bs) // chunk 50: its last block
	final.SetBytes(52*cs, cs)         // chunk 52
	first := map[uint64]image.Entry{}
	for _, k := range []uint64{2, 3, 20, 22, 25, 50, 52} {
		first[k] = frame(k, content())
	}
	frame(40, content()) // freed before the freeze: no entry
	first[5], first[30] = dup(5, first[3]), dup(30, first[20])
	for _, k := range []uint64{2, 3, 5, 20, 22, 25, 30, 50, 52} {
		if err := w.AddEntry(first[k]); err != nil {
			t.Fatal(err)
		}
	}
	// A later pass: chunks 3 and 20 written during the copy; 22 zeroed.
	w.Replace(frame(3, content()))
	w.Replace(frame(20, content()))
	w.Replace(image.Entry{Chunk: 22, RawLen: cs, Flags: image.FlagZero, Hash: blake3.Sum256(make([]byte, cs))})
	if err := w.Finish([]image.Bitmap{final}, meta, nil, nil); err != nil {
		t.Fatal(err)
	}
	img := out.Bytes()

	// What a restore of the file gives.
	r, err := image.NewReader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	// Chunks 5 and 30 name the first frames of 3 and 20, superseded.
	superseded := 0
	for k, home := range map[uint64]uint64{5: 3, 30: 20} {
		e, _ := r.Lookup(0, k)
		h, _ := r.Lookup(0, home)
		if e.FrameOff == first[home].FrameOff && h.FrameOff != e.FrameOff {
			superseded++
		}
	}
	want := make([]byte, size)
	if err := Run(context.Background(), r, &memTarget{b: want}, Options{Fresh: true}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if superseded != 2 || bytes.Equal(want[25*cs:26*cs], make([]byte, cs)) {
		t.Fatal("the image is not what the test means")
	}

	for _, fresh := range []bool{true, false} {
		tg := &readBack{memTarget{b: make([]byte, size)}}
		old := make([]byte, size)
		if !fresh {
			rng.Read(tg.b)
			copy(old, tg.b)
		}
		s, err := image.NewStream(bytes.NewReader(img), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Stream(context.Background(), s, tg, StreamOptions{Fresh: fresh, TempDir: t.TempDir()})
		if err != nil {
			t.Fatalf("fresh %v: %v", fresh, err)
		}
		r.Close()
		for k := int64(0); k < size/cs; k++ {
			exp := want[k*cs : (k+1)*cs]
			stored := k < 16 || k >= 48 || k == 40 || final.Any(k*cs, cs) || k == 22
			if !fresh && !stored {
				exp = old[k*cs : (k+1)*cs]
			}
			if got := tg.b[k*cs : (k+1)*cs]; !bytes.Equal(got, exp) {
				t.Fatalf("fresh %v: chunk %d differs from the file restore's", fresh, k)
			}
		}
	}
}

// A frame whose bytes are damaged stops the restore with a ChunkError,
// and its chunk is never written, although frames are checked and
// written in parallel.
func TestStreamDamagedFrame(t *testing.T) {
	const cs = 64 << 10
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(8)).Read(data)
	var out bytes.Buffer
	if _, _, err := backup.Run(context.Background(), tooltest.NewMemSource(data), &out,
		backup.Options{ChunkSize: cs, Compression: codec.Setting{ID: codec.None}}); err != nil {
		t.Fatal(err)
	}
	img := out.Bytes()
	// Chunk 60's frame, found by its bytes; one byte of it flipped.
	at := bytes.Index(img, data[60*cs:61*cs])
	if at < 0 {
		t.Fatal("chunk 60 is not stored as it is")
	}
	img[at+1000] ^= 0x40
	tg := &readBack{memTarget{b: make([]byte, len(data))}}
	s, err := image.NewStream(bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Stream(context.Background(), s, tg, StreamOptions{Fresh: true, Writers: 8})
	var ce *image.ChunkError
	if !errors.As(err, &ce) || !errors.Is(err, image.ErrDamaged) || ce.Entry.Chunk != 60 {
		t.Fatalf("err = %v, want the damaged chunk 60", err)
	}
	if bytes.Equal(tg.b[60*cs+1000-8:60*cs+1000+8], img[at+1000-8:at+1000+8]) {
		t.Fatal("the damaged chunk was written")
	}
}
