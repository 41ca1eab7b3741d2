package main

// Bare disk images as IMAGE: a file that is not a Platter image (nor
// another tool's) but holds a filesystem or a partition table Platter
// reads — an .iso, a raw disk image — is opened in place, as the disk it
// is: no conversion, so a 4 GiB installer lists at once. Its layout is
// read the way create reads a source (backup.Describe), so a hybrid ISO
// (an ISO 9660 from byte 0 with an MBR/GPT inside it) is the ISO, and
// its partition table's partitions are there too, by number.

import (
	"fmt"
	"io"
	"os"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/fsmap"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/ptable"
)

// diskPart is a partition (or the whole disk, Index 0) of a disk being
// read for its files.
type diskPart struct {
	image.Area
	R io.ReaderAt
}

// bareDisk is a bare disk image opened in place.
type bareDisk struct {
	dev   *blockdev.Device
	parts []diskPart
	// notes say what is wrong with the disk's optical filesystem (a
	// volume cut short), for the commands to warn of.
	notes []string
}

func (b *bareDisk) Close() error { return b.dev.Close() }

// openBare opens path as a bare disk image: (nil, nil) when it is not
// one (a Platter image, another tool's, not a regular file, or a file
// in which Platter finds neither a filesystem nor a partition table).
func openBare(path string) (*bareDisk, error) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || foreignKind(path) != "" {
		return nil, nil
	}
	dev, err := blockdev.Open(path)
	if err != nil {
		return nil, nil
	}
	var head [8]byte
	if n, _ := dev.ReadAt(head[:], 0); n < len(head) || head == [8]byte{0x89, 'P', 'L', 'T', '\r', '\n', 0x1a, '\n'} {
		dev.Close() // a Platter image, damaged or not: openImage reads it
		return nil, nil
	}
	d, err := backup.Describe(dev, fsmap.Options{})
	if err != nil {
		dev.Close()
		return nil, nil
	}
	b := &bareDisk{dev: dev}
	named := false
	for _, a := range d.Areas {
		if a.Kind != image.KindPartition {
			continue
		}
		if d.Table == "none" {
			a.Index = 0 // the whole disk
		}
		named = named || a.Filesystem != "raw"
		b.parts = append(b.parts, diskPart{Area: a, R: io.NewSectionReader(dev, a.Start, a.Size)})
	}
	if u, err := fsmap.DetectOptical(dev, dev.Size()); err == nil && u != nil && u.Warning != "" {
		b.notes = append(b.notes, u.Warning)
	}
	if d.Table == "none" && backup.Optical(dev, nil, nil) {
		// A hybrid ISO: its table's partitions, inside the volume, by
		// number after the disk's own filesystem.
		if t, err := ptable.Read(dev, dev.Size(), 512); err == nil {
			for _, p := range t.Partitions {
				if p.Start < 0 || p.Size <= 0 || p.End() > dev.Size() {
					continue
				}
				a := image.Area{Kind: image.KindPartition, Index: p.Index, Start: p.Start, Size: p.Size, Type: p.Type, Filesystem: "raw"}
				if u, err := fsmap.Detect(io.NewSectionReader(dev, p.Start, p.Size), p.Size); err == nil && u != nil {
					a.Filesystem = u.FS
				}
				b.parts = append(b.parts, diskPart{Area: a, R: io.NewSectionReader(dev, p.Start, p.Size)})
			}
		}
	}
	if !named && d.Table == "none" {
		// Neither a filesystem nor a table: perhaps a damaged Platter
		// image, which openImage names; but a filesystem recognised and
		// found damaged is the answer.
		_, err := fsmap.Detect(dev, dev.Size())
		dev.Close()
		if err != nil {
			return nil, fmt.Errorf("%s is not a Platter image; read as a disk image: %w", path, err)
		}
		return nil, nil
	}
	return b, nil
}

// partName names a partition of a disk in messages: "2 (fat16)", "the
// disk (iso9660)".
func partName(p diskPart) string {
	if p.Index == 0 {
		return fmt.Sprintf("the disk (%s)", p.Filesystem)
	}
	return fmt.Sprintf("%d (%s)", p.Index, p.Filesystem)
}
