package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/partclone"
	"github.com/platter-dev/platter/internal/tooltest"
)

// clonezillaFixture is the disk of clonezilla-gpt.sh (a FAT32 ESP and
// an ext4) and the directory `ocs-sr savedisk` made of it (pigz, 1 MB
// volumes, MD5SUMS and SHA1SUMS).
func clonezillaFixture(t *testing.T) (disk, dir string) {
	t.Helper()
	if _, err := exec.LookPath("ocs-sr"); err != nil {
		t.Fatal("ocs-sr (Debian's clonezilla) is needed for this test and is not installed")
	}
	disk = fixture(t, "clonezilla-gpt.sh")
	return disk, disk + ".cz"
}

// czVolumes are the volumes of the image of partition n in dir, in
// order.
func czVolumes(t *testing.T, dir string, n int) []string {
	t.Helper()
	vols, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("loop*p%d.*-ptcl-img.gz.*", n)))
	if err != nil || len(vols) == 0 {
		t.Fatalf("no image of partition %d in %s", n, dir)
	}
	sort.Strings(vols)
	return vols
}

// ocsRestore is what Clonezilla's own restore pipeline writes for
// partition n of dir: cat the volumes | zcat | partclone.restore, into a
// fresh file of the partition's size.
func ocsRestore(t *testing.T, dir string, n int, size int64) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ref.raw")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(out, size); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("cat %s | zcat | partclone.restore -q -C -W -s - -O %s -L %s",
		strings.Join(czVolumes(t, dir, n), " "), out, filepath.Join(t.TempDir(), "log"))
	if o, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, o)
	}
	return out
}

