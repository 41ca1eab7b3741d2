package ext

// This file reads files out of an ext2/3/4 filesystem: inodes, block maps
// and extent trees, directories (linear, hash-indexed and inline) and
// symlinks. It is read-only and never replays the journal: it sees the
// filesystem as its last checkpoint left it.
//
// Every on-disk number is checked before it is used: a damaged image gives
// a *block.CorruptError naming the inode and block, never a panic or a
// loop. Memory is one block per tree level per open reader.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	rootIno = 2

	incompatCompression = 0x1

	// i_flags bits.
	flagEncrypt    = 0x800
	flagExtents    = 0x80000
	flagInlineData = 0x10000000

	// i_mode type bits.
	modeFIFO   = 0x1000
	modeChr    = 0x2000
	modeDir    = 0x4000
	modeBlk    = 0x6000
	modeReg    = 0x8000
	modeLink   = 0xa000
	modeSock   = 0xc000
	modeTypeFl = 0xf000

	iBlockOff  = 0x28 // i_block: block map, extent root, inline data or fast symlink
	iBlockSize = 60

	extentMagic = 0xf30a
	// maxExtentDepth is the kernel's limit (EXT4_MAX_EXTENT_DEPTH); it
	// bounds the walk down a damaged tree.
	maxExtentDepth = 5

	xattrMagic       = 0xea020000
	xattrIndexSystem = 7

	// maxLogical is one past the last logical block an extent can map.
	maxLogical = 1 << 32
)

// Files is an ext2/3/4 filesystem opened for reading its files. Its
// methods are safe for concurrent use if the io.ReaderAt is.
type Files struct {
	r      io.ReaderAt
	sb     *fs
	itable []uint64 // per group: first block of its inode table

	// The names of the directories looked in last (up to maxDirs):
	// extracting the files of a large directory looks each up by path,
	// and a scan per name would make that quadratic.
	mu    sync.Mutex
	dirs  map[uint32]map[string]uint32
	order []uint32 // oldest first
}

const maxDirs = 16

// File is an inode found by path.
type File struct {
	Name string // last path element ("/" for the root)
	// Mode is the io/fs type bits (ModeDir, ModeSymlink,
	// ModeDevice|ModeCharDevice, ModeDevice, ModeNamedPipe, ModeSocket)
	// and the permissions, setuid, setgid and sticky as io/fs bits.
	Mode iofs.FileMode
	Size int64
	// ModTime is i_mtime, with nanoseconds and the epoch bits that carry
	// it past 2038 when the inode has room for i_mtime_extra.
	ModTime time.Time
	Target  string // a symlink's target
	Inode   uint32
	// Uid and Gid own the file (32 bits: the high halves are in
	// osd2, as Linux writes them).
	Uid, Gid uint32
	// Err, set only by ReadDir, says why the entry's inode could not be
	// described (it is free, out of range, of no known type, or its
	// symlink target cannot be read); Name and Inode are from the
	// directory entry, the other fields are not to be used.
	Err error
}

