package imageset

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/tooltest"
)

// makeImage images seed's 1 MiB of random bytes (16 chunks of 64 KiB,
// stored as they are) into dir as name, in volumes of split bytes.
func makeImage(t *testing.T, dir, name string, seed int64, split int64) []byte {
	t.Helper()
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(seed)).Read(data)
	return imageOf(t, dir, name, data, split)
}

// makeSmallImage images 4 chunks of 64 KiB that are mostly zeros: an
// image of a few KiB.
func makeSmallImage(t *testing.T, dir, name string, split int64) []byte {
	t.Helper()
	data := make([]byte, 256<<10)
	for k := range 4 {
		rand.New(rand.NewSource(int64(k))).Read(data[k*64<<10 : k*64<<10+300])
	}
	return imageOf(t, dir, name, data, split)
}

func imageOf(t *testing.T, dir, name string, data []byte, split int64) []byte {
	t.Helper()
	ctx := context.Background()
	sink, err := store.Split(store.NewDir(dir)).Create(ctx, name, store.CreateOptions{Split: split})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := backup.ToSink(ctx, tooltest.NewMemSource(data), sink, backup.Options{ChunkSize: 64 << 10, Compression: codec.Setting{ID: codec.Zstd, Level: 1}}); err != nil {
		t.Fatal(err)
	}
	return data
}

// readAll reads every chunk of r back into a disk image.
func readAll(t *testing.T, r *image.Reader) []byte {
	t.Helper()
	out := make([]byte, r.Metadata().SourceSize)
	for _, e := range r.Entries() {
		b, err := r.ReadChunk(e, nil)
		if err != nil {
			t.Fatal(err)
		}
		copy(out[int64(e.Chunk)*r.Metadata().ChunkSize:], b)
	}
	return out
}

// A split image reads as the same image in one file, whatever the volume
// size: even volumes smaller than the 64-byte header or the 96-byte
// footer, so that frames, the index and the footer span volumes.
func TestOpenSplit(t *testing.T) {
	ctx := context.Background()
	for _, split := range []int64{50, 1000, 100 << 10, 1 << 30} {
		dir := t.TempDir()
		var want []byte
		if split < 100<<10 {
			want = makeSmallImage(t, dir, "s.platter", split)
		} else {
			want = makeImage(t, dir, "s.platter", 1, split)
		}
		o, r, err := Open(ctx, store.Split(store.NewDir(dir)), "s.platter", nil)
		if err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		if bad, err := r.Verify(ctx, runtime.GOMAXPROCS(0), nil); err != nil || len(bad) > 0 {
			t.Errorf("split %d: verify: %v %v", split, err, bad)
		}
		if !bytes.Equal(readAll(t, r), want) {
			t.Errorf("split %d: other bytes", split)
		}
		if n := len(store.Volumes(o)); split < 1<<20 && (n < 2 || int64(n) != (o.Size()+split-1)/split) {
			t.Errorf("split %d: %d volumes for %d bytes", split, n, o.Size())
		}
		r.Close()
		o.Close()
	}
}

