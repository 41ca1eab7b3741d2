package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/platter-dev/platter/internal/store"
)

// sink writes one object as a multipart upload: Write fills a part
// buffer; a full one goes to one of Uploads workers once the next byte
// arrives (so the part limit is checked before a part is known not to
// be the last); Commit uploads the last part and completes the upload.
type sink struct {
	p      *place
	key    string
	force  bool
	ctx    context.Context
	cancel context.CancelCauseFunc
	upload string

	// Touched only by the writer's goroutine.
	cur     []byte // the part being filled; len is what it holds
	partNum int    // cur's part number, from 1
	written int64

	work      chan part
	closeWork sync.Once
	wg        sync.WaitGroup

	mu    sync.Mutex
	cond  *sync.Cond // signalled when a buffer is released or the sink fails
	inUse int64      // bytes of the buffers this sink holds: filling or in flight
	nbufs int
	peak  int64 // the most inUse has been
	parts []minio.CompletePart
	err   error // the first failure; once set the sink only aborts
	state int
}

const (
	open = iota
	committed
	aborted
)

// part is a filled buffer on its way to the server.
type part struct {
	num int
	buf []byte
	crc uint32
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errAborted is what a Write after Abort returns.
var errAborted = errors.New("upload aborted")

func newSink(ctx context.Context, p *place, key string, force bool) (*sink, error) {
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		// Each part carries its CRC32C, which the server checks.
		UserMetadata: map[string]string{"X-Amz-Checksum-Algorithm": "CRC32C"},
	}
	var id string
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		id, err = p.core.NewMultipartUpload(ctx, p.bucket, key, opts)
		return err
	})
	if err != nil {
		if isNoBucket(err) {
			return nil, p.fail("", ErrNoBucket)
		}
		return nil, p.fail(key, err)
	}
	s := &sink{p: p, key: key, force: force, upload: id, partNum: 1,
		work: make(chan part, p.cfg.Uploads+1)}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.cond = sync.NewCond(&s.mu)
	// A cancelled context wakes a writer waiting for a buffer.
	context.AfterFunc(s.ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	for range p.cfg.Uploads {
		s.wg.Add(1)
		go s.uploader()
	}
	return s, nil
}

func (s *sink) Name() string { return s.p.url(s.key) }

// partSize is the size of part n: PartSize, doubling every PartsPerStep
// parts, at most MaxPartSize.
func partSize(cfg *Config, n int) int64 {
	size := cfg.PartSize
	for step := (n - 1) / cfg.PartsPerStep; step > 0 && size < cfg.MaxPartSize; step-- {
		size *= 2
	}
	return min(size, cfg.MaxPartSize)
}

// capacity is the most bytes an upload holds with cfg's part sizes.
func capacity(cfg *Config) int64 {
	var n int64
	for i := 1; i <= cfg.MaxParts; i++ {
		n += partSize(cfg, i)
	}
	return n
}

func (s *sink) Write(b []byte) (int, error) {
	if err := s.failed(); err != nil {
		return 0, err
	}
	n := 0
	for len(b) > 0 {
		if s.cur == nil {
			buf, err := s.acquire(partSize(&s.p.cfg, s.partNum))
			if err != nil {
				return n, err
			}
			s.cur = buf[:0]
		}
		if len(s.cur) == cap(s.cur) {
			// Full, and more is coming: it is not the last part.
			if s.partNum == s.p.cfg.MaxParts {
				err := fmt.Errorf("%s: %w: more than %d bytes would take more than %d parts (S3's limit)",
					s.Name(), ErrTooLarge, s.written, s.p.cfg.MaxParts)
				s.setErr(err)
				return n, err
			}
			if err := s.submit(); err != nil {
				return n, err
			}
			continue
		}
		c := copy(s.cur[len(s.cur):cap(s.cur)], b)
		s.cur = s.cur[:len(s.cur)+c]
		b = b[c:]
		n += c
		s.written += int64(c)
	}
	return n, nil
}

// submit hands the filled part to the uploaders.
func (s *sink) submit() error {
	pt := part{num: s.partNum, buf: s.cur, crc: crc32.Checksum(s.cur, crcTable)}
	s.cur = nil
	s.partNum++
	select {
	case s.work <- pt:
		return nil
	case <-s.ctx.Done():
		s.release(pt.buf)
		return s.failed()
	}
}

