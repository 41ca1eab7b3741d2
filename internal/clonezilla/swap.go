package clonezilla

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// swapPage is the page size of the swap signature mkswap writes on
// x86-64 and arm64 with 4 KiB pages, which ocs-sr's restore runs on.
const swapPage = 4096

// swapSignature makes the first page of a swap partition of size bytes
// as `mkswap -L LABEL -U UUID` makes it, from ocs-sr's swappt-*.info
// (UUID="..." and LABEL="..." lines): version 1, the last page, no bad
// pages, the UUID and label, and "SWAPSPACE2" at the page's end.
func swapSignature(info []byte, size int64) ([]byte, error) {
	var uuid, label string
	sc := bufio.NewScanner(bytes.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		switch k {
		case "UUID":
			uuid = v
		case "LABEL":
			label = v
		}
	}
	if size < 10*swapPage {
		return nil, fmt.Errorf("a swap partition of %d bytes is too small for mkswap", size)
	}
	page := make([]byte, swapPage)
	le := binary.LittleEndian
	le.PutUint32(page[1024:], 1)
	le.PutUint32(page[1028:], uint32(size/swapPage-1))
	if uuid != "" {
		u, err := hex.DecodeString(strings.ReplaceAll(uuid, "-", ""))
		if err != nil || len(u) != 16 {
			return nil, fmt.Errorf("UUID %q", uuid)
		}
		copy(page[1036:], u)
	}
	if len(label) > 16 {
		label = label[:16]
	}
	copy(page[1052:], label)
	copy(page[swapPage-10:], "SWAPSPACE2")
	return page, nil
}
