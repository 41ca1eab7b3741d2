package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platter-dev/platter/internal/tooltest"
)

// Filesystems written by a Linux kernel's own drivers, where this
// machine's kernel has none (no ntfs3, no vfat): a Debian kernel that has
// them as modules (`make ntfs3kernel` fetches linux-image-6.12-amd64's
// package) boots under qemu with a busybox initramfs whose /init mounts
// the volume, runs a script in it, unmounts it and powers off.
//
// NTFS written by ntfs3 (issue 14.4: "a volume written by ntfs3 shows
// an empty directory that holds two files") is judged as every NTFS test
// judges one: platter's ls -R, extract and mount --files show what
// ntfs-3g and ntfsls show. A small FAT32 made by mkfs.fat -F 32 (issue
// 14.2), which mtools cannot read or write, is filled by the kernel's
// vfat and judged by the kernel's vfat and fsck.fat.

// ntfs3KernelDeb is the kernel package `make ntfs3kernel` fetched.
func ntfs3KernelDeb(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "platter", "ntfs3kernel")
	debs, _ := filepath.Glob(filepath.Join(dir, "linux-image-*-amd64_*_amd64.deb"))
	if len(debs) == 0 {
		t.Fatalf("no kernel package in %s: `make ntfs3kernel` fetches it (make e2e does)", dir)
	}
	sort.Strings(debs)
	return debs[len(debs)-1]
}

// vmInit is the initramfs's /init: it loads @MODULES@, runs @MOUNT@ (a
// mount of /dev/vda at /mnt), then @SCRIPT@ in /mnt, unmounts and
// powers off; VM-OK on the console says all went well.
const vmInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "VM-FAIL $*"; poweroff -f; }
for m in @MODULES@; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
i=0
until [ -b /dev/vda ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no /dev/vda"; sleep 0.1
done
mkdir -p /mnt
@MOUNT@ || fail "@MOUNT@"
cd /mnt || fail "cd /mnt"
set -e
@SCRIPT@
set +e
cd /
umount /mnt || fail "umount"
echo VM-OK
poweroff -f
`

// vmModules are the modules vmKernel unpacks: what the tests' VMs load.
var vmModules = []string{"virtio_blk", "ntfs3", "fat", "vfat", "nls_cp437", "nls_utf8", "crc-itu-t", "cdrom", "udf"}

var (
	vmKernelOnce sync.Once
	vmKernelOut  vmKernelFiles
)

type vmKernelFiles struct {
	vmlinuz, modules string // the kernel; a directory of NAME.ko, uncompressed
}

// vmKernel unpacks the kernel of `make ntfs3kernel` and vmModules from
// its package, once per run (only those: the package unpacks to 400 MB).
func vmKernel(t *testing.T) vmKernelFiles {
	t.Helper()
	vmKernelOnce.Do(func() {
		needTools(t, "dpkg-deb", "xz")
		deb := ntfs3KernelDeb(t)
		dir := filepath.Join(shared, "vm-kernel")
		x := filepath.Join(dir, "deb")
		mods := filepath.Join(dir, "modules")
		os.MkdirAll(x, 0o755)
		os.MkdirAll(mods, 0o755)
		defer os.RemoveAll(x)
		pats := []string{"./boot/vmlinuz-*"}
		for _, m := range vmModules {
			pats = append(pats, "*/"+m+".ko*")
		}
		sh(t, "bash", append([]string{"-c", `set -eo pipefail; deb=$1 x=$2; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards "$@"`, "-", deb, x}, pats...)...)
		kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
		if len(kernels) != 1 {
			t.Fatalf("%s holds kernels %q, want one", deb, kernels)
		}
		vmlinuz := filepath.Join(dir, "vmlinuz")
		if err := os.Rename(kernels[0], vmlinuz); err != nil {
			t.Fatal(err)
		}
		for _, name := range vmModules {
			found, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", "*", "*", name+".ko*"))
			if len(found) == 0 { // kernel/lib/crc-itu-t.ko: one level deep
				found, _ = filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", "*", name+".ko*"))
			}
			if len(found) != 1 {
				t.Fatalf("%s holds %q for %s, want one module", deb, found, name)
			}
			out := filepath.Join(mods, name+".ko")
			if strings.HasSuffix(found[0], ".xz") {
				sh(t, "bash", "-c", `xz -dc "$1" > "$2"`, "-", found[0], out)
			} else {
				sh(t, "cp", found[0], out)
			}
		}
		vmKernelOut = vmKernelFiles{vmlinuz: vmlinuz, modules: mods}
	})
	if vmKernelOut.vmlinuz == "" {
		t.Fatal("the VMs' kernel was not unpacked (an earlier test failed doing it)")
	}
	return vmKernelOut
}

// vmRun boots the kernel of `make ntfs3kernel` (a Debian kernel with
// the filesystems this machine's kernel lacks, as modules) under qemu on
// img, loads mods (and virtio_blk) in that order, runs mount (of
// /dev/vda at /mnt) and then script, a busybox sh script, in /mnt; it
// returns what the VM wrote on its console.
func vmRun(t *testing.T, img string, mods []string, mount, script string) string {
	t.Helper()
	needTools(t, "busybox", "gzip", "qemu-system-x86_64")
	k := vmKernel(t)
	mods = append([]string{"virtio_blk"}, mods...)
	dir := t.TempDir()
	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "mnt", "lib/modules"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, name := range mods {
		if _, err := os.Stat(filepath.Join(k.modules, name+".ko")); err != nil {
			t.Fatalf("the VM's kernel has no module %s (vmModules lists those unpacked): %v", name, err)
		}
		sh(t, "cp", filepath.Join(k.modules, name+".ko"), filepath.Join(root, "lib", "modules", name+".ko"))
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if bootDynamic(t, busybox) {
		t.Fatalf("%s is linked dynamically: the initramfs needs busybox-static's (make deps)", busybox)
	}
	sh(t, "cp", busybox, filepath.Join(root, "bin", "busybox"))
	init := strings.NewReplacer("@MODULES@", strings.Join(mods, " "), "@MOUNT@", mount, "@SCRIPT@", script).Replace(vmInit)
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.img")
	sh(t, "bash", "-c", `set -eo pipefail; cd "$1" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$2"`, "-", root, initrd)

	serial := filepath.Join(dir, "serial.log")
	accel := bootAccel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout(accel))
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-nodefaults", "-nographic", "-monitor", "none",
		"-no-reboot", "-m", "512", "-accel", accel, "-serial", "file:"+serial,
		"-kernel", k.vmlinuz, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet loglevel=1",
		"-drive", "file="+img+",format=raw,if=virtio")
	start := time.Now()
	out, err := qemu.CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil || !strings.Contains(string(log), "VM-OK") {
		t.Fatalf("the VM did not run its script (%v, %v):\n%s\n%s", err, time.Since(start).Round(time.Second), out, log)
	}
	t.Logf("the VM ran its script in %v", time.Since(start).Round(time.Second))
	return string(log)
}

