package e2e

import (
	"path/filepath"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// TestUDFBare: a bare bridge .iso is listed and extracted in place, its
// UDF side, as 7z -tudf lists and extracts it.
func TestUDFBare(t *testing.T) {
	iso := filepath.Join(t.TempDir(), "bridge.iso")
	sh(t, "genisoimage", "-quiet", "-udf", "-J", "-joliet-long", "-R", "-V", "BRIDGE", "-o", iso, udfSource(t, false))
	lsMatches7z(t, iso, iso)
	dest := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", iso, "/", dest)
	want := filepath.Join(t.TempDir(), "7z")
	sh(t, "7z", "x", "-tudf", "-o"+want, iso)
	tooltest.SameManifest(t, tooltest.Manifest(t, want), tooltest.Manifest(t, dest), 8)
}
