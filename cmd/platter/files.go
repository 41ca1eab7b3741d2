package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/platter-dev/platter/internal/fs/luks"
	"github.com/platter-dev/platter/internal/fs/lvm"
	"github.com/platter-dev/platter/internal/fs/swap"
	"github.com/platter-dev/platter/internal/fsread"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

type lsOptions struct {
	long, recursive, json bool
}

func newLsCommand() *cobra.Command {
	var opts lsOptions
	cmd := &cobra.Command{
		Use:   "ls [-l] [-R] [--json] IMAGE[:N] [PATH]",
		Short: "List files in an image, without restoring or mounting it",
		Long: `Ls lists a directory (or describes a file) of the filesystem in partition N
of IMAGE (` + readableList(", ") + `); without :N, the first partition
with a filesystem platter can read. IMAGE may be a bare disk image too (an
.iso, a raw disk), read in place: an .iso's files with its Rock Ridge or
Joliet names (a UDF bridge disc's with its UDF names), a hybrid ISO's
partition N by :N. Needs no root and no mount. Names are sorted byte by
byte (as LC_ALL=C ls sorts them); -l adds the mode, owner (ext, UDF and
Rock Ridge: uid and gid as numbers; "-" where the filesystem has none),
size and modification time; -R lists every directory below PATH too.
An entry the image cannot give (a damaged inode or entry, a name that is
not a plain name) is left out and named on stderr, the rest listed, and
the exit code is 3.`,
		Example: `  platter ls disk.platter:2 /home/ann
  platter ls -l disk.platter:2 /etc/ssh
  platter ls debian.iso /install.amd          # an .iso, in place, no root
  platter ls -R --json disk.platter:1 / > efi-files.json`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			return withFS(args[0], func(fsys fsread.FS, label string) error {
				return runLs(cmd, opts, fsys, label, p)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&opts.long, "long", "l", false, "long listing: mode, owner, size, time")
	f.BoolVarP(&opts.recursive, "recursive", "R", false, "list the directories below too")
	f.BoolVar(&opts.json, "json", false, "print the entries as a JSON array (with their paths)")
	addDiskFlag(cmd)
	return cmd
}

// lsEntry is an entry for ls --json.
type lsEntry struct {
	Path    string    `json:"path"`
	Name    string    `json:"name"`
	Type    string    `json:"type"` // file, dir, symlink, device, fifo, socket
	Mode    string    `json:"mode"` // as ls -l shows it
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	UID     *uint32   `json:"uid,omitempty"`
	GID     *uint32   `json:"gid,omitempty"`
	Target  string    `json:"target,omitempty"`
}

func runLs(cmd *cobra.Command, opts lsOptions, fsys fsread.FS, label, p string) error {
	out := cmd.OutOrStdout()
	e, err := fsys.Stat(p)
	if err != nil {
		return pathError(label, p, err)
	}
	var all []lsEntry
	emit := func(dir string, e fsread.Entry) {
		if opts.json {
			all = append(all, jsonEntry(dir, e))
		} else {
			printEntry(out, e, opts.long)
		}
	}
	if !e.Mode.IsDir() {
		emit(path.Dir(path.Clean("/"+p)), e)
	} else {
		var list func(dir string, header bool) error
		list = func(dir string, header bool) error {
			ents, err := fsys.ReadDir(dir)
			if err != nil {
				return pathError(label, dir, err)
			}
			slices.SortFunc(ents, func(a, b fsread.Entry) int { return strings.Compare(a.Name, b.Name) })
			if header && !opts.json {
				fmt.Fprintf(out, "\n%s:\n", dir)
			}
			for _, c := range ents {
				emit(dir, c)
			}
			if opts.recursive {
				for _, c := range ents {
					if c.Mode.IsDir() {
						if err := list(path.Join(dir, c.Name), true); err != nil {
							return err
						}
					}
				}
			}
			return nil
		}
		dir := path.Clean("/" + p)
		if opts.recursive && !opts.json {
			fmt.Fprintf(out, "%s:\n", dir)
		}
		if err := list(dir, false); err != nil {
			return err
		}
	}
	if opts.json {
		if all == nil {
			all = []lsEntry{}
		}
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", b)
	}
	return nil
}

func jsonEntry(dir string, e fsread.Entry) lsEntry {
	j := lsEntry{Path: path.Join(dir, e.Name), Name: e.Name, Type: entryType(e.Mode), Mode: lsMode(e.Mode), Size: e.Size, ModTime: e.ModTime, Target: e.Target}
	if e.Owner {
		uid, gid := e.Uid, e.Gid
		j.UID, j.GID = &uid, &gid
	}
	return j
}

func entryType(m iofs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&iofs.ModeSymlink != 0:
		return "symlink"
	case m&iofs.ModeNamedPipe != 0:
		return "fifo"
	case m&iofs.ModeSocket != 0:
		return "socket"
	case m&iofs.ModeDevice != 0:
		return "device"
	}
	return "file"
}

func printEntry(w io.Writer, e fsread.Entry, long bool) {
	if !long {
		fmt.Fprintln(w, e.Name)
		return
	}
	name := e.Name
	if e.Target != "" {
		name += " -> " + e.Target
	}
	owner := "-     -    "
	if e.Owner {
		owner = fmt.Sprintf("%-5d %-5d", e.Uid, e.Gid)
	}
	fmt.Fprintf(w, "%s %s %10d %s %s\n", lsMode(e.Mode), owner, e.Size, e.ModTime.Local().Format("2006-01-02 15:04"), name)
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

func newExtractCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "extract IMAGE[:N] PATH DEST",
		Short: "Copy files or directories out of an image",
		Long: `Extract copies PATH (a file, or a directory with everything below it) out
of the filesystem in partition N of IMAGE to DEST, keeping modes, times and
symlinks where the filesystem has them. As cp -r: if DEST is a directory,
PATH is copied into it. Every chunk read is verified.

Nothing is written outside DEST: names from the image that are not plain
names (with "/", "\" or NUL, ".", "..") are skipped, and no symlink already
in DEST is followed. DEST itself must not be a symlink, unless named as
DEST/. to extract into the directory it points to. An entry the image cannot
give is skipped and named, the rest extracted, and the exit code is 3.`,
		Example: `  platter extract set/wed.platter:2 /home/ann/thesis.tex ~/recovered/
  platter extract disk.platter:1 / ./efi-partition/     # a whole partition's files
  platter extract debian.iso /install.amd ./netboot/    # out of an .iso
  platter extract disk.platter:3 "/Users/Ann/My Documents" /srv/restore/.`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dest := args[1], args[2]
			dir, name, exact, err := extractTarget(src, dest)
			if err != nil {
				return err
			}
			return withFSSkips(args[0], func(fsys fsread.FS, label string, s *skips) error {
				e, err := fsys.Stat(src)
				if err != nil {
					return pathError(label, src, err)
				}
				if e.Mode.IsDir() && name != "" {
					// As cp -r: DEST, named, is not replaced by a directory.
					if fi, err := os.Lstat(filepath.Join(dir, name)); err == nil && !fi.IsDir() {
						return usagef("%s exists and is not a directory", filepath.Join(dir, name))
					}
					if err := os.MkdirAll(dir, 0o755); err != nil {
						return err
					}
				}
				x := fsread.Extractor{Skipped: s.note, Owners: os.Geteuid() == 0, DirNoFollow: exact}
				n, err := x.Extract(cmd.Context(), fsys, src, dir, name)
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("extracted %d files (%s) from %s to %s", n.Files, ui.Bytes(n.Bytes), label, filepath.Join(dir, name))
				if s.n > 0 {
					msg += fmt.Sprintf("; %s skipped", entries(s.n))
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			})
		},
	}
	addDiskFlag(cmd)
	return cmd
}

