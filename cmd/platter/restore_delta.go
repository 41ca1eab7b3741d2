package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// runDeltaRestore is restore --delta: TARGET holds an older state of the
// image's disk (or partition), and only what differs is written. Every
// refusal comes before TARGET is opened for writing.
func runDeltaRestore(cmd *cobra.Command, opts restoreOptions, mode ui.Mode, imagePath, target string) error {
	if !opts.delta {
		return usagef("--trim and --force go with --delta")
	}
	if imagePath == stdio {
		// A delta reads the image's index (every chunk's hash) first and
		// decodes only the chunks that differ; from a pipe every frame
		// would be read anyway, and the index comes last.
		return usagef("--delta needs the image's index, at its end: save the image to a file first (or restore without --delta)")
	}
	f, img, need, err := openRestoreImage(imagePath, target, opts.partition)
	if err != nil {
		return err
	}
	defer f.Close()
	defer img.Close()
	if opts.trim {
		if err := restore.CheckTrim(img, opts.partition); err != nil {
			return usagef("--trim: %v", err)
		}
	}
	what := "disk"
	if opts.partition != 0 {
		what = fmt.Sprintf("partition %d", opts.partition)
	}
	exists, isDev, size, err := blockdev.StatTarget(target)
	switch {
	case err != nil:
		return fmt.Errorf("target: %w", err)
	case !exists:
		return usagef("--delta restores onto an older state of the image's %s, and %s does not exist (restore without --delta)", what, target)
	case size != need:
		return fmt.Errorf("target %s is %d bytes (%s), the image's %s %d bytes (%s): a delta restore needs the same %s; nothing was written", target, size, ui.Bytes(size), what, need, ui.Bytes(need), what)
	}
	if _, err := checkTarget(target, need); err != nil {
		return err
	}
	if err := sameDisk(img, target, opts); err != nil {
		return err
	}
	if isDev {
		if err := confirmOverwrite(cmd, target, opts.yes); err != nil {
			return err
		}
	}
	if m := img.Metadata(); opts.partition == 0 && len(m.NotImaged) > 0 {
		warn("partitions %s of the disk's table were not imaged (create --partitions): %s keeps what it holds there", joinInts(m.NotImaged), target)
	}

	t, err := blockdev.OpenExisting(target, need)
	if err != nil {
		return err
	}
	p := newProgress(mode, "delta restore")
	start := time.Now()
	st, err := restore.Delta(cmd.Context(), img, t, restore.DeltaOptions{Partition: opts.partition, Trim: opts.trim, Progress: p})
	p.Finish()
	if err == nil {
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("delta restore stopped: %s holds part of its old state and part of the image's, and is not a usable disk; the same delta restore run again finishes it, writing only what still differs: %w", target, f.inVolume(err))
	}
	secs := time.Since(start).Seconds()
	lines := []string{
		fmt.Sprintf("delta-restored %s of %s to %s (%s) in %.1fs", what, imagePath, target, ui.Bytes(need), secs),
		fmt.Sprintf("compared %d chunks (%s used), %d differed (%s); wrote %s", st.Chunks, ui.Bytes(st.Bytes), st.Differed, ui.Bytes(st.DifferedBytes), ui.Bytes(st.Written)),
	}
	switch {
	case opts.trim && st.NoDiscard:
		warn("--trim: %s cannot discard; its free bytes were left as they were", target)
	case opts.trim:
		lines = append(lines, fmt.Sprintf("discarded %s that no filesystem uses", ui.Bytes(st.Trimmed)))
	}
	if verbose {
		lines = append(lines, areaLines(img.Metadata())...)
	}
	return report(cmd, opts.json, deltaSummary{
		restoreSummary: restoreSummary{Image: imagePath, Target: target, Partition: opts.partition, Bytes: need, Seconds: secs, NotImaged: img.Metadata().NotImaged},
		Delta: deltaJSON{Chunks: st.Chunks, Bytes: st.Bytes, Differed: st.Differed, DifferedBytes: st.DifferedBytes,
			Written: st.Written, Trimmed: st.Trimmed, NoDiscard: st.NoDiscard},
	}, lines...)
}

// sameDisk refuses, unless --force, a target that does not hold the
// image's disk (another disk, a table made anew), and warns of a
// partition whose filesystem was made anew since.
func sameDisk(img *image.Reader, target string, opts restoreOptions) error {
	d, err := blockdev.Open(target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer d.Close()
	warnings, err := restore.SameDisk(img, d, d.Size(), opts.partition)
	for _, w := range warnings {
		warn("%s", w)
	}
	var ne *restore.NotSameError
	switch {
	case errors.As(err, &ne) && opts.force && opts.trim:
		// What the image's disk does not use may be another disk's data
		// here. Once forced, the target holds the image's table and a
		// second delta with --trim passes the check.
		return usagef("target %s: %v; --force restores onto it, but not with --trim, which would discard what the image's disk leaves free and this disk may use: restore with --force first, then --trim", target, err)
	case errors.As(err, &ne) && opts.force:
		warn("%s: %v; restoring onto it anyway (--force)", target, err)
		return nil
	case errors.As(err, &ne):
		return fmt.Errorf("target %s: %w; nothing was written (--force delta-restores onto it anyway, or restore without --delta)", target, err)
	}
	return err
}

// deltaSummary is restore --delta's result for --json: restore's, and
// what was compared and written.
type deltaSummary struct {
	restoreSummary
	Delta deltaJSON `json:"delta"`
}

type deltaJSON struct {
	Chunks        int64 `json:"chunks_compared"`
	Bytes         int64 `json:"bytes_compared"` // the used bytes of the chunks compared
	Differed      int64 `json:"chunks_differed"`
	DifferedBytes int64 `json:"bytes_differed"` // the used bytes of the chunks that differed
	Written       int64 `json:"bytes_written"`  // written or zeroed: the 4 KiB blocks that differed
	Trimmed       int64 `json:"bytes_trimmed,omitempty"`
	NoDiscard     bool  `json:"trim_unsupported,omitempty"`
}
