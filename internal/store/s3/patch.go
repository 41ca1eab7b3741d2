package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/platter-dev/platter/internal/store"
)

// The smallest part S3 takes, but for the last one; the largest a part
// copied on the server may be.
const (
	minPartSize     = 5 << 20
	maxCopyPartSize = 5 << 30
)

// Patch replaces b's bytes at off in the object and keeps the others,
// without sending them: an S3 object cannot be written in place, but a
// multipart upload onto its own key can be made mostly of ranges of it
// copied on the server (UploadPartCopy). The first part is the object's
// head with b in it, fetched and uploaded by the client (at least 5 MiB,
// S3's smallest part but the last); the rest are server-side copies of
// CopyPartSize. Every copy is conditional on the ETag the object was
// opened with (x-amz-copy-source-if-match), and so is the completion
// (If-Match), so an object replaced meanwhile fails the patch with
// ErrChanged; the upload is completed only once every part is in, and
// aborted on any failure: until then, and after a failure, the old object
// is whole and readable. After Patch the object o read is gone: open
// the new one to read it.
func (o *object) Patch(ctx context.Context, off int64, b []byte) error {
	if off < 0 || off+int64(len(b)) > o.size {
		return fmt.Errorf("%s: patch of %d bytes at %d is outside the object (%d bytes)", o.Name(), len(b), off, o.size)
	}
	p := o.p
	headEnd := min(o.size, max(off+int64(len(b)), minPartSize))
	head := make([]byte, headEnd)
	// The head is read pinned to the ETag, as every read of o.
	if _, err := o.ReadAt(head, 0); err != nil {
		return err
	}
	copy(head[off:], b)

	var upload string
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		upload, err = p.core.NewMultipartUpload(ctx, p.bucket, o.key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
		return err
	})
	if err != nil {
		return fmt.Errorf("start the upload that replaces it: %w", p.fail(o.key, err))
	}
	ok := false
	defer func() {
		if !ok {
			p.abort(ctx, o.key, upload)
		}
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	parts := []minio.CompletePart{{PartNumber: 1}}
	type span struct{ off, n int64 }
	var spans []span
	step := p.copyPartSize(o.size - headEnd)
	for at := headEnd; at < o.size; at += step {
		spans = append(spans, span{at, min(step, o.size-at)})
		parts = append(parts, minio.CompletePart{PartNumber: len(parts) + 1})
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	setFail := func(err error) {
		mu.Lock()
		if fail == nil {
			fail = err
			cancel(err)
		}
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var op minio.ObjectPart
		err := p.retryN(ctx, int64(len(head)), func(ctx context.Context) error {
			var err error
			op, err = p.core.PutObjectPart(ctx, p.bucket, o.key, upload, 1,
				bytes.NewReader(head), int64(len(head)), minio.PutObjectPartOptions{})
			return err
		})
		if err != nil {
			setFail(fmt.Errorf("upload the new head (part 1): %w", p.fail(o.key, err)))
			return
		}
		parts[0].ETag = op.ETag
	}()
	// A few copies at once: each is the server's work, not ours.
	sem := make(chan struct{}, p.cfg.Uploads)
	for i, s := range spans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				return
			}
			var cp minio.CompletePart
			err := p.retry(ctx, func(ctx context.Context) error {
				var err error
				cp, err = p.core.CopyObjectPart(ctx, p.bucket, o.key, p.bucket, o.key, upload,
					i+2, s.off, s.n, map[string]string{"x-amz-copy-source-if-match": o.etag})
				return err
			})
			if err != nil {
				setFail(fmt.Errorf("copy bytes %d-%d on the server (part %d): %w", s.off, s.off+s.n-1, i+2, p.fail(o.key, err)))
				return
			}
			parts[i+1].ETag = cp.ETag
		}()
	}
	wg.Wait()
	if fail != nil {
		return fail
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", o.Name(), context.Cause(ctx))
	}
	opts := minio.PutObjectOptions{}
	opts.SetMatchETag(o.etag)
	err = p.completeUpload(ctx, o.key, upload, parts, opts)
	if errors.Is(err, errVanished) {
		return fmt.Errorf("%s: the upload that replaces it vanished while it was being completed", o.Name())
	}
	if err != nil {
		return fmt.Errorf("complete the upload that replaces it: %w", p.fail(o.key, err))
	}
	ok = true
	return nil
}

// copyPartSize is the size of the parts that copy n bytes on the server:
// CopyPartSize, larger if the parts would pass MaxParts (the first part
// is the head), at most S3's 5 GiB.
func (p *place) copyPartSize(n int64) int64 {
	step := p.cfg.CopyPartSize
	if most := int64(p.cfg.MaxParts - 1); most > 0 && (n+step-1)/step > most {
		step = (n + most - 1) / most
	}
	return max(minPartSize, min(step, maxCopyPartSize))
}

// abort aborts an upload, briefly even if ctx was cancelled: one left
// behind is never completed, and a bucket lifecycle rule removes it.
func (p *place) abort(ctx context.Context, key, upload string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	p.retry(ctx, func(ctx context.Context) error {
		err := p.core.AbortMultipartUpload(ctx, p.bucket, key, upload)
		if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
			return nil
		}
		return err
	})
}

var _ store.Patcher = (*object)(nil)
