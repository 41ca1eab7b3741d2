//go:build linux

package resize

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// attachLoop makes a loop device over the file at path (read-write) and
// returns its name; detachLoop detaches it. (Not autoclear: that
// detaches it when this function closes its descriptor.)
func attachLoop(path string) (string, error) {
	return attachLoopConfig(path, nil)
}

// attachLoopConfig is attachLoop with set, if not nil, changing the
// device's configuration first (an offset, a size limit, a block size).
func attachLoopConfig(path string, set func(*unix.LoopConfig)) (string, error) {
	back, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("resize: loop device over %s: %w", path, err)
	}
	defer back.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("resize: loop device over %s: %w", path, err)
	}
	defer ctl.Close()
	// Another process may take the free device first: try again.
	for try := 0; ; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("resize: loop device over %s: no free loop device: %w", path, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("resize: loop device over %s: %w", path, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], path)
		if set != nil {
			set(&cfg)
		}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		lf.Close()
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, unix.EBUSY) || try == 20 {
			return "", fmt.Errorf("resize: configure %s over %s: %w", dev, path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detachLoop detaches loop device dev, retrying while it is busy.
// Already detached is not an error.
func detachLoop(dev string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("resize: detach %s: %w", dev, err)
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		f.Close()
		switch {
		case err == nil, errors.Is(err, unix.ENXIO): // ENXIO: not attached
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(50 * time.Millisecond)
		case errors.Is(err, unix.EBUSY):
			// Still open (a mount that could only be detached
			// lazily): autoclear detaches it when the last user
			// closes it.
			return setAutoclear(dev)
		default:
			return fmt.Errorf("resize: detach %s: %w", dev, err)
		}
	}
}

// setAutoclear makes loop device dev detach itself at its last close.
func setAutoclear(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("resize: detach %s: %w", dev, err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err == nil {
		info.Flags |= unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopSetStatus64(int(f.Fd()), info)
	}
	if err != nil {
		return fmt.Errorf("resize: %s is busy, and cannot be set to detach itself: %w", dev, err)
	}
	return nil
}

// loopsOf lists the loop devices whose backing file is path.
func loopsOf(path string) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == path {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

// mountsOf lists the mount points of device dev, deepest last.
func mountsOf(dev string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - TYPE SOURCE SUPEROPTS
		l := sc.Text()
		pre, post, ok := strings.Cut(l, " - ")
		fl, pl := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fl) < 5 || len(pl) < 2 || pl[1] != dev {
			continue
		}
		out = append(out, unescapeMount(fl[4]))
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// detachLoopsOf unmounts every filesystem mounted from a loop device
// over path and detaches those devices: what a resize left if it was
// stopped half way.
func detachLoopsOf(path string) error {
	var errs []error
	for _, dev := range loopsOf(path) {
		mnts := mountsOf(dev)
		for i := len(mnts) - 1; i >= 0; i-- {
			if err := unmountRetry(mnts[i], 5*time.Second); err != nil {
				if lerr := unix.Unmount(mnts[i], unix.MNT_DETACH); lerr != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := detachLoop(dev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loopMount mounts the filesystem (fstype) in the file or device at
// path on a fresh private directory, through a loop device when path is
// a file, and returns the directory and what ends it all: unmount
// (retrying while busy, lazily at last), detach, remove the directory.
// The end does not depend on any context: it runs also after a
// cancellation.
func loopMount(path, fstype, opts string, flags uintptr) (string, func() error, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("resize: %w", err)
	}
	dev, loop := path, ""
	if st.Mode().IsRegular() {
		if loop, err = attachLoop(path); err != nil {
			return "", nil, err
		}
		dev = loop
	}
	dir, err := os.MkdirTemp("", "platter-resize-mnt-")
	if err != nil {
		if loop != "" {
			detachLoop(loop)
		}
		return "", nil, fmt.Errorf("resize: %w", err)
	}
	end := func() error {
		var errs []error
		if err := unmountRetry(dir, 10*time.Second); err != nil {
			if lerr := unix.Unmount(dir, unix.MNT_DETACH); lerr != nil {
				errs = append(errs, err)
			}
		}
		if loop != "" {
			if err := detachLoop(loop); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(dir); err != nil {
			errs = append(errs, fmt.Errorf("resize: %w", err))
		}
		return errors.Join(errs...)
	}
	if err := unix.Mount(dev, dir, fstype, flags, opts); err != nil {
		end()
		return "", nil, fmt.Errorf("resize: mount the %s in %s (%s) on %s: %w", fstype, path, dev, dir, err)
	}
	return dir, end, nil
}
