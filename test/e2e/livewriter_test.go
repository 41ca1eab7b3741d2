package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A live writer and its verifier judge an image of a busy, mounted
// filesystem: it must be that filesystem at one instant, the freeze. The
// writer logs every change it makes, one syscall per entry with the time
// around it; the verifier replays the log up to the freeze and compares
// every file of the restored tree byte for byte. e2fsck cannot do this: a
// copy torn by the writer checks clean once the journal is replayed.

type liveKind uint8

const (
	liveCreate    liveKind = iota // open(O_CREAT|O_EXCL|O_WRONLY): a new, empty file
	liveWrite                     // pwrite anywhere; past the end leaves a hole
	liveOverwrite                 // pwrite inside the file
	liveAppend                    // write on an O_APPEND descriptor; Off is the size before
	liveTruncate                  // ftruncate to Size
	liveRename                    // rename Name over Target
	liveUnlink                    // unlink Name
	liveFsync                     // fsync Name
	liveSyncfs                    // syncfs of the writer's filesystem
	liveSync                      // sync
)

var liveKindNames = [...]string{"create", "write", "overwrite", "append", "truncate", "rename", "unlink", "fsync", "syncfs", "sync"}

func (k liveKind) String() string {
	if int(k) < len(liveKindNames) {
		return liveKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// liveOp is one syscall of a live writer, in the order it made them.
type liveOp struct {
	N          int // index in the log
	Kind       liveKind
	Name       string    // the file, relative to the writer's directory
	Target     string    // rename: the name replaced
	Off, Len   int64     // writes: bytes [Off, Off+Len)
	Size       int64     // truncate: the new size
	Seed       int64     // writes hold liveData(Seed, N, Len)
	Start, End time.Time // just before and just after the syscall
}

func (op liveOp) changes() bool { return op.Kind < liveFsync }

// liveData returns the n bytes that op number op of a writer seeded with
// seed writes, so that the log need not hold them: incompressible bytes,
// zeros, runs of one byte, or text that names the op.
func liveData(seed int64, op int, n int64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], uint64(seed))
	binary.LittleEndian.PutUint64(key[8:], uint64(op))
	src := rand.NewChaCha8(key)
	rng := rand.New(src)
	b := make([]byte, n)
	switch rng.IntN(8) {
	case 0, 1, 2:
		src.Read(b)
	case 3:
		// Zeros: an imager may store them as holes.
	case 4, 5:
		for i := int64(0); i < n; {
			r := min(n-i, 1+rng.Int64N(4096))
			c := byte(rng.Uint32())
			for j := i; j < i+r; j++ {
				b[j] = c
			}
			i += r
		}
	default:
		line := fmt.Appendf(nil, "live writer seed %d op %d\n", seed, op)
		for i := 0; i < len(b); i += copy(b[i:], line) {
		}
	}
	return b
}

// The writer's files: two large ones written at random, and small ones
// that come and go within a budget that fits a 256 MiB filesystem.
const (
	liveMaxFiles = 48
	liveMaxFile  = 2 << 20
	liveMaxSmall = 32 << 20
)

var liveBig = []struct {
	name string
	size int64
}{{"big0", 64 << 20}, {"big1", 16 << 20}}

type liveWriter struct {
	t     *testing.T
	dir   string
	dirfd int
	seed  int64
	rate  float64 // bytes per second
	rng   *rand.Rand

	files      map[string]*liveFile
	small      []string // the small files, to pick from
	smallBytes int64
	names      int   // for new names
	written    int64 // bytes, for pacing
	ops        []liveOp
	err        error

	stop     atomic.Bool
	done     chan struct{}
	stopOnce sync.Once
}

type liveFile struct {
	fd, afd int // afd is O_APPEND, opened by the first append; -1 before
	size    int64
	big     bool
}

