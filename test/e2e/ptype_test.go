package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// A partition is named by what it holds, not by its type: a GPT entry
// typed "Linux swap" that holds ext4 is imaged as ext4 (by its used
// blocks), with a note saying the type says otherwise; a "Linux
// filesystem" entry promises nothing particular, so swap there gets no
// note.
func TestPartitionTypeSaysOtherwise(t *testing.T) {
	dir := t.TempDir()
	disk := sparseFile(t, filepath.Join(dir, "disk.img"), 100<<20)
	sh(t, "sgdisk", "-n", "1:1M:+64M", "-t", "1:8200", "-n", "2:0:+16M", "-t", "2:8300", disk)
	parts := sfdiskParts(t, disk)
	put := func(n int, mkfs ...string) {
		p := trustFile(t, parts[n].size)
		sh(t, mkfs[0], append(mkfs[1:], p)...)
		sh(t, "dd", "if="+p, "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+itoa(parts[n].start), "conv=notrunc", "status=none")
	}
	put(1, "mkfs.ext4", "-q", "-F")
	put(2, "mkswap")

	img := filepath.Join(dir, "disk.platter")
	_, stderr, code := run(t, "create", "--progress", "none", disk, img)
	const want = "partition 1: its type says Linux swap but it holds ext4; imaged as ext4"
	if code != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("create: exit %d, want a note %q:\n%s", code, want, stderr)
	}
	j := idInfoOf(t, img)
	for _, p := range j.Partitions {
		switch {
		case p.Index == 1 && (p.Filesystem != "ext4" || p.Note != want || p.UsedBytes >= p.Size/2):
			t.Errorf("partition 1: %s, %d of %d bytes used, note %q; want ext4 by its used blocks, noted", p.Filesystem, p.UsedBytes, p.Size, p.Note)
		case p.Index == 2 && (p.Filesystem != "swap" || p.Note != ""):
			t.Errorf("partition 2: %s, note %q; want swap, no note", p.Filesystem, p.Note)
		}
	}
	if text := ok(t, "info", img); !strings.Contains(text, want) {
		t.Errorf("info does not show the note:\n%s", text)
	}
}
