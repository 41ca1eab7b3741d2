package faultdisk

import (
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	var p Plan
	for _, l := range []string{"bad 4096 512", "# a comment", "", "stall 0x1000 8192 1.5s", "bad 0 1", "vanish"} {
		if err := p.Apply(l); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	want := "bad 0 1\nbad 4096 512\nstall 4096 8192 1.5s\nvanish\n"
	if got := p.String(); got != want {
		t.Errorf("plan reads\n%s\nwant\n%s", got, want)
	}
	if d, bad := p.fault(0, 512); d != 0 || !bad {
		t.Errorf("vanished: fault = %v, %v", d, bad)
	}
	p.Apply("return")
	for _, c := range []struct {
		off, n int64
		delay  time.Duration
		bad    bool
	}{
		{1, 4095, 0, false},
		{0, 1, 0, true},
		{4095, 1, 0, false},
		{4095, 2, 1500 * time.Millisecond, true},
		{4608, 512, 1500 * time.Millisecond, false},
		{12287, 1, 1500 * time.Millisecond, false},
		{12288, 1 << 20, 0, false},
	} {
		if d, bad := p.fault(c.off, c.n); d != c.delay || bad != c.bad {
			t.Errorf("read of %d bytes at %d: delay %v bad %v, want %v %v", c.n, c.off, d, bad, c.delay, c.bad)
		}
	}
	p.Apply("clear")
	if p.String() != "" {
		t.Errorf("clear left %q", p.String())
	}
	for _, l := range []string{"bad 1", "bad -1 5", "bad 0 0", "bad 0 x", "stall 0 1 soon", "stall 0 1 -1s", "explode", "vanish now", "bad 9223372036854775807 2"} {
		if err := p.Apply(l); err == nil {
			t.Errorf("%q: no error", l)
		}
	}
}
