package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// isoTree makes the tree the ISO fixtures hold: long and non-ASCII
// names, a tree deeper than ISO 9660's 8 levels (Rock Ridge relocates
// it), symlinks (relative and absolute), modes with setuid, a fixed
// time, and a file of several sectors.
func isoTree(t *testing.T) string {
	src := filepath.Join(t.TempDir(), "src")
	deep := filepath.Join(src, "a", "b", "c", "d", "e", "f", "g", "h", "i", "j")
	must(t, os.MkdirAll(deep, 0o755))
	must(t, os.WriteFile(filepath.Join(deep, "deep.txt"), []byte("deep\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "A long file name with spaces and ünïcödé ✓ — more than 64 characters of it, for Joliet.txt"), []byte("hello\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "private"), []byte("secret\n"), 0o600))
	rnd := make([]byte, 300000)
	for i := range rnd {
		rnd[i] = byte(i*7 + i/1000)
	}
	must(t, os.WriteFile(filepath.Join(src, "data.bin"), rnd, 0o644))
	must(t, os.Symlink("a/b/c", filepath.Join(src, "link")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "abs")))
	// Past one SUSP area: Rock Ridge continues SL and NM entries into
	// continuation areas (CE).
	// (genisoimage 1.1.11 hangs on a target of about 300 bytes or more:
	// 246 here, longer in isoTreeLong.)
	must(t, os.Symlink("../"+strings.Repeat("a-long-component-of-a-symlink/", 8)+"end", filepath.Join(src, "longlink")))
	must(t, os.WriteFile(filepath.Join(src, strings.Repeat("n", 240)+"-ünï"), []byte("long name\n"), 0o644))
	must(t, os.Chmod(filepath.Join(src, "a"), 0o750))
	must(t, os.Chmod(filepath.Join(src, "run.sh"), os.ModeSetuid|0o755))
	when := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, p := range []string{"run.sh", "data.bin", "private", "a/b"} {
		must(t, os.Chtimes(filepath.Join(src, p), when, when))
	}
	return src
}

// isoTreeLong is isoTree with a symlink whose target (900 bytes) spans
// several SL entries and continuation areas.
func isoTreeLong(t *testing.T) string {
	src := isoTree(t)
	must(t, os.Symlink("../"+strings.Repeat("a-long-component-of-a-symlink/", 30)+"end", filepath.Join(src, "longerlink")))
	return src
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// isoManifest is tooltest.Manifest with each entry's permissions and,
// for files, the modification time (to the second).
func isoManifest(t *testing.T, root string, modes bool) map[string]string {
	m := tooltest.Manifest(t, root)
	for k, v := range m {
		fi, err := os.Lstat(filepath.Join(root, k))
		must(t, err)
		if modes && fi.Mode()&os.ModeSymlink == 0 {
			v += fmt.Sprintf(" %v", fi.Mode())
		}
		if fi.Mode().IsRegular() {
			v += " " + fi.ModTime().UTC().Truncate(time.Second).Format(time.RFC3339)
		}
		m[k] = v
	}
	return m
}

func sameManifest(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q: platter gives %q, want %q", what, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %q (%s) extracted by platter only", what, k, v)
		}
	}
}

