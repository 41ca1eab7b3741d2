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
// known from Data alone, so the image streams: to a pipe the layout is
// computed first and written front to back, every cluster Data touches
// allocated (one that turns out all zero is written as zeros: its L2
// entry went out before it was read). To a regular file the same tables
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
	clusters   int64 // the clusters Data touches: the data clusters when all are allocated
}

func newQcowLayout(size int64, data []block.Extent) (*qcowLayout, error) {
	l := &qcowLayout{size: ceilTo(size, 512)}
	l.l1Entries = ceilDiv(ceilDiv(l.size, qcowCluster), qcowL2Entries)
	if l.l1Entries*8 > qcowMaxL1 {
		return nil, fmt.Errorf("qcow2: a disk of %d bytes is larger than qcow2 with 64 KiB clusters holds", size)
	}
	coverRuns(data, qcowCluster, func(start, end int64) error {
		l.clusters += (end - start) / qcowCluster
		for i := start / qcowL2Span; i <= (end-1)/qcowL2Span; i++ {
			if n := len(l.l2); n == 0 || l.l2[n-1] != i {
				l.l2 = append(l.l2, i)
			}
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
	l, err := newQcowLayout(src.Size(), data)
	if err != nil {
		return err
	}
	f, err := regularFile(out)
	if err != nil {
		return err
	}
	defer f.release()
	if f != nil {
		err = l.writeFile(ctx, f, src, data, progress)
	} else {
		err = l.writeStream(ctx, out, src, data, progress)
	}
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

// writeStream writes the image front to back, every cluster Data
// touches allocated.
func (l *qcowLayout) writeStream(ctx context.Context, out Output, src Source, data []block.Extent, progress Progress) error {
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
	// The L2 tables: the clusters Data touches, in disk order, one
	// after the other from dataOff.
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
	err := coverRuns(data, qcowCluster, func(start, end int64) error {
		for off := start; off < end; off += qcowCluster {
			if i := off / qcowL2Span; i != cur {
				if err := flush(); err != nil {
					return err
				}
				cur = i
			}
			binary.BigEndian.PutUint64(b[off%qcowL2Span/qcowCluster*8:], uint64(host)|qcowCopied)
			host += qcowCluster
		}
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
	err = readGrains(ctx, src, data, qcowCluster, nil, func(p *piece) error {
		if _, err := w.Write(p.buf); err != nil {
			return err
		}
		progress(p.data)
		return nil
	})
	if err != nil {
		return err
	}
	return w.Flush()
}

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
