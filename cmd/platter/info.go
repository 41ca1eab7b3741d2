package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/fs/vfs"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

type infoOptions struct {
	json   bool
	chunks bool
}

func newInfoCommand() *cobra.Command {
	var opts infoOptions
	cmd := &cobra.Command{
		Use:   "info [--json] [--chunks] IMAGE",
		Short: "Describe an image: source, table, partitions, sizes",
		Example: `  platter info disk.platter
  platter info --json disk.platter | jq '.partitions[] | {index, filesystem, label, used_bytes}'
  platter info --json --chunks disk.platter   # where every chunk's frame is
  ssh nas cat disk.platter | platter info -     # from a pipe, in one pass
  platter info /home/partimag/2024-05-01-img    # a Clonezilla image directory
  platter info D684BA87241263E2-00-00.mrimgx    # a Macrium Reflect X image: its disks, partitions, files
  platter info debian.iso                       # an .iso read in place: label, filesystems, El Torito boot records`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInfo(cmd.OutOrStdout(), opts, args[0])
		},
	}
	cmd.Flags().BoolVar(&opts.json, "json", false, "print JSON")
	cmd.Flags().BoolVar(&opts.chunks, "chunks", false, "with --json, list every chunk and where its frame is")
	addDiskFlag(cmd)
	return cmd
}

type infoJSON struct {
	FormatVersion int             `json:"format_version"`
	ID            string          `json:"id"`
	Created       time.Time       `json:"created"`
	Tool          string          `json:"tool"`
	Source        string          `json:"source"`
	Host          string          `json:"host,omitempty"`
	DiskModel     string          `json:"disk_model,omitempty"`
	DiskSerial    string          `json:"disk_serial,omitempty"`
	SourceSize    int64           `json:"source_size"`
	SectorSize    int64           `json:"sector_size"`
	Table         string          `json:"table"`
	DiskID        string          `json:"disk_id,omitempty"`
	ImageBytes    int64           `json:"image_bytes"`
	ChunkSize     int64           `json:"chunk_size"`
	Encryption    *encryptionJSON `json:"encryption,omitempty"`
	Compression   string          `json:"compression"`
	Digest        string          `json:"digest"`
	Warnings      []string        `json:"warnings"`
	Snapshot      *image.Snapshot `json:"snapshot,omitempty"`
	// Rescue lists what a rescue of a failing disk could not read.
	Rescue      *image.Rescue `json:"rescue,omitempty"`
	rescueLines []string
	Type        string `json:"type"`
	// SectorBySector: every byte of the disk is in the image.
	SectorBySector bool `json:"sector_by_sector"`
	// ChangedChunks (of Chunks) are those an incremental or
	// differential holds itself rather than takes from its parent.
	ChangedChunks *int `json:"changed_chunks,omitempty"`
	// DeltaChunks (of ChangedChunks) are stored as the sub-blocks that
	// differ from the parent's chunk.
	DeltaChunks *int `json:"delta_chunks,omitempty"`
	ChunkCount  int  `json:"chunk_count"`
	// ChangedBy says how an incremental's changes were found: "tracker"
	// (a changed-block tracking map) or "read" (everything read).
	ChangedBy   string `json:"changed_by,omitempty"`
	ChangedNote string `json:"changed_note,omitempty"`
	ReadChunks  int    `json:"read_chunks,omitempty"`
	InUseChunks int    `json:"in_use_chunks,omitempty"`
	// NotImaged are the partitions of the table left out of the image.
	NotImaged []int `json:"not_imaged,omitempty"`
	// Chain is the image and the images it depends on, newest first.
	Chain      []chainJSON     `json:"chain"`
	Partitions []partitionJSON `json:"partitions"`
	Gaps       []gapJSON       `json:"outside_partitions"`
	Chunks     []chunkJSON     `json:"chunks,omitempty"`
}

type chainJSON struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Created    time.Time `json:"created"`
	File       string    `json:"file"`
	ImageBytes int64     `json:"image_bytes"`
}

type partitionJSON struct {
	Index       int    `json:"index"`
	Start       int64  `json:"start"`
	Size        int64  `json:"size"`
	Type        string `json:"type"`
	TypeName    string `json:"type_name,omitempty"` // "EFI System", "Linux filesystem", ...
	GUID        string `json:"guid,omitempty"`
	Name        string `json:"name,omitempty"`
	Bootable    bool   `json:"bootable,omitempty"`
	Filesystem  string `json:"filesystem"`
	Label       string `json:"label,omitempty"` // the filesystem's
	UUID        string `json:"uuid,omitempty"`  // the filesystem's, as blkid shows it
	Note        string `json:"note,omitempty"`
	UsedBytes   int64  `json:"used_bytes"`
	StoredBytes int64  `json:"stored_bytes"`
	// Detail and Volumes describe a container (LVM2, LUKS).
	Detail  string         `json:"detail,omitempty"`
	Volumes []block.Volume `json:"volumes,omitempty"`
	// Boot are an optical filesystem's boot records (El Torito).
	Boot     []bootJSON `json:"boot,omitempty"`
	bootNote string
}

