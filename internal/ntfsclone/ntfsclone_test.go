package ntfsclone

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/partclone"
	"github.com/platter-dev/platter/internal/tooltest"
)

// ntfsFixture is an NTFS of size bytes over garbage (mkntfs), filled with
// tooltest.Files through ntfs-3g, with a deleted file's bytes left in
// its free space; and the tree put in it.
func ntfsFixture(t *testing.T, size int64) (fs, tree string) {
	t.Helper()
	fs = tooltest.Garbage(t, size)
	tree = tooltest.Files(t)
	tooltest.Run(t, "mkntfs", "-q", "-F", "-Q", "-L", "pltr", fs)
	mnt := t.TempDir()
	tooltest.Run(t, "ntfs-3g", fs, mnt)
	defer exec.Command("fusermount", "-u", mnt).Run()
	tooltest.Run(t, "cp", tooltest.Garbage(t, 3<<20), filepath.Join(mnt, "gone.bin"))
	tooltest.Run(t, "cp", "-a", tree+"/.", mnt)
	os.Remove(filepath.Join(mnt, "gone.bin"))
	tooltest.Run(t, "fusermount", "-u", mnt)
	return fs, tree
}

// saved is `ntfsclone --save-image` of fs, piped through comp (a
// command reading stdin, or "" for none), in the file it returns.
func saved(t *testing.T, fs, comp string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "p.ntfs-img")
	script := "ntfsclone -f --save-image -o - " + fs + " 2>/dev/null"
	if comp != "" {
		script += " | " + comp
	}
	tooltest.Run(t, "bash", "-o", "pipefail", "-c", script+" > "+out)
	return out
}

// restored is what `ntfsclone --restore-image` makes of img (gzip'd or
// not) into a fresh file.
func restored(t *testing.T, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ref.raw")
	tooltest.Run(t, "bash", "-o", "pipefail", "-c", "zcat -f "+img+" | ntfsclone -q --restore-image --overwrite "+out+" - >/dev/null")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decoded is this package's decode of the image at path into a fresh
// sparse file, and its bytes.
func decoded(t *testing.T, path string) (string, []byte, *Reader) {
	t.Helper()
	r, c, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.OpenFile(out, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(r.Header().DeviceSize); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteTo(context.Background(), f, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, b, r
}

func sameBytes(t *testing.T, what string, want, got []byte) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("%s: first difference at byte %d", what, i)
		}
	}
}

// TestNtfsclone reads what the real ntfsclone saves, plain, gzip'd and
// zstd'd, split by split(1) as ocs-sr does, against ntfsclone's own
// restore; the result checks clean (ntfsfix -n) and holds every file.
func TestNtfsclone(t *testing.T) {
	fs, tree := ntfsFixture(t, 16<<20)
	plain := saved(t, fs, "")
	want := restored(t, plain)
	for _, c := range []struct{ name, comp string }{{"plain", ""}, {"gzip", "gzip -1"}, {"zstd", "zstd -q -3"}} {
		t.Run(c.name, func(t *testing.T) {
			img := saved(t, fs, c.comp)
			dir := t.TempDir()
			// ocs-sr's split: NAME.ntfs-img.aa, .ab, ...
			tooltest.Run(t, "split", "-b", "20000", img, filepath.Join(dir, "sda3.ntfs-img."))
			first := filepath.Join(dir, "sda3.ntfs-img.aa")
			if vols, err := partclone.Volumes(first); err != nil || len(vols) < 2 {
				t.Fatalf("volumes %v, %v", vols, err)
			}
			out, got, r := decoded(t, first)
			sameBytes(t, "decoded image", want, got)
			h := r.Header()
			if h.Major != 10 || h.Minor != 1 || h.ClusterSize != 4096 || h.DeviceSize != 16<<20 || h.DataOffset != 56 {
				t.Errorf("header %+v", *h)
			}
			var used int64
			for _, e := range r.Used() {
				used += e.Len
			}
			if used != (h.InUse+1)*h.ClusterSize {
				t.Errorf("used %d bytes; the header counts %d clusters in use (and the tail)", used, h.InUse)
			}
			if c.name == "gzip" {
				tooltest.Run(t, "ntfsfix", "-n", out)
				mnt := t.TempDir()
				tooltest.Run(t, "ntfs-3g", "-o", "ro", out, mnt)
				defer exec.Command("fusermount", "-u", mnt).Run()
				got := tooltest.Manifest(t, mnt)
				for k := range got {
					if strings.HasPrefix(k, "$") || strings.HasPrefix(k, "System Volume Information") {
						delete(got, k)
					}
				}
				tooltest.SameManifest(t, tooltest.Manifest(t, tree), got, 10)
			}
		})
	}

	// Damage: each is one error naming the stream's byte offset.
	raw, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(b []byte) error {
		t.Helper()
		p := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, c, err := OpenFile(p)
		if err != nil {
			return err
		}
		defer c.Close()
		return r.WriteTo(context.Background(), discard{}, nil)
	}
	cmd := bytes.Clone(raw)
	cmd[h.DataOffset] = 7
	if err := bad(cmd); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "command byte 0x07 for cluster 0") || !strings.Contains(err.Error(), "at image byte 56") {
		t.Errorf("a bad command: %v", err)
	}
	cut := raw[:len(raw)/2]
	if err := bad(cut); !errors.Is(err, ErrDamaged) || !errors.Is(err, io.ErrUnexpectedEOF) || !regexp.MustCompile(`stream ends inside .* at image byte \d+`).MatchString(err.Error()) {
		t.Errorf("a cut image: %v", err)
	}
	if err := bad(append(bytes.Clone(raw), 1, 2, 3)); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "bytes follow") {
		t.Errorf("trailing bytes: %v", err)
	}
	if err := bad(raw[:30]); !errors.Is(err, ErrDamaged) {
		t.Errorf("a cut header: %v", err)
	}
	if err := bad([]byte("not an image at all, not at all")); !errors.Is(err, ErrNotNtfsclone) {
		t.Errorf("not an image: %v", err)
	}
	// A volume gone is named.
	dir := t.TempDir()
	tooltest.Run(t, "split", "-b", "1000000", plain, filepath.Join(dir, "sda3.ntfs-img."))
	vols, _ := partclone.Volumes(filepath.Join(dir, "sda3.ntfs-img.aa"))
	last := vols[len(vols)-1]
	os.Remove(last)
	r, c, err := OpenFile(vols[0])
	if err == nil {
		err = r.WriteTo(context.Background(), discard{}, nil)
		c.Close()
	}
	if !errors.Is(err, partclone.ErrMissingVolume) || !strings.Contains(err.Error(), filepath.Base(last)) {
		t.Errorf("a volume missing: %v", err)
	}
}

