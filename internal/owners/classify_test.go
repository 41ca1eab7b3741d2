package owners

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// A filesystem without an Owners walk (swap): used bytes are unknown,
// the rest free; without a used map, all unknown; a used map that
// fails leaves its range unknown.
func TestClassifyWithoutOwners(t *testing.T) {
	used := func(off, n int64) ([]block.Extent, error) {
		if off >= 1000 {
			return nil, errors.New("unreadable map")
		}
		return []block.Extent{{Off: 0, Len: 100}}, nil
	}
	ranges := []block.Extent{{Off: 50, Len: 100}, {Off: 2000, Len: 10}}
	got, err := Classify(bytes.NewReader(nil), 4096, "swap", used, ranges)
	if err != nil {
		t.Fatal(err)
	}
	want := []Hit{
		{Range: ranges[0], Kind: KindFree, Bytes: 50},
		{Range: ranges[0], Kind: KindUnknown, Bytes: 50},
		{Range: ranges[1], Kind: KindUnknown, Bytes: 10},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	got, err = Classify(bytes.NewReader(nil), 4096, "no such fs", nil, ranges[:1])
	if err != nil || !reflect.DeepEqual(got, []Hit{{Range: ranges[0], Kind: KindUnknown, Bytes: 100}}) {
		t.Errorf("without a used map: %+v, %v", got, err)
	}
}

func TestClassifyBadInput(t *testing.T) {
	for _, rs := range [][]block.Extent{
		{{Off: 10, Len: 10}, {Off: 15, Len: 10}},
		{{Off: 10, Len: 0}},
		{{Off: -1, Len: 10}},
		{{Off: 1 << 62, Len: 1 << 62}},
	} {
		if _, err := Classify(bytes.NewReader(nil), 4096, "ext4", nil, rs); err == nil || !strings.HasPrefix(err.Error(), "owners: range") {
			t.Errorf("%v: %v", rs, err)
		}
	}
	// Not the filesystem it is said to be: nothing can be said.
	if _, err := Classify(bytes.NewReader(make([]byte, 1<<20)), 1<<20, "ext4", nil, []block.Extent{{Off: 0, Len: 512}}); err == nil || !errors.Is(err, block.ErrNotMine) {
		t.Errorf("zeros as ext4: %v", err)
	}
}

// A FAT32 whose subdirectory's entry points back at the root's
// cluster, and whose two files share a chain: the walk ends, each
// directory once, and the shared clusters name both files.
func TestClassifyHostileFAT(t *testing.T) {
	img, _, info := fatFixture(t, "32", 40960)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	data := fsckNumber(t, info, `Data area starts at byte (\d+)`)
	root := mshowfat(t, img, "/")
	thesis := mshowfat(t, img, "/docs/thesis.odt")
	rootAt := data + (root[0]-2)*512
	entry := func(name string) int64 {
		i := bytes.Index(b[rootAt:rootAt+512], []byte(name))
		if i < 0 || i%32 != 0 {
			t.Fatalf("no entry %q in the root", name)
		}
		return rootAt + int64(i)
	}
	set := func(at int64, c int64) {
		b[at+26], b[at+27], b[at+20], b[at+21] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	}
	set(entry("MANY       "), root[0])   // /many is the root again
	set(entry("FRAG    BIN"), thesis[0]) // /frag.bin cross-linked into thesis.odt's chain
	bad := filepath.Join(t.TempDir(), "bad.img")
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	at := block.Extent{Off: data + (thesis[3]-2)*512, Len: 512}
	check(t, bad, "fat32", []rangeCase{
		{"a cross-linked cluster", at, []Hit{hit(KindFile, 512, "/docs/thesis.odt", "/frag.bin")}},
		{"the root", block.Extent{Off: rootAt, Len: 512}, []Hit{hit(KindDir, 512, "/")}},
	})
	_ = tooltest.Run
}
