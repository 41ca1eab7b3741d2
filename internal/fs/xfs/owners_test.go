package xfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// ownersOf runs Owners on img and returns, for every block of the
// filesystem, the owners whose bytes overlap it ("meta:NAME",
// "file:/PATH", "dir:/PATH"), failing the test on an error or an extent
// outside the image.
func ownersOf(t *testing.T, img string, blockSize int64) map[int64]map[string]bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	at := map[int64]map[string]bool{}
	visited := map[string]bool{}
	err = Owners(f, st.Size(), func(o vfs.Owner, es []block.Extent) error {
		name := map[vfs.OwnerKind]string{vfs.OwnerFile: "file:", vfs.OwnerDir: "dir:", vfs.OwnerMeta: "meta:"}[o.Kind] + o.Path
		if visited[name] {
			t.Fatalf("%s visited twice", name)
		}
		visited[name] = true
		for _, e := range es {
			if e.Off < 0 || e.Len <= 0 || e.End() > st.Size() {
				t.Fatalf("%s: extent %d+%d outside the %d-byte image", name, e.Off, e.Len, st.Size())
			}
			for b := e.Off / blockSize; b*blockSize < e.End(); b++ {
				if at[b] == nil {
					at[b] = map[string]bool{}
				}
				at[b][name] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// blockUse is what xfs_db's blockuse says of one block: its type and
// the inode it belongs to (-1: none).
type blockUse struct {
	typ string
	ino int64
}

// xfsBlockUse runs xfs_db blockget and blockuse over every AG of img and
// returns each block's use, by linear block number (AG*agblocks+agbno).
func xfsBlockUse(t *testing.T, img string, agBlocks, agCount, agBlkLog, dBlocks int64) map[int64]blockUse {
	t.Helper()
	args := []string{"-r", "-c", "blockget -n"}
	for ag := range agCount {
		n := min(agBlocks, dBlocks-ag*agBlocks)
		args = append(args, "-c", fmt.Sprintf("fsblock %d", ag<<agBlkLog), "-c", fmt.Sprintf("blockuse -c %d", n))
	}
	out := tooltest.Run(t, "xfs_db", append(args, img)...)
	use := map[int64]blockUse{}
	re := regexp.MustCompile(`(?m)^block \d+ \((\d+)/(\d+)\) type (\w+)(?: inode (\d+))?`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		ag, _ := strconv.ParseInt(m[1], 10, 64)
		agbno, _ := strconv.ParseInt(m[2], 10, 64)
		u := blockUse{typ: m[3], ino: -1}
		if m[4] != "" {
			u.ino, _ = strconv.ParseInt(m[4], 10, 64)
		}
		use[ag*agBlocks+agbno] = u
	}
	if int64(len(use)) != dBlocks {
		t.Fatalf("xfs_db blockuse describes %d of %d blocks:\n%.2000s", len(use), dBlocks, out)
	}
	return use
}

// writeOwned fills the mounted XFS at mnt with what Owners must tell
// apart: nested directories, a directory of hundreds of entries (leaf
// and node form), a small one (short form), a file written in turns with
// another in pieces of one block (fragmented beyond what its inode holds:
// a block-map B-tree), a hard link, a reflinked copy partly rewritten,
// and a symlink. It returns each inode's owners as Owners must name
// them, "dir:/P" or "file:/P" for each of its paths (by find, through
// the kernel; the root is "dir:/").
func writeOwned(t *testing.T, mnt string, reflink bool) map[int64][]string {
	t.Helper()
	os.MkdirAll(filepath.Join(mnt, "a/b/c"), 0o755)
	os.WriteFile(filepath.Join(mnt, "a/b/c/small"), []byte("small\n"), 0o644)
	big := filepath.Join(mnt, "big dir")
	os.Mkdir(big, 0o755)
	for i := range 700 {
		os.WriteFile(filepath.Join(big, fmt.Sprintf("entry with a long name %04d", i)), []byte{byte(i)}, 0o644)
	}
	a, _ := os.Create(filepath.Join(mnt, "frag"))
	b, _ := os.Create(filepath.Join(mnt, "a/frag2"))
	piece := make([]byte, 4096)
	for i := range 120 {
		for j := range piece {
			piece[j] = byte(i + j)
		}
		a.Write(piece)
		a.Sync()
		b.Write(piece)
		b.Sync()
	}
	a.Close()
	b.Close()
	os.Link(filepath.Join(mnt, "frag"), filepath.Join(mnt, "a/b/hard link"))
	if reflink {
		tooltest.Run(t, "cp", "--reflink=always", filepath.Join(mnt, "a/frag2"), filepath.Join(mnt, "clone"))
	}
	c, _ := os.OpenFile(filepath.Join(mnt, "clone"), os.O_WRONLY|os.O_CREATE, 0o644)
	c.WriteAt(bytes.Repeat([]byte("rewritten"), 2000), 40<<10)
	c.Close()
	// A block every other 8 KiB: more extents than the inode holds, a
	// block-map B-tree.
	s, _ := os.Create(filepath.Join(mnt, "a/b/sparse"))
	for i := range int64(300) {
		s.WriteAt(piece[:1024], i*8192)
	}
	s.Close()
	os.Symlink(strings.Repeat("long/target/", 60), filepath.Join(mnt, "a/symlink"))
	tooltest.Run(t, "sync")
	paths := map[int64][]string{}
	for _, line := range strings.Split(strings.TrimSpace(tooltest.Run(t, "find", mnt, "-printf", "%i\t%y\t%P\n")), "\n") {
		f := strings.SplitN(line, "\t", 3)
		n, _ := strconv.ParseInt(f[0], 10, 64)
		kind := "file:/"
		if f[1] == "d" {
			kind = "dir:/"
		}
		paths[n] = append(paths[n], kind+f[2])
	}
	return paths
}

// TestOwners checks, block by block, what Owners says holds each block
// of an XFS written through the kernel against what xfs_db's blockuse
// says: the metadata type of each metadata block, the file or directory
// of each data, directory and block-map block (by every path find gives
// its inode, and every file whose block map xfs_db shows with a
// reflinked block), the inodes of each inode-chunk block, and nothing
// for a free one.
func TestOwners(t *testing.T) {
	for _, l := range []struct {
		name    string
		size    int64
		args    []string
		reflink bool
		v4      bool
	}{
		{"v5 reflink rmapbt", 96 << 20, []string{"-m", "reflink=1,rmapbt=1", "-i", "size=512"}, true, false},
		{"1k blocks, 4k directory blocks", 64 << 20, []string{"-b", "size=1024", "-n", "size=4096", "-m", "reflink=0"}, false, false},
		{"v4", 96 << 20, []string{"-m", "crc=0"}, false, true},
	} {
		t.Run(l.name, func(t *testing.T) {
			var img string
			var paths map[int64][]string
			if l.v4 {
				// This kernel mounts no v4 XFS: filled by mkfs.xfs -p,
				// the paths by xfs_db's ncheck.
				tree := t.TempDir()
				write(t, tree, false)
				img = mkfs(t, l.size, append(l.args, "-p", tooltest.XFSProto(t, tree))...)
				paths = ncheckPaths(t, img)
			} else {
				img = mkfs(t, l.size, l.args...)
				mnt, umount := mount(t, img, "rw")
				paths = writeOwned(t, mnt, l.reflink)
				umount()
			}
			repairClean(t, img)
			sb := xfsDB(t, img, "sb 0", "p agblocks agcount agblklog dblocks blocksize inopblog rbmino rsumino")
			bs, agBlocks, agBlkLog := sb["blocksize"], sb["agblocks"], sb["agblklog"]
			use := xfsBlockUse(t, img, agBlocks, sb["agcount"], agBlkLog, sb["dblocks"])
			got := ownersOf(t, img, bs)

			// Which block of which inode: files by path, and which
			// inodes each inode block holds.
			linear := func(fsb int64) int64 { return fsb>>agBlkLog*agBlocks + fsb&(1<<agBlkLog-1) }
			inoBlock := map[int64][]int64{}
			paths[sb["rbmino"]] = []string{"meta:realtime bitmap"}
			paths[sb["rsumino"]] = []string{"meta:realtime summary"}
			for ino := range paths {
				b := linear(ino >> sb["inopblog"])
				inoBlock[b] = append(inoBlock[b], ino)
			}
			// Reflinked blocks: every inode whose block map xfs_db
			// shows holding them.
			shared := map[int64]map[int64]bool{}
			for ino, p := range paths {
				if strings.HasPrefix(p[0], "meta:") {
					continue
				}
				out := tooltest.Run(t, "xfs_db", "-r", "-c", fmt.Sprintf("inode %d", ino), "-c", "bmap", img)
				for _, m := range regexp.MustCompile(`startblock (\d+) \(\d+/\d+\) count (\d+)`).FindAllStringSubmatch(out, -1) {
					s, _ := strconv.ParseInt(m[1], 10, 64)
					n, _ := strconv.ParseInt(m[2], 10, 64)
					for k := range n {
						b := linear(s + k)
						if shared[b] == nil {
							shared[b] = map[int64]bool{}
						}
						shared[b][ino] = true
					}
				}
			}
			seen := map[string]int{}
			wrong := 0
			for b := range sb["dblocks"] {
				u := use[b]
				var want []string
				switch u.typ {
				case "free1", "free2":
				case "sb":
					want = []string{"meta:superblock"}
					if bs > 512 {
						want = append(want, "meta:AG headers")
					}
				case "agf", "agi", "agfl":
					want = []string{"meta:AG headers"}
				case "btbno", "btcnt":
					want = []string{"meta:free space B-trees"}
				case "btino", "btfino":
					want = []string{"meta:inode B-trees"}
				case "btrmap", "btrefcnt":
					want = []string{"meta:rmap/refcount B-trees"}
				case "freelist":
					want = []string{"meta:AG free list"}
				case "log":
					want = []string{"meta:log"}
				case "inode":
					want = []string{"meta:inode chunk"}
					for _, ino := range inoBlock[b] {
						want = append(want, ownerNames(ino, paths)...)
					}
				case "data", "rldata", "dir", "btbmapd", "btbmapa", "attr", "symlink":
					inos := []int64{u.ino}
					if u.typ == "rldata" {
						inos = nil
						for ino := range shared[b] {
							inos = append(inos, ino)
						}
						if len(inos) < 2 {
							t.Fatalf("block %d: xfs_db calls it reflinked, but only inodes %v map it", b, inos)
						}
					}
					for _, ino := range inos {
						want = append(want, ownerNames(ino, paths)...)
					}
				default:
					t.Fatalf("block %d: xfs_db's type %q is not one this test knows", b, u.typ)
				}
				sort.Strings(want)
				var have []string
				for o := range got[b] {
					have = append(have, o)
				}
				sort.Strings(have)
				if strings.Join(have, "|") != strings.Join(want, "|") {
					t.Errorf("block %d (xfs_db: %s, inode %d): Owners says %q, want %q", b, u.typ, u.ino, have, want)
					if wrong++; wrong == 20 {
						t.FailNow()
					}
				}
				seen[u.typ]++
			}
			// The fixture has what it is meant to have.
			for _, typ := range []string{"sb", "btbno", "btino", "inode", "data", "dir", "log", "free2"} {
				if seen[typ] == 0 {
					t.Errorf("no block of type %s: %v", typ, seen)
				}
			}
			t.Logf("blocks by type: %v", seen)
			if l.v4 {
				return
			}
			// (xfs_db calls block-map B-tree blocks data of their file.)
			if out := tooltest.Run(t, "xfs_db", "-r", "-c", "path /a/b/sparse", "-c", "p core.format", img); !strings.Contains(out, "(btree)") {
				t.Errorf("a/b/sparse has no block-map B-tree: %s", out)
			}
			if l.reflink && (seen["rldata"] == 0 || seen["btrmap"] == 0 || seen["btrefcnt"] == 0) {
				t.Errorf("no reflinked, rmapbt or refcountbt block: %v", seen)
			}

			// The walk goes on past what it cannot read: /a's inode
			// unreadable loses /a and what is under it, not the rest
			// (/frag, whose other name is under /a, included).
			var aIno int64
			for ino, p := range paths {
				if p[0] == "dir:/a" {
					aIno = ino
				}
			}
			m := regexp.MustCompile(`\((\d+)\)`).FindStringSubmatch(tooltest.Run(t, "xfs_db", "-r", "-c", fmt.Sprintf("convert inode %d daddr", aIno), img))
			if m == nil {
				t.Fatal("xfs_db converts no inode to a daddr")
			}
			daddr, _ := strconv.ParseInt(m[1], 10, 64)
			lost := tooltest.OwnersPast(t, Owners, img, block.Extent{Off: daddr * 512, Len: 512})
			tooltest.OwnersStop(t, Owners, img)
			for _, o := range []string{"dir:/", "file:/frag", "dir:/big dir", "file:/big dir/entry with a long name 0001", "meta:inode chunk", "meta:log"} {
				if !lost[o] {
					t.Errorf("with /a's inode unreadable, Owners no longer names %s", o)
				}
			}
			for o := range lost {
				if strings.HasPrefix(o, "dir:/a") || strings.HasPrefix(o, "file:/a/") {
					t.Errorf("with /a's inode unreadable, Owners still names %s", o)
				}
			}
		})
	}
}

// ownerNames are the owners Owners must give inode ino: "dir:P" for a
// directory, else "file:P", for each of its paths.
func ownerNames(ino int64, paths map[int64][]string) []string { return paths[ino] }

// ncheckPaths returns each inode's owners as Owners must name them, by
// xfs_db's ncheck (a directory "d" it lists as "d/."), the root "dir:/".
func ncheckPaths(t *testing.T, img string) map[int64][]string {
	t.Helper()
	paths := map[int64][]string{xfsDB(t, img, "sb 0", "p rootino")["rootino"]: {"dir:/"}}
	out := tooltest.Run(t, "xfs_db", "-r", "-c", "blockget -n", "-c", "ncheck", img)
	for _, m := range regexp.MustCompile(`(?m)^\s*(\d+) (.+)$`).FindAllStringSubmatch(out, -1) {
		ino, _ := strconv.ParseInt(m[1], 10, 64)
		p := "file:/" + m[2]
		if d, ok := strings.CutSuffix(m[2], "/."); ok {
			p = "dir:/" + d
		}
		paths[ino] = append(paths[ino], p)
	}
	if len(paths) < 100 {
		t.Fatalf("xfs_db ncheck lists %d inodes:\n%.2000s", len(paths), out)
	}
	return paths
}
