//go:build !linux

package vm

import (
	"os/exec"
	"syscall"
)

// procAttr: QEMU as any child (Setpgid and Pdeathsig are Linux's here).
func procAttr() *syscall.SysProcAttr { return nil }

// signal sends sig to QEMU.
func signal(cmd *exec.Cmd, sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		cmd.Process.Kill()
		return
	}
	cmd.Process.Signal(sig)
}
