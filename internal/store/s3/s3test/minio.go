// Package s3test runs a real S3 server for tests: MinIO, on a free
// loopback port, with a temporary data directory and random credentials,
// stopped when the test ends. A missing minio binary fails the test with
// the command that builds it; it never skips.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Module is the MinIO server the tests run, as `go install` takes it
// (about 3 minutes to build; `make minio` caches the binary).
const Module = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

// CacheDir is where `make minio` puts the binary: the user's cache
// directory (XDG_CACHE_HOME, else ~/.cache), platter/minio.
func CacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = filepath.Join(os.TempDir(), "platter-cache")
	}
	return filepath.Join(dir, "platter", "minio")
}

// Binary returns the minio binary: PLATTER_MINIO, else minio in PATH,
// else the one `make minio` built in CacheDir. Without one it fails t
// with the command that builds it.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PLATTER_MINIO"); p != "" {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	p := filepath.Join(CacheDir(), "minio")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Fatalf("minio is needed for this test and is not installed: run `make minio`, or GOBIN=%s go install %s", CacheDir(), Module)
	return ""
}

// Server is a running MinIO with one bucket.
type Server struct {
	t         testing.TB
	bin       string
	dir       string // data
	addr      string // 127.0.0.1:PORT, kept across Restart
	cmd       *exec.Cmd
	exited    chan struct{}
	logPath   string
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string
}

// Start starts MinIO, waits until it is ready and makes the bucket
// "platter". It is stopped, and its data removed, when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:         t,
		bin:       Binary(t),
		dir:       t.TempDir(),
		addr:      freeAddr(t),
		AccessKey: "platter-" + randomHex(6),
		SecretKey: randomHex(20),
		Bucket:    "platter",
	}
	s.Endpoint = "http://" + s.addr
	s.logPath = filepath.Join(s.dir, "minio.log")
	t.Cleanup(s.Stop)
	s.start()
	s.MakeBucket(s.Bucket)
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeAddr returns a loopback address with a port free just now.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *Server) start() {
	s.t.Helper()
	data := filepath.Join(s.dir, "data")
	log, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(s.bin, "server", "--quiet",
		"--address", s.addr, "--console-address", freeAddr(s.t),
		"--certs-dir", filepath.Join(s.dir, "certs"), data)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"HOME="+s.dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start minio: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	s.waitReady()
}

// waitReady polls MinIO's readiness probe for up to a minute.
func (s *Server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(time.Minute)
	c := http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			s.t.Fatalf("minio exited at start:\n%s", s.Log())
		default:
		}
		resp, err := c.Get(s.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("minio not ready after a minute:\n%s", s.Log())
}

// Log returns the end of MinIO's output.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s). Its data
// stays for Restart.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Kill stops the server at once (SIGKILL): connections are cut, not
// closed.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts the stopped server again on the same port with the same
// data.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.Stop()
	}
	s.start()
}

// Client returns a minio-go client with the server's credentials.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	c, err := minio.New(s.addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// MakeBucket makes another bucket.
func (s *Server) MakeBucket(name string) {
	s.t.Helper()
	if err := s.Client().MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		s.t.Fatalf("make bucket %s: %v", name, err)
	}
}

// Env is the environment that points platter (or any AWS tool) at the
// server: credentials, region and endpoint.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_ENDPOINT_URL=" + s.Endpoint,
	}
}

// Objects lists the bucket's keys below prefix (recursively), with
// their sizes.
func (s *Server) Objects(bucket, prefix string) map[string]int64 {
	s.t.Helper()
	out := map[string]int64{}
	for o := range s.Client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			s.t.Fatalf("list %s/%s: %v", bucket, prefix, o.Err)
		}
		out[o.Key] = o.Size
	}
	return out
}

// Uploads lists the keys of the bucket's incomplete multipart uploads.
func (s *Server) Uploads(bucket string) []string {
	s.t.Helper()
	var out []string
	for u := range s.Client().ListIncompleteUploads(context.Background(), bucket, "", true) {
		if u.Err != nil {
			s.t.Fatalf("list uploads in %s: %v", bucket, u.Err)
		}
		out = append(out, u.Key)
	}
	return out
}

// Exists says whether bucket/key is an object.
func (s *Server) Exists(bucket, key string) bool {
	s.t.Helper()
	_, err := s.Client().StatObject(context.Background(), bucket, key, minio.StatObjectOptions{})
	if err == nil {
		return true
	}
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) && er.StatusCode == http.StatusNotFound {
		return false
	}
	s.t.Fatalf("stat %s/%s: %v", bucket, key, err)
	return false
}

// String names the server in messages.
func (s *Server) String() string {
	return fmt.Sprintf("minio at %s (%s)", s.Endpoint, strings.TrimPrefix(s.dir, os.TempDir()))
}

// Remove removes bucket/key behind platter's back.
func (s *Server) Remove(bucket, key string) {
	s.t.Helper()
	if err := s.Client().RemoveObject(context.Background(), bucket, key, minio.RemoveObjectOptions{}); err != nil {
		s.t.Fatalf("remove %s/%s: %v", bucket, key, err)
	}
}

// Get returns the bytes of bucket/key, read behind platter's back.
func (s *Server) Get(bucket, key string) []byte {
	s.t.Helper()
	o, err := s.Client().GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		s.t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		s.t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	return b
}
