#!/bin/bash
# make-v2-chain.sh PLATTER — makes v2-full.platter and v2-inc.platter
# (README.md) with PLATTER, a platter built from commit 9a3ff6e (image
# format version 2, whose layout block names no parent).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
platter=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
truncate -s 4M "$work/disk.img"
sgdisk -n 1:2048:+2M -t 1:0700 -c 1:v2data "$work/disk.img" >/dev/null
truncate -s 2M "$work/p1.fat"
mkfs.fat -F 12 -n V2DATA "$work/p1.fat" >/dev/null
printf 'written by platter 9a3ff6e, image format version 2\n' > "$work/readme.txt"
seq 1 20000 > "$work/numbers.txt"
mcopy -i "$work/p1.fat" "$work/readme.txt" "$work/numbers.txt" ::/
dd if="$work/p1.fat" of="$work/disk.img" bs=512 seek=2048 conv=notrunc status=none
fsck.fat -n "$work/p1.fat" >/dev/null
(cd "$work" && "$platter" create --progress none --chunk-size 64K disk.img v2-full.platter)
# The incremental: one file rewritten, one added; numbers.txt unchanged
# (its chunks are taken from the parent).
printf 'changed after the full image\n' > "$work/readme.txt"
seq 50000 60000 > "$work/more.txt"
mcopy -o -i "$work/p1.fat" "$work/readme.txt" "$work/more.txt" ::/
dd if="$work/p1.fat" of="$work/disk.img" bs=512 seek=2048 conv=notrunc status=none
fsck.fat -n "$work/p1.fat" >/dev/null
(cd "$work" && "$platter" create --progress none --incremental v2-full.platter disk.img v2-inc.platter)
mv "$work/v2-full.platter" "$work/v2-inc.platter" .
