package main

// Other tools' images as IMAGE: Clonezilla image directories
// (clonezilla.go) and Macrium Reflect X .mrimgx files (mrimgx.go).
//
// Each is read as the disk it was imaged from (a block.Source that says
// which bytes it holds), and every command that reads an image takes it
// through one path: openImage converts the disk, in one pass, into a
// private Platter image (openForeignImage), import writes that image to
// a name of the user's (importForeign), and info and verify, which say
// the tool's own facts, read it directly.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/clonezilla"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/mrimgx"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/spf13/cobra"
)

// The kinds of foreign image.
const (
	kindClonezilla = "clonezilla"
	kindMrimgx     = "mrimgx"
)

// foreignKind says what foreign image path is: a Clonezilla image
// directory, a Macrium Reflect X image (a regular local file, not a
// symlink, that ends in the MACRIUM_FILE footer, whatever its name, or
// is named .mrimgx: one cut short is then said to be damaged, not "not
// a Platter image"), or "" for neither.
func foreignKind(path string) string {
	if isClonezilla(path) {
		return kindClonezilla
	}
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() &&
		(strings.EqualFold(filepath.Ext(path), ".mrimgx") || mrimgx.HasFooter(path)) {
		return kindMrimgx
	}
	return ""
}

// foreignTitle names a kind in a sentence: "a Clonezilla image
// directory", "a Macrium Reflect X image".
func foreignTitle(kind string) string {
	if kind == kindClonezilla {
		return "a Clonezilla image directory"
	}
	return "a Macrium Reflect X image"
}

// foreignTool is the tool that made a kind of image.
func foreignTool(kind string) string {
	if kind == kindClonezilla {
		return "Clonezilla"
	}
	return "Macrium Reflect X"
}

// diskFlag is --disk: the disk_number of the disk of a Macrium Reflect
// X image to read (0: the first).
var diskFlag int

func addDiskFlag(cmd *cobra.Command) {
	cmd.Flags().IntVar(&diskFlag, "disk", 0, "of a Macrium Reflect X image that holds several disks, read the one with this disk number (default: the first)")
}

// checkDiskFlag refuses --disk for an image that is not a Macrium
// Reflect X image.
func checkDiskFlag(path, kind string) error {
	if diskFlag != 0 && kind != kindMrimgx {
		return usagef("--disk picks a disk of a Macrium Reflect X image; %s is not one", path)
	}
	if diskFlag < 0 {
		return usagef("--disk takes a disk number, 1 or more")
	}
	return nil
}

// foreignDisk is the disk a foreign image holds.
type foreignDisk interface {
	block.Source
	// Used is every byte range the image holds; the rest reads as zeros.
	Used() []block.Extent
	Close() error
}

// foreign is an open foreign image.
type foreign struct {
	kind, path string
	disk       foreignDisk
	cz         *clonezilla.Disk // kind clonezilla
	mr         *mrimgx.Disk     // kind mrimgx
	bar        *ui.Progress
	czp        *czProgress // a Clonezilla image's decodes, on bar
}

// openForeign opens the foreign image at path (kind foreignKind's) as
// its disk, its reads shown on bar. An encrypted Macrium image takes the
// password given to the command (secrets.go), asked for on the terminal
// when none was; one of several disks is chosen by --disk.
func openForeign(path, kind string, bar *ui.Progress) (*foreign, error) {
	f := &foreign{kind: kind, path: path, bar: bar}
	switch kind {
	case kindClonezilla:
		f.czp = newCZProgress(bar)
		d, err := clonezilla.Open(path, f.czp.options())
		if err != nil {
			return nil, err
		}
		f.cz, f.disk = d, d
	case kindMrimgx:
		d, err := openMrimgx(path, diskFlag, true)
		if err != nil {
			return nil, err
		}
		f.mr, f.disk = d, d
	default:
		return nil, fmt.Errorf("%s is not an image of another tool", path)
	}
	return f, nil
}

func (f *foreign) Close() error { return f.disk.Close() }

// checkSums checks what a foreign image says of its own files before
// anything is made of it: a Clonezilla directory's MD5SUMS, SHA1SUMS,
// ... (a Macrium image's MD5s are checked block by block as it is read).
func (f *foreign) checkSums(ctx context.Context) error {
	if f.cz != nil {
		return f.cz.VerifySums(ctx)
	}
	return nil
}

// checked says what an import verified.
func (f *foreign) checked() string {
	if f.cz != nil {
		return joinAnd(append([]string{"every partclone checksum"}, f.cz.SumFiles()...))
	}
	return "every block's MD5"
}

