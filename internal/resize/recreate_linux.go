//go:build linux

package resize

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// XFS cannot shrink, so `restore --layout fit --recreate-xfs` makes a new,
// smaller XFS in its place and copies every file into it: mkfs.xfs with
// the source's geometry, UUID and label, then rsync between the two
// mounted filesystems. The source is the image's XFS on the scratch
// overlay (a Window), mounted through a loop device; the new one is made
// on a loop device over the target's partition range.
//
// The source is mounted read-only but with its log recovered (the
// recovery writes go to the overlay, never to the image): `create` copies
// an XFS whose log holds changes whole, log and all, so the image holds
// those changes, and mounting with norecovery would leave them out of the
// copy.

// xfsMinSize is the smallest filesystem mkfs.xfs 6.1 makes: "Filesystem
// must be larger than 300MB" below 300 MiB (measured: 300 MiB is made,
// 299 MiB refused).
const xfsMinSize = 300 << 20

// xfsInfo is what `xfs_db -r -c info` says of an XFS, as mkfs.xfs
// prints it: "section.key" -> value ("data.bsize" -> "4096").
type xfsInfo map[string]string

var xfsInfoPair = regexp.MustCompile(`([a-z0-9-]+)=([^\s,]*)`)

func xfsReadInfo(ctx context.Context, path string) (xfsInfo, error) {
	out, err := tool(ctx, path, nil, "xfs_db", "-r", "-c", "info", path)
	if err != nil {
		return nil, err
	}
	info := parseXFSInfo(out)
	if info["data.bsize"] == "" || info["meta-data.isize"] == "" {
		return nil, &ToolError{Tool: "xfs_db", Args: []string{"-r", "-c", "info"}, Path: path, Err: errors.New("no block or inode size in its geometry"), Output: out}
	}
	return info, nil
}

// parseXFSInfo reads mkfs.xfs's geometry report: a section name before
// "=" starts a section ("log      =internal log  bsize=4096 ..."), a
// line indented to the "=" continues it.
func parseXFSInfo(out string) xfsInfo {
	info := xfsInfo{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		head, rest, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if h := strings.TrimSpace(head); h != "" {
			section = h
			// The section's own value: "internal log", "none".
			info[section] = strings.TrimSpace(strings.SplitN(rest, "  ", 2)[0])
		}
		for _, m := range xfsInfoPair.FindAllStringSubmatch(rest, -1) {
			info[section+"."+m[1]] = m[2]
		}
	}
	return info
}

func (x xfsInfo) int(key string) int64 {
	var n int64
	fmt.Sscan(x[key], &n)
	return n
}

// mkfsArgs are the mkfs.xfs options that make an XFS like the one x
// describes: its block, sector, inode and directory block sizes and its
// features. sector is the target's logical sector size, below which the
// new XFS's sectors cannot go.
func (x xfsInfo) mkfsArgs(sector int64) []string {
	sectsz := max(x.int("meta-data.sectsz"), sector)
	args := []string{"-b", "size=" + x["data.bsize"], "-s", fmt.Sprintf("size=%d", sectsz)}
	inode := []string{"size=" + x["meta-data.isize"]}
	for _, k := range []string{"sparse", "nrext64"} {
		if v := x["meta-data."+k]; v != "" {
			inode = append(inode, k+"="+v)
		}
	}
	crc := x["meta-data.crc"]
	if crc == "0" {
		// Version 4 only: version 5 has these always.
		inode = append(inode, "projid32bit="+x["meta-data.projid32bit"])
	}
	args = append(args, "-i", strings.Join(inode, ","))
	var meta []string
	for _, k := range []string{"crc", "finobt", "rmapbt", "reflink", "bigtime", "inobtcount"} {
		if v := x["meta-data."+k]; v != "" {
			meta = append(meta, k+"="+v)
		}
	}
	if len(meta) > 0 {
		args = append(args, "-m", strings.Join(meta, ","))
	}
	naming := []string{"size=" + x["naming.bsize"]}
	if crc == "0" {
		naming = append(naming, "ftype="+x["naming.ftype"])
	}
	if x["naming.ascii-ci"] == "1" {
		naming = append(naming, "ascii-ci=1")
	}
	args = append(args, "-n", strings.Join(naming, ","))
	if crc == "0" && x["log.lazy-count"] != "" {
		args = append(args, "-l", "lazy-count="+x["log.lazy-count"])
	}
	return args
}

