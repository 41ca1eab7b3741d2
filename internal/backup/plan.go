package backup

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
)

// area is one region of the source to image, with its allocation map
// (nil: every byte counts, zero chunks are recorded as zero).
type area struct {
	meta image.Area
	used *block.Usage
}

// layout is what create will copy.
type layout struct {
	table    *ptable.Table
	areas    []area
	warnings []string
	// notImaged are the partitions of the table left out (--partitions).
	notImaged []int
}

// UsageError reports a request that cannot be satisfied as given (a bad
// flag value); the CLI exits 2 for it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// planLayout reads the partition table and each selected partition's
// allocation map. Every byte outside the data partitions (table sectors,
// boot code, the boot-loader gap, EBRs, the GPT backup) is kept as a gap
// area; partitions not selected are left out entirely. With all (sector
// by sector), no map is used and every byte outside the partitions is
// kept.
func planLayout(src block.Source, only []int, all bool, detect fsmap.Options) (*layout, error) {
	size := src.Size()
	t, err := ptable.Read(src, size, src.SectorSize())
	optical := Optical(src, t, err)
	if optical {
		// The disk is the optical filesystem, the table (if any) inside
		// it: one area, kept whole.
		ss := src.SectorSize()
		if err == nil && t.SectorSize > 0 {
			ss = t.SectorSize
		}
		if ss <= 0 {
			ss = 512
		}
		t, err, all = &ptable.Table{Kind: "none", SectorSize: ss, DiskSize: size}, nil, true
	}
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	l := &layout{table: t, warnings: slices.Clone(t.Warnings)}
	parts := t.Partitions
	if t.Kind == "none" {
		parts = []ptable.Partition{{Index: 1, Start: 0, Size: size}}
	}
	if err := checkSelection(parts, only); err != nil {
		return nil, err
	}
	for _, p := range parts {
		if p.Start < 0 || p.Size <= 0 || p.Start >= size {
			return nil, &block.CorruptError{What: "partition table", Off: 0, Msg: fmt.Sprintf("partition %d (start %d, %d bytes) lies outside the %d-byte disk", p.Index, p.Start, p.Size, size)}
		}
		if p.Start+p.Size > size {
			l.warnings = append(l.warnings, fmt.Sprintf("partition %d ends %d bytes past the end of the disk; imaging the part that exists", p.Index, p.Start+p.Size-size))
			p.Size = size - p.Start
		}
		if len(only) > 0 && !slices.Contains(only, p.Index) {
			l.notImaged = append(l.notImaged, p.Index)
			continue
		}
		a, err := planPartition(src, p, all, detect)
		if err != nil {
			return nil, err
		}
		l.areas = append(l.areas, a)
	}
	if t.Kind != "none" {
		l.areas = append(l.areas, gaps(t, size, all)...)
	}
	sort.SliceStable(l.areas, func(i, j int) bool { return l.areas[i].meta.Start < l.areas[j].meta.Start })
	return l, nil
}

// Optical says whether the disk src is an optical filesystem (ISO 9660,
// UDF) from its byte 0, whatever partition table (t, or the error of
// reading it) it also carries: a disc (2048-byte sectors), a bare .iso,
// or a hybrid ISO whose MBR or GPT partitions lie inside the volume (as
// xorriso -isohybrid-gpt-basdat and grub-mkrescue make them). An
// optical filesystem is written whole, so such a disk is imaged whole,
// byte for byte, as one area named by the filesystem. A table with a
// partition past the volume's end is a disk repartitioned over an old
// image: its table wins.
func Optical(src block.Source, t *ptable.Table, tableErr error) bool {
	size := src.Size()
	u, err := fsmap.DetectOptical(src, size)
	if err != nil || u == nil {
		return false
	}
	if tableErr != nil || t == nil || t.Kind == "none" || src.SectorSize() == 2048 {
		return true
	}
	used, err := u.UsedBytes()
	if err != nil {
		return false
	}
	for _, p := range t.Partitions {
		if p.End() > used {
			return false
		}
	}
	return true
}

func checkSelection(parts []ptable.Partition, only []int) error {
	var have []string
	for _, p := range parts {
		have = append(have, strconv.Itoa(p.Index))
	}
	for _, n := range only {
		if !slices.ContainsFunc(parts, func(p ptable.Partition) bool { return p.Index == n }) {
			return &UsageError{Msg: fmt.Sprintf("no partition %d on this disk (it has: %s)", n, strings.Join(have, ", "))}
		}
	}
	return nil
}

