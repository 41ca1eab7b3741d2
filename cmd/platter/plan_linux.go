package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/plan"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type planOptions struct {
	file string // --plan
	now  string
	wait bool
	json bool
	root string
	at   string
}

func newPlanCommand() *cobra.Command {
	var opts planOptions
	cmd := &cobra.Command{
		Use:   "plan run|status|install|uninstall|restore",
		Short: "Backups that run themselves: schedule, retention, verification",
		Long: `A plan is a TOML file, /etc/platter/plans/NAME.toml (or --plan FILE), that
says what to back up, where, on which schedule (systemd calendar
expressions for full, differential and incremental images), what to keep
(prune's rules), whether to verify, and what to run when a run fails.

  plan run NAME        make what is due now (--now TIME: as at TIME), then
                       verify it, prune the set by [keep], verify what
                       prune merged; a lock keeps runs from overlapping and
                       each run leaves a JSON record in DEST/.platter-runs/
  plan status [NAME]   last runs, restore points, set size, next run, units
  plan install NAME    write and enable a systemd service and timer
                       (--root DIR: under DIR, for packaging and tests)
  plan uninstall NAME  disable and remove them
  plan restore NAME TARGET
                       restore the newest restore point (--at TIME: the
                       newest at or before TIME) as platter restore does

docs/plans.md describes every key of a plan file.`,
		Example: `  platter plan status                # every plan: last runs, restore points, next run
  cat > /etc/platter/plans/laptop.toml <<EOF
  source = "/"                       # the disk holding /
  destination = "/backup/laptop"
  verify = true
  on_failure = "logger -t platter \"backup failed: $PLATTER_ERROR\""
  [schedule]
  full = "monthly"
  differential = "weekly"
  incremental = "daily"
  [keep]
  last = 3
  daily = 7
  weekly = 4
  monthly = 6
  EOF
  platter plan run laptop            # the first run makes a full image
  platter plan install laptop        # then systemd runs it
  platter plan status laptop
  platter plan restore laptop --at "2026-03-04 20:00" /dev/sdb`,
	}
	cmd.PersistentFlags().StringVar(&opts.file, "plan", "", "read the plan from `FILE` instead of /etc/platter/plans/NAME.toml")
	run := &cobra.Command{
		Use:   "run [flags] NAME",
		Short: "Do what the plan has due now: create, verify, prune",
		Example: `  platter plan run laptop
  platter plan run --plan ./laptop.toml --now "2026-03-04 20:00"   # as at that time: to catch up, or to test a plan
  platter plan run --wait --json laptop`,
		Args: planArgs(&opts, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlanRun(cmd, opts, argOr(args, 0))
		},
	}
	run.Flags().StringVar(&opts.now, "now", "", "run as at `TIME` (RFC 3339, or local 2026-03-04 20:00): to catch up, and for tests")
	run.Flags().BoolVar(&opts.wait, "wait", false, "wait for a run of the plan in progress to end, instead of refusing")
	run.Flags().BoolVar(&opts.json, "json", false, "print the run's record as JSON on stdout")
	status := &cobra.Command{
		Use:   "status [flags] [NAME]",
		Short: "Last runs, restore points, size and next run of each plan",
		Example: `  platter plan status            # every plan in /etc/platter/plans
  platter plan status laptop
  platter plan status --json laptop`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("plan status takes at most one plan name")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlanStatus(cmd, opts, argOr(args, 0))
		},
	}
	status.Flags().BoolVar(&opts.json, "json", false, "print the status as JSON on stdout")
	install := &cobra.Command{
		Use:   "install [flags] NAME",
		Short: "Write and enable the plan's systemd service and timer",
		Example: `  platter plan install laptop
  platter plan install --root pkgroot laptop   # the units under pkgroot/etc/systemd/system, for a package`,
		Args: planArgs(&opts, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlanInstall(cmd, opts, argOr(args, 0))
		},
	}
	install.Flags().StringVar(&opts.root, "root", "/", "write the units under `DIR` (for packaging and tests); with / systemd is told too")
	uninstall := &cobra.Command{
		Use:     "uninstall [flags] NAME",
		Short:   "Disable and remove the plan's systemd units",
		Example: `  platter plan uninstall laptop`,
		Args:    planArgs(&opts, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPlanUninstall(cmd, opts, argOr(args, 0))
		},
	}
	uninstall.Flags().StringVar(&opts.root, "root", "/", "remove the units under `DIR`")
	// restore's own --plan (print the layout plan) would shadow the
	// plan file's: plan restore takes the flags of restore it needs.
	ropts := restoreOptions{progress: "auto"}
	restore := &cobra.Command{
		Use:   "restore [flags] NAME TARGET",
		Short: "Restore the plan's newest restore point (or the one in force at --at)",
		Long: `Restore writes the plan's newest restore point that restores, or with --at
TIME the newest made at or before TIME, onto TARGET: with the same code and
checks as platter restore (a mounted target, one too small, or a device
without --yes is refused).`,
		Example: `  platter plan restore laptop /dev/sdb --yes
  platter plan restore laptop --at "2026-03-04 20:00" disk.img
  platter plan restore laptop --partition 2 /dev/sdb2 --yes`,
		Args: planArgs(&opts, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, target := "", args[len(args)-1]
			if len(args) == 2 {
				name = args[0]
			}
			return runPlanRestore(cmd, opts, ropts, name, target)
		},
	}
	rf := restore.Flags()
	rf.BoolVar(&ropts.yes, "yes", false, "do not ask before overwriting a block device")
	rf.IntVar(&ropts.partition, "partition", 0, "restore only partition N's contents into TARGET")
	rf.StringVar(&ropts.progress, "progress", "auto", "progress display: auto, json or none")
	rf.BoolVar(&ropts.json, "json", false, "print the result as JSON on stdout")
	restore.Flags().StringVar(&opts.at, "at", "", "restore the newest restore point made at or before `TIME` (RFC 3339, or local 2026-03-04 20:00)")
	cmd.AddCommand(run, status, install, uninstall, restore)
	return cmd
}

