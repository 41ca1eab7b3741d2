// Package clonezilla opens a Clonezilla image directory (what `ocs-sr
// savedisk` or `saveparts` writes) as the disk it was made from: the
// partition table rebuilt from the sfdisk dump (<disk>-pt.sf) with the
// boot code of <disk>-mbr, the data between the MBR and the first
// partition (<disk>-hidden-data-after-mbr), each partition from its
// partclone image (<part>.<fs>-ptcl-img.<comp>.aa ...), ntfsclone image
// (<part>.ntfs-img[.aa ...], ocs-sr -q) or dd image (<part>.dd-img.*,
// <part>.dd-ptcl-img.<comp>.*: partclone.dd's raw bytes) at its place in
// the table, and each swap partition's signature made again from
// swappt-<part>.info with its UUID and label, as ocs-sr's restore does
// with mkswap. A saveparts directory has no disk file: its disk is the
// one whose table ocs-sr saved beside the partitions, and the
// partitions it did not save read as zeros.
//
// An uncompressed partclone image is read in place, across its volumes.
// A compressed one, and an ntfsclone image, can only be read front to
// back: this first version decodes a partition, the first time any of
// its bytes is read, into a private sparse temporary file (unlinked at
// once, so nothing is left behind), verifying every partclone checksum
// on the way; a gzip access index kept beside the image is for later.
//
// Not read, and refused with an error saying so: LVM volumes (lvm_*
// files), directories holding more than one disk, a saveparts directory
// without its disk's table.
package clonezilla

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/ntfsclone"
	"github.com/platter-dev/platter/internal/partclone"
	"github.com/platter-dev/platter/internal/ptable"
)

// ErrNotClonezilla is a directory that is not a Clonezilla image.
var ErrNotClonezilla = errors.New("not a Clonezilla image directory")

// ErrUnsupported is an image that holds what this package does not read.
var ErrUnsupported = errors.New("not supported")

// Options tune Open.
type Options struct {
	// TempDir is where compressed partitions are decoded ("": os.TempDir).
	TempDir string
	// Progress hears, while a partition is decoded, its name and the
	// bytes of it written so far.
	Progress func(part string, done, total int64)
}

// Partition is one partition of the disk and where its bytes come from.
type Partition struct {
	Name  string // the kernel's name when it was saved: sda1, nvme0n1p2
	Index int
	Start int64
	Size  int64
	// Kind is "partclone", "dd", "swap" or "" (nothing saved: zeros).
	Kind string
	FS   string // the filesystem ocs-sr named (ext4, vfat, ...)
	// Files are the image's volumes, in order.
	Files       []string
	Compression string
	// Header is the partclone image's header (Kind "partclone").
	Header *partclone.Header
	// Ntfs is the ntfsclone image's header (Kind "ntfsclone").
	Ntfs *ntfsclone.Header

	src  partSource
	once sync.Once
	err  error
	bm   *partclone.Bitmap
	swap []byte
	mu   sync.Mutex
	used []block.Extent // an ntfsclone image's, once decoded
}

// ntfsUsed is the bytes of the partition an ntfsclone image held (nil
// before it is decoded).
func (p *Partition) ntfsUsed() []block.Extent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// partSource reads a partition's bytes.
type partSource interface {
	io.ReaderAt
	Close() error
}

// Disk is a Clonezilla image directory read as the disk it was saved
// from. ReadAt is safe for parallel calls.
type Disk struct {
	Dir        string
	Name       string // the disk's kernel name when saved: sda
	Table      *ptable.Table
	Partitions []*Partition
	// Saved is, for an image of partitions (ocs-sr saveparts), the
	// partitions it saved; nil for an image of the disk (savedisk).
	Saved  []string
	size   int64
	ss     int64
	pieces []ptable.Piece // the table and boot areas
	opts   Options
}

