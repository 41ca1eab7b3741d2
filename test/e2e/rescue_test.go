package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/faultdisk"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// planted is an unreadable range put on the failing disk, and what the
// filesystem's own tools say it holds.
type planted struct {
	r     faultdisk.Range
	kind  string // "file", "directory", "metadata", "free space"
	path  string // the file or directory, or the metadata's name
	part  int
	index int64 // for a file: the byte of the file the range starts at
}

// rescueDisk is a copy of gpt-disk.sh's disk (FAT32, ext4, NTFS) with one
// ext4 file deleted (its blocks free space between used ones), and
// ranges in a file of each filesystem, a directory of ext4 and of FAT32,
// metadata of ext4 (the journal) and NTFS ($LogFile), and the freed
// blocks, located with debugfs, mshowfat/minfo and ntfsinfo and named
// by debugfs icheck/ncheck and ntfscluster.
func rescueDisk(t *testing.T) (disk string, parts map[int]part, bad []planted) {
	src := fixture(t, "gpt-disk.sh")
	disk = filepath.Join(t.TempDir(), "failing.img")
	sh(t, "cp", "--sparse=always", src, disk)
	parts = sfdiskParts(t, disk)

	// ext4, partition 2.
	p2 := extract(t, disk, parts[2])
	bs := dumpe2fsInt(t, p2, "Block size")
	blocks := func(what string) []int64 {
		var out []int64
		for _, f := range strings.Fields(debugfs(t, p2, "blocks "+what)) {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				t.Fatalf("debugfs blocks %s: %q", what, f)
			}
			out = append(out, n)
		}
		if len(out) == 0 {
			t.Fatalf("debugfs: %s has no blocks", what)
		}
		return out
	}
	freed := blocks(`"/bin/size-1048579.bin"`)
	sh(t, "debugfs", "-w", "-R", `rm "/bin/size-1048579.bin"`, p2)
	in, err := os.ReadFile(p2)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, disk, in, parts[2].start)
	at := func(p int, blk, size int64) faultdisk.Range {
		return faultdisk.Range{Off: parts[p].start + blk*size, Len: size}
	}
	file := blocks(`"/bin/random 3M.bin"`)
	k := len(file) / 2
	bad = append(bad,
		planted{r: at(2, file[k], bs), kind: "file", path: "/bin/random 3M.bin", part: 2, index: int64(k) * bs},
		planted{r: at(2, blocks("/docs/deep")[0], bs), kind: "directory", path: "/docs/deep", part: 2},
		planted{r: at(2, freed[len(freed)/2], bs), kind: "free space", part: 2},
	)
	journal := blocks("<8>")
	bad = append(bad, planted{r: at(2, journal[len(journal)/2], bs), kind: "metadata", path: "journal", part: 2})
	// The ext4 file's block, as debugfs icheck and ncheck name it.
	icheck := strings.Fields(debugfs(t, p2, fmt.Sprintf("icheck %d", file[k])))
	ino := icheck[len(icheck)-1]
	if ncheck := debugfs(t, p2, "ncheck "+ino); !strings.Contains(ncheck, "/bin/random 3M.bin") {
		t.Fatalf("debugfs ncheck %s: %q", ino, ncheck)
	}

	// FAT32, partition 1: a cluster of the file, by mshowfat and minfo.
	p1 := extract(t, disk, parts[1])
	chain := sh(t, "mshowfat", "-i", p1, "::/bin/random 3M.bin")
	m := regexp.MustCompile(`<(\d+)-(\d+)>`).FindStringSubmatch(chain)
	if m == nil {
		t.Fatalf("mshowfat: %q", chain)
	}
	first, _ := strconv.ParseInt(m[1], 10, 64)
	last, _ := strconv.ParseInt(m[2], 10, 64)
	mi := sh(t, "minfo", "-i", p1, "::")
	num := func(re string) int64 {
		m := regexp.MustCompile(re).FindStringSubmatch(mi)
		if m == nil {
			t.Fatalf("minfo: no %s in\n%s", re, mi)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	sector := num(`sector size: (\d+) bytes`)
	cluster := num(`cluster size: (\d+) sectors`) * sector
	data := (num(`reserved \(boot\) sectors: (\d+)`) + num(`fats: (\d+)`)*num(`Big fatlen=(\d+)`)) * sector
	c := (first + last) / 2
	bad = append(bad, planted{r: faultdisk.Range{Off: parts[1].start + data + (c-2)*cluster, Len: cluster}, kind: "file", path: "/bin/random 3M.bin", part: 1, index: (c - first) * cluster})
	// and the first cluster of the directory /docs.
	m = regexp.MustCompile(`<(\d+)`).FindStringSubmatch(sh(t, "mshowfat", "-i", p1, "::/docs"))
	if m == nil {
		t.Fatal("mshowfat ::/docs: no cluster")
	}
	dc, _ := strconv.ParseInt(m[1], 10, 64)
	bad = append(bad, planted{r: faultdisk.Range{Off: parts[1].start + data + (dc-2)*cluster, Len: cluster}, kind: "directory", path: "/docs", part: 1})

	// NTFS, partition 3: a cluster of the file, by ntfsinfo's runlist.
	p3 := extract(t, disk, parts[3])
	csize := int64(4096)
	if m := regexp.MustCompile(`Cluster Size:\s+(\d+)`).FindStringSubmatch(sh(t, "ntfsinfo", "-m", p3)); m != nil {
		csize, _ = strconv.ParseInt(m[1], 10, 64)
	}
	runs := regexp.MustCompile(`(?m)^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$`).FindAllStringSubmatch(sh(t, "ntfsinfo", "-v", "-F", "/bin/random 3M.bin", p3), -1)
	if len(runs) == 0 {
		t.Fatal("ntfsinfo: no runlist for /bin/random 3M.bin")
	}
	vcn, _ := strconv.ParseInt(runs[0][1], 16, 64)
	lcn, _ := strconv.ParseInt(runs[0][2], 16, 64)
	n, _ := strconv.ParseInt(runs[0][3], 16, 64)
	bad = append(bad, planted{r: faultdisk.Range{Off: parts[3].start + (lcn+n/2)*csize, Len: csize}, kind: "file", path: "/bin/random 3M.bin", part: 3, index: (vcn + n/2) * csize})
	if owner := sh(t, "ntfscluster", "-c", strconv.FormatInt(lcn+n/2, 10), p3); !strings.Contains(owner, "/bin/random 3M.bin") {
		t.Fatalf("ntfscluster -c %d: %q", lcn+n/2, owner)
	}
	// and a cluster in the middle of $LogFile (record 2): metadata, past
	// the restart pages a clean volume's mount reads.
	runs = regexp.MustCompile(`(?m)^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$`).FindAllStringSubmatch(sh(t, "ntfsinfo", "-v", "-i", "2", p3), -1)
	if len(runs) == 0 {
		t.Fatal("ntfsinfo: no runlist for $LogFile")
	}
	lcn, _ = strconv.ParseInt(runs[0][2], 16, 64)
	n, _ = strconv.ParseInt(runs[0][3], 16, 64)
	if owner := sh(t, "ntfscluster", "-c", strconv.FormatInt(lcn+n/2, 10), p3); !strings.Contains(owner, "$LogFile") {
		t.Fatalf("ntfscluster -c %d: %q", lcn+n/2, owner)
	}
	bad = append(bad, planted{r: faultdisk.Range{Off: parts[3].start + (lcn+n/2)*csize, Len: csize}, kind: "metadata", path: "$LogFile", part: 3})
	slices.SortFunc(bad, func(a, b planted) int { return int(a.r.Off - b.r.Off) })
	return disk, parts, bad
}

// debugfs runs one debugfs request on img and returns its output
// (without the banner it writes to standard error).
func debugfs(t *testing.T, img, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v", request, img, err)
	}
	return string(out)
}

