package s3

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/minio/minio-go/v7"
)

// object reads one S3 object by ranged GETs, each pinned to the ETag it
// had when opened (If-Match), so an object replaced mid-read is an error
// (ErrChanged), never a mix of two images.
//
// A read that continues a run of reads already a block long (each
// beginning no more than a block before where an earlier one ended, nor
// further after it than the readahead reaches: parallel workers of a
// restore read neighbouring frames out of order)
// is sequential: it is served from aligned blocks of BlockSize, and the
// Readahead blocks after it are fetched in parallel ahead of it. Any
// other read fetches exactly the bytes it asks for, so a random 4 KiB
// read of a mounted image costs one frame, and opening an image (its
// header, then the first frame) no readahead.
type object struct {
	p    *place
	key  string
	size int64
	etag string
	bs   int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	blocks map[int64]*cblock
	lru    list.List // of *cblock, most recently used first
	free   [][]byte
	recent [16]run // the latest reads
	next   int
	closed bool

	gets    atomic.Int64 // GET requests sent
	fetched atomic.Int64 // body bytes received
}

// run is where a read ended, and how many bytes the run of reads it
// continued (it included) had read.
type run struct{ end, n int64 }

// cblock is one aligned block of the object, fetched or being fetched.
type cblock struct {
	idx  int64
	data []byte
	done chan struct{} // closed once data or err is set
	err  error
	refs int // readers copying out of it: not evicted meanwhile
	// read counts the bytes readers copied out: a block read through
	// is evicted first, a block fetched ahead and not yet read last.
	read int64
	elem *list.Element
}

func newObject(ctx context.Context, p *place, key string, info minio.ObjectInfo) *object {
	o := &object{p: p, key: key, size: info.Size, etag: info.ETag, bs: p.cfg.BlockSize,
		blocks: make(map[int64]*cblock)}
	o.ctx, o.cancel = context.WithCancel(ctx)
	for i := range o.recent {
		o.recent[i].end = -1 << 62
	}
	return o
}

func (o *object) Size() int64  { return o.size }
func (o *object) Name() string { return o.p.url(o.key) }

// Close stops the readahead and drops the cache. Blocks a read still
// copies out of go when it is done with them.
func (o *object) Close() error {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, b := range o.free {
		freeBuf(b)
	}
	o.free = nil
	for _, blk := range o.blocks {
		if blk.refs == 0 {
			o.drop(blk)
		}
	}
	return nil
}

// drop removes blk from the cache and unmaps its buffer, or keeps the
// buffer for the next block (a few, while open). o.mu is held.
func (o *object) drop(blk *cblock) {
	o.lru.Remove(blk.elem)
	if o.blocks[blk.idx] == blk {
		delete(o.blocks, blk.idx)
	}
	if blk.data != nil {
		o.recycle(blk.data)
		blk.data = nil
	}
}

// recycle keeps buf for the next block, or unmaps it. o.mu is held.
func (o *object) recycle(buf []byte) {
	if o.closed || len(o.free) >= 4 {
		freeBuf(buf)
		return
	}
	o.free = append(o.free, buf[:0])
}

// ReadAt reads len(b) bytes at off; it is safe for parallel calls.
func (o *object) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", o.Name(), off)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	n := min(int64(len(b)), o.size-off)
	var err error
	if o.sequential(off, off+n) {
		err = o.readBlocks(b[:n], off)
	} else if !o.fromCache(b[:n], off) {
		err = o.get(b[:n], off)
	}
	if err != nil {
		return 0, err
	}
	if n < int64(len(b)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// sequential records a read of [off, end) and says whether it continues
// a run of reads at least a block long.
func (o *object) sequential(off, end int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	var before int64 // the longest run this read continues
	ahead := int64(o.p.cfg.Readahead) * o.bs
	for _, r := range o.recent {
		if off >= r.end-o.bs && off <= r.end+max(ahead, o.bs) {
			before = max(before, r.n)
		}
	}
	o.recent[o.next] = run{end: end, n: before + end - off}
	o.next = (o.next + 1) % len(o.recent)
	return before >= o.bs
}

// fromCache copies [off, off+len(b)) out of fetched blocks, if they hold
// all of it.
func (o *object) fromCache(b []byte, off int64) bool {
	first, last := off/o.bs, (off+int64(len(b))-1)/o.bs
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	var pinned []*cblock
	for i := first; i <= last; i++ {
		blk := o.blocks[i]
		if blk == nil || !ready(blk) || blk.err != nil {
			o.mu.Unlock()
			return false
		}
		pinned = append(pinned, blk)
	}
	for _, blk := range pinned {
		blk.refs++
		o.lru.MoveToFront(blk.elem)
	}
	o.mu.Unlock()
	o.copyOut(b, off, pinned)
	o.unpin(b, off, pinned)
	return true
}

func ready(blk *cblock) bool {
	select {
	case <-blk.done:
		return true
	default:
		return false
	}
}

// readBlocks serves a sequential read from blocks, starting the fetch of
// those it needs and of the Readahead blocks after them.
func (o *object) readBlocks(b []byte, off int64) error {
	first, last := off/o.bs, (off+int64(len(b))-1)/o.bs
	nblocks := (o.size + o.bs - 1) / o.bs
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return fmt.Errorf("%s: read after close", o.Name())
	}
	var pinned []*cblock
	for i := first; i <= last; i++ {
		blk := o.block(i)
		blk.refs++
		pinned = append(pinned, blk)
	}
	// Ahead, as far as the cache has room without dropping a block
	// not yet read: a block fetched twice costs more than one waited
	// for.
	o.evict()
	for i := last + 1; i <= last+int64(o.p.cfg.Readahead) && i < nblocks; i++ {
		if o.blocks[i] == nil && len(o.blocks) >= o.p.cfg.CacheBlocks {
			break
		}
		o.block(i)
	}
	o.mu.Unlock()
	for _, blk := range pinned {
		<-blk.done
		if blk.err != nil {
			o.unpin(nil, off, pinned)
			return blk.err
		}
	}
	o.copyOut(b, off, pinned)
	o.unpin(b, off, pinned)
	return nil
}

