package image

import (
	"github.com/platter-dev/platter/internal/block"
	"strconv"
	"time"
)

// Metadata describes an image: where it came from and how its areas map
// onto the source. It is stored as zstd-compressed JSON so that later
// versions can add fields that older readers ignore.
type Metadata struct {
	FormatVersion int       `json:"format_version"`
	ID            string    `json:"id"`
	Created       time.Time `json:"created"`
	Tool          string    `json:"tool"`
	Source        string    `json:"source"`
	// Host is the machine the image was made on; DiskModel and
	// DiskSerial the source device's, where it reports them.
	Host        string `json:"host,omitempty"`
	DiskModel   string `json:"disk_model,omitempty"`
	DiskSerial  string `json:"disk_serial,omitempty"`
	SourceSize  int64  `json:"source_size"`
	SectorSize  int64  `json:"sector_size"`
	Table       string `json:"table"` // "gpt", "mbr" or "none"
	DiskID      string `json:"disk_id,omitempty"`
	ChunkSize   int64  `json:"chunk_size"`
	Compression string `json:"compression"`
	// Type is "full" (or empty, in images made before incrementals),
	// "incremental" (the chunks that differ from Parent's chain) or
	// "differential" (those that differ from Parent, a full image).
	Type string `json:"type,omitempty"`
	// Parent is the id of the image this one depends on, and
	// ParentDigest that image's Reader.ContentDigest when this one was
	// made: a parent whose content changed since is refused (one folded
	// into a full image by consolidation keeps its content).
	Parent       string `json:"parent,omitempty"`
	ParentDigest string `json:"parent_digest,omitempty"`
	// ChangedBy, for an incremental or differential, says how the chunks
	// that changed were found: "tracker" (only the chunks a
	// changed-block tracking map marked, and those whose allocation
	// changed, were read: docs/incrementals.md), "overlay" (boot --save:
	// only the chunks the VM wrote, and those whose allocation changed)
	// or "read" (every chunk in use was read and compared). ChangedNote says, for "read", why
	// no map was used; ReadChunks of InUseChunks were read from the
	// source in the first copy. Empty in images made before.
	ChangedBy   string `json:"changed_by,omitempty"`
	ChangedNote string `json:"changed_note,omitempty"`
	ReadChunks  int    `json:"read_chunks,omitempty"`
	InUseChunks int    `json:"in_use_chunks,omitempty"`
	// SectorBySector says every byte of the disk was imaged, free blocks
	// and unpartitioned space included (create --sector-by-sector): a
	// restore, mount or serve of it equals the source disk byte for byte.
	SectorBySector bool `json:"sector_by_sector,omitempty"`

	Areas []Area `json:"areas"`
	// NotImaged are the partitions of the table that were left out
	// (create --partitions): a restore of the whole disk leaves them
	// zero.
	NotImaged []int    `json:"not_imaged,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	// Snapshot says how a mounted source was held still; nil when it
	// was not mounted read-write.
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// Rescue, for an image of a failing disk (create --rescue), lists
	// the bytes that could not be read: the image holds zeros there, by
	// design, not damage. nil for an ordinary image.
	Rescue *Rescue `json:"rescue,omitempty"`
}

// Rescue is what a rescue of a failing disk could not read.
type Rescue struct {
	// SectorSize is the unit in which unreadable bytes were found: the
	// device's logical sector size.
	SectorSize int64 `json:"sector_size"`
	// Retries is how many times each bad sector was read again.
	Retries int `json:"retries"`
	// Stalls counts reads given up after the read timeout.
	Stalls     int64        `json:"stalls,omitempty"`
	Unreadable []Unreadable `json:"unreadable"`
}

// Unreadable is one range of the source that could not be read, and what
// it held.
type Unreadable struct {
	Offset int64 `json:"offset"` // byte of the source
	Length int64 `json:"length"`
	// Area is the index in Metadata.Areas of the area it lies in.
	Area int `json:"area"`
	// Hits say what the bytes held, by kind; none when the filesystem
	// could not tell (or the area has none).
	Hits []Hit `json:"hits,omitempty"`
}

// Hit is what part of an unreadable range held: Kind "file",
// "directory", "metadata", "free space" or "unknown"; the files'
// and directories' paths, or the metadata's names; and how many of the
// range's bytes.
type Hit struct {
	Kind  string   `json:"kind"`
	Paths []string `json:"paths,omitempty"`
	Bytes int64    `json:"bytes"`
}

// UnreadableBytes is how many bytes of the source a rescue could not
// read (0 for an ordinary image).
func (m *Metadata) UnreadableBytes() int64 {
	if m.Rescue == nil {
		return 0
	}
	var n int64
	for _, u := range m.Rescue.Unreadable {
		n += u.Length
	}
	return n
}

// Snapshot describes how an image of a mounted, writable source was made
// to hold one instant.
type Snapshot struct {
	// Method is "freeze" (the filesystems were frozen for the whole
	// copy) or "none" (copied while mounted: --allow-mounted).
	Method string `json:"method"`
	// Instant is the moment the image shows: when the freeze began.
	Instant time.Time `json:"instant"`
	// FrozenSeconds is how long writers were held.
	FrozenSeconds float64  `json:"frozen_seconds"`
	Filesystems   []string `json:"filesystems"` // mount points frozen (or, for "none", copied as they changed)
	// Synced are mount points that cannot be frozen (FUSE, some FAT):
	// they were synced and copied as they were, and may have changed
	// during the copy.
	Synced []string `json:"synced,omitempty"`
	// Tracker is the write tracker of a "track" snapshot: "bpf" or
	// "tracefs".
	Tracker string `json:"tracker,omitempty"`
	// Passes are the copies of a "track" snapshot, the first included.
	Passes []Pass `json:"passes,omitempty"`
}

// Area kinds.
const (
	KindPartition = "partition" // a partition (or a bare filesystem)
	KindGap       = "gap"       // bytes outside every partition: tables, boot code
)

// FreeFillRandom is Area.FreeFill for areas whose free bytes a restore
// fills with fresh random bytes.
const FreeFillRandom = "random"

// Area is a byte range of the source that the image covers with its own
// chunk grid: chunk k holds bytes [Start+k*ChunkSize, ...).
type Area struct {
	Kind  string `json:"kind"`
	Index int    `json:"index"` // partition number as Linux numbers it; 0 for gaps
	Start int64  `json:"start"`
	Size  int64  `json:"size"`

	Type     string `json:"type,omitempty"`
	GUID     string `json:"guid,omitempty"`
	Name     string `json:"name,omitempty"`
	Attrs    uint64 `json:"attrs,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`

	// Filesystem is "ext2", ..., "ntfs", or "raw" when none was found.
	// Every non-zero chunk of an area without an allocation map
	// (BlockSize 0: a raw area, or any area of a sector-by-sector image)
	// was copied.
	Filesystem string `json:"filesystem"`
	Note       string `json:"note,omitempty"`
	// Detail and Volumes describe a container (LVM2, LUKS): its name,
	// version or cipher, and the volumes inside it with their
	// filesystems.
	Detail  string         `json:"detail,omitempty"`
	Volumes []block.Volume `json:"volumes,omitempty"`
	// BlockSize is the block size of the area's allocation map, which is
	// stored in the maps block; 0 for a raw area, all of which is used.
	BlockSize int64 `json:"block_size,omitempty"`
	// FreeFill says what a restore writes over the bytes the map marks
	// free: "" leaves them as today (zero on a new file, untouched on a
	// device); "random" writes fresh random bytes, as the free sectors of
	// an opened LUKS volume need (zeros there would show which are free).
	FreeFill    string `json:"free_fill,omitempty"`
	UsedBytes   int64  `json:"used_bytes"`
	StoredBytes int64  `json:"stored_bytes"`
}

