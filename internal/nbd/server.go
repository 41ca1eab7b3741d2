// Package nbd serves block devices over the Network Block Device protocol
// (fixed newstyle negotiation, simple replies, optional STARTTLS), as stock
// clients speak it: qemu-img, qemu-nbd, nbd-client, qemu -drive
// file=nbd://.
//
// Requests of a connection are served in parallel, replies written whole
// one at a time; a read that fails (a damaged chunk) is answered with EIO
// for that request alone, and the connection and server go on.
//
// Clients are not trusted with the server's memory: what they can make it
// hold is bounded by Limits (connections, bytes in flight, the time a
// negotiation or a reply may take), and buffers come from one pool that is
// returned to the system when the clients that filled it go.
package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Device is what an export serves. Write is nil for a read-only export.
type Device interface {
	io.ReaderAt
	Size() int64
}

// Writable is a Device that takes writes (an overlay).
type Writable interface {
	Device
	io.WriterAt
	Sync() error
}

// Export is one named device; the first is the default export (the name
// "" asks for it).
type Export struct {
	Name        string
	Description string
	Dev         Device
}

// Server serves exports on the connections it accepts. Its fields are
// set before Serve and not changed after.
type Server struct {
	Exports []Export
	// Log, if set, is told about each connection refused or dropped,
	// each connection's end in error and each failed request.
	Log func(format string, args ...any)
	// TLS, if set, makes the server TLS-only: a client must send
	// NBD_OPT_STARTTLS first. Before it, every option but ABORT is
	// answered NBD_REP_ERR_TLS_REQD and NBD_OPT_EXPORT_NAME ends the
	// connection.
	TLS    *tls.Config
	Limits Limits

	lim     Limits
	maxReq  int64
	bufs    *buffers
	readers chan struct{} // device reads in progress, server-wide
	active  atomic.Int64  // connections being served
	idle    *time.Timer   // frees the pool once nothing has been in flight a while
	seen    atomic.Int64  // connections accepted, to name unix clients

	freeMu      sync.Mutex
	freeWanted  bool // another round: memory was let go during the last
	freeRunning bool
}

// idleRelease is how long the buffer pool is kept once nothing is in
// flight: a client between bursts of reads reuses it, one gone for good
// gives its memory back.
const idleRelease = 10 * time.Second

// Protocol numbers (the NBD protocol document, doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454f5054 // "IHAVEOPT"
	repMagic       = 0x0003e889045565a9
	requestMagic   = 0x25609513
	simpleMagic    = 0x67446698
	flagFixed      = 1 << 0
	flagNoZeroes   = 1 << 1
	optExportName  = 1
	optAbort       = 2
	optList        = 3
	optStartTLS    = 5
	optInfo        = 6
	optGo          = 7
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repErrUnsup    = 1<<31 + 1
	repErrInvalid  = 1<<31 + 3
	repErrTLSReqd  = 1<<31 + 5
	repErrUnknown  = 1<<31 + 6
	infoExport     = 0
	infoBlockSize  = 3
	maxOptionBytes = 64 << 10

	tHasFlags  = 1 << 0
	tReadOnly  = 1 << 1
	tFlush     = 1 << 2
	tTrim      = 1 << 5
	tMultiConn = 1 << 8

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	cmdTrim  = 4

	errPerm  = 1
	errIO    = 5
	errInval = 22
)

