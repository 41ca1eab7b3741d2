// Package ptable reads MBR (with the extended/logical chain) and GPT
// partition tables. The parsers take []byte and never panic on hostile
// input; Read is the io.ReaderAt front end.
package ptable

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/block"
)

// Table is a disk's partition table.
type Table struct {
	Kind       string // "gpt", "mbr" or "none"
	SectorSize int64  // logical sector size used to interpret the table
	DiskSize   int64  // bytes
	// DiskID is the GPT disk GUID, or the MBR disk signature as "0x%08x".
	DiskID string
	// Partitions are the data partitions sorted by Index; an MBR extended
	// container is not among them.
	Partitions []Partition
	Extended   *Partition // the MBR extended container, if any
	// Structures are the byte ranges after the first partition's start
	// that hold the table itself: the EBR sectors of an MBR extended
	// partition and the backup GPT (entries and header) at the end.
	Structures []block.Extent
	Warnings   []string
}

// Partition is one entry of a table, in bytes.
type Partition struct {
	Index    int    // Linux numbering: MBR 1-4 primaries, 5.. logicals; GPT entry slot + 1
	Start    int64  // bytes from the start of the disk
	Size     int64  // bytes
	Type     string // GPT type GUID (upper case) or MBR type byte as "0x83"
	GUID     string // GPT unique partition GUID
	Name     string // GPT name
	Attrs    uint64 // GPT attribute bits
	Bootable bool   // MBR active flag
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// corrupt reports a damaged table ("mbr" or "gpt") with the byte offset
// on the disk where the damage was found.
func corrupt(what string, off int64, format string, args ...any) error {
	return &block.CorruptError{What: "ptable: " + what, Off: off, Msg: fmt.Sprintf(format, args...)}
}

// Read reads the partition table of a disk of size bytes. sectorSize is
// the logical sector size; 0 means detect it from where a GPT header is
// found (byte 512 or 4096), else 512.
func Read(r io.ReaderAt, size int64, sectorSize int64) (*Table, error) {
	if sectorSize == 0 {
		sectorSize = detectSectorSize(r, size)
	}
	if sectorSize < 512 || sectorSize > 65536 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("ptable: impossible sector size %d", sectorSize)
	}
	t := &Table{Kind: "none", SectorSize: sectorSize, DiskSize: size}
	if size < sectorSize {
		return t, nil
	}
	lba0 := make([]byte, sectorSize)
	if err := readFull(r, lba0, 0); err != nil {
		return nil, fmt.Errorf("ptable: read sector 0: %w", err)
	}
	mbr, ok := ParseMBR(lba0)
	if !ok {
		return t, nil
	}
	if mbr.Protective() {
		return readGPT(r, size, sectorSize, t)
	}
	t.Kind = "mbr"
	t.DiskID = fmt.Sprintf("0x%08x", mbr.Signature)
	if err := readMBR(r, size, sectorSize, mbr, t); err != nil {
		return nil, err
	}
	return t, nil
}

func detectSectorSize(r io.ReaderAt, size int64) int64 {
	for _, ss := range []int64{512, 4096} {
		var sig [8]byte
		if ss+8 <= size && readFull(r, sig[:], ss) == nil && bytes.Equal(sig[:], gptSignature) {
			return ss
		}
	}
	return 512
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}
