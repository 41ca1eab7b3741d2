package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/cbt"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/plan"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// planStatus is plan status's account of one plan (--json: a list).
type planStatus struct {
	Plan        string         `json:"plan"`
	File        string         `json:"file"`
	Source      string         `json:"source"`
	Destination string         `json:"destination"`
	Runs        []*plan.Record `json:"runs"` // the last few, oldest first
	Points      []restorePoint `json:"restore_points"`
	TotalBytes  int64          `json:"total_bytes"`
	Next        *time.Time     `json:"next_run,omitempty"`
	Installed   bool           `json:"installed"`
	Enabled     bool           `json:"enabled"`
	Problems    []string       `json:"problems,omitempty"`
	Schedule    plan.Schedule  `json:"schedule"`
	Keep        plan.Keep      `json:"keep"`
	Error       string         `json:"error,omitempty"`
}

// restorePoint is one image of a plan's set.
type restorePoint struct {
	Image   string    `json:"image"`
	Created time.Time `json:"created"`
	Kind    string    `json:"kind"`
	Bytes   int64     `json:"bytes"`
	Problem string    `json:"problem,omitempty"`
}

// shownRuns is how many runs status shows per plan.
const shownRuns = 5

func runPlanStatus(cmd *cobra.Command, opts planOptions, name string) error {
	ctx := cmd.Context()
	var paths []string
	switch {
	case name != "" || opts.file != "":
		path, err := plan.Find(name, opts.file)
		if err != nil {
			return &usageError{err}
		}
		paths = []string{path}
	default:
		m, err := filepath.Glob(filepath.Join(plan.Dir, "*.toml"))
		if err != nil {
			return err
		}
		if len(m) == 0 {
			return fmt.Errorf("no plans in %s (write NAME.toml there; platter help plan)", plan.Dir)
		}
		sort.Strings(m)
		paths = m
	}
	now := time.Now()
	var all []planStatus
	var firstErr error
	for _, path := range paths {
		st := planStatus{File: path, Runs: []*plan.Record{}, Points: []restorePoint{}}
		o := opts
		o.file = path
		p, err := loadPlan(o, "")
		if err != nil {
			st.Plan, st.Error = strings.TrimSuffix(filepath.Base(path), ".toml"), oneLine(err.Error())
			firstErr = cmp.Or(firstErr, err)
			all = append(all, st)
			continue
		}
		st.Plan, st.Source, st.Destination, st.Schedule, st.Keep = p.Name, p.Source, p.Destination, p.Schedule, p.Keep
		if n := p.Next(now); !n.IsZero() {
			st.Next = &n
		}
		unitDir := filepath.Join("/", "etc/systemd/system")
		_, err = os.Stat(filepath.Join(unitDir, timerName(p.Name)))
		st.Installed = err == nil
		_, err = os.Lstat(filepath.Join(unitDir, "timers.target.wants", timerName(p.Name)))
		st.Enabled = err == nil
		if rp, err := recordPlace(ctx, p, false); err == nil {
			recs, bad, err := plan.Records(ctx, rp, p.Name)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				st.Problems = append(st.Problems, "run records: "+err.Error())
			}
			st.Problems = append(st.Problems, bad...)
			if len(recs) > shownRuns {
				recs = recs[len(recs)-shownRuns:]
			}
			st.Runs = append(st.Runs, recs...)
		}
		set, err := readPlanSet(ctx, p)
		if err != nil {
			st.Error = oneLine(err.Error())
			firstErr = cmp.Or(firstErr, err)
			all = append(all, st)
			continue
		}
		for _, im := range set.images {
			rp := restorePoint{Image: im.Path, Created: im.Meta.Created, Kind: imageType(im.Meta), Bytes: im.Size}
			if im.Problem != nil {
				rp.Problem = problem(im)
			}
			st.Points = append(st.Points, rp)
			st.TotalBytes += im.Size
		}
		for _, im := range set.damaged {
			st.Problems = append(st.Problems, fmt.Sprintf("%s does not open: %v", im.Path, im.Err))
			st.TotalBytes += im.Size
		}
		all = append(all, st)
	}
	if opts.json {
		if err := report(cmd, true, all); err != nil {
			return err
		}
		return firstErr
	}
	if quiet {
		return firstErr
	}
	w := cmd.OutOrStdout()
	for i, st := range all {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printPlanStatus(w, st)
	}
	return firstErr
}

