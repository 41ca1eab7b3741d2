package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// incFS is an ext4 filesystem in a file that a test changes between
// images, keeping a copy of its files at each restore point.
type incFS struct {
	t    *testing.T
	file string
	mnt  string
}

func newIncFS(t *testing.T) *incFS {
	dir := t.TempDir()
	f := &incFS{t: t, file: sparseFile(t, filepath.Join(dir, "fs.img"), 256<<20), mnt: filepath.Join(dir, "mnt")}
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", f.file)
	os.Mkdir(f.mnt, 0o755)
	f.change(func(root string) {
		for i := range 40 {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("f%02d", i)), int64(i*i*997+i))
		}
		os.Mkdir(filepath.Join(root, "dir"), 0o755)
		writeRandom(t, filepath.Join(root, "dir", "big"), 20<<20)
		os.Symlink("dir/big", filepath.Join(root, "link"))
	})
	return f
}

func writeRandom(t *testing.T, path string, n int64) {
	b := make([]byte, n)
	rand.Read(b[:n/2]) // half random, half zeros: some compression
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// change mounts the filesystem, lets fn change it, and unmounts it.
func (f *incFS) change(fn func(root string)) {
	sh(f.t, "mount", "-o", "loop", f.file, f.mnt)
	defer sh(f.t, "umount", f.mnt)
	fn(f.mnt)
}

// keep copies the filesystem's files as they are now.
func (f *incFS) keep() string {
	dir := f.t.TempDir()
	sh(f.t, "mount", "-o", "loop,ro", f.file, f.mnt)
	defer sh(f.t, "umount", f.mnt)
	sh(f.t, "cp", "-a", f.mnt+"/.", dir)
	os.RemoveAll(filepath.Join(dir, "lost+found"))
	return dir
}

// checkRestores restores img and checks it holds exactly the files of want
// and checks clean.
func checkRestores(t *testing.T, img, want string, extra ...string) {
	t.Helper()
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, append(append([]string{"restore", "--yes", "--progress", "none"}, extra...), img, back)...)
	sh(t, "e2fsck", "-fn", back)
	root, err := mountImage(t, back, "ro")
	if err != nil {
		t.Fatal(err)
	}
	got := t.TempDir()
	sh(t, "cp", "-a", root+"/.", got)
	os.RemoveAll(filepath.Join(got, "lost+found"))
	sameTree(t, want, got)
}

