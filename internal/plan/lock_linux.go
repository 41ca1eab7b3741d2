package plan

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BusyError says another run of the plan holds its lock.
type BusyError struct {
	Plan  string
	PID   int
	Since time.Time
}

func (e *BusyError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("plan %s is already running", e.Plan)
	}
	return fmt.Sprintf("plan %s is already running (pid %d, since %s)", e.Plan, e.PID, e.Since.Local().Format("2006-01-02 15:04:05"))
}

// Lock takes the plan's lock, the file at path (made 0600; a symbolic
// link there is refused): an flock held until Unlock or exit. Without
// wait a lock held elsewhere is a *BusyError; with wait it is waited for.
func Lock(path, plan string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("lock file %s is a symbolic link: refused", path)
		}
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("lock file %s is not a regular file", path)
	}
	how := unix.LOCK_EX | unix.LOCK_NB
	if wait {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		b, _ := io.ReadAll(io.LimitReader(f, 200))
		f.Close()
		busy := &BusyError{Plan: plan}
		if fs := strings.Fields(string(b)); len(fs) >= 2 {
			busy.PID, _ = strconv.Atoi(fs[0])
			busy.Since, _ = time.Parse(time.RFC3339, fs[1])
		}
		return nil, busy
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Who holds it, for the message of a run that finds it held.
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))), 0)
	f.Chmod(0o600)
	return f, nil
}
