package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// countingSource counts the bytes read from it.
type countingSource struct {
	block.Source
	read atomic.Int64
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	c.read.Add(int64(len(p)))
	return c.Source.ReadAt(p, off)
}

// An incremental told which bytes changed (Options.Changed) is the
// incremental made by reading everything, entry for entry, and reads
// less: on a FAT whose file was deleted (its clusters freed, none of them
// written) and another written, and on a raw area.
func TestChangedIsIncremental(t *testing.T) {
	const cs = 64 << 10
	img := tooltest.MakeFAT(t, 8<<20, 4, 2020, "-F", "16", "-s", "1")
	for i := range 6 {
		big := make([]byte, 300<<10)
		for j := range big {
			big[j] = byte(j*7 + i + j/4096)
		}
		if err := os.WriteFile(img+".big", big, 0o644); err != nil {
			t.Fatal(err)
		}
		tooltest.Run(t, "mcopy", "-i", img, img+".big", fmt.Sprintf("::/BIG%d.BIN", i))
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "mdel", "-i", img, "::/BIG2.BIN") // its clusters freed, not written
	if err := os.WriteFile(img+".new", bytes.Repeat([]byte("new data"), 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	tooltest.Run(t, "mcopy", "-i", img, img+".new", "::/NEW.BIN")
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 2<<20)
	for i := range raw {
		raw[i] = byte(i / cs)
	}
	rawAfter := bytes.Clone(raw)
	rawAfter[5*cs+7] = 99

	for _, c := range []struct {
		name          string
		before, after []byte
	}{{"fat", before, after}, {"raw", raw, rawAfter}} {
		t.Run(c.name, func(t *testing.T) {
			var changed []block.Extent
			for off := 0; off < len(c.after); off += 512 {
				if !bytes.Equal(c.before[off:off+512], c.after[off:off+512]) {
					changed = append(changed, block.Extent{Off: int64(off), Len: 512})
				}
			}
			if len(changed) == 0 {
				t.Fatal("nothing changed")
			}
			var full bytes.Buffer
			if _, _, err := Run(context.Background(), tooltest.NewMemSource(c.before), &full, Options{ChunkSize: cs}); err != nil {
				t.Fatal(err)
			}
			parent, err := image.NewReader(bytes.NewReader(full.Bytes()), int64(full.Len()))
			if err != nil {
				t.Fatal(err)
			}
			incr := func(changed []block.Extent) (*image.Reader, int64) {
				src := &countingSource{Source: tooltest.NewMemSource(c.after)}
				var out bytes.Buffer
				if _, _, err := Run(context.Background(), src, &out, Options{ChunkSize: cs, Parent: parent, Type: "incremental", Changed: changed}); err != nil {
					t.Fatal(err)
				}
				r, err := image.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
				if err != nil {
					t.Fatal(err)
				}
				if err := r.AttachParent(parent); err != nil {
					t.Fatal(err)
				}
				return r, src.read.Load()
			}
			all, readAll := incr(nil)
			some, readSome := incr(changed)
			a, s := all.Entries(), some.Entries()
			if len(a) != len(s) {
				t.Fatalf("%d entries reading everything, %d told what changed", len(a), len(s))
			}
			stored := 0
			for i := range a {
				if a[i].Area != s[i].Area || a[i].Chunk != s[i].Chunk || a[i].Hash != s[i].Hash || a[i].Flags != s[i].Flags || a[i].RawLen != s[i].RawLen {
					t.Errorf("entry %d: %+v reading everything, %+v told what changed", i, a[i], s[i])
				}
				if !s[i].InParent() && !s[i].Zero() {
					stored++
				}
			}
			if stored == 0 {
				t.Error("no chunk stored: the test proves nothing")
			}
			if readSome >= readAll/2 {
				t.Errorf("told what changed, the incremental read %d bytes; reading everything %d", readSome, readAll)
			}
			t.Logf("%d entries, %d stored; read %d bytes instead of %d", len(s), stored, readSome, readAll)
		})
	}
}
