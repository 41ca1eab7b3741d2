package udf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

// source makes the tree the fixtures are made from: files of many sizes
// (empty, under, at and over a block, many blocks), a long name, a deep
// directory, non-ASCII names unless ascii (udfclient writes a UTF-8
// name's bytes as 8-bit characters, "é" as "Ã©", and fails on others).
// Names hold no spaces: udfclient's command line splits on them. Every
// mtime is set, to the second.
func source(t testing.TB, ascii bool) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	deep := filepath.Join(src, "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(24))
	data := func(n int) []byte {
		b := make([]byte, n)
		rnd.Read(b)
		return b
	}
	files := map[string][]byte{
		"a.txt":                          []byte("hello\n"),
		"empty":                          nil,
		"one":                            {'x'},
		"s2047":                          data(2047),
		"s2048":                          data(2048),
		"s2049":                          data(2049),
		"d1/big.bin":                     data(300000),
		"d1/d2/d3/d4/d5/d6/d7/d8/deep":   data(5000),
		"Ünïcödé_✓_日本語.txt":              []byte("unicode\n"),
		"d1/Latin1_é.txt":                []byte("latin\n"),
		strings.Repeat("L", 96) + ".txt": data(100),
	}
	if ascii {
		for name := range files {
			if strings.ContainsFunc(name, func(r rune) bool { return r > 127 }) {
				delete(files, name)
			}
		}
	}
	when := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	for name, b := range files {
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		when = when.Add(time.Hour + time.Second)
		os.Chtimes(p, when, when)
	}
	return src
}

// want is what a fixture should hold: every path of src (files and
// directories), with its bytes.
func want(t testing.TB, src string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		if fi.IsDir() {
			m[filepath.ToSlash(rel)] = nil
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			b = []byte{}
		}
		m[filepath.ToSlash(rel)] = b
		return nil
	})
	return m
}

// walk lists every entry of f by path.
func walk(t testing.TB, f *Files) map[string]File {
	t.Helper()
	got := map[string]File{}
	var dir func(d string)
	dir = func(d string) {
		es, err := f.ReadDir(d)
		if err != nil {
			t.Fatalf("ReadDir %q: %v", d, err)
		}
		for _, e := range es {
			if e.Err != nil {
				t.Fatalf("%s/%s: %v", d, e.Name, e.Err)
			}
			p := path.Join(d, e.Name)
			if _, dup := got[p]; dup {
				t.Fatalf("%s listed twice", p)
			}
			got[p] = e
			if e.Mode.IsDir() {
				dir(p)
			}
		}
	}
	dir("")
	return got
}

// same checks that f holds exactly the files of src, byte for byte, and
// calls check on each entry with its source's FileInfo.
func same(t *testing.T, f *Files, src string, check func(p string, e File, fi os.FileInfo)) {
	t.Helper()
	w := want(t, src)
	got := walk(t, f)
	for p, b := range w {
		e, ok := got[p]
		if !ok {
			t.Errorf("%s: missing", p)
			continue
		}
		fi, _ := os.Lstat(filepath.Join(src, p))
		if e.Mode.IsDir() != fi.IsDir() {
			t.Errorf("%s: mode %v, the source's %v", p, e.Mode, fi.Mode())
			continue
		}
		check(p, e, fi)
		if fi.IsDir() {
			continue
		}
		if e.Size != int64(len(b)) {
			t.Errorf("%s: size %d, want %d", p, e.Size, len(b))
		}
		rc, err := f.Open(p)
		if err != nil {
			t.Errorf("open %s: %v", p, err)
			continue
		}
		data, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(data, b) {
			t.Errorf("%s: read %d bytes (%v), not the source's %d", p, len(data), err, len(b))
		}
		if st, err := f.Stat(p); err != nil || st.Size != e.Size {
			t.Errorf("stat %s: %+v, %v", p, st, err)
		}
	}
	for p := range got {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: not in the source", p)
		}
	}
}

