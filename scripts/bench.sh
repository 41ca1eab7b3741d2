#!/bin/bash
# make bench: platter against Clonezilla's pipeline on a realistic ext4
# filesystem, side by side in one run, alternating, median of ROUNDS.
#
#   create:  partclone.extfs -c -s FS -o - | zstd -T0 -3 > X
#            platter create FS IMAGE
#   restore: zstd -d -T0 < X | partclone.extfs -r -s - -O TARGET
#            platter restore --yes IMAGE TARGET
#
# The filesystem (FS_GIB, default 3 GiB) is about half used by real
# binaries and libraries, generated text and incompressible random data,
# with random garbage in its free space. It is built once in BENCH_DIR
# (default /var/tmp/platter-bench) and reused. Needs root (loop mount).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
P=$PWD/bin/platter
DIR=${BENCH_DIR:-/var/tmp/platter-bench}
GIB=${FS_GIB:-3}
ROUNDS=${ROUNDS:-5}
FS=$DIR/ext4-${GIB}g.img
mkdir -p "$DIR"

build_fs() {
	echo "building $FS ($GIB GiB ext4, about half used)..."
	head -c $((GIB * 1024 * 1024 * 1024)) /dev/urandom > "$FS.tmp"
	mkfs.ext4 -q -F -E nodiscard "$FS.tmp"
	mnt=$(mktemp -d)
	mount -o loop "$FS.tmp" "$mnt"
	trap 'umount "$mnt" 2>/dev/null; rm -f "$FS.tmp"' EXIT
	local budget=$((GIB * 1024 / 6)) # MiB per kind: binaries, text, random
	mkdir "$mnt/bin" "$mnt/text" "$mnt/random"
	# Binaries and libraries, as found on a real system.
	find /usr/bin /usr/lib /usr/local/go -type f -printf '%s %p\n' 2>/dev/null |
		awk -v max=$((budget * 1048576)) '{ s += $1; if (s <= max) print substr($0, index($0, " ") + 1) }' > "$DIR/binaries.list"
	tar -cf - -T "$DIR/binaries.list" 2>/dev/null | tar -xf - -C "$mnt/bin"
	# Text: documentation and generated logs.
	cp -r /usr/share/doc "$mnt/text/" 2>/dev/null || true
	local i=0
	while [ "$(du -sm "$mnt/text" | cut -f1)" -lt "$budget" ]; do
		awk -v i="$i" 'BEGIN { for (n = 0; n < 200000; n++) printf "%s host%d sshd[%d]: Accepted publickey for user%d from 10.%d.%d.%d port %d\n", "2026-11-23T04:00:00Z", n % 17, 1000 + n, n % 97, n % 256, (n * 7) % 256, i, 30000 + n }' > "$mnt/text/log-$i.txt"
		i=$((i + 1))
	done
	# Incompressible: media and archives.
	for i in $(seq 1 $((budget / 64))); do head -c 64M /dev/urandom > "$mnt/random/blob-$i.bin"; done
	sync
	df -h "$mnt" | tail -1
	umount "$mnt"
	trap - EXIT
	rmdir "$mnt"
	mv "$FS.tmp" "$FS"
}

[ -f "$FS" ] || build_fs
for t in partclone.extfs zstd e2fsck /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench needs $t" >&2; exit 1; }; done

now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A T
add() { T[$1]="${T[$1]:-} $2"; }
# settle lets the disk go quiet before a timed run: the previous run's
# dirty pages written back, and the discards that deleting its output
# issues (this machine's root filesystem is mounted with -o discard)
# finished, so no run pays for another's cleanup.
settle() { sync; sleep "${SETTLE:-3}"; }
med() { echo ${T[$1]} | tr ' ' '\n' | median; }

X=$DIR/clonezilla.pc.zst
IMG=$DIR/bench.platter
TGT=$DIR/target.img
SIZE=$(stat -c %s "$FS")
cat "$FS" > /dev/null # into the page cache

for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS"
	# Every timed run starts alike: no previous output to delete, no
	# other run's dirty pages still being written back (the Clonezilla
	# pipeline does not sync its output; platter syncs its image).
	rm -f "$X"; settle; s=$(now)
	partclone.extfs -q -c -s "$FS" -o - 2>/dev/null | zstd -q -T0 -3 > "$X"
	add cz_create "$(echo "$(now) - $s" | bc)"
	rm -f "$IMG"; settle; s=$(now)
	"$P" create --progress=none "$FS" "$IMG" > /dev/null
	add pl_create "$(echo "$(now) - $s" | bc)"
	rm -f "$DIR/fast.platter"; settle; s=$(now)
	"$P" create --progress=none --compress fast "$FS" "$DIR/fast.platter" > /dev/null
	add pl_fast "$(echo "$(now) - $s" | bc)"

	rm -f "$TGT"; truncate -s "$SIZE" "$TGT"; settle; s=$(now)
	zstd -q -d -T0 < "$X" | partclone.extfs -q -r -s - -O "$TGT" 2>/dev/null
	add cz_restore "$(echo "$(now) - $s" | bc)"
	rm -f "$TGT"; truncate -s "$SIZE" "$TGT"; settle; s=$(now)
	"$P" restore --yes --progress=none "$IMG" "$TGT" > /dev/null
	add pl_restore "$(echo "$(now) - $s" | bc)"
