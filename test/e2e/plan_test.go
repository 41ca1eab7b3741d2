package e2e

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// planRecord is the part of a run record the tests read.
type planRecord struct {
	Plan       string    `json:"plan"`
	At         time.Time `json:"at"`
	Started    time.Time `json:"started"`
	Ended      time.Time `json:"ended"`
	OK         bool      `json:"ok"`
	Kind       string    `json:"kind"`
	Scheduled  string    `json:"scheduled"`
	Why        string    `json:"why"`
	Image      string    `json:"image"`
	ImageBytes int64     `json:"image_bytes"`
	Parent     string    `json:"parent"`
	Error      string    `json:"error"`
	Removed    string    `json:"removed"`
	Verify     []struct {
		Image string `json:"image"`
		OK    bool   `json:"ok"`
	} `json:"verify"`
	Prune *struct {
		Kept, Merged, Deleted []string
	} `json:"prune"`
	OnFailure *struct {
		Exit int `json:"exit"`
	} `json:"on_failure"`
}

// writePlan writes a plan file NAME.toml in dir and returns its path.
func writePlan(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// planRun runs plan run --json at now and returns its record and exit code.
func planRun(t *testing.T, planFile string, now time.Time, extra ...string) (planRecord, string, int) {
	t.Helper()
	args := append([]string{"plan", "run", "--json", "--plan", planFile, "--now", now.Format(time.RFC3339)}, extra...)
	o, e, code := run(t, args...)
	var r planRecord
	if o != "" {
		if err := json.Unmarshal([]byte(o), &r); err != nil {
			t.Fatalf("plan run: its JSON: %v\n%s\n%s", err, o, e)
		}
	}
	return r, e, code
}

// planImages is the plan's images in dest, by name.
func planImages(t *testing.T, dest string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dest, "*.platter"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	sort.Strings(m)
	return m
}

// dayChanges adds, changes and deletes files of the tree at mnt, as a
// day of use would, and syncs it.
func dayChanges(t *testing.T, mnt string, day int, rng *mrand.Rand) {
	t.Helper()
	dir := filepath.Join(mnt, "data")
	os.MkdirAll(dir, 0o755)
	for i := 0; i < 3; i++ {
		b := make([]byte, 4096+rng.IntN(128<<10))
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%02d-%d.bin", day, i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) > 4 {
		// Change one file in place, delete another.
		f := filepath.Join(dir, ents[rng.IntN(len(ents))].Name())
		if fh, err := os.OpenFile(f, os.O_WRONLY, 0); err == nil {
			b := make([]byte, 1000)
			rand.Read(b)
			fh.WriteAt(b, 100)
			fh.Close()
		}
		os.Remove(filepath.Join(dir, ents[rng.IntN(len(ents))].Name()))
	}
	sh(t, "sync", "-f", mnt)
}

// expectedKind is what a plan of full monthly, differential weekly and
// incremental daily makes on a daily run at t, given the last full and
// differential made (independent of the code under test).
func expectedKind(t, lastFull, lastDiff time.Time) string {
	switch {
	case lastFull.IsZero() || t.Year() != lastFull.Year() || t.Month() != lastFull.Month():
		return "full"
	}
	last := lastFull
	if lastDiff.After(last) {
		last = lastDiff
	}
	ly, lw := last.ISOWeek()
	ty, tw := t.ISOWeek()
	if ly != ty || lw != tw {
		return "differential"
	}
	return "incremental"
}

// expectedKeep applies keep last/daily/weekly/monthly to the images made
// (by time, oldest first): each rule keeps the newest of each of its last
// N periods.
func expectedKeep(made []time.Time, last, daily, weekly, monthly int) map[time.Time]bool {
	keep := map[time.Time]bool{}
	rule := func(n int, period func(time.Time) string) {
		seen := map[string]bool{}
		for i := len(made) - 1; i >= 0 && len(seen) < n; i-- {
			if k := period(made[i]); !seen[k] {
				seen[k] = true
				keep[made[i]] = true
			}
		}
	}
	rule(last, func(t time.Time) string { return t.String() })
	rule(daily, func(t time.Time) string { return t.Format("2006-01-02") })
	rule(weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) })
	rule(monthly, func(t time.Time) string { return t.Format("2006-01") })
	return keep
}

