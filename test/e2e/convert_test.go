package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An image's disk converted to every virtual disk format is the disk a
// restore gives, byte for byte, as qemu-img reads it (and checks it);
// partition N alone is that partition; formats laid out in one pass
// stream to standard output; the output is private and an existing one
// is kept unless --force.
func TestConvert(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	raw := filepath.Join(dir, "restored.raw")
	ok(t, "restore", "--progress", "none", img, raw)

	for _, c := range []struct{ format, file, qemu string }{
		{"qcow2", "disk.qcow2", "qcow2"},
		{"vhdx", "disk.vhdx", "vhdx"},
		{"vhd", "disk.vhd", "vpc"},
		{"vhd-fixed", "fixed.vhd", "vpc"},
		{"vmdk", "disk.vmdk", "vmdk"},
		{"vmdk-stream", "stream.vmdk", "vmdk"},
		{"raw", "disk.img", "raw"},
	} {
		t.Run(c.format, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), c.file)
			args := []string{"convert", "--progress", "none"}
			if strings.Contains(c.format, "-") {
				args = append(args, "--format", c.format)
			}
			ok(t, append(args, img, out)...)
			if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v (%v), want 0600", out, st.Mode().Perm(), err)
			}
			switch c.qemu {
			case "qcow2", "vhdx", "vmdk":
				sh(t, "qemu-img", "check", "-f", c.qemu, out)
			}
			sh(t, "qemu-img", "compare", "-f", "raw", "-F", c.qemu, raw, out)
		})
	}

	t.Run("partition", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "p2.qcow2")
		ok(t, "convert", "--progress", "none", img+":2", out)
		p2 := extract(t, raw, sfdiskParts(t, disk)[2])
		sh(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", p2, out)
	})

	t.Run("stdout", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "piped.qcow2")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(platter, "convert", "--progress", "none", "--format", "qcow2", img, "-")
		var stderr strings.Builder
		// Through a pipe, as `| ssh` gives: f itself is a regular file,
		// which platter would write in place.
		cmd.Stdout, cmd.Stderr = struct{ io.Writer }{f}, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("convert to stdout: %v\n%s", err, stderr.String())
		}
		f.Close()
		sh(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, out)
		if _, stderr, code := run(t, "convert", "--format", "vmdk", img, "-"); code != 2 || !strings.Contains(stderr, "cannot be written to standard output") {
			t.Errorf("vmdk to stdout: exit %d, %q", code, stderr)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "exists.qcow2")
		os.WriteFile(out, []byte("keep"), 0o644)
		if _, stderr, code := run(t, "convert", img, out); code != 2 || !strings.Contains(stderr, "--force") {
			t.Errorf("existing output: exit %d, %q", code, stderr)
		}
		if b, _ := os.ReadFile(out); string(b) != "keep" {
			t.Error("the existing output was written")
		}
		if _, stderr, code := run(t, "convert", img, filepath.Join(t.TempDir(), "disk.xyz")); code != 2 || !strings.Contains(stderr, "--format") {
			t.Errorf("unknown extension: exit %d, %q", code, stderr)
		}
	})
}
