package fat

// This file reads files out of a FAT12, FAT16 or FAT32 filesystem:
// directories (FAT12/16's fixed root and cluster-chained ones), VFAT long
// names, 8.3 names with their case flags, and file data by the cluster
// chains of the first FAT (the copy the kernel and mtools read when the
// copies differ). It is read-only.
//
// Every on-disk number is checked before it is used: a damaged image gives
// a *block.CorruptError naming the cluster and the byte of the damage,
// never a panic or a loop. Memory is bounded by what the image holds:
// fatSlots pieces of the FAT, one bit per cluster of the volume (kept
// once, to see a file's chain loop), one cluster of a directory being
// read, at most maxDirEntries entries per directory listed (of the few
// listed last, which vfs.Tree keeps), and an open file's extents, no more
// than the clusters its size needs and no more than the volume has.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	entrySize = 32

	attrReadOnly = 0x01
	attrVolume   = 0x08
	attrDir      = 0x10
	attrLongName = 0x0f // read-only, hidden, system and volume: a long-name slot
	attrLongMask = 0x3f

	// Byte 12 of an 8.3 entry: Windows NT and Linux keep a name that is
	// all lower case in one part or both as an 8.3 name with these flags
	// instead of a long name.
	lowerBase = 0x08
	lowerExt  = 0x10

	deleted = 0xe5

	// maxSlots is the most long-name slots one name has: 20 of 13 UTF-16
	// units hold 255 characters and the terminator.
	maxSlots  = 20
	slotUnits = 13

	// maxDirEntries is the most entries a directory holds (Microsoft's
	// FAT specification, and the kernel when it adds entries); a chain
	// of directory clusters past it is damage, and it bounds the memory
	// of a listing.
	maxDirEntries = 65536

	// fatSlots is how many pieces of the FAT are kept: files written
	// side by side interleave their clusters.
	fatSlots = 4
)

// Files is a FAT filesystem opened for reading its files. Its methods are
// safe for concurrent use if the io.ReaderAt is.
type Files struct {
	r           io.ReaderAt
	b           *bpb
	last        uint32 // the highest cluster number
	clusterSize int64
	fatOff      int64  // byte of the first FAT
	fatLen      int64  // bytes of the first FAT that hold entries
	rootCluster uint32 // FAT32: the root directory's first cluster

	fatMu sync.Mutex // guards fat and seen
	fat   [fatSlots]fatPieceBuf
	tick  uint64
	seen  []uint64 // a bit per cluster, set on the chain being followed

	tree *vfs.Tree[File, uint32] // entries by path, directories by dirKey
}

// File is a directory entry found by path.
type File struct {
	// Name is the long name, or the 8.3 name (as mtools and Linux show
	// it: its case flags applied, code page 850 as mtools reads it) when
	// the entry has no long name or its long name does not belong to it
	// (a checksum or sequence that does not match); "/" for the root.
	Name string
	// Mode is ModeDir|0755 for a directory, 0644 for a file: FAT has no
	// permissions.
	Mode iofs.FileMode
	Size int64 // 0 for a directory
	// ModTime is the entry's modification date and time, 2-second
	// resolution, taken as UTC: FAT keeps local time without a zone.
	ModTime time.Time
	// Short is the 8.3 name, as mdir lists it beside the long one.
	Short string
	// Err, set only by ReadDir, on an entry without a name: the rest of
	// the directory's cluster chain could not be followed (a
	// *vfs.LostEntriesError).
	Err error

	cluster uint32 // first cluster; 0 for an empty file
	off     int64  // byte of the 8.3 entry, -1 for the root
	root    bool
}

