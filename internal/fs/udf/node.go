package udf

// This file reads ICBs: File Entries and Extended File Entries, and the
// allocation descriptors that place their bytes (short, long, extended,
// or embedded in the entry itself, continued by Allocation Extent
// Descriptors), as a fileData that reads them.

import (
	"fmt"
	"io"
	iofs "io/fs"
	"sort"
	"time"

	"github.com/platter-dev/platter/internal/fs/vfs"
)

// ICB file types (ECMA-167 4/14.6.6).
const (
	ftDir      = 4
	ftFile     = 5
	ftBlock    = 6
	ftChar     = 7
	ftFIFO     = 9
	ftSocket   = 10
	ftSymlink  = 12
	ftRealTime = 249
	ftMeta     = 250
	ftMirror   = 251
)

const (
	// maxAEDs bounds the Allocation Extent Descriptors one file's list
	// of extents follows: a chain that comes back on itself ends here.
	maxAEDs = 1 << 16
	noID    = 0xffffffff // a uid or gid not recorded
)

// node is a File Entry or an Extended File Entry.
type node struct {
	part    *partition // the partition its short allocation descriptors are in
	partRef int
	lbn     uint32
	at      int64 // its byte in the volume, for messages

	ftype    byte
	flags    uint16 // the ICB tag's flags
	perm     uint32
	uid, gid uint32
	size     int64
	mtime    time.Time
	ads      []byte // its allocation descriptors (or, embedded, its data)
}

// node reads the entry at block lbn of partition p (reference ref).
func (v *volume) node(p *partition, ref int, lbn uint32) (*node, error) {
	b, at, err := v.block(p, lbn)
	if err != nil {
		return nil, err
	}
	id, err := checkTag(b, at, 0, int64(lbn))
	if err != nil {
		return nil, err
	}
	n := &node{part: p, partRef: ref, lbn: lbn, at: at}
	var eaOff, adOff int
	switch id {
	case tagFE:
		n.size = int64(le.Uint64(b[56:]))
		n.mtime = timestamp(b[84:96])
		eaOff, adOff = 168, 176
	case tagEFE:
		n.size = int64(le.Uint64(b[56:]))
		n.mtime = timestamp(b[92:104])
		eaOff, adOff = 208, 216
	default:
		return nil, corrupt(at, "descriptor identifier %d where a File Entry belongs", id)
	}
	n.ftype, n.flags = b[16+11], le.Uint16(b[16+18:])
	n.uid, n.gid, n.perm = le.Uint32(b[36:]), le.Uint32(b[40:]), le.Uint32(b[44:])
	lea, lad := int64(le.Uint32(b[eaOff:])), int64(le.Uint32(b[eaOff+4:]))
	if int64(adOff)+lea+lad > int64(len(b)) {
		return nil, corrupt(at, "a File Entry's %d bytes of extended attributes and %d of allocation descriptors run past its block", lea, lad)
	}
	if n.size < 0 {
		return nil, corrupt(at, "a File Entry of %d bytes", n.size)
	}
	n.ads = b[int64(adOff)+lea : int64(adOff)+lea+lad]
	return n, nil
}

// timestamp decodes an ECMA-167 timestamp (1/7.3) as UTC: its time zone
// applied where it gives one, else taken as UTC.
func timestamp(b []byte) time.Time {
	tz := int(le.Uint16(b)) & 0xfff
	if tz&0x800 != 0 {
		tz -= 0x1000
	}
	usec := int(b[9])*10000 + int(b[10])*100 + int(b[11])
	t := time.Date(int(int16(le.Uint16(b[2:]))), time.Month(b[4]), int(b[5]), int(b[6]), int(b[7]), int(b[8]), usec*1000, time.UTC)
	if int(le.Uint16(b))>>12 == 1 && tz != -2047 {
		t = t.Add(-time.Duration(tz) * time.Minute)
	}
	return t
}

// mode is the entry's type and permissions as an iofs.FileMode.
func (n *node) mode() iofs.FileMode {
	p := n.perm
	m := iofs.FileMode((p>>10&7)<<6 | (p>>5&7)<<3 | p&7)
	if n.flags&0x40 != 0 {
		m |= iofs.ModeSetuid
	}
	if n.flags&0x80 != 0 {
		m |= iofs.ModeSetgid
	}
	if n.flags&0x100 != 0 {
		m |= iofs.ModeSticky
	}
	switch n.ftype {
	case ftDir:
		m |= iofs.ModeDir
	case ftFile, ftRealTime:
	case ftSymlink:
		m |= iofs.ModeSymlink
	case ftBlock:
		m |= iofs.ModeDevice
	case ftChar:
		m |= iofs.ModeDevice | iofs.ModeCharDevice
	case ftFIFO:
		m |= iofs.ModeNamedPipe
	case ftSocket:
		m |= iofs.ModeSocket
	default:
		m |= iofs.ModeIrregular
	}
	return m
}

// extent maps n bytes of a file from byte off: to byte at of partition p,
// or, p nil, to zeros (an extent allocated and not recorded, or not
// allocated).
type extent struct {
	off, n int64
	p      *partition
	at     int64
}

