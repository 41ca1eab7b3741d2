package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/layout"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

type restoreOptions struct {
	partition int
	yes       bool
	progress  string
	json      bool
	layoutFlags

	// restore --delta (restore_delta.go)
	delta, trim, force bool
	fill               string
}

func newRestoreCommand() *cobra.Command {
	var opts restoreOptions
	return restoreCommand(&opts)
}

// restoreCommand is restore with its flags parsed into opts (plan
// restore restores with restore's own flags and checks).
func restoreCommand(o *restoreOptions) *cobra.Command {
	opts := o
	cmd := &cobra.Command{
		Use:   "restore [flags] IMAGE TARGET",
		Short: "Write an image back to a disk, a partition or a file",
		Long: `Restore writes the whole disk held in IMAGE onto TARGET, or with --partition N
only that partition's contents. TARGET may be a block device (at least as
large as what is restored; confirmation needed unless --yes) or a file
(created or cut to size and written sparse). IMAGE - reads the image from
standard input in one pass (the whole disk only); the parents of an
incremental are looked for in the --search directories, and found and
checked before TARGET is touched. TARGET is refused if it is a file of the
image's chain (the image, a parent, a volume of a split image, the file
standard input is) or a file that backs a mounted loop device.

With --delta, TARGET holds an older state of the same disk (or partition),
as when rolling a machine back: each chunk of the image is compared with
what TARGET holds, and only what differs is written; bytes no filesystem
uses are left as they are (--trim discards them).

With --layout fit, XFS (which cannot shrink) keeps its size unless
--recreate-xfs is given: then a smaller XFS is made in its place with the
same geometry, features, UUID and label, and every file is copied into it
with its owner, mode, hard links, extended attributes, ACLs, access and
modification times, chattr flags and project ID (not its change time).`,
		Example: `  platter restore laptop.platter /dev/sdb --yes    # onto a disk (shows what it overwrites)
  platter restore laptop.platter disk.img          # into a sparse file
  platter restore /home/partimag/2024-05-01-img /dev/sdb --yes   # a Clonezilla image directory
  platter restore --partition 2 laptop.platter /dev/sdb2
  ssh nas cat laptop.platter | platter restore --yes - /dev/sdb   # from a pipe
  platter restore --delta --yes laptop.platter /dev/sdb            # roll the disk back, writing what differs
  platter restore --layout fit --recreate-xfs --plan laptop.platter /dev/sdb   # a smaller disk, XFS copied file by file`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRestore(cmd, *opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.partition, "partition", 0, "restore only partition N's contents into TARGET")
	f.BoolVar(&opts.yes, "yes", false, "do not ask before overwriting a block device")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON on stdout")
	opts.layoutFlags.add(f)
	f.StringVar(&opts.fill, "fill", "", "write `TEXT`, repeated from each sector's start, over the sectors a rescue of a failing disk could not read (create --rescue), instead of zeros, so they are told from data (e.g. BADSECTOR)")
	f.BoolVar(&opts.delta, "delta", false, "TARGET holds an older state of the disk: write only what differs")
	f.BoolVar(&opts.trim, "trim", false, "with --delta: discard the bytes no filesystem uses")
	f.BoolVar(&opts.force, "force", false, "with --delta: restore onto a TARGET that does not look like the image's disk")
	addDiskFlag(cmd)
	return cmd
}

func runRestore(cmd *cobra.Command, opts restoreOptions, imagePath, target string) error {
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	if opts.partition < 0 {
		return usagef("--partition must be a partition number")
	}
	if opts.fill != "" && (opts.delta || opts.layout != "" || imagePath == stdio) {
		return usagef("--fill is for a restore from an image file onto the image's layout (not --delta, --layout or standard input)")
	}
	switch {
	case (opts.trim || opts.force) && opts.layout != "":
		return usagef("--trim and --force are not for a delta onto a new layout (--delta --layout)")
	case (opts.delta || opts.trim || opts.force) && opts.layout == "":
		return runDeltaRestore(cmd, opts, mode, imagePath, target)
	case opts.recreateXFS && opts.delta:
		return usagef("--recreate-xfs makes a new XFS, which has none of the image's blocks to compare: restore without --delta")
	case opts.delta && imagePath == stdio:
		return usagef("--delta needs the image's index, at its end: save the image to a file first (or restore without --delta)")
	}
	if imagePath == stdio {
		return runRestoreStream(cmd, opts, mode, target)
	}
	f, img, need, err := openRestoreImage(imagePath, target, opts.partition)
	if err != nil {
		return err
	}
	defer f.Close()
	defer img.Close()
	if mode, relayout, err := chooseLayout(opts, img, target, need); err != nil {
		return err
	} else if relayout {
		return runRestoreLayout(cmd, opts, mode, f, img, imagePath, target)
	}

	// Every refusal happens here, before the target is opened for writing.
	isDev, err := checkTarget(target, need)
	if err != nil {
		return err
	}
	if isDev {
		if err := confirmOverwrite(cmd, target, opts.yes); err != nil {
			return err
		}
	}

	if m := img.Metadata(); opts.partition == 0 && len(m.NotImaged) > 0 {
		warn("partitions %s of the disk's table were not imaged (create --partitions): they are not restored, and %s keeps what it held there (zeros in a new file)", joinInts(m.NotImaged), target)
	}
	t, err := blockdev.OpenTarget(target, need)
	if err != nil {
		return err
	}
	p := newProgress(mode, "restore")
	start := time.Now()
	err = restore.Run(cmd.Context(), img, t, restore.Options{Partition: opts.partition, Fresh: t.Fresh, Progress: p, Fill: []byte(opts.fill)})
	p.Finish()
	if err == nil {
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = f.inVolume(err)
		// Never leave a disk that looks whole and is not.
		if t.Created {
			os.Remove(target)
			return fmt.Errorf("restore stopped, %s removed: %w", target, err)
		}
		return fmt.Errorf("restore stopped: %s is incomplete and does not hold a usable disk: %w", target, err)
	}
	what := "disk"
	if opts.partition != 0 {
		what = fmt.Sprintf("partition %d", opts.partition)
	}
	secs := time.Since(start).Seconds()
	lines := []string{fmt.Sprintf("restored %s of %s to %s (%s) in %.1fs", what, imagePath, target, ui.Bytes(need), secs)}
	if n := img.Metadata().UnreadableBytes(); n > 0 {
		with := "zeros (restore --fill TEXT marks them)"
		if opts.fill != "" {
			with = fmt.Sprintf("%q repeated", opts.fill)
		}
		lines = append(lines, fmt.Sprintf("%s of the disk could not be read when the image was made (a failing disk, create --rescue): written as %s; platter info %s lists the files they hit", ui.Bytes(n), with, imagePath))
	}
	if verbose {
		lines = append(lines, areaLines(img.Metadata())...)
	}
	return report(cmd, opts.json, restoreSummary{Image: imagePath, Target: target, Partition: opts.partition, Bytes: need, Seconds: secs, NotImaged: img.Metadata().NotImaged}, lines...)
}

// restoreSummary is restore's result for --json.
type restoreSummary struct {
	Image     string  `json:"image"`
	Target    string  `json:"target"`
	Partition int     `json:"partition,omitempty"` // 0: the whole disk
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	NotImaged []int   `json:"not_imaged,omitempty"` // partitions of the table left as they were
}

// confirmOverwrite shows what the device holds now and asks before it is
// overwritten; without a terminal it needs --yes.
func confirmOverwrite(cmd *cobra.Command, target string, yes bool) error {
	errw := cmd.ErrOrStderr()
	fmt.Fprintf(errw, "%s will be overwritten. It holds now:\n%s", target, describeDevice(target))
	if yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usagef("refusing to overwrite block device %s without confirmation: pass --yes", target)
	}
	fmt.Fprintf(errw, "Type yes to overwrite %s: ", target)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return fmt.Errorf("not confirmed; %s was not touched", target)
	}
	return nil
}

