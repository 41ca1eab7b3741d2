package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/ui"
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

type pruneOptions struct {
	last, daily, weekly, monthly int
	dryRun                       bool
}

func newPruneCommand() *cobra.Command {
	var opts pruneOptions
	cmd := &cobra.Command{
		Use:   "prune [flags] DIR",
		Short: "Remove restore points outside retention rules",
		Long: `Prune keeps the images in DIR that the rules select and deletes the others.
An image kept whose parent is deleted is first consolidated onto its
nearest kept ancestor (or into a full image), so every kept image still
restores exactly as before. It prints its plan; --dry-run only prints it.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPrune(cmd, opts, args[0])
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.last, "keep-last", 0, "keep the N newest images")
	f.IntVar(&opts.daily, "keep-daily", 0, "keep the newest image of each of the last N days that have one")
	f.IntVar(&opts.weekly, "keep-weekly", 0, "keep the newest image of each of the last N weeks (ISO) that have one")
	f.IntVar(&opts.monthly, "keep-monthly", 0, "keep the newest image of each of the last N months that have one")
	f.BoolVar(&opts.dryRun, "dry-run", false, "print the plan and change nothing")
	return cmd
}

// setImage is an image of the directory being pruned.
type setImage struct {
	path string
	meta *image.Metadata
	size int64
}

func runPrune(cmd *cobra.Command, opts pruneOptions, dir string) error {
	if opts.last <= 0 && opts.daily <= 0 && opts.weekly <= 0 && opts.monthly <= 0 {
		return usagef("prune needs a rule (--keep-last, --keep-daily, --keep-weekly or --keep-monthly): it will not delete every image")
	}
	imgs, err := listImages(dir)
	if err != nil {
		return err
	}
	if len(imgs) == 0 {
		return fmt.Errorf("no images in %s", dir)
	}
	byID := map[string]*setImage{}
	for _, im := range imgs {
		byID[im.meta.ID] = im
	}
	keep := retain(imgs, opts)
	out := cmd.OutOrStdout()

	// Each kept image whose parent goes is folded onto its nearest kept
	// ancestor, oldest first, before anything is deleted.
	type foldStep struct {
		im   *setImage
		onto *setImage // nil: a full image
	}
	var folds []foldStep
	for _, im := range imgs {
		if !keep[im] || im.meta.Parent == "" {
			continue
		}
		p, inDir := byID[im.meta.Parent]
		if !inDir || keep[p] {
			continue // its parent stays (or lives elsewhere, untouched)
		}
		for p != nil && !keep[p] {
			next, ok := byID[p.meta.Parent]
			if !ok && p.meta.Parent != "" {
				return fmt.Errorf("%s depends on image %s, which is not in %s: prune works on whole sets", p.path, p.meta.Parent, dir)
			}
			p = next
		}
		folds = append(folds, foldStep{im, p})
	}
	for _, im := range imgs {
		if keep[im] {
			fmt.Fprintf(out, "keep    %s  %s  %s  %s\n", im.meta.Created.Local().Format("2006-01-02 15:04"), imageType(im.meta), fmtSize(im.size), im.path)
		}
	}
	for _, s := range folds {
		onto := "into a full image"
		if s.onto != nil {
			onto = "onto " + s.onto.path
		}
		fmt.Fprintf(out, "merge   %s %s (its parents go)\n", s.im.path, onto)
	}
	for _, im := range imgs {
		if !keep[im] {
			fmt.Fprintf(out, "delete  %s  %s  %s  %s\n", im.meta.Created.Local().Format("2006-01-02 15:04"), imageType(im.meta), fmtSize(im.size), im.path)
		}
	}
	if opts.dryRun {
		fmt.Fprintln(out, "dry run: nothing changed")
		return nil
	}
	for _, s := range folds {
		files, r, err := openImage(s.im.path)
		if err != nil {
			return err
		}
		var onto *image.Reader
		for a := r.Parent(); s.onto != nil && a != nil; a = a.Parent() {
			if a.ID().String() == s.onto.meta.ID {
				onto = a
			}
		}
		if s.onto != nil && onto == nil {
			files.Close()
			return fmt.Errorf("%s: %s is not in its chain (internal error); nothing was deleted", s.im.path, s.onto.path)
		}
		_, err = fold(cmd.Context(), s.im.path, r, onto)
		r.Close()
		files.Close()
		if err != nil {
			return fmt.Errorf("%w; nothing was deleted", err)
		}
	}
	var errs []error
	for _, im := range imgs {
		if !keep[im] {
			errs = append(errs, os.Remove(im.path))
		}
	}
	return errors.Join(errs...)
}

// listImages returns the images in dir (files that are not images are
// left alone), oldest first.
func listImages(dir string) ([]*setImage, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*setImage
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() || strings.HasSuffix(p, ".partial") {
			continue
		}
		if _, err := image.ReadID(p); err != nil {
			continue
		}
		f, r, err := openOne(p)
		if err != nil {
			return nil, err // a damaged image: the user decides
		}
		out = append(out, &setImage{path: p, meta: r.Metadata(), size: r.Size()})
		r.Close()
		f.Close()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].meta.Created.Before(out[j].meta.Created) })
	return out, nil
}

// retain applies the rules: each keeps the newest image of each of its
// last N periods (keep-last: of each image); an image kept by any rule
// is kept.
func retain(imgs []*setImage, opts pruneOptions) map[*setImage]bool {
	keep := map[*setImage]bool{}
	rule := func(n int, period func(im *setImage) string) {
		seen := map[string]bool{}
		for i := len(imgs) - 1; i >= 0 && len(seen) < n; i-- {
			if k := period(imgs[i]); !seen[k] {
				seen[k] = true
				keep[imgs[i]] = true
			}
		}
	}
	local := func(im *setImage) time.Time { return im.meta.Created.Local() }
	rule(opts.last, func(im *setImage) string { return im.path })
	rule(opts.daily, func(im *setImage) string { return local(im).Format("2006-01-02") })
	rule(opts.weekly, func(im *setImage) string { y, w := local(im).ISOWeek(); return fmt.Sprint(y, "-", w) })
	rule(opts.monthly, func(im *setImage) string { return local(im).Format("2006-01") })
	return keep
}

func fmtSize(n int64) string { return fmt.Sprintf("%9s", ui.Bytes(n)) }
