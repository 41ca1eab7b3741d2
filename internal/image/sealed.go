package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/seal"
)

// An encrypted image (docs/format.md, "Encryption") differs from a plain
// one in four places: the key slot area after the header; each frame
// sealed whole (its header too) as marker, sealed length, nonce and
// ciphertext; each block (layout, index, maps, metadata) sealed as a
// stream of segments behind a small outer header; and the creation time
// in the header, which is zero (the metadata holds it).
const (
	slotAreaOff = headerSize
	// sealedFrameHead is a sealed frame's marker, sealed length and nonce.
	sealedFrameHead = 8 + seal.NonceSize
	// sealedFrameExtra is what sealing adds to a plain frame.
	sealedFrameExtra = sealedFrameHead + seal.Overhead
	// sealedBlockHead is a sealed block's marker, segment size, sealed
	// length and nonce prefix.
	sealedBlockHead = 16 + seal.PrefixSize
)

// Keys are an encrypted image's data key and the key slots that wrap it.
type Keys struct {
	Data  seal.Key
	Slots *seal.Slots
}

// Keyring unlocks the data key of an encrypted image from its slots
// (seal.Secrets is one). A failure is not damage: the secrets are not the
// image's.
type Keyring interface {
	Unlock(id [16]byte, slots *seal.Slots) (seal.Key, error)
}

// frameAD is a sealed frame's associated data: the image and the frame's
// offset in it. A frame moved, swapped or copied within or between images
// does not open.
func frameAD(id ID, off int64) []byte {
	ad := make([]byte, 0, 48)
	ad = append(ad, "platter 2026 frame "...)
	ad = append(ad, id[:]...)
	return binary.LittleEndian.AppendUint64(ad, uint64(off))
}

// blockAD is a sealed block's associated data: the image, the block's
// kind and offset, and for the metadata (the last block) the image header
// and the footer's fields, which are plaintext and otherwise unsealed.
func blockAD(id ID, magic [4]byte, off int64, head, foot []byte) []byte {
	ad := append([]byte("platter 2026 block "), id[:]...)
	ad = append(ad, magic[:]...)
	ad = binary.LittleEndian.AppendUint64(ad, uint64(off))
	ad = append(ad, head...)
	return append(ad, foot...)
}

// footAD is the part of the footer the metadata's associated data covers:
// everything but the reserved bytes and the CRC.
const footAD = 88

func sealedBlockLen(stored int64) int64 {
	return sealedBlockHead + seal.SealedLen(blockHeaderSize+stored)
}

// openSealedBlock reads the outer header of the sealed block at off
// (length bytes in all) and returns the stream of its plain bytes (the
// block header, then the stored payload) and their length.
func (ir *Reader) openSealedBlock(off, length int64, magic [4]byte) (*seal.StreamReader, int64, error) {
	var ob [sealedBlockHead]byte
	if _, err := ir.r.ReadAt(ob[:], off); err != nil {
		return nil, 0, fmt.Errorf("image: read block header at byte %d: %w", off, err)
	}
	le := binary.LittleEndian
	sealed := int64(le.Uint64(ob[8:]))
	plain, ok := seal.PlainLen(sealed)
	switch {
	case [4]byte(ob[0:4]) != magic:
		return nil, 0, &FormatError{Off: off, Msg: fmt.Sprintf("no %q block marker", magic[:])}
	case le.Uint32(ob[4:]) != seal.SegmentSize:
		return nil, 0, &FormatError{Off: off + 4, Msg: fmt.Sprintf("%s block segment size %d is not %d", magic[:], le.Uint32(ob[4:]), seal.SegmentSize)}
	case sealed != length-sealedBlockHead || !ok || plain < blockHeaderSize:
		return nil, 0, &FormatError{Off: off + 8, Msg: fmt.Sprintf("%s block sealed length %d does not match the %d bytes it has", magic[:], sealed, length-sealedBlockHead)}
	}
	var head, foot []byte
	if magic == metaMagic {
		head, foot = ir.head[:], ir.foot[:footAD]
	}
	ad := blockAD(ir.id, magic, off, head, foot)
	sr, err := seal.NewStreamReader(io.NewSectionReader(ir.r, off+sealedBlockHead, sealed), ir.ciphers.Block, [seal.PrefixSize]byte(ob[16:]), ad, sealed)
	if err != nil {
		return nil, 0, &FormatError{Off: off + 8, Msg: err.Error()}
	}
	return sr, plain, nil
}

