package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/spf13/cobra"
)

func newConsolidateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "consolidate IMAGE",
		Short: "Make an incremental or differential image a full one",
		Long: `Consolidate rewrites IMAGE, an incremental or differential image, as a full
image of the same restore point: every chunk it takes from its parents is
copied in (checked, not compressed again). It keeps its id and content, so
images made from it still use it; its parents are no longer needed by it.
The file is replaced atomically.`,
		Example: `  platter consolidate set/thu.platter   # a full image now; images made from it still work`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, r, err := openImage(args[0])
			if err != nil {
				return err
			}
			defer files.Close()
			defer r.Close()
			if r.Parent() == nil {
				return usagef("%s is a full image already", args[0])
			}
			n, err := fold(cmd.Context(), args[0], r, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "consolidated %s: a full image now (%d chunks copied from its parents)\n", args[0], n)
			return nil
		},
	}
}

// fold rewrites the image at path (r, with its chain attached) to depend
// on newParent, one of its ancestors (nil: on nothing), atomically: it
// writes path.partial, syncs it, checks it (same id and content, attaches
// to newParent, every chunk verified) and renames it over path.
func fold(ctx context.Context, path string, r, newParent *image.Reader) (int, error) {
	p, err := outfile.NewPartial(path)
	if err != nil {
		return 0, err
	}
	defer p.Abort() // a no-op once committed
	n, err := image.Fold(p.File(), r, newParent, filepath.Dir(path))
	if err != nil {
		return 0, fmt.Errorf("consolidate %s: %w", path, err)
	}
	if err := p.File().Sync(); err != nil {
		return 0, err
	}
	// Check the new file before it takes the old one's place.
	st, err := p.File().Stat()
	if err != nil {
		return 0, err
	}
	nr, err := image.NewReader(p.File(), st.Size())
	if err != nil {
		return 0, fmt.Errorf("consolidate %s: the new image does not read back: %w", path, err)
	}
	nr.SetName(p.Name())
	defer nr.Close()
	if nr.ID() != r.ID() || nr.ContentDigest() != r.ContentDigest() {
		return 0, fmt.Errorf("consolidate %s: the new image has other contents (internal error); nothing was changed", path)
	}
	if newParent != nil {
		if err := nr.AttachParent(newParent); err != nil {
			return 0, err
		}
	}
	if bad, err := nr.Verify(ctx, runtime.GOMAXPROCS(0), nil); err != nil || len(bad) > 0 {
		return 0, fmt.Errorf("consolidate %s: the new image does not verify (%v %v); nothing was changed", path, err, bad)
	}
	return n, p.Commit(true)
}
