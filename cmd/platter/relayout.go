package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/layout"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/resize"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

// relayout writes a disk onto a target laid out anew: the partition
// table written for the target's size and sector size, partitions moved,
// filesystems shrunk (on a scratch overlay of the source, before anything
// is written) or grown (on the target, after). The disk comes from an
// image (restore --layout) or from a disk (clone --layout): a
// relayoutSource.
type relayout struct {
	from   relayoutSource
	disk   view.Device // the whole source disk, read at random
	op     string      // "restore" or "clone", for progress and messages
	src    *ptable.Table
	orig   *ptable.Original
	areas  map[int]int // partition index -> area index
	target string
	size   int64 // the target's
	sector int64 // the target's logical sector size
	isDev  bool
	plan   *layout.Plan
	// scratch takes the writes of the filesystems shrunk (fit); nil
	// when none is.
	scratch *resize.Scratch
}

// relayoutSource is the disk a relayout writes anew.
type relayoutSource interface {
	// Metadata describes the disk as an image's metadata does: its
	// size, sector size and areas (SourceSize, SectorSize, Areas).
	Metadata() *image.Metadata
	// Used returns the used runs of area i within [off, off+n) of it;
	// mapped is false when the area has no map (every byte counts).
	Used(i int, off, n int64) (runs []block.Extent, mapped bool, err error)
	// Write writes onto t each area that opts.Place puts somewhere, at
	// that place: its used bytes, as a restore writes them.
	Write(ctx context.Context, t restore.ReadTarget, opts restore.Options) error
}

// imageSource is an image as a relayoutSource.
type imageSource struct{ img *image.Reader }

func (s imageSource) Metadata() *image.Metadata { return s.img.Metadata() }

func (s imageSource) Used(i int, off, n int64) ([]block.Extent, bool, error) {
	m := s.img.Map(i)
	if m == nil {
		return nil, false, nil
	}
	var runs []block.Extent
	m.Runs(off, n, func(e block.Extent) { runs = append(runs, e) })
	return runs, true, nil
}

func (s imageSource) Write(ctx context.Context, t restore.ReadTarget, opts restore.Options) error {
	return restore.Run(ctx, s.img, t, opts)
}

// runRestoreLayout restores img onto target with --layout mode (grow or
// fit), or keep when only the sector size differs.
func runRestoreLayout(cmd *cobra.Command, opts restoreOptions, mode layout.Mode, f chainFiles, img *image.Reader, imagePath, target string) error {
	ctx := cmd.Context()
	if opts.partition != 0 {
		return usagef("--layout lays out a whole disk; --partition %d restores one partition's contents as they are", opts.partition)
	}
	disk := view.New(img, 16)
	defer disk.Close()
	r, err := newRelayout(ctx, imageSource{img}, disk, imagePath, target, mode, opts.layoutFlags)
	if err != nil {
		return err
	}
	defer r.close()
	summary := r.summary(imagePath)
	if opts.plan {
		return report(cmd, opts.json, summary, r.planLines()...)
	}
	r.announce(cmd, opts.progress, "restore", summary)
	if r.isDev {
		if err := confirmOverwrite(cmd, target, opts.yes); err != nil {
			return err
		}
	}
	start := time.Now()
	written, err := r.apply(ctx, "restore", opts.progress, opts.delta, r.from.Write)
	if err != nil {
		return f.inVolume(err)
	}
	summary.Seconds = time.Since(start).Seconds()
	lines := []string{fmt.Sprintf("restored disk of %s to %s (%s, layout %s) in %.1fs", imagePath, target, ui.Bytes(r.size), mode, summary.Seconds)}
	if opts.delta {
		summary.Written = written
		lines = append(lines, fmt.Sprintf("delta: wrote %s, the 4 KiB blocks that differed", ui.Bytes(summary.Written)))
	}
	return report(cmd, opts.json, summary, append(lines, r.stuckLines()...)...)
}

