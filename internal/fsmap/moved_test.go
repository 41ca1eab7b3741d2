package fsmap

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// A partition restored elsewhere on the disk tells its filesystem so:
// FAT and NTFS carry their start in "hidden sectors" (boot code adds it
// to every sector it loads), exFAT in VolumeOffset under a boot-region
// checksum. The filesystems' own tools read the new value and still
// check clean; backups of the boot sector keep in step.
func TestMoved(t *testing.T) {
	const start = 5 << 20 // byte 5 MiB: sector 10240
	for _, c := range []struct {
		fs    string
		mkfs  []string
		check []string
	}{
		{"fat32", []string{"mkfs.fat", "-F", "32", "-h", "63"}, []string{"fsck.fat", "-n"}},
		{"fat16", []string{"mkfs.fat", "-F", "16", "-h", "63"}, []string{"fsck.fat", "-n"}},
		{"ntfs", []string{"mkntfs", "-F", "-Q", "-q", "-p", "63"}, []string{"ntfsfix", "-n"}},
		{"exfat", []string{"mkfs.exfat"}, []string{"fsck.exfat", "-n"}},
	} {
		t.Run(c.fs, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fs.img")
			if err := os.WriteFile(img, nil, 0o600); err != nil || os.Truncate(img, 64<<20) != nil {
				t.Fatal(err)
			}
			tooltest.Run(t, c.mkfs[0], append(c.mkfs[1:], img)...)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			fs, ok := Lookup(c.fs)
			if !ok || fs.Moved == nil {
				t.Fatalf("%s has no Moved", c.fs)
			}
			if err := fs.Moved(f, 64<<20, start); err != nil {
				t.Fatal(err)
			}
			f.Close()
			tooltest.Run(t, c.check[0], append(c.check[1:], img)...)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			switch c.fs {
			case "fat32", "fat16":
				if out := tooltest.Run(t, "minfo", "-i", img, "::"); !strings.Contains(out, "hidden sectors: 10240") {
					t.Errorf("minfo does not show hidden sectors 10240:\n%s", out)
				}
				if c.fs == "fat32" && !bytes.Equal(b[6*512:7*512], b[:512]) {
					t.Error("FAT32's backup boot sector (sector 6) differs from the boot sector")
				}
			case "ntfs":
				total := int64(binary.LittleEndian.Uint64(b[40:]))
				if got := binary.LittleEndian.Uint32(b[28:]); got != 10240 {
					t.Errorf("hidden sectors %d, want 10240", got)
				}
				if bk := b[total*512 : total*512+512]; !bytes.Equal(bk, b[:512]) {
					t.Error("the backup boot sector differs from the boot sector")
				}
			case "exfat":
				if got := binary.LittleEndian.Uint64(b[64:]); got != 10240 {
					t.Errorf("VolumeOffset %d, want 10240", got)
				}
				if !bytes.Equal(b[:12*512], b[12*512:24*512]) {
					t.Error("the backup boot region differs from the main one")
				}
			}
		})
	}
}
