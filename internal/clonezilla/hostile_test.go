package clonezilla

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/ntfsclone"
	"github.com/platter-dev/platter/internal/vdisk"
)

// A Disk is what the engines read: a source to image, a disk to convert.
var (
	_ block.Source = (*Disk)(nil)
	_ vdisk.Source = (*Disk)(nil)
)

const goodSf = `label: gpt
label-id: 41FCE6F3-A1B9-4C62-8334-E7BDCF48FF55
device: /dev/sda
unit: sectors
first-lba: 34
last-lba: 204766
sector-size: 512

/dev/sda1 : start=        2048, size=       81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=3EE6115D-4346-450F-AFD7-828651A0FFFA, name="EFI system", attrs="RequiredPartition GUID:63"
/dev/sda2 : start=       83968, size=       65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=43BEB2C0-3B9F-4B01-92A5-E5175B4272C6
`

// dir makes an image directory of the files given (name -> content).
func dir(t *testing.T, files map[string]string) string {
	d := t.TempDir()
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(d, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// TestClonezillaHostile opens broken and planted directories: each is one
// error saying what is wrong, never a panic.
func TestClonezillaHostile(t *testing.T) {
	parted := "Disk /dev/sda: 204800s\n"
	cases := []struct {
		name  string
		files map[string]string
		setup func(d string)
		want  string
		is    error
	}{
		{"empty", nil, nil, "no file named disk or parts", ErrNotClonezilla},
		{"saveparts without a table", map[string]string{"parts": "sda1"}, nil, "saveparts: sda1) without its disk's partition table", ErrUnsupported},
		{"saveparts of two disks", map[string]string{"parts": "sda1 sdb1", "sda-pt.sf": goodSf, "sdb-pt.sf": goodSf}, nil, "partitions of 2 disks", ErrUnsupported},
		{"saveparts of a partition not in the table", map[string]string{"parts": "sda7", "sda-pt.sf": goodSf}, nil, "parts names sda7, which is not in sda-pt.sf", nil},
		{"empty parts", map[string]string{"parts": " \n"}, nil, "names no partition", nil},
		{"two disks", map[string]string{"disk": "sda sdb"}, nil, "2 disks", ErrUnsupported},
		{"name walking out", map[string]string{"disk": "../../etc"}, nil, "not one a kernel gives", nil},
		{"no table", map[string]string{"disk": "sda"}, nil, "partition table dump", nil},
		{"garbage table", map[string]string{"disk": "sda", "sda-pt.sf": "hello\x00world"}, nil, "neither a header nor a partition", nil},
		{"unknown label", map[string]string{"disk": "sda", "sda-pt.sf": "label: sun\n"}, nil, "label", nil},
		{"partition past the disk", map[string]string{"disk": "sda", "sda-pt.parted": "Disk /dev/sda: 100000s\n", "sda-pt.sf": goodSf}, nil, "runs past the disk", nil},
		{"huge start", map[string]string{"disk": "sda", "sda-pt.sf": "label: dos\n/dev/sda1 : start=99999999999999999999, size=1, type=83\n"}, nil, "start=", nil},
		{"ntfsclone", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf, "sda2.ntfs-img.aa": "x"}, nil, "not an ntfsclone image", nil},
		{"ntfsclone larger than its partition", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf, "sda2.ntfs-img": ntfsHead(1 << 30)}, nil, "larger than the partition", nil},
		{"lvm", map[string]string{"disk": "sda", "sda-pt.sf": goodSf, "lvm_vg_dev.list": "x"}, nil, "LVM", ErrUnsupported},
		{"missing middle volume", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf,
			"sda2.ext4-ptcl-img.gz.aa": "x", "sda2.ext4-ptcl-img.gz.ac": "x"}, nil, "sda2.ext4-ptcl-img.gz.ab", nil},
		{"not a partclone image", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf,
			"sda2.ext4-ptcl-img.uncomp.aa": strings.Repeat("garbage!", 100)}, nil, "not a partclone image", nil},
		{"symlinked table", map[string]string{"disk": "sda"}, func(d string) {
			os.Symlink("/etc/passwd", filepath.Join(d, "sda-pt.sf"))
		}, "not a regular file", nil},
		{"symlinked volume", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf}, func(d string) {
			os.Symlink("/etc/passwd", filepath.Join(d, "sda2.ext4-ptcl-img.uncomp.aa"))
		}, "not a regular file", nil},
		{"bad swap info", map[string]string{"disk": "sda", "sda-pt.parted": parted, "sda-pt.sf": goodSf, "swappt-sda2.info": `UUID="not-a-uuid"`}, nil, "UUID", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := dir(t, c.files)
			if c.setup != nil {
				c.setup(d)
			}
			disk, err := Open(d, Options{})
			if err == nil {
				disk.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), c.want) || c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("%v; want %q", err, c.want)
			}
			t.Logf("%v", err)
		})
	}
}

// TestClonezillaSfdisk parses a dump's names, attributes and types.
func TestClonezillaSfdisk(t *testing.T) {
	d, err := parseSfdisk([]byte(goodSf), "sda-pt.sf")
	if err != nil {
		t.Fatal(err)
	}
	p := d.Parts[0]
	if p.Name != "EFI system" || p.Attrs != 1|1<<63 || p.Start != 2048*512 || p.Size != 81920*512 || p.Index != 1 {
		t.Fatalf("%+v", p)
	}
	d, err = parseSfdisk([]byte("label: dos\nlabel-id: 0x1234abcd\n/dev/nvme0n1p5 : start=2048, size=100, type=5, bootable\n"), "x")
	if err != nil || !d.Parts[0].Extended || d.Parts[0].Index != 5 || !d.Parts[0].Bootable {
		t.Fatalf("%+v %v", d, err)
	}
}

// FuzzSfdisk parses fuzzed sfdisk dumps.
func FuzzSfdisk(f *testing.F) {
	f.Add([]byte(goodSf))
	f.Add([]byte("label: dos\n/dev/sda5 : start=1, size=2, type=5, bootable\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseSfdisk(b, "fuzz")
		if err != nil {
			return
		}
		for _, p := range d.Parts {
			if p.Start < 0 || p.Size < 0 {
				t.Fatalf("negative partition %+v", p)
			}
		}
	})
}

// ntfsHead is the header of an ntfsclone image of a device of size bytes.
func ntfsHead(size int64) string {
	h := make([]byte, 56)
	copy(h, ntfsclone.Magic)
	h[16], h[17] = 10, 1
	binary.LittleEndian.PutUint32(h[18:], 4096)
	binary.LittleEndian.PutUint64(h[22:], uint64(size))
	binary.LittleEndian.PutUint64(h[30:], uint64(size/4096-1))
	binary.LittleEndian.PutUint32(h[46:], 56)
	return string(h)
}
