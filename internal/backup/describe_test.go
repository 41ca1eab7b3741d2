package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// Describe says of a disk what Run's image says of it: the same areas
// (partitions with their filesystems, the gaps kept) and, for each, the
// same used bytes as the image's map (which restore --layout copies). The disk: a GPT made by sgdisk
// with an ext4 made by mke2fs at the partition's offset, holding files,
// and a partition holding nothing Platter knows.
func TestDescribeIsRun(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil || os.Truncate(disk, 64<<20) != nil {
		t.Fatal("make the disk file")
	}
	tooltest.Run(t, "sgdisk", "-n", "1:1M:+40M", "-c", "1:root", "-n", "2:0:0", disk)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	os.WriteFile(filepath.Join(tree, "a"), bytes.Repeat([]byte("a"), 3<<20), 0o644)
	os.WriteFile(filepath.Join(tree, "d", "b"), []byte("b"), 0o644)
	tooltest.Run(t, "mke2fs", "-q", "-t", "ext4", "-F", "-d", tree, "-E", "offset=1048576", disk, "40M")

	src, err := blockdev.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	d, err := Describe(src, fsmap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	meta, _, err := Run(context.Background(), src, &out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.NewReader(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != meta.SourceSize || d.SectorSize != meta.SectorSize || d.Table != meta.Table || len(d.Areas) != len(meta.Areas) {
		t.Fatalf("Describe: %d bytes, %d-byte sectors, %s, %d areas; the image: %d, %d, %s, %d",
			d.Size, d.SectorSize, d.Table, len(d.Areas), meta.SourceSize, meta.SectorSize, meta.Table, len(meta.Areas))
	}
	found := false
	for i, a := range d.Areas {
		m := meta.Areas[i]
		// (Run counts a raw area's bytes as it copies them.)
		if a.Kind != m.Kind || a.Index != m.Index || a.Start != m.Start || a.Size != m.Size || a.Filesystem != m.Filesystem || d.Used[i] != nil && a.UsedBytes != m.UsedBytes {
			t.Errorf("area %d: Describe %+v, the image %+v", i, a, m)
		}
		found = found || a.Filesystem == "ext4"
		im := img.Map(i)
		if (d.Used[i] == nil) != (im == nil) {
			t.Errorf("%s: a map in Describe %v, in the image %v", a.Label(), d.Used[i] != nil, im != nil)
			continue
		}
		if im == nil {
			continue
		}
		var got, want []block.Extent
		if err := d.Used[i].Runs(0, a.Size, func(e block.Extent) { got = append(got, e) }); err != nil {
			t.Fatal(err)
		}
		im.Runs(0, a.Size, func(e block.Extent) { want = append(want, e) })
		if !slices.Equal(block.MergeExtents(got), block.MergeExtents(want)) {
			t.Errorf("%s: Describe's used runs are not the image's", a.Label())
		}
	}
	if !found {
		t.Errorf("no ext4 found: %+v", d.Areas)
	}
}
