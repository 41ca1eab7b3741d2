package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type createOptions struct {
	partitions   string
	compress     string
	force        bool
	allowMounted bool
	progress     string
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
	if err := checkSourceMounts(source, opts.allowMounted); err != nil {
		return err
	}
	src, err := blockdev.Open(source)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer src.Close()
	if same(source, imagePath) {
		return usagef("IMAGE %s is the source itself", imagePath)
	}
	progress := ui.NewProgress(mode, os.Stderr, "create")
	start := time.Now()
	meta, size, err := backup.ToFile(cmd.Context(), src, imagePath, opts.force, backup.Options{
		SourceName:  source,
		Partitions:  parts,
		Compression: setting,
		Tool:        "platter " + version,
		Progress:    progress,
	})
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

// checkSourceMounts refuses a source with a filesystem mounted read-write:
// it changes while it is read, so the image would not be of one instant.
func checkSourceMounts(source string, allow bool) error {
	mounts, err := blockdev.Mounts(source)
	if err != nil {
		return fmt.Errorf("check whether %s is mounted: %w", source, err)
	}
	for _, m := range mounts {
		if m.ReadOnly {
			continue
		}
		if !allow {
			return fmt.Errorf("%s is mounted read-write at %s (%s): an image taken while it changes may be inconsistent; unmount it or remount it read-only (point-in-time snapshots of mounted filesystems are planned), or pass --allow-mounted to image it anyway", m.Device, m.Point, source)
		}
		warn("%s is mounted read-write at %s: the image may be inconsistent", m.Device, m.Point)
	}
	return nil
}

// same reports whether two paths name the same file.
func same(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