// Open opens the Clonezilla image directory dir.
func Open(dir string, opts Options) (*Disk, error) {
	read := func(name string) ([]byte, error) { return readSmall(filepath.Join(dir, name)) }
	diskFile, err := read("disk")
	var saved []string // saveparts: the partitions saved
	if errors.Is(err, os.ErrNotExist) {
		partsFile, perr := read("parts")
		if perr != nil {
			return nil, fmt.Errorf("clonezilla: %s: %w (no file named disk or parts)", dir, ErrNotClonezilla)
		}
		saved = strings.Fields(string(partsFile))
		if len(saved) == 0 {
			return nil, fmt.Errorf("clonezilla: %s/parts names no partition", dir)
		}
		if diskFile, err = partsDisk(dir, saved); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("clonezilla: %w", err)
	}
	disks := strings.Fields(string(diskFile))
	switch {
	case len(disks) == 0:
		return nil, fmt.Errorf("clonezilla: %s/disk names no disk", dir)
	case len(disks) > 1:
		return nil, fmt.Errorf("clonezilla: %s: %w: the image holds %d disks (%s); this version opens one", dir, ErrUnsupported, len(disks), strings.Join(disks, ", "))
	}
	d := &Disk{Dir: dir, Name: toFilename(disks[0]), Saved: saved, opts: opts}
	if err := checkName(d.Name); err != nil {
		return nil, fmt.Errorf("clonezilla: %s/disk: %w", dir, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "lvm_*")); len(m) > 0 {
		return nil, fmt.Errorf("clonezilla: %s: %w: it holds LVM volumes (%s)", dir, ErrUnsupported, filepath.Base(m[0]))
	}
	sfName := d.Name + "-pt.sf"
	sf, err := read(sfName)
	if err != nil {
		return nil, fmt.Errorf("clonezilla: the partition table dump: %w", err)
	}
	dump, err := parseSfdisk(sf, sfName)
	if err != nil {
		return nil, err
	}
	d.ss = dump.SectorSize
	if d.size, err = d.diskSize(dump); err != nil {
		return nil, err
	}
	if err := d.layTable(dump); err != nil {
		return nil, err
	}
	if err := d.checkSaved(dump); err != nil {
		return nil, err
	}
	if err := d.findImages(dump); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// readSmall reads a small file of the directory, without following a
// symlink planted in its place; 64 MiB at most.
func readSmall(p string) ([]byte, error) {
	st, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if st.Size() > 64<<20 {
		return nil, fmt.Errorf("%s: %d bytes is too large for what it should hold", p, st.Size())
	}
	return os.ReadFile(p)
}

// partsDisk finds the disk of a saveparts image: ocs-sr saves the table
// of the disk the partitions are on (<disk>-pt.sf) beside them. It
// returns the disk's name as a disk file would hold it.
func partsDisk(dir string, saved []string) ([]byte, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*-pt.sf"))
	if err != nil {
		return nil, fmt.Errorf("clonezilla: %w", err)
	}
	var disks []string
	for _, p := range m {
		disks = append(disks, strings.TrimSuffix(filepath.Base(p), "-pt.sf"))
	}
	switch len(disks) {
	case 0:
		return nil, fmt.Errorf("clonezilla: %s: %w: an image of partitions (saveparts: %s) without its disk's partition table (no <disk>-pt.sf); restore it with ocs-sr restoreparts", dir, ErrUnsupported, strings.Join(saved, ", "))
	case 1:
		return []byte(disks[0]), nil
	}
	return nil, fmt.Errorf("clonezilla: %s: %w: the image holds partitions of %d disks (%s); this version opens one", dir, ErrUnsupported, len(disks), strings.Join(disks, ", "))
}

// checkSaved checks that every partition a saveparts image names is in
// its disk's table.
func (d *Disk) checkSaved(dump *sfDump) error {
	for _, name := range d.Saved {
		found := false
		for _, p := range dump.Parts {
			found = found || toFilename(p.Dev) == toFilename(name)
		}
		if !found {
			return fmt.Errorf("clonezilla: %s/parts names %s, which is not in %s-pt.sf", d.Dir, name, d.Name)
		}
	}
	return nil
}

// saved says whether partition name is one the image saved: every one
// of a savedisk image, the listed ones of a saveparts image.
func (d *Disk) saved(name string) bool {
	if d.Saved == nil {
		return true
	}
	for _, n := range d.Saved {
		if toFilename(n) == name {
			return true
		}
	}
	return false
}

// toFilename is ocs-sr's to_filename: cciss/c0d0 -> cciss-c0d0.
func toFilename(dev string) string {
	return strings.ReplaceAll(strings.TrimPrefix(dev, "/dev/"), "/", "-")
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:+-]*$`)

// checkName refuses a device name that could walk out of the directory.
func checkName(n string) error {
	if !nameRE.MatchString(n) || strings.Contains(n, "..") || len(n) > 128 {
		return fmt.Errorf("device name %q is not one a kernel gives", n)
	}
	return nil
}

var partedDisk = regexp.MustCompile(`(?m)^Disk /dev/\S+: (\d+)s$`)

// diskSize is the disk's size: parted's dump says it in sectors; without
// it, the end of the GPT's backup or of the last partition.
func (d *Disk) diskSize(dump *sfDump) (int64, error) {
	if b, err := readSmall(filepath.Join(d.Dir, d.Name+"-pt.parted")); err == nil {
		if m := partedDisk.FindSubmatch(b); m != nil {
			n, err := strconv.ParseInt(string(m[1]), 10, 64)
			if err == nil && n > 0 && n < (1<<62)/d.ss {
				return n * d.ss, nil
			}
		}
	}
	var end int64
	if dump.Label == "gpt" && dump.LastLBA > 0 {
		end = (dump.LastLBA + 34) * d.ss
	}
	for _, p := range dump.Parts {
		end = max(end, p.Start+p.Size)
	}
	if end == 0 {
		return 0, fmt.Errorf("clonezilla: %s: no size for the disk (no %s-pt.parted, no partitions)", d.Dir, d.Name)
	}
	return end, nil
}

// layTable rebuilds the table's sectors from the dump, as ocs-sr's
// restore has sfdisk write them, with the boot code of <disk>-mbr and
// the hidden data after it.
func (d *Disk) layTable(dump *sfDump) error {
	t := &ptable.Table{SectorSize: d.ss, DiskSize: d.size, DiskID: dump.ID}
	if dump.Label == "gpt" {
		t.Kind = "gpt"
		t.DiskID = strings.ToUpper(dump.ID)
	} else {
		t.Kind = "mbr"
		if v, err := strconv.ParseUint(strings.TrimPrefix(dump.ID, "0x"), 16, 32); err == nil {
			t.DiskID = fmt.Sprintf("0x%08x", v)
		}
	}
	for _, p := range dump.Parts {
		if p.Start+p.Size > d.size {
			return fmt.Errorf("clonezilla: %s: partition %s (bytes %d-%d) runs past the disk's %d bytes", d.Dir, p.Dev, p.Start, p.Start+p.Size-1, d.size)
		}
		if p.Extended {
			e := p.Partition
			t.Extended = &e
			continue
		}
		t.Partitions = append(t.Partitions, p.Partition)
	}
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Index < t.Partitions[j].Index })
	orig := &ptable.Original{SectorSize: d.ss}
	if mbr, err := readSmall(filepath.Join(d.Dir, d.Name+"-mbr")); err == nil && len(mbr) >= 446 {
		copy(orig.Boot[:], mbr[:446])
	}
	if t.Kind == "gpt" {
		orig.FirstUsable = dump.FirstLBA * d.ss
		if g, err := readSmall(filepath.Join(d.Dir, d.Name+"-gpt-1st")); err == nil && int64(len(g)) >= 2*d.ss {
			if h, err := ptable.ParseGPTHeader(g[d.ss : 2*d.ss]); err == nil {
				orig.NumEntries, orig.EntrySize = h.NumEntries, h.EntrySize
			}
		}
	}
	pieces, err := t.Layout(orig)
	if err != nil {
		return fmt.Errorf("clonezilla: %s: rebuild the partition table from %s-pt.sf: %w", d.Dir, d.Name, err)
	}
	d.Table = t
	if t.Kind == "mbr" {
		if h, err := readSmall(filepath.Join(d.Dir, d.Name+"-hidden-data-after-mbr")); err == nil && len(h) > 0 {
			first := d.size
			for _, p := range t.Partitions {
				first = min(first, p.Start)
			}
			if t.Extended != nil {
				first = min(first, t.Extended.Start)
			}
			if n := min(int64(len(h)), first-d.ss); n > 0 {
				pieces = append([]ptable.Piece{{Off: d.ss, Data: h[:n]}}, pieces...)
			}
		}
	}
	sort.SliceStable(pieces, func(i, j int) bool { return pieces[i].Off < pieces[j].Off })
	d.pieces = pieces
	return nil
}

// findImages matches each partition of the dump with its image files.
func (d *Disk) findImages(dump *sfDump) error {
	ents, err := os.ReadDir(d.Dir)
	if err != nil {
		return fmt.Errorf("clonezilla: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, sp := range dump.Parts {
		if sp.Extended {
			continue
		}
		name := toFilename(sp.Dev)
		if err := checkName(name); err != nil {
			return fmt.Errorf("clonezilla: %s-pt.sf: %w", d.Name, err)
		}
		p := &Partition{Name: name, Index: sp.Index, Start: sp.Start, Size: sp.Size}
		if !d.saved(name) {
			d.Partitions = append(d.Partitions, p) // zeros
			continue
		}
		for _, n := range names {
			rest, ok := strings.CutPrefix(n, name+".")
			if !ok || !isFirstVolume(n) {
				continue
			}
			switch {
			case strings.HasPrefix(rest, "ntfs-img"):
				p.Kind, p.FS = "ntfsclone", "ntfs"
			case strings.HasPrefix(rest, "dd-ptcl-img"):
				// partclone.dd's output: the partition's bytes, no header.
				p.Kind, p.FS = "dd", "dd"
			case strings.Contains(rest, "-ptcl-img"):
				p.Kind, p.FS = "partclone", strings.SplitN(rest, "-ptcl-img", 2)[0]
			case strings.HasPrefix(rest, "dd-img"):
				p.Kind, p.FS = "dd", "dd"
			default:
				continue
			}
			vols, err := partclone.Volumes(filepath.Join(d.Dir, n))
			if err != nil {
				return fmt.Errorf("clonezilla: partition %s: %w", name, err)
			}
			p.Files = vols
			p.Compression = partclone.Compression(n)
		}
		if p.Kind == "" {
			if b, err := readSmall(filepath.Join(d.Dir, "swappt-"+name+".info")); err == nil {
				p.Kind, p.FS = "swap", "swap"
				p.swap, err = swapSignature(b, p.Size)
				if err != nil {
					return fmt.Errorf("clonezilla: swappt-%s.info: %w", name, err)
				}
			}
		}
		switch p.Kind {
		case "partclone":
			if err := d.readHeader(p); err != nil {
				return err
			}
		case "ntfsclone":
			if err := d.readNtfsHeader(p); err != nil {
				return err
			}
		}
		d.Partitions = append(d.Partitions, p)
	}
	return nil
}

// isFirstVolume says whether n is a whole image or its first volume.
func isFirstVolume(n string) bool {
	i := strings.LastIndexByte(n, '.')
	suf := n[i+1:]
	if len(suf) >= 2 && len(suf) <= 3 && suf == strings.Repeat("a", len(suf)) {
		return true
	}
	return partclone.Compression(n) == suf || suf == "dd-img" || suf == "ntfs-img" || strings.HasSuffix(n, "-ptcl-img")
}

// readHeader reads a partclone image's header and bitmap (the front of
// the stream only) and checks it fits its partition.
func (d *Disk) readHeader(p *Partition) error {
	r, c, err := partclone.OpenFile(p.Files[0])
	if err != nil {
		return fmt.Errorf("clonezilla: partition %s: %w", p.Name, err)
	}
	defer c.Close()
	h := r.Header()
	if used := h.TotalBlocks * h.BlockSize; used > p.Size {
		return fmt.Errorf("clonezilla: partition %s: its image holds %d bytes of blocks, more than the partition's %d", p.Name, used, p.Size)
	}
	p.Header, p.bm = h, r.Bitmap()
	return nil
}

// readNtfsHeader reads an ntfsclone image's header and checks it fits
// its partition.
func (d *Disk) readNtfsHeader(p *Partition) error {
	r, c, err := ntfsclone.OpenFile(p.Files[0])
	if err != nil {
		return fmt.Errorf("clonezilla: partition %s: %w", p.Name, err)
	}
	defer c.Close()
	h := r.Header()
	if h.DeviceSize > p.Size {
		return fmt.Errorf("clonezilla: partition %s: its ntfsclone image is of a %d-byte device, larger than the partition's %d bytes", p.Name, h.DeviceSize, p.Size)
	}
	p.Ntfs = h
	return nil
}

// Size is the disk's length in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the disk's logical sector size.
func (d *Disk) SectorSize() int64 { return d.ss }

// Used lists the byte ranges that hold data, sorted and disjoint: the
// table and boot areas, the used blocks of each partclone image, every
// byte of a dd image, a swap partition's signature, the clusters of an
// ntfsclone image once it is decoded (all of its partition before: its
// stream says where they are only as it is read). Every other byte
// reads as zero: a converter copies only these.
func (d *Disk) Used() []block.Extent {
	var out []block.Extent
	for _, pc := range d.pieces {
		out = append(out, block.Extent{Off: pc.Off, Len: int64(len(pc.Data))})
	}
	for _, p := range d.Partitions {
		switch p.Kind {
		case "partclone":
			bs := p.Header.BlockSize
			p.bm.Runs(func(first, n int64) {
				out = append(out, block.Extent{Off: p.Start + first*bs, Len: min(n*bs, p.Size-first*bs)})
			})
		case "dd":
			out = append(out, block.Extent{Off: p.Start, Len: p.Size})
		case "ntfsclone":
			// The stream says where its clusters are only as it is
			// read: until it is decoded, all of the partition may be.
			used := p.ntfsUsed()
			if used == nil {
				out = append(out, block.Extent{Off: p.Start, Len: p.Size})
			}
			for _, e := range used {
				out = append(out, block.Extent{Off: p.Start + e.Off, Len: e.Len})
			}
		case "swap":
			out = append(out, block.Extent{Off: p.Start, Len: int64(len(p.swap))})
		}
	}
	return block.MergeExtents(out)
}

// Data is Used: with Size and ReadAt, what a converter's source gives
// (vdisk.Source), so a Disk converts to a VM disk as it is.
func (d *Disk) Data() []block.Extent { return d.Used() }

// ReadAt reads the disk's bytes. The first read of a compressed
// partition decodes it (see the package doc); its errors, a damaged
// checksum among them, come back from ReadAt.
func (d *Disk) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("clonezilla: negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(b)
	if rest := d.size - off; int64(len(b)) > rest {
		b = b[:rest]
	}
	clear(b)
	end := off + int64(len(b))
	for _, p := range d.Partitions {
		lo, hi := max(off, p.Start), min(end, p.Start+p.Size)
		if lo >= hi || p.Kind == "" {
			continue
		}
		if p.Kind == "swap" {
			if s := p.Start + int64(len(p.swap)); lo < s {
				copy(b[lo-off:min(hi, s)-off], p.swap[lo-p.Start:])
			}
			continue
		}
		if err := d.open(p); err != nil {
			return 0, err
		}
		if _, err := p.src.ReadAt(b[lo-off:hi-off], lo-p.Start); err != nil && err != io.EOF {
			return 0, fmt.Errorf("clonezilla: partition %s: %w", p.Name, err)
		}
	}
	for _, pc := range d.pieces {
		lo, hi := max(off, pc.Off), min(end, pc.Off+int64(len(pc.Data)))
		if lo < hi {
			copy(b[lo-off:hi-off], pc.Data[lo-pc.Off:hi-pc.Off])
		}
	}
	if len(b) < want {
		return len(b), io.EOF
	}
	return len(b), nil
}

// open makes p's source on first use: in place for an uncompressed
// partclone image, else decoded into a temporary file.
func (d *Disk) open(p *Partition) error {
	p.once.Do(func() { p.src, p.err = d.openSource(p) })
	return p.err
}

func (d *Disk) openSource(p *Partition) (partSource, error) {
	if p.Kind == "partclone" && (p.Compression == "" || p.Compression == "uncomp") {
		fs, err := partclone.OpenFiles(p.Files)
		if err != nil {
			return nil, err
		}
		im, err := partclone.Open(fs, fs.Size())
		if err != nil {
			fs.Close()
			return nil, err
		}
		return inPlace{im, fs}, nil
	}
	return d.decode(p)
}

// inPlace is an uncompressed partclone image, its volumes read in place.
type inPlace struct {
	*partclone.Image
	fs *partclone.Files
}

func (i inPlace) Close() error { return i.fs.Close() }

// decode writes p's image, decompressed and verified, into a private
// sparse temporary file.
func (d *Disk) decode(p *Partition) (partSource, error) {
	tmp, err := os.CreateTemp(d.opts.TempDir, "platter-clonezilla-*")
	if err != nil {
		return nil, err
	}
	os.Remove(tmp.Name()) // private: gone when closed, whatever happens
	fail := func(err error) (partSource, error) {
		tmp.Close()
		return nil, fmt.Errorf("clonezilla: partition %s: %w", p.Name, err)
	}
	if err := tmp.Truncate(p.Size); err != nil {
		return fail(err)
	}
	var done int64
	progress := func(n int64) {
		done += n
		if d.opts.Progress != nil {
			d.opts.Progress(p.Name, done, p.Size)
		}
	}
	ctx := context.Background()
	switch p.Kind {
	case "partclone":
		r, c, err := partclone.OpenFile(p.Files[0])
		if err != nil {
			return fail(err)
		}
		err = r.WriteTo(ctx, tmp, progress)
		c.Close()
		if err != nil {
			return fail(err)
		}
	case "ntfsclone":
		r, c, err := ntfsclone.OpenFile(p.Files[0])
		if err != nil {
			return fail(err)
		}
		err = r.WriteTo(ctx, tmp, progress)
		c.Close()
		if err != nil {
			return fail(err)
		}
		p.mu.Lock()
		p.used = r.Used()
		if p.used == nil {
			p.used = []block.Extent{}
		}
		p.mu.Unlock()
	case "dd":
		s, err := partclone.OpenVolumes(p.Files)
		if err != nil {
			return fail(err)
		}
		defer s.Close()
		comp, src, err := partclone.Sniff(s)
		if err != nil {
			return fail(err)
		}
		rc, err := partclone.Decompress(comp, src)
		if err != nil {
			return fail(err)
		}
		defer rc.Close()
		if err := copySparse(tmp, rc, p.Size, progress); err != nil {
			return fail(err)
		}
	}
	return tmp, nil
}

// copySparse copies r into w from byte 0, leaving holes where the data is
// zero, refusing more than size bytes.
func copySparse(w io.WriterAt, r io.Reader, size int64, progress func(int64)) error {
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if off+int64(n) > size {
				return fmt.Errorf("the dd image holds more than the partition's %d bytes", size)
			}
			for i := 0; i < n; i += 4096 {
				j := min(i+4096, n)
				if !allZero(buf[i:j]) {
					if _, err := w.WriteAt(buf[i:j], off+int64(i)); err != nil {
						return err
					}
				}
			}
			off += int64(n)
			progress(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Close closes the partitions' files and temporary files.
func (d *Disk) Close() error {
	var err error
	for _, p := range d.Partitions {
		if p.src != nil {
			err = errors.Join(err, p.src.Close())
		}
	}
	return err
}
