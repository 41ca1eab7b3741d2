package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A damaged primary GPT: the backup is used and the user is told; the
// restored disk carries the table again in both places. Both damaged:
// the source is reported damaged (exit 3).
func TestDamagedGPT(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	sh(t, "cp", "--sparse=always", disk, src)
	b, _ := os.ReadFile(src)
	b[512+24] ^= 0xff // primary header's "my LBA" field: header CRC fails
	os.WriteFile(src, b, 0o644)

	img := filepath.Join(dir, "disk.platter")
	_, errOut, code := run(t, "create", src, img)
	if code != 0 || !strings.Contains(errOut, "primary GPT") || !strings.Contains(errOut, "backup") {
		t.Fatalf("create with a damaged primary GPT: exit %d, %q", code, errOut)
	}
	if j := info(t, img); len(j.Partitions) != 4 {
		t.Errorf("partitions from the backup GPT: %d, want 4", len(j.Partitions))
	}

	b[len(b)-512+24] ^= 0xff // and the backup header
	os.WriteFile(src, b, 0o644)
	_, errOut, code = run(t, "create", "--force", src, img)
	if code != 3 || !strings.Contains(errOut, "GPT") {
		t.Errorf("create with both GPT copies damaged: exit %d, %q", code, errOut)
	}
}