// sealError turns a segment that does not open into damage at its offset
// (blockOff is the sealed block's).
func sealError(err error, blockOff int64, magic [4]byte) error {
	var oe *seal.OpenError
	if errors.As(err, &oe) {
		return &FormatError{Off: blockOff + sealedBlockHead + oe.Off, Msg: fmt.Sprintf("%s block fails authentication (changed, damaged, moved or from another image)", magic[:]), Err: err}
	}
	return nil
}

// blockLen is the length of the block at off, from its header: the
// layout block's length is in no footer.
func (ir *Reader) blockLen(off, limit int64, magic [4]byte) (int64, error) {
	if ir.ciphers != nil {
		var ob [sealedBlockHead]byte
		if _, err := ir.r.ReadAt(ob[:], off); err != nil {
			return 0, fmt.Errorf("image: read block header at byte %d: %w", off, err)
		}
		if [4]byte(ob[0:4]) != magic {
			return 0, &FormatError{Off: off, Msg: fmt.Sprintf("no %q block marker", magic[:])}
		}
		n := int64(binary.LittleEndian.Uint64(ob[8:]))
		if n < 0 || n > limit-off-sealedBlockHead {
			return 0, &FormatError{Off: off + 8, Msg: fmt.Sprintf("%s block claims %d bytes, more than the file holds before the index", magic[:], n)}
		}
		return sealedBlockHead + n, nil
	}
	var hb [blockHeaderSize]byte
	if _, err := ir.r.ReadAt(hb[:], off); err != nil {
		return 0, fmt.Errorf("image: read block header at byte %d: %w", off, err)
	}
	h, err := parseBlockHeader(hb[:], magic)
	if err != nil {
		return 0, &FormatError{Off: off, Msg: err.Error()}
	}
	if room := limit - off - blockHeaderSize; room < 0 || h.Stored > uint64(room) {
		return 0, &FormatError{Off: off + 16, Msg: fmt.Sprintf("%s block claims %d bytes, more than the file holds before the index", magic[:], h.Stored)}
	}
	return blockHeaderSize + int64(h.Stored), nil
}

// frameLen is the bytes chunk e's frame takes in the image file.
func (ir *Reader) frameLen(e Entry) int64 {
	n := frameHeaderSize + int64(e.Stored)
	if ir.ciphers != nil {
		n += sealedFrameExtra
	}
	return n
}

// FrameSize is the bytes chunk e's frame takes in this image's file
// (header, payload and, when encrypted, what sealing adds).
func (ir *Reader) FrameSize(e Entry) int64 { return ir.frameLen(e) }

// Encrypted reports whether the image is encrypted.
func (ir *Reader) Encrypted() bool { return ir.area != nil }

// Keys are the data key and key slots of an encrypted image, nil for a
// plain one. Callers must not modify them.
func (ir *Reader) Keys() *Keys {
	if ir.area == nil {
		return nil
	}
	return &Keys{Data: ir.key, Slots: ir.area.Slots}
}

// SlotDamage says which copy of the key slots is damaged (the image
// opened with the other), or nil: verify reports it.
func (ir *Reader) SlotDamage() error {
	if ir.area == nil {
		return nil
	}
	for i, err := range ir.area.Damaged {
		if err != nil {
			return &FormatError{Off: slotAreaOff + int64(i)*seal.CopySize, Msg: fmt.Sprintf("key slot copy %c is damaged (the other copy was used)", 'A'+i), Err: err}
		}
	}
	return nil
}

