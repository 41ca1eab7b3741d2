package ntfs

import (
	"bytes"
	"encoding/binary"
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
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// smallVolume makes a 2 MiB NTFS (512-byte clusters) through mkntfs and
// ntfs-3g: a directory of files files (an index allocation from 40 on),
// a sparse file of 600 runs (its $DATA in an extension record behind an
// $ATTRIBUTE_LIST), a compressed file, a DOS name beside a Win32 one, a
// hard link, an Interix symlink and FIFO, and a relative reparse-point
// symlink. It returns the image's path.
func smallVolume(t testing.TB, files int) string {
	img := filepath.Join(t.TempDir(), "ntfs.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 2<<20)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", "-c", "512", img)
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", "-o", "compression", img, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("fusermount", "-u", mnt).Run()
		}
	}()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	at := func(p string) string { return filepath.Join(mnt, p) }
	must(os.MkdirAll(at("many"), 0o755))
	for i := 0; i < files; i++ {
		must(os.WriteFile(at(fmt.Sprintf("many/entry number %03d.txt", i)), []byte(fmt.Sprint(i)), 0o644))
	}
	f, err := os.Create(at("sparse.bin"))
	must(err)
	rng := rand.New(rand.NewSource(1))
	b := make([]byte, 512)
	for i := int64(0); i < 300; i++ {
		rng.Read(b)
		_, err := f.WriteAt(b, i*32*512)
		must(err)
	}
	f.Close()
	must(os.Mkdir(at("packed"), 0o755))
	tooltest.Run(t, "setfattr", "-n", "system.ntfs_attrib_be", "-v", "0x00000810", at("packed"))
	var text bytes.Buffer
	for i := 0; text.Len() < 100<<10; i++ {
		fmt.Fprintf(&text, "%d ", i%97)
	}
	must(os.WriteFile(at("packed/text.txt"), text.Bytes(), 0o644))
	must(os.WriteFile(at("A long name.txt"), []byte("long\n"), 0o644))
	tooltest.Run(t, "setfattr", "-n", "system.ntfs_dos_name", "-v", "ALONGN.TXT", at("A long name.txt"))
	must(os.Link(at("A long name.txt"), at("many/hard link.txt")))
	must(os.Symlink("many/entry number 007.txt", at("interix")))
	tooltest.Run(t, "mkfifo", at("fifo"))
	must(os.WriteFile(at("many/reparse"), nil, 0o644))
	tooltest.Run(t, "setfattr", "-n", "system.ntfs_reparse_data", "-v", fmt.Sprintf("0x%x", reparseSymlink(`entry number 001.txt`)), at("many/reparse"))
	tooltest.Run(t, "fusermount", "-u", mnt)
	mounted = false
	return img
}

// reparseSymlink is a relative symlink reparse point's data.
func reparseSymlink(target string) []byte {
	var name []byte
	for _, r := range target {
		name = binary.LittleEndian.AppendUint16(name, uint16(r))
	}
	le := binary.LittleEndian
	body := le.AppendUint16(nil, 0)
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint16(body, uint16(len(name)))
	body = le.AppendUint32(body, 1) // relative
	body = append(append(body, name...), name...)
	b := le.AppendUint32(nil, 0xa000000c) // IO_REPARSE_TAG_SYMLINK
	b = le.AppendUint16(b, uint16(len(body)))
	b = le.AppendUint16(b, 0)
	return append(b, body...)
}

// ntfslsDirs lists img with ntfsls -R: each directory's names in
// ntfsls's order.
func ntfslsDirs(t *testing.T, img string) map[string][]string {
	out, err := exec.Command("ntfsls", "-R", img).Output()
	if err != nil {
		t.Fatalf("ntfsls -R: %v", err)
	}
	m := map[string][]string{}
	dir := ""
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "/") && strings.HasSuffix(l, ":"):
			dir = strings.Trim(strings.TrimSuffix(l, ":"), "/")
			m[dir] = []string{}
		case l == "" || l == "." || l == "..":
		default:
			m[dir] = append(m[dir], l)
		}
	}
	return m
}

