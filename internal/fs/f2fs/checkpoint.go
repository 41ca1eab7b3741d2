package f2fs

// The checkpoint area holds two packs, a segment apart. A pack is a
// checkpoint block, its payload (a SIT version bitmap too large for the
// block), orphan inode blocks, the current segments' summaries, and a
// second copy of the checkpoint block: a pack is whole when both copies
// pass their CRC and carry the same version. Of two whole packs the one
// with the later version is current (get_valid_checkpoint in fsck.f2fs,
// f2fs_get_valid_checkpoint in the kernel).

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	cpBitmapOff = 192           // offsetof(struct f2fs_checkpoint, sit_nat_version_bitmap)
	cpCRCMax    = blockSize - 4 // CP_CHKSUM_OFFSET

	cpUmount         = 0x0001 // written at a clean unmount
	cpCompactSum     = 0x0004 // the data summaries are compacted into a block or more
	cpError          = 0x0008 // the kernel met an error and stopped checkpointing
	cpFsck           = 0x0010 // the kernel asks for a full fsck
	cpCRCRecovery    = 0x0040 // node footers' versions carry the checkpoint's CRC
	cpNoCRCRecovery  = 0x0200 // written by fsck: match node versions without the CRC
	cpLargeNATBitmap = 0x0400 // the NAT and SIT bitmaps sit after a CRC of their own
	cpDisabled       = 0x1000 // mounted with checkpoint=disable

	// A summary block: 512 7-byte entries, a 507-byte journal, a
	// 5-byte footer. The journal of the cold data segment's summary holds
	// SIT entries not yet written to the SIT: a count, then entries of a
	// segment number and a SIT entry.
	sumJournalOff   = 7 * blocksPerSeg
	sumJournalSize  = blockSize - 5 - sumJournalOff
	sitJournalEntry = 4 + sitEntrySize
	sitJournalMax   = (sumJournalSize - 2) / sitJournalEntry

	coldData = 2 // CURSEG_COLD_DATA: its summary carries the SIT journal
	warmNode = 1 // CURSEG_WARM_NODE - CURSEG_HOT_NODE: where fsynced nodes go
)

// checkpoint is the current pack's checkpoint block, as far as Platter
// reads it.
type checkpoint struct {
	pack        int   // 1 or 2
	start       int64 // block address of the pack
	version     uint64
	crc         uint32 // the checkpoint block's own CRC
	flags       uint32
	total       int64 // cp_pack_total_block_count
	startSum    int64 // cp_pack_start_sum
	validBlocks uint64
	nodeSeg     [3]uint32
	nodeOff     [3]uint16
	dataSeg     [3]uint32
	dataOff     [3]uint16
	head        []byte // the checkpoint block
	sitBitmap   []byte // which copy of each SIT block is current
}

// crcFrom continues f2fs_cal_crc32 from a running value.
func crcFrom(seed uint32, b []byte) uint32 {
	return ^crc32.Update(^seed, crc32.IEEETable, b)
}

// cpCRC checks a checkpoint block's CRC (f2fs_checkpoint_chksum): over
// the block up to checksum_offset and, when the CRC does not end the
// block, over the rest after it. It returns the stored CRC.
func cpCRC(b []byte) (uint32, bool) {
	le := binary.LittleEndian
	off := int(le.Uint32(b[164:]))
	if off < cpBitmapOff || off > cpCRCMax {
		return 0, false
	}
	c := crc(b[:off])
	if off < cpCRCMax {
		c = crcFrom(c, b[off+4:])
	}
	stored := le.Uint32(b[off:])
	return stored, c == stored
}

// readPack reads the pack at block start; nil when it is not whole.
func (f *fsys) readPack(n int, start int64) (*checkpoint, error) {
	le := binary.LittleEndian
	head := make([]byte, blockSize)
	if err := f.readBlock(head, start); err != nil {
		return nil, err
	}
	sum, ok := cpCRC(head)
	if !ok {
		return nil, nil
	}
	total := int64(le.Uint32(head[136:]))
	if total < 2 || total > blocksPerSeg {
		return nil, nil
	}
	tail := make([]byte, blockSize)
	if err := f.readBlock(tail, start+total-1); err != nil {
		return nil, err
	}
	if _, ok := cpCRC(tail); !ok || le.Uint64(tail) != le.Uint64(head) {
		return nil, nil
	}
	cp := &checkpoint{
		pack: n, start: start, version: le.Uint64(head), crc: sum,
		flags: le.Uint32(head[132:]), total: total, startSum: int64(le.Uint32(head[140:])),
		validBlocks: le.Uint64(head[16:]),
	}
	for i := range 3 {
		cp.nodeSeg[i] = le.Uint32(head[36+4*i:])
		cp.nodeOff[i] = le.Uint16(head[68+2*i:])
		cp.dataSeg[i] = le.Uint32(head[84+4*i:])
		cp.dataOff[i] = le.Uint16(head[116+2*i:])
	}
	cp.head = head
	return cp, nil
}

