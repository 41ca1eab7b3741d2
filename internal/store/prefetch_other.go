//go:build !linux

package store

// Prefetch does nothing off Linux.
func (o *file) Prefetch(off, n int64) {}
