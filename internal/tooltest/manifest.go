package tooltest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Manifest describes every entry below root (root itself left out) by
// its slash-separated path: "dir", "link:TARGET", "file:SIZE:SHA256" or,
// for anything else, "other:MODE".
func Manifest(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "link:" + l
		case fi.IsDir():
			m[rel] = "dir"
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			m[rel] = fmt.Sprintf("file:%d:%x", n, h.Sum(nil))
		default:
			m[rel] = "other:" + fi.Mode().Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return m
}

// SameManifest fails the test unless got lists exactly want's entries,
// each as want describes it, and want lists at least least entries. It
// names the first ten differences.
func SameManifest(t testing.TB, want, got map[string]string, least int) {
	t.Helper()
	trim := func(s string) string { return s[:min(len(s), 40)] }
	bad := 0
	for k, v := range want {
		if got[k] != v && bad < 10 {
			t.Errorf("%s: want %s, got %q", k, trim(v), trim(got[k]))
			bad++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && bad < 10 {
			t.Errorf("%s: unexpected", k)
			bad++
		}
	}
	if len(want) < least {
		t.Errorf("only %d entries compared", len(want))
	}
}
