package e2e

// Bootable disks, and booting them (issue 17: a Linux system disk still
// boots after restore, and after `fit` and `grow`).
//
// bootDisk(t, kind) returns a private copy of a small disk that a real
// machine boots: GRUB, then a Debian kernel, then an initramfs whose /init
// finds the root filesystem by its UUID, mounts it read-only, checks every
// file listed in /etc/platter/SHA256SUMS on it and prints one line on the
// serial console, then powers off:
//
//	PLATTER-BOOT-OK root=<UUID read from the superblock> dev=vda2 start=<bytes> size=<bytes> fs=<bytes> files=<n> kernel=<release>
//
// (PLATTER-BOOT-FAIL <why> when a step fails). bootOK(t, disk, kind) boots
// a disk in qemu and fails the test unless that line comes with the
// fixture's root UUID and every file checked; it returns what the line
// said, so that a test of `restore --layout fit|grow` can also check that
// the partition and the filesystem have the sizes it expects.
// bootFails(t, disk, kind, deadEnd) requires a boot to stop at that dead
// end instead. TestBootFixtures proves each fixture, TestBootRestored and
// TestBootFitGrow boot what restore made of it, TestBootBroken shows that
// the harness fails what does not boot.
//
// Each kind is one disk of bootDiskSize bytes, laid out in bootLayouts
// (partition numbers, types, sizes, filesystems and their UUIDs are fixed
// there, so tests can name them):
//   - bios-gpt: p1 BIOS boot partition (EF02, 1 MiB) holding GRUB's
//     core.img, p2 ext4 root; boot.img in sector 0 points at p1.
//   - uefi-gpt: p1 EFI system partition (EF00, 40 MiB FAT32, made with
//     mkfs.fat, filled with mtools) holding \EFI\BOOT\BOOTX64.EFI, p2 ext4
//     root; booted with OVMF.
//   - bios-mbr: p1 FAT16 data partition, p2 extended holding p5 (logical
//     ext4, 64 MiB, almost empty), p6 (logical swap) and p7 (logical ext4
//     root); core.img in the gap before p1. Fit shrinks p5, so p6 and the
//     root move down, each behind a new EBR.
//
// Why each piece:
//   - The kernel is Debian's linux-image-cloud-amd64 (the package `make
//     bootkernel` fetches into the user's cache with apt-get download; it
//     is unpacked with dpkg-deb, never installed). Its ext4 is built in,
//     but virtio_blk and virtio_pci are modules: the initramfs loads them
//     as a distribution's does, in the order depmod gives.
//   - The initramfs is busybox-static and /init, nothing else, so what it
//     prints is all it did. It reads the UUID and the size from the ext4
//     superblock of the device it mounted, not from the command line, and
//     the partition's start and size from sysfs, so the line proves what
//     the kernel found.
//   - GRUB is made with grub-mkimage, as grub-install makes it: a core
//     image whose early config finds the root by filesystem UUID and
//     loads normal.mod, grub.cfg and the rest from /boot/grub on it. For
//     BIOS, bootSetup writes boot.img and core.img as grub-bios-setup does
//     (grub-install needs the disk's partitions as devices, which loop
//     devices here do not give; grub-bios-setup needs its directory on
//     the target). The boot code thus holds absolute sector numbers:
//     the first sector of core.img in boot.img, the rest in core.img's
//     block list. A restore that moves core.img has to mend them.
//   - The root filesystem is filled by debugfs, not a mount: a fallocated
//     ballast file takes its first 60%, the files are written after it,
//     and the ballast is deleted. The files thus sit past the middle of
//     the filesystem, and `resize2fs -M` (which shrinks it to a quarter
//     of its size) has to move every one of them, kernel included.
//
// Cost, measured on the 2-core machine with TCG (bootAccel says why not
// KVM): the kernel unpacked and the initramfs made once per run, 5 s;
// each disk built once per run, 1-7 s, about 37 MB on disk (sparse); a
// boot 8-12 s, up to 20 s on a busy machine (bootTimeout); a broken one
// mostly stopped at once (bootDeadEnds). The TestBoot tests together (11
// full boots, one after another: two TCG guests at once would leave
// nothing of the 2 cores for anything else) take about 2 minutes, 3.5
// while other work keeps a load of 8 on the machine.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type bootKind string

const (
	bootBIOSGPT bootKind = "bios-gpt"
	bootUEFIGPT bootKind = "uefi-gpt"
	bootBIOSMBR bootKind = "bios-mbr"
)

var bootKinds = []bootKind{bootBIOSGPT, bootUEFIGPT, bootBIOSMBR}

// bootDiskSize is the size of every boot fixture.
const bootDiskSize = 320 << 20

// bootPart is one partition of a boot fixture. Sizes are bytes; size 0
// runs to the end of the disk (or of the extended partition).
type bootPart struct {
	num         int
	start, size int64
	typ         string // sgdisk type code (GPT) or sfdisk type (MBR)
	name        string // GPT partition name
	guid        string // GPT unique partition GUID
	fs          string // ext4, vfat, swap; "" for none
	uuid        string // the filesystem's UUID (FAT: its volume id)
}

// bootLayout is what a boot fixture holds.
type bootLayout struct {
	firmware string // bios or uefi
	table    string // gpt or dos
	diskID   string // GPT disk GUID, or MBR disk signature
	parts    []bootPart
	root     int // partition number of the ext4 root
	rootUUID string
}

