package resize

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// maxOutput is how much of a tool's output is kept: the end, where
// tools say what went wrong. A tool that writes more is not stopped.
const maxOutput = 64 << 10

// tool runs one external command for the filesystem at path and returns
// its output (standard output and error together). The command ends when
// ctx does (its deadline is the tool's timeout): it is sent SIGTERM,
// then killed if it is still there after five seconds. Standard input is
// empty, so a tool that asks a question reads no answer. okCodes are
// exit codes besides 0 that are not failures (e2fsck's 1: errors fixed).
func tool(ctx context.Context, path string, okCodes []int, name string, args ...string) (string, error) {
	bin := lookTool(name)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	// LC_ALL=C: the outputs parsed are the English ones.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	out := &tailBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		for _, c := range okCodes {
			if exit.ExitCode() == c {
				err = nil
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return out.String(), &ToolError{Tool: name, Args: args, Path: path, Err: err, Output: out.String()}
	}
	return out.String(), nil
}

// lookTool finds name in PATH or in the sbin directories, which a
// user's PATH may lack.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name // Run says it is not found
}

// tailBuffer keeps the last max bytes written to it, marking a cut.
type tailBuffer struct {
	b   []byte
	max int
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
		t.cut = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	s := strings.TrimSpace(string(t.b))
	if t.cut {
		return "[...]\n" + s
	}
	return s
}