// planPartition reads a partition's filesystem and allocation map. What
// makes the map less than the filesystem's own word (damage, a journal to
// replay, a filesystem not read at all) is the area's note; the image's
// warnings are made of the final notes (backup.go), since a live image
// reads the maps again at the freeze.
func planPartition(src block.Source, p ptable.Partition, all bool, detect fsmap.Options) (area, error) {
	a := area{meta: image.Area{
		Kind: image.KindPartition, Index: p.Index, Start: p.Start, Size: p.Size,
		Type: p.Type, GUID: p.GUID, Name: p.Name, Attrs: p.Attrs, Bootable: p.Bootable,
		Filesystem: "raw",
	}}
	u, err := fsmap.DetectWith(io.NewSectionReader(src, p.Start, p.Size), p.Size, detect)
	if err != nil {
		note := fmt.Sprintf("partition %d: %v; copying every non-zero block", p.Index, err)
		a.meta.Note = note
		return a, nil
	}
	if u == nil {
		return a, nil
	}
	used, err := u.UsedBytes()
	if err != nil {
		// The bitmap could not be read (a damaged block, an I/O error):
		// copy the partition raw rather than trust part of a map.
		note := fmt.Sprintf("partition %d: %s allocation map unreadable (%v); copying every non-zero block", p.Index, u.FS, err)
		a.meta.Note = note
		return a, nil
	}
	a.meta.Filesystem = u.FS
	a.meta.Note = areaNote(&a.meta, u)
	a.meta.Detail, a.meta.Volumes = u.Detail, u.Volumes
	if all {
		// Named, so that ls and extract read it, but copied whole.
		return a, nil
	}
	a.used = u
	a.meta.BlockSize = u.BlockSize()
	if u.FillFree {
		a.meta.FreeFill = image.FreeFillRandom
	}
	a.meta.UsedBytes = used
	return a, nil
}

// areaNote is the area's note once u is read: detectNote, and a word when
// the partition's type promises other contents than u's filesystem (the
// area is named by its contents).
func areaNote(a *image.Area, u *block.Usage) string {
	note := detectNote(a.Index, u)
	if a.Kind != image.KindPartition || ptable.Fits(a.Type, u.FS) {
		return note
	}
	typ := ptable.TypeName(a.Type)
	mismatch := fmt.Sprintf("partition %d: its type says %s but it holds %s; imaged as %s", a.Index, typ, u.FS, u.FS)
	if note == "" {
		return mismatch
	}
	return note + "; " + strings.TrimPrefix(mismatch, fmt.Sprintf("partition %d: ", a.Index))
}

// detectNote says why a filesystem's allocation data was not taken as it
// stands ("" when it was). An untrusted filesystem keeps its name, so
// its files can be read, and a map that counts every block: it is copied
// whole, and an incremental of it still matches its parent's layout.
func detectNote(index int, u *block.Usage) string {
	switch {
	case u.Warning == "":
		return ""
	case u.Untrusted:
		return fmt.Sprintf("partition %d: %s; copying every block of it", index, u.Warning)
	}
	return fmt.Sprintf("partition %d: %s", index, u.Warning)
}

// gaps returns the areas outside the data partitions that are kept: the
// boot area before the first partition (MBR or protective MBR, boot code,
// primary GPT, the boot-loader gap) and the table structures further on
// (EBRs, the backup GPT). Other unallocated space belongs to no
// filesystem and is not imaged, as with Clonezilla and Macrium, unless
// all (sector by sector) keeps every byte.
func gaps(t *ptable.Table, size int64, all bool) []area {
	first := int64(1 << 20)
	if len(t.Partitions) > 0 {
		first = size
		for _, p := range t.Partitions {
			first = min(first, p.Start)
		}
	}
	keep := []block.Extent{{Off: 0, Len: min(first, size)}}
	for _, s := range t.Structures {
		if s.Off >= first {
			keep = append(keep, s)
		}
	}
	if all {
		keep = []block.Extent{{Off: 0, Len: size}}
	}
	// Never overlap a partition: clip each kept range to the bytes no
	// data partition covers.
	var out []area
	for _, k := range keep {
		for _, e := range uncovered(k, t.Partitions) {
			out = append(out, area{meta: image.Area{Kind: image.KindGap, Start: e.Off, Size: e.Len, Filesystem: "raw"}})
		}
	}
	return out
}

// uncovered returns the parts of k that no partition covers.
func uncovered(k block.Extent, parts []ptable.Partition) []block.Extent {
	out := []block.Extent{k}
	for _, p := range parts {
		var next []block.Extent
		for _, e := range out {
			if p.End() <= e.Off || p.Start >= e.End() {
				next = append(next, e)
				continue
			}
			if p.Start > e.Off {
				next = append(next, block.Extent{Off: e.Off, Len: p.Start - e.Off})
			}
			if p.End() < e.End() {
				next = append(next, block.Extent{Off: p.End(), Len: e.End() - p.End()})
			}
		}
		out = next
	}
	return out
}

// Disk is what create reads of a disk before it copies anything: its
// areas as an image's metadata names them (partitions with their
// filesystems, and the gaps kept), and each area's allocation map. An
// area without a map has UsedBytes 0 here (Run counts its bytes as it
// copies them).
type Disk struct {
	Size       int64
	SectorSize int64
	Table      string // "gpt", "mbr" or "none"
	Areas      []image.Area
	// Used are the areas' allocation maps, by index into Areas; nil
	// for an area whose every byte is copied.
	Used []*block.Usage
}

// Describe reads src's partition table and each partition's filesystem
// and allocation map exactly as Run does before it copies: what a clone
// onto a new layout copies is what create would have imaged.
func Describe(src block.Source, detect fsmap.Options) (*Disk, error) {
	l, err := planLayout(src, nil, false, detect)
	if err != nil {
		return nil, err
	}
	d := &Disk{Size: src.Size(), SectorSize: l.table.SectorSize, Table: l.table.Kind}
	for _, a := range l.areas {
		d.Areas = append(d.Areas, a.meta)
		d.Used = append(d.Used, a.used)
	}
	return d, nil
}
