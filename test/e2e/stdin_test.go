package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// piped runs platter with the file in as its standard input.
func piped(t *testing.T, in string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return pipedFrom(t, f, args...)
}

func pipedFrom(t *testing.T, in interface{ Read([]byte) (int, error) }, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(platter, args...)
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &o, &e
	err := cmd.Run()
	if ee, isExit := err.(*exec.ExitError); isExit {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run platter: %v", err)
	}
	if strings.Contains(e.String(), "goroutine ") || strings.Contains(e.String(), "panic:") {
		t.Fatalf("platter %v panicked:\n%s", args, e.String())
	}
	return o.String(), e.String(), code
}

// create SOURCE - | restore --yes - TARGET gives, byte for byte, what a
// restore of the same image from a file gives, and clean filesystems.
func TestStdinRestorePipe(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	fromFile := filepath.Join(dir, "from-file.img")
	ok(t, "restore", "--progress", "none", img, fromFile)

	fromPipe := filepath.Join(dir, "from-pipe.img")
	sh(t, "bash", "-o", "pipefail", "-c", `"$0" create --progress none "$1" - | "$0" restore --yes --progress none - "$2"`, platter, disk, fromPipe)
	sh(t, "cmp", fromFile, fromPipe)
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, fromPipe); a != b {
		t.Errorf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	parts := sfdiskParts(t, disk)
	checkPartition(t, extract(t, fromPipe, parts[1]), "fat32", disk+".files/p1")
	checkPartition(t, extract(t, fromPipe, parts[2]), "ext4", disk+".files/p2")
	var s1, s2 os.FileInfo
	s1, _ = os.Stat(fromFile)
	s2, _ = os.Stat(fromPipe)
	if s1.Size() != s2.Size() {
		t.Fatalf("sizes differ: %d, %d", s1.Size(), s2.Size())
	}
}

// verify - and info - of a piped image say what they say of the file.
func TestStdinVerifyInfo(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)

	out, errOut, code := piped(t, img, "verify", "--progress", "none", "-")
	if code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("verify -: exit %d\n%s%s", code, out, errOut)
	}
	want := ok(t, "info", img)
	got, errOut, code := piped(t, img, "info", "-")
	if code != 0 {
		t.Fatalf("info -: exit %d\n%s", code, errOut)
	}
	// The same lines but the first, which names the image.
	if w, g := want[strings.Index(want, "\n"):], got[strings.Index(got, "\n"):]; w != g {
		t.Errorf("info - differs from info of the file:\n%s\n---\n%s", want, got)
	}
	wantJ := ok(t, "info", "--json", img)
	gotJ, _, _ := piped(t, img, "info", "--json", "-")
	if strings.ReplaceAll(wantJ, img, "-") != gotJ {
		t.Errorf("info --json - differs:\n%s\n---\n%s", wantJ, gotJ)
	}
}

// An encrypted image restores and verifies from a pipe with
// --password-file, and a wrong passphrase is exit 1, not damage.
func TestStdinEncrypted(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	k := newEncKeys(t, "stream secret")
	img := filepath.Join(dir, "disk.platter")
	encCreate(t, k, disk, img, append([]string{"--encrypt"}, k.pw()...)...)
	fromFile := filepath.Join(dir, "from-file.img")
	ok(t, append(k.pw(), "restore", "--progress", "none", img, fromFile)...)
	fromPipe := filepath.Join(dir, "from-pipe.img")
	if out, e, code := piped(t, img, append(k.pw(), "restore", "--progress", "none", "--yes", "-", fromPipe)...); code != 0 {
		t.Fatalf("restore -: exit %d\n%s%s", code, out, e)
	}
	sh(t, "cmp", fromFile, fromPipe)
	if out, e, code := piped(t, img, append(k.pw(), "verify", "--progress", "none", "-")...); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("verify -: exit %d\n%s%s", code, out, e)
	}
	bad := filepath.Join(dir, "wrong")
	os.WriteFile(bad, []byte("nope\n"), 0o600)
	if _, e, code := piped(t, img, "--password-file", bad, "verify", "-"); code != 1 || !strings.Contains(e, "wrong passphrase") {
		t.Fatalf("wrong passphrase: exit %d: %s", code, e)
	}
}

