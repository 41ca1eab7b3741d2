// Package imgcache keeps the Platter images converted from other tools'
// images (a Clonezilla directory, a Macrium file) so that opening the
// same foreign image again is opening a Platter image: indexed, random
// access, no decode. A compressed partclone stream can only be decoded
// front to back, so without a cache every command pays the whole
// conversion again.
//
// An entry is keyed by exactly what it was made from (Key: each source
// file's path, size, times, device and inode), so a changed, replaced or
// added file is another key and a stale entry is never found; it ages out
// of the cache by least-recent use. The cache lives in the user's cache
// directory, not beside the image: image directories are often on
// read-only or shared media.
//
// Every name in the cache directory is reached through the directory's
// own descriptor (openat, renameat, unlinkat) and opened with
// O_NOFOLLOW: a symlink planted in the cache is never followed, and the
// directory itself must be a real directory owned by the user and
// closed to others. An entry is written as a temporary file (O_EXCL,
// 0600, locked while it is written) and renamed into place only when
// complete, so two processes converting the same image each write their
// own and the last rename wins; a reader that opened the earlier one
// keeps it. Nothing here judges an entry's contents: the caller opens it
// as an image (image.Open checks it) and removes it if it is damaged.
package imgcache

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLimit is the cache's size when $PLATTER_CACHE_MAX does not say.
const DefaultLimit int64 = 20 << 30

// ErrDisabled says the cache is turned off (a limit of 0).
var ErrDisabled = errors.New("imgcache: the cache is disabled")

// ErrNoRoom says an entry would not fit: in the cache's limit, or on its
// filesystem.
var ErrNoRoom = errors.New("imgcache: no room")

// ErrUnsafe is a cache directory or entry that is not safe to use: a
// symlink, not a directory or regular file, someone else's, or open to
// others.
var ErrUnsafe = errors.New("imgcache: unsafe")

const (
	suffix    = ".platter"
	tmpPrefix = ".tmp-"
	// reserve is the free space an entry must leave on the cache's
	// filesystem: the cache is a convenience and must not fill a disk.
	reserve = 1 << 30
)

// Dir is the cache directory: $PLATTER_CACHE, else
// $XDG_CACHE_HOME/platter/converted, else ~/.cache/platter/converted.
func Dir() (string, error) {
	if d := os.Getenv("PLATTER_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "platter", "converted"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("imgcache: no cache directory: set PLATTER_CACHE (%w)", err)
	}
	return filepath.Join(home, ".cache", "platter", "converted"), nil
}

// Limit is the cache's size limit: $PLATTER_CACHE_MAX (bytes, or a
// number with K, M, G or T), else DefaultLimit. 0 disables the cache.
func Limit() (int64, error) {
	s := strings.TrimSpace(os.Getenv("PLATTER_CACHE_MAX"))
	if s == "" {
		return DefaultLimit, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("PLATTER_CACHE_MAX: %w", err)
	}
	return n, nil
}

// ParseSize reads a size: bytes, or a number with K, M, G or T (powers of
// 1024; an optional B or iB after it).
func ParseSize(s string) (int64, error) {
	num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	shift := 0
	for i, u := range []string{"K", "M", "G", "T"} {
		if strings.HasSuffix(num, u) {
			shift, num = 10*(i+1), strings.TrimSuffix(num, u)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is not a size (like 20G, 500M or 0)", s)
	}
	return n << shift, nil
}

// Key is the cache key of what was made from the files at paths (in any
// order) by the maker named by kind (what made it and how: a program's
// version, its settings). It hashes each file's absolute path, type,
// size, modification and change times (ns), device and inode, so a file
// changed (even with its time put back), replaced or added gives another
// key. A symlink is taken as itself, never followed.
func Key(kind string, paths []string) (string, error) {
	lines := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("imgcache: %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(abs, &st); err != nil {
			return "", fmt.Errorf("imgcache: %s: %w", abs, &os.PathError{Op: "lstat", Path: abs, Err: err})
		}
		lines = append(lines, fmt.Sprintf("%q %o %d %d.%09d %d.%09d %d %d", abs, st.Mode&unix.S_IFMT, st.Size,
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Dev, st.Ino))
	}
	sort.Strings(lines)
	h := sha256.New()
	fmt.Fprintf(h, "platter imgcache 1\n%q\n", kind)
	for _, l := range lines {
		io.WriteString(h, l+"\n")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// validKey says whether key is one Key makes: it names a file in the
// cache directory, so nothing else may.
func validKey(key string) bool {
	if len(key) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil && strings.ToLower(key) == key
}

// Cache is a directory of cached Platter images.
type Cache struct {
	dir   *os.File
	path  string
	limit int64
}

// Open opens the cache directory at path, creating it (and its parents)
// mode 0700, for a cache of at most limit bytes. It refuses a directory
// that is a symlink, is not the user's, or that others may write to, and
// a limit of 0 (ErrDisabled).
func Open(path string, limit int64) (*Cache, error) {
	if limit <= 0 {
		return nil, ErrDisabled
	}
	path = filepath.Clean(path)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("imgcache: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%w: cache directory %s is a symlink or not a directory", ErrUnsafe, path)
		}
		return nil, fmt.Errorf("imgcache: open %s: %w", path, err)
	}
	dir := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		dir.Close()
		return nil, fmt.Errorf("imgcache: %s: %w", path, err)
	}
	switch {
	case int(st.Uid) != os.Geteuid():
		dir.Close()
		return nil, fmt.Errorf("%w: cache directory %s belongs to user %d, not to this user (%d)", ErrUnsafe, path, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		dir.Close()
		return nil, fmt.Errorf("%w: cache directory %s may be written by others (mode %04o; chmod 700 it)", ErrUnsafe, path, st.Mode&0o7777)
	}
	return &Cache{dir: dir, path: path, limit: limit}, nil
}

