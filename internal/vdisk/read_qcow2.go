package vdisk

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/platter-dev/platter/internal/block"
)

// The qcow2 reader: versions 2 and 3 as qemu writes them
// (docs/interop/qcow2.txt in qemu's tree). A guest offset is found
// through two levels of tables: the L1 table (in memory) points at L2
// tables (one cluster each, cached), whose entries point at data
// clusters, at compressed clusters, or nowhere (the backing file's bytes,
// or zeros). Version 3 adds zero clusters, zstd compression and extended
// L2 entries (subclusters), all read here. Internal snapshots are
// ignored: the active L1 table is the disk. Refcounts are never read:
// they matter to writers only.

func init() { registerReader(QCOW2, openQCOW2) }

const (
	// qcowMaxL1Bytes is qemu's bound on the L1 table (QCOW_MAX_L1_SIZE).
	qcowMaxL1Bytes = 32 << 20
	// qcowMaxChain bounds a chain of backing files.
	qcowMaxChain = 16
	// qcowMaxBackingName is qemu's bound on a backing file's name.
	qcowMaxBackingName = 1023

	qcowOffsetMask = 0x00fffffffffffe00 // bits 9-55 of L1 and L2 entries
	qcowCompressed = 1 << 62
	qcowZeroFlag   = 1 // bit 0 of an L2 entry (version 3)

	// Incompatible feature bits (version 3).
	qcowDirty        = 1 << 0
	qcowCorruptBit   = 1 << 1
	qcowExternalData = 1 << 2
	qcowCompression  = 1 << 3
	qcowExtendedL2   = 1 << 4

	// Header extension types.
	qcowExtEnd            = 0
	qcowExtBackingFormat  = 0xe2792aca
	qcowExtExternalData   = 0x44415441
	qcowExtFullEncryption = 0x0537be77
)

// What a guest byte of a qcow2 is.
const (
	qcowUnallocated    = iota // the backing file's byte, or zero
	qcowZero                  // zero (a zero cluster or subcluster)
	qcowData                  // host is where it is in the file
	qcowCompressedData        // host and clen are the compressed cluster's
)

type qcowImage struct {
	f           File
	fileSize    int64
	path        string
	size        int64 // the guest disk's
	clusterBits uint
	cs          int64 // cluster size
	subBits     uint  // log2 of the subcluster size: clusterBits unless extended L2
	l2Entries   int64 // entries per L2 table
	extended    bool  // 16-byte L2 entries with a subcluster bitmap
	v3          bool
	zstd        bool
	l1          []uint64
	backing     Disk // nil: unallocated clusters read as zero

	l2       *tableCache[[]uint64]
	clusters *tableCache[[]byte]
}

// qcowChain is what opening a chain of backing files has seen: each
// file's identity (a file seen twice is a loop) and the depth.
type qcowChain struct {
	seen []os.FileInfo
}

func openQCOW2(f File, size int64, head, tail []byte, path string) (Disk, error) {
	var chain qcowChain
	if path != "" {
		if st, err := os.Stat(path); err == nil {
			chain.seen = append(chain.seen, st)
		}
	}
	return openQCOW2Chain(f, size, head, path, &chain)
}

