package vdisk

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/block"
)

// The VMDK reader (VMware's Virtual Disk Format 5.0). A disk is one or
// more extents, listed by a text descriptor: either a file of its own
// (monolithicFlat, twoGbMaxExtentFlat, twoGbMaxExtentSparse: extents are
// other files, named relative to it) or embedded in a hosted sparse
// extent (monolithicSparse, streamOptimized: the file is the disk's one
// extent). A flat extent is a raw file; a sparse one maps grains through
// a grain directory and grain tables (like qcow2's L1 and L2), and a
// streamOptimized one holds each grain deflated behind a marker, its
// grain directory possibly at the end (the header says GD_AT_END, and a
// footer, a copy of the header with the real offsets, precedes the
// end-of-stream marker). Delta links (a parentCID) are refused: they are
// read through their parent. Fields are little-endian; sectors are 512
// bytes.

func init() { registerReader(VMDK, openVMDK) }

const (
	vmdkESXMagic    = "COWD"
	vmdkMaxGrain    = 1 << 14 // sectors: 8 MiB; VMware writes 128
	vmdkMaxGTEs     = 512     // VMware's and qemu's grain table size
	vmdkMaxDesc     = 1 << 20 // an embedded descriptor
	vmdkMaxExtents  = 2048
	vmdkZeroedGrain = 1 // a grain table entry of a grain that reads as zero (flag bit 2)
	vmdkFlagZeroGTE = 1 << 2
)

// vmdkExtent is one extent of a disk: start and size in the disk's
// bytes; a flat one is read from file at off, a sparse one through
// sparse, a zero one is zeros.
type vmdkExtent struct {
	start, size int64
	file        File
	fileSize    int64
	off         int64
	sparse      *vmdkSparse
	zero        bool
}

type vmdkDisk struct {
	extents []vmdkExtent
}

func openVMDK(f File, size int64, head, tail []byte, path string) (Disk, error) {
	switch {
	case len(head) >= 4 && binary.LittleEndian.Uint32(head) == vmdkMagic:
		return openVMDKSparseFile(f, size, head)
	case len(head) >= 4 && string(head[:4]) == vmdkESXMagic:
		return nil, refused("a VMware ESX sparse extent (COWD, vmfsSparse) is not read: convert it first (vmkfstools -i, or qemu-img convert)")
	}
	desc, ok := vmdkDescriptorText(head, size)
	if !ok {
		return nil, ErrNotVirtual
	}
	if size > int64(len(head)) {
		if !strings.HasPrefix(desc, "# Disk DescriptorFile") {
			return nil, ErrNotVirtual // text that mentions a createType, not a descriptor
		}
		return nil, corrupt("VMDK descriptor", 0, "a descriptor file of %d bytes (descriptors are small text files; this reads up to %d)", size, len(head))
	}
	d, err := parseVMDKDescriptor(desc)
	if err != nil {
		return nil, err
	}
	if len(d.extents) == 0 {
		return nil, corrupt("VMDK descriptor", 0, "no extents")
	}
	disk := &vmdkDisk{}
	closers := []io.Closer{f}
	fail := func(err error) (Disk, error) {
		for _, c := range closers[1:] {
			c.Close()
		}
		return nil, err
	}
	format := VMDK
	var start int64
	for _, e := range d.extents {
		ext := vmdkExtent{start: start, size: e.sectors * vmdkSector}
		switch e.kind {
		case "ZERO":
			ext.zero = true
		case "FLAT", "VMFS":
			ef, efSize, _, _, err := namedFile(path, e.file, true, "VMDK extent")
			if err != nil {
				return fail(err)
			}
			closers = append(closers, ef)
			if !within(e.offset*vmdkSector, ext.size, efSize) {
				return fail(fmt.Errorf("VMDK extent %q is %d bytes, too short for the %d bytes from byte %d the descriptor gives it: the file is truncated", e.file, efSize, ext.size, e.offset*vmdkSector))
			}
			ext.file, ext.fileSize, ext.off = ef, efSize, e.offset*vmdkSector
		case "SPARSE":
			ef, efSize, _, _, err := namedFile(path, e.file, true, "VMDK extent")
			if err != nil {
				return fail(err)
			}
			closers = append(closers, ef)
			eh := make([]byte, min(efSize, 64<<10))
			if err := readExact(ef, efSize, eh, 0, "VMDK extent header"); err != nil {
				return fail(fmt.Errorf("VMDK extent %q: %w", e.file, err))
			}
			s, err := openVMDKSparse(ef, efSize, eh)
			if err != nil {
				return fail(fmt.Errorf("VMDK extent %q: %w", e.file, err))
			}
			if s.capacity < ext.size {
				return fail(fmt.Errorf("VMDK extent %q holds %d bytes, less than the %d its descriptor gives it", e.file, s.capacity, ext.size))
			}
			if s.compressed {
				format = VMDKStream
			}
			ext.sparse = s
		default:
			return fail(refused("VMDK extents of type %s are not read (FLAT, SPARSE and ZERO are)", e.kind))
		}
		if ext.size > 1<<62-start {
			return fail(corrupt("VMDK descriptor", 0, "extents add up to more than a disk can hold"))
		}
		start += ext.size
		disk.extents = append(disk.extents, ext)
	}
	alloc, err := disk.allocated()
	if err != nil {
		return fail(err)
	}
	return &mappedDisk{format: format, size: start, alloc: alloc, readRun: disk.readRun, closers: closers}, nil
}

