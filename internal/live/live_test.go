package live

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
)

// warnings is a Reporter that keeps the warnings.
type warnings struct {
	noReport
	got []string
}

func (w *warnings) Warn(msg string) { w.got = append(w.got, msg) }

var (
	rw = blockdev.Mount{Device: "/dev/sdz2", Point: "/srv", FSType: "ext4"}
	ro = blockdev.Mount{Device: "/dev/sdz3", Point: "/boot", FSType: "ext4", ReadOnly: true}
)

func TestChoose(t *testing.T) {
	for _, c := range []struct {
		name     string
		mounts   []blockdev.Mount
		opts     Options
		method   Method
		held     bool
		warnings int
	}{
		{"unmounted", nil, Options{Snapshot: Auto}, Track, false, 0},
		{"zero options", nil, Options{}, Track, false, 0},
		{"read-only", []blockdev.Mount{ro}, Options{Snapshot: Auto}, Track, false, 0},
		{"auto", []blockdev.Mount{rw, ro}, Options{Snapshot: Auto}, Track, true, 0},
		{"freeze", []blockdev.Mount{rw}, Options{Snapshot: Freeze}, Freeze, true, 0},
		{"auto allowed", []blockdev.Mount{rw, ro}, Options{Snapshot: Auto, AllowMounted: true}, None, false, 1},
		{"none allowed", []blockdev.Mount{rw, {Device: "/dev/sdz4", Point: "/home"}}, Options{Snapshot: None, AllowMounted: true}, None, false, 2},
		// --allow-mounted allows; it does not choose over --snapshot.
		{"track allowed", []blockdev.Mount{rw}, Options{Snapshot: Track, AllowMounted: true}, Track, true, 0},
		{"none unmounted", nil, Options{Snapshot: None}, None, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := &warnings{}
			c.opts.Report = w
			p, err := choose("/dev/sdz", c.mounts, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if p.Method != c.method || p.Held() != c.held || len(w.got) != c.warnings {
				t.Fatalf("method %s, held %v, warnings %q; want %s, %v, %d", p.Method, p.Held(), w.got, c.method, c.held, c.warnings)
			}
			for _, m := range p.Mounts {
				if m.ReadOnly {
					t.Errorf("read-only %s is among the mounts to hold", m.Point)
				}
			}
		})
	}
}

func TestChooseRefusesCopyingAsItChanges(t *testing.T) {
	w := &warnings{}
	_, err := choose("/dev/sdz", []blockdev.Mount{rw}, Options{Snapshot: None, Report: w})
	want := "/dev/sdz2 is mounted read-write at /srv (/dev/sdz): an image taken while it changes may be inconsistent; pass --snapshot track to image it live (a brief freeze at the end) or --snapshot freeze to hold it still while it is copied, unmount it or remount it read-only, or pass --allow-mounted to image it anyway"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if len(w.got) != 0 {
		t.Errorf("a refusal also warned: %q", w.got)
	}

	_, err = choose("/dev/sdz", []blockdev.Mount{rw}, Options{Snapshot: None, AllowMounted: true, Report: w})
	if err != nil || !slices.Equal(w.got, []string{"/dev/sdz2 is mounted read-write at /srv: the image may be inconsistent"}) {
		t.Fatalf("--allow-mounted: %v, warnings %q", err, w.got)
	}
}

func TestChooseUnknownMethod(t *testing.T) {
	if _, err := choose("/dev/sdz", nil, Options{Snapshot: "snapshot"}); err == nil {
		t.Error("an unknown method was taken")
	}
}

func TestCheckOutside(t *testing.T) {
	dir := t.TempDir()
	on := []blockdev.Mount{{Device: "/dev/sdz2", Point: dir}}
	err := checkOutside(on, filepath.Join(dir, "sub", "..", "disk.platter"), Freeze)
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "which --snapshot freeze would freeze") {
		t.Fatalf("an image on the frozen filesystem: %v, want a UsageError", err)
	}
	if err := checkOutside(on, "", Track); err != nil {
		t.Errorf("no local output: %v", err)
	}
	// /proc is never the filesystem a temporary directory is on.
	if err := checkOutside([]blockdev.Mount{{Device: "proc", Point: "/proc"}}, filepath.Join(dir, "disk.platter"), Track); err != nil {
		t.Errorf("an image on another filesystem: %v", err)
	}
	if err := checkOutside(on, filepath.Join(dir, "missing", "disk.platter"), Track); err == nil || !strings.Contains(err.Error(), "image directory") {
		t.Errorf("an image in a directory that does not exist: %v", err)
	}
}