// Serve accepts connections until ctx ends or the listener fails. Each
// connection's errors end that connection only; connections past
// Limits.MaxConnections are closed as they come.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.lim = s.Limits.withDefaults()
	s.maxReq = s.lim.MaxRequest()
	s.bufs = newBuffers(s.lim.InFlight)
	s.readers = make(chan struct{}, s.lim.Readers)
	s.idle = time.AfterFunc(idleRelease, s.freeMemory)
	s.idle.Stop()
	s.bufs.idle = func() { s.idle.Reset(idleRelease) }
	defer s.idle.Stop()

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	var lastRefusal time.Time
	refused := 0 // not logged: one line a second at most
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !acceptRetry(err) {
				return err
			}
			// Out of descriptors or a connection reset before it was
			// taken: the server goes on, a little later.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logf("nbd: accept: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.active.Load() >= int64(s.lim.MaxConnections) {
			// Logged before the close, so whoever sees the connection
			// closed finds the reason already written.
			if time.Since(lastRefusal) < time.Second {
				refused++
			} else {
				more := ""
				if refused > 0 {
					more = fmt.Sprintf(" (and %d more since the last such line)", refused)
				}
				s.logf("nbd: %s: refused: already serving %d connections, the limit%s", s.who(conn), s.lim.MaxConnections, more)
				lastRefusal, refused = time.Now(), 0
			}
			conn.Close()
			continue
		}
		s.active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.active.Add(-1)
			s.serveConn(ctx, conn)
		}()
	}
}

func acceptRetry(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECONNRESET)
}

// who names a connection's client in the log: its address, or a number
// for a unix socket's clients, which have none.
func (s *Server) who(c net.Conn) string {
	n := s.seen.Add(1)
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return fmt.Sprintf("client %d", n)
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log(format, args...)
	}
}

// freeMemory drops the pool's free buffers and has the runtime give the
// memory back to the system now, not after its next collection (which an
// idle server may not have for minutes): a server that a flood of large
// reads took to hundreds of MiB goes back to its size at rest. Calls
// while one runs make it run once more, not in parallel.
func (s *Server) freeMemory() {
	s.bufs.trim()
	s.freeMu.Lock()
	defer s.freeMu.Unlock()
	s.freeWanted = true
	if s.freeRunning {
		return
	}
	s.freeRunning = true
	for s.freeWanted {
		s.freeWanted = false
		s.freeMu.Unlock()
		debug.FreeOSMemory()
		s.freeMu.Lock()
	}
	s.freeRunning = false
}

// conn is one client's connection.
type conn struct {
	s      *Server
	nc     net.Conn // a *tls.Conn after STARTTLS
	who    string
	ctx    context.Context
	cancel context.CancelFunc
	large  bool // it held a large buffer: free memory when it ends

	wmu     sync.Mutex // one reply at a time
	dropped bool
}

var be = binary.BigEndian

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	c := &conn{s: s, nc: nc, who: s.who(nc)}
	c.ctx, c.cancel = context.WithCancel(ctx)
	// Dropping the connection (or the server's end) closes it: reads and
	// writes in progress fail and every goroutine of it returns.
	stop := context.AfterFunc(c.ctx, func() { nc.Close() })
	defer stop()
	defer c.cancel()
	defer nc.Close()
	err := c.serve()
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, errDropped):
	default:
		s.logf("nbd: %s: %v", c.who, err)
	}
	if c.large {
		s.freeMemory()
	}
}

func (c *conn) serve() error {
	// The whole negotiation must finish in time; transmission clears it.
	c.nc.SetDeadline(time.Now().Add(c.s.lim.Negotiate))
	var hello [18]byte
	be.PutUint64(hello[0:], nbdMagic)
	be.PutUint64(hello[8:], optMagic)
	be.PutUint16(hello[16:], flagFixed|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return c.negotiateErr(err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.nc, cf[:]); err != nil {
		return c.negotiateErr(err)
	}
	noZeroes := be.Uint32(cf[:])&flagNoZeroes != 0
	exp, err := c.negotiate(noZeroes)
	if err != nil || exp == nil {
		return c.negotiateErr(err)
	}
	// Idle clients are served for as long as they like; only a reply
	// (or a write's data) has a deadline.
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return err
	}
	return c.transmit(exp)
}

func (c *conn) negotiateErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("negotiation not finished within %v; connection dropped", c.s.lim.Negotiate)
	}
	return err
}

