package restore

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/view"
)

// NotSameError says why a target does not look like the disk (or the
// partition) an image was made of.
type NotSameError struct {
	What    string // "the image's disk", "partition 2 of the image"
	Reasons []string
}

func (e *NotSameError) Error() string {
	return "it does not hold " + e.What + ": " + strings.Join(e.Reasons, "; ")
}

// SameDisk checks, before a delta restore writes anything, that target
// (size bytes) holds an older state of the disk img was made of, or with
// partition of that partition, as Macrium's Rapid Delta Restore asks for
// a previous copy of the same filesystem. A whole disk must have the
// image's partition table: the same kind, disk id, and partitions at the
// same places with the same GUIDs, and no others; a bare filesystem or a
// partition must hold the image's filesystem (the same UUID). A
// partition of a whole disk whose filesystem was made anew since (same
// table, another UUID) is only a warning: the delta is still right, it
// just finds most of that partition's chunks different.
//
// A delta onto another disk would still leave it holding the image, over
// every byte a restore writes; the check is there because the usual
// cause is the wrong target, whose free bytes the delta would leave as
// they are.
func SameDisk(img *image.Reader, target io.ReaderAt, size int64, partition int) (warnings []string, err error) {
	m := img.Metadata()
	need, err := Size(img, partition)
	if err != nil {
		return nil, err
	}
	ne := &NotSameError{What: "the image's disk"}
	if partition != 0 {
		ne.What = fmt.Sprintf("partition %d of the image", partition)
	}
	if size != need {
		ne.Reasons = append(ne.Reasons, fmt.Sprintf("it is %d bytes, %s %d", size, ne.What, need))
		return nil, ne
	}
	disk := view.New(img, 2)
	defer disk.Close()
	// sameFS compares the filesystem identity of image area a with the
	// bytes of target at off.
	sameFS := func(a *image.Area, off int64) string {
		want := fsmap.Identify(io.NewSectionReader(disk, a.Start, a.Size), a.Size, a.Filesystem)
		if want.UUID == "" {
			return "" // a filesystem without one, or none: nothing to compare
		}
		got := fsmap.Identify(io.NewSectionReader(target, off, a.Size), a.Size, a.Filesystem)
		if got.UUID == "" {
			return fmt.Sprintf("%s of the image holds %s %s; the target there holds no %s", a.Label(), a.Filesystem, want.UUID, a.Filesystem)
		}
		if !strings.EqualFold(got.UUID, want.UUID) {
			return fmt.Sprintf("%s of the image holds %s %s; the target there holds %s %s", a.Label(), a.Filesystem, want.UUID, a.Filesystem, got.UUID)
		}
		return ""
	}

	if partition != 0 {
		for i := range m.Areas {
			if a := &m.Areas[i]; a.Kind == image.KindPartition && a.Index == partition {
				if r := sameFS(a, 0); r != "" {
					ne.Reasons = append(ne.Reasons, r)
				}
			}
		}
		return nil, notSame(ne)
	}

	t, err := ptable.Read(target, size, m.SectorSize)
	if err != nil {
		ne.Reasons = append(ne.Reasons, fmt.Sprintf("its partition table cannot be read (%v)", err))
		return nil, ne
	}
	if t.Kind != m.Table {
		ne.Reasons = append(ne.Reasons, fmt.Sprintf("it has %s, the image's disk %s", tableName(t.Kind), tableName(m.Table)))
		return nil, ne
	}
	if m.DiskID != "" && !strings.EqualFold(t.DiskID, m.DiskID) {
		ne.Reasons = append(ne.Reasons, fmt.Sprintf("its disk id is %s, the image's disk's %s", t.DiskID, m.DiskID))
	}
	if m.Table == "none" {
		for i := range m.Areas {
			if a := &m.Areas[i]; a.Kind == image.KindPartition {
				if r := sameFS(a, a.Start); r != "" {
					ne.Reasons = append(ne.Reasons, r)
				}
			}
		}
		return nil, notSame(ne)
	}
	have := map[int]ptable.Partition{}
	for _, p := range t.Partitions {
		have[p.Index] = p
	}
	known := map[int]bool{}
	for _, n := range m.NotImaged {
		known[n] = true // in the image's table, its place not recorded
	}
	var check []*image.Area // partitions whose place matches
	for i := range m.Areas {
		a := &m.Areas[i]
		if a.Kind != image.KindPartition {
			continue
		}
		known[a.Index] = true
		p, ok := have[a.Index]
		switch {
		case !ok:
			ne.Reasons = append(ne.Reasons, fmt.Sprintf("it has no partition %d", a.Index))
		case p.Start != a.Start || p.Size != a.Size:
			ne.Reasons = append(ne.Reasons, fmt.Sprintf("its partition %d is bytes %d-%d, the image's %d-%d", a.Index, p.Start, p.End()-1, a.Start, a.Start+a.Size-1))
		case p.GUID != "" && a.GUID != "" && !strings.EqualFold(p.GUID, a.GUID):
			ne.Reasons = append(ne.Reasons, fmt.Sprintf("its partition %d has GUID %s, the image's %s", a.Index, p.GUID, a.GUID))
		default:
			check = append(check, a)
		}
	}
	var extra []string
	for _, p := range t.Partitions {
		if !known[p.Index] {
			extra = append(extra, fmt.Sprintf("%d", p.Index))
		}
	}
	if len(extra) > 0 {
		ne.Reasons = append(ne.Reasons, fmt.Sprintf("it has partitions the image's disk has not: %s", strings.Join(extra, ", ")))
	}
	if len(ne.Reasons) > 0 {
		return nil, ne
	}
	for _, a := range check {
		if r := sameFS(a, a.Start); r != "" {
			warnings = append(warnings, r+": made anew since the image? Its chunks will mostly differ")
		}
	}
	return warnings, nil
}

// notSame is ne if it has reasons, else nil.
func notSame(ne *NotSameError) error {
	if len(ne.Reasons) == 0 {
		return nil
	}
	ne.Reasons = slices.Compact(ne.Reasons)
	return ne
}

func tableName(kind string) string {
	switch kind {
	case "gpt":
		return "a GPT partition table"
	case "mbr":
		return "an MBR partition table"
	}
	return "no partition table"
}
