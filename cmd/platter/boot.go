package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/platter-dev/platter/internal/backup"
	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/codec"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/nbd"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/store"
	"github.com/platter-dev/platter/internal/ui"
	"github.com/platter-dev/platter/internal/view"
	"github.com/platter-dev/platter/internal/vm"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type bootOptions struct {
	save     string
	memory   string
	cpus     int
	uefi     bool
	bios     bool
	display  string
	sshPort  int
	accel    string
	bus      string
	progress string
}

func newBootCommand() *cobra.Command {
	var opts bootOptions
	cmd := &cobra.Command{
		Use:   "boot [flags] IMAGE",
		Short: "Boot the disk an image holds in a virtual machine (QEMU), without writing the image",
		Long: `Boot starts the disk an image holds in a QEMU virtual machine, to see that a
backup really starts, or to repair a machine before restoring it. The image
is served to the VM read-only; what the VM writes goes to a temporary
copy-on-write overlay and is thrown away when it ends, unless --save NEW
turns it into a new incremental image of IMAGE's chain.

The firmware follows the disk: UEFI (OVMF) when its GPT holds an EFI
system partition, BIOS otherwise (--uefi or --bios to choose). KVM is used
when /dev/kvm works, else QEMU emulates the CPU (TCG, many times slower),
which is said on standard error. The guest's serial console is on the
terminal (its first serial port: a Linux guest needs console=ttyS0 on its
command line to use it; a Windows guest needs --display vnc); Ctrl-] ends
the VM at once, as pulling its plug would. Boot ends when the guest powers
off. The VM has no network unless --ssh-port gives it one that reaches
nothing but the forwarded ssh port.

The overlay lives in $TMPDIR (else /var/tmp), in a private directory
removed when boot ends; it grows by what the guest writes, up to the disk's
size. The disk is a virtio disk, or a SATA disk when it holds an NTFS
(Windows as installed has no virtio driver); --disk-bus chooses.`,
		Example: `  platter boot laptop.platter                         # serial console here; Ctrl-] ends it
  platter boot --display vnc --memory 4G laptop.platter
  platter boot --ssh-port 2222 server.platter         # then: ssh -p 2222 root@127.0.0.1
  platter boot --save laptop-fixed.platter laptop.platter   # keep what the VM changed`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBoot(cmd, opts, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.save, "save", "", "when the VM ends, write what it changed as NEW, an incremental image of IMAGE")
	f.StringVar(&opts.memory, "memory", "2G", "the VM's memory (M or G)")
	f.IntVar(&opts.cpus, "cpus", 2, "the VM's processors")
	f.BoolVar(&opts.uefi, "uefi", false, "boot with UEFI firmware (OVMF), whatever the disk holds")
	f.BoolVar(&opts.bios, "bios", false, "boot with a PC BIOS (SeaBIOS), whatever the disk holds")
	f.StringVar(&opts.display, "display", "none", "the VM's screen: none, or vnc (on 127.0.0.1, the port is printed)")
	f.IntVar(&opts.sshPort, "ssh-port", 0, "forward this port of 127.0.0.1 to the guest's ssh port (22); the guest reaches nothing else")
	f.StringVar(&opts.accel, "accel", "auto", "auto (KVM when /dev/kvm works, else TCG), kvm or tcg")
	f.StringVar(&opts.bus, "disk-bus", "auto", "how the guest sees its disk: auto (SATA when the disk holds an NTFS, else virtio), virtio or sata")
	f.StringVar(&opts.progress, "progress", "auto", "progress display of --save: auto, json or none")
	return cmd
}

// bootTempRoot is where the overlay's directory goes: $TMPDIR, else
// /var/tmp, which is on disk where /tmp may be memory (a guest may
// write gigabytes).
func bootTempRoot() string {
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		return "/var/tmp"
	}
	return os.TempDir()
}

