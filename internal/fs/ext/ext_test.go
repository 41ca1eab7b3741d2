package ext

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/tooltest"
)

func detectFile(t testing.TB, p string) (*block.Usage, error) {
	return tooltest.DetectFile(t, p, Detect)
}

// mkfsLayout is an ext filesystem as mke2fs makes it.
type mkfsLayout struct {
	name, mkfs string
	size       int64
	args       []string
	bigalloc   bool // partclone 0.3.23 cannot image it (TestBigalloc judges it)
}

// mkfsLayouts are the layouts the detector is tested on.
var mkfsLayouts = []mkfsLayout{
	{"ext4-default", "mkfs.ext4", 64 << 20, nil, false},
	{"ext4-4k-64bit", "mkfs.ext4", 300 << 20, []string{"-b", "4096", "-O", "64bit"}, false},
	{"ext4-no64bit", "mkfs.ext4", 128 << 20, []string{"-O", "^64bit"}, false},
	{"ext4-meta_bg", "mkfs.ext4", 300 << 20, []string{"-b", "1024", "-O", "meta_bg,^resize_inode"}, false},
	{"ext4-no-flex_bg", "mkfs.ext4", 128 << 20, []string{"-O", "^flex_bg"}, false},
	{"ext4-no-journal", "mkfs.ext4", 64 << 20, []string{"-O", "^has_journal"}, false},
	{"ext4-2k", "mkfs.ext4", 64 << 20, []string{"-b", "2048"}, false},
	{"ext4-uninit_bg", "mkfs.ext4", 300 << 20, []string{"-b", "1024", "-O", "^metadata_csum,uninit_bg", "-E", "lazy_itable_init=1"}, false},
	{"ext4-sparse_super2", "mkfs.ext4", 128 << 20, []string{"-O", "sparse_super2"}, false},
	{"ext4-no-sparse_super", "mkfs.ext4", 64 << 20, []string{"-O", "^sparse_super,^resize_inode", "-b", "1024"}, false},
	{"ext4-bigalloc", "mkfs.ext4", 256 << 20, []string{"-O", "bigalloc", "-C", "16384"}, true},
	{"ext4-bigalloc-1k", "mkfs.ext4", 256 << 20, []string{"-O", "bigalloc", "-b", "1024", "-C", "65536"}, true},
	{"ext3", "mkfs.ext3", 64 << 20, nil, false},
	{"ext2", "mkfs.ext2", 64 << 20, nil, false},
}

func TestLayoutsAgainstPartclone(t *testing.T) {
	files := tooltest.Files(t)
	for _, tc := range mkfsLayouts {
		if tc.bigalloc {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			// Two at a time: one layout's mke2fs, debugfs or partclone
			// runs while another's Go side reads.
			t.Parallel()
			p := tooltest.Garbage(t, tc.size)
			args := append([]string{"-q", "-F", "-E", "nodiscard", "-d", files}, tc.args...)
			tooltest.Run(t, tc.mkfs, append(args, p)...)
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			if want := tooltest.Blkid(t, p, "TYPE"); u.FS != want {
				t.Errorf("detected %s, blkid says %s", u.FS, want)
			}
			if extra := tooltest.CompareWithPartclone(t, "partclone.extfs", p, tooltest.LoadUsage(t, u)); extra != 0 {
				// partclone copies exactly the bitmap's blocks (it computes
				// uninitialised groups with libext2fs as we do): any
				// difference is a bug on one side worth a look.
				t.Errorf("%d bytes more than partclone", extra)
			}
			if u.Len() != tc.size {
				t.Errorf("map covers %d bytes, want the whole %d", u.Len(), tc.size)
			}
		})
	}
}

// bigalloc, which partclone 0.3.23 cannot image ("bitmap error at 0
// group"): judged by what a restore of only the used clusters holds —
// e2fsck finds it clean and debugfs reads every file back. With 1 KiB
// blocks the first data block is 0 but the descriptors still follow the
// superblock in block 1.
func TestBigalloc(t *testing.T) {
	files := tooltest.Files(t)
	for _, args := range [][]string{
		{"-b", "4096", "-C", "16384"},
		{"-b", "1024", "-C", "65536"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			// Two at a time: one layout's mke2fs, debugfs or partclone
			// runs while another's Go side reads.
			t.Parallel()
			p := tooltest.Garbage(t, 256<<20)
			tooltest.Run(t, "mkfs.ext4", append(append([]string{"-q", "-F", "-E", "nodiscard", "-O", "bigalloc", "-d", files}, args...), p)...)
			u, err := detectFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			m := tooltest.LoadUsage(t, u)
			if used := m.UsedBytes(); used > 128<<20 || used < 4<<20 {
				t.Errorf("%d bytes used of 256 MiB: the map is wrong", used)
			}
			kept := tooltest.KeepOnly(t, p, m)
			tooltest.Run(t, "e2fsck", "-fn", kept)
			out := t.TempDir()
			tooltest.Run(t, "debugfs", "-R", "rdump / "+out, kept)
			tooltest.SameTree(t, files, out)
		})
	}
}

func TestNotExt(t *testing.T) {
	zeros := tooltest.Garbage(t, 4<<20)
	os.WriteFile(zeros, make([]byte, 4<<20), 0o644)
	fat := tooltest.Garbage(t, 8<<20)
	tooltest.Run(t, "mkfs.fat", fat)
	for _, p := range []string{zeros, tooltest.Garbage(t, 1<<20), fat} {
		if _, err := detectFile(t, p); !errors.Is(err, block.ErrNotMine) {
			t.Errorf("%s: %v, want ErrNotMine", p, err)
		}
	}
}

func TestDamaged(t *testing.T) {
	p := tooltest.Garbage(t, 32<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", p)
	b, _ := os.ReadFile(p)
	trunc := tooltest.Garbage(t, 1)
	os.WriteFile(trunc, b[:8<<20], 0o644)
	if _, err := detectFile(t, trunc); err == nil || errors.Is(err, block.ErrNotMine) {
		t.Errorf("truncated filesystem: %v", err)
	}
	bad := tooltest.Garbage(t, 1)
	b[1024+0x18] = 40 // impossible block size
	os.WriteFile(bad, b, 0o644)
	var ce *block.CorruptError
	if _, err := detectFile(t, bad); !errors.As(err, &ce) {
		t.Errorf("corrupt superblock: %v", err)
	}
}

func FuzzDetect(f *testing.F) {
	p := tooltest.Garbage(f, 2<<20)
	tooltest.Run(f, "mkfs.ext4", "-q", "-F", "-b", "1024", p)
	b, _ := os.ReadFile(p)
	f.Add(b[:256<<10])
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &tooltest.SparseReader{B: b, Size: 2 << 20}
		tooltest.FuzzUsage(Detect(r, r.Size))
	})
}