// optReply writes one option reply.
func (c *conn) optReply(opt, typ uint32, payload []byte) error {
	var r [20]byte
	be.PutUint64(r[0:], repMagic)
	be.PutUint32(r[8:], opt)
	be.PutUint32(r[12:], typ)
	be.PutUint32(r[16:], uint32(len(payload)))
	_, err := c.nc.Write(append(r[:], payload...))
	return err
}

// negotiate answers options until the client picks an export (nil: it
// aborted).
func (c *conn) negotiate(noZeroes bool) (*Export, error) {
	s := c.s
	secure := s.TLS == nil // nothing to wait for
	for {
		var h [16]byte
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			return nil, err
		}
		if be.Uint64(h[0:]) != optMagic {
			return nil, fmt.Errorf("bad option magic %#x", be.Uint64(h[0:]))
		}
		opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
		if n > maxOptionBytes {
			return nil, fmt.Errorf("option %d of %d bytes", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.nc, data); err != nil {
			return nil, err
		}
		if !secure {
			switch opt {
			case optStartTLS:
				if n != 0 {
					if err := c.optReply(opt, repErrInvalid, nil); err != nil {
						return nil, err
					}
					continue
				}
				if err := c.optReply(opt, repAck, nil); err != nil {
					return nil, err
				}
				tc := tls.Server(c.nc, s.TLS)
				if err := tc.HandshakeContext(c.ctx); err != nil {
					return nil, fmt.Errorf("TLS handshake: %w", err)
				}
				c.nc, secure = tc, true
				continue
			case optAbort:
			case optExportName:
				// No way to answer it with an error: the spec's answer
				// is to close.
				return nil, errors.New("NBD_OPT_EXPORT_NAME before STARTTLS on a TLS-only server; connection closed")
			default:
				if err := c.optReply(opt, repErrTLSReqd, []byte("this server needs TLS: NBD_OPT_STARTTLS first")); err != nil {
					return nil, err
				}
				continue
			}
		}
		switch opt {
		case optExportName:
			e := s.find(string(data))
			if e == nil {
				return nil, fmt.Errorf("no export %q", data)
			}
			b := make([]byte, 10, 134)
			be.PutUint64(b[0:], uint64(e.Dev.Size()))
			be.PutUint16(b[8:], transmissionFlags(e))
			if !noZeroes {
				b = b[:134]
			}
			_, err := c.nc.Write(b)
			return e, err
		case optAbort:
			c.optReply(opt, repAck, nil)
			return nil, nil
		case optList:
			for _, e := range s.Exports {
				p := make([]byte, 4, 4+len(e.Name))
				be.PutUint32(p, uint32(len(e.Name)))
				if err := c.optReply(opt, repServer, append(p, e.Name...)); err != nil {
					return nil, err
				}
			}
			if err := c.optReply(opt, repAck, nil); err != nil {
				return nil, err
			}
		case optStartTLS:
			// TLS already on (else it is not offered at all).
			typ := uint32(repErrUnsup)
			if s.TLS != nil {
				typ = repErrInvalid
			}
			if err := c.optReply(opt, typ, nil); err != nil {
				return nil, err
			}
		case optInfo, optGo:
			if len(data) < 6 || int(be.Uint32(data))+6 > len(data) {
				if err := c.optReply(opt, repErrInvalid, nil); err != nil {
					return nil, err
				}
				continue
			}
			name := string(data[4 : 4+be.Uint32(data)])
			e := s.find(name)
			if e == nil {
				if err := c.optReply(opt, repErrUnknown, []byte("no export "+name)); err != nil {
					return nil, err
				}
				continue
			}
			info := make([]byte, 12)
			be.PutUint16(info[0:], infoExport)
			be.PutUint64(info[2:], uint64(e.Dev.Size()))
			be.PutUint16(info[10:], transmissionFlags(e))
			bs := make([]byte, 14)
			be.PutUint16(bs[0:], infoBlockSize)
			be.PutUint32(bs[2:], 1)
			be.PutUint32(bs[6:], 4096)
			be.PutUint32(bs[10:], uint32(s.maxReq))
			for _, p := range [][]byte{info, bs} {
				if err := c.optReply(opt, repInfo, p); err != nil {
					return nil, err
				}
			}
			if err := c.optReply(opt, repAck, nil); err != nil {
				return nil, err
			}
			if opt == optGo {
				return e, nil
			}
		default:
			if err := c.optReply(opt, repErrUnsup, nil); err != nil {
				return nil, err
			}
		}
	}
}