// TestISO: ISO images made by xorriso and genisoimage, with Rock Ridge
// and Joliet, Joliet only, and neither, are listed and extracted in
// place (no root, no conversion), and what platter extracts equals what
// xorriso -osirrox extracts (Rock Ridge: names, bytes, modes, times,
// symlinks), or 7z x (the Joliet and plain names).
func TestISO(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name  string
		make  []string
		judge string // xorriso or 7z
	}{
		{"xorriso-rr-joliet", []string{"xorriso", "-as", "mkisofs", "-R", "-J", "-joliet-long", "-V", "ROCKY"}, "xorriso"},
		{"genisoimage-rr-joliet", []string{"genisoimage", "-quiet", "-R", "-J", "-joliet-long", "-V", "GENISO"}, "xorriso"},
		{"genisoimage-joliet", []string{"genisoimage", "-quiet", "-J", "-joliet-long", "-D", "-V", "JOLIET"}, "7z"},
		{"genisoimage-plain", []string{"genisoimage", "-quiet", "-D", "-V", "PLAIN"}, "7z"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := isoTree(t)
			if c.make[0] == "xorriso" {
				src = isoTreeLong(t)
			}
			iso := filepath.Join(dir, c.name+".iso")
			sh(t, c.make[0], append(c.make[1:], "-o", iso, src)...)
			want := filepath.Join(dir, c.name+".want")
			if c.judge == "xorriso" {
				sh(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", want)
			} else {
				sh(t, "7z", "x", "-o"+want, iso)
			}
			got := filepath.Join(dir, c.name+".got")
			ok(t, "extract", iso, "/", got)
			modes := c.judge == "xorriso"
			sameManifest(t, c.name, isoManifest(t, want, modes), isoManifest(t, got, modes))

			// ls lists what the tree holds.
			if c.judge == "xorriso" {
				out := ok(t, "ls", "-l", iso, "/")
				for _, w := range []string{"-rwsr-xr-x", "abs -> /etc/passwd", "link -> a/b/c", "drwxr-x---", "A long file name with spaces and ünïcödé ✓"} {
					if !strings.Contains(out, w) {
						t.Errorf("ls -l %s / lacks %q:\n%s", iso, w, out)
					}
				}
				out = ok(t, "ls", iso, "/a/b/c/d/e/f/g/h/i/j")
				if strings.TrimSpace(out) != "deep.txt" {
					t.Errorf("ls of the deepest directory: %q", out)
				}
			}
			// Label as blkid reads it.
			lbl := strings.TrimSpace(sh(t, "blkid", "-o", "value", "-s", "LABEL", iso))
			uuid := strings.TrimSpace(sh(t, "blkid", "-o", "value", "-s", "UUID", iso))
			out := ok(t, "info", iso)
			if !strings.Contains(out, lbl) || !strings.Contains(out, uuid) || !strings.Contains(out, "iso9660") {
				t.Errorf("info %s lacks iso9660, label %q or UUID %q:\n%s", iso, lbl, uuid, out)
			}
		})
	}
}

