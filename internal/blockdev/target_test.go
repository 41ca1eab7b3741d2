package blockdev

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

// OpenExisting keeps what the file holds, reads it back around the page
// cache, refuses a missing file or another size, and Discard leaves a
// hole that reads as zeros.
func TestOpenExisting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	want := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(want)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(filepath.Join(dir, "missing.img"), 1<<20); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a missing target: %v", err)
	}
	if _, err := OpenExisting(path, 2<<20); err == nil || !strings.Contains(err.Error(), "not the 2097152 bytes") {
		t.Fatalf("another size: %v", err)
	}
	tg, err := OpenExisting(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if tg.Fresh || tg.Created {
		t.Fatal("an existing target is neither fresh nor created")
	}
	if tg.directRead == nil {
		t.Fatalf("%s refuses O_DIRECT reads; this test needs a filesystem that takes them", dir)
	}
	got := block.AlignedBuffer(64 << 10)
	if _, err := tg.ReadAt(got, 128<<10); err != nil || !bytes.Equal(got, want[128<<10:192<<10]) {
		t.Fatalf("read back: %v", err)
	}
	if err := tg.Discard(256<<10, 64<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt(bytes.Repeat([]byte{7}, 4096), 4096); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	copy(want[4096:8192], bytes.Repeat([]byte{7}, 4096))
	clear(want[256<<10 : 320<<10])
	if !bytes.Equal(b, want) {
		t.Fatal("the file does not hold what was written and discarded, and the rest as it was")
	}
}
