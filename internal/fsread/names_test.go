package fsread

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckName(t *testing.T) {
	for _, name := range []string{"a", "a.txt", "...", ".a", "a..b", "a b", "ünïcödé", "-", "\x01", strings.Repeat("x", 255)} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for _, c := range []struct{ name, why string }{
		{"", "empty"},
		{".", `"." or ".."`},
		{"..", `"." or ".."`},
		{"../../pwned", "slash"},
		{"/etc/passwd", "slash"},
		{"a/b", "slash"},
		{`..\..\pwned`, "backslash"},
		{`a\b`, "backslash"},
		{"a\x00b", "NUL"},
	} {
		err := CheckName(c.name)
		if !errors.Is(err, ErrBadName) || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.name)) {
			t.Errorf("CheckName(%q) = %v, want ErrBadName naming it and saying %q", c.name, err, c.why)
		}
	}
}

// fakeReader is a directory tree as a filesystem's reader hands it up:
// unchecked names, in order, some unreadable.
type fakeReader map[string][]Entry

func (f fakeReader) ReadDir(dir string) ([]Entry, error) {
	ents, ok := f[dir]
	if !ok {
		return nil, fmt.Errorf("/%s: %w", dir, iofs.ErrNotExist)
	}
	return ents, nil
}

func (f fakeReader) Stat(name string) (Entry, error) {
	if name == "" {
		return Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	return Entry{}, errors.New("stat of a non-root path reached the reader")
}

// open finds the first entry of a name, as the real readers do, and
// reads as its own name.
func (f fakeReader) Open(name string) (io.ReadCloser, error) {
	dir, base := filepath.Split(name)
	for _, d := range f[strings.TrimSuffix(dir, "/")] {
		if d.Name == base {
			return io.NopCloser(strings.NewReader(d.Name)), nil
		}
	}
	return nil, iofs.ErrNotExist
}

// CaseInsensitive is not asked: each test sets checked.fold itself.
func (f fakeReader) CaseInsensitive() bool { return false }

func file(name string) Entry { return Entry{Name: name, Mode: 0o644} }

func names(ents []Entry) string {
	var s []string
	for _, e := range ents {
		s = append(s, e.Name)
	}
	return strings.Join(s, ",")
}

// The one boundary: bad names, later entries of one name (by case too
// where the filesystem folds it) and unreadable entries are left out,
// each told once however often the directory is read; the rest is
// listed in order, and Stat and Open reach only what is listed.
func TestCheckedListing(t *testing.T) {
	tree := fakeReader{
		"": {
			file("good"), file("../../pwned"), file("a/b"), file(`..\x`), file(".."), file("."), file(""),
			file("nul\x00"), file("Dup"), file("dup"), file("DUP"), file("Dup"),
			{Name: "broken", Err: errors.New("inode 12 is damaged")}, file("broken"),
			{Name: "sub", Mode: iofs.ModeDir | 0o755}, file("last"),
		},
		"sub": {file("inner"), file("../escape")},
	}
	for _, c := range []struct {
		fold    bool
		listed  string
		skipped []string
	}{
		// ext: names are bytes, "Dup" and "dup" are two files.
		{false, "good,Dup,dup,DUP,sub,last", []string{"../../pwned", "a/b", `..\x`, "..", ".", "", "nul\x00", "Dup", "broken", "broken"}},
		// FAT, NTFS: "dup" and "DUP" are "Dup" again.
		{true, "good,Dup,sub,last", []string{"../../pwned", "a/b", `..\x`, "..", ".", "", "nul\x00", "dup", "DUP", "Dup", "broken", "broken"}},
	} {
		t.Run(fmt.Sprint("fold=", c.fold), func(t *testing.T) {
			var told []*SkipError
			fsys := &checked{r: tree, fold: c.fold, skipped: func(e *SkipError) { told = append(told, e) }}
			for range 3 { // a mount reads directories again and again
				ents, err := fsys.ReadDir("/")
				if err != nil {
					t.Fatal(err)
				}
				if got := names(ents); got != c.listed {
					t.Errorf("ReadDir(/) = %s, want %s", got, c.listed)
				}
			}
			if len(told) != len(c.skipped) {
				t.Fatalf("%d entries told of, want %d: %v", len(told), len(c.skipped), told)
			}
			for i, e := range told {
				if e.Dir != "/" || e.Name != c.skipped[i] || !strings.Contains(e.Error(), fmt.Sprintf("%q", e.Name)) {
					t.Errorf("skip %d: %+v (%v), want %q in /", i, e, e, c.skipped[i])
				}
			}
			if !errors.Is(told[0], ErrBadName) || !errors.Is(told[len(told)-3], errDuplicate) {
				t.Errorf("skips say %v and %v", told[0], told[len(told)-3])
			}
			if msg := told[len(told)-2].Error(); !strings.Contains(msg, "inode 12 is damaged") {
				t.Errorf("the unreadable entry is told as %q", msg)
			}
			// The second "broken" is a duplicate of the unreadable one:
			// the readers would find the first.
			if !errors.Is(told[len(told)-1], errDuplicate) {
				t.Errorf("second broken: %v", told[len(told)-1])
			}

			ents, err := fsys.ReadDir("sub")
			if err != nil || names(ents) != "inner" || len(told) != len(c.skipped)+1 || told[len(told)-1].Dir != "/sub" {
				t.Errorf("ReadDir(sub) = %s, %v; told %v", names(ents), err, told[len(c.skipped):])
			}

			// Stat finds only what is listed (by case too where it folds).
			for name, want := range map[string]string{"good": "good", "/sub/../good": "good", "sub/inner": "inner", "Dup": "Dup", "dUP": map[bool]string{true: "Dup"}[c.fold]} {
				e, err := fsys.Stat(name)
				if want == "" {
					if !errors.Is(err, iofs.ErrNotExist) {
						t.Errorf("Stat(%q) = %+v, %v; want not found", name, e, err)
					}
					continue
				}
				if err != nil || e.Name != want {
					t.Errorf("Stat(%q) = %+v, %v; want %s", name, e, err, want)
				}
			}
			for _, name := range []string{"../../pwned", `..\x`, "sub/../escape", "nul\x00", "sub/escape"} {
				if e, err := fsys.Stat(name); !errors.Is(err, iofs.ErrNotExist) {
					t.Errorf("Stat(%q) = %+v, %v; want not found", name, e, err)
				}
			}
			if _, err := fsys.Stat("broken"); err == nil || !strings.Contains(err.Error(), "inode 12") {
				t.Errorf("Stat(broken) = %v, want why it was skipped", err)
			}
			for _, name := range []string{`..\x`, "nul\x00"} {
				if _, err := fsys.Open(name); !errors.Is(err, iofs.ErrNotExist) || !errors.Is(err, ErrBadName) {
					t.Errorf("Open(%q) = %v, want refused", name, err)
				}
			}
			if r, err := fsys.Open("/sub/../good"); err != nil {
				t.Errorf("Open(/sub/../good): %v", err)
			} else {
				r.Close()
			}
		})
	}
}

// memFS is a checked filesystem of a few files, for Extract.
type memFS map[string]Entry

func (m memFS) ReadDir(dir string) ([]Entry, error) {
	dir = strings.Trim(dir, "/")
	var out []Entry
	for p, e := range m {
		if d := filepath.Dir(p); d == dir || d == "." && dir == "" {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m memFS) Stat(name string) (Entry, error) {
	name = strings.Trim(filepath.Clean("/"+name), "/")
	if name == "" {
		return Entry{Name: "/", Mode: iofs.ModeDir | 0o755}, nil
	}
	if e, ok := m[name]; ok {
		return e, nil
	}
	return Entry{}, iofs.ErrNotExist
}

func (m memFS) Open(name string) (io.ReadCloser, error) {
	e, err := m.Stat(name)
	if err != nil {
		return nil, err
	}
	if e.Size > 100 {
		return io.NopCloser(io.MultiReader(strings.NewReader("partial"), errReader{})), nil
	}
	return io.NopCloser(strings.NewReader(strings.Repeat("x", int(e.Size)))), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("bad chunk") }

// Extract over a destination full of symlinks planted beforehand
// writes only under it, and a file the image cannot give is skipped,
// named, and leaves nothing, while the rest comes out.
func TestExtractPlanted(t *testing.T) {
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	fsys := memFS{
		"f":       {Name: "f", Mode: iofs.ModeSetuid | 0o755, Size: 3, ModTime: now},
		"d":       {Name: "d", Mode: iofs.ModeDir | 0o777, ModTime: now},
		"d/x":     {Name: "x", Mode: 0o644, Size: 5, ModTime: now},
		"ln":      {Name: "ln", Mode: iofs.ModeSymlink | 0o777, Target: "../../../etc/passwd", ModTime: now},
		"bad":     {Name: "bad", Mode: 0o644, Size: 1000},
		"z-after": {Name: "z-after", Mode: 0o600, Size: 2, ModTime: now},
	}
	base := t.TempDir()
	out, dest := filepath.Join(base, "outside"), filepath.Join(base, "dest")
	for _, d := range []string{out, dest} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	victim := filepath.Join(out, "victim")
	os.WriteFile(victim, []byte("victim"), 0o640)
	os.Symlink(victim, filepath.Join(dest, "f"))
	os.Symlink(out, filepath.Join(dest, "d"))
	os.Symlink(victim, filepath.Join(dest, "ln"))
	os.Symlink(victim, filepath.Join(dest, "bad"))

	var told []*SkipError
	x := Extractor{Skipped: func(e *SkipError) { told = append(told, e) }}
	n, err := x.Extract(context.Background(), fsys, "/", dest, "")
	if err != nil {
		t.Fatal(err)
	}
	if n.Files != 3 || n.Bytes != 10 || n.Skipped != 1 || len(told) != 1 || told[0].Name != "bad" || !strings.Contains(told[0].Error(), "bad chunk") {
		t.Errorf("extracted %+v, told %v", n, told)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "victim" {
		t.Errorf("victim: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Errorf("outside holds %d entries, want the victim alone", len(ents))
	}
	for _, c := range []struct {
		p    string
		mode os.FileMode
	}{{"outside", os.ModeDir | 0o750}, {"outside/victim", 0o640}, {"dest/f", os.ModeSetuid | 0o755}, {"dest/d", os.ModeDir | 0o777}, {"dest/d/x", 0o644}, {"dest/ln", os.ModeSymlink | 0o777}, {"dest/z-after", 0o600}} {
		fi, err := os.Lstat(filepath.Join(base, c.p))
		if err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: %v %v, want %v", c.p, fi.Mode(), err, c.mode)
			continue
		}
		if strings.HasPrefix(c.p, "dest/") && !fi.ModTime().Equal(now) {
			t.Errorf("%s: time %v, want %v", c.p, fi.ModTime(), now)
		}
	}
	if l, _ := os.Readlink(filepath.Join(dest, "ln")); l != "../../../etc/passwd" {
		t.Errorf("ln -> %q", l)
	}
	if _, err := os.Lstat(filepath.Join(dest, "bad")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the skipped file left %v", err)
	}
}

// A destination swapped for a symlink after the caller checked it is not
// one is refused by the open itself, and nothing lands where it points.
func TestExtractDirNoFollow(t *testing.T) {
	fsys := memFS{"f": {Name: "f", Mode: 0o644, Size: 3}}
	base := t.TempDir()
	out, dest := filepath.Join(base, "outside"), filepath.Join(base, "dest")
	if err := os.Mkdir(out, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(out, dest); err != nil {
		t.Fatal(err)
	}
	x := Extractor{DirNoFollow: true}
	if _, err := x.Extract(context.Background(), fsys, "/", dest, ""); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("extract into a symlinked DEST: %v, want it refused as a symlink", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("%d entries written where the symlink points", len(ents))
	}
	// Followed when the caller means it (DEST/.).
	if _, err := x.Extract(context.Background(), fsys, "/", dest+"/.", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "f")); err != nil {
		t.Error(err)
	}
}
