package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/platter-dev/platter/internal/nbd"
	"github.com/platter-dev/platter/internal/view"
	"github.com/spf13/cobra"
)

type serveOptions struct {
	nbd            string
	overlay        string
	cache          int
	maxConnections int
	maxInFlight    string
	replyTimeout   time.Duration
	tlsCert        string
	tlsKey         string
}

func newServeCommand() *cobra.Command {
	var opts serveOptions
	cmd := &cobra.Command{
		Use:   "serve --nbd ADDRESS [--overlay FILE] [--tls-cert FILE --tls-key FILE] IMAGE[:N]",
		Short: "Serve an image's disk over NBD, without restoring it",
		Long: `Serve exports the disk an image holds over the Network Block Device protocol:
the whole disk as export "disk" (also the default export) and each partition
as "pN"; IMAGE:N serves partition N alone, as the default export "pN". Read-only unless --overlay FILE is given: writes then go to FILE
(sparse, copy-on-write, kept for the next run; created 0600, and refused
if it is a symlink) and the image is never written. Runs until
interrupted.

ADDRESS is host:port, :port or a unix socket path (created 0600). :port
listens on 127.0.0.1 only: there is no password, and anyone who can
connect can read the whole disk (and write the overlay). To serve another
machine, tunnel the port over ssh (ssh -L 10809:127.0.0.1:10809 HOST on
the client) or give an address such as 0.0.0.0:PORT explicitly (a warning
says so), with --tls-cert and --tls-key to encrypt the traffic: clients
must then use TLS (qemu: --object tls-creds-x509,...,endpoint=client).
TLS does not check who the client is.

Clients cannot make the server hold more than --max-inflight bytes of
requests and replies, nor more than --max-connections connections; a
client that does not take a reply within --reply-timeout is dropped, one
that connects and does not negotiate within 30 s too. A client idle
between requests is never dropped. Requests are at most 32 MiB.`,
		Example: `  platter serve --nbd :10809 disk.platter &
  qemu-img convert nbd://127.0.0.1:10809/p2 p2.img
  qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/disk,format=raw,snapshot=on
  platter serve --nbd /run/disk.sock --overlay changes.ovl disk.platter:2`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd, opts, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.nbd, "nbd", "", "address to listen on: host:port, :port (127.0.0.1 only) or a unix socket path")
	f.StringVar(&opts.overlay, "overlay", "", "take writes into this copy-on-write file (the image is never written)")
	f.IntVar(&opts.cache, "cache", 32, "decoded chunks to keep in memory (8 MiB each by default)")
	f.IntVar(&opts.maxConnections, "max-connections", nbd.DefaultMaxConnections, "serve at most this many clients at once; more are closed as they come")
	f.StringVar(&opts.maxInFlight, "max-inflight", "256M", "memory for requests and replies in flight, all clients together (at least 1M; K, M or G)")
	f.DurationVar(&opts.replyTimeout, "reply-timeout", nbd.DefaultReply, "drop a client that does not take a reply (or send a write's data) within this long")
	f.StringVar(&opts.tlsCert, "tls-cert", "", "serve TLS only (NBD STARTTLS), with this PEM certificate (chain)")
	f.StringVar(&opts.tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	addDiskFlag(cmd)
	return cmd
}

func serveLimits(opts serveOptions) (nbd.Limits, error) {
	if opts.maxConnections < 1 {
		return nbd.Limits{}, usagef("--max-connections must be at least 1")
	}
	if opts.replyTimeout <= 0 {
		return nbd.Limits{}, usagef("--reply-timeout must be more than 0")
	}
	inFlight, err := parseBytes("--max-inflight", opts.maxInFlight)
	if err != nil {
		return nbd.Limits{}, err
	}
	if inFlight < nbd.MinInFlight {
		return nbd.Limits{}, usagef("--max-inflight must be at least 1M (it holds the largest request)")
	}
	l := nbd.Limits{MaxConnections: opts.maxConnections, InFlight: inFlight, Reply: opts.replyTimeout}
	if negotiate, reply := testTimeouts(); negotiate > 0 && reply > 0 {
		l.Negotiate, l.Reply = negotiate, reply
	}
	return l, nil
}

// serveTLS loads --tls-cert and --tls-key (nil: no TLS).
func serveTLS(opts serveOptions) (*tls.Config, error) {
	if (opts.tlsCert == "") != (opts.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if opts.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(opts.tlsCert, opts.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("load --tls-cert %s and --tls-key %s: %w", opts.tlsCert, opts.tlsKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// softMemoryLimit tells the garbage collector what the server should
// hold at most: the in-flight budget, the chunk cache, the chunks being
// decoded (a few per device read at once, counting readahead) and 64 MiB
// for the runtime, an overlay write and the rest. The collector's own
// goal is twice the live heap: under a flood that fills the budget while
// chunks are decoded all the while, twice is what the process would grow
// to; with the limit it collects more often instead. GOMEMLIMIT, if set,
// wins.
func softMemoryLimit(inFlight, cacheChunks, chunkSize int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(inFlight + (cacheChunks+nbd.DefaultReaders+4)*chunkSize + 64<<20)
	}
}

// testTimeouts reads PLATTER_NBD_TEST_TIMEOUTS=NEGOTIATE,REPLY (durations),
// which the e2e tests set to see clients dropped in seconds.
func testTimeouts() (negotiate, reply time.Duration) {
	v := os.Getenv("PLATTER_NBD_TEST_TIMEOUTS")
	if a, b, ok := strings.Cut(v, ","); ok {
		negotiate, _ = time.ParseDuration(a)
		reply, _ = time.ParseDuration(b)
	}
	return negotiate, reply
}

// parseBytes reads a size: bytes, or a number with K, M or G (and
// optional iB).
func parseBytes(flag, s string) (int64, error) {
	num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mul := int64(1)
	for i, suffix := range []string{"K", "M", "G"} {
		if strings.HasSuffix(num, suffix) {
			mul, num = 1<<(10*(i+1)), strings.TrimSuffix(num, suffix)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > 1<<40/mul {
		return 0, usagef("%s takes a size like 256M or 1G; %q is not one", flag, s)
	}
	return n * mul, nil
}

func runServe(cmd *cobra.Command, opts serveOptions, spec string) error {
	path, part := splitSpec(spec)
	if opts.nbd == "" {
		return usagef("serve needs --nbd ADDRESS (host:port, :port or a unix socket path)")
	}
	limits, err := serveLimits(opts)
	if err != nil {
		return err
	}
	tlsConfig, err := serveTLS(opts)
	if err != nil {
		return err
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
	// IMAGE:N serves partition N alone (the default export); IMAGE the
	// whole disk and every partition.
	var exports []nbd.Export
	if part == 0 {
		exports = append(exports, nbd.Export{Name: "disk", Description: "the whole disk of " + path, Dev: dev})
	}
	var have []string
	for _, p := range view.Partitions(r, dev) {
		have = append(have, strconv.Itoa(p.Index))
		if part != 0 && p.Index != part {
			continue
		}
		var pd nbd.Device = &p.Section
		if ov != nil {
			pd = &view.OverlaySection{Section: p.Section, O: ov}
		}
		exports = append(exports, nbd.Export{Name: fmt.Sprintf("p%d", p.Index), Description: fmt.Sprintf("partition %d (%s)", p.Index, p.Filesystem), Dev: pd})
	}
	if len(exports) == 0 {
		return usagef("%s has no partition %d (it has: %s)", path, part, strings.Join(have, ", "))
	}
	ln, err := nbd.Listen(opts.nbd)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.nbd, err)
	}
	if _, ok := ln.Addr().(*net.UnixAddr); ok {
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
	if tlsConfig != nil {
		mode += ", TLS only"
	}
	if _, tcp := ln.Addr().(*net.TCPAddr); tcp && !nbd.Exposed(ln) {
		mode += ", this machine only"
	}
	if nbd.Exposed(ln) {
		what := "read the whole disk"
		if ov != nil {
			what += " and write to " + opts.overlay
		}
		if tlsConfig != nil {
			warn("listening on %s, not only this machine: TLS encrypts the traffic but does not check who connects; anyone who can reach this port can %s (an ssh -L tunnel to a 127.0.0.1 port limits it to ssh's users)", ln.Addr(), what)
		} else {
			warn("listening on %s, not only this machine, without authentication or encryption: anyone who can reach this port can %s; use an ssh -L tunnel to a 127.0.0.1 port, or --tls-cert/--tls-key", ln.Addr(), what)
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "serving %s on %s (%s); exports: %s\n", spec, ln.Addr(), mode, strings.Join(names, ", "))
	softMemoryLimit(limits.InFlight, int64(opts.cache), r.Metadata().ChunkSize)
	srv := &nbd.Server{Exports: exports, TLS: tlsConfig, Limits: limits, Log: func(format string, args ...any) { warn(format, args...) }}
	err = srv.Serve(cmd.Context(), ln)
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
