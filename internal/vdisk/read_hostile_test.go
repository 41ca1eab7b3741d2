package vdisk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// Damaged, truncated and hostile VM disk files: each must give a clear
// error (naming what and where), never a panic, never an allocation of
// what a header claims, and never a read of a file it must not read.

var be, le = binary.BigEndian, binary.LittleEndian

// hostileFixtures converts the raw disk into the formats the hostile
// tests start from, in dir.
func hostileFixtures(t *testing.T, dir string) map[string]string {
	t.Helper()
	raw, _ := vmRawDisk(t, dir)
	out := map[string]string{}
	for name, args := range map[string][]string{
		"qcow2":     {"-O", "qcow2"},
		"qcow2-4k":  {"-O", "qcow2", "-o", "cluster_size=4096"},
		"qcow2-c":   {"-c", "-O", "qcow2"},
		"vhd":       {"-O", "vpc", "-o", "subformat=dynamic"},
		"vhd-fixed": {"-O", "vpc", "-o", "subformat=fixed"},
		"vhdx":      {"-O", "vhdx", "-o", "block_size=1M"},
		"vmdk":      {"-O", "vmdk", "-o", "subformat=monolithicSparse"},
		"stream":    {"-O", "vmdk", "-o", "subformat=streamOptimized"},
		"flat":      {"-O", "vmdk", "-o", "subformat=monolithicFlat"},
	} {
		p := filepath.Join(dir, name+".img")
		tooltest.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, args...), raw, p)...)
		out[name] = p
	}
	return out
}

// readAll opens path and reads all of its disk; it returns the disk's
// bytes or the first error, and fails the test on a panic (which the
// test binary would report anyway) or a disk of impossible size.
func readAll(t testing.TB, path string) ([]byte, error) {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if d.Size() > 1<<30 {
		return nil, fmt.Errorf("a %d-byte disk", d.Size())
	}
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// TestTruncated cuts every format at several points: each cut file must
// give an error (at open or when read), or the very disk the whole file
// holds; a cut through the middle of the data must give an error.
func TestTruncated(t *testing.T) {
	dir := t.TempDir()
	files := hostileFixtures(t, dir)
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			victim := path
			if name == "flat" {
				victim = strings.TrimSuffix(path, ".img") + "-flat.img"
			}
			whole, err := readAll(t, path)
			if err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(victim)
			if err != nil {
				t.Fatal(err)
			}
			size := int64(len(orig))
			defer os.WriteFile(victim, orig, 0o644)
			for _, cut := range []int64{0, 1, 100, 511, 4096, 65536 + 7, 1<<20 + 3, size / 3, size / 2, size - 513, size - 1} {
				if cut < 0 || cut >= size {
					continue
				}
				if err := os.WriteFile(victim, orig[:cut], 0o644); err != nil {
					t.Fatal(err)
				}
				got, err := readAll(t, path)
				switch {
				case err != nil:
					if cut == size/2 || cut == size/3 {
						t.Logf("cut at %d: %v", cut, err)
					}
					if strings.Contains(err.Error(), "internal error") {
						t.Errorf("cut at %d: %v", cut, err)
					}
				case !bytes.Equal(got, whole):
					t.Errorf("cut at byte %d of %d: opens and reads a different disk without an error", cut, size)
				case cut == size/2:
					t.Errorf("cut at byte %d of %d: reads the whole disk", cut, size)
				}
			}
		})
	}
}

// edit is a change to a file's bytes, and what the error must say.
type edit struct {
	name string
	do   func(t *testing.T, b []byte) []byte
	want string
	// atRead: the file opens, and reading the disk gives the error.
	atRead bool
}