// OpenFiles reads the superblock and group descriptors of the filesystem
// in the size bytes of r. Not ext: an error wrapping block.ErrNotMine.
func OpenFiles(r io.ReaderAt, size int64) (*Files, error) {
	if size < superOff+superSize {
		return nil, fmt.Errorf("ext: %w", block.ErrNotMine)
	}
	sb := make([]byte, superSize)
	if err := readFull(r, sb, superOff); err != nil {
		return nil, fmt.Errorf("ext: read superblock at byte %d: %w", superOff, err)
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != magic {
		return nil, fmt.Errorf("ext: %w", block.ErrNotMine)
	}
	sbf, err := parseSuper(sb, size)
	if err != nil {
		return nil, err
	}
	// Compression changes what file data means; say so instead of
	// returning wrong bytes. (bigalloc only changes allocation: extents
	// still count blocks.)
	if sbf.incompat&incompatCompression != 0 {
		return nil, errors.New("ext: reading files of a compressed ext2 filesystem is not supported")
	}
	f := &Files{r: r, sb: sbf}
	if err := f.readDescriptors(); err != nil {
		return nil, err
	}
	return f, nil
}

// readDescriptors notes where each group's inode table starts. The count
// of groups is bounded by size, which parseSuper checked.
func (f *Files) readDescriptors() error {
	f.itable = make([]uint64, f.sb.groups)
	return f.sb.descriptors(f.r, func(g uint64, d groupDesc) { f.itable[g] = d.inodeTable })
}

// readFull reads exactly len(b) bytes at off.
var readFull = vfs.ReadFull

// inode is the part of an on-disk inode this reader uses.
type inode struct {
	num   uint32
	off   int64  // byte offset of the inode in the filesystem
	raw   []byte // the whole on-disk inode
	mode  uint16
	flags uint32
	size  int64
	// extra is i_extra_isize: the bytes after the first 128 that hold
	// extended fields; in-inode extended attributes follow them.
	extra int
}

func (n *inode) typ() uint16     { return n.mode & modeTypeFl }
func (n *inode) iblock() []byte  { return n.raw[iBlockOff : iBlockOff+iBlockSize] }
func (n *inode) isInline() bool  { return n.flags&flagInlineData != 0 }
func (n *inode) isExtents() bool { return n.flags&flagExtents != 0 }

// readInode reads inode num.
func (f *Files) readInode(num uint32) (*inode, error) {
	sb := f.sb
	if num == 0 || uint64(num) > sb.groups*sb.inodesPerGroup {
		return nil, corrupt(superOff, "inode %d does not exist (the filesystem has %d)", num, sb.groups*sb.inodesPerGroup)
	}
	g, idx := uint64(num-1)/sb.inodesPerGroup, uint64(num-1)%sb.inodesPerGroup
	off := int64(f.itable[g])*sb.blockSize + int64(idx*sb.inodeSize)
	n := &inode{num: num, off: off, raw: make([]byte, sb.inodeSize)}
	if err := readFull(f.r, n.raw, off); err != nil {
		return nil, fmt.Errorf("ext: read inode %d at byte %d: %w", num, off, err)
	}
	le := binary.LittleEndian
	n.mode = le.Uint16(n.raw[0x0:])
	n.flags = le.Uint32(n.raw[0x20:])
	size := uint64(le.Uint32(n.raw[0x4:])) | uint64(le.Uint32(n.raw[0x6c:]))<<32
	if size > 1<<62 {
		return nil, corrupt(off+0x4, "inode %d: size %d is impossible", num, size)
	}
	n.size = int64(size)
	if sb.inodeSize > 128 {
		n.extra = int(le.Uint16(n.raw[0x80:]))
		if n.extra%4 != 0 || uint64(n.extra) > sb.inodeSize-128 {
			return nil, corrupt(off+0x80, "inode %d: %d extra bytes do not fit a %d-byte inode", num, n.extra, sb.inodeSize)
		}
	}
	return n, nil
}

// readable refuses inodes whose data this reader cannot decode; their
// type, size and times are still fine to report.
func (n *inode) readable() error {
	if n.flags&flagEncrypt != 0 {
		return fmt.Errorf("ext: inode %d is encrypted; reading it is not supported", n.num)
	}
	return nil
}

// modTime decodes i_mtime and, when the inode is large enough to hold it,
// i_mtime_extra: two epoch bits extending the signed 32-bit seconds past
// 2038, and 30 bits of nanoseconds.
func (n *inode) modTime() time.Time {
	le := binary.LittleEndian
	sec := int64(int32(le.Uint32(n.raw[0x10:])))
	var nsec int64
	if n.extra >= 0x8c-0x80 {
		extra := le.Uint32(n.raw[0x88:])
		sec += int64(extra&3) << 32
		nsec = int64(extra >> 2)
	}
	return time.Unix(sec, nsec)
}

// fileMode converts i_mode to io/fs bits.
func (n *inode) fileMode() (iofs.FileMode, error) {
	m := iofs.FileMode(n.mode & 0o777)
	if n.mode&0o4000 != 0 {
		m |= iofs.ModeSetuid
	}
	if n.mode&0o2000 != 0 {
		m |= iofs.ModeSetgid
	}
	if n.mode&0o1000 != 0 {
		m |= iofs.ModeSticky
	}
	switch n.typ() {
	case modeReg:
	case modeDir:
		m |= iofs.ModeDir
	case modeLink:
		m |= iofs.ModeSymlink
	case modeChr:
		m |= iofs.ModeDevice | iofs.ModeCharDevice
	case modeBlk:
		m |= iofs.ModeDevice
	case modeFIFO:
		m |= iofs.ModeNamedPipe
	case modeSock:
		m |= iofs.ModeSocket
	default:
		return 0, corrupt(n.off, "inode %d: file type %#o is not one ext knows (a free inode?)", n.num, n.mode&modeTypeFl)
	}
	return m, nil
}

// file describes inode n as a File called name.
func (f *Files) file(name string, n *inode) (File, error) {
	mode, err := n.fileMode()
	if err != nil {
		return File{}, err
	}
	le := binary.LittleEndian
	out := File{Name: name, Mode: mode, Size: n.size, ModTime: n.modTime(), Inode: n.num,
		Uid: uint32(le.Uint16(n.raw[0x2:])) | uint32(le.Uint16(n.raw[0x78:]))<<16,
		Gid: uint32(le.Uint16(n.raw[0x18:])) | uint32(le.Uint16(n.raw[0x7a:]))<<16,
	}
	if n.typ() == modeLink {
		if out.Target, err = f.symlinkTarget(n); err != nil {
			return File{}, err
		}
	}
	return out, nil
}

// symlinkTarget reads a symlink's target: from i_block for a fast
// symlink, from inline data, or from its one data block.
func (f *Files) symlinkTarget(n *inode) (string, error) {
	if err := n.readable(); err != nil {
		return "", err
	}
	if n.size >= f.sb.blockSize || n.size > 1<<16 {
		return "", corrupt(n.off+0x4, "inode %d: symlink of %d bytes is too long", n.num, n.size)
	}
	if !n.isInline() && n.size < iBlockSize && n.fastSymlink(f.sb) {
		return string(n.iblock()[:n.size]), nil
	}
	c, err := f.content(n)
	if err != nil {
		return "", err
	}
	b := make([]byte, n.size)
	if _, err := c.ReadAt(b, 0); err != nil && !(err == io.EOF && len(b) == 0) {
		return "", err
	}
	return string(b), nil
}

// fastSymlink tells a symlink whose target sits in i_block from one with
// a data block, as the kernel's ext4_inode_is_fast_symlink does: a fast
// one owns no blocks but perhaps an extended attribute block, which
// i_blocks counts as a whole cluster on a bigalloc filesystem; an inode
// holding an attribute's value (EA_INODE) is fast when its size fits
// i_block.
func (n *inode) fastSymlink(sb *fs) bool {
	le := binary.LittleEndian
	if n.flags&flagEAInode != 0 {
		return n.size > 0 && n.size < iBlockSize
	}
	if n.flags&flagInlineData != 0 {
		return false
	}
	blocks := uint64(le.Uint32(n.raw[0x1c:]))
	if sb.roCompat&roCompatHugeFile != 0 {
		blocks |= uint64(le.Uint16(n.raw[0x74:])) << 32
		if n.flags&flagHugeFile != 0 {
			blocks *= uint64(sb.blockSize / 512) // counted in filesystem blocks
		}
	}
	var ea uint64
	if acl := uint64(le.Uint32(n.raw[0x68:])) | uint64(le.Uint16(n.raw[0x76:]))<<32; acl != 0 {
		ea = uint64(sb.clusterSize / 512)
	}
	return blocks == ea
}

// lookup resolves name to an inode; it returns the cleaned path too.
// Symlinks in the path are not followed: every element but the last must
// be a directory.
func (f *Files) lookup(name string) (*inode, string, error) {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	n, err := f.readInode(rootIno)
	if err != nil {
		return nil, "", err
	}
	if n.typ() != modeDir {
		return nil, "", corrupt(n.off, "root inode is not a directory (mode %#o)", n.mode)
	}
	if clean == "" {
		return n, clean, nil
	}
	elems := strings.Split(clean, "/")
	for i, e := range elems {
		if n.typ() != modeDir {
			return nil, "", fmt.Errorf("%s: %w", strings.Join(elems[:i], "/"), vfs.ErrNotDir)
		}
		found, err := f.find(n, e)
		if err != nil {
			return nil, "", err
		}
		if found == 0 {
			return nil, "", fmt.Errorf("%s: %w", name, iofs.ErrNotExist)
		}
		if n, err = f.readInode(found); err != nil {
			return nil, "", err
		}
	}
	return n, clean, nil
}

// find returns the inode of name in directory n (0: none), reading the
// directory's names once while it stays among the last looked in.
func (f *Files) find(n *inode, name string) (uint32, error) {
	f.mu.Lock()
	if names, ok := f.dirs[n.num]; ok {
		f.mu.Unlock()
		return names[name], nil
	}
	f.mu.Unlock()
	names := map[string]uint32{}
	err := f.dirEntries(n, func(ent []byte, ino uint32) bool {
		if _, dup := names[string(ent)]; !dup {
			names[string(ent)] = ino // the first of a damaged duplicate, as a scan finds it
		}
		return true
	})
	if err != nil {
		// A damaged directory is not kept; a name outside the damage
		// (in another block, or before it) is still found.
		if ino := names[name]; ino != 0 {
			return ino, nil
		}
		return 0, err
	}
	f.mu.Lock()
	if f.dirs == nil {
		f.dirs = map[uint32]map[string]uint32{}
	}
	if _, ok := f.dirs[n.num]; !ok {
		if len(f.order) == maxDirs {
			delete(f.dirs, f.order[0])
			f.order = f.order[1:]
		}
		f.dirs[n.num] = names
		f.order = append(f.order, n.num)
	}
	f.mu.Unlock()
	return names[name], nil
}

// Stat finds name: a slash-separated path relative to the root ("", "."
// and "/" are the root). Symlinks in the path are not followed.
func (f *Files) Stat(name string) (File, error) {
	n, clean, err := f.lookup(name)
	if err != nil {
		return File{}, err
	}
	base := path.Base("/" + clean)
	return f.file(base, n)
}

// ReadDir lists a directory's entries, without "." and "..", in on-disk
// order. An entry whose inode cannot be described comes with Err set and
// the rest are still listed, as debugfs dumps them: one damaged inode
// must not hide its siblings. A directory block that cannot be read or
// parsed ends the list with one entry without a name, its Err a
// *vfs.LostEntriesError; the entries of the other blocks are listed.
func (f *Files) ReadDir(name string) ([]File, error) {
	n, clean, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if n.typ() != modeDir {
		return nil, fmt.Errorf("%s: %w", clean, vfs.ErrNotDir)
	}
	var out []File
	err = f.dirEntries(n, func(ent []byte, ino uint32) bool {
		if string(ent) == "." || string(ent) == ".." {
			return true
		}
		c, err := f.readInode(ino)
		var fi File
		if err == nil {
			fi, err = f.file(string(ent), c)
		}
		if err != nil {
			fi = File{Name: string(ent), Inode: ino, Err: err}
		}
		out = append(out, fi)
		return true
	})
	var lost *vfs.LostEntriesError
	if errors.As(err, &lost) {
		// The entries of a damaged block cannot be named: one
		// nameless entry says what was lost.
		return append(out, File{Err: err}), nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Open returns a reader of a regular file's contents. Holes and unwritten
// extents read as zeros. The reader also implements io.ReaderAt (safe for
// parallel calls) and io.Seeker.
func (f *Files) Open(name string) (io.ReadCloser, error) {
	n, clean, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if n.typ() != modeReg {
		return nil, fmt.Errorf("%s: %w", clean, vfs.ErrNotRegular)
	}
	c, err := f.content(n)
	if err != nil {
		return nil, err
	}
	return vfs.Section(c, n.size), nil
}

// dirEntries calls fn with the name and inode of each entry of directory
// n in on-disk order until fn returns false. Empty slots (inode 0), which
// include hash-tree index blocks and checksum tails, are skipped.
func (f *Files) dirEntries(n *inode, fn func(name []byte, ino uint32) bool) error {
	if err := n.readable(); err != nil {
		return err
	}
	if n.isInline() {
		// i_block starts with the parent's inode number (there are
		// no "." and ".." entries); entries follow, and continue in
		// the system.data attribute.
		more, err := f.dirBlock(n, n.iblock()[4:], n.off+iBlockOff+4, fn)
		if err != nil || !more {
			return err
		}
		x, xoff, err := n.inlineAttr()
		if err != nil || len(x) == 0 {
			return err
		}
		_, err = f.dirBlock(n, x, xoff, fn)
		return err
	}
	bs := f.sb.blockSize
	var damage error
	nblocks := (uint64(n.size) + uint64(bs) - 1) / uint64(bs)
	if nblocks > f.sb.blocksCount {
		return corrupt(n.off+0x4, "inode %d: directory of %d bytes is larger than the filesystem", n.num, n.size)
	}
	c, err := f.content(n)
	if err != nil {
		return err
	}
	buf := make([]byte, bs)
	for lb := uint64(0); lb < nblocks; {
		r, err := c.find(lb)
		if err != nil {
			return err
		}
		if r.zero {
			// A hole holds no entries.
			lb = r.lb + r.n
			continue
		}
		off := int64(r.pb+lb-r.lb) * bs
		more := true
		err = readFull(f.r, buf, off)
		if err != nil {
			err = fmt.Errorf("ext: read block %d of directory inode %d at byte %d: %w", lb, n.num, off, err)
		} else {
			more, err = f.dirBlock(n, buf, off, fn)
		}
		if err != nil && damage == nil {
			// Each block holds whole entries: the next ones are
			// still read, as e2fsck reads them.
			damage = &vfs.LostEntriesError{Err: err}
		}
		if !more && err == nil {
			return damage
		}
		lb++
	}
	return damage
}

// dirBlock walks the entries in b, a directory block (or an inline
// directory's region) found at byte off. It reports whether fn wants more.
func (f *Files) dirBlock(n *inode, b []byte, off int64, fn func(name []byte, ino uint32) bool) (bool, error) {
	le := binary.LittleEndian
	for p := 0; p < len(b); {
		if len(b)-p < 8 {
			return false, corrupt(off+int64(p), "inode %d: directory entry header cut off by the end of its block", n.num)
		}
		ino := le.Uint32(b[p:])
		rec := f.recLen(le.Uint16(b[p+4:]))
		nameLen := int(b[p+6])
		if f.sb.incompat&incompatFiletype == 0 {
			// Without the filetype feature the length is 16 bits.
			nameLen |= int(b[p+7]) << 8
		}
		if rec < 8 || rec%4 != 0 || rec > len(b)-p {
			return false, corrupt(off+int64(p), "inode %d: directory entry length %d is impossible (%d bytes left in the block)", n.num, rec, len(b)-p)
		}
		if ino != 0 {
			if nameLen == 0 || nameLen > rec-8 {
				return false, corrupt(off+int64(p), "inode %d: directory entry name of %d bytes does not fit its %d-byte entry", n.num, nameLen, rec)
			}
			// The name goes up as the block holds it, a slash or NUL
			// included: fsread.CheckName judges every name, and one
			// bad name must not hide its directory's other entries.
			name := b[p+8 : p+8+nameLen]
			if !fn(name, ino) {
				return false, nil
			}
		}
		p += rec
	}
	return true, nil
}

// recLen decodes a directory entry's length; blocks of 64 KiB and more
// need bits beyond 16 (the kernel's ext4_rec_len_from_disk).
func (f *Files) recLen(v uint16) int {
	if f.sb.blockSize < 65536 {
		return int(v)
	}
	if v == 65535 || v == 0 {
		return 65536
	}
	return int(v&65532) | int(v&3)<<16
}

// inlineAttr finds the system.data extended attribute in the inode body,
// which holds inline data beyond the 60 bytes of i_block. It returns its
// value and the value's byte offset; no attribute is no more data.
func (n *inode) inlineAttr() ([]byte, int64, error) {
	le := binary.LittleEndian
	start := 128 + n.extra
	if len(n.raw) <= 128 || start+4 > len(n.raw) || le.Uint32(n.raw[start:]) != xattrMagic {
		return nil, 0, nil
	}
	first := start + 4 // value offsets count from the first entry
	body := n.raw[first:]
	for p := 0; p+16 <= len(body) && le.Uint32(body[p:]) != 0; {
		nameLen := int(body[p])
		index := body[p+1]
		voff := int(le.Uint16(body[p+2:]))
		vino := le.Uint32(body[p+4:])
		vsize := int(le.Uint32(body[p+8:]))
		if p+16+nameLen > len(body) {
			return nil, 0, corrupt(n.off+int64(first+p), "inode %d: extended attribute name runs past the inode", n.num)
		}
		if index == xattrIndexSystem && string(body[p+16:p+16+nameLen]) == "data" {
			if vino != 0 || voff > len(body) || vsize > len(body)-voff {
				return nil, 0, corrupt(n.off+int64(first+p), "inode %d: inline data attribute (%d bytes at %d) does not fit the inode", n.num, vsize, voff)
			}
			return body[voff : voff+vsize], n.off + int64(first+voff), nil
		}
		p += (16 + nameLen + 3) &^ 3
	}
	return nil, 0, nil
}

// run maps n logical blocks from lb: to physical blocks from pb, or to
// zeros (a hole or an unwritten extent).
type run struct {
	lb, n uint64
	pb    uint64
	zero  bool
}

// mapper translates an inode's logical blocks to runs. It caches what it
// read, so callers serialise calls.
type mapper interface {
	find(lb uint64) (run, error)
}

// content reads an inode's data. ReadAt is safe for parallel calls.
type content struct {
	f      *Files
	n      *inode
	inline []byte // the whole data of an inline-data inode

	mu   sync.Mutex
	m    mapper
	last run // the run found last: sequential reads stay in it
	have bool
}

func (f *Files) content(n *inode) (*content, error) {
	if err := n.readable(); err != nil {
		return nil, err
	}
	c := &content{f: f, n: n}
	switch {
	case n.isInline():
		x, _, err := n.inlineAttr()
		if err != nil {
			return nil, err
		}
		all := append(append([]byte(nil), n.iblock()...), x...)
		if n.size > int64(len(all)) {
			return nil, corrupt(n.off+0x4, "inode %d: size %d is more than its %d bytes of inline data", n.num, n.size, len(all))
		}
		c.inline = all[:n.size]
	case n.isExtents():
		c.m = &extentTree{f: f, n: n}
	default:
		c.m = &blockMap{f: f, n: n}
	}
	return c, nil
}

// find returns the run holding logical block lb.
func (c *content) find(lb uint64) (run, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.have && lb >= c.last.lb && lb-c.last.lb < c.last.n {
		return c.last, nil
	}
	r, err := c.m.find(lb)
	if err != nil {
		c.have = false
		return run{}, err
	}
	if r.n == 0 || r.lb > lb || lb-r.lb >= r.n {
		// The mappers never do this; guard the read loop anyway.
		return run{}, corrupt(c.n.off, "inode %d: internal error mapping block %d", c.n.num, lb)
	}
	c.last, c.have = r, true
	return r, nil
}

// ReadAt reads the inode's data at off, a run at a time, straight into p.
func (c *content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ext: inode %d: negative offset %d", c.n.num, off)
	}
	if off >= c.n.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), c.n.size-off))
	if c.inline != nil {
		copy(p, c.inline[off:off+int64(want)])
	} else {
		bs := c.f.sb.blockSize
		for done := 0; done < want; {
			pos := off + int64(done)
			lb := uint64(pos / bs)
			r, err := c.find(lb)
			if err != nil {
				return done, err
			}
			within := pos % bs
			avail := int64(r.lb+r.n-lb)*bs - within
			k := int(min(avail, int64(want-done)))
			if r.zero {
				clear(p[done : done+k])
			} else {
				at := int64(r.pb+lb-r.lb)*bs + within
				if err := readFull(c.f.r, p[done:done+k], at); err != nil {
					return done, fmt.Errorf("ext: read inode %d data at byte %d: %w", c.n.num, at, err)
				}
			}
			done += k
		}
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}