// A plan runs daily for 40 simulated days over a mounted ext4 and a
// mounted XFS that change every day: the kinds made follow the schedule,
// prune keeps what the rules say, and every restore point kept verifies
// and restores to the files of its day, byte for byte.
func TestPlanSchedule(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			os.Setenv("TZ", "UTC")
			dir := t.TempDir()
			size := int64(64 << 20)
			if fs == "xfs" {
				size = 320 << 20
			}
			file := sparseFile(t, filepath.Join(dir, "fs.img"), size)
			dev := loop(t, file)
			mnt := mountNew(t, fs, dev)
			dest := filepath.Join(dir, "dest")
			const last, daily, weekly, monthly = 2, 4, 2, 2
			pf := writePlan(t, dir, "daily", fmt.Sprintf(`# a plan over the disk holding %[1]s
source = %[1]q
destination = %[2]q
verify = true
compression = "fast"
[schedule]
full = "monthly"
differential = "weekly"
incremental = "daily"
[keep]
last = %[3]d
daily = %[4]d
weekly = %[5]d
monthly = %[6]d
`, mnt, dest, last, daily, weekly, monthly))
			rng := mrand.New(mrand.NewPCG(1, uint64(len(fs))))
			trees := map[string]string{} // image name -> copy of the tree at its run
			var made []time.Time
			var lastFull, lastDiff time.Time
			start := time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC)
			kinds := map[string]int{}
			t0 := time.Now()
			for day := 0; day < 40; day++ {
				now := start.AddDate(0, 0, day)
				dayChanges(t, mnt, day, rng)
				want := expectedKind(now, lastFull, lastDiff)
				r, e, code := planRun(t, pf, now)
				if code != 0 || !r.OK {
					t.Fatalf("day %d (%s): exit %d, record %+v\n%s", day, now, code, r, e)
				}
				if r.Kind != want {
					t.Fatalf("day %d (%s): made %s, want %s (%s)", day, now.Format("Mon 2006-01-02"), r.Kind, want, r.Why)
				}
				kinds[r.Kind]++
				switch want {
				case "full":
					lastFull = now
				case "differential":
					lastDiff = now
				}
				name := filepath.Base(r.Image)
				if wantName := fmt.Sprintf("daily-%s-%s.platter", now.Format("20060102-1504"), want); name != wantName {
					t.Fatalf("day %d: image %s, want %s", day, name, wantName)
				}
				if len(r.Verify) == 0 || !r.Verify[0].OK {
					t.Fatalf("day %d: the new image was not verified: %+v", day, r.Verify)
				}
				made = append(made, now)
				copyDir := filepath.Join(dir, "trees", name)
				os.MkdirAll(copyDir, 0o755)
				sh(t, "cp", "-a", filepath.Join(mnt, "data"), copyDir)
				trees[name] = filepath.Join(copyDir, "data")
				// A second run at the same time has nothing due.
				if day == 3 {
					o := ok(t, "plan", "run", "--plan", pf, "--now", now.Format(time.RFC3339))
					if !strings.Contains(o, "nothing due; next run at 2026-03-05 00:00:00") {
						t.Errorf("second run of day %d: %q", day, o)
					}
				}
			}
			t.Logf("made %v over 40 days in %s", kinds, time.Since(t0))
			t0 = time.Now()
			defer func() { t.Logf("checked the restore points in %s", time.Since(t0)) }()
			if kinds["full"] != 2 || kinds["differential"] < 4 || kinds["incremental"] < 25 {
				t.Errorf("kinds made: %v", kinds)
			}
			// Prune left what the rules say.
			keep := expectedKeep(made, last, daily, weekly, monthly)
			var wantNames []string
			for _, m := range made {
				if keep[m] {
					wantNames = append(wantNames, "daily-"+m.Format("20060102-1504")+"-"+expectedKindAt(made, m)+".platter")
				}
			}
			got := planImages(t, dest)
			gotTimes := map[string]bool{}
			for _, g := range got {
				gotTimes[g[len("daily-"):len("daily-20060102-1504")]] = true
			}
			var gotKept []string
			for _, m := range made {
				if gotTimes[m.Format("20060102-1504")] {
					gotKept = append(gotKept, m.Format("01-02"))
				}
			}
			var wantKept []string
			for _, m := range made {
				if keep[m] {
					wantKept = append(wantKept, m.Format("01-02"))
				}
			}
			if strings.Join(gotKept, " ") != strings.Join(wantKept, " ") || len(got) != len(wantKept) {
				t.Fatalf("kept %v (%v), want %v", gotKept, got, wantKept)
			}
			_ = wantNames
			// Every restore point verifies and restores to its day's files.
			for _, name := range got {
				img := filepath.Join(dest, name)
				ok(t, "verify", img)
				back := filepath.Join(dir, "back.img")
				os.Remove(back)
				ok(t, "restore", img, back)
				var files string
				switch fs {
				case "ext4":
					files = filepath.Join(extTree(t, back), "data")
				case "xfs":
					files = filepath.Join(checkedMount(t, "xfs", back), "data")
				}
				sameTree(t, trees[name], files)
				if fs == "xfs" {
					// The next restore writes over back.img: let go of it.
					exec.Command("umount", filepath.Dir(files)).Run()
				}
			}
			// plan restore --at picks the point in force then.
			at := made[len(made)-1]
			back := filepath.Join(dir, "plan-back.img")
			ok(t, "plan", "restore", "--plan", pf, "--at", at.Format("2006-01-02 15:04"), back)
			if fs == "ext4" {
				sameTree(t, trees[got[len(got)-1]], filepath.Join(extTree(t, back), "data"))
			}
			// status names the restore points and the runs.
			var st []struct {
				Points []struct{ Image string } `json:"restore_points"`
				Runs   []planRecord             `json:"runs"`
				Next   *time.Time               `json:"next_run"`
			}
			if err := json.Unmarshal([]byte(ok(t, "plan", "status", "--json", "--plan", pf)), &st); err != nil {
				t.Fatal(err)
			}
			if len(st) != 1 || len(st[0].Points) != len(got) || len(st[0].Runs) == 0 || st[0].Next == nil {
				t.Errorf("status: %+v", st)
			}
			recs, _ := filepath.Glob(filepath.Join(dest, ".platter-runs", "daily-*.json"))
			if len(recs) != 40 {
				t.Errorf("%d run records, want 40", len(recs))
			}
			for _, r := range recs {
				if fi, err := os.Stat(r); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("record %s: %v %v", r, fi.Mode(), err)
				}
			}
		})
	}
}

