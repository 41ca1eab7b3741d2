// Package ptable reads MBR (with the extended/logical chain) and GPT
// partition tables, and writes them anew for another disk.
//
// The parsers (ParseMBR, ParseEBR, ParseGPTHeader, ParseGPTEntries) take
// bytes, treat them as hostile, never panic and never allocate from a
// count read off the disk without bounding it first. Read is the
// io.ReaderAt front end that finds the table, follows the EBR chain and
// falls back to the backup GPT.
//
// Layout and Write put a Table, its partitions moved or resized, on a
// disk of another size or sector size (WithSectorSize), keeping what
// ReadOriginal found on the original disk beyond the Table: boot code,
// the GPT's shape, hybrid MBR entries, where the EBRs sat.
//
// Answers are kept apart as Platter's filesystem detectors keep them: a
// disk with no table (a bare filesystem, a blank disk) is a Table of Kind
// "none" and no error; a table that is there but damaged is a
// *block.CorruptError carrying the byte offset of the damage.
package ptable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

// Table is a disk's partition table.
type Table struct {
	Kind       string // "gpt", "mbr" or "none"
	SectorSize int64  // logical sector size used to interpret the table
	DiskSize   int64  // bytes
	// DiskID is the GPT disk GUID (canonical upper-case 8-4-4-4-12) or
	// the MBR disk signature as "0x%08x".
	DiskID string
	// Partitions are the data partitions sorted by Index; an MBR extended
	// container is not among them.
	Partitions []Partition
	// Extended is the MBR extended container (type 0x05, 0x0f or 0x85),
	// nil if there is none.
	Extended *Partition
	// Structures are the byte ranges that hold the table itself, sorted
	// and disjoint: sector 0, the EBRs of an MBR extended partition, and
	// the header and entry array of each GPT copy. A whole-disk image
	// keeps them.
	Structures []block.Extent
	// Warnings describe damage that was worked around, e.g. a damaged
	// primary GPT replaced by the backup.
	Warnings []string
}

// Partition is one data partition, in bytes.
type Partition struct {
	// Index is the Linux partition number: MBR primaries 1-4 (the slot
	// number), logicals 5, 6, ... in chain order; GPT entry slot + 1.
	Index    int
	Start    int64  // bytes from the start of the disk
	Size     int64  // bytes
	Type     string // GPT type GUID (canonical upper case) or MBR type byte as "0x83"
	GUID     string // GPT unique partition GUID; empty for MBR
	Name     string // GPT name; empty for MBR
	Attrs    uint64 // GPT attribute bits
	Bootable bool   // MBR active flag (status 0x80)
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

const (
	minSectorSize = 512
	maxSectorSize = 64 << 10
)

// Read reads the partition table of a disk of size bytes. sectorSize is
// the logical sector size; 0 means detect: a GPT header signature
// "EFI PART" at byte 512 means 512, at byte 4096 means 4096, otherwise
// 512.
//
// A disk without a table (blank, or a bare filesystem whose boot sector
// also ends in 0x55AA) is Kind "none". A damaged table is an error that
// wraps a *block.CorruptError.
func Read(r io.ReaderAt, size int64, sectorSize int64) (*Table, error) {
	if size < 0 {
		return nil, fmt.Errorf("ptable: negative disk size %d", size)
	}
	if sectorSize == 0 {
		sectorSize = detectSectorSize(r, size)
	}
	if sectorSize < minSectorSize || sectorSize > maxSectorSize || sectorSize&(sectorSize-1) != 0 {
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
	m, err := ParseMBR(lba0, size/sectorSize)
	switch {
	case errors.Is(err, ErrNoMBR):
		if hasGPTSignature(r, size, sectorSize) {
			// As the Linux kernel does: a GPT without a protective MBR
			// is not trusted (sector 0 was rewritten by something else).
			t.Warnings = append(t.Warnings, fmt.Sprintf("GPT header signature at byte %d but no protective MBR; ignoring the GPT", sectorSize))
		}
		return t, nil
	case err != nil:
		return nil, fmt.Errorf("ptable: %w", err)
	}
	if m.Protective() {
		if err := readGPT(r, size, sectorSize, t); err != nil {
			return nil, fmt.Errorf("ptable: %w", err)
		}
		t.Structures = block.MergeExtents(t.Structures)
		return t, nil
	}
	if err := readMBR(r, size, sectorSize, m, t); err != nil {
		return nil, fmt.Errorf("ptable: %w", err)
	}
	if hasGPTSignature(r, size, sectorSize) {
		t.Warnings = append(t.Warnings, fmt.Sprintf("stale GPT header signature at byte %d behind an MBR without an 0xEE entry; using the MBR", sectorSize))
	}
	return t, nil
}

func detectSectorSize(r io.ReaderAt, size int64) int64 {
	for _, ss := range []int64{512, 4096} {
		if hasGPTSignature(r, size, ss) {
			return ss
		}
	}
	return 512
}

func hasGPTSignature(r io.ReaderAt, size, ss int64) bool {
	var sig [8]byte
	return ss+int64(len(sig)) <= size && readFull(r, sig[:], ss) == nil && bytes.Equal(sig[:], gptSignature)
}

// readFull reads exactly len(b) bytes at off; a short read is
// io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at byte %d: %w", len(b), off, err)
}

// corrupt reports a damaged structure of format what ("mbr" or "gpt")
// found at byte off.
func corrupt(what string, off int64, format string, args ...any) error {
	return &block.CorruptError{What: what, Off: off, Msg: fmt.Sprintf(format, args...)}
}

// rebase moves the offset of a *block.CorruptError returned by a []byte
// parser from the start of the parsed bytes to the start of the disk.
func rebase(err error, base int64) error {
	var ce *block.CorruptError
	if errors.As(err, &ce) {
		c := *ce
		c.Off += base
		return &c
	}
	return err
}

// checkOverlap reports the first pair of partitions that share bytes.
func checkOverlap(what string, parts []Partition, entryOff func(Partition) int64) error {
	s := append([]Partition(nil), parts...)
	sort.Slice(s, func(i, j int) bool { return s[i].Start < s[j].Start })
	for i := 1; i < len(s); i++ {
		if s[i].Start < s[i-1].End() {
			return corrupt(what, entryOff(s[i]), "partition %d (bytes %d-%d) overlaps partition %d (bytes %d-%d)",
				s[i].Index, s[i].Start, s[i].End()-1, s[i-1].Index, s[i-1].Start, s[i-1].End()-1)
		}
	}
	return nil
}

func sortByIndex(parts []Partition) {
	sort.Slice(parts, func(i, j int) bool { return parts[i].Index < parts[j].Index })
}
