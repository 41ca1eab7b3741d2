// Package view reads an image as the disk it holds, at random: what
// restore would write to a fresh target, byte for byte, without writing
// it. mount, serve and ls read through it.
package view

import (
	"container/list"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
)

// Disk is the whole source disk of an image (with its parents attached):
// each chunk decoded and verified when first read, free blocks and
// unimaged space as zeros. ReadAt is safe for parallel calls; chunks in
// use by several readers are decoded once.
type Disk struct {
	r     *image.Reader
	size  int64
	cs    int64
	cache *cache
	last  atomic.Int64 // the last chunk read, as area<<40 | chunk, for readahead

	mu     sync.Mutex // guards closed against readahead starting
	closed bool
	bg     sync.WaitGroup // readahead decodes in flight
}

// readahead is how far past a sequential reader's chunk the chunks are
// decoded before it asks for them: two chunks, or 4 MiB of small ones
// (more only competes with the chunk being read for the CPU).
const readahead = 4 << 20

func (d *Disk) aheadChunks() int64 { return max(2, readahead/d.cs) }

// New returns the disk of r, keeping up to cacheChunks decoded chunks.
func New(r *image.Reader, cacheChunks int) *Disk {
	m := r.Metadata()
	return &Disk{r: r, size: m.SourceSize, cs: m.ChunkSize, cache: newCache(max(cacheChunks, 1))}
}

// Close waits for the readahead decodes in flight and starts no more:
// the image reader may be closed after it.
func (d *Disk) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.bg.Wait()
	return nil
}

// Size is the disk's length in bytes.
func (d *Disk) Size() int64 { return d.size }

// ReadAt reads the disk. A damaged chunk gives a *image.ChunkError naming
// it, and no data for its range.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("view: negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := d.size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	clear(p)
	m := d.r.Metadata()
	for i, a := range m.Areas {
		lo, hi := max(off, a.Start), min(off+int64(len(p)), a.Start+a.Size)
		for pos := lo; pos < hi; {
			k := (pos - a.Start) / d.cs
			chunkStart := a.Start + k*d.cs
			end := min(hi, chunkStart+d.cs)
			data, release, err := d.chunk(i, k)
			if err != nil {
				release()
				return int(pos - off), err
			}
			d.ahead(i, k)
			if data != nil {
				copy(p[pos-off:end-off], data[pos-chunkStart:end-chunkStart])
			}
			release()
			pos = end
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// ahead decodes the chunks after k in the background when the reads
// before were of k or the chunk before it: a sequential reader then finds
// them decoded.
func (d *Disk) ahead(i int, k int64) {
	cur := int64(i)<<40 | k
	prev := d.last.Swap(cur)
	if prev != cur && prev != cur-1 {
		return
	}
	n := (d.r.Metadata().Areas[i].Size + d.cs - 1) / d.cs
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	for a := k + 1; a <= k+d.aheadChunks() && a < n; a++ {
		if !d.cache.has(key{i, a}) {
			d.bg.Go(func() {
				_, release, _ := d.chunk(i, a)
				release()
			})
		}
	}
}

// chunk returns chunk k of area i as restore would write it (nil: all
// zeros), and a release to call once its bytes are no longer read.
func (d *Disk) chunk(i int, k int64) ([]byte, func(), error) {
	return d.cache.get(key{i, k}, func(buf []byte) ([]byte, error) {
		e, ok := d.r.Lookup(uint32(i), uint64(k))
		if !ok || e.Zero() {
			return nil, nil // no used block, or all zeros
		}
		data, err := d.r.ReadChunk(e, buf)
		if err != nil {
			return nil, err
		}
		if m := d.r.Map(i); m != nil {
			// Free blocks are not restored: zeros, as on a fresh target.
			rel := k * d.cs
			pos := rel
			m.Runs(rel, int64(len(data)), func(u block.Extent) {
				clear(data[pos-rel : u.Off-rel])
				pos = u.End()
			})
			clear(data[pos-rel:])
		}
		return data, nil
	})
}

type key struct {
	area  int
	chunk int64
}

// cache keeps the most recently used decoded chunks; a chunk being
// decoded is waited for, not decoded twice. Errors are not kept. The
// buffer of a chunk pushed out is decoded into again once no reader
// holds it: a reader going front to back through a disk would otherwise
// allocate (and the kernel zero) a chunk's worth of memory per chunk.
type cache struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *slot, most recent first
	slots map[key]*list.Element
	free  [][]byte // buffers of evicted chunks no reader holds
	reuse int      // loads given a buffer from free (for tests)
}

type slot struct {
	k    key
	done chan struct{}
	data []byte
	err  error
	refs int  // readers holding data (guarded by cache.mu)
	gone bool // evicted: data goes to free once refs is 0
}

func newCache(n int) *cache {
	return &cache{max: n, lru: list.New(), slots: map[key]*list.Element{}}
}

func (c *cache) has(k key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.slots[k]
	return ok
}

// get returns chunk k, loading it (into buf, a spare buffer or nil) if
// it is not kept, and a release to call once data is no longer read:
// after it the buffer may be decoded into again.
func (c *cache) get(k key, load func(buf []byte) ([]byte, error)) ([]byte, func(), error) {
	c.mu.Lock()
	if el, ok := c.slots[k]; ok {
		c.lru.MoveToFront(el)
		s := el.Value.(*slot)
		s.refs++
		c.mu.Unlock()
		<-s.done
		return s.data, func() { c.release(s) }, s.err
	}
	s := &slot{k: k, done: make(chan struct{}), refs: 1}
	c.slots[k] = c.lru.PushFront(s)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		o := old.Value.(*slot)
		delete(c.slots, o.k)
		o.gone = true
		c.recycle(o)
	}
	var buf []byte
	if n := len(c.free); n > 0 {
		buf, c.free = c.free[n-1], c.free[:n-1]
		c.reuse++
	}
	c.mu.Unlock()
	data, err := load(buf)
	c.mu.Lock()
	s.data, s.err = data, err
	if data == nil && buf != nil && len(c.free) < c.max {
		c.free = append(c.free, buf) // an all-zero chunk did not use it
	}
	if err != nil {
		if el, ok := c.slots[k]; ok && el.Value.(*slot) == s {
			c.lru.Remove(el)
			delete(c.slots, k)
		}
	}
	c.mu.Unlock()
	close(s.done)
	return data, func() { c.release(s) }, err
}

func (c *cache) release(s *slot) {
	c.mu.Lock()
	s.refs--
	c.recycle(s)
	c.mu.Unlock()
}

// recycle keeps the buffer of an evicted slot no reader holds, at most
// max of them. c.mu is held.
func (c *cache) recycle(s *slot) {
	if !s.gone || s.refs > 0 || s.data == nil {
		return
	}
	if len(c.free) < c.max {
		c.free = append(c.free, s.data[:0])
	}
	s.data = nil
}
