package exfat

// This file finds the used sectors of an exFAT volume.
//
// Used are the sectors before the cluster heap (both boot regions, the
// FATs, and the alignment between them, which mkfs.exfat zeroes and
// partclone copies too), every cluster an allocation bitmap marks, and
// the clusters of the bitmaps, the up-case table and the root
// directory whether they are marked or not.
//
// The bitmap is not taken on trust. exFAT has no journal: a volume
// unplugged while mounted (VolumeDirty set) may have files whose
// clusters its bitmap does not yet mark, and fsck.exfat, finding them,
// marks them used and keeps the files. So the directory tree is walked,
// whatever the flag says, and every cluster a file or directory reaches
// (by NoFatChain or its FAT chain, entry sets with a bad checksum
// included: fsck.exfat repairs those) counts as used too: the copy then
// holds all that any repair keeps, and its bitmap is the source's, byte
// for byte. What a damaged chain does not reach, nothing can.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
)

const (
	// maxExtra bounds the runs of clusters the tree uses and no bitmap
	// marks that are kept; past it the volume is copied whole.
	maxExtra = 1 << 20
	// bitmapPiece is how much of a bitmap the walk reads at once.
	bitmapPiece = 64 << 10
)

// Detect reads the exFAT volume in r (size bytes) and returns its used
// sectors. Not exFAT: an error wrapping block.ErrNotMine. Both boot
// regions damaged: a *block.CorruptError. A volume read from its backup
// boot region, marked dirty, or whose bitmap misses clusters its files
// use comes back with a Warning (the map holds all they need); one
// whose bitmap cannot be found or read, untrusted.
func Detect(r io.ReaderAt, size int64) (*block.Usage, error) {
	v, err := open(r, size)
	if err != nil {
		return nil, err
	}
	d := &detected{v: v}
	u, err := block.NewUsage("exfat", v.sectorSize, size, d.fill)
	if err != nil {
		return nil, err
	}
	var warn []string
	if v.mainDamage != nil {
		warn = append(warn, fmt.Sprintf("the main boot region is damaged (%s); the backup boot region is read, as fsck.exfat would restore it", describe(v.mainDamage)))
	}
	distrust := func(why string) (*block.Usage, error) {
		u.Distrust(strings.Join(append(warn, why), "; "))
		u.Warning = "exfat: " + u.Warning
		return u, nil
	}
	if err := d.readRoot(); err != nil {
		var ce *block.CorruptError
		if !errors.As(err, &ce) {
			return nil, err
		}
		return distrust(fmt.Sprintf("its allocation bitmap cannot be read (%s): every sector is stored", describe(err)))
	}
	lag, err := d.walk()
	if err != nil {
		var ce *block.CorruptError
		if !errors.As(err, &ce) {
			return nil, err
		}
		return distrust(fmt.Sprintf("its directory tree cannot be checked against its allocation bitmap (%s): every sector is stored", describe(err)))
	}
	switch {
	case v.flags&flagDirty != 0:
		w := "it is marked dirty (not cleanly unmounted, or still mounted); fsck.exfat rebuilds its allocation bitmap from its directories: the clusters every file and directory uses are stored too"
		if lag.clusters > 0 {
			w += fmt.Sprintf(" (%d that the bitmap calls free, the first cluster %d, of %s)", lag.clusters, lag.first, lag.what)
		}
		warn = append(warn, w)
	case lag.clusters > 0:
		warn = append(warn, fmt.Sprintf("its allocation bitmap calls %d clusters free that its files use (the first cluster %d, of %s); fsck.exfat would mark them used: they are stored too", lag.clusters, lag.first, lag.what))
	}
	if len(warn) > 0 {
		u.Warning = "exfat: " + strings.Join(warn, "; ")
	}
	return u, nil
}

// describe is err for a warning that names exFAT already.
func describe(err error) string {
	var ce *block.CorruptError
	if errors.As(err, &ce) {
		return fmt.Sprintf("%s at byte %d", ce.Msg, ce.Off)
	}
	return err.Error()
}

