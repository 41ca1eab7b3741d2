package ext

// This file reads an ext3/ext4 internal journal (jbd2) the way recovery
// does, without writing anything: which home blocks its transactions
// carry copies of, which of those copies a replay would write, and
// whether fast-commit records wait to be replayed after them. Layout:
// the kernel's include/linux/jbd2.h and fs/jbd2/recovery.c. All journal
// integers are big-endian.

import (
	"encoding/binary"
	"fmt"
	"io"
)

const (
	jbdMagic = 0xc03b3998

	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdIncompat64Bit      = 0x2
	jbdIncompatCsumV2     = 0x8
	jbdIncompatCsumV3     = 0x10
	jbdIncompatFastCommit = 0x20

	jbdFlagEscape   = 0x1
	jbdFlagSameUUID = 0x2
	jbdFlagLastTag  = 0x8

	// jbdDefaultFCBlocks is the fast-commit area when the journal
	// superblock does not say (JBD2_DEFAULT_FAST_COMMIT_BLOCKS).
	jbdDefaultFCBlocks = 256
	// fcTagHead opens a fast-commit area (EXT4_FC_TAG_HEAD).
	fcTagHead = 9

	journalIno = 0xe0 // s_journal_inum in the superblock
)

// jcopy is a copy of a filesystem block in the journal: the journal's
// block at (counting from the start of the journal) and whether jbd2
// escaped it (its first four bytes were the journal magic and were
// zeroed).
type jcopy struct {
	at     uint32
	escape bool
	bs     int64
}

// read reads the copy into b (one block) as a replay would write it.
func (c jcopy) read(j io.ReaderAt, b []byte) error {
	if err := readFull(j, b, int64(c.at)*c.bs); err != nil {
		return fmt.Errorf("journal block %d: %w", c.at, err)
	}
	if c.escape {
		binary.BigEndian.PutUint32(b, jbdMagic)
	}
	return nil
}

// journal is what a scan of the log found.
type journal struct {
	r  io.ReaderAt // the journal's bytes
	bs int64

	// copies holds every copy of each home block the log carries, in
	// log order, from committed transactions and from the unfinished one
	// after them alike.
	copies map[uint64][]jcopy
	// replayed holds, for each home block, the copy a replay writes:
	// the newest from a committed transaction that no later revoke
	// record of a committed transaction cancels.
	replayed map[uint64]jcopy
	// committed counts the transactions a replay applies.
	committed int
	// fastCommit says fast-commit records follow the last committed
	// transaction and a replay would apply them.
	fastCommit bool
}

// readJournal reads the journal of the filesystem in r through its
// inode. It returns a *block.CorruptError (or a read error) when the
// journal cannot be followed.
func (f *fs) readJournal(r io.ReaderAt, size int64, sb []byte) (*journal, error) {
	ino := binary.LittleEndian.Uint32(sb[journalIno:])
	if ino == 0 {
		return nil, corrupt(superOff+journalIno, "the journal is on another device (an external journal)")
	}
	files, err := OpenFiles(r, size)
	if err != nil {
		return nil, err
	}
	n, err := files.readInode(ino)
	if err != nil {
		return nil, err
	}
	c, err := files.content(n)
	if err != nil {
		return nil, err
	}
	j := &journal{r: c, bs: f.blockSize, copies: map[uint64][]jcopy{}, replayed: map[uint64]jcopy{}}
	if err := j.scan(n.size, f.blocksCount); err != nil {
		return nil, err
	}
	return j, nil
}

func jcorrupt(block uint32, bs int64, format string, args ...any) error {
	return corrupt(int64(block)*bs, "journal block %d: %s", block, fmt.Sprintf(format, args...))
}

