package iso9660

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// makeTree writes a small tree: a deep directory (Rock Ridge relocates
// it past 8 levels), a symlink, a non-ASCII long name.
func makeTree(t testing.TB) string {
	src := filepath.Join(t.TempDir(), "src")
	deep := filepath.Join(src, "1", "2", "3", "4", "5", "6", "7", "8", "9")
	os.MkdirAll(deep, 0o755)
	os.WriteFile(filepath.Join(deep, "deep.txt"), []byte("deep\n"), 0o644)
	os.WriteFile(filepath.Join(src, "Größe — a long name with more than 31 characters.txt"), bytes.Repeat([]byte("ab"), 3000), 0o640)
	os.Symlink("1/2/3", filepath.Join(src, "link"))
	os.WriteFile(filepath.Join(src, "boot.img"), bytes.Repeat([]byte{0xeb}, 2048), 0o644)
	return src
}

func makeISO(t testing.TB, tool string, args ...string) string {
	src := makeTree(t)
	iso := filepath.Join(t.TempDir(), "x.iso")
	if tool == "xorriso" {
		args = append([]string{"-as", "mkisofs"}, args...)
	}
	tooltest.Run(t, tool, append(args, "-o", iso, src)...)
	return iso
}

func openISO(t testing.TB, p string) (*os.File, int64) {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	return f, st.Size()
}

func TestFiles(t *testing.T) {
	for _, c := range []struct {
		tool  string
		args  []string
		names string
	}{
		{"xorriso", []string{"-R", "-J", "-V", "Label One"}, "rock ridge"},
		{"genisoimage", []string{"-quiet", "-R", "-J", "-V", "Label Two"}, "rock ridge"},
		{"genisoimage", []string{"-quiet", "-J", "-D", "-V", "JOLIET"}, "joliet"},
		{"genisoimage", []string{"-quiet", "-D", "-V", "PLAIN"}, "iso9660"},
	} {
		t.Run(c.tool+"-"+c.names, func(t *testing.T) {
			f, size := openISO(t, makeISO(t, c.tool, c.args...))
			fs, err := OpenFiles(f, size)
			if err != nil {
				t.Fatal(err)
			}
			if fs.Names() != c.names {
				t.Errorf("names from %s, want %s", fs.Names(), c.names)
			}
			deep := "1/2/3/4/5/6/7/8/9/deep.txt"
			long := "Größe — a long name with more than 31 characters.txt"
			if c.names == "iso9660" {
				deep, long = "1/2/3/4/5/6/7/8/9/DEEP.TXT", "GR____E_.TXT"
			}
			r, err := fs.Open(deep)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r)
			if string(b) != "deep\n" {
				t.Errorf("%s reads %q", deep, b)
			}
			e, err := fs.Stat(long)
			if err != nil {
				ents, _ := fs.ReadDir("")
				t.Fatalf("%v; the root holds %v", err, ents)
			}
			if e.Size != 6000 {
				t.Errorf("%s: size %d", long, e.Size)
			}
			if c.names == "rock ridge" {
				if e.Mode.Perm() != 0o640 || !e.Owner {
					t.Errorf("%s: mode %v, owner %v", long, e.Mode, e.Owner)
				}
				l, err := fs.Stat("link")
				if err != nil || l.Mode&iofs.ModeSymlink == 0 || l.Target != "1/2/3" {
					t.Errorf("link: %+v, %v", l, err)
				}
			}
			if _, err := fs.Open("1"); !errors.Is(err, nil) && !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("Open of a directory: %v", err)
			}
		})
	}
}

// Detect: the whole volume is used; Identify gives blkid's label and
// UUID.
func TestDetectIdentify(t *testing.T) {
	iso := makeISO(t, "xorriso", "-R", "-J", "-V", "My Disc")
	f, size := openISO(t, iso)
	u, err := Detect(f, size)
	if err != nil {
		t.Fatal(err)
	}
	used, err := u.UsedBytes()
	if err != nil || used != size || u.FS != "iso9660" {
		t.Errorf("used %d of %d (%v), fs %s", used, size, err, u.FS)
	}
	id := identify(f, size)
	want := func(tag string) string {
		return strings.TrimSpace(tooltest.Run(t, "blkid", "-o", "value", "-s", tag, iso))
	}
	if id.Label != want("LABEL") || id.UUID != want("UUID") {
		t.Errorf("identity %+v; blkid: %q %q", id, want("LABEL"), want("UUID"))
	}
	// Labels as blkid merges them: a Joliet label (16 characters) that
	// begins the primary one, and one that does not.
	for _, c := range [][]string{
		{"genisoimage", "-quiet", "-J", "-V", "Mixed Case Label ünï — long"},
		{"xorriso", "-as", "mkisofs", "-J", "-V", "Ünïcode label"},
		{"xorriso", "-as", "mkisofs", "-V", "no Joliet ü"},
	} {
		p := filepath.Join(t.TempDir(), "label.iso")
		tooltest.Run(t, c[0], append(c[1:], "-o", p, makeTree(t))...)
		lf, lsize := openISO(t, p)
		blkid := strings.TrimSpace(tooltest.Run(t, "blkid", "-o", "value", "-s", "LABEL", p))
		if got := identify(lf, lsize).Label; got != blkid {
			t.Errorf("%v: label %q; blkid %q", c, got, blkid)
		}
	}
	// Creation and modification times apart: blkid shows the latter.
	dated := filepath.Join(t.TempDir(), "dated.iso")
	tooltest.Run(t, "xorriso", "-outdev", dated, "-volume_date", "c", "2020010203040500", "-volume_date", "m", "2021010203040500", "-map", makeTree(t), "/")
	df, dsize := openISO(t, dated)
	blkid := strings.TrimSpace(tooltest.Run(t, "blkid", "-o", "value", "-s", "UUID", dated))
	if got := identify(df, dsize).UUID; got != blkid || got != "2021-01-02-03-04-05-00" {
		t.Errorf("UUID %q; blkid %q", got, blkid)
	}
	if _, err := Detect(bytes.NewReader(make([]byte, 1<<20)), 1<<20); !errors.Is(err, block.ErrNotMine) {
		t.Errorf("zeros: %v", err)
	}
}

