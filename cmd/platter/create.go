package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/blockdev"
	"github.com/platter-dev/platter/internal/cbt"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/live"
	"github.com/platter-dev/platter/internal/rescue"
	"github.com/platter-dev/platter/internal/seal"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/vdisk"
	"github.com/spf13/cobra"
)

type createOptions struct {
	liveFlags
	partitions   string
	compress     string
	force        bool
	progress     string
	json         bool
	incremental  string
	differential string
	created      string    // hidden, for tests of retention rules
	at           time.Time // the time to record (plan run's time); zero: now
	trackDir     string    // where track keeps its maps
	readAll      bool      // an incremental reads every chunk, map or not
	sectors      bool
	chunkSize    string
	split        string
	keyFiles     []string
	askKey       bool
	encrypt      bool
	recipients   []string
	kdf          string // hidden: cheap Argon2id for tests
	rescue       bool
	retries      int
	mapFile      string
	readTimeout  time.Duration
}

func newCreateCommand() *cobra.Command {
	var opts createOptions
	return createCommand(&opts)
}

// createCommand is create with its flags parsed into opts, for plan run
// to set them as a plan says.
func createCommand(o *createOptions) *cobra.Command {
	opts := o
	cmd := &cobra.Command{
		Use:   "create [flags] SOURCE IMAGE",
		Short: "Image a disk, a partition or a bare filesystem",
		Long: `Create reads SOURCE (a block device, or a file holding a raw disk or a bare
filesystem, or a VM's disk file: qcow2, VHDX, VHD or VMDK) read-only and
writes IMAGE: the partition table and boot areas, and each partition's used
blocks, compressed. IMAGE appears only when it is complete.

Used blocks come from each filesystem's own allocation data, when it can be
trusted. A journal that needs recovery (a crash) adds the blocks its replay
needs; a filesystem its checker would repair (errors recorded, bitmaps or
counts that disagree, an NTFS marked dirty) is stored whole, and FAT copies
that disagree are united; a damaged or unknown one is stored raw. Create
prints a warning naming the reason, and info shows it
(docs/filesystems.md).

With --incremental or --differential only the chunks that changed since the
parent are stored, and a changed chunk of which at most half differs as the
4 KiB sub-blocks that differ from the parent's: scattered small writes cost
about what they changed.`,
		Example: `  platter create /dev/nvme0n1 /backup/laptop.platter        # a whole disk, live if mounted
  platter create /dev/sda2 /backup/root.platter              # one partition
  platter create --partitions 1,2 disk.img two.platter       # some partitions of a disk file
  platter create vm.qcow2 vm.platter                         # a VM's disk (qcow2, VHDX, VHD, VMDK)
  platter create --incremental /backup/laptop.platter /dev/nvme0n1 /backup/laptop-1.platter
  platter create --json --progress none /dev/sdb usb.platter # for scripts
  platter create --rescue --map sdb.map /dev/sdb /backup/failing.platter  # a failing disk (docs/rescue.md)`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCreate(cmd, *opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.partitions, "partitions", "", "image only these partition numbers, e.g. 1,2,5 (the table and boot areas are always kept)")
	f.StringVar(&opts.compress, "compress", codec.DefaultSetting.String(), "compression: zstd[:LEVEL] (1-22), fast (zstd:1) or none")
	f.BoolVar(&opts.force, "force", false, "overwrite IMAGE if it exists")
	opts.liveFlags.add(f, "image", "image")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON on stdout")
	f.StringVar(&opts.incremental, "incremental", "", "store only the chunks that differ from the image chain ending at PARENT (the newest image of the set)")
	f.StringVar(&opts.differential, "differential", "", "store only the chunks that differ from the full image FULL")
	f.StringVar(&opts.split, "split", "", splitFlag)
	f.StringVar(&opts.chunkSize, "chunk-size", "8M", "the unit of compression and random reads: a power of two from 64K to 64M; smaller chunks make random reads of a mounted or served image faster (1M: about 5x) and images a little larger (1M: about 1 %)")
	f.StringArrayVar(&opts.keyFiles, "luks-key-file", nil, "unlock LUKS volumes with this key file (as cryptsetup --key-file takes it; repeatable), so only the ciphertext of blocks their filesystems use is stored; the image never holds the key or plaintext")
	f.BoolVar(&opts.askKey, "luks-passphrase", false, "ask for a LUKS passphrase on the terminal (as --luks-key-file)")
	f.BoolVar(&opts.encrypt, "encrypt", false, "encrypt the image with a passphrase (asked twice on the terminal, or --password-file, or $"+envPassword+"); an incremental of an encrypted image is encrypted as its parent without it")
	f.StringArrayVar(&opts.recipients, "recipient", nil, "encrypt the image to this age X25519 public key (age1..., from platter keygen; repeatable; alone or with --encrypt): only its identity (or the passphrase) reads the image")
	kdfFlag(cmd, &opts.kdf)
	f.BoolVar(&opts.sectors, "sector-by-sector", false, "image every byte of the disk, free space and unpartitioned space included (forensics, deleted files): larger and slower; an incremental follows its parent")
	f.BoolVar(&opts.rescue, "rescue", false, "image a failing disk: read errors do not stop the copy; the readable bulk is read first, then the failed areas sector by sector; unreadable sectors are stored as missing and info lists the files they hit (docs/rescue.md)")
	f.IntVar(&opts.retries, "retries", 0, "with --rescue: read each bad sector this many more times at the end")
	f.StringVar(&opts.mapFile, "map", "", "with --rescue: keep the rescue's state in `FILE` (GNU ddrescue's mapfile format: ddrescuelog reads it), saved every few seconds; the same --map again resumes an interrupted rescue")
	f.DurationVar(&opts.readTimeout, "read-timeout", rescue.DefaultTimeout, "with --rescue: a read taking longer is reported as stalled and its bytes left for a later pass")
	f.StringVar(&opts.trackDir, "track-dir", cbt.DefaultDir, "with --incremental or --differential: where platter track keeps its maps")
	f.BoolVar(&opts.readAll, "read-all", false, "with --incremental or --differential: read every chunk in use, even where the tracking service's map says nothing changed")
	f.StringVar(&opts.created, "test-created", "", "for tests: the creation time to record (RFC 3339)")
	f.MarkHidden("test-created")
	return cmd
}

func runCreate(cmd *cobra.Command, opts createOptions, source, imagePath string) error {
	setting, err := codec.ParseSetting(opts.compress)
	if err != nil {
		return &usageError{err}
	}
	parts, err := parsePartitions(opts.partitions)
	if err != nil {
		return err
	}
	chunkSize, err := parseChunkSize(opts.chunkSize)
	if err != nil {
		return err
	}
	split, err := parseSplit(opts.split)
	if err != nil {
		return err
	}
	if imagePath == stdio {
		if err := toStdout(cmd, split); err != nil {
			return err
		}
	}
	if cmd.Flags().Changed("chunk-size") && (opts.incremental != "" || opts.differential != "") {
		return usagef("an incremental or differential image has its parent's chunk size: leave out --chunk-size")
	}
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	if err := opts.check(); err != nil {
		return err
	}
	if err := checkCreateArgs(source, imagePath); err != nil {
		return err
	}
	if err := checkRescueFlags(cmd, opts); err != nil {
		return err
	}
	progress := newProgress(mode, "create")
	plan, err := opts.choose(source, liveReport{progress, mode, "create"})
	if err != nil {
		return err
	}
	if opts.rescue && len(plan.Mounts) > 0 {
		return usagef("%s is mounted (%s at %s): a failing disk is imaged unmounted, so nothing writes to it; unmount it, then create --rescue", source, plan.Mounts[0].Device, plan.Mounts[0].Point)
	}
	src, err := blockdev.Open(source)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer src.Close()
	if same(source, imagePath) {
		return usagef("IMAGE %s is the source itself", imagePath)
	}
	// What the engine reads: the source, or the disk a VM disk file holds.
	var data block.Source = src
	if !src.IsDevice() {
		vm, err := openVMDisk(source, plan)
		if err != nil {
			return err
		}
		if vm != nil {
			defer vm.Close()
			if opts.rescue {
				return usagef("%s is a %s disk file: --rescue reads a failing disk or a raw copy of one", source, vm.Format())
			}
			data = vm
		}
	}
	// Chunks are read around the page cache: on a device because it is
	// faster and what is read once need not be kept (docs/performance.md);
	// from a mounted source (frozen or tracked) because the cache may hold
	// stale blocks (live.Plan.Held).
	if src.IsDevice() || plan.Held() || opts.rescue {
		if err := src.ReadDirect(); err != nil {
			return fmt.Errorf("open %s for direct reads: %w", src.Path(), err)
		}
	}
	bopts := backup.Options{
		SourceName:  source,
		Partitions:  parts,
		Compression: setting,
		ChunkSize:   chunkSize,
		Tool:        "platter " + version,
		Host:        hostname(),

		SectorBySector: opts.sectors,
	}
	bopts.DiskModel, bopts.DiskSerial = blockdev.Identity(source)
	if bopts.Keys, err = luksKeys(opts); err != nil {
		return err
	}
	bopts.Created = opts.at
	if opts.created != "" {
		if bopts.Created, err = time.Parse(time.RFC3339, opts.created); err != nil {
			return usagef("--test-created: %v", err)
		}
	}
	parentFiles, err := openParent(&bopts, opts)
	if err != nil {
		return err
	}
	if bopts.Lock, err = createLock(opts, bopts.Parent); err != nil {
		if parentFiles != nil {
			parentFiles.Close()
		}
		return err
	}
	if opts.rescue {
		r, err := startRescue(src, opts, progress)
		if err != nil {
			return err
		}
		defer r.Close()
		bopts.Rescue, bopts.Retries, bopts.Classify = r, opts.retries, classifyHits
	}
	if parentFiles != nil {
		defer parentFiles.Close()
		defer bopts.Parent.Close()
		if held := parentFiles.holding(imagePath); held != "" {
			return usagef("IMAGE %s is %s, a file of the parent's chain: the new image needs it", imagePath, held)
		}
	}
	bopts.Progress = progress
	// The image must not be on a filesystem the copy freezes; where it is
	// is asked only then, since finding out may reach an object store.
	output := ""
	if plan.Held() && localImage(imagePath) {
		output = imagePath
	}
	// Temporary files (the maps kept at the freeze) go beside a local
	// image, else where the copy freezes nothing: the system's temporary
	// directory may be on the root filesystem being imaged.
	scratch, err := plan.TempDir("")
	if err != nil {
		return err
	}
	var (
		meta  *image.Metadata
		size  int64
		place store.Place
		start time.Time
	)
	err = plan.Run(cmd.Context(), src, output, bopts, func(ctx context.Context, bopts backup.Options) error {
		start = time.Now()
		sink, p, err := imageSink(ctx, imagePath, store.CreateOptions{Force: opts.force, Split: split})
		if err != nil {
			return err
		}
		place = p
		if bopts.TempDir = tempDir(place); bopts.TempDir == "" {
			bopts.TempDir = scratch
		}
		// Asked now, with the live tracker (if any) running: writes
		// after the map's flush are the live passes' to catch.
		if bopts.Parent != nil && src.IsDevice() && !opts.rescue {
			if opts.readAll {
				bopts.ChangedBy, bopts.ChangedNote = "read", "--read-all"
			} else {
				bopts.Changed, bopts.ChangedBy, bopts.ChangedNote = trackedChanges(opts.trackDir, source, bopts.Parent)
			}
		}
		meta, size, err = backup.ToSink(ctx, data, sink, bopts)
		return tooLarge(err)
	})
	progress.Finish()
	if err != nil {
		return rescueHint(err, opts)
	}
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	sum := createSummary{Image: imagePath, ID: meta.ID, Type: imageType(meta), Parent: meta.Parent, Source: source, Encrypted: bopts.Lock != nil,
		SourceBytes: meta.SourceSize, ImageBytes: size, Seconds: time.Since(start).Seconds(), Snapshot: meta.Snapshot}
	for _, a := range meta.Areas {
		sum.UsedBytes += a.UsedBytes
	}
	how := ""
	if s := meta.Snapshot; s != nil && s.Method != "none" {
		how = fmt.Sprintf(", %s at %s (writers held %.3fs)", map[string]string{"track": "live", "freeze": "frozen"}[s.Method], s.Instant.Local().Format("15:04:05.000"), s.FrozenSeconds)
	}
	if meta.Parent != "" && place != nil {
		changed, total, err := changedChunks(imagePath)
		if err != nil {
			return err
		}
		sum.ChangedChunks, sum.Chunks = &changed, total
		how += fmt.Sprintf(", %d of %d chunks changed since the parent", changed, total)
	}
	lines := []string{fmt.Sprintf("created %s: %s used of %s, image %s, in %.1fs (%s/s)%s",
		imagePath, ui.Bytes(sum.UsedBytes), ui.Bytes(meta.SourceSize), ui.Bytes(size), sum.Seconds, ui.Bytes(int64(float64(sum.UsedBytes)/max(sum.Seconds, 1e-9))), how)}
	sum.ChangedBy, sum.ChangedNote = meta.ChangedBy, meta.ChangedNote
	switch {
	case meta.ChangedBy == "tracker":
		sum.ReadChunks = &meta.ReadChunks
		lines = append(lines, fmt.Sprintf("read %d of %d chunks: %s", meta.ReadChunks, meta.InUseChunks, meta.ChangedNote))
	case meta.ChangedBy == "read" && meta.ChangedNote != "":
		lines = append(lines, fmt.Sprintf("read all %d chunks in use: %s", meta.InUseChunks, meta.ChangedNote))
	}
	if verbose {
		lines = append(lines, areaLines(meta)...)
	}
	if meta.Rescue != nil {
		sum.Rescue = meta.Rescue
		lines = append(lines, rescueLines(meta)...)
		if opts.mapFile != "" {
			lines = append(lines, "map: "+opts.mapFile+" (GNU ddrescue's format; the same command with --retries N reads the bad sectors again)")
		}
	}
	return report(cmd, opts.json, sum, lines...)
}

// vmDisk is a VM disk file (qcow2, VHDX, VHD, VMDK) as the engine reads
// it: the disk its guest sees.
type vmDisk struct{ vdisk.Disk }

// SectorSize is not known up front, as for a raw disk file: the engine
// finds it from the partition table.
func (vmDisk) SectorSize() int64 { return 0 }

// openVMDisk opens SOURCE, a regular file, as the disk a VM disk file
// holds when it is one (nil when it is a raw disk or filesystem), so
// that the guest's disk is imaged by its used blocks, not the file's
// bytes.
func openVMDisk(source string, plan *live.Plan) (*vmDisk, error) {
	d, err := vdisk.Open(source)
	switch {
	case errors.Is(err, vdisk.ErrNotVirtual):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("open source: %w", err)
	case len(plan.Mounts) > 0:
		d.Close()
		return nil, fmt.Errorf("%s is a %s disk file in use: %s is mounted at %s; stop what uses it first", source, d.Format(), plan.Mounts[0].Device, plan.Mounts[0].Point)
	}
	return &vmDisk{d}, nil
}

// createSummary is create's result for --json.
type createSummary struct {
	Image       string  `json:"image"`
	ID          string  `json:"id"`
	Type        string  `json:"type"`
	Parent      string  `json:"parent,omitempty"`
	Source      string  `json:"source"`
	SourceBytes int64   `json:"source_bytes"`
	UsedBytes   int64   `json:"used_bytes"`
	ImageBytes  int64   `json:"image_bytes"`
	Seconds     float64 `json:"seconds"`
	// ChangedChunks (of Chunks in use) are the chunks an incremental or
	// differential stores itself rather than takes from its parent.
	ChangedChunks *int `json:"changed_chunks,omitempty"`
	// ChangedBy says how the changed chunks were found ("tracker" or
	// "read"), ChangedNote from what or why; ReadChunks were read.
	ChangedBy   string          `json:"changed_by,omitempty"`
	ChangedNote string          `json:"changed_note,omitempty"`
	ReadChunks  *int            `json:"read_chunks,omitempty"`
	Chunks      int             `json:"chunks,omitempty"`
	Snapshot    *image.Snapshot `json:"snapshot,omitempty"`
	Encrypted   bool            `json:"encrypted,omitempty"`
	Rescue      *image.Rescue   `json:"rescue,omitempty"`
}

// changedChunks counts the chunks of the image at path that are not its
// parent's, and its chunks.
func changedChunks(path string) (changed, total int, err error) {
	ctx := context.Background()
	p, name, err := imageAt(ctx, path)
	if err != nil {
		return 0, 0, err
	}
	f, r, err := openOne(ctx, p, name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	defer r.Close()
	for _, e := range r.Entries() {
		if !e.InParent() {
			changed++
		}
	}
	return changed, len(r.Entries()), nil
}

// areaLines describes each area of an image for --verbose.
func areaLines(m *image.Metadata) []string {
	var out []string
	for _, a := range m.Areas {
		what := a.Label()
		if a.Kind == image.KindPartition {
			what += " (" + a.Filesystem + ")"
		}
		out = append(out, fmt.Sprintf("  %s: %s used, %s stored%s", what, ui.Bytes(a.UsedBytes), ui.Bytes(a.StoredBytes), map[bool]string{true: "; " + a.Note, false: ""}[a.Note != ""]))
	}
	return out
}

// openParent opens the image an incremental or differential is made
// against, with its whole chain (every parent found and checked now,
// before anything is read or written).
func openParent(bopts *backup.Options, opts createOptions) (chainFiles, error) {
	path, typ := opts.incremental, "incremental"
	switch {
	case opts.incremental != "" && opts.differential != "":
		return nil, usagef("--incremental and --differential exclude each other")
	case opts.differential != "":
		path, typ = opts.differential, "differential"
	case path == "":
		return nil, nil
	}
	if kind := foreignKind(path); kind != "" {
		// Its Platter image would be a private one, gone after this run.
		return nil, usagef("%s is %s: the parent of %s must be a Platter image (platter import it, then name the imported image)", path, foreignTitle(kind), article(typ))
	}
	files, r, err := openImage(path)
	if err != nil {
		return nil, err
	}
	if typ == "differential" && r.Metadata().Parent != "" {
		files.Close()
		return nil, usagef("%s is %s image: a differential is made against a full image (the one its set starts with)", path, article(r.Metadata().Type))
	}
	if opts.sectors && !r.Metadata().SectorBySector {
		files.Close()
		return nil, usagef("%s was not made sector by sector: an incremental or differential follows its parent (leave out --sector-by-sector, or make a new full image)", path)
	}
	bopts.Parent, bopts.Type = r, typ
	return files, nil
}

// parseChunkSize reads --chunk-size: a size (parseBytes), a power of two
// from 64 KiB to 64 MiB.
func parseChunkSize(s string) (int64, error) {
	size, err := parseBytes("--chunk-size", s)
	if err != nil || size < 64<<10 || size > 64<<20 || size&(size-1) != 0 {
		return 0, usagef("--chunk-size takes a power of two from 64K to 64M (like 1M or 8M); %q is not one", s)
	}
	return size, nil
}

func parsePartitions(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usagef("--partitions takes partition numbers like 1,2,5; %q is not one", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// liveReport prints what live imaging does to the source's filesystems:
// notes between the progress lines (JSON objects with --progress json),
// and warnings.
type liveReport struct {
	progress *ui.Progress
	mode     ui.Mode
	op       string // the command, in JSON notes
}

func (r liveReport) Warn(msg string) { warn("%s", msg) }

func (r liveReport) Tracking(points []string, tracker string) {
	if r.mode == ui.Bar {
		verb := map[string]string{"create": "imaging", "clone": "cloning"}[r.op]
		r.progress.Note(fmt.Sprintf("%s %s live: copying while in use, tracking writes (%s), then freezing briefly", verb, strings.Join(points, ", "), tracker))
	}
}

func (r liveReport) Frozen(points []string, at time.Time) { r.snapshot("frozen", points, at, 0) }

func (r liveReport) Thawed(points []string, at time.Time, held time.Duration) {
	r.snapshot("thawed", points, at, held)
}

// snapshot tells the user (or, with --progress json, a script) that the
// filesystems were frozen or thawed, and when.
func (r liveReport) snapshot(what string, points []string, at time.Time, held time.Duration) {
	switch {
	case r.mode == ui.JSON:
		b, _ := json.Marshal(map[string]any{"op": r.op, "snapshot": what, "filesystems": points, "at": at.UTC().Format(time.RFC3339Nano), "frozen_seconds": held.Seconds()})
		r.progress.Note(string(b))
	case what == "frozen":
		r.progress.Note(fmt.Sprintf("froze %s", strings.Join(points, ", ")))
	default:
		r.progress.Note(fmt.Sprintf("thawed %s after %.3fs", strings.Join(points, ", "), held.Seconds()))
	}
}

// Pass reports one pass of live imaging.
func (r liveReport) Pass(p image.Pass) {
	if r.mode == ui.JSON {
		b, _ := json.Marshal(map[string]any{"op": r.op, "pass": p.Kind, "dirty_bytes": p.DirtyBytes, "chunks": p.Chunks, "seconds": p.Seconds})
		r.progress.Note(string(b))
		return
	}
	if p.Kind == "full" {
		r.progress.Note(fmt.Sprintf("first copy: %d chunks in %.2fs", p.Chunks, p.Seconds))
		return
	}
	r.progress.Note(fmt.Sprintf("%s pass: %s written meanwhile, %d chunks copied again in %.2fs", p.Kind, ui.Bytes(p.DirtyBytes), p.Chunks, p.Seconds))
}

// same reports whether two paths name the same file.
func same(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// hostname is the machine's name, or "" if it has none.
func hostname() string {
	h, _ := os.Hostname()
	return h
}

// checkCreateArgs refuses the swapped arguments that would destroy what
// they name: IMAGE must be a regular file or not exist (a device node
// renamed over is gone), and SOURCE must not be a Platter image.
func checkCreateArgs(source, imagePath string) error {
	if _, err := os.Stat(source); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("SOURCE %s: no such file or device", source)
	}
	if st, err := os.Stat(imagePath); err == nil && !st.Mode().IsRegular() {
		what := "not a regular file"
		switch {
		case st.Mode()&os.ModeDevice != 0:
			what = "a device"
		case st.IsDir():
			return usagef("IMAGE %s is a directory: name the image file to write, like %s", imagePath, filepath.Join(imagePath, "disk.platter"))
		}
		return usagef("IMAGE %s is %s, not an image file: did you swap SOURCE and IMAGE? (platter create SOURCE IMAGE)", imagePath, what)
	}
	if _, err := image.ReadID(source); err == nil {
		return usagef("SOURCE %s is a Platter image, not a disk: did you swap SOURCE and IMAGE? (platter create SOURCE IMAGE; to write an image back to a disk: platter restore IMAGE TARGET)", source)
	}
	return nil
}

// luksKeys reads --luks-key-file files whole (as cryptsetup does) and,
// with --luks-passphrase, a passphrase typed on the terminal.
func luksKeys(opts createOptions) ([][]byte, error) {
	var keys [][]byte
	for _, f := range opts.keyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--luks-key-file: %w", err)
		}
		keys = append(keys, b)
	}
	if opts.askKey {
		if !onTerminal() {
			return nil, usagef("--luks-passphrase asks on a terminal, and there is none: use --luks-key-file")
		}
		b, err := ask("LUKS passphrase: ")
		if err != nil {
			return nil, err
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// createLock says how the new image is encrypted: with a passphrase
// (--encrypt), to recipients (--recipient), both, or not at all. An
// incremental or differential of an encrypted image is encrypted as its
// parent is, whatever the flags (never in plaintext: most of its disk is
// in the encrypted parent, the changes are no less secret); one of a
// plain image is not encrypted, since its parent would not be.
func createLock(opts createOptions, parent *image.Reader) (*seal.Lock, error) {
	for _, r := range opts.recipients {
		if err := seal.ParseRecipient(r); err != nil {
			return nil, usagef("--recipient %q is not an age X25519 public key (age1..., from platter keygen): %v", r, err)
		}
	}
	asked := opts.encrypt || len(opts.recipients) > 0
	switch {
	case parent != nil && parent.Encrypted():
		if len(opts.recipients) > 0 {
			return nil, usagef("an incremental or differential is encrypted as its parent %s (same passphrase, same recipients): leave out --recipient (platter passwd changes the recipients of every image of the set)", parent.Name())
		}
		return lockOf(parent)
	case parent != nil && asked:
		return nil, usagef("the parent %s is not encrypted: an encrypted incremental of it would leave the rest of the disk in plaintext; make a new full image with --encrypt", parent.Name())
	case !asked:
		if secretFlags.passwordFile != "" && parent == nil {
			return nil, usagef("--password-file gives the passphrase of an encrypted image: add --encrypt to encrypt this one with it")
		}
		return nil, nil
	}
	lock := &seal.Lock{Recipients: opts.recipients}
	if opts.encrypt {
		pk, err := newPassKey(secretFlags.passwordFile, envPassword, "--encrypt", opts.kdf)
		if err != nil {
			return nil, err
		}
		lock.Pass = pk
	}
	return lock, nil
}
