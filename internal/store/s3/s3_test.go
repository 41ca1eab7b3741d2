package s3

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/store/s3/s3test"
	"github.com/platter-dev/platter/internal/store/storetest"
)

// The smallest part S3 (and MinIO) accepts, but for the last.
const minPart = 5 << 20

// config points at srv with small parts, so a few MiB make several.
func config(srv *s3test.Server) Config {
	return Config{
		Endpoint:  srv.Endpoint,
		Region:    "us-east-1",
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		PartSize:  minPart,
	}
}

func newPlace(t testing.TB, srv *s3test.Server, prefix string, cfg Config) *place {
	t.Helper()
	p, err := New(context.Background(), srv.Bucket, prefix, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p.(*place)
}

// data returns n pseudo-random bytes, different for each seed.
func data(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// put writes b as name in small uneven writes and commits it.
func put(t testing.TB, p store.Place, name string, b []byte, opts store.CreateOptions) {
	t.Helper()
	s, err := p.Create(context.Background(), name, opts)
	if err != nil {
		t.Fatal(err)
	}
	for rest := b; len(rest) > 0; {
		n := min(len(rest), 1+rand.IntN(3<<20))
		if _, err := s.Write(rest[:n]); err != nil {
			s.Abort()
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
}

func readAll(t testing.TB, o store.Object) []byte {
	t.Helper()
	b := make([]byte, o.Size())
	if _, err := o.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// Parts are uploaded in parallel; random ranges read back in parallel
// are the bytes written, and a read past the end gets io.EOF.
func TestRoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "machines/", config(srv))
	want := data(23<<20+12345, 1)
	put(t, p, "a.platter", want, store.CreateOptions{})
	if !srv.Exists(srv.Bucket, "machines/a.platter") {
		t.Fatal("no object machines/a.platter after Commit")
	}
	if up := srv.Uploads(srv.Bucket); len(up) != 0 {
		t.Fatalf("uploads left after Commit: %v", up)
	}
	o, err := p.Open(context.Background(), "a.platter")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != int64(len(want)) || o.Name() != "s3://platter/machines/a.platter" {
		t.Fatalf("size %d name %s", o.Size(), o.Name())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 40 {
				off := r.Int64N(int64(len(want)))
				n := 1 + r.IntN(3<<20)
				got := make([]byte, n)
				k, err := o.ReadAt(got, off)
				end := min(off+int64(n), int64(len(want)))
				if k != int(end-off) || (err != nil) != (off+int64(n) > int64(len(want))) {
					errs <- fmt.Errorf("ReadAt(%d, %d) = %d, %v", n, off, k, err)
					return
				}
				if !bytes.Equal(got[:k], want[off:end]) {
					errs <- fmt.Errorf("ReadAt(%d, %d): wrong bytes", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !bytes.Equal(readAll(t, o), want) {
		t.Fatal("whole read differs")
	}
	if _, err := o.ReadAt(make([]byte, 1), o.Size()); err != io.EOF {
		t.Fatalf("read at the end: %v, want io.EOF", err)
	}
}

// An empty image is an object of 0 bytes.
func TestEmpty(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "", config(srv))
	put(t, p, "empty", nil, store.CreateOptions{})
	o, err := p.Open(context.Background(), "empty")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != 0 {
		t.Fatalf("size %d", o.Size())
	}
	if n, err := o.ReadAt(make([]byte, 10), 0); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
}

// List shows one level below the prefix, Remove removes, and a missing
// image is store.ErrNotFound to Open and Remove.
func TestListRemove(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "site/", config(srv))
	other := newPlace(t, srv, "site/deeper/", config(srv))
	put(t, p, "one", data(100, 1), store.CreateOptions{})
	put(t, p, "two", data(7<<20, 2), store.CreateOptions{})
	put(t, other, "three", data(10, 3), store.CreateOptions{})
	list, err := p.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list {
		got = append(got, fmt.Sprintf("%s:%d", e.Name, e.Size))
		if time.Since(e.ModTime) > time.Hour {
			t.Errorf("%s: mod time %v", e.Name, e.ModTime)
		}
	}
	if strings.Join(got, " ") != "one:100 two:7340032" {
		t.Fatalf("List = %v", got)
	}
	if err := p.Remove(context.Background(), "one"); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(context.Background(), "one"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	if _, err := p.Open(context.Background(), "one"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "s3://platter/site/one") {
		t.Fatalf("Open removed: %v", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, err := p.Open(context.Background(), bad); err == nil {
			t.Errorf("Open(%q) worked", bad)
		}
	}
	if p.String() != "s3://platter/site/" {
		t.Errorf("String = %s", p)
	}
}

// Abort leaves no object and no upload; neither does a failed Commit.
func TestAbort(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "", config(srv))
	s, err := p.Create(context.Background(), "x", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(data(17<<20, 4)); err != nil {
		t.Fatal(err)
	}
	if up := srv.Uploads(srv.Bucket); len(up) != 1 {
		t.Fatalf("uploads while writing: %v", up)
	}
	s.Abort()
	s.Abort()
	if _, err := s.Write([]byte{1}); err == nil {
		t.Fatal("Write after Abort worked")
	}
	if err := s.Commit(); err == nil {
		t.Fatal("Commit after Abort worked")
	}
	if srv.Exists(srv.Bucket, "x") {
		t.Fatal("object after Abort")
	}
	if up := srv.Uploads(srv.Bucket); len(up) != 0 {
		t.Fatalf("uploads left after Abort: %v", up)
	}

	// A cancelled context fails the writer, and Abort still aborts.
	ctx, cancel := context.WithCancel(context.Background())
	s, err = p.Create(ctx, "y", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(data(6<<20, 5))
	cancel()
	if _, err := s.Write(data(6<<20, 6)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v", err)
	}
	s.Abort()
	if srv.Exists(srv.Bucket, "y") || len(srv.Uploads(srv.Bucket)) != 0 {
		t.Fatal("object or upload left after a cancelled create")
	}
}

// Without Force an existing image is refused before anything is
// written; with it the old image stays readable until Commit replaces
// it, and a reader of the old one then gets ErrChanged, not new bytes.
func TestExistsForceChanged(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "", config(srv))
	old := data(12<<20, 7)
	put(t, p, "img", old, store.CreateOptions{})
	if _, err := p.Create(context.Background(), "img", store.CreateOptions{}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("Create over an image: %v", err)
	}
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	s, err := p.Create(context.Background(), "img", store.CreateOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(data(9<<20, 8))
	if !bytes.Equal(readAll(t, o), old) {
		t.Fatal("old image changed before Commit")
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	_, err = o.ReadAt(make([]byte, 100), 5<<20+17)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "s3://platter/img") {
		t.Fatalf("read of the replaced image: %v, want ErrChanged naming it", err)
	}
}

// Two creates of one name without Force: the one that completes second
// is refused by the server (If-None-Match: * on completion), not
// silently replacing the first.
func TestCreateRace(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "", config(srv))
	a, err := p.Create(context.Background(), "img", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Create(context.Background(), "img", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.Write(data(1000, 1))
	b.Write(data(1000, 2))
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Commit: %v, want ErrExists", err)
	}
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !bytes.Equal(readAll(t, o), data(1000, 1)) {
		t.Fatal("the second create replaced the first")
	}
	if up := srv.Uploads(srv.Bucket); len(up) != 0 {
		t.Fatalf("uploads left: %v", up)
	}
}

// The part size grows, and an image past the part limit fails the
// write with ErrTooLarge: the upload is never completed short.
func TestPartLimit(t *testing.T) {
	def := Config{}
	def.setDefaults()
	for _, c := range []struct {
		n    int
		want int64
	}{{1, 16 << 20}, {1000, 16 << 20}, {1001, 32 << 20}, {2000, 32 << 20}, {2001, 64 << 20}, {10000, 64 << 20}} {
		if got := partSize(&def, c.n); got != c.want {
			t.Errorf("part %d: %d bytes, want %d", c.n, got, c.want)
		}
	}
	if capacity(&def) != MaxImageSize {
		t.Errorf("capacity %d, MaxImageSize %d", capacity(&def), int64(MaxImageSize))
	}

	srv := s3test.Start(t)
	cfg := config(srv)
	cfg.PartsPerStep, cfg.MaxPartSize, cfg.MaxParts = 1, 4*minPart, 3 // 5, 10, 20 MiB
	p := newPlace(t, srv, "", cfg)
	limit := capacity(&p.cfg)
	if limit != 35<<20 {
		t.Fatalf("capacity %d", limit)
	}
	full := data(int(limit)+1, 3)
	put(t, p, "fits", full[:limit], store.CreateOptions{})
	o, err := p.Open(context.Background(), "fits")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !bytes.Equal(readAll(t, o), full[:limit]) {
		t.Fatal("image at the limit differs")
	}
	if etag := o.(*object).etag; !strings.HasSuffix(etag, "-3") {
		t.Fatalf("ETag %s: not 3 parts", etag)
	}

	s, err := p.Create(context.Background(), "too-big", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Write(full)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "s3://platter/too-big") {
		t.Fatalf("Write past the limit: %v", err)
	}
	if err := s.Commit(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Commit after the limit: %v", err)
	}
	if srv.Exists(srv.Bucket, "too-big") || len(srv.Uploads(srv.Bucket)) != 0 {
		t.Fatal("object or upload left past the limit")
	}
}

// The part buffers of a create never pass the budget: with 16 MiB parts
// at most Uploads+1 of them.
func TestBufferBudget(t *testing.T) {
	srv := s3test.Start(t)
	cfg := config(srv)
	cfg.PartSize = 0 // the default, 16 MiB
	p := newPlace(t, srv, "", cfg)
	s, err := p.Create(context.Background(), "big", store.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sk := s.(*sink)
	chunk := data(1<<20, 5)
	var peak int64
	for range 200 {
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	sk.mu.Lock()
	peak = sk.peak
	sk.mu.Unlock()
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if want := int64(defaultUploads+1) * 16 << 20; peak > want {
		t.Fatalf("part buffers peaked at %d bytes, budget %d", peak, want)
	}
	t.Logf("part buffers peaked at %d MiB", peak>>20)
}

// Transient failures are retried: 503s and GET bodies cut off halfway
// cost attempts, never bytes; the bytes read are the bytes written.
func TestTransientFaults(t *testing.T) {
	srv := s3test.Start(t)
	px := srv.Proxy(t)
	cfg := config(srv)
	cfg.Endpoint = px.Endpoint
	p := newPlace(t, srv, "", cfg)
	want := data(20<<20, 11)
	px.Fail(3)
	put(t, p, "img", want, store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for i := 0; i < 6; i++ {
		px.Cut(1)
		if i%2 == 1 {
			px.Fail(2)
		}
		off := int64(i) * 3 << 20
		got := make([]byte, 1<<20+i)
		if _, err := o.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[off:off+int64(len(got))]) {
			t.Fatalf("read %d: wrong bytes", i)
		}
	}
	if !bytes.Equal(readAll(t, o), want) {
		t.Fatal("whole read differs")
	}
}

// The server stopped and restarted in the middle of a read: the read
// waits, retrying, and returns the right bytes.
func TestServerRestart(t *testing.T) {
	srv := s3test.Start(t)
	p := newPlace(t, srv, "", config(srv))
	want := data(40<<20, 12)
	put(t, p, "img", want, store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got := make([]byte, len(want))
	const step = 1 << 20
	for off := 0; off < 4*step; off += step {
		if _, err := o.ReadAt(got[off:off+step], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	srv.Kill()
	done := make(chan error, 1)
	go func() {
		// Past the readahead: these blocks must come from the server.
		off := 30 << 20
		_, err := o.ReadAt(got[off:], int64(off))
		if err == nil {
			for off := 4 * step; off < 30<<20; off += step {
				if _, err = o.ReadAt(got[off:off+step], int64(off)); err != nil {
					break
				}
			}
		}
		done <- err
	}()
	time.Sleep(2 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("read finished while the server was down: %v", err)
	default:
	}
	srv.Restart()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes differ after the restart")
	}
}

// A server gone for good: after the retry budget, a clear error naming
// the object, the server and how long it tried.
func TestServerGone(t *testing.T) {
	srv := s3test.Start(t)
	cfg := config(srv)
	cfg.RetryFor = 2 * time.Second
	p := newPlace(t, srv, "", cfg)
	put(t, p, "img", data(100, 1), store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	srv.Stop()
	start := time.Now()
	_, err = o.ReadAt(make([]byte, 10), 0)
	t.Logf("%v after %v", err, time.Since(start))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "s3://platter/img") ||
		!strings.Contains(err.Error(), srv.Endpoint) || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("read from a stopped server: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("gave up after %v; budget 2s", time.Since(start))
	}
}

// Four creates into one bucket at once, each read back intact.
func TestConcurrentCreates(t *testing.T) {
	srv := s3test.Start(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newPlace(t, srv, "fleet/", config(srv))
			put(t, p, fmt.Sprintf("host%d", i), data(13<<20+i, uint64(100+i)), store.CreateOptions{})
		}()
	}
	wg.Wait()
	p := newPlace(t, srv, "fleet/", config(srv))
	for i := range 4 {
		o, err := p.Open(context.Background(), fmt.Sprintf("host%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, o), data(13<<20+i, uint64(100+i))) {
			t.Errorf("host%d differs", i)
		}
		o.Close()
	}
}

// Wrong credentials, a missing bucket and an unreachable server each
// give one line naming the object and what to fix.
func TestErrors(t *testing.T) {
	srv := s3test.Start(t)
	good := config(srv)
	put(t, newPlace(t, srv, "", good), "img", data(10, 1), store.CreateOptions{})

	badSecret := good
	badSecret.SecretKey = "wrong-secret-key"
	badKey := good
	badKey.AccessKey = "nobody"
	closed := good
	closed.Endpoint = "http://" + freeLoopback(t)
	closed.ConnectRetryFor = time.Second
	for _, c := range []struct {
		what   string
		cfg    Config
		bucket string
		kind   error
		says   string
	}{
		{"wrong secret", badSecret, srv.Bucket, ErrCredentials, "s3://platter/img: credentials rejected: the secret key does not match"},
		{"unknown key", badKey, srv.Bucket, ErrCredentials, "s3://platter/img: credentials rejected: the server does not know the access key"},
		{"missing bucket", good, "nosuchbucket", ErrNoBucket, "s3://nosuchbucket: no such bucket"},
		{"unreachable", closed, srv.Bucket, ErrUnreachable, "s3://platter/img: cannot reach " + closed.Endpoint + ": connection refused"},
	} {
		p, err := New(context.Background(), c.bucket, "", c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		for op, f := range map[string]func() error{
			"open": func() error { _, err := p.Open(context.Background(), "img"); return err },
			"create": func() error {
				_, err := p.Create(context.Background(), "img", store.CreateOptions{Force: true})
				return err
			},
			"list": func() error { _, err := p.List(context.Background()); return err },
		} {
			err := f()
			if err == nil {
				t.Errorf("%s: %s worked", c.what, op)
				continue
			}
			msg := err.Error()
			t.Logf("%s, %s: %s", c.what, op, msg)
			if !errors.Is(err, c.kind) || strings.Contains(msg, "\n") ||
				(op != "list" || c.kind == ErrNoBucket) && !strings.HasPrefix(msg, c.says) {
				t.Errorf("%s: %s: %q, want %q", c.what, op, msg, c.says)
			}
		}
	}
}

// freeLoopback returns a loopback address nothing listens on.
func freeLoopback(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// What a read fetches, counted by a proxy: a random 4 KiB read one GET
// of exactly its bytes; a sequential reader blocks and readahead, each
// byte once.
func TestGetBytes(t *testing.T) {
	srv := s3test.Start(t)
	px := srv.Proxy(t)
	cfg := config(srv)
	cfg.Endpoint = px.Endpoint
	p := newPlace(t, srv, "", cfg)
	want := data(96<<20, 13)
	put(t, p, "img", want, store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	// As an image reader opens: header, then footer and index.
	for _, off := range []int64{0, o.Size() - 4096, o.Size() - 1<<20} {
		if _, err := o.ReadAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	px.Reset()
	got := make([]byte, 4096)
	if _, err := o.ReadAt(got, 41<<20+123); err != nil || !bytes.Equal(got, want[41<<20+123:][:4096]) {
		t.Fatal("random read", err)
	}
	if n, gets := px.GetBytes(); n != 4096 || gets != 1 {
		t.Fatalf("a random 4 KiB read fetched %d bytes in %d GETs", n, gets)
	}
	// Reading on from there: exactly what is asked until the run is a
	// block long, then one block and the readahead.
	bs := int64(defaultBlockSize)
	px.Reset()
	off := int64(41<<20 + 123 + 4096)
	big := make([]byte, bs)
	if _, err := o.ReadAt(big, off); err != nil || !bytes.Equal(big, want[off:off+bs]) {
		t.Fatal("read on", err)
	}
	if n, gets := px.GetBytes(); n != bs || gets != 1 {
		t.Fatalf("a read continuing a short run fetched %d bytes in %d GETs", n, gets)
	}
	px.Reset()
	off += bs
	if _, err := o.ReadAt(got, off); err != nil || !bytes.Equal(got, want[off:off+4096]) {
		t.Fatal("read on", err)
	}
	time.Sleep(time.Second) // the readahead lands
	if n, gets := px.GetBytes(); n > (1+defaultReadahead)*bs || gets < 2 {
		t.Fatalf("a read continuing a run of a block fetched %d bytes in %d GETs: want a block and readahead, at most %d bytes", n, gets, (1+defaultReadahead)*bs)
	}
	// A whole sequential pass in 1 MiB reads fetches each byte about once.
	px.Reset()
	for off := int64(0); off < o.Size(); off += 1 << 20 {
		buf := make([]byte, 1<<20)
		if _, err := o.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+1<<20]) {
			t.Fatalf("sequential read at %d differs", off)
		}
	}
	n, gets := px.GetBytes()
	t.Logf("sequential pass: %d MiB in %d GETs", n>>20, gets)
	if n > o.Size()+2*bs || gets > o.Size()/bs+4 {
		t.Fatalf("a sequential pass of %d bytes fetched %d bytes in %d GETs", o.Size(), n, gets)
	}
}

// A create killed halfway (SIGKILL, no chance to abort) leaves no
// object: its upload is never completed. The next create of the same
// name succeeds.
func TestKilledCreate(t *testing.T) {
	if os.Getenv("PLATTER_S3_CHILD") != "" {
		killedChild()
		return
	}
	srv := s3test.Start(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledCreate$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PLATTER_S3_CHILD=1", "PLATTER_S3_BUCKET="+srv.Bucket)
	cmd.Env = append(cmd.Env, srv.Env()...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if srv.Exists(srv.Bucket, "img") {
		t.Fatal("a killed create left an object")
	}
	if up := srv.Uploads(srv.Bucket); len(up) != 1 || up[0] != "img" {
		t.Fatalf("uploads after the kill: %v (want the one never completed)", up)
	}
	p := newPlace(t, srv, "", config(srv))
	if _, err := p.Open(context.Background(), "img"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Open after the kill: %v", err)
	}
	want := data(11<<20, 21)
	put(t, p, "img", want, store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if !bytes.Equal(readAll(t, o), want) {
		t.Fatal("the create after the kill differs")
	}
}

// killedChild writes half an image and kills itself.
func killedChild() {
	p, err := New(context.Background(), os.Getenv("PLATTER_S3_BUCKET"), "", Config{
		Endpoint: os.Getenv("AWS_ENDPOINT_URL"), AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), PartSize: minPart})
	if err != nil {
		panic(err)
	}
	s, err := p.Create(context.Background(), "img", store.CreateOptions{})
	if err != nil {
		panic(err)
	}
	if _, err := s.Write(data(12<<20, 20)); err != nil {
		panic(err)
	}
	// Let the first parts land, then die without a word.
	sk := s.(*sink)
	for {
		sk.mu.Lock()
		n := len(sk.parts)
		sk.mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// The conformance suite every Place passes, each Place a fresh prefix of
// one bucket.
func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	var n atomic.Int64
	storetest.Test(t, func(t *testing.T) store.Place {
		return newPlace(t, srv, fmt.Sprintf("suite/%d/", n.Add(1)), config(srv))
	})
}

// A restore's workers read neighbouring frames in parallel, out of
// order: once the run is a block long every byte is fetched once, in
// blocks, whatever order the workers come in.
func TestParallelSequential(t *testing.T) {
	srv := s3test.Start(t)
	px := srv.Proxy(t)
	cfg := config(srv)
	cfg.Endpoint = px.Endpoint
	cfg.BlockSize = 1 << 20
	p := newPlace(t, srv, "", cfg)
	const header, frame, frames = 200, 1<<20 + 64, 48
	want := data(header+frame*frames+100, 31)
	put(t, p, "img", want, store.CreateOptions{})
	o, err := p.Open(context.Background(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	px.Reset()
	if _, err := o.ReadAt(make([]byte, header), 0); err != nil {
		t.Fatal(err)
	}
	ch := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, frame)
			for k := range ch {
				off := header + int64(k)*frame
				if _, err := o.ReadAt(b, off); err != nil || !bytes.Equal(b, want[off:off+frame]) {
					t.Errorf("frame %d: %v", k, err)
				}
			}
		}()
	}
	for k := range frames {
		ch <- k
	}
	close(ch)
	wg.Wait()
	n, gets := px.GetBytes()
	t.Logf("%d frames of %d bytes: %d bytes fetched in %d GETs", frames, frame, n, gets)
	// Eight readers taking frames out of order race the readahead: a
	// frame read directly just before its block arrives is fetched
	// twice, and how often depends on scheduling (CI saw two blocks and
	// a little more under -race). Four blocks of 48 still shows that
	// parallel sequential reads are not fetched twice over.
	if extra := n - int64(header+frame*frames); extra > 4*cfg.BlockSize {
		t.Errorf("fetched %d bytes more than were read, more than four blocks; GETs: %v", extra, px.Ranges())
	}
}
