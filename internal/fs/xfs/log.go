package xfs

// This file reads the internal log as xfs_repair -n and xfs_logprint do
// (xfsprogs' libxlog: xlog_find_head, xlog_find_tail) to tell whether
// mounting the filesystem would replay anything:
//
//   - head == tail (the last record is an unmount record, or the log is
//     all zeros): clean, nothing to replay;
//   - otherwise the records from tail to head are read. A filesystem
//     frozen while mounted, or left idle long enough, "covers" its log:
//     with every change written home, it logs the superblock alone,
//     twice, so that the log's tail moves past everything else. A log
//     whose records hold nothing but superblock updates is covered: the
//     AGFs and B-trees at home are current, and replaying rewrites only
//     the superblock, which is always copied. This is how an image of a
//     frozen XFS is trusted (xfs_repair -n still calls such a log dirty).
//   - anything else between tail and head (any other buffer, an inode,
//     an intent) is a change that may not be at home yet: the free-space
//     B-trees are older than the filesystem and cannot be followed.
//
// Log records are made of 512-byte basic blocks (BBs). The first word of
// every BB of a record is overwritten with the log's cycle number when
// it is written (the words it replaced are kept in the record's
// headers), which is how the head, where the cycle number drops, is
// found.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

type logState int

const (
	logClean   logState = iota // nothing to replay
	logCovered                 // only superblock updates to replay
)

const (
	logMagic       = 0xfeedbabe
	cycleSize      = 32 << 10 // XLOG_HEADER_CYCLE_SIZE: bytes of data one header BB covers
	cycleWords     = cycleSize / bbSize
	maxRecordBytes = 256 << 10 // XLOG_MAX_RECORD_BSIZE
	maxLogBytes    = 2 << 30   // XFS_MAX_LOG_BYTES, rounded up
	logWindowBBs   = 128

	// Log operation header (12 bytes, big-endian) flags and clients.
	opStart    = 0x01
	opCommit   = 0x02
	opContinue = 0x04
	opWasCont  = 0x08
	opEnd      = 0x10
	opUnmount  = 0x20
	clientTx   = 0x69
	clientLog  = 0xaa

	transMagic = 0x5452414e // "TRAN", in the writer's byte order
	itemBuf    = 0x123c     // XFS_LI_BUF
	maxRegions = 257        // XLOG_MAX_REGIONS_IN_ITEM
	maxOpenTx  = 1 << 16    // transactions in flight at once: a handful in practice
)

// logItems names log item types for messages.
var logItems = map[uint16]string{
	0x1236: "an extent-free intent", 0x1237: "an extent-free done", 0x1238: "an unlinked-inode update",
	0x123b: "an inode update", 0x123d: "a quota update", 0x123e: "a quota-off",
	0x123f: "an inode-chunk creation", 0x1240: "a reverse-map intent", 0x1241: "a reverse-map done",
	0x1242: "a refcount intent", 0x1243: "a refcount done", 0x1244: "a block-map intent", 0x1245: "a block-map done",
}

// xlog reads the internal log a window of BBs at a time.
type xlog struct {
	f      *fs
	off    int64  // byte offset of the log
	bbs    int64  // its length in BBs
	last   uint64 // LSN of the last record before the head (findTail); 0: none
	sbLast uint64 // LSN of the last record from tail to head that updates the superblock (pending)
	win    []byte
	winAt  int64 // first BB in win; -1: none
	winLen int64 // BBs in win
}

// bb returns log block n (valid until the next call).
func (l *xlog) bb(n int64) ([]byte, error) {
	if n < 0 || n >= l.bbs {
		return nil, damaged(l.off, "it points at its block %d, outside its %d", n, l.bbs)
	}
	if l.winAt < 0 || n < l.winAt || n >= l.winAt+l.winLen {
		at := n / logWindowBBs * logWindowBBs
		k := min(logWindowBBs, l.bbs-at)
		if l.win == nil {
			l.win = make([]byte, logWindowBBs*bbSize)
		}
		l.winAt = -1
		if _, err := l.f.r.ReadAt(l.win[:k*bbSize], l.off+at*bbSize); err != nil {
			return nil, fmt.Errorf("xfs: read the log at byte %d: %w", l.off+at*bbSize, err)
		}
		l.winAt, l.winLen = at, k
	}
	return l.win[(n-l.winAt)*bbSize:][:bbSize], nil
}

