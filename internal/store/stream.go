package store

import (
	"bufio"
	"fmt"
	"io"
)

// Stream returns a Sink over a stream, such as standard output: bytes go
// out in the order written, in pieces of 1 MiB. Commit writes what is
// buffered. A stream cannot be taken back: after Abort nothing more is
// written, and whoever reads it has an image without its footer, which
// every reader reports as cut short.
func Stream(w io.Writer, name string) Sink {
	return &stream{w: bufio.NewWriterSize(w, 1<<20), name: name}
}

type stream struct {
	w    *bufio.Writer
	name string
	done bool
	err  error
}

func (s *stream) Name() string { return s.name }

func (s *stream) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.done {
		return 0, fmt.Errorf("%s: write after the image was finished", s.name)
	}
	n, err := s.w.Write(b)
	if err != nil {
		s.err = fmt.Errorf("write %s: %w", s.name, err)
	}
	return n, s.err
}

func (s *stream) Commit() error {
	if s.err != nil {
		return s.err
	}
	if s.done {
		return nil
	}
	s.done = true
	if err := s.w.Flush(); err != nil {
		s.err = fmt.Errorf("write %s: %w", s.name, err)
	}
	return s.err
}

func (s *stream) Abort() { s.done = true }
