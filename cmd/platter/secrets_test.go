package main

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/platter-dev/platter/internal/tooltest"
)

// promptWatch is where askOn shows its prompt: it notes whether the
// terminal echoed at that moment, then types the answer.
type promptWatch struct {
	t             *testing.T
	master, slave int
	echo          []bool
}

func (p *promptWatch) Write(b []byte) (int, error) {
	if len(b) == 0 || b[0] == '\n' {
		return len(b), nil
	}
	tio, err := unix.IoctlGetTermios(p.slave, unix.TCGETS)
	if err != nil {
		p.t.Fatal(err)
	}
	p.echo = append(p.echo, tio.Lflag&unix.ECHO != 0)
	unix.Write(p.master, []byte("typed secret\n"))
	return len(b), nil
}

// A passphrase typed the moment its prompt appears is never echoed: echo
// is off before the prompt is shown (it once was turned off after, and a
// fast answer showed on the terminal), and on again after.
func TestAskEchoOffBeforePrompt(t *testing.T) {
	master, slave := tooltest.OpenPTY(t)
	defer master.Close()
	defer slave.Close()
	w := &promptWatch{t: t, master: int(master.Fd()), slave: int(slave.Fd())}
	got, err := askOn(w.slave, w, "Passphrase: ")
	if err != nil || string(got) != "typed secret" {
		t.Fatalf("askOn: %q, %v", got, err)
	}
	if len(w.echo) != 1 || w.echo[0] {
		t.Errorf("echo when the prompt was shown: %v", w.echo)
	}
	tio, err := unix.IoctlGetTermios(w.slave, unix.TCGETS)
	if err != nil || tio.Lflag&unix.ECHO == 0 {
		t.Errorf("echo after the passphrase was read: %v (lflag %#x)", err, tio.Lflag)
	}
}