// cycle is the cycle number stamped on log block n.
func (l *xlog) cycle(n int64) (uint32, error) {
	b, err := l.bb(n)
	if err != nil {
		return 0, err
	}
	if be.Uint32(b) == logMagic {
		return be.Uint32(b[4:]), nil
	}
	return be.Uint32(b), nil
}

// read copies len(p)/bbSize log blocks from block n into p, wrapping
// round the end of the log.
func (l *xlog) read(p []byte, n int64) error {
	for i := int64(0); i*bbSize < int64(len(p)); i++ {
		b, err := l.bb((n + i) % l.bbs)
		if err != nil {
			return err
		}
		copy(p[i*bbSize:], b)
	}
	return nil
}

// recScan and totalScan are how far back from a head candidate the
// search looks (XLOG_REC_SHIFT, XLOG_TOTAL_REC_SHIFT): one record of the
// largest size, and all the in-core logs that may be in flight.
func (l *xlog) recScan() int64 {
	if l.f.logV2 {
		return maxRecordBytes / bbSize
	}
	return cycleSize / bbSize
}

func (l *xlog) totalScan() int64 { return 8 * l.recScan() }

// findCycleStart is a binary search for the first block in (first, last]
// stamped with cycle (xlog_find_cycle_start).
func (l *xlog) findCycleStart(first, last int64, cycle uint32) (int64, error) {
	end := last
	for mid := (first + end) / 2; mid != first && mid != end; mid = (first + end) / 2 {
		c, err := l.cycle(mid)
		if err != nil {
			return 0, err
		}
		if c == cycle {
			end = mid
		} else {
			first = mid
		}
	}
	return end, nil
}

// findVerifyCycle returns the first block of [start, start+n) stamped
// with cycle stop, or -1.
func (l *xlog) findVerifyCycle(start, n int64, stop uint32) (int64, error) {
	for i := start; i < start+n; i++ {
		c, err := l.cycle(i)
		if err != nil {
			return 0, err
		}
		if c == stop {
			return i, nil
		}
	}
	return -1, nil
}

// errLogStart is findVerifyLogRecord reaching block 0 without finding a
// record header; callers say what that means for them.
var errLogStart = &damage{msg: "no record header precedes its start"}

// findVerifyLogRecord backs *last up over a partly written record
// (xlog_find_verify_log_record): it looks for the last record header
// before *last, no further back than start, and if that record does not
// end exactly at *last (extra blocks counted from a previous call),
// moves *last to its header.
func (l *xlog) findVerifyLogRecord(start int64, last *int64, extra int64) error {
	i := *last - 1
	for ; i >= 0; i-- {
		if i < start {
			return damaged(l.off, "no record header precedes its block %d", *last)
		}
		b, err := l.bb(i)
		if err != nil {
			return err
		}
		if be.Uint32(b) == logMagic {
			break
		}
	}
	if i < 0 {
		return errLogStart
	}
	h, err := l.bb(i)
	if err != nil {
		return err
	}
	if err := l.checkUUID(h, i); err != nil {
		return err
	}
	xhdrs := int64(1)
	if l.f.logV2 {
		size := int64(be.Uint32(h[320:]))
		xhdrs = (size + cycleSize - 1) / cycleSize
	}
	if *last-i+extra != bbsOf(int64(be.Uint32(h[12:])))+xhdrs {
		*last = i
	}
	return nil
}

// checkUUID checks that the record header h (at log block n) belongs to
// this filesystem; old logs carry no UUID.
func (l *xlog) checkUUID(h []byte, n int64) error {
	u := h[304:320]
	if !bytes.Equal(u, make([]byte, 16)) && !bytes.Equal(u, l.f.uuid[:]) {
		return damaged(l.off+n*bbSize, "the record at its block %d belongs to another filesystem (UUID)", n)
	}
	return nil
}

func bbsOf(n int64) int64 { return (n + bbSize - 1) / bbSize }

