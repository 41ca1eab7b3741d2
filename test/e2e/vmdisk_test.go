package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVMDisks images VM disk files that qemu-img makes from a raw disk
// (issue 18). Each must be imaged by the same used blocks as the raw
// disk itself: its image restores to a disk identical, byte for byte,
// to the restore of the raw disk's image, which is judged by sfdisk,
// e2fsck, fsck.fat and the files read back.
func TestVMDisks(t *testing.T) {
	disk := fixture(t, "vm-disk.sh")
	dir := t.TempDir()
	want, wantInfo := createRestore(t, dir, disk, "raw")
	judgeVMDisk(t, disk, want)

	for _, c := range []struct{ name, file string }{
		{"qcow2", "disk.qcow2"},
		{"qcow2 compressed", "disk-c.qcow2"},
		{"vhd dynamic", "disk.vhd"},
		{"vhd fixed", "disk-fixed.vhd"},
		{"vhdx", "disk.vhdx"},
		{"vmdk monolithicSparse", "disk.vmdk"},
		{"vmdk streamOptimized", "disk-stream.vmdk"},
		{"vmdk monolithicFlat", "disk-flat.vmdk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := filepath.Join(dir, c.file)
			sh(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, vmConvertArgs[c.name]...), disk, vm)...)
			got, gotInfo := createRestore(t, dir, vm, strings.ReplaceAll(c.name, " ", "-"))
			sameVMImage(t, wantInfo, gotInfo)
			sameFile(t, want, got, "the restores of the raw disk's image and of the "+c.name+"'s")
		})
	}

	t.Run("platter convert's own files", func(t *testing.T) {
		// The raw disk's image converted back to each VM format, then
		// imaged again: the same disk once more.
		for _, f := range []string{"qcow2", "vhdx", "vhd", "vhd-fixed", "vmdk", "vmdk-stream"} {
			vm := filepath.Join(dir, "converted-"+f)
			ok(t, "convert", "--format", f, filepath.Join(dir, "raw.platter"), vm)
			got, gotInfo := createRestore(t, dir, vm, "converted-"+f)
			if f == "vhd-fixed" || f == "vhd" {
				// Their disk may be rounded up (to a whole MiB for
				// Azure): the raw disk's bytes, then zeros.
				gotInfo.SourceSize = wantInfo.SourceSize
				os.Truncate(got, wantInfo.SourceSize)
			}
			sameVMImage(t, wantInfo, gotInfo)
			sameFile(t, want, got, "the restores of the raw disk's image and of its "+f+" conversion")
		}
	})

	t.Run("qcow2 over a raw backing file", func(t *testing.T) {
		// The recipe, the write landing in partition 3 (raw, so
		// every byte of it is kept): judged against qemu-img's own
		// reading of the qcow2 as a raw disk.
		top := filepath.Join(dir, "top.qcow2")
		sh(t, "qemu-img", "create", "-f", "qcow2", "-b", disk, "-F", "raw", top)
		sh(t, "qemu-io", "-c", "write -P 0x55 45M 64k", top)
		flat := filepath.Join(dir, "top-flat.raw")
		sh(t, "qemu-img", "convert", "-O", "raw", top, flat)
		want, wantInfo := createRestore(t, dir, flat, "top-flat")
		got, gotInfo := createRestore(t, dir, top, "top")
		sameVMImage(t, wantInfo, gotInfo)
		sameFile(t, want, got, "the restores of qemu's reading of the qcow2 and of the qcow2")
		if b := readAt(t, got, 4, 45<<20); !bytes.Equal(b, []byte{0x55, 0x55, 0x55, 0x55}) {
			t.Errorf("the write over the backing file is not in the restored disk: % x", b)
		}
	})

	t.Run("damaged", func(t *testing.T) {
		vm := filepath.Join(dir, "cut.qcow2")
		sh(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, vm)
		st, _ := os.Stat(vm)
		if err := os.Truncate(vm, st.Size()/2); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(dir, "cut.platter")
		_, stderr, code := run(t, "create", vm, img)
		if code != 3 || !strings.Contains(stderr, "qcow2") || !strings.Contains(stderr, "past the end of the file") || !strings.Contains(stderr, "at byte") {
			t.Errorf("a truncated qcow2: exit %d, %q; want 3 and the structure and byte named", code, stderr)
		}
		if matches, _ := filepath.Glob(img + "*"); len(matches) > 0 {
			t.Errorf("left behind: %v", matches)
		}
		// A backing file that is a device is refused, not read.
		evil := filepath.Join(dir, "evil.qcow2")
		sh(t, "qemu-img", "create", "-f", "qcow2", "-u", "-b", "/dev/zero", "-F", "raw", evil, "64M")
		_, stderr, code = run(t, "create", evil, img)
		if code != 1 || !strings.Contains(stderr, "/dev/zero") || !strings.Contains(stderr, "refused") {
			t.Errorf("a backing file /dev/zero: exit %d, %q; want 1 and a refusal", code, stderr)
		}
	})
}

