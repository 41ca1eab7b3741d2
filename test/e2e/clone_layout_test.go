package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// clone --layout of the GPT fixture (ESP FAT32, ext4, NTFS, an unknown
// partition) onto a disk half its size (fit) and twice its size (grow,
// partition 2 taking the new space), each first with --plan: what
// restore --layout gives (checkLayout: sgdisk -v, each filesystem's
// checker, every file, UUIDs, labels and GUIDs), and the same as create +
// restore --layout of the same disk: the same partitions, the same GPT
// bytes (both copies), the same file trees. --plan writes nothing; the
// source is never written.
func TestCloneLayout(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	st, _ := os.Stat(disk)
	sum := sh(t, "sha256sum", disk)
	img := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	for _, c := range []struct {
		name string
		size int64
		args []string
	}{
		{"fit", st.Size() / 2, []string{"--layout", "fit"}},
		{"grow", st.Size() * 2, []string{"--layout", "grow", "--grow-partition", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := sizedFile(t, c.size)
			out := ok(t, append(append([]string{"clone", "--json", "--plan"}, c.args...), disk, target)...)
			var plan struct {
				Source     string `json:"source"`
				Layout     string `json:"layout"`
				Partitions []struct {
					Index   int    `json:"index"`
					NewSize int64  `json:"new_size"`
					Resize  string `json:"resize"`
				} `json:"partitions"`
			}
			if err := json.Unmarshal([]byte(out), &plan); err != nil || plan.Source != disk || plan.Layout != c.name || len(plan.Partitions) != 4 {
				t.Errorf("--plan --json: %v\n%s", err, out)
			}
			var ts syscall.Stat_t
			if syscall.Stat(target, &ts); ts.Blocks != 0 {
				t.Errorf("--plan wrote %d blocks to the target", ts.Blocks)
			}

			ok(t, append(append([]string{"clone", "--progress", "none"}, c.args...), disk, target)...)
			checkLayout(t, disk, target, c.name, c.size)

			restored := sizedFile(t, c.size)
			ok(t, append(append([]string{"restore", "--progress", "none"}, c.args...), img, restored)...)
			if a, b := sfdiskDump(t, restored), sfdiskDump(t, target); a != b {
				t.Errorf("sfdisk -d of clone and restore differ:\n%s\n---\n%s", a, b)
			}
			sameBytes(t, restored, target, 0, 34*512, "MBR and primary GPT")
			sameBytes(t, restored, target, c.size-33*512, 33*512, "backup GPT")
			parts := sfdiskParts(t, target)
			trees := map[string]func(testing.TB, string) string{"fat32": fatTree, "ext4": extTree, "ntfs": ntfsTree}
			for n, fs := range map[int]string{1: "fat32", 2: "ext4", 3: "ntfs"} {
				tree := trees[fs]
				sameTree(t, tree(t, extract(t, restored, parts[n])), tree(t, extract(t, target, parts[n])))
				if a, b := fsSizeOf(t, fs, extract(t, restored, parts[n])), fsSizeOf(t, fs, extract(t, target, parts[n])); a != b {
					t.Errorf("partition %d (%s): %d bytes after clone, %d after restore", n, fs, b, a)
				}
			}
			sameBytes(t, restored, target, parts[4].start, parts[4].size, "the unknown partition")
		})
	}
	if sh(t, "sha256sum", disk) != sum {
		t.Error("clone --layout changed the source")
	}
}

// fsSizeOf is the size the filesystem fs in img says it has; FAT32 by
// its boot sector's sector count.
func fsSizeOf(t *testing.T, fs, img string) int64 {
	if fs == "fat32" {
		b := readAt(t, img, 512, 0)
		return int64(uint32(b[32])|uint32(b[33])<<8|uint32(b[34])<<16|uint32(b[35])<<24) * int64(uint16(b[11])|uint16(b[12])<<8)
	}
	return fsSize(t, fs, img)
}