// findZeroed finds the first never-written block of a log that has not
// wrapped yet (xlog_find_zeroed): ok is false when every block has been
// written.
func (l *xlog) findZeroed() (blk int64, ok bool, err error) {
	first, err := l.cycle(0)
	if err != nil || first == 0 {
		return 0, err == nil, err
	}
	last, err := l.cycle(l.bbs - 1)
	if err != nil || last != 0 {
		return 0, false, err
	}
	if first != 1 {
		return 0, false, damaged(l.off, "its last block was never written but its first is in cycle %d", first)
	}
	lastBlk, err := l.findCycleStart(0, l.bbs-1, 0)
	if err != nil {
		return 0, false, err
	}
	n := min(l.totalScan(), lastBlk)
	start := lastBlk - n
	nb, err := l.findVerifyCycle(start, n, 0)
	if err != nil {
		return 0, false, err
	}
	if nb != -1 {
		lastBlk = nb
	}
	if err := l.findVerifyLogRecord(start, &lastBlk, 0); err != nil {
		if err == errLogStart {
			err = damaged(l.off, "no record header precedes its first unwritten block")
		}
		return 0, false, err
	}
	return lastBlk, true, nil
}

// findHead finds the block after the last one written (xlog_find_head).
func (l *xlog) findHead() (int64, error) {
	blk, zeroed, err := l.findZeroed()
	if err != nil || zeroed {
		return blk, err
	}
	firstCycle, err := l.cycle(0)
	if err != nil {
		return 0, err
	}
	headBlk := l.bbs - 1
	lastCycle, err := l.cycle(headBlk)
	if err != nil {
		return 0, err
	}
	var stop uint32
	if firstCycle == lastCycle {
		// Every block in one cycle: look for a hole of the cycle before
		// near the end.
		headBlk, stop = l.bbs, lastCycle-1
	} else {
		stop = lastCycle
		if headBlk, err = l.findCycleStart(0, headBlk, lastCycle); err != nil {
			return 0, err
		}
	}
	n := l.totalScan()
	if headBlk >= n {
		nb, err := l.findVerifyCycle(headBlk-n, n, stop)
		if err != nil {
			return 0, err
		}
		if nb != -1 {
			headBlk = nb
		}
	} else {
		// Scan the physical end of the log for the cycle before, then
		// its start for this one. (A log shorter than the scan is
		// scanned from the head candidate.)
		start := max(l.bbs-(n-headBlk), headBlk)
		nb, err := l.findVerifyCycle(start, l.bbs-start, stop-1)
		if err != nil {
			return 0, err
		}
		if nb != -1 {
			headBlk = nb
		} else {
			if nb, err = l.findVerifyCycle(0, headBlk, stop); err != nil {
				return 0, err
			}
			if nb != -1 {
				headBlk = nb
			}
		}
	}
	n = l.recScan()
	if headBlk >= n {
		if err := l.findVerifyLogRecord(headBlk-n, &headBlk, 0); err != nil {
			if err == errLogStart {
				err = damaged(l.off, "no record header precedes its head")
			}
			return 0, err
		}
	} else {
		err := l.findVerifyLogRecord(0, &headBlk, 0)
		if err == errLogStart {
			// Reached block 0: the last record may end at the physical
			// end of the log.
			newBlk := l.bbs
			err = l.findVerifyLogRecord(max(l.bbs-(n-headBlk), headBlk), &newBlk, headBlk)
			if err == errLogStart {
				err = damaged(l.off, "no record header precedes its head")
			}
			if err == nil && newBlk != l.bbs {
				headBlk = newBlk
			}
		}
		if err != nil {
			return 0, err
		}
	}
	if headBlk == l.bbs {
		headBlk = 0
	}
	return headBlk, nil
}

