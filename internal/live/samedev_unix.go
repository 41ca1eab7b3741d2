//go:build unix

package live

import (
	"os"
	"syscall"
)

// sameDevice reports whether two files live on the same filesystem.
func sameDevice(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Dev == sb.Dev
}