// A stream cut short, anywhere, is exit 3, says where it ends, and
// leaves a target whose first MiB is zeros ("the target is
// incomplete"); verify - says the same.
func TestStdinStreamCut(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	j := info(t, img, "--chunks")
	var lastFrame int64
	for _, c := range j.Chunks {
		lastFrame = max(lastFrame, c.FrameOffset)
	}
	cuts := map[string]int{
		"mid-frame":      int(lastFrame) + 100,
		"early":          len(b) / 4,
		"in the index":   len(b) - 96 - 200,
		"before footer":  len(b) - 96,
		"inside footer":  len(b) - 1,
		"after a header": 64,
	}
	for name, n := range cuts {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "target.img")
			// An existing target is kept (and must not look like a disk).
			os.WriteFile(target, bytes.Repeat([]byte{0xee}, 4<<20), 0o644)
			out, e, code := pipedFrom(t, bytes.NewReader(b[:n]), "restore", "--progress", "none", "--yes", "-", target)
			if n <= 64 {
				// Cut before the layout: the target is not even opened.
				if code != 3 || !strings.Contains(e, "not touched") || readAt(t, target, 1, 0)[0] != 0xee {
					t.Fatalf("cut at %d: exit %d\n%s%s", n, code, out, e)
				}
				return
			}
			if code != 3 || !strings.Contains(e, "incomplete") || !strings.Contains(e, "before the footer") {
				t.Fatalf("cut at %d: exit %d\n%s%s", n, code, out, e)
			}
			if n > 64 && !strings.Contains(e, "ends at byte") {
				t.Errorf("cut at %d: the error does not say where the stream ends: %s", n, e)
			}
			first := readAt(t, target, 1<<20, 0)
			if !bytes.Equal(first, make([]byte, 1<<20)) {
				t.Fatalf("cut at %d: the target's first MiB is not zeros", n)
			}
			if _, e, code := pipedFrom(t, bytes.NewReader(b[:n]), "verify", "--progress", "none", "-"); code != 3 || !strings.Contains(e, "before the footer") {
				t.Fatalf("verify of a cut stream: exit %d: %s", code, e)
			}
			// A target the restore created is removed.
			created := filepath.Join(t.TempDir(), "new.img")
			if _, _, code := pipedFrom(t, bytes.NewReader(b[:n]), "restore", "--progress", "none", "-", created); code != 3 {
				t.Fatalf("cut at %d into a new file: exit %d", n, code)
			}
			if _, err := os.Stat(created); err == nil {
				t.Fatalf("cut at %d: the new target was left behind", n)
			}
		})
	}
}

// A damaged frame in the stream is exit 3 from verify, naming the chunk;
// restore stops before writing it.
func TestStdinDamagedFrame(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	j := info(t, img, "--chunks")
	var frame int64 = -1
	for _, c := range j.Chunks {
		if c.Partition == 2 && c.FrameOffset > 0 && c.FrameSize > 200 {
			frame = c.FrameOffset
			break
		}
	}
	if frame < 0 {
		t.Fatal("no frame of partition 2")
	}
	b, _ := os.ReadFile(img)
	b[frame+150] ^= 0x10 // in the payload
	out, e, code := pipedFrom(t, bytes.NewReader(b), "verify", "--progress", "none", "-")
	if code != 3 || !strings.Contains(out, "partition 2") {
		t.Fatalf("verify of a damaged stream: exit %d\n%s%s", code, out, e)
	}
	target := filepath.Join(dir, "t.img")
	os.WriteFile(target, nil, 0o644)
	if _, e, code := pipedFrom(t, bytes.NewReader(b), "restore", "--progress", "none", "-", target); code != 3 || !strings.Contains(e, "incomplete") {
		t.Fatalf("restore of a damaged stream: exit %d: %s", code, e)
	}
}

// Reading an image from a terminal, and --partition from a stream, are
// refused with what to do instead.
func TestStdinRefusals(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	if _, e, code := piped(t, img, "restore", "--partition", "2", "-", filepath.Join(t.TempDir(), "p.img")); code != 2 || !strings.Contains(e, "save the image to a file") {
		t.Fatalf("--partition from a stream: exit %d: %s", code, e)
	}
	// mount and the others still refuse - with a clear message.
	if _, e, code := piped(t, img, "ls", "-"); code == 0 || !strings.Contains(e, "standard input") {
		t.Fatalf("ls -: exit %d: %s", code, e)
	}
}

