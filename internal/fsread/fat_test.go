package fsread

import (
	"bytes"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// FAT through Open: the boot sector decides the FAT type, whatever name
// the image recorded; names match without regard to case and the entry
// Stat finds is the one Open reads; "." and ".." never show; files read
// at any offset (mount --files reads so), as mtools reads them.
func TestFAT(t *testing.T) {
	img := filepath.Join(t.TempDir(), "fat.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 16<<20)
	tooltest.Run(t, "mkfs.fat", "-F", "16", img)
	files := tooltest.Files(t)
	tooltest.Run(t, "mcopy", "-s", "-i", img, files+"/d0", files+"/d1", files+"/empty", "::/")
	tooltest.Run(t, "mmd", "-i", img, "::/Mixed Case Dir")
	want := tooltest.MtoolsTree(t, img)
	b, _ := os.ReadFile(img)
	for _, kind := range []string{"fat12", "fat16", "fat32"} {
		var skipped []string
		fsys, err := Opener{Skipped: func(s *SkipError) { skipped = append(skipped, s.Error()) }}.Open(bytes.NewReader(b), int64(len(b)), kind)
		if err != nil {
			t.Fatalf("open as %s: %v", kind, err)
		}
		ents, err := fsys.ReadDir("/d0")
		if err != nil || len(ents) == 0 {
			t.Fatalf("%s: ReadDir /d0: %v %v", kind, ents, err)
		}
		for _, e := range ents {
			if e.Name == "." || e.Name == ".." || e.Mode != 0o644 {
				t.Errorf("%s: /d0 lists %q, mode %v", kind, e.Name, e.Mode)
			}
		}
		if e, err := fsys.Stat("/MIXED CASE DIR"); err != nil || e.Name != "Mixed Case Dir" || e.Mode != iofs.ModeDir|0o755 {
			t.Errorf("%s: stat /MIXED CASE DIR: %+v %v", kind, e, err)
		}
		r, err := fsys.Open("/D1/F7.BIN")
		if err != nil {
			t.Fatalf("%s: open /D1/F7.BIN: %v", kind, err)
		}
		got, _ := io.ReadAll(r)
		w, _ := os.ReadFile(filepath.Join(want, "d1", "f7.bin"))
		if !bytes.Equal(got, w) || len(w) < 4096 {
			t.Errorf("%s: /D1/F7.BIN: %d bytes, want mcopy's %d", kind, len(got), len(w))
		}
		part := make([]byte, 1000)
		if ra, ok := r.(io.ReaderAt); !ok {
			t.Errorf("%s: the file is no io.ReaderAt", kind)
		} else if n, err := ra.ReadAt(part, 3000); n != len(part) || err != nil || !bytes.Equal(part, w[3000:4000]) {
			t.Errorf("%s: ReadAt 1000 at 3000: %d %v", kind, n, err)
		}
		r.Close()
		if _, err := fsys.Stat("/d0/nothing"); !strings.Contains(errString(err), "no such file") && !strings.Contains(errString(err), "not exist") {
			t.Errorf("%s: stat of nothing: %v", kind, err)
		}
		if len(skipped) > 0 {
			t.Errorf("%s: skipped %q", kind, skipped)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
