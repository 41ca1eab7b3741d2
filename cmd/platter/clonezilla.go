package main

// Clonezilla image directories as IMAGE.
//
// Every command that reads an image opens it with openImage, which takes
// a Clonezilla directory too (foreign.go): it converts the directory, in
// one pass, into a private Platter image (a temporary file unlinked as
// soon as it is open) and hands that on, so restore, mount, serve, ls,
// extract, convert and boot read it exactly as they read any image, through the
// one code path that is tested for them. The other seam — a read-only
// disk under view, restore, info and verify — was weighed and not taken:
// all of those take an *image.Reader (its metadata, areas, maps, chunk
// index and verification), about 40 places, and a compressed
// partclone image (gzip, zstd, xz: what ocs-sr writes by default) can
// only be decoded front to back, so a disk-level reader decodes each
// partition whole on its first read anyway (internal/clonezilla). The
// conversion adds to that decode only a fast compression of the used
// blocks. info and verify, which must say Clonezilla's own facts (the
// compression, partclone's checksums, the *SUMS files), read the
// directory directly and decode nothing they need not.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/clonezilla"
	"github.com/platter-dev/platter/internal/ntfsclone"
	"github.com/platter-dev/platter/internal/partclone"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// isClonezilla says whether path is a local directory that holds a
// Clonezilla image (the file ocs-sr names disk, or parts). A planted
// symlink is not followed.
func isClonezilla(path string) bool {
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return false
	}
	for _, n := range []string{"disk", "parts"} {
		if st, err := os.Lstat(filepath.Join(path, n)); err == nil && st.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// czProgress shows an import's progress on one bar: each partition
// image decoded (or, read in place, verified) and the disk's used bytes
// compressed, so the bar moves while a partition is decoded on its
// first read.
type czProgress struct {
	bar  *ui.Progress
	mu   sync.Mutex
	seen map[string]int64 // bytes decoded of each partition so far
}

func newCZProgress(bar *ui.Progress) *czProgress {
	return &czProgress{bar: bar, seen: map[string]int64{}}
}

// options are the clonezilla.Options whose decodes it hears.
func (p *czProgress) options() clonezilla.Options {
	return clonezilla.Options{Progress: func(part string, done, _ int64) {
		p.mu.Lock()
		n := done - p.seen[part]
		p.seen[part] = done
		p.mu.Unlock()
		p.bar.Add(n)
	}}
}

func (p *czProgress) start(d *clonezilla.Disk) {
	total := usedBytes(d)
	for _, part := range d.Partitions {
		if part.Kind == "partclone" || part.Kind == "dd" || part.Kind == "ntfsclone" {
			total += partUsed(d, part)
		}
	}
	p.bar.Start(total)
}

// Start is the engine's: the bar's total is set already.
func (p *czProgress) Start(int64) {}
func (p *czProgress) Add(n int64) { p.bar.Add(n) }

// Less is the engine's too: the bar's total is the disk's used extents,
// not the engine's reckoning, so it has nothing to take off.
func (p *czProgress) Less(int64) {}
func (p *czProgress) Finish()    { p.bar.Finish() }

// usedBytes is the bytes of the disk that hold data.
func usedBytes(d interface{ Used() []block.Extent }) int64 {
	var n int64
	for _, e := range d.Used() {
		n += e.Len
	}
	return n
}

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }

// verifyPartition reads a partition's image front to back: a partclone
// image's every checksum, a dd image's whole compressed stream.
func verifyPartition(ctx context.Context, d *clonezilla.Disk, p *clonezilla.Partition, progress func(int64)) error {
	switch p.Kind {
	case "partclone":
		r, c, err := partclone.OpenFile(p.Files[0])
		if err != nil {
			return fmt.Errorf("partition %s: %w", p.Name, err)
		}
		defer c.Close()
		if err := r.WriteTo(ctx, discard{}, progress); err != nil {
			return fmt.Errorf("partition %s (%s): %w", p.Name, filepath.Base(p.Files[0]), err)
		}
	case "dd", "ntfsclone":
		// dd and ntfsclone images carry no checksum of their own;
		// reading them whole finds a cut or damaged stream.
		buf := make([]byte, 1<<20)
		for off := p.Start; off < p.Start+p.Size; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(buf)), p.Start+p.Size-off)
			if _, err := d.ReadAt(buf[:n], off); err != nil {
				return err
			}
			if progress != nil {
				progress(n)
			}
			off += n
		}
	}
	return nil
}

// clonezillaDamaged says whether err is damage in a Clonezilla image
// (exit code 3).
func clonezillaDamaged(err error) bool {
	return errors.Is(err, partclone.ErrDamaged) || errors.Is(err, ntfsclone.ErrDamaged) || errors.Is(err, partclone.ErrMissingVolume) || errors.Is(err, clonezilla.ErrSumMismatch)
}