// acquire returns a buffer of size bytes, waiting while the buffers
// this sink holds would pass the budget: at most Uploads+1 of them and
// BufferBudget bytes, though always two.
func (s *sink) acquire(size int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := max(s.p.cfg.BufferBudget, 2*size)
	for {
		if s.err != nil {
			return nil, s.err
		}
		if err := s.ctx.Err(); err != nil {
			return nil, context.Cause(s.ctx)
		}
		if s.inUse+size <= limit && s.nbufs < s.p.cfg.Uploads+1 || s.nbufs == 0 {
			b, err := idle.get(size)
			if err != nil {
				return nil, fmt.Errorf("%s: part buffer of %d bytes: %w", s.Name(), size, err)
			}
			s.inUse += size
			s.nbufs++
			s.peak = max(s.peak, s.inUse)
			return b, nil
		}
		s.cond.Wait()
	}
}

// release gives back a buffer this sink held.
func (s *sink) release(b []byte) {
	s.mu.Lock()
	s.inUse -= int64(cap(b))
	s.nbufs--
	idle.put(b)
	s.cond.Broadcast()
	s.mu.Unlock()
}

// freeAll gives back the part being filled, once the uploaders have
// stopped.
func (s *sink) freeAll() {
	if s.cur != nil {
		s.release(s.cur)
		s.cur = nil
	}
}

// idle holds the part buffers no sink is using, for every sink of the
// process: the first volume of a split image waits for its Commit until
// the last is written, and its buffers serve the volumes after it
// meanwhile. It keeps at most defaultBufferBudget bytes.
var idle bufPool

type bufPool struct {
	mu    sync.Mutex
	bufs  [][]byte
	bytes int64
}

// get returns a buffer of exactly size bytes.
func (p *bufPool) get(size int64) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range p.bufs {
		if int64(cap(b)) == size {
			p.bufs = slices.Delete(p.bufs, i, i+1)
			p.bytes -= size
			return b[:size], nil
		}
	}
	// Parts grow: idle buffers of another size are not needed soon.
	for _, b := range p.bufs {
		freeBuf(b)
	}
	p.bufs, p.bytes = nil, 0
	return allocBuf(size)
}

func (p *bufPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+int64(cap(b)) > defaultBufferBudget {
		freeBuf(b)
		return
	}
	p.bufs = append(p.bufs, b[:0])
	p.bytes += int64(cap(b))
}

func (s *sink) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		s.cancel(err)
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// failed returns the first failure, or the context's cause.
func (s *sink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err != nil:
		return s.err
	case s.state == aborted:
		return errAborted
	case s.state == committed:
		return fmt.Errorf("%s: write after the image was committed", s.Name())
	case s.ctx.Err() != nil:
		return context.Cause(s.ctx)
	}
	return nil
}

func (s *sink) uploader() {
	defer s.wg.Done()
	for pt := range s.work {
		if s.failed() != nil {
			s.release(pt.buf)
			continue
		}
		cp, err := s.uploadPart(pt)
		s.release(pt.buf)
		if err != nil {
			s.setErr(err)
			continue
		}
		s.mu.Lock()
		s.parts = append(s.parts, cp)
		s.mu.Unlock()
	}
}

func (s *sink) uploadPart(pt part) (minio.CompletePart, error) {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], pt.crc)
	crc := base64.StdEncoding.EncodeToString(sum[:])
	var op minio.ObjectPart
	err := s.p.retryN(s.ctx, int64(len(pt.buf)), func(ctx context.Context) error {
		h := http.Header{}
		h.Set("X-Amz-Checksum-Crc32c", crc)
		h.Set("X-Amz-Checksum-Algorithm", "CRC32C")
		var err error
		op, err = s.p.core.PutObjectPart(ctx, s.p.bucket, s.key, s.upload, pt.num,
			bytes.NewReader(pt.buf), int64(len(pt.buf)), minio.PutObjectPartOptions{
				CustomHeader: h,
				// The CRC32C guards the bytes; hashing every part
				// with SHA-256 to sign it would cost a core.
				DisableContentSha256: true,
			})
		return err
	})
	if err != nil {
		if s.ctx.Err() != nil && !isGaveUp(err) {
			return minio.CompletePart{}, context.Cause(s.ctx)
		}
		return minio.CompletePart{}, fmt.Errorf("part %d: %w", pt.num, s.p.fail(s.key, err))
	}
	if op.ChecksumCRC32C == "" {
		op.ChecksumCRC32C = crc
	}
	return minio.CompletePart{PartNumber: pt.num, ETag: op.ETag, ChecksumCRC32C: op.ChecksumCRC32C}, nil
}

