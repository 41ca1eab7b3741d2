package store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/store"
)

// splitImage writes b as volumes of size bytes in a new directory and
// opens it.
func splitImage(t *testing.T, b []byte, size int64) (string, store.Object) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	p := store.Split(store.NewDir(dir))
	sink, err := p.Create(ctx, "i.platter", store.CreateOptions{Split: size})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := sink.Commit(); err != nil {
		t.Fatal(err)
	}
	o, err := p.Open(ctx, "i.platter")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return dir, o
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

// Reads that end or start exactly on a volume boundary, span three
// volumes, or are a single byte on either side of one.
func TestSplitReads(t *testing.T) {
	want := seq(1000)
	_, o := splitImage(t, want, 100)
	if n := len(store.Volumes(o)); n != 10 {
		t.Fatalf("%d volumes, want 10", n)
	}
	for _, c := range []struct{ off, n int }{
		{0, 100},   // exactly the first volume
		{100, 100}, // exactly the second
		{50, 100},  // across one boundary
		{99, 2},    // one byte each side
		{99, 1},    // the last byte of a volume
		{100, 1},   // the first byte of the next
		{150, 250}, // across three volumes (1, 2, 3 and into 4)
		{180, 130}, // three volumes: 1 (20), 2 (100), 3 (10)
		{0, 1000},  // all ten
		{900, 100}, // exactly the last
	} {
		b := make([]byte, c.n)
		n, err := o.ReadAt(b, int64(c.off))
		if n != c.n || err != nil && !(err == io.EOF && c.off+c.n == 1000) {
			t.Errorf("ReadAt(%d at %d): %d, %v", c.n, c.off, n, err)
			continue
		}
		if !bytes.Equal(b, want[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d at %d): other bytes", c.n, c.off)
		}
	}
	if v := store.VolumeAt(o, 100); v == nil || v.Off != 100 || !strings.HasSuffix(v.Name(), "i.platter.002") {
		t.Errorf("VolumeAt(100) = %+v", v)
	}
	if v := store.VolumeAt(o, 1000); v != nil {
		t.Errorf("VolumeAt(the end) = %+v", v)
	}
}

// Volumes smaller than anything the format holds (a 64-byte header, a
// 96-byte footer) are still just bytes.
func TestSplitTiny(t *testing.T) {
	want := seq(500)
	_, o := splitImage(t, want, 7)
	if n := len(store.Volumes(o)); n != 72 {
		t.Fatalf("%d volumes, want 72", n)
	}
	b := make([]byte, 96)
	if n, err := o.ReadAt(b, 404); n != 96 || err != nil && err != io.EOF || !bytes.Equal(b, want[404:]) {
		t.Errorf("the last 96 bytes: %d, %v", n, err)
	}
}

// What sizes alone show is named at Open: a volume truncated, one that
// is too large to be the last, a missing one; one cut short after Open
// is named by ReadAt.
func TestSplitDamage(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		damage func(dir string)
		volume string
		msg    string
	}{
		{"truncated middle", func(dir string) { os.Truncate(filepath.Join(dir, "i.platter.002"), 50) }, "i.platter.002", "truncated"},
		{"last too large", func(dir string) { os.WriteFile(filepath.Join(dir, "i.platter.010"), seq(101), 0o600) }, "i.platter.010", "the last"},
		{"empty last", func(dir string) { os.Truncate(filepath.Join(dir, "i.platter.010"), 0) }, "i.platter.010", "the last"},
		{"missing middle", func(dir string) { os.Remove(filepath.Join(dir, "i.platter.004")) }, "i.platter.004", "missing"},
		{"last two swapped", func(dir string) {
			os.Rename(filepath.Join(dir, "i.platter.010"), filepath.Join(dir, "x"))
			os.Rename(filepath.Join(dir, "i.platter.009"), filepath.Join(dir, "i.platter.010"))
			os.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "i.platter.009"))
		}, "i.platter.009", "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, o := splitImage(t, seq(950), 100)
			o.Close()
			c.damage(dir)
			_, err := store.Split(store.NewDir(dir)).Open(ctx, "i.platter")
			var ve *store.VolumeError
			if !errors.As(err, &ve) || !strings.HasSuffix(ve.Volume, c.volume) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Open: %v; want a VolumeError naming %s", err, c.volume)
			}
		})
	}
	t.Run("cut short while open", func(t *testing.T) {
		dir, o := splitImage(t, seq(950), 100)
		os.Truncate(filepath.Join(dir, "i.platter.005"), 10)
		_, err := o.ReadAt(make([]byte, 300), 300)
		if err == nil || !strings.Contains(err.Error(), "i.platter.005") {
			t.Errorf("ReadAt across a volume cut short: %v", err)
		}
	})
}

// A Sink's bytes read back before Commit (what consolidate checks), with
// the volumes committed and those held.
func TestSplitReread(t *testing.T) {
	ctx := context.Background()
	for _, force := range []bool{false, true} {
		dir := t.TempDir()
		p := store.Split(store.NewDir(dir))
		if force { // replacing: every volume is held until Commit
			sink, _ := p.Create(ctx, "r.platter", store.CreateOptions{})
			sink.Write(seq(10))
			sink.Commit()
		}
		want := seq(2500)
		sink, err := p.Create(ctx, "r.platter", store.CreateOptions{Split: 1000, Force: force})
		if err != nil {
			t.Fatal(err)
		}
		sink.Write(want)
		o, err := sink.(store.Rereader).Reread()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 2500)
		if n, err := o.ReadAt(b, 0); n != 2500 || err != nil && err != io.EOF || !bytes.Equal(b, want) {
			t.Errorf("force %v: read back %d bytes, %v", force, n, err)
		}
		o.Close()
		if err := sink.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := files(t, dir); len(got) != 3 {
			t.Errorf("force %v: %v", force, got)
		}
	}
}

// A stream is written in order and only what was committed is flushed.
func TestStream(t *testing.T) {
	var out bytes.Buffer
	s := store.Stream(&out, "standard output")
	s.Write(seq(3000))
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), seq(3000)) {
		t.Error("other bytes")
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("a write after Commit")
	}
}

// List folds the volumes Open would read, and no other file that looks
// like one.
func TestSplitList(t *testing.T) {
	ctx := context.Background()
	dir, o := splitImage(t, seq(950), 100) // i.platter, .002 ... .010
	o.Close()
	os.WriteFile(filepath.Join(dir, "i.platter.2024"), []byte("notes"), 0o600)
	os.WriteFile(filepath.Join(dir, "j.platter.002"), []byte("a volume left"), 0o600)
	ents, err := store.Split(store.NewDir(dir)).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, e := range ents {
		got[e.Name] = e.Size
	}
	if len(got) != 3 || got["i.platter"] != 950 || got["i.platter.2024"] != 5 || got["j.platter.002"] != 13 {
		t.Errorf("List: %v", got)
	}
}
