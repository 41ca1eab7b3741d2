package lvm

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/platter-dev/platter/internal/block"
)

// volume is an LV as this PV holds it.
type volume struct {
	lv    *logVol
	size  int64
	segs  []*planSeg   // where its bytes lie (the first copy), when it can be read from this PV
	usage *block.Usage // the filesystem whose map decides its blocks; nil: counted whole
	info  block.Volume
	inner []block.Volume // the volumes inside it (a LUKS payload), named and placed on the PV
}

// planSeg is a segment of a readable LV: bytes [lo, hi) of the LV,
// spread over its areas in stripes of stripeSize (one area: linear).
type planSeg struct {
	lo, hi     int64
	stripes    int64
	stripeSize int64
	areas      [][]run // per area, the first copy's runs on the PV, in order
}

// run is bytes [q, q+n) of an area, at PV byte pv.
type run struct{ q, pv, n int64 }

// piece is PV bytes [pv, pv+n) holding bytes [q, q+n) of area k of seg
// of a mapped volume (one of its copies).
type piece struct {
	pv, n int64
	q, k  int64
	seg   *planSeg
	vol   *volume
}

// alloc is PV bytes an LV's segment holds directly.
type alloc struct {
	pv, n int64
	lv    *logVol
}

// layout is the PV's map: bytes kept whole (headers, metadata areas,
// LVs counted whole) and the pieces of mapped LVs.
type layout struct {
	keep   []block.Extent // sorted, disjoint
	pieces []piece        // sorted by pv, disjoint
}

// plainStatus are LV status flags that change nothing about where its
// data lies; any other (a pvmove, a rebuild, a reshape) counts it whole.
var plainStatus = map[string]bool{
	"READ": true, "WRITE": true, "WRITE_LOCKED": true, "VISIBLE": true,
	"FIXED_MINOR": true, "NOTSYNCED": true, "WRITEMOSTLY": true,
}

type planner struct {
	r     io.ReaderAt
	g     *volumeGroup
	self  *physVol
	inner Inner
	// budget bounds the runs one LV's layout may have: exact tilings of
	// the VG's segments never need more, hostile overlaps would.
	budget int
}