// sourceFile opens a regular file as a source.
func sourceFile(t *testing.T) (*blockdev.Device, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := blockdev.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, path
}

func TestRunUnmounted(t *testing.T) {
	src, path := sourceFile(t)
	p, err := choose(path, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	err = p.Run(context.Background(), src, "", backup.Options{SourceName: path}, func(ctx context.Context, o backup.Options) error {
		ran = true
		if o.SourceName != path || o.Release != nil || o.Live != nil || o.MapSource != nil {
			t.Errorf("options changed for a source with nothing mounted: %+v", o)
		}
		return ctx.Err()
	})
	if err != nil || !ran {
		t.Fatalf("ran %v: %v", ran, err)
	}
}

func TestRunAsItChanges(t *testing.T) {
	src, path := sourceFile(t)
	p, err := choose(path, []blockdev.Mount{rw}, Options{AllowMounted: true})
	if err != nil {
		t.Fatal(err)
	}
	var snap *image.Snapshot
	err = p.Run(context.Background(), src, "", backup.Options{}, func(ctx context.Context, o backup.Options) error {
		if o.Live != nil || o.MapSource != nil || o.Release == nil {
			t.Fatalf("copied as it changes with Live %v, MapSource %v, Release %v", o.Live, o.MapSource, o.Release != nil)
		}
		s, err := o.Release()
		snap = s
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Method != "none" || !slices.Equal(snap.Filesystems, []string{"/srv"}) || time.Since(snap.Instant) > time.Minute {
		t.Errorf("snapshot %+v, want none of /srv, now", snap)
	}
}

func TestRunRefusals(t *testing.T) {
	src, path := sourceFile(t)
	never := func(context.Context, backup.Options) error {
		t.Fatal("the copy ran after a refusal")
		return nil
	}
	// Writes are tracked on a block device: a file behind a loop device
	// cannot be copied live. (The file stands for its own loop device
	// here, so that the view of the mounted filesystems opens.)
	loop := []blockdev.Mount{{Device: path, Point: "/srv"}}
	p, err := choose(path, loop, Options{Snapshot: Track})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Run(context.Background(), src, "", backup.Options{}, never)
	if err == nil || !strings.Contains(err.Error(), "image "+path+" instead") {
		t.Errorf("tracked file: %v", err)
	}

	dir := t.TempDir()
	for _, m := range []Method{Track, Freeze} {
		p, err := choose(path, []blockdev.Mount{{Device: path, Point: dir}}, Options{Snapshot: m})
		if err != nil {
			t.Fatal(err)
		}
		var ue *UsageError
		if err := p.Run(context.Background(), src, filepath.Join(dir, "disk.platter"), backup.Options{}, never); !errors.As(err, &ue) {
			t.Errorf("%s with the image on the source: %v, want a UsageError", m, err)
		}
	}
}

// Holds names the held filesystem a directory is on, so a command can
// keep its temporary files off it; a plan that holds nothing holds no
// directory.
func TestHolds(t *testing.T) {
	point := t.TempDir()
	sub := filepath.Join(point, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	m := blockdev.Mount{Device: "/dev/sdz2", Point: point, FSType: "ext4"}
	p, err := choose("/dev/sdz", []blockdev.Mount{m}, Options{Snapshot: Freeze})
	if err != nil {
		t.Fatal(err)
	}
	if got, held, err := p.Holds(sub); err != nil || !held || got != point {
		t.Fatalf("Holds(%s) = %q, %v, %v; want %s", sub, got, held, err, point)
	}
	if _, held, err := p.Holds("/proc"); err != nil || held {
		t.Fatalf("Holds(/proc) = %v, %v", held, err)
	}
	// Temporary files go elsewhere: not to a held directory, even when
	// it is the one preferred.
	t.Setenv("TMPDIR", sub)
	dir, err := p.TempDir(sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, held, _ := p.Holds(dir); held || dir == sub {
		t.Fatalf("TempDir(%s) = %s, on the held filesystem", sub, dir)
	}
	other := t.TempDir() // the same filesystem: held too, like sub
	if dir, _ := p.TempDir(other); dir == other {
		t.Fatalf("TempDir(%s) = %s, on the held filesystem", other, dir)
	}
	p, err = choose("/dev/sdz", []blockdev.Mount{m}, Options{Snapshot: None, AllowMounted: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, held, _ := p.Holds(sub); held {
		t.Fatal("a plan that holds nothing holds a directory")
	}
	if dir, err := p.TempDir(sub); dir != sub || err != nil {
		t.Fatalf("TempDir(%s) of a plan that holds nothing = %s, %v", sub, dir, err)
	}
}
