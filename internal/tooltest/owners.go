package tooltest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

// OwnersFunc is a filesystem's vfs.Filesystem.Owners.
type OwnersFunc func(r io.ReaderAt, size int64, visit func(o vfs.Owner, at []block.Extent) error) error

// Unreadable reads R but fails every read that touches one of Bad: the
// unreadable sectors of a failing disk, for a walker's own tests.
type Unreadable struct {
	R   io.ReaderAt
	Bad []block.Extent
}

func (u Unreadable) ReadAt(p []byte, off int64) (int, error) {
	for _, b := range u.Bad {
		if off < b.End() && b.Off < off+int64(len(p)) {
			return 0, fmt.Errorf("unreadable sector at byte %d", b.Off)
		}
	}
	return u.R.ReadAt(p, off)
}

// OwnersPast runs owners on img with the bytes of bad unreadable and
// returns the owners it names ("file:/a", "dir:/d", "meta:journal"); it
// fails the test if owners fails.
func OwnersPast(t testing.TB, owners OwnersFunc, img string, bad ...block.Extent) map[string]bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	named := map[string]bool{}
	err = owners(Unreadable{f, bad}, st.Size(), func(o vfs.Owner, _ []block.Extent) error {
		named[map[vfs.OwnerKind]string{vfs.OwnerFile: "file:", vfs.OwnerDir: "dir:", vfs.OwnerMeta: "meta:"}[o.Kind]+o.Path] = true
		return nil
	})
	if err != nil {
		t.Fatalf("Owners with %v unreadable: %v", bad, err)
	}
	return named
}

// OwnersStop checks that owners stops at visit's first error and
// returns it.
func OwnersStop(t testing.TB, owners OwnersFunc, img string) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	stop := errors.New("stop")
	calls := 0
	err = owners(f, st.Size(), func(vfs.Owner, []block.Extent) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Errorf("Owners whose visit fails at once: %v after %d calls, want stop after 1", err, calls)
	}
}