// checkRun fails unless physical blocks [pb, pb+n) lie in the filesystem.
func (f *Files) checkRun(n *inode, lb, pb, count uint64) error {
	if pb == 0 || pb >= f.sb.blocksCount || count > f.sb.blocksCount-pb {
		return corrupt(n.off, "inode %d: logical block %d maps to block %d (%d blocks), outside the filesystem of %d blocks", n.num, lb, pb, count, f.sb.blocksCount)
	}
	return nil
}

// node is one cached block of a mapping tree.
type node struct {
	blk uint64
	buf []byte
}

// read returns block blk, from the cache if it is there.
func (c *node) read(f *Files, n *inode, blk uint64, what string) ([]byte, error) {
	if c.buf != nil && c.blk == blk {
		return c.buf, nil
	}
	if blk == 0 || blk >= f.sb.blocksCount {
		return nil, corrupt(n.off, "inode %d: %s block %d is outside the filesystem of %d blocks", n.num, what, blk, f.sb.blocksCount)
	}
	if c.buf == nil {
		c.buf = make([]byte, f.sb.blockSize)
	}
	c.blk = 0
	if err := readFull(f.r, c.buf, int64(blk)*f.sb.blockSize); err != nil {
		c.buf = nil
		return nil, fmt.Errorf("ext: read %s block %d of inode %d: %w", what, blk, n.num, err)
	}
	c.blk = blk
	return c.buf, nil
}

