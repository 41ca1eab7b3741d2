package main

import (
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/fsread"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls IMAGE[:N] [PATH]",
		Short: "List files in an image, without restoring or mounting it",
		Long: `Ls lists a directory (or describes a file) of the filesystem in partition N
of IMAGE (ext2/3/4, FAT12/16/32, NTFS); without :N, the first partition
with a filesystem platter can read. Needs no root and no mount.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			return withFS(args[0], func(fsys fsread.FS, label string) error {
				e, err := fsys.Stat(p)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", label, p, err)
				}
				out := cmd.OutOrStdout()
				if !e.Mode.IsDir() {
					printEntry(out, e)
					return nil
				}
				ents, err := fsys.ReadDir(p)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", label, p, err)
				}
				for _, e := range ents {
					printEntry(out, e)
				}
				return nil
			})
		},
	}
}

func printEntry(w io.Writer, e fsread.Entry) {
	name := e.Name
	if e.Target != "" {
		name += " -> " + e.Target
	}
	fmt.Fprintf(w, "%s %10d %s %s\n", lsMode(e.Mode), e.Size, e.ModTime.Local().Format("2006-01-02 15:04"), name)
}

// lsMode writes a mode as ls -l does ("lrwxrwxrwx", "-rwsr-xr-x"), not
// as io/fs does ("Lrwxrwxrwx", "u-rwxr-xr-x").
func lsMode(m iofs.FileMode) string {
	b := []byte("-rwxrwxrwx")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&iofs.ModeSymlink != 0:
		b[0] = 'l'
	case m&iofs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&iofs.ModeDevice != 0:
		b[0] = 'b'
	case m&iofs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&iofs.ModeSocket != 0:
		b[0] = 's'
	}
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(bit iofs.FileMode, at int, c byte) {
		if m&bit != 0 {
			if b[at] == '-' {
				c -= 'a' - 'A' // set without execute: upper case
			}
			b[at] = c
		}
	}
	special(iofs.ModeSetuid, 3, 's')
	special(iofs.ModeSetgid, 6, 's')
	special(iofs.ModeSticky, 9, 't')
	return string(b)
}

// keptMode is what extract gives a file: permissions and the setuid,
// setgid and sticky bits.
func keptMode(m iofs.FileMode) iofs.FileMode {
	return m & (iofs.ModePerm | iofs.ModeSetuid | iofs.ModeSetgid | iofs.ModeSticky)
}

func newExtractCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "extract IMAGE[:N] PATH DEST",
		Short: "Copy files or directories out of an image",
		Long: `Extract copies PATH (a file, or a directory with everything below it) out
of the filesystem in partition N of IMAGE to DEST, keeping modes, times and
symlinks where the filesystem has them. As cp -r: if DEST is a directory,
PATH is copied into it. Every chunk read is verified.`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dest := args[1], args[2]
			return withFS(args[0], func(fsys fsread.FS, label string) error {
				e, err := fsys.Stat(src)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", label, src, err)
				}
				if st, err := os.Stat(dest); err == nil && st.IsDir() {
					name := path.Base(path.Clean("/" + src))
					if name == "/" {
						name = ""
					}
					dest = filepath.Join(dest, name)
				}
				var files, bytes int64
				if err := extract(fsys, src, e, dest, &files, &bytes); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "extracted %d files (%s) from %s to %s\n", files, ui.Bytes(bytes), label, dest)
				return nil
			})
		},
	}
}

// extract copies entry e (at src) to dest, recursively.
func extract(fsys fsread.FS, src string, e fsread.Entry, dest string, files, bytes *int64) error {
	switch {
	case e.Mode.IsDir():
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return err
		}
		ents, err := fsys.ReadDir(src)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		for _, c := range ents {
			if err := extract(fsys, path.Join(src, c.Name), c, filepath.Join(dest, c.Name), files, bytes); err != nil {
				return err
			}
		}
	case e.Mode&iofs.ModeSymlink != 0:
		os.Remove(dest)
		if err := os.Symlink(e.Target, dest); err != nil {
			return err
		}
	case e.Mode.IsRegular():
		r, err := fsys.Open(src)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		defer r.Close()
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(f, io.LimitReader(r, e.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != e.Size {
			err = fmt.Errorf("%s: %d bytes read of %d", src, n, e.Size)
		}
		if err != nil {
			os.Remove(dest)
			return fmt.Errorf("%s: %w", src, err)
		}
		*files, *bytes = *files+1, *bytes+n
	default:
		return nil // devices, fifos: not copied
	}
	// Owner, then mode (chown clears setuid and setgid), then times,
	// once a directory's children are written.
	if e.Owner && os.Geteuid() == 0 {
		// As tar does for root: the files keep their owners.
		if err := os.Lchown(dest, int(e.Uid), int(e.Gid)); err != nil {
			return fmt.Errorf("%s: %w", dest, err)
		}
	}
	if e.Mode&iofs.ModeSymlink == 0 {
		os.Chmod(dest, keptMode(e.Mode))
	}
	if !e.ModTime.IsZero() {
		// A symlink's own time, not its target's.
		ts := []unix.Timespec{unix.NsecToTimespec(time.Now().UnixNano()), unix.NsecToTimespec(e.ModTime.UnixNano())}
		unix.UtimesNanoAt(unix.AT_FDCWD, dest, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// withFS opens IMAGE[:N]'s filesystem and calls fn with it and a label
// naming it.
func withFS(spec string, fn func(fsread.FS, string) error) error {
	imgPath, part := spec, 0
	if i := strings.LastIndex(spec, ":"); i > 0 {
		if n, err := strconv.Atoi(spec[i+1:]); err == nil && n > 0 {
			if _, err := os.Stat(spec); err != nil {
				imgPath, part = spec[:i], n
			}
		}
	}
	files, r, err := openImage(imgPath)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	disk := view.New(r, 32)
	defer disk.Close() // before the reader: readahead may be decoding
	readable := func(fs string) bool {
		return strings.HasPrefix(fs, "ext") || strings.HasPrefix(fs, "fat") || fs == "ntfs"
	}
	var have []string
	for _, p := range view.Partitions(r, disk) {
		have = append(have, fmt.Sprintf("%d (%s)", p.Index, p.Filesystem))
		if part != 0 && p.Index != part || part == 0 && !readable(p.Filesystem) {
			continue
		}
		if !readable(p.Filesystem) {
			return usagef("partition %d of %s holds %s: platter reads files of ext2/3/4, FAT and NTFS", p.Index, imgPath, p.Filesystem)
		}
		fsys, err := fsread.Open(&p.Section, p.Len, p.Filesystem)
		if err != nil {
			return fmt.Errorf("%s, partition %d: %w", imgPath, p.Index, err)
		}
		return fn(fsys, fmt.Sprintf("%s:%d", imgPath, p.Index))
	}
	if part != 0 {
		return usagef("%s has no partition %d (it has: %s)", imgPath, part, strings.Join(have, ", "))
	}
	return usagef("%s has no partition with a filesystem platter reads files of (it has: %s)", imgPath, strings.Join(have, ", "))
}
