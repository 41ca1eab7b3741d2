package swap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

const uuid = "0b4f3c2a-9d8e-4f7a-b6c5-d4e3f2a1b0c9"

// mkswap makes a swap area of size bytes over garbage with mkswap and
// args.
func mkswap(t testing.TB, size int64, args ...string) string {
	t.Helper()
	p := tooltest.Garbage(t, size)
	tooltest.Run(t, "mkswap", append(args, p)...)
	return p
}

func detect(t testing.TB, p string) *block.Usage {
	t.Helper()
	u, err := tooltest.DetectFile(t, p, Detect)
	if err != nil {
		t.Fatal(err)
	}
	if u.FS != "swap" {
		t.Fatalf("detected %q", u.FS)
	}
	return u
}

func header(t testing.TB, p string) *Header {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// For each page size mkswap writes, the map is the header page alone;
// the area kept to it (every other byte zero) is the same swap area to
// blkid and swaplabel, its header page byte for byte.
func TestAgainstMkswap(t *testing.T) {
	for _, ps := range []int64{4096, 16384, 65536} {
		p := mkswap(t, 8<<20, "-p", strconv.FormatInt(ps, 10), "-L", "swap label", "-U", uuid)
		u := detect(t, p)
		if u.Warning != "" || u.Untrusted {
			t.Fatalf("page size %d: warning %q", ps, u.Warning)
		}
		m := tooltest.LoadUsage(t, u)
		if m.UsedBytes() != ps || !m.Test(0) || m.BlockSize() != ps {
			t.Errorf("page size %d: %d bytes used in blocks of %d", ps, m.UsedBytes(), m.BlockSize())
		}
		h := header(t, p)
		if h.PageSize != ps || h.Version != 1 || h.Label != "swap label" || h.UUIDString() != uuid ||
			int64(h.LastPage) != 8<<20/ps-1 {
			t.Errorf("page size %d: header %+v", ps, h)
		}
		kept := tooltest.KeepOnly(t, p, m)
		for _, key := range []string{"TYPE", "UUID", "LABEL", "VERSION"} {
			if got, want := tooltest.Blkid(t, kept, key), tooltest.Blkid(t, p, key); got != want || got == "" {
				t.Errorf("page size %d: blkid %s %q, source %q", ps, key, got, want)
			}
		}
		if out := tooltest.Run(t, "swaplabel", kept); !strings.Contains(out, "LABEL: swap label") || !strings.Contains(out, "UUID:  "+uuid) {
			t.Errorf("page size %d: swaplabel says\n%s", ps, out)
		}
		a, _ := os.ReadFile(p)
		b, _ := os.ReadFile(kept)
		if !bytes.Equal(a[:ps], b[:ps]) {
			t.Errorf("page size %d: header page differs", ps)
		}
	}
}

// A header in big-endian order (a swap area made on s390 or POWER) is
// read as blkid reads it; one with neither label nor UUID has neither.
func TestHeaderForms(t *testing.T) {
	p := mkswap(t, 4<<20, "-L", "be", "-U", uuid)
	b, _ := os.ReadFile(p)
	for k := infoOff; k < infoOff+12; k += 4 {
		binary.BigEndian.PutUint32(b[k:], binary.LittleEndian.Uint32(b[k:]))
	}
	os.WriteFile(p, b, 0o644)
	if h := header(t, p); h.Version != 1 || h.LastPage != 4<<20/4096-1 || h.Label != "be" {
		t.Errorf("big-endian header %+v", h)
	}
	if got := tooltest.Blkid(t, p, "LABEL"); got != "be" {
		t.Errorf("blkid reads the big-endian header's label as %q", got)
	}
	bare := filepath.Join(t.TempDir(), "bare.img")
	os.WriteFile(bare, make([]byte, 1<<20), 0o644)
	tooltest.Run(t, "mkswap", bare)
	bb, _ := os.ReadFile(bare)
	clear(bb[infoOff+12 : infoOff+44]) // as mkswap wrote before it wrote UUIDs
	os.WriteFile(bare, bb, 0o644)
	if h := header(t, bare); h.Label != "" || h.UUIDString() != "" {
		t.Errorf("bare header: label %q, UUID %q", h.Label, h.UUIDString())
	}
}

// A swap area holding a hibernated system, of any of the signatures
// blkid knows, and one of the version 0 format, are copied whole, their
// UUID and label still read; a version 1 header swapon would refuse, or
// whose padding something wrote over, is damage; bytes that are no swap
// area are not one.
func TestSignatures(t *testing.T) {
	src := mkswap(t, 4<<20, "-L", "hib", "-U", uuid)
	for _, tc := range []struct {
		sig, blkid, want string
	}{
		{"S1SUSPEND\x00", "swsuspend", "hibernated system (S1SUSPEND signature)"},
		{"S2SUSPEND\x00", "swsuspend", "hibernated system (S2SUSPEND"},
		{"ULSUSPEND\x00", "swsuspend", "hibernated system (ULSUSPEND"},
		{"LINHIB0001", "swsuspend", "hibernated system (LINHIB0001"},
		// blkid looks for TuxOnIce's magic at the area's start; swapon
		// (swap_detect_signature), as Platter, where the others are.
		{"\xed\xc3\x02\xe9\x98\x56\xe5\x0c\x00\x00", "", "hibernated system (TuxOnIce"},
		{"SWAP-SPACE", "swap", "version 0"},
	} {
		b, _ := os.ReadFile(src)
		copy(b[4096-sigLen:], tc.sig)
		p := filepath.Join(t.TempDir(), "sig.img")
		os.WriteFile(p, b, 0o644)
		u := detect(t, p)
		if !u.Untrusted || !strings.Contains(u.Warning, tc.want) || !strings.HasPrefix(u.Warning, "swap ") {
			t.Errorf("%q: untrusted %v, warning %q", tc.sig, u.Untrusted, u.Warning)
		}
		if m := tooltest.LoadUsage(t, u); m.Count() != m.Blocks() {
			t.Errorf("%q: %d of %d blocks used", tc.sig, m.Count(), m.Blocks())
		}
		if tc.blkid != "" {
			if got := tooltest.Blkid(t, p, "TYPE"); got != tc.blkid {
				t.Errorf("%q: blkid says %q", tc.sig, got)
			}
		}
		if h := header(t, p); h.Signature != sigV0 && (h.Label != "hib" || h.UUIDString() != uuid) {
			t.Errorf("%q: label %q, UUID %q", tc.sig, h.Label, h.UUIDString())
		}
	}

	for _, tc := range []struct {
		what string
		off  int
		v    uint32
	}{
		{"version 2", infoOff, 2},
		{"no last page", infoOff + 4, 0},
		{"a last page past the area", infoOff + 4, 4 << 20 / 4096},
		{"too many bad pages", infoOff + 8, 1000},
		{"padding written over", infoOff + 100, 0x53425846},
	} {
		b, _ := os.ReadFile(src)
		binary.LittleEndian.PutUint32(b[tc.off:], tc.v)
		p := filepath.Join(t.TempDir(), "bad.img")
		os.WriteFile(p, b, 0o644)
		var ce *block.CorruptError
		if _, err := tooltest.DetectFile(t, p, Detect); !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a CorruptError", tc.what, err)
		}
	}

	zeros := filepath.Join(t.TempDir(), "zeros.img")
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	ext := filepath.Join(t.TempDir(), "ext.img")
	os.WriteFile(ext, make([]byte, 4<<20), 0o644)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", ext)
	small := mkswap(t, 64<<10)
	os.Truncate(small, 32<<10) // under blkid's ten pages
	for _, p := range []string{zeros, ext, tooltest.Garbage(t, 4<<20), small} {
		if _, err := tooltest.DetectFile(t, p, Detect); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want not mine", p, err)
		}
	}
}

func FuzzDetect(f *testing.F) {
	for _, ps := range []int{4096, 65536} {
		p := filepath.Join(f.TempDir(), "swap.img")
		os.WriteFile(p, make([]byte, 1<<20), 0o644)
		tooltest.Run(f, "mkswap", "-p", strconv.Itoa(ps), "-L", "fuzz", "-U", uuid, p)
		b, _ := os.ReadFile(p)
		f.Add(b[:ps]) // the header page; zeros follow
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: 1 << 20}
		tooltest.FuzzUsage(Detect(r, r.Size))
		ReadHeader(r, r.Size)
	})
}
