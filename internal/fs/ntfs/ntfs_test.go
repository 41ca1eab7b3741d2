package ntfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func detectFile(t testing.TB, p string) (*block.Usage, error) {
	return tooltest.DetectFile(t, p, Detect)
}

// populate mounts the volume with ntfs-3g, copies files in (with a
// symlink and a fragmented file), deletes one, and unmounts.
func populate(t *testing.T, img, files string) {
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", img, mnt)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("fusermount", "-u", mnt).Run()
		}
	}()
	tooltest.Run(t, "cp", "-r", files+"/.", mnt)
	os.Symlink("d0/f0.bin", filepath.Join(mnt, "link"))
	// Two files written alternately in pieces end up fragmented.
	a, _ := os.Create(filepath.Join(mnt, "frag-a"))
	b, _ := os.Create(filepath.Join(mnt, "frag-b"))
	piece := make([]byte, 64<<10)
	for i := 0; i < 20; i++ {
		for j := range piece {
			piece[j] = byte(i*j + 1)
		}
		a.Write(piece)
		a.Sync()
		b.Write(piece)
		b.Sync()
	}
	a.Close()
	b.Close()
	os.WriteFile(filepath.Join(mnt, "gone"), make([]byte, 2<<20), 0o644)
	os.Remove(filepath.Join(mnt, "gone"))
	tooltest.Run(t, "fusermount", "-u", mnt)
	mounted = false
}

func TestAgainstPartclone(t *testing.T) {
	files := tooltest.Files(t)
	for _, tc := range []struct {
		size int64
		args []string
	}{
		{64 << 20, []string{"-c", "4096"}},
		{32 << 20, []string{"-c", "512"}},
		{256 << 20, []string{"-c", "65536"}},
		{64 << 20, []string{"-s", "4096", "-c", "4096"}},
	} {
		t.Run(fmt.Sprint(tc.args), func(t *testing.T) {
			p := tooltest.Garbage(t, tc.size)
			tooltest.Run(t, "mkntfs", append([]string{"-q", "-F", "-Q"}, append(tc.args, p)...)...)
			populate(t, p, files)
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			extra := tooltest.CompareWithPartclone(t, "partclone.ntfs", p, tooltest.LoadUsage(t, u))
			if extra < 0 || extra > int64(u.BlockSize()) {
				// We also copy the backup boot sector (the volume's last
				// sector, outside its clusters): at most one block more.
				t.Errorf("%d bytes more than partclone", extra)
			}
			wiped := tooltest.KeepOnly(t, p, tooltest.LoadUsage(t, u))
			tooltest.Run(t, "ntfsfix", "-n", wiped)
			mnt := t.TempDir()
			tooltest.Run(t, "ntfs-3g", "-o", "ro", wiped, mnt)
			defer exec.Command("fusermount", "-u", mnt).Run()
			tooltest.SameTree(t, files, mnt)
		})
	}
}

func TestNotNTFS(t *testing.T) {
	zeros := tooltest.Garbage(t, 4<<20)
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	fat := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.fat", fat)
	ext := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", ext)
	for name, p := range map[string]string{"zeros": zeros, "random": tooltest.Garbage(t, 1<<20), "fat": fat, "ext4": ext} {
		if _, err := detectFile(t, p); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want ErrNotMine", name, err)
		}
	}
}

func TestDamaged(t *testing.T) {
	p := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", p)
	if _, err := detectFile(t, p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	// Break the fixup of record 6 ($Bitmap): the last two bytes of its
	// first 512-byte stride no longer match the update sequence number.
	v, err := open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	b[v.mft.where(recBitmap*v.recordSize)+510] ^= 0xff
	bad := tooltest.Garbage(t, 1)
	os.WriteFile(bad, b, 0o644)
	var ce *block.CorruptError
	if _, err := detectFile(t, bad); !errors.As(err, &ce) || !strings.Contains(err.Error(), "MFT record 6: record: update sequence mismatch") {
		t.Errorf("broken fixup: %v", err)
	}
	trunc := tooltest.Garbage(t, 1)
	os.WriteFile(trunc, b[:1<<20], 0o644)
	if _, err := detectFile(t, trunc); err == nil {
		t.Error("truncated volume accepted")
	}
}

func FuzzDetect(f *testing.F) {
	p := tooltest.Garbage(f, 8<<20)
	tooltest.Run(f, "mkntfs", "-q", "-F", "-Q", "-c", "4096", p)
	b, _ := os.ReadFile(p)
	// The boot sector and, separately, the MFT area are what matter; a
	// sparse reader fills the rest with zeros.
	f.Add(b[:64<<10])
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &tooltest.SparseReader{B: data, Size: 8 << 20}
		tooltest.FuzzUsage(Detect(r, r.Size))
	})
}