// newRelayout reads the source's partition table from disk, the
// target's size, and makes the plan for mode; for fit it asks each
// filesystem's tool, on a scratch overlay of disk, how small it can be.
// Nothing is written. name is the source as the user gave it.
func newRelayout(ctx context.Context, from relayoutSource, disk view.Device, name, target string, mode layout.Mode, lf layoutFlags) (_ *relayout, err error) {
	m := from.Metadata()
	r := &relayout{from: from, disk: disk, target: target, areas: map[int]int{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.src, err = ptable.Read(disk, m.SourceSize, m.SectorSize); err != nil {
		return nil, fmt.Errorf("read the partition table of %s: %w", name, err)
	}
	if r.src.Kind != "gpt" && r.src.Kind != "mbr" {
		return nil, usagef("%s holds no partition table (%s): --layout %s needs a partitioned disk", name, r.src.Kind, mode)
	}
	if r.orig, err = ptable.ReadOriginal(disk, r.src); err != nil {
		return nil, fmt.Errorf("read the partition table of %s: %w", name, err)
	}
	for i, a := range m.Areas {
		if a.Kind == image.KindPartition {
			r.areas[a.Index] = i
		}
	}
	if err := r.openTarget(mode); err != nil {
		return nil, err
	}
	if mode == layout.Fit {
		if r.scratch, err = resize.NewScratch("", disk); err != nil {
			return nil, err
		}
	}
	ldisk, err := r.describe(ctx, mode, lf.recreateXFS)
	if err != nil {
		return nil, err
	}
	tg := layout.Target{Size: r.size, Grow: lf.growPartition}
	if r.src.Kind == "gpt" {
		entries := int64(r.orig.NumEntries) * int64(r.orig.EntrySize)
		tg.Reserved = (entries+r.sector-1)/r.sector*r.sector + r.sector
	} else {
		tg.Limit = (1<<32 - 1) * r.sector
	}
	if r.plan, err = layout.Make(mode, ldisk, tg); err != nil {
		return nil, r.xfsHint(err, ldisk, lf.recreateXFS)
	}
	return r, nil
}

// close removes the scratch overlay.
func (r *relayout) close() {
	if r.scratch != nil {
		r.scratch.Close()
		r.scratch = nil
	}
}

// announce shows the plan before anything is written: its lines, or
// with --progress json the summary as one JSON line.
func (r *relayout) announce(cmd *cobra.Command, progress, op string, summary layoutSummary) {
	if mode, _ := displayMode(progress); mode == ui.JSON {
		b, _ := json.Marshal(map[string]any{"op": op, "layout": summary})
		fmt.Fprintln(cmd.ErrOrStderr(), string(b))
	} else if !quiet {
		for _, l := range r.planLines() {
			fmt.Fprintln(cmd.ErrOrStderr(), l)
		}
	}
}

// apply carries the plan out: the shrinking (on the scratch overlay;
// nothing is written to the target if it fails), then the target opened,
// each area written by write at the place opts.Place gives, the shrunk
// partitions, the new partition table, the grown filesystems. With delta
// every write goes through a restore.Changes (only the blocks that differ
// from the target's are written); it returns the bytes so written.
func (r *relayout) apply(ctx context.Context, op, progress string, delta bool, write func(context.Context, restore.ReadTarget, restore.Options) error) (int64, error) {
	r.op = op
	if err := r.shrink(ctx); err != nil {
		return 0, fmt.Errorf("nothing was written to %s: %w", r.target, err)
	}
	open := blockdev.OpenTarget
	if delta {
		open = blockdev.OpenExisting // the older state is what is compared
	}
	bt, err := open(r.target, r.size)
	if err != nil {
		return 0, err
	}
	var t restore.ReadTarget = bt
	changes := &restore.Changes{T: bt}
	if delta {
		t = changes
	}
	err = r.write(ctx, t, bt.Fresh && !delta, progress, write)
	if err == nil {
		err = r.recreate(ctx, bt.Sync)
	}
	if err == nil {
		err = r.grow(ctx, t, bt.Sync)
	}
	if err == nil {
		err = bt.Sync()
	}
	if cerr := bt.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("%s stopped: %s is incomplete and does not hold a usable disk: %w", op, r.target, err)
	}
	return changes.Written(), nil
}

// stuckLines name the partitions made larger whose filesystems could not
// grow.
func (r *relayout) stuckLines() []string {
	var lines []string
	for _, mv := range r.plan.Moves {
		if mv.Stuck {
			lines = append(lines, fmt.Sprintf("%s: the partition is larger, its filesystem keeps its size (Platter cannot grow it)", mv.Label))
		}
	}
	return lines
}

// openTarget finds the target's size and sector size and refuses what
// cannot be written: a mounted target, a file that does not exist yet
// (its size is the disk's size).
func (r *relayout) openTarget(mode layout.Mode) error {
	exists, isDev, size, err := blockdev.StatTarget(r.target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if !exists {
		return usagef("--layout %s onto a file: make the file first, at the size of the disk wanted (truncate -s 64G %s)", mode, r.target)
	}
	if _, err := checkTarget(r.target, 0); err != nil {
		return err
	}
	r.isDev, r.size, r.sector = isDev, size, r.from.Metadata().SectorSize
	if isDev {
		d, err := blockdev.Open(r.target)
		if err != nil {
			return err
		}
		r.sector = d.SectorSize()
		d.Close()
	}
	return nil
}

// systemTypes are the partitions whose size is kept whatever the layout:
// firmware and Windows reserve them at sizes their tools expect.
var systemTypes = []string{
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", // EFI system
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE", // Microsoft reserved
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", // Windows recovery
	"21686148-6449-6E6F-744E-656564454649", // BIOS boot
	"0xef", "0x27",                         // EFI system, Windows recovery (MBR)
}

// describe gives the plan the source's partitions: their filesystems,
// what each can be grown or shrunk to (fit asks each filesystem's tool
// for its smallest size, on the scratch overlay).
//
// With recreateXFS an XFS may be smaller too: its minimum is what a copy
// of its files needs in a new XFS.
func (r *relayout) describe(ctx context.Context, mode layout.Mode, recreateXFS bool) (layout.Disk, error) {
	d := layout.Disk{Size: r.src.DiskSize}
	var err error
	if r.src.Kind == "gpt" {
		entries := int64(r.orig.NumEntries) * int64(r.orig.EntrySize)
		ss := r.src.SectorSize
		d.Reserved = (entries+ss-1)/ss*ss + ss
	}
	for _, p := range r.src.Partitions {
		fs := r.fs(p.Index)
		lp := layout.Part{Index: p.Index, Start: p.Start, Size: p.Size, Label: fmt.Sprintf("partition %d (%s)", p.Index, fs),
			Fixed:   slices.Contains(systemTypes, strings.ToUpper(p.Type)) || slices.Contains(systemTypes, p.Type),
			Logical: r.src.Kind == "mbr" && p.Index > 4, EBR: r.orig.EBRGap[p.Index]}
		if _, imaged := r.areas[p.Index]; imaged {
			lp.CanGrow = resize.Can(fs, false)
			lp.Recreate = mode == layout.Fit && recreateXFS && fs == "xfs" && !lp.Fixed
			if lp.Recreate {
				if lp.Min, err = r.xfsMin(ctx, p); err != nil {
					return d, err
				}
			} else if mode == layout.Fit && !lp.Fixed && resize.Can(fs, true) {
				min, err := r.minSize(ctx, fs, p)
				switch {
				case errors.Is(err, resize.ErrCannotResize):
					// Its name allowed it, its boot sector does not (a
					// FAT16): it keeps its size.
				case err != nil:
					return d, err
				default:
					lp.Min = min
				}
			}
		}
		d.Parts = append(d.Parts, lp)
	}
	return d, nil
}

// fs is the filesystem the image found in partition index ("" if it was
// not imaged).
func (r *relayout) fs(index int) string {
	if i, ok := r.areas[index]; ok {
		return r.from.Metadata().Areas[i].Filesystem
	}
	return ""
}

func (r *relayout) minSize(ctx context.Context, fs string, p ptable.Partition) (int64, error) {
	w, err := resize.OpenWindow(r.scratch.Section(p.Start, p.Size))
	if err != nil {
		return 0, err
	}
	defer w.Close()
	min, err := resize.MinSize(ctx, fs, w.Path())
	if err != nil {
		return 0, fmt.Errorf("partition %d (%s): %w", p.Index, fs, err)
	}
	return min, nil
}

// xfsMin is the size a new XFS needs to hold the files of the XFS in
// partition p (mounted from the scratch overlay, its log recovered
// there).
func (r *relayout) xfsMin(ctx context.Context, p ptable.Partition) (int64, error) {
	w, err := resize.OpenWindow(r.scratch.Section(p.Start, p.Size))
	if err != nil {
		return 0, err
	}
	defer w.Close()
	min, err := resize.XFSCopyMin(ctx, w.Path())
	if err != nil {
		return 0, fmt.Errorf("partition %d (xfs): --recreate-xfs: %w", p.Index, err)
	}
	return min, nil
}

// xfsHint adds to a target too small what --recreate-xfs would do, when
// an XFS kept its size for want of it.
func (r *relayout) xfsHint(err error, d layout.Disk, recreateXFS bool) error {
	var short *layout.ShortError
	if recreateXFS || !errors.As(err, &short) {
		return err
	}
	var xfs []string
	for _, p := range d.Parts {
		if r.fs(p.Index) == "xfs" && !p.Fixed {
			xfs = append(xfs, p.Label)
		}
	}
	if len(xfs) > 0 {
		short.Why += fmt.Sprintf("; XFS cannot shrink: --recreate-xfs makes %s anew at a smaller size and copies its files in", strings.Join(xfs, ", "))
	}
	return short
}

// recreate makes every XFS the plan makes smaller anew in its partition
// on the target and copies its files in from the image's (on the scratch
// overlay): after the partition table is written, before any filesystem
// is grown.
func (r *relayout) recreate(ctx context.Context, sync func() error) error {
	for _, mv := range r.plan.Moves {
		if mv.Resize != layout.Recreate {
			continue
		}
		if err := sync(); err != nil { // the loop device reads the target itself
			return err
		}
		w, err := resize.OpenWindow(r.scratch.Section(mv.OldStart, mv.OldSize))
		if err != nil {
			return err
		}
		err = resize.RecreateXFS(ctx, w.Path(), r.target, mv.NewStart, mv.NewSize, r.sector)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("recreate %s at %d bytes: %w", mv.Label, mv.NewSize, err)
		}
	}
	return nil
}

// shrink shrinks, on the scratch overlay, every filesystem the plan makes
// smaller.
func (r *relayout) shrink(ctx context.Context) error {
	for _, mv := range r.plan.Moves {
		if mv.Resize != layout.Shrink {
			continue
		}
		w, err := resize.OpenWindow(r.scratch.Section(mv.OldStart, mv.OldSize))
		if err != nil {
			return err
		}
		_, err = resize.Shrink(ctx, r.fs(mv.Index), w.Path(), mv.NewSize)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("shrink %s to %d bytes: %w", mv.Label, mv.NewSize, err)
		}
	}
	return nil
}

