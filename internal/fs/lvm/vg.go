package lvm

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// sector is LVM's unit for sizes in its metadata (extent_size, pe_start,
// stripe_size, dev_size) and its label: 512 bytes whatever the device's
// own sector size.
const sector = 512

const (
	maxExtentSectors = 1 << 32 // extent_size is a uint32 in LVM
	maxExtents       = 1 << 32 // pe_count, le_count: uint32
	maxAreas         = 256     // stripes, mirror images, raid devices
	maxStripeSectors = 1 << 32
)

// volumeGroup is what Platter takes from a VG's metadata text.
type volumeGroup struct {
	name    string
	seqno   int64
	extent  int64 // bytes
	pvs     []*physVol
	pvNamed map[string]*physVol
	lvs     []*logVol
	lvNamed map[string]*logVol
}

type physVol struct {
	name    string // pv0, pv1 ... in this text
	uuid    string // without dashes, as the PV label holds it
	off     int
	peStart int64 // bytes
	peCount int64
}

type logVol struct {
	name    string
	off     int
	status  []string
	visible bool
	extents int64
	segs    []*lvSeg
	refBy   []ref // segments of other LVs that name this one
}

// ref is a segment's mention of another LV (an image, a pool, an
// origin, a snapshot store ...) under key.
type ref struct {
	from *logVol
	seg  *lvSeg
	key  string
}

type lvSeg struct {
	off        int
	start      int64 // first extent of the LV
	count      int64 // extents
	typ        string
	stripes    int64 // areas: stripe_count, mirror_count, device_count
	stripeSize int64 // bytes, striped and raid0 with more than one stripe
	areaLen    int64 // extents each area covers
	areas      []area
	names      map[string]string // the segment's string-valued keys
}

// area is one area of a segment: extents of a PV or of another LV
// (a mirror or raid image), from start on.
type area struct {
	pv    *physVol
	lv    *logVol
	start int64
	meta  *logVol // raid: the image's metadata LV, if any
}

// mul is a*b, or false when it does not fit an int64.
func mul(a, b int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > 1<<63-1 {
		return 0, false
	}
	return int64(lo), true
}

func bad(off int, format string, args ...any) error {
	return &syntaxError{off, fmt.Sprintf(format, args...)}
}

// integer is the integer key of s within [lo, hi].
func integer(s *section, key string, lo, hi int64) (int64, error) {
	v := s.val(key)
	if v == nil {
		return 0, bad(s.off, "%q has no %s", s.name, key)
	}
	if v.kind != kindInt {
		return 0, bad(v.off, "%s of %q is not an integer", key, s.name)
	}
	if v.num < lo || v.num > hi {
		return 0, bad(v.off, "%s of %q is %d, outside [%d, %d]", key, s.name, v.num, lo, hi)
	}
	return v.num, nil
}

func str(s *section, key string) (string, error) {
	v := s.val(key)
	if v == nil {
		return "", bad(s.off, "%q has no %s", s.name, key)
	}
	if v.kind != kindString {
		return "", bad(v.off, "%s of %q is not a string", key, s.name)
	}
	return v.str, nil
}

func strList(s *section, key string) ([]string, error) {
	v := s.val(key)
	if v == nil {
		return nil, bad(s.off, "%q has no %s", s.name, key)
	}
	if v.kind != kindList {
		return nil, bad(v.off, "%s of %q is not a list", key, s.name)
	}
	out := make([]string, 0, len(v.list))
	for _, e := range v.list {
		if e.kind != kindString {
			return nil, bad(e.off, "%s of %q holds a non-string", key, s.name)
		}
		out = append(out, e.str)
	}
	return out, nil
}