func printPlanStatus(w io.Writer, st planStatus) {
	fmt.Fprintf(w, "plan %s (%s)\n", st.Plan, st.File)
	if st.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", st.Error)
		return
	}
	fmt.Fprintf(w, "  %s -> %s\n", st.Source, st.Destination)
	next := "none"
	if st.Next != nil {
		next = st.Next.Local().Format("2006-01-02 15:04 MST")
	}
	units := "not installed (platter plan install " + st.Plan + ")"
	switch {
	case st.Enabled:
		units = "installed and enabled"
	case st.Installed:
		units = "installed, not enabled"
	}
	fmt.Fprintf(w, "  next run: %s; units %s\n", next, units)
	if len(st.Runs) == 0 {
		fmt.Fprintln(w, "  no runs yet")
	} else {
		fmt.Fprintln(w, "  last runs:")
	}
	for _, r := range st.Runs {
		res := "ok"
		if !r.OK {
			res = "FAILED: " + r.Error
		}
		fmt.Fprintf(w, "    %s  %-12s  %9s  %5.1fs  %s\n", r.At.Local().Format("2006-01-02 15:04"), r.Kind, ui.Bytes(r.ImageBytes), r.Seconds, res)
	}
	fmt.Fprintf(w, "  restore points: %d, %s in all\n", len(st.Points), ui.Bytes(st.TotalBytes))
	for _, p := range st.Points {
		line := fmt.Sprintf("    %s  %-12s  %9s  %s", p.Created.Local().Format("2006-01-02 15:04"), p.Kind, ui.Bytes(p.Bytes), filepath.Base(p.Image))
		if p.Problem != "" {
			line += "  (does not restore: " + p.Problem + ")"
		}
		fmt.Fprintln(w, line)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
}

func serviceName(name string) string { return "platter-plan-" + name + ".service" }
func timerName(name string) string   { return "platter-plan-" + name + ".timer" }

// unitSafe refuses what cannot go in a unit file's line as it is.
func unitSafe(what, s string) error {
	if strings.ContainsAny(s, " \t\n\r\"'\\%$;") {
		return usagef("%s %q cannot go in a unit file as it is (spaces, quotes, %% or $ in it)", what, s)
	}
	return nil
}

func planServiceText(self, name, file string) string {
	run := self + " plan run " + name
	if file != "" {
		run = self + " plan run --plan " + file
	}
	return fmt.Sprintf(`[Unit]
Description=Platter backup plan %[1]s
Documentation=https://github.com/platter-dev/platter/blob/main/docs/plans.md
After=local-fs.target network-online.target
Wants=network-online.target

[Service]
Type=oneshot
# S3 credentials and endpoint (AWS_*), PLATTER_PASSWORD: KEY=VALUE lines, 0600.
EnvironmentFile=-/etc/platter/plans/%[1]s.env
ExecStart=%[2]s
Nice=10
IOSchedulingClass=idle
`, name, run)
}

func planTimerText(p *plan.Plan) string {
	var cal strings.Builder
	for _, k := range []plan.Kind{plan.Full, plan.Differential, plan.Incremental} {
		if s := p.Spec(k); s != nil {
			fmt.Fprintf(&cal, "# %s\nOnCalendar=%s\n", k, scheduleExpr(p, k))
		}
	}
	return fmt.Sprintf(`[Unit]
Description=Platter backup plan %[1]s: its schedule
Documentation=https://github.com/platter-dev/platter/blob/main/docs/plans.md

[Timer]
%[2]sPersistent=true
Unit=%[3]s

[Install]
WantedBy=timers.target
`, p.Name, cal.String(), serviceName(p.Name))
}

// scheduleExpr is kind k's expression as the plan wrote it.
func scheduleExpr(p *plan.Plan, k plan.Kind) string {
	switch k {
	case plan.Full:
		return p.Schedule.Full
	case plan.Differential:
		return p.Schedule.Differential
	}
	return p.Schedule.Incremental
}

// writeUnit writes a unit file atomically, 0644 as systemd's are (it
// holds no secret), never through a planted link.
func writeUnit(path, text string) error {
	if err := outfile.Replaceable(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := path + ".partial"
	os.Remove(tmp)
	f, err := outfile.Create(tmp)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, text)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// enableLink makes the symbolic link systemctl enable makes: wants/NAME
// -> /etc/systemd/system/NAME.
func enableLink(unitDir, wants, unit string) error {
	dir := filepath.Join(unitDir, wants)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	link := filepath.Join(dir, unit)
	if target, err := os.Readlink(link); err == nil && target == "/etc/systemd/system/"+unit {
		return nil
	}
	if st, err := os.Lstat(link); err == nil && st.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s is there and is not a link: refused", link)
	}
	os.Remove(link)
	return os.Symlink("/etc/systemd/system/"+unit, link)
}

// systemdRunning reports whether systemd is the running init (as
// sd_booted tells).
func systemdRunning() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