// openVMDKSparseFile opens a hosted sparse extent as a disk of its own:
// monolithicSparse and streamOptimized.
func openVMDKSparseFile(f File, size int64, head []byte) (Disk, error) {
	s, err := openVMDKSparse(f, size, head)
	if err != nil {
		return nil, err
	}
	if s.descriptor != "" {
		if _, err := parseVMDKDescriptor(s.descriptor); err != nil {
			return nil, err
		}
	}
	format := VMDK
	if s.compressed {
		format = VMDKStream
	}
	disk := &vmdkDisk{extents: []vmdkExtent{{size: s.capacity, sparse: s}}}
	alloc, err := disk.allocated()
	if err != nil {
		return nil, err
	}
	return &mappedDisk{format: format, size: s.capacity, alloc: alloc, readRun: disk.readRun, closers: []io.Closer{f}}, nil
}

func (d *vmdkDisk) allocated() ([]block.Extent, error) {
	var all []block.Extent
	for _, e := range d.extents {
		switch {
		case e.zero:
		case e.sparse != nil:
			es, err := e.sparse.scan(e.size)
			if err != nil {
				return nil, err
			}
			for _, x := range es {
				all = append(all, block.Extent{Off: e.start + x.Off, Len: x.Len})
			}
		default:
			var es []block.Extent
			if osf, ok := e.file.(*os.File); ok {
				es = dataExtents(osf, e.fileSize)
			} else {
				es = []block.Extent{{Off: 0, Len: e.fileSize}}
			}
			for _, x := range es {
				lo, hi := max(x.Off, e.off), min(x.End(), e.off+e.size)
				if lo < hi {
					all = append(all, block.Extent{Off: e.start + lo - e.off, Len: hi - lo})
				}
			}
		}
	}
	return block.MergeExtents(all), nil
}

func (d *vmdkDisk) readRun(p []byte, off int64) (int, error) {
	i := sort.Search(len(d.extents), func(i int) bool { return d.extents[i].start+d.extents[i].size > off }) // off < disk size
	e := &d.extents[i]
	in := off - e.start
	n := min(int64(len(p)), e.size-in)
	switch {
	case e.zero:
		clear(p[:n])
		return int(n), nil
	case e.sparse != nil:
		return e.sparse.readRun(p[:n], in)
	}
	return readFileRun(e.file, e.fileSize, p[:n], e.off+in, "VMDK flat extent")
}

