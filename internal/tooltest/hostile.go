package tooltest

import (
	"fmt"
	"io"
	"strings"
)

// MetaJSON is valid metadata for image id with the given areas (JSON
// objects), 4 MiB chunks.
func MetaJSON(id [16]byte, sourceSize int64, areas ...string) string {
	return fmt.Sprintf(`{"format_version":1,"id":"%x","source_size":%d,"sector_size":512,"table":"none","chunk_size":4194304,"areas":[%s]}`,
		id, sourceSize, strings.Join(areas, ","))
}

// Text is a block Fill that writes s.
func Text(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

// Runs is a block of runs of bytes.
func Runs(r ...ByteRun) ForgedBlock { return ForgedBlock{Runs: r} }

// Hostile is an image whose blocks lie; Want is in the error a reader
// must give.
type Hostile struct {
	Name  string
	Forge Forge
	Want  string
}

// HostileImages are images whose blocks lie about their lengths, each
// small on disk and huge when believed. Each must be refused as damaged
// quickly, without the reader allocating what they claim.
func HostileImages() []Hostile {
	id := [16]byte{7, 7, 7}
	const tib = int64(1) << 40
	part := func(index int, start, size, blockSize int64) string {
		return fmt.Sprintf(`{"kind":"partition","index":%d,"start":%d,"size":%d,"filesystem":"ext4","block_size":%d,"used_bytes":0,"stored_bytes":0}`, index, start, size, blockSize)
	}
	meta := func(sourceSize int64, areas ...string) ForgedBlock {
		return ForgedBlock{Fill: Text(MetaJSON(id, sourceSize, areas...))}
	}
	m := MetaJSON(id, 1<<20)
	var manyAreas []string
	for i := int64(0); i < 5; i++ {
		manyAreas = append(manyAreas, part(int(i+1), i*4*tib, 4*tib, 512)) // 1 GiB maps
	}
	return []Hostile{
		// 512 MiB of JSON whitespace, claimed honestly.
		{"metadata bomb", Forge{ID: id, EntryCount: -1,
			Meta: Runs(ByteRun{Data: []byte(m[:len(m)-1])}, ByteRun{Byte: ' ', N: 512 << 20}, ByteRun{Data: []byte("}")})},
			"PLMD block claims"},
		// The same bomb behind a header that claims 1000 bytes.
		{"metadata bomb, small claim", Forge{ID: id, EntryCount: -1,
			Meta: ForgedBlock{ClaimRaw: 1000, Runs: []ByteRun{{Byte: ' ', N: 512 << 20}}}},
			"PLMD block does not decode"},
		// A 256 MiB map of used blocks in a partition whose index is empty.
		{"map bomb", Forge{ID: id, EntryCount: -1, Meta: meta(1*tib, part(1, 0, 1*tib, 512)),
			Maps: Runs(ByteRun{Byte: 0x55, N: 256 << 20})},
			"the index has no entry for that chunk"},
		// Five 1 GiB maps of zeros: 5 GiB to decode from 160 KB (the
		// reader must refuse before it decodes, so no hash is needed).
		{"many maps", Forge{ID: id, EntryCount: -1, Meta: meta(20*tib, manyAreas...),
			Maps: ForgedBlock{NoHash: true, Runs: []ByteRun{{Byte: 0, N: 5 << 30}}}},
			"allocation maps of"},
		// A 1 GiB index (16 Mi entries, which the area has room for).
		{"index bomb", Forge{ID: id, EntryCount: 16 << 20, Meta: meta(64*tib, part(1, 0, 64*tib, 0)),
			Index: Runs(ByteRun{Byte: 0, N: 1 << 30})},
			"more than the 32774 stored bytes of the index can describe"},
		// The same index behind a header that claims one entry.
		{"index bomb, small claim", Forge{ID: id, EntryCount: 1, Meta: meta(64*tib, part(1, 0, 64*tib, 0)),
			Index: ForgedBlock{ClaimRaw: 64, Runs: []ByteRun{{Byte: 0, N: 1 << 30}}}},
			"index entry 0"},
	}
}
