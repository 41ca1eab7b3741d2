package vm

import (
	"os/exec"
	"syscall"
)

// procAttr puts QEMU in its own process group and kills it when this
// process dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signal sends sig to QEMU's process group (QEMU and whatever it started:
// a helper must not hold its output open).
func signal(cmd *exec.Cmd, sig syscall.Signal) {
	syscall.Kill(-cmd.Process.Pid, sig)
}