// Layout is the image's layout block, nil in a version 1 image.
func (ir *Reader) Layout() *Layout { return ir.layout }

// WriterAtSyncer is a file that can be written in place and synced.
type WriterAtSyncer interface {
	io.WriterAt
	Sync() error
}

// Relock replaces the key slots of the encrypted image open in ir, whose
// file is f, with slots (made for the same data key: seal.Rewrap), in
// place: the older copy first, synced, then the other, synced. A crash
// leaves one whole copy, old or new; no other byte of the file changes.
func (ir *Reader) Relock(f WriterAtSyncer, slots *seal.Slots) error {
	if ir.area == nil {
		return errors.New("image: not encrypted")
	}
	b, err := slots.Encode(ir.id)
	if err != nil {
		return err
	}
	first := ir.area.Older()
	for _, i := range []int{first, 1 - first} {
		off := int64(slotAreaOff + i*seal.CopySize)
		if _, err := f.WriteAt(b, off); err != nil {
			return fmt.Errorf("image: write key slots at byte %d: %w", off, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("image: sync key slots: %w", err)
		}
	}
	return nil
}

// SlotArea returns the key slot area of the encrypted image open in ir
// with slots (made for the same data key: seal.Rewrap) in both copies,
// and its offset in the file: for storage where it replaces the old
// area all at once (store.Patcher), not copy by copy as Relock does.
func (ir *Reader) SlotArea(slots *seal.Slots) (off int64, area []byte, err error) {
	if ir.area == nil {
		return 0, nil, errors.New("image: not encrypted")
	}
	b, err := slots.Encode(ir.id)
	if err != nil {
		return 0, nil, err
	}
	return slotAreaOff, append(b, b...), nil
}

// readSlots reads the key slot area after the header of an encrypted
// image; only both copies damaged is an error.
func (ir *Reader) readSlots() error {
	b := make([]byte, seal.AreaSize)
	n, err := ir.r.ReadAt(b, slotAreaOff)
	if n < len(b) {
		if err != nil && err != io.EOF {
			return fmt.Errorf("image: read key slots at byte %d: %w", slotAreaOff, err)
		}
		return &FormatError{Off: slotAreaOff + int64(n), Msg: "file ends inside the key slots (truncated)"}
	}
	a, err := seal.ParseArea(b, ir.id)
	if err != nil {
		return &FormatError{Off: slotAreaOff, Msg: "key slots", Err: err}
	}
	ir.area = a
	ir.dataStart = slotAreaOff + seal.AreaSize
	return nil
}

// unlock gets the data key from keys. Its errors are not damage.
func (ir *Reader) unlock(keys Keyring) error {
	if keys == nil {
		return seal.ErrNoSecret
	}
	k, err := keys.Unlock(ir.id, ir.area.Slots)
	if err != nil {
		return err
	}
	ir.key = k
	c := k.Ciphers()
	ir.ciphers = &c
	return nil
}

// readLayout reads the layout block at the start of the data area (version
// 2); the frames start after it.
func (ir *Reader) readLayout(indexOff int64) error {
	off := ir.dataStart
	n, err := ir.blockLen(off, indexOff, layoutMagic)
	if err != nil {
		return err
	}
	_, err = ir.streamBlock(off, n, layoutMagic, maxLayoutLen, func(r io.Reader, rawLen int64) error {
		b := make([]byte, rawLen)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		l, err := parseLayout(b, binary.LittleEndian.Uint16(ir.head[8:]))
		if err != nil {
			return &FormatError{Off: off, Msg: "layout block: " + err.Error()}
		}
		ir.layout = l
		return nil
	})
	if err != nil {
		return err
	}
	ir.dataStart = off + n
	return nil
}