// partUsed is the bytes of partition p that hold data.
func partUsed(d *clonezilla.Disk, p *clonezilla.Partition) int64 {
	var n int64
	for _, e := range d.Used() {
		if lo, hi := max(e.Off, p.Start), min(e.End(), p.Start+p.Size); lo < hi {
			n += hi - lo
		}
	}
	return n
}

// czVerifySummary is verify's result for a Clonezilla directory, --json.
type czVerifySummary struct {
	Image      string   `json:"image"`
	Format     string   `json:"format"` // "clonezilla"
	OK         bool     `json:"ok"`
	Partitions int      `json:"partitions"` // partition images read whole
	UsedBytes  int64    `json:"used_bytes"`
	SumFiles   []string `json:"sum_files"` // checksum files checked
	Damaged    []string `json:"damaged"`
}

// runVerifyClonezilla checks a Clonezilla directory: every file its
// checksum files list (MD5SUMS, SHA1SUMS, ...), then every partition
// image read whole, every partclone checksum verified. Damage is named
// (a checksum's block range, a missing volume) and is exit code 3.
func runVerifyClonezilla(ctx context.Context, cmd *cobra.Command, mode ui.Mode, asJSON bool, path string) error {
	d, err := clonezilla.Open(path, clonezilla.Options{})
	if err != nil {
		return err
	}
	defer d.Close()
	sum := czVerifySummary{Image: path, Format: "clonezilla", SumFiles: d.SumFiles(), Damaged: []string{}}
	var total int64
	for _, p := range d.Partitions {
		if p.Kind == "partclone" || p.Kind == "dd" || p.Kind == "ntfsclone" {
			total += partUsed(d, p)
		}
	}
	sum.UsedBytes = usedBytes(d)
	bar := newProgress(mode, "verify")
	if err := d.VerifySums(ctx); err != nil {
		if ctx.Err() != nil {
			bar.Finish()
			return ctx.Err()
		}
		sum.Damaged = append(sum.Damaged, err.Error())
	}
	bar.Start(total)
	for _, p := range d.Partitions {
		if p.Kind != "partclone" && p.Kind != "dd" && p.Kind != "ntfsclone" {
			continue
		}
		sum.Partitions++
		if err := verifyPartition(ctx, d, p, bar.Add); err != nil {
			if ctx.Err() != nil {
				bar.Finish()
				return ctx.Err()
			}
			sum.Damaged = append(sum.Damaged, err.Error())
		}
	}
	bar.Finish()
	sum.OK = len(sum.Damaged) == 0
	lines := append([]string(nil), sum.Damaged...)
	if sum.OK {
		sums := "no checksum files"
		if len(sum.SumFiles) > 0 {
			sums = strings.Join(sum.SumFiles, ", ") + " match"
		}
		lines = append(lines, fmt.Sprintf("%s: OK, Clonezilla image: %d partition images read whole, every partclone checksum verified; %s; %s in use on the disk",
			path, sum.Partitions, sums, ui.Bytes(sum.UsedBytes)))
	}
	return reportForeignVerify(cmd, asJSON, sum, sum.Damaged, lines, path, kindClonezilla)
}

// czInfo is info's description of a Clonezilla directory (--json).
type czInfo struct {
	Format     string   `json:"format"` // "clonezilla"
	Directory  string   `json:"directory"`
	Disk       string   `json:"disk"` // the kernel's name when saved
	SourceSize int64    `json:"source_size"`
	SectorSize int64    `json:"sector_size"`
	Table      string   `json:"table"`
	DiskID     string   `json:"disk_id,omitempty"`
	UsedBytes  int64    `json:"used_bytes"`
	SumFiles   []string `json:"sum_files"`
	// SavedPartitions are an ocs-sr saveparts image's partitions (the
	// others read as zeros); absent for savedisk.
	SavedPartitions []string          `json:"saved_partitions,omitempty"`
	Partitions      []czPartitionInfo `json:"partitions"`
}

type czPartitionInfo struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	Start       int64  `json:"start"`
	Size        int64  `json:"size"`
	Type        string `json:"type"`
	Label       string `json:"label,omitempty"` // GPT name
	Saved       string `json:"saved"`           // partclone, dd, swap, none
	Filesystem  string `json:"filesystem,omitempty"`
	Compression string `json:"compression,omitempty"`
	Volumes     int    `json:"volumes,omitempty"`
	FileBytes   int64  `json:"file_bytes,omitempty"` // the volumes' bytes
	UsedBytes   int64  `json:"used_bytes"`
	// Partclone is the partclone image's header.
	Partclone *czPartclone `json:"partclone,omitempty"`
}

type czPartclone struct {
	Format    int    `json:"format"` // 1 or 2
	Version   string `json:"version,omitempty"`
	BlockSize int64  `json:"block_size"`
	Checksum  string `json:"checksum"`
}

