package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/platter-dev/platter/internal/store"
)

// Backoff between attempts: 100 ms doubling to 5 s, each wait drawn from
// [d/2, d) so that parallel requests do not retry in step.
const (
	backoffFirst = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
)

// attemptTimeout bounds one request: 30 s to answer, plus the body at no
// less than 256 KiB/s. A server that stalls mid-body is retried, not
// waited on forever.
func attemptTimeout(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/(256<<10))*time.Second
}

// retry runs fn, a request of about 0 body bytes; see retryN.
func (p *place) retry(ctx context.Context, fn func(context.Context) error) error {
	return p.retryN(ctx, 0, fn)
}

// retryN runs fn, a request moving about n bytes, until it succeeds,
// fails for good, or has failed transiently for longer than the retry
// budget; the last is a *gaveUp holding the last error. fn must be safe
// to run again (it re-sends or re-reads everything it moves).
func (p *place) retryN(ctx context.Context, n int64, fn func(context.Context) error) error {
	var (
		start    time.Time
		attempts int
		wait     = backoffFirst
	)
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(n))
		err := fn(actx)
		cancel()
		attempts++
		if err == nil {
			p.answered.Store(true)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(err) {
			var er minio.ErrorResponse
			if errors.As(err, &er) {
				p.answered.Store(true) // the server answered
			}
			return err
		}
		if start.IsZero() {
			start = time.Now()
		}
		budget := p.cfg.ConnectRetryFor
		if p.answered.Load() {
			budget = p.cfg.RetryFor
		}
		if time.Since(start) >= budget {
			return &gaveUp{attempts: attempts, elapsed: time.Since(start), err: err}
		}
		d := wait/2 + rand.N(wait/2)
		if rest := budget - time.Since(start); d > rest {
			d = max(rest, time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		wait = min(2*wait, backoffMax)
	}
}

// gaveUp is a transient failure that lasted past the retry budget.
type gaveUp struct {
	attempts int
	elapsed  time.Duration
	err      error
}

func (g *gaveUp) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts over %s)", g.err, g.attempts, g.elapsed.Round(100*time.Millisecond))
}

func (g *gaveUp) Unwrap() error { return g.err }

// shortBody is a response with fewer or more bytes than asked for: a
// connection cut mid-body, or a server that ignored the range. It is
// retried; it never reaches the reader as data.
type shortBody struct {
	want, got int64
}

func (e *shortBody) Error() string {
	return fmt.Sprintf("response body of %d bytes where %d were asked for", e.got, e.want)
}

// transient says whether a failed request may succeed if sent again.
func transient(err error) bool {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
			"XMinioServerNotInitialized", "XMinioReadQuorum", "XMinioWriteQuorum":
			return true
		}
		return er.StatusCode >= 500 || er.StatusCode == 429 || er.StatusCode == 408
	}
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert *tls.CertificateVerificationError
	var short *shortBody
	switch {
	case errors.As(err, &short):
		return true
	case errors.As(err, &dns):
		return dns.IsTemporary || dns.IsTimeout
	case errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &badCert):
		return false
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true // timeouts, closed connections
	}
	var ue *url.Error
	return errors.As(err, &ue) // any other failure to exchange a request
}

// fail wraps err, from a request about key ("" for the bucket), into the
// one line the CLI prints: s3://BUCKET/KEY: what went wrong.
func (p *place) fail(key string, err error) error {
	where := "s3://" + p.bucket
	if key != "" && !errors.Is(err, ErrNoBucket) && !isNoBucket(err) {
		where += "/" + key
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) && !isGaveUp(err) {
		return fmt.Errorf("%s: %w", where, err)
	}
	return fmt.Errorf("%s: %w", where, p.explain(err))
}

func isGaveUp(err error) bool {
	var g *gaveUp
	return errors.As(err, &g)
}

// kindError is a message for people that still matches a sentinel (and
// the cause) with errors.Is.
type kindError struct {
	msg   string
	kind  error
	cause error
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// explain turns what minio-go and net/http return into a message that
// says what to fix.
func (p *place) explain(err error) error {
	if errors.Is(err, ErrNoBucket) || errors.Is(err, ErrTooLarge) || errors.Is(err, store.ErrExists) {
		return err
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "InvalidAccessKeyId":
			return &kindError{"credentials rejected: the server does not know the access key (AWS_ACCESS_KEY_ID)", ErrCredentials, err}
		case "SignatureDoesNotMatch":
			return &kindError{"credentials rejected: the secret key does not match the access key (AWS_SECRET_ACCESS_KEY)", ErrCredentials, err}
		case "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return &kindError{"credentials rejected: the session token is invalid or expired (AWS_SESSION_TOKEN)", ErrCredentials, err}
		case "AccessDenied", "AllAccessDisabled":
			msg := "access denied"
			if p.cfg.AccessKey == "" {
				msg += " (no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
			}
			return &kindError{msg, ErrDenied, err}
		case "NoSuchBucket":
			return &kindError{"no such bucket", ErrNoBucket, err}
		case "NoSuchKey":
			return &kindError{store.ErrNotFound.Error(), store.ErrNotFound, err}
		case "PreconditionFailed":
			return &kindError{ErrChanged.Error(), ErrChanged, err}
		}
		msg := er.Message
		if msg == "" {
			msg = er.Code
		}
		return &kindError{fmt.Sprintf("server error %s: %s", er.Code, strings.TrimSuffix(msg, ".")) + retried(err), err, nil}
	}
	var short *shortBody
	var bad *badRange
	switch {
	case errors.As(err, &short):
		return &kindError{short.Error() + retried(err), err, nil}
	case errors.As(err, &bad):
		return &kindError{bad.Error(), err, nil}
	}
	return &kindError{fmt.Sprintf("cannot reach %s: %s%s", p.endpoint, netCause(err), retried(err)), ErrUnreachable, err}
}

// retried says how long a transient failure was retried, if it was.
func retried(err error) string {
	var g *gaveUp
	if !errors.As(err, &g) {
		return ""
	}
	return fmt.Sprintf(" (gave up after %d attempts over %s)", g.attempts, g.elapsed.Round(100*time.Millisecond))
}

// netCause names a transport failure without the request line that
// net/http puts around it.
func netCause(err error) string {
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return "no such host " + dns.Name
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed mid-response"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	var g *gaveUp
	if errors.As(err, &g) {
		return g.err.Error()
	}
	return err.Error()
}

// isNotFound and isNoBucket look through retries and wrapping.
func isNotFound(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && (er.Code == "NoSuchKey" || er.StatusCode == 404 && er.Code != "NoSuchBucket")
}

func isNoBucket(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && er.Code == "NoSuchBucket"
}