// readAllOf reads an image's runs to the end.
func readAllOf(b []byte) (int, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		_, _, err := r.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// TestNtfscloneOddSize: on a device whose size is not a whole number of
// clusters, ntfsclone saves of the last cluster only what the device
// holds (with the backup boot sector): read as ntfsclone restores it.
func TestNtfscloneOddSize(t *testing.T) {
	fs, _ := ntfsFixture(t, 16<<20+1536)
	img := saved(t, fs, "gzip -1")
	out, got, r := decoded(t, img)
	if h := r.Header(); h.DeviceSize != 16<<20+1536 || h.DeviceSize%h.ClusterSize == 0 {
		t.Fatalf("header %+v", *h)
	}
	sameBytes(t, "decoded image", restored(t, img), got)
	tooltest.Run(t, "ntfsfix", "-n", out)
}

type discard struct{}

func (discard) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }

// small is a hand-made image of 8 clusters of 512 bytes on a device of
// 4508 bytes: cluster 0, a gap of 3, clusters 4-6, a gap of 1, and the
// tail.
func small() []byte {
	var b bytes.Buffer
	head := make([]byte, 56)
	copy(head, Magic)
	head[16], head[17] = 10, 1
	le := binary.LittleEndian
	le.PutUint32(head[18:], 512)
	le.PutUint64(head[22:], 9*512-100)
	le.PutUint64(head[30:], 8)
	le.PutUint64(head[38:], 4)
	le.PutUint32(head[46:], 56)
	b.Write(head)
	cl := func(v byte) { b.WriteByte(1); b.Write(bytes.Repeat([]byte{v}, 512)) }
	gap := func(n uint64) { b.WriteByte(0); b.Write(le.AppendUint64(nil, n)) }
	cl(1)
	gap(3)
	cl(4)
	cl(5)
	cl(6)
	gap(1)
	// The tail: the device's last 412 bytes (9*512-100 - 8*512), all
	// that is saved of cluster 8.
	b.WriteByte(1)
	b.Write(bytes.Repeat([]byte{9}, 412))
	return b.Bytes()
}

func TestNtfscloneHandMade(t *testing.T) {
	runs := func(b []byte) string {
		t.Helper()
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			off, data, err := r.Next()
			if err == io.EOF {
				return strings.Join(got, " ")
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d+%d:%d", off, len(data), data[0]))
		}
	}
	if got, want := runs(small()), "0+512:1 2048+1536:4 4096+412:9"; got != want {
		t.Errorf("runs %q, want %q", got, want)
	}
	// Format 10.0 ends without the tail.
	old := small()
	old[17] = 0
	old = old[:len(old)-413]
	if got, want := runs(old), "0+512:1 2048+1536:4"; got != want {
		t.Errorf("10.0: runs %q, want %q", got, want)
	}
	// Cut anywhere else, it is damage.
	if _, err := readAllOf(small()[:600]); !errors.Is(err, ErrDamaged) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut: %v", err)
	}
	// A gap of 0 clusters, which ntfsclone refuses too.
	zero := small()
	binary.LittleEndian.PutUint64(zero[570:], 0)
	if _, err := readAllOf(zero); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "a gap of 0 clusters") {
		t.Errorf("gap of 0: %v", err)
	}
	// A gap past the filesystem's clusters.
	b := small()
	binary.LittleEndian.PutUint64(b[56+1+512+1:], 100)
	if _, err := readAllOf(b); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "a gap of 100 clusters from cluster 1 is not within") || !strings.Contains(err.Error(), "image byte 569") {
		t.Errorf("a gap too long: %v", err)
	}
}

// FuzzReader: any bytes give runs or an error, never a panic, and never
// a run outside the device.
func FuzzReader(f *testing.F) {
	f.Add(small())
	b := small()
	f.Add(b[:100])
	b[16] = 9
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for range 1 << 16 {
			off, data, err := r.Next()
			if err != nil {
				return
			}
			if off < 0 || off+int64(len(data)) > r.Header().DeviceSize {
				t.Fatalf("run %d+%d outside the device's %d bytes", off, len(data), r.Header().DeviceSize)
			}
		}
	})
}

func TestCoarser(t *testing.T) {
	runs := []block.Extent{{Off: 0, Len: 1}, {Off: 4, Len: 2}, {Off: 10, Len: 1}, {Off: 20, Len: 5}, {Off: 30, Len: 1}}
	got := coarser(runs)
	want := []block.Extent{{Off: 0, Len: 6}, {Off: 10, Len: 15}, {Off: 30, Len: 1}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}