// openImage opens img's NTFS as ls, extract and mount do, through the
// descriptor (fsread's checks aside: they are tested in fsread).
func openImage(t *testing.T, img string) vfs.Files {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fsys, err := FS.OpenFiles(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// Every directory lists as ntfsls lists it, in its order, and every
// file, link and FIFO is what ntfs-3g shows: the Win32 name and never
// the DOS name beside it, each hard link by its own name, the data of a
// file with an attribute list whole.
func TestReader(t *testing.T) {
	img := smallVolume(t, 150)
	if info := tooltest.Run(t, "ntfsinfo", "-F", "/sparse.bin", img); !strings.Contains(info, "$ATTRIBUTE_LIST") {
		t.Fatalf("sparse.bin has no attribute list:\n%s", info)
	}
	if info := tooltest.Run(t, "ntfsinfo", "-F", "/many", img); !strings.Contains(info, "$INDEX_ALLOCATION") {
		t.Fatalf("many has no index allocation:\n%s", info)
	}
	fsys := openImage(t, img)
	dirs := ntfslsDirs(t, img) // before the mount: ntfsls refuses a mounted volume
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", "-o", "ro", img, mnt)
	defer exec.Command("fusermount", "-u", mnt).Run()

	seen := map[iofs.FileMode]int{}
	for dir, want := range dirs {
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			t.Fatalf("/%s: %v", dir, err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name)
			p := path.Join(dir, e.Name)
			fi, err := os.Lstat(filepath.Join(mnt, p))
			if err != nil {
				t.Errorf("/%s: ntfs-3g: %v", p, err)
				continue
			}
			seen[e.Mode.Type()]++
			if e.Mode.Type() != fi.Mode().Type() {
				t.Errorf("/%s: type %v, ntfs-3g says %v", p, e.Mode.Type(), fi.Mode().Type())
			}
			switch {
			case e.Mode&iofs.ModeSymlink != 0:
				if l, _ := os.Readlink(filepath.Join(mnt, p)); l != e.Target {
					t.Errorf("/%s -> %s, ntfs-3g says %s", p, e.Target, l)
				}
			case e.Mode.IsRegular() && fi.Mode().IsRegular(): // never open a FIFO
				want, _ := os.ReadFile(filepath.Join(mnt, p))
				r, err := fsys.Open(p)
				if err != nil {
					t.Errorf("open /%s: %v", p, err)
					continue
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(b, want) || e.Size != int64(len(want)) {
					t.Errorf("/%s: %d bytes (size %d), ntfs-3g reads %d (%v)", p, len(b), e.Size, len(want), err)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("/%s lists %q, ntfsls %q", dir, got, want)
		}
	}
	if seen[0] < 150 || seen[iofs.ModeSymlink] != 2 || seen[iofs.ModeNamedPipe] != 1 || seen[iofs.ModeDir] != 2 {
		t.Errorf("compared %v entries (by type): not the whole volume", seen)
	}
	if _, err := fsys.Stat("many/ENTRY NUMBER 003.TXT"); err != nil {
		t.Errorf("a name in another case: %v", err)
	}
	if _, err := fsys.Stat("ALONGN.TXT"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("the DOS name is not listed, so not found: %v", err)
	}
	if _, err := fsys.ReadDir("sparse.bin"); err == nil {
		t.Errorf("a file listed as a directory")
	}
}

// recordOffset returns the byte offset of MFT record num in the NTFS b,
// from its boot sector (the MFT's first extent holds the low records).
func recordOffset(b []byte, num int64) int64 {
	le := binary.LittleEndian
	cluster := int64(le.Uint16(b[0x0b:])) * int64(b[0x0d])
	size := int64(b[0x40]) * cluster // in clusters, or 2^-n bytes
	if cpr := int8(b[0x40]); cpr < 0 {
		size = 1 << uint(-cpr)
	}
	return int64(le.Uint64(b[0x30:]))*cluster + num*size
}

var dumpingInode = regexp.MustCompile(`Dumping Inode (\d+) `)

// Damage is an error naming the MFT record (and, for an index, the
// block), never a panic; the rest of the volume still reads. A damaged
// index block loses only its own entries: the directory lists the rest
// and ends with a nameless entry whose Err says what was lost.
func TestReaderDamage(t *testing.T) {
	img := smallVolume(t, 150)
	m := dumpingInode.FindStringSubmatch(tooltest.Run(t, "ntfsinfo", "-F", "/many", img))
	if m == nil {
		t.Fatal("ntfsinfo does not say which record /many is")
	}
	many, _ := strconv.ParseInt(m[1], 10, 64)
	clean, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name, dir, want string
		damage          func(b []byte)
	}{
		{"root fixup", "", "MFT record 5: record: update sequence mismatch", func(b []byte) {
			b[recordOffset(b, 5)+510] ^= 0xff
		}},
		{"directory not in use", "many", fmt.Sprintf("MFT record %d: is not in use", many), func(b []byte) {
			b[recordOffset(b, many)+0x16] &^= 1
		}},
		{"index block VCN", "many", fmt.Sprintf("MFT record %d: index block", many), func(b []byte) {
			// Every index block of "many" holds its names.
			name := []byte{}
			for _, r := range "entry number 1" {
				name = le.AppendUint16(name, uint16(r))
			}
			for off := 0; off+4096 <= len(b); off += 512 {
				if string(b[off:off+4]) == "INDX" && bytes.Contains(b[off:off+4096], name) {
					le.PutUint64(b[off+0x10:], 12345)
					return
				}
			}
			t.Fatal("no index block of many found")
		}},
		{"key length", "many", fmt.Sprintf("MFT record %d: $INDEX_ROOT: entry at 16: its key of 65520 bytes", many), func(b []byte) {
			// The first entry of its index root: 0x10 into the value.
			rec := b[recordOffset(b, many):]
			for pos := int(le.Uint16(rec[0x14:])); pos < 1024 && le.Uint32(rec[pos:]) != 0xffffffff && le.Uint32(rec[pos+4:]) > 0; pos += int(le.Uint32(rec[pos+4:])) {
				if le.Uint32(rec[pos:]) == 0x90 {
					v := pos + int(le.Uint16(rec[pos+0x14:]))
					first := v + 0x10 + int(le.Uint32(rec[v+0x10:]))
					le.PutUint16(rec[first+10:], 0xfff0) // its key's length
					return
				}
			}
			t.Fatal("no index root")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(clean)
			c.damage(b)
			fsys, err := FS.OpenFiles(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			ents, err := fsys.ReadDir(c.dir)
			if err == nil && len(ents) > 0 && ents[len(ents)-1].Name == "" {
				// A damaged index block: the entries of the others
				// are listed, one nameless entry says what is lost.
				err = ents[len(ents)-1].Err
				var lost *vfs.LostEntriesError
				if !errors.As(err, &lost) || len(ents) < 2 {
					t.Errorf("/%s: %d entries, the nameless one %v: want a LostEntriesError after the other blocks' entries", c.dir, len(ents), err)
				}
			}
			var ce *block.CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("/%s: %v, want an error with %q", c.dir, err, c.want)
			}
			if c.dir != "" {
				if _, err := fsys.ReadDir("packed"); err != nil {
					t.Errorf("the rest of the volume: %v", err)
				}
			}
		})
	}
}
