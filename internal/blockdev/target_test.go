package blockdev

import (
	"bytes"
	"errors"
	"fmt"
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

// Under /dev only a block device is a target: a mistyped disk name made
// a regular file there, as large as the disk, and the restore said OK.
func TestTargetUnderDev(t *testing.T) {
	missing := fmt.Sprintf("/dev/platter-test-missing-%d", os.Getpid())
	if _, _, _, err := StatTarget(missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("StatTarget(%s): %v, want it refused as missing", missing, err)
	}
	if tg, err := OpenTarget(missing, 1<<20); err == nil {
		tg.Close()
		t.Errorf("OpenTarget(%s) made it", missing)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		os.Remove(missing)
		t.Errorf("%s was created: %v", missing, err)
	}
	if _, _, _, err := StatTarget("/dev/null"); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("StatTarget(/dev/null): %v, want it refused", err)
	}
	// Outside /dev a missing file is a new target, as ever.
	if exists, _, _, err := StatTarget(filepath.Join(t.TempDir(), "new.img")); exists || err != nil {
		t.Errorf("a new file outside /dev: exists %v, %v", exists, err)
	}
}
