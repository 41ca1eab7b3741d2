package e2e

// exFAT, judged by exfatprogs and exfat-fuse: volumes made by mkfs.exfat
// over old data and filled through exfat-fuse are imaged with their used
// clusters only (what dump.exfat counts in use), restore to volumes
// fsck.exfat finds clean, with blkid's label and UUID and every file
// exfat-fuse reads; ls, extract and mount --files show what exfat-fuse
// shows. A damaged main boot region gives way to the backup one, a
// damaged entry set is skipped and named while its siblings come out,
// and a dirty volume whose bitmap lags its files is imaged with what
// fsck.exfat keeps of them.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// exfatGarbage makes a file of size bytes of pseudo-random data: the
// free space of a used card.
func exfatGarbage(t *testing.T, p string, size int64) string {
	t.Helper()
	rng := rand.New(rand.NewSource(size))
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-n)]); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// exfatEntry is a file or directory as a test compares it.
type exfatEntry struct {
	dir   bool
	size  int64
	sum   string
	mtime int64 // seconds
}

// exfatView reads the exFAT in bytes [off, off+size) of img through
// exfat-fuse, read-only: every entry by path.
func exfatView(t *testing.T, img string, off, size int64) map[string]exfatEntry {
	t.Helper()
	dev, detach := tooltest.ExfatLoop(t, img, off, size, true)
	mnt, umount := tooltest.ExfatMount(t, dev, true)
	defer detach()
	defer umount()
	return exfatTree(t, mnt)
}

// exfatTree is every entry below root, by path.
func exfatTree(t *testing.T, root string) map[string]exfatEntry {
	t.Helper()
	m := map[string]exfatEntry{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		e := exfatEntry{dir: fi.IsDir(), mtime: fi.ModTime().Unix()}
		if !e.dir {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.size, e.sum = int64(len(b)), fmt.Sprintf("%x", sha(b))
		}
		m[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// exfatSame fails the test unless got holds exactly want's entries, file
// contents and file mtimes (to the second).
func exfatSame(t *testing.T, what string, want, got map[string]exfatEntry) {
	t.Helper()
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, p)
		case g.dir != w.dir || g.sum != w.sum || g.size != w.size:
			t.Errorf("%s: %s: dir %v, %d bytes; want dir %v, %d bytes (contents differ: %v)", what, p, g.dir, g.size, w.dir, w.size, g.sum != w.sum)
		case !w.dir && g.mtime != w.mtime:
			t.Errorf("%s: %s: mtime %v, want %v", what, p, time.Unix(g.mtime, 0).UTC(), time.Unix(w.mtime, 0).UTC())
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s unexpected", what, p)
		}
	}
	if len(want) < 20 {
		t.Errorf("%s: only %d entries compared", what, len(want))
	}
}

// exfatVolume is a test volume: an exFAT in bytes [off, off+size) of
// img, made over old data and filled through exfat-fuse.
type exfatVolume struct {
	img       string
	off, size int64
	cluster   int64
}