// bootLayouts fixes every fixture's layout: what tests of fit and grow
// may rely on.
var bootLayouts = map[bootKind]bootLayout{
	bootBIOSGPT: {
		firmware: "bios", table: "gpt", diskID: "B1050000-6770-4000-8000-000000000000",
		parts: []bootPart{
			{num: 1, start: 1 << 20, size: 1 << 20, typ: "ef02", name: "bios", guid: "B1050000-6770-4000-8000-000000000001"},
			{num: 2, start: 2 << 20, typ: "8300", name: "root", guid: "B1050000-6770-4000-8000-000000000002", fs: "ext4", uuid: "b1050607-0000-4000-8000-000000000002"},
		},
		root: 2, rootUUID: "b1050607-0000-4000-8000-000000000002",
	},
	bootUEFIGPT: {
		firmware: "uefi", table: "gpt", diskID: "EFE10000-6770-4000-8000-000000000000",
		parts: []bootPart{
			{num: 1, start: 1 << 20, size: 40 << 20, typ: "ef00", name: "esp", guid: "EFE10000-6770-4000-8000-000000000001", fs: "vfat", uuid: "EFE1-0001"},
			{num: 2, start: 41 << 20, typ: "8300", name: "root", guid: "EFE10000-6770-4000-8000-000000000002", fs: "ext4", uuid: "efe10607-0000-4000-8000-000000000002"},
		},
		root: 2, rootUUID: "efe10607-0000-4000-8000-000000000002",
	},
	bootBIOSMBR: {
		firmware: "bios", table: "dos", diskID: "0x504c5452",
		parts: []bootPart{
			{num: 1, start: 1 << 20, size: 32 << 20, typ: "e", fs: "vfat", uuid: "DA7A-0001"},
			{num: 2, start: 33 << 20, typ: "5"},
			{num: 5, size: 64 << 20, typ: "83", fs: "ext4", uuid: "da7a0b00-0000-4000-8000-000000000005"},
			{num: 6, size: 16 << 20, typ: "82", fs: "swap", uuid: "5a5a0607-0000-4000-8000-000000000006"},
			{num: 7, typ: "83", fs: "ext4", uuid: "b1050b00-0000-4000-8000-000000000007"},
		},
		root: 7, rootUUID: "b1050b00-0000-4000-8000-000000000007",
	},
}

// bootFiller is what the root holds besides the kernel and GRUB, for a
// shrink to move: files of seeded random bytes, checked by the guest.
var bootFiller = []struct {
	dir   string
	n     int
	bytes int
}{
	{"usr/share/platter/big", 6, 3 << 20},
	{"usr/share/platter/small", 64, 6000},
}

var (
	bootKernelOnce sync.Once
	bootKernelOut  bootKernelFiles
	bootDiskOnce   sync.Map // bootKind -> *sync.Once
)

type bootKernelFiles struct {
	vmlinuz, initrd, release string
}

// bootDisk returns a new copy, in the test's temporary directory, of the
// fixture of that kind (built once per run into the shared directory).
func bootDisk(t *testing.T, kind bootKind) string {
	t.Helper()
	layout, found := bootLayouts[kind]
	if !found {
		t.Fatalf("no boot fixture %q", kind)
	}
	cached := filepath.Join(shared, "boot-"+string(kind)+".img")
	once, _ := bootDiskOnce.LoadOrStore(kind, &sync.Once{})
	once.(*sync.Once).Do(func() {
		start := time.Now()
		buildBootDisk(t, kind, layout, cached)
		t.Logf("built the %s boot fixture in %v", kind, time.Since(start).Round(time.Millisecond))
	})
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("the %s boot fixture was not made (an earlier test failed making it)", kind)
	}
	out := filepath.Join(t.TempDir(), "boot-"+string(kind)+".img")
	sh(t, "cp", "--sparse=always", cached, out)
	return out
}

// bootKernel unpacks the kernel package and makes the initramfs, once.
func bootKernel(t *testing.T) bootKernelFiles {
	t.Helper()
	bootKernelOnce.Do(func() {
		start := time.Now()
		bootKernelOut = buildBootKernel(t)
		t.Logf("unpacked kernel %s and made its initramfs in %v", bootKernelOut.release, time.Since(start).Round(time.Millisecond))
	})
	if bootKernelOut.initrd == "" {
		t.Fatal("the boot fixtures' kernel was not unpacked (an earlier test failed doing it)")
	}
	return bootKernelOut
}

// bootKernelDeb is the kernel package `make bootkernel` fetched.
func bootKernelDeb(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "platter", "boot", "linux-image-*-cloud-amd64_*_amd64.deb"))
	if len(debs) == 0 {
		t.Fatalf("no kernel package in %s: `make bootkernel` fetches it (make e2e does)", filepath.Join(cache, "platter", "boot"))
	}
	sort.Strings(debs)
	return debs[len(debs)-1]
}

// bootModules are what the kernel needs to mount an ext4 on a virtio
// disk; those it has built in (today ext4) are skipped.
var bootModules = []string{"virtio_pci", "virtio_blk", "ext4"}