done
e2fsck -fn "$TGT" > /dev/null 2>&1 && fsck=clean || fsck=DAMAGED

# Peak memory of create, and the ceilings: reading and hashing the used
# blocks with no compression, and each compression level.
rss=$( { /usr/bin/time -v "$P" create --force --progress=none "$FS" "$IMG" > /dev/null; } 2>&1 | awk '/Maximum resident/ { print $6 }')
levels=""
for c in none zstd:1 zstd:3 zstd:6; do
	rm -f "$DIR/level.platter"; settle; s=$(now)
	"$P" create --force --progress=none --compress "$c" "$FS" "$DIR/level.platter" > /dev/null
	t=$(echo "$(now) - $s" | bc)
	levels="$levels$(printf '| %-7s | %6.2f s | %8.1f MiB |' "$c" "$t" "$(echo "$(stat -c %s "$DIR/level.platter") / 1048576" | bc -l)")"$'\n'
done
rm -f "$DIR/level.platter"
# The raw compressor's speed on the filesystem's compressible files
# (binaries and text), one core, in independent 8 MiB blocks as Platter
# compresses: the ceiling for create at each level.
raw=$(mktemp -d)
debugfs -R "rdump /bin /text $raw" "$FS" > /dev/null 2>&1
tar -cf "$raw.tar" -C "$raw" .
rawspeed=""
for l in 1 3; do
	rawspeed="$rawspeed zstd -$l: $(zstd -b$l -B8388608 -T1 -i3 "$raw.tar" 2>&1 | tr '\r' '\n' | grep -o '[0-9.]* MB/s' | tail -2 | paste -sd, | sed 's/,/ compress, /') decompress;"
done
rawmb=$(( $(stat -c %s "$raw.tar") / 1048576 ))
rm -rf "$raw" "$raw.tar"
"$P" create --force --progress=none "$FS" "$IMG" > /dev/null
used=$("$P" info --json "$IMG" | awk -F': ' '/"used_bytes"/ { gsub(",", "", $2); print $2; exit }')

czc=$(med cz_create); plc=$(med pl_create); czr=$(med cz_restore); plr=$(med pl_restore); plf=$(med pl_fast)
czs=$(stat -c %s "$X"); pls=$(stat -c %s "$IMG"); plfs=$(stat -c %s "$DIR/fast.platter")
cat <<REPORT

Platter benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)
$(zstd --version | head -1), $(partclone.extfs -v 2>&1 | head -1 | tr -d '\r'), $("$P" --version)
filesystem: $GIB GiB ext4, $((used / 1048576)) MiB used; median of $ROUNDS alternating rounds

| step    | Clonezilla (partclone + zstd -3) | platter | ratio |
|---------|----------------------------------|---------|-------|
| create  | $(printf '%.2f s' "$czc") | $(printf '%.2f s' "$plc") | $(printf '%.2fx faster' "$(echo "$czc / $plc" | bc -l)") |
| restore | $(printf '%.2f s' "$czr") | $(printf '%.2f s' "$plr") | $(printf '%.2fx faster' "$(echo "$czr / $plr" | bc -l)") |
| size    | $(printf '%.1f MiB' "$(echo "$czs / 1048576" | bc -l)") | $(printf '%.1f MiB' "$(echo "$pls / 1048576" | bc -l)") | $(printf '%+.1f%%' "$(echo "($pls - $czs) * 100 / $czs" | bc -l)") |
| create --compress fast | $(printf '%.2f s' "$czc") | $(printf '%.2f s' "$plf") | $(printf '%.2fx faster' "$(echo "$czc / $plf" | bc -l)") |
| size, fast | $(printf '%.1f MiB' "$(echo "$czs / 1048576" | bc -l)") | $(printf '%.1f MiB' "$(echo "$plfs / 1048576" | bc -l)") | $(printf '%+.1f%%' "$(echo "($plfs - $czs) * 100 / $czs" | bc -l)") |

every run (s): Clonezilla create${T[cz_create]}; platter create${T[pl_create]}; fast${T[pl_fast]}
               Clonezilla restore${T[cz_restore]}; platter restore${T[pl_restore]}
