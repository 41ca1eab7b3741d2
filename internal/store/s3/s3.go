// Package s3 keeps images in an S3 bucket (AWS S3, MinIO, Ceph RGW, or
// any other server that speaks the S3 protocol): a Place is a bucket and
// a key prefix, an image one object below it.
//
// Writing streams: a Sink fills part buffers and uploads them with a
// multipart upload that it drives itself, a few parts in flight while
// the writer fills the next, so memory stays bounded whatever the image's
// size and nothing is copied to local disk. The object appears only when
// Commit completes the upload; an aborted, failed or killed upload is
// never completed, so no reader ever sees half an image.
//
// Reading is by ranged GETs pinned to the object's ETag: a random read
// fetches just what it asks for, a sequential reader (restore, verify,
// cat of a big file in a mount) gets aligned blocks fetched in parallel
// ahead of it. Every request is retried with backoff while the failure
// looks transient (5xx, a refused or reset connection, a short body), and
// every response's length is checked: never wrong bytes.
package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/platter-dev/platter/internal/store"
)

// Config says how to reach the server and how to use it. ConfigFromEnv
// fills the first part from the environment; zero tuning fields take the
// defaults below.
type Config struct {
	// Endpoint is the server's URL, http://HOST:PORT or https://HOST;
	// empty means AWS S3. A non-AWS endpoint is addressed path-style
	// (http://HOST/BUCKET/KEY), as MinIO and Ceph expect.
	Endpoint string
	// Region is the bucket's region; empty asks the server.
	Region string
	// AccessKey, SecretKey and SessionToken sign requests. With no
	// AccessKey, New reads the shared credentials file
	// (~/.aws/credentials, AWS_PROFILE); with neither, requests are
	// anonymous.
	AccessKey, SecretKey, SessionToken string

	// PartSize is the size of the first upload parts (16 MiB); it
	// doubles every PartsPerStep parts (1000) up to MaxPartSize (64 MiB).
	PartSize     int64
	PartsPerStep int
	MaxPartSize  int64
	// MaxParts is the server's limit on parts per upload (10 000). The
	// Sink fails before it would need more, so an image is never cut
	// short at the limit: with the defaults the limit is reached at
	// MaxImageSize.
	MaxParts int
	// Uploads is how many parts are uploaded at once (4).
	Uploads int
	// BufferBudget bounds the bytes of part buffers, filling and in
	// flight together (192 MiB). At least two parts are always allowed,
	// so the writer fills one while the other uploads.
	BufferBudget int64

	// BlockSize is the unit a sequential reader fetches (8 MiB, the
	// default chunk size), Readahead how many blocks are fetched ahead
	// of it (4), CacheBlocks how many fetched blocks are kept (12: a
	// restore's workers read about ten at once, and the readahead is
	// cut short rather than drop a block before it is read).
	BlockSize   int64
	Readahead   int
	CacheBlocks int

	// RetryFor is how long a request that fails transiently is retried
	// (2 minutes: long enough for a server to restart). Before the
	// server has answered once, ConnectRetryFor applies instead (5
	// seconds), so a wrong endpoint is reported at once.
	RetryFor        time.Duration
	ConnectRetryFor time.Duration

	// CopyPartSize is the size of the parts a Patch copies on the
	// server (1 GiB; at least 5 MiB, at most 5 GiB, larger when the
	// object would need more than MaxParts).
	CopyPartSize int64

	// Transport, if set, carries the requests (tests put a proxy here).
	Transport http.RoundTripper
}

// Defaults.
const (
	defaultPartSize     = 16 << 20
	defaultPartsPerStep = 1000
	defaultMaxPartSize  = 64 << 20
	defaultMaxParts     = 10000
	defaultUploads      = 4
	defaultBufferBudget = 192 << 20
	defaultCopyPartSize = 1 << 30
	defaultBlockSize    = 8 << 20
	defaultReadahead    = 4
	defaultCacheBlocks  = 12
	defaultRetryFor     = 2 * time.Minute
	defaultConnectRetry = 5 * time.Second
)

// MaxImageSize is the largest image a Sink writes with the default part
// sizes: 1000 parts of 16 MiB, 1000 of 32 MiB and 8000 of 64 MiB. Larger
// parts would need larger buffers than a bounded memory allows; an
// image that grows past this fails with ErrTooLarge.
const MaxImageSize = 1000*16<<20 + 1000*32<<20 + 8000*64<<20

