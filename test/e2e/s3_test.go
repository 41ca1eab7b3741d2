package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/store/s3/s3test"
)

// s3Server starts MinIO on loopback and points platter at it through the
// AWS_* environment, as a user would.
func s3Server(t *testing.T) *s3test.Server {
	t.Helper()
	srv := s3test.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return srv
}

// An image kept in a bucket is used like a local file by every command:
// create, info, verify, restore (judged by qemu-img, e2fsck and the
// files), ls and extract, mount (disk images and --files) and serve.
func TestS3Image(t *testing.T) {
	srv := s3Server(t)
	disk := fixture(t, "gpt-disk.sh")
	local := filepath.Join(t.TempDir(), "disk.platter")
	ok(t, "create", "--progress", "none", disk, local)
	const img = "s3://platter/pcs/disk.platter"
	out := ok(t, "create", "--progress", "none", disk, img)
	if !strings.Contains(out, img) {
		t.Errorf("create said %q", out)
	}
	if got := srv.Objects("platter", ""); len(got) != 1 || got["pcs/disk.platter"] == 0 {
		t.Fatalf("bucket holds %v", got)
	}
	if up := srv.Uploads("platter"); len(up) != 0 {
		t.Fatalf("uploads left: %v", up)
	}
	j, l := info(t, img), info(t, local)
	if j.ID == "" || j.Table != "gpt" || len(j.Partitions) != len(l.Partitions) || j.SourceSize != l.SourceSize {
		t.Errorf("info of the S3 image: %+v", j)
	}
	if out := ok(t, "verify", img); !strings.Contains(out, "OK") {
		t.Errorf("verify said %q", out)
	}

	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	localBack := filepath.Join(t.TempDir(), "local-back.img")
	ok(t, "restore", "--yes", "--progress", "none", local, localBack)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", back, localBack); !strings.Contains(out, "identical") {
		t.Errorf("restored from S3 and from the local image differ: %s", out)
	}
	parts := sfdiskParts(t, back)
	checkPartition(t, extract(t, back, parts[2]), "ext4", disk+".files/p2")

	t.Run("ls-extract", func(t *testing.T) {
		if out := ok(t, "ls", img+":2", "/"); !strings.Contains(out, "docs") {
			t.Errorf("ls said %q", out)
		}
		dest := t.TempDir()
		ok(t, "extract", img+":2", "/", dest)
		os.RemoveAll(filepath.Join(dest, "lost+found"))
		sameTree(t, disk+".files/p2", dest)
	})
	t.Run("mount", func(t *testing.T) {
		mnt := mountDaemon(t, img)
		if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "disk.img"), back); !strings.Contains(out, "identical") {
			t.Errorf("qemu-img compare: %s", out)
		}
		dir := t.TempDir()
		ok(t, "mount", "--daemon", "--files", img+":2", dir)
		t.Cleanup(func() { run(t, "umount", dir) })
		got := t.TempDir()
		sh(t, "cp", "-a", dir+"/.", got)
		os.RemoveAll(filepath.Join(got, "lost+found"))
		sameTree(t, disk+".files/p2", got)
	})
	t.Run("serve", func(t *testing.T) {
		addr, _ := startServe(t, img)
		if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", back); !strings.Contains(out, "identical") {
			t.Errorf("qemu-img compare: %s", out)
		}
	})
	// The endpoint on the command line wins over the environment's.
	t.Run("endpoint-flag", func(t *testing.T) {
		t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
		ok(t, "--s3-endpoint", srv.Endpoint, "info", img)
	})
}