var compressionNames = map[string]string{"gz": "gzip", "zst": "zstd", "xz": "xz", "bz2": "bzip2", "lz4": "lz4", "uncomp": "none", "": "none"}

func describeClonezilla(d *clonezilla.Disk) *czInfo {
	info := &czInfo{Format: "clonezilla", Directory: d.Dir, Disk: d.Name, SourceSize: d.Size(), SectorSize: d.SectorSize(),
		Table: d.Table.Kind, DiskID: d.Table.DiskID, UsedBytes: usedBytes(d), SumFiles: d.SumFiles(), SavedPartitions: d.Saved, Partitions: []czPartitionInfo{}}
	if info.SumFiles == nil {
		info.SumFiles = []string{}
	}
	types := map[int]ptableEntry{}
	for _, p := range d.Table.Partitions {
		types[p.Index] = ptableEntry{p.Type, p.Name}
	}
	for _, p := range d.Partitions {
		pi := czPartitionInfo{Index: p.Index, Name: p.Name, Start: p.Start, Size: p.Size, Type: types[p.Index].typ, Label: types[p.Index].name,
			Saved: p.Kind, Filesystem: p.FS, Volumes: len(p.Files), UsedBytes: partUsed(d, p)}
		if pi.Saved == "" {
			pi.Saved = "none"
		}
		if p.Kind == "partclone" || p.Kind == "dd" || p.Kind == "ntfsclone" {
			pi.Compression = compressionNames[p.Compression]
			if pi.Compression == "" {
				pi.Compression = p.Compression
			}
			if (p.Kind == "dd" || p.Kind == "ntfsclone") && p.Compression == "" {
				pi.Compression = "found from its first bytes"
			}
		}
		for _, f := range p.Files {
			if st, err := os.Lstat(f); err == nil {
				pi.FileBytes += st.Size()
			}
		}
		if h := p.Ntfs; h != nil {
			// Where its clusters are is known only once it is read; how
			// many, from its header (and the device's tail it keeps).
			pi.UsedBytes = min((h.InUse+1)*h.ClusterSize, h.DeviceSize)
		}
		if h := p.Header; h != nil {
			pi.Partclone = &czPartclone{Format: h.Version, Version: h.PartcloneVersion, BlockSize: h.BlockSize, Checksum: h.ChecksumName()}
		}
		info.Partitions = append(info.Partitions, pi)
	}
	return info
}

type ptableEntry struct{ typ, name string }

// runInfoClonezilla describes a Clonezilla directory from its table
// dump and the partclone headers: nothing is decoded.
func runInfoClonezilla(w io.Writer, opts infoOptions, path string) error {
	d, err := clonezilla.Open(path, clonezilla.Options{})
	if err != nil {
		return err
	}
	defer d.Close()
	info := describeClonezilla(d)
	if opts.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	saved := "ocs-sr savedisk"
	if d.Saved != nil {
		saved = "ocs-sr saveparts of " + strings.Join(d.Saved, ", ") + "; the other partitions read as zeros"
	}
	fmt.Fprintf(w, "Image:       %s (Clonezilla image directory, %s)\n", path, saved)
	fmt.Fprintf(w, "Source:      %s, %s (%d bytes), %d-byte sectors\n", info.Disk, ui.Bytes(info.SourceSize), info.SourceSize, info.SectorSize)
	table := info.Table
	if info.DiskID != "" {
		table += ", disk id " + info.DiskID
	}
	fmt.Fprintf(w, "Table:       %s\n", table)
	fmt.Fprintf(w, "Used:        %s\n", ui.Bytes(info.UsedBytes))
	sums := "none"
	if len(info.SumFiles) > 0 {
		sums = strings.Join(info.SumFiles, ", ") + " (platter verify checks them)"
	}
	fmt.Fprintf(w, "Checksums:   %s\n", sums)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tNAME\tSTART\tSIZE\tFILESYSTEM\tSAVED AS\tCOMPRESSION\tVOLUMES\tUSED\tFILES")
	for _, p := range info.Partitions {
		saved := p.Saved
		if pc := p.Partclone; pc != nil {
			saved = fmt.Sprintf("partclone %d (%s, %s)", pc.Format, pc.Version, pc.Checksum)
			if pc.Version == "" {
				saved = fmt.Sprintf("partclone %d (%s)", pc.Format, pc.Checksum)
			}
		}
		comp, vols, fb := "-", "-", "-"
		if p.Compression != "" {
			comp = p.Compression
		}
		if p.Volumes > 0 {
			vols, fb = fmt.Sprint(p.Volumes), ui.Bytes(p.FileBytes)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Index, p.Name, p.Start, ui.Bytes(p.Size), p.Filesystem, saved, comp, vols, ui.Bytes(p.UsedBytes), fb)
	}
	return tw.Flush()
}