// detected is what fill needs of a volume.
type detected struct {
	v       *volume
	bitmaps []bitmap // the active one first
	// extra are the clusters used whatever the bitmaps say (the
	// bitmaps', the up-case table's, those the tree reaches and no
	// bitmap marks), sorted and merged once the walk is done.
	extra []crun
	buf   []byte // fill's piece of a bitmap

	piece    [2][]byte // the walk's piece of each bitmap
	pieceN   [2]int64
	steps    int64 // clusters the walk has passed
	maxSteps int64
}

// bitmap is an allocation bitmap: bit i (of byte i/8, from the least
// significant) is cluster i+2.
type bitmap struct {
	first  uint32
	length int64
}

// crun is n clusters from cluster c.
type crun struct {
	c uint32
	n int64
}

// readRoot finds the allocation bitmaps and the up-case table in the
// root directory. With TexFAT's two, VolumeFlags say which bitmap is in
// use; both are kept, and a cluster either marks counts as used: the
// kernel reads the first whatever the flag says, Windows the active
// one, and either must find its files.
func (d *detected) readRoot() error {
	v := d.v
	le := binary.LittleEndian
	type entry struct {
		bitmap
		off int64 // its entry's byte
	}
	var found [2]*entry
	var up *crun
	err := v.dirEntries(data{first: v.root, root: true}, "the root directory", func(raw []byte, off int64) bool {
		switch raw[0] {
		case typeBitmap:
			if k := raw[1] & 1; found[k] == nil {
				found[k] = &entry{bitmap{first: le.Uint32(raw[20:]), length: int64(min(le.Uint64(raw[24:]), 1<<40))}, off}
			}
		case typeUpcase:
			if up == nil {
				up = &crun{c: le.Uint32(raw[20:]), n: int64(min(le.Uint64(raw[24:]), 1<<40))}
			}
		}
		return found[0] == nil || (v.fats == 2 && found[1] == nil) || up == nil
	})
	if err != nil {
		return err
	}
	order := []int{v.active}
	if v.fats == 2 {
		order = append(order, 1-v.active)
	}
	for _, k := range order {
		b := found[k]
		if b == nil {
			return corrupt(v.clusterOff(v.root), "the root directory has no allocation bitmap entry for FAT %d", k+1)
		}
		if need := (int64(v.clusters) + 7) / 8; b.length < need {
			return corrupt(b.off, "allocation bitmap %d is %d bytes, fewer than the %d of the volume's %d clusters", k+1, b.length, need, v.clusters)
		}
		n := (b.length + v.clusterSize - 1) / v.clusterSize
		if !v.valid(b.first) || int64(b.first-2)+n > int64(v.clusters) {
			return corrupt(b.off, "allocation bitmap %d of %d bytes from cluster %d does not fit in the volume's clusters 2-%d", k+1, b.length, b.first, v.clusters+1)
		}
		d.bitmaps = append(d.bitmaps, b.bitmap)
		d.extra = append(d.extra, crun{c: b.first, n: n})
	}
	if up != nil && v.valid(up.c) {
		n := (up.n + v.clusterSize - 1) / v.clusterSize
		d.extra = append(d.extra, crun{c: up.c, n: min(n, int64(v.clusters)-int64(up.c-2))})
	}
	return nil
}

// lag is what the walk found the bitmaps miss.
type lag struct {
	clusters int64
	first    uint32
	what     string
}

