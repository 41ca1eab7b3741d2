// Package vm boots a disk in QEMU (platter boot): the firmware the disk
// needs, the accelerator, the command line, and the serial console
// between the user and the guest.
package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/platter-dev/platter/internal/image"
)

// Firmware is what the guest starts with: a PC BIOS (SeaBIOS) or UEFI
// (OVMF).
type Firmware string

const (
	BIOS Firmware = "bios"
	UEFI Firmware = "uefi"
)

// espType is the GPT partition type of an EFI system partition.
const espType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

// FirmwareFor chooses the firmware that boots the disk m describes, and
// says why: UEFI when its GPT holds an EFI system partition (UEFI boots
// from there, and a GPT disk with one is most likely installed for it),
// BIOS otherwise.
func FirmwareFor(m *image.Metadata) (Firmware, string) {
	if m.Table == "gpt" {
		for _, a := range m.Areas {
			if a.Kind == image.KindPartition && strings.EqualFold(a.Type, espType) {
				return UEFI, fmt.Sprintf("the GPT disk has an EFI system partition (%d)", a.Index)
			}
		}
		return BIOS, "the GPT disk has no EFI system partition"
	}
	return BIOS, fmt.Sprintf("the disk has an %s partition table, no EFI system partition", strings.ToUpper(m.Table))
}

// Bus is how the guest sees its disk: a virtio block device (fast; Linux
// has the driver) or a SATA disk on the machine's AHCI controller (every
// operating system since Windows Vista has that driver inbox).
type Bus string

const (
	Virtio Bus = "virtio"
	SATA   Bus = "sata"
)

// BusFor chooses the bus for the disk m describes, and says why: SATA
// when it holds an NTFS (a Windows disk: Windows as installed has no
// virtio driver and stops with INACCESSIBLE_BOOT_DEVICE), virtio
// otherwise.
func BusFor(m *image.Metadata) (Bus, string) {
	for _, a := range m.Areas {
		if a.Kind == image.KindPartition && a.Filesystem == "ntfs" {
			return SATA, fmt.Sprintf("partition %d is NTFS, and Windows has no virtio driver inbox", a.Index)
		}
	}
	return Virtio, "no NTFS partition"
}

// MissingError says which program or file is missing and which Debian
// package has it.
type MissingError struct {
	What, Package string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is not installed: install the Debian package %s (apt-get install %s)", e.What, e.Package, e.Package)
}

// QEMU finds qemu-system-x86_64.
func QEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", &MissingError{What: "qemu-system-x86_64", Package: "qemu-system-x86"}
	}
	return p, nil
}

// ovmfPairs are the OVMF firmware builds without Secure Boot that Debian's
// ovmf package has shipped, each code with its variable store template:
// the 4 MiB build (bookworm and later), then the 2 MiB one (up to
// bookworm). A disk whose loader needs Secure Boot keys enrolled is not
// booted by either: no distribution's shim needs them.
var ovmfPairs = [][2]string{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
}

// OVMF finds the UEFI firmware: its code (read-only) and the template of
// its variable store (each boot gets a private copy).
func OVMF() (code, vars string, err error) {
	for _, p := range ovmfPairs {
		if regular(p[0]) && regular(p[1]) {
			return p[0], p[1], nil
		}
	}
	return "", "", &MissingError{What: "OVMF, the UEFI firmware for QEMU (" + ovmfPairs[0][0] + ")", Package: "ovmf"}
}

func regular(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// KVM reports whether /dev/kvm can be used: nil when it opens for
// reading and writing, else why not.
func KVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// Config is one boot of a disk served over NBD.
type Config struct {
	Firmware Firmware
	// OVMFCode is the UEFI firmware, read-only; OVMFVars this boot's own
	// copy of its variable store (UEFI only).
	OVMFCode, OVMFVars string
	Accel              string // "kvm" or "tcg"
	Bus                Bus    // the disk's; "" is virtio
	Memory             int64  // bytes, a whole number of MiB
	CPUs               int
	// NBDSocket is the unix socket the disk is served on, as export
	// Export.
	NBDSocket, Export string
	// VNC, if not "", is the display number on 127.0.0.1 (0 is port
	// 5900) the guest's screen is shown on; "" shows none.
	VNC string
	// SSHPort, if not 0, is the port on 127.0.0.1 forwarded to the
	// guest's port 22, on a network that reaches nothing else.
	SSHPort int
}

// Args is QEMU's command line for c. The serial console is QEMU's
// standard input and output (never a terminal: Run gives it pipes); no
// monitor, no network unless SSHPort asks for one, no display unless
// VNC does.
func (c Config) Args() ([]string, error) {
	if c.Memory < 1<<20 || c.Memory%(1<<20) != 0 {
		return nil, fmt.Errorf("vm: memory %d is not a whole number of MiB", c.Memory)
	}
	if c.CPUs < 1 {
		return nil, fmt.Errorf("vm: %d CPUs", c.CPUs)
	}
	// The disk as a JSON blockdev: no path needs escaping for QEMU's
	// comma-separated syntax.
	disk, err := json.Marshal(map[string]any{
		"driver": "nbd", "node-name": "disk0", "export": c.Export,
		"server": map[string]string{"type": "unix", "path": c.NBDSocket},
	})
	if err != nil {
		return nil, err
	}
	args := []string{
		"-nodefaults", "-no-user-config",
		"-machine", "q35", "-accel", c.Accel,
		"-m", strconv.FormatInt(c.Memory>>20, 10) + "M",
		"-smp", strconv.Itoa(c.CPUs),
		"-monitor", "none",
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
		"-blockdev", string(disk),
	}
	switch c.Bus {
	case Virtio, "":
		args = append(args, "-device", "virtio-blk-pci,drive=disk0,bootindex=1")
	case SATA:
		// q35's own AHCI controller (ich9-ahci) has its ports as ide.0 …
		args = append(args, "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=1")
	default:
		return nil, fmt.Errorf("vm: disk bus %q", c.Bus)
	}
	if c.Accel == "kvm" {
		args = append(args, "-cpu", "host")
	}
	if c.Firmware == UEFI {
		code, err := blockdevFile("fw-code", c.OVMFCode, true)
		if err != nil {
			return nil, err
		}
		vars, err := blockdevFile("fw-vars", c.OVMFVars, false)
		if err != nil {
			return nil, err
		}
		args = append(args, "-blockdev", code, "-blockdev", vars,
			"-machine", "pflash0=fw-code,pflash1=fw-vars")
	}
	if c.VNC != "" {
		args = append(args, "-display", "vnc=127.0.0.1:"+c.VNC, "-vga", "std",
			"-device", "qemu-xhci", "-device", "usb-tablet")
	} else {
		args = append(args, "-display", "none")
	}
	if c.SSHPort != 0 {
		// restrict=on: the guest reaches neither the host nor the
		// outside; the forward to its ssh port still works. A booted
		// backup of a server must not start talking to the real world.
		args = append(args, "-netdev", fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", c.SSHPort),
			"-device", "virtio-net-pci,netdev=net0")
	}
	return args, nil
}

// blockdevFile is a -blockdev of a raw file (a pflash image).
func blockdevFile(node, path string, readOnly bool) (string, error) {
	if path == "" {
		return "", errors.New("vm: UEFI without its firmware files")
	}
	b, err := json.Marshal(map[string]any{
		"driver": "raw", "node-name": node, "read-only": readOnly,
		"file": map[string]any{"driver": "file", "filename": path, "read-only": readOnly},
	})
	return string(b), err
}
