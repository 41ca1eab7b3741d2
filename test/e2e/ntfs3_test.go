package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// NTFS written by Linux's own ntfs3 driver (issue 14.4: "a volume written
// by ntfs3 shows an empty directory that holds two files"). There is no
// ntfs3 in this machine's kernel, so a Debian kernel that has it as a
// module (`make ntfs3kernel` fetches linux-image-6.12-amd64's package)
// boots under qemu with a busybox initramfs whose /init mounts the
// volume with ntfs3, writes the files, unmounts it and powers off. The
// volume is then judged as every NTFS test judges one: platter's ls -R,
// extract and mount --files show what ntfs-3g and ntfsls show.

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

// ntfs3Init is the initramfs's /init: @SCRIPT@ runs with the volume
// mounted by ntfs3 at /mnt (the shell's cwd).
const ntfs3Init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "NTFS3-FAIL $*"; poweroff -f; }
for m in virtio_blk ntfs3; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
i=0
until [ -b /dev/vda ]; do
	i=$((i + 1)); [ $i -lt 100 ] || fail "no /dev/vda"; sleep 0.1
done
mkdir -p /mnt
mount -t ntfs3 /dev/vda /mnt || fail "mount -t ntfs3"
grep -q ' /mnt ntfs3 ' /proc/mounts || fail "not an ntfs3 mount: $(cat /proc/mounts)"
cd /mnt || fail "cd /mnt"
set -e
@SCRIPT@
set +e
cd /
umount /mnt || fail "umount"
echo NTFS3-OK
poweroff -f
`

// ntfs3Write boots the kernel of `make ntfs3kernel` on img (an NTFS
// volume) to run script, a busybox sh script, in its root mounted
// read-write by ntfs3.
func ntfs3Write(t *testing.T, img, script string) {
	t.Helper()
	needTools(t, "dpkg-deb", "busybox", "xz", "gzip", "qemu-system-x86_64")
	deb := ntfs3KernelDeb(t)
	dir := t.TempDir()
	x := filepath.Join(dir, "deb")
	os.Mkdir(x, 0o755)
	// Only the kernel and the two modules /init loads: the package
	// unpacks to 400 MB.
	sh(t, "bash", "-c", `set -eo pipefail; dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards './boot/vmlinuz-*' '*/fs/ntfs3/ntfs3.ko*' '*/block/virtio_blk.ko*'`, "-", deb, x)
	kernels, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("%s holds kernels %q, want one", deb, kernels)
	}
	root := filepath.Join(dir, "initramfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "mnt", "lib/modules"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, name := range []string{"ntfs3", "virtio_blk"} {
		mods, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*", "kernel", "*", "*", name+".ko*"))
		if len(mods) != 1 {
			t.Fatalf("%s holds %q for %s, want one module", deb, mods, name)
		}
		out := filepath.Join(root, "lib", "modules", name+".ko")
		if strings.HasSuffix(mods[0], ".xz") {
			sh(t, "bash", "-c", `xz -dc "$1" > "$2"`, "-", mods[0], out)
		} else {
			sh(t, "cp", mods[0], out)
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
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(strings.ReplaceAll(ntfs3Init, "@SCRIPT@", script)), 0o755); err != nil {
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
		"-kernel", kernels[0], "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet",
		"-drive", "file="+img+",format=raw,if=virtio")
	start := time.Now()
	out, err := qemu.CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil || !strings.Contains(string(log), "NTFS3-OK") {
		t.Fatalf("ntfs3 did not write the volume (%v, %v):\n%s\n%s", err, time.Since(start).Round(time.Second), out, log)
	}
	t.Logf("ntfs3 wrote the volume in %v", time.Since(start).Round(time.Second))
}

// A volume made by mkntfs and written by ntfs3: a directory of two
// files, one of 300 (an index in $INDEX_ALLOCATION), some of them
// removed again, a tree, a file of 3 MiB, a symlink.
func TestNTFSDirsNtfs3(t *testing.T) {
	img := sparseFile(t, filepath.Join(t.TempDir(), "ntfs.img"), 128<<20)
	sh(t, "mkntfs", "-q", "-F", "-Q", "-c", "4096", img)
	ntfs3Write(t, img, `
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