func openQCOW2Chain(f File, fileSize int64, head []byte, path string, chain *qcowChain) (Disk, error) {
	if len(head) < 4 || binary.BigEndian.Uint32(head) != qcowMagic {
		return nil, ErrNotVirtual
	}
	be := binary.BigEndian
	if len(head) < 72 {
		return nil, corrupt("qcow2 header", 0, "the file is %d bytes, too short for a header (72)", fileSize)
	}
	q := &qcowImage{f: f, fileSize: fileSize, path: path}
	version := be.Uint32(head[4:])
	if version != 2 && version != 3 {
		return nil, refused("qcow2 version %d: only versions 2 and 3 are read", version)
	}
	q.v3 = version == 3
	backingOff, backingLen := be.Uint64(head[8:]), be.Uint32(head[16:])
	bits := be.Uint32(head[20:])
	if bits < 9 || bits > 21 {
		return nil, corrupt("qcow2 header", 20, "cluster bits %d (qemu writes 9 to 21)", bits)
	}
	q.clusterBits, q.cs, q.subBits = uint(bits), 1<<bits, uint(bits)
	vsize := be.Uint64(head[24:])
	if vsize > 1<<61 {
		return nil, corrupt("qcow2 header", 24, "virtual size %d bytes is impossible", vsize)
	}
	q.size = int64(vsize)
	if crypt := be.Uint32(head[32:]); crypt != 0 {
		return nil, refused("the qcow2 is encrypted (method %d: %s); decrypt it first (qemu-img convert with --object secret,... and --image-opts)", crypt, map[uint32]string{1: "AES", 2: "LUKS"}[crypt])
	}
	l1Size, l1Off := be.Uint32(head[36:]), be.Uint64(head[40:])

	hdrLen := uint32(72)
	if q.v3 {
		if len(head) < 104 {
			return nil, corrupt("qcow2 header", 0, "the file is %d bytes, too short for a version 3 header (104)", fileSize)
		}
		incompat := be.Uint64(head[72:])
		hdrLen = be.Uint32(head[100:])
		if hdrLen < 104 || int64(hdrLen) > q.cs || int(hdrLen) > len(head) {
			return nil, corrupt("qcow2 header", 100, "header length %d", hdrLen)
		}
		switch {
		case incompat&qcowCorruptBit != 0:
			return nil, refused("qemu marked this qcow2 corrupt: repair it first (qemu-img check -r all)")
		case incompat&qcowExternalData != 0:
			return nil, refused("the qcow2 keeps its data in an external data file: it is not read (image the data file, a raw disk, instead)")
		case incompat&^(qcowDirty|qcowCompression|qcowExtendedL2) != 0:
			return nil, refused("the qcow2 needs features this reader does not know (incompatible feature bits %#x)", incompat&^(qcowDirty|qcowCompression|qcowExtendedL2))
		}
		if hdrLen > 104 {
			switch head[104] {
			case 0:
			case 1:
				q.zstd = true
			default:
				return nil, refused("qcow2 compression type %d: only zlib (0) and zstd (1) are read", head[104])
			}
			if q.zstd && incompat&qcowCompression == 0 {
				return nil, corrupt("qcow2 header", 104, "zstd compression without its incompatible feature bit")
			}
		}
		if incompat&qcowExtendedL2 != 0 {
			if bits < 14 {
				return nil, corrupt("qcow2 header", 20, "extended L2 entries with %d-byte clusters (at least 16 KiB)", q.cs)
			}
			q.extended, q.subBits = true, uint(bits)-5 // 32 subclusters
		}
	}
	entryBytes := int64(8)
	if q.extended {
		entryBytes = 16
	}
	q.l2Entries = q.cs / entryBytes

	// Header extensions, up to the backing file's name or the end of the
	// first cluster; read from the file, as a cluster may exceed head.
	extEnd := min(q.cs, fileSize)
	if backingOff != 0 && int64(backingOff) < extEnd {
		extEnd = int64(backingOff)
	}
	first := head
	if int64(len(first)) < extEnd {
		first = make([]byte, extEnd)
		if err := readExact(f, fileSize, first, 0, "qcow2 header cluster"); err != nil {
			return nil, err
		}
	}
	backingFormat := ""
	for off := int64(hdrLen); off+8 <= extEnd; {
		typ, n := be.Uint32(first[off:]), int64(be.Uint32(first[off+4:]))
		if typ == qcowExtEnd {
			break
		}
		if n > extEnd-off-8 {
			return nil, corrupt("qcow2 header extension", off, "type %#x claims %d bytes, past the end of the header area", typ, n)
		}
		data := first[off+8 : off+8+n]
		switch typ {
		case qcowExtBackingFormat:
			backingFormat = string(data)
		case qcowExtExternalData:
			return nil, refused("the qcow2 names an external data file (%q): it is not read", data)
		case qcowExtFullEncryption:
			return nil, refused("the qcow2 is encrypted: decrypt it first")
		}
		off += 8 + (n+7)&^7
	}

	// The L1 table: as many entries as the disk needs, which must all be
	// there, in the file, before anything is allocated for them.
	perL2 := q.cs * q.l2Entries // guest bytes one L2 table maps
	need := (q.size + perL2 - 1) / perL2
	switch {
	case int64(l1Size)*8 > qcowMaxL1Bytes:
		return nil, corrupt("qcow2 header", 36, "L1 table of %d entries is larger than qemu allows (32 MiB)", l1Size)
	case int64(l1Size) < need:
		return nil, corrupt("qcow2 header", 36, "L1 table of %d entries maps less than the %d-byte disk (it needs %d)", l1Size, q.size, need)
	case need > 0 && (l1Off%uint64(q.cs) != 0 || !within(int64(l1Off&(1<<62-1)), need*8, fileSize) || l1Off >= 1<<62):
		return nil, corrupt("qcow2 L1 table", int64(l1Off&(1<<62-1)), "%d entries at a misaligned offset or past the end of the file (%d bytes)", need, fileSize)
	}
	raw := make([]byte, need*8)
	if err := readExact(f, fileSize, raw, int64(l1Off), "qcow2 L1 table"); err != nil {
		return nil, err
	}
	q.l1 = make([]uint64, need)
	for i := range q.l1 {
		q.l1[i] = be.Uint64(raw[i*8:])
	}
	q.l2 = newTableCache[[]uint64](tableCacheBytes)
	q.clusters = newTableCache[[]byte](clusterCacheBytes)

	data, zeros, err := q.scan()
	if err != nil {
		return nil, err
	}

	// The backing file, last: every check of this file has passed.
	if backingOff != 0 && backingLen > 0 {
		if backingLen > qcowMaxBackingName || !within(int64(backingOff&(1<<62-1)), int64(backingLen), min(q.cs, fileSize)) || backingOff >= 1<<62 {
			return nil, corrupt("qcow2 header", 8, "backing file name of %d bytes at byte %d is not in the first cluster", backingLen, backingOff)
		}
		name := make([]byte, backingLen)
		if err := readExact(f, fileSize, name, int64(backingOff), "qcow2 backing file name"); err != nil {
			return nil, err
		}
		b, err := q.openBacking(string(name), backingFormat, chain)
		if err != nil {
			return nil, err
		}
		q.backing = b
	}
	alloc := data
	if q.backing != nil {
		alloc = union(data, subtract(clip(q.backing.Allocated(), q.size), zeros))
	}
	d := &mappedDisk{format: QCOW2, size: q.size, alloc: alloc, readRun: q.readRun, closers: []io.Closer{f}}
	if q.backing != nil {
		d.closers = append(d.closers, q.backing)
	}
	return d, nil
}

