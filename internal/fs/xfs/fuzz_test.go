package xfs

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fuzzSize is the size of the filesystems the fuzzer works on.
const fuzzSize = 16 << 20

// sectors is a filesystem image held as its non-zero 512-byte sectors:
// a real one of 16 MiB has about 80, which the fuzzer can mutate (data
// and place) without wading through zeros.
type sectors struct {
	at   map[int64][]byte
	size int64
}

// unpack reads a fuzz input: 4 bytes of little-endian sector number,
// then the sector's 512 bytes, again and again.
func unpack(b []byte) *sectors {
	s := &sectors{at: map[int64][]byte{}, size: fuzzSize}
	for ; len(b) >= 4+bbSize; b = b[4+bbSize:] {
		n := int64(binary.LittleEndian.Uint32(b)) % (fuzzSize / bbSize)
		s.at[n] = b[4 : 4+bbSize]
	}
	return s
}

// pack is the fuzz input of an image.
func pack(img []byte) []byte {
	var out []byte
	zero := make([]byte, bbSize)
	for n := 0; n+bbSize <= len(img); n += bbSize {
		if sec := img[n : n+bbSize]; !bytes.Equal(sec, zero) {
			out = binary.LittleEndian.AppendUint32(out, uint32(n/bbSize))
			out = append(out, sec...)
		}
	}
	return out
}

// unstale zeroes the blocks of img's log from its head on: a mount
// stamps the 2 MiB past the head with record headers of the cycle before
// (so a later head search cannot mistake them), which would make a fuzz
// input hundreds of times larger. The log reads as if the mount had not
// done it.
func unstale(tb testing.TB, img []byte) []byte {
	f, err := parseSuper(img[:bbSize], int64(len(img)))
	if err != nil {
		tb.Fatal(err)
	}
	f.r = bytes.NewReader(img)
	l := &xlog{f: f, off: f.logStart * f.blockSize, bbs: f.logBlocks * f.blockSize / bbSize, winAt: -1}
	head, _, err := l.findTail()
	if err != nil {
		tb.Fatal(err)
	}
	clear(img[l.off+head*bbSize : l.off+l.bbs*bbSize])
	return img
}

func (s *sectors) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	clear(p[:n])
	for i := int64(0); i < int64(n); {
		sec, within := (off+i)/bbSize, (off+i)%bbSize
		k := min(bbSize-within, int64(n)-i)
		if b, ok := s.at[sec]; ok {
			copy(p[i:i+k], b[within:])
		}
		i += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fuzzSeeds are real filesystems of fuzzSize bytes, packed: freshly
// made (v5 with 1 KiB blocks, and v4 with 512-byte blocks), and copies
// of the v5 one mounted, after a sync (a log of real transactions) and
// while frozen (a covered log). trusted says which Detect trusts.
func fuzzSeeds(tb testing.TB) (seeds [][]byte, trusted []bool) {
	small(tb)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	add := func(b []byte, ok bool) {
		seeds, trusted = append(seeds, pack(b)), append(trusted, ok)
	}
	v5 := filepath.Join(tb.TempDir(), "v5.img")
	os.WriteFile(v5, make([]byte, fuzzSize), 0o644)
	tooltest.Run(tb, "mkfs.xfs", "-q", "-f", "-b", "size=1024", v5)
	add(read(v5), true)
	v4 := filepath.Join(tb.TempDir(), "v4.img")
	os.WriteFile(v4, make([]byte, fuzzSize), 0o644)
	tooltest.Run(tb, "mkfs.xfs", "-q", "-f", "-m", "crc=0", "-b", "size=512", v4)
	add(read(v4), true)

	mnt, umount := mount(tb, v5, "rw")
	for i := range 40 {
		os.WriteFile(filepath.Join(mnt, string(rune('a'+i%26))+string(rune('a'+i/26))), make([]byte, i*700), 0o644)
	}
	tooltest.Run(tb, "sync")
	add(unstale(tb, read(v5)), false)
	tooltest.Run(tb, "fsfreeze", "-f", mnt)
	frozen := read(v5)
	tooltest.Run(tb, "fsfreeze", "-u", mnt)
	umount()
	add(unstale(tb, frozen), true)
	return seeds, trusted
}

// FuzzDetect feeds Detect, and the whole map read of its answer, with
// mutations of fuzzSeeds: as they are, and with every checksum passing,
// so that mutations of v5 structures reach what lies past their
// checksums.
func FuzzDetect(f *testing.F) {
	seeds, _ := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tooltest.FuzzUsage(Detect(unpack(data), fuzzSize))
		ignoreCRCs = true
		defer func() { ignoreCRCs = false }()
		tooltest.FuzzUsage(Detect(unpack(data), fuzzSize))
	})
}

// The fuzz seeds are what they claim, and small: trusted or not as their
// logs say.
func TestFuzzSeeds(t *testing.T) {
	seeds, trusted := fuzzSeeds(t)
	for i, s := range seeds {
		u, err := Detect(unpack(s), fuzzSize)
		if err != nil {
			t.Fatal(err)
		}
		if u.Untrusted == trusted[i] || len(s) > 64<<10 {
			t.Errorf("seed %d: untrusted %v (%s), want %v; %d bytes", i, u.Untrusted, u.Warning, !trusted[i], len(s))
		}
	}
}

// FuzzOwners feeds Owners with mutations of fuzzSeeds (checksums are not
// read): it must end, without a panic, and name only bytes of the
// filesystem.
func FuzzOwners(f *testing.F) {
	seeds, _ := fuzzSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		Owners(unpack(data), fuzzSize, func(o vfs.Owner, at []block.Extent) error {
			for _, e := range at {
				if e.Off < 0 || e.Len <= 0 || e.End() > fuzzSize {
					t.Fatalf("%v: extent %d+%d outside the filesystem", o, e.Off, e.Len)
				}
			}
			return nil
		})
	})
}