// startLiveWriter writes into dir, a directory on a mounted filesystem,
// at about bytesPerSec until Stop: a random mix of creates, writes,
// appends, overwrites, truncates, atomic replaces, unlinks, fsyncs and
// syncs, one syscall at a time, each logged. It first creates and fills
// the large files (logged too, not paced) before it returns.
func startLiveWriter(t *testing.T, dir string, bytesPerSec int64, seed int64) *liveWriter {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	w := &liveWriter{
		t:     t,
		dir:   dir,
		dirfd: fd,
		seed:  seed,
		rate:  float64(bytesPerSec),
		rng:   rand.New(rand.NewPCG(uint64(seed), 0x11fe)),
		files: map[string]*liveFile{},
		done:  make(chan struct{}),
	}
	for _, b := range liveBig {
		w.create(b.name, true)
		for off := int64(0); off < b.size; off += 1 << 20 {
			w.write(liveWrite, b.name, off, 1<<20)
		}
	}
	if w.err != nil {
		w.closeAll()
		t.Fatalf("live writer in %s: %v", dir, w.err)
	}
	go w.run()
	// Stop before the filesystem is unmounted (cleanups run last first).
	t.Cleanup(func() { w.Stop() })
	return w
}

// Stop stops the writer after its current syscall (which waits while
// the filesystem is frozen) and returns its log. A failed syscall fails
// the test. Stop may be called more than once.
func (w *liveWriter) Stop() []liveOp {
	w.stopOnce.Do(func() {
		w.stop.Store(true)
		<-w.done
		if w.err != nil {
			w.t.Errorf("live writer in %s: %v", w.dir, w.err)
		}
	})
	return w.ops
}

func (w *liveWriter) run() {
	defer close(w.done)
	defer w.closeAll()
	next := time.Now()
	for !w.stop.Load() && w.err == nil {
		before := w.written
		w.step()
		now := time.Now()
		// A writer held up by a freeze does not make up for it in a burst.
		if floor := now.Add(-100 * time.Millisecond); next.Before(floor) {
			next = floor
		}
		next = next.Add(time.Duration(float64(w.written-before) / w.rate * float64(time.Second)))
		if d := next.Sub(now); d > 0 {
			time.Sleep(d)
		}
	}
}

func (w *liveWriter) closeAll() {
	for _, f := range w.files {
		f.close()
	}
	syscall.Close(w.dirfd)
}

func (f *liveFile) close() {
	syscall.Close(f.fd)
	if f.afd >= 0 {
		syscall.Close(f.afd)
	}
}

// step does one operation of the mix: one syscall, or a few for a new
// file or an atomic replace.
func (w *liveWriter) step() {
	if len(w.small) > 0 && (w.smallBytes > liveMaxSmall || len(w.small) >= liveMaxFiles) {
		w.unlink(w.pick())
		return
	}
	r := w.rng.IntN(100)
	if len(w.small) == 0 && r >= 35 && r < 93 {
		r = 35 // everything below needs a small file: make one
	}
	switch {
	case r < 35:
		b := liveBig[0]
		if w.rng.IntN(4) == 0 {
			b = liveBig[1]
		}
		n := w.length()
		off := w.rng.Int64N(b.size - n + 1)
		if w.rng.IntN(2) == 0 {
			off &^= 4095
		}
		w.write(liveWrite, b.name, off, n)
	case r < 45:
		name := w.newName("")
		if w.create(name, false) {
			w.fill(name)
		}
	case r < 55:
		name := w.pick()
		off := min(w.rng.Int64N(w.files[name].size+64<<10+1), liveMaxFile-1)
		if w.rng.IntN(2) == 0 {
			off &^= 4095
		}
		w.write(liveWrite, name, off, min(w.length(), liveMaxFile-off))
	case r < 65:
		name := w.pick()
		size := w.files[name].size
		if size == 0 {
			w.write(liveAppend, name, 0, w.length())
			return
		}
		off := w.rng.Int64N(size)
		w.write(liveOverwrite, name, off, min(w.length(), size-off))
	case r < 75:
		name := w.pick()
		if n := min(w.length(), liveMaxFile-w.files[name].size); n > 0 {
			w.write(liveAppend, name, 0, n)
		} else {
			w.truncate(name, w.rng.Int64N(liveMaxFile))
		}
	case r < 82:
		name := w.pick()
		size := w.files[name].size
		if w.rng.IntN(2) == 0 && size < liveMaxFile {
			w.truncate(name, min(size+1+w.rng.Int64N(256<<10), liveMaxFile))
		} else {
			w.truncate(name, w.rng.Int64N(size+1))
		}
	case r < 87:
		w.replace(w.pick())
	case r < 93:
		w.unlink(w.pick())
	case r < 98:
		name := liveBig[w.rng.IntN(len(liveBig))].name
		if w.rng.IntN(2) == 0 && len(w.small) > 0 {
			name = w.pick()
		}
		fd := w.files[name].fd
		w.do(liveOp{Kind: liveFsync, Name: name}, func() error { return syscall.Fsync(fd) })
	case w.rng.IntN(4) == 0:
		w.do(liveOp{Kind: liveSync}, func() error { syscall.Sync(); return nil })
	default:
		w.do(liveOp{Kind: liveSyncfs}, func() error { return unix.Syncfs(w.dirfd) })
	}
}