// parseVG reads a VG's metadata text, parsed, into what the map needs,
// and checks it: every number in range, every name resolved, every
// LV's segments contiguous, every area inside its PV or LV.
func parseVG(root *section) (*volumeGroup, error) {
	if c, err := str(root, "contents"); err != nil || c != "Text Format Volume Group" {
		return nil, bad(0, "not LVM2 VG metadata (contents %q)", c)
	}
	if _, err := integer(root, "version", 1, 1); err != nil {
		return nil, err
	}
	secs := root.sections()
	if len(secs) != 1 {
		return nil, bad(0, "%d volume groups in one metadata text", len(secs))
	}
	vs := secs[0]
	g := &volumeGroup{name: vs.name, pvNamed: map[string]*physVol{}, lvNamed: map[string]*logVol{}}
	if v := vs.val("format"); v != nil && (v.kind != kindString || v.str != "lvm2") {
		return nil, bad(v.off, "VG format is not lvm2")
	}
	var err error
	if g.seqno, err = integer(vs, "seqno", 0, 1<<62); err != nil {
		return nil, err
	}
	es, err := integer(vs, "extent_size", 1, maxExtentSectors)
	if err != nil {
		return nil, err
	}
	g.extent = es * sector
	pvsec := vs.sub("physical_volumes")
	if pvsec == nil {
		return nil, bad(vs.off, "VG %q has no physical_volumes", g.name)
	}
	for _, ps := range pvsec.sections() {
		pv := &physVol{name: ps.name, off: ps.off}
		id, err := str(ps, "id")
		if err != nil {
			return nil, err
		}
		pv.uuid = strings.ReplaceAll(id, "-", "")
		start, err := integer(ps, "pe_start", 0, 1<<53)
		if err != nil {
			return nil, err
		}
		pv.peStart = start * sector
		if pv.peCount, err = integer(ps, "pe_count", 0, maxExtents); err != nil {
			return nil, err
		}
		if n, ok := mul(pv.peCount, g.extent); !ok || n > 1<<62-pv.peStart {
			return nil, bad(ps.off, "PV %s: %d extents of %d bytes do not fit any disk", pv.name, pv.peCount, g.extent)
		}
		g.pvNamed[pv.name] = pv
		g.pvs = append(g.pvs, pv)
	}
	if len(g.pvs) == 0 {
		return nil, bad(pvsec.off, "VG %q has no PVs", g.name)
	}
	lvsec := vs.sub("logical_volumes")
	if lvsec == nil {
		return g, nil
	}
	lvSecs := lvsec.sections()
	for _, ls := range lvSecs {
		lv := &logVol{name: ls.name, off: ls.off}
		g.lvNamed[lv.name] = lv
		g.lvs = append(g.lvs, lv)
	}
	for i, ls := range lvSecs {
		if err := g.parseLV(g.lvs[i], ls); err != nil {
			return nil, err
		}
	}
	// Areas in other LVs (images) are checked once every LV's length
	// is known.
	for _, lv := range g.lvs {
		for _, s := range lv.segs {
			for _, a := range s.areas {
				if a.lv != nil && a.start+s.areaLen > a.lv.extents {
					return nil, bad(s.off, "LV %s: segment at extent %d uses extents %d-%d of LV %s, which has %d", lv.name, s.start, a.start, a.start+s.areaLen-1, a.lv.name, a.lv.extents)
				}
			}
		}
	}
	return g, nil
}

func (g *volumeGroup) parseLV(lv *logVol, ls *section) error {
	var err error
	if lv.status, err = strList(ls, "status"); err != nil {
		return err
	}
	for _, s := range lv.status {
		lv.visible = lv.visible || s == "VISIBLE"
	}
	n, err := integer(ls, "segment_count", 0, maxNodes)
	if err != nil {
		return err
	}
	for _, ss := range ls.sections() {
		s, err := g.parseSegment(lv, ss)
		if err != nil {
			return err
		}
		lv.segs = append(lv.segs, s)
	}
	if int64(len(lv.segs)) != n {
		return bad(ls.off, "LV %s: segment_count %d but %d segments", lv.name, n, len(lv.segs))
	}
	sort.Slice(lv.segs, func(i, j int) bool { return lv.segs[i].start < lv.segs[j].start })
	for _, s := range lv.segs {
		if s.start != lv.extents {
			return bad(s.off, "LV %s: segment starts at extent %d, not %d", lv.name, s.start, lv.extents)
		}
		lv.extents += s.count
		if lv.extents > maxExtents {
			return bad(s.off, "LV %s has more than %d extents", lv.name, int64(maxExtents))
		}
	}
	if _, ok := mul(lv.extents, g.extent); !ok {
		return bad(ls.off, "LV %s: %d extents of %d bytes overflow", lv.name, lv.extents, g.extent)
	}
	return nil
}