func TestBoot(t *testing.T) {
	iso := makeISO(t, "xorriso", "-R", "-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4",
		"-eltorito-alt-boot", "-e", "boot.img", "-no-emul-boot")
	f, size := openISO(t, iso)
	b, err := ReadBoot(f, size)
	if err != nil || b == nil {
		t.Fatalf("%+v, %v", b, err)
	}
	if len(b.Entries) != 2 || b.Entries[0].Platform != "x86" || b.Entries[0].Sectors != 4 || b.Entries[0].Emulation != "none" ||
		b.Entries[1].Platform != "EFI" || !b.Entries[1].Bootable {
		t.Errorf("entries %+v", b.Entries)
	}
	// The boot image is where the entry says.
	img := make([]byte, 2048)
	f.ReadAt(img, b.Entries[0].Offset)
	if !bytes.Equal(img, bytes.Repeat([]byte{0xeb}, 2048)) {
		t.Errorf("the x86 entry's image at byte %d is not boot.img", b.Entries[0].Offset)
	}
	// A broken checksum is found.
	raw, _ := os.ReadFile(iso)
	raw[b.CatalogBlock*2048+28]++
	if _, err := ReadBoot(bytes.NewReader(raw), int64(len(raw))); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a damaged validation entry: %v", err)
	}
}

// Owners names each file by the extents xorriso reports for it
// (-exec report_lba), and the metadata by name.
func TestOwners(t *testing.T) {
	iso := makeISO(t, "genisoimage", "-quiet", "-R", "-J", "-b", "boot.img", "-no-emul-boot")
	f, size := openISO(t, iso)
	got := map[string][]block.Extent{}
	err := Owners(f, size, func(o vfs.Owner, at []block.Extent) error {
		for _, e := range at {
			if e.Off < 0 || e.Len <= 0 || e.End() > size {
				t.Errorf("%v: extent %+v outside the volume", o, e)
			}
		}
		got[o.Path] = at
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"system area", "volume descriptors", "path tables", "boot catalog", "/", "/1/2/3/4/5/6/7/8/9"} {
		if len(got[m]) == 0 {
			t.Errorf("no %q among the owners", m)
		}
	}
	report := tooltest.Run(t, "xorriso", "-indev", iso, "-find", "/", "-exec", "report_lba", "--")
	n := 0
	for _, l := range strings.Split(report, "\n") {
		if !strings.HasPrefix(l, "File data lba:") {
			continue
		}
		var xt, lba, blocks, fsize int64
		fields := strings.SplitN(strings.TrimPrefix(l, "File data lba:"), ",", 5)
		if len(fields) != 5 {
			continue
		}
		for i, p := range []*int64{&xt, &lba, &blocks, &fsize} {
			fmt.Sscan(strings.TrimSpace(fields[i]), p)
		}
		name := strings.Trim(strings.TrimSpace(fields[4]), "'")
		es := got[name]
		if len(es) != 1 || es[0].Off != lba*2048 || (es[0].Len+2047)/2048 != blocks {
			t.Errorf("%s: owners give %+v, xorriso block %d, %d blocks", name, es, lba, blocks)
		}
		n++
	}
	if n < 3 {
		t.Errorf("xorriso reported %d files:\n%s", n, report)
	}
}

// An interleaved file (a file unit size in its record) is listed and
// refused by Open with ErrInterleaved; the others still read.
func TestInterleaved(t *testing.T) {
	raw, err := os.ReadFile(makeISO(t, "genisoimage", "-quiet", "-R"))
	if err != nil {
		t.Fatal(err)
	}
	fs, err := OpenFiles(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := fs.Stat("boot.img")
	if err != nil {
		t.Fatal(err)
	}
	raw[e.off+26] = 1 // file unit size
	fs, err = OpenFiles(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat("boot.img"); err != nil {
		t.Errorf("an interleaved file is not listed: %v", err)
	}
	if _, err := fs.Open("boot.img"); !errors.Is(err, ErrInterleaved) {
		t.Errorf("Open of an interleaved file: %v", err)
	}
	if _, err := fs.Open("1/2/3/4/5/6/7/8/9/deep.txt"); err != nil {
		t.Errorf("the other files: %v", err)
	}
}