// ConfigFromEnv reads the server and credentials from the environment as
// the AWS tools do: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION) and
// AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL). endpoint, when not empty
// (--s3-endpoint), wins over the environment's.
func ConfigFromEnv(endpoint string) Config {
	c := Config{
		Endpoint:     endpoint,
		Region:       firstEnv("AWS_REGION", "AWS_DEFAULT_REGION"),
		AccessKey:    os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"),
	}
	if c.Endpoint == "" {
		c.Endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	return c
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func (c *Config) setDefaults() {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.PartSize, defaultPartSize)
	defInt(&c.PartsPerStep, defaultPartsPerStep)
	def(&c.MaxPartSize, defaultMaxPartSize)
	c.MaxPartSize = max(c.MaxPartSize, c.PartSize)
	defInt(&c.MaxParts, defaultMaxParts)
	defInt(&c.Uploads, defaultUploads)
	def(&c.BufferBudget, defaultBufferBudget)
	def(&c.CopyPartSize, defaultCopyPartSize)
	def(&c.BlockSize, defaultBlockSize)
	defInt(&c.Readahead, defaultReadahead)
	defInt(&c.CacheBlocks, defaultCacheBlocks)
	c.CacheBlocks = max(c.CacheBlocks, c.Readahead+2)
	if c.RetryFor <= 0 {
		c.RetryFor = defaultRetryFor
	}
	if c.ConnectRetryFor <= 0 {
		c.ConnectRetryFor = defaultConnectRetry
	}
}

// Errors the CLI reports in one line. Each is wrapped with the object or
// bucket it concerns.
var (
	ErrNoBucket    = errors.New("no such bucket")
	ErrCredentials = errors.New("credentials rejected")
	ErrDenied      = errors.New("access denied")
	ErrUnreachable = errors.New("cannot reach the server")
	ErrChanged     = store.ErrChanged // the object was replaced since it was opened
	ErrTooLarge    = errors.New("image too large for one S3 upload")
)

// place is a bucket and a key prefix.
type place struct {
	core   minio.Core
	bucket string
	prefix string // "" or ending in "/"
	cfg    Config
	// endpoint names the server in messages.
	endpoint string
	// answered is set once the server has answered a request, after
	// which transient failures are retried for RetryFor, not
	// ConnectRetryFor.
	answered atomic.Bool
	// bucketSeen is set once the bucket is known to exist: a missing
	// object is then just missing (Open probes for split volumes).
	bucketSeen atomic.Bool
}

// New returns the Place s3://bucket/prefix. It makes no request (ctx is
// for those to come): a wrong endpoint, credentials or bucket is
// reported by the first operation, naming the object it was for.
func New(ctx context.Context, bucket, prefix string, cfg Config) (store.Place, error) {
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return nil, fmt.Errorf("s3://%s: invalid bucket name: %w", bucket, err)
	}
	prefix = strings.TrimLeft(prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	cfg.setDefaults()
	host, secure, aws, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "":
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	default:
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
		})
	}
	tr := cfg.Transport
	if tr == nil {
		t, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, fmt.Errorf("s3: %w", err)
		}
		// Parts and blocks are fetched in parallel; keep their
		// connections.
		t.MaxIdleConnsPerHost = 64
		tr = t
	}
	lookup := minio.BucketLookupAuto
	if !aws {
		lookup = minio.BucketLookupPath
	}
	core, err := minio.NewCore(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		// Retries are ours (retry.go): one policy for every request,
		// bounded in time, and parts whose bodies minio-go could not
		// rewind are retried too.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: endpoint %s: %w", host, err)
	}
	scheme := "https://"
	if !secure {
		scheme = "http://"
	}
	return &place{core: *core, bucket: bucket, prefix: prefix, cfg: cfg,
		endpoint: scheme + host}, nil
}

// parseEndpoint turns an endpoint URL into minio-go's host[:port] and
// scheme; empty is AWS S3.
func parseEndpoint(ep string) (host string, secure, aws bool, err error) {
	if ep == "" {
		return "s3.amazonaws.com", true, true, nil
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false, false, fmt.Errorf("s3 endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", ep)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, false, fmt.Errorf("s3 endpoint %q: want only a scheme, host and port (the bucket goes in s3://BUCKET/KEY)", ep)
	}
	return u.Host, u.Scheme == "https", s3utils.IsAmazonEndpoint(*u), nil
}