// OpenFiles reads the boot sector of the FAT filesystem in the size bytes
// of r. Not FAT: an error wrapping block.ErrNotMine.
func OpenFiles(r io.ReaderAt, size int64) (*Files, error) {
	var bs [512]byte
	if size < 512 {
		return nil, notMine("too small")
	}
	if n, err := r.ReadAt(bs[:], 0); n != len(bs) {
		return nil, fmt.Errorf("fat: read boot sector: %w", err)
	}
	b, err := parseBPB(bs[:], size)
	if err != nil {
		return nil, err
	}
	b.r = r
	f := &Files{
		r:           r,
		b:           b,
		last:        uint32(b.clusters + 1),
		clusterSize: b.sectorsPerCluster * b.bytesPerSector,
		fatOff:      b.reserved * b.bytesPerSector,
		fatLen:      ((b.clusters+2)*b.entryBits() + 7) / 8,
	}
	if b.kind == "fat32" {
		f.rootCluster = binary.LittleEndian.Uint32(bs[0x2c:])
		if f.rootCluster < 2 || f.rootCluster > f.last {
			return nil, corrupt(0x2c, "the root directory starts at cluster %d, outside the volume's clusters 2-%d", f.rootCluster, f.last)
		}
	}
	f.tree = vfs.NewTree(f.root(), f.list, entry, dirKey, vfs.FoldKey)
	return f, nil
}

// root is the root directory's entry.
func (f *Files) root() File {
	return File{Name: "/", Mode: iofs.ModeDir | 0o755, cluster: f.rootCluster, off: -1, root: true}
}

// Stat finds name: a slash-separated path relative to the root ("", "."
// and "/" are the root). Names match without regard to case, as FAT
// matches them; of entries whose names match, the first is found.
func (f *Files) Stat(name string) (File, error) { return f.tree.Stat(name) }

// ReadDir lists a directory's entries in on-disk order: without "." and
// ".." (by their 8.3 names), volume labels and deleted entries, every
// other name as the directory holds it, for the caller to judge.
func (f *Files) ReadDir(name string) ([]File, error) { return f.tree.ReadDir(name) }

// Open returns a reader of a file's contents, found as Stat finds it. The
// file's cluster chain is followed once, here: a chain that loops, ends
// before the file's size, or runs into a free, bad or impossible cluster
// is a *block.CorruptError. The reader also implements io.ReaderAt (safe
// for parallel calls) and io.Seeker.
func (f *Files) Open(name string) (io.ReadCloser, error) {
	e, err := f.tree.File(name)
	if err != nil {
		return nil, err
	}
	runs, err := f.extents(e)
	if err != nil {
		return nil, err
	}
	c := &vfs.Clusters{R: f.r, Runs: runs, ClusterSize: f.clusterSize, Offset: f.clusterOff,
		Size: e.Size, Valid: e.Size, FS: "fat"}
	return vfs.Section(c, e.Size), nil
}

// dirKey tells directory d from others: 0 for the root, else its first
// cluster.
func dirKey(d File) uint32 {
	if d.root {
		return 0
	}
	return d.cluster
}

// list reads directory d's entries, in on-disk order.
func (f *Files) list(d File) ([]File, error) {
	var files []File
	var p dirParser
	err := f.dirEntries(d, func(raw []byte, off int64) {
		if e, ok := p.entry(raw, off, f.b.kind == "fat32"); ok {
			files = append(files, e)
		}
	})
	var lost *vfs.LostEntriesError
	if errors.As(err, &lost) {
		// The entries past the break cannot be named: one nameless
		// entry says what was lost.
		return append(files, File{Err: err}), nil
	}
	if err != nil {
		return nil, err
	}
	return files, nil
}

