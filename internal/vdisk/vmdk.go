package vdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zlib"

	"github.com/platter-dev/platter/internal/block"
)

// VMDK (VMware's "Virtual Disk Format 5.0" technote), two kinds of one
// hosted sparse extent with its descriptor embedded, 64 KiB grains and
// 512-entry grain tables:
//
// monolithicSparse (vmdk) is laid out as qemu-img writes it:
//
//	header | descriptor | redundant GD | redundant GTs | GD | GTs | grains
//
// every grain table reserved up front (a hole until it maps a grain),
// the grains that hold a non-zero byte written one after the other in
// disk order, each grain table (both copies) as its 32 MiB are done, the
// header last. It needs a file.
//
// streamOptimized (vmdk-stream) is written front to back: the header
// (its GD offset "at the end"), the descriptor, then each non-zero grain
// deflated (zlib) behind a grain marker, each grain table behind its
// marker once its grains are out (a table that maps none is left out,
// its GD entry 0), the grain directory behind its marker, the footer (the
// header again, with the GD's offset) behind its marker, and the
// end-of-stream marker: the spec's layout for streams, the one ESXi,
// vSphere and AWS VM Import take.

func init() {
	register(VMDK, writeVMDK, false)
	register(VMDKStream, writeVMDKStream, true)
}

const (
	vmdkSector       = 512
	vmdkGrainSectors = 128
	vmdkGrain        = vmdkGrainSectors * vmdkSector
	vmdkGTEntries    = 512 // a grain table maps 32 MiB
	vmdkGTSpan       = vmdkGTEntries * vmdkGrain
	vmdkGTSectors    = vmdkGTEntries * 4 / vmdkSector
	vmdkDescOffset   = 1          // sectors
	vmdkDescSectors  = 20         // 10 KiB, as qemu-img reserves
	vmdkMagic        = 0x564d444b // "KDMV"
	vmdkGDAtEnd      = ^uint64(0)
	// vmdkMaxSector is the last sector a grain table or directory entry
	// (32 bits) can point at: the file stays under 2 TiB.
	vmdkMaxSector = 1<<32 - 1

	vmdkFlagNewline    = 1 << 0
	vmdkFlagRedundant  = 1 << 1
	vmdkFlagCompressed = 1 << 16
	vmdkFlagMarkers    = 1 << 17
	vmdkDeflate        = 1

	vmdkMarkerEOS    = 0
	vmdkMarkerGT     = 1
	vmdkMarkerGD     = 2
	vmdkMarkerFooter = 3
)

// vmdkLevel is the zlib level grains are deflated at: klauspost's level
// 1 keeps up with the disk where the standard library's does not
// (docs/vm.md has the numbers).
const vmdkLevel = 1

// vmdkHeader is a SparseExtentHeader; offsets and sizes in sectors.
type vmdkHeader struct {
	version     uint32
	flags       uint32
	capacity    int64
	rgdOffset   int64
	gdOffset    uint64
	overHead    int64
	compression uint16
}

func (h *vmdkHeader) bytes() []byte {
	b := make([]byte, vmdkSector)
	le := binary.LittleEndian
	le.PutUint32(b[0:], vmdkMagic)
	le.PutUint32(b[4:], h.version)
	le.PutUint32(b[8:], h.flags)
	le.PutUint64(b[12:], uint64(h.capacity))
	le.PutUint64(b[20:], vmdkGrainSectors)
	le.PutUint64(b[28:], vmdkDescOffset)
	le.PutUint64(b[36:], vmdkDescSectors)
	le.PutUint32(b[44:], vmdkGTEntries)
	le.PutUint64(b[48:], uint64(h.rgdOffset))
	le.PutUint64(b[56:], h.gdOffset)
	le.PutUint64(b[64:], uint64(h.overHead))
	// 72: uncleanShutdown 0; then the characters a text-mode transfer
	// would mangle, for the newline test.
	b[73], b[74], b[75], b[76] = '\n', ' ', '\r', '\n'
	le.PutUint16(b[77:], h.compression)
	return b
}

