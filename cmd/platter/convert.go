package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/vdisk"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type convertOptions struct {
	format   string
	force    bool
	progress string
	json     bool
}

func newConvertCommand() *cobra.Command {
	var opts convertOptions
	cmd := &cobra.Command{
		Use:   "convert [flags] IMAGE[:N] OUTPUT",
		Short: "Write an image's disk (or partition N) as a virtual machine's disk file",
		Long: `Convert writes the disk an image holds, or with IMAGE:N partition N alone, as a
virtual disk file for a virtual machine: qcow2 (QEMU/KVM, Proxmox), vhdx
(Hyper-V), vhd (dynamic) or vhd-fixed (Azure), vmdk (VMware, VirtualBox) or
vmdk-stream (streamOptimized: vSphere and AWS import), or raw. The format comes
from OUTPUT's extension unless --format names it. Only the blocks the image
stores as used are allocated in OUTPUT: free space and unimaged space stay
unallocated. OUTPUT - writes to standard output, for the formats laid out
front to back (qcow2, vmdk-stream, vhd-fixed, raw); qcow2 to standard output
reads the image twice, the first time to find the clusters that are all zero
before its tables go out. docs/vm.md shows the import command of each
hypervisor and cloud.`,
		Example: `  platter convert laptop.platter laptop.vhdx             # Hyper-V
  platter convert laptop.platter laptop.qcow2            # QEMU/KVM, Proxmox
  platter convert --format vmdk-stream laptop.platter laptop.vmdk   # AWS, vSphere
  platter convert laptop.platter:2 root.raw              # partition 2 alone
  platter convert --format qcow2 laptop.platter - | ssh host 'cat > vm.qcow2'`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConvert(cmd, opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.format, "format", "", "the virtual disk format: qcow2, vhdx, vhd, vhd-fixed, vmdk, vmdk-stream or raw (default: from OUTPUT's extension)")
	f.BoolVar(&opts.force, "force", false, "overwrite OUTPUT if it exists (a file: never a device, which platter restore writes)")
	f.StringVar(&opts.progress, "progress", "auto", "progress display: auto, json or none")
	f.BoolVar(&opts.json, "json", false, "print the result as JSON on stdout")
	addDiskFlag(cmd)
	return cmd
}

// convertSummary is convert's result for --json.
type convertSummary struct {
	Image     string  `json:"image"`
	Partition int     `json:"partition,omitempty"`
	Output    string  `json:"output"`
	Format    string  `json:"format"`
	DiskBytes int64   `json:"disk_bytes"` // the virtual disk's size
	DataBytes int64   `json:"data_bytes"` // what the image holds of it
	FileBytes int64   `json:"file_bytes,omitempty"`
	Seconds   float64 `json:"seconds"`
}

func runConvert(cmd *cobra.Command, opts convertOptions, spec, output string) error {
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	var format vdisk.Format
	if opts.format != "" {
		format, err = vdisk.ParseFormat(opts.format)
	} else if output == stdio {
		err = errors.New("OUTPUT - needs --format")
	} else {
		format, err = vdisk.FormatOf(output)
	}
	if err != nil {
		return usagef("%v", err)
	}
	if output == stdio {
		if !vdisk.Streams(format) {
			return usagef("%s cannot be written to standard output: its tables come before its data; write it to a file", format)
		}
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return usagef("refusing to write a disk to a terminal: redirect standard output or give a file")
		}
		if opts.json {
			return usagef("--json prints on standard output, where the disk goes: not both")
		}
	}
	imgPath, part := splitSpec(spec)
	files, r, err := openImage(imgPath)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	if output != stdio {
		if held := files.holding(output); held != "" {
			return usagef("OUTPUT %s is %s, a file of the image's chain", output, held)
		}
	}
	// The writers read the disk front to back, a piece per core at a
	// time, and the view decodes two chunks ahead: a few chunks a core
	// are all it needs, and keep memory near restore's.
	disk := view.New(r, 2*runtime.GOMAXPROCS(0)+4)
	defer disk.Close()
	src, err := convertSource(r, disk, part)
	if err != nil {
		return err
	}

	var out vdisk.Output = os.Stdout
	var partial *outfile.Partial
	if output != stdio {
		if err := outfile.Replaceable(output); err != nil {
			return usagef("OUTPUT %v: name the virtual disk file to write (to write the disk onto a device: platter restore IMAGE DEVICE)", err)
		}
		if !opts.force {
			if _, err := os.Lstat(output); err == nil {
				return usagef("%s exists (use --force to overwrite)", output)
			}
		}
		if partial, err = outfile.NewPartial(output); err != nil {
			return err
		}
		defer partial.Abort()
		out = partial.File()
	}
	var total int64
	for _, e := range src.data {
		total += e.Len
	}
	p := newProgress(mode, "convert")
	if output == stdio && mode == ui.Bar {
		p = newProgress(ui.Off, "convert")
	}
	p.Start(total)
	start := time.Now()
	err = vdisk.Write(cmd.Context(), out, format, src, p.Add)
	p.Finish()
	if err == nil && partial != nil {
		err = partial.Commit(opts.force)
	}
	if err != nil && partial != nil {
		err = partial.Named(err)
	}
	if err != nil {
		return fmt.Errorf("convert %s to %s: %w", spec, output, files.inVolume(err))
	}
	sum := convertSummary{Image: imgPath, Partition: part, Output: output, Format: string(format), DiskBytes: src.Size(), DataBytes: total, Seconds: time.Since(start).Seconds()}
	if output != stdio {
		if st, err := os.Stat(output); err == nil {
			sum.FileBytes = st.Size()
		}
	}
	what := "disk"
	if part != 0 {
		what = fmt.Sprintf("partition %d", part)
	}
	line := fmt.Sprintf("converted %s of %s to %s (%s, %s disk, %s of data) in %.1fs", what, imgPath, output, format, ui.Bytes(src.Size()), ui.Bytes(total), sum.Seconds)
	if output == stdio {
		// The disk went to standard output: the summary goes to stderr.
		if !quiet {
			fmt.Fprintln(cmd.ErrOrStderr(), line)
		}
		return nil
	}
	return report(cmd, opts.json, sum, line)
}

