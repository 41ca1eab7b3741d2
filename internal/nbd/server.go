// Package nbd serves block devices over the Network Block Device protocol
// (fixed newstyle negotiation, simple replies), as stock clients speak it:
// qemu-img, qemu-nbd, nbd-client, qemu -drive file=nbd://.
//
// Requests of a connection are served in parallel, replies written whole
// one at a time; a read that fails (a damaged chunk) is answered with EIO
// for that request alone, and the connection and server go on.
package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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

// Server serves exports on the connections it accepts.
type Server struct {
	Exports []Export
	// Log, if set, is told about each connection's end and each failed
	// request.
	Log func(format string, args ...any)
}

// Protocol numbers (the NBD protocol document, doc/proto.md).
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	repMagic      = 0x0003e889045565a9
	requestMagic  = 0x25609513
	simpleMagic   = 0x67446698
	flagFixed     = 1 << 0
	flagNoZeroes  = 1 << 1
	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7
	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6
	infoExport    = 0
	infoBlockSize = 3

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

	maxRequest  = 32 << 20
	maxInFlight = 16
)

// Serve accepts connections until ctx ends or the listener fails. Each
// connection's errors end that connection only.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			if err := s.handle(conn); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logf("nbd: %s: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log(format, args...)
	}
}

var be = binary.BigEndian

func (s *Server) handle(conn net.Conn) error {
	var hello [18]byte
	be.PutUint64(hello[0:], nbdMagic)
	be.PutUint64(hello[8:], optMagic)
	be.PutUint16(hello[16:], flagFixed|flagNoZeroes)
	if _, err := conn.Write(hello[:]); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(conn, cf[:]); err != nil {
		return err
	}
	noZeroes := be.Uint32(cf[:])&flagNoZeroes != 0
	exp, err := s.negotiate(conn, noZeroes)
	if err != nil || exp == nil {
		return err
	}
	return s.transmit(conn, exp)
}

// negotiate answers options until the client picks an export (nil: it
// aborted).
func (s *Server) negotiate(conn net.Conn, noZeroes bool) (*Export, error) {
	for {
		var h [16]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return nil, err
		}
		if be.Uint64(h[0:]) != optMagic {
			return nil, fmt.Errorf("bad option magic %#x", be.Uint64(h[0:]))
		}
		opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
		if n > 64<<10 {
			return nil, fmt.Errorf("option %d of %d bytes", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(conn, data); err != nil {
			return nil, err
		}
		reply := func(typ uint32, payload []byte) error {
			var r [20]byte
			be.PutUint64(r[0:], repMagic)
			be.PutUint32(r[8:], opt)
			be.PutUint32(r[12:], typ)
			be.PutUint32(r[16:], uint32(len(payload)))
			_, err := conn.Write(append(r[:], payload...))
			return err
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
			_, err := conn.Write(b)
			return e, err
		case optAbort:
			reply(repAck, nil)
			return nil, nil
		case optList:
			for _, e := range s.Exports {
				p := make([]byte, 4, 4+len(e.Name))
				be.PutUint32(p, uint32(len(e.Name)))
				if err := reply(repServer, append(p, e.Name...)); err != nil {
					return nil, err
				}
			}
			if err := reply(repAck, nil); err != nil {
				return nil, err
			}
		case optInfo, optGo:
			if len(data) < 6 || int(be.Uint32(data))+6 > len(data) {
				if err := reply(repErrInvalid, nil); err != nil {
					return nil, err
				}
				continue
			}
			name := string(data[4 : 4+be.Uint32(data)])
			e := s.find(name)
			if e == nil {
				if err := reply(repErrUnknown, []byte("no export "+name)); err != nil {
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
			be.PutUint32(bs[10:], maxRequest)
			for _, p := range [][]byte{info, bs} {
				if err := reply(repInfo, p); err != nil {
					return nil, err
				}
			}
			if err := reply(repAck, nil); err != nil {
				return nil, err
			}
			if opt == optGo {
				return e, nil
			}
		default:
			if err := reply(repErrUnsup, nil); err != nil {
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

// transmit serves requests until the client disconnects.
func (s *Server) transmit(conn net.Conn, e *Export) error {
	var wmu sync.Mutex // one reply at a time
	respond := func(handle uint64, errno uint32, data []byte) error {
		var r [16]byte
		be.PutUint32(r[0:], simpleMagic)
		be.PutUint32(r[4:], errno)
		be.PutUint64(r[8:], handle)
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := conn.Write(r[:]); err != nil {
			return err
		}
		if errno == 0 && data != nil {
			_, err := conn.Write(data)
			return err
		}
		return nil
	}
	var inflight sync.WaitGroup
	defer inflight.Wait()
	sem := make(chan struct{}, maxInFlight)
	w, writable := e.Dev.(Writable)
	size := e.Dev.Size()
	for {
		var h [28]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return err
		}
		if be.Uint32(h[0:]) != requestMagic {
			return fmt.Errorf("bad request magic %#x", be.Uint32(h[0:]))
		}
		typ, handle, off, n := be.Uint16(h[6:]), be.Uint64(h[8:]), be.Uint64(h[16:]), be.Uint32(h[24:])
		inRange := n <= maxRequest && off <= uint64(size) && uint64(n) <= uint64(size)-off
		switch typ {
		case cmdRead:
			if !inRange {
				s.logf("nbd: %s: read of %d bytes at %d is past the end (%d bytes)", conn.RemoteAddr(), n, off, size)
				if err := respond(handle, errInval, nil); err != nil {
					return err
				}
				continue
			}
			sem <- struct{}{}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer func() { <-sem }()
				buf := make([]byte, n)
				errno := uint32(0)
				if _, err := e.Dev.ReadAt(buf, int64(off)); err != nil && !errors.Is(err, io.EOF) {
					s.logf("nbd: %s: read %d bytes at %d: %v", e.Name, n, off, err)
					errno = errIO
				}
				respond(handle, errno, buf)
			}()
		case cmdWrite, cmdTrim:
			var data []byte
			if typ == cmdWrite {
				if n > maxRequest {
					return fmt.Errorf("write of %d bytes", n)
				}
				data = make([]byte, n)
				if _, err := io.ReadFull(conn, data); err != nil {
					return err
				}
			} else {
				data = make([]byte, min(n, maxRequest))
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
			if err := respond(handle, errno, nil); err != nil {
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
			if err := respond(handle, errno, nil); err != nil {
				return err
			}
		case cmdDisc:
			inflight.Wait()
			if writable {
				return w.Sync()
			}
			return nil
		default:
			if err := respond(handle, errInval, nil); err != nil {
				return err
			}
		}
	}
}