// xfsRecreatable refuses an XFS that a copy of its files cannot make
// again: one with a log or a realtime section on another device.
func (x xfsInfo) recreatable() error {
	if l := x["log"]; !strings.HasPrefix(l, "internal") {
		return notSupported("xfs", true, "its log is on another device (%s): recreate it by hand", l)
	}
	if rt := x["realtime"]; rt != "" && rt != "none" {
		return notSupported("xfs", true, "it has a realtime section on another device (%s)", rt)
	}
	return nil
}

// xfsLabelUUID reads the label and UUID of the XFS at path.
func xfsLabelUUID(ctx context.Context, path string) (label, uuid string, err error) {
	out, err := tool(ctx, path, nil, "xfs_db", "-r", "-c", "label", "-c", "uuid", path)
	if err != nil {
		return "", "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "label = "); ok {
			label = strings.TrimSuffix(strings.TrimPrefix(v, `"`), `"`)
		}
		if v, ok := strings.CutPrefix(l, "UUID = "); ok {
			uuid = strings.TrimSpace(v)
		}
	}
	if uuid == "" {
		return "", "", &ToolError{Tool: "xfs_db", Args: []string{"-r", "-c", "label", "-c", "uuid"}, Path: path, Err: errors.New("no UUID"), Output: out}
	}
	return label, uuid, nil
}

// treeUsage is what copying a mounted filesystem's files writes: the
// blocks of every inode counted once (hard links once; extents shared by
// reflink once per file, as a copy unshares them) and its inodes.
type treeUsage struct {
	bytes  int64 // allocated bytes: data, directories, attribute forks
	inodes int64
}

func walkUsage(ctx context.Context, root string) (treeUsage, error) {
	var u treeUsage
	seen := map[uint64]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("resize: %w", &os.PathError{Op: "lstat", Path: p, Err: err})
		}
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		u.bytes += st.Blocks * 512
		u.inodes++
		return nil
	})
	return u, err
}

// xfsOverhead is the part of an XFS of size bytes that holds no files,
// as measured on empty filesystems made by mkfs.xfs 6.1 and mounted on
// Linux 6.18: the log (64 MiB up to about 128 GiB, a 2048th beyond),
// the reserve pool (32 MiB), and the per-AG reservations for the
// B-trees the features add (about 0.5 % with finobt, 1 % more with
// reflink, 2.5 % more with rmapbt; counted high here).
func xfsOverhead(x xfsInfo, size int64) int64 {
	frac := 0.01
	if x["meta-data.reflink"] == "1" {
		frac += 0.015
	}
	if x["meta-data.rmapbt"] == "1" {
		frac += 0.035
	}
	return max(64<<20, size/2048) + 32<<20 + int64(frac*float64(size))
}

// xfsCopyNeed is the smallest XFS the files of usage u fit in, with the
// geometry x: what they take, inode chunks rounded up per AG, plus the
// overhead of an XFS of that size.
func xfsCopyNeed(x xfsInfo, u treeUsage) int64 {
	isize, ags := max(x.int("meta-data.isize"), 256), max(x.int("meta-data.agcount"), 1)
	files := u.bytes + u.inodes*isize + ags*64*isize
	size := files
	for range 8 { // the overhead grows with the size; a few rounds settle it
		size = files + xfsOverhead(x, size)
	}
	return max(size, xfsMinSize)
}

// mountXFSSource mounts the image's XFS at path (a Window over the
// scratch overlay) read-only, its log recovered onto the overlay, and
// returns where and what ends it.
func mountXFSSource(ctx context.Context, path string) (string, func() error, error) {
	mnt, end, err := loopMount(path, "xfs", "nouuid", unix.MS_RDONLY)
	if err != nil {
		return "", nil, fmt.Errorf("resize: mount the image's XFS (its log recovered on the overlay): %w", err)
	}
	if err := ctx.Err(); err != nil {
		return "", nil, errors.Join(err, end())
	}
	return mnt, end, nil
}