// checkCZDisk judges a disk restored from the fixture's Clonezilla
// image: the same table as the source, each partition byte for byte
// what partclone.restore makes of its image, checkers clean, every file
// the source's.
func checkCZDisk(t *testing.T, src, dir, got string) {
	t.Helper()
	if a, b := sfdiskDump(t, src), sfdiskDump(t, got); a != b {
		t.Errorf("partition table differs:\nsource:\n%s\nrestored:\n%s", a, b)
	}
	sh(t, "sgdisk", "-v", got)
	parts := sfdiskParts(t, got)
	for n, p := range parts {
		img := extract(t, got, p)
		ref := ocsRestore(t, dir, n, p.size)
		a, b := readAt(t, ref, int(p.size), 0), readAt(t, img, int(p.size), 0)
		if !bytes.Equal(a, b) {
			t.Errorf("partition %d differs from partclone.restore's (first difference at byte %d)", n, firstDifference(a, b))
		}
		tree := filepath.Join(src+".files", fmt.Sprintf("p%d", n))
		switch n {
		case 1:
			sh(t, "fsck.fat", "-n", img)
			sameTree(t, tree, fatTree(t, img))
		case 2:
			sh(t, "e2fsck", "-fn", img)
			sameTree(t, tree, extTree(t, img))
		}
	}
	if len(parts) != 2 {
		t.Errorf("restored disk has %d partitions, want 2", len(parts))
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestClonezillaInfoVerify(t *testing.T) {
	_, dir := clonezillaFixture(t)
	var j struct {
		Format     string   `json:"format"`
		Table      string   `json:"table"`
		SourceSize int64    `json:"source_size"`
		SumFiles   []string `json:"sum_files"`
		Partitions []struct {
			Index       int    `json:"index"`
			Filesystem  string `json:"filesystem"`
			Saved       string `json:"saved"`
			Compression string `json:"compression"`
			Volumes     int    `json:"volumes"`
			UsedBytes   int64  `json:"used_bytes"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", dir)), &j); err != nil {
		t.Fatal(err)
	}
	if j.Format != "clonezilla" || j.Table != "gpt" || j.SourceSize != 72<<20 || len(j.Partitions) != 2 || strings.Join(j.SumFiles, ",") != "MD5SUMS,SHA1SUMS" {
		t.Fatalf("info --json: %+v", j)
	}
	for i, fs := range []string{"vfat", "ext4"} {
		p := j.Partitions[i]
		if p.Index != i+1 || p.Filesystem != fs || p.Saved != "partclone" || p.Compression != "gzip" || p.Volumes < 2 || p.UsedBytes == 0 {
			t.Errorf("partition %d: %+v", i+1, p)
		}
	}
	text := ok(t, "info", dir)
	for _, want := range []string{"Clonezilla image directory", "gpt", "vfat", "ext4", "gzip", "MD5SUMS, SHA1SUMS"} {
		if !strings.Contains(text, want) {
			t.Errorf("info does not say %q:\n%s", want, text)
		}
	}
	if out := ok(t, "verify", dir); !strings.Contains(out, "OK, Clonezilla image: 2 partition images") {
		t.Errorf("verify: %s", out)
	}
	var v struct {
		Format     string   `json:"format"`
		OK         bool     `json:"ok"`
		Partitions int      `json:"partitions"`
		SumFiles   []string `json:"sum_files"`
		Damaged    []string `json:"damaged"`
	}
	if err := json.Unmarshal([]byte(ok(t, "verify", "--json", dir)), &v); err != nil || !v.OK || v.Format != "clonezilla" || v.Partitions != 2 || len(v.SumFiles) != 2 || len(v.Damaged) != 0 {
		t.Errorf("verify --json: %+v (%v)", v, err)
	}

	// A block changed inside the ext4's partclone image, the gzip stream
	// made anew around it so only partclone's checksum can tell: verify
	// names the blocks it covers.
	bad := copyTree(t, dir)
	vols := czVolumes(t, bad, 2)
	raw := sh(t, "bash", "-o", "pipefail", "-c", "cat "+strings.Join(vols, " ")+" | zcat")
	h, err := partclone.ParseHeader([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(raw)
	b[h.DataOffset()+4096*3+100] ^= 0xff
	for _, v := range vols {
		os.Remove(v)
	}
	plain := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(plain, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "bash", "-c", fmt.Sprintf("gzip -c %s > %s", plain, vols[0]))
	if o, _, code := run(t, "verify", "--json", bad); code != 3 || json.Unmarshal([]byte(o), &v) != nil || v.OK || len(v.Damaged) != 2 {
		t.Errorf("verify --json of a damaged image: exit %d\n%s", code, o)
	}
	o, e, code := run(t, "verify", bad)
	if code != 3 || !regexpMatch(`loop\d+p2 \(loop\d+p2\.ext4-ptcl-img\.gz\.aa\): partclone: CRC32 checksum mismatch for blocks \d+-\d+ \(device bytes \d+-\d+\)`, o+e) ||
		!strings.Contains(o+e, "MD5SUMS lists") {
		t.Errorf("verify of a damaged image: exit %d\n%s%s", code, o, e)
	}
	// import refuses it, and leaves no image.
	out := filepath.Join(t.TempDir(), "bad.platter")
	if _, e, code := run(t, "import", bad, out); code != 3 || !strings.Contains(e, "MD5SUMS lists") {
		t.Errorf("import of a damaged image: exit %d\n%s", code, e)
	}
	os.Remove(filepath.Join(bad, "MD5SUMS"))
	os.Remove(filepath.Join(bad, "SHA1SUMS"))
	if _, e, code := run(t, "import", bad, out); code != 3 || !strings.Contains(e, "checksum mismatch for blocks") {
		t.Errorf("import of a damaged image without its checksum files: exit %d\n%s", code, e)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Errorf("a refused import left %v", ents)
	}
	if _, e, code := run(t, "ls", bad+":2", "/"); code != 3 || !strings.Contains(e, "checksum mismatch for blocks") {
		t.Errorf("ls of a damaged image: exit %d\n%s", code, e)
	}

	// A volume gone is named.
	gone := copyTree(t, dir)
	gv := czVolumes(t, gone, 1)
	os.Remove(gv[1])
	os.Remove(filepath.Join(gone, "MD5SUMS"))
	os.Remove(filepath.Join(gone, "SHA1SUMS"))
	if o, e, code := run(t, "verify", gone); code != 3 || !strings.Contains(o+e, "volume missing") || !strings.Contains(o+e, filepath.Base(gv[1])) {
		t.Errorf("verify with a volume missing: exit %d\n%s%s", code, o, e)
	}
}

func TestClonezillaFiles(t *testing.T) {
	src, dir := clonezillaFixture(t)
	for n, fs := range map[int]string{1: "p1", 2: "p2"} {
		got := filepath.Join(t.TempDir(), "out")
		ok(t, "extract", fmt.Sprintf("%s:%d", dir, n), "/", got)
		os.RemoveAll(filepath.Join(got, "lost+found"))
		sameTree(t, filepath.Join(src+".files", fs), got)
	}
	if out := ok(t, "ls", dir+":2", "/"); !strings.Contains(out, "empty.txt") {
		t.Errorf("ls: %s", out)
	}
	// mount --files: the ext4's files through FUSE.
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", dir+":2", mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	got := t.TempDir()
	sh(t, "cp", "-a", mnt+"/.", got)
	os.RemoveAll(filepath.Join(got, "lost+found"))
	sameTree(t, filepath.Join(src+".files", "p2"), got)
}

func TestClonezillaRestoreImport(t *testing.T) {
	src, dir := clonezillaFixture(t)
	tmp := t.TempDir()
	direct := filepath.Join(tmp, "direct.img")
	ok(t, "restore", dir, direct)
	checkCZDisk(t, src, dir, direct)

	// The same disk through mount, serve and convert.
	mnt := mountDaemon(t, dir)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "disk.img"), direct); !strings.Contains(out, "identical") {
		t.Errorf("mount: %s", out)
	}
	addr, _ := startServe(t, dir)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", direct); !strings.Contains(out, "identical") {
		t.Errorf("serve: %s", out)
	}
	qcow := filepath.Join(tmp, "cz.qcow2")
	ok(t, "convert", dir, qcow)
	if out := sh(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow, direct); !strings.Contains(out, "identical") {
		t.Errorf("convert: %s", out)
	}

	// A target inside the image directory is refused.
	if _, e, code := run(t, "restore", dir, filepath.Join(dir, "x.img")); code != 2 {
		t.Errorf("restore into the image directory: exit %d\n%s", code, e)
	}

	// A Clonezilla directory is no incremental's parent: its Platter
	// image is private to one run.
	if _, e, code := run(t, "create", "--incremental", dir, src, filepath.Join(tmp, "inc.platter")); code != 2 || !strings.Contains(e, "platter import") {
		t.Errorf("create --incremental DIR: exit %d\n%s", code, e)
	}

	img := filepath.Join(tmp, "cz.platter")
	out := ok(t, "import", dir, img)
	if !strings.Contains(out, "every partclone checksum, MD5SUMS and SHA1SUMS verified") {
		t.Errorf("import: %s", out)
	}
	if st, err := os.Stat(img); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("import made %v (%v)", st, err)
	}
	ok(t, "verify", img)
	fromImport := filepath.Join(tmp, "import.img")
	ok(t, "restore", img, fromImport)
	checkCZDisk(t, src, dir, fromImport)
	if !bytes.Equal(readAt(t, direct, 72<<20, 0), readAt(t, fromImport, 72<<20, 0)) {
		t.Error("the disk restored from the imported image differs from the one restored from the directory")
	}
	if j := info(t, img); j.Table != "gpt" || len(j.Partitions) != 2 || j.Partitions[1].Filesystem != "ext4" {
		t.Errorf("info of the imported image: %+v", j)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func copyTree(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "img")
	sh(t, "cp", "-a", dir, out)
	return out
}

// clonezillaNX is the disk of clonezilla-gpt-nx.sh (FAT32 ESP, ext4,
// NTFS, XFS) and the two directories the real ocs-sr made of it:
// savedisk (partclone, zstd, 1 MB volumes), and saveparts of p2, p3 and
// p4 (the NTFS by ntfsclone, the others by partclone; gzip, 1 MB
// volumes).
func clonezillaNX(t *testing.T) (disk, saved, parts string) {
	t.Helper()
	if _, err := exec.LookPath("ocs-sr"); err != nil {
		t.Fatal("ocs-sr (Debian's clonezilla) is needed for this test and is not installed")
	}
	disk = fixture(t, "clonezilla-gpt-nx.sh")
	return disk, disk + ".cz", disk + ".parts"
}

// czVolumesOf are the volumes (or the one file) of partition n's image
// in dir, in order.
func czVolumesOf(t *testing.T, dir string, n int) []string {
	t.Helper()
	vols, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("loop*p%d.*-img*", n)))
	if err != nil || len(vols) == 0 {
		t.Fatalf("no image of partition %d in %s", n, dir)
	}
	sort.Strings(vols)
	return vols
}

// ocsRef is what Clonezilla's own restore writes for partition n of dir
// into a fresh file of size bytes: the volumes concatenated, decompressed
// by the compressor ocs-sr named, then partclone.restore (or
// ntfsclone --restore-image for an ntfsclone image).
func ocsRef(t *testing.T, dir string, n int, size int64) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ref.raw")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(out, size); err != nil {
		t.Fatal(err)
	}
	vols := czVolumesOf(t, dir, n)
	dec := "zcat -f"
	if strings.Contains(vols[0], ".zst") {
		dec = "zstdcat"
	}
	tool := fmt.Sprintf("partclone.restore -q -C -W -s - -O %s -L %s", out, filepath.Join(t.TempDir(), "log"))
	if strings.Contains(vols[0], ".ntfs-img") {
		tool = "ntfsclone -q --restore-image --overwrite " + out + " - >/dev/null"
	}
	script := fmt.Sprintf("cat %s | %s | %s", strings.Join(vols, " "), dec, tool)
	if o, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, o)
	}
	// partclone.restore -W cuts the file to the filesystem's blocks
	// (partclone.ntfs's end a cluster short of the partition); on the
	// partition, the rest is what was there: zeros on a fresh disk.
	if err := os.Truncate(out, size); err != nil {
		t.Fatal(err)
	}
	return readAt(t, out, int(size), 0)
}

// xfsTree copies the files of the XFS in img out through the kernel.
func xfsTree(t *testing.T, img string) string {
	t.Helper()
	mnt, umount := tooltest.Mount(t, img, "ro,norecovery")
	defer umount()
	dir := t.TempDir()
	sh(t, "cp", "-a", mnt+"/.", dir)
	return dir
}

// checkNXPartition judges partition n (p, on disk got) restored from dir:
// byte for byte what Clonezilla's restore makes of its image, its
// checker clean, every file the source's.
func checkNXPartition(t *testing.T, src, dir, got string, n int, p part) {
	t.Helper()
	img := extract(t, got, p)
	if want, have := ocsRef(t, dir, n, p.size), readAt(t, img, int(p.size), 0); !bytes.Equal(want, have) {
		t.Errorf("partition %d differs from Clonezilla's restore (first difference at byte %d)", n, firstDifference(want, have))
	}
	tree := filepath.Join(src+".files", fmt.Sprintf("p%d", n))
	switch n {
	case 1:
		sh(t, "fsck.fat", "-n", img)
		sameTree(t, tree, fatTree(t, img))
	case 2:
		sh(t, "e2fsck", "-fn", img)
		sameTree(t, tree, extTree(t, img))
	case 3:
		if strings.Contains(czVolumesOf(t, dir, n)[0], ".ntfs-img") {
			sh(t, "ntfsfix", "-n", img)
		} else {
			// partclone.ntfs saves the clusters, not the device's last
			// sector past them, where NTFS keeps its backup boot sector:
			// Clonezilla's own restore lacks it too (the bytes are the
			// same, above), and ntfsfix says so and nothing else.
			out, err := exec.Command("ntfsfix", "-n", img).CombinedOutput()
			if err != nil && !(strings.Contains(string(out), "$MFT and $MFTMirr completed successfully") && strings.Contains(string(out), "alternate boot sector... BAD")) {
				t.Errorf("ntfsfix -n: %v\n%s", err, out)
			}
		}
		sameTree(t, tree, ntfsTree(t, img))
	case 4:
		sh(t, "xfs_repair", "-n", img)
		sameTree(t, tree, xfsTree(t, img))
	}
}

// TestClonezillaNTFSXFS: a GPT disk with NTFS and XFS besides the ESP
// and ext4, saved by ocs-sr with zstd into 1 MB volumes: info names
// each, restore gives the disk Clonezilla's restore gives (every
// partition byte for byte, checkers clean, every file), and ls, extract
// and mount --files give the files of the three Platter reads.
func TestClonezillaNTFSXFS(t *testing.T) {
	src, dir, _ := clonezillaNX(t)
	var j struct {
		Table      string `json:"table"`
		Partitions []struct {
			Filesystem  string `json:"filesystem"`
			Saved       string `json:"saved"`
			Compression string `json:"compression"`
			Volumes     int    `json:"volumes"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", dir)), &j); err != nil {
		t.Fatal(err)
	}
	if j.Table != "gpt" || len(j.Partitions) != 4 {
		t.Fatalf("info --json: %+v", j)
	}
	for i, fs := range []string{"vfat", "ext4", "ntfs", "xfs"} {
		if p := j.Partitions[i]; p.Filesystem != fs || p.Saved != "partclone" || p.Compression != "zstd" || p.Volumes < 2 {
			t.Errorf("partition %d: %+v; want %s, partclone, zstd, split", i+1, p, fs)
		}
	}
	if out := ok(t, "verify", dir); !strings.Contains(out, "OK, Clonezilla image: 4 partition images") {
		t.Errorf("verify: %s", out)
	}

	got := filepath.Join(t.TempDir(), "disk.img")
	ok(t, "restore", dir, got)
	if a, b := sfdiskDump(t, src), sfdiskDump(t, got); a != b {
		t.Errorf("partition table differs:\nsource:\n%s\nrestored:\n%s", a, b)
	}
	parts := sfdiskParts(t, got)
	if len(parts) != 4 {
		t.Fatalf("restored disk has %d partitions, want 4", len(parts))
	}
	for n, p := range parts {
		t.Run(fmt.Sprintf("p%d", n), func(t *testing.T) { checkNXPartition(t, src, dir, got, n, p) })
	}

	// One partition restored alone is the same bytes.
	p3 := filepath.Join(t.TempDir(), "p3.img")
	ok(t, "restore", "--partition", "3", dir, p3)
	if !bytes.Equal(readAt(t, p3, int(parts[3].size), 0), readAt(t, got, int(parts[3].size), parts[3].start)) {
		t.Error("restore --partition 3 differs from the whole disk's partition 3")
	}

	for _, n := range []int{1, 2, 3} {
		out := filepath.Join(t.TempDir(), "out")
		ok(t, "extract", fmt.Sprintf("%s:%d", dir, n), "/", out)
		os.RemoveAll(filepath.Join(out, "lost+found"))
		sameTree(t, filepath.Join(src+".files", fmt.Sprintf("p%d", n)), out)
	}
	if out := ok(t, "ls", dir+":3", "/"); !strings.Contains(out, "empty.txt") {
		t.Errorf("ls of the NTFS: %s", out)
	}
	// Platter does not read XFS's files: it says how to reach them.
	if _, e, code := run(t, "ls", dir+":4", "/"); code != 2 || !strings.Contains(e, "mount -o ro,loop") {
		t.Errorf("ls of the XFS: exit %d\n%s", code, e)
	}
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", dir+":3", mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	sameTree(t, filepath.Join(src+".files", "p3"), mnt)
}

// TestClonezillaSaveparts: what `ocs-sr saveparts` writes (the saved
// partitions and the disk's table, no disk file) opens as the disk with
// those partitions filled in and the others zeros.
func TestClonezillaSaveparts(t *testing.T) {
	src, _, dir := clonezillaNX(t)
	if _, err := os.Stat(filepath.Join(dir, "disk")); err == nil {
		t.Fatal("ocs-sr saveparts wrote a disk file; the test assumes it does not")
	}
	var j struct {
		Saved      []string `json:"saved_partitions"`
		Partitions []struct {
			Saved string `json:"saved"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", dir)), &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Saved) != 3 || len(j.Partitions) != 4 || j.Partitions[0].Saved != "none" || j.Partitions[1].Saved != "partclone" ||
		j.Partitions[2].Saved != "ntfsclone" || j.Partitions[3].Saved != "partclone" {
		t.Fatalf("info --json: %+v", j)
	}
	if out := ok(t, "info", dir); !strings.Contains(out, "ocs-sr saveparts of loop") {
		t.Errorf("info: %s", out)
	}
	if out := ok(t, "verify", dir); !strings.Contains(out, "OK, Clonezilla image: 3 partition images") {
		t.Errorf("verify: %s", out)
	}
	got := filepath.Join(t.TempDir(), "disk.img")
	ok(t, "restore", dir, got)
	if a, b := sfdiskDump(t, src), sfdiskDump(t, got); a != b {
		t.Errorf("partition table differs:\nsource:\n%s\nrestored:\n%s", a, b)
	}
	parts := sfdiskParts(t, got)
	for _, n := range []int{2, 3, 4} {
		t.Run(fmt.Sprintf("p%d", n), func(t *testing.T) { checkNXPartition(t, src, dir, got, n, parts[n]) })
	}
	if b := readAt(t, got, int(parts[1].size), parts[1].start); !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("partition 1, not saved, is not zeros")
	}
	if _, e, code := run(t, "ls", dir+":1", "/"); code == 0 {
		t.Errorf("ls of a partition saveparts did not save: exit 0\n%s", e)
	}
	p2 := filepath.Join(t.TempDir(), "p2.img")
	ok(t, "restore", "--partition", "2", dir, p2)
	sh(t, "e2fsck", "-fn", p2)
	sameTree(t, filepath.Join(src+".files", "p2"), extTree(t, p2))
	out := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", dir+":2", "/", out)
	os.RemoveAll(filepath.Join(out, "lost+found"))
	sameTree(t, filepath.Join(src+".files", "p2"), out)
	if o := ok(t, "ls", dir+":2", "/"); !strings.Contains(o, "empty.txt") {
		t.Errorf("ls: %s", o)
	}
}

// TestClonezillaNtfsclone: `ocs-sr -q … saveparts` saves the NTFS with
// ntfsclone (gzip'd, split): the partition restored is what ntfsclone
// --restore-image makes of it, ntfsfix finds it clean, and its files,
// restored or extracted, are the source's. A damaged stream is named
// with its byte offset.
func TestClonezillaNtfsclone(t *testing.T) {
	src, _, dir := clonezillaNX(t)
	vols := czVolumesOf(t, dir, 3)
	if !strings.Contains(vols[0], ".ntfs-img") || len(vols) < 2 {
		t.Fatalf("ocs-sr -q saved %v, not an ntfsclone image in volumes", vols)
	}
	var j struct {
		Partitions []struct {
			Saved      string `json:"saved"`
			Filesystem string `json:"filesystem"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", dir)), &j); err != nil || len(j.Partitions) != 4 || j.Partitions[2].Saved != "ntfsclone" || j.Partitions[2].Filesystem != "ntfs" {
		t.Fatalf("info --json: %+v (%v)", j, err)
	}
	// The partition alone (the whole disk is TestClonezillaSaveparts').
	p3 := filepath.Join(t.TempDir(), "p3.img")
	ok(t, "restore", "--partition", "3", dir, p3)
	size := sfdiskParts(t, src)[3].size
	if want := ocsRef(t, dir, 3, size); !bytes.Equal(want, readAt(t, p3, int(size), 0)) {
		t.Errorf("partition 3 differs from ntfsclone --restore-image's (first difference at byte %d)", firstDifference(want, readAt(t, p3, int(size), 0)))
	}
	sh(t, "ntfsfix", "-n", p3)
	sameTree(t, filepath.Join(src+".files", "p3"), ntfsTree(t, p3))
	mnt := t.TempDir()
	ok(t, "mount", "--daemon", "--files", dir+":3", mnt)
	t.Cleanup(func() { unmountPlatter(t, mnt) })
	sameTree(t, filepath.Join(src+".files", "p3"), mnt)
	out := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", dir+":3", "/", out)
	sameTree(t, filepath.Join(src+".files", "p3"), out)

	// A command byte changed, the gzip stream made anew around it.
	bad := copyTree(t, dir)
	bv := czVolumesOf(t, bad, 3)
	raw := []byte(sh(t, "bash", "-o", "pipefail", "-c", "cat "+strings.Join(bv, " ")+" | zcat"))
	raw[56+1+4096] = 7 // the command after the first cluster
	for _, v := range bv {
		os.Remove(v)
	}
	plain := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(plain, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "bash", "-c", fmt.Sprintf("gzip -c %s > %s", plain, bv[0]))
	// Without the checksum files, so that only the stream can tell.
	os.Remove(filepath.Join(bad, "MD5SUMS"))
	os.Remove(filepath.Join(bad, "SHA1SUMS"))
	o, e, code := run(t, "verify", bad)
	if code != 3 || !strings.Contains(o+e, "ntfsclone: command byte 0x07 for cluster 1 is neither") || !strings.Contains(o+e, "at image byte 4153") {
		t.Errorf("verify of a damaged ntfsclone image: exit %d\n%s%s", code, o, e)
	}
	if _, e, code := run(t, "ls", bad+":3", "/"); code != 3 || !strings.Contains(e, "image byte 4153") {
		t.Errorf("ls of a damaged ntfsclone image: exit %d\n%s", code, e)
	}
}

// TestClonezillaLVMRefused: a disk whose partition is an LVM PV, saved
// by the real ocs-sr. Without device-mapper (none here) ocs-sr cannot
// activate the volumes and saves no image of them ("Unable to save LVM
// image"), but writes its LVM files (lvm_vg_dev.list, lvm_VG.conf): the
// directory is refused, saying it holds LVM volumes, by every command.
func TestClonezillaLVMRefused(t *testing.T) {
	if _, err := exec.LookPath("ocs-sr"); err != nil {
		t.Fatal("ocs-sr (Debian's clonezilla) is needed for this test and is not installed")
	}
	work := t.TempDir()
	img := filepath.Join(work, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 48<<20); err != nil {
		t.Fatal(err)
	}
	sh(t, "sgdisk", "-o", "-n", "1:2048:+32M", "-t", "1:8E00", "-c", "1:lvm", img)
	loop := tooltest.Loop(t, img)
	sh(t, "addpart", loop, "1", "2048", "65536")
	t.Cleanup(func() { exec.Command("delpart", loop, "1").Run() })
	pv := loop + "p1"
	lvmRun(t, pv, "pvcreate", "-ff", "-y", pv)
	lvmRun(t, pv, "vgcreate", "-s", "4m", "czlvm", pv)
	lvmCreate2 := func(name string) {
		lvmRun(t, pv, "lvcreate", "-an", "-Zn", "-Wn", "-y", "-L", "8m", "-n", name, "czlvm")
	}
	lvmCreate2("root")
	root := filepath.Join(work, "ocs")
	os.MkdirAll(root, 0o755)
	out, err := exec.Command("ocs-sr", "-b", "-q2", "-j2", "-z1p", "-sfsck", "-scs", "-senc", "-or", root, "-p", "true",
		"savedisk", "IMG", strings.TrimPrefix(loop, "/dev/")).CombinedOutput()
	if err != nil {
		t.Fatalf("ocs-sr: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "IMG")
	if m, _ := filepath.Glob(filepath.Join(dir, "lvm_*")); len(m) == 0 {
		t.Fatalf("ocs-sr wrote no LVM files:\n%s", out)
	}
	for _, args := range [][]string{{"info", dir}, {"verify", dir}, {"ls", dir + ":1", "/"}, {"restore", dir, filepath.Join(work, "out.img")}, {"import", dir, filepath.Join(work, "out.platter")}} {
		if _, e, code := run(t, args...); code == 0 || !strings.Contains(e, "it holds LVM volumes (lvm_") {
			t.Errorf("platter %s: exit %d\n%s", strings.Join(args, " "), code, e)
		}
	}
	for _, n := range []string{"out.img", "out.platter"} {
		if _, err := os.Stat(filepath.Join(work, n)); err == nil {
			t.Errorf("a refused command left %s", n)
		}
	}
}