// A version 1 image (testdata/README.md: made by the platter of commit
// d8b4079) has no layout block: restore - refuses it with
// restore.ErrNoLayout's message (exit 1) and touches no target, while
// restore of the file gives the disk back; verify - and info - read it
// as they read the file, as docs/format.md says.
func TestStdinVersion1(t *testing.T) {
	img, err := filepath.Abs(filepath.Join("testdata", "v1-disk.platter"))
	if err != nil {
		t.Fatal(err)
	}
	if j := info(t, img); j.FormatVersion != 1 || j.Table != "gpt" {
		t.Fatalf("%s is format %d, table %q: want a version 1 image of a GPT disk", img, j.FormatVersion, j.Table)
	}
	dir := t.TempDir()

	// From the file: the disk, checked by sfdisk, fsck.fat and mtools.
	fromFile := filepath.Join(dir, "from-file.img")
	ok(t, "restore", "--progress", "none", img, fromFile)
	if dump := sfdiskDump(t, fromFile); !strings.Contains(dump, `DISK1 : start=        2048, size=        4096, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7`) || !strings.Contains(dump, `name="v1data"`) {
		t.Fatalf("sfdisk -d of the restored disk:\n%s", dump)
	}
	p1 := extract(t, fromFile, sfdiskParts(t, fromFile)[1])
	sh(t, "fsck.fat", "-n", p1)
	files := fatTree(t, p1)
	if b, _ := os.ReadFile(filepath.Join(files, "readme.txt")); string(b) != "written by platter d8b4079, image format version 1\n" {
		t.Errorf("readme.txt holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(files, "numbers.txt")); string(b) != sh(t, "seq", "1", "20000") {
		t.Errorf("numbers.txt is not seq 1 20000 (%d bytes)", len(b))
	}

	// From standard input: refused before any target is opened.
	const msg = "a version 1 image has no layout block, so it cannot be restored from a stream: save it to a file first and restore the file"
	created := filepath.Join(dir, "new.img")
	if out, e, code := piped(t, img, "restore", "--progress", "none", "--yes", "-", created); code != 1 || !strings.Contains(e, "standard input: "+msg) {
		t.Fatalf("restore - of a version 1 image: exit %d, want 1\n%s%s", code, out, e)
	}
	if _, err := os.Stat(created); err == nil {
		t.Error("restore - of a version 1 image created its target")
	}
	kept := filepath.Join(dir, "kept.img")
	old := bytes.Repeat([]byte{0xee}, 4<<20)
	mustWrite(t, kept, old)
	if _, e, code := piped(t, img, "restore", "--progress", "none", "--yes", "-", kept); code != 1 || !strings.Contains(e, msg) {
		t.Fatalf("restore - of a version 1 image onto a file: exit %d: %s", code, e)
	}
	if !bytes.Equal(readAll(t, kept), old) {
		t.Error("restore - of a version 1 image changed its target")
	}

	// verify - and info - say what they say of the file.
	want := ok(t, "verify", "--progress", "none", img)
	got, e, code := piped(t, img, "verify", "--progress", "none", "-")
	if code != 0 || !strings.Contains(got, "OK") {
		t.Fatalf("verify - of a version 1 image: exit %d\n%s%s", code, got, e)
	}
	// "-: OK, 3 chunks verified: ...": the same count as the file's.
	counted := func(s string) string {
		_, rest, _ := strings.Cut(s, ": OK")
		rest, _, _ = strings.Cut(rest, " in use")
		return rest
	}
	if counted(got) == "" || counted(got) != counted(want) {
		t.Errorf("verify - says %q, verify of the file %q", got, want)
	}
	wantInfo := ok(t, "info", img)
	gotInfo, e, code := piped(t, img, "info", "-")
	if code != 0 || !strings.Contains(gotInfo, "(format 1,") {
		t.Fatalf("info - of a version 1 image: exit %d\n%s%s", code, gotInfo, e)
	}
	if w, g := wantInfo[strings.Index(wantInfo, "\n"):], gotInfo[strings.Index(gotInfo, "\n"):]; w != g {
		t.Errorf("info - differs from info of the file:\n%s\n---\n%s", wantInfo, gotInfo)
	}
	wantJ := ok(t, "info", "--json", img)
	if gotJ, _, _ := piped(t, img, "info", "--json", "-"); strings.ReplaceAll(wantJ, img, "-") != gotJ {
		t.Errorf("info --json - differs:\n%s\n---\n%s", wantJ, gotJ)
	}

	// Its frames are checked as they pass: a flipped payload byte is
	// damage (exit 3) naming the partition.
	j := info(t, img, "--chunks")
	var frame int64 = -1
	for _, c := range j.Chunks {
		if c.Partition == 1 && c.FrameSize > 200 {
			frame = c.FrameOffset
		}
	}
	if frame < 0 {
		t.Fatal("no frame of partition 1")
	}
	b := readAll(t, img)
	b[frame+150] ^= 0x10
	if out, e, code := pipedFrom(t, bytes.NewReader(b), "verify", "--progress", "none", "-"); code != 3 || !strings.Contains(out, "partition 1") {
		t.Errorf("verify - of a damaged version 1 image: exit %d\n%s%s", code, out, e)
	}
}

// An incremental (second in its chain) and a differential restore from
// standard input to exactly what their files restore to, their parents
// found in the --search directories (not beside the file: standard
// input has no directory). Without their parents the restore stops,
// naming the missing image and --search (exit 3), and leaves no disk.
func TestStdinIncremental(t *testing.T) {
	fs := newIncFS(t)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", fs.file, full)
	fs.change(func(root string) {
		writeRandom(t, filepath.Join(root, "new1"), 300<<10)
		writeRandom(t, filepath.Join(root, "f03"), 70<<10)
		os.Remove(filepath.Join(root, "f05"))
		appendRandom(t, filepath.Join(root, "dir", "big"), 9<<20)
	})
	inc1 := filepath.Join(set, "inc1.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, fs.file, inc1)
	fs.change(func(root string) {
		overwrite(t, filepath.Join(root, "dir", "big"), 5<<20, 1<<20)
		os.Truncate(filepath.Join(root, "f30"), 1000)
		writeRandom(t, filepath.Join(root, "new2"), 3<<20)
	})
	inc2 := filepath.Join(set, "inc2.platter")
	ok(t, "create", "--progress", "none", "--incremental", inc1, fs.file, inc2)
	diff := filepath.Join(set, "diff.platter")
	ok(t, "create", "--progress", "none", "--differential", full, fs.file, diff)
	files := fs.keep()

	for _, img := range []string{inc2, diff} {
		t.Run(strings.TrimSuffix(filepath.Base(img), ".platter"), func(t *testing.T) {
			// The stream must take chunks from its parents, or this
			// proves nothing.
			j := info(t, img, "--chunks")
			inParent, own := 0, 0
			for _, c := range j.Chunks {
				if c.InParent {
					inParent++
				} else if !c.Zero {
					own++
				}
			}
			if inParent == 0 || own == 0 || j.Type == "full" {
				t.Fatalf("%s is %s with %d chunks in its parents and %d of its own", img, j.Type, inParent, own)
			}
			fromFile := filepath.Join(t.TempDir(), "from-file.img")
			ok(t, "restore", "--progress", "none", img, fromFile)
			fromPipe := filepath.Join(t.TempDir(), "from-pipe.img")
			if out, e, code := piped(t, img, "--search", set, "restore", "--progress", "none", "--yes", "-", fromPipe); code != 0 {
				t.Fatalf("restore - of %s: exit %d\n%s%s", j.Type, code, out, e)
			}
			sh(t, "cmp", fromFile, fromPipe)
			sh(t, "e2fsck", "-fn", fromPipe)
			sameTree(t, files, extTree(t, fromPipe))
			if out, e, code := piped(t, img, "--search", set, "verify", "--progress", "none", "-"); code != 0 || !strings.Contains(out, "OK") {
				t.Errorf("verify - of %s: exit %d\n%s%s", j.Type, code, out, e)
			}
		})
	}

	// The layout block names the parent (format 3): the chain is found
	// and checked before the target is opened, so a missing or wrong
	// parent leaves a new target uncreated and an existing one as it
	// was, byte for byte.
	t.Run("missing parent", func(t *testing.T) {
		ids := map[string]string{}
		for _, img := range []string{full, inc1} {
			ids[img] = info(t, img).ID
		}
		// Beside the file is not looked in.
		created := filepath.Join(t.TempDir(), "new.img")
		_, e, code := piped(t, inc2, "restore", "--progress", "none", "--yes", "-", created)
		if code != 3 || !strings.Contains(e, "no image with id "+ids[inc1]) || !strings.Contains(e, "looked for only in the --search directories, and none was given") || !strings.Contains(e, created+" was not touched") {
			t.Errorf("restore - of an incremental without --search: exit %d: %s", code, e)
		}
		if _, err := os.Stat(created); err == nil {
			t.Error("a target was created")
		}
		// The parent's parent missing, and a wrong file in the
		// parent's place (its id, another image's bytes): named, the
		// target untouched.
		target := filepath.Join(t.TempDir(), "target.img")
		ok(t, "restore", "--progress", "none", full, target)
		sum := sha256sum(t, target)
		half := t.TempDir()
		sh(t, "cp", inc1, half)
		wrong := t.TempDir()
		forgeID(t, diff, filepath.Join(wrong, "inc1.platter"), ids[inc1])
		for _, tc := range []struct{ name, dir, want string }{
			{"the parent's parent missing", half, "no image with id " + ids[full]},
			{"a wrong parent", wrong, "parent " + ids[inc1] + " of standard input"},
		} {
			_, e, code = piped(t, inc2, "--search", tc.dir, "restore", "--progress", "none", "--yes", "-", target)
			if code != 3 || !strings.Contains(e, tc.want) || !strings.Contains(e, target+" was not touched") {
				t.Errorf("restore - of an incremental, %s: exit %d: %s", tc.name, code, e)
			}
			if sha256sum(t, target) != sum {
				t.Errorf("restore - of an incremental, %s: the target changed", tc.name)
			}
		}
		if _, e, code := piped(t, diff, "verify", "--progress", "none", "-"); code != 3 || !strings.Contains(e, "no image with id "+ids[full]) {
			t.Errorf("verify - of a differential without --search: exit %d: %s", code, e)
		}
	})
}

// sha256sum is sha256sum's digest of path: the judge of "unchanged".
func sha256sum(t *testing.T, path string) string {
	t.Helper()
	return strings.Fields(sh(t, "sha256sum", path))[0]
}

// forgeID copies the plain image src to dst with id in its header (CRC
// fixed) and nothing else changed: a file that claims to be image id
// but is not.
func forgeID(t *testing.T, src, dst, id string) {
	t.Helper()
	b := readAll(t, src)
	raw, err := hex.DecodeString(id)
	if err != nil || len(raw) != 16 {
		t.Fatalf("id %q", id)
	}
	copy(b[16:32], raw)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], crc32.MakeTable(crc32.Castagnoli)))
	mustWrite(t, dst, b)
}