func (p *place) String() string { return "s3://" + p.bucket + "/" + p.prefix }

// key returns the object key of the image called name, which must be a
// single path element.
func (p *place) key(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") || path.Clean(name) != name {
		return "", fmt.Errorf("%s: %q is not an image name (one path element)", p, name)
	}
	key := p.prefix + name
	if err := s3utils.CheckValidObjectName(key); err != nil {
		return "", fmt.Errorf("%s%s: %w", p, name, err)
	}
	return key, nil
}

func (p *place) url(key string) string { return "s3://" + p.bucket + "/" + key }

// Open stats the object and returns a reader pinned to its ETag.
func (p *place) Open(ctx context.Context, name string) (store.Object, error) {
	key, err := p.key(name)
	if err != nil {
		return nil, err
	}
	info, err := p.stat(ctx, key)
	if err != nil {
		return nil, err
	}
	return newObject(ctx, p, key, info), nil
}

// stat returns the object's info; a missing object is store.ErrNotFound,
// a missing bucket ErrNoBucket (HEAD carries no error body, so the bucket
// is asked separately).
func (p *place) stat(ctx context.Context, key string) (minio.ObjectInfo, error) {
	var info minio.ObjectInfo
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		info, err = p.core.StatObject(ctx, p.bucket, key, minio.StatObjectOptions{})
		return err
	})
	if err == nil {
		p.bucketSeen.Store(true)
		return info, nil
	}
	if isNotFound(err) && !p.bucketSeen.Load() {
		ok, berr := p.bucketExists(ctx)
		if berr == nil && !ok {
			return info, p.fail("", ErrNoBucket)
		}
		p.bucketSeen.Store(berr == nil)
	}
	return info, p.fail(key, err)
}

func (p *place) bucketExists(ctx context.Context) (bool, error) {
	var ok bool
	err := p.retry(ctx, func(ctx context.Context) error {
		var err error
		ok, err = p.core.BucketExists(ctx, p.bucket)
		return err
	})
	return ok, err
}

// Create starts a multipart upload of the image called name.
func (p *place) Create(ctx context.Context, name string, opts store.CreateOptions) (store.Sink, error) {
	key, err := p.key(name)
	if err != nil {
		return nil, err
	}
	if opts.Split > 0 {
		return nil, fmt.Errorf("%s: --split applies to local files; an S3 object holds up to 5 TiB: %w", p.url(key), errors.ErrUnsupported)
	}
	if !opts.Force {
		_, err := p.stat(ctx, key)
		switch {
		case err == nil:
			return nil, fmt.Errorf("%s: %w", p.url(key), store.ErrExists)
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	return newSink(ctx, p, key, opts.Force)
}

// List lists the objects directly below the prefix (one level: keys
// below a further "/" are not images of this Place).
func (p *place) List(ctx context.Context) ([]store.Entry, error) {
	var out []store.Entry
	err := p.retry(ctx, func(ctx context.Context) error {
		out = out[:0]
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for o := range p.core.Client.ListObjects(ctx, p.bucket, minio.ListObjectsOptions{Prefix: p.prefix}) {
			if o.Err != nil {
				return o.Err
			}
			name := strings.TrimPrefix(o.Key, p.prefix)
			if name == "" || strings.Contains(name, "/") {
				continue // the prefix's own marker, or a "directory"
			}
			out = append(out, store.Entry{Name: name, Size: o.Size, ModTime: o.LastModified})
		}
		return nil
	})
	if err != nil {
		if isNoBucket(err) {
			return nil, p.fail("", ErrNoBucket)
		}
		return nil, p.fail(p.prefix, err)
	}
	return out, nil
}

// Remove deletes the image called name; a missing one is
// store.ErrNotFound (S3's DELETE would succeed silently).
func (p *place) Remove(ctx context.Context, name string) error {
	key, err := p.key(name)
	if err != nil {
		return err
	}
	if _, err := p.stat(ctx, key); err != nil {
		return err
	}
	err = p.retry(ctx, func(ctx context.Context) error {
		return p.core.RemoveObject(ctx, p.bucket, key, minio.RemoveObjectOptions{})
	})
	if err != nil {
		return p.fail(key, err)
	}
	return nil
}
