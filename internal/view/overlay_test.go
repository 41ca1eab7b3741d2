package view

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

type memDevice []byte

func (m memDevice) ReadAt(p []byte, off int64) (int, error) { return copy(p, m[off:]), nil }
func (m memDevice) Size() int64                             { return int64(len(m)) }

// Written lists exactly the blocks written, joined into runs and clipped
// to the range asked; the base is never written; a reopened overlay knows
// its blocks again.
func TestOverlayWritten(t *testing.T) {
	base := memDevice(bytes.Repeat([]byte{7}, 64<<10))
	orig := bytes.Clone(base)
	path := filepath.Join(t.TempDir(), "ovl")
	o, err := OpenOverlay(path, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []block.Extent{{Off: 100, Len: 10}, {Off: 4096, Len: 4096}, {Off: 5 * 4096, Len: 2*4096 + 1}} {
		if _, err := o.WriteAt(make([]byte, w.Len), w.Off); err != nil {
			t.Fatal(err)
		}
	}
	want := []block.Extent{{Off: 0, Len: 2 * 4096}, {Off: 5 * 4096, Len: 3 * 4096}}
	if got := o.Written(0, base.Size()); !reflect.DeepEqual(got, want) {
		t.Errorf("Written = %v, want %v", got, want)
	}
	if got, want := o.Written(4096+10, 6*4096), []block.Extent{{Off: 4096 + 10, Len: 4096 - 10}, {Off: 5 * 4096, Len: 2*4096 + 10}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Written (clipped) = %v, want %v", got, want)
	}
	if !bytes.Equal(base, orig) {
		t.Error("the base was written")
	}
	o.Close()
	o, err = OpenOverlay(path, base)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if got := o.Written(0, base.Size()); !reflect.DeepEqual(got, want) {
		t.Errorf("reopened: Written = %v, want %v", got, want)
	}
}