// engineProgress hands the backup engine's progress to a bar whose total
// is set already.
type engineProgress struct{ bar *ui.Progress }

func (p engineProgress) Start(int64) {}
func (p engineProgress) Add(n int64) { p.bar.Add(n) }
func (p engineProgress) Finish()     { p.bar.Finish() }

// Less is the engine's too: the bar's total is the disk's used extents
// already, with nothing raw in it to take off.
func (p engineProgress) Less(int64) {}

// czSource is a Clonezilla disk as the backup engine reads it.
type czSource struct{ *clonezilla.Disk }

// mrSource is a Macrium disk as the backup engine reads it.
type mrSource struct{ *mrimgx.Disk }

// importForeign writes the disk of the foreign image f into sink as a
// Platter image, reading it once. A Clonezilla partition compressed is
// decoded whole on its first read, every partclone checksum verified; an
// uncompressed one is read in place and is verified whole first, so that
// no block goes unchecked. A Macrium block is checked against its MD5
// as it is read. Any mismatch aborts the sink.
func importForeign(ctx context.Context, f *foreign, sink backup.Sink, setting codec.Setting, chunkSize int64, tempDir string) (*image.Metadata, int64, error) {
	var src block.Source
	var progress backup.Progress
	switch {
	case f.cz != nil:
		d := f.cz
		f.czp.start(d)
		for _, part := range d.Partitions {
			if part.Kind == "partclone" && (part.Compression == "" || part.Compression == "uncomp") {
				if err := verifyPartition(ctx, d, part, f.bar.Add); err != nil {
					sink.Abort()
					return nil, 0, err
				}
			}
		}
		src, progress = czSource{d}, f.czp
	default:
		f.bar.Start(usedBytes(f.mr))
		src, progress = mrSource{f.mr}, engineProgress{f.bar}
	}
	abs, err := filepath.Abs(f.path)
	if err != nil {
		abs = f.path
	}
	opts := backup.Options{
		SourceName:  abs,
		Compression: setting,
		ChunkSize:   chunkSize,
		Tool:        "platter " + version + " (from a " + foreignTool(f.kind) + " image)",
		Host:        hostname(),
		Progress:    progress,
		TempDir:     tempDir,
	}
	return backup.ToSink(ctx, src, sink, opts)
}

