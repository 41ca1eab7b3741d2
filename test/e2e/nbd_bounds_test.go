package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// What a client on the network can make platter serve hold, and where it
// listens. The server is judged from outside: its memory from
// /proc/PID/status, its sockets from /proc/PID/net/tcp, its data by
// qemu-img and qemu-io.

// nbdServer is a running platter serve.
type nbdServer struct {
	cmd  *exec.Cmd
	addr string // as the "serving ... on ADDR" line says
	line string
	log  *lockedBuffer // stderr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveNBD starts `platter serve ARGS` (prefix, if any, runs it: a
// namespace) with PLATTER_NBD_TEST_TIMEOUTS=timeouts when not "", and
// waits for its "serving" line.
func serveNBD(t *testing.T, timeouts string, prefix []string, args ...string) *nbdServer {
	t.Helper()
	argv := append(append(prefix, platter, "serve"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	if timeouts != "" {
		cmd.Env = append(cmd.Env, "PLATTER_NBD_TEST_TIMEOUTS="+timeouts)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &nbdServer{cmd: cmd, log: &lockedBuffer{}}
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	s.line, err = bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("serve: %v; %s", err, s.log)
	}
	f := strings.Fields(s.line)
	for i, w := range f {
		if w == "on" && i+1 < len(f) {
			s.addr = f[i+1]
			return s
		}
	}
	t.Fatalf("serve said %q", s.line)
	return nil
}

// status reads a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func (s *nbdServer) status(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("server status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, l)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in the server's status", field)
	return 0
}

// nbdSocket is one hand-rolled client: it negotiates with
// NBD_OPT_EXPORT_NAME, like nbdRaw, but reports failure instead of
// ending the test.
func nbdSocket(addr, name string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	be := binary.BigEndian
	b := be.AppendUint32(nil, 3)
	b = be.AppendUint64(b, 0x49484156454f5054)
	b = be.AppendUint32(b, 1) // NBD_OPT_EXPORT_NAME
	b = be.AppendUint32(b, uint32(len(name)))
	c.Write(append(b, name...))
	var info [10]byte
	if _, err := io.ReadFull(c, info[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("export %q: %w", name, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func nbdRequest(c net.Conn, typ uint16, handle, off uint64, n uint32) error {
	be := binary.BigEndian
	req := be.AppendUint32(nil, 0x25609513)
	req = be.AppendUint16(req, 0)
	req = be.AppendUint16(req, typ)
	req = be.AppendUint64(req, handle)
	req = be.AppendUint64(req, off)
	req = be.AppendUint32(req, n)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(req)
	return err
}

// nbdGone waits up to within for the server to close c, reading and
// throwing away whatever replies were on their way.
func nbdGone(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func pollUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

const mib = 1 << 20

// nbdFlood opens n connections that each send reads of 32 MiB, 2 GiB
// asked in all, and never read a reply.
func nbdFlood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	var wg sync.WaitGroup
	for i := range n {
		c, err := nbdSocket(addr, "disk")
		if err != nil {
			t.Fatalf("flooder %d: %v", i, err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			for k := range 64 {
				if nbdRequest(c, 0, uint64(k), uint64(k%8)*32*mib, 32*mib) != nil {
					return
				}
			}
		})
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	return conns
}

// Clients that send 32 MiB reads as fast as they can and never read a
// reply cannot take the server past 448 MiB: the default 256 MiB budget,
// the 32 MiB cache, 128 MiB for the chunks being decoded and the runtime
// (the server's soft memory limit, 416 MiB here) and 32 MiB of what Go
// does not count (the binary, C zstd). Six of them hold one 32 MiB share
// each, and qemu-img reads the whole disk correctly meanwhile; six more
// fill the whole budget. The reply deadline drops all twelve and the
// memory goes back to the system.
func TestNBDFloodBounded(t *testing.T) {
	_, img, back := imagedFixture(t, "gpt-disk.sh")
	srv := serveNBD(t, "30s,10s", nil, "--nbd", "127.0.0.1:0", "--cache", "4", img)
	url := "nbd://" + srv.addr + "/disk"
	// At rest, after one whole read (the cache is full).
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", url, back)
	base := srv.status(t, "VmRSS")
	t.Logf("at rest: VmRSS %d MiB", base>>20)

	const limit = 448 * mib
	conns := nbdFlood(t, srv.addr, 6)
	// The memory is watched while the flood goes on; past 1 GiB (the
	// server is not bounded) the flood is stopped, not to take the
	// machine down with it.
	var peak int64
	watching := make(chan struct{})
	stopWatch := make(chan struct{})
	var mu sync.Mutex
	go func() {
		defer close(watching)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rss := srv.status(t, "VmRSS")
			peak = max(peak, rss)
			if rss > 1<<30 {
				mu.Lock()
				for _, c := range conns {
					c.Close()
				}
				mu.Unlock()
			}
		}
	}()
	time.Sleep(2 * time.Second) // the flood fills what it may
	began := time.Now()
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", url, back).CombinedOutput(); err != nil || !strings.Contains(string(out), "identical") {
		t.Errorf("qemu-img compare during the flood: %v %s", err, out)
	}
	t.Logf("qemu-img compare during the flood: %v", time.Since(began).Round(time.Millisecond))
	if n := strings.Count(srv.log.String(), "was not taken within"); n > 0 {
		t.Errorf("the flood was over (%d dropped) before qemu-img finished: the test proves nothing", n)
	}
	mid := srv.status(t, "VmHWM")
	t.Logf("six flooders: VmHWM %d MiB", mid>>20)
	if mid > limit {
		close(stopWatch)
		<-watching
		t.Fatalf("six flooders took the server to %d MiB (VmHWM), want under %d MiB", mid>>20, limit>>20)
	}

	// Six more: 12 x 32 MiB asked, more than the 256 MiB budget.
	more := nbdFlood(t, srv.addr, 6)
	mu.Lock()
	conns = append(conns, more...)
	mu.Unlock()
	time.Sleep(2 * time.Second)

	// The reply deadline (10 s here) drops all twelve, without our
	// reading: the second six only as they get room and stop reading.
	if !pollUntil(40*time.Second, func() bool { return strings.Count(srv.log.String(), "was not taken within 10s") == len(conns) }) {
		t.Errorf("the flooders were not dropped: %d of %d; log:\n%s", strings.Count(srv.log.String(), "was not taken within"), len(conns), srv.log)
	}
	mu.Lock()
	for i, c := range conns {
		if !nbdGone(c, 5*time.Second) {
			t.Errorf("flooder %d is still connected", i)
		}
	}
	mu.Unlock()
	close(stopWatch)
	<-watching
	hwm := srv.status(t, "VmHWM")
	t.Logf("twelve flooders: VmRSS peak %d MiB (sampled), VmHWM %d MiB", peak>>20, hwm>>20)
	if hwm > limit {
		t.Errorf("the flood took the server to %d MiB (VmHWM), want under %d MiB", hwm>>20, limit>>20)
	}
	// The memory goes back.
	var rss int64
	pollUntil(15*time.Second, func() bool { rss = srv.status(t, "VmRSS"); return rss < base+48*mib })
	t.Logf("after the flood: VmRSS %d MiB (at rest before: %d MiB)", rss>>20, base>>20)
	if rss >= base+48*mib {
		t.Errorf("after the flood the server keeps %d MiB, at rest it had %d MiB", rss>>20, base>>20)
	}
	// And serves.
	sh(t, "qemu-io", "-r", "-f", "raw", "-c", "read 0 1M", url)
}

// With 16 connections (the default limit) open, a 17th is closed at once
// and logged; the 16 are still served, and a slot given up is taken
// again.
func TestNBDConnectionLimit(t *testing.T) {
	_, img, _ := imagedFixture(t, "gpt-disk.sh")
	srv := serveNBD(t, "", nil, "--nbd", "127.0.0.1:0", img)
	var conns []net.Conn
	for i := range 16 {
		c, err := nbdSocket(srv.addr, "disk")
		if err != nil {
			t.Fatalf("connection %d of 16: %v", i+1, err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	began := time.Now()
	if extra, err := nbdSocket(srv.addr, "disk"); err == nil {
		extra.Close()
		t.Errorf("a 17th connection was served")
	} else if d := time.Since(began); d > 3*time.Second {
		t.Errorf("the 17th connection was closed after %v", d)
	}
	if !pollUntil(5*time.Second, func() bool { return strings.Contains(srv.log.String(), "refused: already serving 16 connections") }) {
		t.Errorf("the refusal was not logged: %s", srv.log)
	}
	for i, c := range conns {
		if e := nbdRead(t, c, uint64(i)*mib, 4096); e != 0 {
			t.Errorf("connection %d: error %d", i, e)
		}
	}
	conns[0].Close()
	if !pollUntil(5*time.Second, func() bool {
		return exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read 0 4096", "nbd://"+srv.addr+"/disk").Run() == nil
	}) {
		t.Error("a freed slot was not taken again")
	}
}

// A read longer than 32 MiB (the largest advertised) gets EINVAL and the
// connection goes on; a write claiming 4 GiB ends the connection without
// the server allocating it; clients that send a 32 MiB write's header and
// stop half way through its data are dropped after the deadline, and
// their buffers go.
func TestNBDRequestLength(t *testing.T) {
	_, img, back := imagedFixture(t, "gpt-disk.sh")
	overlay := filepath.Join(t.TempDir(), "overlay.img")
	srv := serveNBD(t, "30s,3s", nil, "--nbd", "127.0.0.1:0", "--overlay", overlay, img)
	c := nbdRaw(t, srv.addr, "disk")
	defer c.Close()
	if e := nbdRead(t, c, 0, 32*mib+1); e != 22 {
		t.Errorf("read of 32 MiB + 1: error %d, want 22 (EINVAL)", e)
	}
	if e := nbdRead(t, c, 0, 32*mib); e != 0 {
		t.Errorf("read of 32 MiB: error %d", e)
	}
	base := srv.status(t, "VmRSS")

	huge, err := nbdSocket(srv.addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer huge.Close()
	nbdRequest(huge, 1, 1, 0, 0xffffffff)
	huge.Write(make([]byte, mib))
	if !nbdGone(huge, 5*time.Second) {
		t.Error("a write of 4 GiB did not end the connection")
	}
	if rss := srv.status(t, "VmRSS"); rss > base+64*mib {
		t.Errorf("a write claiming 4 GiB: VmRSS %d MiB, was %d MiB", rss>>20, base>>20)
	}

	var stalled []net.Conn
	for range 8 {
		s, err := nbdSocket(srv.addr, "disk")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		nbdRequest(s, 1, 2, 0, 32*mib)
		s.Write(make([]byte, mib))
		stalled = append(stalled, s)
	}
	if !pollUntil(10*time.Second, func() bool { return strings.Count(srv.log.String(), "not sent within 3s") == len(stalled) }) {
		t.Errorf("the stalled writes were not dropped: %s", srv.log)
	}
	for i, s := range stalled {
		if !nbdGone(s, 5*time.Second) {
			t.Errorf("stalled writer %d is still connected", i)
		}
	}
	var rss int64
	pollUntil(15*time.Second, func() bool { rss = srv.status(t, "VmRSS"); return rss < base+48*mib })
	if rss >= base+48*mib {
		t.Errorf("after the stalled writes: VmRSS %d MiB, was %d MiB", rss>>20, base>>20)
	}
	// Nothing of the half writes landed.
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+srv.addr+"/disk", back); !strings.Contains(out, "identical") {
		t.Errorf("after the half writes: %s", out)
	}
	if e := nbdRead(t, c, 4096, 4096); e != 0 {
		t.Errorf("the first connection after all that: error %d", e)
	}
}

// A client that connects and says nothing, or stops half way through the
// negotiation, is dropped after the negotiation deadline; a client that
// negotiated and then sits idle longer is not.
func TestNBDNegotiationDeadline(t *testing.T) {
	_, img, _ := imagedFixture(t, "gpt-disk.sh")
	srv := serveNBD(t, "2s,2s", nil, "--nbd", "127.0.0.1:0", img)
	idle := nbdRaw(t, srv.addr, "disk")
	defer idle.Close()
	silent, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	half, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	var hello [18]byte
	io.ReadFull(half, hello[:])
	half.Write([]byte{0, 0, 0, 3, 'I', 'H', 'A', 'V'}) // flags and a third of an option
	began := time.Now()
	for name, c := range map[string]net.Conn{"silent": silent, "half-negotiated": half} {
		if !nbdGone(c, 8*time.Second) {
			t.Errorf("the %s client was not dropped", name)
		}
	}
	if d := time.Since(began); d < 1500*time.Millisecond {
		t.Errorf("dropped after %v, before the 2 s deadline", d)
	}
	if !pollUntil(5*time.Second, func() bool { return strings.Count(srv.log.String(), "negotiation not finished within 2s") == 2 }) {
		t.Errorf("the drops were not logged (want 2 lines): %s", srv.log)
	}
	time.Sleep(3 * time.Second) // idle past both deadlines
	if e := nbdRead(t, idle, 0, 4096); e != 0 {
		t.Errorf("the idle client: error %d", e)
	}
}

// --nbd :PORT listens on 127.0.0.1 only, and says so: in a network
// namespace of its own with a second interface (198.18.0.1, a veth made
// here), qemu-io reaches the export at 127.0.0.1 and is refused at
// 198.18.0.1. 0.0.0.0 and [::] are served as asked, with a warning. A unix
// socket is made 0600.
func TestNBDLoopbackDefault(t *testing.T) {
	_, img, _ := imagedFixture(t, "gpt-disk.sh")
	for _, tool := range []string{"unshare", "nsenter", "ip", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test and is not installed", tool)
		}
	}
	netns := []string{"unshare", "--net", "--", "sh", "-c",
		`ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 198.18.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && exec "$0" "$@"`}

	srv := serveNBD(t, "", netns, "--nbd", ":0", img)
	host, port, err := net.SplitHostPort(srv.addr)
	if err != nil || host != "127.0.0.1" {
		t.Errorf("--nbd :0 serves on %q, want 127.0.0.1:PORT (%s)", srv.addr, srv.line)
	}
	ns := fmt.Sprintf("--net=/proc/%d/ns/net", srv.cmd.Process.Pid)
	sh(t, "nsenter", ns, "qemu-io", "-r", "-f", "raw", "-c", "read 0 4096", "nbd://127.0.0.1:"+port+"/disk")
	out, err := exec.Command("nsenter", ns, "qemu-io", "-r", "-f", "raw", "-c", "read 0 4096", "nbd://198.18.0.1:"+port+"/disk").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "refused") {
		t.Errorf("reached through 198.18.0.1: %s", out)
	}
	if strings.Contains(srv.log.String(), "warning") {
		t.Errorf("a warning for loopback: %s", srv.log)
	}
	// The kernel's view: one listening socket, on 127.0.0.1.
	tcp, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", srv.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	var listening []string
	for _, l := range strings.Split(string(tcp), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) {
			listening = append(listening, f[1])
		}
	}
	tcp6, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp6", srv.cmd.Process.Pid))
	if len(listening) != 1 || listening[0] != fmt.Sprintf("0100007F:%04X", p) || strings.Contains(string(tcp6), fmt.Sprintf(":%04X 00000000000000000000000000000000:0000 0A", p)) {
		t.Errorf("listening sockets on port %d: %v (tcp6:\n%s)", p, listening, tcp6)
	}

	overlay := filepath.Join(t.TempDir(), "overlay.img")
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		all := serveNBD(t, "", netns, "--nbd", addr, "--overlay", overlay, img)
		if h, _, _ := net.SplitHostPort(all.addr); h != "0.0.0.0" && h != "::" {
			t.Errorf("--nbd %s serves on %s", addr, all.addr)
		}
		// stderr comes through a pipe: wait for it.
		pollUntil(5*time.Second, func() bool { return strings.Contains(all.log.String(), "--tls-cert") })
		warning := all.log.String()
		for _, want := range []string{"anyone who can reach this port can read the whole disk", "write to " + overlay, "ssh -L", "--tls-cert"} {
			if !strings.Contains(warning, want) {
				t.Errorf("--nbd %s: the warning does not say %q: %q", addr, want, warning)
			}
		}
		_, port, _ := net.SplitHostPort(all.addr)
		sh(t, "nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", all.cmd.Process.Pid), "qemu-io", "-r", "-f", "raw", "-c", "read 0 4096", "nbd://198.18.0.1:"+port+"/disk")
	}

	sock := filepath.Join(t.TempDir(), "nbd.sock")
	serveNBD(t, "", nil, "--nbd", sock, img)
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("unix socket: %v, %v; want mode 0600", st.Mode(), err)
	}
	sh(t, "qemu-io", "-r", "-f", "raw", "-c", "read 0 4096", "nbd+unix:///disk?socket="+sock)
}

// tlsFiles writes a CA (dir/ca-cert.pem, as qemu's tls-creds-x509 wants
// it) and a server certificate it signed for 127.0.0.1 and localhost.
func tlsFiles(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "platter test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write("ca-cert.pem", "CERTIFICATE", caDER)
	srvKey := newKey()
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("server-cert.pem", "CERTIFICATE", srvDER), write("server-key.pem", "PRIVATE KEY", keyDER)
}

// With --tls-cert and --tls-key, qemu-img with the CA reads the whole
// export over TLS and it is the restored disk; clients without TLS get
// NBD_REP_ERR_TLS_REQD (or, asking by NBD_OPT_EXPORT_NAME, a closed
// connection) and no data.
func TestNBDTLS(t *testing.T) {
	_, img, back := imagedFixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	cert, key := tlsFiles(t, dir)
	srv := serveNBD(t, "", nil, "--nbd", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, img)
	_, port, _ := net.SplitHostPort(srv.addr)
	creds := "tls-creds-x509,id=tls0,dir=" + dir + ",endpoint=client"
	nbdOpts := "driver=nbd,host=127.0.0.1,port=" + port + ",export=disk,tls-creds=tls0"
	if out := sh(t, "qemu-img", "compare", "--object", creds, "--image-opts", nbdOpts, "driver=raw,file.driver=file,file.filename="+back); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare over TLS: %s", out)
	}
	// The same through qemu-nbd's client side: the export list.
	if out := sh(t, "qemu-nbd", "--object", creds, "--tls-creds", "tls0", "--list", "--bind", "127.0.0.1", "--port", port); !strings.Contains(out, "export: 'disk'") {
		t.Errorf("qemu-nbd --list over TLS: %s", out)
	}
	// A CA that did not sign the server's certificate: refused.
	other := t.TempDir()
	tlsFiles(t, other)
	if out, err := exec.Command("qemu-img", "info", "--object", "tls-creds-x509,id=tls0,dir="+other+",endpoint=client", "--image-opts", nbdOpts).CombinedOutput(); err == nil {
		t.Errorf("qemu-img with the wrong CA was served: %s", out)
	}

	// Without TLS: qemu-img and nbd-client -l are refused.
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+srv.addr+"/disk", back).CombinedOutput(); err == nil {
		t.Errorf("qemu-img without TLS was served: %s", out)
	}
	if out, err := exec.Command("nbd-client", "-l", "127.0.0.1", port).CombinedOutput(); err == nil && strings.Contains(string(out), "disk") {
		t.Errorf("nbd-client -l without TLS listed the exports: %s", out)
	}
	// By hand: NBD_OPT_GO is answered NBD_REP_ERR_TLS_REQD ...
	be := binary.BigEndian
	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var hello [18]byte
	io.ReadFull(c, hello[:])
	b := be.AppendUint32(nil, 3)
	b = be.AppendUint64(b, 0x49484156454f5054)
	b = be.AppendUint32(b, 7) // NBD_OPT_GO
	b = be.AppendUint32(b, 4+4+2)
	b = be.AppendUint32(b, 4)
	b = append(b, "disk"...)
	b = be.AppendUint16(b, 0)
	c.Write(b)
	var rep [20]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil || be.Uint32(rep[12:]) != 1<<31+5 {
		t.Errorf("NBD_OPT_GO without TLS: reply %#x, %v; want NBD_REP_ERR_TLS_REQD", be.Uint32(rep[12:]), err)
	}
	io.CopyN(io.Discard, c, int64(be.Uint32(rep[16:])))
	// ... and NBD_OPT_EXPORT_NAME closes the connection, no data sent.
	b = be.AppendUint64(nil, 0x49484156454f5054)
	b = be.AppendUint32(b, 1)
	b = be.AppendUint32(b, 4)
	c.Write(append(b, "disk"...))
	nbdRequest(c, 0, 1, 0, 4096)
	if rest, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(rest) > 0 {
		t.Errorf("after NBD_OPT_EXPORT_NAME without TLS: %d bytes, %v", len(rest), err)
	}
}