// openBacking opens the backing file named in the header: a path
// relative to this file's directory (or absolute), a regular file, not
// one already in the chain, at most qcowMaxChain deep; qcow2 or raw.
func (q *qcowImage) openBacking(name, format string, chain *qcowChain) (Disk, error) {
	if len(chain.seen) > qcowMaxChain {
		return nil, fmt.Errorf("backing file %q: the chain of backing files is deeper than %d: refused", name, qcowMaxChain)
	}
	if format != "" && format != "raw" && format != "qcow2" {
		return nil, refused("backing file %q is %s: only qcow2 and raw backing files are read", name, format)
	}
	f, size, st, p, err := namedFile(q.path, name, false, "backing file")
	if err != nil {
		return nil, err
	}
	for _, s := range chain.seen {
		if os.SameFile(s, st) {
			f.Close()
			return nil, fmt.Errorf("backing file %q (%s) is already in the chain: the chain loops; refused", name, p)
		}
	}
	head := make([]byte, min(size, 64<<10))
	if err := readExact(f, size, head, 0, "backing file header"); err != nil {
		f.Close()
		return nil, fmt.Errorf("backing file %q: %w", name, err)
	}
	isQcow := len(head) >= 4 && binary.BigEndian.Uint32(head) == qcowMagic
	if format == "raw" || (format == "" && !isQcow) {
		return rawDisk(f, size), nil
	}
	chain.seen = append(chain.seen, st)
	d, err := openQCOW2Chain(f, size, head, p, chain)
	if err != nil {
		f.Close()
		if err == ErrNotVirtual {
			return nil, fmt.Errorf("backing file %q is not qcow2 as the header says", name)
		}
		return nil, fmt.Errorf("backing file %q: %w", name, err)
	}
	return d, nil
}

