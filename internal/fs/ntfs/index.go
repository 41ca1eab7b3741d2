package ntfs

import (
	"cmp"
	"encoding/binary"
	"fmt"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// A directory's $I30 index, read as ntfs-3g's readdir reads it: the
// entries of $INDEX_ROOT, then those of every index block that $BITMAP
// marks in use, in VCN order. That reaches the entries of every node at
// every depth of the B+ tree without following child pointers (no loop
// to guard against), and never the stale entries of a freed block. The
// order is not sorted; it is the order ntfs-3g and ntfsls list.

const (
	indexEntryNode = 0x01 // the entry points to a child node
	indexEntryEnd  = 0x02 // the last entry of a node: no key

	namePOSIX = 0
	nameDOS   = 2 // an 8.3 name beside a Win32 one: not listed

	maxIndexBitmap = 1 << 20 // bytes of an index $BITMAP: 8M blocks
)

// indexEntry is one name a directory's index holds.
type indexEntry struct {
	ref   uint64 // the file's MFT reference
	name  string
	space uint8 // its namespace: POSIX, Win32, DOS, Win32 and DOS
}

// index lists directory f's index entries.
func (f *file) index() ([]indexEntry, error) {
	rec := f.rec.num
	root, err := f.stream(attrIndexRoot, "$I30")
	if isNoAttr(err) {
		return nil, corrupt(rec, f.rec.off, "a directory without an $INDEX_ROOT $I30")
	}
	if err != nil {
		return nil, err
	}
	if !root.isResident {
		return nil, corrupt(rec, f.rec.off, "$INDEX_ROOT is not resident")
	}
	var out []indexEntry
	blockSize, err := indexRoot(root.resident, &out)
	if err != nil {
		return nil, corrupt(rec, f.rec.off, "$INDEX_ROOT: %v", err)
	}
	alloc, err := f.stream(attrIndexAllocation, "$I30")
	if isNoAttr(err) {
		return out, nil // a small directory: all in the root
	}
	if err != nil {
		return nil, err
	}
	bitmap, err := f.stream(attrBitmap, "$I30")
	if err != nil {
		return nil, fmt.Errorf("ntfs: MFT record %d: the $BITMAP of its index: %w", rec, err)
	}
	// Index block VCNs count clusters, or 512-byte units where a block
	// is smaller than a cluster.
	vcnSize := f.v.clusterSize
	if vcnSize > blockSize {
		vcnSize = stride
	}
	blocks := alloc.size / blockSize
	if bitmap.size > maxIndexBitmap {
		return nil, corrupt(rec, -1, "index $BITMAP of %d bytes is larger than the %d it may be", bitmap.size, maxIndexBitmap)
	}
	bits, err := bitmap.all(maxIndexBitmap)
	if err != nil {
		return nil, err
	}
	block := make([]byte, blockSize)
	var damage error // the first index block that could not be read
	for i, b := range bits {
		for k := 0; k < 8; k++ {
			if b&(1<<k) == 0 {
				continue
			}
			n := int64(i)*8 + int64(k)
			if n >= blocks {
				return nil, corrupt(rec, -1, "index $BITMAP marks block %d in use; $INDEX_ALLOCATION holds %d", n, blocks)
			}
			// Each index block holds whole entries: one that cannot
			// be read or parsed loses only its own, and the others
			// are still read (chkdsk rebuilds the index from the
			// files' records; ntfs-3g's readdir stops there).
			off := n * blockSize
			if err := vfs.ReadFull(alloc, block, off); err != nil {
				damage = cmp.Or(damage, fmt.Errorf("ntfs: MFT record %d: read index block %d: %w", rec, n, err))
				continue
			}
			var got []indexEntry
			if err := indexBlock(block, off/vcnSize, &got); err != nil {
				damage = cmp.Or(damage, corrupt(rec, alloc.where(off), "index block %d: %v", n, err))
				continue
			}
			out = append(out, got...)
		}
	}
	if damage != nil {
		return out, &vfs.LostEntriesError{Err: damage}
	}
	return out, nil
}

// indexRoot parses an $INDEX_ROOT value, adding its entries to out,
// and returns the size of the index's blocks.
func indexRoot(b []byte, out *[]indexEntry) (int64, error) {
	le := binary.LittleEndian
	if len(b) < 0x20 {
		return 0, fmt.Errorf("%d bytes is too short", len(b))
	}
	if t := le.Uint32(b); t != 0x30 {
		return 0, fmt.Errorf("indexes attribute %#x, not file names", t)
	}
	blockSize := int64(le.Uint32(b[8:]))
	if blockSize < stride || blockSize > 64<<10 || blockSize&(blockSize-1) != 0 {
		return 0, fmt.Errorf("index block size %d is impossible", blockSize)
	}
	return blockSize, indexNode(b[0x10:], out)
}

// indexBlock parses one index block ("INDX") expected at VCN vcn,
// fixing it up in place, and adds its entries to out.
func indexBlock(b []byte, vcn int64, out *[]indexEntry) error {
	le := binary.LittleEndian
	if string(b[:4]) != "INDX" {
		return fmt.Errorf("no INDX signature")
	}
	if err := fixup(b, -1, 0, "index block"); err != nil {
		return err
	}
	if got := int64(le.Uint64(b[0x10:])); got != vcn {
		return fmt.Errorf("says it is at VCN %d, not %d", got, vcn)
	}
	if got := int(le.Uint32(b[0x18+8:])) + 0x18; got != len(b) {
		return fmt.Errorf("says it is %d bytes long, not %d", got, len(b))
	}
	return indexNode(b[0x18:], out)
}

// indexNode parses the entries of a node whose header starts b.
func indexNode(b []byte, out *[]indexEntry) error {
	le := binary.LittleEndian
	if len(b) < 0x10 {
		return fmt.Errorf("node header of %d bytes is too short", len(b))
	}
	start, end := int64(le.Uint32(b)), int64(le.Uint32(b[4:]))
	if end > int64(len(b)) || start < 0x10 || start > end {
		return fmt.Errorf("entries from %d to %d are outside the node's %d bytes", start, end, len(b))
	}
	for p := int(start); ; {
		if p+0x10 > int(end) {
			return fmt.Errorf("entry at %d runs past the node's end at %d (no last entry)", p, end)
		}
		e := b[p:end]
		length, keyLen, flags := int(le.Uint16(e[8:])), int(le.Uint16(e[10:])), le.Uint32(e[12:])
		if 0x10+keyLen > len(e) {
			return fmt.Errorf("entry at %d: its key of %d bytes runs past the node's end", p, keyLen)
		}
		if flags&indexEntryEnd != 0 {
			return nil
		}
		if length < 0x10+keyLen || length > len(e) {
			return fmt.Errorf("entry at %d is %d bytes long", p, length)
		}
		// The key is the file's $FILE_NAME: the name is at 0x42, its
		// length in characters at 0x40, its namespace at 0x41.
		key := e[0x10 : 0x10+keyLen]
		if keyLen < 0x42 || 0x42+2*int(key[0x40]) > keyLen {
			return fmt.Errorf("entry at %d: a file name key of %d bytes is too short", p, keyLen)
		}
		*out = append(*out, indexEntry{
			ref:   le.Uint64(e),
			name:  decodeName(key[0x42 : 0x42+2*int(key[0x40])]),
			space: key[0x41],
		})
		p += length
	}
}