// expectedKindAt is the kind made at m in a run of days made.
func expectedKindAt(made []time.Time, m time.Time) string {
	var lf, ld time.Time
	for _, t := range made {
		k := expectedKind(t, lf, ld)
		if t.Equal(m) {
			return k
		}
		switch k {
		case "full":
			lf = t
		case "differential":
			ld = t
		}
	}
	return ""
}

// srcFS makes an ext4 filesystem image file with some files, for plans
// whose source is a file.
func srcFS(t *testing.T, dir string, mib int) string {
	t.Helper()
	src := filepath.Join(dir, "src.img")
	sparseFile(t, src, int64(mib)<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", src)
	return src
}

// putFile writes n random bytes to path inside the ext4 image src.
// planDays runs the plan once a day for n days from 2026-03-01 20:00 UTC,
// a new 1 MiB file put in src before each run, and returns the kinds
// made; a run that fails ends the test.
func planDays(t *testing.T, pf, src string, n int) []string {
	t.Helper()
	now := time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC)
	var kinds []string
	for day := range n {
		putFile(t, src, fmt.Sprintf("f%d", day), 1<<20)
		r, e, code := planRun(t, pf, now.AddDate(0, 0, day))
		if code != 0 || !r.OK {
			t.Fatalf("day %d: exit %d %s %+v", day, code, e, r)
		}
		kinds = append(kinds, r.Kind)
	}
	return kinds
}

func putFile(t *testing.T, src, name string, n int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f")
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "debugfs", "-w", "-R", "write "+f+" "+name, src)
}