// An incremental of format version 2 (testdata/README.md: made by the
// platter of commit 9a3ff6e), whose layout block does not name its
// parent, restores from a file and from standard input (its parent then
// found at the end of the stream, as that version allowed) to the same
// disk, judged by sfdisk, fsck.fat and mtools.
func TestStdinVersion2Incremental(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "v2-inc.platter")
	if j := info(t, img); j.FormatVersion != 2 || j.Type != "incremental" {
		t.Fatalf("%s is format %d, %s: want a version 2 incremental", img, j.FormatVersion, j.Type)
	}
	out := t.TempDir()
	fromFile := filepath.Join(out, "from-file.img")
	ok(t, "restore", "--progress", "none", img, fromFile)
	fromPipe := filepath.Join(out, "from-pipe.img")
	if o, e, code := piped(t, img, "--search", dir, "restore", "--progress", "none", "--yes", "-", fromPipe); code != 0 {
		t.Fatalf("restore - of a version 2 incremental: exit %d\n%s%s", code, o, e)
	}
	sh(t, "cmp", fromFile, fromPipe)
	if dump := sfdiskDump(t, fromPipe); !strings.Contains(dump, `name="v2data"`) {
		t.Fatalf("sfdisk -d of the restored disk:\n%s", dump)
	}
	p1 := extract(t, fromPipe, sfdiskParts(t, fromPipe)[1])
	sh(t, "fsck.fat", "-n", p1)
	files := fatTree(t, p1)
	for name, want := range map[string]string{
		"readme.txt":  "changed after the full image\n",
		"numbers.txt": sh(t, "seq", "1", "20000"),
		"more.txt":    sh(t, "seq", "50000", "60000"),
	} {
		if b, _ := os.ReadFile(filepath.Join(files, name)); string(b) != want {
			t.Errorf("%s holds %d bytes, not what was written", name, len(b))
		}
	}
	// Without its parent: found missing only at the end, as before; the
	// target is then incomplete, and says so.
	target := filepath.Join(out, "target.img")
	_, e, code := piped(t, img, "restore", "--progress", "none", "--yes", "-", target)
	if code != 3 || !strings.Contains(e, "no image with id "+info(t, filepath.Join(dir, "v2-full.platter")).ID) {
		t.Errorf("restore - of a version 2 incremental without its parent: exit %d: %s", code, e)
	}
}

