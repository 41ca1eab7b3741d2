package vdisk

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/platter-dev/platter/internal/block"
)

// qcow2, version 3 (docs/interop/qcow2.txt in QEMU): 64 KiB clusters,
// 16-bit refcounts (order 4), no compression, no backing file, no
// snapshots. The file is laid out as
//
//	header | L1 table | refcount table | refcount blocks | L2 tables | data clusters
//
// with the data clusters in disk order. Everything before the data is
// known once it is known which clusters hold data, so the image streams:
// to a pipe a first pass reads the data and marks its all-zero
// clusters, then the layout is computed and written front to back with
// only the other clusters allocated, read a second time
// (writeQcowStream). To a regular file the same tables
// are reserved, only the clusters that hold a non-zero byte are written,
// one after the other, and the tables are filled in after them, the
// header last: a file cut short is no qcow2 at all.

func init() { register(QCOW2, writeQCOW2, true) }

const (
	qcowCluster      = 1 << 16
	qcowClusterBits  = 16
	qcowL2Entries    = qcowCluster / 8 // one L2 table maps 512 MiB
	qcowL2Span       = qcowL2Entries * qcowCluster
	qcowRefsPerBlock = qcowCluster / 2 // 16-bit refcounts
	qcowRefOrder     = 4
	qcowHeaderLen    = 104
	qcowMagic        = 0x514649fb // "QFI\xfb"
	// qcowCopied marks an L1 or L2 entry whose cluster's refcount is
	// exactly 1; qemu-img check insists on it.
	qcowCopied = 1 << 63
	// qcowMaxL1 is QEMU's limit on the L1 table (QCOW_MAX_L1_SIZE): 4Mi
	// entries, 2 PiB of disk at 64 KiB clusters.
	qcowMaxL1 = 32 << 20
)

// qcowLayout is where everything goes, all offsets in bytes.
type qcowLayout struct {
	size       int64 // the virtual size: the disk's, rounded up to a sector
	l1Entries  int64
	l1Off      int64
	rtOff      int64 // the refcount table
	rtClusters int64
	rbOff      int64 // the refcount blocks
	rbBlocks   int64
	l2Off      int64
	l2         []int64 // the L1 indices that have an L2 table; table k is at l2Off + k*qcowCluster
	dataOff    int64
	clusters   int64 // the data clusters: those Data touches, less the all-zero ones when those are known (a stream)
}

// newQcowLayout lays out a disk of size bytes whose data clusters are
// those data touches, less those zero says are all zero (zero nil: none
// is left out; zero's bits are the touched clusters in disk order).
func newQcowLayout(size int64, data []block.Extent, zero *bitset) (*qcowLayout, error) {
	l := &qcowLayout{size: ceilTo(size, 512)}
	l.l1Entries = ceilDiv(ceilDiv(l.size, qcowCluster), qcowL2Entries)
	if l.l1Entries*8 > qcowMaxL1 {
		return nil, fmt.Errorf("qcow2: a disk of %d bytes is larger than qcow2 with 64 KiB clusters holds", size)
	}
	l.eachCluster(data, zero, func(off int64) error {
		l.clusters++
		if i, n := off/qcowL2Span, len(l.l2); n == 0 || l.l2[n-1] != i {
			l.l2 = append(l.l2, i)
		}
		return nil
	})
	l1Clusters := max(1, ceilDiv(l.l1Entries*8, qcowCluster))
	// The refcount blocks count every cluster of the file, themselves
	// and the table that points at them included: grow both until they
	// cover it all.
	l.rbBlocks, l.rtClusters = 1, 1
	for {
		total := 1 + l1Clusters + l.rtClusters + l.rbBlocks + int64(len(l.l2)) + l.clusters
		rb := ceilDiv(total, qcowRefsPerBlock)
		rt := ceilDiv(rb*8, qcowCluster)
		if rb <= l.rbBlocks && rt <= l.rtClusters {
			break
		}
		l.rbBlocks, l.rtClusters = max(rb, l.rbBlocks), max(rt, l.rtClusters)
	}
	l.l1Off = qcowCluster
	l.rtOff = l.l1Off + l1Clusters*qcowCluster
	l.rbOff = l.rtOff + l.rtClusters*qcowCluster
	l.l2Off = l.rbOff + l.rbBlocks*qcowCluster
	l.dataOff = l.l2Off + int64(len(l.l2))*qcowCluster
	return l, nil
}