// blockMap maps blocks the ext2/ext3 way: 12 direct pointers in i_block,
// then a single, a double and a triple indirect block.
type blockMap struct {
	f     *Files
	n     *inode
	cache [4]node // by level: 1 holds data pointers, 3 is the triple indirect block
}

func (m *blockMap) find(lb uint64) (run, error) {
	p := uint64(m.f.sb.blockSize / 4)
	span := [4]uint64{1, p, p * p, p * p * p} // blocks under one pointer at each level
	ib := m.n.iblock()
	if lb < 12 {
		return m.runIn(ib[:48], lb, lb)
	}
	rel := lb - 12
	for level := 1; level <= 3; level++ {
		if rel >= span[level] {
			rel -= span[level]
			continue
		}
		blk := uint64(binary.LittleEndian.Uint32(ib[(11+level)*4:]))
		for d := level; ; d-- {
			if blk == 0 {
				// The rest of this subtree is a hole.
				return run{lb: lb, n: span[d] - rel, zero: true}, nil
			}
			buf, err := m.cache[d].read(m.f, m.n, blk, "indirect")
			if err != nil {
				return run{}, err
			}
			idx := rel / span[d-1]
			if d == 1 {
				return m.runIn(buf, idx, lb)
			}
			rel %= span[d-1]
			blk = uint64(binary.LittleEndian.Uint32(buf[idx*4:]))
		}
	}
	// Past what the triple indirect block reaches: nothing is there.
	return run{lb: lb, n: maxLogical, zero: true}, nil
}

