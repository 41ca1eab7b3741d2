package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type pruneOptions struct {
	last, daily, weekly, monthly int
	dryRun, json                 bool
	split                        string
}

func newPruneCommand() *cobra.Command {
	var opts pruneOptions
	cmd := &cobra.Command{
		Use:   "prune [flags] DIR",
		Short: "Remove restore points outside retention rules",
		Long: `Prune keeps the images in DIR that the rules select and deletes the others.
The rules apply to each disk's images separately (the sets that list
shows): --keep-last 1 keeps the newest image of every disk in DIR.

An image kept whose parent is deleted is first merged onto its nearest
kept ancestor (or into a full image): the chunks it takes from the images
that go are copied into it, so every kept image still restores exactly
as before. A merge rewrites the image, so it writes the whole new file
and makes it bigger by what it copies in.

Prune prints its plan first, per disk: what it keeps, merges and deletes,
how much it writes (an estimate: the frames copied are counted exactly,
the index and metadata are taken to keep their size) and how much it
frees (the deleted files, less what the merges add; when merges add
more, it says the directory grows). --dry-run only prints the plan.
Merges happen before any deletion; a failed merge deletes nothing.`,
		Example: `  $ platter prune --keep-last 1 --dry-run backup
  disk 1: laptop.img, 256.0 MiB, gpt 5BD3FA5A-7E50-4C77-83BB-5DC58E729A42, host vm
    keep    2026-03-04 20:00  incremental    13.0 MiB  laptop-wed.platter
    merge   laptop-wed.platter into a full image: writes about 44.2 MiB
    delete  2026-03-02 20:00  full           27.2 MiB  laptop-mon.platter
    delete  2026-03-03 20:00  incremental    20.0 MiB  laptop-tue.platter
    keep 1, merge 1, delete 2: writes about 44.2 MiB, frees 16.0 MiB

  disk 2: usb-stick.img, 512.0 MiB, no partition table, host vm
    keep    2026-03-06 20:10  differential    3.0 MiB  usb-fri.platter
    merge   usb-fri.platter into a full image: writes about 123.0 MiB
    delete  2026-03-02 20:10  full          120.0 MiB  usb-full.platter
    delete  2026-03-05 20:10  differential    1.0 MiB  usb-thu.platter
    keep 1, merge 1, delete 2: writes about 123.0 MiB, frees 1.0 MiB

  all disks: keep 2, merge 2, delete 4: writes about 167.3 MiB, frees 17.0 MiB
  dry run: nothing changed

  $ platter prune --keep-last 2 --dry-run backup    # two differentials kept
  ...
    merge   usb-thu.platter into a full image: writes about 121.0 MiB
    merge   usb-fri.platter into a full image: writes about 123.0 MiB
    delete  2026-03-02 20:10  full          120.0 MiB  usb-full.platter
    keep 2, merge 2, delete 1: writes about 244.0 MiB, grows by 120.0 MiB

  $ platter prune --keep-daily 7 --keep-weekly 4 --keep-monthly 12 backup`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPrune(cmd, opts, args[0])
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.last, "keep-last", 0, "keep the N newest images of each disk")
	f.IntVar(&opts.daily, "keep-daily", 0, "keep each disk's newest image of each of its last N days with one")
	f.IntVar(&opts.weekly, "keep-weekly", 0, "keep each disk's newest image of each of its last N ISO weeks with one")
	f.IntVar(&opts.monthly, "keep-monthly", 0, "keep each disk's newest image of each of its last N months with one")
	f.BoolVar(&opts.dryRun, "dry-run", false, "print the plan and change nothing")
	f.BoolVar(&opts.json, "json", false, "print the plan, and what was done, as one JSON document")
	f.StringVar(&opts.split, "split", "", "write merged images in volumes of at most SIZE bytes (default: as each image is now; 0: one file)")
	return cmd
}

// setPlan is what prune does to one set.
type setPlan struct {
	set    *imageset.Set
	keep   map[*imageset.Image]bool
	merges []merge
}

