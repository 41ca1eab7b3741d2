package nbd

import (
	"math/bits"
	"time"
)

// Limits bound what clients can make the server hold. The zero value of
// each field means its default.
type Limits struct {
	// MaxConnections is how many clients are served at once; a
	// connection past it is closed as soon as it is accepted (and
	// logged). Default 16.
	MaxConnections int
	// InFlight is the bytes of request and reply buffers all
	// connections together may hold: a request waits for room rather
	// than allocate. It also caps a single request (at the largest power
	// of two it holds, at most 32 MiB) and so must be at least 1 MiB.
	// One connection holds at most one largest request's worth at once,
	// so the default lets 7 clients that stop reading replies hold their
	// share while others are still served. Default 256 MiB.
	InFlight int64
	// Negotiate bounds the negotiation (TLS handshake included), from
	// the accept to the choice of an export: a client that connects and
	// says nothing is dropped. Default 30 s.
	Negotiate time.Duration
	// Reply bounds the writing of one reply, and the reading of one
	// write request's data once its header came: a client that stops
	// reading (or sends half a write) is dropped and its buffers freed.
	// A client idle between requests is never dropped. Default 60 s.
	Reply time.Duration
	// Readers is how many device reads run at once, server-wide: each
	// may decode a whole chunk of the image, whatever the size asked.
	// Default 4 (decoding is CPU work: more only waits for the cores).
	Readers int
}

// Defaults, and the least InFlight may be.
const (
	DefaultMaxConnections = 16
	DefaultInFlight       = 256 << 20
	DefaultNegotiate      = 30 * time.Second
	DefaultReply          = 60 * time.Second
	DefaultReaders        = 4
	MinInFlight           = 1 << 20

	// maxRequests is how many requests of one connection are in flight
	// at once, whatever their size.
	maxRequests = 16
)

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.InFlight <= 0 {
		l.InFlight = DefaultInFlight
	}
	l.InFlight = max(l.InFlight, MinInFlight)
	if l.Negotiate <= 0 {
		l.Negotiate = DefaultNegotiate
	}
	if l.Reply <= 0 {
		l.Reply = DefaultReply
	}
	if l.Readers <= 0 {
		l.Readers = DefaultReaders
	}
	return l
}

// MaxRequest is the longest read or write served (and advertised as the
// maximum block size): 32 MiB, or less if InFlight is smaller.
func (l Limits) MaxRequest() int64 {
	l = l.withDefaults()
	return min(maxRequest, int64(1)<<(bits.Len64(uint64(l.InFlight))-1))
}