// scan walks every L2 table once, checking each entry, and returns the
// guest extents that hold data and those that read as zero in this file
// (zero clusters: they hide the backing file). Each L2 table may be used
// once: two L1 entries naming one table would be corrupt, and would let a
// small file make the scan endless.
func (q *qcowImage) scan() (data, zeros []block.Extent, err error) {
	tables := make([]uint64, 0, len(q.l1))
	for _, e := range q.l1 {
		if off := e & qcowOffsetMask; off != 0 {
			tables = append(tables, off)
		}
	}
	slices.Sort(tables)
	for i := 1; i < len(tables); i++ {
		if tables[i] == tables[i-1] {
			return nil, nil, corrupt("qcow2 L2 table", int64(tables[i]), "named by two L1 entries")
		}
	}
	var dl, zl extentList
	for i, e := range q.l1 {
		l2off := int64(e & qcowOffsetMask)
		if l2off == 0 {
			continue
		}
		t, err := q.table(l2off)
		if err != nil {
			return nil, nil, err
		}
		base := int64(i) * q.l2Entries * q.cs
		for k := int64(0); k < q.l2Entries && base+k*q.cs < q.size; k++ {
			guest := base + k*q.cs
			for off := guest; off < min(guest+q.cs, q.size); {
				kind, host, clen, n, err := q.entry(t, k, off-guest, l2off)
				if err != nil {
					return nil, nil, err
				}
				n = min(n, q.size-off)
				if n <= 0 {
					return nil, nil, fmt.Errorf("qcow2: internal error: no progress at guest byte %d", off)
				}
				switch kind {
				case qcowData:
					if !within(host, n, q.fileSize) {
						return nil, nil, corrupt("qcow2 L2 table", l2off+k*q.entryBytes(), "data cluster at byte %d lies past the end of the file (%d bytes)", host, q.fileSize)
					}
					dl.add(off, n)
				case qcowCompressedData:
					if host >= q.fileSize || clen <= 0 {
						return nil, nil, corrupt("qcow2 L2 table", l2off+k*q.entryBytes(), "compressed cluster at byte %d lies past the end of the file (%d bytes)", host, q.fileSize)
					}
					dl.add(off, n)
				case qcowZero:
					zl.add(off, n)
				}
				off += n
			}
		}
	}
	return dl, zl, nil
}

func (q *qcowImage) entryBytes() int64 {
	if q.extended {
		return 16
	}
	return 8
}

// table returns the decoded L2 table at l2off (a whole cluster).
func (q *qcowImage) table(l2off int64) ([]uint64, error) {
	if t, ok := q.l2.get(l2off); ok {
		return t, nil
	}
	if l2off%q.cs != 0 || !within(l2off, q.cs, q.fileSize) {
		return nil, corrupt("qcow2 L2 table", l2off, "misaligned or past the end of the file (%d bytes)", q.fileSize)
	}
	b := make([]byte, q.cs)
	if err := readExact(q.f, q.fileSize, b, l2off, "qcow2 L2 table"); err != nil {
		return nil, err
	}
	t := make([]uint64, q.cs/8)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(b[i*8:])
	}
	q.l2.put(l2off, t, q.cs)
	return t, nil
}

// entry says what byte in of the cluster that entry k of L2 table t
// maps is, and for how many bytes from there it stays so (to the end of
// its cluster or subcluster): host is the byte's place in the file for
// data, the compressed cluster's start (and clen its length) for
// compressed data.
func (q *qcowImage) entry(t []uint64, k, in int64, l2off int64) (kind int, host, clen, n int64, err error) {
	at := l2off + k*q.entryBytes()
	var e, bitmap uint64
	if q.extended {
		e, bitmap = t[2*k], t[2*k+1]
	} else {
		e = t[k]
	}
	if e&qcowCompressed != 0 {
		shift := 62 - (q.clusterBits - 8)
		host = int64(e & (1<<shift - 1))
		sectors := int64(e>>shift&(1<<(q.clusterBits-8)-1)) + 1
		clen = sectors*512 - host&511
		return qcowCompressedData, host, clen, q.cs - in, nil
	}
	cluster := int64(e & qcowOffsetMask)
	if cluster%q.cs != 0 {
		return 0, 0, 0, 0, corrupt("qcow2 L2 entry", at, "data cluster at byte %d is not aligned to the %d-byte clusters", cluster, q.cs)
	}
	if !q.extended {
		switch {
		case q.v3 && e&qcowZeroFlag != 0:
			return qcowZero, 0, 0, q.cs - in, nil
		case cluster == 0:
			return qcowUnallocated, 0, 0, q.cs - in, nil
		}
		return qcowData, cluster + in, 0, q.cs - in, nil
	}
	alloc, zero := uint32(bitmap), uint32(bitmap>>32)
	if alloc&zero != 0 {
		return 0, 0, 0, 0, corrupt("qcow2 L2 entry", at+8, "subclusters %#x both allocated and zero", alloc&zero)
	}
	if cluster == 0 && alloc != 0 {
		return 0, 0, 0, 0, corrupt("qcow2 L2 entry", at+8, "subclusters allocated in no cluster")
	}
	sub := uint(in >> q.subBits)
	n = (int64(sub)+1)<<q.subBits - in
	switch {
	case alloc&(1<<sub) != 0:
		return qcowData, cluster + in, 0, n, nil
	case zero&(1<<sub) != 0:
		return qcowZero, 0, 0, n, nil
	}
	return qcowUnallocated, 0, 0, n, nil
}