// An image of an opened LUKS volume stores free sectors as "fill with
// random" (Area.FreeFill). Restored from standard input, the disk has
// every used byte the restore of the file has, and fresh random bytes in
// every free block of the volume: not zeros, not the old content, not
// the file restore's. Two disks: a GPT one (the volume at 1 MiB, no chunk
// of it held back for the tables) and a bare volume with free blocks in
// its first chunk (held back with the disk's first MiB and written last,
// after the fill: only its used bytes). Two targets: a new file, and a
// device (a loop device) holding the source disk's bytes, where nothing
// reads as zero unless written.
func TestStdinLUKSFreeFill(t *testing.T) {
	for _, tc := range []struct {
		name string
		gpt  bool
		size int64
		args []string
	}{
		{"gpt-luks2", true, 56 << 20, []string{"--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "16384",
			"--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", "--sector-size", "4096"}},
		{"bare-luks1", false, 24 << 20, []string{"--type", "luks1", "--hash", "sha256", "--pbkdf-force-iterations", "1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := luksFormat(t, tc.size, tc.args...)
			if !tc.gpt {
				luksFreeSome(t, v)
			}
			dir := t.TempDir()
			disk, partStart := v.path, int64(0)
			if tc.gpt {
				partStart = 1 << 20
				disk = filepath.Join(dir, "disk.img")
				mustWrite(t, disk, nil)
				os.Truncate(disk, partStart+tc.size+1<<20)
				sh(t, "sgdisk", "-n", fmt.Sprintf("1:%d:+%d", partStart/512, tc.size/512), "-t", "1:8309", disk)
				writeAt(t, disk, readAll(t, v.path), partStart)
			}
			img := filepath.Join(dir, "luks.platter")
			ok(t, "create", "--progress", "none", "--luks-key-file", v.keyPath, disk, img)
			if j := luksInfoOf(t, img); len(j.Partitions[0].Volumes) != 1 || j.Partitions[0].Volumes[0].Filesystem != "ext4" {
				t.Fatalf("the volume was not opened: %+v", j.Partitions[0])
			}
			free := freeBlocks(t, v.plain)
			const bs = 4096
			payload := partStart + v.payloadOff
			if !tc.gpt {
				chunk := info(t, img).ChunkSize
				held := false
				for blk := range free {
					held = held || payload+blk*bs < chunk
				}
				if !held {
					t.Fatalf("no free block in the first %d-byte chunk: the held chunk's fill is not tested", chunk)
				}
			}
			fromFile := filepath.Join(dir, "from-file.img")
			ok(t, "restore", "--progress", "none", img, fromFile)
			src := readAll(t, disk)

			newFile := filepath.Join(dir, "from-pipe.img")
			oldDisk := filepath.Join(dir, "old-disk.img")
			mustWrite(t, oldDisk, src)
			for _, target := range []string{newFile, loop(t, oldDisk)} {
				if out, e, code := piped(t, img, "restore", "--progress", "none", "--yes", "-", target); code != 0 {
					t.Fatalf("restore - %s: exit %d\n%s%s", target, code, out, e)
				}
				got := readAll(t, target)[:len(src)]
				back := filepath.Join(t.TempDir(), "back.img")
				mustWrite(t, back, got)
				part := back
				if tc.gpt {
					if a, b := sfdiskDump(t, fromFile), sfdiskDump(t, back); a != b {
						t.Errorf("%s: sfdisk -d differs:\n%s\n---\n%s", target, a, b)
					}
					part = extract(t, back, sfdiskParts(t, back)[1])
				}
				// cryptsetup opens it; decrypted, a clean ext4 with
				// the tree; used blocks the source's ciphertext, free
				// ones random.
				luksJudge(t, v, part)

				// Against the file restore, block by block.
				want := readAll(t, fromFile)
				if len(want) != len(src) {
					t.Fatalf("the file restore is %d bytes, the disk %d", len(want), len(src))
				}
				nfree := 0
				for off := int64(0); off < int64(len(want)); off += bs {
					end := min(off+bs, int64(len(want)))
					x, y := want[off:end], got[off:end]
					if off >= payload && free[(off-payload)/bs] {
						nfree++
						if bytes.Equal(x, y) || bytes.Equal(y, make([]byte, len(y))) || bytes.Equal(y, src[off:end]) {
							t.Fatalf("%s: free block at disk byte %d is the file restore's, zeros or the old content", target, off)
						}
						continue
					}
					if !bytes.Equal(x, y) {
						t.Fatalf("%s: used bytes %d-%d differ from the file restore's", target, off, end-1)
					}
				}
				if nfree != len(free) {
					t.Fatalf("%d free blocks compared; dumpe2fs lists %d", nfree, len(free))
				}
			}
		})
	}
}

