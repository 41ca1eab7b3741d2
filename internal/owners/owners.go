// Package owners says what a filesystem held in byte ranges it could not
// read: for a failing disk's unreadable sectors (create --rescue) or an
// image's damaged chunks (verify), which files and directories, by path,
// which filesystem metadata, by name, and how much was free space.
//
// It asks the filesystem's package (through internal/fsmap) to walk what
// holds its bytes (vfs.Filesystem.Owners) once per Classify call, and
// keeps only what lands in the ranges asked about. A file's own record
// counts as the file's: a hit on an ext inode table block, an NTFS $MFT
// record or a FAT directory entry names the files whose inodes, records
// or entries live there (they are lost as surely as their data), beside
// the metadata ("inode table", "$MFT") or the directory holding them.
//
// Paths and names are as the filesystem holds them, unchecked and
// unescaped (a name may hold a newline or an escape sequence): whoever
// prints them quotes what is not printable, as platter's messages do.
package owners

import (
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/fsmap"
)

// The kinds a Hit has, in the order Classify lists them.
const (
	KindFile    = "file"
	KindDir     = "directory"
	KindMeta    = "metadata"
	KindFree    = "free space"
	KindUnknown = "unknown"
)

// Hit is what one part of an unreadable range holds.
type Hit struct {
	Range block.Extent // the input range, bytes from the filesystem's start
	Kind  string       // KindFile, KindDir, KindMeta, KindFree or KindUnknown
	// Paths are the files or directories hit (sorted, each once), or
	// the metadata names; metadata no owner names (used bytes nothing
	// claims) adds bytes but no name, so it may be empty.
	Paths []string
	// Bytes are the bytes of Range of this kind. A byte two owners
	// share (a file's inode in the inode table) counts for each kind,
	// so a range's Bytes may add up to more than its length.
	Bytes int64
}

// Classify says what the ranges (sorted, not overlapping, bytes from the
// start of the filesystem named fs in the size bytes of r, as fsmap knows
// it: "ext4", "fat32", "ntfs", ...) hit. used gives the filesystem's used
// runs within [off, off+n) (nil: not known). Per range it gives one Hit
// per kind present, in the order file, directory, metadata, free space,
// unknown. Used bytes no owner claims are metadata (no name); bytes not
// in used are free space; without used, unclaimed bytes are unknown. Of a
// filesystem without an Owners walk every used byte is unknown (and the
// rest still free space); a range whose used runs cannot be read is
// unknown where no owner claims it.
//
// It returns an error only when nothing can be said: bad ranges, or a
// filesystem that cannot be opened at all. A walk that loses part of the
// tree (a damaged directory) classifies what it found, the rest counting
// as metadata or free space as used says.
func Classify(r io.ReaderAt, size int64, fs string, used func(off, n int64) ([]block.Extent, error), ranges []block.Extent) ([]Hit, error) {
	for i, e := range ranges {
		switch {
		case e.Off < 0 || e.Len <= 0 || e.Off > (1<<62)-e.Len:
			return nil, fmt.Errorf("owners: range %d (%d bytes at byte %d) is impossible", i, e.Len, e.Off)
		case i > 0 && e.Off < ranges[i-1].End():
			return nil, fmt.Errorf("owners: range %d (at byte %d) is not after range %d (to byte %d)", i, e.Off, i-1, ranges[i-1].End())
		}
	}
	c := &classifier{ranges: ranges, hits: make([]rangeHits, len(ranges))}
	f, ok := fsmap.Lookup(fs)
	walked := ok && f.Owners != nil
	if walked && len(ranges) > 0 {
		err := f.Owners(r, size, c.visit)
		if err != nil && c.visits == 0 {
			return nil, fmt.Errorf("owners: %s: %w", f.Title, err)
		}
	}
	var out []Hit
	for i, rg := range ranges {
		h := &c.hits[i]
		var claimed []block.Extent
		for k := range h.kinds {
			claimed = append(claimed, h.kinds[k].at...)
		}
		claimed = block.MergeExtents(claimed)
		rest := subtract([]block.Extent{rg}, claimed)
		var other, free, unknown []block.Extent
		switch {
		case len(rest) == 0:
		case used == nil:
			unknown = rest
		default:
			u, err := used(rg.Off, rg.Len)
			if err != nil {
				unknown = rest
				break
			}
			u = block.MergeExtents(clip(append([]block.Extent(nil), u...), rg))
			other = intersect(rest, u)
			free = subtract(rest, u)
		}
		if !walked {
			unknown, other = append(unknown, other...), nil
		}
		for k, kind := range []string{KindFile, KindDir, KindMeta} {
			at := block.MergeExtents(h.kinds[k].at)
			if k == 2 {
				at = block.MergeExtents(append(at, other...))
			}
			if len(at) == 0 {
				continue
			}
			out = append(out, Hit{Range: rg, Kind: kind, Paths: sorted(h.kinds[k].paths), Bytes: total(at)})
		}
		if n := total(free); n > 0 {
			out = append(out, Hit{Range: rg, Kind: KindFree, Bytes: n})
		}
		if n := total(block.MergeExtents(unknown)); n > 0 {
			out = append(out, Hit{Range: rg, Kind: KindUnknown, Bytes: n})
		}
	}
	return out, nil
}

