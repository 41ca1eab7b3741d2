package exfat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func openFiles(t testing.TB, b []byte) *Files {
	t.Helper()
	f, err := OpenFiles(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ourTree reads every entry of f as treeOf reads a mounted tree.
func ourTree(t testing.TB, f *Files) map[string]treeEntry {
	t.Helper()
	m := map[string]treeEntry{}
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := f.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir %q: %v", dir, err)
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name)
			if e.Err != nil {
				t.Errorf("%s: %v", p, e.Err)
				continue
			}
			te := treeEntry{dir: e.Mode.IsDir(), mtime: e.ModTime.Unix()}
			if te.dir {
				walk(p)
			} else {
				r, err := f.Open(p)
				if err != nil {
					t.Fatalf("Open %s: %v", p, err)
				}
				if te.data, err = io.ReadAll(r); err != nil {
					t.Fatalf("read %s: %v", p, err)
				}
				if int64(len(te.data)) != e.Size {
					t.Errorf("%s: %d bytes read, size %d", p, len(te.data), e.Size)
				}
			}
			m[p] = te
		}
	}
	walk("")
	return m
}

// Platter's reader shows what exfat-fuse shows: every name (long,
// Unicode, past the Basic Multilingual Plane), type, size, mtime to the
// second and byte, of files in one piece and of FAT-chained ones, on
// volumes of 512-byte, 4 KiB and 128 KiB clusters; the label and serial
// are blkid's.
func TestFilesMatchFuse(t *testing.T) {
	for _, c := range []struct {
		size, cluster int64
		many          int
	}{{48 << 20, 512, 300}, {96 << 20, 4 << 10, 1500}, {160 << 20, 128 << 10, 200}} {
		t.Run(fmt.Sprint(c.cluster), func(t *testing.T) {
			img := populated(t, c.size, c.cluster, c.many)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			mnt, umount := mount(t, img, true)
			want := treeOf(t, mnt)
			umount()
			f := openFiles(t, b)
			sameTrees(t, want, ourTree(t, f), true)
			if l := tooltest.Blkid(t, img, "LABEL"); f.Label() != l || l != "Platter ✓" {
				t.Errorf("label %q, blkid %q", f.Label(), l)
			}
			if u := tooltest.Blkid(t, img, "UUID"); fmt.Sprintf("%04X-%04X", f.Serial()>>16, f.Serial()&0xffff) != u {
				t.Errorf("serial %08X, blkid %s", f.Serial(), u)
			}
			// Both kinds of file are there.
			kinds := map[bool]int{}
			for _, dir := range []string{"frag", "exact", ""} {
				ents, _ := f.ReadDir(dir)
				for _, e := range ents {
					if !e.Mode.IsDir() && e.Size > c.cluster {
						kinds[e.data.contiguous]++
					}
				}
			}
			if kinds[true] == 0 || kinds[false] < 3 {
				t.Errorf("files in one piece: %d, FAT-chained: %d", kinds[true], kinds[false])
			}
			// Names match as exFAT matches them.
			for _, p := range []string{"CASE/sub/file.txt", "case/SUB2/FILE.TXT", "ünïcödé ✓ 名前.TXT", "ΕΛΛΗΝΙΚΆ ΚΕΊΜΕΝΑ/ωμέγα.txt"} {
				if _, err := f.Stat(p); err != nil {
					t.Errorf("Stat %q: %v", p, err)
				}
			}
			if _, err := f.Stat("case/nope"); !errors.Is(err, iofs.ErrNotExist) {
				t.Errorf("Stat of a missing name: %v", err)
			}
			if _, err := f.Open("Deep"); err == nil {
				t.Error("Open of a directory succeeds")
			}
			if _, err := f.ReadDir("big.bin"); err == nil {
				t.Error("ReadDir of a file succeeds")
			}
		})
	}
}