// walk visits every directory the root reaches and every file in them,
// and adds to d.extra the clusters they reach that no bitmap marks. A
// damaged entry set or chain gives what it reaches; only a walk that
// passes far more clusters than the volume has (a tree cross-linked
// against itself) or more runs than maxExtra fails.
func (d *detected) walk() (lag, error) {
	v := d.v
	var l lag
	d.pieceN = [2]int64{-1, -1}
	// A sound tree reaches each cluster once: twice the volume's, and
	// a few more for a tiny one, is damage.
	d.maxSteps = 2*int64(v.clusters) + 64
	note := func(runs []vfs.Run, what string) error {
		for _, r := range runs {
			if d.steps += r.N; d.steps > d.maxSteps {
				return corrupt(v.heapOff, "the directory tree reaches more than %d clusters, twice the volume's: it is cross-linked", d.maxSteps)
			}
			err := d.unmarked(r.Physical, r.N, func(c uint32, n int64) {
				if l.clusters == 0 {
					l.first, l.what = c, what
				}
				l.clusters += n
				d.extra = append(d.extra, crun{c: c, n: n})
			})
			if err != nil {
				return err
			}
			if len(d.extra) > maxExtra {
				return corrupt(v.heapOff, "its allocation bitmap misses clusters in more than %d places", maxExtra)
			}
		}
		return nil
	}
	type dir struct {
		d    data
		what string
	}
	queue := []dir{{data{first: v.root, root: true}, "the root directory"}}
	seen := map[data]bool{}
	le := binary.LittleEndian
	for len(queue) > 0 {
		dd := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[dd.d] {
			continue
		}
		seen[dd.d] = true
		runs, err := v.follow(dd.d, dd.what)
		if err := d.ioErr(err); err != nil {
			return l, err
		}
		if err := note(runs, dd.what); err != nil {
			return l, err
		}
		var walkErr error
		sr := setReader{set: func(s entrySet) {
			if walkErr != nil {
				return
			}
			f, _ := v.file(s) // damaged or not: the data a repair may keep
			what := fmt.Sprintf("%q (entry at byte %d)", f.Name, s.off)
			if s.len() > 1 && s.entry(1)[0] == typeStream {
				if f.Mode.IsDir() {
					if f.data.length > 0 {
						queue = append(queue, dir{f.data, "the directory " + what})
					}
				} else {
					runs, err := v.follow(f.data, what)
					if walkErr = d.ioErr(err); walkErr == nil {
						walkErr = note(runs, what)
					}
				}
			}
			for i := 2; i < s.len() && walkErr == nil; i++ {
				if e := s.entry(i); e[0] == typeVendor {
					// Vendor allocation: clusters of a vendor's own.
					vd := data{first: le.Uint32(e[20:]), length: int64(min(le.Uint64(e[24:]), 1<<62)), contiguous: e[1]&flagNoChain != 0}
					runs, err := v.follow(vd, what)
					if walkErr = d.ioErr(err); walkErr == nil {
						walkErr = note(runs, what)
					}
				}
			}
		}}
		err = v.dirEntries(dd.d, dd.what, func(raw []byte, off int64) bool {
			sr.entry(raw, off)
			return walkErr == nil
		})
		sr.flush()
		if walkErr != nil {
			return l, walkErr
		}
		if err := d.ioErr(err); err != nil {
			return l, err
		}
	}
	sort.Slice(d.extra, func(i, j int) bool { return d.extra[i].c < d.extra[j].c })
	merged := d.extra[:0]
	for _, r := range d.extra {
		if k := len(merged) - 1; k >= 0 && int64(r.c) <= int64(merged[k].c)+merged[k].n {
			merged[k].n = max(merged[k].n, int64(r.c)+r.n-int64(merged[k].c))
			continue
		}
		merged = append(merged, r)
	}
	d.extra = merged
	return l, nil
}

// ioErr drops damage (what a damaged structure reaches was taken) and
// keeps what is not: a read that failed.
func (d *detected) ioErr(err error) error {
	var ce *block.CorruptError
	if err == nil || errors.As(err, &ce) {
		return nil
	}
	return err
}

// unmarked calls fn with each run of clusters among n from c that no
// bitmap marks used.
func (d *detected) unmarked(c uint32, n int64, fn func(c uint32, n int64)) error {
	start, count := uint32(0), int64(0)
	for i := int64(0); i < n; {
		cl := c + uint32(i)
		used, whole, err := d.marked(cl)
		if err != nil {
			return err
		}
		step := int64(1)
		if whole && i+8 <= n {
			step = 8 // the active bitmap marks its whole byte: a file's clusters mostly are
		}
		switch {
		case !used && count == 0:
			start, count = cl, 1
		case !used:
			count++
		case count > 0:
			fn(start, count)
			count = 0
		}
		i += step
	}
	if count > 0 {
		fn(start, count)
	}
	return nil
}

