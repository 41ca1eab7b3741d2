package e2e

import (
	"bytes"
	crand "crypto/rand"
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// scatterFS is a 256 MiB ext4 holding about 80 MB of files: 60 of 0.5-2
// MB and 40 small ones (4-64 KiB) for deleting.
func scatterFS(t *testing.T) *incFS {
	dir := t.TempDir()
	f := &incFS{t: t, file: sparseFile(t, filepath.Join(dir, "fs.img"), 256<<20), mnt: filepath.Join(dir, "mnt")}
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", f.file)
	os.Mkdir(f.mnt, 0o755)
	rng := mrand.New(mrand.NewSource(21))
	f.change(func(root string) {
		for i := range 60 {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("f%02d", i)), 512<<10+rng.Int63n(1536<<10))
		}
		for i := range 40 {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("s%02d", i)), 4<<10+rng.Int63n(60<<10))
		}
	})
	return f
}

// scatter makes dozens of small changes through the kernel's ext4: 12
// files of 4-256 KiB created, 12 appended to, 12 rewritten in place
// (at any offset), 12 small ones deleted. It returns the bytes written.
func scatter(t *testing.T, root string, rng *mrand.Rand, round int) []byte {
	var wrote bytes.Buffer
	data := func(n int) []byte {
		b := make([]byte, n)
		crand.Read(b[:n/2]) // half random, half text: compressible, not trivially
		copy(b[n/2:], strings.Repeat(fmt.Sprintf("round %d line of text %d\n", round, n), n/20+1))
		wrote.Write(b)
		return b
	}
	size := func() int { return 4<<10 + rng.Intn(252<<10) }
	for i := range 12 {
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("new%d-%02d", round, i)), data(size()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		f, err := os.OpenFile(filepath.Join(root, fmt.Sprintf("f%02d", (i*5+round)%60)), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data(size() / 2)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for i := range 12 {
		path := filepath.Join(root, fmt.Sprintf("f%02d", (i*5+2+round)%60))
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		n := min(int64(size()), fi.Size())
		overwriteWith(t, path, data(int(n)), rng.Int63n(fi.Size()-n+1))
	}
	for i := range 12 {
		if err := os.Remove(filepath.Join(root, fmt.Sprintf("s%02d", round*12+i))); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "sync")
	return wrote.Bytes()
}

func overwriteWith(t *testing.T, path string, b []byte, off int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// zstdSize is the size of b compressed by the zstd tool at level 3.
func zstdSize(t *testing.T, b []byte) int64 {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "changed"), filepath.Join(dir, "changed.zst")
	if err := os.WriteFile(in, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, "zstd", "-3", "-q", "-f", "-o", out, in)
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// sizeBudget fails the test if img, an incremental or differential of
// full on a disk of diskBytes, is more than 1.5x the changed bytes
// compressed with zstd -3, plus 64 KiB and its index (an entry per
// chunk).
func sizeBudget(t *testing.T, img, full string, changed []byte, diskBytes int64) {
	t.Helper()
	j := info(t, img)
	c := zstdSize(t, changed)
	limit := c*3/2 + 64<<10 + (diskBytes/j.ChunkSize)*64
	t.Logf("%s: %d bytes; changed %d bytes, %d compressed; limit %d; full image %d", filepath.Base(img), j.ImageBytes, len(changed), c, limit, info(t, full).ImageBytes)
	if j.ImageBytes > limit {
		t.Errorf("%s is %d bytes, more than 1.5x the %d changed bytes compressed (%d) + 64 KiB + the index: %d", filepath.Base(img), j.ImageBytes, len(changed), c, limit)
	}
}

// Issue 21, item 1: after scattered small changes, an incremental (and a
// differential) is at most 1.5x the changed bytes compressed plus 64 KiB
// and its index, because changed chunks are stored as the 4 KiB
// sub-blocks that differ from the parent's. Every image of the chain
// (full → inc1 → inc2, a delta over a delta, and a differential)
// verifies, restores to exactly its files and checks clean; ls and
// extract read them; consolidating and pruning keep them exact.
func TestSubChunkDeltaSize(t *testing.T) {
	fs := scatterFS(t)
	set := t.TempDir()
	full := filepath.Join(set, "full.platter")
	ok(t, "create", "--progress", "none", fs.file, full)
	trees := map[string]string{full: fs.keep()}
	rng := mrand.New(mrand.NewSource(1))

	budget := func(img string, changed []byte) { sizeBudget(t, img, full, changed, 256<<20) }

	var changed1, changed2 []byte
	fs.change(func(root string) { changed1 = scatter(t, root, rng, 0) })
	inc1 := filepath.Join(set, "inc1.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, fs.file, inc1)
	trees[inc1] = fs.keep()
	budget(inc1, changed1)

	fs.change(func(root string) { changed2 = scatter(t, root, rng, 1) })
	inc2 := filepath.Join(set, "inc2.platter")
	ok(t, "create", "--progress", "none", "--incremental", inc1, fs.file, inc2)
	trees[inc2] = fs.keep()
	budget(inc2, changed2)
	diff := filepath.Join(set, "diff.platter")
	ok(t, "create", "--progress", "none", "--differential", full, fs.file, diff)
	trees[diff] = trees[inc2]
	budget(diff, append(append([]byte(nil), changed1...), changed2...))
	if out := ok(t, "info", inc2); !strings.Contains(out, "stored as sub-block deltas") {
		t.Errorf("info of inc2 does not show delta chunks:\n%s", out)
	}

	for _, img := range []string{full, inc1, inc2, diff} {
		t.Run(filepath.Base(img), func(t *testing.T) {
			ok(t, "verify", img)
			checkRestores(t, img, trees[img])
			// Through the image's view: extract every file.
			got := filepath.Join(t.TempDir(), "x")
			ok(t, "extract", img, "/", got)
			os.RemoveAll(filepath.Join(got, "lost+found"))
			sameTree(t, trees[img], got)
		})
	}

	// Restore from a pipe: delta frames are kept as they pass and laid
	// over the parents' chunks at the end.
	t.Run("stdin", func(t *testing.T) {
		back := filepath.Join(t.TempDir(), "back.img")
		if o, e, code := piped(t, inc2, "restore", "--yes", "--progress", "none", "--search", set, "-", back); code != 0 {
			t.Fatalf("restore - of inc2: exit %d\n%s%s", code, o, e)
		}
		sh(t, "e2fsck", "-fn", back)
		root, err := mountImage(t, back, "ro")
		if err != nil {
			t.Fatal(err)
		}
		got := t.TempDir()
		sh(t, "cp", "-a", root+"/.", got)
		os.RemoveAll(filepath.Join(got, "lost+found"))
		sameTree(t, trees[inc2], got)
		if o, e, code := piped(t, inc2, "verify", "--search", set, "-"); code != 0 {
			t.Fatalf("verify - of inc2: exit %d\n%s%s", code, o, e)
		}
	})

	// A flipped byte in a delta frame is a damaged chunk, named; a
	// damaged chunk of the parent makes the delta over it damaged too.
	t.Run("damage", func(t *testing.T) {
		j := info(t, inc1, "--chunks")
		var at, frame, size, length int64 = -1, 0, 0, 0
		for _, c := range j.Chunks {
			if c.Delta {
				at, frame, size, length = c.Offset, c.FrameOffset, c.FrameSize, c.Length
				break
			}
		}
		if at < 0 {
			t.Fatal("inc1 has no delta chunk")
		}
		where := fmt.Sprintf("bytes %d-%d", at, at+length-1)
		dir := t.TempDir()
		for _, p := range []string{full, inc1} {
			sh(t, "cp", "-a", p, dir)
		}
		bad := filepath.Join(dir, "inc1.platter")
		b := readAt(t, bad, 1, frame+size-10)
		writeAt(t, bad, []byte{b[0] ^ 0x20}, frame+size-10)
		o, e, code := run(t, "verify", bad)
		if code != 3 || !strings.Contains(o+e, where) {
			t.Errorf("verify of a damaged delta frame: exit %d, want 3 naming %s:\n%s%s", code, where, o, e)
		}
		writeAt(t, bad, b, frame+size-10)
		ok(t, "verify", bad)

		var pframe int64 = -1
		for _, c := range info(t, full, "--chunks").Chunks {
			if c.Offset == at && c.FrameOffset > 0 {
				pframe = c.FrameOffset
			}
		}
		if pframe < 0 {
			t.Fatal("the delta's base chunk has no frame in full")
		}
		pf := filepath.Join(dir, "full.platter")
		pb := readAt(t, pf, 1, pframe+200)
		writeAt(t, pf, []byte{pb[0] ^ 0x20}, pframe+200)
		o, e, code = run(t, "verify", bad)
		if code != 3 || !strings.Contains(o+e, where) || !strings.Contains(o+e, "delta over") {
			t.Errorf("verify of a delta over a damaged parent chunk: exit %d, want 3 naming %s as a delta over a damaged chunk:\n%s%s", code, where, o, e)
		}
		t.Logf("verify said:\n%s%s", o, e)
	})

	// Consolidate inc2 into a full image, on a copy: its deltas over
	// inc1's and full's chunks are made whole.
	t.Run("consolidate", func(t *testing.T) {
		dir := t.TempDir()
		sh(t, "cp", "-a", set+"/.", dir)
		c2 := filepath.Join(dir, "inc2.platter")
		ok(t, "consolidate", c2)
		for _, p := range []string{"full.platter", "inc1.platter", "diff.platter"} {
			os.Remove(filepath.Join(dir, p))
		}
		ok(t, "verify", c2)
		checkRestores(t, c2, trees[inc2])
	})
	// Prune inc1 (the middle): inc2 is merged onto full.
	t.Run("prune", func(t *testing.T) {
		dir := t.TempDir()
		for _, p := range []string{full, inc1, inc2} {
			sh(t, "cp", "-a", p, dir)
		}
		ok(t, "prune", "--keep-last", "1", dir)
		left, _ := filepath.Glob(filepath.Join(dir, "*.platter"))
		if len(left) != 1 {
			t.Fatalf("prune left %v", left)
		}
		ok(t, "verify", left[0])
		checkRestores(t, left[0], trees[inc2])
	})
}

// The same scattered changes on XFS (512 MiB, about 80 MB of files; its
// log and B-tree blocks move with them): the incremental is within the
// same budget, and restores to exactly the files, xfs_repair clean.
func TestSubChunkDeltaSizeXFS(t *testing.T) {
	dir := t.TempDir()
	file := xfsGarbage(t, filepath.Join(dir, "fs.img"), 512<<20)
	sh(t, "mkfs.xfs", "-q", "-f", "-K", file)
	rng := mrand.New(mrand.NewSource(21))
	mnt, umount := xfsMount(t, file, "rw")
	for i := range 60 {
		writeRandom(t, filepath.Join(mnt, fmt.Sprintf("f%02d", i)), 512<<10+rng.Int63n(1536<<10))
	}
	for i := range 40 {
		writeRandom(t, filepath.Join(mnt, fmt.Sprintf("s%02d", i)), 4<<10+rng.Int63n(60<<10))
	}
	umount()
	full := filepath.Join(dir, "full.platter")
	ok(t, "create", "--progress", "none", file, full)

	mnt, umount = xfsMount(t, file, "rw")
	changed := scatter(t, mnt, rng, 0)
	want := xfsManifest(t, mnt)
	umount()
	inc := filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, file, inc)
	sizeBudget(t, inc, full, changed, 512<<20)
	ok(t, "verify", inc)
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", inc, back)
	xfsRepairClean(t, back)
	m, _ := xfsMount(t, back, "ro,nouuid")
	got := xfsManifest(t, m)
	if len(got) != len(want) {
		t.Errorf("%d entries restored, %d written", len(got), len(want))
	}
	xfsSameFiles(t, want, got)
}

// The same scattered changes on NTFS, written through ntfs-3g (256 MiB,
// about 80 MB of files; the MFT records, $Bitmap and $LogFile move with
// them): the incremental is within the same budget, and restores to
// exactly the files, which ntfs-3g reads back and ntfsfix -n finds clean.
func TestSubChunkDeltaSizeNTFS(t *testing.T) {
	dir := t.TempDir()
	file := sparseFile(t, filepath.Join(dir, "ntfs.img"), 256<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", file)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	ntfs := func(img, opts string, fn func(root string)) {
		t.Helper()
		sh(t, "ntfs-3g", "-o", opts, img, mnt)
		defer sh(t, "fusermount", "-u", mnt)
		fn(mnt)
	}
	rng := mrand.New(mrand.NewSource(21))
	ntfs(file, "rw", func(root string) {
		for i := range 60 {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("f%02d", i)), 512<<10+rng.Int63n(1536<<10))
		}
		for i := range 40 {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("s%02d", i)), 4<<10+rng.Int63n(60<<10))
		}
	})
	full := filepath.Join(dir, "full.platter")
	ok(t, "create", "--progress", "none", file, full)

	var changed []byte
	want := t.TempDir()
	ntfs(file, "rw", func(root string) {
		changed = scatter(t, root, rng, 0)
		sh(t, "cp", "-r", root+"/.", want)
	})
	inc := filepath.Join(dir, "inc.platter")
	ok(t, "create", "--progress", "none", "--incremental", full, file, inc)
	sizeBudget(t, inc, full, changed, 256<<20)
	ok(t, "verify", inc)
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", inc, back)
	sh(t, "ntfsfix", "-n", back)
	got := t.TempDir()
	ntfs(back, "ro", func(root string) { sh(t, "cp", "-r", root+"/.", got) })
	sameTree(t, want, got)
}