// length is a write's size: 4 KiB to 1 MiB, log-uniform, half of them
// unaligned, and now and then a few bytes.
func (w *liveWriter) length() int64 {
	if w.rng.IntN(10) == 0 {
		return 1 + w.rng.Int64N(512)
	}
	n := int64(4096 * math.Pow(256, w.rng.Float64()))
	if w.rng.IntN(2) == 0 {
		n = max(n&^4095, 4096)
	}
	return n
}

func (w *liveWriter) newName(suffix string) string {
	w.names++
	return fmt.Sprintf("f%05d%s", w.names, suffix)
}

func (w *liveWriter) pick() string { return w.small[w.rng.IntN(len(w.small))] }

func (w *liveWriter) path(name string) string { return filepath.Join(w.dir, name) }

// do makes one syscall and logs it with the time just around it.
func (w *liveWriter) do(op liveOp, call func() error) bool {
	if w.err != nil {
		return false
	}
	op.N = len(w.ops)
	op.Seed = w.seed
	op.Start = time.Now()
	err := call()
	op.End = time.Now()
	if err != nil {
		w.err = fmt.Errorf("op %d: %s %s: %w", op.N, op.Kind, op.Name, err)
		return false
	}
	w.ops = append(w.ops, op)
	return true
}

// create makes an empty file; a small one is listed for picking unless it
// is a replacement's temporary file.
func (w *liveWriter) create(name string, big bool) bool {
	var fd int
	ok := w.do(liveOp{Kind: liveCreate, Name: name}, func() (err error) {
		fd, err = syscall.Open(w.path(name), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		return err
	})
	if ok {
		w.files[name] = &liveFile{fd: fd, afd: -1, big: big}
		if !big && !strings.HasSuffix(name, ".tmp") {
			w.small = append(w.small, name)
		}
	}
	return ok
}

// fill gives a new file its first bytes, one to three writes.
func (w *liveWriter) fill(name string) {
	for range 1 + w.rng.IntN(3) {
		w.write(liveWrite, name, w.files[name].size, w.length())
	}
}

func (w *liveWriter) write(kind liveKind, name string, off, n int64) {
	f := w.files[name]
	if kind == liveAppend {
		off = f.size
		if f.afd < 0 {
			// Opening an existing file changes nothing: not logged.
			afd, err := syscall.Open(w.path(name), syscall.O_WRONLY|syscall.O_APPEND|syscall.O_CLOEXEC, 0)
			if err != nil {
				w.err = fmt.Errorf("open %s to append: %w", name, err)
				return
			}
			f.afd = afd
		}
	}
	data := liveData(w.seed, len(w.ops), n)
	ok := w.do(liveOp{Kind: kind, Name: name, Off: off, Len: n}, func() error {
		var m int
		var err error
		if kind == liveAppend {
			m, err = syscall.Write(f.afd, data)
		} else {
			m, err = syscall.Pwrite(f.fd, data, off)
		}
		if err == nil && m != len(data) {
			err = fmt.Errorf("wrote %d of %d bytes at %d", m, len(data), off)
		}
		return err
	})
	if ok {
		w.written += n
		w.resized(f, max(f.size, off+n))
	}
}

func (w *liveWriter) resized(f *liveFile, size int64) {
	if !f.big {
		w.smallBytes += size - f.size
	}
	f.size = size
}

func (w *liveWriter) truncate(name string, size int64) {
	f := w.files[name]
	if w.do(liveOp{Kind: liveTruncate, Name: name, Size: size}, func() error { return syscall.Ftruncate(f.fd, size) }) {
		w.resized(f, size)
	}
}

func (w *liveWriter) unlink(name string) {
	if w.do(liveOp{Kind: liveUnlink, Name: name}, func() error { return syscall.Unlink(w.path(name)) }) {
		w.forget(name)
	}
}

func (w *liveWriter) forget(name string) {
	f := w.files[name]
	f.close()
	w.resized(f, 0)
	delete(w.files, name)
	if i := slices.Index(w.small, name); i >= 0 {
		w.small[i] = w.small[len(w.small)-1]
		w.small = w.small[:len(w.small)-1]
	}
}

// replace replaces target atomically, as editors and databases do: write
// a temporary file, fsync it, rename it over target.
func (w *liveWriter) replace(target string) {
	tmp := w.newName(".tmp")
	if !w.create(tmp, false) {
		return
	}
	w.fill(tmp)
	f := w.files[tmp]
	w.do(liveOp{Kind: liveFsync, Name: tmp}, func() error { return syscall.Fsync(f.fd) })
	if w.do(liveOp{Kind: liveRename, Name: tmp, Target: target}, func() error { return syscall.Rename(w.path(tmp), w.path(target)) }) {
		w.forget(target)
		w.files[target] = f
		delete(w.files, tmp)
		w.small = append(w.small, target)
	}
}

// liveWindow splits a log at a freeze: ops[:lo] ended before it began,
// ops[hi:] started after the thaw, and ops[lo:hi] may or may not be in a
// copy made in between. The writer makes one syscall at a time, so the
// log is ordered in time.
func liveWindow(ops []liveOp, freezeStart, thawEnd time.Time) (lo, hi int) {
	for lo < len(ops) && ops[lo].End.Before(freezeStart) {
		lo++
	}
	hi = lo
	for hi < len(ops) && !ops[hi].Start.After(thawEnd) {
		hi++
	}
	return lo, hi
}

// liveTree is the writer's directory as its log says it is.
type liveTree map[string]*liveModelFile

type liveModelFile struct {
	data []byte
	ops  []int // the ops that changed it (across renames), in order
}

// apply applies op and returns the names whose contents it changed.
func (m liveTree) apply(op liveOp) []string {
	switch op.Kind {
	case liveCreate:
		m[op.Name] = &liveModelFile{ops: []int{op.N}}
	case liveWrite, liveOverwrite, liveAppend:
		f := m[op.Name]
		if f == nil {
			return nil
		}
		f.resize(max(int64(len(f.data)), op.Off+op.Len))
		copy(f.data[op.Off:], liveData(op.Seed, op.N, op.Len))
		f.ops = append(f.ops, op.N)
	case liveTruncate:
		f := m[op.Name]
		if f == nil {
			return nil
		}
		f.resize(op.Size)
		f.ops = append(f.ops, op.N)
	case liveRename:
		f := m[op.Name]
		if f == nil {
			return nil
		}
		f.ops = append(f.ops, op.N)
		m[op.Target] = f
		delete(m, op.Name)
		return []string{op.Name, op.Target}
	case liveUnlink:
		delete(m, op.Name)
	default:
		return nil
	}
	return []string{op.Name}
}

func (f *liveModelFile) resize(n int64) {
	old := int64(len(f.data))
	if n <= old {
		f.data = f.data[:n]
		return
	}
	// Bytes past a shrink may still sit in the capacity: clear them.
	f.data = slices.Grow(f.data, int(n-old))[:n]
	clear(f.data[old:])
}

// readLiveTree reads every file under root; anything but regular files
// is a problem.
func readLiveTree(root string) (map[string][]byte, []string) {
	got := map[string][]byte{}
	var problems []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case rel == ".":
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = b
		case d.IsDir():
			problems = append(problems, rel+": unexpected directory")
			return fs.SkipDir
		default:
			problems = append(problems, fmt.Sprintf("%s: unexpected %v", rel, d.Type()))
		}
		return nil
	})
	if err != nil {
		problems = append(problems, fmt.Sprintf("read the restored tree: %v", err))
	}
	return got, problems
}