func openImage(t testing.TB, img string) (*os.File, int64) {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, _ := fh.Stat()
	return fh, st.Size()
}

// sameAs7z checks that f lists what 7-Zip lists of img: every path, its
// type, size and mtime (to the microsecond, as both read it).
func sameAs7z(t *testing.T, f *Files, img string) {
	t.Helper()
	sz := tooltest.SevenZip(t, img, "udf")
	got := walk(t, f)
	for p, w := range sz {
		e, ok := got[p]
		switch {
		case !ok:
			t.Errorf("7z lists %s; Platter does not", p)
		case e.Mode.IsDir() != w.Dir || (!w.Dir && e.Size != w.Size):
			t.Errorf("%s: %v %d bytes; 7z: dir %v, %d bytes", p, e.Mode, e.Size, w.Dir, w.Size)
		case !e.ModTime.Equal(w.MTime):
			t.Errorf("%s: mtime %v; 7z: %v", p, e.ModTime, w.MTime)
		}
	}
	if len(got) != len(sz) {
		t.Errorf("Platter lists %d entries, 7z %d", len(got), len(sz))
	}
}

// judged checks Detect and Identify against udfinfo and blkid: the label,
// the UUID, and the volume's blocks.
func judged(t *testing.T, img string) {
	t.Helper()
	r, size := openImage(t, img)
	info := tooltest.Run(t, "udfinfo", img)
	field := func(k string) string {
		m := regexp.MustCompile(`(?m)^` + k + `=(.*)$`).FindStringSubmatch(info)
		if m == nil {
			t.Fatalf("udfinfo gives no %s:\n%s", k, info)
		}
		return m[1]
	}
	id := identify(r, size)
	if id.Label != field("label") {
		t.Errorf("label %q, udfinfo's %q", id.Label, field("label"))
	}
	blkid := tooltest.Run(t, "blkid", "-p", "-o", "udev", img)
	if !strings.Contains(blkid, "ID_FS_UUID="+id.UUID+"\n") || id.UUID == "" {
		t.Errorf("UUID %q; blkid says:\n%s", id.UUID, blkid)
	}
	if !strings.Contains(blkid, "ID_FS_LABEL_ENC=") || !strings.Contains(blkid, "ID_FS_TYPE=udf\n") {
		t.Errorf("blkid does not see UDF:\n%s", blkid)
	}
	u, err := Detect(r, size)
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := strconv.ParseInt(field("blocksize"), 10, 64)
	blocks, _ := strconv.ParseInt(field("blocks"), 10, 64)
	m, err := u.Load()
	if err != nil {
		t.Fatal(err)
	}
	if m.BlockSize() != bs || m.Count() != blocks {
		t.Errorf("used %d blocks of %d bytes; udfinfo: a volume of %d blocks of %d", m.Count(), m.BlockSize(), blocks, bs)
	}
}

// TestGenisoimage reads the UDF 1.02 side of a bridge disc genisoimage
// makes (-udf -J -R): every file byte for byte, its mtime (genisoimage
// copies the source's) and the modes genisoimage records (read-only for
// all, 0444, directories 0555).
func TestGenisoimage(t *testing.T) {
	src := source(t, false)
	img := filepath.Join(t.TempDir(), "bridge.iso")
	tooltest.Run(t, "genisoimage", "-quiet", "-udf", "-J", "-joliet-long", "-R", "-V", "Bridge_✓", "-o", img, src)
	r, size := openImage(t, img)
	f, err := OpenFiles(r, size)
	if err != nil {
		t.Fatal(err)
	}
	same(t, f, src, func(p string, e File, fi os.FileInfo) {
		if want := iofs.FileMode(0o444); fi.IsDir() {
			if e.Mode != iofs.ModeDir|0o555 {
				t.Errorf("%s: mode %v", p, e.Mode)
			}
		} else if e.Mode != want {
			t.Errorf("%s: mode %v, want %v", p, e.Mode, want)
		}
		if !e.ModTime.Equal(fi.ModTime().Truncate(time.Second)) && !fi.IsDir() {
			t.Errorf("%s: mtime %v, the source's %v", p, e.ModTime, fi.ModTime())
		}
	})
	judged(t, img)
	sameAs7z(t, f, img)
}