// runIn makes the run starting at pointer i of ptrs (for logical block
// lb): as many following pointers as continue it contiguously, or as are
// zero too.
func (m *blockMap) runIn(ptrs []byte, i, lb uint64) (run, error) {
	le := binary.LittleEndian
	count := uint64(len(ptrs) / 4)
	first := uint64(le.Uint32(ptrs[i*4:]))
	j := i + 1
	if first == 0 {
		for j < count && le.Uint32(ptrs[j*4:]) == 0 {
			j++
		}
		return run{lb: lb, n: j - i, zero: true}, nil
	}
	for j < count && uint64(le.Uint32(ptrs[j*4:])) == first+(j-i) {
		j++
	}
	if err := m.f.checkRun(m.n, lb, first, j-i); err != nil {
		return run{}, err
	}
	return run{lb: lb, n: j - i, pb: first}, nil
}

// extentTree maps blocks the ext4 way: a tree of extents rooted in
// i_block, each node a 12-byte header and 12-byte entries.
type extentTree struct {
	f     *Files
	n     *inode
	cache [maxExtentDepth + 1]node // by distance from the root
}

func (t *extentTree) find(lb uint64) (run, error) {
	le := binary.LittleEndian
	if lb >= maxLogical {
		return run{lb: lb, n: 1 << 40, zero: true}, nil
	}
	buf, off := t.n.iblock(), t.n.off+iBlockOff
	hi := uint64(maxLogical) // first logical block past this subtree
	depth := -1
	for level := 0; ; level++ {
		entries, d, err := t.header(buf, off, depth)
		if err != nil {
			return run{}, err
		}
		depth = d
		key := func(i int) uint64 { return uint64(le.Uint32(buf[12+12*i:])) }
		// The last entry starting at or before lb.
		i := sort.Search(entries, func(i int) bool { return key(i) > lb }) - 1
		next := hi
		if i+1 < entries {
			next = min(hi, key(i+1))
		}
		if depth == 0 {
			if i >= 0 {
				e := buf[12+12*i:]
				start := key(i)
				n := uint64(le.Uint16(e[4:]))
				unwritten := n > 32768
				if unwritten {
					n -= 32768
				}
				pb := uint64(le.Uint32(e[8:])) | uint64(le.Uint16(e[6:]))<<32
				if n == 0 {
					return run{}, corrupt(off+int64(12+12*i), "inode %d: extent of length 0", t.n.num)
				}
				if lb < start+n {
					if err := t.f.checkRun(t.n, start, pb, n); err != nil {
						return run{}, err
					}
					return run{lb: start, n: n, pb: pb, zero: unwritten}, nil
				}
			}
			// A hole up to the next extent.
			return run{lb: lb, n: max(next, lb+1) - lb, zero: true}, nil
		}
		if i < 0 {
			// Before the first child (a damaged tree): a hole.
			return run{lb: lb, n: max(next, lb+1) - lb, zero: true}, nil
		}
		hi = next
		e := buf[12+12*i:]
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if buf, err = t.cache[level+1].read(t.f, t.n, child, "extent tree"); err != nil {
			return run{}, err
		}
		off = int64(child) * t.f.sb.blockSize
	}
}

// header checks an extent tree node's header and returns its entry count
// and depth. parent is the parent's depth, or -1 at the root: each level
// must be exactly one less, which bounds the walk even through a loop.
func (t *extentTree) header(buf []byte, off int64, parent int) (entries, depth int, err error) {
	le := binary.LittleEndian
	if m := le.Uint16(buf); m != extentMagic {
		return 0, 0, corrupt(off, "inode %d: extent header magic %#04x, want %#04x", t.n.num, m, extentMagic)
	}
	entries, max, depth := int(le.Uint16(buf[2:])), int(le.Uint16(buf[4:])), int(le.Uint16(buf[6:]))
	switch {
	case entries > max || 12+12*entries > len(buf):
		return 0, 0, corrupt(off, "inode %d: extent node of %d entries (room for %d) does not fit %d bytes", t.n.num, entries, max, len(buf))
	case parent < 0 && depth > maxExtentDepth:
		return 0, 0, corrupt(off, "inode %d: extent tree depth %d is more than %d", t.n.num, depth, maxExtentDepth)
	case parent >= 0 && depth != parent-1:
		return 0, 0, corrupt(off, "inode %d: extent node of depth %d below one of depth %d", t.n.num, depth, parent)
	}
	return entries, depth, nil
}
