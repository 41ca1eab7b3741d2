#!/bin/bash
# make demo: build a small GPT disk with real tools (an EFI FAT32 partition
# and an ext4 partition with files), image it, verify it, show it, restore
# it to a new file and check the result with the filesystems' own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
P=$PWD/bin/platter
W=$(mktemp -d /tmp/platter-demo.XXXXXX)
trap 'rm -rf "$W"' EXIT
export PATH="$PATH:/usr/sbin:/sbin"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "== making a sample disk in $W (GPT: EFI FAT32 + ext4) =="
mkdir -p "$W/files/docs" "$W/efi/EFI/BOOT"
cp -r /usr/share/doc/e2fsprogs "$W/files/docs/" 2>/dev/null || true
head -c 3000000 /dev/urandom > "$W/files/random.bin"
seq 1 200000 > "$W/files/numbers.txt"
ln -s numbers.txt "$W/files/link-to-numbers"
echo "not really a boot loader" > "$W/efi/EFI/BOOT/BOOTX64.EFI"
truncate -s 256M "$W/disk.img"
sgdisk -n 1:1M:+40M -t 1:EF00 -c 1:EFI -n 2:0:0 -t 2:8300 -c 2:root "$W/disk.img" >/dev/null
mkfs.fat -F 32 -s 1 -C "$W/p1.img" $((40 * 1024)) >/dev/null
mcopy -s -i "$W/p1.img" "$W/efi/EFI" ::/
p2_start=$(sgdisk -i 2 "$W/disk.img" | awk '/First sector/ {print $3}')
p2_end=$(sgdisk -i 2 "$W/disk.img" | awk '/Last sector/ {print $3}')
mkfs.ext4 -q -d "$W/files" "$W/p2.img" $(( (p2_end - p2_start + 1) / 2 ))K
dd if="$W/p1.img" of="$W/disk.img" bs=1M seek=1 conv=notrunc status=none
dd if="$W/p2.img" of="$W/disk.img" bs=512 seek="$p2_start" conv=notrunc status=none

step platter create disk.img disk.platter
"$P" create "$W/disk.img" "$W/disk.platter"
step platter verify disk.platter
"$P" verify "$W/disk.platter"
step platter info disk.platter
"$P" info "$W/disk.platter"
step platter restore disk.platter restored.img
"$P" restore "$W/disk.platter" "$W/restored.img"

echo
echo "== checking the restored disk with real tools =="
diff <(sfdisk -d "$W/disk.img" | sed "s#$W/disk.img#DISK#") <(sfdisk -d "$W/restored.img" | sed "s#$W/restored.img#DISK#") && echo "sfdisk -d: identical partition tables"
dd if="$W/restored.img" of="$W/r2.img" bs=512 skip="$p2_start" count=$((p2_end - p2_start + 1)) status=none
e2fsck -fn "$W/r2.img" >/dev/null 2>&1 && echo "e2fsck -fn: ext4 partition clean"
mkdir "$W/out"
debugfs -R "rdump / $W/out" "$W/r2.img" >/dev/null 2>&1
diff -r --no-dereference "$W/files" "$W/out" -x lost+found && echo "every file on the ext4 partition is identical"
dd if="$W/restored.img" of="$W/r1.img" bs=1M skip=1 count=40 status=none
fsck.fat -n "$W/r1.img" >/dev/null && echo "fsck.fat -n: EFI partition clean"
mtype -i "$W/r1.img" ::/EFI/BOOT/BOOTX64.EFI | cmp - "$W/efi/EFI/BOOT/BOOTX64.EFI" && echo "the boot loader file is identical"
echo "sizes: source $(du -h --apparent-size "$W/disk.img" | cut -f1), image $(du -h "$W/disk.platter" | cut -f1), restored file uses $(du -h "$W/restored.img" | cut -f1) on disk (sparse)"
