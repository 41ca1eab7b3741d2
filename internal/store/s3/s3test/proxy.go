package s3test

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy stands between a client and the server on another loopback
// port, counting what GETs bring back: a test points the client at
// Proxy.Endpoint and judges how many bytes a read fetched without
// trusting the client's own accounting. Requests are signed for the
// proxy's host, which it passes on unchanged.
type Proxy struct {
	Endpoint string
	gets     atomic.Int64
	getBytes atomic.Int64
	sent     atomic.Int64 // request body bytes: what the client uploads
	fail     atomic.Int64 // requests still to answer 503
	cut      atomic.Int64 // GET bodies still to cut short
	mu       sync.Mutex
	ranges   []string
	before   func(*http.Request) int
}

// Proxy starts a counting proxy in front of s, closed when t ends.
func (s *Server) Proxy(t testing.TB) *Proxy {
	t.Helper()
	target, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cut bodies are meant
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.Request.URL.RawQuery == "" {
			p.gets.Add(1)
			p.mu.Lock()
			p.ranges = append(p.ranges, resp.Request.Header.Get("Range"))
			p.mu.Unlock()
			body := &countingBody{ReadCloser: resp.Body, n: &p.getBytes, left: -1}
			if resp.ContentLength > 1 && p.cut.Add(-1) >= 0 {
				body.left = resp.ContentLength / 2
			}
			resp.Body = body
		}
		return nil
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		if p.fail.Add(-1) >= 0 {
			http.Error(w, "injected", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		before := p.before
		p.mu.Unlock()
		if before != nil {
			if code := before(r); code != 0 {
				http.Error(w, "refused by the test", code)
				return
			}
		}
		if r.Body != nil {
			r.Body = &countingBody{ReadCloser: r.Body, n: &p.sent, left: -1}
		}
		rp.ServeHTTP(w, r)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Endpoint = "http://" + l.Addr().String()
	return p
}

// GetBytes returns the object bytes GETs have returned since the last
// Reset, and how many GETs there were.
func (p *Proxy) GetBytes() (bytes, gets int64) { return p.getBytes.Load(), p.gets.Load() }

// SentBytes returns the bytes of request bodies (uploads) since the last
// Reset.
func (p *Proxy) SentBytes() int64 { return p.sent.Load() }

// Before calls fn with every request before it is passed on; a status
// code fn returns (not 0) is the answer instead.
func (p *Proxy) Before(fn func(r *http.Request) int) {
	p.mu.Lock()
	p.before = fn
	p.mu.Unlock()
}

// Ranges returns the Range headers of the GETs since the last Reset.
func (p *Proxy) Ranges() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ranges)
}

// Reset starts counting again.
func (p *Proxy) Reset() {
	p.getBytes.Store(0)
	p.gets.Store(0)
	p.sent.Store(0)
	p.mu.Lock()
	p.ranges = nil
	p.mu.Unlock()
}

// Fail answers the next n requests with 503 Service Unavailable.
func (p *Proxy) Fail(n int) { p.fail.Store(int64(n)) }

// Cut cuts the next n GET bodies off halfway: the connection closes
// mid-response.
func (p *Proxy) Cut(n int) { p.cut.Store(int64(n)) }

type countingBody struct {
	io.ReadCloser
	n    *atomic.Int64
	left int64 // bytes until the cut; -1: none
}

func (c *countingBody) Read(b []byte) (int, error) {
	if c.left == 0 {
		return 0, errors.New("s3test: body cut")
	}
	if c.left > 0 && int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	if c.left > 0 {
		c.left -= int64(n)
	}
	return n, err
}
