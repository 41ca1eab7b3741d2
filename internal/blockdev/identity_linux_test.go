package blockdev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Identity gives the model and serial number the kernel shows for each
// disk of the machine (SCSI/SATA and NVMe under device/, virtio-blk's
// serial on the disk itself), and nothing for a file.
func TestIdentity(t *testing.T) {
	disks, _ := filepath.Glob("/sys/block/*")
	checked := 0
	for _, sys := range disks {
		name := filepath.Base(sys)
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		dev := "/dev/" + name
		if _, err := os.Stat(dev); err != nil {
			continue
		}
		attr := func(names ...string) string {
			for _, n := range names {
				if b, err := os.ReadFile(filepath.Join(sys, n)); err == nil && strings.TrimSpace(string(b)) != "" {
					return strings.TrimSpace(string(b))
				}
			}
			return ""
		}
		wantModel, wantSerial := attr("device/model"), attr("device/serial", "serial")
		model, serial := Identity(dev)
		if model != wantModel || (wantSerial != "" && serial != wantSerial) {
			t.Errorf("%s: model %q serial %q; the kernel shows %q %q", dev, model, serial, wantModel, wantSerial)
		}
		checked++
	}
	t.Logf("%d disks checked", checked)
	f := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(f, make([]byte, 4096), 0o600)
	if m, s := Identity(f); m != "" || s != "" {
		t.Errorf("a file has model %q serial %q", m, s)
	}
}
