package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/store"
	"github.com/spf13/cobra"
)

func newConsolidateCommand() *cobra.Command {
	var split string
	cmd := &cobra.Command{
		Use:   "consolidate IMAGE",
		Short: "Make an incremental or differential image a full one",
		Long: `Consolidate rewrites IMAGE, an incremental or differential image, as a full
image of the same restore point: every chunk it takes from its parents is
copied in (checked, not compressed again). It keeps its id and content, so
images made from it still use it; its parents are no longer needed by it.
The file is replaced atomically. A split image keeps its volume size
unless --split says another (--split 0: one file).`,
		Example: `  platter consolidate set/thu.platter   # a full image now; images made from it still work
  platter consolidate --split 4095M usb/thu.platter   # in volumes a FAT32 drive takes`,
		Args: exactArgs(1),
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
			size, err := splitOf(cmd, split, files[0])
			if err != nil {
				return err
			}
			n, err := fold(cmd.Context(), args[0], r, nil, size)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "consolidated %s: a full image now (%d chunks copied from its parents)\n", args[0], n)
			return nil
		},
	}
	cmd.Flags().StringVar(&split, "split", "", splitFlag+" (default: as the image is now; 0: one file)")
	return cmd
}

// splitOf is the volume size a rewrite of the image o writes: --split
// when given, else o's own.
func splitOf(cmd *cobra.Command, flag string, o store.Object) (int64, error) {
	if cmd.Flags().Changed("split") {
		return parseSplit(flag)
	}
	return volumeSize(o), nil
}

// fold rewrites the image at path (r, with its chain attached) to depend
// on newParent, one of its ancestors (nil: on nothing), in volumes of
// split bytes (0: one piece), atomically: it writes the new image beside
// the old one, checks it (same id and content, attaches to newParent,
// every chunk verified) and only then gives it the old one's name. An
// image that cannot be read before it is complete (an upload) is checked
// right after.
func fold(ctx context.Context, path string, r, newParent *image.Reader, split int64) (int, error) {
	place, name, err := imageAt(ctx, path)
	if err != nil {
		return 0, err
	}
	sink, err := place.Create(ctx, name, store.CreateOptions{Force: true, Split: split})
	if err != nil {
		return 0, err
	}
	defer sink.Abort() // a no-op once committed
	n, err := image.Fold(sink, r, newParent, tempDir(place))
	if err != nil {
		return 0, tooLarge(fmt.Errorf("consolidate %s: %w", path, err))
	}
	rr, ok := sink.(store.Rereader)
	if !ok {
		if err := sink.Commit(); err != nil {
			return 0, err
		}
		o, nr, err := openOne(ctx, place, name)
		if err != nil {
			return 0, fmt.Errorf("consolidate %s: the new image, which replaced the old one, does not read back: %w", path, err)
		}
		defer o.Close()
		defer nr.Close()
		return n, checkFolded(ctx, path, nr, r, newParent, "it replaced the old one")
	}
	// Check the new image before it takes the old one's place.
	o, err := rr.Reread()
	if err != nil {
		return 0, tooLarge(err)
	}
	defer o.Close()
	nr, err := image.Open(o, o.Size(), keyring())
	if err != nil {
		return 0, fmt.Errorf("consolidate %s: the new image does not read back: %w", path, err)
	}
	nr.SetName(o.Name())
	defer nr.Close()
	if err := checkFolded(ctx, path, nr, r, newParent, "nothing was changed"); err != nil {
		return 0, err
	}
	return n, tooLarge(sink.Commit())
}

// checkFolded checks the image fold wrote (nr) against the one it
// rewrote (r): same id and content, attached to newParent, every chunk
// verified. done says what became of the old image if it does not pass.
func checkFolded(ctx context.Context, path string, nr, r, newParent *image.Reader, done string) error {
	if nr.ID() != r.ID() || nr.ContentDigest() != r.ContentDigest() {
		return fmt.Errorf("consolidate %s: the new image has other contents (internal error); %s", path, done)
	}
	if newParent != nil {
		if err := nr.AttachParent(newParent); err != nil {
			return err
		}
	}
	if bad, err := nr.Verify(ctx, runtime.GOMAXPROCS(0), nil); err != nil || len(bad) > 0 {
		return fmt.Errorf("consolidate %s: the new image does not verify (%v %v); %s", path, err, bad, done)
	}
	return nil
}
