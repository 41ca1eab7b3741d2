// Package e2e runs the platter binary against disks made by real tools
// and judges the results with real tools.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

var (
	platter  string // the binary under test
	fixtures string // test/fixtures
	shared   string // fixtures made once per run
)

func TestMain(m *testing.M) {
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	dir, err := os.MkdirTemp("", "platter-e2e-")
	if err != nil {
		panic(err)
	}
	root, _ := filepath.Abs("../..")
	fixtures = filepath.Join(root, "test", "fixtures")
	shared = filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o755)
	// Clonezilla images converted by the tests are cached here, not in
	// the user's cache.
	os.Setenv("PLATTER_CACHE", filepath.Join(dir, "cache"))
	platter = filepath.Join(dir, "platter")
	// The same static build as `make build`.
	build := exec.Command("go", "build", "-trimpath", "-tags", "netgo,osusergo", "-ldflags", `-extldflags "-static"`, "-o", platter, "./cmd/platter")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build platter: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs platter and returns its output and exit code.
func run(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(platter, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run platter: %v", err)
	}
	if strings.Contains(e.String(), "goroutine ") || strings.Contains(e.String(), "panic:") {
		t.Fatalf("platter %v panicked:\n%s", args, e.String())
	}
	return o.String(), e.String(), code
}

// ok runs platter and fails the test unless it exits 0.
func ok(t testing.TB, args ...string) string {
	t.Helper()
	o, e, code := run(t, args...)
	if code != 0 {
		t.Fatalf("platter %s: exit %d\n%s%s", strings.Join(args, " "), code, o, e)
	}
	return o
}

// sh runs a real tool; a missing tool or a failure fails the test.
func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for this test and is not installed", name)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var fixtureOnce sync.Map

// fixture runs a recipe once per test run and returns the disk's path;
// the source trees are in PATH.files/pN.
func fixture(t testing.TB, script string) string {
	t.Helper()
	out := filepath.Join(shared, strings.TrimSuffix(script, ".sh")+".img")
	once, _ := fixtureOnce.LoadOrStore(script, &sync.Once{})
	once.(*sync.Once).Do(func() {
		cmd := exec.Command("bash", filepath.Join(fixtures, script), out)
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Remove(out)
			t.Fatalf("fixture %s: %v\n%s", script, err, b)
		}
	})
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("fixture %s was not made", script)
	}
	return out
}

type infoJSON struct {
	FormatVersion int    `json:"format_version"`
	ID            string `json:"id"`
	SourceSize    int64  `json:"source_size"`
	SectorSize    int64  `json:"sector_size"`
	Table         string `json:"table"`
	ImageBytes    int64  `json:"image_bytes"`
	ChunkSize     int64  `json:"chunk_size"`
	Partitions    []struct {
		Index       int    `json:"index"`
		Start       int64  `json:"start"`
		Size        int64  `json:"size"`
		Type        string `json:"type"`
		Filesystem  string `json:"filesystem"`
		UsedBytes   int64  `json:"used_bytes"`
		StoredBytes int64  `json:"stored_bytes"`
	} `json:"partitions"`
	Chunks []struct {
		Partition   int   `json:"partition"`
		Offset      int64 `json:"offset"`
		Length      int64 `json:"length"`
		FrameOffset int64 `json:"frame_offset"`
		FrameSize   int64 `json:"frame_size"`
		Zero        bool  `json:"zero"`
		InParent    bool  `json:"in_parent"`
		Delta       bool  `json:"delta"`
	} `json:"chunks"`
	Snapshot       *image.Snapshot `json:"snapshot"`
	Type           string          `json:"type"`
	SectorBySector bool            `json:"sector_by_sector"`
	Chain          []struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		File string `json:"file"`
	} `json:"chain"`
}

