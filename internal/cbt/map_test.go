//go:build linux

package cbt

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/block"
)

func ext(off, n int64) block.Extent { return block.Extent{Off: off, Len: n} }

// The map since an instant is the union of the epochs ending after it:
// a write is never lost by a split, and the oldest epochs merge.
func TestEpochs(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &Map{Size: 1 << 30, Since: t0, Epochs: []Epoch{{Since: t0}}}
	m.add([]block.Extent{ext(0, 4096), ext(8192, 4096)})
	m.add([]block.Extent{ext(4096, 4096)})
	if got := m.Epochs[0].Extents; !slices.Equal(got, [][2]int64{{0, 12288}}) {
		t.Fatalf("merged: %v", got)
	}
	m.split(t0.Add(time.Hour))
	m.add([]block.Extent{ext(1<<20, 4096)})
	m.Heartbeat = t0.Add(2 * time.Hour)
	if got := m.ChangedSince(t0.Add(30 * time.Minute)); !slices.Equal(got, []block.Extent{ext(0, 12288), ext(1<<20, 4096)}) {
		t.Errorf("since inside the first epoch: %v", got)
	}
	if got := m.ChangedSince(t0.Add(90 * time.Minute)); !slices.Equal(got, []block.Extent{ext(1<<20, 4096)}) {
		t.Errorf("since inside the second epoch: %v", got)
	}
	// An instant within Margin after a split still takes the epoch
	// before it: the clocks of two processes.
	if got := m.ChangedSince(t0.Add(time.Hour + Margin/2)); len(got) != 2 {
		t.Errorf("just after the split: %v", got)
	}
	for i := range 2 * maxEpochs {
		m.split(t0.Add(time.Duration(2+i) * time.Hour))
	}
	if len(m.Epochs) != maxEpochs || !m.Epochs[0].Since.Equal(t0) {
		t.Fatalf("%d epochs, first since %v", len(m.Epochs), m.Epochs[0].Since)
	}
	if got := m.ChangedSince(t0); len(got) != 2 {
		t.Errorf("after merging: %v", got)
	}
}

func TestUsable(t *testing.T) {
	t0 := time.Now().UTC().Add(-time.Hour)
	fs := []FS{{Path: "/dev/x1", Kind: KindExt, MountCount: 3, WTime: t0}}
	m := &Map{DevNum: "7:0", Size: 1 << 20, BootID: "boot-a", PID: 1, Started: t0, Since: t0, Heartbeat: time.Now(), Filesystems: fs}
	dev := &Device{DevNum: "7:0", Size: 1 << 20, Filesystems: slices.Clone(fs)}
	if ok, why := m.Usable(t0.Add(time.Minute), "boot-a", dev); !ok {
		t.Fatalf("a good map: %v", why)
	}
	cases := []struct {
		name string
		edit func(*Map, *Device) (time.Time, string)
		want string
	}{
		{"reboot", func(m *Map, d *Device) (time.Time, string) { return t0.Add(time.Minute), "boot-b" }, "another boot"},
		{"not answering", func(m *Map, d *Device) (time.Time, string) { return t0.Add(time.Minute), "" }, "did not answer"},
		{"stopped", func(m *Map, d *Device) (time.Time, string) {
			m.Stopped = t0.Add(time.Minute)
			return t0.Add(time.Minute), ""
		}, "stopped"},
		{"late start", func(m *Map, d *Device) (time.Time, string) { return t0, "" }, "before the parent's instant"},
		{"mount count", func(m *Map, d *Device) (time.Time, string) {
			d.Filesystems[0].MountCount++
			return t0.Add(time.Minute), ""
		}, "mount count"},
		{"wtime", func(m *Map, d *Device) (time.Time, string) {
			d.Filesystems[0].WTime = t0.Add(time.Second)
			return t0.Add(time.Minute), ""
		}, "last write time"},
		{"unknown", func(m *Map, d *Device) (time.Time, string) {
			m.Filesystems[0].Kind, d.Filesystems[0].Kind = KindUnknown, KindUnknown
			return t0.Add(time.Minute), ""
		}, "cannot vouch"},
		{"other device", func(m *Map, d *Device) (time.Time, string) { d.Size *= 2; return t0.Add(time.Minute), "" }, "not the one tracked"},
	}
	for _, c := range cases {
		m2 := *m
		m2.Filesystems = slices.Clone(fs)
		d2 := *dev
		d2.Filesystems = slices.Clone(fs)
		at, boot := c.edit(&m2, &d2)
		if boot == "" {
			boot = "boot-a"
		}
		dp := &d2
		if c.name == "not answering" {
			dp = nil
		}
		ok, why := m2.Usable(at, boot, dp)
		if ok || !strings.Contains(strings.Join(why, "; "), c.want) {
			t.Errorf("%s: usable %v, why %q; want %q", c.name, ok, why, c.want)
		}
	}
}

// Saves are atomic files of mode 0600, never written through a symlink;
// a damaged map is refused with its name.
func TestSaveLoad(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "loop9")
	m := &Map{Version: Version, Size: 1 << 20, Epochs: []Epoch{{Extents: [][2]int64{{0, 4096}}}}}
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, File))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("map file: %v %v", st, err)
	}
	got, err := Load(dir)
	if err != nil || got.Epochs[0].Extents[0] != [2]int64{0, 4096} {
		t.Fatalf("load: %+v %v", got, err)
	}
	other := t.TempDir()
	link := filepath.Join(root, "loop8")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("save through a symlinked directory: %v", err)
	}
	if ents, _ := os.ReadDir(other); len(ents) != 0 {
		t.Errorf("written through the link: %v", ents)
	}
	bad := &Map{Version: Version, Size: 1 << 20, Epochs: []Epoch{{Extents: [][2]int64{{1 << 20, 4096}}}}}
	bad.Save(dir)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "bad range") {
		t.Errorf("a range past the device: %v", err)
	}
}

func TestClassify(t *testing.T) {
	b := make([]byte, 64<<10)
	if k := classify("x", b).Kind; k != KindEmpty {
		t.Errorf("zeros: %s", k)
	}
	b[5000] = 1
	if k := classify("x", b).Kind; k != KindUnknown {
		t.Errorf("unknown bytes: %s", k)
	}
	binary.LittleEndian.PutUint16(b[1024+0x38:], 0xEF53)
	binary.LittleEndian.PutUint16(b[1024+0x34:], 7)
	binary.LittleEndian.PutUint32(b[1024+0x30:], 1700000000)
	if f := classify("x", b); f.Kind != KindExt || f.MountCount != 7 || f.WTime.Unix() != 1700000000 {
		t.Errorf("ext: %+v", f)
	}
}

// The superblocks of real filesystems, made by their own tools.
func TestClassifyReal(t *testing.T) {
	for _, c := range []struct {
		kind string
		mkfs []string
	}{
		{KindExt, []string{"mkfs.ext4", "-q", "-F"}},
		{KindXFS, []string{"mkfs.xfs", "-q", "-f"}},
		{KindBtrfs, []string{"mkfs.btrfs", "-q", "-f"}},
		{KindFAT, []string{"mkfs.fat", "-F", "32"}},
		{KindNTFS, []string{"mkntfs", "-q", "-F", "-f"}},
		{KindSwap, []string{"mkswap"}},
	} {
		img := filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 320<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(c.mkfs[0], append(c.mkfs[1:], img)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c.mkfs[0], err, out)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if got := classify(img, b[:128<<10]).Kind; got != c.kind {
			t.Errorf("%s: %s, want %s", c.mkfs[0], got, c.kind)
		}
	}
}
