package tooltest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/block"
)

// XFSProto writes a prototype file (mkfs.xfs -p) for the tree at dir:
// its directories, files and symlinks, owned by root. mkfs.xfs fills a
// filesystem by it where the kernel cannot mount the filesystem to fill
// it (v4, which a kernel built without CONFIG_XFS_SUPPORT_V4 refuses).
// It returns the file's path.
func XFSProto(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	var walk func(dir, indent string)
	walk = func(dir, indent string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.Type()&os.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				fmt.Fprintf(&b, "%s%s l--777 0 0 %s\n", indent, e.Name(), target)
			case e.IsDir():
				fmt.Fprintf(&b, "%s%s d--755 0 0\n", indent, e.Name())
				walk(p, indent+" ")
				fmt.Fprintf(&b, "%s$\n", indent)
			default:
				fmt.Fprintf(&b, "%s%s ---644 0 0 %s\n", indent, e.Name(), p)
			}
		}
	}
	walk(dir, " ")
	b.WriteString("$\n")
	proto := filepath.Join(t.TempDir(), "proto")
	if err := os.WriteFile(proto, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return proto
}

// XFSFileExtents returns the bytes of the XFS in img that xfs_db maps to
// the regular files (not empty) of tree, the tree img holds. Fewer than
// least files, or a file xfs_db maps no extent to, fail the test.
func XFSFileExtents(t testing.TB, img, tree string, least int) []block.Extent {
	t.Helper()
	var agBlocks, bs int64
	sb := Run(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p agblocks blocksize", img)
	fmt.Sscanf(regexp.MustCompile(`agblocks = \d+`).FindString(sb), "agblocks = %d", &agBlocks)
	fmt.Sscanf(regexp.MustCompile(`blocksize = \d+`).FindString(sb), "blocksize = %d", &bs)
	args := []string{"-r"}
	files := 0
	filepath.Walk(tree, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			rel, _ := filepath.Rel(tree, p)
			args = append(args, "-c", "path /"+rel, "-c", "bmap")
			files++
		}
		return err
	})
	out := Run(t, "xfs_db", append(args, img)...)
	exts := regexp.MustCompile(`data offset \d+ startblock \d+ \((\d+)/(\d+)\) count (\d+)`).FindAllStringSubmatch(out, -1)
	if files < least || len(exts) < files || agBlocks == 0 || bs == 0 {
		t.Fatalf("xfs_db maps %d extents for %d files (AGs of %d blocks of %d bytes):\n%s", len(exts), files, agBlocks, bs, out)
	}
	var bytes []block.Extent
	for _, e := range exts {
		ag, _ := strconv.ParseInt(e[1], 10, 64)
		b, _ := strconv.ParseInt(e[2], 10, 64)
		n, _ := strconv.ParseInt(e[3], 10, 64)
		bytes = append(bytes, block.Extent{Off: (ag*agBlocks + b) * bs, Len: n * bs})
	}
	return bytes
}
