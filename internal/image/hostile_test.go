package image_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
	"github.com/zeebo/blake3"
)

func metaJSON(id [16]byte, sourceSize int64, areas ...string) string {
	return tooltest.MetaJSON(id, sourceSize, areas...)
}

func TestHostileImages(t *testing.T) {
	dir := t.TempDir()
	for _, h := range tooltest.HostileImages() {
		name := h.Name
		t.Run(name, func(t *testing.T) {
			f := h.Forge
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			size, err := f.Write(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d bytes on disk", name, size)
			file, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			r, err := image.NewReader(file, size)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				r.Close()
				t.Fatal("a hostile image was opened")
			}
			if !errors.Is(err, image.ErrDamaged) || !strings.Contains(err.Error(), h.Want) {
				t.Errorf("error does not say damaged, or not %q: %v", h.Want, err)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%v after %v, %d MiB allocated", err, took, alloc>>20)
			if alloc > 64<<20 {
				t.Errorf("opening allocated %d MiB", alloc>>20)
			}
			if took > 5*time.Second {
				t.Errorf("opening took %v", took)
			}
		})
	}
}

// A legitimate image whose index is mostly zero entries (a large, empty
// raw disk) compresses its index about 55 times; it must still open.
func TestLargeSparseIndexOpens(t *testing.T) {
	id := [16]byte{9}
	const chunks = 1 << 20
	const cs = 64 << 10
	area := fmt.Sprintf(`{"kind":"partition","index":1,"start":0,"size":%d,"filesystem":"raw","used_bytes":0,"stored_bytes":0}`, int64(chunks)*cs)
	meta := strings.Replace(metaJSON(id, int64(chunks)*cs, area), `"chunk_size":4194304`, fmt.Sprintf(`"chunk_size":%d`, cs), 1)
	zero := make([]byte, cs)
	h := blake3.Sum256(zero)
	f := tooltest.Forge{ID: id, EntryCount: -1, Meta: tooltest.ForgedBlock{Fill: tooltest.Text(meta)},
		Index: tooltest.ForgedBlock{Fill: func(w io.Writer) error {
			var b [64]byte
			for c := uint64(0); c < chunks; c++ {
				binary.LittleEndian.PutUint32(b[4:], uint32(image.FlagZero))
				binary.LittleEndian.PutUint64(b[8:], c)
				binary.LittleEndian.PutUint32(b[28:], cs)
				copy(b[32:], h[:])
				if _, err := w.Write(b[:]); err != nil {
					return err
				}
			}
			return nil
		}}}
	path := filepath.Join(t.TempDir(), "sparse.platter")
	size, err := f.Write(path)
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	r, err := image.NewReader(file, size)
	if err != nil {
		t.Fatalf("a legitimate image (%d bytes, index %d MiB decoded) was refused: %v", size, chunks*64>>20, err)
	}
	defer r.Close()
	if n := len(r.Entries()); n != chunks {
		t.Fatalf("%d entries, want %d", n, chunks)
	}
}

// A legitimate image of a large, nearly empty filesystem has a large map
// of zeros: it opens quickly, and the reader keeps only the used chunks.
func TestLargeEmptyMapOpens(t *testing.T) {
	id := [16]byte{8}
	const size = int64(4) << 40 // 4 TiB in 4 KiB blocks: a 128 MiB map
	const cs = 4 << 20
	area := fmt.Sprintf(`{"kind":"partition","index":1,"start":0,"size":%d,"filesystem":"ext4","block_size":4096,"used_bytes":0,"stored_bytes":0}`, size)
	zero := make([]byte, cs)
	h := blake3.Sum256(zero)
	entry := func(c uint64) []byte {
		b := make([]byte, 64)
		binary.LittleEndian.PutUint32(b[4:], uint32(image.FlagZero))
		binary.LittleEndian.PutUint64(b[8:], c)
		binary.LittleEndian.PutUint32(b[28:], cs)
		copy(b[32:], h[:])
		return b
	}
	bytesPerChunk := cs / 4096 / 8 // 128
	f := tooltest.Forge{ID: id, EntryCount: -1, Meta: tooltest.ForgedBlock{Fill: tooltest.Text(metaJSON(id, size, area))},
		Index: tooltest.Runs(tooltest.ByteRun{Data: append(entry(0), entry(1)...)}),
		Maps: tooltest.Runs(
			tooltest.ByteRun{Byte: 0xff, N: int64(bytesPerChunk)},     // chunk 0: all used
			tooltest.ByteRun{Byte: 0x0f, N: int64(bytesPerChunk / 2)}, // chunk 1: half the first half
			tooltest.ByteRun{Byte: 0, N: size/4096/8 - int64(bytesPerChunk) - int64(bytesPerChunk/2)},
		)}
	path := filepath.Join(t.TempDir(), "empty.platter")
	fsize, err := f.Write(path)
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r, err := image.NewReader(file, fsize)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("a legitimate image was refused: %v", err)
	}
	defer r.Close()
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("opening a 128 MiB map of two used chunks allocated %d MiB", alloc>>20)
	}
	var got []block.Extent
	r.Map(0).Runs(0, size, func(e block.Extent) { got = append(got, e) })
	// Chunk 1: 0x0f in each of 64 bytes = blocks 0-3 of every 8.
	want := []block.Extent{{Off: 0, Len: cs}}
	for i := int64(0); i < int64(bytesPerChunk/2); i++ {
		want = append(want, block.Extent{Off: cs + i*8*4096, Len: 4 * 4096})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("used runs %v..., want %v...", got[:min(3, len(got))], want[:3])
	}
	// Written back (as consolidation copies it), the map is the same.
	var buf strings.Builder
	if _, err := r.Map(0).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.String()
	if int64(len(b)) != size/4096/8 || b[0] != 0xff || b[bytesPerChunk] != 0x0f || b[bytesPerChunk+bytesPerChunk/2] != 0 {
		t.Fatalf("written map: %d bytes, bytes %x %x %x", len(b), b[0], b[bytesPerChunk], b[bytesPerChunk+bytesPerChunk/2])
	}
}
