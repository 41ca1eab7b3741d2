package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/image"
)

func TestFirmwareFor(t *testing.T) {
	esp := image.Area{Kind: image.KindPartition, Index: 1, Type: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"}
	linux := image.Area{Kind: image.KindPartition, Index: 2, Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
	for _, c := range []struct {
		m    image.Metadata
		want Firmware
	}{
		{image.Metadata{Table: "gpt", Areas: []image.Area{esp, linux}}, UEFI},
		{image.Metadata{Table: "gpt", Areas: []image.Area{linux}}, BIOS},
		// An ESP's type on MBR is a one-byte type, never the GUID.
		{image.Metadata{Table: "mbr", Areas: []image.Area{{Kind: image.KindPartition, Index: 1, Type: "83"}}}, BIOS},
		// A gap is not a partition, whatever it says.
		{image.Metadata{Table: "gpt", Areas: []image.Area{{Kind: image.KindGap, Type: esp.Type}, linux}}, BIOS},
	} {
		if got, why := FirmwareFor(&c.m); got != c.want || why == "" {
			t.Errorf("%+v: %s (%s), want %s", c.m, got, why, c.want)
		}
	}
}

func TestBusFor(t *testing.T) {
	part := func(i int, fs string) image.Area {
		return image.Area{Kind: image.KindPartition, Index: i, Filesystem: fs}
	}
	for _, c := range []struct {
		areas []image.Area
		want  Bus
	}{
		{[]image.Area{part(1, "vfat"), part(2, "ext4")}, Virtio},
		{[]image.Area{part(1, "vfat"), part(2, "raw"), part(3, "ntfs")}, SATA},
		{[]image.Area{{Kind: image.KindGap, Filesystem: "ntfs"}, part(1, "xfs")}, Virtio},
	} {
		if got, why := BusFor(&image.Metadata{Table: "gpt", Areas: c.areas}); got != c.want || why == "" {
			t.Errorf("%+v: %s (%s), want %s", c.areas, got, why, c.want)
		}
	}
	c := Config{Firmware: BIOS, Accel: "tcg", Memory: 64 << 20, CPUs: 1, NBDSocket: "/s", Export: "disk"}
	for bus, want := range map[Bus]string{"": "virtio-blk-pci,drive=disk0,bootindex=1", Virtio: "virtio-blk-pci,drive=disk0,bootindex=1",
		SATA: "ide-hd,drive=disk0,bus=ide.0,bootindex=1"} {
		c.Bus = bus
		args, err := c.Args()
		if err != nil || !slices.Equal(argValues(args, "-device"), []string{want}) {
			t.Errorf("bus %q: -device %v (%v), want %s", bus, argValues(args, "-device"), err, want)
		}
	}
	c.Bus = "scsi"
	if _, err := c.Args(); err == nil {
		t.Error("bus scsi: no error")
	}
}

// arg returns the value after flag in args, each time it appears.
func argValues(args []string, flag string) []string {
	var out []string
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestArgs(t *testing.T) {
	c := Config{Firmware: BIOS, Accel: "tcg", Memory: 512 << 20, CPUs: 2, NBDSocket: "/tmp/a,b/disk.sock", Export: "disk"}
	args, err := c.Args()
	if err != nil {
		t.Fatal(err)
	}
	if got := argValues(args, "-m"); !slices.Equal(got, []string{"512M"}) {
		t.Errorf("-m %v", got)
	}
	if got := argValues(args, "-smp"); !slices.Equal(got, []string{"2"}) {
		t.Errorf("-smp %v", got)
	}
	// The socket path, comma and all, reaches QEMU whole, as JSON.
	var disk struct {
		Driver, Export string
		Server         struct{ Type, Path string }
	}
	bd := argValues(args, "-blockdev")
	if len(bd) != 1 || json.Unmarshal([]byte(bd[0]), &disk) != nil || disk.Driver != "nbd" || disk.Export != "disk" || disk.Server.Path != c.NBDSocket || disk.Server.Type != "unix" {
		t.Errorf("-blockdev %v", bd)
	}
	for _, absent := range []string{"-netdev", "-vga", "-cpu"} {
		if slices.Contains(args, absent) {
			t.Errorf("BIOS, TCG, no VNC, no ssh: %s in %v", absent, args)
		}
	}
	if !slices.Equal(argValues(args, "-display"), []string{"none"}) {
		t.Errorf("-display %v", argValues(args, "-display"))
	}

	c.Firmware, c.OVMFCode, c.OVMFVars, c.Accel, c.VNC, c.SSHPort = UEFI, "/fw/CODE.fd", "/run/VARS.fd", "kvm", "3", 2222
	args, err = c.Args()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(args, " ")
	for _, want := range []string{`"filename":"/fw/CODE.fd","read-only":true`, `"filename":"/run/VARS.fd","read-only":false`, "pflash0=fw-code,pflash1=fw-vars",
		"vnc=127.0.0.1:3", "restrict=on,hostfwd=tcp:127.0.0.1:2222-:22", "-cpu host"} {
		if !strings.Contains(all, want) {
			t.Errorf("UEFI, KVM, VNC, ssh: no %q in %s", want, all)
		}
	}
	for _, bad := range []Config{{Memory: 1000, CPUs: 1}, {Memory: 64 << 20}, {Firmware: UEFI, Memory: 64 << 20, CPUs: 1}} {
		if _, err := bad.Args(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestOVMFMissing(t *testing.T) {
	old := ovmfPairs
	defer func() { ovmfPairs = old }()
	ovmfPairs = [][2]string{{t.TempDir() + "/CODE.fd", t.TempDir() + "/VARS.fd"}}
	_, _, err := OVMF()
	var me *MissingError
	if !errors.As(err, &me) || me.Package != "ovmf" || !strings.Contains(err.Error(), "apt-get install ovmf") {
		t.Errorf("OVMF() = %v", err)
	}
}

// sh is a stand-in for QEMU: a shell running script.
func sh(script string) (string, []string) { return "/bin/sh", []string{"-c", script} }

func TestRun(t *testing.T) {
	ctx := context.Background()
	t.Run("powered off", func(t *testing.T) {
		var out bytes.Buffer
		q, args := sh(`echo guest says hi; read line; echo "got $line"`)
		end, err := Run(ctx, q, args, Console{In: strings.NewReader("typed\n"), Out: &out}, nil)
		if err != nil || end != PoweredOff || out.String() != "guest says hi\ngot typed\n" {
			t.Errorf("end %v, err %v, console %q", end, err, out.String())
		}
	})
	t.Run("escape", func(t *testing.T) {
		var out bytes.Buffer
		pr, pw := io.Pipe()
		q, args := sh(`read line; echo "got $line"; sleep 60`)
		go func() {
			pw.Write([]byte("before\n"))
			time.Sleep(200 * time.Millisecond)
			pw.Write([]byte("x\x1dafter\n"))
		}()
		start := time.Now()
		end, err := Run(ctx, q, args, Console{In: pr, Out: &out, Escape: CtrlRightBracket}, nil)
		if err != nil || end != Escaped || out.String() != "got before\n" || time.Since(start) > 10*time.Second {
			t.Errorf("end %v, err %v, console %q after %v", end, err, out.String(), time.Since(start))
		}
	})
	t.Run("failed", func(t *testing.T) {
		var stderr bytes.Buffer
		q, args := sh(`echo "qemu-system-x86_64: -blockdev: bad thing" >&2; exit 1`)
		_, err := Run(ctx, q, args, Console{Out: io.Discard}, &stderr)
		if err == nil || !strings.Contains(err.Error(), "bad thing") || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(stderr.String(), "bad thing") {
			t.Errorf("err %v, stderr %q", err, stderr.String())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		q, args := sh(`sleep 60`)
		start := time.Now()
		if _, err := Run(ctx, q, args, Console{Out: io.Discard}, nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
			t.Errorf("err %v after %v", err, time.Since(start))
		}
	})
}