// luksFreeSome deletes every other file of docs in v's ext4 (debugfs),
// from its tree too, and encrypts the ext4 into the volume again: free
// blocks among the used ones, near the volume's start.
func luksFreeSome(t *testing.T, v *luksVol) {
	t.Helper()
	for i := 0; i < 10; i += 2 {
		name := fmt.Sprintf("docs/f%d.bin", i)
		sh(t, "debugfs", "-w", "-R", "rm "+name, v.plain)
		if err := os.Remove(filepath.Join(v.tree, name)); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "e2fsck", "-fn", v.plain)
	writeAt(t, v.path, luksCrypt(t, v.mk, readAll(t, v.plain), v.sector, true), v.payloadOff)
}

// frameHead is a frame of an image file as docs/format.md lays it out.
type frameHead struct {
	off   int64
	area  uint32
	chunk uint64
}

// plainFrames walks the frames of a plain version 2 image file by
// docs/format.md, not by platter's reader: the 64-byte header, the
// layout block (a 64-byte block header whose stored length is at byte
// 16), then frames (marker PLFR, area at 8, chunk at 16, stored length
// at 24, 64 bytes of header) up to the index block's marker PLIX.
func plainFrames(t *testing.T, img string) []frameHead {
	t.Helper()
	b := readAll(t, img)
	le := binary.LittleEndian
	if v := le.Uint16(b[8:]); len(b) < 128 || v < 2 || v > 3 || le.Uint32(b[12:]) != 0 || string(b[64:68]) != "PLLY" {
		t.Fatalf("%s is not a plain image of version 2 or 3", img)
	}
	var frames []frameHead
	for off := 128 + int64(le.Uint64(b[64+16:])); ; {
		if off+64 > int64(len(b)) {
			t.Fatalf("%s: frames run past the end at byte %d", img, off)
		}
		switch string(b[off : off+4]) {
		case "PLIX":
			return frames
		case "PLFR":
		default:
			t.Fatalf("%s: no frame or index marker at byte %d", img, off)
		}
		frames = append(frames, frameHead{off: off, area: le.Uint32(b[off+8:]), chunk: le.Uint64(b[off+16:])})
		off += 64 + int64(le.Uint32(b[off+24:]))
	}
}

