package store

import "golang.org/x/sys/unix"

// Prefetch asks the kernel to start reading [off, off+n) of the file
// into the page cache now, without waiting for it: a reader that knows
// what it will read next (restore, in the index's order) keeps the disk
// reading ahead while it decodes.
func (o *file) Prefetch(off, n int64) {
	unix.Fadvise(int(o.f.Fd()), off, n, unix.FADV_WILLNEED)
}
