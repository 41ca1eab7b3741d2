package main

import (
	"fmt"
	"time"

	"github.com/platter-dev/platter/internal/clonezilla"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type importOptions struct {
	compress  string
	chunkSize string
	split     string
	force     bool
	progress  string
	json      bool
}

func newImportCommand() *cobra.Command {
	var opts importOptions
	cmd := &cobra.Command{
		Use:   "import [flags] SOURCE IMAGE",
		Short: "Convert a Clonezilla image directory into a Platter image",
		Long: `Import reads SOURCE, a Clonezilla image directory (what ocs-sr savedisk
writes), and writes IMAGE: the disk it was saved from, as create would
have imaged it. Everything read is verified: the files MD5SUMS, SHA1SUMS,
SHA512SUMS and B2SUMS list, then every partclone checksum as the
partitions are decoded. A mismatch stops the import (exit code 3, naming
the file or the block range) and leaves no IMAGE: it is written as
IMAGE.partial and renamed only when complete.`,
		Example: `  platter import /home/partimag/2024-05-01-img /backup/laptop.platter
  platter import --split 4095M /media/usb/ocs-img /media/usb/laptop.platter
  platter import --json --progress none ocs-img laptop.platter`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd, opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.compress, "compress", codec.DefaultSetting.String(), "compression: zstd[:LEVEL] (1-22), fast (zstd:1) or none")
	f.StringVar(&opts.chunkSize, "chunk-size", "8M", "the unit of compression and random reads (as create takes it)")
	f.StringVar(&opts.split, "split", "", splitFlag)
	f.BoolVar(&opts.force, "force", false, "overwrite IMAGE if it exists")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON on stdout")
	return cmd
}

// importSummary is import's result for --json.
type importSummary struct {
	Image       string   `json:"image"`
	ID          string   `json:"id"`
	Source      string   `json:"source"`
	Format      string   `json:"source_format"` // "clonezilla"
	SourceBytes int64    `json:"source_bytes"`
	UsedBytes   int64    `json:"used_bytes"`
	ImageBytes  int64    `json:"image_bytes"`
	SumFiles    []string `json:"sum_files"` // checksum files verified
	Seconds     float64  `json:"seconds"`
}

func runImport(cmd *cobra.Command, opts importOptions, source, imagePath string) error {
	setting, err := codec.ParseSetting(opts.compress)
	if err != nil {
		return &usageError{err}
	}
	chunkSize, err := parseChunkSize(opts.chunkSize)
	if err != nil {
		return err
	}
	split, err := parseSplit(opts.split)
	if err != nil {
		return err
	}
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	if imagePath == stdio {
		if err := toStdout(cmd, split); err != nil {
			return err
		}
	}
	if !isClonezilla(source) {
		return usagef("SOURCE %s is not a Clonezilla image directory (one with the file ocs-sr names disk); import reads those", source)
	}
	ctx := cmd.Context()
	progress := newCZProgress(newProgress(mode, "import"))
	d, err := clonezilla.Open(source, progress.options())
	if err != nil {
		return err
	}
	defer d.Close()
	start := time.Now()
	// The checksum files first: nothing is written from a directory
	// whose files are not the ones ocs-sr saved.
	if err := d.VerifySums(ctx); err != nil {
		return err
	}
	sink, place, err := imageSink(ctx, imagePath, store.CreateOptions{Force: opts.force, Split: split})
	if err != nil {
		return err
	}
	meta, size, err := importClonezilla(ctx, d, sink, setting, chunkSize, tempDir(place), progress)
	progress.Finish()
	if err != nil {
		return tooLarge(err)
	}
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	sum := importSummary{Image: imagePath, ID: meta.ID, Source: source, Format: "clonezilla", SourceBytes: meta.SourceSize,
		ImageBytes: size, SumFiles: d.SumFiles(), Seconds: time.Since(start).Seconds()}
	if sum.SumFiles == nil {
		sum.SumFiles = []string{}
	}
	for _, a := range meta.Areas {
		sum.UsedBytes += a.UsedBytes
	}
	checked := joinAnd(append([]string{"every partclone checksum"}, sum.SumFiles...))
	lines := []string{fmt.Sprintf("imported %s from Clonezilla image %s: %s used of %s, image %s, in %.1fs (%s/s); %s verified",
		imagePath, source, ui.Bytes(sum.UsedBytes), ui.Bytes(meta.SourceSize), ui.Bytes(size), sum.Seconds,
		ui.Bytes(int64(float64(sum.UsedBytes)/max(sum.Seconds, 1e-9))), checked)}
	if verbose {
		lines = append(lines, areaLines(meta)...)
	}
	return report(cmd, opts.json, sum, lines...)
}

// joinAnd is "a", "a and b", "a, b and c".
func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + " and " + s[len(s)-1]
}