// Two runs at once: one refuses (or, with --wait, waits); never do both
// write.
func TestPlanConcurrent(t *testing.T) {
	dir := t.TempDir()
	src := srcFS(t, dir, 512)
	for i := 0; i < 4; i++ {
		putFile(t, src, fmt.Sprintf("big%d", i), 60<<20)
	}
	dest := filepath.Join(dir, "dest")
	pf := writePlan(t, dir, "two", fmt.Sprintf("source = %q\ndestination = %q\nverify = true\ncompression = \"zstd:9\"\n[schedule]\nfull = \"daily\"\n", src, dest))
	now := time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC)
	type result struct {
		r    planRecord
		e    string
		code int
	}
	both := func(extra ...string) [2]result {
		var out [2]result
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == 1 {
					time.Sleep(300 * time.Millisecond)
				}
				r, e, code := planRun(t, pf, now.AddDate(0, 0, i), extra...)
				out[i] = result{r, e, code}
			}()
		}
		wg.Wait()
		return out
	}
	res := both()
	if res[0].code != 0 {
		t.Fatalf("first run: exit %d: %s", res[0].code, res[0].e)
	}
	if res[1].code != 1 || !regexp.MustCompile(`plan two is already running \(pid \d+, since `).MatchString(res[1].e) {
		t.Fatalf("second run at once: exit %d: %s", res[1].code, res[1].e)
	}
	if got := planImages(t, dest); len(got) != 1 {
		t.Fatalf("after two runs at once: %v", got)
	}
	now = now.AddDate(0, 0, 2)
	res = both("--wait")
	if res[0].code != 0 || res[1].code != 0 {
		t.Fatalf("runs with --wait: %d %s / %d %s", res[0].code, res[0].e, res[1].code, res[1].e)
	}
	if res[1].r.Started.Before(res[0].r.Ended) {
		t.Errorf("the waiting run started at %s, before the first ended at %s", res[1].r.Started, res[0].r.Ended)
	}
	for _, img := range planImages(t, dest) {
		ok(t, "verify", filepath.Join(dest, img))
	}
	if fi, err := os.Lstat(filepath.Join(dest, ".two.plan.lock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v %v", fi, err)
	}
}