// dirEntries calls fn with each 32-byte entry of directory d and its byte
// offset, in on-disk order, up to the end marker (an entry whose first
// byte is 0: it and all after it are free) or the end of the directory.
func (f *Files) dirEntries(d File, fn func(raw []byte, off int64)) error {
	b := f.b
	each := func(buf []byte, off int64) bool {
		for p := 0; p+entrySize <= len(buf); p += entrySize {
			if buf[p] == 0 {
				return false
			}
			fn(buf[p:p+entrySize], off+int64(p))
		}
		return true
	}
	if d.root && b.kind != "fat32" {
		// FAT12/16: a fixed region after the FATs, which parseBPB
		// checked lies in the volume.
		start := (b.reserved + b.fats*b.fatSectors) * b.bytesPerSector
		end := start + b.rootEntries*entrySize
		buf := make([]byte, min(end-start, 64<<10))
		for off := start; off < end; off += int64(len(buf)) {
			n := min(int64(len(buf)), end-off)
			if err := vfs.ReadFull(f.r, buf[:n], off); err != nil {
				return fmt.Errorf("fat: read the root directory at byte %d: %w", off, err)
			}
			if !each(buf[:n], off) {
				return nil
			}
		}
		return nil
	}
	what := fmt.Sprintf("the directory from cluster %d", d.cluster)
	if d.root {
		what = fmt.Sprintf("the root directory (from cluster %d)", d.cluster)
	}
	if d.cluster < 2 || d.cluster > f.last {
		// (The root's cluster was checked by OpenFiles.)
		return corrupt(d.off+26, "%s starts outside the volume's clusters 2-%d", what, f.last)
	}
	maxClusters := max(1, maxDirEntries*entrySize/f.clusterSize)
	// The chain of a directory is short: its own visited set.
	seen := map[uint32]bool{}
	buf := make([]byte, f.clusterSize)
	for c, i := d.cluster, int64(0); ; i++ {
		if i == maxClusters {
			return &vfs.LostEntriesError{Err: corrupt(f.entryOff(c), "%s runs past %d clusters (%d entries, the most a directory holds) at cluster %d", what, maxClusters, maxDirEntries, c)}
		}
		off := f.clusterOff(c)
		if err := vfs.ReadFull(f.r, buf, off); err != nil {
			err = fmt.Errorf("fat: read cluster %d of %s at byte %d: %w", c, what, off, err)
			if i == 0 {
				return err
			}
			return &vfs.LostEntriesError{Err: err}
		}
		if !each(buf, off) {
			return nil
		}
		seen[c] = true
		// Past here the entries read so far stand, as fsck.fat keeps
		// them when it cuts the chain where it breaks.
		next, end, err := f.next(c, what)
		if err != nil {
			return &vfs.LostEntriesError{Err: err}
		}
		if end {
			return nil
		}
		if seen[next] {
			return &vfs.LostEntriesError{Err: corrupt(f.entryOff(c), "%s loops: cluster %d leads back to cluster %d", what, c, next)}
		}
		c = next
	}
}

// dirParser turns a directory's 32-byte entries, one at a time, into
// Files: it gathers the long-name slots before an 8.3 entry, and keeps
// them only if they are a whole sequence (ordinals n|0x40, n-1, ..., 1)
// with the checksum of that 8.3 name, as the kernel and mtools do;
// otherwise the 8.3 name is used.
type dirParser struct {
	units [maxSlots * slotUnits]uint16
	slots int  // slots of the name being gathered; 0: none
	want  int  // the ordinal the next slot must have; 0: the 8.3 entry
	sum   byte // their checksum
}

// entry takes the next entry of a directory, found at byte off. It
// returns a File for an 8.3 entry of a file or directory other than "."
// and "..".
func (p *dirParser) entry(raw []byte, off int64, fat32 bool) (File, bool) {
	attr := raw[11]
	if raw[0] == deleted {
		p.slots = 0
		return File{}, false
	}
	if attr&attrLongMask == attrLongName {
		p.slot(raw)
		return File{}, false
	}
	slots := p.slots
	p.slots = 0
	if attr&attrVolume != 0 {
		return File{}, false // the volume label
	}
	le := binary.LittleEndian
	e := File{Short: shortName(raw), off: off, Mode: 0o644}
	e.Name = e.Short
	if slots > 0 && p.want == 0 && checksum(raw) == p.sum {
		u := p.units[:slots*slotUnits]
		for i, c := range u {
			if c == 0 {
				u = u[:i]
				break
			}
		}
		if len(u) > 0 {
			e.Name = string(utf16.Decode(u))
		}
	}
	if e.Name == e.Short && (string(raw[:11]) == ".          " || string(raw[:11]) == "..         ") {
		return File{}, false // the directory itself and its parent
	}
	e.cluster = uint32(le.Uint16(raw[26:]))
	if fat32 {
		// FAT12/16 keep other things in the high word (OS/2's
		// extended attributes): only FAT32 numbers clusters with it.
		e.cluster |= uint32(le.Uint16(raw[20:])) << 16
	}
	if attr&attrDir != 0 {
		e.Mode = iofs.ModeDir | 0o755
	} else {
		e.Size = int64(le.Uint32(raw[28:]))
	}
	e.ModTime = dosTime(le.Uint16(raw[24:]), le.Uint16(raw[22:]))
	return e, true
}