// plan finds the LVs on self, reads the filesystem of each one that can
// be read from this PV alone, and lays out the PV's map.
func plan(r io.ReaderAt, g *volumeGroup, self *physVol, inner Inner, pos func(int) int64) (*layout, []*volume, []string, error) {
	p := &planner{r: r, g: g, self: self, inner: inner, budget: 16}
	for _, lv := range g.lvs {
		p.budget += 2 * len(lv.segs)
	}
	ext := g.extent
	var allocs []alloc
	own := map[*logVol][]alloc{}
	for _, lv := range g.lvs {
		for _, s := range lv.segs {
			if s.typ != "striped" && s.typ != "mirror" {
				continue
			}
			for _, a := range s.areas {
				if a.pv == self {
					al := alloc{pv: self.peStart + a.start*ext, n: s.areaLen * ext, lv: lv}
					allocs = append(allocs, al)
					own[lv] = append(own[lv], al)
				}
			}
		}
	}
	sort.Slice(allocs, func(i, j int) bool { return allocs[i].pv < allocs[j].pv })
	for i := 1; i < len(allocs); i++ {
		if a, b := allocs[i-1], allocs[i]; b.pv < a.pv+a.n {
			return nil, nil, nil, corrupt(pos(b.lv.off), "VG %s: LVs %s and %s both hold PV bytes %d-%d", g.name, a.lv.name, b.lv.name, b.pv, min(a.pv+a.n, b.pv+b.n)-1)
		}
	}

	// Hidden LVs (images, metadata, logs, pool data) belong to the first
	// visible LV that reaches them.
	uses := map[*logVol][]*logVol{}
	for _, lv := range g.lvs {
		for _, rf := range lv.refBy {
			uses[rf.from] = append(uses[rf.from], lv)
		}
	}
	claimed := map[*logVol]bool{}
	subs := func(top *logVol) []*logVol {
		var out []*logVol
		queue := []*logVol{top}
		for len(queue) > 0 {
			lv := queue[0]
			queue = queue[1:]
			for _, t := range uses[lv] {
				if t.visible || claimed[t] || t == top {
					continue
				}
				claimed[t] = true
				out = append(out, t)
				queue = append(queue, t)
			}
		}
		return out
	}

	lay := &layout{}
	mapped := map[*logVol]bool{}
	var vols []*volume
	var warns []string
	for _, lv := range g.lvs {
		if !lv.visible {
			continue
		}
		v := &volume{lv: lv, size: lv.extents * ext}
		v.info = block.Volume{Name: lv.name, Start: -1, Size: v.size, Filesystem: "raw"}
		segs, pcs, owners, copies, why := p.tryMap(lv)
		if why == "" && len(lv.refBy) > 0 {
			why = refWhy(lv)
		}
		if segs != nil {
			v.segs = segs
			v.info.Start = segs[0].areas[0][0].pv
			lr := &reader{r: r, size: v.size, segs: segs}
			u, err := p.inner(lr, v.size)
			switch {
			case err != nil:
				warns = append(warns, fmt.Sprintf("LV %s: %v; copying it whole", lv.name, err))
				if why == "" {
					why = "its filesystem is damaged"
				}
			case u == nil:
				if why == "" {
					why = "no filesystem Platter knows"
				}
			default:
				v.info.Filesystem = u.FS
				if why != "" {
					break
				}
				used, err := u.UsedBytes()
				if err != nil {
					warns = append(warns, fmt.Sprintf("LV %s: %s allocation map unreadable (%v); copying it whole", lv.name, u.FS, err))
					why = "its filesystem's allocation map is unreadable"
					break
				}
				if u.Len() < v.size {
					used += v.size - u.Len()
				}
				v.usage = u
				v.info.UsedBytes = used * copies
				for _, iv := range u.Volumes {
					iv.Name = lv.name + "/" + iv.Name
					if pv, _, err := lr.locate(iv.Start); err == nil {
						iv.Start = pv
					}
					v.inner = append(v.inner, iv)
				}
				if u.Warning != "" {
					warns = append(warns, fmt.Sprintf("LV %s: %s", lv.name, u.Warning))
				}
			}
		}
		if v.usage != nil {
			for _, o := range owners {
				mapped[o] = true
			}
			for i := range pcs {
				pcs[i].vol = v
			}
			lay.pieces = append(lay.pieces, pcs...)
		}
		first, here := int64(-1), false
		for _, o := range append([]*logVol{lv}, subs(lv)...) {
			for _, al := range own[o] {
				here = true
				if first < 0 || al.pv < first {
					first = al.pv
				}
				if !mapped[o] {
					v.info.UsedBytes += al.n
				}
			}
		}
		if v.info.Start < 0 {
			v.info.Start = first
		}
		if why != "" {
			if here {
				why += "; copied whole"
			}
			v.info.Note = why
		}
		vols = append(vols, v)
	}
	for _, lv := range g.lvs {
		if lv.visible || claimed[lv] || len(own[lv]) == 0 {
			continue
		}
		v := &volume{lv: lv, size: lv.extents * ext}
		v.info = block.Volume{Name: lv.name, Start: own[lv][0].pv, Size: v.size, Filesystem: "raw", Note: "hidden LV that no other uses; copied whole"}
		for _, al := range own[lv] {
			v.info.Start = min(v.info.Start, al.pv)
			v.info.UsedBytes += al.n
		}
		vols = append(vols, v)
	}
	// A volume with nothing on this PV: a thin volume is shown at its
	// pool; others (on other PVs of the VG) are not shown.
	byName := map[string]*volume{}
	for _, v := range vols {
		byName[v.lv.name] = v
	}
	kept := vols[:0]
	for _, v := range vols {
		if v.info.Start < 0 {
			if pool := byName[thinPool(v.lv)]; pool != nil && pool.info.Start >= 0 {
				v.info.Start = pool.info.Start
			} else {
				continue
			}
		}
		kept = append(kept, v)
	}
	vols = kept
	for _, al := range allocs {
		if !mapped[al.lv] {
			lay.keep = append(lay.keep, block.Extent{Off: al.pv, Len: al.n})
		}
	}
	sort.Slice(lay.pieces, func(i, j int) bool { return lay.pieces[i].pv < lay.pieces[j].pv })
	return lay, vols, warns, nil
}

func thinPool(lv *logVol) string {
	for _, s := range lv.segs {
		if s.typ == "thin" {
			return s.names["thin_pool"]
		}
	}
	return ""
}