func runBoot(cmd *cobra.Command, opts bootOptions, path string) error {
	memory, err := parseBytes("--memory", opts.memory)
	if err != nil {
		return err
	}
	memory = memory >> 20 << 20
	switch {
	case memory < 64<<20:
		return usagef("--memory must be at least 64M")
	case opts.cpus < 1 || opts.cpus > 255:
		return usagef("--cpus takes 1 to 255, not %d", opts.cpus)
	case opts.uefi && opts.bios:
		return usagef("--uefi and --bios exclude each other")
	case opts.display != "none" && opts.display != "vnc":
		return usagef("--display takes none or vnc, not %q", opts.display)
	case opts.sshPort < 0 || opts.sshPort > 65535:
		return usagef("--ssh-port takes a port from 1 to 65535, not %d", opts.sshPort)
	case opts.accel != "auto" && opts.accel != "kvm" && opts.accel != "tcg":
		return usagef("--accel takes auto, kvm or tcg, not %q", opts.accel)
	case opts.bus != "auto" && opts.bus != string(vm.Virtio) && opts.bus != string(vm.SATA):
		return usagef("--disk-bus takes auto, virtio or sata, not %q", opts.bus)
	case opts.save == stdio:
		return usagef("--save - : standard output is the VM's console; name a file")
	}
	mode, err := displayMode(opts.progress)
	if err != nil {
		return err
	}
	if opts.save != "" {
		if err := checkSave(opts.save); err != nil {
			return err
		}
	}
	qemu, err := vm.QEMU()
	if err != nil {
		return err
	}
	files, r, err := openImage(path)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	m := r.Metadata()
	if m.Table == "none" {
		return usagef("%s is an image of one partition (or a bare filesystem), not of a whole disk: there is no partition table or boot code to boot; restore it into a partition of a disk instead", path)
	}

	cfg := vm.Config{Memory: memory, CPUs: opts.cpus, Export: "disk", SSHPort: opts.sshPort}
	firmware, why := vm.FirmwareFor(m)
	switch {
	case opts.uefi:
		firmware, why = vm.UEFI, "--uefi"
	case opts.bios:
		firmware, why = vm.BIOS, "--bios"
	}
	cfg.Firmware = firmware
	bus, busWhy := vm.BusFor(m)
	if opts.bus != "auto" {
		bus, busWhy = vm.Bus(opts.bus), "--disk-bus "+opts.bus
	}
	cfg.Bus = bus
	var varsTemplate string
	if firmware == vm.UEFI {
		if cfg.OVMFCode, varsTemplate, err = vm.OVMF(); err != nil {
			return err
		}
	}
	accelNote := ""
	switch opts.accel {
	case "auto":
		if err := vm.KVM(); err != nil {
			cfg.Accel, accelNote = "tcg", fmt.Sprintf("without KVM (%v): QEMU emulates the CPU (TCG), many times slower", err)
		} else {
			cfg.Accel, accelNote = "kvm", "with KVM"
		}
	case "kvm":
		if err := vm.KVM(); err != nil {
			return fmt.Errorf("--accel kvm: %w", err)
		}
		cfg.Accel, accelNote = "kvm", "with KVM"
	default:
		cfg.Accel, accelNote = "tcg", "without KVM (--accel tcg): QEMU emulates the CPU (TCG), many times slower"
	}

	// Everything of this boot in one private directory (0700), removed
	// on every way out: the overlay, the NBD socket, the UEFI variables.
	dir, err := os.MkdirTemp(bootTempRoot(), "platter-boot-")
	if err != nil {
		return fmt.Errorf("make the overlay's directory: %w", err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "disk.sock")
	ln, err := nbd.Listen(sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	defer ln.Close()
	cfg.NBDSocket = sock
	if varsTemplate != "" {
		cfg.OVMFVars = filepath.Join(dir, "OVMF_VARS.fd")
		if err := copyFile(varsTemplate, cfg.OVMFVars); err != nil {
			return fmt.Errorf("copy the UEFI variables %s: %w", varsTemplate, err)
		}
	}
	disk := view.New(r, 32)
	defer disk.Close() // before the reader: readahead may be decoding
	ov, err := view.OpenOverlay(filepath.Join(dir, "overlay"), disk)
	if err != nil {
		return err
	}
	defer ov.Close()
	vnc := ""
	if opts.display == "vnc" {
		if cfg.VNC, vnc, err = freeVNC(); err != nil {
			return err
		}
	}
	args, err := cfg.Args()
	if err != nil {
		return err
	}

	srvCtx, stopServer := context.WithCancel(context.Background())
	srv := &nbd.Server{Exports: []nbd.Export{{Name: "disk", Description: "the disk of " + path, Dev: ov}},
		Log: func(format string, args ...any) { warn(format, args...) }}
	var served sync.WaitGroup
	served.Go(func() {
		if err := srv.Serve(srvCtx, ln); err != nil && !errors.Is(err, net.ErrClosed) {
			warn("serving the disk to the VM: %v", err)
		}
	})
	defer served.Wait()
	defer stopServer()

	fw := map[vm.Firmware]string{vm.BIOS: "BIOS", vm.UEFI: "UEFI"}[firmware]
	after := "thrown away when it ends"
	if opts.save != "" {
		after = "saved as " + opts.save + " when it ends"
	}
	note := func(format string, args ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, "platter: "+format+"\n", args...)
		}
	}
	if quiet && opts.accel == "auto" && cfg.Accel == "tcg" {
		warn("booting %s", accelNote) // a warning: what runs slowly says why
	}
	note("booting %s %s, %s firmware (%s), a %s disk (%s), %s, %s of memory; the image is read only, what the VM writes is %s", path, accelNote, fw, why, bus, busWhy, plural(cfg.CPUs, "CPU"), ui.Bytes(memory), after)
	if vnc != "" {
		note("the screen is on VNC at %s (vncviewer %s)", vnc, strings.Replace(vnc, ":", "::", 1))
	}
	if cfg.SSHPort != 0 {
		note("ssh to the guest: ssh -p %d USER@127.0.0.1", cfg.SSHPort)
	}

	// On a terminal: raw, so that every key reaches the guest, and
	// restored on every way out (the defer: errors, signals) and before
	// anything more is printed.
	con := vm.Console{In: os.Stdin, Out: os.Stdout}
	stdin := int(os.Stdin.Fd())
	restoreTerm := func() {}
	if term.IsTerminal(stdin) {
		note("the serial console follows; Ctrl-] ends the VM")
		state, err := term.MakeRaw(stdin)
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		restoreTerm = func() {
			fmt.Fprint(os.Stdout, "\r\n") // the guest's last line may not have ended
			term.Restore(stdin, state)
			restoreTerm = func() {}
		}
		defer func() { restoreTerm() }()
		con.Escape = vm.CtrlRightBracket
	}
	end, err := vm.Run(cmd.Context(), qemu, args, con, os.Stderr)
	restoreTerm()
	stopServer()
	if err != nil {
		return err
	}
	switch end {
	case vm.Escaped:
		note("stopped the VM (Ctrl-]): the guest did not shut down")
	default:
		note("the guest powered off")
	}
	if opts.save == "" {
		return nil
	}
	served.Wait()
	if end == vm.Escaped {
		warn("the VM was stopped, not shut down: %s holds the disk as after a power cut", opts.save)
	}
	return saveBoot(cmd, r, ov, path, opts.save, mode)
}