// lookup classifies guest byte off.
func (q *qcowImage) lookup(off int64) (kind int, host, clen, n int64, err error) {
	ci := off >> q.clusterBits
	l1i, k := ci/q.l2Entries, ci%q.l2Entries
	in := off & (q.cs - 1)
	l2off := int64(q.l1[l1i] & qcowOffsetMask)
	if l2off == 0 {
		// The whole rest of what this L2 table would map.
		return qcowUnallocated, 0, 0, (q.l2Entries-k)*q.cs - in, nil
	}
	t, err := q.table(l2off)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return q.entry(t, k, in, l2off)
}

func (q *qcowImage) readRun(p []byte, off int64) (int, error) {
	kind, host, clen, n, err := q.lookup(off)
	if err != nil {
		return 0, err
	}
	n = min(n, int64(len(p)))
	switch kind {
	case qcowUnallocated:
		return int(n), readBacking(q.backing, p[:n], off)
	case qcowZero:
		clear(p[:n])
		return int(n), nil
	case qcowCompressedData:
		c, err := q.cluster(host, clen)
		if err != nil {
			return 0, err
		}
		return copy(p[:n], c[off&(q.cs-1):]), nil
	}
	// Data: take in the clusters that follow in the file too, and read
	// them in one call.
	for n < int64(len(p)) {
		k2, h2, _, n2, err := q.lookup(off + n)
		if err != nil || k2 != qcowData || h2 != host+n {
			break
		}
		n = min(n+n2, int64(len(p)))
	}
	return readFileRun(q.f, q.fileSize, p[:n], host, "qcow2 data cluster")
}

// readBacking fills p with the backing disk's bytes at off, zeros past
// its end or where there is none.
func readBacking(b Disk, p []byte, off int64) error {
	if b == nil || off >= b.Size() {
		clear(p)
		return nil
	}
	k := min(int64(len(p)), b.Size()-off)
	if n, err := b.ReadAt(p[:k], off); int64(n) < k {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read backing file at byte %d: %w", off+int64(n), err)
	}
	clear(p[k:])
	return nil
}

// cluster returns the compressed cluster at host, decompressed. Its
// length is rounded up to whole 512-byte sectors, so it may run past the
// end of the file by less than a sector; what it must give is exactly
// one cluster.
func (q *qcowImage) cluster(host, clen int64) ([]byte, error) {
	if c, ok := q.clusters.get(host); ok {
		return c, nil
	}
	if host >= q.fileSize {
		return nil, corrupt("qcow2 compressed cluster", host, "past the end of the file (%d bytes)", q.fileSize)
	}
	in := make([]byte, min(clen, q.fileSize-host))
	if err := readExact(q.f, q.fileSize, in, host, "qcow2 compressed cluster"); err != nil {
		return nil, err
	}
	out := make([]byte, q.cs)
	var err error
	if q.zstd {
		err = zstdCluster(in, out)
	} else {
		err = deflateCluster(in, out)
	}
	if err != nil {
		return nil, corrupt("qcow2 compressed cluster", host, "does not decompress to %d bytes: %v", q.cs, err)
	}
	q.clusters.put(host, out, q.cs)
	return out, nil
}

// deflateCluster decompresses raw deflate (qcow2's zlib type: no zlib
// header) into exactly len(out) bytes; trailing input is padding.
func deflateCluster(in, out []byte) error {
	r := flate.NewReader(bytes.NewReader(in))
	defer r.Close()
	_, err := io.ReadFull(r, out)
	return err
}

// zstdDecoders holds streaming zstd decoders for compressed clusters;
// each decodes one cluster at a time, its window bounded so a hostile
// frame cannot make it allocate much.
var zstdDecoders sync.Pool

func zstdCluster(in, out []byte) error {
	d, _ := zstdDecoders.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(8<<20))
		if err != nil {
			return err
		}
	}
	defer zstdDecoders.Put(d)
	if err := d.Reset(bytes.NewReader(in)); err != nil {
		return err
	}
	_, err := io.ReadFull(d, out)
	return err
}
