package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
)

// platter version, and a misspelt flag answered with the flag meant.
func TestVersionAndFlagHints(t *testing.T) {
	if out := ok(t, "version"); !strings.HasPrefix(out, "platter 0.") || !strings.Contains(out, fmt.Sprintf("image format %d", image.Version)) {
		t.Errorf("version: %q", out)
	}
	var v struct {
		Version string `json:"version"`
		Format  int    `json:"image_format"`
	}
	if err := json.Unmarshal([]byte(ok(t, "version", "--json")), &v); err != nil || v.Version == "" || v.Format != image.Version {
		t.Errorf("version --json: %v %+v", err, v)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--partitons", "1", "a", "b"}, "did you mean --partitions?"},
		{[]string{"restore", "--partiton", "2", "a", "b"}, "did you mean --partition?"},
		{[]string{"ls", "--jsn", "a"}, "did you mean --json?"},
	} {
		_, errOut, code := run(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("platter %s: exit %d, want 2 and %q: %s", strings.Join(c.args, " "), code, c.want, errOut)
		}
	}
}

// --json on create, verify and restore gives their results, consistent
// with info; --quiet prints nothing but errors; --verbose each area.
func TestSummaries(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.platter")
	var c struct {
		Image       string `json:"image"`
		ID          string `json:"id"`
		UsedBytes   int64  `json:"used_bytes"`
		ImageBytes  int64  `json:"image_bytes"`
		SourceBytes int64  `json:"source_bytes"`
	}
	if err := json.Unmarshal([]byte(ok(t, "create", "--json", "--progress", "none", disk, img)), &c); err != nil {
		t.Fatal(err)
	}
	j := info(t, img)
	var used int64
	for _, p := range j.Partitions {
		used += p.UsedBytes
	}
	st, _ := os.Stat(img)
	if c.ID != j.ID || c.ImageBytes != st.Size() || c.SourceBytes != j.SourceSize || c.UsedBytes < used {
		t.Errorf("create --json %+v, info says id %s, %d bytes, partitions use %d", c, j.ID, st.Size(), used)
	}
	var v struct {
		OK         bool  `json:"ok"`
		Chunks     int   `json:"chunks"`
		UsedBytes  int64 `json:"used_bytes"`
		ImageBytes int64 `json:"image_bytes"`
	}
	if err := json.Unmarshal([]byte(ok(t, "verify", "--json", "--progress", "none", img)), &v); err != nil || !v.OK || v.Chunks == 0 || v.UsedBytes != c.UsedBytes || v.ImageBytes != st.Size() {
		t.Errorf("verify --json: %v %+v (create said %d used, the file is %d bytes)", err, v, c.UsedBytes, st.Size())
	}
	if o := ok(t, "verify", "--progress", "none", img); !strings.Contains(o, ui.Bytes(c.UsedBytes)+" in use on the disk, "+ui.Bytes(st.Size())+" of image") {
		t.Errorf("verify does not give the sizes create gave (%s used, %s of image): %s", ui.Bytes(c.UsedBytes), ui.Bytes(st.Size()), o)
	}
	// The progress display's total, at its start and its end, is the
	// summary's "used".
	stdout, stderr, code := run(t, "create", "--force", "--json", "--progress", "json", disk, img)
	if code != 0 || json.Unmarshal([]byte(stdout), &c) != nil {
		t.Fatalf("create --json --progress json: exit %d\n%s%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	var first, last struct {
		Done     int64 `json:"bytes_done"`
		Total    int64 `json:"bytes_total"`
		Finished bool  `json:"finished"`
	}
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if !last.Finished || last.Done != c.UsedBytes || last.Total != c.UsedBytes || first.Total != c.UsedBytes {
		t.Errorf("progress from %+v to %+v; the summary says %d bytes used", first, last, c.UsedBytes)
	}
	var r struct {
		Target string `json:"target"`
		Bytes  int64  `json:"bytes"`
	}
	back := filepath.Join(dir, "back.img")
	if err := json.Unmarshal([]byte(ok(t, "restore", "--json", "--progress", "none", img, back)), &r); err != nil || r.Target != back || r.Bytes != j.SourceSize {
		t.Errorf("restore --json: %v %+v", err, r)
	}
	for _, args := range [][]string{
		{"-q", "create", "--force", disk, img},
		{"verify", "-q", img},
		{"restore", "--quiet", img, filepath.Join(dir, "back2.img")},
	} {
		if o, e, code := run(t, args...); code != 0 || o != "" || e != "" {
			t.Errorf("platter %s: exit %d, printed %q %q", strings.Join(args, " "), code, o, e)
		}
	}
	if o := ok(t, "verify", "-v", img); !strings.Contains(o, "partition 2 (ext4)") || !strings.Contains(o, "partition 3 (ntfs)") {
		t.Errorf("verify -v names no partitions:\n%s", o)
	}
}

// On a terminal of 60 columns the bar never reaches the last column, and
// it says "ETA unknown" rather than a made-up 0:00:00.
func TestProgressFitsTerminal(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	writeRandom(t, src, 48<<20)
	img := filepath.Join(dir, "s.platter")
	cmd := exec.Command("script", "-qfec", "stty cols 60 rows 20; "+platter+" create --compress zstd:12 "+src+" "+img, "/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	ansi := regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	var bars int
	for _, l := range strings.FieldsFunc(string(out), func(r rune) bool { return r == '\r' || r == '\n' }) {
		l = ansi.ReplaceAllString(l, "")
		if !strings.HasPrefix(l, "create ") {
			continue
		}
		bars++
		if len(l) >= 60 {
			t.Errorf("a %d-column line on a 60-column terminal: %q", len(l), l)
		}
		if strings.Contains(l, "ETA 0:00:00") {
			t.Errorf("a made-up ETA: %q", l)
		}
	}
	if bars == 0 {
		t.Fatalf("no bar drawn:\n%q", out)
	}
}

// ls sorts, -l adds owners, -R descends, --json gives every entry with
// its path.
func TestLsListings(t *testing.T) {
	disk := fixture(t, "bare-ext4.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	names := strings.Split(strings.TrimSpace(ok(t, "ls", img)), "\n")
	if !sort.StringsAreSorted(names) || len(names) < 3 {
		t.Errorf("ls is not sorted: %q", names)
	}
	long := ok(t, "ls", "-l", img)
	if !regexp.MustCompile(`(?m)^d[rwx-]{9} 0 +0 +`).MatchString(long) {
		t.Errorf("ls -l shows no owners:\n%s", long)
	}
	var ents []struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(ok(t, "ls", "-R", "--json", img)), &ents); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	filepath.Walk(disk+".files/p1", func(p string, fi os.FileInfo, err error) error {
		if rel, _ := filepath.Rel(disk+".files/p1", p); rel != "." && fi.Mode().IsRegular() {
			want["/"+rel] = fi.Size()
		}
		return nil
	})
	got := map[string]int64{}
	for _, e := range ents {
		if e.Type == "file" {
			got[e.Path] = e.Size
		}
	}
	for p, n := range want {
		if got[p] != n {
			t.Errorf("ls -R --json: %s is %d bytes, want %d", p, got[p], n)
		}
	}
	if rec := ok(t, "ls", "-R", img); strings.Count(rec, ":\n") < 2 {
		t.Errorf("ls -R shows no directory headers:\n%s", rec)
	}
}

// serve and mount take IMAGE:N like ls and extract; umount says when a
// directory is not a platter mount.
func TestPartitionSpecs(t *testing.T) {
	disk, img, _ := imagedFixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	p2 := filepath.Join(dir, "p2.img")
	ok(t, "restore", "--progress", "none", "--partition", "2", img, p2)
	addr, _ := startServe(t, img+":2")
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr, p2); !strings.Contains(out, "identical") {
		t.Errorf("serve IMAGE:2, default export: %s", out)
	}
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", img+":2", mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	ents, _ := os.ReadDir(mnt)
	if len(ents) != 1 || ents[0].Name() != "p2.img" {
		t.Errorf("mount IMAGE:2 shows %v, want p2.img alone", ents)
	}
	checkPartition(t, filepath.Join(mnt, "p2.img"), "ext4", disk+".files/p2")
	ok(t, "umount", mnt)
	if _, errOut, code := run(t, "umount", mnt); code == 0 || !strings.Contains(errOut, "is not mounted") {
		t.Errorf("umount of a directory not mounted: exit %d, %s", code, errOut)
	}
	other := t.TempDir()
	sh(t, "mount", "-t", "tmpfs", "none", other)
	defer exec.Command("umount", other).Run()
	if _, errOut, code := run(t, "umount", other); code == 0 || !strings.Contains(errOut, "is not a platter mount") {
		t.Errorf("umount of a tmpfs: exit %d, %s", code, errOut)
	}
	if _, errOut, code := run(t, "serve", "--nbd", "127.0.0.1:0", img+":9"); code != 2 || !strings.Contains(errOut, "no partition 9") {
		t.Errorf("serve IMAGE:9: exit %d, %s", code, errOut)
	}
}

// info names partition types as fdisk does, and filesystems by the label
// and UUID blkid gives them; it shows the digest, the host, and for an
// incremental how many chunks changed.
func TestInfoReadable(t *testing.T) {
	dir := t.TempDir()
	disk := sparseFile(t, filepath.Join(dir, "disk.img"), 128<<20)
	sh(t, "sgdisk", "-n", "1:1M:+32M", "-t", "1:EF00", "-c", "1:ESP",
		"-n", "2:0:+48M", "-t", "2:8300", "-c", "2:root",
		"-n", "3:0:+32M", "-t", "3:0700", "-c", "3:data", disk)
	parts := sfdiskParts(t, disk)
	make := func(n int, mkfs ...string) string {
		p := sparseFile(t, filepath.Join(dir, "p"+mkfs[0]), parts[n].size)
		sh(t, mkfs[0], append(mkfs[1:], p)...)
		sh(t, "dd", "if="+p, "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+itoa(parts[n].start), "conv=notrunc", "status=none")
		return p
	}
	files := map[int]string{
		1: make(1, "mkfs.fat", "-F", "32", "-n", "MYESP"),
		2: make(2, "mkfs.ext4", "-q", "-L", "rootfs"),
		3: make(3, "mkntfs", "-q", "-f", "-F", "-L", "Data Disk"),
	}
	img := filepath.Join(dir, "d.platter")
	ok(t, "create", "--progress", "none", disk, img)
	var got struct {
		Digest     string `json:"digest"`
		Host       string `json:"host"`
		Partitions []struct {
			Index    int    `json:"index"`
			Start    int64  `json:"start"`
			TypeName string `json:"type_name"`
			Name     string `json:"name"`
			Label    string `json:"label"`
			UUID     string `json:"uuid"`
		} `json:"partitions"`
	}
	json.Unmarshal([]byte(ok(t, "info", "--json", img)), &got)
	host, _ := os.Hostname()
	if got.Digest == "" || got.Host != host {
		t.Errorf("info --json: digest %q, host %q (want %q)", got.Digest, got.Host, host)
	}
	fdisk := sh(t, "sfdisk", "-l", disk)
	for _, p := range got.Partitions {
		f := files[p.Index]
		label := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "LABEL", f))
		uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", f))
		if p.Label != label || !strings.EqualFold(p.UUID, uuid) {
			t.Errorf("partition %d: label %q uuid %q, blkid says %q %q", p.Index, p.Label, p.UUID, label, uuid)
		}
		if p.TypeName == "" || !strings.Contains(fdisk, " "+p.TypeName+"\n") {
			t.Errorf("partition %d: type %q, not as sfdisk names it:\n%s", p.Index, p.TypeName, fdisk)
		}
		// The GPT name sgdisk -c gave, as sgdisk -i reads it back.
		if name := sgdiskName(t, disk, p.Index); p.Name != name || name == "" {
			t.Errorf("partition %d: GPT name %q, sgdisk says %q", p.Index, p.Name, name)
		}
		if p.Start != parts[p.Index].start {
			t.Errorf("partition %d starts at %d, sfdisk says %d", p.Index, p.Start, parts[p.Index].start)
		}
	}
	text := ok(t, "info", img)
	// Offsets as a person reads them in the table, and exactly below it.
	want := []string{"EFI System", "Linux filesystem", "Microsoft basic data", "MYESP", "rootfs", "Data Disk", got.Digest, "on host " + host,
		"ESP", "root", "data", "1.0 MiB", "33.0 MiB", "81.0 MiB"}
	for n := 1; n <= 3; n++ {
		want = append(want, fmt.Sprintf("Partition %d: starts at byte %d, %d bytes", n, parts[n].start, parts[n].size))
	}
	for _, want := range want {
		if !strings.Contains(text, want) {
			t.Errorf("info does not show %q:\n%s", want, text)
		}
	}
	// An incremental after one file changed: a few chunks changed.
	inc := filepath.Join(dir, "inc.platter")
	o := ok(t, "create", "--progress", "none", "--incremental", img, disk, inc)
	if !strings.Contains(o, "0 of ") || !strings.Contains(o, "chunks changed since the parent") {
		t.Errorf("create of an unchanged disk's incremental: %s", o)
	}
	if text := ok(t, "info", inc); !strings.Contains(text, "0 of its") {
		t.Errorf("info of an incremental does not say how many chunks changed:\n%s", text)
	}
	// One file written into the ext4 (debugfs, then the partition put
	// back): some chunks changed, not all, and create and info agree.
	src := filepath.Join(dir, "new-file")
	writeRandom(t, src, 3<<20)
	sh(t, "debugfs", "-w", "-R", "write "+src+" new-file", files[2])
	sh(t, "dd", "if="+files[2], "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+itoa(parts[2].start), "conv=notrunc", "status=none")
	inc2 := filepath.Join(dir, "inc2.platter")
	var c struct {
		Changed *int `json:"changed_chunks"`
		Chunks  int  `json:"chunks"`
	}
	if err := json.Unmarshal([]byte(ok(t, "create", "--json", "--progress", "none", "--incremental", inc, disk, inc2)), &c); err != nil || c.Changed == nil || *c.Changed == 0 || *c.Changed >= c.Chunks {
		t.Fatalf("create --json of an incremental after a file was written: %v %+v", err, c)
	}
	if text := ok(t, "info", inc2); !strings.Contains(text, fmt.Sprintf("(%d of its %d chunks changed since its parent)", *c.Changed, c.Chunks)) {
		t.Errorf("info of the incremental does not say %d of %d chunks changed:\n%s", *c.Changed, c.Chunks, text)
	}
}

// sgdiskName is the GPT name of partition n as sgdisk reads it.
func sgdiskName(t *testing.T, disk string, n int) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^Partition name: '(.*)'$`).FindStringSubmatch(sh(t, "sgdisk", "-i", fmt.Sprint(n), disk))
	if m == nil {
		t.Fatalf("sgdisk -i %d %s gives no name", n, disk)
	}
	return m[1]
}

// Every command's --help shows examples (cobra's own help and
// completion commands aside: their text is cobra's).
func TestHelpExamples(t *testing.T) {
	var walk func(path []string)
	n := 0
	walk = func(path []string) {
		help := ok(t, append(path, "--help")...)
		inCmds := false
		for _, line := range strings.Split(help, "\n") {
			switch {
			case strings.HasPrefix(line, "Available Commands:"):
				inCmds = true
			case inCmds && strings.HasPrefix(line, "  "):
				if name := strings.Fields(line)[0]; name != "help" && name != "completion" {
					walk(append(slices.Clip(path), name))
				}
			default:
				inCmds = false
			}
		}
		if len(path) == 0 {
			return
		}
		n++
		ex := "platter " + strings.Join(path, " ")
		if !strings.Contains(help, "\nExamples:\n  "+ex) && !strings.Contains(help, "\nExamples:\n  $ "+ex) {
			t.Errorf("platter %s --help shows no example of itself:\n%s", strings.Join(path, " "), help)
		}
	}
	walk(nil)
	if n < 15 {
		t.Errorf("only %d commands found in --help", n)
	}
}

// A permission error on a device says that disks belong to root, for a
// source and for a target. The commands run as nobody, from a copy of
// the binary nobody can run.
func TestPermissionHint(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed for this test and is not installed")
	}
	disk := fixture(t, "bare-ext4.sh")
	dir, err := os.MkdirTemp("", "platter-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "platter")
	sh(t, "install", "-m", "0755", platter, bin)
	img := filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", disk, img)
	os.Chmod(img, 0o644)
	back := filepath.Join(dir, "loop-backing")
	sh(t, "truncate", "-s", "64M", back)
	loop := strings.TrimSpace(sh(t, "losetup", "--find", "--show", back))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	os.Chmod(loop, 0o600)
	for _, args := range [][]string{
		{"create", "--progress", "none", loop, filepath.Join(dir, "x.platter")},
		{"restore", "--progress", "none", "--yes", img, loop},
	} {
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin}, args...)...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "run platter as root, or with sudo") {
			t.Errorf("platter %s as nobody: exit %d, want 1 and a word about root:\n%s", strings.Join(args, " "), code, out)
		}
	}
}