// extractTarget applies cp -r's rule to DEST: an existing directory
// receives PATH under its own name ("" for the root: its entries go
// into DEST); anything else is the name PATH is given. DEST must not be
// a symlink, which extract would follow out of where the user looked,
// unless named DEST/. to mean the directory it points to. exact says
// dir is DEST itself, to be opened without following a symlink swapped
// in after this check.
func extractTarget(src, dest string) (dir, name string, exact bool, err error) {
	follow := dest == "." || strings.HasSuffix(dest, "/.")
	if fi, err := os.Lstat(strings.TrimRight(dest, "/")); err == nil && fi.Mode()&os.ModeSymlink != 0 && !follow {
		return "", "", false, usagef("%s is a symlink: extract writes only into a real directory (name it %s/. to extract into the directory it points to)", dest, strings.TrimRight(dest, "/"))
	}
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		name := path.Base(path.Clean("/" + src))
		if name == "/" {
			name = ""
		}
		if d := strings.TrimRight(dest, "/"); d != "" && !follow {
			dest = d // a trailing slash would make the open follow a link
		}
		return dest, name, !follow, nil
	}
	if follow {
		return "", "", false, usagef("%s is not a directory", dest)
	}
	dest = strings.TrimRight(dest, "/")
	return filepath.Dir(dest), filepath.Base(dest), false, nil
}