// A random 4 KiB read of a mounted S3 image fetches one chunk's frame
// (plus readahead at most), counted by a proxy in front of the server.
func TestS3MountRandomRead(t *testing.T) {
	srv := s3Server(t)
	src := filepath.Join(t.TempDir(), "random.img")
	sh(t, "sh", "-c", "head -c 96M /dev/urandom > "+src)
	const img = "s3://platter/random.platter"
	ok(t, "create", "--progress", "none", "--compress", "none", src, img)
	px := srv.Proxy(t)
	mnt := t.TempDir()
	ok(t, "--s3-endpoint", px.Endpoint, "mount", "--daemon", img, mnt)
	t.Cleanup(func() { run(t, "umount", mnt) })
	opened, _ := px.GetBytes()
	px.Reset()
	off := int64(53<<20 + 12345)
	f, err := os.Open(filepath.Join(mnt, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4096)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if string(b) != string(readAt(t, src, 4096, off)) {
		t.Fatal("the mounted image read other bytes")
	}
	time.Sleep(time.Second) // any readahead lands
	n, gets := px.GetBytes()
	chunk := info(t, img).ChunkSize
	t.Logf("mount fetched %d bytes at open; a random 4 KiB read %d bytes in %d GETs (chunk %d)", opened, n, gets, chunk)
	if n == 0 || n > chunk+4096+4*(8<<20) {
		t.Errorf("a random 4 KiB read fetched %d bytes, more than a chunk and the readahead", n)
	}
}

// An incremental chain in a bucket: parents found with --search in
// another prefix, consolidated in place, pruned; every restore point
// restores to exactly its files.
func TestS3Chain(t *testing.T) {
	srv := s3Server(t)
	fs := newIncFS(t)
	const base, chain = "s3://platter/base/", "s3://platter/chain/"
	ok(t, "create", "--progress", "none", "--test-created", "2026-01-01T09:00:00Z", fs.file, base+"full.platter")
	trees := map[string]string{"full": fs.keep()}
	prev := base + "full.platter"
	for i, at := range []string{"2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"} {
		fs.change(func(root string) {
			writeRandom(t, filepath.Join(root, fmt.Sprintf("new%d", i)), 3<<20)
			overwrite(t, filepath.Join(root, "dir", "big"), int64(i)<<20, 1<<20)
			os.Remove(filepath.Join(root, fmt.Sprintf("f%02d", 20+i)))
		})
		name := fmt.Sprintf("inc%d", i+1)
		ok(t, "--search", base, "create", "--progress", "none", "--test-created", at, "--incremental", prev, fs.file, chain+name+".platter")
		trees[name], prev = fs.keep(), chain+name+".platter"
	}
	// The full image is in another prefix: found with --search only.
	if _, stderr, code := run(t, "verify", chain+"inc2.platter"); code == 0 {
		t.Errorf("verify without --search found the parent in another prefix: %s", stderr)
	}
	for _, n := range []string{"inc1", "inc2", "inc3"} {
		ok(t, "--search", base, "verify", chain+n+".platter")
		checkRestores(t, chain+n+".platter", trees[n], "--search", base)
	}
	if out := ok(t, "--search", base, "list", chain); !strings.Contains(out, "inc3.platter") {
		t.Errorf("list said %q", out)
	}

	// consolidate makes inc1 a full image in place; the base can go.
	if out := ok(t, "--search", base, "consolidate", chain+"inc1.platter"); !strings.Contains(out, "a full image now") {
		t.Errorf("consolidate said %q", out)
	}
	if j := info(t, chain+"inc1.platter"); j.Type != "full" || len(j.Chain) != 1 {
		t.Fatalf("consolidated inc1: %s, chain of %d", j.Type, len(j.Chain))
	}
	srv.Remove("platter", "base/full.platter")
	checkRestores(t, chain+"inc1.platter", trees["inc1"])
	checkRestores(t, chain+"inc3.platter", trees["inc3"])

	// prune keeps the last one, folded onto nothing: a full image.
	ok(t, "prune", "--keep-last", "1", chain)
	got := srv.Objects("platter", "chain/")
	if len(got) != 1 || got["chain/inc3.platter"] == 0 {
		t.Fatalf("after prune the bucket holds %v", got)
	}
	if j := info(t, chain+"inc3.platter"); j.Type != "full" {
		t.Errorf("the one kept is %s", j.Type)
	}
	ok(t, "verify", chain+"inc3.platter")
	checkRestores(t, chain+"inc3.platter", trees["inc3"])
	if up := srv.Uploads("platter"); len(up) != 0 {
		t.Errorf("uploads left: %v", up)
	}
}

// Wrong credentials and a missing bucket: one line each, exit 1.
func TestS3Errors(t *testing.T) {
	srv := s3Server(t)
	src := sparseFile(t, filepath.Join(t.TempDir(), "fs.img"), 32<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", src)
	ok(t, "create", "--progress", "none", src, "s3://platter/fs.platter")
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"AWS_SECRET_ACCESS_KEY=wrong-secret"}, []string{"info", "s3://platter/fs.platter"},
			"platter: s3://platter/fs.platter: credentials rejected: the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)"},
		{[]string{"AWS_ACCESS_KEY_ID=nobody"}, []string{"create", "--progress", "none", src, "s3://platter/new.platter"},
			"platter: s3://platter/new.platter: credentials rejected: the server does not know the access key (AWS_ACCESS_KEY_ID)"},
		{nil, []string{"restore", "--yes", "s3://nosuchbucket/fs.platter", filepath.Join(t.TempDir(), "x.img")},
			"platter: s3://nosuchbucket: no such bucket"},
		{nil, []string{"create", "--progress", "none", src, "s3://nosuchbucket/fs.platter"},
			"platter: s3://nosuchbucket: no such bucket"},
		{nil, []string{"verify", "s3://platter/none.platter"},
			"platter: s3://platter/none.platter: no such image"},
	} {
		cmd := exec.Command(platter, c.args...)
		cmd.Env = append(os.Environ(), c.env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, isExit := err.(*exec.ExitError); isExit {
			code = ee.ExitCode()
		}
		if code != 1 || strings.TrimSpace(string(out)) != c.want {
			t.Errorf("%v %v: exit %d, %q; want exit 1, %q", c.env, c.args, code, out, c.want)
		}
	}
	if got := srv.Objects("platter", ""); len(got) != 1 {
		t.Errorf("bucket holds %v", got)
	}
}