// vmdkDescriptorText returns a descriptor file's text, if head is one:
// text whose lines include a createType.
func vmdkDescriptorText(head []byte, size int64) (string, bool) {
	t := head
	if i := bytes.IndexByte(t, 0); i >= 0 {
		t = t[:i] // qemu pads an embedded descriptor with zeros
	}
	s := string(t)
	if !strings.HasPrefix(s, "# Disk DescriptorFile") && !strings.Contains(s, "\ncreateType=") && !strings.HasPrefix(s, "createType=") {
		return "", false
	}
	return s, true
}

type vmdkDescExtent struct {
	access, kind, file string
	sectors, offset    int64
}

type vmdkDescLines struct {
	createType string
	extents    []vmdkDescExtent
}

// parseVMDKDescriptor reads a descriptor's extent lines and refuses a
// delta link (one with a parent).
func parseVMDKDescriptor(text string) (*vmdkDescLines, error) {
	d := &vmdkDescLines{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, len(text)+1)
	line := 0
	off := int64(0)
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		at := off
		off += int64(len(sc.Text())) + 1
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "RW ") && !strings.HasPrefix(l, "RDONLY ") && !strings.HasPrefix(l, "NOACCESS ") {
			k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
			switch k {
			case "createType":
				d.createType = v
			case "parentCID":
				if !strings.EqualFold(v, "ffffffff") {
					return nil, refused("the VMDK is a delta link of a parent disk (parentCID %s), which Platter does not follow: consolidate it first (VMware's snapshot manager, or qemu-img convert)", v)
				}
			case "parentFileNameHint":
				return nil, refused("the VMDK is a delta link of %q, which Platter does not follow: consolidate it first", v)
			}
			continue
		}
		e, err := parseVMDKExtentLine(l)
		if err != nil {
			return nil, corrupt("VMDK descriptor", at, "line %d %q: %v", line, trimLine(l), err)
		}
		if len(d.extents) == vmdkMaxExtents {
			return nil, corrupt("VMDK descriptor", at, "more than %d extents", vmdkMaxExtents)
		}
		d.extents = append(d.extents, e)
	}
	if err := sc.Err(); err != nil {
		return nil, corrupt("VMDK descriptor", off, "%v", err)
	}
	return d, nil
}