func (s *Server) find(name string) *Export {
	if name == "" && len(s.Exports) > 0 {
		return &s.Exports[0]
	}
	for i := range s.Exports {
		if s.Exports[i].Name == name {
			return &s.Exports[i]
		}
	}
	return nil
}

func transmissionFlags(e *Export) uint16 {
	f := uint16(tHasFlags | tFlush | tMultiConn)
	if _, ok := e.Dev.(Writable); ok {
		f |= tTrim
	} else {
		f |= tReadOnly
	}
	return f
}

// errDropped ends a connection whose reply could not be written; the
// reason is already logged.
var errDropped = errors.New("connection dropped")

// reply writes one reply whole (data only with errno 0), within the
// reply deadline; failing that, the connection is dropped.
func (c *conn) reply(handle uint64, errno uint32, data []byte) error {
	var r [16]byte
	be.PutUint32(r[0:], simpleMagic)
	be.PutUint32(r[4:], errno)
	be.PutUint64(r[8:], handle)
	bufs := net.Buffers{r[:]}
	if errno == 0 && len(data) > 0 {
		bufs = append(bufs, data)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.dropped {
		return errDropped
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.lim.Reply))
	if _, err := bufs.WriteTo(c.nc); err != nil {
		c.dropped = true
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.s.logf("nbd: %s: a reply of %d bytes was not taken within %v; connection dropped", c.who, 16+len(data), c.s.lim.Reply)
		case errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		default:
			c.s.logf("nbd: %s: write a reply: %v; connection dropped", c.who, err)
		}
		c.cancel()
		return errDropped
	}
	return nil
}

// zeros is what a trim writes, a piece at a time: trims allocate nothing.
var zeros = sync.OnceValue(func() []byte { return make([]byte, 1<<20) })

