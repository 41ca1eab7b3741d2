package exfat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/tooltest"
)

// tagged is the content of a test file whose every cluster starts with
// the file's path and the cluster's number: where exfat-fuse put each
// cluster can be read back off the image.
func tagged(path string, clusters int, cluster int64) []byte {
	var b bytes.Buffer
	for k := range clusters {
		tag := fmt.Sprintf("%s#%06d|", path, k)
		for int64(b.Len()) < int64(k+1)*cluster {
			b.WriteString(tag)
		}
		b.Truncate(int(int64(k+1) * cluster))
	}
	return b.Bytes()
}

// TestOwners checks what Owners says holds each cluster of an exFAT
// written through exfat-fuse against where exfat-fuse put things: every
// cluster that begins with a live file's tag is that file's and only
// its (files written in turns a cluster at a time: FAT chains; written
// at once: NoFatChain), one with a deleted file's tag nobody's, one
// holding a name a directory lists (UTF-16, as its entries keep it) that
// directory's; and the boot regions, the FAT, the allocation bitmap, the
// up-case table and the root directory where dump.exfat puts them.
func TestOwners(t *testing.T) {
	const cluster = 4096
	img := tooltest.Garbage(t, 64<<20)
	tooltest.Run(t, "mkfs.exfat", "-c", strconv.Itoa(cluster), img)
	mnt, umount := mount(t, img, false)
	live := map[string]int{} // path: clusters
	deleted := map[string]bool{}
	dirNames := map[string][]string{} // directory: names of its entries
	write := func(p string, clusters int) {
		if err := os.WriteFile(filepath.Join(mnt, p), tagged(p, clusters, cluster), 0o644); err != nil {
			t.Fatal(err)
		}
		live[p] = clusters
		dirNames[filepath.Dir(p)] = append(dirNames[filepath.Dir(p)], filepath.Base(p))
	}
	for _, d := range []string{"/a", "/a/b", "/a/b/c", "/big"} {
		if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
		dirNames[filepath.Dir(d)] = append(dirNames[filepath.Dir(d)], filepath.Base(d))
	}
	write("/a/b/c/deep", 3)
	write("/whole", 9)
	for i := range 200 {
		write(fmt.Sprintf("/big/f%03d", i), 1+i%3)
	}
	for i := 0; i < 200; i += 7 {
		p := fmt.Sprintf("/big/f%03d", i)
		os.Remove(filepath.Join(mnt, p))
		deleted[p] = true
		delete(live, p)
	}
	// Two files written in turns, a cluster at a time: their clusters
	// interleave, so each has a FAT chain.
	fa, _ := os.Create(filepath.Join(mnt, "a/frag1"))
	fb, _ := os.Create(filepath.Join(mnt, "a/b/frag2"))
	ta, tb := tagged("/a/frag1", 12, cluster), tagged("/a/b/frag2", 12, cluster)
	for k := range 12 {
		fa.Write(ta[k*cluster : (k+1)*cluster])
		fa.Sync()
		fb.Write(tb[k*cluster : (k+1)*cluster])
		fb.Sync()
	}
	fa.Close()
	fb.Close()
	live["/a/frag1"], live["/a/b/frag2"] = 12, 12
	dirNames["/a"] = append(dirNames["/a"], "frag1")
	dirNames["/a/b"] = append(dirNames["/a/b"], "frag2")
	umount()
	tooltest.Run(t, "fsck.exfat", "-n", img)

	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64][]string{} // by cluster-sized block of the image
	visited := map[string]bool{}
	err = Owners(bytes.NewReader(raw), int64(len(raw)), func(o vfs.Owner, es []block.Extent) error {
		name := map[vfs.OwnerKind]string{vfs.OwnerFile: "file:", vfs.OwnerDir: "dir:", vfs.OwnerMeta: "meta:"}[o.Kind] + o.Path
		if visited[name] {
			t.Fatalf("%s visited twice", name)
		}
		visited[name] = true
		for _, e := range es {
			if e.Off < 0 || e.Len <= 0 || e.End() > int64(len(raw)) {
				t.Fatalf("%s: extent %d+%d outside the image", name, e.Off, e.Len)
			}
			for b := e.Off / cluster; b*cluster < e.End(); b++ {
				got[b] = append(got[b], name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	owners := func(off int64) string {
		s := append([]string(nil), got[off/cluster]...)
		sort.Strings(s)
		return strings.Join(s, "|")
	}

	dump := tooltest.Run(t, "dump.exfat", img)
	field := func(name string) int64 {
		m := regexp.MustCompile(regexp.QuoteMeta(name) + `:\s+(\S+)`).FindStringSubmatch(dump)
		if m == nil {
			t.Fatalf("dump.exfat shows no %s:\n%s", name, dump)
		}
		n, err := strconv.ParseInt(m[1], 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ss := int64(1) << field("Sector Size Bits")
	heap, clusters := field("Cluster Heap Offset (sector offset)")*ss, field("Cluster Count")
	clusterOff := func(c int64) int64 { return heap + (c-2)*cluster }
	for _, c := range []struct {
		off  int64
		want string
	}{
		{0, "meta:boot region"},
		{field("FAT Offset(sector offset)") * ss, "meta:FAT"},
		{clusterOff(field("Bitmap start cluster")), "meta:allocation bitmap"},
		{clusterOff(field("Upcase table start cluster")), "meta:up-case table"},
		{clusterOff(field("Root Cluster (cluster offset)")), "dir:/"},
	} {
		if have := owners(c.off); have != c.want {
			t.Errorf("byte %d: Owners says %q, dump.exfat %q", c.off, have, c.want)
		}
	}

	tagRe := regexp.MustCompile(`^(/[^#]*)#(\d{6})\|`)
	utf := func(s string) []byte {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = append(b, byte(u), byte(u>>8))
		}
		return b
	}
	found := map[string]int{}
	dirClusters := map[string]int{}
	abCluster := int64(-1) // the cluster of /a/b that lists frag2
	for c := int64(2); c < clusters+2; c++ {
		off := clusterOff(c)
		b := raw[off : off+cluster]
		have := owners(off)
		if m := tagRe.FindSubmatch(b[:64]); m != nil {
			p := string(m[1])
			want := "file:" + p
			if deleted[p] {
				want = ""
			}
			if have != want {
				t.Errorf("cluster %d holds %s's cluster %s: Owners says %q, want %q", c, p, m[2], have, want)
			}
			if !deleted[p] {
				found[p]++
			}
			continue
		}
		// A file name entry in use (type 0xC1, at a 32-byte boundary)
		// that holds all of a short name.
		holds := func(n string) bool {
			name := append(utf(n), 0, 0)
			for i := 0; i < cluster; i += entrySize {
				if b[i] == typeName && bytes.HasPrefix(b[i+2:i+entrySize], name) {
					return true
				}
			}
			return false
		}
		if holds("frag2") {
			abCluster = off
		}
		for d, names := range dirNames {
			for _, n := range names {
				if holds(n) && !deleted[strings.TrimSuffix(d, "/")+"/"+n] {
					dirClusters[d]++
					if have != "dir:"+d {
						t.Errorf("cluster %d holds the entry of %q in %s: Owners says %q", c, n, d, have)
					}
					break
				}
			}
		}
	}
	for p, n := range live {
		if found[p] != n {
			t.Errorf("%s: %d of its %d clusters found tagged", p, found[p], n)
		}
	}
	if dirClusters["/big"] < 2 || dirClusters["/a/b"] == 0 || dirClusters["/"] == 0 || abCluster < 0 {
		t.Fatalf("directory clusters found by their entries' names: %v", dirClusters)
	}

	// The walk goes on past what it cannot read: /a/b's cluster
	// unreadable loses what it lists, not /a/b itself (its parent lists
	// it) or the rest.
	named := map[string]bool{}
	err = Owners(tooltest.Unreadable{R: bytes.NewReader(raw), Bad: []block.Extent{{Off: abCluster, Len: cluster}}}, int64(len(raw)), func(o vfs.Owner, _ []block.Extent) error {
		named[map[vfs.OwnerKind]string{vfs.OwnerFile: "file:", vfs.OwnerDir: "dir:", vfs.OwnerMeta: "meta:"}[o.Kind]+o.Path] = true
		return nil
	})
	if err != nil {
		t.Fatalf("Owners with /a/b's cluster unreadable: %v", err)
	}
	// It stops at visit's first error, and returns it.
	stop, calls := errors.New("stop"), 0
	err = Owners(bytes.NewReader(raw), int64(len(raw)), func(vfs.Owner, []block.Extent) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Errorf("Owners whose visit fails at once: %v after %d calls, want stop after 1", err, calls)
	}
	for _, o := range []string{"dir:/a/b", "file:/a/frag1", "file:/whole", "file:/big/f001", "meta:FAT"} {
		if !named[o] {
			t.Errorf("with /a/b's cluster unreadable, Owners no longer names %s", o)
		}
	}
	for _, o := range []string{"file:/a/b/frag2", "dir:/a/b/c", "file:/a/b/c/deep"} {
		if named[o] {
			t.Errorf("with /a/b's cluster unreadable, Owners still names %s", o)
		}
	}
}
