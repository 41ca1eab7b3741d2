package ptable_test

import (
	"bytes"
	"fmt"

	"github.com/platter-dev/platter/internal/ptable"
)

// disk is a disk in memory.
type disk []byte

func (d disk) ReadAt(p []byte, off int64) (int, error)  { return bytes.NewReader(d).ReadAt(p, off) }
func (d disk) WriteAt(p []byte, off int64) (int, error) { return copy(d[off:], p), nil }

// A restore onto a larger disk with 4096-byte sectors: the table is read
// from the source, with what it keeps of it; the partitions are moved in
// a copy for the target and the copy is written there.
func ExampleTable_Write() {
	src := make(disk, 16<<20)
	fresh := &ptable.Table{
		Kind: "gpt", SectorSize: 512, DiskSize: int64(len(src)), DiskID: "6F1E5B8C-3A47-4E1D-9C2B-1D2E3F405162",
		Partitions: []ptable.Partition{
			{Index: 1, Start: 1 << 20, Size: 4 << 20, Type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", GUID: "0B8A4D3E-6C21-4F5A-8E9D-7A6B5C4D3E2F", Name: "EFI"},
			{Index: 2, Start: 5 << 20, Size: 10 << 20, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", GUID: "1C9B5E4F-7D32-4A6B-9FAE-8B7C6D5E4F30", Name: "root"},
		},
	}
	if err := fresh.Write(src, nil); err != nil {
		fmt.Println(err)
		return
	}

	t, err := ptable.Read(src, int64(len(src)), 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	orig, err := ptable.ReadOriginal(src, t)
	if err != nil {
		fmt.Println(err)
		return
	}
	target := make(disk, 64<<20)
	moved, err := t.WithSectorSize(4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	moved.DiskSize = int64(len(target))
	root := &moved.Partitions[1]
	root.Size = moved.DiskSize - 1<<20 - root.Start // all but the last MiB
	if err := moved.Write(target, orig); err != nil {
		fmt.Println(err)
		return
	}

	got, err := ptable.Read(target, int64(len(target)), 4096)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range got.Partitions {
		fmt.Printf("%d %q: sectors %d-%d of %d bytes\n", p.Index, p.Name, p.Start/got.SectorSize, p.End()/got.SectorSize-1, got.SectorSize)
	}
	// Output:
	// 1 "EFI": sectors 256-1279 of 4096 bytes
	// 2 "root": sectors 1280-16127 of 4096 bytes
}
