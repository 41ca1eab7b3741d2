package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/restore"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Reading an image from standard input (IMAGE -): restore, verify and
// info read it in one pass with image.Stream, never seeking, so a disk
// clones across a network: platter create /dev/sda - | ssh host platter
// restore --yes - /dev/sdb. The parents of an incremental are found in
// the --search directories.

// openStream starts reading the image on standard input.
func openStream() (*image.Stream, error) {
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, usagef("IMAGE - reads the image from standard input, which is a terminal: pipe one in (platter create SOURCE - | platter verify -)")
	}
	s, err := image.NewStream(bufio.NewReaderSize(os.Stdin, 1<<20), keyring())
	if err != nil {
		return nil, fmt.Errorf("standard input: %w", err)
	}
	return s, nil
}

// finishStream reads the end of the stream and attaches the parents of an
// incremental; the caller closes the files and the reader.
func finishStream(ctx context.Context, s *image.Stream) (chainFiles, *image.Reader, error) {
	r, err := s.Finish()
	if err != nil {
		return nil, nil, fmt.Errorf("standard input: %w", err)
	}
	r.SetName(stdio)
	if r.Metadata().Parent == "" {
		return nil, r, nil
	}
	files, err := attachChain(ctx, r, nil)
	if err != nil {
		files.Close()
		r.Close()
		return nil, nil, err
	}
	return files, r, nil
}

func runVerifyStream(cmd *cobra.Command, mode ui.Mode, asJSON bool) error {
	s, err := openStream()
	if err != nil {
		return err
	}
	p := newProgress(mode, "verify")
	if l := s.Layout(); l != nil {
		p.Start(l.SourceSize)
	} else {
		p.Start(0)
	}
	// Frames that fail as they pass; Check names the chunks that use
	// them once the index is read.
	var frameBad []*image.ChunkError
	for {
		f, err := s.Next(nil)
		if err == io.EOF {
			break
		}
		var ce *image.ChunkError
		if errors.As(err, &ce) {
			frameBad = append(frameBad, ce)
			continue
		}
		if err != nil {
			p.Finish()
			for _, b := range frameBad {
				fmt.Fprintln(cmd.OutOrStdout(), b.Error())
			}
			return fmt.Errorf("standard input: %w", err)
		}
		if !f.Delta { // a delta is read over its parent's chunk below
			p.Add(int64(len(f.Data)))
		}
	}
	p.Finish()
	files, r, err := finishStream(cmd.Context(), s)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	bad := s.Check(r)
	named := map[int64]bool{}
	for _, b := range bad {
		named[b.Entry.FrameOff] = true
	}
	for _, b := range frameBad {
		if !named[b.Entry.FrameOff] {
			bad = append(bad, b)
		}
	}
	// The chunks an incremental takes from its parents are read there,
	// and its delta chunks (kept) over them.
	buf := make([]byte, 0, r.Metadata().ChunkSize)
	for _, e := range r.Entries() {
		if !e.InParent() && !e.Delta() || named[e.FrameOff] && e.Delta() {
			continue
		}
		if _, err := r.ReadChunk(e, buf); err != nil {
			var ce *image.ChunkError
			if !errors.As(err, &ce) {
				return err
			}
			bad = append(bad, &image.ChunkError{Entry: e, File: ce.File, Where: r.Where(e), Msg: ce.Msg})
		}
	}
	msgs := make([]error, len(bad))
	for i, b := range bad {
		msgs[i] = b
	}
	return reportVerify(cmd, r, stdio, msgs, " read from standard input", asJSON)
}

// streamParents finds, opens and checks the parent chain of the image on
// standard input from the parent its layout block names (format 3), before
// anything is written: the parent by id in the --search directories, its
// own parents above it (attachChain), its content digest the one the
// child was made from, and its layout the child's. Whether the parent
// holds every chunk the child takes from it is known only from the
// child's index, at the end (AttachParent). It returns the parent, and
// the files of the chain to close, even on error; the caller closes the
// parent.
func streamParents(ctx context.Context, l *image.Layout) (chainFiles, *image.Reader, error) {
	id := l.Parent.ID.String()
	pplace, pname, err := findImage(ctx, id, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("standard input is an incremental or differential of image %s: %w", id, err)
	}
	pf, pr, err := openOne(ctx, pplace, pname)
	if err != nil {
		return nil, nil, fmt.Errorf("parent %s of standard input: %w", id, err)
	}
	files := chainFiles{pf}
	more, err := attachChain(ctx, pr, pplace)
	files = append(files, more...)
	bad := func(format string, args ...any) error {
		return &image.ParentError{Image: "standard input", Parent: pr.Name(), Msg: fmt.Sprintf(format, args...)}
	}
	switch pl := image.LayoutOf(pr.Metadata()); {
	case err != nil:
	case pr.ContentDigest() != l.Parent.Digest:
		d := pr.ContentDigest()
		err = bad("its content changed since standard input was made from it (content digest %x, expected %x)", d, l.Parent.Digest)
	default:
		if gerr := l.SameGrid(&pl); gerr != nil {
			err = bad("%v", gerr)
		}
	}
	if err != nil {
		pr.Close()
		return files, nil, err
	}
	return files, pr, nil
}

