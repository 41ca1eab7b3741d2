package e2e

// UDF, judged by 7-Zip's own UDF reader, blkid and udfinfo: a bridge
// disc genisoimage -udf makes and a mkudffs volume udfclient fills are
// imaged whole (optical filesystems are written whole; Platter reads no
// UDF space bitmap yet), restore byte for byte, are named with blkid's
// label and UUID, and ls -R --json, extract and mount --files show what
// 7z -tudf shows: paths, types, sizes, mtimes and every byte. A volume Linux's udf driver
// writes (in a VM) lists as that driver lists it: symlinks, hard links,
// modes, owners, sparse and embedded files.

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
			img := filepath.Join(t.TempDir(), "disc.platter")
			ok(t, "create", "--progress", "none", src, img)

			var j exfatInfo
			if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
				t.Fatal(err)
			}
			label := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "LABEL", src))
			uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", src))
			// Kept whole: the restore below gives back every byte.
			if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "udf" || j.Partitions[0].Label != label || j.Partitions[0].UUID != uuid {
				t.Errorf("info: %+v; want udf, blkid's label %q and UUID %q", j.Partitions, label, uuid)
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
			lsMatches7z(t, spec, src)

			// extract against 7z x -tudf, byte for byte.
			dest := filepath.Join(t.TempDir(), "out")
			ok(t, "extract", spec, "/", dest)
			want := filepath.Join(t.TempDir(), "7z")
			sh(t, "7z", "x", "-tudf", "-o"+want, src)
			tooltest.SameManifest(t, tooltest.Manifest(t, want), tooltest.Manifest(t, dest), 8)

			// mount --files shows the same.
			mnt := t.TempDir()
			ok(t, "mount", "--daemon", "--files", spec, mnt)
			tooltest.SameManifest(t, tooltest.Manifest(t, want), tooltest.Manifest(t, mnt), 8)
			unmountPlatter(t, mnt)
		})
	}
}

// lsMatches7z checks that ls -R --json of spec lists what 7-Zip's own
// UDF reader lists of the volume img: every path, its type, size and
// mtime.
func lsMatches7z(t *testing.T, spec, img string) {
	t.Helper()
	stdout, stderr, code := run(t, "ls", "-R", "--json", spec, "/")
	var all []struct {
		Path, Type string
		Size       int64
		ModTime    time.Time `json:"mtime"`
	}
	if err := json.Unmarshal([]byte(stdout), &all); err != nil || code != 0 {
		t.Fatalf("ls -R --json: exit %d, %v\n%s", code, err, stderr)
	}
	sz := tooltest.SevenZip(t, img, "udf")
	if len(all) != len(sz) {
		t.Errorf("ls lists %d entries, 7z %d", len(all), len(sz))
	}
	for _, e := range all {
		w, found := sz[strings.TrimPrefix(e.Path, "/")]
		switch {
		case !found:
			t.Errorf("ls lists %s, 7z does not", e.Path)
		case (e.Type == "dir") != w.Dir || (!w.Dir && e.Size != w.Size) || !e.ModTime.Equal(w.MTime):
			t.Errorf("%s: %s %d bytes %v; 7z: dir %v %d bytes %v", e.Path, e.Type, e.Size, e.ModTime, w.Dir, w.Size, w.MTime)
		}
	}
}

// udfKernelScript fills a UDF in the VM with Linux's udf driver, which
// writes what no tool here does: files embedded in their entries,
// symlinks (relative, absolute, to a directory), a hard link, a FIFO, a
// sparse file, setuid/setgid/sticky modes, owners, a set mtime, a
// directory whose identifiers span many blocks, non-ASCII and long
// names, and two files written a block at a time in turn, each in 520
// extents (some 513 on 4096-byte blocks): more long allocation
// descriptors than its entry holds (114 on 2048-byte blocks, 242 on
// 4096), continued in Allocation Extent Descriptors. It then mounts the volume again and lists it from the disk, one
// "E|type|mode|uid|gid|size|mtime|sha256 or target|path" line an entry.
const udfKernelScript = `
grep -q ' /mnt udf ' /proc/mounts
echo hi > small.txt
dd if=/dev/urandom of=big.bin bs=1024 count=3000 2>/dev/null
mkdir -p deep/a/b/c/d/e/f/g
dd if=/dev/urandom of=deep/a/b/c/d/e/f/g/leaf bs=1000 count=5 2>/dev/null
: > empty
printf x > "$(printf 'caf\303\251 \346\227\245\346\234\254.txt')"
printf y > "$(printf '%0200d' 7)"
mkdir many
i=0; while [ $i -lt 150 ]; do echo $i > many/a-file-with-a-longer-name-$i; i=$((i+1)); done
ln -s small.txt rel-link
ln -s /etc/passwd abs-link
ln -s ../../small.txt deep/a/up-link
ln -s deep/a dir-link
ln small.txt hard.txt
mkfifo fifo
i=0; while [ $i -lt 520 ]; do
	dd if=/dev/urandom of=frag-a bs=@BS@ count=1 seek=$i conv=notrunc 2>/dev/null
	dd if=/dev/urandom of=frag-b bs=@BS@ count=1 seek=$i conv=notrunc 2>/dev/null
	i=$((i+1))
done
dd if=/dev/urandom of=sparse bs=4096 seek=1000 count=1 2>/dev/null
chmod 4755 small.txt; chmod 1777 many; chmod 0600 big.bin; chmod 2750 deep
chown 1000:100 big.bin; chown 123:456 deep/a
touch -d '2001-02-03 04:05:06' empty
cd /
umount /mnt
mount -t udf -o ro,iocharset=utf8,bs=@BS@ /dev/vda /mnt
cd /mnt
find . | while read -r p; do
	[ "$p" = . ] && continue
	t=$(stat -c %F "$p")
	case $t in
	"symbolic link") x=$(readlink "$p") ;;
	"regular file"|"regular empty file") x=$(sha256sum "$p" | cut -d' ' -f1) ;;
	*) x=- ;;
	esac
	echo "E|$t|$(stat -c '%a|%u|%g|%s|%Y' "$p")|$x|${p#./}"
done
`

