package main

// What info says of optical filesystems beyond their label: the El
// Torito boot catalog, read from the volume itself (a Platter image of a
// disc holds it byte for byte, so nothing more is kept in metadata).

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/platter-dev/platter/internal/fs/iso9660"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/ptable"
	"github.com/platter-dev/platter/internal/ui"
)

// bootJSON is one boot image of an El Torito catalog.
type bootJSON struct {
	Platform  string `json:"platform"` // x86, EFI, PowerPC, Mac
	Bootable  bool   `json:"bootable"`
	Emulation string `json:"emulation"` // none, 1.44M floppy, hard disk, ...
	// LoadSegment is where BIOS loads it (0: the default, 0x7C0).
	LoadSegment uint16 `json:"load_segment"`
	Sectors     uint16 `json:"sectors"` // 512-byte sectors BIOS loads
	Offset      int64  `json:"offset"`  // the image's byte in the volume
}

// bootRecords reads the El Torito catalog of an ISO 9660 volume (nil for
// another filesystem or a volume without one); a damaged catalog is a
// note.
func bootRecords(r io.ReaderAt, size int64, fs string) ([]bootJSON, string) {
	if fs != "iso9660" {
		return nil, ""
	}
	b, err := iso9660.ReadBoot(r, size)
	if err != nil {
		return nil, fmt.Sprintf("its El Torito boot catalog cannot be read: %v", err)
	}
	if b == nil {
		return nil, ""
	}
	out := []bootJSON{}
	for _, e := range b.Entries {
		out = append(out, bootJSON{Platform: e.Platform, Bootable: e.Bootable, Emulation: e.Emulation, LoadSegment: e.LoadSegment, Sectors: e.Sectors, Offset: e.Offset})
	}
	return out, ""
}

// printBoot writes a partition's boot records, one line each.
func printBoot(w io.Writer, where string, boots []bootJSON) {
	for _, b := range boots {
		emu := "no emulation"
		if b.Emulation != "none" {
			emu = b.Emulation + " emulation"
		}
		seg := ""
		if b.LoadSegment != 0 {
			seg = fmt.Sprintf(", loaded at segment 0x%x", b.LoadSegment)
		}
		boot := "bootable"
		if !b.Bootable {
			boot = "not bootable"
		}
		fmt.Fprintf(w, "Boot:        %s: El Torito %s, %s, %d sectors%s, image at byte %d, %s\n", where, b.Platform, emu, b.Sectors, seg, b.Offset, boot)
	}
}

// bareInfoJSON is info of a bare disk image.
type bareInfoJSON struct {
	Image      string              `json:"image"`
	Kind       string              `json:"kind"` // "bare disk image"
	Size       int64               `json:"source_size"`
	Table      string              `json:"table"`
	Partitions []barePartitionJSON `json:"partitions"`
}

type barePartitionJSON struct {
	Index      int        `json:"index"` // 0: the whole disk
	Start      int64      `json:"start"`
	Size       int64      `json:"size"`
	Type       string     `json:"type,omitempty"`
	Filesystem string     `json:"filesystem"`
	Label      string     `json:"label,omitempty"`
	UUID       string     `json:"uuid,omitempty"`
	Boot       []bootJSON `json:"boot,omitempty"`
	Note       string     `json:"note,omitempty"`
}

// printBareInfo describes a bare disk image (an .iso, a raw disk) read
// in place: its table, and each filesystem with its label, UUID and
// boot records.
func printBareInfo(w io.Writer, opts infoOptions, path string, b *bareDisk) error {
	out := bareInfoJSON{Image: path, Kind: "bare disk image", Size: b.dev.Size(), Table: "none", Partitions: []barePartitionJSON{}}
	if t, err := ptable.Read(b.dev, b.dev.Size(), 512); err == nil {
		out.Table = t.Kind
	}
	for _, p := range b.parts {
		id := fsmap.Identify(p.R, p.Size, p.Filesystem)
		boots, note := bootRecords(p.R, p.Size, p.Filesystem)
		out.Partitions = append(out.Partitions, barePartitionJSON{Index: p.Index, Start: p.Start, Size: p.Size, Type: p.Type,
			Filesystem: p.Filesystem, Label: id.Label, UUID: id.UUID, Boot: boots, Note: note})
	}
	if opts.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "Image:       %s (a bare disk image, read in place; not a Platter image)\n", path)
	fmt.Fprintf(w, "Size:        %s (%d bytes)\n", ui.Bytes(out.Size), out.Size)
	fmt.Fprintf(w, "Table:       %s\n", out.Table)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPART\tSTART\tSIZE\tTYPE\tFS\tLABEL\tUUID")
	for _, p := range out.Partitions {
		idx := fmt.Sprint(p.Index)
		if p.Index == 0 {
			idx = "disk"
		}
		typ := ptable.TypeName(p.Type)
		if typ == "" {
			typ = dash(p.Type)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", idx, ui.Bytes(p.Start), ui.Bytes(p.Size), typ, p.Filesystem, dash(p.Label), dash(p.UUID))
	}
	tw.Flush()
	for _, p := range out.Partitions {
		where := fmt.Sprintf("partition %d", p.Index)
		if p.Index == 0 {
			where = "the disk"
		}
		printBoot(w, where, p.Boot)
		if p.Note != "" {
			fmt.Fprintf(w, "Note: %s: %s\n", where, p.Note)
		}
	}
	return nil
}
