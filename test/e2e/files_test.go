package e2e

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf16"
)

// ls and extract read files straight out of images, for every filesystem
// the fixtures hold, and for ext in every flavour: what extract copies out
// is every file, byte for byte, with its mode and time.
func TestLsExtract(t *testing.T) {
	// Bare ext filesystems of each kind, beside the fixtures' disks.
	bare := t.TempDir()
	tree := filepath.Join(bare, "tree")
	sh(t, filepath.Join(fixtures, "files.sh"), tree)
	// Owners beyond 16 bits too (ext keeps the high halves apart).
	sh(t, "chown", "1234:5678", filepath.Join(tree, "docs/numbers.txt"))
	sh(t, "chown", "100000:200000", filepath.Join(tree, "bin"))
	sh(t, "chown", "-h", "4321:8765", filepath.Join(tree, "link-to-numbers"))
	for _, c := range []struct {
		name string
		mkfs []string
	}{
		{"ext2-1k", []string{"mkfs.ext2", "-b", "1024"}},
		{"ext3", []string{"mkfs.ext3"}},
		{"ext4-nocsum", []string{"mkfs.ext4", "-O", "^metadata_csum,^64bit"}},
		{"ext4-inline", []string{"mkfs.ext4", "-O", "inline_data"}},
	} {
		fs := sparseFile(t, filepath.Join(bare, c.name+".img"), 64<<20)
		sh(t, c.mkfs[0], append(c.mkfs[1:], "-q", "-F", "-d", tree, fs)...)
		img := filepath.Join(bare, c.name+".platter")
		ok(t, "create", "--progress", "none", fs, img)
		t.Run(c.name, func(t *testing.T) { checkExtract(t, img, 1, "ext", tree) })
	}
	for _, c := range []struct {
		fixture string
		fs      map[int]string
	}{
		{"gpt-disk.sh", map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"}},
		{"mbr-disk.sh", map[int]string{1: "fat16", 2: "ext4", 5: "ext2", 6: "ntfs"}},
	} {
		t.Run(c.fixture, func(t *testing.T) {
			disk := fixture(t, c.fixture)
			img := filepath.Join(t.TempDir(), "disk.platter")
			ok(t, "create", "--progress", "none", disk, img)
			for n, fs := range c.fs {
				t.Run(fmt.Sprint(fs, "-", n), func(t *testing.T) {
					checkExtract(t, img, n, fs, disk+".files/p"+fmt.Sprint(n))
				})
			}
		})
	}
}

// checkExtract extracts partition n of img whole and compares it with
// the tree want (for ext also modes and times), and checks ls lists the
// root.
func checkExtract(t *testing.T, img string, n int, fs, want string) {
	dest := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", fmt.Sprintf("%s:%d", img, n), "/", dest)
	os.RemoveAll(filepath.Join(dest, "lost+found")) // as extTree leaves it out
	sameTree(t, want, dest)
	if strings.HasPrefix(fs, "ext") { // modes, times and owners kept
		for _, f := range []string{"docs/numbers.txt", "bin/size-1.bin", "bin", "docs", "link-to-numbers"} {
			a, _ := os.Lstat(filepath.Join(want, f))
			b, err := os.Lstat(filepath.Join(dest, f))
			if err != nil || a.Mode() != b.Mode() || a.ModTime().Unix() != b.ModTime().Unix() {
				t.Errorf("%s: mode %v time %v, want %v %v (%v)", f, b.Mode(), b.ModTime(), a.Mode(), a.ModTime(), err)
				continue
			}
			as, bs := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
			if as.Uid != bs.Uid || as.Gid != bs.Gid {
				t.Errorf("%s: owner %d:%d, want %d:%d", f, bs.Uid, bs.Gid, as.Uid, as.Gid)
			}
		}
	}
	ents, _ := os.ReadDir(want)
	out := ok(t, "ls", fmt.Sprintf("%s:%d", img, n))
	for _, e := range ents {
		if !strings.Contains(out, e.Name()) {
			t.Errorf("ls does not list %s:\n%s", e.Name(), out)
		}
	}
}

// A FAT12 floppy, one file extracted into an existing directory, and
// errors: no such partition, no such file, a partition with no
// filesystem platter reads.
func TestExtractFAT12(t *testing.T) {
	dir := t.TempDir()
	fs := sparseFile(t, filepath.Join(dir, "floppy.img"), 1440<<10)
	sh(t, "mkfs.fat", "-F", "12", fs)
	src := filepath.Join(dir, "hello.txt")
	os.WriteFile(src, []byte(strings.Repeat("hello fat12\n", 3000)), 0o644)
	sh(t, "mcopy", "-i", fs, src, "::/HELLO.TXT")
	img := filepath.Join(dir, "floppy.platter")
	ok(t, "create", "--progress", "none", fs, img)
	dest := t.TempDir()
	ok(t, "extract", img, "/HELLO.TXT", dest)
	got, _ := os.ReadFile(filepath.Join(dest, "HELLO.TXT"))
	want, _ := os.ReadFile(src)
	if string(got) != string(want) {
		t.Errorf("HELLO.TXT: %d bytes, want %d", len(got), len(want))
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", img + ":3"}, "no partition 3"},
		{[]string{"ls", img, "/nothing"}, "nothing"},
	} {
		if _, stderr, code := run(t, c.args...); code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %s", c.args, code, stderr)
		}
	}
}