func trimLine(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// parseVMDKExtentLine reads `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
func parseVMDKExtentLine(l string) (vmdkDescExtent, error) {
	var e vmdkDescExtent
	fields := strings.Fields(l)
	if len(fields) < 3 {
		return e, fmt.Errorf("not an extent (ACCESS SECTORS TYPE \"FILE\" [OFFSET])")
	}
	e.access, e.kind = fields[0], fields[2]
	switch e.access {
	case "RW", "RDONLY":
	case "NOACCESS":
		return e, fmt.Errorf("an extent that may not be read")
	default:
		return e, fmt.Errorf("access %q (RW, RDONLY or NOACCESS)", e.access)
	}
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n < 0 || n > 1<<53 {
		return e, fmt.Errorf("size %q", fields[1])
	}
	e.sectors = n
	if e.kind == "ZERO" {
		return e, nil
	}
	q1 := strings.IndexByte(l, '"')
	q2 := strings.LastIndexByte(l, '"')
	if q1 < 0 || q2 <= q1 {
		return e, fmt.Errorf("no quoted file name")
	}
	e.file = l[q1+1 : q2]
	if rest := strings.TrimSpace(l[q2+1:]); rest != "" {
		o, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
		if err != nil || o < 0 || o > 1<<53 {
			return e, fmt.Errorf("offset %q", rest)
		}
		e.offset = o
	}
	return e, nil
}

// vmdkSparse is a hosted sparse extent: a grain directory of grain
// tables of grains.
type vmdkSparse struct {
	f          File
	fileSize   int64
	capacity   int64 // bytes
	grain      int64 // bytes
	gtes       int64 // entries per grain table
	gd         []uint32
	gdOff      int64
	zeroGTE    bool
	compressed bool
	markers    bool
	descriptor string

	tables *tableCache[[]uint32]
	grains *tableCache[[]byte]
}

func openVMDKSparse(f File, size int64, head []byte) (*vmdkSparse, error) {
	if len(head) < 4 || binary.LittleEndian.Uint32(head) != vmdkMagic {
		return nil, corrupt("VMDK sparse header", 0, "no KDMV magic")
	}
	if len(head) < vmdkSector {
		return nil, corrupt("VMDK sparse header", 0, "the file is %d bytes, too short for a header (512)", size)
	}
	le := binary.LittleEndian
	h := head[:vmdkSector]
	if v := le.Uint32(h[4:]); v < 1 || v > 3 {
		return nil, refused("VMDK sparse extent version %d: versions 1 to 3 are read", v)
	}
	if le.Uint64(h[56:]) == vmdkGDAtEnd {
		// streamOptimized, written front to back: the footer (a copy of
		// the header with the real offsets) is the second-last sector,
		// after a footer marker and before the end-of-stream marker.
		if size < 3*vmdkSector+vmdkSector {
			return nil, corrupt("VMDK footer", 0, "the header says the grain directory is at the end, and the file is too short (%d bytes) for a footer", size)
		}
		tail := make([]byte, 3*vmdkSector)
		end := size &^ (vmdkSector - 1)
		if err := readExact(f, size, tail, end-3*vmdkSector, "VMDK footer"); err != nil {
			return nil, err
		}
		marker, footer, eos := tail[:vmdkSector], tail[vmdkSector:2*vmdkSector], tail[2*vmdkSector:]
		if le.Uint32(marker[8:]) != 0 || le.Uint32(marker[12:]) != vmdkMarkerFooter || le.Uint32(footer) != vmdkMagic ||
			le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != 0 {
			return nil, corrupt("VMDK footer", end-2*vmdkSector, "the header says the grain directory is at the end, and there is no footer before the end-of-stream marker: the file is truncated or damaged")
		}
		h = footer
		if le.Uint64(h[56:]) == vmdkGDAtEnd {
			return nil, corrupt("VMDK footer", end-2*vmdkSector+56, "the footer too puts the grain directory at the end")
		}
	}
	flags := le.Uint32(h[8:])
	capacity, grain := le.Uint64(h[12:]), le.Uint64(h[20:])
	descOff, descSize := le.Uint64(h[28:]), le.Uint64(h[36:])
	gtes := int64(le.Uint32(h[44:]))
	gdOff := le.Uint64(h[56:])
	if flags&vmdkFlagNewline != 0 && string(h[73:77]) != "\n \r\n" {
		return nil, corrupt("VMDK sparse header", 73, "its newline test bytes are changed: the file was copied as text (FTP ASCII mode) and is damaged")
	}
	s := &vmdkSparse{f: f, fileSize: size, gtes: gtes,
		zeroGTE: flags&vmdkFlagZeroGTE != 0, compressed: flags&vmdkFlagCompressed != 0, markers: flags&vmdkFlagMarkers != 0}
	switch {
	case capacity > 1<<53:
		return nil, corrupt("VMDK sparse header", 12, "capacity of %d sectors is impossible", capacity)
	case grain < 1 || grain > vmdkMaxGrain || grain&(grain-1) != 0:
		return nil, corrupt("VMDK sparse header", 20, "grain of %d sectors (a power of two up to %d)", grain, vmdkMaxGrain)
	case gtes < 1 || gtes > vmdkMaxGTEs:
		return nil, corrupt("VMDK sparse header", 44, "%d entries per grain table (1 to %d)", gtes, vmdkMaxGTEs)
	case s.compressed && le.Uint16(h[77:]) != 1:
		return nil, refused("VMDK compression algorithm %d: only deflate (1) is read", le.Uint16(h[77:]))
	}
	s.capacity, s.grain = int64(capacity)*vmdkSector, int64(grain)*vmdkSector
	if descOff != 0 && descSize != 0 {
		if descSize*vmdkSector > vmdkMaxDesc || descOff > 1<<53 || !within(int64(descOff)*vmdkSector, int64(descSize)*vmdkSector, size) {
			return nil, corrupt("VMDK sparse header", 28, "embedded descriptor of %d sectors at sector %d is too large or past the end of the file (%d bytes)", descSize, descOff, size)
		}
		b := make([]byte, descSize*vmdkSector)
		if err := readExact(f, size, b, int64(descOff)*vmdkSector, "VMDK embedded descriptor"); err != nil {
			return nil, err
		}
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		s.descriptor = string(b)
	}
	perGT := s.grain * gtes
	need := (s.capacity + perGT - 1) / perGT
	if gdOff > 1<<53 || !within(int64(gdOff)*vmdkSector, need*4, size) {
		return nil, corrupt("VMDK sparse header", 56, "grain directory of %d entries at sector %d lies past the end of the file (%d bytes)", need, gdOff, size)
	}
	s.gdOff = int64(gdOff) * vmdkSector
	raw := make([]byte, need*4)
	if err := readExact(f, size, raw, s.gdOff, "VMDK grain directory"); err != nil {
		return nil, err
	}
	s.gd = make([]uint32, need)
	for i := range s.gd {
		s.gd[i] = le.Uint32(raw[i*4:])
	}
	s.tables = newTableCache[[]uint32](tableCacheBytes)
	s.grains = newTableCache[[]byte](clusterCacheBytes)
	return s, nil
}

// table returns the grain table at sector gt.
func (s *vmdkSparse) table(gt uint32) ([]uint32, error) {
	off := int64(gt) * vmdkSector
	if t, ok := s.tables.get(off); ok {
		return t, nil
	}
	b := make([]byte, s.gtes*4)
	if err := readExact(s.f, s.fileSize, b, off, "VMDK grain table"); err != nil {
		return nil, err
	}
	t := make([]uint32, s.gtes)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	s.tables.put(off, t, s.gtes*4)
	return t, nil
}

// What a grain is.
const (
	vmdkGrainNone       = iota // reads as zero
	vmdkGrainData              // at a sector of the file
	vmdkGrainCompressed        // a marker and deflated data at a sector of the file
)

// grainAt classifies grain gi: its kind and its sector in the file.
func (s *vmdkSparse) grainAt(gi int64) (int, int64, error) {
	gt := s.gd[gi/s.gtes]
	if gt == 0 {
		return vmdkGrainNone, 0, nil
	}
	t, err := s.table(gt)
	if err != nil {
		return 0, 0, err
	}
	e := t[gi%s.gtes]
	switch {
	case e == 0, e == vmdkZeroedGrain && s.zeroGTE:
		return vmdkGrainNone, 0, nil
	case s.compressed:
		return vmdkGrainCompressed, int64(e) * vmdkSector, nil
	}
	return vmdkGrainData, int64(e) * vmdkSector, nil
}

// scan checks the grain tables (each used once: a table named twice
// would let a small file make the scan long) and every grain's place,
// and lists the grains present in the extent's first size bytes.
func (s *vmdkSparse) scan(size int64) ([]block.Extent, error) {
	var gts []uint32
	for _, gt := range s.gd {
		if gt != 0 {
			gts = append(gts, gt)
		}
	}
	slices.Sort(gts)
	for i := 1; i < len(gts); i++ {
		if gts[i] == gts[i-1] {
			return nil, corrupt("VMDK grain table", int64(gts[i])*vmdkSector, "named by two grain directory entries")
		}
	}
	var l extentList
	for gi := int64(0); gi*s.grain < size; gi++ {
		kind, at, err := s.grainAt(gi)
		if err != nil {
			return nil, err
		}
		n := min(s.grain, size-gi*s.grain)
		entry := int64(s.gd[gi/s.gtes])*vmdkSector + gi%s.gtes*4 // where the grain table says so
		switch kind {
		case vmdkGrainData:
			if !within(at, n, s.fileSize) {
				return nil, corrupt("VMDK grain table", entry, "grain %d at byte %d lies past the end of the file (%d bytes)", gi, at, s.fileSize)
			}
		case vmdkGrainCompressed:
			if !within(at, 12, s.fileSize) {
				return nil, corrupt("VMDK grain table", entry, "compressed grain %d at byte %d lies past the end of the file (%d bytes)", gi, at, s.fileSize)
			}
		default:
			if gt := s.gd[gi/s.gtes]; gt == 0 {
				gi += s.gtes - 1 - gi%s.gtes // skip the table that is not there
			}
			continue
		}
		l.add(gi*s.grain, n)
	}
	return l, nil
}

func (s *vmdkSparse) readRun(p []byte, off int64) (int, error) {
	gi, in := off/s.grain, off%s.grain
	n := min(int64(len(p)), s.grain-in)
	kind, at, err := s.grainAt(gi)
	if err != nil {
		return 0, err
	}
	switch kind {
	case vmdkGrainNone:
		clear(p[:n])
		return int(n), nil
	case vmdkGrainCompressed:
		g, err := s.inflate(gi, at)
		if err != nil {
			return 0, err
		}
		return copy(p[:n], g[in:]), nil
	}
	// Grains that follow each other in the file are read in one call.
	for n < int64(len(p)) {
		k2, at2, err := s.grainAt(gi + 1)
		if err != nil || k2 != vmdkGrainData || at2 != at+(n+in) {
			break
		}
		gi++
		n = min(int64(len(p)), n+s.grain)
	}
	return readFileRun(s.f, s.fileSize, p[:n], at+in, "VMDK grain")
}

// inflate returns compressed grain gi, at byte at of the file, inflated.
// Only the part of the last grain inside the extent must be there.
func (s *vmdkSparse) inflate(gi, at int64) ([]byte, error) {
	if g, ok := s.grains.get(at); ok {
		return g, nil
	}
	le := binary.LittleEndian
	hdr := make([]byte, 12)
	data := at
	n := s.grain
	if s.markers {
		if err := readExact(s.f, s.fileSize, hdr, at, "VMDK grain marker"); err != nil {
			return nil, err
		}
		if lba := le.Uint64(hdr); lba != uint64(gi*s.grain/vmdkSector) {
			return nil, corrupt("VMDK grain marker", at, "for sector %d, where grain %d (sector %d) should be", lba, gi, gi*s.grain/vmdkSector)
		}
		n = int64(le.Uint32(hdr[8:]))
		data += 12
		if n == 0 || n > 2*s.grain {
			return nil, corrupt("VMDK grain marker", at, "compressed grain of %d bytes (1 to %d)", n, 2*s.grain)
		}
	}
	in := make([]byte, min(n, s.fileSize-data))
	if s.markers && int64(len(in)) < n {
		return nil, corrupt("VMDK compressed grain", at, "%d bytes would end past the end of the file (%d bytes)", n, s.fileSize)
	}
	if err := readExact(s.f, s.fileSize, in, data, "VMDK compressed grain"); err != nil {
		return nil, err
	}
	out := make([]byte, s.grain)
	want := min(s.grain, s.capacity-gi*s.grain)
	zr, err := zlib.NewReader(bytes.NewReader(in))
	if err == nil {
		_, err = io.ReadFull(zr, out[:want])
		zr.Close()
	}
	if err != nil {
		return nil, corrupt("VMDK compressed grain", at, "does not inflate to %d bytes: %v", want, err)
	}
	s.grains.put(at, out, s.grain)
	return out, nil
}
