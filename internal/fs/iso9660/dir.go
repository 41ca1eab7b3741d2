package iso9660

// This file reads directory records and, in their system use areas,
// the SUSP entries of Rock Ridge (RRIP 1.09/1.12): NM names, PX modes
// and owners, TF times, SL symlink targets, CL/PL/RE relocations, ZF
// (zisofs) and the CE continuation areas they may spill into.

import (
	"encoding/binary"
	iofs "io/fs"
	"strings"
	"time"
)

const (
	recMin = 34 // a directory record without its name's padding
	// maxCE bounds the continuation areas one record's entries follow.
	maxCE = 16
	// maxSU bounds one record's system use bytes, continuations included.
	maxSU = 64 << 10
)

// Directory record flags.
const (
	flagHidden     = 0x01
	flagDir        = 0x02
	flagAssociated = 0x04
	flagMulti      = 0x80
)

// record is one directory record, decoded.
type record struct {
	off      int64 // its byte in the volume
	lba      int64
	length   int64
	date     time.Time
	flags    byte
	unit     byte // file unit size: interleaved when not 0
	gap      byte
	name     []byte // as recorded
	su       []byte // the system use area
	extAttrs int64  // extended attribute record length, in blocks
}

// parseRecord decodes the record at b[0:] (b[0] its length), which has
// been checked to lie within its sector.
func parseRecord(b []byte, off int64) (record, bool) {
	l := int(b[0])
	if l < recMin || l > len(b) {
		return record{}, false
	}
	b = b[:l]
	nl := int(b[32])
	if 33+nl > l {
		return record{}, false
	}
	le := binary.LittleEndian
	r := record{off: off, lba: int64(le.Uint32(b[2:])), length: int64(le.Uint32(b[10:])), date: recDate(b[18:25]),
		flags: b[25], unit: b[26], gap: b[27], name: b[33 : 33+nl], extAttrs: int64(b[1])}
	su := 33 + nl
	if nl%2 == 0 {
		su++ // the padding byte after an even-length name
	}
	if su < l {
		r.su = b[su:]
	}
	return r, true
}

// rock is what a record's Rock Ridge entries say.
type rock struct {
	sp      bool // an SP entry (only the root's "." holds one)
	skip    int  // SP's len_skp
	rr      bool // any RRIP entry at all
	name    []byte
	hasName bool
	mode    uint32
	hasMode bool
	uid     uint32
	gid     uint32
	mtime   time.Time
	target  []string // SL components, "" for the root
	hasSL   bool
	slOpen  bool  // the last component continues
	child   int64 // CL's block, -1 without
	reloc   bool  // RE: a relocated directory, listed where CL points to it
	zf      bool
	zfSize  int64
	err     string // why the entries could not all be read
}

// suspEntries walks the SUSP entries of su (skip bytes skipped) and the
// continuation areas they name, calling fn with each entry.
func (v *volume) suspEntries(su []byte, skip int, fn func(sig string, e []byte)) string {
	if skip > len(su) {
		return ""
	}
	area := su[skip:]
	total := 0
	for ce := 0; ; ce++ {
		var next []byte
		for len(area) >= 4 {
			l := int(area[2])
			if l < 4 || l > len(area) {
				break
			}
			e := area[:l]
			area = area[l:]
			sig := string(e[:2])
			switch sig {
			case "ST":
				area = nil
			case "CE":
				if l >= 28 && next == nil {
					le := binary.LittleEndian
					lba, off, n := int64(le.Uint32(e[4:])), int64(le.Uint32(e[12:])), int64(le.Uint32(e[20:]))
					at := lba*v.blockSize + off
					if off >= v.blockSize || n <= 0 || n > v.blockSize || at < 0 || at+n > v.end() {
						return "a continuation area outside the volume"
					}
					next = make([]byte, n)
					if err := readAt(v.r, next, at); err != nil {
						return "a continuation area that cannot be read: " + err.Error()
					}
				}
			default:
				fn(sig, e)
			}
		}
		if next == nil {
			return ""
		}
		if total += len(next); ce >= maxCE || total > maxSU {
			return "a chain of more than 16 continuation areas (a loop?)"
		}
		area = next
	}
}