// diffAtFreeze compares the tree at root with every state the writer's
// directory may have had during [freezeStart, thawEnd]: all of ops that
// ended before freezeStart, none that started after thawEnd, and any
// prefix of those in between. It returns nothing if one state matches,
// and otherwise how the closest one differs.
func diffAtFreeze(root string, ops []liveOp, freezeStart, thawEnd time.Time) []string {
	_, diffs := matchAtFreeze(root, ops, freezeStart, thawEnd)
	return diffs
}

// matchAtFreeze is diffAtFreeze that also says which state matched: the
// one after ops[:k].
func matchAtFreeze(root string, ops []liveOp, freezeStart, thawEnd time.Time) (k int, diffs []string) {
	got, problems := readLiveTree(root)
	if problems != nil {
		return -1, problems
	}
	lo, hi := liveWindow(ops, freezeStart, thawEnd)
	m := liveTree{}
	for _, op := range ops[:lo] {
		m.apply(op)
	}
	bad := map[string]bool{}
	check := func(name string) {
		f, want := m[name]
		b, have := got[name]
		if want != have || want && !bytes.Equal(f.data, b) {
			bad[name] = true
		} else {
			delete(bad, name)
		}
	}
	for name := range m {
		check(name)
	}
	for name := range got {
		check(name)
	}
	best, fewest := lo, math.MaxInt
	for k := lo; ; k++ {
		if len(bad) == 0 {
			return k, nil
		}
		if len(bad) < fewest {
			best, fewest = k, len(bad)
		}
		if k == hi {
			break
		}
		for _, name := range m.apply(ops[k]) {
			check(name)
		}
	}

	m = liveTree{}
	for _, op := range ops[:best] {
		m.apply(op)
	}
	at := func(n int) string {
		op := ops[n]
		s := fmt.Sprintf("#%d %s", n, op.Kind)
		switch op.Kind {
		case liveWrite, liveOverwrite, liveAppend:
			s += fmt.Sprintf(" %d+%d", op.Off, op.Len)
		case liveTruncate:
			s += fmt.Sprintf(" to %d", op.Size)
		case liveRename:
			s += fmt.Sprintf(" %s over %s", op.Name, op.Target)
		}
		return s + fmt.Sprintf(" [%v, %v]", op.Start.Sub(freezeStart).Round(time.Microsecond), op.End.Sub(freezeStart).Round(time.Microsecond))
	}
	// The log's last op on a name, for files the closest state lacks.
	lastOn := func(name string) string {
		for n := len(ops) - 1; n >= 0; n-- {
			if ops[n].changes() && (ops[n].Name == name || ops[n].Target == name) {
				return at(n)
			}
		}
		return "none"
	}
	var names []string
	for name := range m {
		names = append(names, name)
	}
	for name := range got {
		if m[name] == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := []string{fmt.Sprintf("no state at the freeze matches %s: ops #0-#%d ended before it, #%d-#%d overlap it, %d follow; closest: through #%d, where these differ (times from freezeStart):",
		root, lo-1, lo, hi-1, len(ops)-hi, best-1)}
	const most = 10
	shown := 0
	for _, name := range names {
		f := m[name]
		b, have := got[name]
		var line string
		switch {
		case f == nil:
			line = fmt.Sprintf("%s: unexpected, %d bytes; the log's last op on it: %s", name, len(b), lastOn(name))
		case !have:
			line = fmt.Sprintf("%s: missing, want %d bytes; last op on it: %s", name, len(f.data), at(f.ops[len(f.ops)-1]))
		case bytes.Equal(f.data, b):
			continue
		default:
			d := 0
			for d < len(b) && d < len(f.data) && b[d] == f.data[d] {
				d++
			}
			line = fmt.Sprintf("%s: want %d bytes, got %d, first difference at byte %d; last op on it: %s; last to set that byte: %s",
				name, len(f.data), len(b), d, at(f.ops[len(f.ops)-1]), f.setter(ops, int64(d), at))
		}
		if shown++; shown <= most {
			out = append(out, "  "+line)
		}
	}
	if shown > most {
		out = append(out, fmt.Sprintf("  and %d more", shown-most))
	}
	return -1, out
}

// setter names the last op that wrote byte off of f, or cut the file
// below it.
func (f *liveModelFile) setter(ops []liveOp, off int64, at func(int) string) string {
	for _, n := range slices.Backward(f.ops) {
		op := ops[n]
		switch {
		case op.Kind == liveCreate:
			return at(n)
		case op.Kind == liveTruncate && op.Size <= off:
			return at(n)
		case op.Kind != liveTruncate && op.Kind != liveRename && op.Off <= off && off < op.Off+op.Len:
			return at(n)
		}
	}
	return "none"
}

// verifyAtFreeze fails the test unless the tree at root (the writer's
// directory in a restored filesystem) is the writer's directory at some
// instant between freezeStart and thawEnd.
func verifyAtFreeze(t *testing.T, root string, ops []liveOp, freezeStart, thawEnd time.Time) {
	t.Helper()
	lo, hi := liveWindow(ops, freezeStart, thawEnd)
	k, diffs := matchAtFreeze(root, ops, freezeStart, thawEnd)
	if diffs != nil {
		t.Error(strings.Join(diffs, "\n"))
		return
	}
	t.Logf("%s is the writer's directory after ops #0-#%d (%d ended before the freeze began, %d overlap it, %d follow)", root, k-1, lo, hi-lo, len(ops)-hi)
}

// mountImage attaches file read-only and mounts it with opts until the
// test ends. A mount that fails is an error, not a failed test: a torn
// copy may not mount.
func mountImage(t *testing.T, file, opts string) (string, error) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	dev := loop(t, file, "-r")
	if out, err := exec.Command("mount", "-o", opts, dev, mnt).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount -o %s %s: %w: %s", opts, file, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt, nil
}