// Close closes the cache directory.
func (c *Cache) Close() error { return c.dir.Close() }

// Path is the cache directory.
func (c *Cache) Path() string { return c.path }

// EntryPath is where the entry of key is (for messages).
func (c *Cache) EntryPath(key string) string { return filepath.Join(c.path, key+suffix) }

func (c *Cache) fd() int { return int(c.dir.Fd()) }

// Get opens the entry of key read-only and marks it used (its
// modification time is the last use), or says there is none. An entry
// that is a symlink, not a regular file, someone else's or open to
// others is removed and is not one.
func (c *Cache) Get(key string) (*os.File, bool) {
	if !validKey(key) {
		return nil, false
	}
	name := key + suffix
	fd, err := unix.Openat(c.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			unix.Unlinkat(c.fd(), name, 0) // a symlink, or worse
		}
		return nil, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		unix.Close(fd)
		unix.Unlinkat(c.fd(), name, 0)
		return nil, false
	}
	now := unix.NsecToTimeval(time.Now().UnixNano())
	unix.Futimes(fd, []unix.Timeval{now, now})
	return os.NewFile(uintptr(fd), c.EntryPath(key)), true
}

// Remove removes the entry of key (a damaged one).
func (c *Cache) Remove(key string) error {
	if !validKey(key) {
		return fmt.Errorf("imgcache: %q is not a key", key)
	}
	if err := unix.Unlinkat(c.fd(), key+suffix, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("imgcache: remove %s: %w", c.EntryPath(key), err)
	}
	return nil
}