func dumpe2fsInt(t *testing.T, img, field string) int64 {
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+)`).FindStringSubmatch(sh(t, "dumpe2fs", "-h", img))
	if m == nil {
		t.Fatalf("dumpe2fs -h %s: no %s", img, field)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

type rescueInfo struct {
	Rescue *image.Rescue `json:"rescue"`
}

// A failing disk: create stops without --rescue and leaves nothing; with
// it, the image holds every readable byte, info names exactly what each
// bad range hit, ddrescuelog reads the map, restore writes zeros or
// --fill's text there, and an interrupted rescue resumes to the same
// image.
func TestRescue(t *testing.T) {
	disk, parts, bad := rescueDisk(t)
	var ranges []faultdisk.Range
	var badBytes int64
	for _, b := range bad {
		ranges = append(ranges, b.r)
		badBytes += b.r.Len
	}
	h := tooltest.FaultyDisk(t, disk, 512, faultdisk.Plan{Bad: ranges})
	dir := t.TempDir()
	img := filepath.Join(dir, "rescued.platter")

	t.Run("without --rescue", func(t *testing.T) {
		_, stderr, code := run(t, "create", "--progress", "none", h.Dev, img)
		if code == 0 {
			t.Fatal("create of a failing disk succeeded without --rescue")
		}
		if !regexp.MustCompile(`cannot read `+regexp.QuoteMeta(h.Dev)+` at bytes \d+-\d+: input/output error`).MatchString(stderr) || !strings.Contains(stderr, "--rescue") {
			t.Errorf("the error names no device, bytes or --rescue:\n%s", stderr)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})

	mapFile := filepath.Join(dir, "failing.map")
	out := ok(t, "create", "--rescue", "--map", mapFile, "--progress", "none", h.Dev, img)
	for _, b := range bad {
		if b.kind == "file" && !strings.Contains(out, b.path) {
			t.Errorf("create's summary does not name %s:\n%s", b.path, out)
		}
	}

	t.Run("report", func(t *testing.T) {
		var j rescueInfo
		if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
			t.Fatal(err)
		}
		if j.Rescue == nil {
			t.Fatal("info --json has no rescue")
		}
		got := j.Rescue.Unreadable
		if len(got) != len(bad) {
			t.Fatalf("%d unreadable ranges, want the %d planted:\n%+v", len(got), len(bad), got)
		}
		for i, b := range bad {
			u := got[i]
			if u.Offset != b.r.Off || u.Length != b.r.Len {
				t.Errorf("unreadable %d-%d, planted %d-%d (%s %s)", u.Offset, u.Offset+u.Length, b.r.Off, b.r.End(), b.kind, b.path)
				continue
			}
			if len(u.Hits) != 1 || u.Hits[0].Kind != b.kind || u.Hits[0].Bytes != b.r.Len {
				t.Errorf("partition %d, bytes %d-%d: hits %+v, want all %d bytes %s %s", b.part, u.Offset, u.Offset+u.Length, u.Hits, b.r.Len, b.kind, b.path)
				continue
			}
			if b.path != "" && !slices.Contains(u.Hits[0].Paths, b.path) || b.kind == "free space" && len(u.Hits[0].Paths) > 0 {
				t.Errorf("partition %d, bytes %d-%d: %s %q, want %q", b.part, u.Offset, u.Offset+u.Length, u.Hits[0].Kind, u.Hits[0].Paths, b.path)
			}
		}
		text := ok(t, "info", img)
		if !strings.Contains(text, fmt.Sprintf("%d sectors", badBytes/512)) || !strings.Contains(text, "unreadable at imaging (by design") {
			t.Errorf("info says nothing of the unreadable sectors:\n%s", text)
		}
		v := ok(t, "verify", img)
		if !strings.Contains(v, ": OK") || !strings.Contains(v, "unreadable at imaging (by design") {
			t.Errorf("verify of a rescued image:\n%s", v)
		}
	})

	t.Run("map", func(t *testing.T) {
		out := sh(t, "ddrescuelog", "-t", mapFile)
		m := regexp.MustCompile(`bad-sector:\s+(\d+) B,\s+in\s+(\d+) area`).FindStringSubmatch(out)
		if m == nil || m[1] != strconv.FormatInt(badBytes, 10) || m[2] != strconv.Itoa(len(bad)) {
			t.Errorf("ddrescuelog -t, want %d bad bytes in %d areas:\n%s", badBytes, len(bad), out)
		}
		list := strings.Fields(sh(t, "ddrescuelog", "-b", "512", "-l-", mapFile))
		var want []string
		for _, b := range bad {
			for s := b.r.Off / 512; s < b.r.End()/512; s++ {
				want = append(want, strconv.FormatInt(s, 10))
			}
		}
		if !slices.Equal(list, want) {
			t.Errorf("ddrescuelog lists bad sectors %v, want %v", list, want)
		}
	})

	restored := filepath.Join(dir, "restored.img")
	out = ok(t, "restore", "--progress", "none", img, restored)
	if !strings.Contains(out, "written as zeros") {
		t.Errorf("restore does not say the unreadable sectors are zeros:\n%s", out)
	}

	t.Run("restored", func(t *testing.T) {
		src := disk + ".files"
		_ = src
		files := fixture(t, "gpt-disk.sh") + ".files"
		hit := map[int][]string{}
		for _, b := range bad {
			if b.kind == "file" {
				hit[b.part] = append(hit[b.part], strings.TrimPrefix(b.path, "/"))
			}
		}
		// Deleted; and the directory whose block was lost takes its
		// entries with it (e2fsck -n says so, and nothing else).
		hit[2] = append(hit[2], "bin/size-1048579.bin", "docs/deep")
		p2 := extract(t, restored, parts[2])
		ino := regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(debugfs(t, p2, "stat /docs/deep"))
		fsck, err := exec.Command("e2fsck", "-fn", p2).CombinedOutput()
		if ino == nil || err == nil || !strings.Contains(string(fsck), "Directory inode "+ino[1]+", block #0") {
			t.Errorf("e2fsck -fn of the restored ext4 (/docs/deep is inode %v): %v\n%s", ino, err, fsck)
		}
		sameTreeBut(t, filepath.Join(files, "p2"), extTree(t, p2), hit[2])
		p1 := extract(t, restored, parts[1])
		// /docs lost its first cluster: fsck.fat -n finds that, and
		// its files are lost with it.
		if out, err := exec.Command("fsck.fat", "-n", p1).CombinedOutput(); err == nil || !strings.Contains(strings.ToLower(string(out)), "/docs\n") {
			t.Errorf("fsck.fat -n of the restored FAT32 whose /docs cluster was lost: %v\n%s", err, out)
		}
		hit[1] = append(hit[1], "docs")
		sameTreeBut(t, filepath.Join(files, "p1"), fatTree(t, p1), hit[1])
		p3 := extract(t, restored, parts[3])
		sh(t, "ntfsfix", "-n", p3)
		sameTreeBut(t, filepath.Join(files, "p3"), ntfsTree(t, p3), hit[3])
		// The file hit: the source's bytes, zeros where the disk failed.
		for _, b := range bad {
			if b.kind != "file" || b.part != 2 {
				continue
			}
			want, err := os.ReadFile(filepath.Join(files, "p2", b.path))
			if err != nil {
				t.Fatal(err)
			}
			clear(want[b.index : b.index+b.r.Len])
			got, err := os.ReadFile(filepath.Join(extTree(t, p2), b.path))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: not its readable bytes and zeros where the disk failed", b.path)
			}
		}
	})

	t.Run("fill", func(t *testing.T) {
		filled := filepath.Join(dir, "filled.img")
		out := ok(t, "restore", "--progress", "none", "--fill", "BADSECTOR", img, filled)
		if !strings.Contains(out, `"BADSECTOR" repeated`) {
			t.Errorf("restore --fill does not say so:\n%s", out)
		}
		for _, b := range bad {
			got := readAt(t, filled, int(b.r.Len), b.r.Off)
			for s := 0; s < len(got); s += 512 {
				if !bytes.HasPrefix(got[s:], []byte("BADSECTORBADSECTOR")) {
					t.Fatalf("sector at byte %d: %q", b.r.Off+int64(s), got[s:s+24])
				}
			}
		}
		// Only there: every other byte is the zero-filled restore's.
		a, b := readAt(t, restored, int(parts[3].start+parts[3].size), 0), readAt(t, filled, int(parts[3].start+parts[3].size), 0)
		for _, p := range bad {
			clear(b[p.r.Off:p.r.End()])
		}
		if !bytes.Equal(a, b) {
			t.Error("restore --fill wrote outside the unreadable sectors")
		}
	})

	t.Run("resume", func(t *testing.T) {
		// A read held for seconds, and Ctrl-C while it is: the map is
		// saved; the same command again ends with the same image.
		mapFile := filepath.Join(dir, "resume.map")
		img2 := filepath.Join(dir, "resumed.platter")
		stall := bad[len(bad)/2].r.Off - 1<<20
		h.SetStall(faultdisk.Stall{Range: faultdisk.Range{Off: stall, Len: 4096}, Delay: 4 * time.Second})
		cmd := exec.Command(platter, "create", "--rescue", "--map", mapFile, "--progress", "none", h.Dev, img2)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 130 {
			t.Fatalf("create interrupted: %v\n%s", err, stderr.String())
		}
		if _, err := os.Stat(img2); err == nil {
			t.Fatal("an interrupted create left an image")
		}
		before := sh(t, "ddrescuelog", "-t", mapFile)
		if !regexp.MustCompile(`rescued:\s+[1-9]`).MatchString(before) {
			t.Fatalf("the interrupted run's map holds nothing rescued:\n%s", before)
		}
		h.SetStall()
		out := ok(t, "create", "--rescue", "--map", mapFile, "--progress", "json", h.Dev, img2)
		_ = out
		again := filepath.Join(dir, "again.img")
		ok(t, "restore", "--progress", "none", img2, again)
		sameBytes(t, restored, again, 0, parts[3].start+parts[3].size, "the resumed rescue's restore and the first's")
		if a, b := sh(t, "ddrescuelog", "-t", mapFile), sh(t, "ddrescuelog", "-t", filepath.Join(dir, "failing.map")); badLine(a) != badLine(b) {
			t.Errorf("resumed map: %s, first: %s", badLine(a), badLine(b))
		}
	})

	t.Run("vanish", func(t *testing.T) {
		// The disk drops off the bus mid-run (every read fails): the
		// rescue stops saying so, not marking the whole disk bad; back
		// again, the same command goes on to the same image.
		mapFile := filepath.Join(dir, "vanish.map")
		img4 := filepath.Join(dir, "vanished.platter")
		h.SetStall(faultdisk.Stall{Range: faultdisk.Range{Off: bad[0].r.Off - 1<<20, Len: 4096}, Delay: 2 * time.Second})
		cmd := exec.Command(platter, "create", "--rescue", "--map", mapFile, "--progress", "none", h.Dev, img4)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
		h.Vanish()
		h.SetStall()
		err := cmd.Wait()
		h.Return()
		if err == nil || !strings.Contains(stderr.String(), "stopped answering") || !strings.Contains(stderr.String(), "run the same command") {
			t.Fatalf("create --rescue of a disk that vanished: %v\n%s", err, stderr.String())
		}
		if _, err := os.Stat(img4); err == nil {
			t.Fatal("a rescue that lost its disk left an image")
		}
		ok(t, "create", "--rescue", "--map", mapFile, "--progress", "none", h.Dev, img4)
		again := filepath.Join(dir, "vanish.img")
		ok(t, "restore", "--progress", "none", img4, again)
		sameBytes(t, restored, again, 0, parts[3].start+parts[3].size, "the rescue after the disk came back and the first's")
		if a, b := sh(t, "ddrescuelog", "-t", mapFile), sh(t, "ddrescuelog", "-t", filepath.Join(dir, "failing.map")); badLine(a) != badLine(b) {
			t.Errorf("map after the disk came back: %s, first: %s", badLine(a), badLine(b))
		}
	})

	t.Run("stall", func(t *testing.T) {
		// A read the disk does not answer within --read-timeout is
		// reported and given up; the run ends.
		stall := bad[0].r.Off + 1<<20
		h.SetStall(faultdisk.Stall{Range: faultdisk.Range{Off: stall, Len: 512}, Delay: 1500 * time.Millisecond})
		defer h.SetStall()
		img3 := filepath.Join(dir, "stalled.platter")
		start := time.Now()
		_, stderr, code := run(t, "create", "--rescue", "--read-timeout", "300ms", "--progress", "json", h.Dev, img3)
		if code != 0 {
			t.Fatalf("create --rescue over a stalling sector: exit %d\n%s", code, stderr)
		}
		if !strings.Contains(stderr, "stalled") {
			t.Errorf("no stall reported:\n%s", stderr)
		}
		if d := time.Since(start); d > 90*time.Second {
			t.Errorf("took %s", d)
		}
	})
}

func badLine(ddrescuelog string) string {
	return regexp.MustCompile(`bad-sector:.*`).FindString(ddrescuelog)
}

// sameTreeBut is sameTree without the files named (relative paths).
func sameTreeBut(t *testing.T, want, got string, except []string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := tooltest.Manifest(t, root)
		for k := range m {
			if strings.HasPrefix(k, "$") || strings.HasPrefix(k, "System Volume Information") || slices.ContainsFunc(except, func(e string) bool { return k == e || strings.HasPrefix(k, e+"/") }) {
				delete(m, k)
			}
		}
		return m
	}
	tooltest.SameManifest(t, list(want), list(got), 10)
}

// verify of a damaged image says what each bad chunk held, as the
// filesystem in the image says: the files a restore would lose.
func TestVerifyNamesFilesHit(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	parts := sfdiskParts(t, disk)
	p2 := extract(t, disk, parts[2])
	bs := dumpe2fsInt(t, p2, "Block size")
	// A block in the middle of the file: its chunk holds none of the
	// directories the file is found by.
	blocks := strings.Fields(debugfs(t, p2, `blocks "/bin/random 3M.bin"`))
	blk, err := strconv.ParseInt(blocks[len(blocks)/2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "disk.platter")
	// Small chunks: the damaged one holds the file's data, not the
	// superblock the filesystem is read by.
	ok(t, "create", "--progress", "none", "--chunk-size", "64K", disk, img)
	j := info(t, img, "--chunks")
	var frame int64 = -1
	for _, c := range j.Chunks {
		if c.Partition == 2 && c.Offset <= blk*bs && blk*bs < c.Offset+c.Length && !c.Zero {
			frame = c.FrameOffset + c.FrameSize/2
		}
	}
	if frame < 0 {
		t.Fatal("no frame holds the file's block")
	}
	b := readAt(t, img, 1, frame)
	writeAt(t, img, []byte{^b[0]}, frame)
	stdout, _, code := run(t, "verify", "--progress", "none", img)
	if code != 3 || !regexp.MustCompile(`bad chunk in \S+: partition 2, bytes \d+-\d+ .*: holds file "/bin/random 3M\.bin"`).MatchString(stdout) {
		t.Errorf("verify (exit %d) does not name the file the bad chunk held:\n%s", code, stdout)
	}
}

// XFS, through its own used-block reader and walker: a bad block of a
// file, located with xfs_db bmap and named by xfs_db blockuse, is the
// one file the report names; every other file comes back.
func TestRescueXFS(t *testing.T) {
	// mkfs.xfs -p takes no names with spaces: the fixture's tree without them.
	files := filepath.Join(t.TempDir(), "tree")
	sh(t, "cp", "-a", fixture(t, "gpt-disk.sh")+".files/p2", files)
	filepath.WalkDir(files, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), " ") {
			os.RemoveAll(p)
			return filepath.SkipDir
		}
		return err
	})
	fs := filepath.Join(t.TempDir(), "xfs.img")
	sh(t, "truncate", "-s", "300M", fs)
	sh(t, "mkfs.xfs", "-q", "-f", "-p", tooltest.XFSProto(t, files), fs)
	const name = "/bin/size-1048579.bin"
	sb := sh(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p agblocks blocksize", fs)
	var agBlocks, bs int64
	fmt.Sscanf(regexp.MustCompile(`agblocks = \d+`).FindString(sb), "agblocks = %d", &agBlocks)
	fmt.Sscanf(regexp.MustCompile(`blocksize = \d+`).FindString(sb), "blocksize = %d", &bs)
	m := regexp.MustCompile(`startblock (\d+) \((\d+)/(\d+)\) count (\d+)`).FindStringSubmatch(sh(t, "xfs_db", "-r", "-c", "path "+name, "-c", "bmap", fs))
	if m == nil || agBlocks == 0 || bs == 0 {
		t.Fatalf("xfs_db bmap of %s: %q, %q", name, m, sb)
	}
	fsb, _ := strconv.ParseInt(m[1], 10, 64)
	ag, _ := strconv.ParseInt(m[2], 10, 64)
	agb, _ := strconv.ParseInt(m[3], 10, 64)
	count, _ := strconv.ParseInt(m[4], 10, 64)
	blk := fsb + count/2
	bad := faultdisk.Range{Off: (ag*agBlocks + agb + count/2) * bs, Len: bs}
	if use := sh(t, "xfs_db", "-r", "-c", "blockget -n", "-c", fmt.Sprintf("fsblock %d", blk), "-c", "blockuse -n", fs); !strings.Contains(use, "inode ") || !strings.Contains(use, strings.TrimPrefix(name, "/")) {
		t.Fatalf("xfs_db blockuse of block %d does not name %s:\n%s", blk, name, use)
	}
	restored := rescueOneFile(t, fs, bad, name)
	sh(t, "xfs_repair", "-n", "-f", restored)
	mnt, umount := tooltest.Mount(t, restored, "ro")
	defer umount()
	sameTreeBut(t, files, mnt, []string{strings.TrimPrefix(name, "/")})
}

// btrfs, through its used-block reader and walker: a bad block of a
// file, its address mapped with filefrag and btrfs-map-logical and
// named by btrfs inspect-internal logical-resolve, is the one file the
// report names; every other file comes back.
func TestRescueBtrfs(t *testing.T) {
	files := filepath.Join(t.TempDir(), "tree")
	sh(t, "cp", "-a", fixture(t, "gpt-disk.sh")+".files/p2", files)
	fs := filepath.Join(t.TempDir(), "btrfs.img")
	sh(t, "truncate", "-s", "256M", fs)
	sh(t, "mkfs.btrfs", "-q", "--rootdir", files, fs)
	const name = "/bin/size-1048579.bin"
	mnt, umount := tooltest.Mount(t, fs, "ro")
	m := regexp.MustCompile(`(?m)^\s*0:\s+0\.\.\s*\d+:\s+(\d+)\.\.`).FindStringSubmatch(sh(t, "filefrag", "-v", mnt+name))
	if m == nil {
		t.Fatalf("filefrag -v %s: no first extent", name)
	}
	first, _ := strconv.ParseInt(m[1], 10, 64)
	logical := (first + 4) * 4096
	if got := sh(t, "btrfs", "inspect-internal", "logical-resolve", strconv.FormatInt(logical, 10), mnt); strings.TrimSpace(got) != mnt+name {
		t.Fatalf("logical-resolve %d: %q, want %s", logical, got, mnt+name)
	}
	umount()
	pm := regexp.MustCompile(`mirror 1 logical \d+ physical (\d+)`).FindStringSubmatch(sh(t, "btrfs-map-logical", "-l", strconv.FormatInt(logical, 10), fs))
	if pm == nil {
		t.Fatal("btrfs-map-logical: no physical address")
	}
	physical, _ := strconv.ParseInt(pm[1], 10, 64)
	bad := faultdisk.Range{Off: physical, Len: 4096}
	restored := rescueOneFile(t, fs, bad, name)
	sh(t, "btrfs", "check", "--readonly", restored) // metadata; the lost block's data checksum cannot match
	// The lost block fails its data checksum: read past it, it is zeros.
	rmnt, rumount := tooltest.Mount(t, restored, "ro,rescue=ignoredatacsums")
	defer rumount()
	sameTreeBut(t, files, rmnt, []string{strings.TrimPrefix(name, "/")})
	want, err := os.ReadFile(files + name)
	if err != nil {
		t.Fatal(err)
	}
	clear(want[4*4096 : 5*4096])
	if got, err := os.ReadFile(rmnt + name); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: not its readable bytes and zeros where the disk failed (%v)", name, err)
	}
}

// rescueOneFile images the bare filesystem fs with bad unreadable (a
// block of the file name) with create --rescue, checks that the report
// names that range holding that file alone, and restores the image,
// returning the restored file.
func rescueOneFile(t *testing.T, fs string, bad faultdisk.Range, name string) string {
	t.Helper()
	h := tooltest.FaultyDisk(t, fs, 512, faultdisk.Plan{Bad: []faultdisk.Range{bad}})
	img := filepath.Join(t.TempDir(), "fs.platter")
	ok(t, "create", "--rescue", "--progress", "none", h.Dev, img)
	var j rescueInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	if j.Rescue == nil || len(j.Rescue.Unreadable) != 1 {
		t.Fatalf("info --json rescue: %+v", j.Rescue)
	}
	u := j.Rescue.Unreadable[0]
	if u.Offset != bad.Off || u.Length != bad.Len || len(u.Hits) != 1 || u.Hits[0].Kind != "file" || !slices.Equal(u.Hits[0].Paths, []string{name}) {
		t.Errorf("unreadable %+v, want bytes %d-%d holding file %s", u, bad.Off, bad.End(), name)
	}
	restored := filepath.Join(t.TempDir(), "restored.img")
	ok(t, "restore", "--progress", "none", img, restored)
	return restored
}