// TestISOBoot: an El Torito catalog (BIOS no-emulation and EFI entries)
// made by xorriso is listed by info, and a hybrid ISO
// (-isohybrid-gpt-basdat: a GPT and MBR inside the volume) is read as
// the ISO, its EFI partition by number.
func TestISOBoot(t *testing.T) {
	src := isoTree(t)
	dir := t.TempDir()
	boot := filepath.Join(src, "boot")
	must(t, os.MkdirAll(boot, 0o755))
	must(t, os.WriteFile(filepath.Join(boot, "bios.img"), bytes.Repeat([]byte{0xeb}, 2048), 0o644))
	efi := filepath.Join(boot, "efi.img")
	must(t, os.WriteFile(efi, nil, 0o644))
	must(t, os.Truncate(efi, 1<<20))
	sh(t, "mkfs.fat", "-n", "EFIBOOT", efi)
	sh(t, "mcopy", "-i", efi, filepath.Join(src, "run.sh"), "::/startup.nsh")
	iso := filepath.Join(dir, "boot.iso")
	// -isohybrid-gpt-basdat needs an MBR template (ISOLINUX's
	// isohdpfx.bin); any 432 bytes do for a disk that is only read.
	mbr := filepath.Join(dir, "mbr.bin")
	must(t, os.WriteFile(mbr, make([]byte, 432), 0o600))
	sh(t, "xorriso", "-as", "mkisofs", "-R", "-J", "-V", "INSTALLER", "-isohybrid-mbr", mbr, "-b", "boot/bios.img", "-no-emul-boot", "-boot-load-size", "4",
		"-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat", "-o", iso, src)
	out := ok(t, "info", iso)
	for _, w := range []string{"INSTALLER", "iso9660", "El Torito", "x86", "EFI", "no emulation"} {
		if !strings.Contains(out, w) {
			t.Errorf("info %s lacks %q:\n%s", iso, w, out)
		}
	}
	var j struct {
		Table      string `json:"table"`
		Partitions []struct {
			Index      int    `json:"index"`
			Filesystem string `json:"filesystem"`
			Label      string `json:"label"`
			Boot       []struct {
				Platform, Emulation string
				Sectors             int
				Offset              int64
			} `json:"boot"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", iso)), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Partitions) == 0 || j.Partitions[0].Index != 0 || j.Partitions[0].Filesystem != "iso9660" || j.Partitions[0].Label != "INSTALLER" ||
		len(j.Partitions[0].Boot) != 2 || j.Partitions[0].Boot[0].Platform != "x86" || j.Partitions[0].Boot[0].Sectors != 4 || j.Partitions[0].Boot[1].Platform != "EFI" {
		t.Errorf("info --json: %+v", j)
	} else {
		// The x86 entry's image is bios.img, where the catalog says.
		if !bytes.Equal(readAt(t, iso, 2048, j.Partitions[0].Boot[0].Offset), bytes.Repeat([]byte{0xeb}, 2048)) {
			t.Errorf("the x86 entry's image at byte %d is not bios.img", j.Partitions[0].Boot[0].Offset)
		}
	}
	got := filepath.Join(dir, "got")
	ok(t, "extract", iso, "/", got)
	want := filepath.Join(dir, "want")
	sh(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", want)
	sameManifest(t, "hybrid", isoManifest(t, want, true), isoManifest(t, got, true))
	// mount --files: the same files through FUSE, without root's loop
	// mount.
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", iso, mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	viaFuse := filepath.Join(dir, "fuse")
	sh(t, "cp", "-a", mnt+"/.", viaFuse)
	sameManifest(t, "mount --files", isoManifest(t, want, true), isoManifest(t, viaFuse, true))
	// The EFI partition xorriso put in the GPT holds the FAT image.
	found := false
	for n := range sfdiskParts(t, iso) {
		if out, _, code := run(t, "ls", fmt.Sprintf("%s:%d", iso, n), "/"); code == 0 && strings.Contains(strings.ToLower(out), "startup.nsh") {
			found = true
		}
	}
	if !found {
		t.Errorf("no partition of %s lists the EFI image's startup.nsh", iso)
	}
	// create keeps the hybrid whole (its table lies inside the volume):
	// restore gives back the file, byte for byte.
	img := filepath.Join(dir, "hybrid.platter")
	ok(t, "create", iso, img)
	if j := info(t, img); j.Table != "none" || len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "iso9660" {
		t.Errorf("info of the hybrid's image: table %s, partitions %+v", j.Table, j.Partitions)
	}
	back := filepath.Join(dir, "back.iso")
	ok(t, "restore", img, back)
	if a, b := fileSHA(t, iso), fileSHA(t, back); a != b {
		t.Errorf("the restored hybrid differs from %s", iso)
	}
}

// TestISORoundTrip: create from a disc (a loop device of 2048-byte
// sectors) keeps every byte of the volume: restore gives back the .iso,
// sha256 equal; info names the filesystem and label.
func TestISORoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for losetup")
	}
	src := isoTree(t)
	dir := t.TempDir()
	iso := filepath.Join(dir, "disc.iso")
	sh(t, "xorriso", "-as", "mkisofs", "-R", "-J", "-V", "DISC", "-b", "data.bin", "-no-emul-boot", "-o", iso, src)
	loop := strings.TrimSpace(sh(t, "losetup", "-b", "2048", "-r", "-f", "--show", iso))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	img := filepath.Join(dir, "disc.platter")
	ok(t, "create", loop, img)
	j := info(t, img)
	if j.SectorSize != 2048 || len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "iso9660" {
		t.Errorf("info: sector size %d, partitions %+v", j.SectorSize, j.Partitions)
	}
	out := ok(t, "info", img)
	for _, w := range []string{"DISC", "iso9660", "El Torito"} {
		if !strings.Contains(out, w) {
			t.Errorf("info %s lacks %q:\n%s", img, w, out)
		}
	}
	back := filepath.Join(dir, "back.iso")
	ok(t, "restore", img, back)
	if a, b := fileSHA(t, iso), fileSHA(t, back); a != b {
		t.Errorf("restored %s differs from the .iso: %s, want %s", back, b, a)
	}
	// And the image's files read as the ISO's.
	got := filepath.Join(dir, "got")
	ok(t, "extract", img, "/", got)
	want := filepath.Join(dir, "want")
	sh(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", want)
	sameManifest(t, "round trip", isoManifest(t, want, true), isoManifest(t, got, true))
	// The file itself as a source too.
	img2 := filepath.Join(dir, "file.platter")
	ok(t, "create", iso, img2)
	back2 := filepath.Join(dir, "back2.iso")
	ok(t, "restore", img2, back2)
	if a, b := fileSHA(t, iso), fileSHA(t, back2); a != b {
		t.Errorf("restored %s differs from the .iso", back2)
	}
}

func fileSHA(t *testing.T, p string) string {
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestISOHostile: damaged ISOs give clear errors, never a panic or a
// hang: cut short, a directory that holds its own parent (a loop), a
// Rock Ridge continuation area that continues into itself, lengths past
// the volume.
func TestISOHostile(t *testing.T) {
	src := isoTree(t)
	dir := t.TempDir()
	iso := filepath.Join(dir, "good.iso")
	sh(t, "genisoimage", "-quiet", "-R", "-o", iso, src)
	good, err := os.ReadFile(iso)
	must(t, err)
	le := binary.LittleEndian
	rootLBA := le.Uint32(good[32768+156+2:])
	rootAt := int(rootLBA) * 2048
	// The records of the root: find "a" (a directory).
	findRec := func(b []byte, at int, name string) int {
		for pos := at; pos < at+2048 && b[pos] != 0; pos += int(b[pos]) {
			if string(b[pos+33:pos+33+int(b[pos+32])]) == name {
				return pos
			}
		}
		t.Fatalf("no record %q", name)
		return 0
	}
	aRec := findRec(good, rootAt, "A")
	aAt := int(le.Uint32(good[aRec+2:])) * 2048
	bRec := findRec(good, aAt, "B")

	cases := map[string]func(b []byte) []byte{
		"truncated": func(b []byte) []byte { return b[:len(b)/2] },
		"loop": func(b []byte) []byte { // a/b is the root again
			le.PutUint32(b[bRec+2:], rootLBA)
			binary.BigEndian.PutUint32(b[bRec+6:], rootLBA)
			return b
		},
		"huge": func(b []byte) []byte { // a's extent: 4 GiB
			le.PutUint32(b[aRec+10:], 0xfffff800)
			return b
		},
		"ce-loop": func(b []byte) []byte { // a CE entry pointing at itself, in the root's "." record
			su := rootAt + 34
			ce := []byte{'C', 'E', 28, 1}
			ce = le.AppendUint32(ce, rootLBA)
			ce = binary.BigEndian.AppendUint32(ce, rootLBA)
			ce = le.AppendUint32(ce, uint32(su-rootAt))
			ce = binary.BigEndian.AppendUint32(ce, uint32(su-rootAt))
			ce = le.AppendUint32(ce, 28)
			ce = binary.BigEndian.AppendUint32(ce, 28)
			// Every record's SU area in the root: overwrite "a"'s with the CE.
			suA := aRec + 33 + int(good[aRec+32])
			if good[aRec+32]%2 == 0 {
				suA++
			}
			copy(b[suA:], ce)
			le.PutUint32(b[suA+12:], uint32(suA-rootAt))
			binary.BigEndian.PutUint32(b[suA+16:], uint32(suA-rootAt))
			return b
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name+".iso")
			must(t, os.WriteFile(p, damage(bytes.Clone(good)), 0o600))
			done := make(chan struct{})
			var o, e string
			var code int
			go func() {
				o, e, code = run(t, "ls", "-R", p, "/")
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("ls -R did not end")
			}
			if code == 0 {
				t.Errorf("ls -R of a damaged ISO (%s) exits 0:\n%s%s", name, o, e)
			}
			if !strings.Contains(e, "iso9660") {
				t.Errorf("the error does not name the ISO 9660 damage:\n%s", e)
			}
			t.Logf("%s: exit %d: %s", name, code, strings.TrimSpace(e))
			x := filepath.Join(dir, name+".x")
			run(t, "extract", p, "/", x)
		})
	}
}

// TestISOHuge: a file over 4 GiB (5 GiB, sparse in the source) is
// recorded by xorriso in several extents (-iso-level 3); the ISO is kept
// sparse on disk, and platter reads the file as one, byte for byte.
func TestISOHuge(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(src, 0o755))
	huge := filepath.Join(src, "huge.bin")
	const size = 5 << 30
	f, err := os.Create(huge)
	must(t, err)
	must(t, f.Truncate(size))
	_, err = f.WriteAt([]byte("the start"), 0)
	must(t, err)
	_, err = f.WriteAt([]byte("past 4 GiB"), 4<<30+12345)
	must(t, err)
	_, err = f.WriteAt([]byte("the end"), size-7)
	must(t, err)
	must(t, f.Close())
	iso := filepath.Join(dir, "big.iso")
	// Through a pipe into cp --sparse=always: the ISO's zeros stay holes.
	sh(t, "bash", "-c", fmt.Sprintf("set -o pipefail; xorriso -file_size_limit off -- -as mkisofs -iso-level 3 -R -J -o - %q 2>/dev/null | cp --sparse=always /dev/stdin %q", src, iso))
	if du := sh(t, "du", "-k", iso); !strings.HasPrefix(du, "") || duKiB(t, du) > 64<<10 {
		t.Fatalf("the ISO is not sparse: du says %s", du)
	}
	if l := sh(t, "xorriso", "-indev", iso, "-lsl", "/huge.bin"); !strings.Contains(l, fmt.Sprint(size)) {
		t.Fatalf("xorriso does not list a %d-byte file:\n%s", size, l)
	}
	out := ok(t, "ls", "-l", iso, "/")
	if !strings.Contains(out, fmt.Sprint(size)) {
		t.Errorf("ls -l: %s", out)
	}
	x := filepath.Join(dir, "x")
	must(t, os.MkdirAll(x, 0o755))
	ok(t, "extract", iso, "/huge.bin", x)
	sh(t, "cmp", huge, filepath.Join(x, "huge.bin"))
}

func duKiB(t *testing.T, du string) int64 {
	var n int64
	if _, err := fmt.Sscan(du, &n); err != nil {
		t.Fatalf("du: %q", du)
	}
	return n
}

// TestISOZisofs: files xorriso compressed with zisofs (Rock Ridge ZF)
// are decompressed: extract gives what xorriso -osirrox extracts, and
// the source's bytes.
func TestISOZisofs(t *testing.T) {
	src := isoTree(t)
	dir := t.TempDir()
	iso := filepath.Join(dir, "z.iso")
	sh(t, "xorriso", "-outdev", iso, "-map", src, "/", "-set_filter_r", "--zisofs", "/", "--")
	if l := sh(t, "isoinfo", "-R", "-l", "-i", iso); !strings.Contains(l, "data.bin") {
		t.Fatalf("isoinfo:\n%s", l)
	}
	want := filepath.Join(dir, "want")
	sh(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", want)
	got := filepath.Join(dir, "got")
	ok(t, "extract", iso, "/", got)
	sameManifest(t, "zisofs", isoManifest(t, want, true), isoManifest(t, got, true))
	sh(t, "cmp", filepath.Join(src, "data.bin"), filepath.Join(got, "data.bin"))
	// The ISO holds data.bin compressed: fewer blocks than its size.
	if out := ok(t, "ls", "-l", iso, "/"); !strings.Contains(out, "300000") {
		t.Errorf("ls -l: %s", out)
	}
}

// TestISOGrubRescue: a real bootable hybrid ISO, as grub-mkrescue makes
// it (an ISO 9660 from byte 0 with a GPT inside: an EFI system partition
// and an HFS+ one), is read as the ISO, its EFI partition by number;
// create keeps it whole and restore gives it back byte for byte.
func TestISOGrubRescue(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	must(t, os.MkdirAll(filepath.Join(tree, "boot", "grub"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "boot", "grub", "grub.cfg"), []byte("set timeout=1\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(tree, "install.amd"), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "install.amd", "vmlinuz"), bytes.Repeat([]byte("kernel"), 100000), 0o644))
	iso := filepath.Join(dir, "rescue.iso")
	sh(t, "grub-mkrescue", "-o", iso, tree, "--", "-volid", "RESCUE")
	out := ok(t, "info", iso)
	for _, w := range []string{"Table:       gpt", "RESCUE", "EFI System", "El Torito x86", "El Torito EFI"} {
		if !strings.Contains(out, w) {
			t.Errorf("info lacks %q:\n%s", w, out)
		}
	}
	got := filepath.Join(dir, "got")
	ok(t, "extract", iso, "/", got)
	want := filepath.Join(dir, "want")
	sh(t, "xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", want)
	sameManifest(t, "grub-mkrescue", isoManifest(t, want, true), isoManifest(t, got, true))
	// The EFI system partition: FAT, holding EFI/BOOT, as mtools reads it.
	efi := ""
	for n := range sfdiskParts(t, iso) {
		if o, _, code := run(t, "ls", fmt.Sprintf("%s:%d", iso, n), "/"); code == 0 && strings.Contains(strings.ToLower(o), "efi") {
			efi = fmt.Sprintf("%s:%d", iso, n)
		}
	}
	if efi == "" {
		t.Errorf("no partition of %s lists the EFI system partition's files", iso)
	}
	img := filepath.Join(dir, "rescue.platter")
	ok(t, "create", iso, img)
	back := filepath.Join(dir, "back.iso")
	ok(t, "restore", img, back)
	if a, b := fileSHA(t, iso), fileSHA(t, back); a != b {
		t.Errorf("the restored rescue ISO differs")
	}
}