func (g *volumeGroup) parseSegment(lv *logVol, ss *section) (*lvSeg, error) {
	s := &lvSeg{off: ss.off, names: map[string]string{}}
	var err error
	if s.start, err = integer(ss, "start_extent", 0, maxExtents); err != nil {
		return nil, err
	}
	if s.count, err = integer(ss, "extent_count", 1, maxExtents); err != nil {
		return nil, err
	}
	if s.typ, err = str(ss, "type"); err != nil {
		return nil, err
	}
	// Every LV the segment names, under any key, is used by it.
	for _, it := range ss.items {
		if it.val == nil || it.name == "type" {
			continue
		}
		if it.val.kind == kindString {
			s.names[it.name] = it.val.str
		}
		vals := []value{*it.val}
		if it.val.kind == kindList {
			vals = it.val.list
		}
		for _, v := range vals {
			if v.kind != kindString {
				continue
			}
			if t := g.lvNamed[v.str]; t != nil && g.pvNamed[v.str] == nil {
				t.refBy = append(t.refBy, ref{from: lv, seg: s, key: it.name})
			}
		}
	}
	switch s.typ {
	case "striped":
		if s.stripes, err = integer(ss, "stripe_count", 1, maxAreas); err != nil {
			return nil, err
		}
		if s.stripes > 1 {
			if s.stripeSize, err = stripeSize(ss, g.extent); err != nil {
				return nil, err
			}
		}
		if s.count%s.stripes != 0 {
			return nil, bad(ss.off, "LV %s: %d extents in %d stripes", lv.name, s.count, s.stripes)
		}
		s.areaLen = s.count / s.stripes
		err = g.pairs(lv, s, ss, "stripes")
	case "mirror":
		if s.stripes, err = integer(ss, "mirror_count", 1, maxAreas); err != nil {
			return nil, err
		}
		s.areaLen = s.count
		err = g.pairs(lv, s, ss, "mirrors")
	case "raid1":
		if s.stripes, err = integer(ss, "device_count", 1, maxAreas); err != nil {
			return nil, err
		}
		s.areaLen = s.count
		err = g.raidAreas(lv, s, ss, "raids")
	case "raid0", "raid0_meta":
		if s.stripes, err = integer(ss, "stripe_count", 1, maxAreas); err != nil {
			return nil, err
		}
		if s.stripes > 1 {
			if s.stripeSize, err = stripeSize(ss, g.extent); err != nil {
				return nil, err
			}
		}
		if s.count%s.stripes != 0 {
			return nil, bad(ss.off, "LV %s: %d extents in %d stripes", lv.name, s.count, s.stripes)
		}
		s.areaLen = s.count / s.stripes
		key := "raids"
		if s.typ == "raid0" {
			key = "raid0_lvs"
		}
		err = g.raidAreas(lv, s, ss, key)
	default:
		// Other types (thin, thin-pool, snapshot, cache, vdo, raid4-6,
		// raid10 ...) keep their data in sub-LVs, which are striped LVs
		// of their own. One that placed extents on a PV itself would
		// do so in a way this package cannot size: refuse it.
		for _, it := range ss.items {
			if it.val == nil || it.val.kind != kindList {
				continue
			}
			for _, v := range it.val.list {
				if v.kind == kindString && g.pvNamed[v.str] != nil {
					return nil, bad(v.off, "LV %s: segment type %q places extents on PV %s directly", lv.name, s.typ, v.str)
				}
			}
		}
	}
	return s, err
}

// stripeSize reads a segment's stripe_size: LVM makes it a power of two
// of at least 4 KiB (so it divides the extents it stripes).
func stripeSize(ss *section, extent int64) (int64, error) {
	n, err := integer(ss, "stripe_size", 8, maxStripeSectors)
	if err != nil {
		return 0, err
	}
	if n&(n-1) != 0 || n*sector > extent {
		return 0, bad(ss.val("stripe_size").off, "stripe_size %d is not a power of two up to the extent size", n)
	}
	return n * sector, nil
}

// pairs reads a striped or mirror segment's area list: name, first
// extent, for each area.
func (g *volumeGroup) pairs(lv *logVol, s *lvSeg, ss *section, key string) error {
	v := ss.val(key)
	if v == nil || v.kind != kindList {
		return bad(ss.off, "LV %s: segment has no %s list", lv.name, key)
	}
	if int64(len(v.list)) != 2*s.stripes {
		return bad(v.off, "LV %s: %s lists %d items for %d areas", lv.name, key, len(v.list), s.stripes)
	}
	for i := 0; i < len(v.list); i += 2 {
		name, start := v.list[i], v.list[i+1]
		if name.kind != kindString || start.kind != kindInt || start.num < 0 || start.num > maxExtents {
			return bad(name.off, "LV %s: bad area in %s", lv.name, key)
		}
		a := area{start: start.num}
		if a.pv = g.pvNamed[name.str]; a.pv == nil {
			if a.lv = g.lvNamed[name.str]; a.lv == nil {
				return bad(name.off, "LV %s: area on %q, which is neither a PV nor an LV of the VG", lv.name, name.str)
			}
		} else if a.start+s.areaLen > a.pv.peCount {
			return bad(start.off, "LV %s: extents %d-%d of PV %s are past its %d extents", lv.name, a.start, a.start+s.areaLen-1, a.pv.name, a.pv.peCount)
		}
		s.areas = append(s.areas, a)
	}
	return nil
}

// raidAreas reads a raid segment's LV list as LVM does: a metadata LV
// (named *_rmeta_*) may come before each data image.
func (g *volumeGroup) raidAreas(lv *logVol, s *lvSeg, ss *section, key string) error {
	names, err := strList(ss, key)
	if err != nil {
		return err
	}
	for i := 0; i < len(names); i++ {
		t := g.lvNamed[names[i]]
		if t == nil {
			return bad(ss.off, "LV %s: raid area %q is not an LV of the VG", lv.name, names[i])
		}
		a := area{}
		if strings.Contains(t.name, "_rmeta_") {
			a.meta = t
			i++
			if i == len(names) || g.lvNamed[names[i]] == nil {
				return bad(ss.off, "LV %s: raid metadata LV %s without its image", lv.name, t.name)
			}
			t = g.lvNamed[names[i]]
		}
		a.lv = t
		s.areas = append(s.areas, a)
	}
	if int64(len(s.areas)) != s.stripes {
		return bad(ss.off, "LV %s: %d raid images for %d devices", lv.name, len(s.areas), s.stripes)
	}
	return nil
}