// A big create to S3: its peak memory stays bounded (the part buffers
// are, whatever the image's size); one killed halfway leaves no object
// and the next succeeds; four at once from four processes all land; the
// server restarted in the middle of a restore costs a pause, not bytes.
func TestS3BigCreate(t *testing.T) {
	srv := s3Server(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "random.img")
	sh(t, "sh", "-c", "head -c 1G /dev/urandom > "+src)

	t.Run("killed", func(t *testing.T) {
		cmd := exec.Command(platter, "create", "--progress", "none", src, "s3://platter/big.platter")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Killed once parts are being uploaded.
		for deadline := time.Now().Add(30 * time.Second); len(srv.Uploads("platter")) == 0; {
			if time.Now().After(deadline) {
				t.Fatal("no upload started in 30 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if srv.Exists("platter", "big.platter") {
			t.Fatal("a create killed halfway left an object")
		}
		if _, stderr, code := run(t, "info", "s3://platter/big.platter"); code != 1 || !strings.Contains(stderr, "no such image") {
			t.Fatalf("info after the kill: exit %d, %s", code, stderr)
		}
		// Its upload is left, never completed (Abort had no chance; a
		// bucket lifecycle rule removes such uploads).
		if up := srv.Uploads("platter"); len(up) != 1 || up[0] != "big.platter" {
			t.Errorf("uploads after the kill: %v", up)
		}
	})

	// Peak memory, measured by the kernel.
	out := sh(t, "/usr/bin/time", "-v", platter, "create", "--progress", "none", src, "s3://platter/big.platter")
	rss := maxRSS(t, out)
	t.Logf("create of 1 GiB of random data to S3: peak RSS %d MiB", rss>>20)
	if rss > 300<<20 {
		t.Errorf("create to S3 peaked at %d MiB, more than 300", rss>>20)
	}

	t.Run("restart-mid-restore", func(t *testing.T) {
		back := filepath.Join(t.TempDir(), "back.img")
		cmd := exec.Command(platter, "restore", "--yes", "--progress", "none", "s3://platter/big.platter", back)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		time.Sleep(300 * time.Millisecond)
		srv.Kill()
		select {
		case err := <-done:
			t.Fatalf("restore ended before the server was stopped (%v): make the image bigger", err)
		case <-time.After(3 * time.Second):
		}
		srv.Restart()
		if err := <-done; err != nil {
			t.Fatalf("restore across a server restart: %v\n%s", err, stderr.String())
		}
		sh(t, "cmp", src, back)
	})

	t.Run("four-at-once", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "small.img")
		sh(t, "sh", "-c", "head -c 200M /dev/urandom > "+src)
		var wg sync.WaitGroup
		errs := make([]string, 4)
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(platter, "create", "--progress", "none", src, fmt.Sprintf("s3://platter/fleet/host%d.platter", i))
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Sprintf("create %d: %v: %s", i, err, out)
				}
			}()
		}
		wg.Wait()
		for _, e := range errs {
			if e != "" {
				t.Error(e)
			}
		}
		for i := range 4 {
			ok(t, "verify", fmt.Sprintf("s3://platter/fleet/host%d.platter", i))
		}
		for _, u := range srv.Uploads("platter") {
			if strings.HasPrefix(u, "fleet/") {
				t.Errorf("upload of %s left", u)
			}
		}
	})
}