// A volume made by mkntfs and written by ntfs3: a directory of two
// files, one of 300 (an index in $INDEX_ALLOCATION), some of them
// removed again, a tree, a file of 3 MiB, a symlink.
func TestNTFSDirsNtfs3(t *testing.T) {
	img := sparseFile(t, filepath.Join(t.TempDir(), "ntfs.img"), 128<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", img)
	vmRun(t, img, []string{"ntfs3"}, "mount -t ntfs3 /dev/vda /mnt", `
grep -q ' /mnt ntfs3 ' /proc/mounts
mkdir two
echo first > two/a.txt
echo second > two/b.txt
mkdir many
i=0
while [ $i -lt 300 ]; do
	echo "file $i of many" > "many/a file with a long name, number $i.txt"
	i=$((i + 1))
done
i=0
while [ $i -lt 300 ]; do
	rm "many/a file with a long name, number $i.txt"
	i=$((i + 7))
done
mkdir -p deep/er/still
echo deep > deep/er/still/leaf
head -c 3145728 /dev/urandom > deep/big.bin
ln -s ../two/a.txt deep/link
sync
`)
	want := judgeNTFS(t, img)
	for p, v := range map[string]string{"two": "dir", "many": "dir"} {
		if want[p] != v {
			t.Fatalf("ntfs-3g shows /%s as %q", p, want[p])
		}
	}
	n := 0
	for p := range want {
		if strings.HasPrefix(p, "many/") {
			n++
		}
	}
	if n != 300-43 {
		t.Errorf("ntfs-3g shows %d files in /many, want %d", n, 300-43)
	}
	if want["two/a.txt"] == "" || want["two/b.txt"] == "" {
		t.Errorf("ntfs-3g does not show /two's files: %q %q", want["two/a.txt"], want["two/b.txt"])
	}
}

// vfatModules are what the 6.12 kernel needs to mount a FAT with
// iocharset=utf8 (its default code page is 437).
var vfatModules = []string{"fat", "vfat", "nls_cp437", "nls_utf8"}

// vfatSums has the kernel's vfat read img and returns its files' SHA-256
// sums, by path, and its directories (as "dir").
func vfatSums(t *testing.T, img string) map[string]string {
	t.Helper()
	log := vmRun(t, img, vfatModules, "mount -t vfat -o ro,iocharset=utf8 /dev/vda /mnt", `
find . -mindepth 1 -type d | sed 's/^/PLATTER-DIR /'
find . -type f -exec sha256sum {} \; | sed 's/^/PLATTER-SUM /'
`)
	got := map[string]string{}
	for _, l := range strings.Split(strings.ReplaceAll(log, "\r", ""), "\n") {
		// A kernel message may share the console line before the
		// marker.
		if _, d, ok := strings.Cut(l, "PLATTER-DIR ./"); ok {
			got[d] = "dir"
		} else if _, f, ok := strings.Cut(l, "PLATTER-SUM "); ok {
			sum, p, ok := strings.Cut(f, "  ./")
			if !ok {
				t.Fatalf("sha256sum line %q", l)
			}
			got[p] = sum
		}
	}
	return got
}

// treeSums is vfatSums of a directory on this machine.
func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for p, v := range tooltest.Manifest(t, root) {
		if v == "dir" {
			got[p] = v
			continue
		}
		f, err := os.Open(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		got[p] = hex.EncodeToString(h.Sum(nil))
	}
	return got
}

// A FAT32 of fewer than 65525 clusters, as mkfs.fat -F 32 makes it on a
// 16 or 32 MiB device, filled by the kernel's vfat (mtools can neither write
// nor read it): platter calls it fat32, stores its used clusters only,
// and the restored copy is clean for fsck.fat and holds every file, as
// the kernel reads them; ls and extract read it too. 05b304c read it as
// FAT16, and its files restored as zeros.
func TestTrustSmallFAT32Kernel(t *testing.T) {
	for _, mib := range []int64{16, 32} {
		t.Run(fmt.Sprintf("%dMiB", mib), func(t *testing.T) { smallFAT32Kernel(t, mib) })
	}
}

func smallFAT32Kernel(t *testing.T, mib int64) {
	src := trustFile(t, mib<<20)
	sh(t, "mkfs.fat", "-F", "32", src)
	boot := readAt(t, src, 512, 0)
	le := binary.LittleEndian
	total, spc := int64(le.Uint16(boot[0x13:])), int64(boot[0x0d])
	if total == 0 {
		total = int64(le.Uint32(boot[0x20:]))
	}
	dataStart := int64(le.Uint16(boot[0x0e:])) + int64(boot[0x10])*int64(le.Uint32(boot[0x24:]))
	if le.Uint16(boot[0x16:]) != 0 || (total-dataStart)/spc >= 65525 {
		t.Fatalf("mkfs.fat -F 32 made %d clusters (16-bit FAT size %d): not a small FAT32", (total-dataStart)/spc, le.Uint16(boot[0x16:]))
	}
	t.Logf("mkfs.fat -F 32 made a FAT32 of %d clusters", (total-dataStart)/spc)
	vmRun(t, src, vfatModules, "mount -t vfat -o iocharset=utf8 /dev/vda /mnt", `
grep -q ' /mnt vfat ' /proc/mounts
printf hello > five.txt
mkdir -p "a directory/deeper"
i=0
while [ $i -lt 150 ]; do
	echo "file $i" > "a directory/a file with a long name $i.txt"
	i=$((i + 1))
done
head -c 5000000 /dev/urandom > "a directory/deeper/random.bin"
head -c 100000 /dev/zero > zeros.bin
sync
`)
	sh(t, "fsck.fat", "-n", src)
	if v := strings.TrimSpace(sh(t, "blkid", "-p", "-o", "value", "-s", "VERSION", src)); v != "FAT32" {
		t.Fatalf("blkid says %s", v)
	}
	want := vfatSums(t, src)
	if want["five.txt"] == "" || len(want) != 150+5 {
		t.Fatalf("the kernel reads %d entries back: %v", len(want), want)
	}

	img, back := fat32Restored(t, src)
	got := vfatSums(t, back)
	for p, v := range want {
		if got[p] != v {
			t.Errorf("%s: %q in the restored copy, %q in the source", p, got[p], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the restored copy holds %d entries, the source %d", len(got), len(want))
	}
	dest := filepath.Join(t.TempDir(), "out")
	ok(t, "extract", img, "/", dest)
	ex := treeSums(t, dest)
	for p, v := range want {
		if ex[p] != v {
			t.Errorf("extract: %s: %q, the kernel reads %q", p, ex[p], v)
		}
	}
	if len(ex) != len(want) {
		t.Errorf("extract gave %d entries, the kernel reads %d", len(ex), len(want))
	}
}
