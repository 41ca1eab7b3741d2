package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A qcow2 written to a pipe allocates no cluster that is all
// zero, even inside the used blocks of a stored chunk (a file of zeros
// between two files of random bytes, on an ext4 made over garbage), as
// a qcow2 written to a file does: qemu-img map shows data only where
// the raw restore holds a non-zero byte, none in the file of zeros, and
// qemu-img compare finds both identical to the raw restore.
func TestConvertStreamZeros(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	garbage := make([]byte, 48<<20)
	rand.Read(garbage)
	if err := os.WriteFile(disk, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", disk)
	// Written in this order, ext4 allocates them one after the other:
	// the zeros share their chunk with random bytes.
	const zeroLen = 1 << 20
	files := []struct {
		name string
		data []byte
	}{
		{"before.bin", randomBytes(256 << 10)},
		{"zeros.bin", make([]byte, zeroLen)},
		{"after.bin", randomBytes(256 << 10)},
	}
	// Through the kernel: debugfs's write leaves a file of zeros sparse.
	mnt := t.TempDir()
	sh(t, "mount", "-o", "loop", disk, mnt)
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(mnt, f.name), f.data, 0o600); err != nil {
			exec.Command("umount", mnt).Run()
			t.Fatal(err)
		}
		sh(t, "sync", "-f", filepath.Join(mnt, f.name)) // allocated in this order
	}
	sh(t, "umount", mnt)
	zeroAt := firstBlock(t, disk, "zeros.bin") * 4096
	if end := firstBlock(t, disk, "before.bin")*4096 + 256<<10; end != zeroAt {
		t.Fatalf("the fixture's files are not one after the other (before.bin ends at byte %d, zeros.bin starts at %d)", end, zeroAt)
	}

	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	raw := filepath.Join(dir, "restored.raw")
	ok(t, "restore", "--progress", "none", img, raw)
	rawBytes, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rawBytes[zeroAt:zeroAt+zeroLen], make([]byte, zeroLen)) {
		t.Fatal("the restore does not hold zeros.bin's zeros where debugfs says it is")
	}

	for _, how := range []string{"file", "pipe"} {
		t.Run(how, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "disk.qcow2")
			if how == "file" {
				ok(t, "convert", "--progress", "none", img, out)
			} else {
				f, err := os.Create(out)
				if err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(platter, "convert", "--progress", "none", "--format", "qcow2", img, "-")
				var stderr strings.Builder
				// Not f itself: platter would see a regular file and
				// write it in place. Through a pipe it streams.
				cmd.Stdout, cmd.Stderr = struct{ io.Writer }{f}, &stderr
				err = cmd.Run()
				f.Close()
				if err != nil {
					t.Fatalf("convert to stdout: %v\n%s", err, stderr.String())
				}
			}
			sh(t, "qemu-img", "check", "-f", "qcow2", out)
			sh(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, out)
			const cluster = 64 << 10
			var mapped int64
			for _, e := range qemuMap(t, out) {
				if !e.Data {
					continue
				}
				mapped += e.Length
				for c := e.Start; c < e.Start+e.Length; c += cluster {
					end := min(c+cluster, int64(len(rawBytes)))
					if bytes.Equal(rawBytes[c:end], make([]byte, end-c)) {
						t.Errorf("qemu-img map: cluster at byte %d is allocated and all zero in the restore", c)
					}
				}
				for c := ceilTo(zeroAt, cluster); c+cluster <= zeroAt+zeroLen; c += cluster {
					if c >= e.Start && c < e.Start+e.Length {
						t.Errorf("qemu-img map: the cluster at byte %d, inside zeros.bin, is data", c)
					}
				}
			}
			if mapped == 0 {
				t.Fatal("qemu-img map: no data at all")
			}
			t.Logf("%s: %d bytes allocated", how, mapped)
		})
	}
}

func ceilTo(n, unit int64) int64 { return (n + unit - 1) / unit * unit }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// firstBlock is the physical block of the first block of name in the
// ext4 image, as debugfs says.
func firstBlock(t *testing.T, disk, name string) int64 {
	t.Helper()
	out := strings.TrimSpace(sh(t, "debugfs", "-R", "bmap "+name+" 0", disk))
	fields := strings.Fields(out)
	n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("debugfs bmap %s: %q", name, out)
	}
	return n
}

type qemuMapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuMap is qemu-img map --output=json of a qcow2.
func qemuMap(t *testing.T, path string) []qemuMapEntry {
	t.Helper()
	b, err := exec.Command("qemu-img", "map", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		t.Fatalf("qemu-img map %s: %v", path, err)
	}
	var m []qemuMapEntry
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("qemu-img map %s: %v\n%s", path, err, b)
	}
	return m
}