// rockRidge decodes a record's Rock Ridge entries.
func (v *volume) rockRidge(rec record, skip int) rock {
	ro := rock{child: -1}
	le := binary.LittleEndian
	ro.err = v.suspEntries(rec.su, skip, func(sig string, e []byte) {
		d := e[4:]
		switch sig {
		case "SP":
			if len(d) >= 3 && d[0] == 0xbe && d[1] == 0xef {
				ro.sp, ro.skip = true, int(d[2])
			}
		case "RR", "ER":
			ro.rr = true
		case "NM":
			ro.rr = true
			if len(d) >= 1 && d[0]&6 == 0 {
				ro.name = append(ro.name, d[1:]...)
				ro.hasName = true
			}
		case "PX":
			ro.rr = true
			if len(d) >= 32 {
				ro.mode, ro.uid, ro.gid = le.Uint32(d[0:]), le.Uint32(d[16:]), le.Uint32(d[24:])
				ro.hasMode = true
			}
		case "TF":
			ro.rr = true
			if len(d) < 1 {
				return
			}
			flags, ts := d[0], d[1:]
			size := 7
			if flags&0x80 != 0 {
				size = 17
			}
			for bit := 0; bit < 7; bit++ {
				if flags&(1<<bit) == 0 {
					continue
				}
				if len(ts) < size {
					return
				}
				if bit == 1 { // modify
					if size == 17 {
						ro.mtime, _ = decDate(ts[:17])
					} else {
						ro.mtime = recDate(ts[:7])
					}
				}
				ts = ts[size:]
			}
		case "SL":
			ro.rr, ro.hasSL = true, true
			if len(d) < 1 {
				return
			}
			comps := d[1:]
			for len(comps) >= 2 {
				cf, cl := comps[0], int(comps[1])
				if 2+cl > len(comps) {
					break
				}
				text := string(comps[2 : 2+cl])
				switch {
				case cf&0x02 != 0:
					text = "."
				case cf&0x04 != 0:
					text = ".."
				case cf&0x08 != 0:
					text = ""
				}
				if ro.slOpen && len(ro.target) > 0 {
					ro.target[len(ro.target)-1] += text
				} else {
					ro.target = append(ro.target, text)
				}
				ro.slOpen = cf&0x01 != 0
				comps = comps[2+cl:]
			}
		case "CL":
			ro.rr = true
			if len(d) >= 4 {
				ro.child = int64(le.Uint32(d[0:]))
			}
		case "RE":
			ro.rr, ro.reloc = true, true
		case "PL":
			ro.rr = true
		case "ZF":
			if len(d) >= 12 {
				ro.zf, ro.zfSize = true, int64(le.Uint32(d[4:]))
			}
		}
	})
	return ro
}

// linkTarget joins SL components: a leading root component makes the
// path absolute.
func (ro *rock) linkTarget() string {
	if len(ro.target) == 0 {
		return ""
	}
	if ro.target[0] == "" {
		return "/" + strings.Join(ro.target[1:], "/")
	}
	return strings.Join(ro.target, "/")
}

// posixMode turns a Rock Ridge PX mode into an io/fs mode.
func posixMode(m uint32) iofs.FileMode {
	mode := iofs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= iofs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= iofs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= iofs.ModeSticky
	}
	switch m & 0o170000 {
	case 0o040000:
		mode |= iofs.ModeDir
	case 0o120000:
		mode |= iofs.ModeSymlink
	case 0o020000:
		mode |= iofs.ModeDevice | iofs.ModeCharDevice
	case 0o060000:
		mode |= iofs.ModeDevice
	case 0o010000:
		mode |= iofs.ModeNamedPipe
	case 0o140000:
		mode |= iofs.ModeSocket
	}
	return mode
}

// isoName is a plain ISO 9660 name as Linux shows it: its ";1" version
// and a trailing dot (of a name without an extension) cut off.
func isoName(b []byte) string {
	s := string(b)
	if i := strings.LastIndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if strings.HasSuffix(s, ".") && len(s) > 1 {
		s = s[:len(s)-1]
	}
	return s
}

// jolietName is a Joliet (UCS-2) name, its version cut off as isoName
// cuts it.
func jolietName(b []byte) string {
	s := ucs2(b)
	if i := strings.LastIndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if strings.HasSuffix(s, ".") && len(s) > 1 {
		s = s[:len(s)-1]
	}
	return s
}