// Reads in parallel, through ReadAt and Seek, give the file's bytes.
func TestFilesParallel(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	b, _ := os.ReadFile(img)
	f := openFiles(t, b)
	mnt, umount := mount(t, img, true)
	want, err := os.ReadFile(mnt + "/frag/interleaved 1.bin")
	umount()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, err := f.Open("frag/INTERLEAVED 1.bin")
			if err != nil {
				t.Error(err)
				return
			}
			ra := r.(io.ReaderAt)
			for off := int64(g * 97); off < int64(len(want)); off += 3001 {
				p := make([]byte, 5000)
				n, err := ra.ReadAt(p, off)
				if err != nil && err != io.EOF || !bytes.Equal(p[:n], want[off:min(off+5000, int64(len(want)))]) {
					t.Errorf("ReadAt %d: %d bytes, %v", off, n, err)
					return
				}
			}
			s := r.(io.Seeker)
			s.Seek(100, io.SeekStart)
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, want[100:]) {
				t.Error("Seek and read differ")
			}
		}(g)
	}
	wg.Wait()
}

// Bytes past a file's ValidDataLength read as zeros, as the kernel and
// Windows read them; exfat-fuse 1.3 reads what the clusters hold there,
// and is the judge of the bytes before it.
func TestValidDataLength(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	b, _ := os.ReadFile(img)
	fe := findSet(t, b, "big.bin")
	binary.LittleEndian.PutUint64(b[fe+entrySize+8:], 5000)
	fixSet(b, fe)
	p := writeFile(t, b)
	tooltest.Run(t, "fsck.exfat", "-n", p)
	mnt, umount := mount(t, p, true)
	fuse, err := os.ReadFile(mnt + "/big.bin")
	umount()
	if err != nil {
		t.Fatal(err)
	}
	want := append(fuse[:5000:5000], make([]byte, len(fuse)-5000)...)
	if bytes.Equal(want, fuse) {
		t.Fatal("the file holds zeros past its valid data length: nothing is tested")
	}
	r, err := openFiles(t, b).Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, want) {
		t.Errorf("read %d bytes differing from the %d wanted", len(got), len(want))
	}
}

// An entry set whose checksum does not match is listed as damaged, named
// by what can be read of its name, and cannot be opened; its siblings
// read. exfat-fuse refuses the entry too.
func TestBadChecksum(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	b, _ := os.ReadFile(img)
	fe := findSet(t, b, "kept.txt")
	b[fe+2*entrySize+4] ^= 0x20 // "kept" -> "kEpt" in its name entry
	f := openFiles(t, b)
	ents, err := f.ReadDir("gone")
	if err != nil {
		t.Fatal(err)
	}
	var ce *block.CorruptError
	if len(ents) != 1 || ents[0].Name != "kEpt.txt" || !errors.As(ents[0].Err, &ce) || !strings.Contains(ents[0].Err.Error(), "checksum") {
		t.Fatalf("gone lists %+v", ents)
	}
	if _, err := f.Open("gone/kept.txt"); !errors.As(err, &ce) {
		t.Errorf("Open of the damaged entry: %v", err)
	}
	if r, err := f.Open("big.bin"); err != nil {
		t.Error(err)
	} else if n, _ := io.Copy(io.Discard, r); n != 40*4096+17 {
		t.Errorf("big.bin: %d bytes", n)
	}
	out, err := runTool(t, "fsck.exfat", "-n", writeFile(t, b))
	if err == nil || !strings.Contains(out, "checksum") {
		t.Errorf("fsck.exfat -n: %v\n%s", err, out)
	}
}

