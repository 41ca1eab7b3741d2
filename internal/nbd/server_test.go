package nbd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDev is a device in memory; writable when w is set.
type memDev struct{ b []byte }

func (d *memDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (d *memDev) Size() int64 { return int64(len(d.b)) }

type memRW struct {
	memDev
	mu sync.Mutex
}

func (d *memRW) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(d.b[off:], p), nil
}
func (d *memRW) Sync() error { return nil }

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// logs is a Server.Log that tests can read while the server writes.
type logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start serves dev as export "disk" on a loopback port until the test
// ends.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// The client side of the protocol, by hand, for what stock clients will
// not do (flood, stall, cheat).

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greet reads the server's hello and sends the client flags.
func greet(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		t.Fatalf("hello: %v", err)
	}
	if be.Uint64(hello[:]) != nbdMagic {
		t.Fatalf("hello %x", hello)
	}
	c.Write(be.AppendUint32(nil, flagFixed|flagNoZeroes))
}

func sendOpt(c net.Conn, opt uint32, data []byte) {
	b := be.AppendUint64(nil, optMagic)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	c.Write(append(b, data...))
}

// optReplies reads the replies to one option up to the last (an ack or
// an error) and returns their types and payloads.
func optReplies(t *testing.T, c net.Conn) (types []uint32, payloads [][]byte) {
	t.Helper()
	for {
		var r [20]byte
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, r[:]); err != nil {
			t.Fatalf("option reply: %v", err)
		}
		p := make([]byte, be.Uint32(r[16:]))
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatal(err)
		}
		typ := be.Uint32(r[12:])
		types, payloads = append(types, typ), append(payloads, p)
		if typ == repAck || typ&(1<<31) != 0 {
			return types, payloads
		}
	}
}

func goData(name string) []byte {
	d := be.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	return be.AppendUint16(d, 0)
}

// open negotiates export name with NBD_OPT_GO and returns the largest
// request the server advertised.
func open(t *testing.T, c net.Conn, name string) uint32 {
	t.Helper()
	sendOpt(c, optGo, goData(name))
	types, payloads := optReplies(t, c)
	if types[len(types)-1] != repAck {
		t.Fatalf("NBD_OPT_GO: reply %#x", types[len(types)-1])
	}
	for i, p := range payloads {
		if types[i] == repInfo && be.Uint16(p) == infoBlockSize {
			return be.Uint32(p[10:])
		}
	}
	t.Fatal("no NBD_INFO_BLOCK_SIZE")
	return 0
}

func connect(t *testing.T, addr string) net.Conn {
	c := dial(t, addr)
	greet(t, c)
	open(t, c, "disk")
	c.SetDeadline(time.Time{})
	return c
}

func request(c net.Conn, typ uint16, handle, off uint64, n uint32, data []byte) error {
	b := be.AppendUint32(nil, requestMagic)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, n)
	_, err := c.Write(append(b, data...))
	return err
}

// read reads n bytes at off and returns the reply's error number and data.
func read(t *testing.T, c net.Conn, off uint64, n uint32) (uint32, []byte) {
	t.Helper()
	if err := request(c, cmdRead, 9, off, n, nil); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var r [16]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if be.Uint32(r[:]) != simpleMagic || be.Uint64(r[8:]) != 9 {
		t.Fatalf("reply %x", r)
	}
	errno := be.Uint32(r[4:])
	if errno != 0 {
		return errno, nil
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c, data); err != nil {
		t.Fatal(err)
	}
	return errno, data
}