// Commit uploads the last part and completes the upload: only now does
// the object exist. Without Force, the completion is conditional
// (If-None-Match: *), so an object that appeared since Create is not
// replaced; a server that ignores the condition leaves the window
// between Create's check and this call open (docs/usage.md).
func (s *sink) Commit() error {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	switch state {
	case committed:
		return nil
	case aborted:
		return fmt.Errorf("%s: %w", s.Name(), errAborted)
	}
	if err := s.failed(); err != nil {
		s.Abort()
		return err
	}
	if s.cur == nil { // an empty image: one empty part
		buf, err := s.acquire(partSize(&s.p.cfg, s.partNum))
		if err != nil {
			s.Abort()
			return err
		}
		s.cur = buf[:0]
	}
	if err := s.submit(); err != nil {
		s.Abort()
		return err
	}
	s.closeWork.Do(func() { close(s.work) })
	s.wg.Wait()
	if err := s.failed(); err != nil {
		s.Abort()
		return err
	}
	parts := s.parts
	slices.SortFunc(parts, func(a, b minio.CompletePart) int { return a.PartNumber - b.PartNumber })
	for i, cp := range parts {
		if cp.PartNumber != i+1 || len(parts) != s.partNum-1 {
			s.Abort()
			return fmt.Errorf("%s: internal error: parts %d of %d uploaded", s.Name(), len(parts), s.partNum-1)
		}
	}
	if err := s.complete(parts); err != nil {
		s.Abort()
		return err
	}
	s.mu.Lock()
	s.state = committed
	s.mu.Unlock()
	s.cancel(nil)
	s.freeAll()
	return nil
}

// complete completes the upload, refused if the object exists (unless
// forced).
func (s *sink) complete(parts []minio.CompletePart) error {
	opts := minio.PutObjectOptions{}
	if !s.force {
		opts.SetMatchETagExcept("*")
	}
	err := s.p.completeUpload(s.ctx, s.key, s.upload, parts, opts)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errVanished):
		return fmt.Errorf("%s: %w", s.Name(), err)
	case minio.ToErrorResponse(err).Code == "PreconditionFailed":
		return fmt.Errorf("%s: %w", s.Name(), store.ErrExists)
	}
	return fmt.Errorf("complete the upload: %w", s.p.fail(s.key, err))
}

// errVanished: an upload's completion was answered as if another had
// completed or aborted it, and the object is not this upload's.
var errVanished = errors.New("the upload vanished while it was being completed")

// completeUpload completes an upload. Completing is not idempotent: if
// an attempt whose answer was lost did complete it, the next one hears
// NoSuchUpload (or, conditional, PreconditionFailed); then the object is
// checked to be this upload by its multipart ETag (errVanished if not).
func (p *place) completeUpload(ctx context.Context, key, upload string, parts []minio.CompletePart, opts minio.PutObjectOptions) error {
	attempts := 0
	lost := false
	err := p.retry(ctx, func(ctx context.Context) error {
		attempts++
		_, err := p.core.CompleteMultipartUpload(ctx, p.bucket, key, upload, parts, opts)
		if err != nil && attempts > 1 {
			code := minio.ToErrorResponse(err).Code
			if code == "NoSuchUpload" || code == "PreconditionFailed" {
				lost = true
				return nil
			}
		}
		return err
	})
	if err == nil && lost {
		info, serr := p.stat(ctx, key)
		if serr != nil || strings.Trim(info.ETag, `"`) != multipartETag(parts) {
			return errVanished
		}
	}
	return err
}

// multipartETag is the ETag S3 gives an object completed from parts:
// the MD5 of the parts' MD5s, then "-" and the count.
func multipartETag(parts []minio.CompletePart) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(strings.Trim(p.ETag, `"`))
		if err != nil {
			return ""
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}

// Abort stops the uploaders and aborts the upload, so its parts are
// dropped; it never completes. After Commit it does nothing.
func (s *sink) Abort() {
	s.mu.Lock()
	if s.state != open {
		s.mu.Unlock()
		return
	}
	s.state = aborted
	s.mu.Unlock()
	s.cancel(errAborted)
	s.closeWork.Do(func() { close(s.work) })
	s.wg.Wait()
	// The caller's context may be cancelled (Ctrl-C): abort anyway,
	// briefly. An abort that fails leaves an upload that is never
	// completed, which a bucket lifecycle rule removes.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
	defer cancel()
	s.p.retry(ctx, func(ctx context.Context) error {
		err := s.p.core.AbortMultipartUpload(ctx, s.p.bucket, s.key, s.upload)
		if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
			return nil
		}
		return err
	})
	s.freeAll()
}