// udfLsMode is the mode string ls -l shows for a type and octal mode.
func udfLsMode(typ string, octal string) string {
	m, err := strconv.ParseUint(octal, 8, 32)
	if err != nil {
		return "bad mode " + octal
	}
	b := []byte("-rwxrwxrwx")
	switch typ {
	case "dir":
		b[0] = 'd'
	case "symlink":
		b[0] = 'l'
	case "fifo":
		b[0] = 'p'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint64, i int, set, unset byte) {
		if m&bit != 0 {
			if b[i] == 'x' {
				b[i] = set
			} else {
				b[i] = unset
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// TestUDFKernel: a volume mkudffs makes (blocks of 2048 and 4096 bytes)
// and Linux's udf driver fills
// (in a VM: this machine's kernel has no udf) is listed by ls -R --json
// as the driver lists it (types, modes with their special bits, owners,
// sizes, mtimes, symlink targets) and extracted as it reads it, byte for
// byte.
func TestUDFKernel(t *testing.T) {
	for _, bs := range []string{"2048", "4096"} {
		t.Run(bs, func(t *testing.T) {
			img := sparseFile(t, filepath.Join(t.TempDir(), "udf.img"), 64<<20)
			sh(t, "mkudffs", "--media-type=hd", "--udfrev=0x0201", "-b", bs, "--label=Kernel", img)
			script := strings.ReplaceAll(udfKernelScript, "@BS@", bs)
			log := vmRun(t, img, []string{"crc-itu-t", "cdrom", "udf", "nls_utf8"}, "mount -t udf -o iocharset=utf8,bs="+bs+" /dev/vda /mnt", script)
			type kEntry struct{ typ, mode, uid, gid, size, mtime, x string }
			want := map[string]kEntry{}
			for _, l := range strings.Split(log, "\n") {
				if i := strings.Index(l, "E|"); i > 0 {
					l = l[i:] // after the console's escape sequences
				}
				f := strings.SplitN(strings.TrimRight(l, "\r"), "|", 9)
				if len(f) != 9 || f[0] != "E" {
					continue
				}
				typ := map[string]string{"regular file": "file", "regular empty file": "file", "directory": "dir", "symbolic link": "symlink", "fifo": "fifo"}[f[1]]
				want[f[8]] = kEntry{typ, f[2], f[3], f[4], f[5], f[6], f[7]}
			}
			if len(want) < 170 {
				t.Fatalf("the VM listed %d entries:\n%s", len(want), log)
			}

			pimg := filepath.Join(t.TempDir(), "udf.platter")
			ok(t, "create", "--progress", "none", img, pimg)
			stdout := ok(t, "ls", "-R", "--json", pimg+":1", "/")
			var all []struct {
				Path, Type, Mode string
				Size             int64
				ModTime          time.Time `json:"mtime"`
				UID, GID         *uint32
				Target           string
			}
			if err := json.Unmarshal([]byte(stdout), &all); err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, e := range all {
				p := strings.TrimPrefix(e.Path, "/")
				w, found := want[p]
				if !found {
					t.Errorf("ls lists %s; the kernel does not", p)
					continue
				}
				seen++
				got := kEntry{typ: e.Type, mode: e.Mode, size: strconv.FormatInt(e.Size, 10), mtime: strconv.FormatInt(e.ModTime.Unix(), 10), x: w.x}
				if e.UID != nil && e.GID != nil {
					got.uid, got.gid = strconv.FormatUint(uint64(*e.UID), 10), strconv.FormatUint(uint64(*e.GID), 10)
				}
				if e.Type == "symlink" {
					got.x = e.Target
				}
				w.mode = udfLsMode(w.typ, w.mode)
				if w.typ == "dir" || w.typ == "fifo" {
					got.size, w.size = "", ""
				}
				if got != w {
					t.Errorf("%s: ls %+v; the kernel %+v", p, got, w)
				}
			}
			if seen != len(want) {
				t.Errorf("ls lists %d of the kernel's %d entries", seen, len(want))
			}

			dest := filepath.Join(t.TempDir(), "out")
			run(t, "extract", pimg+":1", "/", dest) // exit 3 is fine: the FIFO is not extracted
			m := map[string]string{}
			for p, w := range want {
				switch w.typ {
				case "file":
					m[p] = "file:" + w.size + ":" + w.x
				case "symlink":
					m[p] = "link:" + w.x
				case "dir":
					m[p] = "dir"
				}
			}
			got := tooltest.Manifest(t, dest)
			tooltest.SameManifest(t, m, got, 170)
		})
	}
}
