package imageset

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/seal"
)

// Images of one SourceKey form a set; an image made from one of them
// joins it whatever its own key; sets and their images are oldest first.
func TestGroup(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 12, 0, 0, 0, time.UTC) }
	mk := func(name, serial, source string, d int, parent *Image) *Image {
		im := &Image{Path: name, ID: name, InDir: true, Parent: parent,
			Meta: &image.Metadata{DiskSerial: serial, Source: source, Host: "h", SourceSize: 1 << 30, Created: day(d)}}
		if parent != nil {
			im.Meta.Parent = parent.ID
		}
		return im
	}
	a1 := mk("a1", "SER-A", "/dev/sda", 2, nil)
	a2 := mk("a2", "SER-A", "/dev/sdb", 4, a1) // same serial, other name
	b1 := mk("b1", "", "/dev/sdc", 1, nil)
	b2 := mk("b2", "", "/dev/sdd", 3, b1) // other name, no serial: joins by its parent
	c1 := mk("c1", "", "/dev/sdc", 5, nil)
	c1.Meta.SourceSize = 2 << 30 // same name, another size: another disk
	sets := group([]*Image{a2, c1, b2, a1, b1})
	var got [][]string
	for _, s := range sets {
		var names []string
		for _, im := range s.Images {
			names = append(names, im.Path)
		}
		got = append(got, names)
	}
	want := [][]string{{"b1", "b2"}, {"a1", "a2"}, {"c1"}}
	if len(got) != len(want) {
		t.Fatalf("sets %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("sets %v, want %v", got, want)
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("sets %v, want %v", got, want)
			}
		}
	}
	if n := sets[1].Newest(); n != a2 {
		t.Errorf("the newest of set a is %s", n.Path)
	}
}

func TestShort(t *testing.T) {
	if s := Short("0123456789abcdef"); s != "01234567" {
		t.Errorf("Short = %q", s)
	}
	if s := Short(""); s != "" {
		t.Errorf("Short of nothing = %q", s)
	}
}

// A failure to unlock is locked, whatever wraps it; damage is not.
func TestIsLocked(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("a.platter: %w", seal.ErrNoSecret), true},
		{&seal.NoSecretError{Pass: true}, true},
		{fmt.Errorf("a.platter: %w", errors.Join(seal.ErrNoIdentity, seal.ErrWrongPassphrase)), true},
		{fmt.Errorf("a.platter: %w", image.ErrDamaged), false},
		{nil, false},
	} {
		if got := IsLocked(tc.err); got != tc.want {
			t.Errorf("IsLocked(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
