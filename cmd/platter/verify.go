package main

import (
	"fmt"
	"runtime"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

func newVerifyCommand() *cobra.Command {
	var progress string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Read every chunk of an image and check its hash",
		Example: `  platter verify /backup/laptop-1.platter    # the whole chain, every chunk
  platter verify --json -q set/wed.platter
  ssh nas cat laptop.platter | platter verify -   # from a pipe, in one pass
  platter verify /home/partimag/2024-05-01-img   # a Clonezilla directory: *SUMS and partclone checksums
  platter verify D684BA87241263E2-00-00.mrimgx   # a Macrium Reflect X image: every block's MD5`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd, progress, asJSON, args[0])
		},
	}
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress display: auto, json or none")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON on stdout")
	addDiskFlag(cmd)
	return cmd
}

// damagedError is verify's verdict on an image with bad chunks.
type damagedError struct {
	bad, total int
	what       string // damage that is not in chunks
}

func (e *damagedError) Error() string {
	if e.what != "" {
		return e.what
	}
	return fmt.Sprintf("%d of %d chunks are damaged", e.bad, e.total)
}
func (e *damagedError) Is(target error) bool { return target == image.ErrDamaged }

func runVerify(cmd *cobra.Command, progressFlag string, asJSON bool, path string) error {
	mode, err := displayMode(progressFlag)
	if err != nil {
		return err
	}
	if path == stdio {
		return runVerifyStream(cmd, mode, asJSON)
	}
	kind := foreignKind(path)
	if err := checkDiskFlag(path, kind); err != nil {
		return err
	}
	switch kind {
	case kindClonezilla:
		return runVerifyClonezilla(cmd.Context(), cmd, mode, asJSON, path)
	case kindMrimgx:
		return runVerifyMrimgx(cmd.Context(), cmd, mode, asJSON, path)
	}
	f, r, err := openImage(path)
	if err != nil {
		return err
	}
	defer f.Close()
	defer r.Close()
	var total int64
	for _, e := range r.Entries() {
		total += int64(e.RawLen)
	}
	p := newProgress(mode, "verify")
	p.Start(total)
	bad, err := r.Verify(cmd.Context(), runtime.GOMAXPROCS(0), p.Add)
	p.Finish()
	if err != nil {
		return err
	}
	msgs := make([]error, len(bad))
	var hits map[[2]int64][]image.Hit
	if len(bad) > 0 {
		hits = damageHits(r, bad)
	}
	for i, b := range bad {
		msgs[i] = f.inVolume(b)
		if h := hits[[2]int64{int64(b.Entry.Area), int64(b.Entry.Chunk)}]; len(h) > 0 {
			msgs[i] = fmt.Errorf("%w: %s", msgs[i], describeHits(h))
		}
	}
	return reportVerify(cmd, r, path, msgs, "", asJSON)
}

// reportVerify says what verify found in r, the image named image: the
// damaged chunks (bad, phrased), a damaged copy of the key slots, or OK
// with what was read (from: where the image was read; "" counts the
// files of its chain). Damage is exit code 3.
func reportVerify(cmd *cobra.Command, r *image.Reader, image string, bad []error, from string, asJSON bool) error {
	var total, used int64
	for _, e := range r.Entries() {
		total += int64(e.RawLen)
	}
	for i, a := range r.Metadata().Areas {
		if m := r.Map(i); m != nil {
			used += m.UsedBytes()
		} else {
			used += a.UsedBytes
		}
	}
	sum := verifySummary{Image: image, Chunks: len(r.Entries()), ChunkBytes: total, UsedBytes: used, Damaged: []string{}}
	for c := r; c != nil; c = c.Parent() {
		sum.ImageBytes += c.Size()
		sum.Files = append(sum.Files, c.Name())
	}
	var lines []string
	for _, b := range bad {
		sum.Damaged = append(sum.Damaged, b.Error())
		lines = append(lines, b.Error())
	}
	// A damaged copy of an encrypted image's key slots: it opened with
	// the other, which a second fault would take too.
	for c := r; c != nil; c = c.Parent() {
		if err := c.SlotDamage(); err != nil {
			msg := fmt.Sprintf("%s: %v", c.Name(), err)
			sum.Damaged = append(sum.Damaged, msg)
			lines = append(lines, msg)
		}
	}
	if from == "" && len(sum.Files) > 1 {
		from = fmt.Sprintf(" in %d files", len(sum.Files))
	}
	sum.OK = len(sum.Damaged) == 0
	if sum.OK {
		lines = append(lines, fmt.Sprintf("%s: OK, %d chunks verified: %s in use on the disk, %s of image%s", image, len(r.Entries()), ui.Bytes(used), ui.Bytes(sum.ImageBytes), from))
	}
	if n := r.Metadata().UnreadableBytes(); n > 0 {
		// Not damage: the image holds what could be read of a failing
		// disk, and says what could not.
		sum.UnreadableBytes = n
		lines = append(lines, rescueLines(r.Metadata())[0])
	}
	if verbose {
		lines = append(lines, areaLines(r.Metadata())...)
	}
	// Damaged chunks are named even with --quiet: they are the errors.
	if quiet && !asJSON {
		for _, l := range lines[:len(sum.Damaged)] {
			fmt.Fprintln(cmd.OutOrStdout(), l)
		}
	}
	if err := report(cmd, asJSON, sum, lines...); err != nil {
		return err
	}
	if len(bad) > 0 {
		return &damagedError{bad: len(bad), total: len(r.Entries())}
	}
	if len(sum.Damaged) > 0 {
		return &damagedError{what: "the key slots are damaged (one copy of two)"}
	}
	return nil
}

// verifySummary is verify's result for --json.
type verifySummary struct {
	Image      string   `json:"image"`
	OK         bool     `json:"ok"`
	Chunks     int      `json:"chunks"`
	ChunkBytes int64    `json:"chunk_bytes"` // decoded bytes checked
	UsedBytes  int64    `json:"used_bytes"`  // bytes in use on the disk the image holds
	ImageBytes int64    `json:"image_bytes"` // the files read (the chain's)
	Files      []string `json:"files"`
	Damaged    []string `json:"damaged"`
	// UnreadableBytes could not be read from the failing disk the image
	// was made of (create --rescue): missing by design, not damage.
	UnreadableBytes int64 `json:"unreadable_bytes,omitempty"`
}