// A full image, three rounds of changes each imaged as an incremental,
// and a differential: every restore point restores to exactly its own
// files; the chain shows in info; a missing, foreign or damaged parent
// and a changed layout give clear errors before anything is written.
func TestIncrementalChain(t *testing.T) {
	fs := newIncFS(t)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", fs.file, full)
	points := []struct{ img, files string }{{full, fs.keep()}}

	rounds := []func(root string){
		func(root string) { // new, modified, deleted, renamed; a file grown across chunks
			writeRandom(t, filepath.Join(root, "new1"), 300<<10)
			writeRandom(t, filepath.Join(root, "f03"), 70<<10)
			os.Remove(filepath.Join(root, "f05"))
			os.Rename(filepath.Join(root, "f07"), filepath.Join(root, "dir", "f07-moved"))
			appendRandom(t, filepath.Join(root, "dir", "big"), 18<<20)
		},
		func(root string) { // overwrite in place, truncate, a new directory
			overwrite(t, filepath.Join(root, "dir", "big"), 5<<20, 1<<20)
			os.Truncate(filepath.Join(root, "f30"), 1000)
			os.MkdirAll(filepath.Join(root, "d2", "d3"), 0o755)
			writeRandom(t, filepath.Join(root, "d2", "d3", "new2"), 3<<20)
		},
		func(root string) { // deletes, including the grown file; renames over
			os.Remove(filepath.Join(root, "dir", "big"))
			os.Rename(filepath.Join(root, "f10"), filepath.Join(root, "f11"))
			writeRandom(t, filepath.Join(root, "new3"), 9<<20)
		},
	}
	prev := full
	for i, round := range rounds {
		fs.change(round)
		img := filepath.Join(set, fmt.Sprintf("inc%d.platter", i+1))
		ok(t, "create", "--progress", "none", "--incremental", prev, fs.file, img)
		// Only what changed, on the chunk grid: less than a full image
		// of the same state.
		now := filepath.Join(t.TempDir(), "now.platter")
		ok(t, "create", "--progress", "none", fs.file, now)
		if a, b := info(t, img).ImageBytes, info(t, now).ImageBytes; a >= b {
			t.Errorf("%s is %d bytes, a full image of the same state %d", img, a, b)
		}
		points = append(points, struct{ img, files string }{img, fs.keep()})
		prev = img
	}
	fs.change(func(root string) { writeRandom(t, filepath.Join(root, "new4"), 1<<20) })
	diff := filepath.Join(set, "diff.platter")
	ok(t, "create", "--progress", "none", "--differential", full, fs.file, diff)
	points = append(points, struct{ img, files string }{diff, fs.keep()})

	for _, p := range points {
		t.Run(filepath.Base(p.img), func(t *testing.T) {
			ok(t, "verify", p.img)
			checkRestores(t, p.img, p.files)
		})
	}

	j := info(t, filepath.Join(set, "inc3.platter"))
	var types []string
	for _, c := range j.Chain {
		types = append(types, c.Type)
	}
	if got := strings.Join(types, " "); got != "incremental incremental incremental full" || j.Type != "incremental" {
		t.Errorf("inc3's chain is %q (type %s)", got, j.Type)
	}
	if dj := info(t, diff); len(dj.Chain) != 2 || dj.Chain[1].ID != info(t, full).ID || dj.Type != "differential" {
		t.Errorf("the differential's chain is %+v", dj.Chain)
	}

	t.Run("missing parent", func(t *testing.T) {
		away := t.TempDir()
		moved := filepath.Join(away, "renamed.platter")
		id := info(t, filepath.Join(set, "inc1.platter")).ID
		if err := os.Rename(filepath.Join(set, "inc1.platter"), moved); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(moved, filepath.Join(set, "inc1.platter"))
		target := filepath.Join(t.TempDir(), "target.img")
		_, stderr, code := run(t, "restore", "--yes", filepath.Join(set, "inc3.platter"), target)
		if code != 3 || !strings.Contains(stderr, "no image with id "+id) || !strings.Contains(stderr, "inc2.platter") {
			t.Errorf("restore without a parent: exit %d, %s", code, stderr)
		}
		if _, err := os.Stat(target); err == nil {
			t.Error("a restore that could not find a parent wrote its target")
		}
		// Found by id, under another name, in a --search directory.
		checkRestores(t, filepath.Join(set, "inc3.platter"), points[3].files, "--search", away)
	})

	t.Run("parent of another set", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "full.platter")
		ok(t, "create", "--progress", "none", fs.file, other)
		saved := filepath.Join(t.TempDir(), "saved")
		os.Rename(full, saved)
		defer os.Rename(saved, full)
		os.Rename(other, full) // same name, another image
		_, stderr, code := run(t, "verify", filepath.Join(set, "inc1.platter"))
		if code != 3 || !strings.Contains(stderr, "no image with id") {
			t.Errorf("verify with a foreign parent: exit %d, %s", code, stderr)
		}
		os.Remove(full)
	})

	t.Run("damaged parent", func(t *testing.T) {
		// Break a frame of the full image that inc3 still uses.
		saved := filepath.Join(t.TempDir(), "saved")
		sh(t, "cp", full, saved)
		defer sh(t, "cp", saved, full)
		fj := infoChunks(t, full)
		var incs []infoJSON
		for i := 1; i <= 3; i++ {
			incs = append(incs, infoChunks(t, filepath.Join(set, fmt.Sprintf("inc%d.platter", i))))
		}
		var off int64 = -1
		for _, c := range fj.Chunks {
			if c.FrameOffset > 0 && incs[0].fromParent(c.Offset) && incs[1].fromParent(c.Offset) && incs[2].fromParent(c.Offset) {
				off = c.FrameOffset + c.FrameSize/2
				break
			}
		}
		if off < 0 {
			t.Fatal("inc3 takes no chunk from the full image")
		}
		corrupt(t, full, off)
		stdout, stderr, code := run(t, "verify", filepath.Join(set, "inc3.platter"))
		if code != 3 || !strings.Contains(stdout, "bad chunk in "+full) {
			t.Errorf("verify with a damaged parent: exit %d, want 3 naming %s: %s%s", code, full, stdout, stderr)
		}
		// Restore stops there too, naming it.
		_, stderr, code = run(t, "restore", "--yes", filepath.Join(set, "inc3.platter"), filepath.Join(t.TempDir(), "t.img"))
		if code != 3 || !strings.Contains(stderr, full) {
			t.Errorf("restore with a damaged parent: exit %d, %s", code, stderr)
		}
	})

	t.Run("layout changed", func(t *testing.T) {
		bigger := filepath.Join(t.TempDir(), "bigger.img")
		sh(t, "cp", "--sparse=always", fs.file, bigger)
		sh(t, "truncate", "-s", "+1M", bigger)
		img := filepath.Join(t.TempDir(), "x.platter")
		_, stderr, code := run(t, "create", "--incremental", filepath.Join(set, "inc3.platter"), bigger, img)
		if code == 0 || !strings.Contains(stderr, "make a new full image") {
			t.Errorf("incremental of a resized disk: exit %d, %s", code, stderr)
		}
		if _, err := os.Stat(img); err == nil {
			t.Error("a refused incremental left an image")
		}
	})
}

