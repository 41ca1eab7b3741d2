package image

import (
	"encoding/binary"
	"io"
)

// ReadIDAt returns the id in the header of the image r holds, without
// checking the rest: for finding parents among many images, wherever
// they are kept (ReadID is the same for a file).
func ReadIDAt(r io.ReaderAt) (ID, error) {
	var hb [headerSize]byte
	if n, _ := r.ReadAt(hb[:], 0); n < headerSize || [8]byte(hb[:8]) != headerMagic || binary.LittleEndian.Uint32(hb[60:]) != crc(hb[:60]) {
		return ID{}, ErrNotImage
	}
	return ID(hb[16:32]), nil
}