// findTail finds the head and the tail (xlog_find_tail): the tail is
// what the last record before the head names, or the head itself when
// that record is an unmount record.
func (l *xlog) findTail() (head, tail int64, err error) {
	if head, err = l.findHead(); err != nil {
		return 0, 0, err
	}
	if head == 0 {
		c, err := l.cycle(0)
		if err != nil || c == 0 {
			return 0, 0, err // never written: nothing to replay
		}
	}
	// The last record header before the head, wrapping round.
	found := int64(-1)
	for i := head - 1; i >= 0 && found < 0; i-- {
		b, err := l.bb(i)
		if err != nil {
			return 0, 0, err
		}
		if be.Uint32(b) == logMagic {
			found = i
		}
	}
	for i := l.bbs - 1; i >= head && found < 0; i-- {
		b, err := l.bb(i)
		if err != nil {
			return 0, 0, err
		}
		if be.Uint32(b) == logMagic {
			found = i
		}
	}
	if found < 0 {
		return 0, 0, damaged(l.off, "it has no record header")
	}
	h, err := l.bb(found)
	if err != nil {
		return 0, 0, err
	}
	l.last = be.Uint64(h[16:])
	tail = int64(be.Uint64(h[24:]) & 0xffffffff)
	if tail >= l.bbs {
		return 0, 0, damaged(l.off+found*bbSize, "its last record names block %d of %d as its tail", tail, l.bbs)
	}
	hblks := l.headerBlocks(h)
	after := (found + hblks + bbsOf(int64(be.Uint32(h[12:])))) % l.bbs
	if head == after && be.Uint32(h[40:]) == 1 {
		op, err := l.bb((found + hblks) % l.bbs)
		if err != nil {
			return 0, 0, err
		}
		if op[9]&opUnmount != 0 {
			tail = after
		}
	}
	return head, tail, nil
}

// headerBlocks is the number of BBs of the header of the record whose
// first header block is h: version 2 records of more than 32 KiB carry
// one more header block for the cycle words of each 32 KiB.
func (l *xlog) headerBlocks(h []byte) int64 {
	size := int64(be.Uint32(h[320:]))
	if l.f.logV2 && be.Uint32(h[8:])&2 != 0 && size > cycleSize {
		return (size + cycleSize - 1) / cycleSize
	}
	return 1
}

// logState reads the log and says whether mounting would replay
// anything but superblock updates; why is set when it would, or when the
// log cannot be read.
func (f *fs) logState() (logState, string, error) {
	if f.logBlocks*f.blockSize > maxLogBytes {
		return 0, fmt.Sprintf("has a log of %d bytes, more than Linux mounts", f.logBlocks*f.blockSize), nil
	}
	l := &xlog{f: f, off: f.logStart * f.blockSize, bbs: f.logBlocks * f.blockSize / bbSize, winAt: -1}
	cannot := func(err error) (logState, string, error) {
		var d *damage
		if errors.As(err, &d) {
			return 0, fmt.Sprintf("has a log that cannot be read (%s): xfs_repair cannot tell whether it holds changes to replay, and mounting may need blocks its free-space B-trees call free", d), nil
		}
		return 0, "", err
	}
	head, tail, err := l.findTail()
	if err != nil {
		return cannot(err)
	}
	f.logLSN = l.last
	if head == tail {
		return logClean, "", nil
	}
	what, at, err := l.pending(tail, head)
	if err != nil {
		return cannot(err)
	}
	if what == "" {
		f.sbLogLSN = l.sbLast
		return logCovered, "", nil
	}
	return 0, fmt.Sprintf("was not cleanly unmounted: its log holds changes that may not be written home yet (first %s, in the record at log block %d of the %d from its tail at %d to its head at %d); mounting replays them, and may need blocks its free-space B-trees call free", what, at, (head-tail+l.bbs)%l.bbs, tail, head), nil
}

// logTx is a transaction being read from the log.
type logTx struct {
	lsn          uint64 // the record it starts in: a checkpoint's sequence number
	hdr          int64  // bytes of its transaction header read
	total, count int64  // regions of its current item, and read so far
	first        []byte // the start of that item's first region (its format)
}

