package tooltest

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
)

// BtrfsLogCopy writes files (contents by path below mnt) into the btrfs
// on dev mounted at mnt, fsyncing each, in the order of their paths:
// mounted with a long commit interval, the fsyncs go to the log tree.
// It then copies dev as it is (direct I/O, past the page cache), as a
// crash would leave it, unmounts mnt, and fails the test unless the
// copy holds a log tree. It returns the copy.
func BtrfsLogCopy(t testing.TB, dev, mnt string, files map[string][]byte) string {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f, err := os.Create(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(files[name])
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	copied := filepath.Join(t.TempDir(), "copy.img")
	Run(t, "dd", "if="+dev, "of="+copied, "bs=1M", "iflag=direct", "status=none")
	Run(t, "umount", mnt)
	if s := Run(t, "btrfs", "inspect-internal", "dump-super", copied); !regexp.MustCompile(`(?m)^log_root\s+[1-9]`).MatchString(s) {
		t.Fatalf("the copy has no log tree:\n%s", s)
	}
	return copied
}
