package s3

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/store/s3/s3test"
)

// patchPlace is a Place behind a counting proxy, with copy parts of 5 MiB
// so that a few MiB make several.
func patchPlace(t *testing.T) (*s3test.Server, *s3test.Proxy, *place) {
	srv := s3test.Start(t)
	px := srv.Proxy(t)
	cfg := config(srv)
	cfg.Endpoint = px.Endpoint
	cfg.CopyPartSize = minPart
	return srv, px, newPlace(t, srv, "", cfg)
}

func openObject(t *testing.T, p *place, name string) *object {
	t.Helper()
	o, err := p.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o.(*object)
}

// Patch replaces the object with one that differs only in the patched
// bytes, sending about one 5 MiB part whatever the object's size: the
// rest is copied on the server.
func TestPatch(t *testing.T) {
	srv, px, p := patchPlace(t)
	for _, size := range []int{23<<20 + 12345, 3 << 20, minPart + 100} {
		old := data(size, uint64(size))
		put(t, p, "img", old, store.CreateOptions{Force: true})
		o := openObject(t, p, "img")
		patch := data(32<<10, 99)
		px.Reset()
		if err := o.Patch(context.Background(), 64, patch); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		sent := px.SentBytes()
		want := bytes.Clone(old)
		copy(want[64:], patch)
		if got := readAll(t, openObject(t, p, "img")); !bytes.Equal(got, want) {
			t.Fatalf("size %d: the patched object is not the old one with the patch", size)
		}
		if up := srv.Uploads(srv.Bucket); len(up) != 0 {
			t.Fatalf("uploads left: %v", up)
		}
		t.Logf("size %d: patch sent %d bytes", size, sent)
		if limit := int64(min(size, minPart)) + 64<<10; sent > limit {
			t.Errorf("size %d: patch sent %d bytes, want at most %d", size, sent, limit)
		}
	}
	// A patch outside the object changes nothing.
	o := openObject(t, p, "img")
	if err := o.Patch(context.Background(), o.Size()-10, make([]byte, 11)); err == nil {
		t.Error("a patch past the end was taken")
	}
}

// An object replaced after Patch read its head fails the server-side
// copies (their source must have the ETag it was opened with), and one
// replaced after the copies fails the completion (If-Match): the patch
// fails with ErrChanged, the replacement stays as it was, no upload is
// left.
func TestPatchChanged(t *testing.T) {
	srv, px, p := patchPlace(t)
	for i, when := range []string{"copy", "completion"} {
		put(t, p, "img", data(17<<20, 1), store.CreateOptions{Force: true})
		o := openObject(t, p, "img")
		other := data(17<<20, uint64(2+i))
		var once atomic.Bool
		px.Before(func(r *http.Request) int {
			copying := r.Header.Get("X-Amz-Copy-Source") != ""
			completing := r.Method == http.MethodPost && r.URL.Query().Get("uploadId") != ""
			if (when == "copy" && copying || when == "completion" && completing) && once.CompareAndSwap(false, true) {
				put(t, p, "img", other, store.CreateOptions{Force: true})
			}
			return 0
		})
		err := o.Patch(context.Background(), 64, make([]byte, 100))
		px.Before(nil)
		if !errors.Is(err, store.ErrChanged) || !strings.Contains(err.Error(), "s3://platter/img") {
			t.Fatalf("replaced before the %s: %v, want ErrChanged naming it", when, err)
		}
		t.Logf("replaced before the %s: %v", when, err)
		if !bytes.Equal(readAll(t, openObject(t, p, "img")), other) {
			t.Fatalf("replaced before the %s: the object that replaced the patched one changed", when)
		}
		if up := srv.Uploads(srv.Bucket); len(up) != 0 {
			t.Fatalf("replaced before the %s: uploads left: %v", when, up)
		}
	}
}

// A patch that fails midway (a copied part refused, or the completion)
// leaves the old object whole and no upload behind.
func TestPatchFails(t *testing.T) {
	srv, px, p := patchPlace(t)
	old := data(23<<20, 3)
	put(t, p, "img", old, store.CreateOptions{})
	for _, what := range []string{"part 3", "completion"} {
		o := openObject(t, p, "img")
		px.Before(func(r *http.Request) int {
			q := r.URL.Query()
			switch {
			case what == "part 3" && q.Get("partNumber") == "3",
				what == "completion" && r.Method == http.MethodPost && q.Get("uploadId") != "":
				return http.StatusBadRequest
			}
			return 0
		})
		err := o.Patch(context.Background(), 64, make([]byte, 32<<10))
		px.Before(nil)
		if err == nil {
			t.Fatalf("%s refused: the patch succeeded", what)
		}
		t.Logf("%s refused: %v", what, err)
		if !bytes.Equal(readAll(t, openObject(t, p, "img")), old) {
			t.Fatalf("%s refused: the old object changed", what)
		}
		if up := srv.Uploads(srv.Bucket); len(up) != 0 {
			t.Fatalf("%s refused: uploads left: %v", what, up)
		}
	}
}

// The copied parts stay within S3's limits: at least 5 MiB, at most
// 5 GiB, and no more than MaxParts with the head.
func TestCopyPartSize(t *testing.T) {
	p := &place{cfg: Config{}}
	p.cfg.setDefaults()
	for _, n := range []int64{0, 1, 1 << 30, 5 << 40} {
		step := p.copyPartSize(n)
		if step < minPart || step > 5<<30 || (n+step-1)/step > int64(p.cfg.MaxParts-1) {
			t.Errorf("%d bytes: parts of %d", n, step)
		}
	}
}