// diskSource is an image's disk, or one partition of it, as a virtual
// disk's source: its bytes through the view, and the extents the image
// stores used data for.
type diskSource struct {
	r          io.ReaderAt
	size       int64
	sectorSize int64
	data       []block.Extent
}

func (s *diskSource) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }
func (s *diskSource) Size() int64                             { return s.size }
func (s *diskSource) Data() []block.Extent                    { return s.data }

// SectorSize is the source disk's logical sector size: VHDX records it,
// VHD refuses anything but 512.
func (s *diskSource) SectorSize() int64 { return s.sectorSize }

// convertSource is the disk of r (part 0) or partition part: its data
// is every stored, non-zero chunk's used runs.
func convertSource(r *image.Reader, disk *view.Disk, part int) (*diskSource, error) {
	m := r.Metadata()
	src := &diskSource{r: disk, size: m.SourceSize, sectorSize: m.SectorSize}
	base := int64(0)
	if part != 0 {
		i := -1
		for k, a := range m.Areas {
			if a.Kind == image.KindPartition && a.Index == part {
				i = k
			}
		}
		if i < 0 {
			return nil, usagef("the image holds no partition %d", part)
		}
		a := m.Areas[i]
		src.r = io.NewSectionReader(disk, a.Start, a.Size)
		src.size, base = a.Size, a.Start
	}
	for i, a := range m.Areas {
		if part != 0 && (a.Kind != image.KindPartition || a.Index != part) {
			continue
		}
		used := r.Map(i)
		for k := int64(0); k*m.ChunkSize < a.Size; k++ {
			e, ok := r.Lookup(uint32(i), uint64(k))
			if !ok || e.Zero() {
				continue
			}
			rel, n := k*m.ChunkSize, min(m.ChunkSize, a.Size-k*m.ChunkSize)
			add := func(e block.Extent) {
				src.data = append(src.data, block.Extent{Off: a.Start + e.Off - base, Len: e.Len})
			}
			if used == nil {
				add(block.Extent{Off: rel, Len: n})
			} else {
				used.Runs(rel, n, add)
			}
		}
	}
	src.data = block.MergeExtents(src.data)
	return src, nil
}