// A run that fails (destination full, source gone, parent damaged) runs
// on_failure and leaves the set usable; the next run recovers.
func TestPlanFailures(t *testing.T) {
	dir := t.TempDir()
	src := srcFS(t, dir, 256)
	putFile(t, src, "small", 1<<20)
	// The destination: a small ext4 of its own.
	destFile := sparseFile(t, filepath.Join(dir, "dest.img"), 24<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-m", "0", destFile)
	dest := filepath.Join(dir, "dest")
	os.Mkdir(dest, 0o755)
	sh(t, "mount", loop(t, destFile), dest)
	t.Cleanup(func() { exec.Command("umount", dest).Run() })
	marker := filepath.Join(dir, "failed")
	pf := writePlan(t, dir, "f", fmt.Sprintf(`source = %q
destination = %q
verify = true
compression = "fast"
on_failure = "echo \"$PLATTER_PLAN: $PLATTER_ERROR\" > %s; test -s \"$PLATTER_RECORD\""
[schedule]
full = "monthly"
incremental = "daily"
[keep]
last = 10
`, src, dest, marker))
	now := time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC)
	step := func() time.Time { now = now.AddDate(0, 0, 1); return now }
	if r, e, code := planRun(t, pf, now); code != 0 || r.Kind != "full" {
		t.Fatalf("first run: %d %s %+v", code, e, r)
	}
	setVerifies := func(what string, skip ...string) {
		t.Helper()
	next:
		for _, img := range planImages(t, dest) {
			for _, s := range skip {
				if img == s {
					continue next
				}
			}
			if _, e, code := run(t, "verify", filepath.Join(dest, img)); code != 0 {
				t.Errorf("after %s: %s does not verify: %s", what, img, e)
			}
		}
		if m, _ := filepath.Glob(filepath.Join(dest, "*partial*")); len(m) > 0 {
			t.Errorf("after %s: left %v", what, m)
		}
	}
	failed := func(what string, r planRecord, e string, code int, want string) {
		t.Helper()
		b, err := os.ReadFile(marker)
		if code == 0 || r.OK || err != nil || !strings.Contains(string(b), "f: ") || !strings.Contains(strings.ToLower(string(b)), want) || r.OnFailure == nil || r.OnFailure.Exit != 0 {
			t.Fatalf("%s: exit %d, marker %q (%v), record %+v\n%s", what, code, b, err, r, e)
		}
		os.Remove(marker)
	}

	// Destination full.
	before := planImages(t, dest)
	putFile(t, src, "huge", 40<<20)
	r, e, code := planRun(t, pf, step())
	failed("destination full", r, e, code, "no space")
	if got := planImages(t, dest); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Errorf("destination full: set %v, was %v", got, before)
	}
	setVerifies("destination full")
	sh(t, "debugfs", "-w", "-R", "rm huge", src)
	if r, e, code := planRun(t, pf, step()); code != 0 || r.Kind != "incremental" {
		t.Fatalf("after destination full: %d %s %+v", code, e, r)
	}

	// Source gone.
	os.Rename(src, src+".away")
	r, e, code = planRun(t, pf, step())
	failed("source gone", r, e, code, "src.img")
	setVerifies("source gone")
	os.Rename(src+".away", src)
	putFile(t, src, "more", 1<<20)
	r, e, code = planRun(t, pf, step())
	if code != 0 || r.Kind != "incremental" {
		t.Fatalf("after source gone: %d %s %+v", code, e, r)
	}

	// Parent damaged: a byte of the newest image's data flipped.
	newest := filepath.Join(dest, filepath.Base(r.Image))
	chunks := info(t, newest, "--chunks")
	off := int64(-1)
	for _, c := range chunks.Chunks {
		if !c.InParent && !c.Zero && c.FrameSize > 256 {
			off = c.FrameOffset + c.FrameSize/2
			break
		}
	}
	if off < 0 {
		t.Fatalf("no chunk of its own in %s: %+v", newest, chunks.Chunks)
	}
	corrupt(t, newest, off)
	// The source unchanged: the next incremental takes every chunk from
	// the damaged image.
	r, e, code = planRun(t, pf, step())
	failed("parent damaged", r, e, code, "bad chunk")
	setVerifies("parent damaged", filepath.Base(newest))
	r, e, code = planRun(t, pf, step())
	if code != 0 || r.Kind != "full" || r.Scheduled != "incremental" || !strings.Contains(r.Why, "broken") {
		t.Fatalf("after parent damaged: %d %s %+v", code, e, r)
	}
	setVerifies("recovery", filepath.Base(newest))
}

// A plan file that is wrong is refused with its file, line and key.
func TestPlanFileErrors(t *testing.T) {
	dir := t.TempDir()
	head := "source = \"/dev/null\"\ndestination = \"/tmp/x\"\n"
	for _, c := range []struct{ text, want string }{
		{head + "[schedule]\nfull = \"monthly\"\nincremantal = \"daily\"\n", `bad.toml:5: unknown field "schedule.incremantal"`},
		{head + "verfy = true\n[schedule]\nfull = \"daily\"\n", `bad.toml:3: unknown field "verfy"`},
		{head + "[schedule]\nfull = \"every tuesday-ish\"\n", `bad.toml:4: "schedule.full"`},
		{head + "[schedule]\nfull = \"daily\"\n[keep]\nlast = \"three\"\n", `bad.toml:6: "keep.last": wrong type`},
		{head + "verify = 1\n[schedule]\nfull = \"daily\"\n", `bad.toml:3: "verify": wrong type`},
		{head + "[schedule]\nfull = \"daily\"\n[keep]\ndaily = -1\n", `bad.toml:6: "keep.daily": must be 0 or more`},
		{head + "[keep]\nlast = 1\n", `bad.toml: [schedule] has no`},
		{"destination = \"/tmp/x\"\n[schedule]\nfull = \"daily\"\n", `"source" is missing`},
	} {
		pf := writePlan(t, dir, "bad", c.text)
		_, e, code := run(t, "plan", "run", "--plan", pf)
		if code != 2 || !strings.Contains(e, pf+":") || !strings.Contains(e, strings.TrimPrefix(c.want, "bad.toml")) {
			t.Errorf("plan\n%s: exit %d, %q; want %q", c.text, code, e, c.want)
		}
	}
}