// readCheckpoint finds the current pack and reads its SIT version
// bitmap. A reason, not an error, when there is no
// pack to follow: the filesystem is still F2FS, but its map is not to
// be trusted.
func (f *fsys) readCheckpoint() (string, error) {
	cp1, err := f.readPack(1, f.sb.cpAddr)
	if err != nil {
		return "", err
	}
	cp2, err := f.readPack(2, f.sb.cpAddr+blocksPerSeg)
	if err != nil {
		return "", err
	}
	cp := cp1
	switch {
	case cp1 == nil && cp2 == nil:
		return "has no valid checkpoint (neither pack passes its CRCs with both copies of one version); neither the kernel nor fsck.f2fs can use it as it stands", nil
	case cp1 == nil || cp2 != nil && int64(cp2.version-cp1.version) > 0:
		cp = cp2
	}
	if why := f.sanity(cp); why != "" {
		return fmt.Sprintf("has a damaged checkpoint (pack %d, version %#x): %s", cp.pack, cp.version, why), nil
	}
	if err := f.bitmap(cp); err != nil {
		return "", err
	}
	f.cp = cp
	return "", nil
}

// sanity checks what the map depends on in the current pack, as
// sanity_check_ckpt does; "" when it holds.
func (f *fsys) sanity(cp *checkpoint) string {
	le := binary.LittleEndian
	head := cp.head
	for i := range 3 {
		if cp.nodeSeg[i] >= f.sb.segMain || cp.nodeOff[i] >= blocksPerSeg ||
			cp.dataSeg[i] >= f.sb.segMain || cp.dataOff[i] >= blocksPerSeg {
			return "a current segment lies outside the main area"
		}
	}
	sitSize, natSize := int64(le.Uint32(head[156:])), int64(le.Uint32(head[160:]))
	if sitSize != int64(f.sb.segSIT/2)*blocksPerSeg/8 || natSize != int64(f.sb.segNAT/2)*blocksPerSeg/8 {
		return fmt.Sprintf("SIT and NAT version bitmaps of %d and %d bytes do not fit the superblock's areas", sitSize, natSize)
	}
	if cp.startSum < f.sb.cpPayload+1 || cp.startSum > blocksPerSeg-1-6 || cp.startSum >= cp.total-1 {
		return fmt.Sprintf("summaries start at block %d of a %d-block pack", cp.startSum, cp.total)
	}
	return ""
}

// bitmap sets cp.sitBitmap to the SIT version bitmap, wherever
// __bitmap_ptr says it is.
func (f *fsys) bitmap(cp *checkpoint) error {
	le := binary.LittleEndian
	head := cp.head
	sitSize, natSize := int64(le.Uint32(head[156:])), int64(le.Uint32(head[160:]))
	var at int64
	switch {
	case cp.flags&cpLargeNATBitmap != 0:
		// NAT then SIT bitmap after a CRC of their own; the block's
		// CRC then sits at the bitmap's start.
		at = cpBitmapOff + 4 + natSize
	case f.sb.cpPayload > 0:
		// The SIT bitmap fills the payload blocks after the first.
		if sitSize > f.sb.cpPayload*blockSize {
			return corrupt((cp.start+1)*blockSize, "SIT version bitmap of %d bytes does not fit %d payload blocks", sitSize, f.sb.cpPayload)
		}
		b := make([]byte, sitSize)
		if _, err := f.r.ReadAt(b, (cp.start+1)*blockSize); err != nil {
			return fmt.Errorf("f2fs: read SIT version bitmap at block %d: %w", cp.start+1, err)
		}
		cp.sitBitmap = b
		return nil
	default:
		at = cpBitmapOff
	}
	if at+sitSize > cpCRCMax {
		return corrupt(cp.start*blockSize+at, "SIT version bitmap of %d bytes at byte %d does not fit the checkpoint block", sitSize, at)
	}
	cp.sitBitmap = head[at : at+sitSize : at+sitSize]
	return nil
}

// readJournal reads the SIT journal of the current segments' summaries:
// the compacted summaries' second journal, or the journal of the cold
// data segment's summary block (read_compacted_summaries and
// read_normal_summaries). A count too large or a segment outside the
// main area is damage fsck.f2fs repairs: a reason.
func (f *fsys) readJournal() (string, error) {
	cp := f.cp
	var addr int64
	var at int
	if cp.flags&cpCompactSum != 0 {
		addr, at = cp.start+cp.startSum, sumJournalSize
	} else {
		// sum_blk_addr: the data summaries end the pack, before the
		// node summaries when a clean unmount wrote them there.
		base := int64(3)
		if cp.flags&cpUmount != 0 {
			base = 6
		}
		addr, at = cp.start+cp.total-(base+1)+coldData, sumJournalOff
	}
	if addr <= cp.start || addr >= cp.start+cp.total-1 {
		return fmt.Sprintf("has a damaged checkpoint (pack %d): its summaries lie outside it", cp.pack), nil
	}
	b := make([]byte, blockSize)
	if err := f.readBlock(b, addr); err != nil {
		return "", err
	}
	le := binary.LittleEndian
	n := int(le.Uint16(b[at:]))
	if n > sitJournalMax {
		return fmt.Sprintf("has a damaged SIT journal (%d entries, at most %d fit; fsck.f2fs would rebuild the SIT)", n, sitJournalMax), nil
	}
	f.journal = make(map[uint32][]byte, n)
	for i := range n {
		e := b[at+2+i*sitJournalEntry:][:sitJournalEntry]
		seg := le.Uint32(e)
		if seg >= f.sb.segMain {
			return fmt.Sprintf("has a damaged SIT journal (segment %d of %d; fsck.f2fs would rebuild the SIT)", seg, f.sb.segMain), nil
		}
		f.journal[seg] = e[4:]
	}
	return "", nil
}
