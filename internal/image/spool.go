package image

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// spoolMemory is how much a spool keeps in memory before it moves to a
// temporary file.
const spoolMemory = 8 << 20

// spool collects bytes to be read back once: in memory while they are
// few, in an unlinked temporary file in dir beyond spoolMemory. It bounds
// the memory of writing an image's index and maps whatever the disk size.
type spool struct {
	dir string
	mem bytes.Buffer
	f   *os.File
	bw  *bufio.Writer
	n   int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && s.mem.Len()+len(p) > spoolMemory {
		f, err := os.CreateTemp(s.dir, ".platter-spool-*")
		if err != nil {
			return 0, fmt.Errorf("image: spool: %w", err)
		}
		os.Remove(f.Name()) // gone when closed, even after a crash
		s.f, s.bw = f, bufio.NewWriterSize(f, 1<<20)
		if _, err := s.bw.Write(s.mem.Bytes()); err != nil {
			return 0, fmt.Errorf("image: spool: %w", err)
		}
		s.mem = bytes.Buffer{}
	}
	s.n += int64(len(p))
	if s.f == nil {
		return s.mem.Write(p)
	}
	n, err := s.bw.Write(p)
	if err != nil {
		err = fmt.Errorf("image: spool: %w", err)
	}
	return n, err
}

// Len is the number of bytes written.
func (s *spool) Len() int64 { return s.n }

// reader returns the bytes written, from the start. Write no more after.
func (s *spool) reader() (io.Reader, error) {
	if s.f == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if err := s.bw.Flush(); err != nil {
		return nil, fmt.Errorf("image: spool: %w", err)
	}
	return bufio.NewReaderSize(io.NewSectionReader(s.f, 0, s.n), 1<<20), nil
}

// Close frees the spool.
func (s *spool) Close() error {
	s.mem = bytes.Buffer{}
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