// Put starts the entry of key, for an image of at most need bytes: a
// temporary file in the cache, renamed to the entry's name by Commit. It
// fails with ErrNoRoom when need exceeds the cache's limit or would
// leave less than 1 GiB free on the cache's filesystem.
func (c *Cache) Put(key string, need int64) (*Entry, error) {
	if !validKey(key) {
		return nil, fmt.Errorf("imgcache: %q is not a key", key)
	}
	if need > c.limit {
		return nil, fmt.Errorf("%w: an image of up to %d bytes is over the cache's limit of %d bytes (PLATTER_CACHE_MAX)", ErrNoRoom, need, c.limit)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(c.fd(), &fs); err != nil {
		return nil, fmt.Errorf("imgcache: statfs %s: %w", c.path, err)
	}
	if free := int64(fs.Bavail) * int64(fs.Bsize); free < need+reserve {
		return nil, fmt.Errorf("%w: an image of up to %d bytes does not fit in the %d bytes free in %s (with 1 GiB to spare)", ErrNoRoom, need, free, c.path)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := tmpPrefix + key + "-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(c.fd(), tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("imgcache: create %s: %w", filepath.Join(c.path, tmp), err)
	}
	// Held until the entry is committed or aborted: a prune removes
	// only temporary files whose writer is gone.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		unix.Unlinkat(c.fd(), tmp, 0)
		return nil, fmt.Errorf("imgcache: lock %s: %w", filepath.Join(c.path, tmp), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(c.path, tmp))
	return &Entry{c: c, key: key, tmp: tmp, f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

// Entry is an entry being written: a backup.Sink. Until Commit it is a
// temporary file no Get finds; Abort removes it, and is a no-op after
// Commit.
type Entry struct {
	c    *Cache
	key  string
	tmp  string
	f    *os.File
	w    *bufio.Writer
	size int64
	done bool
}

func (e *Entry) Write(b []byte) (int, error) {
	if e.done {
		return 0, os.ErrClosed
	}
	n, err := e.w.Write(b)
	e.size += int64(n)
	return n, err
}

// Commit syncs the entry, gives it the key's name (replacing an entry of
// the same key that another process committed meanwhile), and then
// removes least-recently-used entries until the cache is within its
// limit, this one spared. The entry's file stays open: File reads it.
func (e *Entry) Commit() error {
	if e.done {
		return errors.New("imgcache: entry already committed or aborted")
	}
	if err := e.w.Flush(); err != nil {
		e.Abort()
		return fmt.Errorf("imgcache: write %s: %w", e.f.Name(), err)
	}
	if err := e.f.Sync(); err != nil {
		e.Abort()
		return fmt.Errorf("imgcache: sync %s: %w", e.f.Name(), err)
	}
	if err := unix.Renameat(e.c.fd(), e.tmp, e.c.fd(), e.key+suffix); err != nil {
		e.Abort()
		return fmt.Errorf("imgcache: rename %s: %w", e.f.Name(), err)
	}
	e.done = true
	unix.Flock(int(e.f.Fd()), unix.LOCK_UN)
	e.c.dir.Sync()
	e.c.Prune(e.key)
	return nil
}

// Abort removes the entry being written. It is safe to call after
// Commit, which it leaves alone.
func (e *Entry) Abort() {
	if e.done {
		return
	}
	e.done = true
	unix.Unlinkat(e.c.fd(), e.tmp, 0)
	e.f.Close()
}

// File is the entry's file, for reading it once committed; the caller
// closes it.
func (e *Entry) File() *os.File { return e.f }

// Size is the bytes written.
func (e *Entry) Size() int64 { return e.size }

// Path is the entry's path once committed.
func (e *Entry) Path() string { return e.c.EntryPath(e.key) }

type entry struct {
	name string
	size int64
	used int64 // ns
}

// Prune removes least-recently-used entries until the cache is within
// its limit, never the entry of keep; and temporary files whose writer
// is gone (killed). It returns the bytes in use after.
func (c *Cache) Prune(keep string) (int64, error) {
	if _, err := c.dir.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("imgcache: %s: %w", c.path, err)
	}
	names, err := c.dir.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("imgcache: list %s: %w", c.path, err)
	}
	var ents []entry
	var total int64
	for _, n := range names {
		if strings.HasPrefix(n, tmpPrefix) {
			c.removeStale(n)
			continue
		}
		key, ok := strings.CutSuffix(n, suffix)
		if !ok || !validKey(key) {
			continue // not ours: left alone
		}
		var st unix.Stat_t
		if err := unix.Fstatat(c.fd(), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Unlinkat(c.fd(), n, 0)
			continue
		}
		total += st.Size
		if key != keep {
			ents = append(ents, entry{n, st.Size, st.Mtim.Nano()})
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].used < ents[j].used })
	for _, e := range ents {
		if total <= c.limit {
			break
		}
		if err := unix.Unlinkat(c.fd(), e.name, 0); err == nil || errors.Is(err, unix.ENOENT) {
			total -= e.size
		}
	}
	return total, nil
}

// removeStale removes the temporary file name if no writer holds its
// lock.
func (c *Cache) removeStale(name string) {
	fd, err := unix.Openat(c.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			unix.Unlinkat(c.fd(), name, 0)
		}
		return
	}
	defer unix.Close(fd)
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
		unix.Unlinkat(c.fd(), name, 0)
	}
}

// Clear removes every entry and every temporary file whose writer is
// gone, and returns the bytes freed.
func (c *Cache) Clear() (int64, error) {
	saved := c.limit
	c.limit = 0
	defer func() { c.limit = saved }()
	before, err := c.Usage()
	if err != nil {
		return 0, err
	}
	after, err := c.Prune("")
	return before - after, err
}

// Usage is the bytes of the cache's entries.
func (c *Cache) Usage() (int64, error) {
	if _, err := c.dir.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("imgcache: %s: %w", c.path, err)
	}
	names, err := c.dir.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("imgcache: list %s: %w", c.path, err)
	}
	var total int64
	for _, n := range names {
		if key, ok := strings.CutSuffix(n, suffix); ok && validKey(key) {
			var st unix.Stat_t
			if unix.Fstatat(c.fd(), n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
				total += st.Size
			}
		}
	}
	return total, nil
}