// TestDamaged flips header fields and table entries of each format and
// checks the error each gives.
func TestDamaged(t *testing.T) {
	dir := t.TempDir()
	files := hostileFixtures(t, dir)
	set := func(off int, v any) func(t *testing.T, b []byte) []byte {
		return func(t *testing.T, b []byte) []byte {
			switch v := v.(type) {
			case uint8:
				b[off] = v
			case uint16:
				be.PutUint16(b[off:], v)
			case uint32:
				be.PutUint32(b[off:], v)
			case uint64:
				be.PutUint64(b[off:], v)
			}
			return b
		}
	}
	lset := func(off int, v any) func(t *testing.T, b []byte) []byte {
		return func(t *testing.T, b []byte) []byte {
			switch v := v.(type) {
			case uint16:
				le.PutUint16(b[off:], v)
			case uint32:
				le.PutUint32(b[off:], v)
			case uint64:
				le.PutUint64(b[off:], v)
			}
			return b
		}
	}
	// qcow2: the L1 table and the first L2 table and data cluster.
	ql1 := func(b []byte) int { return int(be.Uint64(b[40:])) }
	ql2 := func(b []byte) int { return int(be.Uint64(b[ql1(b):]) & qcowOffsetMask) }
	firstData := func(b []byte) int {
		l2 := ql2(b)
		for i := l2; ; i += 8 {
			if e := be.Uint64(b[i:]); e != 0 {
				return i
			}
		}
	}
	// VHD: the dynamic header and the BAT.
	vdyn := func(b []byte) int { return int(be.Uint64(b[16:])) }
	vbat := func(b []byte) int { return int(be.Uint64(b[vdyn(b)+16:])) }
	// VHDX: the metadata region and BAT, from the region table.
	region := func(b []byte, guid [16]byte) int {
		for i := range int(le.Uint32(b[192<<10+8:])) {
			e := b[192<<10+16+i*32:]
			if [16]byte(e[:16]) == guid {
				return int(le.Uint64(e[16:]))
			}
		}
		t.Fatal("no such region")
		return 0
	}
	metaItem := func(b []byte, guid [16]byte) int {
		m := region(b, vhdxRegionMetadata)
		for i := range int(le.Uint16(b[m+10:])) {
			e := b[m+32+i*32:]
			if [16]byte(e[:16]) == guid {
				return m + int(le.Uint32(e[16:]))
			}
		}
		t.Fatal("no such metadata item")
		return 0
	}
	// VMDK: the grain directory and the first grain table.
	gd := func(b []byte) int { return int(le.Uint64(b[56:])) * 512 }
	gt := func(b []byte) int { return int(le.Uint32(b[gd(b):])) * 512 }

	cases := map[string][]edit{
		"qcow2": {
			{"version 4", set(4, uint32(4)), "version 4", false},
			{"cluster bits 30", set(20, uint32(30)), "cluster bits 30", false},
			{"size 2^62", set(24, uint64(1<<62)), "impossible", false},
			{"L1 of 2^32-1 entries", func(t *testing.T, b []byte) []byte {
				be.PutUint64(b[24:], 1<<61)
				be.PutUint32(b[36:], 0xffffffff)
				return b
			}, "larger than qemu allows", false},
			{"L1 too small", set(36, uint32(0)), "maps less than", false},
			{"L1 past the end", set(40, uint64(1<<40)), "past the end", false},
			{"L1 misaligned", func(t *testing.T, b []byte) []byte { be.PutUint64(b[40:], be.Uint64(b[40:])+8); return b }, "misaligned", false},
			{"encrypted", set(32, uint32(2)), "encrypted", false},
			{"external data file", set(79, uint8(4)), "external data file", false},
			{"marked corrupt", set(79, uint8(2)), "marked this qcow2 corrupt", false},
			{"unknown feature", set(78, uint8(4)), "incompatible feature bits 0x400", false},
			{"header length", set(100, uint32(50)), "header length 50", false},
			{"header extension too long", func(t *testing.T, b []byte) []byte {
				h := int(be.Uint32(b[100:]))
				be.PutUint32(b[h:], 0x12345678)
				be.PutUint32(b[h+4:], 1<<30)
				return b
			}, "claims 1073741824 bytes", false},
			{"backing name past the first cluster", func(t *testing.T, b []byte) []byte {
				be.PutUint64(b[8:], 65000)
				be.PutUint32(b[16:], 1000)
				return b
			}, "backing file name", false},
			{"L2 table past the end", func(t *testing.T, b []byte) []byte {
				be.PutUint64(b[ql1(b):], 1<<40)
				return b
			}, "past the end", false},
			{"data cluster past the end", func(t *testing.T, b []byte) []byte {
				be.PutUint64(b[firstData(b):], 1<<40)
				return b
			}, "lies past the end", false},
			{"data cluster misaligned", func(t *testing.T, b []byte) []byte {
				be.PutUint64(b[firstData(b):], be.Uint64(b[firstData(b):])+512)
				return b
			}, "not aligned", false},
			{"subclusters in a plain qcow2", set(79, uint8(16)), "qcow2 L2 entry", false},
		},
		"qcow2-4k": {
			{"one L2 table twice", func(t *testing.T, b []byte) []byte {
				l1 := ql1(b)
				copy(b[l1+8:l1+16], b[l1:l1+8])
				return b
			}, "named by two L1 entries", false},
		},
		"qcow2-c": {
			{"compressed cluster garbage", func(t *testing.T, b []byte) []byte {
				e := be.Uint64(b[firstData(b):])
				off := int(e & (1<<54 - 1))
				for i := range 64 {
					b[off+i] = 0xff
				}
				return b
			}, "does not decompress to 65536 bytes", true},
		},
		"vhd": {
			{"footer checksum", func(t *testing.T, b []byte) []byte { b[len(b)-512+48]++; return b }, "checksum", false},
			{"differencing", func(t *testing.T, b []byte) []byte {
				return vhdFooters(b, func(f []byte) { be.PutUint32(f[60:], 4) })
			}, "differencing VHD", false},
			{"disk type 9", func(t *testing.T, b []byte) []byte {
				return vhdFooters(b, func(f []byte) { be.PutUint32(f[60:], 9) })
			}, "disk type 9", false},
			{"copies differ", func(t *testing.T, b []byte) []byte { b[100]++; return b }, "differs from the footer", false},
			{"dynamic header past the end", func(t *testing.T, b []byte) []byte {
				return vhdFooters(b, func(f []byte) { be.PutUint64(f[16:], 1<<40) })
			}, "dynamic header at byte", false},
			{"block size 3000", func(t *testing.T, b []byte) []byte {
				return vhdDyn(b, func(h []byte) { be.PutUint32(h[32:], 3000) })
			}, "block size 3000", false},
			{"table too small", func(t *testing.T, b []byte) []byte {
				return vhdDyn(b, func(h []byte) { be.PutUint32(h[28:], 1) })
			}, "map less than", false},
			{"BAT past the end", func(t *testing.T, b []byte) []byte {
				return vhdDyn(b, func(h []byte) { be.PutUint64(h[16:], 1<<40) })
			}, "past the end", false},
			{"block past the end", func(t *testing.T, b []byte) []byte {
				be.PutUint32(b[vbat(b):], 1<<31)
				return b
			}, "lies past the end", false},
			{"one block twice", func(t *testing.T, b []byte) []byte {
				copy(b[vbat(b)+4:vbat(b)+8], b[vbat(b):vbat(b)+4])
				return b
			}, "overlaps", false},
		},
		"vhdx": {
			{"both headers damaged", func(t *testing.T, b []byte) []byte {
				b[64<<10+100]++
				b[128<<10+100]++
				return b
			}, "neither copy", false},
			{"log to replay", func(t *testing.T, b []byte) []byte {
				for _, h := range []int{64 << 10, 128 << 10} {
					b[h+48] = 1
				}
				return vhdxFix(b)
			}, "not closed cleanly", false},
			{"region table of 5000 entries", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[192<<10+8:], 5000)
				copy(b[256<<10:], b[192<<10:192<<10+64<<10])
				return vhdxFix(b)
			}, "5000 entries", false},
			{"BAT region past the end", func(t *testing.T, b []byte) []byte {
				for _, rt := range []int{192 << 10, 256 << 10} {
					for i := range int(le.Uint32(b[rt+8:])) {
						e := b[rt+16+i*32:]
						if [16]byte(e[:16]) == vhdxRegionBAT {
							le.PutUint64(e[16:], 1<<40)
						}
					}
				}
				return vhdxFix(b)
			}, "past the end", false},
			{"differencing", func(t *testing.T, b []byte) []byte {
				b[metaItem(b, vhdxFileParameters)+4] |= 2
				return b
			}, "differencing VHDX", false},
			{"block size 3 MiB", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[metaItem(b, vhdxFileParameters):], 3<<20)
				return b
			}, "block size 3145728", false},
			{"sector size 1000", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[metaItem(b, vhdxLogicalSector):], 1000)
				return b
			}, "1000 bytes (512 or 4096)", false},
			{"disk of 2^62 bytes", func(t *testing.T, b []byte) []byte {
				le.PutUint64(b[metaItem(b, vhdxVirtualSize):], 1<<62)
				return b
			}, "at most 64 TiB", false},
			{"disk larger than the BAT maps", func(t *testing.T, b []byte) []byte {
				le.PutUint64(b[metaItem(b, vhdxVirtualSize):], 60<<40)
				return b
			}, "fewer than the", false},
			{"partially present block", func(t *testing.T, b []byte) []byte {
				b[region(b, vhdxRegionBAT)] = 7
				return b
			}, "partially present", false},
			{"block past the end", func(t *testing.T, b []byte) []byte {
				le.PutUint64(b[region(b, vhdxRegionBAT):], 1<<40|6)
				return b
			}, "outside the file", false},
			{"unknown required metadata", func(t *testing.T, b []byte) []byte {
				m := region(b, vhdxRegionMetadata)
				e := b[m+32:] // the first item: make it unknown and required
				e[0] ^= 0xff
				le.PutUint32(e[24:], le.Uint32(e[24:])|4)
				return b
			}, "required metadata", false},
		},
		"vmdk": {
			{"version 9", lset(4, uint32(9)), "version 9", false},
			{"grain of 3 sectors", lset(20, uint64(3)), "grain of 3 sectors", false},
			{"no grain table entries", lset(44, uint32(0)), "0 entries per grain table", false},
			{"capacity 2^60", lset(12, uint64(1<<60)), "impossible", false},
			{"grain directory past the end", lset(56, uint64(1<<40)), "grain directory", false},
			{"copied as text", func(t *testing.T, b []byte) []byte { b[75] = '\n'; return b }, "copied as text", false},
			{"grain table twice", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[gd(b)+4:], le.Uint32(b[gd(b):]))
				return b
			}, "named by two grain directory entries", false},
			{"grain past the end", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[gt(b):], 1<<30)
				return b
			}, "lies past the end", false},
			{"grain table past the end", func(t *testing.T, b []byte) []byte {
				le.PutUint32(b[gd(b):], 1<<30)
				return b
			}, "VMDK grain table", false},
			{"delta link", func(t *testing.T, b []byte) []byte {
				i := bytes.Index(b, []byte("parentCID=ffffffff"))
				copy(b[i:], "parentCID=12345678")
				return b
			}, "delta link", false},
		},
		"stream": {
			{"grain marker for another sector", func(t *testing.T, b []byte) []byte {
				off := int(le.Uint32(b[gt(b):])) * 512
				le.PutUint64(b[off:], 999999)
				return b
			}, "should be", true},
			{"grain marker of 1 GiB", func(t *testing.T, b []byte) []byte {
				off := int(le.Uint32(b[gt(b):])) * 512
				le.PutUint32(b[off+8:], 1<<30)
				return b
			}, "compressed grain of 1073741824 bytes", true},
			{"grain garbage", func(t *testing.T, b []byte) []byte {
				off := int(le.Uint32(b[gt(b):])) * 512
				for i := 12; i < 80; i++ {
					b[off+i] = 0x55
				}
				return b
			}, "does not inflate", true},
			{"GD_AT_END and no footer", lset(56, uint64(vmdkGDAtEnd)), "no footer", false},
		},
		"flat": {
			{"delta link", descEdit("parentCID=ffffffff", "parentCID=12345678"), "delta link", false},
			{"extent outside the directory", descEdit(`"flat-flat.img"`, `"../flat-flat.img"`), "not a file name inside", false},
			{"absolute extent", descEdit(`"flat-flat.img"`, `"/etc/passwd"`), "not a file name inside", false},
			{"missing extent", descEdit(`"flat-flat.img"`, `"gone.img"`), "no such file", false},
			{"device extent", descEdit(`"flat-flat.img"`, `"zero-link"`), "refused", false},
			{"extent longer than its file", descEdit("RW 98368 FLAT", "RW 98369 FLAT"), "too short", false},
			{"bad size", descEdit("RW 98368 FLAT", "RW 98x68 FLAT"), `size "98x68"`, false},
			{"raw device mapping", descEdit("RW 98368 FLAT", "RW 98368 VMFSRAW"), "VMFSRAW are not read", false},
		},
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero-link")); err != nil {
		t.Fatal(err)
	}
	for name, edits := range cases {
		orig, err := os.ReadFile(files[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range edits {
			t.Run(name+"/"+e.name, func(t *testing.T) {
				p := files[name]
				defer os.WriteFile(p, orig, 0o644)
				b := e.do(t, append([]byte(nil), orig...))
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				d, err := Open(p)
				if err == nil {
					defer d.Close()
					if !e.atRead {
						t.Fatalf("opens (a %s disk of %d bytes); want an error saying %q", d.Format(), d.Size(), e.want)
					}
					buf := make([]byte, d.Size())
					_, err = d.ReadAt(buf, 0)
				}
				if err == nil || !strings.Contains(err.Error(), e.want) {
					t.Fatalf("error %v, want one saying %q", err, e.want)
				}
				if strings.Contains(err.Error(), "internal error") {
					t.Fatalf("error %v", err)
				}
			})
		}
	}
}

// descEdit replaces old by new in a descriptor file, keeping its length.
func descEdit(old, new string) func(t *testing.T, b []byte) []byte {
	return func(t *testing.T, b []byte) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("no %q in the descriptor:\n%s", old, b)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
}

// vhdFooters applies change to both copies of a dynamic VHD's footer
// and fixes their checksums.
func vhdFooters(b []byte, change func(f []byte)) []byte {
	for _, f := range [][]byte{b[:512], b[len(b)-512:]} {
		change(f)
		be.PutUint32(f[64:], vhdChecksum(f, 64))
	}
	return b
}

// vhdDyn applies change to a dynamic VHD's dynamic header and fixes its
// checksum.
func vhdDyn(b []byte, change func(h []byte)) []byte {
	off := be.Uint64(b[16:])
	h := b[off : off+1024]
	change(h)
	be.PutUint32(h[36:], vhdChecksum(h, 36))
	return b
}

// vhdxFix recomputes the CRC-32C of a VHDX's headers and region tables
// (those that carry their signature).
func vhdxFix(b []byte) []byte {
	for _, s := range []struct {
		off, n int
		sig    string
	}{{64 << 10, 4 << 10, "head"}, {128 << 10, 4 << 10, "head"}, {192 << 10, 64 << 10, "regi"}, {256 << 10, 64 << 10, "regi"}} {
		if len(b) < s.off+s.n || string(b[s.off:s.off+4]) != s.sig {
			continue
		}
		h := b[s.off : s.off+s.n]
		le.PutUint32(h[4:], 0)
		le.PutUint32(h[4:], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	}
	return b
}

// vhdFix recomputes the checksums of a VHD's footers and dynamic
// header, where they carry their cookies.
func vhdFix(b []byte) []byte {
	n := len(b)
	if n < 512 {
		return b
	}
	for _, f := range [][]byte{b[:512], b[n-512:]} {
		if string(f[:8]) == vhdCookie {
			be.PutUint32(f[64:], vhdChecksum(f, 64))
		}
	}
	if string(b[n-512:n-504]) == vhdCookie {
		if off := be.Uint64(b[n-512+16:]); off < uint64(n) && uint64(n)-off >= 1024 && string(b[off:off+8]) == vhdDynamicCookie {
			h := b[off : off+1024]
			be.PutUint32(h[36:], vhdChecksum(h, 36))
		}
	}
	return b
}

// TestBackingFiles gives qcow2 files backing files they must not follow:
// devices, pseudo files, directories, loops, chains too deep; and one
// exactly as deep as allowed, which opens.
func TestBackingFiles(t *testing.T) {
	dir := t.TempDir()
	create := func(name, backing, format string) string {
		p := filepath.Join(dir, name)
		args := []string{"create", "-f", "qcow2", "-u", "-b", backing}
		if format != "" {
			args = append(args, "-F", format)
		}
		tooltest.Run(t, "qemu-img", append(args, p, "10M")...)
		return p
	}
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{7}, 10<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/dev/zero", filepath.Join(dir, "zero"))
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	for _, c := range []struct {
		name, backing, format, want string
	}{
		{"/dev/zero", "/dev/zero", "raw", "refused"},
		{"a link to /dev/zero", "zero", "raw", "refused"},
		{"/proc/self/environ", "/proc/self/environ", "raw", "is in /proc/"},
		{"/sys file", "/sys/kernel/notes", "raw", "is in /sys/"},
		{"a directory", "adir", "raw", "not a regular file"},
		{"missing", "nothing.raw", "raw", "no such file"},
		{"vmdk backing", "base.raw", "vmdk", "only qcow2 and raw backing files are read"},
		{"itself", "self.qcow2", "qcow2", "the chain loops"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := create(strings.ReplaceAll(c.name, "/", "_")+".qcow2", c.backing, c.format)
			if c.name == "itself" {
				os.Rename(p, filepath.Join(dir, "self.qcow2"))
				p = filepath.Join(dir, "self.qcow2")
			}
			_, err := Open(p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
		})
	}
	t.Run("two files in a loop", func(t *testing.T) {
		create("a.qcow2", "b.qcow2", "qcow2")
		create("b.qcow2", "a.qcow2", "qcow2")
		_, err := Open(filepath.Join(dir, "a.qcow2"))
		if err == nil || !strings.Contains(err.Error(), "the chain loops") {
			t.Fatalf("error %v, want a loop", err)
		}
	})
	t.Run("depth", func(t *testing.T) {
		// ok -> c3 -> ... -> c17 -> base.raw: a chain of 16 backing
		// files (15 qcow2 and a raw one) opens; one more is refused.
		prev := "base.raw"
		for i := 17; i >= 1; i-- {
			name := fmt.Sprintf("c%d.qcow2", i)
			create(name, prev, map[bool]string{true: "raw", false: "qcow2"}[prev == "base.raw"])
			prev = name
		}
		ok := create("ok.qcow2", "c3.qcow2", "qcow2")
		d, err := Open(ok)
		if err != nil {
			t.Fatalf("a chain of 16 backing files: %v", err)
		}
		b := make([]byte, 4096)
		if _, err := d.ReadAt(b, 5<<20); err != nil || b[0] != 7 || b[4095] != 7 {
			t.Errorf("read through the chain: %v, %d", err, b[0])
		}
		d.Close()
		deep := create("deep.qcow2", "c2.qcow2", "qcow2")
		if _, err := Open(deep); err == nil || !strings.Contains(err.Error(), "deeper than 16") {
			t.Fatalf("error %v, want the chain refused as too deep", err)
		}
	})
}

// TestRefusedVariants: qcow2 files qemu makes that this reader refuses,
// each saying why.
func TestRefusedVariants(t *testing.T) {
	dir := t.TempDir()
	enc := filepath.Join(dir, "enc.qcow2")
	tooltest.Run(t, "qemu-img", "create", "--object", "secret,id=sec0,data=platter", "-f", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", enc, "10M")
	if _, err := Open(enc); err == nil || !strings.Contains(err.Error(), "encrypted") || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("encrypted: %v", err)
	}
	ext := filepath.Join(dir, "ext.qcow2")
	tooltest.Run(t, "qemu-img", "create", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data.raw"), ext, "10M")
	if _, err := Open(ext); err == nil || !strings.Contains(err.Error(), "external data file") {
		t.Errorf("external data file: %v", err)
	}
	base := filepath.Join(dir, "base.vmdk")
	tooltest.Run(t, "qemu-img", "create", "-f", "vmdk", base, "10M")
	delta := filepath.Join(dir, "delta.vmdk")
	tooltest.Run(t, "qemu-img", "create", "-f", "vmdk", "-b", base, "-F", "vmdk", delta)
	if _, err := Open(delta); err == nil || !strings.Contains(err.Error(), "delta link") || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("VMDK delta link: %v", err)
	}
	// Not a VM disk at all: a raw disk.
	raw := filepath.Join(dir, "disk.raw")
	os.WriteFile(raw, make([]byte, 1<<20), 0o644)
	if _, err := Open(raw); !errors.Is(err, ErrNotVirtual) {
		t.Errorf("raw disk: %v, want ErrNotVirtual", err)
	}
}

// TestHugeClaims opens small files whose headers claim tables of
// gigabytes to petabytes: each must be refused having allocated little.
func TestHugeClaims(t *testing.T) {
	dir := t.TempDir()
	files := hostileFixtures(t, dir)
	load := func(name string) []byte {
		b, err := os.ReadFile(files[name])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name string
		file string
		do   func(b []byte) []byte
	}{
		{"qcow2 L1 of 2^32-1 entries", "qcow2", func(b []byte) []byte {
			be.PutUint64(b[24:], 1<<61)
			be.PutUint32(b[36:], 0xffffffff)
			return b
		}},
		{"qcow2 L1 of 32 MiB past the end", "qcow2", func(b []byte) []byte {
			be.PutUint64(b[24:], 1<<51) // needs 4Mi entries of 512 MiB
			be.PutUint32(b[36:], 4<<20)
			return b
		}},
		{"qcow2 L1 of 32 MiB and 512-byte clusters", "qcow2", func(b []byte) []byte {
			be.PutUint32(b[20:], 9)
			be.PutUint64(b[24:], 1<<37)
			be.PutUint32(b[36:], 4<<20)
			return b
		}},
		{"qcow2 compressed cluster claims", "qcow2-c", func(b []byte) []byte { return b }},
		{"vhd table of 2^32-1 entries", "vhd", func(b []byte) []byte {
			b = vhdFooters(b, func(f []byte) {
				be.PutUint64(f[48:], 1<<50)
				copy(f[28:32], "win ")
			})
			return vhdDyn(b, func(h []byte) { be.PutUint32(h[28:], 0xffffffff) })
		}},
		{"vhdx of 64 TiB in 1 MiB blocks", "vhdx", func(b []byte) []byte {
			m := 0
			for i := range int(le.Uint32(b[192<<10+8:])) {
				e := b[192<<10+16+i*32:]
				if [16]byte(e[:16]) == vhdxRegionMetadata {
					m = int(le.Uint64(e[16:]))
				}
			}
			for i := range int(le.Uint16(b[m+10:])) {
				e := b[m+32+i*32:]
				if [16]byte(e[:16]) == vhdxVirtualSize {
					le.PutUint64(b[m+int(le.Uint32(e[16:])):], 64<<40)
				}
			}
			return b
		}},
		{"vmdk of 2^53 sectors in 1-sector grains", "vmdk", func(b []byte) []byte {
			le.PutUint64(b[12:], 1<<53)
			le.PutUint64(b[20:], 1)
			return b
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.do(load(c.file))
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			d, err := openBytes(b, filepath.Join(dir, "mem.img"))
			if err == nil {
				// Only the unchanged compressed qcow2 opens: reading it
				// decompresses one cluster at a time.
				buf := make([]byte, 1<<20)
				d.ReadAt(buf, 0)
				d.Close()
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("allocated %d MiB (error %v)", grew>>20, err)
			}
			if err == nil && c.file != "qcow2-c" {
				t.Errorf("opens")
			}
			t.Logf("%v", err)
		})
	}
}
