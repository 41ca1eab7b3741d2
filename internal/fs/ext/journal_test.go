package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/platter-dev/platter/internal/tooltest"
)

// journalImage makes a 16 MiB ext4 of 1 KiB blocks without checksums
// holding a file "f" of three blocks, and returns its path.
func journalImage(t testing.TB) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), pattern(3000, 1), 0o644)
	img := tooltest.Garbage(t, 16<<20)
	tooltest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "1024", "-O", "^metadata_csum", "-d", dir, img)
	return img
}

// freeBlock returns a block debugfs says is free, from the end of the
// filesystem.
func freeBlock(t testing.TB, img string) int64 {
	for b := int64(16000); b > 1000; b-- {
		out := debugfs(t, img, false, fmt.Sprintf("testb %d", b))
		if strings.Contains(strings.Join(mapValues(out), ""), "not in use") {
			return b
		}
	}
	t.Fatal("no free block")
	return 0
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestJournalDamagedInode: a journal transaction (written with debugfs's
// journal_write) carries a copy of an inode table block whose inode maps
// a block the bitmaps call free. After replay, e2fsck takes that block for
// the file's, and the file reads its bytes: the copy must hold them.
func TestJournalDamagedInode(t *testing.T) {
	img := journalImage(t)
	z := freeBlock(t, img)
	data := pattern(1024, 99)
	patch(t, img, z*1024, data)

	// Where inode /f lives, and its first extent in i_block.
	out := debugfs(t, img, false, "imap /f")["imap /f"]
	m := regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("imap: %s", out)
	}
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	off, _ := strconv.ParseInt(m[2], 16, 64)
	itb := readAt(t, img, blk*1024, 1024)
	ino := itb[off:]
	le := binary.LittleEndian
	if le.Uint16(ino[iBlockOff:]) != extentMagic || le.Uint16(ino[iBlockOff+2:]) != 1 {
		t.Fatalf("inode /f has no one-extent tree")
	}
	// The damage: its one extent now maps block z, one block long.
	e := ino[iBlockOff+12:]
	le.PutUint16(e[4:], 1)
	le.PutUint16(e[6:], uint16(z>>32))
	le.PutUint32(e[8:], uint32(z))
	le.PutUint32(ino[4:], 1024)
	copyFile := filepath.Join(t.TempDir(), "itable")
	os.WriteFile(copyFile, itb, 0o644)
	debugfs(t, img, true, "jo", fmt.Sprintf("jw -b %d %s", blk, copyFile), "jc")
	if !strings.Contains(tooltest.Run(t, "dumpe2fs", "-h", img), "needs_recovery") {
		t.Fatal("debugfs left no journal to recover")
	}

	u, err := detectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warning: %s", u.Warning)
	if u.Untrusted || u.Warning == "" {
		t.Fatalf("untrusted %v, warning %q: want a warning and a widened map", u.Untrusted, u.Warning)
	}
	kept := tooltest.KeepOnly(t, img, tooltest.LoadUsage(t, u))
	a, b := replayed(t, img, false), replayed(t, kept, false)
	if pa, pb := fsckProblems(t, a), fsckProblems(t, b); strings.Join(pa, "\n") != strings.Join(pb, "\n") {
		t.Errorf("e2fsck after replay finds\n%s\nin the source and\n%s\nin the copy", strings.Join(pa, "\n"), strings.Join(pb, "\n"))
	}
	fa, fb := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	runCodes(t, []int{0}, "debugfs", "-R", "dump /f "+fa, a)
	runCodes(t, []int{0}, "debugfs", "-R", "dump /f "+fb, b)
	x, _ := os.ReadFile(fa)
	y, _ := os.ReadFile(fb)
	if !bytes.Equal(x, data) {
		t.Fatalf("the replayed source's /f is not the block the journal's inode maps")
	}
	if !bytes.Equal(x, y) {
		t.Errorf("the replayed copy's /f differs from the source's")
	}
}

// TestJournalRevoke: blocks a later committed transaction revokes are not
// replayed from earlier ones; the map still holds every copy's home.
func TestJournalRevoke(t *testing.T) {
	img := journalImage(t)
	two := filepath.Join(t.TempDir(), "two")
	os.WriteFile(two, pattern(2048, 5), 0o644)
	debugfs(t, img, true, "jo", "jw -b 9000,9001 "+two, "jw -r 9000", "jc")
	sb := readAt(t, img, superOff, superSize)
	f, _ := parseSuper(sb, 16<<20)
	r, _ := os.Open(img)
	defer r.Close()
	j, err := f.readJournal(r, 16<<20, sb)
	if err != nil {
		t.Fatal(err)
	}
	if j.committed != 2 || len(j.copies[9000]) != 1 || len(j.copies[9001]) != 1 {
		t.Fatalf("committed %d, copies %v", j.committed, j.copies)
	}
	if _, ok := j.replayed[9000]; ok {
		t.Error("block 9000 is revoked by a later transaction, yet replayed")
	}
	if _, ok := j.replayed[9001]; !ok {
		t.Error("block 9001 is not replayed")
	}
	// e2fsck replays the same: 9001 gets the copy, 9000 keeps its bytes.
	before := readAt(t, img, 9000*1024, 1024)
	rep := replayed(t, img, false)
	if !bytes.Equal(readAt(t, rep, 9001*1024, 1024), pattern(2048, 5)[1024:]) || !bytes.Equal(readAt(t, rep, 9000*1024, 1024), before) {
		t.Error("e2fsck replays otherwise")
	}
}

// FuzzJournal feeds the log scan journals: it ends, without a panic, on
// any bytes. Seeded from journals debugfs wrote (descriptor, revoke and
// commit blocks, 32- and 64-bit tags).
func FuzzJournal(f *testing.F) {
	for _, feat := range []string{"^64bit", "64bit"} {
		dir := f.TempDir()
		img := filepath.Join(dir, "fs.img")
		os.WriteFile(img, make([]byte, 4<<20), 0o644)
		tooltest.Run(f, "mkfs.ext4", "-q", "-F", "-b", "1024", "-J", "size=1", "-O", "^metadata_csum,"+feat, img)
		blob := filepath.Join(dir, "blob")
		os.WriteFile(blob, pattern(3072, 3), 0o644)
		debugfs(f, img, true, "jo", "jw -b 300,301,302 "+blob, "jw -r 301", "jw -b 400 "+blob, "jc")
		jfile := filepath.Join(dir, "journal")
		debugfs(f, img, false, "dump <8> "+jfile)
		b, err := os.ReadFile(jfile)
		if err != nil || len(b) < 16<<10 {
			f.Fatalf("dump the journal: %v (%d bytes)", err, len(b))
		}
		f.Add(b[:8<<10])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		j := &journal{r: bytes.NewReader(b), bs: 1024, copies: map[uint64][]jcopy{}, replayed: map[uint64]jcopy{}}
		if j.scan(int64(len(b)), 1<<20) != nil {
			return
		}
		// What a replay reads through, for every block it writes.
		view := &overlay{r: bytes.NewReader(make([]byte, 1<<20)), j: j.r, bs: 1024, blocks: j.replayed}
		buf := make([]byte, 3000)
		for home := range j.replayed {
			view.ReadAt(buf, int64(home)*1024-100)
		}
	})
}