// maxRSS reads the peak resident set size out of /usr/bin/time -v.
func maxRSS(t *testing.T, out string) int64 {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, found := strings.CutPrefix(strings.TrimSpace(line), "Maximum resident set size (kbytes): "); found {
			kb, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no peak RSS in:\n%s", out)
	return 0
}

// passwd of an encrypted image in a bucket: the object is replaced by
// one that differs only in its key slots, made on the server from the
// old one — the client sends about one 5 MiB part, not the image. The
// new passphrase opens it, restores the source byte for byte, the old
// one gets "wrong passphrase". Split volumes in local files too.
func TestS3Passwd(t *testing.T) {
	srv := s3Server(t)
	src := filepath.Join(t.TempDir(), "random.img")
	sh(t, "sh", "-c", "head -c 40M /dev/urandom > "+src)
	k := newEncKeys(t, "correct horse battery staple")
	nk := newEncKeys(t, "a new passphrase")
	const img = "s3://platter/pcs/enc.platter"
	encCreate(t, k, src, img, append(k.pw(), "--encrypt", "--compress", "none")...)
	before := srv.Get("platter", "pcs/enc.platter")
	const slotsEnd = 64 + 2*16<<10

	px := srv.Proxy(t)
	// A copy refused midway: passwd fails naming the object, which is
	// as it was (the old passphrase opens it), and no upload is left.
	px.Before(func(r *http.Request) int {
		if r.URL.Query().Get("partNumber") == "2" {
			return http.StatusBadRequest
		}
		return 0
	})
	_, stderr, code := run(t, append(append([]string{"--s3-endpoint", px.Endpoint, "passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), img)...)
	px.Before(nil)
	if code != 1 || !strings.Contains(stderr, img) || !strings.Contains(stderr, "part 2") {
		t.Errorf("passwd with a copy refused: exit %d: %s", code, stderr)
	}
	if !bytes.Equal(srv.Get("platter", "pcs/enc.platter"), before) {
		t.Fatal("a failed passwd changed the object")
	}
	if up := srv.Uploads("platter"); len(up) != 0 {
		t.Fatalf("uploads left by a failed passwd: %v", up)
	}
	ok(t, append([]string{"verify"}, append(k.pw(), img)...)...)

	px.Reset()
	ok(t, append(append([]string{"--s3-endpoint", px.Endpoint, "passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), img)...)
	sent := px.SentBytes()
	t.Logf("passwd of a %d-byte object sent %d bytes", len(before), sent)
	if sent > 5<<20+64<<10 {
		t.Errorf("passwd sent %d bytes of a %d-byte image: want about one 5 MiB part", sent, len(before))
	}
	after := srv.Get("platter", "pcs/enc.platter")
	if len(after) != len(before) || !bytes.Equal(after[:64], before[:64]) || !bytes.Equal(after[slotsEnd:], before[slotsEnd:]) {
		t.Fatal("passwd changed bytes outside the key slots")
	}
	if bytes.Equal(after[64:slotsEnd], before[64:slotsEnd]) {
		t.Fatal("passwd changed nothing")
	}
	if up := srv.Uploads("platter"); len(up) != 0 {
		t.Fatalf("uploads left: %v", up)
	}
	if _, stderr, code := run(t, append([]string{"verify"}, append(k.pw(), img)...)...); code != 1 || !strings.Contains(stderr, "wrong passphrase") {
		t.Errorf("the old passphrase: exit %d, %s", code, stderr)
	}
	ok(t, append([]string{"verify"}, append(nk.pw(), img)...)...)
	back := filepath.Join(t.TempDir(), "back.img")
	ok(t, append([]string{"restore", "--yes", "--progress", "none"}, append(nk.pw(), img, back)...)...)
	sh(t, "cmp", src, back)

	// Split volumes in a bucket: the slots are in the first object.
	t.Run("s3-split", func(t *testing.T) {
		const split = "s3://platter/split/enc.platter"
		encCreate(t, k, src, split, append(k.pw(), "--encrypt", "--compress", "none", "--split", "16M")...)
		objs := srv.Objects("platter", "split/")
		if len(objs) != 3 {
			t.Fatalf("volumes: %v", objs)
		}
		old := map[string][]byte{}
		for key := range objs {
			old[key] = srv.Get("platter", key)
		}
		ok(t, append(append([]string{"passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), split)...)
		for key, b := range old {
			now := srv.Get("platter", key)
			same := bytes.Equal(now, b)
			if key == "split/enc.platter" {
				same = len(now) == len(b) && bytes.Equal(now[slotsEnd:], b[slotsEnd:]) && !bytes.Equal(now[64:slotsEnd], b[64:slotsEnd])
			}
			if !same {
				t.Errorf("%s: passwd changed more than the first volume's key slots", key)
			}
		}
		if _, stderr, code := run(t, append([]string{"verify"}, append(k.pw(), split)...)...); code != 1 || !strings.Contains(stderr, "wrong passphrase") {
			t.Errorf("the old passphrase: exit %d, %s", code, stderr)
		}
		back := filepath.Join(t.TempDir(), "back.img")
		ok(t, append([]string{"restore", "--yes", "--progress", "none"}, append(nk.pw(), split, back)...)...)
		sh(t, "cmp", src, back)
	})
	t.Run("split", func(t *testing.T) {
		dir := t.TempDir()
		split := filepath.Join(dir, "enc.platter")
		encCreate(t, k, src, split, append(k.pw(), "--encrypt", "--compress", "none", "--split", "8M")...)
		vols, _ := filepath.Glob(split + "*")
		if len(vols) < 5 {
			t.Fatalf("volumes: %v", vols)
		}
		read := func() map[string][]byte {
			m := map[string][]byte{}
			for _, v := range vols {
				b, err := os.ReadFile(v)
				if err != nil {
					t.Fatal(err)
				}
				m[v] = b
			}
			return m
		}
		old := read()
		ok(t, append(append([]string{"passwd", "--test-kdf", cheapKDF, "--new-password-file", nk.pass}, k.pw()...), split)...)
		now := read()
		for v, b := range old {
			same := bytes.Equal(now[v], b)
			if v == split {
				same = bytes.Equal(now[v][slotsEnd:], b[slotsEnd:]) && !bytes.Equal(now[v][64:slotsEnd], b[64:slotsEnd])
			}
			if !same {
				t.Errorf("volume %s: passwd changed more than the first volume's key slots", v)
			}
		}
		if _, stderr, code := run(t, append([]string{"verify"}, append(k.pw(), split)...)...); code != 1 || !strings.Contains(stderr, "wrong passphrase") {
			t.Errorf("the old passphrase: exit %d, %s", code, stderr)
		}
		back := filepath.Join(t.TempDir(), "back.img")
		ok(t, append([]string{"restore", "--yes", "--progress", "none"}, append(nk.pw(), split, back)...)...)
		sh(t, "cmp", src, back)
	})
}
