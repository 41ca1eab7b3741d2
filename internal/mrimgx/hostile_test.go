package mrimgx

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/mrimgx/mrimgxtest"
	"github.com/platter-dev/platter/internal/tooltest"
	"github.com/platter-dev/platter/internal/vdisk"
)

// small writes a small image of a 4 MiB disk of random bytes: an MBR
// track, one partition with 64 KiB of FAT-like reserved sectors and
// every other block of its grid saved.
func small(t testing.TB, compress bool) string {
	t.Helper()
	return smallOf(t, compress, mib, "")
}

// smallOf is small scaled: the disk is 4 units, the partition the
// middle two, its blocks 1/32 of a unit, reserved sectors 1/16.
func smallOf(t testing.TB, compress bool, unit int64, password string) string {
	t.Helper()
	src := tooltest.Garbage(t, 4*unit)
	var used []block.Extent
	for o := unit / 16; o < 2*unit; o += unit / 8 {
		used = append(used, block.Extent{Off: o, Len: 512})
	}
	img := filepath.Join(t.TempDir(), "small.mrimgx")
	spec := mrimgxtest.Spec{Source: src, SectorSize: 512, Format: "mbr", Track0: 1024, Compress: compress,
		EBRs:  []int64{3*unit + 512},
		Parts: []mrimgxtest.Part{{Number: 1, FS: "FAT32", Start: unit, Size: 2 * unit, BlockSize: unit / 32, Reserved: unit / 16, Used: used}}}
	spec.Password, spec.AESBits, spec.Iterations = password, 256, 1
	if _, err := mrimgxtest.Write(img, spec); err != nil {
		t.Fatal(err)
	}
	return img
}

// readAll reads every byte the image holds, and returns the first error.
func readAll(d *Disk) error {
	buf := make([]byte, 64<<10)
	for _, e := range d.Used() {
		for o := e.Off; o < e.End(); o += int64(len(buf)) {
			if _, err := d.ReadAt(buf[:min(int64(len(buf)), e.End()-o)], o); err != nil && err != io.EOF {
				return err
			}
		}
	}
	return nil
}

func TestSmallRoundTrip(t *testing.T) {
	for i, z := range []bool{false, true, false, true} {
		pw := []string{"", "x"}[i/2]
		img := smallOf(t, z, mib, pw)
		d, err := Open(img, Options{Disk: -1, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		if err := readAll(d); err != nil {
			t.Fatal(err)
		}
		// The EBR of $EPT is where it was.
		got := make([]byte, 512)
		d.ReadAt(got, 3*mib+512)
		d.Close()
		if bytes.Count(got, []byte{0}) > 100 {
			t.Errorf("zstd=%v: the EBR reads as zeros", z)
		}
	}
}

// edit changes bytes of a copy of img.
func edit(t *testing.T, img string, fn func(b []byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "hostile.mrimgx")
	if err := os.WriteFile(p, fn(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// findBlock is the offset of a metadata block's header by name.
func findBlock(b []byte, name string) int {
	return bytes.LastIndex(b, []byte(name))
}

func TestHostile(t *testing.T) {
	img := small(t, true)
	le := binary.LittleEndian
	fixMD5 := func(b []byte, h int) {
		n := int(le.Uint32(b[h+8:]))
		sum := md5.Sum(b[h+32 : h+32+n])
		copy(b[h+12:], sum[:])
	}
	cases := map[string]struct {
		fn   func(b []byte) []byte
		want string
	}{
		"footer outside": {func(b []byte) []byte {
			le.PutUint64(b[len(b)-20:], uint64(len(b))+100)
			return b
		}, "footer points at byte"},
		"footer far outside": {func(b []byte) []byte {
			le.PutUint64(b[len(b)-20:], 1<<63)
			return b
		}, "footer points at byte"},
		"no magic": {func(b []byte) []byte { b[len(b)-1] = 'X'; return b }, "not a Macrium Reflect X image"},
		"huge index count": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			nres := int(le.Uint32(b[h+32:]))
			le.PutUint32(b[h+32+4+nres*30:], 0xffffffff)
			fixMD5(b, h)
			return b
		}, "counts 4294967295 data blocks"},
		"huge reserved count": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			le.PutUint32(b[h+32:], 0x7fffffff)
			fixMD5(b, h)
			return b
		}, "reserved sector blocks"},
		"JSON lies about its length": {func(b []byte) []byte {
			h := findBlock(b, "$JSON   ")
			le.PutUint32(b[h+8:], 0xfffffff0)
			return b
		}, "says it is 4294967280 bytes"},
		"TRACK0 lies about its length": {func(b []byte) []byte {
			h := findBlock(b, "$TRACK0 ")
			le.PutUint32(b[h+8:], le.Uint32(b[h+8:])+7)
			return b
		}, "metadata block"},
		"INDEX longer than its entries": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			le.PutUint32(b[h+8:], le.Uint32(b[h+8:])+30)
			return b
		}, "$INDEX counts"},
		"entry outside the file": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			nres := int(le.Uint32(b[h+32:]))
			e := h + 32 + 4 + nres*30 + 4 // the first block, saved
			le.PutUint64(b[e:], uint64(len(b)))
			fixMD5(b, h)
			return b
		}, "lies outside file 0"},
		"entry too long": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			nres := int(le.Uint32(b[h+32:]))
			e := h + 32 + 4 + nres*30 + 4
			le.PutUint32(b[e+24:], 1<<31)
			fixMD5(b, h)
			return b
		}, "stored length"},
		"entry in another file": {func(b []byte) []byte {
			h := findBlock(b, "$INDEX  ")
			nres := int(le.Uint32(b[h+32:]))
			e := h + 32 + 4 + nres*30 + 4
			le.PutUint16(b[e+28:], 3)
			fixMD5(b, h)
			return b
		}, "file 3 of the backup set, which is not beside this one"},
		"metadata loop without end": {func(b []byte) []byte {
			h := findBlock(b, "$JSON   ")
			b[h+28] &^= 1 // not last: the footer follows, read as a header
			return b
		}, "metadata block"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := edit(t, img, c.fn)
			d, err := Open(p, Options{Disk: -1})
			if err == nil {
				err = readAll(d)
				d.Close()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("not one line: %q", err)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	img := small(t, true)
	b, _ := os.ReadFile(img)
	for n := 0; n < len(b); n += max(1, len(b)/97) {
		if _, err := NewReader(bytes.NewReader(b[:n]), int64(n), Options{Disk: -1}); err == nil {
			t.Fatalf("cut to %d bytes: opened", n)
		}
	}
	// Cut and given a footer again: the metadata points past the end.
	for _, n := range []int{len(b) / 2, len(b) - 200} {
		c := append(bytes.Clone(b[:n]), b[len(b)-20:]...)
		if _, err := NewReader(bytes.NewReader(c), int64(len(c)), Options{Disk: -1}); err == nil {
			t.Fatalf("cut to %d bytes with its footer: opened", n)
		}
	}
}

func TestUnsupported(t *testing.T) {
	img := small(t, false)
	for name, fn := range map[string]func(doc map[string]any){
		"lz4": func(doc map[string]any) {
			mrimgxtest.Section(doc, "_compression")["compression_level"] = "high"
			mrimgxtest.Section(doc, "_compression")["compression_method"] = "lz4"
		},
		"file+folder": func(doc map[string]any) { mrimgxtest.Section(doc, "_header")["backup_format"] = "file_and_folder" },
	} {
		t.Run(name, func(t *testing.T) {
			p := edit(t, img, func(b []byte) []byte { return b })
			if err := mrimgxtest.RewriteJSON(p, fn); err != nil {
				t.Fatal(err)
			}
			_, err := Open(p, Options{Disk: -1})
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "not supported yet") {
				t.Fatalf("got %v, want not supported yet", err)
			}
		})
	}
}