func appendRandom(t *testing.T, path string, n int64) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func overwrite(t *testing.T, path string, off, n int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// corrupt flips one byte of file at off.
func corrupt(t *testing.T, file string, off int64) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0xff
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func infoChunks(t *testing.T, img string) infoJSON { return info(t, img, "--chunks") }

// fromParent reports whether the image takes the chunk at offset from
// its parent.
func (j infoJSON) fromParent(offset int64) bool {
	for _, c := range j.Chunks {
		if c.Offset == offset {
			return c.InParent
		}
	}
	return false
}

// Consolidating an incremental makes it a full image of the same restore
// point; the images made from it still restore, without its old parents.
func TestConsolidate(t *testing.T) {
	fs := newIncFS(t)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", fs.file, full)
	var imgs, trees []string
	prev := full
	for i := range 3 {
		fs.change(func(root string) {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("new%d", i)), 2<<20)
			overwrite(t, filepath.Join(root, "dir", "big"), int64(i)<<20, 1<<20)
		})
		img := filepath.Join(set, fmt.Sprintf("inc%d.platter", i+1))
		ok(t, "create", "--progress", "none", "--incremental", prev, fs.file, img)
		imgs, trees, prev = append(imgs, img), append(trees, fs.keep()), img
	}
	before := info(t, imgs[1])
	out := ok(t, "consolidate", imgs[1])
	if !strings.Contains(out, "a full image now") {
		t.Errorf("consolidate said %q", out)
	}
	after := info(t, imgs[1])
	if after.Type != "full" || after.ID != before.ID || len(after.Chain) != 1 {
		t.Fatalf("consolidated: type %s, id %s (was %s), chain %d", after.Type, after.ID, before.ID, len(after.Chain))
	}
	// Its old parents go; it and the image made from it still restore.
	away := t.TempDir()
	for _, p := range []string{full, imgs[0]} {
		os.Rename(p, filepath.Join(away, filepath.Base(p)))
	}
	checkRestores(t, imgs[1], trees[1])
	checkRestores(t, imgs[2], trees[2])
	if _, stderr, code := run(t, "consolidate", imgs[1]); code != 2 || !strings.Contains(stderr, "full image already") {
		t.Errorf("consolidate of a full image: exit %d, %s", code, stderr)
	}
}

