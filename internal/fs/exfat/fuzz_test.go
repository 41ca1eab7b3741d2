package exfat

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fuzzSize is the size of the fuzzed volumes: the seeds' bytes, then
// zeros.
const fuzzSize = 8 << 20

// fuzzSeeds are small exFATs made by mkfs.exfat (FAT right after the
// boot regions, so that the metadata is in the first sectors) and
// filled through exfat-fuse: a FAT-chained file, a file in one piece, a
// directory, a long Unicode name, a deleted file. Trailing zeros are
// cut: SparseReader serves them.
//
// A fuzz worker makes none: it is given its inputs by the coordinator,
// which alone uses f.Add's seeds, and a worker stopped while exfat-fuse
// served a seed's volume would leave the volume mounted, and exfat-fuse
// holding the worker's pipes to the coordinator open.
func fuzzSeeds(f *testing.F) [][]byte {
	if w := flag.Lookup("test.fuzzworker"); w != nil && w.Value.String() == "true" {
		return nil
	}
	var seeds [][]byte
	for _, cluster := range []int{512, 4096} {
		p := filepath.Join(f.TempDir(), "fs.img")
		os.WriteFile(p, nil, 0o644)
		os.Truncate(p, fuzzSize)
		tooltest.Run(f, "mkfs.exfat", "-b", "4K", "-c", strconv.Itoa(cluster), "-L", "fuzz", p)
		mnt, umount := mount(f, p, false)
		os.MkdirAll(filepath.Join(mnt, "Sub dir", "deeper"), 0o755)
		os.WriteFile(filepath.Join(mnt, "Sub dir", "deeper", "A long name ✓ Ünïcödé.txt"), bytes.Repeat([]byte("x"), 700), 0o644)
		os.WriteFile(filepath.Join(mnt, "gone.txt"), []byte("gone\n"), 0o644)
		a, _ := os.Create(filepath.Join(mnt, "a.bin"))
		b, _ := os.Create(filepath.Join(mnt, "b.bin"))
		for i := 0; i < 2; i++ {
			a.Write(bytes.Repeat([]byte{'a'}, cluster))
			a.Sync()
			b.Write(bytes.Repeat([]byte{'b'}, cluster))
			b.Sync()
		}
		a.Close()
		b.Close()
		os.WriteFile(filepath.Join(mnt, "whole.txt"), []byte("in one piece\n"), 0o644)
		os.Remove(filepath.Join(mnt, "gone.txt"))
		umount()
		img, _ := os.ReadFile(p)
		seeds = append(seeds, bytes.TrimRight(img, "\x00"))
	}
	return seeds
}

func FuzzDetect(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: fuzzSize}
		tooltest.FuzzUsage(Detect(r, r.Size))
	})
}

func FuzzFiles(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	// b (then zeros) opened as an exFAT and walked: every error is fine, a
	// panic or a runaway is not.
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: fuzzSize}
		fs, err := FS.OpenFiles(r, r.Size)
		tooltest.FuzzFiles(t, fs, err)
	})
}

// FuzzOwners: b (then zeros) walked by Owners must end, without a panic,
// and name only the volume's bytes.
func FuzzOwners(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: fuzzSize}
		Owners(r, r.Size, func(o vfs.Owner, at []block.Extent) error {
			for _, e := range at {
				if e.Off < 0 || e.Len <= 0 || e.End() > fuzzSize {
					t.Fatalf("%v: extent %d+%d outside the volume", o, e.Off, e.Len)
				}
			}
			return nil
		})
	})
}