// block returns block i, starting its fetch if it is not cached. o.mu
// is held.
func (o *object) block(i int64) *cblock {
	if blk := o.blocks[i]; blk != nil {
		o.lru.MoveToFront(blk.elem)
		return blk
	}
	blk := &cblock{idx: i, done: make(chan struct{})}
	blk.elem = o.lru.PushFront(blk)
	o.blocks[i] = blk
	n := min(o.bs, o.size-i*o.bs)
	var buf []byte
	if k := len(o.free); k > 0 {
		buf = o.free[k-1][:n]
		o.free = o.free[:k-1]
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		var err error
		if buf == nil {
			// Off the heap, as the Sink's parts: a restore's cache
			// does not double the garbage collector's target.
			if buf, err = allocBuf(o.bs); err != nil {
				buf, err = nil, fmt.Errorf("%s: block buffer of %d bytes: %w", o.Name(), o.bs, err)
			} else {
				buf = buf[:n]
			}
		}
		if err == nil {
			err = o.get(buf, i*o.bs)
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		if err != nil {
			// Not kept: the next read asks again.
			blk.err = err
			o.drop(blk)
			if buf != nil {
				o.recycle(buf)
			}
		} else {
			blk.data = buf
		}
		close(blk.done)
	}()
	return blk
}

// evict drops blocks no one is reading or fetching, least recently used
// first, while there are more than CacheBlocks: first those read
// through, then, if need be, the others. o.mu is held.
func (o *object) evict() {
	for _, readThrough := range []bool{true, false} {
		for e := o.lru.Back(); e != nil && len(o.blocks) > o.p.cfg.CacheBlocks; {
			blk := e.Value.(*cblock)
			prev := e.Prev()
			if blk.refs == 0 && ready(blk) && (!readThrough || blk.read >= int64(len(blk.data))) {
				o.drop(blk)
			}
			e = prev
		}
	}
}

// unpin releases the blocks a read of b at off pinned, counting what it
// copied out of each (nothing, for b nil).
func (o *object) unpin(b []byte, off int64, pinned []*cblock) {
	o.mu.Lock()
	for _, blk := range pinned {
		blk.refs--
		if b != nil {
			start := blk.idx * o.bs
			blk.read += min(off+int64(len(b)), start+int64(len(blk.data))) - max(off, start)
		}
		if o.closed && blk.refs == 0 {
			o.drop(blk)
		}
	}
	o.evict()
	o.mu.Unlock()
}

// copyOut copies [off, off+len(b)) out of the pinned, fetched blocks.
func (o *object) copyOut(b []byte, off int64, pinned []*cblock) {
	for _, blk := range pinned {
		start := blk.idx * o.bs
		lo, hi := max(off, start), min(off+int64(len(b)), start+int64(len(blk.data)))
		copy(b[lo-off:hi-off], blk.data[lo-start:hi-start])
	}
}

// get fetches [off, off+len(b)) with one ranged GET, retried while the
// failure is transient; every response is checked to be exactly the
// range asked for, of this version of the object.
func (o *object) get(b []byte, off int64) error {
	n := int64(len(b))
	want := fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, o.size)
	err := o.p.retryN(o.ctx, n, func(ctx context.Context) error {
		var opts minio.GetObjectOptions
		if err := opts.SetRange(off, off+n-1); err != nil {
			return err
		}
		if err := opts.SetMatchETag(o.etag); err != nil {
			return err
		}
		o.gets.Add(1)
		rc, _, hdr, err := o.p.core.GetObject(ctx, o.p.bucket, o.key, opts)
		if err != nil {
			return err
		}
		defer rc.Close()
		if got := hdr.Get("Content-Range"); got != want {
			return &badRange{want: want, got: got}
		}
		got, err := io.ReadFull(rc, b)
		o.fetched.Add(int64(got))
		switch {
		case err == io.ErrUnexpectedEOF || err == io.EOF:
			return &shortBody{want: n, got: int64(got)}
		case err != nil:
			return err
		}
		var one [1]byte
		if k, _ := rc.Read(one[:]); k > 0 {
			return &shortBody{want: n, got: n + 1}
		}
		return nil
	})
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && o.ctx.Err() != nil {
		return fmt.Errorf("%s: read after close: %w", o.Name(), err)
	}
	return fmt.Errorf("%s: read %d bytes at %d: %w", o.Name(), n, off, o.p.explain(err))
}

// badRange is a response for other bytes than were asked for: a server
// that ignored the Range header, or an object whose size changed.
type badRange struct{ want, got string }

func (e *badRange) Error() string {
	return fmt.Sprintf("the server answered with Content-Range %q where %q was asked for", e.got, e.want)
}
