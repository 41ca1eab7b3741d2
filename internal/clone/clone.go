// Package clone copies a disk onto another without an image in between:
// the imaging engine (internal/backup) writes an uncompressed image
// stream into an in-process pipe, and the stream restore
// (restore.Stream) writes the target from the other end, as
// `platter create SOURCE - | platter restore - TARGET` would. So a clone
// reads only the used blocks, images a mounted source live exactly as
// create does (backup.Options.Live and Release), and every check of both
// engines applies: each chunk's BLAKE3 hash is made where it is read and
// checked before it is written, the index and metadata are checked at the
// end, and the partition tables are written last, so a clone that stops
// leaves a target that does not look like a disk. Nothing is stored.
package clone

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/restore"
)

// Options are the options of Run.
type Options struct {
	// Backup configures the imaging side: what to read and how (live
	// imaging hooks in here), its progress, the metadata recorded.
	// Compression and encryption are ignored: the stream never leaves
	// the process.
	Backup backup.Options
	// Fresh says every byte of the target reads as zero already (a new
	// or truncated file): zero blocks are not written, so it stays
	// sparse.
	Fresh bool
	// TempDir is where both engines keep what outgrows memory (the
	// index, the allocation maps held at a freeze, chunks a later copy
	// replaces); "" is os.TempDir(). It must not be on a filesystem the
	// clone freezes.
	TempDir string
}

// Result is what a clone copied.
type Result struct {
	// Metadata is the image's metadata as the imaging engine wrote it:
	// areas, used bytes, the snapshot of a live clone.
	Metadata *image.Metadata
	// StreamBytes is the length of the image stream that went through
	// the pipe.
	StreamBytes int64
}

// Run copies the whole disk src onto t, which must hold src.Size()
// bytes. On an error the target is incomplete, and its first and last
// MiB are zero (restore.Stream): it does not look like a disk.
func Run(ctx context.Context, src block.Source, t restore.StreamTarget, opts Options) (*Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	bopts := opts.Backup
	bopts.Compression = codec.Setting{ID: codec.None}
	bopts.Lock = nil
	bopts.TempDir = opts.TempDir

	pr, pw := io.Pipe()
	type imaged struct {
		meta *image.Metadata
		n    int64
		err  error
	}
	done := make(chan imaged, 1)
	go func() {
		meta, n, err := backup.Run(ctx, src, pw, bopts)
		if err != nil {
			cancel(err)
		}
		// The reader sees the engine's error, not a bare end of stream.
		pw.CloseWithError(errOr(err, io.EOF))
		done <- imaged{meta, n, err}
	}()

	img, err := restoreStream(ctx, pr, t, opts)
	if img != nil {
		img.Close()
	}
	if err != nil {
		cancel(err)
	}
	pr.CloseWithError(errReaderDone)
	res := <-done
	switch {
	case res.err != nil && !errors.Is(res.err, errReaderDone) && (err == nil || !errors.Is(res.err, err)):
		// The imaging side failed first (or was cancelled): its error
		// says why; the restore side only saw the pipe close. (When
		// the restore side failed first, the imaging side stopped for
		// it: at its next write, or with its error as the cause.)
		return nil, res.err
	case err != nil:
		return nil, err
	case res.err != nil:
		return nil, res.err
	}
	return &Result{Metadata: res.meta, StreamBytes: res.n}, nil
}

// errReaderDone closes the pipe when the restore side has stopped.
var errReaderDone = errors.New("clone: the target's side stopped")

func restoreStream(ctx context.Context, r io.Reader, t restore.StreamTarget, opts Options) (*image.Reader, error) {
	s, err := image.NewStream(r, nil)
	if err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	s.TempDir = opts.TempDir
	img, err := restore.Stream(ctx, s, t, restore.StreamOptions{Fresh: opts.Fresh, TempDir: opts.TempDir})
	if err != nil {
		return nil, err
	}
	return img, nil
}

func errOr(err, or error) error {
	if err != nil {
		return err
	}
	return or
}
