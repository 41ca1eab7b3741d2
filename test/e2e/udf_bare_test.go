package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// TestUDFBare: a bare bridge .iso is listed and extracted in place, its
// UDF side, as 7z -tudf lists and extracts it.
func TestUDFBare(t *testing.T) {
	iso := filepath.Join(t.TempDir(), "bridge.iso")
	sh(t, "genisoimage", "-quiet", "-udf", "-J", "-joliet-long", "-R", "-V", "BRIDGE", "-o", iso, udfSource(t, false))
	stdout := ok(t, "ls", "-R", "--json", iso, "/")
	var all []struct {
		Path, Type string
		Size       int64
		ModTime    time.Time `json:"mtime"`
	}
	if err := json.Unmarshal([]byte(stdout), &all); err != nil {
		t.Fatal(err)
	}
	sz := udf7z(t, iso)
	if len(all) != len(sz) {
		t.Errorf("ls lists %d entries, 7z %d", len(all), len(sz))
	}
	for _, e := range all {
		w, found := sz[strings.TrimPrefix(e.Path, "/")]
		if !found || (e.Type == "dir") != w.dir || (!w.dir && e.Size != w.size) || !e.ModTime.Equal(w.mtime) {
			t.Errorf("%s: %s %d %v; 7z %+v", e.Path, e.Type, e.Size, e.ModTime, w)
		}
	}
	dest := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", iso, "/", dest)
	want := filepath.Join(t.TempDir(), "7z")
	sh(t, "7z", "x", "-tudf", "-o"+want, iso)
	tooltest.SameManifest(t, tooltest.Manifest(t, want), tooltest.Manifest(t, dest), 8)
}