// checkSave refuses a --save target that exists (an image is never
// overwritten by a boot) or whose directory does not, before the VM runs.
func checkSave(save string) error {
	if strings.HasPrefix(save, "s3://") {
		return nil // the store refuses an existing object when it writes
	}
	if _, err := os.Lstat(save); err == nil {
		return usagef("--save %s exists: name a new file (boot never overwrites an image)", save)
	}
	if st, err := os.Stat(filepath.Dir(save)); err != nil || !st.IsDir() {
		return usagef("--save %s: no directory %s", save, filepath.Dir(save))
	}
	return nil
}

// overlaySource is the overlaid disk as the imaging engine reads it.
type overlaySource struct {
	*view.Overlay
	sector int64
}

func (s overlaySource) SectorSize() int64 { return s.sector }

// saveBoot writes what the VM changed as an incremental image of r's
// chain at save: the overlaid disk imaged against r, so only the chunks
// that differ are stored; the chunks the VM did not write (and whose
// allocation did not change) are taken from the parent without reading.
func saveBoot(cmd *cobra.Command, r *image.Reader, ov *view.Overlay, path, save string, mode ui.Mode) error {
	ctx := cmd.Context()
	if err := ov.Sync(); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	m := r.Metadata()
	setting, err := codec.ParseSetting(m.Compression)
	if err != nil {
		setting = codec.DefaultSetting
	}
	bopts := backup.Options{
		SourceName:  "platter boot " + path,
		Compression: setting,
		Tool:        "platter " + version,
		Host:        hostname(),
		Parent:      r,
		Type:        "incremental",
		// What the VM wrote: nothing else can differ from the parent
		// (but for chunks whose blocks were freed, which the engine
		// sees in the allocation maps). Not nil: nil reads everything.
		Changed:     append([]block.Extent{}, ov.Written(0, ov.Size())...),
		ChangedBy:   "overlay",
		ChangedNote: "the VM's writes to its overlay",
	}
	if r.Encrypted() {
		if bopts.Lock, err = lockOf(r); err != nil {
			return err
		}
	}
	scratch, err := os.MkdirTemp(bootTempRoot(), "platter-save-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	progress := newProgress(mode, "save")
	bopts.Progress = progress
	start := time.Now()
	sink, place, err := imageSink(ctx, save, store.CreateOptions{})
	if err != nil {
		return err
	}
	if bopts.TempDir = tempDir(place); bopts.TempDir == "" {
		bopts.TempDir = scratch
	}
	meta, size, err := backup.ToSink(ctx, overlaySource{ov, m.SectorSize}, sink, bopts)
	progress.Finish()
	if err != nil {
		var le *backup.LayoutError
		if errors.As(err, &le) {
			return fmt.Errorf("--save: the VM changed the disk's layout, so its writes cannot be an incremental of %s: %w", path, err)
		}
		return fmt.Errorf("--save %s: %w", save, tooLarge(err))
	}
	changed, total, err := changedChunks(save)
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "saved %s: an incremental of %s (%s), %d of %d chunks changed, image %s, in %.1fs\n",
			save, path, r.ID(), changed, total, ui.Bytes(size), time.Since(start).Seconds())
	}
	for _, w := range meta.Warnings {
		warn("%s", w)
	}
	return nil
}

// freeVNC finds a free VNC display on 127.0.0.1: its number for QEMU and
// its address for a viewer.
func freeVNC() (display, addr string, err error) {
	for d := 0; d < 100; d++ {
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(5900+d))
		l, err := net.Listen("tcp", a)
		if err != nil {
			continue
		}
		l.Close()
		return strconv.Itoa(d), a, nil
	}
	return "", "", errors.New("--display vnc: ports 5900 to 5999 of 127.0.0.1 are all taken")
}

// copyFile copies src to a new file dst (0600).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := outfile.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