// XFSCopyMin returns the smallest size RecreateXFS can make the XFS at
// path (a file or device, normally a Window over the scratch overlay) by
// copying its files: what its files, directories and inodes take (every
// inode counted once; extents shared by reflink once per file, which a
// copy unshares) plus what an empty XFS of that size takes, and never
// below the 300 MiB mkfs.xfs makes. It mounts the XFS read-only (its log
// recovered onto path) and writes nothing else.
func XFSCopyMin(ctx context.Context, path string) (int64, error) {
	x, err := xfsReadInfo(ctx, path)
	if err != nil {
		return 0, err
	}
	if err := x.recreatable(); err != nil {
		return 0, err
	}
	mnt, end, err := mountXFSSource(ctx, path)
	if err != nil {
		return 0, err
	}
	u, err := walkUsage(ctx, mnt)
	if eerr := end(); eerr != nil {
		err = errors.Join(err, eerr)
	}
	if err != nil {
		return 0, fmt.Errorf("resize: measure the files of the XFS in %s: %w", path, err)
	}
	return xfsCopyNeed(x, u), nil
}

// RecreateXFS makes a new XFS in bytes [off, off+size) of dst (a file or
// a block device whose logical sectors are sector bytes) with the
// geometry, features, UUID and label of the XFS at src, and copies every
// file of src into it: contents (sparse files stay sparse), hard links,
// symlinks, device nodes, FIFOs, sockets, numeric owners, modes, every
// extended attribute (user, trusted, security), POSIX ACLs, access and
// modification times, and of directories and regular files their inode
// flags and project IDs (and directories' extent size hints). What it
// cannot carry (change and birth times, inode numbers, files' extent
// size hints, reflink sharing, quota limits) is listed in
// docs/filesystems.md. Everything it mounts and
// attaches is unmounted and detached before it returns, also when ctx
// ends. The new XFS is checked with xfs_repair -n.
func RecreateXFS(ctx context.Context, src, dst string, off, size, sector int64) error {
	x, err := xfsReadInfo(ctx, src)
	if err != nil {
		return err
	}
	if err := x.recreatable(); err != nil {
		return err
	}
	label, uuid, err := xfsLabelUUID(ctx, src)
	if err != nil {
		return err
	}
	if size < xfsMinSize {
		return &TooSmallError{FS: "xfs", Path: dst, Need: xfsMinSize, Have: size}
	}
	loop, err := attachLoopRange(dst, off, size, sector)
	if err != nil {
		return err
	}
	detach := once(func() error { return detachLoop(loop) })
	defer detach()
	args := append([]string{"-q", "-f", "-K"}, x.mkfsArgs(sector)...)
	args = append(args, "-m", "uuid="+uuid)
	if label != "" {
		args = append(args, "-L", label)
	}
	args = append(args, loop)
	if _, err := tool(ctx, dst, nil, "mkfs.xfs", args...); err != nil {
		return err
	}
	from, endFrom, err := mountXFSSource(ctx, src)
	if err != nil {
		return err
	}
	endFrom = once(endFrom)
	defer endFrom()
	// nouuid: the source, mounted too, has the same UUID.
	to, endTo, err := loopMount(loop, "xfs", "nouuid", 0)
	if err != nil {
		return fmt.Errorf("resize: mount the new XFS: %w", err)
	}
	endTo = once(endTo)
	defer endTo()
	u, err := walkUsage(ctx, from)
	if err != nil {
		return fmt.Errorf("resize: measure the files of the image's XFS: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(to, &st); err != nil {
		return fmt.Errorf("resize: the new XFS: %w", err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < u.bytes {
		return &TooSmallError{FS: "xfs", Path: dst, Need: size + u.bytes - free, Have: size}
	}
	// rsync, not cp -a (whose --preserve=all does not fail when an
	// attribute cannot be copied) nor tar (which keeps no access times):
	// -a owners, modes, mtimes, symlinks, devices, FIFOs; -H hard links;
	// -A POSIX ACLs; -X every xattr namespace (root: trusted and security
	// too); -S holes; -U access times; --numeric-ids the image's owners,
	// not this machine's names for them. The trailing slashes copy the
	// root directory's own attributes.
	if _, err := tool(ctx, src, nil, "rsync", "-aHAXSU", "--numeric-ids", "--one-file-system", from+"/", to+"/"); err != nil {
		if errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "No space left") {
			return fmt.Errorf("resize: the new XFS of %d bytes ran out of space while its files were copied (extents shared by reflink are copied apart): %w", size, err)
		}
		return err
	}
	if err := copyInodes(ctx, from, to); err != nil {
		return err
	}
	if err := endTo(); err != nil {
		return err
	}
	if err := endFrom(); err != nil {
		return err
	}
	if _, err := tool(ctx, dst, nil, "xfs_repair", "-n", loop); err != nil {
		return fmt.Errorf("resize: the new XFS does not check clean: %w", err)
	}
	return detach()
}

// copyInodes gives every name below to what rsync does not carry of the
// same name below from: access and modification times to the
// nanosecond (rsync 3 keeps access times to the second; symlinks' own
// times are set too), and of directories and regular files their XFS
// inode flags (chattr's immutable, append-only, nodump, noatime, sync,
// and XFS's project inherit, nodefrag, filestream, DAX, nosymlinks), project
// ID and, for directories, extent size hint. Flags come after times:
// an immutable file's times cannot be set. The names come from walking
// from, which never descends through a symlink, and to is a copy of it,
// so no name below to passes through one.
func copyInodes(ctx context.Context, from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("resize: %w", &os.PathError{Op: "lstat", Path: p, Err: err})
		}
		dst := filepath.Join(to, rel)
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("resize: set the times of %s in the new XFS: %w", rel, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR:
			if err := copyFsxattr(p, dst, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
				return fmt.Errorf("resize: the inode flags of %s: %w", rel, err)
			}
		}
		return nil
	})
}

