package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/clone"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type cloneOptions struct {
	liveFlags
	layoutFlags
	yes      bool
	progress string
	json     bool
}

func newCloneCommand() *cobra.Command {
	var opts cloneOptions
	cmd := &cobra.Command{
		Use:   "clone [flags] SOURCE TARGET",
		Short: "Copy a disk onto another disk or a file, without an image",
		Long: `Clone copies the whole disk SOURCE (a block device, or a file holding a raw
disk or a bare filesystem) onto TARGET: the partition table, the boot areas
and each partition's used blocks, read as create reads them, written as
restore writes them, with nothing stored in between and no compression.
Every chunk is hashed where it is read and checked before it is written.

A SOURCE whose filesystems are mounted read-write (the running system) is
cloned live, as create images it: the copy is the disk at one instant
(--snapshot track, the default, or freeze).

TARGET may be a block device (not mounted; confirmation needed unless
--yes) or a file (created or cut to SOURCE's size and written sparse). A
device of another size than SOURCE needs --layout, as restore's does:
grow (the last partition, or --grow-partition N, takes the new space and
its filesystem grows), fit (filesystems shrink on a copy-on-write
overlay of SOURCE, which is only ever read; partitions move down) or
keep (the disk as it was, the extra space unused). --layout onto a file
takes the file's size, so make it first (truncate -s 64G new.img);
--plan prints the layout and writes nothing. With --layout an idle
source's used blocks are read straight onto their new places (no image
stream in between, so no chunk hashes: the result is what create +
restore --layout give). A source in use clones live with grow or keep
when no partition moves; --layout fit of a source with a filesystem
mounted read-write is refused (the shrink would not be of the instant
copied). A clone that stops leaves a TARGET without a partition table,
never one that looks finished.`,
		Example: `  platter clone /dev/nvme0n1 /dev/sdb              # the running system onto a new SSD (asks first)
  platter clone --yes --progress json /dev/sda /dev/sdb
  platter clone /dev/sda disk.img                   # into a sparse file
  platter clone --snapshot freeze /dev/vdb /dev/vdc # writers held for the whole copy
  platter clone --layout fit /dev/sda /dev/sdb      # onto a smaller disk: filesystems shrink
  platter clone --layout grow --plan /dev/sda /dev/sdb  # what a larger disk would get; writes nothing`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClone(cmd, opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.yes, "yes", false, "do not ask before overwriting a block device")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON on stdout")
	opts.liveFlags.add(f, "clone", "copy")
	opts.layoutFlags.add(f)
	return cmd
}

func runClone(cmd *cobra.Command, opts cloneOptions, source, target string) error {
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	if err := opts.check(); err != nil {
		return err
	}
	if err := checkCloneArgs(source, target); err != nil {
		return err
	}
	progress := newProgress(mode, "clone")
	plan, err := opts.choose(source, liveReport{progress, mode, "clone"})
	if err != nil {
		return err
	}
	src, err := blockdev.Open(source)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer src.Close()
	// As create reads: around the page cache from a device, and from a
	// source held still (live.Plan.Held).
	if src.IsDevice() || plan.Held() {
		if err := src.ReadDirect(); err != nil {
			return fmt.Errorf("open %s for direct reads: %w", src.Path(), err)
		}
	}

	// Every refusal happens here, before anything is frozen or written.
	need := src.Size()
	// The source's sectors as its partition table counts them (a file
	// has none of its own).
	sector, table := src.SectorSize(), ""
	if tb, err := ptable.Read(src, need, sector); err == nil {
		sector, table = tb.SectorSize, tb.Kind
	}
	lmode, relay, err := opts.layoutFlags.decide(target, need, sector, table, false, "of "+source, "clones")
	if err != nil {
		return err
	}
	if relay {
		return runCloneLayout(cmd, opts, lmode, plan, progress, src, source, target)
	}
	exists, isDev, have, err := blockdev.StatTarget(target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if exists && isDev && have < need {
		return fmt.Errorf("target %s is %d bytes (%s), smaller than the source %s, %d bytes (%s): nothing was written (--layout fit clones onto a smaller disk: filesystems shrink, partitions move down)",
			target, have, ui.Bytes(have), source, need, ui.Bytes(need))
	}
	if _, err := checkTarget(target, need); err != nil {
		return err
	}
	// Temporary files: beside a target file, else where the copy
	// freezes nothing (files written on a frozen filesystem wait).
	tmpBeside := ""
	if !isDev {
		tmpBeside = filepath.Dir(target)
	}
	tmp, err := plan.TempDir(tmpBeside)
	if err != nil {
		return err
	}
	if isDev {
		if err := confirmOverwrite(cmd, target, opts.yes); err != nil {
			return err
		}
		if have > need {
			warn("%s (%s) is larger than %s (%s): the disk is written as it was, and the last %s stay unused",
				target, ui.Bytes(have), source, ui.Bytes(need), ui.Bytes(have-need))
		}
	}

	bopts := backup.Options{SourceName: source, Tool: "platter " + version, Host: hostname(), Progress: progress}
	bopts.DiskModel, bopts.DiskSerial = blockdev.Identity(source)
	// A target file must not be on a filesystem the copy freezes
	// (live.Plan.Run refuses it).
	output := ""
	if !isDev {
		output = target
	}
	var (
		res   *clone.Result
		start time.Time
	)
	err = plan.Run(cmd.Context(), src, output, bopts, func(ctx context.Context, bopts backup.Options) error {
		start = time.Now()
		t, err := blockdev.OpenTarget(target, need)
		if err != nil {
			return err
		}
		res, err = clone.Run(ctx, src, t, clone.Options{Backup: bopts, Fresh: t.Fresh, TempDir: tmp})
		if err == nil {
			err = t.Sync()
		}
		if cerr := t.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			// Never leave a disk that looks whole and is not.
			if t.Created {
				os.Remove(target)
				return fmt.Errorf("clone stopped, %s removed: %w", target, err)
			}
			return fmt.Errorf("clone stopped: %s is incomplete and does not hold a usable disk (its first and last MiB are zero): %w", target, err)
		}
		return nil
	})
	progress.Finish()
	if err != nil {
		return err
	}
	meta := res.Metadata
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	sum := cloneSummary{Source: source, Target: target, SourceBytes: meta.SourceSize, Seconds: time.Since(start).Seconds(), Snapshot: meta.Snapshot}
	for _, a := range meta.Areas {
		sum.UsedBytes += a.UsedBytes
	}
	how := ""
	if s := meta.Snapshot; s != nil && s.Method != "none" {
		how = fmt.Sprintf(", %s at %s (writers held %.3fs)", map[string]string{"track": "live", "freeze": "frozen"}[s.Method], s.Instant.Local().Format("15:04:05.000"), s.FrozenSeconds)
	}
	lines := []string{fmt.Sprintf("cloned %s to %s: %s used of %s copied in %.1fs (%s/s)%s",
		source, target, ui.Bytes(sum.UsedBytes), ui.Bytes(meta.SourceSize), sum.Seconds, ui.Bytes(int64(float64(sum.UsedBytes)/max(sum.Seconds, 1e-9))), how)}
	if verbose {
		for _, a := range meta.Areas {
			what := a.Label()
			if a.Kind == image.KindPartition {
				what += " (" + a.Filesystem + ")"
			}
			lines = append(lines, fmt.Sprintf("  %s: %s used%s", what, ui.Bytes(a.UsedBytes), map[bool]string{true: "; " + a.Note, false: ""}[a.Note != ""]))
		}
	}
	return report(cmd, opts.json, sum, lines...)
}

// cloneSummary is clone's result for --json.
type cloneSummary struct {
	Source      string          `json:"source"`
	Target      string          `json:"target"`
	SourceBytes int64           `json:"source_bytes"`
	UsedBytes   int64           `json:"used_bytes"`
	Seconds     float64         `json:"seconds"`
	Snapshot    *image.Snapshot `json:"snapshot,omitempty"`
}

// checkCloneArgs refuses what would destroy the wrong thing: a TARGET that
// is the source or shares storage with it (a partition of the source
// disk, the file behind a source loop device, a file on a filesystem of
// the source), a TARGET that is a Platter image (clone writes a disk
// over it), and a SOURCE that is one (restore writes an image to a disk).
func checkCloneArgs(source, target string) error {
	if source == stdio || target == stdio {
		return usagef("clone copies a disk onto a disk or a file, not through standard input or output: to send an image through a pipe, platter create SOURCE - | platter restore --yes - TARGET")
	}
	if _, err := os.Stat(source); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("SOURCE %s: no such file or device", source)
	}
	if _, err := image.ReadID(source); err == nil {
		return usagef("SOURCE %s is a Platter image, not a disk: to write an image to a disk, platter restore %s %s", source, source, target)
	}
	if st, err := os.Stat(target); err == nil && st.IsDir() {
		return usagef("TARGET %s is a directory: name the disk or the file to write, like %s", target, filepath.Join(target, "disk.img"))
	}
	if _, err := image.ReadID(target); err == nil {
		return usagef("TARGET %s is a Platter image: clone would overwrite it with the disk (to write the image to a disk: platter restore %s DISK)", target, target)
	}
	what, overlap, err := blockdev.Overlap(source, target)
	if err != nil {
		return fmt.Errorf("compare SOURCE and TARGET: %w", err)
	}
	if overlap {
		if same(source, target) {
			return usagef("TARGET %s is the source itself", target)
		}
		return usagef("TARGET %s overlaps SOURCE %s (both use %s): the clone would overwrite what it copies", target, source, what)
	}
	// A target file on one of the source's filesystems is written to the
	// source.
	if st, err := os.Stat(target); err == nil && !st.Mode().IsRegular() {
		return nil // a device: Overlap said what shares it
	}
	mounts, err := blockdev.Mounts(source)
	if err != nil {
		return fmt.Errorf("check whether %s is mounted: %w", source, err)
	}
	dir := filepath.Dir(target)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("TARGET %s: %w", target, err)
	}
	for _, m := range mounts {
		if blockdev.SameFilesystem(dir, m.Point) {
			return usagef("TARGET %s is on %s, a filesystem of SOURCE %s (%s): the clone would write to what it copies; write it to another disk", target, m.Point, source, m.Device)
		}
	}
	return nil
}