// transmit serves requests until the client disconnects. A request's
// buffer is taken before its data is read or its read started: when the
// connection's share (one largest request's worth, at most maxRequests
// requests) or the server's InFlight is used up, the next request is not
// read until a reply is written.
func (c *conn) transmit(e *Export) error {
	s := c.s
	var inflight sync.WaitGroup
	defer inflight.Wait()
	slots := make(chan struct{}, maxRequests)
	own := newQuota(s.maxReq)
	// take gets a buffer for an n-byte request (0 < n <= maxReq) out of the
	// connection's share and the server's budget; give returns it.
	take := func(n int64) ([]byte, error) {
		size := classSize(classOf(n))
		slots <- struct{}{}
		if err := own.acquire(c.ctx, size); err != nil {
			<-slots
			return nil, err
		}
		buf, err := s.bufs.get(c.ctx, n)
		if err != nil {
			own.release(size)
			<-slots
			return nil, err
		}
		if size >= 1<<20 {
			c.large = true
		}
		return buf, nil
	}
	give := func(buf []byte) {
		s.bufs.put(buf)
		own.release(int64(cap(buf)))
		<-slots
	}
	w, writable := e.Dev.(Writable)
	size := e.Dev.Size()
	for {
		var h [28]byte
		if _, err := io.ReadFull(c.nc, h[:]); err != nil {
			return err
		}
		if be.Uint32(h[0:]) != requestMagic {
			return fmt.Errorf("bad request magic %#x", be.Uint32(h[0:]))
		}
		typ, handle, off, n := be.Uint16(h[6:]), be.Uint64(h[8:]), be.Uint64(h[16:]), be.Uint32(h[24:])
		inRange := int64(n) <= s.maxReq && off <= uint64(size) && uint64(n) <= uint64(size)-off
		switch typ {
		case cmdRead:
			if !inRange {
				s.logf("nbd: %s: read of %d bytes at %d: past the end (%d bytes) or longer than %d", c.who, n, off, size, s.maxReq)
				if err := c.reply(handle, errInval, nil); err != nil {
					return err
				}
				continue
			}
			if n == 0 {
				if err := c.reply(handle, 0, nil); err != nil {
					return err
				}
				continue
			}
			buf, err := take(int64(n))
			if err != nil {
				return err
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer give(buf)
				c.reply(handle, c.read(e, buf, int64(off)), buf)
			}()
		case cmdWrite:
			if int64(n) > s.maxReq {
				// Its data is not read (it could be 4 GiB); the spec lets
				// the server end the connection instead.
				return fmt.Errorf("write request of %d bytes, more than the %d advertised; connection closed", n, s.maxReq)
			}
			var data []byte
			if n > 0 {
				buf, err := take(int64(n))
				if err != nil {
					return err
				}
				// The data follows the header: a client that stops half
				// way does not keep the buffer.
				c.nc.SetReadDeadline(time.Now().Add(s.lim.Reply))
				_, err = io.ReadFull(c.nc, buf)
				c.nc.SetReadDeadline(time.Time{})
				if err != nil {
					give(buf)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						return fmt.Errorf("the data of a %d-byte write not sent within %v; connection dropped", n, s.lim.Reply)
					}
					return err
				}
				data = buf
			}
			errno := uint32(0)
			switch {
			case !writable:
				errno = errPerm
			case !inRange:
				errno = errInval
			default:
				inflight.Wait() // writes after the reads before them
				if _, err := w.WriteAt(data, int64(off)); err != nil {
					s.logf("nbd: %s: write %d bytes at %d: %v", e.Name, n, off, err)
					errno = errIO
				}
			}
			if data != nil {
				give(data)
			}
			if err := c.reply(handle, errno, nil); err != nil {
				return err
			}
		case cmdTrim:
			errno := uint32(0)
			switch {
			case !writable:
				errno = errPerm
			case !inRange:
				errno = errInval
			default:
				inflight.Wait()
				z := zeros()
				for done := int64(0); done < int64(n); {
					k := min(int64(n)-done, int64(len(z)))
					if _, err := w.WriteAt(z[:k], int64(off)+done); err != nil {
						s.logf("nbd: %s: trim %d bytes at %d: %v", e.Name, n, off, err)
						errno = errIO
						break
					}
					done += k
				}
			}
			if err := c.reply(handle, errno, nil); err != nil {
				return err
			}
		case cmdFlush:
			inflight.Wait()
			errno := uint32(0)
			if writable {
				if err := w.Sync(); err != nil {
					errno = errIO
				}
			}
			if err := c.reply(handle, errno, nil); err != nil {
				return err
			}
		case cmdDisc:
			inflight.Wait()
			if writable {
				return w.Sync()
			}
			return nil
		default:
			if err := c.reply(handle, errInval, nil); err != nil {
				return err
			}
		}
	}
}

// read fills buf from the device at off and returns the reply's error
// number. Device reads are limited server-wide: each may decode a whole
// chunk, whatever the length asked.
func (c *conn) read(e *Export, buf []byte, off int64) uint32 {
	c.s.readers <- struct{}{}
	defer func() { <-c.s.readers }()
	n, err := e.Dev.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		c.s.logf("nbd: %s: read %d bytes at %d: %v", e.Name, len(buf), off, err)
		return errIO
	}
	// A short read at the end: zeros, never what an earlier request left
	// in the pooled buffer.
	clear(buf[n:])
	return 0
}