// fsxattr is the kernel's struct fsxattr (FS_IOC_FSGETXATTR).
type fsxattr struct {
	xflags, extsize, nextents, projid, cowextsize uint32
	_                                             [8]byte
}

const (
	fsIocFsgetxattr = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFssetxattr = 0x401c5820 // _IOW('X', 32, struct fsxattr)

	xflagExtsize      = 0x800
	xflagExtszinherit = 0x1000
	// xflagsCarried are the flags set again on the copy: immutable,
	// append, sync, noatime, nodump, projinherit, nosymlinks, nodefrag,
	// filestream, DAX. Not realtime (no realtime section), not the
	// extent size flags (below), not cowextsize.
	xflagsCarried = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000
)

func fsxattrIoctl(f *os.File, req uintptr, x *fsxattr) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(x))); e != 0 {
		return e
	}
	return nil
}

// copyFsxattr sets the flags, project ID and (for a directory) extent
// size hint of src on dst. A regular file's extent size hint is not
// carried: XFS refuses one on a file that has data.
func copyFsxattr(src, dst string, dir bool) error {
	open := func(p string) (*os.File, error) {
		return os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	sf, err := open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	var sx fsxattr
	if err := fsxattrIoctl(sf, fsIocFsgetxattr, &sx); err != nil {
		return fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	want := sx.xflags & xflagsCarried
	hint := dir && sx.xflags&xflagExtszinherit != 0
	if want == 0 && sx.projid == 0 && !hint {
		return nil
	}
	df, err := open(dst)
	if err != nil {
		return err
	}
	defer df.Close()
	var dx fsxattr
	if err := fsxattrIoctl(df, fsIocFsgetxattr, &dx); err != nil {
		return fmt.Errorf("FS_IOC_FSGETXATTR: %w", err)
	}
	dx.xflags = dx.xflags&^xflagsCarried | want
	dx.projid = sx.projid
	if hint {
		dx.xflags = dx.xflags&^(xflagExtsize|xflagExtszinherit) | xflagExtszinherit
		dx.extsize = sx.extsize
	}
	if err := fsxattrIoctl(df, fsIocFssetxattr, &dx); err != nil {
		return fmt.Errorf("FS_IOC_FSSETXATTR: %w", err)
	}
	return nil
}

// attachLoopRange is attachLoop over bytes [off, off+size) of path, with
// logical sectors of sector bytes (0: the kernel's 512).
func attachLoopRange(path string, off, size, sector int64) (string, error) {
	return attachLoopConfig(path, func(cfg *unix.LoopConfig) {
		cfg.Info.Offset, cfg.Info.Sizelimit = uint64(off), uint64(size)
		if sector > 512 {
			cfg.Size = uint32(sector)
		}
	})
}

// once makes end safe to call more than once (deferred, and early to see
// its error): a loop device detached twice may by then be another's.
func once(end func() error) func() error {
	var o sync.Once
	var err error
	return func() error {
		o.Do(func() { err = end() })
		return err
	}
}