// A live image (--snapshot track under a writer) stores chunks written
// during the copy again in later passes: their earlier frames are
// superseded, and restore - keeps their bytes aside (the spill file)
// until the index says which are still needed. One is made needed: a
// file of 32 identical 64 KiB chunks is one frame, its home the file's
// first whole chunk; the test overwrites the file's start once the first
// copy is done, so a later pass stores the home chunk again while the
// other 31 still name the first frame. The restore from standard input
// is the file restore, byte for byte, and the filesystem at the freeze.
func TestStdinLiveSuperseded(t *testing.T) {
	d := newLiveDisk(t, "ext4")
	pattern := make([]byte, 64<<10)
	rand.Read(pattern)
	dup := filepath.Join(d.mnt, "dup.bin")
	mustWrite(t, dup, bytes.Repeat(pattern, 32))
	sh(t, "sync", "-f", dup)
	w := startLiveWriter(t, filepath.Join(d.mnt, "live"), 25_000_000, 31)
	time.Sleep(1500 * time.Millisecond)
	img := filepath.Join(t.TempDir(), "live.platter")
	var touched sync.WaitGroup
	var touchErr error
	frozen, thawed := liveImageWatch(t, d.dev, img, func(kind string) {
		if kind != "full" {
			return
		}
		touched.Add(1)
		go func() {
			defer touched.Done()
			f, err := os.OpenFile(dup, os.O_WRONLY, 0)
			if err == nil {
				b := make([]byte, 256<<10)
				rand.Read(b)
				_, err = f.WriteAt(b, 0)
				if err == nil {
					err = f.Sync()
				}
				f.Close()
			}
			touchErr = err
		}()
	}, "--chunk-size", "64K")
	touched.Wait()
	ops := w.Stop()
	if touchErr != nil {
		t.Fatal(touchErr)
	}

	// Superseded frames, counted from the file's bytes: chunks with
	// more than one frame, frames no index entry names, and frames
	// still named whose chunk was stored again after them.
	frames := plainFrames(t, img)
	named := map[int64]bool{}
	for _, c := range info(t, img, "--chunks").Chunks {
		if c.FrameOffset > 0 {
			named[c.FrameOffset] = true
		}
	}
	latest := map[[2]uint64]int64{}
	perChunk := map[[2]uint64]int{}
	for _, f := range frames {
		k := [2]uint64{uint64(f.area), f.chunk}
		perChunk[k]++
		latest[k] = f.off
	}
	again, unnamed, needed := 0, 0, 0
	for _, n := range perChunk {
		if n > 1 {
			again++
		}
	}
	for _, f := range frames {
		switch {
		case !named[f.off]:
			unnamed++
		case latest[[2]uint64{uint64(f.area), f.chunk}] != f.off:
			needed++
		}
	}
	s := info(t, img).Snapshot
	t.Logf("%d frames, %d named by the index; %d chunks stored more than once, %d frames superseded, %d of them still named; %d passes",
		len(frames), len(named), again, unnamed+needed, needed, len(s.Passes))
	if again == 0 || unnamed == 0 || needed == 0 {
		t.Fatalf("superseded frames: %d chunks stored again, %d frames unnamed, %d superseded and still named: the test proves less than it says", again, unnamed, needed)
	}

	fromFile := filepath.Join(t.TempDir(), "from-file.img")
	ok(t, "restore", "--progress", "none", img, fromFile)
	fromPipe := filepath.Join(t.TempDir(), "from-pipe.img")
	if out, e, code := piped(t, img, "restore", "--progress", "none", "--yes", "-", fromPipe); code != 0 {
		t.Fatalf("restore -: exit %d\n%s%s", code, out, e)
	}
	sh(t, "cmp", fromFile, fromPipe)
	root := checkedMount(t, "ext4", extract(t, fromPipe, d.p2))
	verifyAtFreeze(t, filepath.Join(root, "live"), ops, frozen, thawed)
	if out, e, code := piped(t, img, "verify", "--progress", "none", "-"); code != 0 || !strings.Contains(out, "OK") {
		t.Errorf("verify -: exit %d\n%s%s", code, out, e)
	}
}