func statusWhy(lv *logVol) string {
	for _, s := range lv.status {
		if !plainStatus[s] {
			return fmt.Sprintf("LV %s has status %s", lv.name, s)
		}
	}
	return ""
}

// typeWhy says why a segment type is not followed.
func typeWhy(s *lvSeg) string {
	switch s.typ {
	case "thin-pool":
		return "thin pool: where its volumes' blocks lie is in the pool's own metadata, which Platter does not read"
	case "thin":
		return fmt.Sprintf("thin volume in pool %s: its blocks are in the pool, copied whole", s.names["thin_pool"])
	case "cache", "writecache":
		return "cached volume: its cache may hold newer blocks than its origin"
	case "vdo":
		return "VDO volume: its blocks are in the VDO pool, deduplicated and compressed"
	}
	return fmt.Sprintf("segment type %s is not mapped", s.typ)
}

// refWhy says why an LV another LV uses is not mapped by its own
// filesystem alone.
func refWhy(lv *logVol) string {
	r := lv.refBy[0]
	switch {
	case r.seg.typ == "snapshot" && r.key == "origin":
		return fmt.Sprintf("origin of snapshot %s: its free blocks may still hold the snapshot's data", r.seg.names["cow_store"])
	case r.seg.typ == "snapshot" && r.key == "cow_store":
		return fmt.Sprintf("snapshot of %s (its copy-on-write store)", r.seg.names["origin"])
	case r.key == "external_origin":
		return fmt.Sprintf("external origin of thin volume %s", r.from.name)
	}
	return fmt.Sprintf("used by LV %s (%s)", r.from.name, r.seg.typ)
}

// tryMap lays out an LV's bytes when they all lie on this PV in a way
// this package follows: striped (linear is one stripe) on the PV, or
// mirror, raid1 and raid0 over images that are linear on it. It returns
// the segments (the first copy), the pieces of every copy, the LVs whose
// extents those pieces are, the number of copies; or why not.
func (p *planner) tryMap(lv *logVol) (segs []*planSeg, pcs []piece, owners []*logVol, copies int64, why string) {
	fail := func(format string, args ...any) ([]*planSeg, []piece, []*logVol, int64, string) {
		return nil, nil, nil, 0, fmt.Sprintf(format, args...)
	}
	if w := statusWhy(lv); w != "" {
		return fail("%s", w)
	}
	ext := p.g.extent
	copies = 1
	owners = []*logVol{lv}
	cover := map[*logVol][]block.Extent{} // image extents used, per image
	for _, s := range lv.segs {
		ps := &planSeg{lo: s.start * ext, hi: (s.start + s.count) * ext, stripes: 1}
		areaBytes := s.areaLen * ext
		switch s.typ {
		case "striped":
			ps.stripes, ps.stripeSize = s.stripes, s.stripeSize
			if s.stripes > 1 && areaBytes%s.stripeSize != 0 {
				return fail("its stripes of %d bytes do not divide its extents", s.stripeSize)
			}
			for k, a := range s.areas {
				switch {
				case a.pv == nil:
					return fail("its extents are mapped through LV %s (a pvmove in progress?)", a.lv.name)
				case a.pv != p.self:
					return fail("it also lies on other PVs of the VG (%s)", a.pv.name)
				}
				rn := run{q: 0, pv: p.self.peStart + a.start*ext, n: areaBytes}
				ps.areas = append(ps.areas, []run{rn})
				pcs = append(pcs, piece{pv: rn.pv, n: rn.n, q: 0, k: int64(k), seg: ps})
			}
		case "mirror", "raid1", "raid0", "raid0_meta":
			if s.typ != "mirror" && len(lv.segs) != 1 {
				return fail("%s LV with %d segments", s.typ, len(lv.segs))
			}
			striped := s.typ == "raid0" || s.typ == "raid0_meta"
			if striped {
				ps.stripes, ps.stripeSize = s.stripes, s.stripeSize
				if s.stripes > 1 && areaBytes%s.stripeSize != 0 {
					return fail("its stripes of %d bytes do not divide its extents", s.stripeSize)
				}
			} else {
				copies = max(copies, s.stripes)
			}
			for k, a := range s.areas {
				img := a.lv
				if img == nil {
					return fail("its %s segment has extents on PV %s directly (a pvmove in progress?)", s.typ, a.pv.name)
				}
				if cover[img] == nil {
					if img.visible {
						return fail("its image %s is a visible LV", img.name)
					}
					if w := statusWhy(img); w != "" {
						return fail("%s", w)
					}
					for _, rf := range img.refBy {
						if rf.from != lv {
							return fail("its image %s is also used by LV %s", img.name, rf.from.name)
						}
					}
				}
				runs, w := p.linearRuns(img, a.start, s.areaLen)
				if w != "" {
					return fail("%s", w)
				}
				if len(pcs)+len(runs) > p.budget {
					return fail("its images' extents are not each used once")
				}
				kk := int64(0)
				if striped {
					kk = int64(k)
				}
				if striped || k == 0 {
					ps.areas = append(ps.areas, runs)
				}
				for _, rn := range runs {
					pcs = append(pcs, piece{pv: rn.pv, n: rn.n, q: rn.q, k: kk, seg: ps})
				}
				if cover[img] == nil {
					owners = append(owners, img)
				}
				cover[img] = append(cover[img], block.Extent{Off: a.start, Len: s.areaLen})
			}
		default:
			return fail("%s", typeWhy(s))
		}
		segs = append(segs, ps)
	}
	// Every extent of each image must be exactly one copy's.
	for _, img := range owners[1:] {
		c := cover[img]
		sort.Slice(c, func(i, j int) bool { return c[i].Off < c[j].Off })
		at := int64(0)
		for _, e := range c {
			if e.Off != at {
				return fail("the extents of its image %s are not each used once", img.name)
			}
			at = e.End()
		}
		if at != img.extents {
			return fail("its image %s has extents no copy uses", img.name)
		}
	}
	return segs, pcs, owners, copies, ""
}