// planArgs takes NAME (optional with --plan) and then n more arguments.
func planArgs(opts *planOptions, n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n+1 || (opts.file != "" && len(args) == n) {
			return nil
		}
		return usagef("%s takes a plan name%s (or --plan FILE), got %d arguments (usage: %s)", cmd.CommandPath(), map[bool]string{true: " and a TARGET", false: ""}[n == 1], len(args), cmd.UseLine())
	}
}

func argOr(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

// loadPlan reads the plan called name (or --plan's file). A plan file
// that cannot be used is a usage error: it is what the user wrote.
func loadPlan(opts planOptions, name string) (*plan.Plan, error) {
	path, err := plan.Find(name, opts.file)
	if err != nil {
		return nil, &usageError{err}
	}
	p, err := plan.Load(path)
	var fe *plan.FileError
	switch {
	case errors.As(err, &fe):
		return nil, &usageError{err}
	case errors.Is(err, os.ErrNotExist) && opts.file == "":
		return nil, usagef("no plan %s: %s does not exist (write it, or name a plan file with --plan FILE)", name, path)
	case err != nil:
		return nil, err
	}
	if name != "" && opts.file != "" && name != p.Name {
		return nil, usagef("--plan %s is plan %s, not %s (a plan is named by its file)", opts.file, p.Name, name)
	}
	// The plan's secrets open its images for every step (reading the
	// set, create's parent, verify, prune, restore), unless the command
	// line gives its own.
	if p.PasswordFile != "" && secretFlags.passwordFile == "" {
		secretFlags.passwordFile = p.PasswordFile
	}
	if len(secretFlags.identities) == 0 {
		secretFlags.identities = p.Identities
	}
	return p, nil
}

// imageRE matches the names of a plan's images: NAME-YYYYMMDD-HHMM-KIND.platter.
func imageRE(name string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-\d{8}-\d{4}(\d{2})?-(full|differential|incremental)\.platter$`)
}

// imageName is the name of the plan's image of kind k made at t.
func imageName(name string, t time.Time, k plan.Kind) string {
	return fmt.Sprintf("%s-%s-%s.platter", name, t.Local().Format("20060102-1504"), k)
}

// planImages is the plan's images in its destination.
type planImages struct {
	place   store.Place
	images  []*imageset.Image // the plan's, oldest first
	others  []string          // images in the destination that are not the plan's
	damaged []*imageset.Image // the plan's that do not open
}

func readPlanSet(ctx context.Context, p *plan.Plan) (*planImages, error) {
	place, _, err := locate(ctx, p.Destination, true)
	if err != nil {
		return nil, err
	}
	s := &planImages{place: place}
	if dir, ok := store.Local(place); ok {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return s, nil
		}
	}
	d, err := readDir(ctx, p.Destination)
	if err != nil {
		return nil, err
	}
	re := imageRE(p.Name)
	for _, set := range d.Sets {
		for _, im := range set.Images {
			if !im.InDir {
				continue
			}
			if re.MatchString(im.Name) {
				s.images = append(s.images, im)
			} else {
				s.others = append(s.others, im.Path)
			}
		}
	}
	for _, im := range append(d.Damaged, d.Locked...) {
		if re.MatchString(im.Name) {
			s.damaged = append(s.damaged, im)
		} else {
			s.others = append(s.others, im.Path)
		}
	}
	sort.SliceStable(s.images, func(i, j int) bool { return s.images[i].Meta.Created.Before(s.images[j].Meta.Created) })
	return s, nil
}

// points is the set as plan.Due sees it; broken names the images a
// failed run found in a damaged chain.
func (s *planImages) points(broken map[string]string) []plan.Point {
	var out []plan.Point
	for _, im := range s.images {
		k, _ := plan.ParseKind(im.Meta.Type)
		pt := plan.Point{Name: im.Name, Kind: k, Created: im.Meta.Created}
		switch {
		case im.Problem != nil:
			pt.Broken = problem(im)
		case broken[im.Name] != "":
			pt.Broken = broken[im.Name]
		}
		out = append(out, pt)
	}
	return out
}

func (s *planImages) find(name string) *imageset.Image {
	for _, im := range s.images {
		if im.Name == name {
			return im
		}
	}
	return nil
}

// recordPlace is where the plan's run records are: DEST/.platter-runs.
func recordPlace(ctx context.Context, p *plan.Plan, mkdir bool) (store.Place, error) {
	dest := p.Destination
	if strings.HasPrefix(dest, "s3://") {
		place, _, err := locate(ctx, strings.TrimSuffix(dest, "/")+"/"+plan.RecordDir+"/", true)
		return place, err
	}
	dir := filepath.Join(dest, plan.RecordDir)
	if mkdir {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	return store.NewDir(dir), nil
}

// lockPath is the plan's lock file: in a local destination, else under
// /run/lock/platter.
func lockPath(p *plan.Plan) (string, error) {
	if strings.HasPrefix(p.Destination, "s3://") {
		dir := "/run/lock/platter"
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		return filepath.Join(dir, p.Name+".plan.lock"), nil
	}
	return filepath.Join(p.Destination, "."+p.Name+".plan.lock"), nil
}

// brokenSince collects the images that the failed runs since the last
// good one found in damaged chains.
func brokenSince(recs []*plan.Record) map[string]string {
	out := map[string]string{}
	for i := len(recs) - 1; i >= 0 && !recs[i].OK; i-- {
		for _, name := range strings.Split(recs[i].ChainBroken, ",") {
			if name != "" {
				out[name] = "the run of " + recs[i].At.Local().Format("2006-01-02 15:04") + " found its chain damaged: " + recs[i].Error
			}
		}
	}
	return out
}

func runPlanRun(cmd *cobra.Command, opts planOptions, name string) error {
	ctx := cmd.Context()
	p, err := loadPlan(opts, name)
	if err != nil {
		return err
	}
	at := time.Now()
	if opts.now != "" {
		if at, err = plan.ParseTime(opts.now); err != nil {
			return usagef("--now: %v", err)
		}
	}
	at = at.Truncate(time.Second)
	if !strings.HasPrefix(p.Destination, "s3://") {
		if err := os.MkdirAll(p.Destination, 0o700); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
	}
	lp, err := lockPath(p)
	if err != nil {
		return err
	}
	lock, err := plan.Lock(lp, p.Name, opts.wait)
	if err != nil {
		return err
	}
	defer lock.Close()

	rp, err := recordPlace(ctx, p, true)
	if err != nil {
		return fmt.Errorf("run records: %w", err)
	}
	recs, bad, err := plan.Records(ctx, rp, p.Name)
	if err != nil {
		return fmt.Errorf("run records: %w", err)
	}
	for _, b := range bad {
		warn("run record %s", b)
	}
	set, err := readPlanSet(ctx, p)
	if err != nil {
		return err
	}
	var made []plan.Made
	for _, r := range recs {
		if k, ok := plan.ParseKind(r.Kind); ok && r.OK && r.Kind != "" {
			made = append(made, plan.Made{Kind: k, At: r.At})
		}
	}
	d := p.Due(at, set.points(brokenSince(recs)), made)
	out := cmd.OutOrStdout()
	if !d.Due {
		if opts.json {
			return report(cmd, true, map[string]any{"plan": p.Name, "at": at, "due": false, "next": d.Next})
		}
		if d.Next.IsZero() {
			fmt.Fprintf(out, "plan %s: nothing due; no schedule elapses again\n", p.Name)
		} else {
			fmt.Fprintf(out, "plan %s: nothing due; next run at %s\n", p.Name, d.Next.Local().Format("2006-01-02 15:04:05 MST"))
		}
		return nil
	}
	rec := &plan.Record{Plan: p.Name, At: at, Started: time.Now(), Kind: d.Kind.String()}
	if d.Why != "" {
		rec.Scheduled, rec.Why = d.Scheduled.String(), d.Why
	}
	for _, im := range set.damaged {
		rec.Warnings = append(rec.Warnings, fmt.Sprintf("%s does not open: %v", im.Path, im.Err))
	}
	runErr := planRun(ctx, p, set, d, rec)
	rec.Ended = time.Now()
	rec.Seconds = rec.Ended.Sub(rec.Started).Seconds()
	rec.OK = runErr == nil
	if runErr != nil {
		rec.Error = oneLine(runErr.Error())
	}
	recPath, werr := plan.WriteRecord(ctx, rp, rec)
	if werr != nil {
		warn("plan %s: the run record was not written: %v", p.Name, werr)
	}
	if runErr != nil && p.OnFailure != "" {
		rec.OnFailure = onFailure(ctx, p, rec.Error, recPath)
		if werr == nil {
			if err := plan.ReplaceRecord(ctx, rp, rec); err != nil {
				warn("plan %s: the run record was not updated with the failure command's result: %v", p.Name, err)
			}
		}
	}
	if opts.json {
		if err := report(cmd, true, rec); err != nil {
			return err
		}
	} else if !quiet {
		for _, l := range recordLines(rec) {
			fmt.Fprintln(out, l)
		}
	}
	for _, w := range rec.Warnings {
		warn("%s", w)
	}
	if runErr != nil {
		return fmt.Errorf("plan %s: %w", p.Name, runErr)
	}
	return nil
}

// planRun makes the image d says, verifies it, prunes, and verifies what
// prune merged, filling in rec. On failure the set is as it was: the
// image made is removed if it did not verify.
func planRun(ctx context.Context, p *plan.Plan, set *planImages, d plan.Decision, rec *plan.Record) error {
	source, err := plan.ResolveSource(p.Source)
	if err != nil {
		return err
	}
	name := imageName(p.Name, rec.At, d.Kind)
	path := store.Path(set.place, name)
	rec.Image = path
	args := []string{"--progress", "none", "--json"}
	if p.Compression != "" {
		args = append(args, "--compress", p.Compression)
	}
	if p.Snapshot != "" {
		args = append(args, "--snapshot", p.Snapshot)
	}
	var parent *imageset.Image
	if d.Parent != nil {
		parent = set.find(d.Parent.Name)
		rec.Parent = parent.Path
		args = append(args, "--"+d.Kind.String(), parent.Path)
	} else {
		if p.ChunkSize != "" {
			args = append(args, "--chunk-size", p.ChunkSize)
		}
		if p.Encrypt {
			args = append(args, "--encrypt")
		}
		for _, r := range p.Recipients {
			args = append(args, "--recipient", r)
		}
	}
	var copts createOptions
	ccmd := createCommand(&copts)
	if err := ccmd.ParseFlags(args); err != nil {
		return err
	}
	copts.at = rec.At
	var buf bytes.Buffer
	ccmd.SetContext(ctx)
	ccmd.SetOut(&buf)
	if err := runCreate(ccmd, copts, source, path); err != nil {
		if parent != nil && isChainDamage(err) {
			rec.ChainBroken = chainNames(parent)
		}
		return fmt.Errorf("create %s: %w", name, err)
	}
	var sum createSummary
	if err := json.Unmarshal(buf.Bytes(), &sum); err != nil {
		return fmt.Errorf("create %s: its summary: %w", name, err)
	}
	rec.ImageBytes, rec.BytesRead = sum.ImageBytes, sum.UsedBytes
	if p.Verify {
		v := verifyImage(ctx, path)
		rec.Verify = append(rec.Verify, v)
		if !v.OK {
			// The set as it was: the image just made goes (nothing was
			// made on it), and the next run starts a new chain.
			if err := set.place.Remove(ctx, name); err != nil {
				rec.Warnings = append(rec.Warnings, fmt.Sprintf("%s did not verify and was not removed: %v", path, err))
			} else {
				rec.Removed = path
			}
			if parent != nil {
				rec.ChainBroken = chainNames(parent)
			}
			return &verifyFailed{path, v.Error}
		}
	}
	if p.Keep.Any() {
		if len(set.others) > 0 {
			rec.Warnings = append(rec.Warnings, fmt.Sprintf("not pruned: %s holds images that are not plan %s's (%s); prune would apply the plan's rules to them too", p.Destination, p.Name, set.others[0]))
		} else {
			pr, err := prunePlan(ctx, p)
			rec.Prune = pr
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			if p.Verify {
				for _, m := range pr.Merged {
					v := verifyImage(ctx, m)
					rec.Verify = append(rec.Verify, v)
					if !v.OK {
						return &verifyFailed{m, v.Error}
					}
				}
			}
		}
	}
	return nil
}

// verifyFailed is an image the run made or merged that did not verify.
type verifyFailed struct{ path, why string }

func (e *verifyFailed) Error() string        { return fmt.Sprintf("verify %s: %s", e.path, e.why) }
func (e *verifyFailed) Is(target error) bool { return target == image.ErrDamaged }

// isChainDamage says create failed on the parent chain, not the source.
func isChainDamage(err error) bool {
	var me *MissingParentError
	return errors.As(err, &me) || exitCode(err) == exitDamaged
}

// chainNames is im and its ancestors in the destination, by name.
func chainNames(im *imageset.Image) string {
	var names []string
	for a := im; a != nil; a = a.Parent {
		names = append(names, a.Name)
	}
	return strings.Join(names, ",")
}

// verifyImage runs verify on one image (with its chain).
func verifyImage(ctx context.Context, path string) plan.VerifyResult {
	vcmd := newVerifyCommand()
	var buf bytes.Buffer
	vcmd.SetContext(ctx)
	vcmd.SetOut(&buf)
	err := runVerify(vcmd, "none", true, path)
	v := plan.VerifyResult{Image: path, OK: err == nil}
	if err != nil {
		var sum verifySummary
		if json.Unmarshal(buf.Bytes(), &sum) == nil && len(sum.Damaged) > 0 {
			v.Error = strings.Join(sum.Damaged, "; ")
		} else {
			v.Error = oneLine(err.Error())
		}
	}
	return v
}

// prunePlan runs prune on the destination with the plan's rules.
func prunePlan(ctx context.Context, p *plan.Plan) (*plan.PruneResult, error) {
	pcmd := newPruneCommand()
	var buf bytes.Buffer
	pcmd.SetContext(ctx)
	pcmd.SetOut(&buf)
	err := runPrune(pcmd, pruneOptions{last: p.Keep.Last, daily: p.Keep.Daily, weekly: p.Keep.Weekly, monthly: p.Keep.Monthly, json: true}, p.Destination)
	pr := &plan.PruneResult{Kept: []string{}, Merged: []string{}, Deleted: []string{}}
	var doc pruneJSON
	if jerr := json.Unmarshal(buf.Bytes(), &doc); jerr == nil {
		for _, s := range doc.Sets {
			for _, k := range s.Keep {
				pr.Kept = append(pr.Kept, k.File)
			}
			for _, m := range s.Merge {
				pr.Merged = append(pr.Merged, m.File)
			}
			if doc.Done {
				for _, d := range s.Delete {
					pr.Deleted = append(pr.Deleted, d.File)
				}
			}
		}
	}
	if err != nil {
		pr.Error = oneLine(err.Error())
	}
	return pr, err
}

// onFailure runs the plan's failure command; its own failure is
// reported, not fatal.
func onFailure(ctx context.Context, p *plan.Plan, msg, record string) *plan.HookResult {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", p.OnFailure)
	c.Env = append(os.Environ(), "PLATTER_PLAN="+p.Name, "PLATTER_ERROR="+msg, "PLATTER_RECORD="+record)
	b, err := c.CombinedOutput()
	h := &plan.HookResult{Command: p.OnFailure, Output: string(bytes.TrimSpace(truncate(b, 4096)))}
	if err != nil {
		h.Error = err.Error()
		h.Exit = c.ProcessState.ExitCode()
		warn("plan %s: on_failure %q failed: %v", p.Name, p.OnFailure, err)
	}
	return h
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// recordLines says what a run did.
func recordLines(r *plan.Record) []string {
	at := r.At.Local().Format("2006-01-02 15:04")
	var lines []string
	what := fmt.Sprintf("plan %s at %s: %s image %s", r.Plan, at, r.Kind, r.Image)
	if r.Parent != "" {
		what += " on " + filepath.Base(r.Parent)
	}
	if r.OK || r.ImageBytes > 0 {
		what += fmt.Sprintf(", %s read, image %s", ui.Bytes(r.BytesRead), ui.Bytes(r.ImageBytes))
	}
	lines = append(lines, what)
	if r.Why != "" {
		lines = append(lines, "  full instead: "+r.Why)
	}
	for _, v := range r.Verify {
		if v.OK {
			lines = append(lines, "  verified "+filepath.Base(v.Image))
		} else {
			lines = append(lines, "  DAMAGED "+filepath.Base(v.Image)+": "+v.Error)
		}
	}
	if r.Removed != "" {
		lines = append(lines, "  removed "+filepath.Base(r.Removed)+": the set is as it was")
	}
	if pr := r.Prune; pr != nil {
		lines = append(lines, fmt.Sprintf("  pruned: kept %d, merged %d, deleted %d", len(pr.Kept), len(pr.Merged), len(pr.Deleted)))
	}
	if r.Error != "" {
		lines = append(lines, "  FAILED: "+r.Error)
	}
	if h := r.OnFailure; h != nil {
		s := "  ran on_failure"
		if h.Error != "" {
			s += " (it failed: " + h.Error + ")"
		}
		lines = append(lines, s)
	}
	lines = append(lines, fmt.Sprintf("  %.1fs", r.Seconds))
	return lines
}