// write puts every partition at its new place, the boot code before the
// first one, and the partition table written anew.
func (r *relayout) write(ctx context.Context, t restore.ReadTarget, fresh bool, progress string, write func(context.Context, restore.ReadTarget, restore.Options) error) error {
	mode, _ := displayMode(progress)
	// Partitions not shrunk come from their chunks; the area before the
	// first partition (boot code; the table is written over it after)
	// stays where it is. Other gaps held the old table's EBRs and backup.
	first := r.plan.Moves[0].NewStart
	place := func(a *image.Area) (int64, bool) {
		switch {
		case a.Kind == image.KindGap && a.Start == 0:
			return 0, a.Size <= first
		case a.Kind != image.KindPartition:
			return 0, false
		}
		mv := r.plan.Of(a.Index)
		if mv == nil || mv.Resize == layout.Shrink || mv.Resize == layout.Recreate {
			return 0, false
		}
		return mv.NewStart, true
	}
	p := newProgress(mode, r.op)
	err := write(ctx, t, restore.Options{Place: place, Fresh: fresh, Progress: p})
	p.Finish()
	if err != nil {
		return err
	}
	// Shrunk partitions: what the image holds of their first NewSize
	// bytes, and what the shrinking wrote there.
	for _, mv := range r.plan.Moves {
		if mv.Resize != layout.Shrink {
			continue
		}
		runs, mapped, err := r.from.Used(r.areas[mv.Index], 0, mv.NewSize)
		if err != nil {
			return fmt.Errorf("%s: read its allocation map: %w", mv.Label, err)
		}
		if !mapped {
			runs = []block.Extent{{Len: mv.NewSize}}
		}
		for _, w := range r.scratch.Written(mv.OldStart, mv.NewSize) {
			runs = append(runs, block.Extent{Off: w.Off - mv.OldStart, Len: w.Len})
		}
		runs = block.MergeExtents(runs)
		p := newProgress(mode, r.op)
		err = restore.Copy(ctx, r.scratch.Section(mv.OldStart, mv.NewSize), t, runs, mv.NewStart, restore.Options{Fresh: fresh, Progress: p})
		p.Finish()
		if err != nil {
			return fmt.Errorf("%s: %w", mv.Label, err)
		}
	}
	if err := r.writeTable(t); err != nil {
		return err
	}
	// Filesystems that know where their partition starts learn it.
	for _, mv := range r.plan.Moves {
		if mv.NewStart == mv.OldStart {
			continue
		}
		if fs, ok := fsmap.Lookup(r.fs(mv.Index)); ok && fs.Moved != nil {
			sec := &targetSection{t: t, off: mv.NewStart, size: mv.NewSize}
			if err := fs.Moved(sec, mv.NewSize, mv.NewStart); err != nil {
				return fmt.Errorf("%s: %w", mv.Label, err)
			}
		}
	}
	return nil
}