// exfatMake makes a volume of clusters of cluster bytes: on a bare file
// of size bytes, or, with mbr, in the one partition (type 7, from 1 MiB)
// of a disk of size bytes, as on an SD card.
func exfatMake(t *testing.T, size, cluster int64, mbr bool, many int) exfatVolume {
	t.Helper()
	v := exfatVolume{img: exfatGarbage(t, filepath.Join(t.TempDir(), "card.img"), size), size: size, cluster: cluster}
	if mbr {
		cmd := exec.Command("sfdisk", "-q", v.img)
		cmd.Stdin = strings.NewReader("label: dos\nstart=2048, type=7\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		p := sfdiskParts(t, v.img)[1]
		v.off, v.size = p.start, p.size
	}
	dev, detach := tooltest.ExfatLoop(t, v.img, v.off, v.size, false)
	sh(t, "mkfs.exfat", "-c", strconv.FormatInt(cluster, 10), "-L", "Card ✓", dev)
	mnt, umount := tooltest.ExfatMount(t, dev, false)
	tooltest.ExfatFill(t, mnt, cluster, many)
	umount()
	detach()
	return v
}

// fsImage copies the volume's bytes out into a file of its own.
func (v exfatVolume) fsImage(t *testing.T) string {
	t.Helper()
	return extract(t, v.img, part{v.off, v.size})
}

// exfatInUse is what dump.exfat says is in use in the exFAT image fs:
// the sectors before the cluster heap and the clusters its bitmap marks.
func exfatInUse(t *testing.T, fs string) int64 {
	t.Helper()
	out := sh(t, "dump.exfat", fs)
	num := func(key string) int64 {
		m := regexp.MustCompile(key + `:\s+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dump.exfat says no %q:\n%s", key, out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	boot := readAt(t, fs, 512, 0)
	heap := int64(binary.LittleEndian.Uint32(boot[88:])) << boot[108]
	return heap + (num("Total Clusters")-num("Free Clusters"))*num("Cluster size")
}

// exfatInfo is what info --json says of a partition's filesystem.
type exfatInfo struct {
	ImageBytes int64    `json:"image_bytes"`
	Warnings   []string `json:"warnings"`
	Partitions []struct {
		Index      int    `json:"index"`
		Filesystem string `json:"filesystem"`
		Label      string `json:"label"`
		UUID       string `json:"uuid"`
		UsedBytes  int64  `json:"used_bytes"`
		Note       string `json:"note"`
	} `json:"partitions"`
}

func exfatInfoOf(t *testing.T, img string) exfatInfo {
	t.Helper()
	var j exfatInfo
	if err := json.Unmarshal([]byte(ok(t, "info", "--json", img)), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// exfatLs is platter ls -R --json of IMG:N: every entry by path.
func exfatLs(t *testing.T, spec string) (map[string]exfatEntry, string, int) {
	t.Helper()
	stdout, stderr, code := run(t, "ls", "-R", "--json", spec, "/")
	var all []struct {
		Path, Type string
		Size       int64
		ModTime    time.Time `json:"mtime"`
	}
	if err := json.Unmarshal([]byte(stdout), &all); err != nil {
		t.Fatalf("ls -R --json %s: exit %d, %v\n%s%s", spec, code, err, stdout, stderr)
	}
	m := map[string]exfatEntry{}
	for _, e := range all {
		m[strings.TrimPrefix(e.Path, "/")] = exfatEntry{dir: e.Type == "dir", size: e.Size, mtime: e.ModTime.Unix()}
	}
	return m, stderr, code
}

// exfatSameListing fails the test unless ls lists what exfat-fuse shows:
// paths, types, sizes and file mtimes.
func exfatSameListing(t *testing.T, want, got map[string]exfatEntry) {
	t.Helper()
	strip := func(m map[string]exfatEntry) map[string]exfatEntry {
		out := map[string]exfatEntry{}
		for p, e := range m {
			e.sum = ""
			if e.dir {
				e.size, e.mtime = 0, 0
			}
			out[p] = e
		}
		return out
	}
	exfatSame(t, "ls", strip(want), strip(got))
}

// A card of 4 KiB clusters (bare) and one of 128 KiB clusters (in an
// MBR partition) are imaged with what dump.exfat counts in use — the
// image no larger than that plus a margin, far below the old data's
// size — and restored to volumes fsck.exfat finds clean, with blkid's
// label and UUID and every file exfat-fuse read from the source, byte
// for byte with its mtime. ls -R --json, extract and mount --files show
// exactly what exfat-fuse shows. On a tree without exFAT support, info
// says "raw", the image holds all the old data and ls refuses.
func TestExfatRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name          string
		size, cluster int64
		mbr           bool
		many          int
	}{
		{"4k-bare", 192 << 20, 4 << 10, false, 1200},
		{"128k-mbr", 320 << 20, 128 << 10, true, 150},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("TZ", "UTC")
			v := exfatMake(t, c.size, c.cluster, c.mbr, c.many)
			fs := v.fsImage(t)
			sh(t, "fsck.exfat", "-n", fs)
			// Files in one piece (NoFatChain) and FAT-chained ones.
			for name, chained := range map[string]bool{"big.bin": false, "interleaved 0.bin": true, "interleaved 2.bin": true} {
				if flags := readAt(t, fs, 1, exfatSet(t, fs, name)+32+1)[0]; (flags&2 == 0) != chained {
					t.Errorf("%s: stream flags %#x, want FAT-chained %v", name, flags, chained)
				}
			}
			want := exfatView(t, v.img, v.off, v.size)
			label, uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "LABEL", fs)), strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", fs))
			if label != "Card ✓" || uuid == "" {
				t.Fatalf("blkid: label %q, uuid %q", label, uuid)
			}

			img := filepath.Join(t.TempDir(), "card.platter")
			ok(t, "create", "--progress", "none", v.img, img)
			j := exfatInfoOf(t, img)
			if len(j.Partitions) != 1 {
				t.Fatalf("info --json: %+v", j.Partitions)
			}
			p := j.Partitions[0]
			if p.Filesystem != "exfat" || p.Label != label || p.UUID != uuid || len(j.Warnings) != 0 {
				t.Errorf("info: %s, label %q, uuid %q, warnings %q; want exfat, blkid's %q, %q", p.Filesystem, p.Label, p.UUID, j.Warnings, label, uuid)
			}
			used := exfatInUse(t, fs)
			// The margin: the image's header, index and metadata, and
			// zstd's frame and block headers over random data.
			margin := int64(1<<20) + used/100
			if p.UsedBytes != used || j.ImageBytes > used+margin || j.ImageBytes > v.size/4 {
				t.Errorf("used %d bytes (dump.exfat: %d), image %d bytes (want at most %d, and far below the %d of the volume)", p.UsedBytes, used, j.ImageBytes, used+margin, v.size)
			}
			t.Logf("volume %d bytes, in use %d, image %d", v.size, used, j.ImageBytes)

			back := filepath.Join(t.TempDir(), "restored.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			rfs := extract(t, back, part{v.off, v.size})
			sh(t, "fsck.exfat", "-n", rfs)
			for _, key := range []string{"LABEL", "UUID", "TYPE"} {
				if a, b := sh(t, "blkid", "-p", "-o", "value", "-s", key, fs), sh(t, "blkid", "-p", "-o", "value", "-s", key, rfs); a != b {
					t.Errorf("blkid %s: %q restored, %q at the source", key, b, a)
				}
			}
			exfatSame(t, "restored", want, exfatView(t, back, v.off, v.size))

			spec := img + ":1"
			got, stderr, code := exfatLs(t, spec)
			if code != 0 {
				t.Errorf("ls: exit %d\n%s", code, stderr)
			}
			exfatSameListing(t, want, got)
			// Names match as exFAT matches them.
			if out := ok(t, "ls", spec, "/CASE/sub"); strings.TrimSpace(out) != "File.TXT" {
				t.Errorf("ls /CASE/sub: %q", out)
			}

			dest := filepath.Join(t.TempDir(), "out")
			ok(t, "extract", spec, "/", dest)
			exfatSame(t, "extract", want, exfatTree(t, dest))

			mnt := t.TempDir()
			ok(t, "mount", "--daemon", "--files", spec, mnt)
			exfatSame(t, "mount --files", want, exfatTree(t, mnt))
			unmountPlatter(t, mnt)
		})
	}
}

// exfatSet finds the entry set of the file named name in the exFAT
// image fs (the first whose first name entry starts it) and returns its
// file entry's byte.
func exfatSet(t *testing.T, fs, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	var u []byte
	for _, r := range name {
		u = binary.LittleEndian.AppendUint16(u, uint16(r))
	}
	u = u[:min(len(u), 30)]
	for from := 0; ; {
		i := bytes.Index(b[from:], u)
		if i < 0 {
			t.Fatalf("no entry set of %q", name)
		}
		at := from + i
		if fe := at - 2 - 64; at%32 == 2 && fe >= 0 && b[fe] == 0x85 && b[fe+32] == 0xc0 && b[at-2] == 0xc1 {
			return int64(fe)
		}
		from = at + 1
	}
}

// exfatCreateWarns images fs and checks that create and info say
// why with want; it returns the image.
func exfatCreateWarns(t *testing.T, fs, want string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.platter")
	_, stderr, code := run(t, "create", "--progress", "none", fs, img)
	if code != 0 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, want) {
		t.Errorf("create: exit %d, says no warning naming %q:\n%s", code, want, stderr)
	}
	j := exfatInfoOf(t, img)
	if len(j.Partitions) != 1 || j.Partitions[0].Filesystem != "exfat" || !strings.Contains(strings.Join(j.Warnings, "\n"), want) || !strings.Contains(j.Partitions[0].Note, want) {
		t.Errorf("info --json: %+v, want exfat with a warning and note naming %q", j, want)
	}
	return img
}

// exfatRepaired runs fsck.exfat -y on a copy of the exFAT image fs and
// returns the copy, which fsck.exfat -n then finds clean.
func exfatRepaired(t *testing.T, fs string) string {
	t.Helper()
	b, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "repaired.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsck.exfat", "-y", p).CombinedOutput(); err != nil {
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() > 1 {
			t.Fatalf("fsck.exfat -y: %v\n%s", err, out)
		}
	}
	sh(t, "fsck.exfat", "-n", p)
	return p
}

// Damage: a main boot region whose checksum does not match is read by
// its backup (create and info warn; ls and extract read the files; the
// copy, repaired as the source is, is the source). An entry set whose
// checksum does not match is skipped and named by ls, extract and mount
// --files (exit 3), its siblings out byte for byte. A volume left dirty
// by a crash, whose bitmap lags a file it holds, is imaged with that
// file's clusters: repaired by fsck.exfat, the copy holds every file the
// repaired source holds.
func TestExfatDamaged(t *testing.T) {
	t.Setenv("TZ", "UTC")
	v := exfatMake(t, 96<<20, 4<<10, false, 40)
	want := exfatView(t, v.img, 0, v.size)

	t.Run("main boot region", func(t *testing.T) {
		fs := v.fsImage(t)
		writeAt(t, fs, []byte{readAt(t, fs, 1, 300)[0] ^ 0x55}, 300) // the boot code
		if out, err := exec.Command("fsck.exfat", "-n", fs).CombinedOutput(); err == nil {
			t.Fatalf("fsck.exfat -n finds nothing wrong:\n%s", out)
		}
		img := exfatCreateWarns(t, fs, "main boot region is damaged")
		got, stderr, code := exfatLs(t, img)
		if code != 0 {
			t.Errorf("ls: exit %d\n%s", code, stderr)
		}
		exfatSameListing(t, want, got)
		dest := filepath.Join(t.TempDir(), "out")
		ok(t, "extract", img, "/", dest)
		exfatSame(t, "extract", want, exfatTree(t, dest))
		back := filepath.Join(t.TempDir(), "restored.img")
		ok(t, "restore", "--yes", "--progress", "none", img, back)
		exfatSame(t, "restored and repaired", want, exfatView(t, exfatRepaired(t, back), 0, v.size))
	})

	t.Run("entry set checksum", func(t *testing.T) {
		fs := v.fsImage(t)
		fe := exfatSet(t, fs, "f00005.txt")
		writeAt(t, fs, []byte{'F'}, fe+64+2) // its name entry: the checksum no longer matches
		img := filepath.Join(t.TempDir(), "fs.platter")
		ok(t, "create", "--progress", "none", fs, img)
		skipped := func(what, stderr string, code int) {
			t.Helper()
			if code != 3 || !strings.Contains(stderr, `"F00005.txt" skipped`) || !strings.Contains(stderr, "checksum") || strings.Count(stderr, " skipped: ") != 1 {
				t.Errorf("%s: exit %d, want 3 and F00005.txt named as skipped for its checksum:\n%s", what, code, stderr)
			}
		}
		w := map[string]exfatEntry{}
		for p, e := range want {
			if p != "many/f00005.txt" {
				w[p] = e
			}
		}
		got, stderr, code := exfatLs(t, img)
		skipped("ls", stderr, code)
		exfatSameListing(t, w, got)
		dest := filepath.Join(t.TempDir(), "out")
		_, stderr, code = run(t, "extract", img, "/", dest)
		skipped("extract", stderr, code)
		exfatSame(t, "extract", w, exfatTree(t, dest))
		mnt := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img, mnt)
		exfatSame(t, "mount --files", w, exfatTree(t, mnt))
		for try := 0; try < 50; try++ {
			if _, _, code := run(t, "umount", mnt); code == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("dirty", func(t *testing.T) {
		// A crash: exfat-fuse killed while the volume is mounted
		// leaves it marked dirty; a driver that had written a new
		// file's directory entries and not yet the bitmap leaves the
		// file's clusters free in it.
		fs := v.fsImage(t)
		dev, detach := tooltest.ExfatLoop(t, fs, 0, v.size, false)
		mnt, umount := tooltest.ExfatMount(t, dev, false)
		data := bytes.Repeat([]byte("written just before the crash\n"), 20000)
		if err := os.WriteFile(filepath.Join(mnt, "last.txt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		exfatKill(t, dev)
		exec.Command("umount", "-l", mnt).Run()
		umount()
		detach()
		boot := readAt(t, fs, 512, 0)
		if binary.LittleEndian.Uint16(boot[106:])&2 == 0 {
			t.Fatal("the volume is not marked dirty")
		}
		le := binary.LittleEndian
		ss := int64(1) << boot[108]
		cs := ss << boot[109]
		heap := int64(le.Uint32(boot[88:])) * ss
		fe := exfatSet(t, fs, "last.txt")
		st := readAt(t, fs, 32, fe+32)
		first, n := int64(le.Uint32(st[20:])), (int64(le.Uint64(st[24:]))+cs-1)/cs
		root := heap + (int64(le.Uint32(boot[96:]))-2)*cs
		var bitmap int64
		for i := root; i < root+cs; i += 32 {
			if e := readAt(t, fs, 32, i); e[0] == 0x81 {
				bitmap = heap + (int64(le.Uint32(e[20:]))-2)*cs
				break
			}
		}
		for c := first - 2; c < first-2+n; c++ {
			b := readAt(t, fs, 1, bitmap+c/8)
			writeAt(t, fs, []byte{b[0] &^ (1 << (c % 8))}, bitmap+c/8)
		}
		if out, err := exec.Command("fsck.exfat", "-n", fs).CombinedOutput(); err == nil || !strings.Contains(string(out), "free") {
			t.Fatalf("fsck.exfat -n finds no cluster of last.txt marked free: %v\n%s", err, out)
		}
		repaired := exfatView(t, exfatRepaired(t, fs), 0, v.size)
		if e := repaired["last.txt"]; e.size != int64(len(data)) || e.sum != fmt.Sprintf("%x", sha(data)) {
			t.Fatalf("fsck.exfat -y does not keep last.txt: %+v", e)
		}
		img := exfatCreateWarns(t, fs, "marked dirty")
		back := filepath.Join(t.TempDir(), "restored.img")
		ok(t, "restore", "--yes", "--progress", "none", img, back)
		exfatSame(t, "restored and repaired", repaired, exfatView(t, exfatRepaired(t, back), 0, v.size))
	})
}

// exfatKill kills the exfat-fuse process serving dev (one this test
// started), as a crash would.
func exfatKill(t *testing.T, dev string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "mount.exfat-fuse" && strings.Contains(string(b), "\x00"+dev+"\x00") {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for try := 0; try < 100; try++ {
				if _, err := os.Stat(filepath.Dir(p)); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			return
		}
	}
	t.Fatalf("no exfat-fuse process serves %s", dev)
}