// The live writer and the verifier, without Platter: a copy of the
// device taken while fsfreeze holds the filesystem is the writer's
// directory at the freeze; the same copy judged at other instants, and
// slow copies taken without a freeze, are not.
func TestLiveWriterVerifier(t *testing.T) {
	dev, mnt := mountedExt4(t, 256, "")
	dir := filepath.Join(mnt, "live")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startLiveWriter(t, dir, 25_000_000, 1)
	// Cleanups run last first: thaw before stopping the writer, which
	// waits on a frozen filesystem.
	t.Cleanup(func() { exec.Command("fsfreeze", "-u", mnt).Run() })
	time.Sleep(2 * time.Second)

	frozenCopy := filepath.Join(t.TempDir(), "frozen.img")
	freezeStart := time.Now()
	sh(t, "fsfreeze", "-f", mnt)
	frozen := time.Now()
	sh(t, "dd", "if="+dev, "of="+frozenCopy, "bs=4M", "iflag=direct", "status=none")
	sh(t, "fsfreeze", "-u", mnt)
	thawEnd := time.Now()
	time.Sleep(time.Second)
	ops := w.Stop()

	kinds := map[liveKind]int{}
	for _, op := range ops {
		kinds[op.Kind]++
	}
	for k := range liveKind(len(liveKindNames)) {
		if kinds[k] == 0 {
			t.Errorf("the writer made no %s in %d ops", k, len(ops))
		}
	}
	lo, hi := liveWindow(ops, freezeStart, thawEnd)
	if hi == len(ops) {
		t.Errorf("the writer made no op after the thaw")
	}
	t.Logf("%d ops (%v); fsfreeze -f took %v, frozen %v; ops %d-%d overlap the freeze",
		len(ops), kinds, frozen.Sub(freezeStart).Round(time.Millisecond), thawEnd.Sub(frozen).Round(time.Millisecond), lo, hi-1)
	for _, op := range ops[lo:hi] {
		t.Logf("  overlapping: #%d %s %s [%v, %v]", op.N, op.Kind, op.Name, op.Start.Sub(freezeStart), op.End.Sub(freezeStart))
	}

	// A frozen ext4 has its journal flushed: no need to replay it.
	root, err := mountImage(t, frozenCopy, "ro,noload")
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(root, "live")
	verifyAtFreeze(t, live, ops, freezeStart, thawEnd)

	t.Run("wrong instant", func(t *testing.T) {
		for _, at := range []time.Time{freezeStart.Add(-time.Second), thawEnd.Add(500 * time.Millisecond)} {
			diffs := diffAtFreeze(live, ops, at, at)
			if diffs == nil {
				t.Errorf("the frozen copy also matches the writer %v from the freeze", at.Sub(freezeStart))
				continue
			}
			t.Logf("%v from the freeze: %d lines, first %s", at.Sub(freezeStart).Round(time.Millisecond), len(diffs), diffs[min(1, len(diffs)-1)])
		}
	})

	t.Run("naive copy", func(t *testing.T) {
		for attempt := range 3 {
			if naiveCopyCaught(t, int64(2+attempt)) {
				return
			}
		}
		t.Error("three copies of a busy filesystem taken without a freeze all passed the verifier")
	})
}