func info(t testing.TB, img string, extra ...string) infoJSON {
	t.Helper()
	var j infoJSON
	if err := json.Unmarshal([]byte(ok(t, append([]string{"info", "--json"}, append(extra, img)...)...)), &j); err != nil {
		t.Fatalf("info --json: %v", err)
	}
	return j
}

// sfdiskDump is `sfdisk -d` with the device name taken out.
func sfdiskDump(t testing.TB, disk string) string {
	return strings.ReplaceAll(sh(t, "sfdisk", "-d", disk), disk, "DISK")
}

type part struct{ start, size int64 }

// sfdiskParts maps partition numbers to byte ranges, as sfdisk sees them.
func sfdiskParts(t testing.TB, disk string) map[int]part {
	var j struct {
		PT struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node        string `json:"node"`
				Start, Size int64
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(sh(t, "sfdisk", "--json", disk)), &j); err != nil {
		t.Fatal(err)
	}
	ss := j.PT.SectorSize
	if ss == 0 {
		ss = 512
	}
	out := map[int]part{}
	for _, p := range j.PT.Partitions {
		var n int
		fmt.Sscanf(p.Node[strings.LastIndexAny(p.Node, "gpabcdefhijklmnoqrstuvwxyz")+1:], "%d", &n)
		out[n] = part{p.Start * ss, p.Size * ss}
	}
	return out
}

// extract copies bytes [p.start, p.start+p.size) of disk into a new file.
func extract(t testing.TB, disk string, p part) string {
	t.Helper()
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(t.TempDir(), "part.img")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(in, p.start, p.size)); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameBytes(t testing.TB, a, b string, off, n int64, what string) {
	t.Helper()
	if !bytes.Equal(readAt(t, a, int(n), off), readAt(t, b, int(n), off)) {
		t.Errorf("%s differ (bytes %d-%d)", what, off, off+n-1)
	}
}

// writeAt writes b into the file at path at byte off.
func writeAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("write %s at byte %d: %v", path, off, err)
	}
}

// readAt reads n bytes of the file at path from byte off.
func readAt(t testing.TB, path string, n int, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s at byte %d: %v", path, off, err)
	}
	return b
}

// Filesystem readers: each copies every file of a partition image out
// with the filesystem's own tools.
func extTree(t testing.TB, img string) string {
	dir := t.TempDir()
	sh(t, "debugfs", "-R", "rdump / "+dir, img)
	os.RemoveAll(filepath.Join(dir, "lost+found"))
	return dir
}

func fatTree(t testing.TB, img string) string {
	dir := t.TempDir()
	sh(t, "mcopy", "-s", "-n", "-i", img, "::/", dir)
	return dir
}

func ntfsTree(t testing.TB, img string) string {
	mnt := t.TempDir()
	sh(t, "ntfs-3g", "-o", "ro", img, mnt)
	t.Cleanup(func() { exec.Command("fusermount", "-u", mnt).Run() })
	return mnt
}

// sameTree fails the test unless got holds exactly want's directories,
// files (byte for byte) and symlinks, but what NTFS keeps for itself.
func sameTree(t testing.TB, want, got string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := tooltest.Manifest(t, root)
		for k := range m {
			if strings.HasPrefix(k, "$") || k == "System Volume Information" || strings.HasPrefix(k, "System Volume Information/") {
				delete(m, k)
			}
		}
		return m
	}
	tooltest.SameManifest(t, list(want), list(got), 10)
}

// partcloneZstd is the size of tool's (partclone.xfs, partclone.btrfs)
// image of img piped through zstd -3, and how long it took.
func partcloneZstd(t testing.TB, tool, img string) (int64, time.Duration) {
	t.Helper()
	start := time.Now()
	out := sh(t, "bash", "-c", fmt.Sprintf("set -o pipefail; %s -q -c -s %q -o - 2>/dev/null | zstd -3 -q -c | wc -c", tool, img))
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("%s | zstd: %q", tool, out)
	}
	return n, time.Since(start)
}

func trim(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}
