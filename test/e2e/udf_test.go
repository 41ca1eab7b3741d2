package e2e

// UDF, judged by 7-Zip's own UDF reader, blkid and udfinfo: a bridge
// disc genisoimage -udf makes and a mkudffs volume udfclient fills are
// imaged whole (optical filesystems are written whole; Platter reads no
// UDF space bitmap yet), restore byte for byte, are named with blkid's
// label and UUID, and ls -R --json and extract show what 7z -tudf shows:
// paths, types, sizes, mtimes and every byte.

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// udfSource is a tree of files of many sizes, a deep directory, a long
// name and (unless ascii: udfclient mangles them) non-ASCII names.
func udfSource(t *testing.T, ascii bool) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "a", "b", "c", "d", "e", "f"), 0o755)
	rng := rand.New(rand.NewSource(7))
	files := map[string]int{"empty": 0, "one": 1, "s2047": 2047, "s2049": 2049, "a/big.bin": 1 << 20,
		"a/b/c/d/e/f/deep.txt": 300, strings.Repeat("N", 90) + ".txt": 10}
	if !ascii {
		files["Ünïcödé ✓ 日本.txt"] = 20
		files["a/é.txt"] = 5
	}
	when := time.Date(2022, 2, 3, 4, 5, 6, 0, time.UTC)
	for name, n := range files {
		b := make([]byte, n)
		rng.Read(b)
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		when = when.Add(time.Hour)
		os.Chtimes(p, when, when)
	}
	return src
}

// udfClientImage makes a mkudffs volume of 512-byte blocks and puts src
// into it with udfclient (which needs no kernel driver).
func udfClientImage(t *testing.T, src string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "udf.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 32<<20)
	sh(t, "mkudffs", "--media-type=hd", "-b", "512", "--label=Platter_UDF", img)
	udfc := func(script string, flags ...string) string {
		cmd := exec.Command("udfclient", append(flags, "-b", "512", img)...)
		cmd.Stdin = strings.NewReader(script + "\nquit\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("udfclient: %v\n%s", err, out)
		}
		return string(out)
	}
	vol := regexp.MustCompile(`(\S+LinuxUDF)\n`).FindStringSubmatch(udfc("ls"))
	if vol == nil {
		t.Fatal("udfclient shows no volume")
	}
	script := []string{"cd " + vol[1]}
	var put func(dir string)
	put = func(dir string) {
		es, _ := os.ReadDir(dir)
		script = append(script, "lcd "+dir)
		for _, e := range es {
			if e.IsDir() {
				script = append(script, "mkdir "+e.Name(), "cd "+e.Name())
				put(filepath.Join(dir, e.Name()))
				script = append(script, "cd ..", "lcd "+dir)
			} else {
				script = append(script, "put "+e.Name())
			}
		}
	}
	put(src)
	udfc(strings.Join(script, "\n"), "-W")
	return img
}

// TestUDF: each volume is imaged whole, named as blkid names it, restored
// byte for byte, and listed and extracted as 7z -tudf lists and extracts
// it.
func TestUDF(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(t *testing.T) string
	}{
		{"genisoimage", func(t *testing.T) string {
			img := filepath.Join(t.TempDir(), "bridge.iso")
			sh(t, "genisoimage", "-quiet", "-udf", "-J", "-joliet-long", "-R", "-V", "BRIDGE", "-o", img, udfSource(t, false))
			return img
		}},
		{"udfclient", func(t *testing.T) string { return udfClientImage(t, udfSource(t, true)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := c.make(t)
			st, _ := os.Stat(src)
			img := filepath.Join(t.TempDir(), "disc.platter")
			ok(t, "create", "--progress", "none", src, img)

			var j exfatInfo
			if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
				t.Fatal(err)
			}
			label := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "LABEL", src))
			uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", src))
			if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "udf" || j.Partitions[0].UsedBytes != st.Size() ||
				j.Partitions[0].Label != label || j.Partitions[0].UUID != uuid {
				t.Errorf("info: %+v; want udf, %d bytes used, blkid's label %q and UUID %q", j.Partitions, st.Size(), label, uuid)
			}
			if !strings.Contains(sh(t, "udfinfo", src), "label="+label+"\n") {
				t.Errorf("udfinfo's label is not blkid's %q", label)
			}

			back := filepath.Join(t.TempDir(), "back.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			a, _ := os.ReadFile(src)
			b, _ := os.ReadFile(back)
			if !bytes.Equal(a, b) {
				t.Errorf("the restored volume differs from the source")
			}

			// ls -R --json against 7z's listing.
			spec := img + ":1"
			stdout, stderr, code := run(t, "ls", "-R", "--json", spec, "/")
			var all []struct {
				Path, Type string
				Size       int64
				ModTime    time.Time `json:"mtime"`
			}
			if err := json.Unmarshal([]byte(stdout), &all); err != nil || code != 0 {
				t.Fatalf("ls -R --json: exit %d, %v\n%s", code, err, stderr)
			}
			sz := udf7z(t, src)
			if len(all) != len(sz) {
				t.Errorf("ls lists %d entries, 7z %d", len(all), len(sz))
			}
			for _, e := range all {
				w, found := sz[strings.TrimPrefix(e.Path, "/")]
				switch {
				case !found:
					t.Errorf("ls lists %s, 7z does not", e.Path)
				case (e.Type == "dir") != w.dir || (!w.dir && e.Size != w.size) || !e.ModTime.Equal(w.mtime):
					t.Errorf("%s: %s %d bytes %v; 7z: dir %v %d bytes %v", e.Path, e.Type, e.Size, e.ModTime, w.dir, w.size, w.mtime)
				}
			}

			// extract against 7z x -tudf, byte for byte.
			dest := filepath.Join(t.TempDir(), "out")
			ok(t, "extract", spec, "/", dest)
			want := filepath.Join(t.TempDir(), "7z")
			sh(t, "7z", "x", "-tudf", "-o"+want, src)
			tooltest.SameManifest(t, tooltest.Manifest(t, want), tooltest.Manifest(t, dest), 8)
		})
	}
}

type udf7zEntry struct {
	dir   bool
	size  int64
	mtime time.Time
}

// udf7z is what 7z l -slt -tudf lists of img, by path.
func udf7z(t *testing.T, img string) map[string]udf7zEntry {
	t.Helper()
	cmd := exec.Command("7z", "l", "-slt", "-tudf", img)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("7z l: %v\n%s", err, out)
	}
	_, list, _ := strings.Cut(string(out), "\n----------\n")
	m := map[string]udf7zEntry{}
	for _, block := range strings.Split(list, "\n\n") {
		kv := map[string]string{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, " = "); ok {
				kv[k] = v
			}
		}
		if kv["Path"] == "" {
			continue
		}
		var e udf7zEntry
		e.dir = kv["Folder"] == "+"
		json.Unmarshal([]byte(kv["Size"]), &e.size)
		if e.mtime, err = time.Parse("2006-01-02 15:04:05.999999999", kv["Modified"]); err != nil {
			t.Fatalf("7z: %s: %v", kv["Path"], err)
		}
		m[kv["Path"]] = e
	}
	return m
}