// linearRuns are the PV runs of extents [from, from+count) of img,
// which must be linear on this PV.
func (p *planner) linearRuns(img *logVol, from, count int64) ([]run, string) {
	ext := p.g.extent
	var runs []run
	i := sort.Search(len(img.segs), func(i int) bool { return img.segs[i].start+img.segs[i].count > from })
	for _, s := range img.segs[i:] {
		lo, hi := max(s.start, from), min(s.start+s.count, from+count)
		if lo >= hi {
			break
		}
		if len(runs) == p.budget {
			return nil, fmt.Sprintf("its image %s is too fragmented", img.name)
		}
		if s.typ != "striped" || s.stripes != 1 {
			return nil, fmt.Sprintf("its image %s is not linear (%s)", img.name, s.typ)
		}
		a := s.areas[0]
		if a.pv != p.self {
			return nil, fmt.Sprintf("its image %s does not lie on this PV", img.name)
		}
		runs = append(runs, run{q: (lo - from) * ext, pv: p.self.peStart + (a.start+lo-s.start)*ext, n: (hi - lo) * ext})
	}
	return runs, ""
}

// maxSpan bounds the bytes of a volume whose map is asked for at once.
const maxSpan = 64 << 20

// fill marks the used blocks of the PV in m, which starts at block first.
func (l *layout) fill(first int64, m *block.Map) error {
	w0 := first * m.BlockSize()
	markExtents(l.keep, w0, m)
	w1 := w0 + m.Len()
	i := sort.Search(len(l.pieces), func(i int) bool { return l.pieces[i].pv+l.pieces[i].n > w0 })
	for ; i < len(l.pieces) && l.pieces[i].pv < w1; i++ {
		if err := l.pieces[i].mark(m, w0); err != nil {
			return err
		}
	}
	return nil
}

// markExtents marks in m (whose byte 0 is PV byte w0) the blocks that
// overlap the sorted extents es.
func markExtents(es []block.Extent, w0 int64, m *block.Map) {
	w1 := w0 + m.Len()
	i := sort.Search(len(es), func(i int) bool { return es[i].End() > w0 })
	for ; i < len(es) && es[i].Off < w1; i++ {
		a, b := max(es[i].Off, w0), min(es[i].End(), w1)
		m.SetBytes(a-w0, b-a)
	}
}

