// Command faultdisk serves a disk image as a failing disk, for test and
// bench scripts (Go tests use tooltest.FaultyDisk in-process):
//
//	faultdisk [-bad OFF+LEN,...] [-stall OFF+LEN:DUR,...] IMAGE MOUNTDIR
//
// MOUNTDIR/disk holds IMAGE's bytes; reads overlapping a -bad range fail
// with EIO, reads overlapping a -stall range wait DUR (a Go duration,
// "2s") first. Offsets and lengths are bytes (decimal or 0x hex). Lines
// written to MOUNTDIR/ctl change the plan while it runs (bad OFF LEN,
// stall OFF LEN DUR, clear, vanish, return); MOUNTDIR/stats counts reads,
// bytes and EIOs. Once mounted it prints "ready MOUNTDIR/disk"; it serves
// until SIGINT or SIGTERM, then unmounts (detach a loop device over the
// disk first: until then the mount is busy, and it keeps serving).
// Exit status: 0 unmounted, 1 failed, 2 usage.
//
// A failing block device, as root:
//
//	faultdisk -bad 1048576+4096 disk.img /tmp/fault &
//	dev=$(losetup -f --show -r /tmp/fault/disk)
//	ddrescue -d $dev rescued.img rescue.map
//	losetup -d $dev; kill %1
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/platter-dev/platter/internal/faultdisk"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fl := flag.NewFlagSet("faultdisk", flag.ContinueOnError)
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: faultdisk [-bad OFF+LEN,...] [-stall OFF+LEN:DUR,...] IMAGE MOUNTDIR")
		fl.PrintDefaults()
	}
	bad := fl.String("bad", "", "byte ranges OFF+LEN whose reads fail with EIO, comma-separated")
	stall := fl.String("stall", "", "byte ranges OFF+LEN:DUR whose reads wait DUR (Go duration), comma-separated")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 2 {
		fl.Usage()
		return 2
	}
	plan, err := parsePlan(*bad, *stall)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultdisk:", strings.ReplaceAll(err.Error(), "faultdisk: ", ""))
		return 2
	}
	image, dir := fl.Arg(0), fl.Arg(1)
	fsys, err := faultdisk.Mount(dir, image, plan)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	ended := make(chan struct{})
	go func() { fsys.Wait(); close(ended) }()
	fmt.Println("ready", fsys.Disk())
	for {
		select {
		case <-ended: // unmounted from outside
			return 0
		case <-sig:
			err := fsys.Unmount()
			if err == nil {
				return 0
			}
			// Busy (a loop device over it): keep serving, say why.
			fmt.Fprintf(os.Stderr, "%v; still serving %s (detach what uses it, then signal again)\n", err, fsys.Disk())
		}
	}
}

// parsePlan reads the -bad and -stall lists into a plan, in the ctl
// file's language.
func parsePlan(bad, stall string) (faultdisk.Plan, error) {
	var p faultdisk.Plan
	for _, r := range split(bad) {
		off, n, ok := strings.Cut(r, "+")
		if !ok {
			return p, fmt.Errorf("-bad %q: want OFF+LEN", r)
		}
		if err := p.Apply("bad " + off + " " + n); err != nil {
			return p, fmt.Errorf("-bad %q: %w", r, err)
		}
	}
	for _, s := range split(stall) {
		rng, dur, ok := strings.Cut(s, ":")
		off, n, ok2 := strings.Cut(rng, "+")
		if !ok || !ok2 {
			return p, fmt.Errorf("-stall %q: want OFF+LEN:DUR", s)
		}
		if _, err := time.ParseDuration(dur); err != nil {
			return p, fmt.Errorf("-stall %q: %w", s, err)
		}
		if err := p.Apply("stall " + off + " " + n + " " + dur); err != nil {
			return p, fmt.Errorf("-stall %q: %w", s, err)
		}
	}
	return p, nil
}

func split(list string) []string {
	if list == "" {
		return nil
	}
	return strings.Split(list, ",")
}
