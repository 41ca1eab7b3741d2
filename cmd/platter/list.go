package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/imageset"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

type listOptions struct {
	json bool
}

func newListCommand() *cobra.Command {
	var opts listOptions
	cmd := &cobra.Command{
		Use:   "list [--json] DIR",
		Short: "List the images in a directory, by disk, and whether each restores",
		Long: `List shows every Platter image in DIR, grouped by the disk it is of (its
serial number where the device reported one, else its partition table's
id, else the host and the source's name; and its size; an incremental
always goes with its parent), oldest first: id, creation time, type,
parent and file size. An image restores when every image of its chain
is found (in DIR, then in the --search directories) and opens; one that
does not gets a line saying why: a missing parent, or damage. Encrypted
images that no passphrase or identity given opens are listed apart, as
locked: their disk is in their sealed metadata. Files that are not
images, and .partial files, are left out.

List exits 0 when it could read DIR, whatever it found there: damage is
reported, not fatal. Use verify to check every chunk of an image.`,
		Example: `  $ platter list backup
  backup: 6 images of 2 disks

  disk 1: laptop.img, 256.0 MiB, gpt 5BD3FA5A-7E50-4C77-83BB-5DC58E729A42, host vm
    ID        CREATED           TYPE          PARENT         SIZE  FILE
    4a453bba  2026-03-02 20:00  full          -          27.2 MiB  laptop-mon.platter
    e48c5834  2026-03-03 20:00  incremental   4a453bba   20.0 MiB  laptop-tue.platter
    bfb8e8ee  2026-03-04 20:00  incremental   e48c5834   13.0 MiB  laptop-wed.platter
    3 images: all restore

  disk 2: usb-stick.img, 512.0 MiB, no partition table, host vm
    ID        CREATED           TYPE          PARENT         SIZE  FILE
    9b087f31  2026-03-02 20:10  full          -         120.0 MiB  usb-full.platter
    46d1d297  2026-03-05 20:10  differential  9b087f31    1.0 MiB  usb-thu.platter
    f708978f  2026-03-06 20:10  differential  9b087f31    3.0 MiB  usb-fri.platter
    3 images: all restore

  $ platter list backup      # laptop-tue.platter moved away
  ...
    bfb8e8ee  2026-03-04 20:00  incremental   e48c5834   13.0 MiB  laptop-wed.platter
              does not restore: missing parent e48c5834

  $ platter list --json backup`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(cmd, opts, args[0])
		},
	}
	cmd.Flags().BoolVar(&opts.json, "json", false, "print one JSON document: the sets and their images")
	return cmd
}

// listJSON is list --json's document.
type listJSON struct {
	Dir  string        `json:"dir"`
	Sets []listSetJSON `json:"sets"`
	// Damaged are the files with a Platter header that do not open.
	Damaged []listImageJSON `json:"damaged"`
	// Locked are the encrypted images no secret given opens.
	Locked []listImageJSON `json:"locked"`
}

type listSetJSON struct {
	diskJSON
	Images []listImageJSON `json:"images"`
}

// diskJSON is what identifies a disk, from its newest image.
type diskJSON struct {
	Key        string `json:"key"` // image.Metadata.SourceKey
	Source     string `json:"source"`
	SourceSize int64  `json:"source_size"`
	Table      string `json:"table"`
	DiskID     string `json:"disk_id,omitempty"`
	DiskModel  string `json:"disk_model,omitempty"`
	DiskSerial string `json:"disk_serial,omitempty"`
	Host       string `json:"host,omitempty"`
}

type listImageJSON struct {
	ID       string     `json:"id"`
	File     string     `json:"file"`
	Created  *time.Time `json:"created,omitempty"` // nil: damaged or locked
	Type     string     `json:"type,omitempty"`
	Parent   string     `json:"parent"`
	Size     int64      `json:"size"`
	Restores bool       `json:"restores"`
	Problem  string     `json:"problem,omitempty"`
}