// FuzzDetectJournal runs Detect on a filesystem whose journal needs
// recovery, with the fuzzed bytes over the start of its journal: the
// scan, the replayed view, the walk of the inodes it carries and the map
// end without a panic. Seeded from a journal debugfs wrote with copies of
// a block bitmap and an inode table block.
func FuzzDetectJournal(f *testing.F) {
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), pattern(3000, 1), 0o644)
	img := filepath.Join(dir, "fs.img")
	os.WriteFile(img, make([]byte, 4<<20), 0o644)
	tooltest.Run(f, "mkfs.ext4", "-q", "-F", "-b", "1024", "-J", "size=1", "-O", "^metadata_csum", "-d", dir, img)
	out := debugfs(f, img, false, "stat <8>", "imap /f", "stats")
	m := regexp.MustCompile(`\(0-\d+\):(\d+)-`).FindStringSubmatch(out["stat <8>"])
	it := regexp.MustCompile(`located at block (\d+)`).FindStringSubmatch(out["imap /f"])
	bm := regexp.MustCompile(`block bitmap at (\d+)`).FindStringSubmatch(out["stats"])
	if m == nil || it == nil || bm == nil {
		f.Fatalf("debugfs: %v", out)
	}
	jstart, _ := strconv.ParseInt(m[1], 10, 64)
	for _, b := range []string{it[1], bm[1]} {
		n, _ := strconv.ParseInt(b, 10, 64)
		os.WriteFile(filepath.Join(dir, b), readAt(f, img, n*1024, 1024), 0o644)
		debugfs(f, img, true, "jo", "jw -b "+b+" "+filepath.Join(dir, b), "jc")
	}
	base, _ := os.ReadFile(img)
	// The journal superblock and two transactions of one block each.
	f.Add(bytes.Clone(base[jstart*1024 : jstart*1024+8<<10]))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &patched{base: base, at: jstart * 1024, b: b[:min(len(b), 64<<10)]}
		tooltest.FuzzUsage(Detect(r, int64(len(base))))
	})
}

// patched reads base with b over it from byte at.
type patched struct {
	base []byte
	at   int64
	b    []byte
}

func (p *patched) ReadAt(q []byte, off int64) (int, error) {
	n, err := bytes.NewReader(p.base).ReadAt(q, off)
	if s, e := max(off, p.at), min(off+int64(n), p.at+int64(len(p.b))); s < e {
		copy(q[s-off:e-off], p.b[s-p.at:e-p.at])
	}
	return n, err
}
