//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/platter-dev/platter/internal/fsread"
	"github.com/platter-dev/platter/internal/mount"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

func newMountCommand() *cobra.Command {
	var daemon, files bool
	var cache int
	cmd := &cobra.Command{
		Use:   "mount [--daemon] [--files] IMAGE[:N] DIR",
		Short: "Show an image's disk and partitions, or a partition's files, without restoring it",
		Long: `Mount shows the disk an image holds as read-only files in DIR (FUSE):
DIR/disk.img, the whole disk, and DIR/pN.img for each partition, readable by
any tool ("mount -o loop,ro DIR/p2.img /mnt/x" gives the filesystem).
With IMAGE:N, DIR shows only pN.img, partition N.
With --files, DIR shows the files of the filesystem in partition N
(` + readableList(", ") + `; without :N the first platter reads), read
in place: no root, no loop device, no kernel driver for the filesystem; an
entry the image cannot give is left out and named on stderr, the rest
shown, and the mount ends with exit code 3. --files also reads a bare
disk image (an .iso, a raw disk) in place. It
runs until unmounted (platter umount DIR) or interrupted; --daemon returns
once mounted and leaves it running.`,
		Example: `  platter mount --daemon disk.platter /mnt/img && mount -o loop,ro /mnt/img/p2.img /mnt/root
  platter mount --daemon --files disk.platter:3 /mnt/data   # NTFS or FAT files, no kernel driver
  platter mount --daemon --files debian.iso /mnt/iso        # an .iso's files, no root
  platter umount /mnt/img`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if daemon {
				return mountDaemon(args[0], args[1], cache, files)
			}
			if files {
				return runMountFiles(cmd, args[0], args[1])
			}
			return runMount(cmd, args[0], args[1], cache)
		},
	}
	cmd.Flags().BoolVar(&daemon, "daemon", false, "return once mounted, leaving the mount running")
	cmd.Flags().BoolVar(&files, "files", false, "show the files of partition N's filesystem instead of disk and partition images")
	cmd.Flags().IntVar(&cache, "cache", 32, "decoded chunks to keep in memory (8 MiB each by default)")
	addDiskFlag(cmd)
	return cmd
}

func newUmountCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "umount DIR",
		Short:   "End a platter mount",
		Example: "  platter umount /mnt/img",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mount.Unmount(args[0])
		},
	}
}

func runMount(cmd *cobra.Command, spec, dir string, cache int) error {
	// Started by --daemon, whose stderr goes away once it returns: a
	// warning written then must not kill the mount (SIGPIPE).
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	path, part := splitSpec(spec)
	if b, err := openBare(path); err != nil || b != nil {
		if b != nil {
			b.Close()
			return usagef("%s is a bare disk image, not a Platter image: its bytes are the file itself (mount -o loop,ro %s MOUNTPOINT); platter mount --files %s DIR shows its files without root", path, path, spec)
		}
		return err
	}
	files, r, err := openImage(path)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	disk := view.New(r, cache)
	defer disk.Close() // before the reader: readahead may be decoding
	logf := func(format string, args ...any) { warn(format, args...) }
	made := r.Metadata().Created
	// IMAGE:N shows partition N alone; IMAGE the disk and every partition.
	var fl []mount.File
	if part == 0 {
		fl = append(fl, mount.File{Name: "disk.img", Dev: disk, Log: logf, ModTime: made})
	}
	var have []string
	for _, p := range view.Partitions(r, disk) {
		have = append(have, strconv.Itoa(p.Index))
		if part == 0 || p.Index == part {
			fl = append(fl, mount.File{Name: fmt.Sprintf("p%d.img", p.Index), Dev: &p.Section, Log: logf, ModTime: made})
		}
	}
	if len(fl) == 0 {
		return usagef("%s has no partition %d (it has: %s)", path, part, strings.Join(have, ", "))
	}
	abs, _ := filepath.Abs(path)
	srv, err := mount.Mount(dir, fl, abs)
	if err != nil {
		return err
	}
	var names []string
	for _, f := range fl {
		names = append(names, f.Name)
	}
	hint := ""
	if part != 0 {
		hint = "; --files shows its files"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "mounted %s at %s: %s (platter umount %s to end%s)\n", spec, dir, strings.Join(names, ", "), dir, hint)
	serveMount(cmd, srv)
	return nil
}

// runMountFiles mounts the files of IMAGE[:N]'s filesystem at dir.
func runMountFiles(cmd *cobra.Command, spec, dir string) error {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) // as runMount
	return withFS(spec, func(fsys fsread.FS, label string) error {
		srv, err := mount.MountFiles(dir, fsys, label, func(format string, args ...any) { warn(format, args...) })
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "mounted the files of %s at %s (platter umount %s to end)\n", label, dir, dir)
		serveMount(cmd, srv)
		return nil
	})
}

// serveMount runs a mounted FUSE server until it is unmounted or the
// command is interrupted.
func serveMount(cmd *cobra.Command, srv *fuse.Server) {
	go func() {
		<-cmd.Context().Done()
		srv.Unmount()
	}()
	srv.Wait()
}

// mountDaemon runs the mount in a child of its own session and returns
// once DIR shows it (or the child fails, with its message).
func mountDaemon(path, dir string, cache int, files bool) error {
	// Refused here, before the child: a busy DIR would look mounted.
	if err := mount.CheckMountPoint(dir); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"mount", fmt.Sprintf("--cache=%d", cache), fmt.Sprintf("--files=%v", files)}
	for _, d := range searchDirs {
		args = append(args, "--search", d)
	}
	if s3Endpoint != "" {
		args = append(args, "--s3-endpoint", s3Endpoint)
	}
	if diskFlag != 0 {
		args = append(args, fmt.Sprintf("--disk=%d", diskFlag))
	}
	imgPath, _ := splitSpec(path)
	secrets, extra, err := childSecrets(imgPath) // asks here, on the terminal
	if err != nil {
		return err
	}
	c := exec.Command(self, append(append(args, secrets...), path, dir)...)
	c.ExtraFiles = extra
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stderr strings.Builder
	c.Stderr = &stderr
	err = c.Start()
	for _, f := range extra {
		f.Close() // the child has its own
	}
	if err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		if mount.IsMountPoint(dir) {
			fmt.Printf("mounted %s at %s (process %d; platter umount %s to end)\n", path, dir, c.Process.Pid, dir)
			return nil
		}
		select {
		case err := <-exited:
			// The child said why; say it as ours, with its exit code.
			msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "platter: "))
			if msg == "" {
				msg = fmt.Sprintf("the mount of %s at %s ended at once (%v)", path, dir, err)
			}
			return &childError{code: c.ProcessState.ExitCode(), msg: msg}
		case <-deadline:
			return fmt.Errorf("mount: %s did not appear at %s within 30s", path, dir)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