func runList(cmd *cobra.Command, opts listOptions, dir string) error {
	d, err := readDir(cmd.Context(), dir)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if opts.json {
		doc := listJSON{Dir: dir, Sets: []listSetJSON{}, Damaged: []listImageJSON{}, Locked: []listImageJSON{}}
		for _, s := range d.Sets {
			js := listSetJSON{diskJSON: disk(s.Newest().Meta)}
			for _, im := range s.Images {
				js.Images = append(js.Images, imageJSON(im))
			}
			doc.Sets = append(doc.Sets, js)
		}
		for _, im := range d.Damaged {
			doc.Damaged = append(doc.Damaged, imageJSON(im))
		}
		for _, im := range d.Locked {
			doc.Locked = append(doc.Locked, imageJSON(im))
		}
		return report(cmd, true, doc)
	}
	if !quiet {
		printList(w, d)
	}
	return nil
}

func imageJSON(im *imageset.Image) listImageJSON {
	j := listImageJSON{ID: im.ID, File: im.Path, Size: im.Size, Restores: im.Problem == nil && im.Err == nil, Problem: problem(im)}
	if m := im.Meta; m != nil {
		created := m.Created
		j.Created, j.Type, j.Parent = &created, imageType(m), m.Parent
	}
	return j
}

func disk(m *image.Metadata) diskJSON {
	return diskJSON{Key: m.SourceKey(), Source: m.Source, SourceSize: m.SourceSize, Table: m.Table, DiskID: m.DiskID,
		DiskModel: m.DiskModel, DiskSerial: m.DiskSerial, Host: m.Host}
}

func printList(w io.Writer, d *imageset.Dir) {
	n := len(d.Damaged) + len(d.Locked)
	for _, s := range d.Sets {
		n += len(s.Images)
	}
	if n == 0 {
		fmt.Fprintf(w, "%s: no Platter images\n", d.Path)
		return
	}
	fmt.Fprintf(w, "%s: %s of %s\n", d.Path, plural(n, "image"), plural(len(d.Sets), "disk"))
	sizeW := len("SIZE")
	for _, s := range d.Sets {
		for _, im := range s.Images {
			sizeW = max(sizeW, len(ui.Bytes(im.Size)))
		}
	}
	for _, ims := range [][]*imageset.Image{d.Damaged, d.Locked} {
		for _, im := range ims {
			sizeW = max(sizeW, len(ui.Bytes(im.Size)))
		}
	}
	for i, s := range d.Sets {
		fmt.Fprintf(w, "\n%s\n", diskLine(i+1, s.Newest().Meta))
		fmt.Fprintf(w, "  %-8s  %-16s  %-12s  %-8s  %*s  %s\n", "ID", "CREATED", "TYPE", "PARENT", sizeW, "SIZE", "FILE")
		bad := 0
		for _, im := range s.Images {
			m := im.Meta
			parent := "-"
			if m.Parent != "" {
				parent = imageset.Short(m.Parent)
			}
			fmt.Fprintf(w, "  %-8s  %-16s  %-12s  %-8s  %*s  %s\n", imageset.Short(im.ID), m.Created.Local().Format("2006-01-02 15:04"),
				imageType(m), parent, sizeW, ui.Bytes(im.Size), fileName(im))
			if p := problem(im); p != "" {
				bad++
				fmt.Fprintf(w, "            %s\n", wrap("does not restore: "+p, 12, 80, "            "))
			}
		}
		switch {
		case bad == 0 && len(s.Images) == 1:
			fmt.Fprintf(w, "  1 image: it restores\n")
		case bad == 0:
			fmt.Fprintf(w, "  %d images: all restore\n", len(s.Images))
		case bad == 1:
			fmt.Fprintf(w, "  %s: 1 does not restore\n", plural(len(s.Images), "image"))
		default:
			fmt.Fprintf(w, "  %s: %d do not restore\n", plural(len(s.Images), "image"), bad)
		}
	}
	apart := func(heading string, ims []*imageset.Image) {
		if len(ims) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", heading)
		for _, im := range ims {
			id := imageset.Short(im.ID)
			if id == "" {
				id = "?"
			}
			fmt.Fprintf(w, "  %-8s  %*s  %s\n            %s\n", id, sizeW, ui.Bytes(im.Size), fileName(im), wrap(problem(im), 12, 80, "            "))
		}
	}
	apart("damaged: these do not open, so which disk they are of is unknown", d.Damaged)
	apart("locked: encrypted, and no passphrase or identity given opens them", d.Locked)
}

