package main

// Macrium Reflect X images (.mrimgx) as IMAGE: every command reads one
// as the Platter image of its disk (foreign.go); info and verify say
// Macrium's own facts and check its MD5s without converting anything.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/platter-dev/platter/internal/mrimgx"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// mrInfo is info's description of a Macrium Reflect X image (--json).
type mrInfo struct {
	Format      string       `json:"format"` // "mrimgx"
	Image       string       `json:"image"`
	ImageID     string       `json:"image_id"`
	BackupTime  time.Time    `json:"backup_time"`
	BackupType  string       `json:"backup_type"` // "full", "incremental", "differential"
	Increment   int          `json:"increment_number"`
	DeltaIndex  bool         `json:"delta_index"`
	Host        string       `json:"host,omitempty"`
	Compression string       `json:"compression"` // "zstd (medium)", "none"
	Encrypted   bool         `json:"encrypted"`
	Encryption  string       `json:"encryption,omitempty"`
	Files       []mrFileInfo `json:"files"`
	Disks       []mrDiskInfo `json:"disks"`
}

type mrFileInfo struct {
	Path      string `json:"path"`
	Number    int    `json:"file_number"`
	Bytes     int64  `json:"bytes"`
	Split     bool   `json:"split_part"` // data only; the index is in a later file
	Increment int    `json:"increment_number"`
}

type mrDiskInfo struct {
	Number     int          `json:"disk_number"`
	Table      string       `json:"table"`
	Size       int64        `json:"size"`
	SectorSize int64        `json:"sector_size"`
	Signature  string       `json:"signature,omitempty"`
	UsedBytes  int64        `json:"used_bytes"`
	Partitions []mrPartInfo `json:"partitions"`
}