// udfclientFill makes a UDF of blocks of bs bytes with mkudffs (UDF
// revision rev) and puts src into it with udfclient, which writes a UDF
// image without a kernel driver. It returns the image and when the
// writing started and ended.
func udfclientFill(t testing.TB, rev string, bs int, src string, size int64) (string, time.Time, time.Time) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "udf.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, size)
	tooltest.Run(t, "mkudffs", "--media-type=hd", "--udfrev="+rev, "-b", strconv.Itoa(bs), "--label=Platter_"+rev, img)
	list := udfclient(t, img, bs, "ls")
	m := regexp.MustCompile(`(?m)^d\S+\s+\S+\s+\S+\s+\d+\s+(\S+LinuxUDF)$`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("udfclient shows no volume:\n%s", list)
	}
	script := []string{"cd " + m[1]}
	var put func(dir, rel string)
	put = func(dir, rel string) {
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		script = append(script, "lcd "+dir)
		for _, e := range es {
			if e.IsDir() {
				script = append(script, "mkdir "+e.Name(), "cd "+e.Name())
				put(filepath.Join(dir, e.Name()), path.Join(rel, e.Name()))
				script = append(script, "cd ..", "lcd "+dir)
			} else {
				script = append(script, "put "+e.Name())
			}
		}
	}
	put(src, "")
	start := time.Now().Add(-time.Second)
	udfclient(t, img, bs, strings.Join(script, "\n"), "-W")
	return img, start, time.Now().Add(time.Second)
}