restored filesystem: e2fsck -fn $fsck
platter create peak memory: $((rss / 1024)) MiB
create throughput: $(printf '%.0f' "$(echo "$used / 1048576 / $plc" | bc -l)") MiB/s of used data
raw zstd, one core, 8 MiB blocks, on the $rawmb MiB of binaries and text:$rawspeed

| compress | create | image size |
|----------|--------|------------|
$levels
REPORT
rm -f "$DIR/fast.platter"
[ "$fsck" = clean ]

# Incremental: about 1% of the used data changed (12 MiB of documentation
# in a tar and 4 MiB of random bytes added), then an incremental of the
# full image against a full image of the same state, alternating.
INC_SRC=$DIR/inc-src.img
cp --sparse=always "$FS" "$INC_SRC"
"$P" create --force --progress=none "$INC_SRC" "$DIR/inc-full.platter" > /dev/null
mnt=$(mktemp -d)
mount -o loop "$INC_SRC" "$mnt"
mkdir "$mnt/changed"
head -c 12M < <(tar -cf - -C /usr/share/doc . 2>/dev/null) > "$mnt/changed/docs.tar"
head -c 4M /dev/urandom > "$mnt/changed/blob.bin"
changed=$(du -sb "$mnt/changed" | cut -f1)
changedz=$(tar -C "$mnt" -cf - changed | zstd -3 -q | wc -c)
umount "$mnt"; rmdir "$mnt"
for r in $(seq 1 "$ROUNDS"); do
	rm -f "$DIR/inc.platter"; settle; s=$(now)
	"$P" create --progress=none --incremental "$DIR/inc-full.platter" "$INC_SRC" "$DIR/inc.platter" > /dev/null
	add inc "$(echo "$(now) - $s" | bc)"
	rm -f "$DIR/inc-now.platter"; settle; s=$(now)
	"$P" create --progress=none "$INC_SRC" "$DIR/inc-now.platter" > /dev/null
	add incfull "$(echo "$(now) - $s" | bc)"
done
inct=$(med inc); incf=$(med incfull); incs=$(stat -c %s "$DIR/inc.platter")
cat <<REPORT

Incremental after changing $((changed / 1048576)) MiB of $((used / 1048576)) MiB used ($(printf '%.1f' "$(echo "$changed * 100 / $used" | bc -l)") %), median of $ROUNDS alternating rounds

| | full image | incremental | ratio (target) |
|---|---|---|---|
| time | $(printf '%.2f s' "$incf") | $(printf '%.2f s' "$inct") | $(printf '%.0f %%' "$(echo "$inct * 100 / $incf" | bc -l)") of the full (≤ 25 %) |
| size | $(printf '%.1f MiB' "$(echo "$(stat -c %s "$DIR/inc-now.platter") / 1048576" | bc -l)") | $(printf '%.1f MiB' "$(echo "$incs / 1048576" | bc -l)") | $(printf '%.2fx' "$(echo "$incs / $changedz" | bc -l)") the changed data compressed with zstd -3, $(printf '%.1f MiB' "$(echo "$changedz / 1048576" | bc -l)") (≤ 1.5x) |

every run (s): incremental${T[inc]}; full${T[incfull]}
REPORT
rm -f "$INC_SRC" "$DIR/inc-full.platter" "$DIR/inc.platter" "$DIR/inc-now.platter"

# Live imaging: the same files on ext4, XFS and btrfs, imaged unmounted and
# live under a 25 MB/s writer (test/e2e/live_bench_test.go).
build_copy() { # build_copy FSTYPE: the ext4 bench filesystem's files on FSTYPE
	local out=$DIR/$1-bench.img src dst
	[ -f "$out" ] && return
	echo "building $out ($GIB GiB $1, the same files)..."
	truncate -s "${GIB}G" "$out.tmp"
	case $1 in
	xfs) mkfs.xfs -q -f -K "$out.tmp" ;;
	btrfs) mkfs.btrfs -q -f --nodiscard "$out.tmp" ;;
	esac
	src=$(mktemp -d); dst=$(mktemp -d)
	mount -o ro,loop "$FS" "$src"
	mount -o loop "$out.tmp" "$dst"
	cp -a "$src/." "$dst/"
	umount "$src" "$dst"
	rmdir "$src" "$dst"
	mv "$out.tmp" "$out"
}
# Opening an image without restoring it: FUSE and NBD against the
# restored disk file (test/e2e/open_bench_test.go).
BENCH_DIR=$DIR go test -tags bench -count=1 -timeout 30m -run '^TestBenchOpen$' -v ./test/e2e |
	grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '

if [ "${LIVE:-1}" = 1 ]; then
	ln -f "$FS" "$DIR/ext4-bench.img"
	build_copy xfs
	build_copy btrfs
	BENCH_DIR=$DIR ROUNDS=$ROUNDS go test -tags bench -count=1 -timeout 60m -run '^TestBenchLive$' -v ./test/e2e |
		grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '
fi