// diskLine names a set's disk the way a person knows it: the source's
// name, size, partition table, model and serial, host.
func diskLine(n int, m *image.Metadata) string {
	parts := []string{m.Source}
	if m.DiskModel != "" || m.DiskSerial != "" {
		var id []string
		if m.DiskModel != "" {
			id = append(id, m.DiskModel)
		}
		if m.DiskSerial != "" {
			id = append(id, "serial "+m.DiskSerial)
		}
		parts[0] += " (" + strings.Join(id, ", ") + ")"
	}
	parts = append(parts, ui.Bytes(m.SourceSize))
	switch {
	case m.Table == "none" || m.Table == "":
		parts = append(parts, "no partition table")
	case m.DiskID != "":
		parts = append(parts, m.Table+" "+m.DiskID)
	default:
		parts = append(parts, m.Table)
	}
	if m.Host != "" {
		parts = append(parts, "host "+m.Host)
	}
	// Lines break between the parts, not inside one.
	for i := range parts[:len(parts)-1] {
		parts[i] = strings.ReplaceAll(parts[i], " ", "\x00") + ","
	}
	parts[len(parts)-1] = strings.ReplaceAll(parts[len(parts)-1], " ", "\x00")
	line := fmt.Sprintf("disk %d: %s", n, strings.Join(parts, " "))
	return strings.ReplaceAll(wrap(line, 0, 80, "        "), "\x00", " ")
}

// wrap breaks s at spaces into lines of at most width columns (a word
// longer than that stays whole), the first starting at column start,
// the others after indent.
func wrap(s string, start, width int, indent string) string {
	var b strings.Builder
	line := start
	for i, word := range strings.Fields(s) {
		switch {
		case i == 0:
		case line+1+len(word) > width:
			b.WriteString("\n" + indent)
			line = len(indent)
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	return b.String()
}

// fileName is an image's file as the user knows it: its name in the
// directory listed, or its path when found in a search directory.
func fileName(im *imageset.Image) string {
	if im.InDir {
		return filepath.Base(im.Path)
	}
	return im.Path
}

// problem says why im does not restore, "" when it does.
func problem(im *imageset.Image) string {
	err := im.Problem
	if err == nil {
		err = im.Err
	}
	if err == nil {
		return ""
	}
	var me *imageset.MissingError
	var de *imageset.DamagedError
	var le *imageset.LockedError
	switch {
	case im.Locked():
		return "locked: " + oneLine(im.Err.Error())
	case errors.As(err, &le):
		which := "ancestor"
		if le.Image == im.Parent {
			which = "parent"
		}
		return fmt.Sprintf("locked %s %s (%s): %s", which, imageset.Short(le.Image.ID), fileName(le.Image), oneLine(le.Err.Error()))
	case errors.As(err, &me):
		if me.Child == im {
			return "missing parent " + imageset.Short(me.ID)
		}
		return fmt.Sprintf("missing parent %s of %s", imageset.Short(me.ID), imageset.Short(me.Child.ID))
	case errors.As(err, &de) && de.Image == im:
		return "damaged: " + oneLine(de.Err.Error())
	case errors.As(err, &de):
		which := "ancestor"
		if de.Image == im.Parent {
			which = "parent"
		}
		return fmt.Sprintf("damaged %s %s (%s): %s", which, imageset.Short(de.Image.ID), fileName(de.Image), oneLine(de.Err.Error()))
	}
	return "damaged: " + oneLine(err.Error())
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
