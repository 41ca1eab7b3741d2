//go:build linux

// Package freeze holds mounted filesystems still (FIFREEZE) while Platter
// copies them, and makes sure they are thawed again whatever happens:
// Platter thaws them itself when the copy ends; a watchdog thaws them when
// the time limit passes; and a guard process, started before the first
// freeze, thaws them if Platter dies (even by kill -9), because the pipe it
// waits on then closes.
package freeze

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The ioctls, from linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	ioctlFreeze = 0xc0045877
	ioctlThaw   = 0xc0045878
)

// GuardCommand is the hidden subcommand that runs the guard process:
// "platter GuardCommand SECONDS MOUNTPOINT...".
const GuardCommand = "__thaw-guard"

// ErrThawedEarly means a filesystem was thawed before the copy finished
// (the time limit passed, or something else thawed it): what was copied is
// not one instant.
var ErrThawedEarly = errors.New("the filesystem was thawed before the copy finished")

// Frozen is a set of frozen filesystems.
type Frozen struct {
	points []string
	files  []*os.File
	guard  *exec.Cmd
	pipe   *os.File // the guard's stdin; closing it releases the guard
	start  time.Time

	mu      sync.Mutex
	thawed  bool   // by Thaw or the watchdog
	expired bool   // the watchdog fired, or something else thawed
	why     string // which
	done    bool   // Thaw was called
	err     error  // and what it returned
	expire  chan struct{}
	synced  []string // mount points that cannot freeze: synced only
	held    time.Duration
	timer   *time.Timer
}

// Freeze freezes the filesystems mounted at points, together, for at most
// limit. It first starts the guard (self, the running executable, with
// GuardCommand), so no filesystem is ever frozen without one. A
// filesystem that has no freeze is synced instead (see Synced). On error
// nothing is left frozen.
func Freeze(points []string, limit time.Duration) (*Frozen, error) {
	f := &Frozen{points: points, expire: make(chan struct{})}
	for _, p := range points {
		d, err := os.Open(p)
		if err != nil {
			f.closeFiles()
			return nil, fmt.Errorf("open %s to freeze it: %w", p, err)
		}
		f.files = append(f.files, d)
	}
	if err := f.startGuard(limit); err != nil {
		f.closeFiles()
		return nil, err
	}
	f.start = time.Now()
	var frozen []*os.File
	var frozenPoints []string
	for i, d := range f.files {
		err := ioctl(d, ioctlFreeze)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
			// The filesystem has no freeze (FUSE mounts such as ntfs-3g,
			// FAT on some kernels): write out what it holds and copy it
			// as it is. It is rarely written (an EFI partition, a
			// Windows volume seen from Linux); the image says so.
			if err := unix.Syncfs(int(d.Fd())); err != nil {
				f.thawList(frozen)
				f.release()
				return nil, fmt.Errorf("sync %s, which cannot be frozen: %w", points[i], err)
			}
			f.synced = append(f.synced, points[i])
			d.Close()
			continue
		}
		if err != nil {
			f.thawList(frozen)
			f.release()
			return nil, fmt.Errorf("freeze %s: %w", points[i], err)
		}
		frozen = append(frozen, d)
		frozenPoints = append(frozenPoints, points[i])
	}
	f.files, f.points = frozen, frozenPoints
	if len(frozen) == 0 {
		limit = 1<<63 - 1 // nothing held: no time limit to keep
	}
	f.timer = time.AfterFunc(limit, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.thawed && !f.expired {
			f.expired, f.why = true, "the time limit passed"
			f.thawLocked()
			close(f.expire)
		}
	})
	go f.watch()
	return f, nil
}

// watch notices, within a tenth of a second, a filesystem that something
// else thawed: freezing it again fails with EBUSY while it is still
// frozen, and succeeds (freezing it back, harmlessly: the copy is lost
// anyway) once it was thawed. The copy then stops at once.
func (f *Frozen) watch() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		f.mu.Lock()
		if f.thawed || f.expired {
			f.mu.Unlock()
			return
		}
		for i, d := range f.files {
			if err := ioctl(d, ioctlFreeze); err == nil {
				f.expired, f.why = true, fmt.Sprintf("%s was thawed by something else", f.points[i])
				f.thawLocked()
				close(f.expire)
				break
			}
		}
		f.mu.Unlock()
	}
}

// Expired is closed when the filesystems were thawed before the copy
// ended (the time limit passed, or something else thawed one): the copy
// should stop.
func (f *Frozen) Expired() <-chan struct{} { return f.expire }

