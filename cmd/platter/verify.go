package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

func newVerifyCommand() *cobra.Command {
	var progress string
	cmd := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Read every chunk of an image and check its hash",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd, progress, args[0])
		},
	}
	cmd.Flags().StringVar(&progress, "progress", "auto", "progress display: auto, json or none")
	return cmd
}

// damagedError is verify's verdict on an image with bad chunks.
type damagedError struct{ bad, total int }

func (e *damagedError) Error() string {
	return fmt.Sprintf("%d of %d chunks are damaged", e.bad, e.total)
}
func (e *damagedError) Is(target error) bool { return target == image.ErrDamaged }

func runVerify(cmd *cobra.Command, progressFlag, path string) error {
	mode, err := progressMode(progressFlag)
	if err != nil {
		return err
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
	p := ui.NewProgress(mode, os.Stderr, "verify")
	p.Start(total)
	bad, err := r.Verify(cmd.Context(), runtime.GOMAXPROCS(0), p.Add)
	p.Finish()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	for _, b := range bad {
		fmt.Fprintln(out, b.Error())
	}
	if len(bad) > 0 {
		return &damagedError{bad: len(bad), total: len(r.Entries())}
	}
	fmt.Fprintf(out, "%s: OK, %d chunks (%s) verified\n", path, len(r.Entries()), ui.Bytes(total))
	return nil
}
