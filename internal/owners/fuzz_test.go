package owners

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fuzzFS are the filesystems FuzzClassify walks, by the selector byte.
var fuzzFS = []string{"fat12", "ext4", "ntfs"}

// FuzzClassify walks damaged small filesystems made by mkfs.fat with
// mtools, mkfs.ext4 -d and mkntfs: it must end, never panic, and claim
// no more of a range than the range holds.
func FuzzClassify(f *testing.F) {
	if w := flag.Lookup("test.fuzzworker"); w == nil || w.Value.String() != "true" {
		dir := f.TempDir()
		src := filepath.Join(dir, "src")
		os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755)
		os.WriteFile(filepath.Join(src, "sub", "deeper", "file.txt"), bytes.Repeat([]byte("x"), 3000), 0o644)
		os.WriteFile(filepath.Join(src, "top.bin"), bytes.Repeat([]byte("y"), 9000), 0o644)
		os.Link(filepath.Join(src, "top.bin"), filepath.Join(src, "sub", "link.bin"))
		seed := func(sel byte, p string) {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(sel, bytes.TrimRight(b, "\x00"))
		}
		fat := filepath.Join(dir, "fat.img")
		tooltest.Run(f, "mkfs.fat", "-F", "12", "-C", fat, "256")
		f.Setenv("MTOOLS_SKIP_CHECK", "1")
		tooltest.Run(f, "mcopy", "-s", "-i", fat, filepath.Join(src, "sub"), filepath.Join(src, "top.bin"), "::/")
		seed(0, fat)
		ext := filepath.Join(dir, "ext.img")
		tooltest.Run(f, "mkfs.ext4", "-q", "-F", "-b", "1024", "-N", "32", "-O", "^has_journal,^resize_inode", "-d", src, ext, "256K")
		seed(1, ext)
		ntfs := filepath.Join(dir, "ntfs.img")
		os.WriteFile(ntfs, nil, 0o644)
		os.Truncate(ntfs, 2<<20)
		tooltest.Run(f, "mkntfs", "-q", "-F", "-Q", "-c", "1024", ntfs)
		seed(2, ntfs)
	}
	f.Fuzz(func(t *testing.T, sel byte, b []byte) {
		const size = 2 << 20
		if len(b) > size {
			return
		}
		r := tooltest.NewMemSource(append(b, make([]byte, size-len(b))...))
		var ranges []block.Extent
		for off := int64(0); off < size; off += 64 << 10 {
			ranges = append(ranges, block.Extent{Off: off, Len: 64 << 10})
		}
		hits, err := Classify(r, size, fuzzFS[int(sel)%len(fuzzFS)], nil, ranges)
		if err != nil {
			return
		}
		for _, h := range hits {
			if h.Bytes <= 0 || h.Bytes > h.Range.Len {
				t.Fatalf("%+v", h)
			}
		}
	})
}
