package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/freeze"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type createOptions struct {
	partitions   string
	compress     string
	force        bool
	allowMounted bool
	progress     string
	snapshot     string
	maxFreeze    time.Duration
}

func newCreateCommand() *cobra.Command {
	var opts createOptions
	cmd := &cobra.Command{
		Use:   "create [flags] SOURCE IMAGE",
		Short: "Image a disk, a partition or a bare filesystem",
		Long: `Create reads SOURCE (a block device, or a file holding a raw disk or a bare
filesystem) read-only and writes IMAGE: the partition table and boot areas,
and each partition's used blocks, compressed. IMAGE appears only when it is
complete.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreate(cmd, opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.partitions, "partitions", "", "image only these partition numbers, e.g. 1,2,5 (the table and boot areas are always kept)")
	f.StringVar(&opts.compress, "compress", codec.DefaultSetting.String(), "compression: zstd[:LEVEL] (1-22), fast (zstd:1) or none")
	f.BoolVar(&opts.force, "force", false, "overwrite IMAGE if it exists")
	f.BoolVar(&opts.allowMounted, "allow-mounted", false, "image a source mounted read-write anyway (the image may be inconsistent)")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.StringVar(&opts.snapshot, "snapshot", "auto", "how to image a mounted, writable source: freeze (hold its filesystems frozen for the whole copy: for small volumes), none (refuse unless --allow-mounted), auto (refuse and say which to use)")
	f.DurationVar(&opts.maxFreeze, "max-freeze", 10*time.Second, "with --snapshot freeze: thaw and fail if the copy takes longer")
	return cmd
}

func runCreate(cmd *cobra.Command, opts createOptions, source, imagePath string) error {
	setting, err := codec.ParseSetting(opts.compress)
	if err != nil {
		return &usageError{err}
	}
	parts, err := parsePartitions(opts.partitions)
	if err != nil {
		return err
	}
	mode, err := progressMode(opts.progress)
	if err != nil {
		return err
	}
	mounted, err := writableMounts(source)
	if err != nil {
		return err
	}
	switch opts.snapshot {
	case "auto", "none", "freeze":
	case "track":
		return usagef("--snapshot track (live imaging with write tracking) is not available yet; use --snapshot freeze for a small volume, or unmount the filesystem")
	default:
		return usagef("--snapshot takes auto, freeze or none, not %q", opts.snapshot)
	}
	if len(mounted) > 0 && opts.snapshot != "freeze" {
		if err := allowMounted(mounted, source, opts); err != nil {
			return err
		}
	}
	src, err := blockdev.Open(source)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer src.Close()
	if same(source, imagePath) {
		return usagef("IMAGE %s is the source itself", imagePath)
	}
	ctx := cmd.Context()
	bopts := backup.Options{
		SourceName:  source,
		Partitions:  parts,
		Compression: setting,
		Tool:        "platter " + version,
	}
	if len(mounted) > 0 && opts.snapshot == "freeze" {
		fr, err := freezeSource(src, mounted, imagePath, opts.maxFreeze, mode)
		if err != nil {
			return err
		}
		defer fr.Thaw() // on every error path; a no-op after Release
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-fr.Expired():
				_, err := fr.Thaw()
				cancel(fmt.Errorf("%w (--max-freeze is %s): no image was written", err, opts.maxFreeze))
			case <-ctx.Done():
			}
		}()
		bopts.Release = func() (*image.Snapshot, error) {
			held, err := fr.Thaw()
			if err != nil {
				return nil, fmt.Errorf("%w (frozen for %.1fs; --max-freeze is %s): no image was written; raise --max-freeze or image fewer partitions", err, held.Seconds(), opts.maxFreeze)
			}
			snapshotEvent(mode, "thawed", fr.Frozen(), held)
			return &image.Snapshot{Method: "freeze", Instant: fr.Start().UTC(), FrozenSeconds: held.Seconds(), Filesystems: fr.Frozen(), Synced: fr.Synced()}, nil
		}
	} else if len(mounted) > 0 {
		bopts.Release = func() (*image.Snapshot, error) {
			return &image.Snapshot{Method: "none", Instant: time.Now().UTC(), Filesystems: mountPoints(mounted)}, nil
		}
	}
	progress := ui.NewProgress(mode, os.Stderr, "create")
	bopts.Progress = progress
	start := time.Now()
	meta, size, err := backup.ToFile(ctx, src, imagePath, opts.force, bopts)
	progress.Finish()
	if err != nil {
		return err
	}
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	var used int64
	for _, a := range meta.Areas {
		used += a.UsedBytes
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(cmd.OutOrStdout(), "created %s: %s used of %s, image %s, in %.1fs (%s/s)\n",
		imagePath, ui.Bytes(used), ui.Bytes(meta.SourceSize), ui.Bytes(size), secs, ui.Bytes(int64(float64(used)/max(secs, 1e-9))))
	return nil
}

func parsePartitions(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usagef("--partitions takes partition numbers like 1,2,5; %q is not one", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// writableMounts lists the filesystems on source that are mounted
// read-write: they change while they are read.
func writableMounts(source string) ([]blockdev.Mount, error) {
	mounts, err := blockdev.Mounts(source)
	if err != nil {
		return nil, fmt.Errorf("check whether %s is mounted: %w", source, err)
	}
	var rw []blockdev.Mount
	for _, m := range mounts {
		if !m.ReadOnly {
			rw = append(rw, m)
		}
	}
	return rw, nil
}

// allowMounted refuses to copy mounted, writable filesystems as they
// change, unless --allow-mounted says to (with a warning).
func allowMounted(mounted []blockdev.Mount, source string, opts createOptions) error {
	m := mounted[0]
	if !opts.allowMounted {
		return fmt.Errorf("%s is mounted read-write at %s (%s): an image taken while it changes may be inconsistent; pass --snapshot freeze to hold it still while it is copied (writers wait; for small volumes), unmount it or remount it read-only, or pass --allow-mounted to image it anyway", m.Device, m.Point, source)
	}
	for _, m := range mounted {
		warn("%s is mounted read-write at %s: the image may be inconsistent", m.Device, m.Point)
	}
	return nil
}

// freezeSource freezes every filesystem mounted from the source, together,
// after checking that the image is not written to one of them. The source
// is then read with O_DIRECT: its page cache may hold blocks from before
// the freeze.
func freezeSource(src *blockdev.Device, mounted []blockdev.Mount, imagePath string, limit time.Duration, mode ui.Mode) (*freeze.Frozen, error) {
	dir, err := filepath.Abs(filepath.Dir(imagePath))
	if err != nil {
		return nil, err
	}
	ds, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("image directory: %w", err)
	}
	for _, m := range mounted {
		if ms, err := os.Stat(m.Point); err == nil && sameDevice(ds, ms) {
			return nil, usagef("IMAGE %s is on %s, which --snapshot freeze would freeze: write the image to another filesystem", imagePath, m.Point)
		}
	}
	if err := src.ReadDirect(); err != nil {
		return nil, fmt.Errorf("open %s for direct reads: %w", src.Path(), err)
	}
	fr, err := freeze.Freeze(mountPoints(mounted), limit)
	if err != nil {
		return nil, err
	}
	for _, p := range fr.Synced() {
		warn("%s cannot be frozen: it was synced and is copied as it is (writes to it during the copy may be missed)", p)
	}
	snapshotEvent(mode, "frozen", fr.Frozen(), 0)
	return fr, nil
}

func mountPoints(ms []blockdev.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Point)
	}
	return out
}

// snapshotEvent tells the user (or, with --progress json, a script) that
// the filesystems were frozen or thawed.
func snapshotEvent(mode ui.Mode, what string, points []string, held time.Duration) {
	switch mode {
	case ui.JSON:
		b, _ := json.Marshal(map[string]any{"op": "create", "snapshot": what, "filesystems": points, "frozen_seconds": held.Seconds()})
		fmt.Fprintf(os.Stderr, "%s\n", b)
	case ui.Off:
	default:
		if what == "frozen" {
			fmt.Fprintf(os.Stderr, "froze %s for the copy\n", strings.Join(points, ", "))
		} else {
			fmt.Fprintf(os.Stderr, "thawed %s after %.2fs\n", strings.Join(points, ", "), held.Seconds())
		}
	}
}

// same reports whether two paths name the same file.
func same(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
