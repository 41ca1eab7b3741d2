package vm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// End is how a boot ended without an error.
type End int

const (
	// PoweredOff: QEMU exited by itself, with status 0: the guest
	// powered off. (A guest that reboots stays in.)
	PoweredOff End = iota
	// Escaped: the user typed the escape byte and QEMU was stopped.
	Escaped
)

// CtrlRightBracket is the byte Ctrl-] sends: the escape of telnet and
// virsh console.
const CtrlRightBracket = 0x1d

// Console is the guest's serial console on the user's side.
type Console struct {
	// In is what the user types, forwarded to the guest; nil forwards
	// nothing. A read that ends (EOF) stops the forwarding, not the
	// boot.
	In io.Reader
	// Out takes what the guest writes to its serial port.
	Out io.Writer
	// Escape, if not 0, is the byte of In that ends the boot (it is not
	// forwarded): CtrlRightBracket on a terminal.
	Escape byte
}

// stopGrace is how long QEMU has to exit after SIGTERM before it is
// killed: it exits at once, and the CLI exits anyway 3 s after a signal.
const stopGrace = 2 * time.Second

// Run runs QEMU with args (Config.Args) until the guest powers off
// (PoweredOff), the user types the console's escape (Escaped), ctx is
// cancelled (ctx's error) or QEMU fails (its exit status and the end of
// what it printed). QEMU's standard error is copied to stderr as it
// comes. QEMU runs in its own process group, so a terminal's signals
// reach only this process, which stops it; it is killed if this process
// dies.
func Run(ctx context.Context, qemu string, args []string, con Console, stderr io.Writer) (End, error) {
	cmd := exec.Command(qemu, args...)
	cmd.SysProcAttr = procAttr()
	// Once QEMU is gone, its output is not waited for long (a process it
	// left behind may hold the pipes).
	cmd.WaitDelay = time.Second
	// Pipes, never this process's own descriptors: QEMU makes its
	// standard input and output non-blocking, which would change them
	// for this process (and the shell after it) too.
	cmd.Stdout = struct{ io.Writer }{con.Out}
	tail := &tailBuffer{max: 4096}
	if stderr == nil {
		stderr = io.Discard
	}
	cmd.Stderr = io.MultiWriter(stderr, tail)
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", qemu, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	escaped := make(chan struct{})
	if con.In != nil {
		go forward(in, con.In, con.Escape, escaped)
	}

	stop := func() error {
		signal(cmd, syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(stopGrace):
			signal(cmd, syscall.SIGKILL)
			return <-done
		}
	}
	select {
	case err := <-done:
		if err != nil {
			msg := strings.TrimSpace(tail.String())
			if msg != "" {
				msg = ": " + oneLine(msg)
			}
			return 0, fmt.Errorf("qemu failed (%v)%s", err, msg)
		}
		return PoweredOff, nil
	case <-escaped:
		stop()
		return Escaped, nil
	case <-ctx.Done():
		stop()
		return 0, ctx.Err()
	}
}

// forward copies what the user types to QEMU until in ends, stopping at
// the escape byte (0: none), which closes escaped.
func forward(to io.Writer, in io.Reader, escape byte, escaped chan struct{}) {
	buf := make([]byte, 256)
	for {
		n, err := in.Read(buf)
		b := buf[:n]
		if i := bytes.IndexByte(b, escape); escape != 0 && i >= 0 {
			to.Write(b[:i])
			close(escaped)
			return
		}
		if n > 0 {
			if _, werr := to.Write(b); werr != nil {
				return // QEMU is gone
			}
		}
		if err != nil {
			return
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
