package nbd

import (
	"container/list"
	"context"
	"math/bits"
	"sync"
)

// Buffer sizes are powers of two from minBuffer to maxRequest, so that a
// freed buffer fits the next request of its class and a flood of equal
// requests reuses the same few buffers instead of making garbage.
const (
	minBuffer  = 4 << 10
	maxRequest = 32 << 20 // the NBD spec's largest payload a client may expect to be served
	classes    = 14       // 4 KiB << 13 = 32 MiB
)

// classOf returns the class of a buffer for n bytes (0 < n <= maxRequest).
func classOf(n int64) int {
	if n <= minBuffer {
		return 0
	}
	return bits.Len64(uint64(n-1)) - bits.Len64(minBuffer-1)
}

func classSize(c int) int64 { return minBuffer << c }

// quota is a weighted semaphore whose waiters are served in order: a
// large request is not starved by a stream of small ones.
type quota struct {
	mu      sync.Mutex
	size    int64
	cur     int64
	waiters list.List // of *quotaWaiter
}

type quotaWaiter struct {
	n     int64
	ready chan struct{}
}

func newQuota(size int64) *quota { return &quota{size: size} }

// acquire takes n (<= size) or returns ctx's error having taken nothing.
func (q *quota) acquire(ctx context.Context, n int64) error {
	q.mu.Lock()
	if q.waiters.Len() == 0 && q.size-q.cur >= n {
		q.cur += n
		q.mu.Unlock()
		return nil
	}
	w := &quotaWaiter{n: n, ready: make(chan struct{})}
	e := q.waiters.PushBack(w)
	q.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			q.cur -= n
		default:
			q.waiters.Remove(e)
		}
		q.wake()
		return ctx.Err()
	}
}

func (q *quota) release(n int64) {
	q.mu.Lock()
	q.cur -= n
	q.wake()
	q.mu.Unlock()
}

func (q *quota) wake() {
	for e := q.waiters.Front(); e != nil; e = q.waiters.Front() {
		w := e.Value.(*quotaWaiter)
		if q.size-q.cur < w.n {
			return
		}
		q.cur += w.n
		q.waiters.Remove(e)
		close(w.ready)
	}
}

// buffers hands out the request and reply buffers of every connection.
// At most limit bytes are allocated at once, in use or kept free for
// reuse: a request waits for its buffer rather than allocating past the
// limit. Waiters are served in order.
type buffers struct {
	mu        sync.Mutex
	limit     int64
	used      int64 // allocated: in use and free
	freeBytes int64
	free      [classes][][]byte
	waiters   list.List // of *bufWaiter
	idle      func()    // called (without mu) when nothing is in use any more
}

type bufWaiter struct {
	c     int
	grant chan grant // buffered: wake never blocks
}

// grant is a free buffer to reuse, or (b == nil) leave to allocate one of
// the class, its bytes already counted.
type grant struct{ b []byte }

func newBuffers(limit int64) *buffers { return &buffers{limit: limit} }

// get returns a buffer of n bytes (0 < n <= the largest class that fits
// the limit). Its contents are left from an earlier use.
func (p *buffers) get(ctx context.Context, n int64) ([]byte, error) {
	c := classOf(n)
	p.mu.Lock()
	if p.waiters.Len() == 0 {
		if g, ok := p.take(c); ok {
			p.mu.Unlock()
			return g.buffer(c, n), nil
		}
	}
	w := &bufWaiter{c: c, grant: make(chan grant, 1)}
	e := p.waiters.PushBack(w)
	p.mu.Unlock()
	select {
	case g := <-w.grant:
		return g.buffer(c, n), nil
	case <-ctx.Done():
		p.mu.Lock()
		select {
		case g := <-w.grant: // granted meanwhile: give it back
			if g.b == nil {
				p.used -= classSize(c)
			} else {
				p.keep(g.b)
			}
		default:
			p.waiters.Remove(e)
		}
		p.wake()
		p.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (g grant) buffer(c int, n int64) []byte {
	if g.b == nil {
		g.b = make([]byte, classSize(c))
	}
	return g.b[:n]
}

// take finds a buffer of class c: a free one, or room for a new one,
// dropping free buffers of other classes to make it (mu held).
func (p *buffers) take(c int) (grant, bool) {
	if k := len(p.free[c]); k > 0 {
		b := p.free[c][k-1]
		p.free[c][k-1] = nil
		p.free[c] = p.free[c][:k-1]
		p.freeBytes -= classSize(c)
		return grant{b}, true
	}
	size := classSize(c)
	for i := classes - 1; i >= 0 && p.used+size > p.limit && p.freeBytes > 0; i-- {
		for len(p.free[i]) > 0 && p.used+size > p.limit {
			p.free[i] = p.free[i][:len(p.free[i])-1]
			p.used -= classSize(i)
			p.freeBytes -= classSize(i)
		}
	}
	if p.used+size > p.limit {
		return grant{}, false
	}
	p.used += size
	return grant{}, true
}

// put gives back a buffer from get.
func (p *buffers) put(b []byte) {
	p.mu.Lock()
	p.keep(b[:cap(b)])
	p.wake()
	idle := p.used == p.freeBytes
	p.mu.Unlock()
	if idle && p.idle != nil {
		p.idle()
	}
}

func (p *buffers) keep(b []byte) {
	c := classOf(int64(len(b)))
	p.free[c] = append(p.free[c], b)
	p.freeBytes += classSize(c)
}

func (p *buffers) wake() {
	for e := p.waiters.Front(); e != nil; e = p.waiters.Front() {
		w := e.Value.(*bufWaiter)
		g, ok := p.take(w.c)
		if !ok {
			return
		}
		p.waiters.Remove(e)
		w.grant <- g
	}
}

// trim drops the free buffers, for the garbage collector to return to
// the system, and reports how many bytes that was.
func (p *buffers) trim() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.freeBytes
	p.free = [classes][][]byte{}
	p.used -= n
	p.freeBytes = 0
	return n
}

// inUse is the bytes of buffers handed out and not yet given back.
func (p *buffers) inUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used - p.freeBytes
}