// An encrypted incremental read from standard input: the parent its
// sealed layout block names is found with the same passphrase and
// checked before the target is opened; restored, the disk is the source
// byte for byte; without --search, the target is untouched.
func TestStdinEncryptedIncremental(t *testing.T) {
	k := newEncKeys(t, "correct horse battery staple")
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	sh(t, "sh", "-c", "head -c 12M /dev/urandom > "+src)
	set := t.TempDir()
	full, inc := filepath.Join(set, "full.platter"), filepath.Join(set, "inc.platter")
	encCreate(t, k, src, full, append(k.pw(), "--encrypt", "--chunk-size", "1M")...)
	sh(t, "sh", "-c", "head -c 1M /dev/urandom | dd of="+src+" bs=1M seek=5 conv=notrunc status=none")
	encCreate(t, k, src, inc, append(k.pw(), "--incremental", full)...)
	inParent := 0
	for _, c := range info(t, inc, append(k.pw(), "--chunks")...).Chunks {
		if c.InParent {
			inParent++
		}
	}
	if inParent == 0 {
		t.Fatal("the incremental takes no chunk from its parent: the test proves nothing")
	}
	back := filepath.Join(t.TempDir(), "back.img")
	if out, e, code := piped(t, inc, append(append([]string{"--search", set}, k.pw()...), "restore", "--progress", "none", "--yes", "-", back)...); code != 0 {
		t.Fatalf("restore - of an encrypted incremental: exit %d\n%s%s", code, out, e)
	}
	sh(t, "cmp", src, back)
	sum := sha256sum(t, back)
	fullID := info(t, full, k.pw()...).ID
	if _, e, code := piped(t, inc, append(k.pw(), "restore", "--progress", "none", "--yes", "-", back)...); code != 3 || !strings.Contains(e, "no image with id "+fullID) || !strings.Contains(e, "was not touched") {
		t.Errorf("restore - of an encrypted incremental without its parent: exit %d: %s", code, e)
	}
	if sha256sum(t, back) != sum {
		t.Error("the target changed")
	}
}
