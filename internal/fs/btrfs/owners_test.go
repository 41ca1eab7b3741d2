package btrfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// owned is what Owners says of an image: every owner's extents.
type owned map[string][]block.Extent

// at returns the owners of byte off ("meta:NAME", "file:/P", "dir:/P").
func (o owned) at(off int64) []string {
	var out []string
	for name, es := range o {
		for _, e := range es {
			if e.Off <= off && off < e.End() {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func ownersOf(t *testing.T, img string) owned {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	o := owned{}
	err = Owners(f, st.Size(), func(ow vfs.Owner, es []block.Extent) error {
		name := map[vfs.OwnerKind]string{vfs.OwnerFile: "file:", vfs.OwnerDir: "dir:", vfs.OwnerMeta: "meta:"}[ow.Kind] + ow.Path
		for _, e := range es {
			if e.Off < 0 || e.Len <= 0 || e.End() > st.Size() {
				t.Fatalf("%s: extent %d+%d outside the %d-byte image", name, e.Off, e.Len, st.Size())
			}
		}
		if _, ok := o[name]; ok {
			t.Fatalf("%s visited twice", name)
		}
		o[name] = es
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// mapLogical returns the device offsets btrfs-map-logical gives for
// logical byte l of img, one per mirror.
func mapLogical(t *testing.T, img string, l int64) []int64 {
	t.Helper()
	out := tooltest.Run(t, "btrfs-map-logical", "-l", strconv.FormatInt(l, 10), "-b", "4096", img)
	var phys []int64
	for _, m := range regexp.MustCompile(`logical (\d+) physical (\d+)`).FindAllStringSubmatch(out, -1) {
		// It maps from the start of what it finds at or after l.
		at, _ := strconv.ParseInt(m[1], 10, 64)
		p, _ := strconv.ParseInt(m[2], 10, 64)
		if at != l {
			t.Fatalf("btrfs-map-logical -l %d maps logical %d:\n%s", l, at, out)
		}
		phys = append(phys, p)
	}
	if len(phys) == 0 {
		t.Fatalf("btrfs-map-logical -l %d: no mirror:\n%s", l, out)
	}
	return phys
}

// writeOwners fills the mounted btrfs at mnt: nested directories, a
// directory of hundreds of entries (several leaves), a small (inline)
// file, two files written in turns (fragmented), a hard link, a
// reflinked copy partly rewritten, a compressed file, a preallocated
// one, a subvolume and a snapshot of it whose file then changes.
func writeOwners(t *testing.T, mnt string) {
	t.Helper()
	os.MkdirAll(filepath.Join(mnt, "a/b/c"), 0o755)
	os.WriteFile(filepath.Join(mnt, "a/b/c/small"), []byte("small\n"), 0o644)
	big := filepath.Join(mnt, "big dir")
	os.Mkdir(big, 0o755)
	for i := range 600 {
		os.WriteFile(filepath.Join(big, fmt.Sprintf("entry with a long name %04d", i)), []byte{byte(i)}, 0o644)
	}
	a, _ := os.Create(filepath.Join(mnt, "frag"))
	b, _ := os.Create(filepath.Join(mnt, "a/frag2"))
	piece := make([]byte, 16<<10)
	for i := range 24 {
		for j := range piece {
			piece[j] = byte(i*7 + j*13)
		}
		a.Write(piece)
		a.Sync()
		b.Write(piece)
		b.Sync()
	}
	a.Close()
	b.Close()
	os.Link(filepath.Join(mnt, "frag"), filepath.Join(mnt, "a/b/hard link"))
	tooltest.Run(t, "cp", "--reflink=always", filepath.Join(mnt, "a/frag2"), filepath.Join(mnt, "clone"))
	c, _ := os.OpenFile(filepath.Join(mnt, "clone"), os.O_WRONLY, 0)
	c.WriteAt(bytes.Repeat([]byte("rewritten"), 3000), 100<<10)
	c.Close()
	z := filepath.Join(mnt, "compressed")
	os.WriteFile(z, nil, 0o644)
	tooltest.Run(t, "btrfs", "property", "set", z, "compression", "zstd")
	os.WriteFile(z, bytes.Repeat([]byte("compress me, "), 40000), 0o644)
	tooltest.Run(t, "fallocate", "-l", "1M", filepath.Join(mnt, "prealloc"))
	tooltest.Run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "sub"))
	os.MkdirAll(filepath.Join(mnt, "sub/in"), 0o755)
	os.WriteFile(filepath.Join(mnt, "sub/in/f"), bytes.Repeat([]byte{1, 2, 3, 5, 8, 13, 21}, 60000), 0o644)
	tooltest.Run(t, "sync")
	tooltest.Run(t, "btrfs", "subvolume", "snapshot", filepath.Join(mnt, "sub"), filepath.Join(mnt, "snap"))
	f, _ := os.OpenFile(filepath.Join(mnt, "sub/in/f"), os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte("changed after the snapshot"), 1000), 200<<10)
	f.Close()
	tooltest.Run(t, "sync")
}

// TestOwners checks what Owners says holds the bytes of a btrfs written
// through the kernel against btrfs's own tools: for the first and last
// block of every extent of every file (filefrag, through the kernel),
// each of its copies (btrfs-map-logical) belongs to exactly the files
// logical-resolve names for it (by subvolume, through subvolid-resolve
// and inode-resolve); every tree block dump-tree lists, on each copy, is
// metadata of its tree and of no file, and those holding a directory's
// entries are that directory's too; the superblocks and system chunks
// are named. Data in single and DUP chunks, metadata DUP.
func TestOwners(t *testing.T) {
	// (Not --mixed: btrfs-map-logical 6.2 finds no extent in its chunks.)
	for _, args := range [][]string{nil, {"-d", "dup"}} {
		t.Run(strings.Join(append([]string{"mkfs.btrfs"}, args...), " "), func(t *testing.T) { owners(t, args) })
	}
}

// owners is TestOwners on a btrfs made by mkfs.btrfs with args.
func owners(t *testing.T, args []string) {
	img := mkfs(t, 300<<20, args...)
	mnt, umount := tooltest.Mount(t, img, "rw")
	writeOwners(t, mnt)
	umount()
	checkClean(t, img)
	got := ownersOf(t, img)
	mnt, _ = tooltest.Mount(t, img, "ro")

	// Files: what logical-resolve says holds each extent's ends.
	subvol := map[string]string{"5": ""}
	resolved := map[string][]string{}
	paths := func(l int64) []string {
		var out []string
		for _, m := range regexp.MustCompile(`inode (\d+) offset \d+ root (\d+)`).FindAllStringSubmatch(
			tooltest.Run(t, "btrfs", "inspect-internal", "logical-resolve", "-P", strconv.FormatInt(l, 10), mnt), -1) {
			ino, root := m[1], m[2]
			sub, ok := subvol[root]
			if !ok {
				sub = "/" + strings.TrimSpace(tooltest.Run(t, "btrfs", "inspect-internal", "subvolid-resolve", root, mnt))
				subvol[root] = sub
			}
			k := root + "/" + ino
			if _, ok := resolved[k]; !ok {
				for _, p := range strings.Split(strings.TrimSpace(tooltest.Run(t, "btrfs", "inspect-internal", "inode-resolve", ino, mnt+sub)), "\n") {
					resolved[k] = append(resolved[k], "file:"+strings.TrimPrefix(p, mnt))
				}
			}
			out = append(out, resolved[k]...)
		}
		sort.Strings(out)
		return slices.Compact(out)
	}
	checked, shared, compressed := 0, 0, 0
	re := regexp.MustCompile(`(?m)^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):(.*)$`)
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < 4096 {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(tooltest.Run(t, "filefrag", "-v", p), -1) {
			first, _ := strconv.ParseInt(m[1], 10, 64)
			last, _ := strconv.ParseInt(m[2], 10, 64)
			ends := []int64{first, last}
			if strings.Contains(m[3], "encoded") {
				// Compressed: filefrag gives the data's length, not
				// that of the (smaller) extent on disk.
				ends = ends[:1]
				compressed++
			}
			for _, blk := range ends {
				l := blk * 4096
				want := paths(l)
				if len(want) == 0 {
					t.Fatalf("%s: logical-resolve names no file at logical %d", p, l)
				}
				if len(want) > 1 {
					shared++
				}
				for _, ph := range mapLogical(t, img, l) {
					if have := got.at(ph); strings.Join(have, "|") != strings.Join(want, "|") {
						t.Errorf("%s: logical %d at byte %d: Owners says %q, logical-resolve %q", p, l, ph, have, want)
					}
					checked++
				}
			}
		}
		return nil
	})
	if checked < 100 || shared < 10 || compressed == 0 {
		t.Errorf("checked %d file blocks, %d of them shared, %d compressed: the fixture is not what it should be", checked, shared, compressed)
	}

	// Tree blocks, by dump-tree.
	// The top-level subvolume's directories by inode (the others'
	// numbers repeat in each subvolume).
	dirIno := map[string]string{}
	top, _ := os.Stat(mnt)
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.IsDir() {
			return err
		}
		if fi.Sys().(*syscall.Stat_t).Dev != top.Sys().(*syscall.Stat_t).Dev {
			return filepath.SkipDir
		}
		dirIno[fmt.Sprint(fi.Sys().(*syscall.Stat_t).Ino)] = "dir:/" + strings.TrimPrefix(strings.TrimPrefix(p, mnt), "/")
		return nil
	})
	trees := map[string]string{"ROOT_TREE": "root", "EXTENT_TREE": "extent", "CHUNK_TREE": "chunk", "DEV_TREE": "device",
		"CSUM_TREE": "checksum", "UUID_TREE": "uuid", "FREE_SPACE_TREE": "free-space", "DATA_RELOC_TREE": "data relocation",
		"QUOTA_TREE": "quota", "BLOCK_GROUP_TREE": "block-group"}
	dumpOut := tooltest.Run(t, "btrfs", "inspect-internal", "dump-tree", img)
	blockRe := regexp.MustCompile(`^(?:leaf|node) (\d+) (?:level \d+ )?items \d+ free space \d+ generation \d+ owner (\S+)`)
	itemRe := regexp.MustCompile(`^\s+item \d+ key \((\d+) DIR_INDEX `)
	blocks, dirLeaves := 0, 0
	var cur int64 = -1
	var curWant []string
	inSub := false // a block of another subvolume's tree: its directories are not checked
	checkBlock := func() {
		if cur < 0 {
			return
		}
		for _, ph := range mapLogical(t, img, cur) {
			have := got.at(ph)
			if inSub {
				have = slices.DeleteFunc(have, func(o string) bool {
					return strings.HasPrefix(o, "dir:/sub") || strings.HasPrefix(o, "dir:/snap")
				})
			}
			if strings.Join(have, "|") != strings.Join(curWant, "|") {
				t.Errorf("tree block at logical %d, byte %d: Owners says %q, want %q", cur, ph, have, curWant)
			}
		}
		blocks++
	}
	for _, line := range strings.Split(dumpOut, "\n") {
		if m := blockRe.FindStringSubmatch(line); m != nil {
			checkBlock()
			cur, _ = strconv.ParseInt(m[1], 10, 64)
			name, ok := trees[m[2]]
			if ok {
				name += " tree"
			}
			inSub = regexp.MustCompile(`^\d+$`).MatchString(m[2])
			if m[2] == "FS_TREE" || inSub {
				name, ok = "file trees", true
			}
			if !ok {
				t.Fatalf("dump-tree names tree %s, which this test does not know", m[2])
			}
			curWant = []string{"meta:metadata (" + name + ")"}
			if name == "chunk tree" {
				curWant = append(curWant, "meta:system chunk")
			}
			continue
		}
		if m := itemRe.FindStringSubmatch(line); m != nil && cur >= 0 && !inSub {
			if d, ok := dirIno[m[1]]; ok && !slices.Contains(curWant, d) {
				curWant = append(curWant, d)
				sort.Strings(curWant)
				dirLeaves++
			}
		}
	}
	checkBlock()
	if blocks < 10 || dirLeaves < 3 {
		t.Errorf("dump-tree lists %d tree blocks, %d holding the directories' entries", blocks, dirLeaves)
	}
	// The superblock and its mirror at 64 MiB; the system chunks'
	// stripes, from the superblock's copy of them.
	for _, off := range []int64{64 << 10, 64 << 20} {
		if have := got.at(off + 100); strings.Join(have, "|") != "meta:superblock" {
			t.Errorf("byte %d: Owners says %q, want the superblock", off+100, have)
		}
	}
	sys := regexp.MustCompile(`length (\d+) owner \d+ stripe_len \d+ type SYSTEM\|DUP[\s\S]*?stripe 0 devid 1 offset (\d+)[\s\S]*?stripe 1 devid 1 offset (\d+)`).FindStringSubmatch(
		tooltest.Run(t, "btrfs", "inspect-internal", "dump-super", "-f", img))
	if sys == nil {
		t.Fatal("dump-super shows no DUP system chunk")
	}
	// The walk goes on past what it cannot read: with both copies of
	// the root of subvolume sub's tree unreadable, sub's files are lost,
	// not the snapshot's (which shares all but that block) or the rest.
	subID := strings.TrimSpace(tooltest.Run(t, "btrfs", "inspect-internal", "rootid", filepath.Join(mnt, "sub")))
	m := regexp.MustCompile(`(?m)^(?:leaf|node) (\d+) `).FindStringSubmatch(tooltest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", subID, img))
	if m == nil {
		t.Fatalf("dump-tree -t %s shows no tree block", subID)
	}
	subRoot, _ := strconv.ParseInt(m[1], 10, 64)
	var bad []block.Extent
	for _, ph := range mapLogical(t, img, subRoot) {
		bad = append(bad, block.Extent{Off: ph, Len: 4096})
	}
	lost := tooltest.OwnersPast(t, Owners, img, bad...)
	tooltest.OwnersStop(t, Owners, img)
	for _, o := range []string{"file:/snap/in/f", "dir:/snap/in", "file:/frag", "file:/a/b/hard link", "dir:/big dir", "meta:metadata (extent tree)", "meta:superblock"} {
		if !lost[o] {
			t.Errorf("with subvolume sub's root unreadable, Owners no longer names %s", o)
		}
	}
	for o := range lost {
		if strings.HasPrefix(o, "file:/sub/") || strings.HasPrefix(o, "dir:/sub/") {
			t.Errorf("with subvolume sub's root unreadable, Owners still names %s", o)
		}
	}

	length, _ := strconv.ParseInt(sys[1], 10, 64)
	for _, s := range sys[2:] {
		off, _ := strconv.ParseInt(s, 10, 64)
		// The chunk's last byte: not the chunk tree's.
		if have := got.at(off + length - 1); !slices.Contains(have, "meta:system chunk") {
			t.Errorf("system chunk stripe at byte %d: Owners says %q", off, have)
		}
	}
}