func buildBootKernel(t *testing.T) bootKernelFiles {
	needTools(t, "dpkg-deb", "busybox", "gzip")
	deb := bootKernelDeb(t)
	dir := filepath.Join(shared, "boot-kernel")
	x := filepath.Join(dir, "deb")
	if err := os.MkdirAll(x, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(x)
	sh(t, "dpkg-deb", "-x", deb, x)
	kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("%s holds kernels %q, want one", deb, kernels)
	}
	release := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	k := bootKernelFiles{vmlinuz: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd.img"), release: release}
	if err := os.Rename(kernels[0], k.vmlinuz); err != nil {
		t.Fatal(err)
	}

	// The modules and their dependencies, in load order, from depmod.
	sh(t, "busybox", "depmod", "-b", x, release)
	mods := filepath.Join(x, "lib", "modules", release)
	depFile, err := os.ReadFile(filepath.Join(mods, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(string(depFile), "\n") {
		mod, after, found := strings.Cut(line, ":")
		if found {
			deps[mod] = strings.Fields(after)
		}
	}
	byName := map[string]string{}
	for mod := range deps {
		byName[strings.TrimSuffix(filepath.Base(mod), ".ko")] = mod
	}
	var order []string
	loaded := map[string]bool{}
	var load func(mod string)
	load = func(mod string) {
		if loaded[mod] {
			return
		}
		loaded[mod] = true
		for _, d := range deps[mod] {
			load(d)
		}
		order = append(order, mod)
	}
	builtin, err := os.ReadFile(filepath.Join(mods, "modules.builtin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range bootModules {
		mod, found := byName[name]
		switch {
		case found:
			load(mod)
		case regexp.MustCompile(`(?m)/` + name + `\.ko$`).Match(builtin):
			// A later kernel of the package may build it in.
		default:
			t.Fatalf("kernel %s has no %s, neither as a module nor built in", release, name)
		}
	}

	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "root", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if bootDynamic(t, busybox) {
		t.Fatalf("%s is linked dynamically: the initramfs needs busybox-static's (make deps)", busybox)
	}
	sh(t, "cp", busybox, filepath.Join(root, "bin", "busybox"))
	var names []string
	for _, mod := range order {
		name := strings.TrimSuffix(filepath.Base(mod), ".ko")
		names = append(names, name)
		sh(t, "cp", filepath.Join(mods, mod), filepath.Join(root, "lib", "modules", name+".ko"))
	}
	initScript := strings.ReplaceAll(bootInit, "@MODULES@", strings.Join(names, " "))
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "bash", "-c", `set -eo pipefail; cd "$1" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9 > "$2"`, "-", root, k.initrd)
	return k
}

// bootInit is the initramfs's /init (@MODULES@: the modules in load order).
const bootInit = `#!/bin/busybox sh
# PID 1 of Platter's boot fixture (test/e2e/bootdisk_test.go): find the
# root by the UUID on the kernel's command line, mount it read-only, check
# its files, print one line for the test, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "PLATTER-BOOT-FAIL $*"; poweroff -f; }
for m in @MODULES@; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
want=$(sed -n 's/.* root=UUID=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$want" ] || fail "no root=UUID= in: $(cat /proc/cmdline)"
i=0
until dev=$(findfs "UUID=$want" 2>/dev/null); do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "no filesystem with UUID $want in: $(cat /proc/partitions)"
	sleep 0.1
done
mount -t ext4 -o ro "$dev" /root || fail "mount $dev"
uuid=$(hexdump -s 1128 -n 16 -e '4/1 "%02x" "-" 2/1 "%02x" "-" 2/1 "%02x" "-" 2/1 "%02x" "-" 6/1 "%02x"' "$dev")
blocks=$(hexdump -s 1028 -n 4 -e '1/4 "%u"' "$dev")
logsize=$(hexdump -s 1048 -n 4 -e '1/4 "%u"' "$dev")
name=${dev#/dev/}
start=$(($(cat /sys/class/block/$name/start) * 512))
size=$(($(cat /sys/class/block/$name/size) * 512))
cd /root || fail "cd /root"
sums=etc/platter/SHA256SUMS
[ -f $sums ] || fail "no /$sums on $dev"
bad=$(sha256sum -c $sums 2>&1 | grep -v ': OK$')
[ -z "$bad" ] || fail "files differ on $dev: $bad"
run=$(cat /proc/sys/kernel/random/uuid)
echo "PLATTER-BOOT-OK root=$uuid dev=$name start=$start size=$size fs=$((blocks << (10 + logsize))) files=$(wc -l < $sums) kernel=$(uname -r) run=$run"
cd /
# A disk the VM may write (platter boot's overlay; bootVM's disks are
# read-only, and the remount fails there): the run's marker goes into a
# file on the root, unmounted cleanly before the power goes.
if mount -o remount,rw /root 2>/dev/null; then
	mkdir -p /root/var/lib/platter || fail "mkdir /var/lib/platter on $dev"
	echo "$run" > /root/var/lib/platter/boot-run || fail "write /var/lib/platter/boot-run on $dev"
	umount /root || fail "umount $dev"
	echo "PLATTER-BOOT-WROTE run=$run file=/var/lib/platter/boot-run"
else
	umount /root
	echo "PLATTER-BOOT-READONLY run=$run"
fi
poweroff -f
`

// bootGrubCfg is /boot/grub/grub.cfg on every root (@UUID@: the root's).
// It finds the root by filesystem UUID, never by partition number, as
// Debian's does.
const bootGrubCfg = `# Platter's boot fixture: no menu, straight to the kernel.
search --no-floppy --fs-uuid --set=root @UUID@
echo "platter fixture: GRUB on ${grub_platform} loads the kernel from ${root}"
linux /boot/vmlinuz root=UUID=@UUID@ ro console=ttyS0 panic=-1
initrd /boot/initrd.img
boot
`

// grubPlatform is GRUB's name for a firmware.
func grubPlatform(firmware string) string {
	if firmware == "uefi" {
		return "x86_64-efi"
	}
	return "i386-pc"
}

func buildBootDisk(t *testing.T, kind bootKind, l bootLayout, out string) {
	needTools(t, "sgdisk", "sfdisk", "mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs", "mkfs.fat", "mmd", "mcopy", "fsck.fat", "mkswap", "grub-mkimage", "cp")
	k := bootKernel(t)
	dir, err := os.MkdirTemp(shared, "boot-build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	platform := grubPlatform(l.firmware)
	grubLib := filepath.Join("/usr/lib/grub", platform)
	if _, err := os.Stat(filepath.Join(grubLib, "normal.mod")); err != nil {
		pkg := map[string]string{"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}[platform]
		t.Fatalf("GRUB for %s is not installed (%s; make deps): %v", platform, pkg, err)
	}

	disk := sparseFile(t, filepath.Join(dir, "disk.img"), bootDiskSize)
	partitionBootDisk(t, disk, l)
	parts := sfdiskParts(t, disk)

	// The root's tree: kernel, initramfs, GRUB's modules and menu, filler.
	tree := filepath.Join(dir, "root")
	put := func(name string, b []byte) {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct{ src, dst string }{{k.vmlinuz, "boot/vmlinuz"}, {k.initrd, "boot/initrd.img"}} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatal(err)
		}
		put(f.dst, b)
	}
	mods, _ := filepath.Glob(filepath.Join(grubLib, "*.mod"))
	lsts, _ := filepath.Glob(filepath.Join(grubLib, "*.lst"))
	for _, m := range append(mods, lsts...) {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		put(filepath.Join("boot/grub", platform, filepath.Base(m)), b)
	}
	put("boot/grub/grub.cfg", []byte(strings.ReplaceAll(bootGrubCfg, "@UUID@", l.rootUUID)))
	put("etc/hostname", []byte("platter-"+string(kind)+"\n"))
	rng := rand.NewChaCha8([32]byte{'p', 'l', 'a', 't', 't', 'e', 'r'})
	var checked []string
	for _, f := range bootFiller {
		for i := 0; i < f.n; i++ {
			b := make([]byte, f.bytes+i)
			rng.Read(b)
			name := fmt.Sprintf("%s/%03d.bin", f.dir, i)
			put(name, b)
			checked = append(checked, name)
		}
	}
	checked = append(checked, "boot/vmlinuz", "boot/initrd.img", "boot/grub/grub.cfg", "boot/grub/"+platform+"/normal.mod", "boot/grub/"+platform+"/linux.mod")
	sums := sh(t, "bash", append([]string{"-c", `cd "$1" && shift && sha256sum "$@"`, "-", tree}, checked...)...)
	put("etc/platter/SHA256SUMS", []byte(sums))

	for _, p := range l.parts {
		at, found := parts[p.num]
		if !found {
			t.Fatalf("%s: no partition %d after partitioning: %v", kind, p.num, parts)
		}
		img := filepath.Join(dir, fmt.Sprintf("p%d.img", p.num))
		switch p.fs {
		case "ext4":
			sparseFile(t, img, at.size)
			if p.num == l.root {
				makeBootRoot(t, img, p.uuid, tree)
				break
			}
			// A data filesystem, mostly free: fit shrinks it, and what
			// follows it moves down.
			data := filepath.Join(dir, fmt.Sprintf("data%d", p.num))
			if err := os.MkdirAll(data, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(data, "README"), []byte("A data filesystem before the root.\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-U", p.uuid, "-L", "data", "-E", "nodiscard", "-d", data, img)
		case "vfat":
			sparseFile(t, img, at.size)
			id := strings.ReplaceAll(p.uuid, "-", "")
			if p.typ == "ef00" {
				// FAT32, as firmware expects of an ESP: 1-sector clusters
				// give it enough clusters in 40 MiB.
				sh(t, "mkfs.fat", "-F", "32", "-s", "1", "-n", "ESP", "-i", id, img)
				efi := filepath.Join(dir, "BOOTX64.EFI")
				makeGrubCore(t, dir, l, "x86_64-efi", efi)
				sh(t, "mmd", "-i", img, "::/EFI", "::/EFI/BOOT")
				sh(t, "mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI")
			} else {
				sh(t, "mkfs.fat", "-F", "16", "-n", "DATA", "-i", id, img)
				readme := filepath.Join(dir, "readme.txt")
				if err := os.WriteFile(readme, []byte("A data partition beside the system.\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				sh(t, "mcopy", "-i", img, readme, "::/README.TXT")
			}
			sh(t, "fsck.fat", "-n", img)
		case "swap":
			sparseFile(t, img, at.size)
			sh(t, "mkswap", "-U", p.uuid, img)
		default:
			continue
		}
		copyIntoSparse(t, disk, at.start, img)
	}

	if l.firmware == "bios" {
		core := filepath.Join(dir, "core.img")
		makeGrubCore(t, dir, l, "i386-pc", core)
		coreImg, err := os.ReadFile(core)
		if err != nil {
			t.Fatal(err)
		}
		bootImg, err := os.ReadFile(filepath.Join(grubLib, "boot.img"))
		if err != nil {
			t.Fatal(err)
		}
		// Where grub-install embeds core.img: the BIOS boot partition on
		// GPT, the gap between the MBR and the first partition on MBR.
		var first, room int64
		if l.table == "gpt" {
			first, room = parts[1].start/512, parts[1].size/512
		} else {
			first, room = 1, parts[1].start/512-1
		}
		if err := bootSetup(disk, bootImg, coreImg, first, room); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
	}

	// The disk as real tools see it.
	if l.table == "gpt" {
		if v := sh(t, "sgdisk", "-v", disk); !strings.Contains(v, "No problems found") {
			t.Fatalf("%s: sgdisk -v: %s", kind, v)
		}
	}
	if err := os.Rename(disk, out); err != nil {
		t.Fatal(err)
	}
}

// partitionBootDisk writes l's partition table with sgdisk or sfdisk.
func partitionBootDisk(t *testing.T, disk string, l bootLayout) {
	t.Helper()
	if l.table == "gpt" {
		args := []string{"-o", "-U", l.diskID}
		for _, p := range l.parts {
			end := "0"
			if p.size > 0 {
				end = strconv.FormatInt((p.start+p.size)/512-1, 10)
			}
			args = append(args, "-n", fmt.Sprintf("%d:%d:%s", p.num, p.start/512, end),
				"-t", fmt.Sprintf("%d:%s", p.num, p.typ), "-c", fmt.Sprintf("%d:%s", p.num, p.name), "-u", fmt.Sprintf("%d:%s", p.num, p.guid))
		}
		sh(t, "sgdisk", append(args, disk)...)
		return
	}
	script := "label: dos\nlabel-id: " + l.diskID + "\n"
	for _, p := range l.parts {
		var f []string
		if p.start > 0 {
			f = append(f, fmt.Sprintf("start=%dMiB", p.start>>20))
		}
		if p.size > 0 {
			f = append(f, fmt.Sprintf("size=%dMiB", p.size>>20))
		}
		script += strings.Join(append(f, "type="+p.typ), ", ") + "\n"
	}
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s\n%s", err, script, out)
	}
}

// makeBootRoot makes the ext4 root in img holding tree, its files past a
// deleted ballast (see the top of this file).
func makeBootRoot(t *testing.T, img, uuid, tree string) {
	t.Helper()
	sh(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-U", uuid, "-L", "platter-root", "-E", "nodiscard", img)
	var free int64
	for _, line := range strings.Split(sh(t, "dumpe2fs", "-h", img), "\n") {
		if v, found := strings.CutPrefix(line, "Free blocks:"); found {
			free, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if free == 0 {
		t.Fatalf("dumpe2fs -h %s: no free block count", img)
	}
	empty := filepath.Join(filepath.Dir(img), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "write %s ballast\nfallocate /ballast 0 %d\n", empty, free*6/10)
	err := filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == tree {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		fmt.Fprintf(&script, "cd /%s\n", filepath.ToSlash(filepath.Dir(rel)))
		if d.IsDir() {
			fmt.Fprintf(&script, "mkdir %s\n", d.Name())
		} else {
			fmt.Fprintf(&script, "write %s %s\n", p, d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	script.WriteString("cd /\nrm /ballast\n")
	cmds := filepath.Join(filepath.Dir(img), "debugfs.cmds")
	if err := os.WriteFile(cmds, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if complaint := bootDebugfsError(sh(t, "debugfs", "-w", "-f", cmds, img)); complaint != "" {
		t.Fatalf("debugfs filling the root: %s", complaint)
	}
	sh(t, "e2fsck", "-fn", img)
}

// bootDebugfsError is the first complaint in debugfs's output (it exits 0
// whatever its commands did).
func bootDebugfsError(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs ") && !strings.HasPrefix(line, "debugfs: ") && !strings.HasPrefix(line, "Allocated inode:") {
			return line
		}
	}
	return ""
}

// makeGrubCore makes GRUB's core image for platform, as grub-install
// does: the modules to read the table and the root, and an early config
// that finds the root by UUID and sets the prefix to /boot/grub on it.
func makeGrubCore(t *testing.T, dir string, l bootLayout, platform, out string) {
	t.Helper()
	partmap := "part_gpt"
	hint := fmt.Sprintf("hd0,gpt%d", l.root)
	if l.table == "dos" {
		partmap = "part_msdos"
		hint = fmt.Sprintf("hd0,msdos%d", l.root)
	}
	early := filepath.Join(dir, "load-"+platform+".cfg")
	cfg := fmt.Sprintf("search.fs_uuid %s root %s\nset prefix=($root)'/boot/grub'\n", l.rootUUID, hint)
	if err := os.WriteFile(early, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	mods := []string{partmap, "ext2", "search_fs_uuid"}
	if platform == "i386-pc" {
		mods = append([]string{"biosdisk"}, mods...)
	}
	sh(t, "grub-mkimage", append([]string{"-O", platform, "-o", out, "-c", early, "-p", "/boot/grub"}, mods...)...)
}

// GRUB's boot.img fields (grub/i386/pc/boot.h) and the size of one of
// diskboot.img's block list entries (start u64, length u16, segment u16).
const (
	grubBPBStart      = 0x03
	grubBPBEnd        = 0x5a
	grubKernelSector  = 0x5c
	grubBootDrive     = 0x64
	grubDriveCheck    = 0x66
	grubWindowsNT     = 0x1b8
	grubPartEnd       = 0x1fe
	grubBlocklistSize = 12
	grubKernelSeg     = 0x800
)

// bootSetup installs GRUB's BIOS boot code into disk as grub-bios-setup
// does when it embeds (without Reed-Solomon codes): core.img at sectors
// [first, first+room) — the first sector, diskboot.img, lists where the
// rest lies — and boot.img in sector 0 with the first sector's number,
// keeping the sector's BPB area and partition table.
func bootSetup(disk string, bootImg, coreImg []byte, first, room int64) error {
	if len(bootImg) != 512 {
		return fmt.Errorf("boot.img is %d bytes, want 512", len(bootImg))
	}
	nsec := (int64(len(coreImg)) + 511) / 512
	if nsec < 2 || nsec > room {
		return fmt.Errorf("core.img is %d sectors; the embedding area has %d", nsec, room)
	}
	core := make([]byte, nsec*512)
	copy(core, coreImg)
	// Clean out diskboot.img's block list (from its end backwards, up to
	// the terminator), then list sectors first+1.. as one run loaded at
	// the segment right after the first sector's.
	for off := 512 - grubBlocklistSize; ; off -= grubBlocklistSize {
		if off <= 0 {
			return errors.New("core.img has no block list terminator")
		}
		entry := core[off : off+grubBlocklistSize]
		if binary.LittleEndian.Uint16(entry[8:]) == 0 {
			break
		}
		clear(entry)
	}
	entry := core[512-grubBlocklistSize:]
	binary.LittleEndian.PutUint64(entry[0:], uint64(first+1))
	binary.LittleEndian.PutUint16(entry[8:], uint16(nsec-1))
	binary.LittleEndian.PutUint16(entry[10:], grubKernelSeg+512>>4)
	clear(core[512-2*grubBlocklistSize : 512-grubBlocklistSize])

	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	old := make([]byte, 512)
	if _, err := f.ReadAt(old, 0); err != nil {
		return fmt.Errorf("read sector 0: %w", err)
	}
	boot := bytes.Clone(bootImg)
	copy(boot[grubBPBStart:grubBPBEnd], old[grubBPBStart:grubBPBEnd])
	copy(boot[grubWindowsNT:grubPartEnd], old[grubWindowsNT:grubPartEnd])
	boot[grubBootDrive] = 0xff
	boot[grubDriveCheck], boot[grubDriveCheck+1] = 0x90, 0x90 // a hard disk: no floppy probe
	binary.LittleEndian.PutUint64(boot[grubKernelSector:], uint64(first))
	if _, err := f.WriteAt(core, first*512); err != nil {
		return fmt.Errorf("write core.img at sector %d: %w", first, err)
	}
	if _, err := f.WriteAt(boot, 0); err != nil {
		return fmt.Errorf("write boot.img: %w", err)
	}
	return f.Close()
}

// copyIntoSparse writes src into dst at byte off, skipping blocks of
// zeroes (dst holds zeroes there: a new sparse file).
func copyIntoSparse(t *testing.T, dst string, off int64, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for at := int64(0); ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off+at); werr != nil {
				t.Fatal(werr)
			}
		}
		at += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// bootReport is what the guest's PLATTER-BOOT-OK line said.
type bootReport struct {
	RootUUID    string // read from the mounted root's superblock
	Dev         string // the root's block device in the guest: vda2, vda6
	Start, Size int64  // the root partition's place on the disk, bytes
	FSSize      int64  // the root filesystem's size, bytes
	Files       int    // files checked against their SHA-256
	Kernel      string
	// Run is the marker the guest made up for this boot; Wrote says it
	// wrote it to /var/lib/platter/boot-run on the root (a disk it may
	// write: platter boot's), not that the root was read-only.
	Run   string
	Wrote bool
}

var bootLine = regexp.MustCompile(`PLATTER-BOOT-OK root=(\S+) dev=(\S+) start=(\d+) size=(\d+) fs=(\d+) files=(\d+) kernel=(\S+)(?: run=([0-9a-f-]+))?`)

// bootWrote is the guest's line after it wrote its run's marker.
var bootWrote = regexp.MustCompile(`PLATTER-BOOT-WROTE run=([0-9a-f-]+) `)

// bootFiles is how many files the guest checks on every fixture.
func bootFiles() int {
	n := 5 // kernel, initramfs, grub.cfg, normal.mod, linux.mod
	for _, f := range bootFiller {
		n += f.n
	}
	return n
}

// parseBootLog finds the guest's line in a serial log and checks it
// against the fixture kind.
func parseBootLog(log string, kind bootKind) (bootReport, error) {
	if i := strings.Index(log, "PLATTER-BOOT-FAIL"); i >= 0 {
		line, _, _ := strings.Cut(log[i:], "\n")
		return bootReport{}, fmt.Errorf("the guest failed: %s", strings.TrimSpace(line))
	}
	m := bootLine.FindStringSubmatch(log)
	if m == nil {
		return bootReport{}, errors.New("the guest printed no PLATTER-BOOT-OK line")
	}
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	r := bootReport{RootUUID: m[1], Dev: m[2], Start: num(m[3]), Size: num(m[4]), FSSize: num(m[5]), Files: int(num(m[6])), Kernel: m[7], Run: m[8]}
	if w := bootWrote.FindStringSubmatch(log); w != nil {
		if w[1] != r.Run {
			return r, fmt.Errorf("the guest wrote marker %s, its line said run=%s", w[1], r.Run)
		}
		r.Wrote = true
	}
	if want := bootLayouts[kind].rootUUID; r.RootUUID != want {
		return r, fmt.Errorf("the guest mounted a root with UUID %s, want %s", r.RootUUID, want)
	}
	if r.Files != bootFiles() {
		return r, fmt.Errorf("the guest checked %d files, want %d", r.Files, bootFiles())
	}
	return r, nil
}

// bootRun is one boot of a disk in qemu.
type bootRun struct {
	Serial string        // everything on the serial console
	Took   time.Duration // until qemu ended or was stopped
	Accel  string        // kvm or tcg
	End    string        // "exited", "timeout", or the dead end seen
}

// bootDeadEnds are what firmware, GRUB or the kernel print where a boot
// stops for good; the VM is stopped there rather than at the timeout.
var bootDeadEnds = []string{
	"No bootable device", // SeaBIOS, after trying every disk
	"grub rescue>",       // GRUB without its prefix (no root, no normal.mod)
	"grub>",              // GRUB at its prompt: grub.cfg did not boot
	"EFI Internal Shell", // OVMF falls back to its shell: nothing else boots
	"Kernel panic",       // (panic=-1 and -no-reboot end qemu anyway)
	"PLATTER-BOOT-FAIL",  // the fixture's /init
}

// bootAccel is tcg unless PLATTER_BOOT_ACCEL says kvm. This machine has
// /dev/kvm, but under it (nested) a Linux guest hangs as its kernel starts,
// with any -cpu, while TCG boots a fixture in about 11 s.
func bootAccel() string {
	if os.Getenv("PLATTER_BOOT_ACCEL") == "kvm" {
		return "kvm"
	}
	return "tcg"
}

// bootTimeout bounds one boot. With TCG a fixture boots in 8-12 s on the
// 2-core machine, up to 20 s while other work keeps a load of 8 on it;
// most of it is GRUB reading the kernel through the BIOS and the kernel
// unpacking itself, with nothing on the serial console. A boot that goes
// wrong mostly stops at once at one of bootDeadEnds; the timeout is for
// the rest (a hang in boot code), at six times the slowest boot seen.
func bootTimeout(accel string) time.Duration {
	if accel == "kvm" {
		return 30 * time.Second
	}
	return 120 * time.Second
}

// bootVM boots disk (read-only) with kind's firmware and returns what
// happened; it fails the test only when qemu cannot start.
func bootVM(t *testing.T, disk string, kind bootKind) bootRun {
	t.Helper()
	needTools(t, "qemu-system-x86_64")
	l := bootLayouts[kind]
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial.log")
	accel := bootAccel()
	args := []string{"-nodefaults", "-nographic", "-monitor", "none", "-no-reboot", "-m", "256",
		"-accel", accel, "-serial", "file:" + serial,
		"-boot", "strict=on,reboot-timeout=0",
		"-drive", "file=" + disk + ",format=raw,if=virtio,readonly=on"}
	if l.firmware == "uefi" {
		code := "/usr/share/OVMF/OVMF_CODE.fd"
		if _, err := os.Stat(code); err != nil {
			t.Fatalf("OVMF is not installed (ovmf; make deps): %v", err)
		}
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		sh(t, "cp", "/usr/share/OVMF/OVMF_VARS.fd", vars)
		args = append(args, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	}
	timeout := bootTimeout(accel)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	qemu.Stdout, qemu.Stderr = &stderr, &stderr
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- qemu.Wait() }()
	run := bootRun{Accel: accel}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	read := func() string { b, _ := os.ReadFile(serial); return string(b) }
wait:
	for {
		select {
		case err := <-done:
			// qemu exits 0 when the guest powers off or resets (-no-reboot).
			switch {
			case ctx.Err() != nil:
				run.End = "timeout"
			case err != nil:
				run.End = fmt.Sprintf("qemu failed (%v): %s", err, strings.TrimSpace(stderr.String()))
			default:
				run.End = "exited"
			}
			break wait
		case <-tick.C:
			// GRUB and the firmware draw with terminal escapes, which
			// may land inside the words looked for ("g\x1b[08;02Hrub
			// rescue>"): they are taken out first.
			log := terminalEscapes.ReplaceAllString(read(), "")
			for _, dead := range bootDeadEnds {
				if strings.Contains(log, dead) && !strings.Contains(log, "PLATTER-BOOT-OK") {
					// Let the guest finish its line, then stop it.
					time.Sleep(500 * time.Millisecond)
					qemu.Process.Kill()
					<-done
					run.End = dead
					break wait
				}
			}
		}
	}
	run.Took = time.Since(start)
	run.Serial = read()
	if run.End == "exited" && !strings.Contains(run.Serial, "PLATTER-BOOT-OK") {
		// It ended by itself (-no-reboot) at a dead end: name it.
		for _, dead := range bootDeadEnds {
			if strings.Contains(run.Serial, dead) {
				run.End = dead
				break
			}
		}
	}
	return run
}

// bootOK boots disk and fails the test unless the guest found the root
// of that kind's fixture by its UUID and every file on it checked.
func bootOK(t *testing.T, disk string, kind bootKind) bootReport {
	t.Helper()
	run := bootVM(t, disk, kind)
	r, err := parseBootLog(run.Serial, kind)
	if err != nil {
		t.Fatalf("%s did not boot (%s, %s after %v): %v\nlast of the serial console:\n%s",
			filepath.Base(disk), run.Accel, run.End, run.Took.Round(time.Millisecond), err, bootTail(run.Serial))
	}
	t.Logf("%s booted in %v (%s): %s at byte %d, %d-byte partition, %d-byte filesystem, %d files checked, kernel %s",
		filepath.Base(disk), run.Took.Round(time.Millisecond), run.Accel, r.Dev, r.Start, r.Size, r.FSSize, r.Files, r.Kernel)
	return r
}

// bootFails boots disk and fails the test unless the boot stopped at the
// dead end want (one of bootDeadEnds), so that a check that a broken disk
// does not boot cannot pass by qemu failing, or by a timeout.
func bootFails(t *testing.T, disk string, kind bootKind, want string) bootRun {
	t.Helper()
	run := bootVM(t, disk, kind)
	if run.End != want || strings.Contains(run.Serial, "PLATTER-BOOT-OK") {
		t.Fatalf("%s: the boot ended with %q after %v, want %q; serial console:\n%s", filepath.Base(disk), run.End, run.Took.Round(time.Millisecond), want, bootTail(run.Serial))
	}
	t.Logf("%s did not boot, as it should not: %q after %v (%s)", filepath.Base(disk), run.End, run.Took.Round(time.Millisecond), run.Accel)
	return run
}

// bootTail is the last 2 KiB of a serial log.
func bootTail(log string) string {
	if len(log) > 2048 {
		log = log[len(log)-2048:]
	}
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		b.WriteString("\t" + strings.TrimRight(sc.Text(), "\r") + "\n")
	}
	return b.String()
}

// Each boot fixture is what bootLayouts says, as real tools see it, its
// root shrinks with resize2fs -M only by moving its files, and it boots.
func TestBootFixtures(t *testing.T) {
	for _, kind := range bootKinds {
		t.Run(string(kind), func(t *testing.T) {
			l := bootLayouts[kind]
			disk := bootDisk(t, kind)
			parts := sfdiskParts(t, disk)
			for _, p := range l.parts {
				got := parts[p.num]
				if p.start > 0 && got.start != p.start || p.size > 0 && p.typ != "5" && got.size != p.size {
					t.Errorf("partition %d is %+v, want start %d size %d", p.num, got, p.start, p.size)
				}
				if p.fs == "" {
					continue
				}
				img := extract(t, disk, got)
				if uuid := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "UUID", img)); uuid != p.uuid {
					t.Errorf("partition %d: blkid says UUID %q, want %q", p.num, uuid, p.uuid)
				}
				if p.num == l.root {
					checkBootRoot(t, img)
				}
			}
			r := bootOK(t, disk, kind)
			root := parts[l.root]
			if r.Dev != fmt.Sprintf("vda%d", l.root) || r.Start != root.start || r.Size != root.size || r.FSSize > root.size || r.FSSize <= root.size-4096 {
				t.Errorf("the guest saw the root as %s at byte %d, %d bytes, filesystem %d bytes; want vda%d at %d, %d bytes, filling it",
					r.Dev, r.Start, r.Size, r.FSSize, l.root, root.start, root.size)
			}
		})
	}
}

// checkBootRoot judges a fixture's root with e2fsprogs: clean, its
// kernel past the middle, and shrinkable by resize2fs -M to under a third.
func checkBootRoot(t *testing.T, img string) {
	t.Helper()
	sh(t, "e2fsck", "-fn", img)
	count := func(field string) int64 {
		for _, line := range strings.Split(sh(t, "dumpe2fs", "-h", img), "\n") {
			if v, found := strings.CutPrefix(line, field+":"); found {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
		t.Fatalf("dumpe2fs -h %s: no %s", img, field)
		return 0
	}
	blocks := count("Block count")
	first, err := strconv.ParseInt(strings.TrimSpace(lastLine(sh(t, "debugfs", "-R", "bmap /boot/vmlinuz 0", img))), 10, 64)
	if err != nil || first < blocks/2 {
		t.Errorf("the kernel's first block is %d (%v) of %d: not past the middle, a shrink would not move it", first, err, blocks)
	}
	sh(t, "resize2fs", "-M", img)
	sh(t, "e2fsck", "-fn", img)
	after := count("Block count")
	if after*3 > blocks {
		t.Errorf("resize2fs -M shrank the root from %d to %d blocks, want under a third", blocks, after)
	}
	t.Logf("the root's kernel starts at block %d of %d; resize2fs -M shrinks it to %d blocks", first, blocks, after)
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// A disk imaged by create and put back by restore into a new file boots
// as its source does: the boot code, the BIOS boot partition or the ESP,
// and the root come back where the firmware, GRUB and the kernel look.
func TestBootRestored(t *testing.T) {
	for _, kind := range bootKinds {
		t.Run(string(kind), func(t *testing.T) {
			disk := bootDisk(t, kind)
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.platter")
			ok(t, "create", "--progress", "none", disk, img)
			back := filepath.Join(dir, "restored.img")
			ok(t, "restore", "--yes", "--progress", "none", img, back)
			r := bootOK(t, back, kind)
			root := sfdiskParts(t, disk)[bootLayouts[kind].root]
			if r.Start != root.start || r.Size != root.size {
				t.Errorf("the restored root is at byte %d, %d bytes; the source's at %d, %d bytes", r.Start, r.Size, root.start, root.size)
			}
		})
	}
}

// A disk restored with --layout fit onto half its size, or with --layout
// grow onto a larger one, still boots: GRUB finds the root by its UUID,
// the kernel mounts it with every file intact, and the root is as large
// as the new layout says. On the MBR disk fit moves the root (a logical
// partition, behind a new EBR) down; grow is tried there, where the
// extended partition has to grow with it.
func TestBootFitGrow(t *testing.T) {
	cases := []struct {
		kind   bootKind
		layout string
		size   int64
	}{
		{bootBIOSGPT, "fit", 160 << 20},
		{bootUEFIGPT, "fit", 160 << 20},
		{bootBIOSMBR, "fit", 160 << 20},
		{bootBIOSMBR, "grow", 512 << 20},
	}
	for _, c := range cases {
		t.Run(string(c.kind)+"-"+c.layout, func(t *testing.T) {
			disk := bootDisk(t, c.kind)
			img := filepath.Join(t.TempDir(), "disk.platter")
			ok(t, "create", "--progress", "none", disk, img)
			target := sizedFile(t, c.size)
			ok(t, "restore", "--progress", "none", "--layout", c.layout, img, target)
			r := bootOK(t, target, c.kind)
			was := sfdiskParts(t, disk)[bootLayouts[c.kind].root]
			now := sfdiskParts(t, target)[bootLayouts[c.kind].root]
			grown := c.layout == "grow" // the grown filesystem fills its partition
			if r.Start != now.start || r.Size != now.size || r.FSSize > r.Size || (grown && r.FSSize <= r.Size-4096) {
				t.Errorf("the guest saw the root at byte %d, %d bytes, filesystem %d bytes; the table says %d, %d bytes", r.Start, r.Size, r.FSSize, now.start, now.size)
			}
			switch {
			case c.layout == "fit" && (r.Size >= was.size || r.FSSize >= was.size):
				t.Errorf("fit left the root at %d bytes, filesystem %d; it was %d", r.Size, r.FSSize, was.size)
			case c.layout == "grow" && r.Size <= was.size:
				t.Errorf("grow left the root at %d bytes; it was %d", r.Size, was.size)
			case c.kind == bootBIOSMBR && c.layout == "fit" && r.Start >= was.start:
				t.Errorf("fit left the logical root at byte %d (it was at %d): it did not move down, the test proves less than it says", r.Start, was.start)
			}
		})
	}
}

// The harness can fail: a disk without its boot sector, one whose root
// GRUB cannot find by its UUID, one whose ESP lost its loader and one
// with a byte of a file changed do not boot, each stopping where it
// should; and a guest's line naming another root, or fewer files checked,
// is refused.
func TestBootBroken(t *testing.T) {
	t.Run("no boot sector", func(t *testing.T) {
		disk := bootDisk(t, bootBIOSGPT)
		writeAt(t, disk, make([]byte, 512), 0)
		bootFails(t, disk, bootBIOSGPT, "No bootable device")
	})
	t.Run("root UUID changed", func(t *testing.T) {
		disk := bootDisk(t, bootBIOSMBR)
		root := sfdiskParts(t, disk)[bootLayouts[bootBIOSMBR].root]
		writeAt(t, disk, []byte("another fs uuid!"), root.start+1024+0x68) // s_uuid
		bootFails(t, disk, bootBIOSMBR, "grub rescue>")
	})
	t.Run("no BOOTX64.EFI", func(t *testing.T) {
		disk := bootDisk(t, bootUEFIGPT)
		esp := sfdiskParts(t, disk)[1]
		sh(t, "mdel", "-i", fmt.Sprintf("%s@@%d", disk, esp.start), "::/EFI/BOOT/BOOTX64.EFI")
		bootFails(t, disk, bootUEFIGPT, "EFI Internal Shell")
	})
	t.Run("a file changed", func(t *testing.T) {
		disk := bootDisk(t, bootBIOSGPT)
		root := sfdiskParts(t, disk)[bootLayouts[bootBIOSGPT].root]
		blk, err := strconv.ParseInt(strings.TrimSpace(lastLine(sh(t, "debugfs", "-R", "bmap /usr/share/platter/big/002.bin 100", extract(t, disk, root)))), 10, 64)
		if err != nil || blk == 0 {
			t.Fatalf("debugfs bmap: %d, %v", blk, err)
		}
		writeAt(t, disk, []byte("changed"), root.start+blk*4096+7)
		if run := bootFails(t, disk, bootBIOSGPT, "PLATTER-BOOT-FAIL"); !strings.Contains(run.Serial, "PLATTER-BOOT-FAIL files differ") {
			t.Errorf("the guest failed for another reason than the changed file:\n%s", bootTail(run.Serial))
		}
	})
	t.Run("wrong line", func(t *testing.T) {
		good := fmt.Sprintf("PLATTER-BOOT-OK root=%s dev=vda2 start=2097152 size=333430272 fs=333426688 files=%d kernel=6.1.0-57-cloud-amd64\r\n", bootLayouts[bootBIOSGPT].rootUUID, bootFiles())
		if _, err := parseBootLog("noise\r\n"+good, bootBIOSGPT); err != nil {
			t.Errorf("a good line is refused: %v", err)
		}
		for _, bad := range []string{
			strings.Replace(good, bootLayouts[bootBIOSGPT].rootUUID, bootLayouts[bootUEFIGPT].rootUUID, 1),
			strings.Replace(good, fmt.Sprintf("files=%d", bootFiles()), "files=3", 1),
			"PLATTER-BOOT-FAIL files differ on /dev/vda2\r\n" + good,
			"PLATTER-BOOT-OK root=\r\n",
			"",
		} {
			if r, err := parseBootLog(bad, bootBIOSGPT); err == nil {
				t.Errorf("the line %q is taken as a boot: %+v", bad, r)
			}
		}
	})
}

// bootDynamic tells whether an executable asks for a program interpreter
// (the dynamic linker), which an initramfs without libc lacks.
func bootDynamic(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// terminalEscapes are the ANSI control sequences a serial console
// carries: CSI sequences (ESC [ ... letter) and two-byte escapes.
var terminalEscapes = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>])`)
