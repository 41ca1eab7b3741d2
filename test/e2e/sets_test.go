package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// twoDisks is one directory holding the images of two disks (ext4
// filesystems in files, made by mkfs.ext4): disk a a full image and two
// incrementals, disk b a full image and two differentials, their dates
// interleaved so that the newest image of all is b's. A file that is not
// an image and a .partial file lie beside them.
type twoDisks struct {
	dir    string
	source map[string]string // "a", "b" -> the filesystem file imaged
	trees  map[string]string // image name -> its files
	ids    map[string]string // image name -> id
}

var setImages = []struct{ name, parent, at string }{
	{"a-full", "", "2026-01-01T09:00:00Z"},
	{"b-full", "", "2026-01-01T10:00:00Z"},
	{"a-inc1", "a-full", "2026-01-02T09:00:00Z"},
	{"a-inc2", "a-inc1", "2026-01-03T09:00:00Z"},
	{"b-diff1", "b-full", "2026-01-04T10:00:00Z"},
	{"b-diff2", "b-full", "2026-01-05T10:00:00Z"},
}

func newTwoDisks(t *testing.T) *twoDisks {
	s := &twoDisks{dir: t.TempDir(), source: map[string]string{}, trees: map[string]string{}, ids: map[string]string{}}
	fss := map[string]*incFS{"a": newIncFS(t), "b": newIncFS(t)}
	for i, im := range setImages {
		disk := im.name[:1]
		fs := fss[disk]
		s.source[disk] = fs.file
		// 1 MiB chunks: a small change leaves most of a parent's
		// chunks to its children.
		args := []string{"create", "--progress", "none", "--test-created", im.at}
		switch {
		case im.parent == "":
			args = append(args, "--chunk-size", "1M")
		case strings.Contains(im.name, "inc"):
			args = append(args, "--incremental", s.path(im.parent))
		case strings.Contains(im.name, "diff"):
			args = append(args, "--differential", s.path(im.parent))
		}
		switch {
		case disk == "a" && im.parent != "": // a few MiB changed
			fs.change(func(root string) {
				writeRandom(t, filepath.Join(root, im.name), 6<<20)
				overwrite(t, filepath.Join(root, "dir", "big"), int64(i)<<20, 2<<20)
				os.Remove(filepath.Join(root, fmt.Sprintf("f%02d", 20+i)))
			})
		case im.parent != "": // a little changed: each differential uses most of the full image
			fs.change(func(root string) {
				writeRandom(t, filepath.Join(root, im.name), 64<<10)
				os.Remove(filepath.Join(root, fmt.Sprintf("f%02d", 20+i)))
			})
		}
		ok(t, append(args, fs.file, s.path(im.name))...)
		s.trees[im.name] = fs.keep()
		s.ids[im.name] = info(t, s.path(im.name)).ID
	}
	if err := os.WriteFile(filepath.Join(s.dir, "notes.txt"), []byte("not an image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "cp", s.path("a-full"), filepath.Join(s.dir, "a-new.platter.partial"))
	return s
}

func (s *twoDisks) path(name string) string { return filepath.Join(s.dir, name+".platter") }

// copyTo copies the directory's files to a new directory.
func (s *twoDisks) copyTo(t *testing.T) string {
	dir := t.TempDir()
	sh(t, "cp", "-a", s.dir+"/.", dir)
	return dir
}

type listDoc struct {
	Sets []struct {
		Source     string    `json:"source"`
		SourceSize int64     `json:"source_size"`
		Table      string    `json:"table"`
		Host       string    `json:"host"`
		Images     []listImg `json:"images"`
	} `json:"sets"`
	Damaged []listImg `json:"damaged"`
	Locked  []listImg `json:"locked"`
}

type listImg struct {
	ID       string    `json:"id"`
	File     string    `json:"file"`
	Created  time.Time `json:"created"`
	Type     string    `json:"type"`
	Parent   string    `json:"parent"`
	Size     int64     `json:"size"`
	Restores bool      `json:"restores"`
	Problem  string    `json:"problem"`
}

func listJSON(t *testing.T, args ...string) listDoc {
	t.Helper()
	var d listDoc
	out := ok(t, append([]string{"list", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return d
}

// byFile finds an image of a list by its file's name.
func (d listDoc) byFile(name string) (listImg, bool) {
	for _, s := range d.Sets {
		for _, im := range s.Images {
			if filepath.Base(im.File) == name+".platter" {
				return im, true
			}
		}
	}
	return listImg{}, false
}

// fits fails the test if a line of out is wider than 80 columns.
func fits(t *testing.T, what, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if len([]rune(l)) > 80 {
			t.Errorf("%s: a line of %d columns:\n%s", what, len([]rune(l)), l)
		}
	}
}

// list groups a directory's images by disk, oldest first, with their
// chains, and says which restore: a missing parent or a damaged image
// is reported, not fatal; --search finds a parent elsewhere.
func TestListSets(t *testing.T) {
	s := newTwoDisks(t)
	out := ok(t, "list", s.dir)
	t.Logf("platter list:\n%s", out)
	fits(t, "list", out)
	if !strings.Contains(out, "6 images of 2 disks") || strings.Contains(out, "notes.txt") || strings.Contains(out, ".partial") {
		t.Errorf("list of 6 images of 2 disks, a text file and a .partial:\n%s", out)
	}
	d := listJSON(t, s.dir)
	if len(d.Sets) != 2 || len(d.Damaged) != 0 {
		t.Fatalf("list --json: %d sets, %d damaged; want 2, 0", len(d.Sets), len(d.Damaged))
	}
	for i, disk := range []string{"a", "b"} {
		set := d.Sets[i]
		if set.Source != s.source[disk] || set.SourceSize != 256<<20 || set.Table != "none" {
			t.Errorf("set %d is %s, %d bytes, table %s; want disk %s: %s, %d bytes, none", i+1, set.Source, set.SourceSize, set.Table, disk, s.source[disk], 256<<20)
		}
		var names []string
		for j, im := range set.Images {
			name := strings.TrimSuffix(filepath.Base(im.File), ".platter")
			names = append(names, name)
			if j > 0 && im.Created.Before(set.Images[j-1].Created) {
				t.Errorf("set %d is not oldest first: %s after %s", i+1, name, names[j-1])
			}
			if !im.Restores || im.Problem != "" {
				t.Errorf("%s: restores %v (%s)", name, im.Restores, im.Problem)
			}
			// The chain as info, reading the image itself, tells it.
			j := info(t, im.File)
			wantParent := ""
			if len(j.Chain) > 1 {
				wantParent = j.Chain[1].ID
			}
			if im.ID != j.ID || im.Parent != wantParent || im.Type != j.Type {
				t.Errorf("%s: list says id %s, parent %q, %s; info says %s, parent %q, %s", name, im.ID, im.Parent, im.Type, j.ID, wantParent, j.Type)
			}
			if st, err := os.Stat(im.File); err != nil || st.Size() != im.Size {
				t.Errorf("%s: size %d, the file: %v %v", name, im.Size, st, err)
			}
			// Every image's line shows its short id, type and file.
			if !strings.Contains(out, im.ID[:8]+"  "+im.Created.Local().Format("2006-01-02 15:04")+"  "+im.Type) || !strings.Contains(out, filepath.Base(im.File)) {
				t.Errorf("the text list has no line for %s (%s)", name, im.ID[:8])
			}
		}
		want := map[string]string{"a": "a-full a-inc1 a-inc2", "b": "b-full b-diff1 b-diff2"}[disk]
		if got := strings.Join(names, " "); got != want {
			t.Errorf("set %d holds %q, want %q", i+1, got, want)
		}
	}
	if !strings.Contains(out, "3 images: all restore") {
		t.Errorf("the text list does not say every image restores:\n%s", out)
	}

	t.Run("missing parent", func(t *testing.T) {
		away := t.TempDir()
		os.Rename(s.path("a-inc1"), filepath.Join(away, "moved.platter"))
		defer os.Rename(filepath.Join(away, "moved.platter"), s.path("a-inc1"))
		out, stderr, code := run(t, "list", s.dir)
		if code != 0 {
			t.Fatalf("list with a parent missing: exit %d, want 0\n%s", code, stderr)
		}
		fits(t, "list", out)
		d := listJSON(t, s.dir)
		inc2, _ := d.byFile("a-inc2")
		want := "missing parent " + s.ids["a-inc1"][:8]
		if inc2.Restores || inc2.Problem != want || !strings.Contains(out, "does not restore: "+want) {
			t.Errorf("a-inc2 without its parent: restores %v, %q; want %q\n%s", inc2.Restores, inc2.Problem, want, out)
		}
		for _, name := range []string{"a-full", "b-full", "b-diff1", "b-diff2"} {
			if im, found := d.byFile(name); !found || !im.Restores {
				t.Errorf("%s: listed %v, restores %v (%s)", name, found, im.Restores, im.Problem)
			}
		}
		if _, found := d.byFile("a-inc1"); found {
			t.Error("a file moved away is listed")
		}
		// What list says, restore does.
		if _, stderr, code := run(t, "restore", "--yes", s.path("a-inc2"), filepath.Join(t.TempDir(), "t.img")); code != 3 || !strings.Contains(stderr, s.ids["a-inc1"]) {
			t.Errorf("restore of a-inc2 without its parent: exit %d, %s", code, stderr)
		}
		// Found by id under another name in a --search directory.
		if inc2, _ := listJSON(t, "--search", away, s.dir).byFile("a-inc2"); !inc2.Restores {
			t.Errorf("a-inc2 with --search: restores %v (%s)", inc2.Restores, inc2.Problem)
		}
		checkRestores(t, s.path("a-inc2"), s.trees["a-inc2"], "--search", away)
	})

	t.Run("damaged", func(t *testing.T) {
		dir := s.copyTo(t)
		// A truncated image; a parent whose footer is broken.
		sh(t, "cp", filepath.Join(dir, "b-diff2.platter"), filepath.Join(dir, "cut.platter"))
		sh(t, "truncate", "-s", "-100", filepath.Join(dir, "cut.platter"))
		st, _ := os.Stat(filepath.Join(dir, "b-full.platter"))
		corrupt(t, filepath.Join(dir, "b-full.platter"), st.Size()-40)
		out, stderr, code := run(t, "list", dir)
		if code != 0 {
			t.Fatalf("list of damaged images: exit %d, want 0\n%s", code, stderr)
		}
		t.Logf("platter list with damage:\n%s", out)
		fits(t, "list", out)
		d := listJSON(t, dir)
		damaged := map[string]string{}
		for _, im := range d.Damaged {
			damaged[filepath.Base(im.File)] = im.Problem
			if im.Restores || !strings.HasPrefix(im.Problem, "damaged: ") {
				t.Errorf("%s: restores %v, %q", im.File, im.Restores, im.Problem)
			}
		}
		if len(damaged) != 2 || damaged["cut.platter"] == "" || damaged["b-full.platter"] == "" {
			t.Errorf("damaged: %v, want cut.platter and b-full.platter", damaged)
		}
		for _, name := range []string{"b-diff1", "b-diff2"} {
			im, _ := d.byFile(name)
			if im.Restores || !strings.HasPrefix(im.Problem, "damaged parent "+s.ids["b-full"][:8]) {
				t.Errorf("%s with a damaged parent: restores %v, %q", name, im.Restores, im.Problem)
			}
		}
		if _, stderr, code := run(t, "verify", filepath.Join(dir, "b-diff1.platter")); code != 3 {
			t.Errorf("verify of b-diff1 with a damaged parent: exit %d, %s", code, stderr)
		}
		for _, name := range []string{"a-full", "a-inc1", "a-inc2"} {
			if im, _ := d.byFile(name); !im.Restores {
				t.Errorf("%s: %s", name, im.Problem)
			}
		}
	})

	// An incremental of the same disk under another name (another
	// SourceKey: no serial, no table id) still goes with its parent:
	// prune must never split a chain between two sets.
	t.Run("renamed source", func(t *testing.T) {
		dir := s.copyTo(t)
		other := filepath.Join(t.TempDir(), "renamed.img")
		if err := os.Link(s.source["a"], other); err != nil {
			t.Fatal(err)
		}
		inc3 := filepath.Join(dir, "a-inc3.platter")
		ok(t, "create", "--progress", "none", "--test-created", "2026-01-07T09:00:00Z", "--incremental", filepath.Join(dir, "a-inc2.platter"), other, inc3)
		d := listJSON(t, dir)
		if len(d.Sets) != 2 || len(d.Sets[0].Images) != 4 || filepath.Base(d.Sets[0].Images[3].File) != "a-inc3.platter" || d.Sets[0].Source != other {
			t.Fatalf("a-inc3, of %s, made from a-inc2: %+v", other, d.Sets)
		}
		ok(t, "prune", "--keep-last", "1", dir)
		if got := strings.Join(images(t, dir), " "); got != "a-inc3 b-diff2" {
			t.Fatalf("prune --keep-last 1 kept %q, want %q", got, "a-inc3 b-diff2")
		}
		checkRestores(t, inc3, s.trees["a-inc2"])
	})

	t.Run("empty", func(t *testing.T) {
		dir := t.TempDir()
		if out := ok(t, "list", dir); !strings.Contains(out, "no Platter images") {
			t.Errorf("list of an empty directory: %q", out)
		}
		if d := listJSON(t, dir); d.Sets == nil || len(d.Sets) != 0 {
			t.Errorf("list --json of an empty directory: %+v", d)
		}
		if _, _, code := run(t, "list", filepath.Join(dir, "nothing")); code != 1 {
			t.Errorf("list of a directory that does not exist: exit %d, want 1", code)
		}
	})
}

// images lists the images left in dir, by name.
func images(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if name, isImage := strings.CutSuffix(e.Name(), ".platter"); isImage {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// prune --keep-last 1 of a directory holding two disks' images keeps the
// newest image of each disk, not the newest of all: both restore to
// exactly their files; --dry-run changes nothing. (Before prune grouped
// by disk, it kept b-diff2 alone and deleted every image of disk a.)
func TestPruneSets(t *testing.T) {
	s := newTwoDisks(t)
	dir := s.copyTo(t)
	sums := sh(t, "sh", "-c", "cd "+dir+" && sha256sum *")
	plan := ok(t, "prune", "--keep-last", "1", "--dry-run", dir)
	t.Logf("platter prune --keep-last 1 --dry-run:\n%s", plan)
	if sh(t, "sh", "-c", "cd "+dir+" && sha256sum *") != sums {
		t.Fatal("prune --dry-run changed the directory")
	}
	out := ok(t, "prune", "--keep-last", "1", dir)
	if got := strings.Join(images(t, dir), " "); got != "a-inc2 b-diff2" {
		t.Fatalf("prune --keep-last 1 kept %q, want the newest of each disk, %q; plan:\n%s", got, "a-inc2 b-diff2", out)
	}
	for _, name := range []string{"a-inc2", "b-diff2"} {
		img := filepath.Join(dir, name+".platter")
		ok(t, "verify", img)
		checkRestores(t, img, s.trees[name])
		if j := info(t, img); j.Type != "full" || j.ID != s.ids[name] {
			t.Errorf("%s, its parents gone, is %s, id %s (was %s)", name, j.Type, j.ID, s.ids[name])
		}
	}
	for _, f := range []string{"notes.txt", "a-new.platter.partial"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("prune removed %s, which is not an image", f)
		}
	}
}

type pruneDoc struct {
	DryRun bool `json:"dry_run"`
	Sets   []struct {
		Source string `json:"source"`
		Keep   []struct {
			File string `json:"file"`
		} `json:"keep"`
		Merge []struct {
			File        string `json:"file"`
			Onto        string `json:"onto"`
			Size        int64  `json:"size"`
			WritesBytes int64  `json:"writes_bytes"`
			SizeAfter   *int64 `json:"size_after"`
		} `json:"merge"`
		Delete []struct {
			File string `json:"file"`
			Size int64  `json:"size"`
		} `json:"delete"`
		WritesBytes  int64  `json:"writes_bytes"`
		GrowsBytes   int64  `json:"grows_bytes"`
		DeletesBytes int64  `json:"deletes_bytes"`
		FreesBytes   int64  `json:"frees_bytes"`
		FreedBytes   *int64 `json:"freed_bytes"`
	} `json:"sets"`
	FreesBytes int64  `json:"frees_bytes"`
	FreedBytes *int64 `json:"freed_bytes"`
	Done       bool   `json:"done"`
}

// mergeTolerance is how far prune's estimate of what a merge writes may
// be from the merged file's size: frames are counted exactly, the index,
// maps and metadata are estimated (docs/usage.md).
const mergeTolerance = 64 << 10

// dirBytes is the total size of the images in dir.
func dirBytes(t *testing.T, dir string) int64 {
	var n int64
	for _, name := range images(t, dir) {
		st, err := os.Stat(filepath.Join(dir, name+".platter"))
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// The plan's numbers, per disk, are what prune then does to the
// directory: "writes" is the merged files' size (within mergeTolerance),
// "frees" the deleted files less what the merges add; when the merges
// add more (two differentials kept, their full image deleted) the plan
// says the directory grows, beforehand. --json parses, plan and result.
func TestPruneSetsNumbers(t *testing.T) {
	s := newTwoDisks(t)
	for _, c := range []struct {
		keep  string
		left  string
		grows map[string]bool // by disk: the plan says it grows
	}{
		{"1", "a-inc2 b-diff2", map[string]bool{}},
		{"2", "a-inc1 a-inc2 b-diff1 b-diff2", map[string]bool{"b": true}},
	} {
		t.Run("keep-last "+c.keep, func(t *testing.T) {
			dir := s.copyTo(t)
			sums := sh(t, "sh", "-c", "cd "+dir+" && sha256sum *")
			text := ok(t, "prune", "--keep-last", c.keep, "--dry-run", dir)
			t.Logf("platter prune --keep-last %s --dry-run:\n%s", c.keep, text)
			fits(t, "prune", text)
			var plan pruneDoc
			if err := json.Unmarshal([]byte(ok(t, "prune", "--keep-last", c.keep, "--dry-run", "--json", dir)), &plan); err != nil {
				t.Fatalf("prune --dry-run --json: %v", err)
			}
			if sh(t, "sh", "-c", "cd "+dir+" && sha256sum *") != sums {
				t.Fatal("prune --dry-run changed the directory")
			}
			if !plan.DryRun || plan.Done || plan.FreedBytes != nil || len(plan.Sets) != 2 {
				t.Fatalf("the dry run's document: dry_run %v, done %v, %d sets", plan.DryRun, plan.Done, len(plan.Sets))
			}
			// The text plan's line for each disk: "keep K, merge M, delete D: ...".
			var lines []string
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, "  keep ") && strings.Contains(l, ", merge ") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 2 {
				t.Fatalf("the text plan has %d lines of a disk's totals, want 2:\n%s", len(lines), text)
			}
			for i, disk := range []string{"a", "b"} {
				ps := plan.Sets[i]
				if ps.Source != s.source[disk] {
					t.Errorf("set %d is %s, want disk %s", i+1, ps.Source, disk)
				}
				if ps.FreesBytes != ps.DeletesBytes-ps.GrowsBytes {
					t.Errorf("disk %s: frees %d, not deletes %d less grows %d", disk, ps.FreesBytes, ps.DeletesBytes, ps.GrowsBytes)
				}
				says := ", frees " // what the merges write, then what the set frees
				if c.grows[disk] {
					says = ", grows by "
				}
				want := fmt.Sprintf("  keep %d, merge %d, delete %d: writes about ", len(ps.Keep), len(ps.Merge), len(ps.Delete))
				if (ps.FreesBytes < 0) != c.grows[disk] || !strings.HasPrefix(lines[i], want) || !strings.Contains(lines[i], says) {
					t.Errorf("disk %s: frees %d (want it to grow: %v); the plan says %q, want %q...%q", disk, ps.FreesBytes, c.grows[disk], lines[i], want, says)
				}
			}
			before := dirBytes(t, dir)

			var done pruneDoc
			if err := json.Unmarshal([]byte(ok(t, "prune", "--keep-last", c.keep, "--json", dir)), &done); err != nil {
				t.Fatalf("prune --json: %v", err)
			}
			if got := strings.Join(images(t, dir), " "); got != c.left {
				t.Fatalf("kept %q, want %q", got, c.left)
			}
			after := dirBytes(t, dir)
			if !done.Done || done.FreedBytes == nil || *done.FreedBytes != before-after {
				t.Errorf("prune --json: done %v, freed %v; the directory went from %d to %d bytes", done.Done, done.FreedBytes, before, after)
			}
			var est int64
			for i, ps := range plan.Sets {
				disk := []string{"a", "b"}[i]
				var deleted, grew int64
				for _, d := range ps.Delete {
					deleted += d.Size
					if _, err := os.Stat(d.File); err == nil {
						t.Errorf("%s is still there", d.File)
					}
				}
				for _, m := range ps.Merge {
					st, err := os.Stat(filepath.Join(dir, filepath.Base(m.File)))
					if err != nil {
						t.Fatal(err)
					}
					grew += st.Size() - m.Size
					if diff := m.WritesBytes - st.Size(); diff > mergeTolerance || diff < -mergeTolerance {
						t.Errorf("%s: the plan said it writes %d bytes; the merged file is %d", m.File, m.WritesBytes, st.Size())
					}
					t.Logf("%s: estimated %d bytes, wrote %d (%+d)", filepath.Base(m.File), m.WritesBytes, st.Size(), m.WritesBytes-st.Size())
				}
				if deleted != ps.DeletesBytes {
					t.Errorf("disk %s: the plan deletes %d bytes; the files deleted held %d", disk, ps.DeletesBytes, deleted)
				}
				tol := int64(len(ps.Merge)) * mergeTolerance
				if diff := ps.GrowsBytes - grew; diff > tol || diff < -tol {
					t.Errorf("disk %s: the plan said the merges add %d bytes; they added %d", disk, ps.GrowsBytes, grew)
				}
				if freed := deleted - grew; ps.FreesBytes-freed > tol || freed-ps.FreesBytes > tol || *done.Sets[i].FreedBytes != freed {
					t.Errorf("disk %s: the plan said it frees %d bytes, the result %d; it freed %d", disk, ps.FreesBytes, *done.Sets[i].FreedBytes, freed)
				}
				est += ps.FreesBytes
			}
			if plan.FreesBytes != est {
				t.Errorf("the plan frees %d in all, its sets %d", plan.FreesBytes, est)
			}
			for _, name := range images(t, dir) {
				img := filepath.Join(dir, name+".platter")
				ok(t, "verify", img)
				checkRestores(t, img, s.trees[name])
			}
		})
	}
}
