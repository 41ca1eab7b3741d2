// Package plan reads backup plans (TOML files) and decides what a run of
// one does at a given time: which kind of image is due and on which
// parent. It keeps the plan's run records and its lock. It never prints,
// and it makes no image itself: the CLI runs create, prune and verify.
package plan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/platter-dev/platter/internal/calendar"
	"github.com/platter-dev/platter/internal/codec"
)

// Dir is where plans are kept: NAME.toml.
const Dir = "/etc/platter/plans"

// Kind is the kind of image a run makes; larger kinds stand for smaller
// ones (a full image counts as a differential and an incremental).
type Kind int

const (
	Incremental Kind = iota
	Differential
	Full
)

// Kinds lists the kinds, smallest first.
var Kinds = []Kind{Incremental, Differential, Full}

func (k Kind) String() string {
	return [...]string{"incremental", "differential", "full"}[k]
}

// ParseKind reads a kind's name ("" is a full image, as image metadata
// has it).
func ParseKind(s string) (Kind, bool) {
	switch s {
	case "full", "":
		return Full, true
	case "differential":
		return Differential, true
	case "incremental":
		return Incremental, true
	}
	return 0, false
}

// Plan is one plan file.
type Plan struct {
	// Name is the file's name without .toml: the name of its images,
	// records, lock and units.
	Name string `toml:"-"`
	// Path is the file read.
	Path string `toml:"-"`

	Source      string   `toml:"source"`
	Destination string   `toml:"destination"`
	Schedule    Schedule `toml:"schedule"`
	Keep        Keep     `toml:"keep"`
	Verify      bool     `toml:"verify"`
	OnFailure   string   `toml:"on_failure"`

	// As create's flags of the same names.
	Compression  string   `toml:"compression"`
	ChunkSize    string   `toml:"chunk_size"`
	Encrypt      bool     `toml:"encrypt"`
	PasswordFile string   `toml:"password_file"`
	Recipients   []string `toml:"recipients"`
	Identities   []string `toml:"identities"`
	Snapshot     string   `toml:"snapshot"`
	// Track installs the changed-block tracking service of the source
	// with the plan's units, so incrementals read only what changed.
	Track bool `toml:"track"`

	specs [3]*calendar.Spec // by Kind; nil: not scheduled
}

// Schedule holds a systemd calendar expression per kind ("" for none).
type Schedule struct {
	Full         string `toml:"full"`
	Differential string `toml:"differential"`
	Incremental  string `toml:"incremental"`
}

// Keep is prune's rules.
type Keep struct {
	Last    int `toml:"last"`
	Daily   int `toml:"daily"`
	Weekly  int `toml:"weekly"`
	Monthly int `toml:"monthly"`
}

// Any reports whether a rule is set: without one, nothing is pruned.
func (k Keep) Any() bool { return k.Last > 0 || k.Daily > 0 || k.Weekly > 0 || k.Monthly > 0 }

// expr is the expression of kind k.
func (s Schedule) expr(k Kind) string {
	return [...]string{s.Incremental, s.Differential, s.Full}[k]
}

// Spec is the schedule of kind k, nil when the plan has none.
func (p *Plan) Spec(k Kind) *calendar.Spec { return p.specs[k] }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckName refuses a plan name that cannot name files and units.
func CheckName(name string) error {
	if !nameRE.MatchString(name) || len(name) > 64 {
		return fmt.Errorf("plan name %q: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')", name)
	}
	return nil
}

// Find is the path of the plan called name: file when given (--plan),
// else Dir/NAME.toml.
func Find(name, file string) (string, error) {
	if file != "" {
		return file, nil
	}
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(Dir, name+".toml"), nil
}