// prune keeps what each rule selects, merges kept images whose parents go
// onto their nearest kept ancestor, and every kept image still restores
// to exactly its files; --dry-run changes nothing.
func TestPrune(t *testing.T) {
	fs := newIncFS(t)
	set := t.TempDir()
	dates := []struct{ name, at string }{
		{"full", "2026-01-01T09:00:00Z"}, {"inc1", "2026-01-01T12:00:00Z"}, {"inc2", "2026-01-02T12:00:00Z"},
		{"inc3", "2026-01-09T12:00:00Z"}, {"inc4", "2026-01-10T12:00:00Z"}, {"inc5", "2026-02-03T09:00:00Z"},
		{"inc6", "2026-02-03T12:00:00Z"},
	}
	trees := map[string]string{}
	prev := ""
	for i, d := range dates {
		img := filepath.Join(set, d.name+".platter")
		args := []string{"create", "--progress", "none", "--test-created", d.at}
		if prev != "" {
			fs.change(func(root string) {
				writeRandom(t, filepath.Join(root, d.name), int64(i)<<19)
				os.Remove(filepath.Join(root, fmt.Sprintf("f%02d", 30+i)))
			})
			args = append(args, "--incremental", prev)
		}
		ok(t, append(args, fs.file, img)...)
		trees[d.name], prev = fs.keep(), img
	}
	for _, c := range []struct {
		rules []string
		keep  string
	}{
		{[]string{"--keep-last", "2"}, "inc5 inc6"},
		{[]string{"--keep-daily", "3"}, "inc3 inc4 inc6"},
		{[]string{"--keep-weekly", "2"}, "inc4 inc6"},
		{[]string{"--keep-monthly", "2"}, "inc4 inc6"},
		{[]string{"--keep-last", "1", "--keep-weekly", "3"}, "inc2 inc4 inc6"},
	} {
		t.Run(strings.Join(c.rules, " "), func(t *testing.T) {
			dir := t.TempDir()
			sh(t, "cp", "-a", set+"/.", dir)
			sums := sh(t, "sh", "-c", "cd "+dir+" && sha256sum *")
			ok(t, append(append([]string{"prune", "--dry-run"}, c.rules...), dir)...)
			if sh(t, "sh", "-c", "cd "+dir+" && sha256sum *") != sums {
				t.Fatal("prune --dry-run changed the set")
			}
			out := ok(t, append(append([]string{"prune"}, c.rules...), dir)...)
			var left []string
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				left = append(left, strings.TrimSuffix(e.Name(), ".platter"))
			}
			if got := strings.Join(left, " "); got != c.keep {
				t.Fatalf("kept %q, want %q; plan:\n%s", got, c.keep, out)
			}
			for _, name := range left {
				img := filepath.Join(dir, name+".platter")
				ok(t, "verify", img)
				checkRestores(t, img, trees[name])
			}
			if oldest := info(t, filepath.Join(dir, left[0]+".platter")); oldest.Type != "full" {
				t.Errorf("%s, the oldest kept, is %s: its parents are gone", left[0], oldest.Type)
			}
		})
	}
	if _, stderr, code := run(t, "prune", set); code != 2 || !strings.Contains(stderr, "needs a rule") {
		t.Errorf("prune without rules: exit %d, %s", code, stderr)
	}
}

// An incremental of a disk holding FAT32, ext4 and NTFS, each changed with
// its own tools, restores every filesystem to exactly its changed files.
func TestIncrementalEveryFilesystem(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	sh(t, "cp", "--sparse=always", fixture(t, "gpt-disk.sh"), disk)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", disk, full)

	parts := sfdiskParts(t, disk)
	extra := filepath.Join(t.TempDir(), "extra.bin")
	writeRandom(t, extra, 3<<20)
	trees := map[int]string{}
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		p := extract(t, disk, parts[n])
		switch fs {
		case "fat32":
			sh(t, "mcopy", "-i", p, extra, "::/extra.bin")
			sh(t, "mdel", "-i", p, "::/"+firstFile(t, fatTree(t, p)))
		case "ext4":
			mnt := t.TempDir()
			sh(t, "mount", "-o", "loop", p, mnt)
			sh(t, "cp", extra, filepath.Join(mnt, "extra.bin"))
			os.Remove(filepath.Join(mnt, firstFile(t, mnt)))
			sh(t, "umount", mnt)
		case "ntfs":
			mnt := t.TempDir()
			sh(t, "ntfs-3g", p, mnt)
			sh(t, "cp", extra, filepath.Join(mnt, "extra.bin"))
			os.Remove(filepath.Join(mnt, firstFile(t, mnt)))
			sh(t, "fusermount", "-u", mnt)
		}
		sh(t, "dd", "if="+p, "of="+disk, "bs=512", fmt.Sprint("seek=", parts[n].start/512), "conv=notrunc", "status=none")
		switch fs {
		case "fat32":
			trees[n] = fatTree(t, p)
		case "ext4":
			trees[n] = extTree(t, p)
		case "ntfs":
			trees[n] = ntfsTree(t, p)
		}
	}
	inc := filepath.Join(set, "inc.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, disk, inc)
	if a, b := info(t, inc).ImageBytes, info(t, full).ImageBytes; a >= b {
		t.Errorf("the incremental is %d bytes, the full image %d", a, b)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", inc, back)
	for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
		checkPartition(t, extract(t, back, parts[n]), fs, trees[n])
	}
	sameBytes(t, disk, back, parts[4].start, parts[4].size, "raw partition")
}

// firstFile names a regular file at the top of a tree.
func firstFile(t *testing.T, dir string) string {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Type().IsRegular() {
			return e.Name()
		}
	}
	t.Fatalf("no file in %s", dir)
	return ""
}
