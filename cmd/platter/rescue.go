package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/owners"
	"github.com/platter-dev/platter/internal/rescue"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

// checkRescueFlags refuses the rescue's flags without --rescue, and
// --rescue with what a rescue is not.
func checkRescueFlags(cmd *cobra.Command, opts createOptions) error {
	if !opts.rescue {
		for _, name := range []string{"retries", "map", "read-timeout"} {
			if cmd.Flags().Changed(name) {
				return usagef("--%s goes with --rescue (imaging a failing disk)", name)
			}
		}
		return nil
	}
	switch {
	case opts.retries < 0:
		return usagef("--retries takes a count, 0 or more, not %d", opts.retries)
	case opts.readTimeout <= 0:
		return usagef("--read-timeout takes a duration above zero, like 30s")
	case opts.incremental != "" || opts.differential != "":
		return usagef("--rescue makes a full image: leave out --incremental and --differential")
	}
	return nil
}

// startRescue opens the rescue of src: its map resumed from --map when
// the file is there. Stalled reads are noted between progress lines.
func startRescue(src *blockdev.Device, opts createOptions, progress *ui.Progress) (*rescue.Rescuer, error) {
	sector := src.SectorSize()
	if sector == 0 { // a file: its unit of direct reads
		sector = block.DirectAlign
	}
	r, err := rescue.New(src, sector, rescue.Options{
		MapFile: opts.mapFile,
		Retries: opts.retries,
		Timeout: opts.readTimeout,
		Report:  func(msg string) { progress.Say("warning: " + msg) },
	})
	if err != nil {
		return nil, err
	}
	if r.Resumed() {
		bad, areas := r.Bad()
		progress.Say(fmt.Sprintf("resuming the rescue in %s: %s in %d bad areas known, not read again before the rest", opts.mapFile, ui.Bytes(bad), areas))
	}
	progress.Status = func() string {
		bad, areas := r.Bad()
		if areas == 0 {
			return "no bad sector"
		}
		return fmt.Sprintf("bad: %s in %d areas", ui.Bytes(bad), areas)
	}
	return r, nil
}

// rescueHint adds to a read error of a create without --rescue what to
// do about a failing disk.
func rescueHint(err error, opts createOptions) error {
	if opts.rescue && errors.Is(err, rescue.ErrGone) {
		if opts.mapFile == "" {
			return fmt.Errorf("%w. No image was written. Reconnect the disk and run create --rescue again (with --map FILE, a rescue goes on where it stopped)", err)
		}
		return fmt.Errorf("%w. No image was written; %s keeps what was read. Reconnect the disk and run the same command: it goes on where it stopped", err, opts.mapFile)
	}
	var re *backup.ReadError
	if opts.rescue || !errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("%w. No image was written. The disk may be failing: stop writing to it and image it with create --rescue --map FILE, which reads around bad sectors and lists the files they hit (docs/rescue.md)", err)
}

// classifyHits says what the unreadable ranges of a filesystem held
// (internal/owners), for the engine.
func classifyHits(r io.ReaderAt, size int64, fs string, used func(off, n int64) ([]block.Extent, error), ranges []block.Extent) ([]backup.RangeHit, error) {
	hits, err := owners.Classify(r, size, fs, used, ranges)
	if err != nil {
		return nil, err
	}
	out := make([]backup.RangeHit, len(hits))
	for i, h := range hits {
		out[i] = backup.RangeHit{Range: h.Range, Hit: image.Hit{Kind: h.Kind, Paths: h.Paths, Bytes: h.Bytes}}
	}
	return out, nil
}

// damageHits says what each damaged chunk of an image held, as its
// filesystem (read from the image itself, the damaged chunks failing)
// says: for verify's report. Keyed by the chunk's area and index.
func damageHits(r *image.Reader, bad []*image.ChunkError) map[[2]int64][]image.Hit {
	m := r.Metadata()
	byArea := map[int][]*image.ChunkError{}
	for _, b := range bad {
		byArea[int(b.Entry.Area)] = append(byArea[int(b.Entry.Area)], b)
	}
	out := map[[2]int64][]image.Hit{}
	disk := view.New(r, 8)
	defer disk.Close()
	for i, chunks := range byArea {
		if i >= len(m.Areas) || m.Areas[i].Kind != image.KindPartition {
			continue
		}
		a := m.Areas[i]
		var ranges []block.Extent
		for _, b := range chunks {
			off := int64(b.Entry.Chunk) * m.ChunkSize
			ranges = append(ranges, block.Extent{Off: off, Len: min(m.ChunkSize, a.Size-off)})
		}
		var used func(off, n int64) ([]block.Extent, error)
		if bm := r.Map(i); bm != nil {
			used = func(off, n int64) ([]block.Extent, error) {
				var out []block.Extent
				bm.Runs(off, n, func(e block.Extent) { out = append(out, e) })
				return out, nil
			}
		}
		hits, err := owners.Classify(io.NewSectionReader(disk, a.Start, a.Size), a.Size, a.Filesystem, used, ranges)
		if err != nil {
			continue
		}
		for _, h := range hits {
			k := [2]int64{int64(i), h.Range.Off / m.ChunkSize}
			out[k] = append(out[k], image.Hit{Kind: h.Kind, Paths: h.Paths, Bytes: h.Bytes})
		}
	}
	return out
}

// rescueLines describe what a rescue could not read, for create's
// summary, info and verify.
func rescueLines(m *image.Metadata) []string {
	r := m.Rescue
	if r == nil {
		return nil
	}
	n := m.UnreadableBytes()
	if n == 0 {
		return []string{"made with --rescue: every sector was read"}
	}
	lines := []string{fmt.Sprintf("%d sectors (%s) unreadable at imaging (by design: stored as missing, restored as zeros or restore --fill), in %d ranges",
		n/max(r.SectorSize, 1), ui.Bytes(n), len(r.Unreadable))}
	for _, u := range r.Unreadable {
		where := fmt.Sprintf("bytes %d-%d of the disk", u.Offset, u.Offset+u.Length)
		if u.Area >= 0 && u.Area < len(m.Areas) {
			a := m.Areas[u.Area]
			where = a.Label()
			if a.Kind == image.KindPartition && a.Filesystem != "" {
				where += " (" + a.Filesystem + ")"
			}
			where += fmt.Sprintf(", bytes %d-%d of the disk", u.Offset, u.Offset+u.Length)
		}
		lines = append(lines, "  "+where+": "+describeHits(u.Hits))
	}
	return lines
}

// describeHits says what an unreadable range held.
func describeHits(hits []image.Hit) string {
	if len(hits) == 0 {
		return "held what the filesystem cannot tell"
	}
	var parts []string
	for _, h := range hits {
		names := make([]string, len(h.Paths))
		for i, p := range h.Paths {
			names[i] = shown(p)
		}
		list := strings.Join(names, ", ")
		switch h.Kind {
		case "file", "directory":
			what := h.Kind
			if len(names) > 1 {
				what += "s"
			}
			parts = append(parts, what+" "+list)
		case "metadata":
			if list == "" {
				parts = append(parts, "filesystem metadata")
			} else {
				parts = append(parts, "filesystem metadata ("+list+")")
			}
		case "free space":
			parts = append(parts, "free space (harmless)")
		default:
			parts = append(parts, "blocks in use the filesystem does not name")
		}
	}
	return "holds " + strings.Join(parts, "; ")
}