// Label names the area in messages: "partition 2" or "gap at byte 0".
func (a *Area) Label() string {
	if a.Kind == KindGap {
		return "area outside partitions at disk byte " + strconv.FormatInt(a.Start, 10)
	}
	return "partition " + strconv.Itoa(a.Index)
}

// Pass is one copy of the chunks written since the previous one, in live
// imaging.
type Pass struct {
	// Kind is "full" (the first copy, of every chunk in use), "copy"
	// (while mounted and written), "sync" (after syncfs; it also copies
	// chunks whose allocation changed) or "frozen".
	Kind string `json:"kind"`
	// DirtyBytes is how much of the source the tracker saw written since
	// the previous pass; Chunks how many chunks that touched (for
	// "full": every chunk written to the image, zero ones included).
	DirtyBytes int64   `json:"dirty_bytes"`
	Chunks     int     `json:"chunks"`
	Seconds    float64 `json:"seconds"`
}

// SourceKey identifies the disk an image is of, for telling the sets of
// images in one directory apart: its serial number where the device
// reported one, else its partition table's id, else the host and the
// source's name; and its size.
func (m *Metadata) SourceKey() string {
	size := strconv.FormatInt(m.SourceSize, 10)
	switch {
	case m.DiskSerial != "":
		return "serial " + m.DiskSerial + " " + size
	case m.DiskID != "":
		return m.Table + " " + m.DiskID + " " + size
	}
	return "source " + m.Host + ":" + m.Source + " " + size
}