// scan follows the log from its start as jbd2's recovery scan does: a
// block belongs to the log while it carries the magic and the sequence
// number expected next; a commit block ends a transaction. size is the
// journal inode's size; blocks is the filesystem's, which bounds home
// block numbers.
func (j *journal) scan(size int64, blocks uint64) error {
	be := binary.BigEndian
	bs := j.bs
	sb := make([]byte, bs)
	if size < bs {
		return corrupt(0, "the journal of %d bytes holds no superblock", size)
	}
	if err := readFull(j.r, sb, 0); err != nil {
		return fmt.Errorf("ext: read the journal superblock: %w", err)
	}
	if be.Uint32(sb) != jbdMagic {
		return jcorrupt(0, bs, "no journal superblock (magic %#x)", be.Uint32(sb))
	}
	typ := be.Uint32(sb[4:])
	if typ != jbdSuperV1 && typ != jbdSuperV2 {
		return jcorrupt(0, bs, "journal superblock of type %d", typ)
	}
	if jbs := int64(be.Uint32(sb[0xc:])); jbs != bs {
		return jcorrupt(0, bs, "journal block size %d, the filesystem's is %d", jbs, bs)
	}
	maxlen, first := be.Uint32(sb[0x10:]), be.Uint32(sb[0x14:])
	seq, start := be.Uint32(sb[0x18:]), be.Uint32(sb[0x1c:])
	var incompat uint32
	if typ == jbdSuperV2 {
		incompat = be.Uint32(sb[0x28:])
	}
	if int64(maxlen) > size/bs || first == 0 || first >= maxlen {
		return jcorrupt(0, bs, "log of blocks %d to %d in a journal of %d bytes", first, maxlen, size)
	}
	last := maxlen // one past the log area
	var fcFirst uint32
	if incompat&jbdIncompatFastCommit != 0 {
		fc := be.Uint32(sb[0x54:])
		if fc == 0 {
			fc = jbdDefaultFCBlocks
		}
		if fc >= maxlen-first {
			return jcorrupt(0, bs, "%d fast-commit blocks leave no log in %d blocks", fc, maxlen)
		}
		last = maxlen - fc
		fcFirst = last
	}
	if start == 0 {
		return nil // empty: nothing to replay
	}
	if start < first || start >= last {
		return jcorrupt(0, bs, "log starts at block %d, outside its blocks %d to %d", start, first, last)
	}

	tagBytes := int64(8)
	switch {
	case incompat&jbdIncompatCsumV3 != 0:
		tagBytes = 16
	case incompat&jbdIncompatCsumV2 != 0:
		tagBytes = 10
		if incompat&jbdIncompat64Bit != 0 {
			tagBytes = 14
		}
	case incompat&jbdIncompat64Bit != 0:
		tagBytes = 12
	}
	tail := int64(0) // the checksum tail of descriptor and revoke blocks
	if incompat&(jbdIncompatCsumV2|jbdIncompatCsumV3) != 0 {
		tail = 4
	}

	type tag struct {
		home uint64
		c    jcopy
	}
	type txn struct {
		tid     uint32
		tags    []tag
		revokes []uint64
	}
	var (
		done  []txn // committed, in order
		cur   = txn{tid: seq}
		blk   = start
		steps uint32
		buf   = make([]byte, bs)
	)
	logLen := last - first
	next := func() uint32 {
		b := blk
		blk++
		if blk >= last {
			blk = first
		}
		steps++
		return b
	}
	// Every step reads or skips one log block: a log cannot hold more
	// blocks than it has, so a damaged one cannot keep the scan going.
scan:
	for steps < logLen {
		at := next()
		if err := readFull(j.r, buf, int64(at)*bs); err != nil {
			return fmt.Errorf("ext: read journal block %d: %w", at, err)
		}
		if be.Uint32(buf) != jbdMagic || be.Uint32(buf[8:]) != cur.tid {
			break
		}
		switch be.Uint32(buf[4:]) {
		case jbdDescriptor:
			for p := int64(12); p+tagBytes <= bs-tail; {
				home := uint64(be.Uint32(buf[p:]))
				var flags uint32
				if tagBytes == 16 {
					flags = be.Uint32(buf[p+4:])
					home |= uint64(be.Uint32(buf[p+8:])) << 32
				} else {
					flags = uint32(be.Uint16(buf[p+6:]))
					if tagBytes >= 12 {
						home |= uint64(be.Uint32(buf[p+8:])) << 32
					}
				}
				if steps >= logLen {
					break scan
				}
				data := next()
				if home < blocks {
					cur.tags = append(cur.tags, tag{home, jcopy{at: data, escape: flags&jbdFlagEscape != 0, bs: bs}})
				}
				p += tagBytes
				if flags&jbdFlagSameUUID == 0 {
					p += 16
				}
				if flags&jbdFlagLastTag != 0 {
					break
				}
			}
		case jbdCommit:
			done = append(done, cur)
			cur = txn{tid: cur.tid + 1}
		case jbdRevoke:
			count := int64(be.Uint32(buf[12:]))
			if count > bs-tail {
				return jcorrupt(at, bs, "revoke block of %d bytes", count)
			}
			rec := int64(4)
			if incompat&jbdIncompat64Bit != 0 {
				rec = 8
			}
			for p := int64(16); p+rec <= count; p += rec {
				b := uint64(be.Uint32(buf[p:]))
				if rec == 8 {
					b = be.Uint64(buf[p:])
				}
				cur.revokes = append(cur.revokes, b)
			}
		default:
			break scan
		}
	}

	// Every copy, committed or not, for the map; the copies a replay
	// writes for the replayed view.
	revokedBy := map[uint64]uint32{} // home -> newest committed tid revoking it
	for _, t := range done {
		for _, b := range t.revokes {
			revokedBy[b] = t.tid
		}
	}
	for _, t := range append(done, cur) {
		for _, tg := range t.tags {
			j.copies[tg.home] = append(j.copies[tg.home], tg.c)
		}
	}
	for _, t := range done {
		for _, tg := range t.tags {
			if rt, ok := revokedBy[tg.home]; ok && int32(rt-t.tid) >= 0 {
				continue // revoked by this or a later transaction
			}
			j.replayed[tg.home] = tg.c
		}
	}
	j.committed = len(done)

	// Fast-commit records are replayed after the log when they open
	// with a head naming the transaction after the last committed one.
	// The area begins at the block after the log or the one after that
	// (jbd2 leaves one between).
	if fcFirst != 0 {
		for _, at := range []uint32{fcFirst, fcFirst + 1} {
			if at >= maxlen {
				continue
			}
			if err := readFull(j.r, buf, int64(at)*bs); err != nil {
				return fmt.Errorf("ext: read journal block %d: %w", at, err)
			}
			le := binary.LittleEndian
			if le.Uint16(buf) == fcTagHead && le.Uint16(buf[2:]) >= 8 && le.Uint32(buf[8:]) == cur.tid {
				j.fastCommit = true
			}
		}
	}
	return nil
}

// overlay reads a filesystem as a journal replay would leave it: the
// blocks the replay writes come from the journal, the rest from r.
type overlay struct {
	r      io.ReaderAt
	j      io.ReaderAt
	bs     int64
	blocks map[uint64]jcopy
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	var blk []byte
	for done := 0; done < len(p); {
		pos := off + int64(done)
		b := uint64(pos / o.bs)
		within := pos % o.bs
		n := int(min(o.bs-within, int64(len(p)-done)))
		c, ok := o.blocks[b]
		if !ok {
			// As many blocks from r as the replay leaves alone.
			for done+n < len(p) {
				if _, hit := o.blocks[uint64((pos+int64(n))/o.bs)]; hit {
					break
				}
				n = int(min(int64(n)+o.bs, int64(len(p)-done)))
			}
			k, err := o.r.ReadAt(p[done:done+n], pos)
			if k < n {
				return done + k, err
			}
			done += n
			continue
		}
		if blk == nil {
			blk = make([]byte, o.bs)
		}
		if err := c.read(o.j, blk); err != nil {
			return done, err
		}
		copy(p[done:done+n], blk[within:])
		done += n
	}
	return len(p), nil
}