// writeTable writes the partition table for the target: the plan's
// places, in the target's sectors, the rest kept from the image's.
func (r *relayout) writeTable(t io.WriterAt) error {
	nt, err := r.src.WithSectorSize(r.sector)
	if err != nil {
		return fmt.Errorf("the image's partitions on %d-byte sectors: %w", r.sector, err)
	}
	nt.DiskSize = r.size
	for i := range nt.Partitions {
		if mv := r.plan.Of(nt.Partitions[i].Index); mv != nil {
			nt.Partitions[i].Start, nt.Partitions[i].Size = mv.NewStart, mv.NewSize
		}
	}
	if nt.Extended != nil && r.plan.ExtendedSize > 0 {
		nt.Extended.Start, nt.Extended.Size = r.plan.ExtendedStart, r.plan.ExtendedSize
	}
	return nt.Write(t, r.orig)
}

// grow grows, on the target, every filesystem the plan makes larger:
// its tool works on the partition through a window.
func (r *relayout) grow(ctx context.Context, t restore.ReadTarget, sync func() error) error {
	for _, mv := range r.plan.Moves {
		if mv.Resize != layout.Enlarge {
			continue
		}
		if err := sync(); err != nil { // what the tool reads is on the disk
			return err
		}
		w, err := resize.OpenWindow(&targetSection{t: t, off: mv.NewStart, size: mv.NewSize})
		if err != nil {
			return err
		}
		_, err = resize.Grow(ctx, r.fs(mv.Index), w.Path(), mv.NewSize)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, resize.ErrCannotResize) {
			// Known only from the filesystem itself (a FAT16 named by
			// its size): the partition is larger, the filesystem as was.
			r.plan.Of(mv.Index).Stuck = true
			warn("%s: the partition is larger, its filesystem keeps its size: %v", mv.Label, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("grow %s to %d bytes: %w", mv.Label, mv.NewSize, err)
		}
	}
	return nil
}

