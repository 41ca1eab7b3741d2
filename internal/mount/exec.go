//go:build linux

package mount

import osexec "os/exec"

func exec(name string, args ...string) ([]byte, error) {
	return osexec.Command(name, args...).CombinedOutput()
}