func runPlanInstall(cmd *cobra.Command, opts planOptions, name string) error {
	p, err := loadPlan(opts, name)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.Abs(self); err != nil {
		return err
	}
	file := ""
	if opts.file != "" {
		if file, err = filepath.Abs(opts.file); err != nil {
			return err
		}
	}
	for what, s := range map[string]string{"this binary's path": self, "the plan file's path": file} {
		if err := unitSafe(what, s); err != nil {
			return err
		}
	}
	for _, k := range plan.Kinds {
		if e := scheduleExpr(p, k); strings.ContainsAny(e, "\n\r") {
			return usagef("schedule.%s %q: one line only", k, e)
		}
	}
	root := opts.root
	unitDir := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(unitDir, 0o755); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	units := []struct{ name, text string }{
		{serviceName(p.Name), planServiceText(self, p.Name, file)},
		{timerName(p.Name), planTimerText(p)},
	}
	for _, u := range units {
		path := filepath.Join(unitDir, u.name)
		if err := writeUnit(path, u.text); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", path)
	}
	if err := enableLink(unitDir, "timers.target.wants", timerName(p.Name)); err != nil {
		return err
	}
	enable := []string{timerName(p.Name)}
	if p.Track {
		source, err := plan.ResolveSource(p.Source)
		if err != nil {
			return err
		}
		tdir, err := cbt.DirFor(cbt.DefaultDir, source)
		if err != nil {
			return err
		}
		tcmd := newTrackCommand()
		tcmd.SetOut(out)
		if err := installUnit(tcmd, trackOptions{dir: cbt.DefaultDir, unitDir: unitDir}, source, tdir); err != nil {
			return err
		}
		tunit := "platter-track-" + filepath.Base(tdir) + ".service"
		if err := enableLink(unitDir, "multi-user.target.wants", tunit); err != nil {
			return err
		}
		enable = append(enable, tunit)
	}
	if filepath.Clean(root) != "/" {
		fmt.Fprintf(out, "enabled %s under %s\n", strings.Join(enable, ", "), root)
		return nil
	}
	if !systemdRunning() {
		fmt.Fprintf(out, "enabled %s; systemd is not running here, so nothing was started (it starts at the next boot under systemd)\n", strings.Join(enable, ", "))
		return nil
	}
	if err := systemctl("daemon-reload"); err != nil {
		return err
	}
	if err := systemctl(append([]string{"enable", "--now"}, enable...)...); err != nil {
		return err
	}
	fmt.Fprintf(out, "enabled and started %s\n", strings.Join(enable, ", "))
	return nil
}

func systemctl(args ...string) error {
	c := exec.Command("systemctl", args...)
	b, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, oneLine(string(b)))
	}
	return nil
}

func runPlanUninstall(cmd *cobra.Command, opts planOptions, name string) error {
	p, err := loadPlan(opts, name)
	if err != nil {
		return err
	}
	root := opts.root
	unitDir := filepath.Join(root, "etc/systemd/system")
	units := []string{timerName(p.Name), serviceName(p.Name)}
	wants := map[string]string{timerName(p.Name): "timers.target.wants"}
	if p.Track {
		if source, err := plan.ResolveSource(p.Source); err == nil {
			if tdir, err := cbt.DirFor(cbt.DefaultDir, source); err == nil {
				tunit := "platter-track-" + filepath.Base(tdir) + ".service"
				units = append(units, tunit)
				wants[tunit] = "multi-user.target.wants"
			}
		}
	}
	live := filepath.Clean(root) == "/" && systemdRunning()
	if live {
		if err := systemctl("disable", "--now", units[0]); err != nil {
			warn("%v", err)
		}
		if len(units) > 2 {
			if err := systemctl("disable", "--now", units[2]); err != nil {
				warn("%v", err)
			}
		}
	}
	out := cmd.OutOrStdout()
	removed := 0
	for _, u := range units {
		if w := wants[u]; w != "" {
			if err := os.Remove(filepath.Join(unitDir, w, u)); err == nil {
				removed++
			}
		}
		path := filepath.Join(unitDir, u)
		switch err := os.Remove(path); {
		case err == nil:
			removed++
			fmt.Fprintf(out, "removed %s\n", path)
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	if live {
		if err := systemctl("daemon-reload"); err != nil {
			return err
		}
	}
	if removed == 0 {
		fmt.Fprintf(out, "plan %s had no units under %s\n", p.Name, unitDir)
	}
	return nil
}

func runPlanRestore(cmd *cobra.Command, opts planOptions, ropts restoreOptions, name, target string) error {
	ctx := cmd.Context()
	p, err := loadPlan(opts, name)
	if err != nil {
		return err
	}
	var at time.Time
	if opts.at != "" {
		if at, err = plan.ParseTime(opts.at); err != nil {
			return usagef("--at: %v", err)
		}
	}
	set, err := readPlanSet(ctx, p)
	if err != nil {
		return err
	}
	pick, skipped := -1, []string{}
	for i := len(set.images) - 1; i >= 0; i-- {
		im := set.images[i]
		if !at.IsZero() && im.Meta.Created.After(at) {
			continue
		}
		if im.Problem != nil {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", im.Name, problem(im)))
			continue
		}
		pick = i
		break
	}
	if pick < 0 {
		when := ""
		if !at.IsZero() {
			when = " made at or before " + at.Local().Format("2006-01-02 15:04")
		}
		msg := fmt.Sprintf("plan %s has no restore point%s in %s", p.Name, when, p.Destination)
		if len(skipped) > 0 {
			msg += " that restores; passed over: " + strings.Join(skipped, ", ")
		}
		return errors.New(msg)
	}
	im := set.images[pick]
	for _, s := range skipped {
		warn("passed over %s: it does not restore", s)
	}
	if !quiet && !ropts.json {
		fmt.Fprintf(cmd.ErrOrStderr(), "plan %s: restoring the restore point of %s (%s, %s)\n", p.Name, im.Meta.Created.Local().Format("2006-01-02 15:04:05"), imageType(im.Meta), im.Path)
	}
	return runRestore(cmd, ropts, im.Path, target)
}