// pending reads the records from tail to head and returns the first log
// item in them that is not a superblock update ("" when there is none)
// and the log block of its record.
func (l *xlog) pending(tail, head int64) (string, int64, error) {
	dist := (head - tail + l.bbs) % l.bbs
	txs := map[uint32]*logTx{}
	hdr := make([]byte, 8*bbSize)
	var data []byte
	for walked, blk := int64(0), tail; walked < dist; {
		if err := l.read(hdr[:bbSize], blk); err != nil {
			return "", 0, err
		}
		bad := func(format string, args ...any) (string, int64, error) {
			return "", 0, damaged(l.off+blk*bbSize, "the record at its block %d: %s", blk, fmt.Sprintf(format, args...))
		}
		version, hlen, size := be.Uint32(hdr[8:]), int64(be.Uint32(hdr[12:])), int64(be.Uint32(hdr[320:]))
		switch {
		case be.Uint32(hdr) != logMagic:
			return bad("no record header where the previous record ends")
		case version == 0 || version&^3 != 0:
			return bad("version %d", version)
		case hlen <= 0 || hlen > maxRecordBytes || l.f.logV2 && version&2 != 0 && size > maxRecordBytes:
			return bad("%d bytes long in a %d-byte record", hlen, size)
		}
		hblks, bblks := l.headerBlocks(hdr), bbsOf(hlen)
		if walked+hblks+bblks > dist {
			return bad("it runs past the head")
		}
		if err := l.read(hdr[:hblks*bbSize], blk); err != nil {
			return "", 0, err
		}
		if err := l.checkUUID(hdr, blk); err != nil {
			return "", 0, err
		}
		if int64(cap(data)) < bblks*bbSize {
			data = make([]byte, bblks*bbSize)
		}
		data = data[:bblks*bbSize]
		if err := l.read(data, blk+hblks); err != nil {
			return "", 0, err
		}
		if l.f.crc && !l.recordCRCOK(hdr[:hblks*bbSize], data[:hlen]) {
			return bad("it fails its checksum")
		}
		// Put back the first word of each data block.
		for i := range bblks {
			j, k := i/cycleWords, i%cycleWords
			if j >= hblks {
				return bad("%d data blocks and %d header blocks", bblks, hblks)
			}
			src := hdr[44+4*k:]
			if j > 0 {
				src = hdr[j*bbSize+4+4*k:]
			}
			copy(data[i*bbSize:i*bbSize+4], src[:4])
		}
		var order binary.ByteOrder = binary.LittleEndian
		if f := be.Uint32(hdr[300:]); f == 2 || f == 3 { // big-endian Linux, IRIX
			order = binary.BigEndian
		}
		what, sb, err := l.ops(txs, data[:hlen], int64(be.Uint32(hdr[40:])), be.Uint64(hdr[16:]), order)
		var d *damage
		if errors.As(err, &d) {
			return bad("%s", d.msg)
		}
		if what != "" {
			return what, blk, nil
		}
		l.sbLast = max(l.sbLast, sb)
		blk = (blk + hblks + bblks) % l.bbs
		walked += hblks + bblks
	}
	return "", 0, nil
}

// recordCRCOK checks a v5 log record's CRC32C (xlog_cksum): over its
// first header (with the CRC field as zero), its extension headers' cycle
// words and its data as written. The first header's length is that of
// struct xlog_rec_header, 328 bytes on 64-bit machines and 324 on i386.
func (l *xlog) recordCRCOK(hdr, data []byte) bool {
	if ignoreCRCs {
		return true
	}
	want := binary.LittleEndian.Uint32(hdr[32:])
	xheads := (int64(len(data)) + cycleSize - 1) / cycleSize
	if xheads*bbSize > int64(len(hdr)) {
		return false
	}
	for _, n := range []int{328, 324} {
		c := crcOf(hdr[:n], 32)
		for i := int64(1); i < xheads; i++ {
			c = crc32Update(c, hdr[i*bbSize:i*bbSize+4+4*cycleWords])
		}
		if crc32Update(c, data) == want {
			return true
		}
	}
	return false
}