// install writes a service and a timer that systemd-analyze verify
// accepts, and enables the timer as systemctl enable does; uninstall
// removes them.
func TestPlanInstall(t *testing.T) {
	root := t.TempDir()
	dir := t.TempDir()
	pf := writePlan(t, dir, "nightly", fmt.Sprintf(`source = %q
destination = %q
[schedule]
full = "monthly"
differential = "weekly"
incremental = "*-*-* 02:30:00"
`, srcFS(t, dir, 16), filepath.Join(dir, "dest")))
	o := ok(t, "plan", "install", "--plan", pf, "--root", root)
	units := filepath.Join(root, "etc/systemd/system")
	svc, tmr := filepath.Join(units, "platter-plan-nightly.service"), filepath.Join(units, "platter-plan-nightly.timer")
	for _, f := range []string{svc, tmr} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v\n%s", err, o)
		}
	}
	b, _ := os.ReadFile(tmr)
	for _, want := range []string{"OnCalendar=monthly\n", "OnCalendar=weekly\n", "OnCalendar=*-*-* 02:30:00\n", "Persistent=true\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("timer lacks %q:\n%s", want, b)
		}
	}
	b, _ = os.ReadFile(svc)
	if !strings.Contains(string(b), "Type=oneshot\n") || !strings.Contains(string(b), "ExecStart="+platter+" plan run --plan "+pf+"\n") {
		t.Errorf("service:\n%s", b)
	}
	link := filepath.Join(units, "timers.target.wants", "platter-plan-nightly.timer")
	if target, err := os.Readlink(link); err != nil || target != "/etc/systemd/system/platter-plan-nightly.timer" {
		t.Errorf("enable link: %q %v", target, err)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is needed for this test and is not installed")
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", tmr, svc).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	ok(t, "plan", "uninstall", "--plan", pf, "--root", root)
	for _, f := range []string{svc, tmr, link} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s is still there after uninstall", f)
		}
	}

	// track = true: the tracking service of the source too, enabled.
	dev := loop(t, srcFS(t, t.TempDir(), 16))
	tf := writePlan(t, dir, "tracked", fmt.Sprintf("source = %q\ndestination = %q\ntrack = true\n[schedule]\nincremental = \"hourly\"\n", dev, filepath.Join(dir, "dest2")))
	ok(t, "plan", "install", "--plan", tf, "--root", root)
	track := filepath.Join(units, "platter-track-"+filepath.Base(dev)+".service")
	b, err := os.ReadFile(track)
	if err != nil || !strings.Contains(string(b), " track start --foreground ") {
		t.Fatalf("tracking unit: %v\n%s", err, b)
	}
	if target, err := os.Readlink(filepath.Join(units, "multi-user.target.wants", filepath.Base(track))); err != nil || target != "/etc/systemd/system/"+filepath.Base(track) {
		t.Errorf("tracking unit's enable link: %q %v", target, err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", track, filepath.Join(units, "platter-plan-tracked.timer"), filepath.Join(units, "platter-plan-tracked.service")).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	ok(t, "plan", "uninstall", "--plan", tf, "--root", root)
	if ents, _ := filepath.Glob(filepath.Join(units, "*", "platter-*")); len(ents) > 0 {
		t.Errorf("left after uninstall: %v", ents)
	}
	if ents, _ := filepath.Glob(filepath.Join(units, "platter-*")); len(ents) > 0 {
		t.Errorf("left after uninstall: %v", ents)
	}
}

// A plan whose destination is a bucket: images, prune and run records
// in the bucket, the lock under /run/lock/platter.
func TestPlanS3(t *testing.T) {
	srv := s3Server(t)
	dir := t.TempDir()
	src := srcFS(t, dir, 64)
	pf := writePlan(t, dir, "cloud", fmt.Sprintf(`source = %q
destination = "s3://platter/laptop/"
verify = true
[schedule]
full = "monthly"
incremental = "daily"
[keep]
last = 2
`, src))
	if kinds := planDays(t, pf, src, 4); strings.Join(kinds, " ") != "full incremental incremental incremental" {
		t.Errorf("kinds %v", kinds)
	}
	objs := srv.Objects("platter", "laptop/")
	var imgs, recs []string
	for k := range objs {
		switch {
		case strings.HasSuffix(k, ".platter"):
			imgs = append(imgs, k)
		case strings.HasPrefix(k, "laptop/.platter-runs/cloud-") && strings.HasSuffix(k, ".json"):
			recs = append(recs, k)
		}
	}
	sort.Strings(imgs)
	if strings.Join(imgs, " ") != "laptop/cloud-20260303-2000-incremental.platter laptop/cloud-20260304-2000-incremental.platter" || len(recs) != 4 {
		t.Fatalf("bucket holds %v", objs)
	}
	for _, im := range imgs {
		ok(t, "verify", "s3://platter/"+im)
	}
	if _, err := os.Stat("/run/lock/platter/cloud.plan.lock"); err != nil {
		t.Errorf("lock: %v", err)
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "plan", "restore", "--plan", pf, back)
	sh(t, "e2fsck", "-fn", back)
	if o := sh(t, "debugfs", "-R", "ls /", back); !strings.Contains(o, "f3") {
		t.Errorf("restored: %s", o)
	}
	if o := ok(t, "plan", "status", "--plan", pf); !strings.Contains(o, "restore points: 2") {
		t.Errorf("status: %s", o)
	}
}

// An encrypted plan: the full image encrypted with the passphrase of
// password_file, incrementals as their parent; every step opens them.
func TestPlanEncrypted(t *testing.T) {
	dir := t.TempDir()
	src := srcFS(t, dir, 64)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("correct horse\n"), 0o600)
	dest := filepath.Join(dir, "dest")
	pf := writePlan(t, dir, "secret", fmt.Sprintf(`source = %q
destination = %q
verify = true
encrypt = true
password_file = %q
[schedule]
full = "monthly"
incremental = "daily"
[keep]
last = 2
`, src, dest, pass))
	if kinds := planDays(t, pf, src, 3); strings.Join(kinds, " ") != "full incremental incremental" {
		t.Errorf("kinds %v", kinds)
	}
	imgs := planImages(t, dest)
	if len(imgs) != 2 {
		t.Fatalf("set %v", imgs)
	}
	for _, im := range imgs {
		if _, e, code := run(t, "verify", filepath.Join(dest, im)); code == 0 || !strings.Contains(e, "encrypted") {
			t.Errorf("verify of %s without the passphrase: exit %d %s", im, code, e)
		}
		ok(t, "verify", "--password-file", pass, filepath.Join(dest, im))
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "plan", "restore", "--plan", pf, back)
	sh(t, "e2fsck", "-fn", back)
	if o := sh(t, "debugfs", "-R", "ls /", back); !strings.Contains(o, "f2") {
		t.Errorf("restored: %s", o)
	}
}

// A failure command that fails is reported, not fatal: the run's own
// failure is what its exit status says.
func TestPlanFailureCommandFails(t *testing.T) {
	dir := t.TempDir()
	pf := writePlan(t, dir, "gone", fmt.Sprintf("source = %q\ndestination = %q\non_failure = \"echo ran >&2; exit 7\"\n[schedule]\nfull = \"daily\"\n", filepath.Join(dir, "no-such-disk"), filepath.Join(dir, "dest")))
	r, e, code := planRun(t, pf, time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC))
	if code != 1 || r.OK || r.OnFailure == nil || r.OnFailure.Exit != 7 || !strings.Contains(e, "on_failure") || !strings.Contains(r.Error, "no-such-disk") {
		t.Fatalf("exit %d, %s, record %+v", code, e, r)
	}
	recs, _ := filepath.Glob(filepath.Join(dir, "dest", ".platter-runs", "gone-*.json"))
	if len(recs) != 1 {
		t.Fatalf("records %v", recs)
	}
	b, _ := os.ReadFile(recs[0])
	if !strings.Contains(string(b), `"exit": 7`) || !strings.Contains(string(b), `"output": "ran"`) {
		t.Errorf("record:\n%s", b)
	}
}