type mrPartInfo struct {
	Number     int    `json:"number"`
	Filesystem string `json:"filesystem"`
	Label      string `json:"label,omitempty"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	UsedBytes  int64  `json:"used_bytes"`
	BlockSize  int64  `json:"block_size"`
	Blocks     int64  `json:"blocks"`
}

// mrDisks opens every disk of the image at path (or the one --disk
// names), for info and verify; the caller closes them.
func mrDisks(path string) ([]*mrimgx.Disk, error) {
	first, err := openMrimgx(path, diskFlag, false)
	if err != nil {
		return nil, err
	}
	disks := []*mrimgx.Disk{first}
	if diskFlag != 0 {
		return disks, nil
	}
	for _, dj := range first.Header.Disks {
		if dj.Header.DiskNumber == first.Number {
			continue
		}
		d, err := openMrimgx(path, dj.Header.DiskNumber, false)
		if err != nil {
			for _, d := range disks {
				d.Close()
			}
			return nil, err
		}
		disks = append(disks, d)
	}
	return disks, nil
}

func describeMrimgx(path string, disks []*mrimgx.Disk) *mrInfo {
	h := disks[0].Header
	info := &mrInfo{Format: kindMrimgx, Image: path, ImageID: h.Header.ImageID, BackupType: h.Header.BackupType,
		Increment: h.Header.IncrementNumber, DeltaIndex: h.Header.DeltaIndex, Host: h.Header.NetbiosName,
		Compression: "none", Encrypted: h.Encryption.Enable, Files: []mrFileInfo{}, Disks: []mrDiskInfo{}}
	if h.Header.BackupTime > 0 {
		info.BackupTime = time.Unix(h.Header.BackupTime, 0).UTC()
	}
	if info.BackupType == "" {
		info.BackupType = "full"
	}
	if l := strings.ToLower(h.Compression.Level); l != "none" {
		m := h.Compression.Method
		if m == "" {
			m = "zstd"
		}
		info.Compression = m
		if l != "" {
			info.Compression += " (" + l + ")"
		}
	}
	if e := h.Encryption; e.Enable {
		info.Encryption = fmt.Sprintf("%s, key by %s of %d iterations", e.AES, e.KeyDerivation, e.KeyIterations)
	}
	for _, f := range disks[0].Files() {
		info.Files = append(info.Files, mrFileInfo{Path: f.Path, Number: f.Number, Bytes: f.Size, Split: f.Split, Increment: f.Increment})
	}
	for _, d := range disks {
		di := mrDiskInfo{Number: d.Number, Table: d.Format, Size: d.Size(), SectorSize: d.SectorSize(), UsedBytes: usedBytes(d), Partitions: []mrPartInfo{}}
		labels := map[int]string{}
		for _, dj := range h.Disks {
			if dj.Header.DiskNumber == d.Number {
				di.Signature = dj.Header.DiskSignature
				for _, pj := range dj.Partitions {
					labels[pj.Header.PartitionNumber] = pj.FileSystem.VolumeLabel
				}
			}
		}
		for _, p := range d.Partitions {
			di.Partitions = append(di.Partitions, mrPartInfo{Number: p.Number, Filesystem: p.FS, Label: labels[p.Number], Start: p.Start, Size: p.Size,
				UsedBytes: p.UsedBytes(), BlockSize: p.BlockSize, Blocks: p.Blocks})
		}
		info.Disks = append(info.Disks, di)
	}
	return info
}

// runInfoMrimgx describes a Macrium Reflect X image from its $JSON and
// block indexes: no data block is read.
func runInfoMrimgx(w io.Writer, opts infoOptions, path string) error {
	disks, err := mrDisks(path)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range disks {
			d.Close()
		}
	}()
	info := describeMrimgx(path, disks)
	if opts.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(w, "Image:       %s (Macrium Reflect X image)\n", path)
	fmt.Fprintf(w, "ID:          %s\n", info.ImageID)
	backup := info.BackupType
	if info.Increment > 0 || info.BackupType != "full" {
		backup += fmt.Sprintf(", increment %d", info.Increment)
		if info.DeltaIndex {
			backup += " (delta index)"
		}
	}
	if !info.BackupTime.IsZero() {
		backup += ", made " + info.BackupTime.Local().Format(time.RFC3339)
	}
	if info.Host != "" {
		backup += " on " + info.Host
	}
	fmt.Fprintf(w, "Backup:      %s\n", backup)
	fmt.Fprintf(w, "Compression: %s\n", info.Compression)
	enc := "no"
	if info.Encrypted {
		enc = "yes, " + info.Encryption
	}
	fmt.Fprintf(w, "Encrypted:   %s\n", enc)
	for i, f := range info.Files {
		what := ""
		if f.Split {
			what = ", a part of a split image"
		}
		label := "Files:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-12s %s (file %d, increment %d, %s%s)\n", label, f.Path, f.Number, f.Increment, ui.Bytes(f.Bytes), what)
	}
	for _, d := range info.Disks {
		sig := ""
		if d.Signature != "" {
			sig = ", signature " + d.Signature
		}
		fmt.Fprintf(w, "Disk %d:      %s, %s (%d bytes), %d-byte sectors%s; %s held\n", d.Number, d.Table, ui.Bytes(d.Size), d.Size, d.SectorSize, sig, ui.Bytes(d.UsedBytes))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  #\tFILESYSTEM\tLABEL\tSTART\tSIZE\tUSED\tBLOCK SIZE")
		for _, p := range d.Partitions {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Number, p.Filesystem, p.Label, p.Start, ui.Bytes(p.Size), ui.Bytes(p.UsedBytes), ui.Bytes(p.BlockSize))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// mrVerifySummary is verify's result for a Macrium Reflect X image,
// --json.
type mrVerifySummary struct {
	Image     string   `json:"image"`
	Format    string   `json:"format"` // "mrimgx"
	OK        bool     `json:"ok"`
	Disks     int      `json:"disks"`
	UsedBytes int64    `json:"used_bytes"` // bytes of blocks checked
	Files     []string `json:"files"`      // the files of the set read
	Damaged   []string `json:"damaged"`
}

// runVerifyMrimgx checks a Macrium Reflect X image: every block of every
// disk (or of the one --disk names) read from whichever file of the set
// holds it and checked against its MD5. A damaged block is named with
// the disk bytes it covers, a missing file of the set by its number:
// exit code 3.
func runVerifyMrimgx(ctx context.Context, cmd *cobra.Command, mode ui.Mode, asJSON bool, path string) error {
	disks, err := mrDisks(path)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range disks {
			d.Close()
		}
	}()
	sum := mrVerifySummary{Image: path, Format: kindMrimgx, Disks: len(disks), Files: []string{}, Damaged: []string{}}
	for _, f := range disks[0].Files() {
		sum.Files = append(sum.Files, f.Path)
	}
	var total int64
	for _, d := range disks {
		for _, p := range d.Partitions {
			total += p.UsedBytes()
		}
	}
	bar := newProgress(mode, "verify")
	bar.Start(total)
	for _, d := range disks {
		var last int64
		err := d.Verify(ctx, func(done, _ int64) {
			bar.Add(done - last)
			last = done
		})
		sum.UsedBytes += last
		if err != nil {
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
		names := make([]string, len(sum.Files))
		for i, f := range sum.Files {
			names[i] = filepath.Base(f)
		}
		lines = append(lines, fmt.Sprintf("%s: OK, Macrium Reflect X image: %s of blocks on %s checked against their MD5s, in %s (%s)",
			path, ui.Bytes(sum.UsedBytes), plural(sum.Disks, "disk"), plural(len(sum.Files), "file"), strings.Join(names, ", ")))
	}
	return reportForeignVerify(cmd, asJSON, sum, sum.Damaged, lines, path, kindMrimgx)
}