// openForeignImage is openImage for a foreign image: its disk
// converted into a Platter image (fast compression), kept in the cache
// of converted images (keyed by every file it was made from) or, where
// that is off or the image is encrypted, in a temporary file that is
// unlinked before anything is written to it (imgcache.go).
func openForeignImage(path, kind string) (chainFiles, *image.Reader, error) {
	mode, _ := displayMode("auto")
	bar := newProgress(mode, "read "+foreignTool(kind)+" image")
	f, err := openForeign(path, kind, bar)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // the disk is in the Platter image now
	files, uncached, err := f.sources()
	if err != nil {
		return nil, nil, err
	}
	conv := fmt.Sprintf("%s %s %v %d", kind, converterID(), codec.FastSetting, backup.DefaultChunkSize)
	if f.mr != nil {
		conv += fmt.Sprintf(" disk %d", f.mr.Number)
	}
	return openConverted(path, conv, files, uncached, func(sinkFor sinkFor) error {
		// The image holds at most the used bytes, compressed.
		sink, err := sinkFor(usedBytes(f.disk) + 64<<20)
		if err != nil {
			return err
		}
		_, _, err = importForeign(runContext, f, sink, codec.FastSetting, backup.DefaultChunkSize, "")
		bar.Finish()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

// sources are the files the foreign image is made of (the key of its
// conversion in the cache), or why its conversion is not to be cached.
func (f *foreign) sources() (files []string, uncached string, err error) {
	if f.mr != nil {
		if f.mr.Header.Encryption.Enable {
			return nil, "an encrypted image is not kept decrypted", nil
		}
		for _, sf := range f.mr.Files() {
			files = append(files, sf.Path)
		}
		return files, "", nil
	}
	files, err = regularFiles(f.path)
	return files, "", err
}

// privateImage is the Platter image of a foreign image, in an unlinked
// temporary file: a store.Object once written.
type privateImage struct {
	*os.File
	name string
	size int64
	w    *bufio.Writer
}

func (o *privateImage) Name() string { return o.name }
func (o *privateImage) Size() int64  { return o.size }

// sink is where the image is written, front to back; there is no name
// to commit to, and an aborted image is closed with the command.
func (o *privateImage) sink() backup.Sink {
	o.w = bufio.NewWriterSize(o.File, 1<<20)
	return privateSink{o}
}

type privateSink struct{ o *privateImage }

func (s privateSink) Write(b []byte) (int, error) {
	n, err := s.o.w.Write(b)
	s.o.size += int64(n)
	return n, err
}
func (s privateSink) Commit() error { return s.o.w.Flush() }
func (s privateSink) Abort()        {}

// foreignDamaged says whether err is damage in a foreign image (exit
// code 3): a checksum that does not match, a file of the image missing,
// a structure that cannot be what its tool wrote, a .mrimgx without its
// footer (cut short). A wrong password is not damage (exit code 1), nor
// is what is not read yet.
func foreignDamaged(err error) bool {
	if clonezillaDamaged(err) || errors.Is(err, mrimgx.ErrChecksum) || errors.Is(err, mrimgx.ErrDecode) || errors.Is(err, mrimgx.ErrMissing) ||
		errors.Is(err, mrimgx.ErrDamaged) || errors.Is(err, mrimgx.ErrNotMrimgx) {
		return true
	}
	var fe *mrimgx.FormatError
	return errors.As(err, &fe) && !errors.Is(err, mrimgx.ErrUnsupported)
}

// foreignTarget refuses a restore target that is a file of the foreign
// image being read: its Platter image is private, so the image's own
// files are what a target must not be.
func foreignTarget(imagePath, kind, target string) error {
	switch kind {
	case kindClonezilla:
		dir, _ := filepath.Abs(imagePath)
		if t, err := filepath.Abs(target); err == nil && filepath.Dir(t) == dir {
			return usagef("TARGET %s is a file of the Clonezilla image %s: restoring onto it would destroy the image being read", target, imagePath)
		}
	case kindMrimgx:
		// The files of the set are beside it, with its extension.
		st, err := os.Stat(target)
		if err != nil {
			return nil
		}
		if img, err := os.Stat(imagePath); err == nil && os.SameFile(st, img) {
			return usagef("TARGET %s is the Macrium Reflect X image %s: restoring onto it would destroy the image being read", target, imagePath)
		}
		if st.Mode().IsRegular() && filepath.Ext(target) == filepath.Ext(imagePath) && mrimgx.HasFooter(target) {
			return usagef("TARGET %s is a Macrium Reflect X image, perhaps a file of the set of %s: restoring onto it would destroy it", target, imagePath)
		}
	}
	return nil
}

// openMrimgx opens disk n (0: the first) of the Macrium Reflect X image
// at path, with the password given to the command, asked for on the
// terminal (once for the command) if the image is encrypted and none
// was given. warnDisks warns, when the image holds several disks and
// none was chosen, which were left out.
func openMrimgx(path string, n int, warnDisks bool) (*mrimgx.Disk, error) {
	opts := mrimgx.Options{Disk: -1}
	if n > 0 {
		opts.Disk = n
	}
	pass, err := keys.password(false)
	if err != nil {
		return nil, err
	}
	opts.Password = pass
	d, err := mrimgx.Open(path, opts)
	if errors.Is(err, mrimgx.ErrPassword) && pass == "" {
		if pass, err = keys.password(true); err != nil {
			return nil, err
		}
		if pass == "" {
			return nil, &hintError{msg: fmt.Sprintf("%s: the Macrium Reflect X image is encrypted: give its password with --password-file FILE or $%s, or type it on a terminal", path, envPassword), err: mrimgx.ErrPassword}
		}
		opts.Password = pass
		d, err = mrimgx.Open(path, opts)
	}
	if err != nil {
		return nil, err
	}
	if warnDisks && n == 0 && len(d.Header.Disks) > 1 {
		var nums []string
		for _, dj := range d.Header.Disks {
			nums = append(nums, fmt.Sprint(dj.Header.DiskNumber))
		}
		warn("%s holds %d disks (disk numbers %s): reading disk %d; choose another with --disk N", path, len(nums), strings.Join(nums, ", "), d.Number)
	}
	return d, nil
}

// reportForeignVerify prints verify's result for a foreign image: lines,
// or sum as JSON, and with -q only the damage found; damage is exit code
// 3.
func reportForeignVerify(cmd *cobra.Command, asJSON bool, sum any, damaged, lines []string, path, kind string) error {
	if quiet && !asJSON {
		for _, l := range damaged {
			fmt.Fprintln(cmd.OutOrStdout(), l)
		}
	}
	if err := report(cmd, asJSON, sum, lines...); err != nil {
		return err
	}
	if len(damaged) > 0 {
		return &damagedError{what: fmt.Sprintf("%s: the %s image is damaged (%d finding(s) above)", path, foreignTool(kind), len(damaged))}
	}
	return nil
}
