package plan

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, text string) *Plan {
	t.Helper()
	p, err := Parse("p.toml", "p", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const shape = `source = "/dev/sda"
destination = "/backup"
[schedule]
full = "monthly"
differential = "weekly"
incremental = "daily"
`

func TestDue(t *testing.T) {
	p := mustParse(t, shape)
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	full := Point{Name: "full", Kind: Full, Created: at("2026-03-01 20:00")}
	diff := Point{Name: "diff", Kind: Differential, Created: at("2026-03-02 20:00")}
	inc := Point{Name: "inc", Kind: Incremental, Created: at("2026-03-03 20:00")}
	for _, c := range []struct {
		name   string
		now    string
		set    []Point
		made   []Made
		due    bool
		kind   Kind
		parent string
		why    string
	}{
		{"empty set", "2026-03-01 20:00", nil, nil, true, Full, "", ""},
		{"same day", "2026-03-01 23:00", []Point{full}, nil, false, 0, "", ""},
		{"next day: a new week", "2026-03-02 20:00", []Point{full}, nil, true, Differential, "full", ""},
		{"daily", "2026-03-03 20:00", []Point{full, diff}, nil, true, Incremental, "diff", ""},
		{"on the newest", "2026-03-04 20:00", []Point{full, diff, inc}, nil, true, Incremental, "inc", ""},
		{"new month", "2026-04-01 20:00", []Point{full, diff, inc}, nil, true, Full, "", ""},
		{"no full: full", "2026-03-03 20:00", []Point{inc}, nil, true, Full, "", ""},
		{"broken chain: full", "2026-03-04 20:00", []Point{full, diff, {Name: "inc", Kind: Incremental, Created: inc.Created, Broken: "damaged"}}, nil, true, Full, "", "broken"},
		// A differential prune deleted still counts for the schedule.
		{"made, pruned", "2026-03-03 20:00", []Point{full}, []Made{{Differential, diff.Created}}, true, Incremental, "full", ""},
	} {
		d := p.Due(at(c.now), c.set, c.made)
		if d.Due != c.due || (d.Due && d.Kind != c.kind) {
			t.Errorf("%s: due %v kind %s, want %v %s (%+v)", c.name, d.Due, d.Kind, c.due, c.kind, d)
			continue
		}
		if !d.Due {
			if d.Next.IsZero() || !d.Next.After(at(c.now)) {
				t.Errorf("%s: next %s", c.name, d.Next)
			}
			continue
		}
		got := ""
		if d.Parent != nil {
			got = d.Parent.Name
		}
		if got != c.parent || !strings.Contains(d.Why, c.why) {
			t.Errorf("%s: parent %q why %q, want %q %q", c.name, got, d.Why, c.parent, c.why)
		}
	}
}

func TestDueIncrementalsOnly(t *testing.T) {
	p := mustParse(t, "source = \"/dev/sda\"\ndestination = \"/b\"\n[schedule]\nincremental = \"hourly\"\n")
	now := time.Date(2026, 3, 1, 20, 0, 0, 0, time.UTC)
	d := p.Due(now, nil, nil)
	if !d.Due || d.Kind != Full || d.Scheduled != Incremental || !strings.Contains(d.Why, "no image to make it on") {
		t.Errorf("first run: %+v", d)
	}
	d = p.Due(now.Add(time.Hour), []Point{{Name: "a", Kind: Full, Created: now}}, nil)
	if !d.Due || d.Kind != Incremental || d.Parent == nil || d.Parent.Name != "a" {
		t.Errorf("an hour on: %+v", d)
	}
}

func TestParseErrors(t *testing.T) {
	top := "source = \"/dev/sda\"\ndestination = \"/backup\"\n"
	for _, c := range []struct{ text, want string }{
		{top + "colour = \"red\"\n" + shape[len(top):], `p.toml:3: unknown field "colour"`},
		{shape + "[keep]\nlast = \"3\"\n", `p.toml:8: "keep.last": wrong type: a string where an integer is expected`},
		{shape + "[keep]\nweekly = -2\n", `p.toml:8: "keep.weekly": must be 0 or more`},
		{strings.Replace(shape, `"daily"`, `"25:00"`, 1), `p.toml:6: "schedule.incremental": calendar expression`},
		{"source = \"/dev/sda\"\ndestination = \"/b\"\n", `[schedule] has no`},
		{top + "compression = \"zstd:99\"\n" + shape[len(top):], `p.toml:3: "compression": `},
		{shape + "bogus = 1\n", `p.toml:7: unknown field "schedule.bogus"`},
		{top + "encrypt = \"yes\"\n" + shape[len(top):], `p.toml:3: "encrypt": wrong type: a string where true or false is expected`},
		{top + "password_file = \"/k\"\n" + shape[len(top):], `p.toml:3: "password_file": gives the passphrase of encrypt = true`},
	} {
		_, err := Parse("p.toml", "p", []byte(c.text))
		var fe *FileError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.text, err, c.want)
		}
	}
}

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".p.plan.lock")
	f, err := Lock(path, "p", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(path, "p", false)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.PID != os.Getpid() || !strings.Contains(err.Error(), "plan p is already running (pid ") {
		t.Fatalf("second lock: %v", err)
	}
	f.Close()
	if f, err = Lock(path, "p", false); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	f.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v", fi.Mode())
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(path, link)
	if _, err := Lock(link, "p", false); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("lock through a link: %v", err)
	}
}
