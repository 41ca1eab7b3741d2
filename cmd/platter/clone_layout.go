package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/clone"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/layout"
	"github.com/platter-dev/platter/internal/live"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// runCloneLayout clones src onto target laid out anew (--layout grow or
// fit, or keep onto other sectors): the relayout restore --layout uses,
// with the source disk in place of an image's. The filesystems a fit
// shrinks are shrunk on a scratch overlay of the source, which is only
// ever read.
//
// A source with filesystems mounted read-write is copied by the live
// clone (clone.Run under lp), which writes every byte where it was: so
// grow and keep, whose partitions stay where they are, work live, and
// a layout that moves or shrinks a partition is refused. A shrink is
// worked out on the disk as it is before the copy; a filesystem in use
// would have changed under it by the time its blocks were copied.
func runCloneLayout(cmd *cobra.Command, opts cloneOptions, mode layout.Mode, lp *live.Plan, progress *ui.Progress, src *blockdev.Device, source, target string) error {
	ctx := cmd.Context()
	inUse := len(lp.Mounts) > 0
	if inUse && mode == layout.Fit {
		m := lp.Mounts[0]
		return usagef("%s is mounted read-write at %s: clone --layout fit shrinks filesystems on a copy-on-write overlay of the disk before copying them, and one in use changes under that overlay, so the copy would be of no one instant; unmount it (or remount it read-only) first, or image it live and restore the image: platter create %s IMAGE && platter restore --layout fit IMAGE %s", m.Device, m.Point, source, target)
	}
	d, err := backup.Describe(src, fsmap.Options{})
	if err != nil {
		return fmt.Errorf("read %s: %w", source, err)
	}
	ds := &cloneSource{dev: src, d: d, meta: &image.Metadata{Source: source, SourceSize: d.Size, SectorSize: d.SectorSize, Table: d.Table, Areas: d.Areas}}
	r, err := newRelayout(ctx, ds, src, source, target, mode, opts.layoutFlags)
	if err != nil {
		return err
	}
	defer r.close()
	if inUse {
		for _, mv := range r.plan.Moves {
			if mv.NewStart != mv.OldStart {
				return usagef("%s is mounted read-write: a live clone copies each partition where it was, and --layout %s moves %s from byte %d to %d; unmount the source, or choose --grow-partition so that no partition moves (the last one)", source, mode, mv.Label, mv.OldStart, mv.NewStart)
			}
		}
	}
	summary := r.summary("")
	summary.Source = source
	if opts.plan {
		return report(cmd, opts.json, summary, r.planLines()...)
	}
	r.announce(cmd, opts.progress, "clone", summary)
	if r.isDev {
		if err := confirmOverwrite(cmd, target, opts.yes); err != nil {
			return err
		}
	}
	write := ds.Write
	var res *clone.Result
	if inUse {
		write, err = liveWrite(lp, src, source, target, r.isDev, progress, &res)
		if err != nil {
			return err
		}
	}
	start := time.Now()
	_, err = r.apply(ctx, "clone", opts.progress, false, write)
	progress.Finish()
	if err != nil {
		return err
	}
	summary.Seconds = time.Since(start).Seconds()
	how := ""
	if res != nil {
		summary.Snapshot = res.Metadata.Snapshot
		if s := res.Metadata.Snapshot; s != nil && s.Method != "none" {
			how = fmt.Sprintf(", %s at %s (writers held %.3fs)", map[string]string{"track": "live", "freeze": "frozen"}[s.Method], s.Instant.Local().Format("15:04:05.000"), s.FrozenSeconds)
		}
	}
	lines := []string{fmt.Sprintf("cloned %s to %s (%s, layout %s) in %.1fs%s", source, target, ui.Bytes(r.size), mode, summary.Seconds, how)}
	return report(cmd, opts.json, summary, append(lines, r.stuckLines()...)...)
}

// liveWrite is the relayout's write for a source in use: the live clone
// of the whole disk, in place (every partition stays where it was; the
// caller checked), under lp's freeze or tracker. The relayout then
// writes the new table and grows the filesystems on the target, which
// holds the source at one instant.
func liveWrite(lp *live.Plan, src *blockdev.Device, source, target string, isDev bool, progress *ui.Progress, res **clone.Result) (func(context.Context, restore.ReadTarget, restore.Options) error, error) {
	beside, output := "", ""
	if !isDev {
		beside, output = filepath.Dir(target), target
	}
	tmp, err := lp.TempDir(beside)
	if err != nil {
		return nil, err
	}
	bopts := backup.Options{SourceName: source, Tool: "platter " + version, Host: hostname(), Progress: progress}
	bopts.DiskModel, bopts.DiskSerial = blockdev.Identity(source)
	return func(ctx context.Context, t restore.ReadTarget, wopts restore.Options) error {
		return lp.Run(ctx, src, output, bopts, func(ctx context.Context, bopts backup.Options) error {
			var err error
			*res, err = clone.Run(ctx, src, t, clone.Options{Backup: bopts, Fresh: wopts.Fresh, TempDir: tmp})
			return err
		})
	}, nil
}

// cloneSource is a disk as a relayoutSource: its areas and allocation
// maps read as create reads them (backup.Describe), its bytes read from
// the disk, which is only ever read.
type cloneSource struct {
	dev  *blockdev.Device
	d    *backup.Disk
	meta *image.Metadata
}

func (s *cloneSource) Metadata() *image.Metadata { return s.meta }

func (s *cloneSource) Used(i int, off, n int64) ([]block.Extent, bool, error) {
	u := s.d.Used[i]
	if u == nil {
		return nil, false, nil
	}
	var runs []block.Extent
	err := u.Runs(off, n, func(e block.Extent) { runs = append(runs, e) })
	return runs, true, err
}

// Write copies the used bytes of every area opts.Place puts somewhere (an
// area without a map: all of it) from the disk to its place on t.
func (s *cloneSource) Write(ctx context.Context, t restore.ReadTarget, opts restore.Options) error {
	type job struct {
		area *image.Area
		runs []block.Extent
		to   int64
	}
	var jobs []job
	var total int64
	for i := range s.meta.Areas {
		a := &s.meta.Areas[i]
		to, ok := opts.Place(a)
		if !ok {
			continue
		}
		runs, mapped, err := s.Used(i, 0, a.Size)
		if err != nil {
			return fmt.Errorf("%s: read its allocation map: %w", a.Label(), err)
		}
		if !mapped {
			runs = []block.Extent{{Len: a.Size}}
		}
		for _, r := range runs {
			total += r.Len
		}
		jobs = append(jobs, job{a, runs, to})
	}
	p := opts.Progress
	if p == nil {
		p = nopProgress{}
	}
	p.Start(total)
	for _, j := range jobs {
		err := restore.Copy(ctx, io.NewSectionReader(s.dev, j.area.Start, j.area.Size), t, j.runs, j.to,
			restore.Options{Fresh: opts.Fresh, Workers: opts.Workers, Progress: addOnly{p}})
		if err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(j.area.Label()), err)
		}
	}
	return nil
}

// addOnly passes on a copy's progress, not its Start: the total of
// every area's copy was given once.
type addOnly struct{ restore.Progress }

func (addOnly) Start(int64) {}

type nopProgress struct{}

func (nopProgress) Start(int64) {}
func (nopProgress) Add(int64)   {}