// Damaged entry sets and chains give errors naming the entry or
// cluster, for that file alone.
func TestDamagedFiles(t *testing.T) {
	img := populated(t, 48<<20, 4096, 10)
	orig, _ := os.ReadFile(img)
	g := geometryOf(t, orig)
	le := binary.LittleEndian
	chained := func(b []byte) (fe int64, first uint32) {
		fe = findSet(t, b, "interleaved 0.bin")
		if b[fe+entrySize+1]&flagNoChain != 0 {
			t.Fatal("interleaved 0.bin is in one piece")
		}
		return fe, le.Uint32(b[fe+entrySize+20:])
	}
	fatAt := func(c uint32) int64 { return g.fatOff + 4*int64(c) }
	for _, c := range []struct {
		name, file, want string
		damage           func(b []byte)
	}{
		{"chain loops", "frag/interleaved 0.bin", "loops", func(b []byte) {
			_, first := chained(b)
			next := le.Uint32(b[fatAt(first):])
			le.PutUint32(b[fatAt(next):], first)
		}},
		{"chain leaves the volume", "frag/interleaved 0.bin", "outside", func(b []byte) {
			_, first := chained(b)
			le.PutUint32(b[fatAt(first):], g.clusters+5)
		}},
		{"chain ends early", "frag/interleaved 0.bin", "ends at cluster", func(b []byte) {
			_, first := chained(b)
			le.PutUint32(b[fatAt(first):], fatEnd)
		}},
		{"chain runs into a bad cluster", "frag/interleaved 0.bin", "bad", func(b []byte) {
			_, first := chained(b)
			le.PutUint32(b[fatAt(first):], fatBad)
		}},
		{"contiguous past the end", "big.bin", "run past", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			le.PutUint32(b[fe+entrySize+20:], g.clusters)
			fixSet(b, fe)
		}},
		{"valid length past length", "big.bin", "valid data length", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			le.PutUint64(b[fe+entrySize+8:], 1<<40)
			fixSet(b, fe)
		}},
		{"huge length", "big.bin", "more than the volume", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			le.PutUint64(b[fe+entrySize+24:], 1<<60)
			le.PutUint64(b[fe+entrySize+8:], 1<<60)
			fixSet(b, fe)
		}},
		{"set cut short", "", "cut short", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			b[fe+entrySize] &^= typeInUse // the stream extension deleted
		}},
		{"no stream extension", "big.bin", "no stream", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			b[fe+entrySize] = 0xe0 // a benign vendor extension in its place
			fixSet(b, fe)
		}},
		{"unknown critical entry", "big.bin", "unknown critical", func(b []byte) {
			fe := findSet(t, b, "big.bin")
			b[fe+1]++ // one more secondary entry: the one after it
			b[fe+3*entrySize] = 0xc5
			fixSet(b, fe)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			c.damage(b)
			f := openFiles(t, b)
			var ce *block.CorruptError
			_, err := f.Stat(c.file)
			if c.file == "" {
				// No name to find it by: it is listed as damaged.
				ents, _ := f.ReadDir("")
				for _, e := range ents {
					if e.Err != nil {
						err = e.Err
					}
				}
			} else if err == nil {
				var r io.ReadCloser
				if r, err = f.Open(c.file); err == nil {
					_, err = io.Copy(io.Discard, r)
				}
			}
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want a CorruptError saying %q", c.file, err, c.want)
			}
			if _, err := f.Stat("Deep/level 01/level 02"); err != nil {
				t.Error(err)
			}
			if r, err := f.Open("exact/x2.bin"); err != nil {
				t.Error(err)
			} else if n, err := io.Copy(io.Discard, r); n != 2*4096 || err != nil {
				t.Errorf("exact/x2.bin: %d bytes, %v", n, err)
			}
		})
	}
}

func TestTimestamp(t *testing.T) {
	ts := uint32(2024-1980)<<25 | 2<<21 | 29<<16 | 12<<11 | 34<<5 | 57/2
	for _, c := range []struct {
		inc, off byte
		want     time.Time
	}{
		{0, 0, time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)},
		{199, 0, time.Date(2024, 2, 29, 12, 34, 57, 990_000_000, time.UTC)},
		{100, 0x80 | 8, time.Date(2024, 2, 29, 10, 34, 57, 0, time.UTC)},  // UTC+2
		{0, 0x80 | 0x7c, time.Date(2024, 2, 29, 13, 34, 56, 0, time.UTC)}, // UTC-1
		{0, 8, time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)},           // no offset given
		{250, 0, time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)},         // an impossible increment
	} {
		if got := timestamp(ts, c.inc, c.off); !got.Equal(c.want) {
			t.Errorf("increment %d, offset %#x: %v, want %v", c.inc, c.off, got, c.want)
		}
	}
}