// NTFS symlinks in both forms extract as symlinks to the same files
// ntfs-3g shows them pointing at: Interix links (ntfs-3g's ln -s) and
// reparse points as Windows makes them (mklink, mklink /D, mklink /J),
// relative and absolute, written here through ntfs-3g's reparse data
// attribute.
func TestExtractNTFSLinks(t *testing.T) {
	dir := t.TempDir()
	fs := sparseFile(t, filepath.Join(dir, "ntfs.img"), 32<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", fs)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "ntfs-3g", fs, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("fusermount", "-u", mnt).Run()
		}
	}()
	os.MkdirAll(filepath.Join(mnt, "a/b"), 0o755)
	os.WriteFile(filepath.Join(mnt, "a/b/f.txt"), []byte("through the link\n"), 0o644)
	os.Symlink("a/b/f.txt", filepath.Join(mnt, "interix"))
	os.Symlink("../a/b", filepath.Join(mnt, "a/interix-dir"))
	reparse := map[string][]byte{
		"rel":        ntfsSymlink(`b\f.txt`, true),
		"abs":        ntfsSymlink(`\??\C:\a\b\f.txt`, false),
		"a/b/up":     ntfsSymlink(`..\..\a\b\f.txt`, true),
		"a/b/absdir": ntfsSymlink(`\??\C:\a`, false),
		"junction":   ntfsJunction(`\??\C:\a\b`),
	}
	for name, data := range reparse {
		p := filepath.Join(mnt, name)
		if name == "rel" {
			p = filepath.Join(mnt, "a", name) // relative to a/
		}
		if strings.HasSuffix(name, "dir") || name == "junction" {
			os.Mkdir(p, 0o755)
		} else {
			os.WriteFile(p, nil, 0o644)
		}
		sh(t, "setfattr", "-n", "system.ntfs_reparse_data", "-v", fmt.Sprintf("0x%x", data), p)
	}
	sh(t, "fusermount", "-u", mnt)
	mounted = false

	img := filepath.Join(dir, "ntfs.platter")
	ok(t, "create", "--progress", "none", fs, img)
	dest := filepath.Join(dir, "out")
	ok(t, "extract", img, "/", dest)
	want := ntfsTree(t, fs)
	links := 0
	filepath.Walk(want, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return err
		}
		links++
		rel, _ := filepath.Rel(want, p)
		// ntfs-3g resolves absolute targets under its mount point; the
		// extracted link must reach the same file under dest.
		wantTo, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatalf("ntfs-3g's %s: %v", rel, err)
		}
		wantTo, _ = filepath.Rel(want, wantTo)
		gotTo, err := filepath.EvalSymlinks(filepath.Join(dest, rel))
		if err != nil {
			t.Errorf("extracted %s: %v", rel, err)
			return nil
		}
		gotTo, _ = filepath.Rel(dest, gotTo)
		if gotTo != wantTo {
			l, _ := os.Readlink(filepath.Join(dest, rel))
			t.Errorf("%s -> %s reaches %s, want %s", rel, l, gotTo, wantTo)
		}
		return nil
	})
	if links != 2+len(reparse) {
		t.Errorf("ntfs-3g shows %d links, want %d", links, 2+len(reparse))
	}
	out := ok(t, "ls", "-l", img, "/a")
	if !strings.Contains(out, "lrwxrwxrwx") || !strings.Contains(out, "rel -> b/f.txt") {
		t.Errorf("ls /a:\n%s", out)
	}
}

// ntfsSymlink is a symlink reparse point's data (tag, length, offsets of
// the substitute and print names, flags, names in UTF-16).
func ntfsSymlink(target string, relative bool) []byte {
	name := utf16le(target)
	le := binary.LittleEndian
	body := le.AppendUint16(nil, 0)
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint16(body, uint16(len(name)))
	flags := uint32(0)
	if relative {
		flags = 1
	}
	body = le.AppendUint32(body, flags)
	body = append(append(body, name...), name...)
	return reparsePoint(0xa000000c, body)
}

// ntfsJunction is a mount point reparse point's data (names end in NUL).
func ntfsJunction(target string) []byte {
	name := append(utf16le(target), 0, 0)
	le := binary.LittleEndian
	body := le.AppendUint16(nil, 0)
	body = le.AppendUint16(body, uint16(len(name)-2))
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint16(body, uint16(len(name)-2))
	body = append(append(body, name...), name...)
	return reparsePoint(0xa0000003, body)
}

func reparsePoint(tag uint32, body []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, tag)
	b = le.AppendUint16(b, uint16(len(body)))
	b = le.AppendUint16(b, 0)
	return append(b, body...)
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}
