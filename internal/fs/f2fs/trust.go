package f2fs

// This file decides whether the current checkpoint's SIT can be
// followed. It cannot when the kernel or fsck.f2fs would, before using
// the filesystem, read or keep blocks the SIT calls free:
//
//   - no checkpoint pack is whole, or the current one is damaged
//     (fsck.f2fs and the kernel refuse it);
//   - the checkpoint was not written at a clean unmount (no CP_UMOUNT):
//     fsck.f2fs then records the data fsynced since (need_fsync_data_record)
//     and the kernel rolls it forward at the next mount, from blocks
//     written after the checkpoint, which it calls free;
//   - even after a clean unmount, the warm node log goes on with a node
//     of the checkpoint's version (is_recoverable_dnode): the filesystem
//     was mounted again and written without a checkpoint;
//   - the filesystem asks for fsck (CP_FSCK_FLAG), stopped after an error
//     (CP_ERROR_FLAG, s_errors, s_stop_reason), or was mounted with
//     checkpoint=disable;
//   - a SIT entry contradicts itself (its count against its map, its
//     type): fsck.f2fs would rebuild the SIT from the node tree, which
//     may use blocks the SIT calls free;
//   - it spans several devices, of which this is only one.

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

const (
	footerVersion = blockSize - 12 // node_footer.cp_ver: nid, ino, flag, cp_ver, next_blkaddr end a node block
	segTypes      = 6              // NO_CHECK_TYPE: hot, warm, cold data and node
)

// distrust reads the checkpoint and returns why the map cannot be
// followed ("" when it can).
func (f *fsys) distrust() (string, error) {
	sb := f.sb
	if sb.multiDevice {
		return "spans several devices (its superblock lists them), and this is only one of them", nil
	}
	if why, err := f.readCheckpoint(); why != "" || err != nil {
		return why, err
	}
	cp := f.cp
	const repair = "fsck.f2fs would check and repair it, and may need blocks its SIT calls free"
	switch {
	case cp.flags&cpFsck != 0:
		return "asks for a full check (CP_FSCK_FLAG in its checkpoint): " + repair, nil
	case cp.flags&cpError != 0:
		return "stopped after an error (CP_ERROR_FLAG in its checkpoint): " + repair, nil
	case sb.errors:
		return "recorded errors in its superblock (s_errors): " + repair, nil
	case sb.abnormalStop:
		return "stopped checkpointing for a reason other than a shutdown (s_stop_reason): " + repair, nil
	case cp.flags&cpDisabled != 0:
		return "was mounted with checkpoint=disable: what it wrote since its last checkpoint lies in blocks that checkpoint calls free", nil
	case cp.flags&cpUmount == 0:
		return fmt.Sprintf("was not cleanly unmounted (its checkpoint, version %#x, lacks CP_UMOUNT): the kernel rolls forward data fsynced since, from blocks that checkpoint calls free", cp.version), nil
	}
	// The journal's place depends on the flags above (summaries of a
	// checkpoint taken while mounted lie elsewhere in the pack).
	if why, err := f.readJournal(); why != "" || err != nil {
		return why, err
	}
	if why, err := f.rollForward(); why != "" || err != nil {
		return why, err
	}
	return f.checkSIT()
}

// rollForward reads the block after the warm node log's last, where the
// kernel starts its roll-forward (find_fsync_dnodes): a node there with
// the checkpoint's version, in a block the checkpoint calls free, was
// written after it. A read-only filesystem (mkfs.f2fs -O ro) is never
// written, nor rolled forward.
func (f *fsys) rollForward() (string, error) {
	cp := f.cp
	if f.sb.features&featureRO != 0 {
		return "", nil
	}
	seg, off := cp.nodeSeg[warmNode], int64(cp.nodeOff[warmNode])
	e, err := f.sitEntry(seg)
	if err != nil {
		return "", err
	}
	if testBit(e[sitMapOff:sitMapOff+sitMapSize], off) {
		return "", nil // a node the checkpoint has
	}
	addr := f.sb.mainAddr + int64(seg)*blocksPerSeg + off
	b := make([]byte, blockSize)
	if err := f.readBlock(b, addr); err != nil {
		return "", err
	}
	got := binary.LittleEndian.Uint64(b[footerVersion:])
	want := cp.version
	var match bool
	switch {
	case cp.flags&cpNoCRCRecovery != 0:
		match = uint32(got) == uint32(want)
	case cp.flags&cpCRCRecovery != 0:
		match = got == want|uint64(cp.crc)<<32
	default:
		match = got == want
	}
	if match {
		return fmt.Sprintf("holds nodes written after its last checkpoint (block %d carries its version): the kernel rolls their fsynced data forward at the next mount, from blocks that checkpoint calls free", addr), nil
	}
	return "", nil
}

// checkSIT reads every SIT entry as fsck.f2fs's check_block_count does.
func (f *fsys) checkSIT() (string, error) {
	for seg := uint32(0); seg < f.sb.segMain; seg++ {
		e, err := f.sitEntry(seg)
		if err != nil {
			return "", err
		}
		n, typ := vblocks(e)
		set := 0
		for _, v := range e[sitMapOff : sitMapOff+sitMapSize] {
			set += bits.OnesCount8(v)
		}
		if n != set || typ >= segTypes {
			return fmt.Sprintf("has a damaged SIT entry (segment %d: %d valid blocks, %d in its map, type %d); fsck.f2fs would rebuild the SIT from the node tree, which may use blocks the SIT calls free", seg, n, set, typ), nil
		}
	}
	return "", nil
}
