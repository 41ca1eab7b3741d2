//go:build unix

package s3

import "golang.org/x/sys/unix"

// allocBuf maps n bytes outside the Go heap. Part buffers are the bulk
// of a create's memory; kept off the heap they neither double the
// garbage collector's target nor linger after they are freed, so the
// peak RSS is what the budget says.
func allocBuf(n int64) ([]byte, error) {
	return unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

func freeBuf(b []byte) {
	unix.Munmap(b[:cap(b)])
}