// mark marks in m (whose byte 0 is PV byte w0) the blocks of the piece
// that hold used blocks of its volume.
func (p *piece) mark(m *block.Map, w0 int64) error {
	a, b := max(p.pv, w0), min(p.pv+p.n, w0+m.Len())
	qa, qb := p.q+a-p.pv, p.q+b-p.pv // area bytes
	dst := func(q int64) int64 { return p.pv + q - p.q - w0 }
	s := p.seg
	if s.stripes == 1 {
		for x := qa; x < qb; x += maxSpan {
			y := min(x+maxSpan, qb)
			win, base, err := p.vol.window(s.lo+x, s.lo+y)
			if err != nil {
				return err
			}
			p.vol.markFrom(win, base, m, s.lo+x, s.lo+y, dst(x))
		}
		return nil
	}
	// Row r of the stripes is bytes [r*size, (r+1)*size) of each area,
	// bytes [(r*n+k)*size, (r*n+k+1)*size) of the segment for area k.
	n, size := s.stripes, s.stripeSize
	rows := max(1, maxSpan/(n*size))
	end := (qb + size - 1) / size
	for r0 := qa / size; r0 < end; r0 += rows {
		r1 := min(r0+rows, end)
		win, base, err := p.vol.window(s.lo+r0*n*size, min(s.lo+r1*n*size, s.hi))
		if err != nil {
			return err
		}
		for r := r0; r < r1; r++ {
			x0, x1 := max(r*size, qa), min((r+1)*size, qb)
			if x0 >= x1 {
				continue
			}
			lo := s.lo + (r*n+p.k)*size + x0 - r*size
			p.vol.markFrom(win, base, m, lo, lo+x1-x0, dst(x0))
		}
	}
	return nil
}

// window is the volume's filesystem map over its bytes [lo, hi), as far
// as the map reaches (nil when not at all).
func (v *volume) window(lo, hi int64) (*block.Map, int64, error) {
	hi = min(hi, v.usage.Len())
	if lo >= hi {
		return nil, 0, nil
	}
	win, base, err := v.usage.Window(lo, hi-lo)
	if err != nil {
		return nil, 0, fmt.Errorf("lvm2: LV %s: %w", v.lv.name, err)
	}
	return win, base, nil
}

// markFrom marks in m, from byte dst on, the used bytes of the volume's
// bytes [lo, hi) that win (at volume byte base) says are used; bytes
// past the filesystem's map count used.
func (v *volume) markFrom(win *block.Map, base int64, m *block.Map, lo, hi, dst int64) {
	if end := v.usage.Len(); hi > end {
		from := max(lo, end)
		m.SetBytes(dst+from-lo, hi-from)
		hi = end
	}
	if lo >= hi || win == nil {
		return
	}
	win.Runs(lo-base, hi-lo, func(e block.Extent) {
		m.SetBytes(dst+base+e.Off-lo, e.Len)
	})
}

// reader reads an LV's bytes (its first copy) from the PV. ReadAt is
// safe for parallel calls.
type reader struct {
	r    io.ReaderAt
	size int64
	segs []*planSeg
}

// locate finds byte off of the LV (its first copy) on the PV: the PV
// byte, and how many bytes from there on are the LV's next ones.
func (v *reader) locate(off int64) (pv, n int64, err error) {
	if off < 0 || off >= v.size {
		return 0, 0, fmt.Errorf("lvm2: byte %d is outside the %d-byte LV", off, v.size)
	}
	i := sort.Search(len(v.segs), func(i int) bool { return v.segs[i].hi > off })
	s := v.segs[i]
	x := off - s.lo
	k, q, lim := int64(0), x, s.hi-off
	if s.stripes > 1 {
		c := x / s.stripeSize
		k, q = c%s.stripes, c/s.stripes*s.stripeSize+x%s.stripeSize
		lim = min(lim, s.stripeSize-x%s.stripeSize)
	}
	runs := s.areas[k]
	j := sort.Search(len(runs), func(j int) bool { return runs[j].q+runs[j].n > q })
	if j == len(runs) || runs[j].q > q {
		return 0, 0, fmt.Errorf("lvm2: byte %d of the LV is not mapped", off)
	}
	rn := runs[j]
	return rn.pv + q - rn.q, min(lim, rn.q+rn.n-q), nil
}

func (v *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("lvm2: read at a negative offset")
	}
	n := 0
	for n < len(p) {
		if off >= v.size {
			return n, io.EOF
		}
		at, lim, err := v.locate(off)
		if err != nil {
			return n, err
		}
		lim = min(lim, int64(len(p)-n))
		got, err := v.r.ReadAt(p[n:n+int(lim)], at)
		n += got
		off += int64(got)
		if err != nil && (got < int(lim) || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	return n, nil
}
