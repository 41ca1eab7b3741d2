package main

import (
	"fmt"
	"time"

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
		Short: "Convert a Clonezilla image directory or a Macrium Reflect X image into a Platter image",
		Long: `Import reads SOURCE and writes IMAGE: the disk SOURCE was saved from, as
create would have imaged it, in one pass. SOURCE is either of:

  a Clonezilla image directory (what ocs-sr savedisk or saveparts
  writes: partclone, ntfsclone and dd images; after saveparts, the
  partitions not saved are zeros). Everything
  read is verified: the files MD5SUMS, SHA1SUMS, SHA512SUMS and B2SUMS
  list, then every partclone checksum as the partitions are decoded.

  a Macrium Reflect X image (.mrimgx), with the rest of its backup set
  found beside it: the other parts of a split image, the full image and
  the increments up to it. Every block is checked against its MD5 as it
  is read. An encrypted image takes its password as an encrypted Platter
  image takes its passphrase (--password-file, $PLATTER_PASSWORD, or the
  terminal). Of an image of several disks, --disk N reads the one with
  disk number N (default: the first, with a warning naming the others).

A mismatch stops the import (exit code 3, naming the file or the block
and the disk bytes it covers) and leaves no IMAGE: it is written as
IMAGE.partial and renamed only when complete.`,
		Example: `  platter import /home/partimag/2024-05-01-img /backup/laptop.platter
  platter import --split 4095M /media/usb/ocs-img /media/usb/laptop.platter
  platter import --json --progress none ocs-img laptop.platter
  platter import /media/usb/D684BA87241263E2-00-00.mrimgx /backup/pc.platter
  platter import --disk 2 --password-file pw.txt backup.mrimgx disk2.platter`,
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
	addDiskFlag(cmd)
	return cmd
}

// importSummary is import's result for --json.
type importSummary struct {
	Image       string   `json:"image"`
	ID          string   `json:"id"`
	Source      string   `json:"source"`
	Format      string   `json:"source_format"` // "clonezilla" or "mrimgx"
	SourceBytes int64    `json:"source_bytes"`
	UsedBytes   int64    `json:"used_bytes"`
	ImageBytes  int64    `json:"image_bytes"`
	SumFiles    []string `json:"sum_files"` // checksum files verified (Clonezilla)
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
	kind := foreignKind(source)
	if kind == "" {
		return usagef("SOURCE %s is neither a Clonezilla image directory (one with the file ocs-sr names disk) nor a Macrium Reflect X image (a file ending in the MACRIUM_FILE footer); import reads those", source)
	}
	if err := checkDiskFlag(source, kind); err != nil {
		return err
	}
	ctx := cmd.Context()
	bar := newProgress(mode, "import")
	d, err := openForeign(source, kind, bar)
	if err != nil {
		return err
	}
	defer d.Close()
	start := time.Now()
	// The checksum files first: nothing is written from a directory
	// whose files are not the ones ocs-sr saved.
	if err := d.checkSums(ctx); err != nil {
		return err
	}
	sink, place, err := imageSink(ctx, imagePath, store.CreateOptions{Force: opts.force, Split: split})
	if err != nil {
		return err
	}
	meta, size, err := importForeign(ctx, d, sink, setting, chunkSize, tempDir(place))
	bar.Finish()
	if err != nil {
		return tooLarge(err)
	}
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	sum := importSummary{Image: imagePath, ID: meta.ID, Source: source, Format: kind, SourceBytes: meta.SourceSize,
		ImageBytes: size, SumFiles: []string{}, Seconds: time.Since(start).Seconds()}
	if d.cz != nil && d.cz.SumFiles() != nil {
		sum.SumFiles = d.cz.SumFiles()
	}
	for _, a := range meta.Areas {
		sum.UsedBytes += a.UsedBytes
	}
	lines := []string{fmt.Sprintf("imported %s from %s image %s: %s used of %s, image %s, in %.1fs (%s/s); %s verified",
		imagePath, foreignTool(kind), source, ui.Bytes(sum.UsedBytes), ui.Bytes(meta.SourceSize), ui.Bytes(size), sum.Seconds,
		ui.Bytes(int64(float64(sum.UsedBytes)/max(sum.Seconds, 1e-9))), d.checked())}
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