// closed waits up to within for the server to close c (reading and
// throwing away whatever replies were on their way) and says whether it
// did.
func closed(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	return err == nil || !errors.Is(err, os.ErrDeadlineExceeded)
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// Clients that send large reads and never read the replies hold no more
// than InFlight between them; the writes that cannot go out drop them
// after Reply, their buffers are freed, and the server goes on serving.
func TestFloodIsBounded(t *testing.T) {
	const mib = 1 << 20
	dev := &memDev{pattern(64 * mib)}
	var log logs
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, Log: log.logf,
		Limits: Limits{InFlight: 16 * mib, Reply: 500 * time.Millisecond}}
	addr := start(t, s)

	var flooders []net.Conn
	for range 4 {
		c := connect(t, addr)
		flooders = append(flooders, c)
		go func() {
			// Far more than the budget: 4 x 200 x 4 MiB.
			for i := range 200 {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if request(c, cmdRead, uint64(i), uint64(i%16)*4*mib, 4*mib, nil) != nil {
					return
				}
			}
		}()
	}
	peak := int64(0)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			s.bufs.mu.Lock()
			peak = max(peak, s.bufs.used)
			s.bufs.mu.Unlock()
		}
	}()
	// The budget fills up.
	if !waitFor(5*time.Second, func() bool { return s.bufs.inUse() >= 12*mib }) {
		t.Errorf("the flood holds only %d bytes", s.bufs.inUse())
	}
	// Not reading from them (that would serve them): the server drops
	// them by itself.
	if !waitFor(5*time.Second, func() bool { return s.active.Load() == 0 }) {
		t.Errorf("%d flooding connections are still served", s.active.Load())
	}
	for i, c := range flooders {
		if !closed(c, 5*time.Second) {
			t.Errorf("flooding connection %d was not dropped", i)
		}
	}
	close(stop)
	<-sampled
	if peak > 16*mib {
		t.Errorf("the server held %d bytes of buffers, more than the %d of InFlight", peak, 16*mib)
	}
	if !strings.Contains(log.String(), "was not taken within 500ms; connection dropped") {
		t.Errorf("the drops were not logged: %s", log.String())
	}
	// Freed, and given back (the pool is emptied when they go).
	if !waitFor(5*time.Second, func() bool { return s.bufs.inUse() == 0 && s.active.Load() == 0 }) {
		t.Errorf("after the flood: %d bytes in use, %d connections", s.bufs.inUse(), s.active.Load())
	}
	if !waitFor(5*time.Second, func() bool { s.bufs.mu.Lock(); defer s.bufs.mu.Unlock(); return s.bufs.used == 0 }) {
		t.Errorf("the pool kept %d bytes after the flooders went", s.bufs.used)
	}
	c := connect(t, addr)
	if errno, data := read(t, c, 5*mib+3, 2*mib); errno != 0 || !bytes.Equal(data, dev.b[5*mib+3:7*mib+3]) {
		t.Errorf("read after the flood: error %d", errno)
	}
}

// A client that stops reading holds one largest request's worth (its
// share), not the whole budget: others are still served meanwhile.
func TestFloodLeavesOthersServed(t *testing.T) {
	const mib = 1 << 20
	dev := &memDev{pattern(64 * mib)}
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, Limits: Limits{InFlight: 64 * mib, Reply: 10 * time.Second}}
	addr := start(t, s)
	f := connect(t, addr)
	go func() {
		for i := range 100 {
			f.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if request(f, cmdRead, uint64(i), 0, 32*mib, nil) != nil {
				return
			}
		}
	}()
	if !waitFor(5*time.Second, func() bool { return s.bufs.inUse() >= 32*mib }) {
		t.Fatalf("the flood holds only %d bytes", s.bufs.inUse())
	}
	time.Sleep(200 * time.Millisecond)
	if n := s.bufs.inUse(); n != 32*mib {
		t.Errorf("one flooding client holds %d bytes, want its share of 32 MiB", n)
	}
	c := connect(t, addr)
	for i := range 20 {
		off := uint64(i) * 3 * mib
		if errno, data := read(t, c, off, 2*mib); errno != 0 || !bytes.Equal(data, dev.b[off:off+2*mib]) {
			t.Fatalf("read %d during the flood: error %d", i, errno)
		}
	}
}

// Past MaxConnections, a connection is closed at once and logged; the
// others go on, and a slot freed is taken again.
func TestConnectionLimit(t *testing.T) {
	dev := &memDev{pattern(1 << 20)}
	var log logs
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, Log: log.logf, Limits: Limits{MaxConnections: 2}}
	addr := start(t, s)
	a, b := connect(t, addr), connect(t, addr)
	extra := dial(t, addr)
	if !closed(extra, 2*time.Second) {
		t.Fatal("a third connection was not closed")
	}
	if !strings.Contains(log.String(), "refused: already serving 2 connections") {
		t.Errorf("log: %q", log.String())
	}
	for _, c := range []net.Conn{a, b} {
		if errno, data := read(t, c, 4096, 4096); errno != 0 || !bytes.Equal(data, dev.b[4096:8192]) {
			t.Errorf("read on a connection within the limit: %d", errno)
		}
	}
	a.Close()
	if !waitFor(5*time.Second, func() bool { return s.active.Load() == 1 }) {
		t.Fatal("the closed connection is still counted")
	}
	c := connect(t, addr)
	if errno, _ := read(t, c, 0, 512); errno != 0 {
		t.Errorf("read on a new connection: %d", errno)
	}
}

