package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/tooltest"
)

// fakeSink records what ToSink does to it.
type fakeSink struct {
	bytes.Buffer
	committed, aborted int
	failAt             int // fail writes once this many bytes are in (0: never)
}

func (s *fakeSink) Write(b []byte) (int, error) {
	if s.failAt > 0 && s.Len()+len(b) > s.failAt {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(b)
}
func (s *fakeSink) Commit() error { s.committed++; return nil }
func (s *fakeSink) Abort() {
	if s.committed == 0 {
		s.aborted++
	}
}

// ToSink commits an image that is whole and aborts one that is not: a
// write that fails, a cancelled run.
func TestToSink(t *testing.T) {
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(3)).Read(data[:1<<20])
	ok := &fakeSink{}
	if _, _, err := ToSink(context.Background(), tooltest.NewMemSource(data), ok, Options{ChunkSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if ok.committed != 1 || ok.aborted != 0 {
		t.Errorf("a whole image: committed %d, aborted %d", ok.committed, ok.aborted)
	}
	if _, err := image.NewReader(bytes.NewReader(ok.Bytes()), int64(ok.Len())); err != nil {
		t.Errorf("the image committed does not open: %v", err)
	}

	full := &fakeSink{failAt: 100 << 10}
	if _, _, err := ToSink(context.Background(), tooltest.NewMemSource(data), full, Options{ChunkSize: 1 << 20}); err == nil {
		t.Error("a failed write succeeded")
	}
	if full.committed != 0 || full.aborted != 1 {
		t.Errorf("a failed write: committed %d, aborted %d", full.committed, full.aborted)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := &fakeSink{}
	if _, _, err := ToSink(ctx, tooltest.NewMemSource(data), stopped, Options{ChunkSize: 1 << 20}); err == nil {
		t.Error("a cancelled run succeeded")
	}
	if stopped.committed != 0 || stopped.aborted != 1 {
		t.Errorf("a cancelled run: committed %d, aborted %d", stopped.committed, stopped.aborted)
	}
}
