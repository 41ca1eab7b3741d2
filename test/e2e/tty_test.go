package e2e

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// answer is what a user types at a prompt: when the output shows
// prompt, the line is typed.
type answer struct{ prompt, line string }

// runTTY runs platter on a new pseudo-terminal, as a user at a terminal
// would, typing each answer's line when its prompt appears (in order). It
// returns everything the terminal showed and the exit code; a prompt that
// does not appear within a minute fails the test.
func runTTY(t testing.TB, answers []answer, args ...string) (shown string, code int) {
	t.Helper()
	master, slave := tooltest.OpenPTY(t)
	defer master.Close()
	cmd := exec.Command(platter, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatalf("start platter: %v", err)
	}
	slave.Close()
	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	read := make(chan struct{})
	go func() {
		defer close(read)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil { // EIO once the last process closes the terminal
				return
			}
		}
	}()
	seen := 0
	for _, a := range answers {
		deadline := time.Now().Add(time.Minute)
		for {
			mu.Lock()
			i := strings.Index(out.String()[seen:], a.prompt)
			mu.Unlock()
			if i >= 0 {
				seen += i + len(a.prompt)
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("platter %s: no prompt %q; the terminal shows:\n%s", strings.Join(args, " "), a.prompt, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := master.Write([]byte(a.line + "\n")); err != nil {
			t.Fatalf("type at %q: %v", a.prompt, err)
		}
	}
	err := cmd.Wait()
	<-read
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("platter %s: %v", strings.Join(args, " "), err)
	}
	shown = out.String()
	if strings.Contains(shown, "goroutine ") || strings.Contains(shown, "panic:") {
		t.Fatalf("platter %v panicked:\n%s", args, shown)
	}
	return shown, code
}