// What sizes alone cannot show is found by the image's own checks, and
// named: the volume, and exit code 3 (image.ErrDamaged, never
// ErrNotImage, which is a usage mistake).
func TestOpenSplitDamage(t *testing.T) {
	ctx := context.Background()
	const split = 100 << 10
	vol := func(dir string, k int) string { return filepath.Join(dir, store.VolumeName("a.platter", k)) }
	swap := func(a, b string) {
		os.Rename(a, a+".tmp")
		os.Rename(b, a)
		os.Rename(a+".tmp", b)
	}
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, dir, other string, last int)
		volume func(dir string, last int) string
		msg    string
	}{
		{"foreign middle volume", func(t *testing.T, dir, other string, last int) {
			os.Rename(filepath.Join(other, "b.platter.003"), vol(dir, 3))
		}, func(dir string, last int) string { return vol(dir, 3) }, "does not hold this image's bytes"},
		{"two volumes swapped", func(t *testing.T, dir, other string, last int) {
			swap(vol(dir, 4), vol(dir, 5))
		}, func(dir string, last int) string { return vol(dir, 4) }, "volumes were renamed"},
		{"last volume missing", func(t *testing.T, dir, other string, last int) {
			os.Remove(vol(dir, last))
		}, func(dir string, last int) string { return vol(dir, last-1) }, "does not end the image"},
		{"last volume truncated", func(t *testing.T, dir, other string, last int) {
			st, _ := os.Stat(vol(dir, last))
			os.Truncate(vol(dir, last), st.Size()-1)
		}, func(dir string, last int) string { return vol(dir, last) }, "does not end the image"},
		{"foreign first volume", func(t *testing.T, dir, other string, last int) {
			os.Rename(filepath.Join(other, "b.platter"), vol(dir, 1))
		}, func(dir string, last int) string { return vol(dir, last) }, "of another image"},
		{"first two swapped", func(t *testing.T, dir, other string, last int) {
			swap(vol(dir, 1), vol(dir, 2))
		}, func(dir string, last int) string { return vol(dir, 1) }, "does not start with a Platter header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, other := t.TempDir(), t.TempDir()
			makeImage(t, dir, "a.platter", 1, split)
			makeImage(t, other, "b.platter", 2, split)
			ents, _ := os.ReadDir(dir)
			last := len(ents)
			if last < 6 {
				t.Fatalf("only %d volumes", last)
			}
			c.damage(t, dir, other, last)
			_, _, err := Open(ctx, store.Split(store.NewDir(dir)), "a.platter", nil)
			var ve *store.VolumeError
			if !errors.As(err, &ve) || ve.Volume != c.volume(dir, last) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Open: %v\nwant a VolumeError naming %s, saying %q", err, c.volume(dir, last), c.msg)
			}
			if !errors.Is(err, image.ErrDamaged) || errors.Is(err, image.ErrNotImage) {
				t.Errorf("Open: %v is not damage (exit 3)", err)
			}
		})
	}
}

// One damaged chunk in a volume is damage to that chunk, not a foreign
// volume: the image still opens, and the chunk alone fails.
func TestOpenSplitDamagedChunk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	makeImage(t, dir, "a.platter", 1, 100<<10)
	p := store.Split(store.NewDir(dir))
	o, r, err := Open(ctx, p, "a.platter", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first frame that starts in volume 3.
	v := store.Volumes(o)[2]
	var hit image.Entry
	for _, e := range r.Entries() {
		if e.FrameOff >= v.Off && e.FrameOff < v.Off+v.Size() && (hit.FrameOff == 0 || e.FrameOff < hit.FrameOff) {
			hit = e
		}
	}
	r.Close()
	o.Close()
	if hit.FrameOff == 0 {
		t.Fatal("no frame starts in volume 3")
	}
	f, err := os.OpenFile(filepath.Join(dir, "a.platter.003"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xfe}, hit.FrameOff-v.Off+100) // in its payload
	f.Close()
	o, r, err = Open(ctx, p, "a.platter", nil)
	if err != nil {
		t.Fatalf("one damaged chunk: %v", err)
	}
	defer o.Close()
	defer r.Close()
	if bad, err := r.Verify(ctx, 2, nil); err != nil || len(bad) != 1 {
		t.Errorf("verify: %v, %d bad chunks; want 1", err, len(bad))
	}
}

// Read lists a split image once, with the size of all its volumes.
func TestReadSplit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	makeImage(t, dir, "a.platter", 1, 100<<10)
	makeImage(t, dir, "b.platter", 2, 0)
	d, err := Read(ctx, store.Split(store.NewDir(dir)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Damaged) != 0 || len(d.Sets) != 1 || len(d.Sets[0].Images) != 2 {
		t.Fatalf("sets %+v, damaged %+v", d.Sets, d.Damaged)
	}
	for _, im := range d.Sets[0].Images {
		var size int64
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), im.Name) {
				fi, _ := e.Info()
				size += fi.Size()
			}
		}
		if im.Size != size || im.Path != filepath.Join(dir, im.Name) || im.Problem != nil {
			t.Errorf("%s: size %d (files %d), path %s, problem %v", im.Name, im.Size, size, im.Path, im.Problem)
		}
	}
	// A split image whose volumes do not fit is damaged, with its id.
	os.Remove(filepath.Join(dir, "a.platter.003"))
	d, err = Read(ctx, store.Split(store.NewDir(dir)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Damaged) != 1 || d.Damaged[0].ID == "" || !strings.Contains(d.Damaged[0].Err.Error(), "a.platter.003") {
		t.Errorf("damaged %+v", d.Damaged)
	}
}
