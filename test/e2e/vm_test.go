package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// bootCode is the boot sector of TestVMBootsFromNBD, 16-bit real mode
// code that the BIOS loads at 0x7c00 with the boot drive in DL. Through
// the BIOS's int 13h extended calls it reads the sector at MARKER_LBA and
// prints its text to the serial port, writes a sector of guestText, a NUL
// and 0x5a bytes at WRITE_LBA, reads that back into the first buffer and
// prints it, and leaves qemu through isa-debug-exit: exit code 33 when all
// went well, 3 after a failed disk call. It prints the text of a sector up
// to its NUL; a NUL after the 512-byte buffer bounds a sector without one.
const bootCode = `
	.code16
	.globl	_start
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x7c00, %sp
	sti
	cld
	mov	%dl, drive
	movw	$0, 0x8200
	mov	$0x41, %ah		# are there extended calls?
	mov	$0x55aa, %bx
	call	disk
	cmp	$0xaa55, %bx
	jne	fail

	mov	$marker, %si		# (a) read the marker's sector and print it
	mov	$0x42, %ah
	call	disk
	mov	$s_marker, %si
	call	puts
	mov	$0x8000, %si
	call	puts
	mov	$s_nl, %si
	call	puts

	mov	$pattern, %si		# (b) write the text, its NUL, 0x5a to the end
	mov	$0x9000, %di
1:	lodsb
	stosb
	test	%al, %al
	jnz	1b
	mov	$0x5a, %al
	mov	$0x9200, %cx
	sub	%di, %cx
	rep	stosb
	mov	$write, %si
	mov	$0x4300, %ax
	call	disk

	mov	$back, %si		# (c) read it back over the marker and print it
	mov	$0x42, %ah
	call	disk
	mov	$s_back, %si
	call	puts
	mov	$0x8000, %si
	call	puts
	mov	$s_nl, %si
	call	puts

	mov	$0x10, %al		# (d) qemu exits with 0x10<<1 | 1 = 33
	out	%al, $0xf4
	hlt

disk:	mov	drive, %dl		# int 13h with the boot drive; fail on CF
	int	$0x13
	jc	fail
	ret

fail:	mov	%ah, %bl		# "int 13h failed, ah=XX", exit 0x01<<1 | 1 = 3
	mov	$s_fail, %si
	call	puts
	mov	%bl, %al
	shr	$4, %al
	call	hexdigit
	mov	%bl, %al
	call	hexdigit
	mov	$s_nl, %si
	call	puts
	mov	$0x01, %al
	out	%al, $0xf4
	hlt

hexdigit:
	and	$0x0f, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	putc
	add	$'a'-'9'-1, %al
	jmp	putc

puts:	lodsb				# print DS:SI up to its NUL
	test	%al, %al
	jz	2f
	call	putc
	jmp	puts
2:	ret

putc:	mov	%al, %ah		# COM1: wait for an empty transmit register
	mov	$0x3fd, %dx
1:	in	%dx, %al
	test	$0x20, %al
	jz	1b
	mov	%ah, %al
	mov	$0x3f8, %dx
	out	%al, %dx
	ret

# Disk address packets: size, 0, sector count, buffer offset and segment, LBA.
marker:	.byte	0x10, 0
	.word	1, 0x8000, 0
	.quad	MARKER_LBA
write:	.byte	0x10, 0
	.word	1, 0x9000, 0
	.quad	WRITE_LBA
back:	.byte	0x10, 0
	.word	1, 0x8000, 0
	.quad	WRITE_LBA

drive:	.byte	0
s_marker: .asciz "marker: "
s_back:	.asciz	"read back: "
s_fail:	.asciz	"int 13h failed, ah="
s_nl:	.asciz	"\r\n"
pattern: .asciz	"` + guestText + `"
`

const guestText = "written by the guest through NBD"

// needTools fails the test unless every tool is installed.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for this test and is not installed (make deps)", tool)
		}
	}
}