func describeDevice(path string) string {
	d, err := blockdev.Open(path)
	if err != nil {
		return fmt.Sprintf("  (cannot read it: %v)\n", err)
	}
	defer d.Close()
	t, err := ptable.Read(d, d.Size(), d.SectorSize())
	if err != nil {
		return fmt.Sprintf("  %s, partition table unreadable: %v\n", ui.Bytes(d.Size()), err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %s, partition table: %s\n", ui.Bytes(d.Size()), t.Kind)
	for _, p := range t.Partitions {
		fmt.Fprintf(&b, "  partition %d: start %d, %s, type %s %s\n", p.Index, p.Start, ui.Bytes(p.Size), p.Type, p.Name)
	}
	return b.String()
}

// joinInts writes numbers as "3, 4".
func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// checkTarget refuses a TARGET that is mounted (or backs a mounted loop
// device), or a device smaller than need bytes, before anything is
// written to it. It says whether TARGET is a block device.
func checkTarget(target string, need int64) (isDev bool, err error) {
	exists, isDev, size, err := blockdev.StatTarget(target)
	if err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	if exists {
		mounts, err := blockdev.Mounts(target)
		if err != nil {
			return false, fmt.Errorf("check whether %s is mounted: %w", target, err)
		}
		if len(mounts) > 0 {
			via := ""
			if !isDev {
				via = " (the file backs " + mounts[0].Device + ")"
			}
			return false, fmt.Errorf("target %s is in use: %s is mounted at %s%s; unmount it first", target, mounts[0].Device, mounts[0].Point, via)
		}
	}
	if isDev && size < need {
		return false, fmt.Errorf("target %s is %d bytes (%s), smaller than the %d bytes (%s) to restore; nothing was written", target, size, ui.Bytes(size), need, ui.Bytes(need))
	}
	return isDev, nil
}

// chooseLayout decides from --layout and the target whether the disk is
// restored as it was (false) or laid out anew in mode (true): grow and
// fit always, keep when the target's sectors are another size than the
// image's (the table is then written anew in them) or when it is a larger
// disk and the table a GPT (whose backup moves to its end). A block
// device of another size than the image's disk needs --layout.
func chooseLayout(opts restoreOptions, img *image.Reader, target string, need int64) (layout.Mode, bool, error) {
	lf := opts.layoutFlags
	if opts.delta {
		lf.relayout = true // a delta is compared block by block through the relayout
	}
	return lf.decide(target, need, img.Metadata().SectorSize, img.Metadata().Table, opts.partition != 0, "of the image's disk", "restores")
}

// layoutFlags are --layout, --grow-partition, --plan and --recreate-xfs,
// of restore and clone alike.
type layoutFlags struct {
	layout        string
	growPartition int
	plan          bool
	// recreateXFS: with --layout fit, an XFS that must be smaller is made
	// anew and its files copied in (relayout.go).
	recreateXFS bool
	// relayout forces a relayout even in keep mode.
	relayout bool
}

func (l *layoutFlags) add(f *pflag.FlagSet) {
	f.StringVar(&l.layout, "layout", "", "onto a disk of another size: keep (the source's layout as it was), grow (the last partition, or --grow-partition N, takes the new space) or fit (filesystems shrink, partitions move down); a different-size disk without it is refused")
	f.IntVar(&l.growPartition, "grow-partition", 0, "with --layout grow: the partition that takes the new space (default: the last one that is not a system partition)")
	f.BoolVar(&l.plan, "plan", false, "with --layout: print the layout that would be written, and write nothing")
	f.BoolVar(&l.recreateXFS, "recreate-xfs", false, "with --layout fit: make an XFS that must be smaller anew at the smaller size and copy its files in (XFS cannot shrink); its UUID and label are kept")
}

// decide decides whether the disk of need bytes, sector bytes per
// sector and partition table kind table ("gpt", "mbr", "none") goes onto
// target as it was (false) or laid out anew in mode (true). of names the
// source disk in messages ("of the image's disk"), verb what the command
// does ("restores"); onePart says only one partition's contents are
// written (no layout applies).
func (l *layoutFlags) decide(target string, need, sector int64, table string, onePart bool, of, verb string) (layout.Mode, bool, error) {
	if l.layout == "" && (l.plan || l.growPartition != 0) {
		return "", false, usagef("--plan and --grow-partition go with --layout")
	}
	if l.growPartition != 0 && l.layout != string(layout.Grow) {
		return "", false, usagef("--grow-partition goes with --layout grow")
	}
	if l.recreateXFS && l.layout != string(layout.Fit) {
		return "", false, usagef("--recreate-xfs goes with --layout fit (XFS grows in place with --layout grow)")
	}
	mode := layout.Keep
	if l.layout != "" {
		m, err := layout.ParseMode(l.layout)
		if err != nil {
			return "", false, usagef("--layout: %v", err)
		}
		mode = m
	}
	if mode != layout.Keep || l.relayout {
		return mode, true, nil
	}
	exists, isDev, size, err := blockdev.StatTarget(target)
	if err != nil || !exists || !isDev || onePart {
		return mode, l.plan, err
	}
	if size != need && l.layout == "" {
		if size < need {
			return "", false, usagef("target %s is %d bytes (%s), smaller than the %d bytes (%s) %s: --layout fit %s onto it (filesystems shrink, partitions move down); nothing was written", target, size, ui.Bytes(size), need, ui.Bytes(need), of, verb)
		}
		return "", false, usagef("target %s is %d bytes (%s), larger than the %d bytes (%s) %s: choose --layout grow (the last partition takes the new space), fit, or keep (the disk as it was, the rest unused); nothing was written", target, size, ui.Bytes(size), need, ui.Bytes(need), of)
	}
	d, err := blockdev.Open(target)
	if err != nil {
		return "", false, err
	}
	defer d.Close()
	// A GPT's backup header belongs in the target's last sector: onto a
	// larger disk the table is written anew even when kept.
	gptMoves := size != need && table == "gpt"
	return mode, l.plan || gptMoves || d.SectorSize() != sector, nil
}

// chainTargetError is restore's refusal of a TARGET that is held, a file
// of the image's chain (the image, a parent, a volume, standard input).
func chainTargetError(target, held string) error {
	return usagef("TARGET %s is %s, a file of the image's chain: restoring onto it would destroy the image being read", target, held)
}

// openRestoreImage opens IMAGE for a restore onto target, with the
// refusals every restore makes first (IMAGE and TARGET swapped, TARGET a
// file of the image's chain), and says how many bytes the target must
// hold for partition (0: the whole disk).
func openRestoreImage(imagePath, target string, partition int) (chainFiles, *image.Reader, int64, error) {
	if err := foreignTarget(imagePath, foreignKind(imagePath), target); err != nil {
		return nil, nil, 0, err
	}
	f, img, err := openImage(imagePath)
	if errors.Is(err, image.ErrNotImage) {
		if _, terr := image.ReadID(target); terr == nil {
			return nil, nil, 0, usagef("%s is not a Platter image, but %s is: did you swap IMAGE and TARGET? (platter restore IMAGE TARGET)", imagePath, target)
		}
	}
	if err != nil {
		return nil, nil, 0, err
	}
	fail := func(err error) (chainFiles, *image.Reader, int64, error) {
		img.Close()
		f.Close()
		return nil, nil, 0, err
	}
	need, err := restore.Size(img, partition)
	if err != nil {
		return fail(err)
	}
	if held := f.holding(target); held != "" {
		return fail(chainTargetError(target, held))
	}
	return f, img, need, nil
}