// udfclient runs udfclient's commands on img and returns its output.
func udfclient(t testing.TB, img string, bs int, commands string, flags ...string) string {
	t.Helper()
	args := append(flags, "-b", strconv.Itoa(bs), img)
	cmd := exec.Command("udfclient", args...)
	cmd.Stdin = strings.NewReader(commands + "\nquit\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("udfclient %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// udfclientModes is what udfclient's ls says of every entry of dir (the
// volume's path inside udfclient): mode, uid and gid.
func udfclientModes(t *testing.T, img string, bs int, vol, dir string) map[string]string {
	out := udfclient(t, img, bs, "cd "+path.Join(vol, dir)+"\nls")
	m := map[string]string{}
	for _, l := range regexp.MustCompile(`(?m)^([-dl][-rwxsStT]{9})\s+(-?\d+)\s+(-?\d+)\s+\d+\s+(.+)$`).FindAllStringSubmatch(out, -1) {
		if l[4] != "." && l[4] != ".." {
			m[l[4]] = l[1] + " " + l[2] + " " + l[3]
		}
	}
	return m
}

// TestUdfclient reads UDF volumes mkudffs makes (revisions 1.02, 1.50 and
// 2.01; blocks of 512 and 2048 bytes) and udfclient fills: every
// file byte for byte; modes, uid and gid as udfclient lists them; mtimes
// (udfclient stamps the time it writes) within those minutes and as
// 7-Zip reads them.
func TestUdfclient(t *testing.T) {
	src := source(t, true)
	for _, c := range []struct {
		rev string
		bs  int
	}{{"0x0201", 2048}, {"0x0201", 512}, {"0x0102", 2048}, {"0x0150", 2048}} {
		t.Run(fmt.Sprintf("%s-%d", c.rev, c.bs), func(t *testing.T) {
			t.Parallel() // udfclient spends most of its time waiting, not computing
			img, start, end := udfclientFill(t, c.rev, c.bs, src, 64<<20)
			r, size := openImage(t, img)
			f, err := OpenFiles(r, size)
			if err != nil {
				t.Fatal(err)
			}
			list := udfclient(t, img, c.bs, "ls")
			vol := "/" + regexp.MustCompile(`(\S+LinuxUDF)\n`).FindStringSubmatch(list)[1]
			modes := map[string]map[string]string{}
			same(t, f, src, func(p string, e File, fi os.FileInfo) {
				d := path.Dir(p)
				if d == "." {
					d = ""
				}
				if modes[d] == nil {
					modes[d] = udfclientModes(t, img, c.bs, vol, d)
				}
				ls := fmt.Sprintf("%v %d %d", e.Mode, int32(e.Uid), int32(e.Gid))
				ls = strings.Replace(ls, "d", "d", 1)
				if want := modes[d][path.Base(p)]; ls != want {
					t.Errorf("%s: %q, udfclient lists %q", p, ls, want)
				}
				if e.ModTime.Before(start) || e.ModTime.After(end) {
					t.Errorf("%s: mtime %v, written between %v and %v", p, e.ModTime, start, end)
				}
			})
			judged(t, img)
			sameAs7z(t, f, img)
		})
	}
}

// TestVirtualRefused: mkudffs's BD-R volume (UDF 2.50, a Virtual
// Allocation Table) is found and named, and its files refused with a
// clear error.
func TestVirtualRefused(t *testing.T) {
	img := filepath.Join(t.TempDir(), "bdr.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 16<<20)
	tooltest.Run(t, "mkudffs", "--media-type=bdr", "--udfrev=0x0250", "--label=BluRay", img)
	judgedLabel(t, img, "BluRay")
	r, size := openImage(t, img)
	if _, err := OpenFiles(r, size); err == nil || !strings.Contains(err.Error(), `"*UDF Virtual Partition", which Platter does not read`) {
		t.Fatalf("OpenFiles: %v", err)
	}
	if _, err := Detect(r, size); err != nil {
		t.Fatal(err)
	}
}

func judgedLabel(t *testing.T, img, label string) {
	t.Helper()
	r, size := openImage(t, img)
	if id := identify(r, size); id.Label != label || !strings.Contains(tooltest.Run(t, "blkid", "-p", "-o", "udev", img), "ID_FS_UUID="+id.UUID+"\n") {
		t.Errorf("identity %+v", id)
	}
}

// TestNotUDF: an ISO 9660 without UDF, zeros and a short file are not
// UDF.
func TestNotUDF(t *testing.T) {
	src := source(t, false)
	img := filepath.Join(t.TempDir(), "plain.iso")
	tooltest.Run(t, "genisoimage", "-quiet", "-J", "-joliet-long", "-R", "-o", img, src)
	r, size := openImage(t, img)
	for _, c := range []struct {
		r    io.ReaderAt
		size int64
	}{{r, size}, {&tooltest.SparseReader{Size: 1 << 20}, 1 << 20}, {&tooltest.SparseReader{Size: 100}, 100}} {
		if _, err := Detect(c.r, c.size); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("Detect: %v", err)
		}
	}
}

// TestBlockSizes: empty volumes of blocks of 1024 and 4096 bytes, as
// mkudffs makes them, are found, named and sized as udfinfo and blkid
// say, and their root directories read (udfclient loses files it puts
// into a volume of 4096-byte blocks, so none are put).
func TestBlockSizes(t *testing.T) {
	for _, bs := range []string{"1024", "4096"} {
		img := filepath.Join(t.TempDir(), "udf.img")
		os.WriteFile(img, nil, 0o600)
		os.Truncate(img, 16<<20)
		tooltest.Run(t, "mkudffs", "--media-type=hd", "-b", bs, "--label=Blocks"+bs, img)
		judged(t, img)
		r, size := openImage(t, img)
		f, err := OpenFiles(r, size)
		if err != nil {
			t.Fatal(err)
		}
		if es, err := f.ReadDir(""); err != nil || len(es) != 0 {
			t.Errorf("%s-byte blocks: the root lists %v, %v", bs, es, err)
		}
	}
}

// bridge makes a genisoimage bridge disc of source's tree and returns
// its bytes.
func bridge(t testing.TB, src string) []byte {
	t.Helper()
	img := filepath.Join(t.TempDir(), "bridge.iso")
	tooltest.Run(t, "genisoimage", "-quiet", "-udf", "-J", "-joliet-long", "-R", "-o", img, src)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openBytes(b []byte) (*Files, error) { return OpenFiles(bytes.NewReader(b), int64(len(b))) }

// retag sets the CRC and checksum of the descriptor at byte at of b
// after an edit, so that only the edit is damage.
func retag(b []byte, at int64) {
	d := b[at:]
	n := le.Uint16(d[10:])
	le.PutUint16(d[8:], crc16(d[16:16+int(n)]))
	var sum byte
	for i := 0; i < 16; i++ {
		if i != 4 {
			sum += d[i]
		}
	}
	d[4] = sum
}

// fidAt is the byte of the volume where the File Identifier Descriptor
// of name in the root directory starts.
func fidAt(t *testing.T, f *Files, name string) int64 {
	t.Helper()
	b, err := f.contents(f.root.node, maxDirBytes, "the root")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := f.v.data(f.root.node)
	for pos := 0; pos+38 <= len(b); {
		lfi, liu := int(b[pos+19]), int(le.Uint16(b[pos+36:]))
		if n, _ := dchars(b[pos+38+liu : pos+38+liu+lfi]); n == name {
			return d.phys(int64(pos))
		}
		pos += (38 + liu + lfi + 3) &^ 3
	}
	t.Fatalf("no %s in the root", name)
	return 0
}

// TestHostile: damage gives a clear error naming what and where, never a
// panic or a loop.
func TestHostile(t *testing.T) {
	src := source(t, false)
	orig := bridge(t, src)
	f, err := openBytes(orig)
	if err != nil {
		t.Fatal(err)
	}
	big, _ := f.Stat("d1/big.bin")
	bigAt := big.node.at
	rootAt := f.root.node.at

	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{100, 32768 + 100, 256*2048 + 100, int(bigAt) + 10, len(orig) / 2} {
			b := orig[:n]
			f, err := openBytes(b)
			tooltest.FuzzFiles(t, vfsOf(f), err)
			Detect(bytes.NewReader(b), int64(len(b)))
		}
		// The volume cut inside its partition: named at open.
		if _, err := openBytes(orig[:bigAt+2048]); err == nil || !strings.Contains(err.Error(), "runs past the volume's") {
			t.Errorf("a volume cut short: %v", err)
		}
	})
	t.Run("reserve", func(t *testing.T) {
		// The main sequence's Logical Volume Descriptor damaged: the
		// reserve sequence is read; both damaged: an error naming the
		// main one's damage.
		lvdIn := func(b []byte, extent int) int64 {
			loc := int64(le.Uint32(b[256*2048+extent+4:]))
			for i := loc; i < loc+16; i++ {
				if le.Uint16(b[i*2048:]) == tagLVD {
					return i * 2048
				}
			}
			t.Fatalf("no LVD in the sequence at block %d", loc)
			return 0
		}
		b := bytes.Clone(orig)
		main := lvdIn(b, 16)
		b[main+4]++
		g, err := openBytes(b)
		if err != nil {
			t.Fatalf("with the reserve sequence: %v", err)
		}
		same(t, g, src, func(string, File, os.FileInfo) {})
		b[lvdIn(b, 24)+4]++
		if _, err := openBytes(b); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", main)) || !strings.Contains(err.Error(), "reserve") {
			t.Errorf("both sequences damaged: %v", err)
		}
	})
	t.Run("anchor", func(t *testing.T) {
		// No anchor at sector 256: the one at N-1 is read.
		b := bytes.Clone(orig)
		clear(b[256*2048 : 257*2048])
		g, err := openBytes(b)
		if err != nil {
			t.Fatalf("with the anchor at N-1: %v", err)
		}
		same(t, g, src, func(string, File, os.FileInfo) {})
		clear(b[len(b)-2048:])
		if _, err := openBytes(b); err == nil || !strings.Contains(err.Error(), "no Anchor Volume Descriptor Pointer") {
			t.Errorf("no anchor: %v", err)
		}
	})
	t.Run("checksum", func(t *testing.T) {
		b := bytes.Clone(orig)
		b[rootAt+4]++
		_, err := openBytes(b)
		if err == nil || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", rootAt)) {
			t.Errorf("a root entry with a bad checksum: %v", err)
		}
		b = bytes.Clone(orig)
		b[bigAt+4]++
		f, err := openBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		es, err := f.ReadDir("d1")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range es {
			if e.Name == "big.bin" {
				found = e.Err != nil && strings.Contains(e.Err.Error(), fmt.Sprintf("at byte %d", bigAt))
			}
		}
		if !found {
			t.Errorf("a damaged entry in d1 is not named: %+v", es)
		}
	})
	t.Run("crc", func(t *testing.T) {
		b := bytes.Clone(orig)
		b[bigAt+60]++ // its size
		f, _ := openBytes(b)
		if _, err := f.Stat("d1/big.bin"); err == nil || !strings.Contains(err.Error(), "CRC") {
			t.Errorf("a File Entry with a bad CRC: %v", err)
		}
	})
	t.Run("loop", func(t *testing.T) {
		// a.txt's identifier made to point at the root directory.
		b := bytes.Clone(orig)
		at := fidAt(t, f, "a.txt")
		le.PutUint32(b[at+20+4:], f.root.key.lbn)
		retag(b, at)
		g, err := openBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		if e, err := g.Stat("a.txt/a.txt/a.txt/d1/big.bin"); err != nil || e.Size != 300000 {
			t.Errorf("through the loop: %+v, %v", e, err)
		}
		tooltest.FuzzFiles(t, vfsOf(g), nil)
	})
	t.Run("huge", func(t *testing.T) {
		b := bytes.Clone(orig)
		le.PutUint64(b[bigAt+56:], 1<<62)
		retag(b, bigAt)
		g, _ := openBytes(b)
		if _, err := g.Open("d1/big.bin"); err == nil || !strings.Contains(err.Error(), "allocation descriptors of a file end") {
			t.Errorf("a file of 2^62 bytes: %v", err)
		}
		b = bytes.Clone(orig)
		le.PutUint64(b[rootAt+56:], 1<<40)
		retag(b, rootAt)
		g, _ = openBytes(b)
		if _, err := g.ReadDir(""); err == nil || !strings.Contains(err.Error(), "more than the") {
			t.Errorf("a root directory of 2^40 bytes: %v", err)
		}
	})
}

