package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// An ext4 directory of 80 files, three of whose entries are damaged (an
// inode cleared by debugfs clri, one given a file type ext does not
// know, an entry pointing past the last inode): ls, extract and mount
// --files skip and name those three and give every other entry, as
// debugfs dumps them; extract ends with a summary and exit 3. Before, the
// first damaged inode failed the whole directory: 0 of its 80 entries
// came out.
func TestExtractExtDamagedInodes(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "d", "sub"), 0o755)
	for i := 0; i < 80; i++ {
		b := make([]byte, 100+i*997)
		for k := range b {
			b[k] = byte(k*31 + i)
		}
		os.WriteFile(filepath.Join(tree, "d", fmt.Sprintf("f%02d", i)), b, 0o644)
	}
	os.WriteFile(filepath.Join(tree, "d", "sub", "inner.txt"), []byte("inner\n"), 0o644)
	os.Symlink("f00", filepath.Join(tree, "d", "ln"))
	os.WriteFile(filepath.Join(tree, "top.txt"), []byte("top\n"), 0o644)
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 32<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", tree, fs)

	sh(t, "debugfs", "-w", "-R", "clri /d/f10", fs)
	sh(t, "debugfs", "-w", "-R", "sif /d/f40 mode 0170644", fs)
	// f60's entry: name_len 3, file type 1 (a file), the name; the
	// inode number is the 4 bytes 8 before the name.
	b, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	pat := append([]byte{3, 1}, "f60"...)
	if n := bytes.Count(b, pat); n != 1 {
		t.Fatalf("directory entry f60 found %d times", n)
	}
	at := bytes.Index(b, pat) - 6
	binary.LittleEndian.PutUint32(b[at:], 0x7fffffff)
	os.WriteFile(fs, b, 0o644)
	bad := []string{"f10", "f40", "f60"}

	// What debugfs dumps of the damaged filesystem: all but those three.
	want := t.TempDir()
	if out, err := exec.Command("debugfs", "-c", "-n", "-R", "rdump / "+want, fs).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, out)
	}
	os.RemoveAll(filepath.Join(want, "lost+found"))
	for _, name := range bad {
		if _, err := os.Lstat(filepath.Join(want, "d", name)); err == nil {
			t.Fatalf("debugfs dumps d/%s: it is not damaged", name)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(want, "d")); len(ents) != 80+2-len(bad) {
		t.Fatalf("debugfs dumps %d entries of d, want %d", len(ents), 80+2-len(bad))
	}

	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", fs, img)

	t.Run("extract", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out")
		stdout, stderr, code := run(t, "extract", img, "/", dest)
		if code != 3 {
			t.Errorf("extract: exit %d, want 3\n%s%s", code, stdout, stderr)
		}
		checkSkips(t, "extract", stderr, bad)
		os.RemoveAll(filepath.Join(dest, "lost+found"))
		sameTree(t, want, dest)
	})
	t.Run("ls", func(t *testing.T) {
		stdout, stderr, code := run(t, "ls", img, "/d")
		if code != 3 {
			t.Errorf("ls: exit %d, want 3\n%s", code, stderr)
		}
		checkSkips(t, "ls", stderr, bad)
		if n := len(strings.Fields(stdout)); n != 80+2-len(bad) {
			t.Errorf("ls /d lists %d entries, want %d:\n%s", n, 80+2-len(bad), stdout)
		}
	})
	t.Run("mount", func(t *testing.T) {
		mnt := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img, mnt)
		t.Cleanup(func() { unmountPlatter(t, mnt) })
		ents, err := os.ReadDir(filepath.Join(mnt, "d"))
		if err != nil || len(ents) != 80+2-len(bad) {
			t.Fatalf("mount --files lists %d entries of d (%v), want %d", len(ents), err, 80+2-len(bad))
		}
		for _, p := range []string{"d/f79", "d/sub/inner.txt", "top.txt"} {
			got, err := os.ReadFile(filepath.Join(mnt, p))
			if w, _ := os.ReadFile(filepath.Join(want, p)); err != nil || !bytes.Equal(got, w) {
				t.Errorf("%s through the mount: %d bytes (%v), want %d as debugfs dumps it", p, len(got), err, len(w))
			}
		}
	})
}