// targetSection is one partition of the target, read and written at
// offsets within it.
type targetSection struct {
	t         restore.ReadTarget
	off, size int64
}

func (s *targetSection) Size() int64 { return s.size }

func (s *targetSection) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, errors.New("read past the end of the partition")
	}
	p = p[:min(int64(len(p)), s.size-off)]
	return s.t.ReadAt(p, s.off+off)
}

func (s *targetSection) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.size {
		return 0, errors.New("write past the end of the partition")
	}
	return s.t.WriteAt(p, s.off+off)
}

// layoutSummary is the plan, for --plan --json and the JSON progress.
type layoutSummary struct {
	Image      string       `json:"image,omitempty"`
	Source     string       `json:"source,omitempty"` // clone's
	Target     string       `json:"target"`
	Layout     layout.Mode  `json:"layout"`
	TargetSize int64        `json:"target_size"`
	SectorSize int64        `json:"sector_size"`
	Partitions []layoutPart `json:"partitions"`
	Seconds    float64      `json:"seconds,omitempty"`
	// Written, with --delta: the bytes of the blocks that differed.
	Written int64 `json:"bytes_written,omitempty"`
	// Snapshot, for a clone of a source in use: how it was held.
	Snapshot *image.Snapshot `json:"snapshot,omitempty"`
}

