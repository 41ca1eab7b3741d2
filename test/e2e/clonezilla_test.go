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