// A client that connects and does not negotiate is dropped after
// Negotiate; one that negotiated and then sits idle is not, however long
// past Negotiate and Reply.
func TestNegotiateDeadline(t *testing.T) {
	dev := &memDev{pattern(1 << 20)}
	var log logs
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, Log: log.logf,
		Limits: Limits{Negotiate: 300 * time.Millisecond, Reply: 300 * time.Millisecond}}
	addr := start(t, s)
	idle := connect(t, addr)
	silent := dial(t, addr)
	half := dial(t, addr)
	greet(t, half)
	half.Write(be.AppendUint64(nil, optMagic)) // and no more
	began := time.Now()
	for _, c := range []net.Conn{silent, half} {
		if !closed(c, 3*time.Second) {
			t.Fatal("a client that did not negotiate was not dropped")
		}
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Errorf("dropped after %v, before the deadline", d)
	}
	if !strings.Contains(log.String(), "negotiation not finished within 300ms") {
		t.Errorf("log: %q", log.String())
	}
	time.Sleep(time.Second)
	if errno, data := read(t, idle, 100, 1000); errno != 0 || !bytes.Equal(data, dev.b[100:1100]) {
		t.Errorf("read after a second idle: %d", errno)
	}
}

// A read longer than the largest request advertised gets EINVAL and the
// connection goes on; a write claiming a huge length is not read into
// memory (the connection is closed); one whose data stops half way is
// dropped after Reply and its buffer freed.
func TestRequestLength(t *testing.T) {
	const mib = 1 << 20
	dev := &memRW{memDev: memDev{pattern(64 * mib)}}
	var log logs
	// Long enough for this test's own client to take a 32 MiB reply on
	// a loaded machine under the race detector.
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, Log: log.logf, Limits: Limits{Reply: 2 * time.Second}}
	addr := start(t, s)
	c := dial(t, addr)
	greet(t, c)
	if max := open(t, c, "disk"); max != 32*mib {
		t.Errorf("advertised maximum block size %d, want 32 MiB", max)
	}
	if errno, _ := read(t, c, 0, 32*mib+1); errno != errInval {
		t.Errorf("read of 32 MiB + 1: error %d, want EINVAL", errno)
	}
	if errno, data := read(t, c, 0, 32*mib); errno != 0 || !bytes.Equal(data, dev.b[:32*mib]) {
		t.Errorf("read of 32 MiB: error %d", errno)
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	huge := connect(t, addr)
	request(huge, cmdWrite, 1, 0, 0xffffffff, make([]byte, 4096))
	if !closed(huge, 2*time.Second) {
		t.Error("a write of 4 GiB did not end the connection")
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 8*mib {
		t.Errorf("a write claiming 4 GiB allocated %d bytes", d)
	}

	stalled := connect(t, addr)
	request(stalled, cmdWrite, 2, 0, 32*mib, make([]byte, mib))
	if !waitFor(2*time.Second, func() bool { return s.bufs.inUse() == 32*mib }) {
		t.Errorf("%d bytes in use for a 32 MiB write", s.bufs.inUse())
	}
	if !closed(stalled, 6*time.Second) {
		t.Error("a write whose data stopped was not dropped")
	}
	if !waitFor(2*time.Second, func() bool { return s.bufs.inUse() == 0 }) {
		t.Errorf("%d bytes in use after the stalled write was dropped", s.bufs.inUse())
	}
	if !strings.Contains(log.String(), "not sent within 2s") {
		t.Errorf("log: %q", log.String())
	}
	if !bytes.Equal(dev.b[:mib], pattern(mib)) {
		t.Error("half a write was written")
	}
	// A whole write and a trim go through, and read back.
	w := connect(t, addr)
	request(w, cmdWrite, 3, 4096, 8192, bytes.Repeat([]byte{0xab}, 8192))
	request(w, cmdTrim, 4, 12288, 4096, nil)
	for range 2 {
		var r [16]byte
		if _, err := io.ReadFull(w, r[:]); err != nil || be.Uint32(r[4:]) != 0 {
			t.Fatalf("write or trim: %v %x", err, r)
		}
	}
	want := append(bytes.Repeat([]byte{0xab}, 8192), make([]byte, 4096)...)
	if errno, data := read(t, w, 4096, 12288); errno != 0 || !bytes.Equal(data, want) {
		t.Errorf("read back: error %d", errno)
	}
}

// testCert returns a self-signed certificate for 127.0.0.1 and a pool
// that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "platter test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// A TLS-only server refuses every option but STARTTLS and ABORT before
// TLS, closes on NBD_OPT_EXPORT_NAME, and serves over TLS after STARTTLS.
func TestTLS(t *testing.T) {
	dev := &memDev{pattern(1 << 20)}
	cert, pool := testCert(t)
	s := &Server{Exports: []Export{{Name: "disk", Dev: dev}}, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
	addr := start(t, s)

	c := dial(t, addr)
	greet(t, c)
	for _, opt := range []uint32{optGo, optInfo, optList, 99} {
		d := goData("disk")
		if opt == optList {
			d = nil
		}
		sendOpt(c, opt, d)
		if types, _ := optReplies(t, c); len(types) != 1 || types[0] != repErrTLSReqd {
			t.Errorf("option %d before TLS: replies %#x, want NBD_REP_ERR_TLS_REQD", opt, types)
		}
	}
	sendOpt(c, optExportName, []byte("disk"))
	if !closed(c, 2*time.Second) {
		t.Error("NBD_OPT_EXPORT_NAME before TLS did not close the connection")
	}

	c = dial(t, addr)
	greet(t, c)
	sendOpt(c, optStartTLS, nil)
	if types, _ := optReplies(t, c); types[0] != repAck {
		t.Fatalf("STARTTLS: %#x", types)
	}
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	sendOpt(tc, optStartTLS, nil)
	if types, _ := optReplies(t, tc); types[0] != repErrInvalid {
		t.Errorf("a second STARTTLS: %#x, want NBD_REP_ERR_INVALID", types)
	}
	open(t, tc, "disk")
	if errno, data := read(t, tc, 1000, 70000); errno != 0 || !bytes.Equal(data, dev.b[1000:71000]) {
		t.Errorf("read over TLS: error %d", errno)
	}

	// Without TLS configured, STARTTLS is not offered.
	plain := &Server{Exports: []Export{{Name: "disk", Dev: dev}}}
	c = dial(t, start(t, plain))
	greet(t, c)
	sendOpt(c, optStartTLS, nil)
	if types, _ := optReplies(t, c); types[0] != repErrUnsup {
		t.Errorf("STARTTLS on a plain server: %#x", types)
	}
}

// :port is loopback only; an explicit address is what it says and is
// Exposed; a unix socket is made 0600.
func TestListen(t *testing.T) {
	ln, err := Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if a := ln.Addr().(*net.TCPAddr); !a.IP.Equal(net.IPv4(127, 0, 0, 1)) || Exposed(ln) {
		t.Errorf(":0 listens on %v (exposed: %v)", a, Exposed(ln))
	}
	all, err := Listen("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if !Exposed(all) {
		t.Errorf("0.0.0.0 is not exposed")
	}
	path := filepath.Join(t.TempDir(), "nbd.sock")
	un, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer un.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 || Exposed(un) {
		t.Errorf("unix socket: %v %v", st.Mode(), err)
	}
	if _, err := Listen("nonsense"); err == nil {
		t.Error("an address without a port was taken")
	}
}

// The pool never has more than its limit allocated, serves waiters in
// order, and a waiter that gives up takes nothing.
func TestBuffers(t *testing.T) {
	p := newBuffers(8 << 20)
	var wg sync.WaitGroup
	var over sync.Once
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := int64(1+(g*7919+i*104729)%(4<<20)) + 1
				b, err := p.get(context.Background(), n)
				if err != nil || int64(len(b)) != n {
					t.Errorf("get %d: %v, %d bytes", n, err, len(b))
					return
				}
				p.mu.Lock()
				if p.used > p.limit {
					over.Do(func() { t.Errorf("%d bytes allocated, limit %d", p.used, p.limit) })
				}
				p.mu.Unlock()
				b[0], b[n-1] = 1, 2
				p.put(b)
			}
		})
	}
	wg.Wait()
	if p.inUse() != 0 {
		t.Errorf("%d bytes in use at the end", p.inUse())
	}
	big, _ := p.get(context.Background(), 8<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.get(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("get past the limit: %v", err)
	}
	p.put(big)
	if n := p.trim(); n != 8<<20 || p.used != 0 {
		t.Errorf("trim dropped %d bytes, %d left", n, p.used)
	}
	for _, c := range []struct {
		n    int64
		want int
	}{{1, 0}, {4096, 0}, {4097, 1}, {1 << 20, 8}, {32 << 20, 13}} {
		if got := classOf(c.n); got != c.want {
			t.Errorf("classOf(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	if got := (Limits{InFlight: 3 << 20}).MaxRequest(); got != 2<<20 {
		t.Errorf("MaxRequest with 3 MiB in flight: %d", got)
	}
}