// A virtual machine boots from an image served over NBD with --overlay:
// its BIOS reads a marker from a chunk other than the boot sector's and
// writes a sector, which lands in the overlay, never in the image.
func TestVMBootsFromNBD(t *testing.T) {
	needTools(t, "qemu-system-x86_64", "as", "ld", "sfdisk", "qemu-img", "sha256sum")
	dir := t.TempDir()
	const (
		sector    = 512
		markerOff = 10 << 20 // 1 MiB into p1, a chunk of its own (chunks are 8 MiB)
		writeOff  = 24 << 20 // 4 MiB into p2
	)

	// A 32 MiB MBR disk: p1 holds the marker, p2 only zeroes.
	disk := sparseFile(t, filepath.Join(dir, "disk.img"), 32<<20)
	sfdisk := exec.Command("sfdisk", "-q", disk)
	sfdisk.Stdin = strings.NewReader("label: dos\nstart=9MiB, size=8MiB, type=83\nstart=20MiB, size=8MiB, type=83\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	src := filepath.Join(dir, "boot.S")
	if err := os.WriteFile(src, []byte(bootCode), 0o644); err != nil {
		t.Fatal(err)
	}
	obj, bin := filepath.Join(dir, "boot.o"), filepath.Join(dir, "boot.bin")
	sh(t, "as", "--32", "--defsym", fmt.Sprintf("MARKER_LBA=%d", markerOff/sector), "--defsym", fmt.Sprintf("WRITE_LBA=%d", writeOff/sector), "-o", obj, src)
	sh(t, "ld", "-m", "elf_i386", "-Ttext=0x7c00", "--oformat", "binary", "-e", "_start", "-o", bin, obj)
	code, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(code) > 440 {
		t.Fatalf("the boot code is %d bytes; the MBR has room for 440", len(code))
	}
	nonce := make([]byte, 8)
	rand.Read(nonce)
	marker := "platter marker " + hex.EncodeToString(nonce)
	writeAt(t, disk, code, 0)
	writeAt(t, disk, append([]byte(marker), 0), markerOff)

	parts := sfdiskParts(t, disk)
	if p := parts[1]; markerOff < p.start || markerOff >= p.start+p.size {
		t.Fatalf("the marker at byte %d is not in p1 %+v", markerOff, p)
	}
	if p := parts[2]; writeOff < p.start || writeOff >= p.start+p.size {
		t.Fatalf("the VM's write at byte %d is not in p2 %+v", writeOff, p)
	}

	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	// The marker is read from a stored chunk of p1 (chunk offsets count
	// from the partition's start), not from the boot sector's chunk.
	var stored bool
	for _, c := range infoChunks(t, img).Chunks {
		in := markerOff - parts[1].start
		if c.Partition == 1 && c.Offset <= in && in < c.Offset+c.Length && !c.Zero {
			stored = true
		}
	}
	if !stored {
		t.Fatalf("the marker at byte %d is not in a stored chunk of partition 1", markerOff)
	}
	sum := sh(t, "sha256sum", img)

	overlay := filepath.Join(dir, "overlay.img")
	addr, log := startServe(t, "--overlay", overlay, img)
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-nodefaults", "-display", "none", "-no-reboot", "-m", "64",
		"-accel", "kvm", "-accel", "tcg", // tcg where there is no KVM
		"-serial", "file:"+serial,
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-drive", "file=nbd://"+addr+"/disk,format=raw,if=ide", "-boot", "c")
	var stderr bytes.Buffer
	qemu.Stdout, qemu.Stderr = &stderr, &stderr
	start := time.Now()
	err = qemu.Run()
	took := time.Since(start)
	out, _ := os.ReadFile(serial)
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the VM did not finish in 60s; serial:\n%s\nqemu:\n%s\nserve:\n%s", out, &stderr, log)
	case !errors.As(err, &ee) || ee.ExitCode() != 33:
		t.Fatalf("qemu: %v, want exit 33 (the boot code's isa-debug-exit 0x10); serial:\n%s\nqemu:\n%s\nserve:\n%s", err, out, &stderr, log)
	}
	accel := "kvm"
	if strings.Contains(stderr.String(), "falling back to tcg") {
		accel = "tcg"
	}
	t.Logf("the VM ran in %v (%s)", took.Round(time.Millisecond), accel)
	if !strings.Contains(string(out), "marker: "+marker+"\r\n") {
		t.Errorf("the VM did not print the marker %q; serial:\n%s", marker, out)
	}
	if !strings.Contains(string(out), "read back: "+guestText+"\r\n") {
		t.Errorf("the VM did not read back the sector it wrote; serial:\n%s", out)
	}

	if sh(t, "sha256sum", img) != sum {
		t.Fatal("the VM's write changed the image")
	}
	written := make([]byte, sector)
	copy(written, guestText)
	for i := len(guestText) + 1; i < sector; i++ {
		written[i] = 0x5a
	}
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	sameBytes(t, disk, back, 0, 32<<20, "the restore and the disk")
	if bytes.Equal(readAt(t, back, sector, writeOff), written) {
		t.Error("the sector the VM wrote is in a plain restore")
	}
	// The overlay file holds the sector, and a new server on it serves
	// the disk with that sector and nothing else changed.
	if got := readAt(t, overlay, sector, writeOff); !bytes.Equal(got, written) {
		t.Errorf("the overlay holds %q at byte %d, want the VM's sector", got[:40], writeOff)
	}
	addr2, _ := startServe(t, "--overlay", overlay, img)
	writeAt(t, back, written, writeOff)
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr2+"/disk", back); !strings.Contains(out, "identical") {
		t.Errorf("the disk through the overlay is not the image plus the VM's sector: %s", out)
	}
	if sh(t, "sha256sum", img) != sum {
		t.Fatal("serving the overlay again changed the image")
	}
}

// Stock NBD clients of our server: qemu-nbd re-exports a partition on a
// unix socket, byte for byte; nbd-client lists the exports (its list mode
// needs no nbd kernel module).
func TestNBDClients(t *testing.T) {
	needTools(t, "qemu-nbd", "qemu-img", "nbd-client")
	disk, img, back := imagedFixture(t, "gpt-disk.sh")
	addr, _ := startServe(t, img)
	parts := sfdiskParts(t, disk)

	sock := filepath.Join(t.TempDir(), "nbd.sock")
	qnbd := exec.Command("qemu-nbd", "--read-only", "--persistent", "--socket="+sock, "-f", "raw", "nbd://"+addr+"/p2")
	var qlog bytes.Buffer
	qnbd.Stdout, qnbd.Stderr = &qlog, &qlog
	if err := qnbd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qnbd.Process.Kill(); qnbd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen on %s in 10s: %s", sock, &qlog)
		}
	}
	url := "nbd+unix:///?socket=" + sock
	p2 := extract(t, back, parts[2])
	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", url, p2); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare of p2 through qemu-nbd: %s", out)
	}
	if out := sh(t, "qemu-img", "info", "--output=json", url); !strings.Contains(out, fmt.Sprintf(`"virtual-size": %d,`, parts[2].size)) {
		t.Errorf("p2 through qemu-nbd is not %d bytes: %s", parts[2].size, out)
	}

	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(sh(t, "nbd-client", "-l", host, port), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), ":")
		if name != "" && name != "Negotiation" {
			got = append(got, name)
		}
	}
	want := []string{"disk"}
	for n := range parts {
		want = append(want, fmt.Sprintf("p%d", n))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("nbd-client -l lists %q, want %q", got, want)
	}
}