// An encrypted incremental of scattered 4 KiB writes stores sealed delta
// frames; it restores exactly from the file and from a pipe (where the
// sealed delta frames are kept as they pass), and verifies.
func TestSubChunkDeltaEncrypted(t *testing.T) {
	k := newEncKeys(t, "correct horse battery staple")
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.raw")
	sh(t, "sh", "-c", "head -c 12M /dev/urandom > "+src)
	set := t.TempDir()
	full, inc := filepath.Join(set, "full.platter"), filepath.Join(set, "inc.platter")
	encCreate(t, k, src, full, append(k.pw(), "--encrypt", "--chunk-size", "1M")...)
	for i := range 10 {
		sh(t, "sh", "-c", fmt.Sprintf("head -c 4096 /dev/urandom | dd of=%s bs=4096 seek=%d conv=notrunc status=none", src, i*301))
	}
	encCreate(t, k, src, inc, append(k.pw(), "--incremental", full)...)
	deltas := 0
	for _, c := range info(t, inc, append(k.pw(), "--chunks")...).Chunks {
		if c.Delta {
			deltas++
		}
	}
	if deltas == 0 {
		t.Fatal("the incremental holds no delta chunk: the test proves nothing")
	}
	if fi, _ := os.Stat(inc); fi.Size() > 512<<10 {
		t.Errorf("an incremental of ten 4 KiB writes is %d bytes", fi.Size())
	}
	ok(t, append(k.pw(), "verify", inc)...)
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, append(k.pw(), "restore", "--progress", "none", "--yes", inc, back)...)
	sh(t, "cmp", src, back)
	os.Remove(back)
	if out, e, code := piped(t, inc, append(append([]string{"--search", set}, k.pw()...), "restore", "--progress", "none", "--yes", "-", back)...); code != 0 {
		t.Fatalf("restore - of an encrypted incremental: exit %d\n%s%s", code, out, e)
	}
	sh(t, "cmp", src, back)
}