// metadataVolume turns a udfclient-filled mkudffs volume (UDF 2.01,
// 2048-byte blocks) into one with a metadata partition, as UDF 2.50+
// and Blu-ray discs have it (no tool here makes one): a type 2 map
// "*UDF Metadata Partition" over the physical partition, its metadata
// file and mirror (File Entries of file types 250 and 251 in the
// partition's last two blocks) mapping the partition's other blocks one
// to one, and the File Set Descriptor and the root directory reached
// through it. It returns the volume and the bytes of the two File
// Entries.
func metadataVolume(t *testing.T, src string) (b []byte, fileAt, mirrorAt int64) {
	t.Helper()
	img, _, _ := udfclientFill(t, "0x0201", 2048, src, 64<<20)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	const bs = 2048
	anchor := b[256*bs:]
	vdsLoc := int64(le.Uint32(anchor[20:]))
	var lvdAt, pdAt int64 = -1, -1
	for i := vdsLoc; i < vdsLoc+16; i++ {
		switch le.Uint16(b[i*bs:]) {
		case tagLVD:
			lvdAt = i * bs
		case tagPD:
			pdAt = i * bs
		}
	}
	if lvdAt < 0 || pdAt < 0 {
		t.Fatal("no LVD or PD in the main VDS")
	}
	lvd, pd := b[lvdAt:lvdAt+bs], b[pdAt:pdAt+bs]
	partStart, partLen := int64(le.Uint32(pd[188:])), int64(le.Uint32(pd[192:]))
	if le.Uint32(lvd[268:]) != 1 || le.Uint32(lvd[264:]) != 6 {
		t.Fatalf("mkudffs made %d partition maps", le.Uint32(lvd[268:]))
	}
	partNum := le.Uint16(lvd[440+4:])

	// The metadata file and its mirror: one short extent over the
	// partition's blocks but the last two.
	metaBlocks := partLen - 2
	entry := func(lbn int64, ftype byte) int64 {
		at := (partStart + lbn) * bs
		fe := b[at : at+bs]
		clear(fe)
		le.PutUint16(fe[0:], tagFE)
		le.PutUint16(fe[2:], 3)
		le.PutUint32(fe[12:], uint32(lbn))
		fe[16+11] = ftype
		le.PutUint16(fe[16+4:], 4)  // strategy 4
		le.PutUint16(fe[16+18:], 0) // short allocation descriptors
		le.PutUint32(fe[36:], noID)
		le.PutUint32(fe[40:], noID)
		le.PutUint64(fe[56:], uint64(metaBlocks*bs))
		le.PutUint32(fe[172:], 8)
		le.PutUint32(fe[176:], uint32(metaBlocks*bs))
		le.PutUint32(fe[180:], 0)
		le.PutUint16(fe[10:], 176+8-16)
		retag(b, at)
		return at
	}
	fileAt, mirrorAt = entry(partLen-1, ftMeta), entry(partLen-2, ftMirror)

	m := lvd[446 : 446+64]
	m[0], m[1] = 2, 64
	copy(m[5:], "*UDF Metadata Partition")
	le.PutUint16(m[28:], 0x0250)
	le.PutUint16(m[36:], 1)
	le.PutUint16(m[38:], partNum)
	le.PutUint32(m[40:], uint32(partLen-1))
	le.PutUint32(m[44:], uint32(partLen-2))
	le.PutUint32(m[48:], noID)
	le.PutUint32(m[52:], 32)
	le.PutUint16(m[56:], 1)
	le.PutUint32(lvd[264:], 6+64)
	le.PutUint32(lvd[268:], 2)
	fsd := parseLongAD(lvd[248:])
	le.PutUint16(lvd[248+8:], 1) // the FSD in the metadata partition
	le.PutUint16(lvd[10:], uint16(440+6+64-16))
	retag(b, lvdAt)

	fsdAt := (partStart + int64(fsd.lbn)) * bs
	le.PutUint16(b[fsdAt+400+8:], 1) // the root directory too
	retag(b, fsdAt)
	return b, fileAt, mirrorAt
}