// merge rewrites im onto onto, a kept ancestor (nil: into a full image).
type merge struct {
	im, onto *imageset.Image
	cost     imageset.MergeCost
	after    int64 // the file's size once merged
}

// deleted is the bytes of the files the plan deletes.
func (p *setPlan) deleted() (n int64, count int) {
	for _, im := range p.set.Images {
		if !p.keep[im] {
			n += im.Size
			count++
		}
	}
	return n, count
}

// writes and grows are the merges' estimates: bytes written, and how
// much bigger the merged files get.
func (p *setPlan) writes() (w, g int64) {
	for _, m := range p.merges {
		w += m.cost.Writes
		g += m.cost.Grows()
	}
	return w, g
}

func runPrune(cmd *cobra.Command, opts pruneOptions, dir string) error {
	if opts.last <= 0 && opts.daily <= 0 && opts.weekly <= 0 && opts.monthly <= 0 {
		return usagef("prune needs a rule (--keep-last, --keep-daily, --keep-weekly or --keep-monthly): it will not delete every image")
	}
	d, err := readDir(cmd.Context(), dir)
	if err != nil {
		return err
	}
	if len(d.Damaged) > 0 {
		im := d.Damaged[0]
		return fmt.Errorf("%s does not open, so prune cannot tell which disk it is of; it changes nothing while an image in %s is damaged (move it away, or delete it): %w", im.Path, dir, im.Err)
	}
	if len(d.Locked) > 0 {
		im := d.Locked[0]
		return fmt.Errorf("%s is encrypted and locked, so prune cannot tell which disk it is of; it changes nothing while an image in %s is locked (give its passphrase or identity, or move it away): %w", im.Path, dir, im.Err)
	}
	if len(d.Sets) == 0 {
		return fmt.Errorf("no images in %s", dir)
	}
	seen := map[string]string{}
	for _, s := range d.Sets {
		for _, im := range s.Images {
			if other, dup := seen[im.ID]; dup {
				return fmt.Errorf("%s and %s are the same image (id %s): prune changes nothing while %s holds an image twice (delete one copy)", other, im.Path, im.ID, dir)
			}
			seen[im.ID] = im.Path
		}
	}
	var plans []*setPlan
	for _, s := range d.Sets {
		p, err := planSet(s, opts, dir)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	out := cmd.OutOrStdout()
	if !opts.json && !quiet {
		printPlan(out, plans)
		if opts.dryRun {
			fmt.Fprintln(out, "dry run: nothing changed")
		}
	}
	var runErr error
	if !opts.dryRun {
		runErr = carryOut(cmd, plans, opts.split)
	}
	if opts.json {
		return errors.Join(runErr, report(cmd, true, pruneDoc(dir, plans, opts.dryRun, runErr)))
	}
	if runErr != nil || opts.dryRun || quiet {
		return runErr
	}
	var freed int64
	var merged, gone int
	for _, p := range plans {
		freed += p.freed()
		_, n := p.deleted()
		merged, gone = merged+len(p.merges), gone+n
	}
	fmt.Fprintf(out, "done: merged %d, deleted %d: %s\n", merged, gone, freesText(freed, "freed", "grew"))
	return nil
}

// planSet applies the rules to one set: what it keeps, and the merges
// that keep every kept image restoring once the others go, with what
// each writes.
func planSet(s *imageset.Set, opts pruneOptions, dir string) (*setPlan, error) {
	p := &setPlan{set: s, keep: retain(s.Images, opts)}
	if _, n := p.deleted(); n == 0 {
		return p, nil
	}
	// A kept image that does not restore may need any image of its disk
	// once its chain is found: delete none of them.
	for _, im := range s.Images {
		if p.keep[im] && im.Problem != nil {
			return nil, fmt.Errorf("%s is kept but does not restore (%s): prune deletes no image of its disk, any of which may be in its chain, until the chain is whole (--search DIR) or the image is deleted", im.Path, problem(im))
		}
	}
	// Each kept image whose parent goes is merged onto its nearest kept
	// ancestor, oldest first, before anything is deleted.
	for _, im := range s.Images {
		if !p.keep[im] || im.Parent == nil {
			continue
		}
		a := im.Parent
		switch {
		case a.InDir && p.keep[a]:
			continue // its parent stays
		case !a.InDir:
			// Its chain goes on outside DIR, untouched; it must not come
			// back to an image that goes.
			for ; a != nil && !(a.InDir && p.keep[a]); a = a.Parent {
				if a.InDir {
					return nil, fmt.Errorf("%s is kept, and its chain goes through %s, outside %s, to %s, which the rules delete: prune would break it (consolidate %s first)", im.Path, im.Parent.Path, dir, a.Path, im.Path)
				}
			}
			continue
		}
		for a != nil && !p.keep[a] {
			if a.Meta.Parent != "" && !a.Parent.InDir {
				return nil, fmt.Errorf("%s depends on image %s, which is not in %s: prune works on whole sets", a.Path, a.Meta.Parent, dir)
			}
			a = a.Parent
		}
		m := merge{im: im, onto: a}
		var err error
		if m.cost, err = mergeCost(im, a); err != nil {
			return nil, fmt.Errorf("%w; nothing was changed", err)
		}
		p.merges = append(p.merges, m)
	}
	return p, nil
}

// mergeCost opens im's chain and counts what merging it onto onto (nil:
// into a full image) writes.
func mergeCost(im, onto *imageset.Image) (imageset.MergeCost, error) {
	files, r, err := openImage(im.Path)
	if err != nil {
		return imageset.MergeCost{}, err
	}
	defer files.Close()
	defer r.Close()
	ontoR, err := ancestor(r, onto)
	if err != nil {
		return imageset.MergeCost{}, err
	}
	return imageset.Merge(r, ontoR)
}

// ancestor is the reader of a's image in r's chain (nil for a nil a).
func ancestor(r *image.Reader, a *imageset.Image) (*image.Reader, error) {
	if a == nil {
		return nil, nil
	}
	for p := r.Parent(); p != nil; p = p.Parent() {
		if p.ID().String() == a.ID {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%s: %s is not in its chain (internal error)", r.Name(), a.Path)
}

// carryOut merges (in volumes of --split bytes, else as each image is),
// then deletes; a failed merge deletes nothing.
func carryOut(cmd *cobra.Command, plans []*setPlan, split string) error {
	ctx := cmd.Context()
	for _, p := range plans {
		for i := range p.merges {
			m := &p.merges[i]
			files, r, err := openImage(m.im.Path)
			if err != nil {
				return fmt.Errorf("%w; nothing was deleted", err)
			}
			onto, err := ancestor(r, m.onto)
			var size int64
			if err == nil {
				size, err = splitOf(cmd, split, files[0])
			}
			if err == nil {
				_, err = fold(ctx, m.im.Path, r, onto, size)
			}
			r.Close()
			files.Close()
			if err != nil {
				return fmt.Errorf("%w; nothing was deleted", err)
			}
			o, err := m.im.Place.Open(ctx, m.im.Name)
			if err != nil {
				return fmt.Errorf("%w; nothing was deleted", err)
			}
			m.after = o.Size()
			o.Close()
		}
	}
	var errs []error
	for _, p := range plans {
		for _, im := range p.set.Images {
			if !p.keep[im] {
				errs = append(errs, im.Place.Remove(ctx, im.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// freed is what carrying the plan out freed: the deleted files, less
// what the merges added.
func (p *setPlan) freed() int64 {
	n, _ := p.deleted()
	for _, m := range p.merges {
		n -= m.after - m.cost.Size
	}
	return n
}

func printPlan(w io.Writer, plans []*setPlan) {
	var tw, tg, td int64
	var nk, nm, nd int
	for i, p := range plans {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, diskLine(i+1, p.set.Newest().Meta))
		for _, im := range p.set.Images {
			if p.keep[im] {
				fmt.Fprintf(w, "  keep    %s\n", pruneLine(im))
			}
		}
		for _, m := range p.merges {
			onto := "into a full image"
			if m.onto != nil {
				onto = "onto " + filepath.Base(m.onto.Path)
			}
			fmt.Fprintf(w, "  merge   %s %s: writes about %s\n", filepath.Base(m.im.Path), onto, ui.Bytes(m.cost.Writes))
		}
		for _, im := range p.set.Images {
			if !p.keep[im] {
				fmt.Fprintf(w, "  delete  %s\n", pruneLine(im))
			}
		}
		del, n := p.deleted()
		writes, grows := p.writes()
		fmt.Fprintf(w, "  %s\n", planSummary(len(p.set.Images)-n, len(p.merges), n, writes, del-grows))
		tw, tg, td = tw+writes, tg+grows, td+del
		nk, nm, nd = nk+len(p.set.Images)-n, nm+len(p.merges), nd+n
	}
	if len(plans) > 1 {
		fmt.Fprintf(w, "\nall disks: %s\n", planSummary(nk, nm, nd, tw, td-tg))
	}
}

func pruneLine(im *imageset.Image) string {
	return fmt.Sprintf("%s  %-12s  %9s  %s", im.Meta.Created.Local().Format("2006-01-02 15:04"), imageType(im.Meta), ui.Bytes(im.Size), filepath.Base(im.Path))
}

func planSummary(keep, merges, deletes int, writes, frees int64) string {
	s := fmt.Sprintf("keep %d, merge %d, delete %d", keep, merges, deletes)
	if merges == 0 && deletes == 0 {
		return s + ": nothing to do"
	}
	if merges > 0 {
		s += ": writes about " + ui.Bytes(writes) + ", " + freesText(frees, "frees", "grows by")
		return s
	}
	return s + ": " + freesText(frees, "frees", "grows by")
}

// freesText says n bytes freed, or, when negative, that the directory
// grows: merges can add more than deleting frees (two differentials kept
// whose full image goes both become full images).
func freesText(n int64, frees, grows string) string {
	if n < 0 {
		return grows + " " + ui.Bytes(-n)
	}
	return frees + " " + ui.Bytes(n)
}

// pruneJSON is prune --json's document. Byte counts of the plan are
// estimates where they say so; freed_bytes and size_after are measured
// once the plan is carried out.
type pruneJSON struct {
	Dir    string         `json:"dir"`
	DryRun bool           `json:"dry_run"`
	Sets   []pruneSetJSON `json:"sets"`
	pruneTotals
	// Done says the plan was carried out; Error why not all of it was.
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

type pruneTotals struct {
	KeepCount   int `json:"keep_count"`
	MergeCount  int `json:"merge_count"`
	DeleteCount int `json:"delete_count"`
	// WritesBytes is what the merges write (estimate), GrowsBytes how
	// much bigger they make the merged files (estimate), DeletesBytes
	// the deleted files' size and FreesBytes DeletesBytes less
	// GrowsBytes (negative: the directory grows).
	WritesBytes  int64  `json:"writes_bytes"`
	GrowsBytes   int64  `json:"grows_bytes"`
	DeletesBytes int64  `json:"deletes_bytes"`
	FreesBytes   int64  `json:"frees_bytes"`
	FreedBytes   *int64 `json:"freed_bytes,omitempty"`
}

type pruneSetJSON struct {
	diskJSON
	Keep   []pruneImageJSON `json:"keep"`
	Merge  []pruneMergeJSON `json:"merge"`
	Delete []pruneImageJSON `json:"delete"`
	pruneTotals
}

type pruneImageJSON struct {
	ID      string    `json:"id"`
	File    string    `json:"file"`
	Created time.Time `json:"created"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
}

type pruneMergeJSON struct {
	ID       string `json:"id"`
	File     string `json:"file"`
	Onto     string `json:"onto"`      // the kept ancestor's id; "" for a full image
	OntoFile string `json:"onto_file"` // "" for a full image
	Size     int64  `json:"size"`
	// WritesBytes estimates the merged file's size; FramesCopied and
	// FrameBytes are the frames copied in from the images that go.
	WritesBytes  int64  `json:"writes_bytes"`
	FramesCopied int    `json:"frames_copied"`
	FrameBytes   int64  `json:"frame_bytes"`
	SizeAfter    *int64 `json:"size_after,omitempty"`
}

func pruneDoc(dir string, plans []*setPlan, dryRun bool, runErr error) pruneJSON {
	doc := pruneJSON{Dir: dir, DryRun: dryRun, Sets: []pruneSetJSON{}, Done: !dryRun && runErr == nil}
	if runErr != nil {
		doc.Error = oneLine(runErr.Error())
	}
	var total int64
	for _, p := range plans {
		js := pruneSetJSON{diskJSON: disk(p.set.Newest().Meta), Keep: []pruneImageJSON{}, Merge: []pruneMergeJSON{}, Delete: []pruneImageJSON{}}
		for _, im := range p.set.Images {
			ij := pruneImageJSON{ID: im.ID, File: im.Path, Created: im.Meta.Created, Type: imageType(im.Meta), Size: im.Size}
			if p.keep[im] {
				js.Keep = append(js.Keep, ij)
			} else {
				js.Delete = append(js.Delete, ij)
			}
		}
		for _, m := range p.merges {
			mj := pruneMergeJSON{ID: m.im.ID, File: m.im.Path, Size: m.cost.Size, WritesBytes: m.cost.Writes, FramesCopied: m.cost.Frames, FrameBytes: m.cost.FrameBytes}
			if m.onto != nil {
				mj.Onto, mj.OntoFile = m.onto.ID, m.onto.Path
			}
			if doc.Done {
				mj.SizeAfter = &m.after
			}
			js.Merge = append(js.Merge, mj)
		}
		del, n := p.deleted()
		writes, grows := p.writes()
		js.pruneTotals = pruneTotals{KeepCount: len(p.set.Images) - n, MergeCount: len(p.merges), DeleteCount: n,
			WritesBytes: writes, GrowsBytes: grows, DeletesBytes: del, FreesBytes: del - grows}
		if doc.Done {
			freed := p.freed()
			js.FreedBytes = &freed
			total += freed
		}
		t := &doc.pruneTotals
		t.KeepCount, t.MergeCount, t.DeleteCount = t.KeepCount+js.KeepCount, t.MergeCount+js.MergeCount, t.DeleteCount+js.DeleteCount
		t.WritesBytes, t.GrowsBytes, t.DeletesBytes, t.FreesBytes = t.WritesBytes+writes, t.GrowsBytes+grows, t.DeletesBytes+del, t.FreesBytes+del-grows
		doc.Sets = append(doc.Sets, js)
	}
	if doc.Done {
		doc.FreedBytes = &total
	}
	return doc
}

// retain applies the rules: each keeps the newest image of each of its
// last N periods (keep-last: of each image); an image kept by any rule
// is kept. imgs are one set's, oldest first.
func retain(imgs []*imageset.Image, opts pruneOptions) map[*imageset.Image]bool {
	keep := map[*imageset.Image]bool{}
	rule := func(n int, period func(im *imageset.Image) string) {
		seen := map[string]bool{}
		for i := len(imgs) - 1; i >= 0 && len(seen) < n; i-- {
			if k := period(imgs[i]); !seen[k] {
				seen[k] = true
				keep[imgs[i]] = true
			}
		}
	}
	local := func(im *imageset.Image) time.Time { return im.Meta.Created.Local() }
	rule(opts.last, func(im *imageset.Image) string { return im.Path })
	rule(opts.daily, func(im *imageset.Image) string { return local(im).Format("2006-01-02") })
	rule(opts.weekly, func(im *imageset.Image) string { y, w := local(im).ISOWeek(); return fmt.Sprint(y, "-", w) })
	rule(opts.monthly, func(im *imageset.Image) string { return local(im).Format("2006-01") })
	return keep
}