// marked says whether any bitmap marks cluster c used, and whether the
// active one marks c and the 7 clusters after it, c being the first of
// its byte.
func (d *detected) marked(c uint32) (used, whole bool, err error) {
	i := int64(c - 2)
	for k, b := range d.bitmaps {
		n := i / 8 / bitmapPiece
		if d.pieceN[k] != n {
			if d.piece[k] == nil {
				d.piece[k] = make([]byte, bitmapPiece)
			}
			p := d.piece[k][:min(bitmapPiece, b.length-n*bitmapPiece)]
			at := d.v.clusterOff(b.first) + n*bitmapPiece
			if err := readFull(d.v.r, p, at); err != nil {
				d.pieceN[k] = -1
				return false, false, fmt.Errorf("exfat: read allocation bitmap at byte %d: %w", at, err)
			}
			d.pieceN[k] = n
		}
		byt := d.piece[k][i/8-n*bitmapPiece]
		if byt&(1<<(i%8)) != 0 {
			return true, k == 0 && i%8 == 0 && byt == 0xff, nil
		}
	}
	return false, false, nil
}

// fill marks the used sectors among sectors [first, first+m.Blocks()).
func (d *detected) fill(first int64, m *block.Map) error {
	v := d.v
	ss := v.sectorSize
	spc := v.clusterSize / ss
	end := first + m.Blocks()
	mark := func(s, e int64) {
		if s, e = max(s, first), min(e, end); s < e {
			m.SetRange(s-first, e-s)
		}
	}
	heap := v.heapOff / ss
	mark(0, heap)
	heapEnd := heap + int64(v.clusters)*spc
	if end <= heap || first >= heapEnd {
		return nil
	}
	// Clusters i+2 for i in [i0, i1) overlap the window.
	i0 := (max(first, heap) - heap) / spc
	i1 := (min(end, heapEnd) - heap + spc - 1) / spc
	markClusters := func(i, n int64) { mark(heap+i*spc, heap+(i+n)*spc) }
	lo, hi := i0/8, (i1+7)/8
	if int64(cap(d.buf)) < hi-lo {
		d.buf = make([]byte, hi-lo)
	}
	buf := d.buf[:hi-lo]
	for k, b := range d.bitmaps {
		at := v.clusterOff(b.first) + lo
		if err := readFull(v.r, buf, at); err != nil {
			return fmt.Errorf("exfat: read allocation bitmap %d at byte %d: %w", k+1, at, err)
		}
		run := int64(-1) // the start of a run of used clusters
		for i := i0; i < i1; i++ {
			if bi := i/8 - lo; i%8 == 0 && i+8 <= i1 && (buf[bi] == 0 || buf[bi] == 0xff) {
				// A whole byte at once.
				if buf[bi] == 0 && run >= 0 {
					markClusters(run, i-run)
					run = -1
				} else if buf[bi] == 0xff && run < 0 {
					run = i
				}
				i += 7
				continue
			}
			used := buf[i/8-lo]&(1<<(i%8)) != 0
			switch {
			case used && run < 0:
				run = i
			case !used && run >= 0:
				markClusters(run, i-run)
				run = -1
			}
		}
		if run >= 0 {
			markClusters(run, i1-run)
		}
	}
	// The runs always used, from the first that may reach the window.
	k := sort.Search(len(d.extra), func(k int) bool { return int64(d.extra[k].c-2)+d.extra[k].n > i0 })
	for ; k < len(d.extra) && int64(d.extra[k].c-2) < i1; k++ {
		markClusters(int64(d.extra[k].c-2), d.extra[k].n)
	}
	return nil
}