type gapJSON struct {
	Start       int64 `json:"start"`
	Size        int64 `json:"size"`
	UsedBytes   int64 `json:"used_bytes"`
	StoredBytes int64 `json:"stored_bytes"`
}

type chunkJSON struct {
	Partition   int   `json:"partition"`
	Offset      int64 `json:"offset"`
	Length      int64 `json:"length"`
	FrameOffset int64 `json:"frame_offset"`
	FrameSize   int64 `json:"frame_size"`
	Zero        bool  `json:"zero"`
	InParent    bool  `json:"in_parent,omitempty"` // stored in a parent image
	// Delta: stored as the sub-blocks that differ from the parent's chunk.
	Delta bool `json:"delta,omitempty"`
}

func describe(r *image.Reader, chunks bool) *infoJSON {
	m := r.Metadata()
	d := r.Digest()
	out := &infoJSON{
		FormatVersion: m.FormatVersion, ID: m.ID, Created: m.Created, Tool: m.Tool, Source: m.Source,
		Host: m.Host, DiskModel: m.DiskModel, DiskSerial: m.DiskSerial, NotImaged: m.NotImaged, ChunkCount: len(r.Entries()),
		SourceSize: m.SourceSize, SectorSize: m.SectorSize, Table: m.Table, DiskID: m.DiskID,
		ImageBytes: r.Size(), ChunkSize: m.ChunkSize, Compression: m.Compression,
		Digest: hex.EncodeToString(d[:]), Warnings: m.Warnings, Snapshot: m.Snapshot,
		ChangedBy: m.ChangedBy, ChangedNote: m.ChangedNote, ReadChunks: m.ReadChunks, InUseChunks: m.InUseChunks,
		Partitions: []partitionJSON{}, Gaps: []gapJSON{}, Type: imageType(m),
		SectorBySector: m.SectorBySector, Encryption: encryption(r),
		Rescue: m.Rescue, rescueLines: rescueLines(m),
	}
	if m.Parent != "" {
		n, d := 0, 0
		for _, e := range r.Entries() {
			if !e.InParent() {
				n++
			}
			if e.Delta() {
				d++
			}
		}
		out.ChangedChunks, out.DeltaChunks = &n, &d
	}
	ids := identities(r)
	for c := r; c != nil; c = c.Parent() {
		out.Chain = append(out.Chain, chainJSON{ID: c.ID().String(), Type: imageType(c.Metadata()), Created: c.Metadata().Created, File: c.Name(), ImageBytes: c.Size()})
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	for _, a := range m.Areas {
		if a.Kind == image.KindGap {
			out.Gaps = append(out.Gaps, gapJSON{Start: a.Start, Size: a.Size, UsedBytes: a.UsedBytes, StoredBytes: a.StoredBytes})
			continue
		}
		out.Partitions = append(out.Partitions, partitionJSON{
			Index: a.Index, Start: a.Start, Size: a.Size, Type: a.Type, TypeName: ptable.TypeName(a.Type), GUID: a.GUID, Name: a.Name,
			Bootable: a.Bootable, Filesystem: a.Filesystem, Note: a.Note, UsedBytes: a.UsedBytes, StoredBytes: a.StoredBytes,
			Label: ids[a.Index].Label, UUID: ids[a.Index].UUID, Detail: a.Detail, Volumes: a.Volumes,
			Boot: ids[a.Index].boot, bootNote: ids[a.Index].bootNote,
		})
	}
	if chunks {
		for _, e := range r.Entries() {
			a := &m.Areas[e.Area]
			c := chunkJSON{Partition: a.Index, Offset: int64(e.Chunk) * m.ChunkSize, Length: int64(e.RawLen), FrameOffset: -1, Zero: e.Zero()}
			if a.Kind == image.KindGap {
				c.Offset += a.Start
			}
			switch {
			case e.InParent():
				c.InParent = true
			case !e.Zero():
				c.FrameOffset, c.FrameSize, c.Delta = e.FrameOff, r.FrameSize(e), e.Delta()
			}
			out.Chunks = append(out.Chunks, c)
		}
	}
	return out
}

// encryptionJSON describes an encrypted image's key slots.
type encryptionJSON struct {
	Cipher     string   `json:"cipher"`
	Passphrase string   `json:"passphrase,omitempty"` // its key derivation
	Recipients []string `json:"recipients,omitempty"`
	Generation uint64   `json:"slot_generation"`
	Damaged    string   `json:"damaged_slot_copy,omitempty"`
}

func encryption(r *image.Reader) *encryptionJSON {
	k := r.Keys()
	if k == nil {
		return nil
	}
	e := &encryptionJSON{Cipher: seal.Cipher, Generation: k.Slots.Generation}
	if p := k.Slots.Pass; p != nil {
		e.Passphrase = p.Params.String()
	}
	e.Recipients, _ = k.Data.Recipients(r.ID(), k.Slots)
	if err := r.SlotDamage(); err != nil {
		e.Damaged = err.Error()
	}
	return e
}

func (e *encryptionJSON) describe() string {
	var s []string
	if e.Passphrase != "" {
		s = append(s, "passphrase ("+e.Passphrase+")")
	}
	for _, r := range e.Recipients {
		s = append(s, "recipient "+r)
	}
	out := "unlocks with " + strings.Join(s, ", ")
	if e.Damaged != "" {
		out += "; " + e.Damaged
	}
	return out
}

// identities reads the label and UUID of each partition's filesystem
// from the image (a chunk or two each), by partition number.
func identities(r *image.Reader) map[int]identity {
	disk := view.New(r, 4)
	defer disk.Close()
	out := map[int]identity{}
	for _, p := range view.Partitions(r, disk) {
		id := identity{Identity: fsmap.Identify(&p.Section, p.Len, p.Filesystem)}
		id.boot, id.bootNote = bootRecords(&p.Section, p.Len, p.Filesystem)
		out[p.Index] = id
	}
	return out
}

// identity is what info reads of a partition's filesystem from the
// image: its label and UUID, and an optical one's boot records.
type identity struct {
	vfs.Identity
	boot     []bootJSON
	bootNote string
}

// imageType is "full", "incremental" or "differential" (images made
// before incrementals have no type: full).
func imageType(m *image.Metadata) string {
	if m.Type == "" {
		return "full"
	}
	return m.Type
}

func runInfo(w io.Writer, opts infoOptions, path string) error {
	if path == stdio {
		return runInfoStream(w, opts)
	}
	kind := foreignKind(path)
	if err := checkDiskFlag(path, kind); err != nil {
		return err
	}
	switch kind {
	case kindClonezilla:
		return runInfoClonezilla(w, opts, path)
	case kindMrimgx:
		return runInfoMrimgx(w, opts, path)
	}
	bare, err := openBare(path)
	if err != nil {
		return err
	}
	if bare != nil {
		defer bare.Close()
		return printBareInfo(w, opts, path, bare)
	}
	f, r, err := openImage(path)
	if err != nil {
		return err
	}
	defer f.Close()
	defer r.Close()
	return printInfo(w, opts, path, r)
}

// printInfo describes the image open in r, named path.
func printInfo(w io.Writer, opts infoOptions, path string, r *image.Reader) error {
	info := describe(r, opts.chunks && opts.json)
	if opts.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(w, "Image:       %s (format %d, %s)\n", path, info.FormatVersion, ui.Bytes(info.ImageBytes))
	fmt.Fprintf(w, "ID:          %s\n", info.ID)
	fmt.Fprintf(w, "Created:     %s by %s\n", info.Created.Local().Format(time.RFC3339), info.Tool)
	fmt.Fprintf(w, "Source:      %s, %s (%d bytes), %d-byte sectors\n", info.Source, ui.Bytes(info.SourceSize), info.SourceSize, info.SectorSize)
	var disk []string
	if info.DiskModel != "" {
		disk = append(disk, info.DiskModel)
	}
	if info.DiskSerial != "" {
		disk = append(disk, "serial "+info.DiskSerial)
	}
	if info.Host != "" {
		disk = append(disk, "on host "+info.Host)
	}
	if len(disk) > 0 {
		fmt.Fprintf(w, "Disk:        %s\n", strings.Join(disk, ", "))
	}
	table := info.Table
	if info.DiskID != "" {
		table += ", disk id " + info.DiskID
	}
	fmt.Fprintf(w, "Table:       %s\n", table)
	fmt.Fprintf(w, "Digest:      %s\n", info.Digest)
	if info.SectorBySector {
		fmt.Fprintf(w, "Contents:    sector by sector (every byte of the disk, free space included)\n")
	}
	fmt.Fprintf(w, "Compression: %s, %s chunks\n", info.Compression, ui.Bytes(info.ChunkSize))
	if e := info.Encryption; e != nil {
		fmt.Fprintf(w, "Encryption:  %s; %s\n", e.Cipher, e.describe())
	}
	if len(info.Chain) > 1 {
		changed := ""
		if info.ChangedChunks != nil {
			changed = fmt.Sprintf(" (%d of its %d chunks changed since its parent)", *info.ChangedChunks, info.ChunkCount)
			if d := info.DeltaChunks; d != nil && *d > 0 {
				changed += fmt.Sprintf(", %d of them stored as sub-block deltas", *d)
			}
		}
		fmt.Fprintf(w, "Chain:       %s image%s; restores with:\n", info.Type, changed)
		for _, c := range info.Chain {
			fmt.Fprintf(w, "             %-12s %s  %s  %s  %s\n", c.Type, c.ID, c.Created.Local().Format(time.RFC3339), ui.Bytes(c.ImageBytes), c.File)
		}
	}
	switch info.ChangedBy {
	case "tracker":
		fmt.Fprintf(w, "Changes:     found by the tracker's map: read %d of %d chunks in use\n", info.ReadChunks, info.InUseChunks)
	case "overlay":
		fmt.Fprintf(w, "Changes:     the VM's writes (boot --save): read %d of %d chunks in use\n", info.ReadChunks, info.InUseChunks)
	case "read":
		note := ""
		if info.ChangedNote != "" {
			note = " (" + info.ChangedNote + ")"
		}
		fmt.Fprintf(w, "Changes:     found by reading every chunk in use%s\n", note)
	}
	if s := info.Snapshot; s != nil {
		switch s.Method {
		case "freeze", "track":
			if s.Method == "track" {
				var copies []string
				for _, p := range s.Passes {
					if p.Kind != "full" {
						copies = append(copies, fmt.Sprintf("%s %s/%d chunks", p.Kind, ui.Bytes(p.DirtyBytes), p.Chunks))
					}
				}
				fmt.Fprintf(w, "Snapshot:    live, writes tracked (%s); copied again: %s\n", s.Tracker, strings.Join(copies, ", "))
			}
			if len(s.Filesystems) > 0 {
				fmt.Fprintf(w, "Snapshot:    %s frozen at %s for %.3fs\n", strings.Join(s.Filesystems, ", "), s.Instant.Local().Format(time.RFC3339Nano), s.FrozenSeconds)
			}
			if len(s.Synced) > 0 {
				fmt.Fprintf(w, "Snapshot:    %s could not be frozen: synced and copied as it was\n", strings.Join(s.Synced, ", "))
			}
		default:
			fmt.Fprintf(w, "Snapshot:    none: %s copied while mounted read-write (may be inconsistent)\n", strings.Join(s.Filesystems, ", "))
		}
	}
	for i, l := range info.rescueLines {
		label := "Rescue:      "
		if i > 0 {
			label = "           "
		}
		fmt.Fprintf(w, "%s%s\n", label, l)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPART\tSTART\tSIZE\tTYPE\tNAME\tFS\tLABEL\tUSED\tSTORED")
	for _, p := range info.Partitions {
		typ := p.TypeName
		if typ == "" {
			typ = p.Type
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Index, ui.Bytes(p.Start), ui.Bytes(p.Size), typ, dash(p.Name), p.Filesystem, dash(p.Label), ui.Bytes(p.UsedBytes), ui.Bytes(p.StoredBytes))
	}
	for _, g := range info.Gaps {
		fmt.Fprintf(tw, "-\t%s\t%s\t(outside partitions)\t-\traw\t-\t%s\t%s\n", ui.Bytes(g.Start), ui.Bytes(g.Size), ui.Bytes(g.UsedBytes), ui.Bytes(g.StoredBytes))
	}
	tw.Flush()
	if len(info.NotImaged) > 0 {
		fmt.Fprintf(w, "Not imaged:  partitions %s of the table (create --partitions)\n", joinInts(info.NotImaged))
	}
	for _, p := range info.Partitions {
		if p.UUID != "" || verbose {
			fmt.Fprintf(w, "Partition %d: starts at byte %d, %d bytes; %s UUID %s\n", p.Index, p.Start, p.Size, p.Filesystem, dash(p.UUID))
		}
		if p.Detail != "" {
			fmt.Fprintf(w, "Partition %d: %s %s\n", p.Index, p.Filesystem, p.Detail)
		}
		printBoot(w, fmt.Sprintf("partition %d", p.Index), p.Boot)
		if p.bootNote != "" {
			fmt.Fprintf(w, "Note: partition %d: %s\n", p.Index, p.bootNote)
		}
		for _, v := range p.Volumes {
			note := ""
			if v.Note != "" {
				note = "; " + v.Note
			}
			fmt.Fprintf(w, "  volume %s: %s at byte %d, %s, %s used%s\n", v.Name, v.Filesystem, v.Start, ui.Bytes(v.Size), ui.Bytes(v.UsedBytes), note)
		}
	}
	for _, p := range info.Partitions {
		// A note that is also a warning is said once, as a warning.
		if p.Note != "" && !slices.Contains(info.Warnings, p.Note) {
			fmt.Fprintf(w, "Note: %s\n", p.Note)
		}
	}
	for _, s := range info.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", s)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