// TestMetadataPartition: a volume whose File Set Descriptor and root
// directory are in a metadata partition reads whole (as 7-Zip reads it), through the
// metadata file or, when it is damaged, its mirror; both damaged is an
// error naming them.
func TestMetadataPartition(t *testing.T) {
	src := source(t, true)
	b, fileAt, mirrorAt := metadataVolume(t, src)
	f, err := openBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.v.parts) != 2 || f.root.key.part != 1 {
		t.Fatalf("%d partitions, the root in partition %d", len(f.v.parts), f.root.key.part)
	}
	same(t, f, src, func(string, File, os.FileInfo) {})
	// 7-Zip and udfinfo read the volume made so: the construction is
	// judged by readers other than the one under test.
	img := filepath.Join(t.TempDir(), "meta.img")
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sameAs7z(t, f, img)
	judged(t, img)

	b[fileAt+4]++ // the metadata file's tag checksum
	if f, err = openBytes(b); err != nil {
		t.Fatalf("with the mirror: %v", err)
	}
	same(t, f, src, func(string, File, os.FileInfo) {})

	b[mirrorAt+4]++
	_, err = openBytes(b)
	if err == nil || !strings.Contains(err.Error(), "metadata partition's file and its mirror") || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", fileAt)) {
		t.Fatalf("both damaged: %v", err)
	}
}