// fileData reads a file's bytes through its extents, or from the bytes
// embedded in its entry. ReadAt is safe for parallel calls.
type fileData struct {
	size     int64
	ext      []extent
	embedded []byte
}

// data finds the extents of n's bytes. They must cover its size; each
// one lies in its partition.
func (v *volume) data(n *node) (*fileData, error) {
	d := &fileData{size: n.size}
	adType := n.flags & 7
	if adType == 3 {
		if n.size > int64(len(n.ads)) {
			return nil, corrupt(n.at, "a File Entry of %d bytes embeds %d", n.size, len(n.ads))
		}
		d.embedded = n.ads[:n.size]
		return d, nil
	}
	var adLen int
	switch adType {
	case 0:
		adLen = 8
	case 1:
		adLen = 16
	case 2:
		adLen = 20
	default:
		return nil, corrupt(n.at, "allocation descriptors of type %d", adType)
	}
	ads, at := n.ads, n.at
	var off int64
	seen := map[int64]bool{}
	for aeds := 0; off < n.size; {
		if len(ads) < adLen {
			return nil, corrupt(at, "the allocation descriptors of a file end at %d of its %d bytes", off, n.size)
		}
		ad := ads[:adLen]
		ads = ads[adLen:]
		elen := le.Uint32(ad)
		etype, length := elen>>30, int64(elen&0x3fffffff)
		var lbn uint32
		p := n.part
		switch adType {
		case 0:
			lbn = le.Uint32(ad[4:])
		case 1:
			l := parseLongAD(ad)
			lbn = l.lbn
			q, err := v.part(l.part, at)
			if err != nil {
				return nil, err
			}
			p = q
		case 2:
			// An extended descriptor: its extent length, as the others'
			// (the recorded and information lengths only refine it).
			lbn = le.Uint32(ad[12:])
			q, err := v.part(le.Uint16(ad[16:]), at)
			if err != nil {
				return nil, err
			}
			p = q
		}
		if length == 0 {
			return nil, corrupt(at, "the allocation descriptors of a file end at %d of its %d bytes", off, n.size)
		}
		if etype == 3 {
			// The list goes on in an Allocation Extent Descriptor.
			aeds++
			if aeds > maxAEDs {
				return nil, corrupt(at, "a file's allocation descriptors go on through more than %d Allocation Extent Descriptors", maxAEDs)
			}
			b, bat, err := v.block(p, lbn)
			if err != nil {
				return nil, err
			}
			if seen[bat] {
				return nil, corrupt(bat, "a file's allocation descriptors come back to the Allocation Extent Descriptor at block %d", lbn)
			}
			seen[bat] = true
			if _, err := checkTag(b, bat, tagAED, int64(lbn)); err != nil {
				return nil, err
			}
			l := int64(le.Uint32(b[20:]))
			if 24+l > int64(len(b)) {
				return nil, corrupt(bat, "an Allocation Extent Descriptor's %d bytes of descriptors run past its block", l)
			}
			ads, at = b[24:24+l], bat
			continue
		}
		length = min(length, n.size-off)
		if etype == 0 {
			if err := d.add(off, length, p, int64(lbn)*v.bs, at); err != nil {
				return nil, err
			}
		} else {
			d.ext = append(d.ext, extent{off: off, n: length})
		}
		off += length
	}
	return d, nil
}

// add maps n bytes of the file from off to byte pat of partition p,
// checked to lie in it.
func (d *fileData) add(off, n int64, p *partition, pat, at int64) error {
	if pat+n > p.size {
		return corrupt(at, "a file's extent of %d bytes at byte %d of its partition runs past the partition's %d bytes", n, pat, p.size)
	}
	if n > 0 {
		d.ext = append(d.ext, extent{off: off, n: n, p: p, at: pat})
	}
	return nil
}

// phys is the byte of the volume that byte off of the file lies in, for
// messages (-1 for none).
func (d *fileData) phys(off int64) int64 {
	i := sort.Search(len(d.ext), func(i int) bool { return d.ext[i].off+d.ext[i].n > off })
	if i == len(d.ext) || d.ext[i].p == nil || d.ext[i].off > off {
		return -1
	}
	e := d.ext[i]
	return e.p.phys(e.at + off - e.off)
}

func (d *fileData) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("udf: negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), d.size-off))
	if d.embedded != nil {
		copy(p, d.embedded[off:off+int64(want)])
	} else {
		for done := 0; done < want; {
			pos := off + int64(done)
			i := sort.Search(len(d.ext), func(i int) bool { return d.ext[i].off+d.ext[i].n > pos })
			if i == len(d.ext) || d.ext[i].off > pos {
				return done, fmt.Errorf("udf: internal error: no extent maps byte %d", pos)
			}
			e := d.ext[i]
			k := int(min(e.n-(pos-e.off), int64(want-done)))
			if e.p == nil {
				clear(p[done : done+k])
			} else if err := vfs.ReadFull(e.p.r, p[done:done+k], e.at+pos-e.off); err != nil {
				return done, fmt.Errorf("udf: read a file's byte %d at byte %d of the volume: %w", pos, e.p.phys(e.at+pos-e.off), err)
			}
			done += k
		}
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}