type layoutPart struct {
	Index      int    `json:"index"`
	Filesystem string `json:"filesystem"`
	OldStart   int64  `json:"old_start"`
	OldSize    int64  `json:"old_size"`
	NewStart   int64  `json:"new_start"`
	NewSize    int64  `json:"new_size"`
	Resize     string `json:"resize,omitempty"` // "shrink", "grow" or none
	// Stuck: the partition is larger, its filesystem cannot grow.
	Stuck bool `json:"filesystem_not_grown,omitempty"`
}

func (r *relayout) summary(imagePath string) layoutSummary {
	s := layoutSummary{Image: imagePath, Target: r.target, Layout: r.plan.Mode, TargetSize: r.size, SectorSize: r.sector}
	for _, mv := range r.plan.Moves {
		s.Partitions = append(s.Partitions, layoutPart{Index: mv.Index, Filesystem: r.fs(mv.Index), OldStart: mv.OldStart, OldSize: mv.OldSize,
			NewStart: mv.NewStart, NewSize: mv.NewSize, Resize: string(mv.Resize), Stuck: mv.Stuck})
	}
	return s
}

// planLines says the plan to a person.
func (r *relayout) planLines() []string {
	lines := []string{fmt.Sprintf("layout %s onto %s (%s, %d-byte sectors):", r.plan.Mode, r.target, ui.Bytes(r.size), r.sector)}
	for _, mv := range r.plan.Moves {
		what := "kept"
		switch {
		case mv.Resize == layout.Shrink:
			what = "filesystem shrunk"
		case mv.Resize == layout.Enlarge:
			what = "filesystem grown"
		case mv.Resize == layout.Recreate:
			what = "filesystem recreated file by file"
		case mv.Stuck:
			what = "partition larger, filesystem kept (it cannot grow)"
		case mv.NewStart != mv.OldStart:
			what = "moved"
		}
		lines = append(lines, fmt.Sprintf("  %s: start %d -> %d, size %s -> %s: %s", mv.Label, mv.OldStart, mv.NewStart, ui.Bytes(mv.OldSize), ui.Bytes(mv.NewSize), what))
	}
	return lines
}
