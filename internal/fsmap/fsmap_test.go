package fsmap

import (
	"fmt"
	"testing"
)

// The registry is whole: every line has its names and detector, no name
// belongs to two lines (image metadata names one filesystem by it), and
// Lookup finds each filesystem by each of its names.
func TestRegistry(t *testing.T) {
	owner := map[string]string{}
	claim := func(line string, names []string) {
		if len(names) == 0 {
			t.Errorf("%s has no names", line)
		}
		for _, n := range names {
			if o, dup := owner[n]; dup {
				t.Errorf("%q is named by %s and %s", n, o, line)
			}
			owner[n] = line
		}
	}
	for _, c := range Containers {
		claim(fmt.Sprint(c.Names), c.Names)
		if c.Detect == nil {
			t.Errorf("container %v has no Detect", c.Names)
		}
	}
	for _, f := range Filesystems {
		claim(f.Title, f.Names)
		if f.Detect == nil || f.Title == "" {
			t.Errorf("filesystem %v has no Detect or no Title", f.Names)
		}
		for _, n := range f.Names {
			if got, ok := Lookup(n); !ok || got.Title != f.Title {
				t.Errorf("Lookup(%q) = %q, %v; want %q", n, got.Title, ok, f.Title)
			}
		}
	}
	for _, n := range []string{"", "raw", "lvm2", "EXT4"} {
		if _, ok := Lookup(n); ok {
			t.Errorf("Lookup(%q) finds a filesystem", n)
		}
	}
}