// What clone --layout refuses, before anything is written: a target too
// small for the data (naming the partition and the shortfall); a larger
// or smaller device without --layout (as restore does: the sizes and the
// choices); --layout fit of a source whose filesystem is mounted
// read-write (its shrink would not be of the instant the copy is).
func TestCloneLayoutRefusals(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	st, _ := os.Stat(disk)
	sum := sh(t, "sha256sum", disk)

	small := sizedFile(t, 48<<20)
	writeAt(t, small, []byte("untouched"), 0)
	_, stderr, code := run(t, "clone", "--progress", "none", "--layout", "fit", disk, small)
	if code == 0 || !strings.Contains(stderr, "bytes too small") || !strings.Contains(stderr, "partition") {
		t.Errorf("fit onto 48 MiB: exit %d, %q; want a refusal naming the partition and the shortfall", code, stderr)
	}
	if !bytes.Equal(readAt(t, small, 9, 0), []byte("untouched")) {
		t.Error("the refused target was written")
	}

	larger := loop(t, sparseFile(t, filepath.Join(dir, "larger.img"), st.Size()*2))
	smaller := loop(t, sparseFile(t, filepath.Join(dir, "smaller.img"), st.Size()/2))
	for dev, says := range map[string][]string{
		larger:  {"larger than", "--layout grow", "nothing was written", fmt.Sprint(st.Size() * 2)},
		smaller: {"smaller than", "--layout fit clones onto it", "nothing was written", fmt.Sprint(st.Size() / 2)},
	} {
		_, stderr, code := run(t, "clone", "--yes", "--progress", "none", disk, dev)
		if code != 2 {
			t.Errorf("%s without --layout: exit %d, want 2\n%s", dev, code, stderr)
		}
		for _, s := range says {
			if !strings.Contains(stderr, s) {
				t.Errorf("%s without --layout: the refusal does not say %q:\n%s", dev, s, stderr)
			}
		}
	}
	for _, f := range []string{filepath.Join(dir, "larger.img"), filepath.Join(dir, "smaller.img")} {
		var ts syscall.Stat_t
		if syscall.Stat(f, &ts); ts.Blocks != 0 {
			t.Errorf("a refused clone wrote %d blocks to %s", ts.Blocks, f)
		}
	}

	// The source's ext4 mounted read-write.
	src := filepath.Join(dir, "src.img")
	sh(t, "cp", "--sparse=always", disk, src)
	srcDev := loop(t, src)
	p := sfdiskParts(t, src)[2]
	sh(t, "addpart", srcDev, "2", fmt.Sprint(p.start/512), fmt.Sprint(p.size/512))
	mnt := t.TempDir()
	sh(t, "mount", srcDev+"p2", mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	target := sizedFile(t, st.Size()/2)
	_, stderr, code = run(t, "clone", "--yes", "--progress", "none", "--layout", "fit", srcDev, target)
	if code != 2 || !strings.Contains(stderr, "mounted read-write at "+mnt) || !strings.Contains(stderr, "--layout fit") {
		t.Errorf("fit of a mounted source: exit %d\n%s", code, stderr)
	}
	var ts syscall.Stat_t
	if syscall.Stat(target, &ts); ts.Blocks != 0 {
		t.Errorf("a refused clone wrote %d blocks to the target", ts.Blocks)
	}
	exec.Command("umount", mnt).Run()
	if sh(t, "sha256sum", disk) != sum {
		t.Error("a refused clone changed the source")
	}
}

// A disk whose one ext4 partition is mounted read-write and written to,
// cloned live with --layout grow onto a file twice its size: the live
// clone copies it in place as of one instant, then the table is written
// for the larger disk and ext4 grown on the target. The target checks
// clean, ext4 fills its partition and holds the files as they were.
func TestCloneLayoutGrowLive(t *testing.T) {
	dir := t.TempDir()
	src := sparseFile(t, filepath.Join(dir, "src.img"), 128<<20)
	sh(t, "sgdisk", "-n", "1:2048:0", "-t", "1:8300", "-c", "1:root", src)
	dev := loop(t, src)
	p := sfdiskParts(t, src)[1]
	sh(t, "addpart", dev, "1", fmt.Sprint(p.start/512), fmt.Sprint(p.size/512))
	sh(t, "mkfs.ext4", "-q", "-L", "live", dev+"p1")
	mnt := t.TempDir()
	sh(t, "mount", dev+"p1", mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for i := range 20 {
		os.WriteFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)), bytes.Repeat([]byte{byte(i)}, 100<<10*(i+1)), 0o644)
	}
	os.Symlink("f01", filepath.Join(mnt, "link"))

	target := sizedFile(t, 256<<20)
	out := ok(t, "clone", "--json", "--progress", "none", "--layout", "grow", dev, target)
	var s struct {
		Layout   string `json:"layout"`
		Snapshot *struct {
			Method string `json:"method"`
		} `json:"snapshot"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Layout != "grow" || s.Snapshot == nil || s.Snapshot.Method == "none" {
		t.Errorf("clone --json: %v\n%s", err, out)
	}
	if out := sh(t, "sgdisk", "-v", target); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	parts := sfdiskParts(t, target)
	if parts[1].start != p.start || parts[1].size < p.size+120<<20 {
		t.Errorf("partition 1 at %+v, was %+v: did not grow in place", parts[1], p)
	}
	want := t.TempDir()
	sh(t, "cp", "-a", mnt+"/.", want)
	os.RemoveAll(filepath.Join(want, "lost+found"))
	fs := extract(t, target, parts[1])
	checkPartition(t, fs, "ext4", want)
	if got := fsSize(t, "ext4", fs); got < parts[1].size*95/100 {
		t.Errorf("ext4 is %d bytes in a %d-byte partition", got, parts[1].size)
	}
	if blkidTag(t, fs, "LABEL") != "live" {
		t.Error("the label changed")
	}
}