// TestHostileKey asks for more PBKDF2 work than any image needs.
func TestHostileKey(t *testing.T) {
	p := edit(t, small(t, false), func(b []byte) []byte { return b })
	if err := mrimgxtest.RewriteJSON(p, func(doc map[string]any) {
		doc["_encryption"] = map[string]any{"enable": true, "aes_type": "aes-256", "key_iterations": 2000000000, "hmac": strings.Repeat("ab", 32)}
	}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(p, Options{Disk: -1, Password: "x"})
	if err == nil || !strings.Contains(err.Error(), "PBKDF2 iterations") {
		t.Fatalf("got %v", err)
	}
}

// TestMissing opens one file of a set without the rest.
func TestMissing(t *testing.T) {
	img := small(t, false)
	for name, fn := range map[string]func(doc map[string]any){
		"split part alone": func(doc map[string]any) { mrimgxtest.Section(doc, "_header")["split_file"] = true },
		"delta alone":      func(doc map[string]any) { mrimgxtest.Section(doc, "_header")["delta_index"] = true },
	} {
		t.Run(name, func(t *testing.T) {
			p := edit(t, img, func(b []byte) []byte { return b })
			if err := mrimgxtest.RewriteJSON(p, fn); err != nil {
				t.Fatal(err)
			}
			_, err := Open(p, Options{Disk: -1})
			if !errors.Is(err, ErrMissing) {
				t.Fatalf("got %v, want a missing file of the set", err)
			}
		})
	}
}

func FuzzMrimgx(f *testing.F) {
	for _, z := range []bool{false, true} {
		for _, pw := range []string{"", "x"} {
			b, err := os.ReadFile(smallOf(f, z, 16<<10, pw))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := NewReader(bytes.NewReader(b), int64(len(b)), Options{Disk: -1, Password: "x"})
		if err != nil {
			return
		}
		defer d.Close()
		buf := make([]byte, 64<<10)
		var read int64
		for _, e := range d.Used() {
			for o := e.Off; o < e.End() && read < 16<<20; o += int64(len(buf)) {
				n := min(int64(len(buf)), e.End()-o)
				d.ReadAt(buf[:n], o)
				read += n
			}
		}
		d.ReadAt(buf, d.Size()-100)
	})
}

// A Disk is what a converter takes (vdisk.Source).
var _ vdisk.Source = (*Disk)(nil)

// TestParallel reads the disk from many goroutines at once (go test
// -race) and gets what one reader gets.
func TestParallel(t *testing.T) {
	d, err := Open(small(t, true), Options{Disk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := make([]byte, d.Size())
	if _, err := d.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			b := make([]byte, 7777)
			for off := int64(g * 1000); off < d.Size(); off += 7777 * 3 {
				n, err := d.ReadAt(b, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(b[:n], want[off:off+int64(n)]) {
					errs <- fmt.Errorf("bytes at %d differ", off)
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
