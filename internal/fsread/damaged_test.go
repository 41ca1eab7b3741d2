package fsread

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// walk lists every directory of fsys and reads up to 1 MiB of every file,
// ignoring errors: only panics matter here.
func walk(fsys FS, dir string, depth int) {
	ents, err := fsys.ReadDir(dir)
	if err != nil || depth > 16 {
		return
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name)
		switch {
		case e.Mode.IsDir():
			walk(fsys, p, depth+1)
		case e.Mode.IsRegular():
			if r, err := fsys.Open(p); err == nil {
				io.Copy(io.Discard, io.LimitReader(r, 1<<20))
				r.Close()
			}
		}
	}
}

// damaged flips bits in [lo, hi) of img (and the same bits mirror bytes
// further, if mirror is not 0: a second FAT), n at a time, rounds times,
// and opens and walks each result as kind: the readers must give
// errors, never panic or run away, on
// damaged metadata. It reports how many damaged copies still opened, so
// the test shows it reached past the superblock.
func damaged(t *testing.T, img []byte, kind string, lo, hi, mirror, n, rounds int) (opened int) {
	rng := rand.New(rand.NewSource(1))
	b := bytes.Clone(img)
	flip := func(at []int, bits []byte) {
		for k := range at {
			b[at[k]] ^= bits[k]
			if mirror != 0 {
				b[at[k]+mirror] ^= bits[k]
			}
		}
	}
	at, bits := make([]int, n), make([]byte, n)
	for i := 0; i < rounds; i++ {
		for k := range at {
			at[k], bits[k] = lo+rng.Intn(hi-lo), byte(1)<<rng.Intn(8)
		}
		flip(at, bits)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s, round %d: panic on a damaged filesystem: %v", kind, i, r)
				}
			}()
			fsys, err := Open(bytes.NewReader(b), int64(len(b)), kind)
			if err != nil {
				return
			}
			opened++
			walk(fsys, "", 0)
		}()
		flip(at, bits) // undone: each round damages the clean image
	}
	return opened
}

func TestDamagedNTFS(t *testing.T) {
	img := filepath.Join(t.TempDir(), "ntfs.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 16<<20)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", img)
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", img, mnt)
	tooltest.Run(t, "cp", "-r", tooltest.Files(t)+"/.", mnt)
	tooltest.Run(t, "ln", "-s", "d0/f0.bin", filepath.Join(mnt, "link"))
	tooltest.Run(t, "fusermount", "-u", mnt)
	b, _ := os.ReadFile(img)
	// The MFT: its first records hold the system files and the tree.
	mft := int(binary.LittleEndian.Uint64(b[0x30:])) * int(b[0x0d]) * int(binary.LittleEndian.Uint16(b[0x0b:]))
	opened := damaged(t, b, "ntfs", mft, mft+100<<10, 0, 20, 300)
	t.Logf("%d of 300 damaged copies opened", opened)
	if opened < 30 {
		t.Errorf("only %d damaged copies opened: the walk was not exercised", opened)
	}
}

func TestDamagedFAT(t *testing.T) {
	for _, c := range []struct {
		kind string
		bits string
		mib  int64
	}{{"fat12", "12", 8}, {"fat16", "16", 16}, {"fat32", "32", 40}} {
		t.Run(c.kind, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fat.img")
			os.WriteFile(img, nil, 0o644)
			os.Truncate(img, c.mib<<20)
			tooltest.Run(t, "mkfs.fat", "-F", c.bits, img)
			tooltest.Run(t, "mcopy", "-s", "-i", img, tooltest.Files(t)+"/d0", tooltest.Files(t)+"/empty", "::/")
			b, _ := os.ReadFile(img)
			le := binary.LittleEndian
			sector := int(le.Uint16(b[0x0b:]))
			fatStart := int(le.Uint16(b[0x0e:])) * sector
			fatLen := int(le.Uint16(b[0x16:])) * sector
			if fatLen == 0 {
				fatLen = int(le.Uint32(b[0x24:])) * sector
			}
			dataStart := fatStart + int(b[0x10])*fatLen
			// Both FATs alike, then the root directory and the first
			// clusters.
			opened := damaged(t, b, c.kind, fatStart, fatStart+min(fatLen, 16<<10), fatLen, 4, 150)
			opened += damaged(t, b, c.kind, dataStart, dataStart+1<<20, 0, 10, 150)
			t.Logf("%d of 300 damaged copies opened", opened)
			if opened < 30 {
				t.Errorf("only %d damaged copies opened: the walk was not exercised", opened)
			}
		})
	}
}