// FileError is a plan file that cannot be used: Line 0 when no line is
// at fault.
type FileError struct {
	Path string
	Line int
	Msg  string
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Load reads and checks the plan at path; its name is the file's name
// without .toml.
func Load(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(filepath.Base(path), ".toml")
	if err := CheckName(name); err != nil {
		return nil, &FileError{Path: path, Msg: err.Error()}
	}
	return Parse(path, name, b)
}

// Parse reads a plan from b (path names it in errors).
func Parse(path, name string, b []byte) (*Plan, error) {
	p := &Plan{Name: name, Path: path}
	d := toml.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(p); err != nil {
		return nil, decodeError(path, err)
	}
	lines := keyLines(b)
	bad := func(key, format string, args ...any) error {
		return &FileError{Path: path, Line: lines[key], Msg: fmt.Sprintf("%q: ", key) + fmt.Sprintf(format, args...)}
	}
	if p.Source == "" {
		return nil, &FileError{Path: path, Msg: `"source" is missing: the device, image file or mount point to back up`}
	}
	if p.Destination == "" {
		return nil, &FileError{Path: path, Msg: `"destination" is missing: the directory (or s3://BUCKET/PREFIX/) that keeps the set`}
	}
	any := false
	for _, k := range Kinds {
		e := p.Schedule.expr(k)
		if e == "" {
			continue
		}
		spec, err := calendar.Parse(e)
		if err != nil {
			return nil, bad("schedule."+k.String(), "%v", err)
		}
		p.specs[k], any = spec, true
	}
	if !any {
		return nil, &FileError{Path: path, Line: lines["schedule"], Msg: `[schedule] has no "full", "differential" or "incremental": a plan needs at least one`}
	}
	for key, n := range map[string]int{"keep.last": p.Keep.Last, "keep.daily": p.Keep.Daily, "keep.weekly": p.Keep.Weekly, "keep.monthly": p.Keep.Monthly} {
		if n < 0 {
			return nil, bad(key, "must be 0 or more, not %d", n)
		}
	}
	switch p.Snapshot {
	case "", "auto", "track", "freeze", "none":
	default:
		return nil, bad("snapshot", "takes auto, track, freeze or none, not %q", p.Snapshot)
	}
	if p.Compression != "" {
		if _, err := codec.ParseSetting(p.Compression); err != nil {
			return nil, bad("compression", "%v", err)
		}
	}
	if p.PasswordFile != "" && !p.Encrypt {
		return nil, bad("password_file", "gives the passphrase of encrypt = true; add it (or remove password_file)")
	}
	return p, nil
}

// decodeError names the file, line and key of a TOML error.
func decodeError(path string, err error) error {
	var sme *toml.StrictMissingError
	if errors.As(err, &sme) && len(sme.Errors) > 0 {
		e := sme.Errors[0]
		line, _ := e.Position()
		return &FileError{Path: path, Line: line, Msg: fmt.Sprintf("unknown field %q", strings.Join(e.Key(), "."))}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			// "cannot decode TOML string into struct field plan.Keep.Last
			// of type int": say the key as the file has it.
			msg = fmt.Sprintf("%q: wrong type: %s", strings.Join(k, "."), typeWords(msg))
		}
		return &FileError{Path: path, Line: line, Msg: msg}
	}
	return &FileError{Path: path, Msg: err.Error()}
}

var typeRE = regexp.MustCompile(`cannot decode TOML (\w+) into struct field \S+ of type (\S+)`)

// typeWords rewords go-toml's type mismatch in the file's terms.
func typeWords(msg string) string {
	m := typeRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	want := map[string]string{"int": "an integer", "bool": "true or false", "string": "a string", "[]string": "a list of strings"}[m[2]]
	if want == "" {
		want = m[2]
	}
	return fmt.Sprintf("a %s where %s is expected", m[1], want)
}

// keyLines maps "table.key" (and "table" for a table header) to the line
// it is on, for messages about values that parse but are not allowed.
func keyLines(b []byte) map[string]int {
	out := map[string]int{}
	table := ""
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "["):
			table = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			out[table] = i + 1
		case strings.Contains(l, "="):
			k := strings.Trim(strings.TrimSpace(strings.SplitN(l, "=", 2)[0]), `"'`)
			if table != "" {
				k = table + "." + k
			}
			if _, seen := out[k]; !seen {
				out[k] = i + 1
			}
		}
	}
	return out
}

// Next is the plan's next run after t: the soonest of its schedules'
// next elapses (zero if none comes).
func (p *Plan) Next(t time.Time) time.Time {
	var next time.Time
	for _, s := range p.specs {
		if s == nil {
			continue
		}
		if n := s.Next(t); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// ParseTime reads --now and --at: RFC 3339, or "2006-01-02 15:04" (and
// with seconds) in local time.
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: write RFC 3339 (2026-03-04T20:00:00Z) or local time as 2026-03-04 20:00", s)
}