// naiveCopyCaught copies a busy ext4 filesystem slowly, 4 MiB at a time,
// without freezing it, lets e2fsck repair the copy and reports whether
// the verifier tells it from the writer's directory at every instant of
// the copy. A copy that does not mount counts as caught.
func naiveCopyCaught(t *testing.T, seed int64) bool {
	const size = 256 << 20
	dev, mnt := mountedExt4(t, size>>20, "")
	dir := filepath.Join(mnt, "live")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startLiveWriter(t, dir, 25_000_000, seed)
	time.Sleep(time.Second)
	naive := sparseFile(t, filepath.Join(t.TempDir(), "naive.img"), size)
	start := time.Now()
	for i := range size >> 22 {
		sh(t, "dd", "if="+dev, "of="+naive, "bs=4M", "count=1", fmt.Sprint("skip=", i), fmt.Sprint("seek=", i), "iflag=direct", "conv=notrunc", "status=none")
		time.Sleep(20 * time.Millisecond)
	}
	end := time.Now()
	time.Sleep(300 * time.Millisecond)
	ops := w.Stop()

	// e2fsck makes the torn copy consistent, and says nothing of its data.
	code := 0
	fsck, err := exec.Command("e2fsck", "-fy", naive).CombinedOutput()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("e2fsck: %v", err)
	}
	if code >= 4 {
		t.Logf("e2fsck -fy could not repair the naive copy (exit %d):\n%s", code, fsck)
	}
	root, err := mountImage(t, naive, "ro,noload")
	if err != nil {
		t.Logf("seed %d: the naive copy does not mount, caught: %v", seed, err)
		return true
	}
	diffs := diffAtFreeze(filepath.Join(root, "live"), ops, start, end)
	if diffs == nil {
		t.Logf("seed %d: the naive copy (e2fsck exit %d) matched the writer during the copy", seed, code)
		return false
	}
	t.Logf("seed %d: e2fsck -fy exit %d, yet the naive copy is caught (%d ops during the copy):\n%s",
		seed, code, len(ops), strings.Join(diffs[:min(4, len(diffs))], "\n"))
	return true
}
