//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/platter-dev/platter/internal/block"
	"github.com/platter-dev/platter/internal/cbt"
	"github.com/platter-dev/platter/internal/image"
	"github.com/platter-dev/platter/internal/outfile"
	"github.com/platter-dev/platter/internal/ui"
)

type trackOptions struct {
	dir        string
	foreground bool
	tracker    string
	fault      string
	bootID     string
	gap        time.Duration
	unitDir    string
	json       bool
}

func newTrackCommand() *cobra.Command {
	var opts trackOptions
	cmd := &cobra.Command{
		Use:   "track start|stop|status|install-unit SOURCE",
		Short: "Track the blocks written to a disk, so incrementals read only what changed",
		Long: `Track runs a small service that watches the writes to SOURCE, a block device
(a whole disk and its partitions, or one partition), with the BPF write
tracker (tracefs where BPF is unavailable), and keeps a map of the bytes
written, saved every two seconds in DIR/<device>/map.json.
create --incremental or --differential of SOURCE then reads only the chunks
the map marks since the parent image's instant, and those whose allocation
changed; it reads everything, and says why, when the map cannot be trusted:
a reboot, the service stopped or not answering, events lost, a gap, a
filesystem mounted or written while the service was not running (ext2/3/4
mount count and last write time), a filesystem it cannot vouch for.
See docs/incrementals.md.

  start         start the service (in the background; --foreground for systemd)
  stop          stop it; the map is kept, marked stopped (no longer trusted)
  status        say whether it runs, since when, how much is marked, and
                whether the map is usable
  install-unit  write a systemd unit that runs the service at boot`,
		Example: `  platter track start /dev/nvme0n1
  platter track status /dev/nvme0n1
  platter create --incremental /backup/laptop-3.platter /dev/nvme0n1 /backup/laptop-4.platter
  platter track install-unit /dev/nvme0n1 && systemctl daemon-reload && systemctl enable --now platter-track-nvme0n1.service
  platter track stop /dev/nvme0n1`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTrack(cmd, opts, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.dir, "dir", cbt.DefaultDir, "where maps are kept (one directory per device)")
	f.BoolVar(&opts.foreground, "foreground", false, "with start: run in the foreground (systemd's Type=simple) until SIGTERM")
	f.StringVar(&opts.tracker, "tracker", "auto", "with start: bpf, tracefs, or auto (BPF where it loads)")
	f.StringVar(&opts.unitDir, "unit-dir", "/etc/systemd/system", "with install-unit: where the unit file is written")
	f.BoolVar(&opts.json, "json", false, "with status: print JSON")
	f.StringVar(&opts.fault, "test-fault", "", "for tests: tracefs-overrun")
	f.MarkHidden("test-fault")
	f.StringVar(&opts.bootID, "test-boot-id", "", "for tests: the boot id to record (as if started in another boot)")
	f.MarkHidden("test-boot-id")
	f.DurationVar(&opts.gap, "test-gap", 0, "for tests: the longest pause between takes before the map restarts (default 30s)")
	f.MarkHidden("test-gap")
	return cmd
}

func runTrack(cmd *cobra.Command, opts trackOptions, action, source string) error {
	dir, err := cbt.DirFor(opts.dir, source)
	if err != nil {
		return err
	}
	switch action {
	case "start":
		if opts.tracker != "auto" && opts.tracker != "bpf" && opts.tracker != "tracefs" {
			return usagef("--tracker %q: want bpf, tracefs or auto", opts.tracker)
		}
		if opts.foreground {
			return trackForeground(cmd, opts, source, dir)
		}
		return trackDaemon(cmd, opts, source, dir)
	case "stop":
		m, err := cbt.Stop(dir, 15*time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "stopped tracking %s (the map of %s marked since %s is kept, no longer trusted)\n", m.Device, ui.Bytes(m.Marked()), m.Since.Local().Format(time.RFC3339))
		return nil
	case "status":
		return trackStatus(cmd, opts, source, dir)
	case "install-unit":
		return installUnit(cmd, opts, source, dir)
	}
	return usagef("track %s: want start, stop, status or install-unit", action)
}

func trackForeground(cmd *cobra.Command, opts trackOptions, source, dir string) error {
	// Run by start in the background, whose output may be gone.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	tracker := opts.tracker
	if tracker == "auto" {
		tracker = ""
	}
	err := cbt.Serve(cmd.Context(), cbt.Options{Device: source, Dir: dir, Tracker: tracker, Fault: opts.fault, BootID: opts.bootID, Gap: opts.gap,
		Ready: func(m *cbt.Map) {
			fmt.Fprintf(cmd.OutOrStdout(), "tracking %s with %s since %s (pid %d, map %s)\n", source, m.Tracker, m.Since.Local().Format(time.RFC3339), m.PID, filepath.Join(dir, cbt.File))
		}})
	if errors.Is(err, cbt.ErrRunning) {
		return usagef("%s is tracked already (platter track status %s)", source, source)
	}
	if err == nil && errors.Is(cmd.Context().Err(), context.Canceled) {
		return nil
	}
	return err
}

// trackDaemon starts the service in a child of its own session, its
// output in DIR/service.log, and returns once its map is saved.
func trackDaemon(cmd *cobra.Command, opts trackOptions, source, dir string) error {
	if cbt.Running(dir) {
		return usagef("%s is tracked already (platter track status %s)", source, source)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	logPath := filepath.Join(dir, "service.log")
	log, _, err := outfile.OpenOrCreate(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	log.Truncate(0)
	args := []string{"track", "start", "--foreground", "--dir", opts.dir, "--tracker", opts.tracker}
	if opts.fault != "" {
		args = append(args, "--test-fault", opts.fault)
	}
	if opts.bootID != "" {
		args = append(args, "--test-boot-id", opts.bootID)
	}
	if opts.gap != 0 {
		args = append(args, "--test-gap", opts.gap.String())
	}
	c := exec.Command(self, append(args, source)...)
	c.Stdout, c.Stderr = log, log
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		if m, err := cbt.Load(dir); err == nil && m.PID == c.Process.Pid && cbt.Running(dir) {
			fmt.Fprintf(cmd.OutOrStdout(), "tracking %s with %s since %s (process %d; platter track stop %s to end)\n", source, m.Tracker, m.Since.Local().Format(time.RFC3339), m.PID, source)
			return nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "platter: "))
			if msg == "" {
				msg = fmt.Sprintf("the tracking service of %s ended at once (%v)", source, err)
			}
			return &childError{code: c.ProcessState.ExitCode(), msg: msg}
		case <-deadline:
			return fmt.Errorf("track: the service of %s saved no map within 30s (see %s)", source, logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// trackStatusJSON is track status's result for --json.
type trackStatusJSON struct {
	Device      string    `json:"device"`
	Running     bool      `json:"running"`
	PID         int       `json:"pid,omitempty"`
	Tracker     string    `json:"tracker,omitempty"`
	Started     time.Time `json:"started,omitzero"`
	Since       time.Time `json:"since,omitzero"`
	Heartbeat   time.Time `json:"heartbeat,omitzero"`
	Stopped     time.Time `json:"stopped,omitzero"`
	MarkedBytes int64     `json:"marked_bytes"`
	Epochs      int       `json:"epochs"`
	Filesystems []cbt.FS  `json:"filesystems,omitempty"`
	Valid       bool      `json:"valid"`
	Why         []string  `json:"why,omitempty"`
	Map         string    `json:"map"`
}

func trackStatus(cmd *cobra.Command, opts trackOptions, source, dir string) error {
	st := trackStatusJSON{Device: source, Map: filepath.Join(dir, cbt.File)}
	m, err := cbt.Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		st.Why = []string{"no map: the service never ran for " + source + " (platter track start " + source + ")"}
		return report(cmd, opts.json, st, fmt.Sprintf("%s is not tracked: no map in %s (platter track start %s)", source, dir, source))
	}
	if err != nil {
		return err
	}
	st.Running = cbt.Running(dir)
	st.PID, st.Tracker, st.Started, st.Since, st.Heartbeat, st.Stopped = m.PID, m.Tracker, m.Started, m.Since, m.Heartbeat, m.Stopped
	st.MarkedBytes, st.Epochs, st.Filesystems = m.Marked(), len(m.Epochs), m.Filesystems
	boot, err := cbt.BootID()
	if err != nil {
		return err
	}
	var dev *cbt.Device
	if st.Running && m.Stopped.IsZero() {
		if dev, err = cbt.Probe(source); err != nil {
			return err
		}
	}
	// Usable for an image made now: the map is trusted from Since on.
	st.Valid, st.Why = m.Usable(m.Since.Add(cbt.Margin), boot, dev)
	if st.Running && time.Since(m.Heartbeat) > 30*time.Second {
		st.Valid, st.Why = false, append(st.Why, fmt.Sprintf("the service last saved at %s", m.Heartbeat.Local().Format(time.RFC3339)))
	}
	lines := []string{}
	if st.Running {
		lines = append(lines, fmt.Sprintf("%s: tracked with %s by process %d since %s (service started %s, last saved %s)", source, m.Tracker, m.PID, m.Since.Local().Format(time.RFC3339), m.Started.Local().Format(time.RFC3339), m.Heartbeat.Local().Format(time.RFC3339)))
	} else {
		lines = append(lines, fmt.Sprintf("%s: not tracked now (the last service, process %d, ran from %s to %s)", source, m.PID, m.Started.Local().Format(time.RFC3339), m.Heartbeat.Local().Format(time.RFC3339)))
	}
	lines = append(lines, fmt.Sprintf("marked:  %s written since %s (%d epochs: one per image made since)", ui.Bytes(st.MarkedBytes), m.Since.Local().Format(time.RFC3339), len(m.Epochs)))
	for _, f := range m.Filesystems {
		d := f.Kind
		switch f.Kind {
		case cbt.KindExt:
			d = fmt.Sprintf("ext2/3/4, mount count %d, last written %s", f.MountCount, f.WTime.Local().Format(time.RFC3339))
		case cbt.KindXFS, cbt.KindBtrfs, cbt.KindNTFS, cbt.KindFAT, cbt.KindSwap:
			d = f.Kind + " (no mount count or write time to check: trusted on the service's continuity)"
		case cbt.KindEmpty:
			d = "no filesystem"
		case cbt.KindUnknown:
			d = "unknown (the map is not trusted for it)"
		}
		lines = append(lines, fmt.Sprintf("         %s: %s", f.Path, d))
	}
	if st.Valid {
		lines = append(lines, "valid:   yes, for a parent image made after "+m.Since.Add(cbt.Margin).Local().Format(time.RFC3339))
	} else {
		lines = append(lines, "valid:   no: "+strings.Join(st.Why, "; "))
	}
	for _, r := range m.Resets {
		lines = append(lines, "restarted: "+r)
	}
	return report(cmd, opts.json, st, lines...)
}

// unitText is the systemd unit that runs the service for source.
func unitText(self, dir, source string) string {
	return fmt.Sprintf(`[Unit]
Description=Platter changed-block tracking of %[3]s
Documentation=https://github.com/platter-dev/platter/blob/main/docs/incrementals.md
After=local-fs.target

[Service]
Type=simple
ExecStart=%[1]s track start --foreground --dir %[2]s %[3]s
# Stopping saves the map as stopped: the next incremental reads everything.
KillSignal=SIGTERM
TimeoutStopSec=20
# platter exits 128+15 after a SIGTERM it handled (the map saved).
SuccessExitStatus=143
Restart=on-failure

[Install]
WantedBy=multi-user.target
`, self, dir, source)
}

func installUnit(cmd *cobra.Command, opts trackOptions, source, dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if self, err = filepath.Abs(self); err != nil {
		return err
	}
	for _, s := range []string{self, opts.dir, source} {
		if strings.ContainsAny(s, " \t\n\"'\\%$;") {
			return usagef("%q cannot go in a unit file as it is (spaces, quotes or %% in it)", s)
		}
	}
	name := "platter-track-" + filepath.Base(dir) + ".service"
	path := filepath.Join(opts.unitDir, name)
	if err := writeUnit(path, unitText(self, opts.dir, source)); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (systemctl daemon-reload && systemctl enable --now %s)\n", path, name)
	return nil
}

// trackedChanges asks the tracking service of source, if one ever ran,
// for the ranges written since parent's instant. It returns them with
// "tracker" when its map is valid, else nil, "read" and why; a map found
// unusable while the service runs is restarted.
func trackedChanges(root, source string, parent *image.Reader) ([]block.Extent, string, string) {
	pm := parent.Metadata()
	instant := pm.Created
	if s := pm.Snapshot; s != nil && !s.Instant.IsZero() && s.Instant.Before(instant) {
		instant = s.Instant
	}
	dir, err := cbt.DirFor(root, source)
	if err != nil {
		return nil, "read", err.Error()
	}
	m, dev, err := cbt.Flush(dir, source, 10*time.Second, "")
	if errors.Is(err, os.ErrNotExist) {
		return nil, "read", fmt.Sprintf("no tracker map for %s (platter track start %s to read only what changed)", source, source)
	}
	if err != nil {
		return nil, "read", err.Error()
	}
	boot, err := cbt.BootID()
	if err != nil {
		return nil, "read", err.Error()
	}
	ok, why := m.Usable(instant, boot, dev)
	if !ok {
		if dev != nil {
			// The service runs: its map starts afresh, for the next image.
			cbt.Flush(dir, source, 10*time.Second, "create found the map unusable")
		}
		return nil, "read", "the tracker's map is not usable: " + strings.Join(why, "; ")
	}
	changed := m.ChangedSince(instant)
	if changed == nil {
		changed = []block.Extent{} // nothing written: not nil, which reads everything
	}
	return changed, "tracker", fmt.Sprintf("the tracker's map since %s", instant.Local().Format(time.RFC3339))
}