// vmConvertArgs are qemu-img convert's options for each case. VHDs are
// made with force_size, so that their disk is the raw disk's size, not
// rounded to a CHS geometry.
var vmConvertArgs = map[string][]string{
	"qcow2":                 {"-O", "qcow2"},
	"qcow2 compressed":      {"-c", "-O", "qcow2"},
	"vhd dynamic":           {"-O", "vpc", "-o", "subformat=dynamic,force_size=on"},
	"vhd fixed":             {"-O", "vpc", "-o", "subformat=fixed,force_size=on"},
	"vhdx":                  {"-O", "vhdx"},
	"vmdk monolithicSparse": {"-O", "vmdk", "-o", "subformat=monolithicSparse"},
	"vmdk streamOptimized":  {"-O", "vmdk", "-o", "subformat=streamOptimized"},
	"vmdk monolithicFlat":   {"-O", "vmdk", "-o", "subformat=monolithicFlat"},
}

// createRestore images source, restores the image into a new file and
// returns the file and the image's info.
func createRestore(t *testing.T, dir, source, name string) (string, infoJSON) {
	t.Helper()
	img := filepath.Join(dir, name+".platter")
	ok(t, "create", source, img)
	back := filepath.Join(dir, name+"-restored.raw")
	ok(t, "restore", img, back)
	return back, info(t, img)
}

// judgeVMDisk judges the restore of the raw disk's image with real
// tools: the same table, clean filesystems holding the fixture's files,
// the raw partition byte for byte.
func judgeVMDisk(t *testing.T, disk, restored string) {
	t.Helper()
	if a, b := sfdiskDump(t, disk), sfdiskDump(t, restored); a != b {
		t.Fatalf("sfdisk -d differs:\n%s\n---\n%s", a, b)
	}
	parts := sfdiskParts(t, restored)
	checkPartition(t, extract(t, restored, parts[1]), "ext4", disk+".files/p1")
	checkPartition(t, extract(t, restored, parts[2]), "fat16", disk+".files/p2")
	sameBytes(t, disk, restored, parts[3].start, parts[3].size, "partition 3 (raw)")
	sameBytes(t, disk, restored, 0, 1<<20, "the first MiB")
}

// sameVMImage fails unless an image of a VM disk file describes the same
// disk and used blocks as the image of the raw disk it came from.
func sameVMImage(t *testing.T, want, got infoJSON) {
	t.Helper()
	type part struct {
		Index       int
		Start, Size int64
		Filesystem  string
		UsedBytes   int64
	}
	list := func(j infoJSON) string {
		var ps []part
		for _, p := range j.Partitions {
			ps = append(ps, part{p.Index, p.Start, p.Size, p.Filesystem, p.UsedBytes})
		}
		b, _ := json.Marshal(struct {
			Size  int64
			Table string
			Parts []part
		}{j.SourceSize, j.Table, ps})
		return string(b)
	}
	if a, b := list(want), list(got); a != b {
		t.Errorf("the VM disk's image describes another disk than the raw disk's:\n raw %s\n  vm %s", a, b)
	}
}