// ops reads the log operations of one record (xlog_recover_process_data)
// whose sequence number is lsn, and returns the first log item that is
// not a superblock update, and the sequence number of the last
// transaction (checkpoint) in it that updates the superblock (0: none):
// what the kernel stamps on the superblock when it writes it home.
func (l *xlog) ops(txs map[uint32]*logTx, d []byte, n int64, lsn uint64, order binary.ByteOrder) (what string, sbLSN uint64, err error) {
	for p := int64(0); p < int64(len(d)) && n > 0; n-- {
		if p+12 > int64(len(d)) {
			return "", 0, damaged(0, "an operation header past the end of the record")
		}
		tid, length, client, flags := be.Uint32(d[p:]), int64(be.Uint32(d[p+4:])), d[p+8], d[p+9]
		p += 12
		if client != clientTx && client != clientLog {
			return "", 0, damaged(0, "an operation of client %#x", client)
		}
		if length > int64(len(d))-p {
			return "", 0, damaged(0, "an operation of %d bytes past the end of the record", length)
		}
		payload := d[p : p+length]
		p += length
		tx := txs[tid]
		if tx == nil {
			// Operations of a transaction that began before the tail
			// are not replayed.
			if flags&opStart != 0 {
				if len(txs) >= maxOpenTx {
					return "", 0, damaged(0, "more than %d transactions open at once", maxOpenTx)
				}
				txs[tid] = &logTx{lsn: lsn}
			}
			continue
		}
		fl := flags &^ opEnd
		if fl&opWasCont != 0 {
			fl &^= opContinue
		}
		switch fl {
		case opCommit:
			delete(txs, tid)
		case opUnmount:
		case opWasCont:
			err = tx.more(payload, order)
		case 0, opContinue:
			err = tx.region(payload, order)
		default:
			err = damaged(0, "an operation with flags %#x", flags)
		}
		if err != nil {
			return "", 0, err
		}
		what, isSB := tx.judge(order)
		if what != "" {
			return what, 0, nil
		}
		if isSB {
			sbLSN = max(sbLSN, tx.lsn)
		}
	}
	return "", sbLSN, nil
}

// region adds a new region to a transaction: its header, or the first
// region of a log item (whose first two 16-bit words are its type and
// its number of regions), or one of the item's other regions.
func (tx *logTx) region(b []byte, order binary.ByteOrder) error {
	switch {
	case len(b) == 0:
		return nil
	case tx.hdr < 16:
		if tx.hdr == 0 && (len(b) < 4 || order.Uint32(b) != transMagic) {
			return damaged(0, "a transaction without its header")
		}
		if tx.hdr += int64(len(b)); tx.hdr > 16 {
			return damaged(0, "a transaction header of %d bytes", tx.hdr)
		}
		return nil
	case tx.total == 0 || tx.count == tx.total:
		if len(b) < 4 {
			return damaged(0, "a log item of %d bytes", len(b))
		}
		tx.total, tx.count = int64(order.Uint16(b[2:])), 1
		if tx.total == 0 || tx.total > maxRegions {
			return damaged(0, "a log item of %d regions", tx.total)
		}
		tx.first = append(tx.first[:0], b[:min(len(b), 16)]...)
		return nil
	default:
		tx.count++
		return nil
	}
}

// more continues the last region of a transaction.
func (tx *logTx) more(b []byte, order binary.ByteOrder) error {
	switch {
	case tx.hdr < 16:
		if tx.hdr == 0 {
			return tx.region(b, order)
		}
		if tx.hdr += int64(len(b)); tx.hdr > 16 {
			return damaged(0, "a transaction header of %d bytes", tx.hdr)
		}
	case tx.count == 1 && len(tx.first) < 16:
		tx.first = append(tx.first, b[:min(len(b), 16-len(tx.first))]...)
	}
	return nil
}

// judge names the current item of a transaction if it is anything but a
// buffer at disk address 0, the superblock ("" while its format is not
// read far enough to tell), and says whether it is the superblock.
func (tx *logTx) judge(order binary.ByteOrder) (string, bool) {
	if tx.count != 1 || len(tx.first) < 2 {
		return "", false
	}
	typ := order.Uint16(tx.first)
	if typ != itemBuf {
		if name, ok := logItems[typ]; ok {
			return name, false
		}
		return fmt.Sprintf("a log item of type %#x", typ), false
	}
	if len(tx.first) < 16 {
		return "", false
	}
	if blk := order.Uint64(tx.first[8:]); blk != 0 {
		return fmt.Sprintf("a logged buffer at sector %d", blk), false
	}
	return "", true
}
