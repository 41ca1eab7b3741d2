package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/platter-dev/platter/internal/nbd"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

type serveOptions struct {
	nbd     string
	overlay string
	cache   int
}

func newServeCommand() *cobra.Command {
	var opts serveOptions
	cmd := &cobra.Command{
		Use:   "serve --nbd ADDRESS [--overlay FILE] IMAGE",
		Short: "Serve an image's disk over NBD, without restoring it",
		Long: `Serve exports the disk an image holds over the Network Block Device protocol:
the whole disk as export "disk" (also the default export) and each partition
as "pN". Read-only unless --overlay FILE is given: writes then go to FILE
(sparse, copy-on-write, kept for the next run) and the image is never
written. ADDRESS is host:port (or :port), or a unix socket path.
Runs until interrupted.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd, opts, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.nbd, "nbd", "", "address to listen on: host:port, :port or a unix socket path")
	f.StringVar(&opts.overlay, "overlay", "", "take writes into this copy-on-write file (the image is never written)")
	f.IntVar(&opts.cache, "cache", 32, "decoded chunks to keep in memory (8 MiB each by default)")
	return cmd
}

func runServe(cmd *cobra.Command, opts serveOptions, path string) error {
	if opts.nbd == "" {
		return usagef("serve needs --nbd ADDRESS (host:port, :port or a unix socket path)")
	}
	files, r, err := openImage(path)
	if err != nil {
		return err
	}
	defer files.Close()
	defer r.Close()
	disk := view.New(r, opts.cache)
	defer disk.Close() // before the reader: readahead may be decoding
	var dev view.Device = disk
	var ov *view.Overlay
	if opts.overlay != "" {
		if held := files.holding(opts.overlay); held != "" {
			return usagef("--overlay %s is %s, a file of the image's chain: the image is never written", opts.overlay, held)
		}
		if ov, err = view.OpenOverlay(opts.overlay, disk); err != nil {
			return err
		}
		defer ov.Close()
		dev = ov
	}
	exports := []nbd.Export{{Name: "disk", Description: "the whole disk of " + path, Dev: dev}}
	for _, p := range view.Partitions(r, dev) {
		var pd nbd.Device = &p.Section
		if ov != nil {
			pd = &view.OverlaySection{Section: p.Section, O: ov}
		}
		exports = append(exports, nbd.Export{Name: fmt.Sprintf("p%d", p.Index), Description: fmt.Sprintf("partition %d (%s)", p.Index, p.Filesystem), Dev: pd})
	}
	network := "tcp"
	if strings.HasPrefix(opts.nbd, "/") {
		network = "unix"
	}
	ln, err := net.Listen(network, opts.nbd)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.nbd, err)
	}
	if network == "unix" {
		defer os.Remove(opts.nbd)
	}
	var names []string
	for _, e := range exports {
		names = append(names, e.Name)
	}
	mode := "read-only"
	if ov != nil {
		mode = "writes to " + opts.overlay
	}
	fmt.Fprintf(cmd.OutOrStdout(), "serving %s on %s (%s); exports: %s\n", path, ln.Addr(), mode, strings.Join(names, ", "))
	srv := &nbd.Server{Exports: exports, Log: func(format string, args ...any) { warn(format, args...) }}
	err = srv.Serve(cmd.Context(), ln)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