// classifier gathers, per range, what the walk's owners hold in it.
type classifier struct {
	ranges []block.Extent
	hits   []rangeHits
	visits int
}

// rangeHits is what one range holds: by kind file, directory, metadata.
type rangeHits struct {
	kinds [3]kindHits
}

type kindHits struct {
	paths map[string]bool
	at    []block.Extent // bytes of the range, merged when reported
}

func (c *classifier) visit(o vfs.Owner, at []block.Extent) error {
	c.visits++
	k := 0
	switch o.Kind {
	case vfs.OwnerFile:
	case vfs.OwnerDir:
		k = 1
	case vfs.OwnerMeta:
		k = 2
	default:
		return fmt.Errorf("owners: an owner of unknown kind %d (%q)", o.Kind, o.Path)
	}
	for _, e := range at {
		if e.Len <= 0 {
			continue
		}
		// The first range ending after e starts, then every one e
		// reaches.
		i := sort.Search(len(c.ranges), func(i int) bool { return c.ranges[i].End() > e.Off })
		for ; i < len(c.ranges) && c.ranges[i].Off < e.End(); i++ {
			rg := c.ranges[i]
			s, end := max(rg.Off, e.Off), min(rg.End(), e.End())
			h := &c.hits[i].kinds[k]
			if h.paths == nil {
				h.paths = map[string]bool{}
			}
			h.paths[o.Path] = true
			if n := len(h.at); n > 0 && h.at[n-1].End() >= s && h.at[n-1].Off <= s {
				h.at[n-1].Len = max(h.at[n-1].End(), end) - h.at[n-1].Off
				continue
			}
			h.at = append(h.at, block.Extent{Off: s, Len: end - s})
			if len(h.at) > 1<<16 {
				h.at = block.MergeExtents(h.at)
			}
		}
	}
	return nil
}

func sorted(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for p := range m {
		if p != "" {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func total(es []block.Extent) int64 {
	var n int64
	for _, e := range es {
		n += e.Len
	}
	return n
}

// clip cuts es (in place) to within rg.
func clip(es []block.Extent, rg block.Extent) []block.Extent {
	out := es[:0]
	for _, e := range es {
		s, end := max(e.Off, rg.Off), min(e.End(), rg.End())
		if s < end {
			out = append(out, block.Extent{Off: s, Len: end - s})
		}
	}
	return out
}

// intersect is the bytes in both a and b, each sorted and disjoint.
func intersect(a, b []block.Extent) []block.Extent {
	var out []block.Extent
	for i, j := 0, 0; i < len(a) && j < len(b); {
		s, e := max(a[i].Off, b[j].Off), min(a[i].End(), b[j].End())
		if s < e {
			out = append(out, block.Extent{Off: s, Len: e - s})
		}
		if a[i].End() < b[j].End() {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract is the bytes of a not in b, each sorted and disjoint.
func subtract(a, b []block.Extent) []block.Extent {
	var out []block.Extent
	j := 0
	for _, e := range a {
		pos := e.Off
		for j < len(b) && b[j].End() <= pos {
			j++
		}
		for k := j; k < len(b) && b[k].Off < e.End(); k++ {
			if b[k].Off > pos {
				out = append(out, block.Extent{Off: pos, Len: b[k].Off - pos})
			}
			pos = max(pos, b[k].End())
		}
		if pos < e.End() {
			out = append(out, block.Extent{Off: pos, Len: e.End() - pos})
		}
	}
	return out
}