// An ext2 directory of 200 files over four 1 KiB blocks, the first entry
// of its second block damaged (rec_len 0): that block's entries cannot be
// named, the other three blocks' can. ls, extract and mount --files give
// exactly what e2fsck -fy keeps of the directory outside that block,
// byte for byte as debugfs dumps it, and name the damage; extract exits
// 3. Before, the whole directory was skipped (0 of 200), and debugfs
// rdump itself stops at the damage (the first block's 62).
func TestExtractExtDamagedDirBlock(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	for i := 0; i < 200; i++ {
		os.WriteFile(filepath.Join(tree, "d", fmt.Sprintf("file%03d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 16<<20)
	sh(t, "mkfs.ext2", "-q", "-F", "-b", "1024", "-d", tree, fs)
	undamaged := t.TempDir()
	sh(t, "debugfs", "-R", "rdump /d "+undamaged, fs)

	var blocks []int64
	for _, f := range strings.Fields(sh(t, "debugfs", "-R", "blocks /d", fs)) {
		var b int64
		if _, err := fmt.Sscan(f, &b); err == nil {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) < 3 {
		t.Fatalf("/d has blocks %v: want several", blocks)
	}
	// The names the second block holds, read off its bytes.
	lost := map[string]bool{}
	for _, m := range regexp.MustCompile(`file\d{3}`).FindAll(readAt(t, fs, 1024, blocks[1]*1024), -1) {
		lost[string(m)] = true
	}
	if len(lost) == 0 {
		t.Fatal("no names in the second block of /d")
	}
	writeAt(t, fs, []byte{0, 0}, blocks[1]*1024+4)

	// What e2fsck keeps, less that block's names (it may salvage some).
	repaired := trustCopy(t, fs)
	if out, err := exec.Command("e2fsck", "-fy", repaired).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -fy: %v\n%s", err, out)
	}
	kept := t.TempDir()
	sh(t, "debugfs", "-R", "rdump /d "+kept, repaired)
	want := t.TempDir()
	os.Mkdir(filepath.Join(want, "d"), 0o755)
	ents, _ := os.ReadDir(filepath.Join(kept, "d"))
	for _, e := range ents {
		if !lost[e.Name()] {
			b := readFile(t, filepath.Join(undamaged, "d", e.Name()))
			os.WriteFile(filepath.Join(want, "d", e.Name()), b, 0o644)
		}
	}
	if n := 200 - len(lost); len(ents) < n {
		t.Fatalf("e2fsck keeps %d entries of /d, fewer than the %d outside the damaged block", len(ents), n)
	}

	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", fs, img)
	named := func(what, stderr string, code int) {
		t.Helper()
		if code != 3 || !strings.Contains(stderr, "/d: entries skipped:") || !strings.Contains(stderr, "directory entry length 0") {
			t.Errorf("%s: exit %d, want 3 and the damaged block of /d named:\n%s", what, code, stderr)
		}
	}
	t.Run("extract", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out")
		_, stderr, code := run(t, "extract", img, "/d", dest)
		named("extract", stderr, code)
		got := t.TempDir()
		os.Rename(dest, filepath.Join(got, "d"))
		sameTree(t, want, got)
	})
	t.Run("ls", func(t *testing.T) {
		stdout, stderr, code := run(t, "ls", img, "/d")
		named("ls", stderr, code)
		if n := len(strings.Fields(stdout)); n != 200-len(lost) {
			t.Errorf("ls /d lists %d entries, want %d", n, 200-len(lost))
		}
	})
	t.Run("mount", func(t *testing.T) {
		mnt := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img, mnt)
		t.Cleanup(func() { unmountPlatter(t, mnt) })
		sameTree(t, filepath.Join(want, "d"), filepath.Join(mnt, "d"))
	})
}

// A FAT16 directory of 120 files with long names over 31 clusters, its
// cluster chain broken after the fourth (a link outside the volume, in
// the FAT that is read): ls, extract and mount --files give the entries
// of the clusters before the break, exactly the files mcopy finds once
// fsck.fat -a has cut the chain there, byte for byte; the break is
// named and extract exits 3. Before, the whole directory was skipped.
func TestExtractFATDamagedDirChain(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	for i := 0; i < 120; i++ {
		os.WriteFile(filepath.Join(tree, "d", fmt.Sprintf("a file with a long name number %d.txt", i)), []byte(fmt.Sprintf("content %d\n", i)), 0o644)
	}
	os.WriteFile(filepath.Join(tree, "top.txt"), []byte("top\n"), 0o644)
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 16<<20)
	sh(t, "mkfs.fat", "-F", "16", "-s", "1", fs)
	mcopyTree(t, fs, tree)
	chain := frChain(t, fs, "d")
	if len(chain) < 8 {
		t.Fatalf("/d's chain %v: want a long one", chain)
	}
	frSetEntry(t, fs, chain[3], 0xfff0)

	repaired := trustCopy(t, fs)
	if out, err := exec.Command("fsck.fat", "-a", "-w", repaired).CombinedOutput(); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("fsck.fat -a: %v\n%s", err, out)
	}
	want := fatTree(t, repaired)
	// fsck.fat saves the lost clusters' chains as FSCKnnnn.REC in the
	// root: not files of the source.
	recs, _ := filepath.Glob(filepath.Join(want, "FSCK*.REC"))
	for _, r := range recs {
		os.Remove(r)
	}
	ents, _ := os.ReadDir(filepath.Join(want, "d"))
	if len(ents) == 0 || len(ents) >= 120 {
		t.Fatalf("fsck.fat keeps %d of /d's 120 entries: the chain was not cut in the middle", len(ents))
	}
	t.Logf("fsck.fat keeps %d of /d's 120 entries", len(ents))

	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", fs, img)
	named := func(what, stderr string, code int) {
		t.Helper()
		if code != 3 || !strings.Contains(stderr, "/d: entries skipped:") || !strings.Contains(stderr, fmt.Sprintf("from cluster %d to cluster %d", chain[3], 0xfff0)) {
			t.Errorf("%s: exit %d, want 3 and the break in /d's chain named:\n%s", what, code, stderr)
		}
	}
	t.Run("extract", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "out")
		_, stderr, code := run(t, "extract", img, "/", dest)
		named("extract", stderr, code)
		sameTree(t, want, dest)
	})
	t.Run("ls", func(t *testing.T) {
		stdout, stderr, code := run(t, "ls", img, "/d")
		named("ls", stderr, code)
		if n := strings.Count(stdout, "\n"); n != len(ents) {
			t.Errorf("ls /d lists %d entries, want %d", n, len(ents))
		}
	})
	t.Run("mount", func(t *testing.T) {
		mnt := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img, mnt)
		t.Cleanup(func() { unmountPlatter(t, mnt) })
		sameTree(t, want, mnt)
	})
}