// Start is when the freeze began.
func (f *Frozen) Start() time.Time { return f.start }

// Thaw thaws every filesystem and returns how long they were frozen; a
// second call does nothing but answer the same. It
// returns ErrThawedEarly (wrapped) if the watchdog or anything else thawed
// a filesystem first: the copy made while frozen is then not one instant.
func (f *Frozen) Thaw() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return f.held, f.err
	}
	f.done = true
	held := time.Since(f.start)
	f.held = held
	f.timer.Stop()
	if f.expired {
		f.release()
		f.err = fmt.Errorf("%w: %s", ErrThawedEarly, f.why)
		return held, f.err
	}
	var early []string
	for i, d := range f.files {
		// FITHAW on a filesystem that is not frozen fails with EINVAL:
		// someone thawed it during the copy.
		if err := ioctl(d, ioctlThaw); errors.Is(err, unix.EINVAL) {
			early = append(early, f.points[i])
		}
	}
	f.thawed = true
	f.release()
	if len(early) > 0 {
		f.err = fmt.Errorf("%w: %v was thawed by something else", ErrThawedEarly, early)
	}
	return held, f.err
}

func (f *Frozen) thawList(files []*os.File) {
	for _, d := range files {
		ioctl(d, ioctlThaw)
	}
}

// Frozen lists the mount points that are frozen; Synced those that could
// not be frozen and were only synced before the copy.
func (f *Frozen) Frozen() []string { return f.points }

// Synced lists the mount points that could not be frozen and were synced.
func (f *Frozen) Synced() []string { return f.synced }

func (f *Frozen) thawLocked() {
	for _, d := range f.files {
		ioctl(d, ioctlThaw)
	}
	f.thawed = true
}

// release lets the guard go (it thaws, finds nothing frozen, and exits)
// and closes the mount points.
func (f *Frozen) release() {
	if f.pipe != nil {
		f.pipe.Close()
		f.pipe = nil
	}
	if f.guard != nil {
		f.guard.Wait()
		f.guard = nil
	}
	f.closeFiles()
}

func (f *Frozen) closeFiles() {
	for _, d := range f.files {
		d.Close()
	}
	f.files = nil
}

// startGuard starts the guard process and waits until it is ready.
func (f *Frozen) startGuard(limit time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the platter executable for the thaw guard: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	args := append([]string{GuardCommand, strconv.FormatFloat(limit.Seconds(), 'f', 3, 64)}, f.points...)
	cmd := exec.Command(self, args...)
	cmd.Stdin = r
	cmd.Stdout = readyW
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C to Platter's group must not kill
	// the guard before it thaws.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		ready.Close()
		readyW.Close()
		return fmt.Errorf("start the thaw guard: %w", err)
	}
	r.Close()
	readyW.Close()
	defer ready.Close()
	var b [1]byte
	if _, err := io.ReadFull(ready, b[:]); err != nil {
		w.Close()
		cmd.Wait()
		return fmt.Errorf("the thaw guard did not start: %w", err)
	}
	f.guard, f.pipe = cmd, w
	return nil
}

// RunGuard is the guard process: it says it is ready on stdout, then waits
// until stdin closes (Platter thawed, or died) or the time limit (plus a
// second, so Platter's own watchdog acts first) passes, and thaws every
// mount point. Signals that would end it before that are ignored.
func RunGuard(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: %s SECONDS MOUNTPOINT [MOUNTPOINT ...]", GuardCommand)
	}
	secs, err := strconv.ParseFloat(args[0], 64)
	if err != nil {
		return fmt.Errorf("%s: bad time limit %q", GuardCommand, args[0])
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE)
	var files []*os.File
	for _, p := range args[1:] {
		d, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("%s: open %s: %w", GuardCommand, p, err)
		}
		files = append(files, d)
	}
	os.Stdout.Write([]byte{'.'})
	os.Stdout.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Duration(secs*float64(time.Second)) + time.Second):
	}
	for _, d := range files {
		ioctl(d, ioctlThaw) // EINVAL when not frozen: nothing to do
	}
	return nil
}

func ioctl(f *os.File, req uint) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Sync writes back what the filesystems mounted at points hold in memory
// (syncfs), so that a freeze that follows has little left to write.
func Sync(points []string) error {
	for _, p := range points {
		d, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("open %s to sync it: %w", p, err)
		}
		err = unix.Syncfs(int(d.Fd()))
		d.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
	}
	return nil
}