// slot takes a long-name slot.
func (p *dirParser) slot(raw []byte) {
	ord := int(raw[0] &^ 0x40)
	switch {
	case ord < 1 || ord > maxSlots:
		p.slots = 0
		return
	case raw[0]&0x40 != 0:
		// The last part of a name, which comes first: a new name.
		p.slots, p.want, p.sum = ord, ord, raw[13]
	case p.slots == 0 || ord != p.want || raw[13] != p.sum:
		p.slots = 0
		return
	}
	u := p.units[(ord-1)*slotUnits:]
	for i, at := range [slotUnits]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
		u[i] = binary.LittleEndian.Uint16(raw[at:])
	}
	p.want = ord - 1
}

// checksum is the checksum of an 8.3 name that its long name's slots
// hold.
func checksum(raw []byte) byte {
	var sum byte
	for _, c := range raw[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// shortName is an 8.3 entry's name as mtools and Linux show it: base and
// extension without their padding, joined by a dot if there is an
// extension, each lowered if its case flag says so.
func shortName(raw []byte) string {
	var n [11]byte
	copy(n[:], raw[:11])
	if n[0] == 0x05 {
		n[0] = deleted // a first byte 0xe5 is stored as 0x05
	}
	base := oem(trimSpace(n[:8]), raw[12]&lowerBase != 0)
	if ext := trimSpace(n[8:]); len(ext) > 0 {
		return base + "." + oem(ext, raw[12]&lowerExt != 0)
	}
	return base
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

// cp850 holds the characters of code page 850's bytes 0x80-0xff: mtools
// reads 8.3 names in it unless told otherwise.
var cp850 = []rune("" +
	"ÇüéâäàåçêëèïîìÄÅ" +
	"ÉæÆôöòûùÿÖÜø£Ø×ƒ" +
	"áíóúñÑªº¿®¬½¼¡«»" +
	"░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐" +
	"└┴┬├─┼ãÃ╚╔╩╦╠═╬¤" +
	"ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀" +
	"ÓßÔÒõÕµþÞÚÛÙýÝ¯´" +
	"\u00ad±‗¾¶§÷¸°¨·¹³²■\u00a0")

// oem decodes code page 850 bytes, lowered if lower.
func oem(b []byte, lower bool) string {
	var s strings.Builder
	for _, c := range b {
		r := rune(c)
		if c >= 0x80 {
			r = cp850[c-0x80]
		}
		if lower {
			r = unicode.ToLower(r)
		}
		s.WriteRune(r)
	}
	return s.String()
}

// dosTime decodes a FAT date and time (2-second resolution) as UTC. A day
// or month of 0 is taken as 1, as the kernel takes it; what else is out
// of range carries over, as time.Date carries it.
func dosTime(date, tod uint16) time.Time {
	return time.Date(1980+int(date>>9), time.Month(max(1, date>>5&0xf)), int(max(1, date&0x1f)),
		int(tod>>11), int(tod>>5&0x3f), 2*int(tod&0x1f), 0, time.UTC)
}

// clusterOff is the byte where cluster c (2 to f.last) starts.
func (f *Files) clusterOff(c uint32) int64 {
	return (f.b.dataStart + int64(c-2)*f.b.sectorsPerCluster) * f.b.bytesPerSector
}

// entryOff is the byte of cluster c's entry in the first FAT.
func (f *Files) entryOff(c uint32) int64 { return f.fatOff + int64(c)*f.b.entryBits()/8 }

// next returns the cluster after c (2 to f.last) in its chain, or end at
// the chain's end; a free, bad or impossible entry is damage to what (a
// file or directory, for the message).
func (f *Files) next(c uint32, what string) (next uint32, end bool, err error) {
	f.fatMu.Lock()
	v, err := f.entry(c)
	f.fatMu.Unlock()
	if err != nil {
		return 0, false, err
	}
	return f.classify(c, v, what)
}

// classify judges v, cluster c's FAT entry, as the link to the next
// cluster of what's chain.
func (f *Files) classify(c, v uint32, what string) (next uint32, end bool, err error) {
	bad := f.b.bad()
	switch {
	case v > bad:
		return 0, true, nil
	case v == 0:
		return 0, false, corrupt(f.entryOff(c), "the cluster chain of %s runs into cluster %d, which the FAT calls free", what, c)
	case v == bad:
		return 0, false, corrupt(f.entryOff(c), "the cluster chain of %s runs into cluster %d, which the FAT marks bad", what, c)
	case v < 2 || v > f.last:
		return 0, false, corrupt(f.entryOff(c), "the cluster chain of %s leads from cluster %d to cluster %d, outside the volume's clusters 2-%d", what, c, v, f.last)
	}
	return v, false, nil
}

// fatPieceBuf is a piece of the first FAT, as entry reads it.
type fatPieceBuf struct {
	n    int64 // its index: FAT byte offset / fatPiece
	buf  []byte
	used uint64
	ok   bool
}

// entry reads cluster c's entry (2 to f.last) in the first FAT, through
// the pieces kept. f.fatMu is held.
func (f *Files) entry(c uint32) (uint32, error) {
	bits := f.b.entryBits()
	at := int64(c) * bits / 8
	n := at / fatPiece
	f.tick++
	var s *fatPieceBuf
	for i := range f.fat {
		if f.fat[i].ok && f.fat[i].n == n {
			s = &f.fat[i]
			break
		}
		if s == nil || f.fat[i].used < s.used {
			s = &f.fat[i] // the least recently used
		}
	}
	if !s.ok || s.n != n {
		if s.buf == nil {
			s.buf = make([]byte, min(fatPiece, f.fatLen))
		}
		s.ok = false
		piece := s.buf[:min(int64(len(s.buf)), f.fatLen-n*fatPiece)]
		if err := vfs.ReadFull(f.r, piece, f.fatOff+n*fatPiece); err != nil {
			return 0, fmt.Errorf("fat: read FAT at byte %d: %w", f.fatOff+n*fatPiece, err)
		}
		s.n, s.ok = n, true
	}
	s.used = f.tick
	// An entry never crosses a piece: a piece is a multiple of every
	// entry size, and of 3 bytes (a pair of FAT12 entries).
	return decodeEntry(s.buf[at-n*fatPiece:], bits, int64(c)), nil
}

// extents follows file e's cluster chain for as many clusters as its size
// needs (the rest of a longer chain is not read, as the kernel does not
// read it) and returns them as runs.
func (f *Files) extents(e File) ([]vfs.Run, error) {
	if e.Size == 0 {
		return nil, nil
	}
	need := (e.Size + f.clusterSize - 1) / f.clusterSize
	what := fmt.Sprintf("the file of %d bytes from cluster %d", e.Size, e.cluster)
	switch {
	case e.cluster < 2 || e.cluster > f.last:
		return nil, corrupt(e.off+26, "%s starts outside the volume's clusters 2-%d", what, f.last)
	case need > int64(f.last-1):
		return nil, corrupt(e.off+28, "%s needs %d clusters; the volume has %d", what, need, f.last-1)
	}
	f.fatMu.Lock()
	defer f.fatMu.Unlock()
	if need > 1 && f.seen == nil {
		f.seen = make([]uint64, (int64(f.last)+64)/64)
	}
	var runs []vfs.Run
	defer func() {
		// Leave every bit clear for the next walk.
		for _, r := range runs {
			for c := r.Physical; int64(c) < int64(r.Physical)+r.N && need > 1; c++ {
				f.seen[c/64] &^= 1 << (c % 64)
			}
		}
	}()
	c := e.cluster
	for i := int64(0); ; i++ {
		if k := len(runs) - 1; k >= 0 && int64(runs[k].Physical)+runs[k].N == int64(c) {
			runs[k].N++
		} else {
			runs = append(runs, vfs.Run{Logical: i, Physical: c, N: 1})
		}
		if i == need-1 {
			return runs, nil
		}
		f.seen[c/64] |= 1 << (c % 64)
		v, err := f.entry(c)
		if err != nil {
			return nil, err
		}
		next, end, err := f.classify(c, v, what)
		switch {
		case err != nil:
			return nil, err
		case end:
			return nil, corrupt(f.entryOff(c), "the cluster chain of %s ends at cluster %d, its %d of the %d clusters its size needs", what, c, i+1, need)
		case f.seen[next/64]&(1<<(next%64)) != 0:
			return nil, corrupt(f.entryOff(c), "the cluster chain of %s loops: cluster %d leads back to cluster %d", what, c, next)
		}
		c = next
	}
}