// eachCluster calls fn with the disk offset of each cluster data
// touches, in order, but those zero marks.
func (l *qcowLayout) eachCluster(data []block.Extent, zero *bitset, fn func(off int64) error) error {
	var idx int64
	return coverRuns(data, qcowCluster, func(start, end int64) error {
		for off := start; off < end; off += qcowCluster {
			if zero != nil && zero.get(idx) {
				idx++
				continue
			}
			idx++
			if err := fn(off); err != nil {
				return err
			}
		}
		return nil
	})
}

// header is the first cluster.
func (l *qcowLayout) header() []byte {
	h := make([]byte, qcowCluster)
	binary.BigEndian.PutUint32(h[0:], qcowMagic)
	binary.BigEndian.PutUint32(h[4:], 3)
	// 8: backing file offset, 16: its length: none
	binary.BigEndian.PutUint32(h[20:], qcowClusterBits)
	binary.BigEndian.PutUint64(h[24:], uint64(l.size))
	// 32: encryption: none
	binary.BigEndian.PutUint32(h[36:], uint32(l.l1Entries))
	binary.BigEndian.PutUint64(h[40:], uint64(l.l1Off))
	binary.BigEndian.PutUint64(h[48:], uint64(l.rtOff))
	binary.BigEndian.PutUint32(h[56:], uint32(l.rtClusters))
	// 60, 64: snapshots: none; 72, 80, 88: feature bits: none
	binary.BigEndian.PutUint32(h[96:], qcowRefOrder)
	binary.BigEndian.PutUint32(h[100:], qcowHeaderLen)
	// 104: the end of the header extensions, type 0 length 0: zeros
	return h
}

func (l *qcowLayout) l1() []byte {
	b := make([]byte, l.rtOff-l.l1Off)
	for k, i := range l.l2 {
		binary.BigEndian.PutUint64(b[i*8:], uint64(l.l2Off+int64(k)*qcowCluster)|qcowCopied)
	}
	return b
}

func (l *qcowLayout) refTable() []byte {
	b := make([]byte, l.rtClusters*qcowCluster)
	for k := range l.rbBlocks {
		binary.BigEndian.PutUint64(b[k*8:], uint64(l.rbOff+k*qcowCluster))
	}
	return b
}

// refBlock fills b with refcount block k for a file of used clusters,
// each referenced once; it says whether any is.
func refBlock(b []byte, k, used int64) bool {
	clear(b)
	n := min(max(used-k*qcowRefsPerBlock, 0), qcowRefsPerBlock)
	for i := range n {
		binary.BigEndian.PutUint16(b[i*2:], 1)
	}
	return n > 0
}