// vmdkDescriptor is the embedded descriptor, padded to its sectors. The
// monolithicSparse one is qemu-img's (an IDE disk); the streamOptimized
// one is what VMware's own open-vmdk writes for OVAs (an LSI Logic disk,
// a long content ID, and ddb.toolsVersion, which vSphere and AWS read).
func vmdkDescriptor(createType string, capacity int64, name string) []byte {
	cid := rand.Uint32()
	for cid == 0xffffffff || cid == 0xfffffffe { // "no parent", "all zeros" to some readers
		cid = rand.Uint32()
	}
	var d strings.Builder
	d.WriteString("# Disk DescriptorFile\nversion=1\n")
	if createType == "streamOptimized" {
		d.WriteString("encoding=\"UTF-8\"\n")
	}
	fmt.Fprintf(&d, "CID=%08x\nparentCID=ffffffff\ncreateType=%q\n\n", cid, createType)
	fmt.Fprintf(&d, "# Extent description\nRW %d SPARSE %q\n\n", capacity, name)
	d.WriteString("# The Disk Data Base\n#DDB\n\n")
	if createType == "streamOptimized" {
		fmt.Fprintf(&d, "ddb.longContentID = \"%08x%08x%08x%08x\"\n", rand.Uint32(), rand.Uint32(), rand.Uint32(), cid)
		fmt.Fprintf(&d, "ddb.virtualHWVersion = \"4\"\n")
		fmt.Fprintf(&d, "ddb.geometry.cylinders = \"%d\"\n", min(ceilDiv(capacity, 255*63), 65535))
		d.WriteString("ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n")
		d.WriteString("ddb.adapterType = \"lsilogic\"\nddb.toolsVersion = \"2147483647\"\n")
	} else {
		fmt.Fprintf(&d, "ddb.virtualHWVersion = \"4\"\n")
		fmt.Fprintf(&d, "ddb.geometry.cylinders = \"%d\"\n", min(ceilDiv(capacity, 16*63), 16383))
		d.WriteString("ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n")
		d.WriteString("ddb.adapterType = \"ide\"\nddb.toolsVersion = \"2147483647\"\n")
	}
	b := make([]byte, vmdkDescSectors*vmdkSector)
	copy(b, d.String()) // a few hundred bytes: always fits
	return b
}

// vmdkExtentName is the file name the descriptor's extent line gives:
// the output's own (without the .partial it is written under), or
// disk.vmdk for a pipe. Readers use the file itself for an embedded
// descriptor; the name is for people and for tools that list it.
func vmdkExtentName(out Output) string {
	f, ok := out.(*os.File)
	if !ok {
		return "disk.vmdk"
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "disk.vmdk"
	}
	name := filepath.Base(f.Name())
	if i := strings.Index(name, ".partial"); i > 0 {
		name = strings.TrimPrefix(name[:i], ".")
	}
	if name == "" || strings.ContainsAny(name, "\"\\\n\r") || !strings.HasSuffix(strings.ToLower(name), ".vmdk") {
		return "disk.vmdk"
	}
	return name
}

// vmdkTables is how many grain tables a disk of capacity sectors has
// and how many sectors its grain directory takes.
func vmdkTables(capacity int64) (tables, gdSectors int64) {
	tables = ceilDiv(ceilDiv(capacity, vmdkGrainSectors), vmdkGTEntries)
	return tables, ceilDiv(tables*4, vmdkSector)
}

func writeVMDK(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f == nil {
		return fmt.Errorf("vmdk (monolithicSparse) is written to a regular file: its tables come before its data; for a pipe use vmdk-stream")
	}
	if err := writeSparseVMDK(ctx, f, src, data, progress, vmdkExtentName(out)); err != nil {
		return fmt.Errorf("vmdk: %w", err)
	}
	return nil
}

