#!/bin/bash
# make-v1-disk.sh PLATTER — makes v1-disk.platter (README.md) with
# PLATTER, a platter built from commit d8b4079 (image format version 1).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
platter=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
truncate -s 4M "$work/disk.img"
sgdisk -n 1:2048:+2M -t 1:0700 -c 1:v1data "$work/disk.img" >/dev/null
truncate -s 2M "$work/p1.fat"
mkfs.fat -F 12 -n V1DATA "$work/p1.fat" >/dev/null
printf 'written by platter d8b4079, image format version 1\n' > "$work/readme.txt"
seq 1 20000 > "$work/numbers.txt"
mcopy -i "$work/p1.fat" "$work/readme.txt" "$work/numbers.txt" ::/
dd if="$work/p1.fat" of="$work/disk.img" bs=512 seek=2048 conv=notrunc status=none
fsck.fat -n "$work/p1.fat" >/dev/null
rm -f v1-disk.platter
(cd "$work" && "$platter" create --progress none disk.img v1-disk.platter)
mv "$work/v1-disk.platter" .