// skips counts the entries of an image's filesystem left out (by its
// reader or by extract) and names each on stderr as it goes.
type skips struct {
	label string
	n     int
}

func (s *skips) note(e *fsread.SkipError) {
	s.n++
	warn("%s: %v", s.label, e)
}

// skippedError ends a command that left entries out; each was named.
type skippedError struct {
	label string
	n     int
}

func (e *skippedError) Error() string {
	return fmt.Sprintf("%s: %s skipped (named above): the filesystem is damaged or hostile", e.label, entries(e.n))
}

func entries(n int) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}

// withFS opens IMAGE[:N]'s filesystem and calls fn with it and a label
// naming it. Each entry its directories leave out is named on stderr; if
// any was, withFS ends with a *skippedError once fn is done.
func withFS(spec string, fn func(fsread.FS, string) error) error {
	return withFSSkips(spec, func(fsys fsread.FS, label string, _ *skips) error { return fn(fsys, label) })
}

// withFSSkips is withFS for a command that skips entries of its own,
// counted with the reader's.
func withFSSkips(spec string, fn func(fsread.FS, string, *skips) error) error {
	imgPath, part := splitSpec(spec)
	var parts []diskPart
	bare, err := openBare(imgPath)
	if err != nil {
		return err
	}
	if bare != nil {
		defer bare.Close()
		parts = bare.parts
		for _, n := range bare.notes {
			warn("%s: %s", imgPath, n)
		}
	} else {
		files, r, err := openImage(imgPath)
		if err != nil {
			return err
		}
		defer files.Close()
		defer r.Close()
		disk := view.New(r, 32)
		defer disk.Close() // before the reader: readahead may be decoding
		areas := map[int]image.Area{}
		for _, a := range r.Metadata().Areas {
			if a.Kind == image.KindPartition {
				areas[a.Index] = a
			}
		}
		for _, p := range view.Partitions(r, disk) {
			a := areas[p.Index]
			a.Filesystem = p.Filesystem
			parts = append(parts, diskPart{Area: a, R: &p.Section})
		}
	}
	var have []string
	var other, swapped *image.Area // a partition holding something, or swap, for the hint
	for _, p := range parts {
		have = append(have, partName(p))
		switch a := p.Area; {
		case a.Filesystem == "raw":
		case isSwap(a.Filesystem):
			swapped = cmp.Or(swapped, &a)
		default:
			other = cmp.Or(other, &a)
		}
		if part != 0 && p.Index != part || part == 0 && !fsread.Readable(p.Filesystem) {
			continue
		}
		if !fsread.Readable(p.Filesystem) {
			return usagef("partition %d of %s holds %s: %s", p.Index, imgPath, p.Filesystem, noFiles(imgPath, p.Area))
		}
		label := fmt.Sprintf("%s:%d", imgPath, p.Index)
		if p.Index == 0 {
			label = imgPath
		}
		s := &skips{label: label}
		fsys, err := fsread.Opener{Skipped: s.note}.Open(p.R, p.Size, p.Filesystem)
		if err != nil {
			if p.Index == 0 {
				return fmt.Errorf("%s: %w", imgPath, err)
			}
			return fmt.Errorf("%s, partition %d: %w", imgPath, p.Index, err)
		}
		if err := fn(fsys, s.label, s); err != nil {
			return err
		}
		if s.n > 0 {
			return &skippedError{label: s.label, n: s.n}
		}
		return nil
	}
	if part != 0 {
		return usagef("%s has no partition %d (it has: %s)", imgPath, part, strings.Join(have, ", "))
	}
	other = cmp.Or(other, swapped)
	hint := kernelReads(imgPath, "N")
	switch {
	case other == nil:
	case isContainer(other.Filesystem) || isSwap(other.Filesystem):
		hint = fmt.Sprintf("partition %d holds %s: %s", other.Index, other.Filesystem, noFiles(imgPath, *other))
	default:
		hint = noFiles(imgPath, *other)
	}
	return usagef("%s has no partition with a filesystem platter reads files of (it has: %s): %s", imgPath, strings.Join(have, ", "), hint)
}