func writeSparseVMDK(ctx context.Context, f *outFile, src Source, data []block.Extent, progress Progress, name string) error {
	capacity := ceilDiv(src.Size(), vmdkSector)
	tables, gdSectors := vmdkTables(capacity)
	rgdOff := int64(vmdkDescOffset + vmdkDescSectors)
	rgtOff := rgdOff + gdSectors
	gdOff := rgtOff + tables*vmdkGTSectors
	gtOff := gdOff + gdSectors
	h := vmdkHeader{
		version:   1,
		flags:     vmdkFlagNewline | vmdkFlagRedundant,
		capacity:  capacity,
		rgdOffset: rgdOff,
		gdOffset:  uint64(gdOff),
		overHead:  ceilTo(gtOff+tables*vmdkGTSectors, vmdkGrainSectors),
	}
	if h.overHead > vmdkMaxSector {
		return fmt.Errorf("a disk of %d bytes needs grain tables past the 2 TiB a sparse extent addresses", src.Size())
	}
	if _, err := f.WriteAt(vmdkDescriptor("monolithicSparse", capacity, name), vmdkDescOffset*vmdkSector); err != nil {
		return err
	}
	// Both directories point at every table, as qemu-img's do: a table
	// that maps nothing stays a hole of zeros.
	gd := make([]byte, gdSectors*vmdkSector)
	for _, d := range []struct{ dir, tables int64 }{{rgdOff, rgtOff}, {gdOff, gtOff}} {
		for i := range tables {
			binary.LittleEndian.PutUint32(gd[i*4:], uint32(d.tables+i*vmdkGTSectors))
		}
		if _, err := f.WriteAt(gd, d.dir*vmdkSector); err != nil {
			return err
		}
	}
	gt := make([]byte, vmdkGTSectors*vmdkSector)
	cur, next := int64(-1), h.overHead // next: the sector the next grain goes to
	flush := func() error {
		if cur < 0 {
			return nil
		}
		for _, at := range []int64{gtOff, rgtOff} {
			if _, err := f.WriteAt(gt, (at+cur*vmdkGTSectors)*vmdkSector); err != nil {
				return err
			}
		}
		clear(gt)
		return nil
	}
	err := readGrains(ctx, src, data, vmdkGrain, nil, func(p *piece) error {
		// A piece never straddles two grain tables (pieceSize divides
		// vmdkGTSpan).
		if i := p.off / vmdkGTSpan; i != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = i
		}
		err := p.nonZeroRuns(vmdkGrain, func(off, n int64) error {
			if next+n/vmdkSector-1 > vmdkMaxSector {
				return fmt.Errorf("the data passes the 2 TiB a sparse extent addresses; use qcow2 or vhdx")
			}
			for g := int64(0); g < n; g += vmdkGrain {
				binary.LittleEndian.PutUint32(gt[(off+g)%vmdkGTSpan/vmdkGrain*4:], uint32(next+g/vmdkSector))
			}
			_, err := f.WriteAt(p.buf[off-p.off:off-p.off+n], next*vmdkSector)
			next += n / vmdkSector
			return err
		})
		if err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if err := f.Truncate(next * vmdkSector); err != nil {
		return err
	}
	_, err = f.WriteAt(h.bytes(), 0)
	return err
}

func writeVMDKStream(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	if err := writeStreamVMDK(ctx, out, src, data, progress, vmdkExtentName(out)); err != nil {
		return fmt.Errorf("vmdk-stream: %w", err)
	}
	return nil
}

func writeStreamVMDK(ctx context.Context, out Output, src Source, data []block.Extent, progress Progress, name string) error {
	capacity := ceilDiv(src.Size(), vmdkSector)
	_, gdSectors := vmdkTables(capacity)
	h := vmdkHeader{
		version:     3,
		flags:       vmdkFlagNewline | vmdkFlagCompressed | vmdkFlagMarkers,
		capacity:    capacity,
		gdOffset:    vmdkGDAtEnd,
		overHead:    vmdkGrainSectors, // the first grain at 64 KiB
		compression: vmdkDeflate,
	}
	w := newStreamWriter(ctx, out)
	if _, err := w.Write(h.bytes()); err != nil {
		return err
	}
	if _, err := w.Write(vmdkDescriptor("streamOptimized", capacity, name)); err != nil {
		return err
	}
	if err := w.zeros(h.overHead*vmdkSector - w.pos()); err != nil {
		return err
	}
	marker := func(sectors int64, typ uint32) error {
		var m [vmdkSector]byte
		binary.LittleEndian.PutUint64(m[0:], uint64(sectors))
		binary.LittleEndian.PutUint32(m[12:], typ)
		_, err := w.Write(m[:])
		return err
	}
	gd := make([]byte, gdSectors*vmdkSector)
	gt := make([]byte, vmdkGTSectors*vmdkSector)
	cur, mapped := int64(-1), false
	flush := func() error {
		if !mapped {
			return nil
		}
		if err := marker(vmdkGTSectors, vmdkMarkerGT); err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(gd[cur*4:], uint32(w.pos()/vmdkSector))
		_, err := w.Write(gt)
		clear(gt)
		mapped = false
		return err
	}
	deflate := newGrainDeflater(capacity * vmdkSector)
	err := readGrains(ctx, src, data, vmdkGrain, deflate.piece, func(p *piece) error {
		if i := p.off / vmdkGTSpan; i != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = i
		}
		base := w.pos()
		if (base+int64(len(p.out)))/vmdkSector > vmdkMaxSector {
			return fmt.Errorf("the compressed data passes the 2 TiB a sparse extent addresses; use qcow2 or vhdx")
		}
		for g, at := range p.at {
			if at < 0 {
				continue
			}
			i := (p.off + int64(g)*vmdkGrain) % vmdkGTSpan / vmdkGrain
			binary.LittleEndian.PutUint32(gt[i*4:], uint32((base+int64(at))/vmdkSector))
			mapped = true
		}
		if _, err := w.Write(p.out); err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	// The directory has an entry for every table, 0 for those that map
	// nothing and were left out.
	if err := marker(gdSectors, vmdkMarkerGD); err != nil {
		return err
	}
	h.gdOffset = uint64(w.pos() / vmdkSector)
	if _, err := w.Write(gd); err != nil {
		return err
	}
	if err := marker(1, vmdkMarkerFooter); err != nil {
		return err
	}
	if _, err := w.Write(h.bytes()); err != nil {
		return err
	}
	if err := marker(0, vmdkMarkerEOS); err != nil {
		return err
	}
	return w.Flush()
}

// A grainDeflater turns a piece's non-zero grains into what the stream
// holds for each: a grain marker (the grain's first sector, the length
// of what follows), the grain deflated with zlib, zeros to the next
// sector. The last grain of the disk is cut at its end, as VMware's own
// writer does.
type grainDeflater struct {
	end  int64 // the disk's end: its capacity in bytes
	pool sync.Pool
}

func newGrainDeflater(end int64) *grainDeflater { return &grainDeflater{end: end} }

func (d *grainDeflater) piece(p *piece) error {
	zw, _ := d.pool.Get().(*zlib.Writer)
	if zw == nil {
		var err error
		if zw, err = zlib.NewWriterLevel(nil, vmdkLevel); err != nil {
			return err
		}
	}
	defer d.pool.Put(zw)
	out := bytes.NewBuffer(p.out[:0])
	p.at = p.at[:0]
	for g, zero := range p.zero {
		if zero {
			p.at = append(p.at, -1)
			continue
		}
		off := p.off + int64(g)*vmdkGrain
		at := out.Len()
		p.at = append(p.at, at)
		var m [12]byte
		binary.LittleEndian.PutUint64(m[:], uint64(off/vmdkSector))
		out.Write(m[:])
		zw.Reset(out)
		if _, err := zw.Write(p.buf[off-p.off : off-p.off+min(vmdkGrain, d.end-off)]); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		binary.LittleEndian.PutUint32(out.Bytes()[at+8:], uint32(out.Len()-at-12))
		out.Write(zeroBuf[:ceilTo(int64(out.Len()), vmdkSector)-int64(out.Len())])
	}
	p.out = out.Bytes()
	return nil
}