// runInfoStream reads the whole image from standard input, checking it
// as verify does, and describes it as info does a file. The first two
// chunks of every area are kept for the filesystems' labels and UUIDs.
func runInfoStream(w io.Writer, opts infoOptions) error {
	s, err := openStream()
	if err != nil {
		return err
	}
	s.Keep = func(_ uint32, chunk uint64) bool { return chunk < 2 }
	for {
		_, err := s.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("standard input: %w", err)
		}
	}
	files, r, err := finishStream(context.Background(), s)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	if bad := s.Check(r); len(bad) > 0 {
		return fmt.Errorf("standard input: %w", bad[0])
	}
	return printInfo(w, opts, stdio, r)
}

// runRestoreStream restores the whole disk held in the image on standard
// input onto target (restore.Stream).
func runRestoreStream(cmd *cobra.Command, opts restoreOptions, mode ui.Mode, target string) error {
	if opts.partition != 0 {
		return usagef("--partition needs the image's index, at its end: save the image to a file first (a stream restores the whole disk)")
	}
	// Standard input may be a file (restore - IMAGE < IMAGE): never
	// the target.
	if in, err := os.Stdin.Stat(); err == nil {
		if st, err := os.Stat(target); err == nil && os.SameFile(in, st) {
			return chainTargetError(target, "standard input")
		}
	}
	s, err := openStream()
	if err != nil {
		if errors.Is(err, image.ErrDamaged) {
			return fmt.Errorf("%w; %s was not touched", err, target)
		}
		return err
	}
	l := s.Layout()
	if l == nil {
		return fmt.Errorf("standard input: %w", restore.ErrNoLayout)
	}
	// The parents of an incremental are found and checked before the
	// target is opened; an image of format 2 names them only at its end.
	var files chainFiles
	defer func() { files.Close() }()
	var parent *image.Reader
	if l.Parent != nil {
		if files, parent, err = streamParents(cmd.Context(), l); err != nil {
			return fmt.Errorf("%w; %s was not touched", err, target)
		}
		defer parent.Close()
		if held := files.holding(target); held != "" {
			return chainTargetError(target, held)
		}
	}
	need := l.SourceSize
	isDev, err := checkTarget(target, need)
	if err != nil {
		return err
	}
	if isDev {
		if !opts.yes {
			// Standard input is the image: there is no answer to read.
			return usagef("refusing to overwrite block device %s without confirmation: pass --yes (standard input holds the image)", target)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "%s will be overwritten. It holds now:\n%s", target, describeDevice(target))
	}
	t, err := blockdev.OpenTarget(target, need)
	if err != nil {
		return err
	}
	p := newProgress(mode, "restore")
	start := time.Now()
	img, err := restore.Stream(cmd.Context(), s, t, restore.StreamOptions{Fresh: t.Fresh, Progress: p, Parents: func(r *image.Reader) error {
		r.SetName(stdio)
		if parent != nil {
			// The metadata names the parent the layout block did
			// (checked by Finish): attach the chain found then.
			return r.AttachParent(parent)
		}
		var err error
		files, err = attachChain(cmd.Context(), r, nil)
		return err
	}})
	p.Finish()
	if err == nil {
		defer img.Close()
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if t.Created {
			os.Remove(target)
			return fmt.Errorf("restore from standard input stopped, %s removed: %w", target, err)
		}
		return fmt.Errorf("restore from standard input stopped: the target is incomplete: %s does not hold a usable disk (its first and last MiB are zero): %w", target, err)
	}
	m := img.Metadata()
	if len(m.NotImaged) > 0 {
		warn("partitions %s of the disk's table were not imaged (create --partitions): they are not restored, and %s keeps what it held there (zeros in a new file)", joinInts(m.NotImaged), target)
	}
	secs := time.Since(start).Seconds()
	lines := []string{fmt.Sprintf("restored disk of standard input to %s (%s) in %.1fs", target, ui.Bytes(need), secs)}
	if verbose {
		lines = append(lines, areaLines(m)...)
	}
	return report(cmd, opts.json, restoreSummary{Image: stdio, Target: target, Bytes: need, Seconds: secs, NotImaged: m.NotImaged}, lines...)
}