// kernelReads says which filesystems platter reads files of, and how the
// kernel reads the others (XFS, btrfs, F2FS) from an image: through
// platter mount and a loop mount of the partition's file.
func kernelReads(imgPath, part string) string {
	return fmt.Sprintf("platter reads files of %s; for the others the kernel does: "+
		"platter mount %s DIR, then mount -o ro,loop DIR/p%s.img MOUNTPOINT", readableList(" and "), imgPath, part)
}

func isSwap(fs string) bool { return slices.Contains(swap.FS.Names, fs) }

func isContainer(fs string) bool {
	return slices.Contains(lvm.Container.Names, fs) || slices.Contains(luks.Container.Names, fs)
}

// noFiles says why partition a of the image holds no files platter
// reads, and how to reach them when it holds some: a loop mount of the
// partition's file serves a filesystem, not swap or a container (an
// LVM PV's volumes are the host's LVM's to show, a LUKS volume is
// cryptsetup's to open). It follows "holds FS: ".
func noFiles(imgPath string, a image.Area) string {
	dev := fmt.Sprintf("platter mount %s DIR, then", imgPath)
	file := fmt.Sprintf("DIR/p%d.img", a.Index)
	switch {
	case isSwap(a.Filesystem):
		return "a swap area holds no files"
	case slices.Contains(luks.Container.Names, a.Filesystem):
		inside := "what it holds"
		if len(a.Volumes) > 0 && a.Volumes[0].Filesystem != "raw" {
			inside = "the " + shown(a.Volumes[0].Filesystem) + " inside"
		}
		return fmt.Sprintf("an encrypted volume: %s cryptsetup open --readonly %s NAME (with its key) gives %s as /dev/mapper/NAME",
			dev, file, inside)
	case slices.Contains(lvm.Container.Names, a.Filesystem):
		// lvm's Detail is "VG NAME, SIZE extents" for a PV whose VG it
		// read, "no volume group ..." for an unused PV, and empty when
		// the VG's metadata is kept on its other PVs.
		vg, _, ok := strings.Cut(strings.TrimPrefix(a.Detail, "VG "), ",")
		switch {
		case strings.HasPrefix(a.Detail, "no volume group"):
			return "an LVM physical volume in no volume group: it holds no files"
		case !ok || !strings.HasPrefix(a.Detail, "VG "):
			return fmt.Sprintf("an LVM physical volume, not a filesystem: %s losetup -r -f --show %s and vgchange -ay (with the volume group's other PVs) give /dev/VG/LV", dev, file)
		}
		vg = shown(vg)
		var lvs []string
		for _, v := range a.Volumes {
			if !strings.Contains(v.Name, "/") { // not a volume inside an LV
				lvs = append(lvs, fmt.Sprintf("%s (%s)", shown(v.Name), shown(v.Filesystem)))
			}
		}
		if len(lvs) == 0 {
			return fmt.Sprintf("LVM volume group %s with no logical volume on this physical volume: it holds no files", vg)
		}
		return fmt.Sprintf("LVM volume group %s (logical volumes %s), not a filesystem: %s losetup -r -f --show %s and vgchange -ay %s give /dev/%s/LV",
			vg, strings.Join(lvs, ", "), dev, file, vg, vg)
	}
	return kernelReads(imgPath, strconv.Itoa(a.Index))
}

// shown is a name from an image as a message may print it: quoted when
// it holds anything but printable characters.
func shown(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// readableList names the filesystems platter reads files of, from the
// registry (fsread.Titles), with last before the last one: ", " or
// " and ".
func readableList(last string) string {
	t := fsread.Titles()
	if len(t) < 2 {
		return strings.Join(t, "")
	}
	return strings.Join(t[:len(t)-1], ", ") + last + t[len(t)-1]
}

// pathError says what went wrong with path p of filesystem label, in
// words: "no such file or directory" rather than Go's "file does not
// exist".
func pathError(label, p string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("%s: %s: no such file or directory", label, p)
	}
	return fmt.Errorf("%s: %s: %w", label, p, err)
}