func writeQCOW2(ctx context.Context, out Output, src Source, progress Progress) error {
	data, err := checkData(src)
	if err != nil {
		return err
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f != nil {
		var l *qcowLayout
		if l, err = newQcowLayout(src.Size(), data, nil); err == nil {
			err = l.writeFile(ctx, f, src, data, progress)
		}
	} else {
		err = writeQcowStream(ctx, out, src, data, progress)
	}
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

// writeQcowStream writes the image front to back. Its tables come
// before the data, so which clusters are all zero must be known before
// the first table is written: a first pass reads the data and marks
// them (a bit per cluster Data touches), then the tables are laid out
// without them, and a second pass reads the data again and writes the
// other clusters. Each pass decodes every chunk once; memory stays the
// pieces in flight and the bits.
func writeQcowStream(ctx context.Context, out Output, src Source, data []block.Extent, progress Progress) error {
	if _, err := newQcowLayout(src.Size(), nil, nil); err != nil {
		return err // too large: said before the first pass, not after
	}
	var touched int64
	coverRuns(data, qcowCluster, func(start, end int64) error {
		touched += (end - start) / qcowCluster
		return nil
	})
	zero := newBitset(touched)
	var idx int64
	err := readGrains(ctx, src, data, qcowCluster, nil, func(p *piece) error {
		for _, z := range p.zero {
			if z {
				zero.set(idx)
			}
			idx++
		}
		progress(p.data / 2)
		return nil
	})
	if err != nil {
		return err
	}
	l, err := newQcowLayout(src.Size(), data, zero)
	if err != nil {
		return err
	}
	return l.writeStream(ctx, out, src, data, zero, progress)
}

// writeStream writes the image front to back, every cluster Data
// touches allocated but those zero marks (the first pass's finding).
func (l *qcowLayout) writeStream(ctx context.Context, out Output, src Source, data []block.Extent, zero *bitset, progress Progress) error {
	w := newStreamWriter(ctx, out)
	used := l.dataOff/qcowCluster + l.clusters
	for _, b := range [][]byte{l.header(), l.l1(), l.refTable()} {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	b := make([]byte, qcowCluster)
	for k := range l.rbBlocks {
		refBlock(b, k, used)
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	// The L2 tables: the clusters kept, in disk order, one after the
	// other from dataOff; a table that would map none is not written.
	clear(b)
	cur, host := int64(-1), l.dataOff
	flush := func() error {
		if cur < 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := w.Write(b)
		clear(b)
		return err
	}
	err := l.eachCluster(data, zero, func(off int64) error {
		if i := off / qcowL2Span; i != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = i
		}
		binary.BigEndian.PutUint64(b[off%qcowL2Span/qcowCluster*8:], uint64(host)|qcowCopied)
		host += qcowCluster
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if w.pos() != l.dataOff {
		return fmt.Errorf("internal error: the tables end at byte %d, the data was to start at %d", w.pos(), l.dataOff)
	}
	var idx int64
	err = readGrains(ctx, src, data, qcowCluster, nil, func(p *piece) error {
		for i, z := range p.zero {
			if z != zero.get(idx) {
				// The tables already say otherwise: the source must read
				// the same twice (an image's chunks are verified).
				return fmt.Errorf("the disk read differently on the second pass at byte %d", p.off+int64(i)*qcowCluster)
			}
			idx++
		}
		err := p.nonZeroRuns(qcowCluster, func(off, n int64) error {
			_, err := w.Write(p.buf[off-p.off : off-p.off+n])
			return err
		})
		if err != nil {
			return err
		}
		progress(p.data - p.data/2)
		return nil
	})
	if err != nil {
		return err
	}
	if end := l.dataOff + l.clusters*qcowCluster; w.pos() != end {
		return fmt.Errorf("internal error: the data ends at byte %d, the tables say %d", w.pos(), end)
	}
	return w.Flush()
}

// A bitset holds n bits, all clear at first.
type bitset struct{ w []uint64 }

func newBitset(n int64) *bitset { return &bitset{w: make([]uint64, ceilDiv(n, 64))} }

func (b *bitset) set(i int64)      { b.w[i/64] |= 1 << (i % 64) }
func (b *bitset) get(i int64) bool { return i/64 < int64(len(b.w)) && b.w[i/64]&(1<<(i%64)) != 0 }

// writeFile writes into the regular file f the clusters that hold
// data, then the tables that find them, then the header.
func (l *qcowLayout) writeFile(ctx context.Context, f *outFile, src Source, data []block.Extent, progress Progress) error {
	table := make([]byte, qcowCluster)
	cur, slot := int64(-1), 0
	next := l.dataOff // where the next data cluster goes
	flush := func() error {
		if cur < 0 {
			return nil
		}
		for l.l2[slot] != cur {
			slot++
		}
		_, err := f.WriteAt(table, l.l2Off+int64(slot)*qcowCluster)
		clear(table)
		return err
	}
	err := readGrains(ctx, src, data, qcowCluster, nil, func(p *piece) error {
		// A piece never straddles two L2 tables (pieceSize divides
		// qcowL2Span).
		if i := p.off / qcowL2Span; i != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = i
		}
		err := p.nonZeroRuns(qcowCluster, func(off, n int64) error {
			for c := int64(0); c < n; c += qcowCluster {
				binary.BigEndian.PutUint64(table[(off+c)%qcowL2Span/qcowCluster*8:], uint64(next+c)|qcowCopied)
			}
			_, err := f.WriteAt(p.buf[off-p.off:off-p.off+n], next)
			next += n
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
	b := make([]byte, qcowCluster)
	for k := range l.rbBlocks {
		if !refBlock(b, k, next/qcowCluster) {
			break
		}
		if _, err := f.WriteAt(b, l.rbOff+k*qcowCluster); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(l.refTable(), l.rtOff); err != nil {
		return err
	}
	if _, err := f.WriteAt(l.l1(), l.l1Off); err != nil {
		return err
	}
	if err := f.Truncate(next); err != nil {
		return err
	}
	_, err = f.WriteAt(l.header()[:512], 0)
	return err
}
