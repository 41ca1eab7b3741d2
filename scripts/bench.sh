#!/bin/bash
# make bench: platter against Clonezilla's pipeline on realistic ext4, XFS
# and btrfs filesystems, side by side in one run, alternating, median of
# ROUNDS.
#
#   create:  partclone.FS -c -s FS -o - | zstd -T0 -3 > X
#            platter create FS IMAGE
#   restore: zstd -d -T0 < X | partclone.FS -r -s - -O TARGET
#            platter restore --yes IMAGE TARGET
#
#   clone:   dd bs=4M of the used byte count (one sequential run, synced)
#            platter clone FS TARGET (partclone.FS -b beside them)
#
# Each filesystem (FS_GIB, default 3 GiB) is made over random data (a used
# disk's free space is not zero) and is about half used by real binaries
# and libraries, generated text and incompressible random data: the ext4
# one is filled first, XFS and btrfs get a copy of its files. They are
# built once in BENCH_DIR (default /var/tmp/platter-bench) and reused.
# FSTYPES (default "ext4 xfs btrfs") picks the filesystems compared; with
# ext4 come the compression levels, encryption, S3, and the incremental
# and open-image benchmarks. LIVE=0 skips live imaging; ONLY=encryption runs
# the encryption rows alone, ONLY=s3 the S3 rows (against MinIO on
# loopback: make minio), ONLY=delta the delta restore rows, ONLY=clone
# the clone rows, ONLY=convert the convert rows (CONVERT_FORMATS: which
# formats, default "qcow2 vhdx vmdk"), ONLY=clonezilla the Clonezilla
# image rows (import, extract's first and second open), ONLY=rescue the
# failing-disk rows (create --rescue, ddrescue), ONLY=scatter the
# incremental after scattered small changes, ONLY=track the
# changed-block tracking rows (platter track), ONLY=incremental the
# incremental after a contiguous 1 % change, ONLY=mixes the data mixes
# against the machine's ceilings (MIXES, MIX_GIB: see bench_mixes).
# Needs root (loop mount).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
P=$PWD/bin/platter
DIR=${BENCH_DIR:-/var/tmp/platter-bench}
GIB=${FS_GIB:-3}
ROUNDS=${ROUNDS:-5}
FSTYPES=${FSTYPES:-ext4 xfs btrfs}
FS=$DIR/ext4-${GIB}g.img
mkdir -p "$DIR"

fixture() { echo "$DIR/$1-${GIB}g.img"; } # the bench filesystem of type $1
garbage() { head -c $((GIB * 1024 * 1024 * 1024)) /dev/urandom > "$1"; }

build_fs() {
	echo "building $FS ($GIB GiB ext4, about half used)..."
	garbage "$FS.tmp"
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

build_copy() { # build_copy FSTYPE: the ext4 bench filesystem's files on FSTYPE
	local out src dst
	out=$(fixture "$1")
	[ -f "$out" ] && return
	echo "building $out ($GIB GiB $1, the same files)..."
	garbage "$out.tmp"
	case $1 in
	xfs) mkfs.xfs -q -f -K "$out.tmp" ;;
	btrfs) mkfs.btrfs -q -f --nodiscard "$out.tmp" ;;
	esac
	src=$(mktemp -d); dst=$(mktemp -d)
	mount -o ro,loop "$FS" "$src"
	mount -o loop "$out.tmp" "$dst"
	cp -a "$src/." "$dst/"
	sync
	df -h "$dst" | tail -1
	umount "$src" "$dst"
	rmdir "$src" "$dst"
	mv "$out.tmp" "$out"
}

partclone_of() { case $1 in ext4) echo partclone.extfs ;; *) echo "partclone.$1" ;; esac; }
need="zstd /usr/bin/time bc curl rsync qemu-img"
for fs in $FSTYPES; do
	case $fs in
	ext4) need="$need e2fsck debugfs" ;;
	xfs) need="$need mkfs.xfs xfs_repair" ;;
	btrfs) need="$need mkfs.btrfs btrfs" ;;
	*) echo "bench: FSTYPES: no bench for $fs (ext4, xfs, btrfs)" >&2; exit 2 ;;
	esac
	need="$need $(partclone_of "$fs")"
done
for t in $need; do command -v "$t" >/dev/null || { echo "bench needs $t" >&2; exit 1; }; done
[ -f "$FS" ] || build_fs
for fs in $FSTYPES; do [ "$fs" = ext4 ] || build_copy "$fs"; done

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
# timed KEY CMD...: after settle, runs CMD and adds its wall time to
# KEY's runs. Delete the previous output before calling it.
timed() {
	local k=$1 s
	shift
	settle
	s=$(now)
	"$@"
	add "$k" "$(echo "$(now) - $s" | bc)"
}
# What a Clonezilla user runs, and Platter's default commands:
# cz_create FSTYPE FS X, cz_restore FSTYPE X TARGET, pl_create FS IMAGE,
# pl_restore IMAGE TARGET (PL=another platter binary, for A/B runs).
cz_create() { "$(partclone_of "$1")" -q -c -s "$2" -o - 2>/dev/null | zstd -q -T0 -3 > "$3"; }
cz_restore() { zstd -q -d -T0 < "$2" | "$(partclone_of "$1")" -q -r -s - -O "$3" 2>/dev/null; }
pl_create() { "${PL:-$P}" create --progress=none ${PL_CREATE_FLAGS:-} "$1" "$2" > /dev/null; } # PL_CREATE_FLAGS: words
pl_restore() { "${PL:-$P}" restore --yes --progress=none "$1" "$2" > /dev/null; }
fresh_target() { rm -f "$1"; truncate -s "$2" "$1"; } # fresh_target FILE SIZE
# evict FILE: FILE's pages out of the page cache, so the next run reads it
# from the disk as a restore from another disk or a fresh boot does (an
# image written through the page cache would otherwise be read from
# memory, one written around it from the disk). No-op for s3://.
evict() { case $1 in s3://*) ;; *) dd if="$1" iflag=nocache count=0 status=none ;; esac; }
# io_floor IMAGE USED TARGET: the least a restore from an image on the
# restore's own disk can take: reading the image and writing the used
# bytes, both around the page cache and at once.
io_floor() {
	dd if="$1" of=/dev/null bs=8M iflag=direct status=none &
	local reader=$!
	dd if="$2" of="$3" bs=8M oflag=direct conv=fsync,notrunc status=none
	wait "$reader"
}
# cpu_of CMD...: runs CMD (output discarded), its user + system CPU
# seconds in CPU.
cpu_of() {
	local f
	f=$(mktemp)
	/usr/bin/time -o "$f" -f '%U %S' "$@" > /dev/null
	CPU=$(awk '{ print $1 + $2 }' "$f")
	rm -f "$f"
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # CPU of process $1, in clock ticks

used_bytes() { "$P" info --json "$1" | awk -F': ' '/"used_bytes"/ { gsub(",", "", $2); print $2; exit }'; }
mib() { printf '%.1f MiB' "$(echo "$1 / 1048576" | bc -l)"; }
# ratio A B KIND [OP LIMIT]: A/B as "2.50x faster" (KIND faster) or
# "0.998x, -0.2 %" (KIND size), and whether it is OP LIMIT, the target.
ratio() {
	local r
	r=$(echo "$1 / $2" | bc -l)
	if [ "$3" = size ]; then
		printf '%.3fx, %+.1f %%' "$r" "$(echo "($r - 1) * 100" | bc -l)"
	else
		printf '%.2fx %s' "$r" "$3"
	fi
	[ -n "${5:-}" ] || { echo; return; }
	printf ' (target %s %sx: ' "$(echo "$4" | sed 's/>=/≥/; s/<=/≤/')" "$5"
	[ "$(echo "$r $4 $5" | bc -l)" = 1 ] && echo "met)" || echo "MISSED)"
}

# check FSTYPE FS TARGET: whether the restored TARGET passes the
# filesystem's own check and holds what FS holds: the same files (ext4
# and XFS, both mounted read-only; a metadata check alone passes a restore
# that left data blocks out) or, on btrfs, data that matches its own
# checksums (two copies of one btrfs do not mount side by side).
check() {
	local what r a b opt=ro,loop
	case $1 in
	ext4) what="e2fsck -fn"; e2fsck -fn "$3" > /dev/null 2>&1 || { echo "DAMAGED ($what)"; return; } ;;
	xfs) what="xfs_repair -n"; xfs_repair -n -f "$3" > /dev/null 2>&1 || { echo "DAMAGED ($what)"; return; }
		opt=$opt,nouuid ;;
	btrfs) what="btrfs check --readonly --check-data-csum"
		btrfs check --readonly --check-data-csum "$3" > /dev/null 2>&1 || { echo "DAMAGED ($what)"; return; }
		echo "clean ($what)"; return ;;
	esac
	a=$(mktemp -d); b=$(mktemp -d)
	mount -o "$opt" "$2" "$a" || { echo "bench: cannot mount $2" >&2; exit 1; }
	if ! mount -o "$opt" "$3" "$b"; then
		r="DAMAGED (does not mount)"
	elif [ -z "$(ls -A "$a")" ] || ! diff -rq --no-dereference "$a" "$b" > /dev/null; then
		r="DAMAGED (files differ from the source's)"
	else
		r="clean ($what, every file the same as the source's)"
	fi
	umount "$a"; umount "$b" 2>/dev/null || true
	rmdir "$a" "$b"
	echo "$r"
}

cat <<HEADER

Platter benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)
$(zstd --version | head -1), $(partclone.extfs -v 2>&1 | head -1 | tr -d '\r'), $("$P" --version)
HEADER

# vs_clonezilla FSTYPE: ROUNDS alternating rounds of Clonezilla's pipeline
# and platter on the FSTYPE bench filesystem, the report, and the check of
# the last restore. On ext4 also create --compress fast; on XFS and btrfs
# the ratios are set against issue 15's targets (create at least 3x and
# restore 4x faster, the image at most 1.05x the size).
vs_clonezilla() {
	local fs=$1 src pc x img tgt size r s fsck used czc plc czr plr plf czs pls plfs fast="" fast_runs="" targets=yes
	src=$(fixture "$fs"); pc=$(partclone_of "$fs")
	x=$DIR/$fs.pc.zst; img=$DIR/$fs.platter; tgt=$DIR/$fs-target.img
	size=$(stat -c %s "$src")
	cat "$src" > /dev/null # into the page cache
	for r in $(seq 1 "$ROUNDS"); do
		echo "$fs round $r/$ROUNDS"
		# Every timed run starts alike: no previous output to delete, no
		# other run's dirty pages still being written back (the Clonezilla
		# pipeline does not sync its output; platter syncs its image).
		rm -f "$x"; timed "${fs}_cz_create" cz_create "$fs" "$src" "$x"
		rm -f "$img"; timed "${fs}_pl_create" pl_create "$src" "$img"
		if [ "$fs" = ext4 ]; then
			rm -f "$DIR/fast.platter"; settle; s=$(now)
			"$P" create --progress=none --compress fast "$src" "$DIR/fast.platter" > /dev/null
			add "${fs}_pl_fast" "$(echo "$(now) - $s" | bc)"
		fi

		fresh_target "$tgt" "$size"; evict "$x"; timed "${fs}_cz_restore" cz_restore "$fs" "$x" "$tgt"
		fresh_target "$tgt" "$size"; evict "$img"; timed "${fs}_pl_restore" pl_restore "$img" "$tgt"
	done
	fsck=$(check "$fs" "$src" "$tgt")
	used=$(used_bytes "$img")
	czc=$(med "${fs}_cz_create"); plc=$(med "${fs}_pl_create"); czr=$(med "${fs}_cz_restore"); plr=$(med "${fs}_pl_restore")
	czs=$(stat -c %s "$x"); pls=$(stat -c %s "$img")
	if [ "$fs" = ext4 ]; then
		targets=""
		plf=$(med ext4_pl_fast); plfs=$(stat -c %s "$DIR/fast.platter")
		fast="| create --compress fast | $(printf '%.2f s' "$czc") | $(printf '%.2f s' "$plf") | $(printf '%.2fx faster' "$(echo "$czc / $plf" | bc -l)") |
| size, fast | $(mib "$czs") | $(mib "$plfs") | $(printf '%+.1f %%' "$(echo "($plfs - $czs) * 100 / $czs" | bc -l)") |
"
		fast_runs="; fast${T[ext4_pl_fast]}"
		rm -f "$DIR/fast.platter"
	fi
	cat <<REPORT

$fs: $GIB GiB, $((used / 1048576)) MiB used; median of $ROUNDS alternating rounds

| step    | Clonezilla ($pc + zstd -3) | platter | ratio |
|---------|----------------------------------|---------|-------|
| create  | $(printf '%.2f s' "$czc") | $(printf '%.2f s' "$plc") | $(ratio "$czc" "$plc" faster ${targets:+">=" 3}) |
| restore | $(printf '%.2f s' "$czr") | $(printf '%.2f s' "$plr") | $(ratio "$czr" "$plr" faster ${targets:+">=" 4}) |
| size    | $(mib "$czs") | $(mib "$pls") | $(ratio "$pls" "$czs" size ${targets:+"<=" 1.05}) |
${fast}
every run (s): Clonezilla create${T[${fs}_cz_create]}; platter create${T[${fs}_pl_create]}$fast_runs
               Clonezilla restore${T[${fs}_cz_restore]}; platter restore${T[${fs}_pl_restore]}
platter's restore: $fsck
REPORT
	rm -f "$x" "$tgt"
	[ "$fs" = ext4 ] || rm -f "$img"
	[ "${fsck%% *}" = clean ]
}

# Encryption (issue 16.2): create and restore with --encrypt beside the
# same runs without, alternating, median of ROUNDS; the target is at most
# 10 % slower. Each encrypted run pays the passphrase's key derivation
# (Argon2id, 256 MiB), as a user does; it is measured apart too.
bench_encryption() {
	local plain=$DIR/plain.platter enc=$DIR/enc.platter tgt=$DIR/enc-target.img size used r s base pc ec pr er kdf fsck
	size=$(stat -c %s "$FS")
	cat "$FS" > /dev/null # into the page cache
	export PLATTER_PASSWORD=platter-bench-passphrase
	for r in $(seq 1 "$ROUNDS"); do
		echo "encryption round $r/$ROUNDS"
		rm -f "$plain"; settle; s=$(now)
		"$P" create --progress=none "$FS" "$plain" > /dev/null
		add enc_plain_create "$(echo "$(now) - $s" | bc)"
		rm -f "$enc"; settle; s=$(now)
		"$P" create --progress=none --encrypt "$FS" "$enc" > /dev/null
		add enc_create "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		"$P" restore --yes --progress=none "$plain" "$tgt" > /dev/null
		add enc_plain_restore "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		"$P" restore --yes --progress=none "$enc" "$tgt" > /dev/null
		add enc_restore "$(echo "$(now) - $s" | bc)"
		# The key derivation alone: opening the encrypted image less
		# opening the plain one.
		s=$(now); "$P" info "$plain" > /dev/null; base=$(echo "$(now) - $s" | bc)
		s=$(now); "$P" info "$enc" > /dev/null
		add enc_kdf "$(echo "$(now) - $s - $base" | bc)"
	done
	unset PLATTER_PASSWORD
	fsck=$(check ext4 "$FS" "$tgt")
	used=$(used_bytes "$plain")
	pc=$(med enc_plain_create); ec=$(med enc_create); pr=$(med enc_plain_restore); er=$(med enc_restore); kdf=$(med enc_kdf)
	cat <<REPORT

ext4 encryption: $GIB GiB, $((used / 1048576)) MiB used; median of $ROUNDS alternating rounds

| step    | plain | --encrypt | slowdown |
|---------|-------|-----------|----------|
| create  | $(printf '%.2f s' "$pc") | $(printf '%.2f s' "$ec") | $(ratio "$ec" "$pc" slower "<=" 1.10) |
| restore | $(printf '%.2f s' "$pr") | $(printf '%.2f s' "$er") | $(ratio "$er" "$pr" slower "<=" 1.10) |
| size    | $(mib "$(stat -c %s "$plain")") | $(mib "$(stat -c %s "$enc")") | $(ratio "$(stat -c %s "$enc")" "$(stat -c %s "$plain")" size) |

of each encrypted run, the key derivation (Argon2id, 256 MiB): $(printf '%.2f s' "$kdf"); without it,
create $(ratio "$(echo "$ec - $kdf" | bc)" "$pc" slower), restore $(ratio "$(echo "$er - $kdf" | bc)" "$pr" slower)
every run (s): plain create${T[enc_plain_create]}; encrypted create${T[enc_create]}
               plain restore${T[enc_plain_restore]}; encrypted restore${T[enc_restore]}
the encrypted image's restore: $fsck
REPORT
	rm -f "$plain" "$enc" "$tgt"
	[ "${fsck%% *}" = clean ]
}

# S3 (issue 16.5): create into a bucket and restore from it, beside the
# same runs with a local file, alternating, median of ROUNDS, against MinIO
# on loopback (make minio builds it); the targets are at most 1.3x each.
# Then what a random 4 KiB read of the image mounted from the bucket
# fetches, counted by MinIO's own metrics, and the peak memory of a create
# into the bucket (at most 300 MiB).
# start_minio runs a MinIO server on loopback with a bucket "bench", its
# data in a new directory under BENCH_DIR, and exports the AWS_*
# variables that reach it; MINIO_PID is the server, stop_minio ends it.
start_minio() {
	local minio r port
	minio=$(command -v minio || echo "${XDG_CACHE_HOME:-$HOME/.cache}/platter/minio/minio")
	[ -x "$minio" ] || { echo "bench needs minio: make minio" >&2; exit 1; }
	MINIO_DATA=$(mktemp -d "$DIR/minio.XXXXXX")
	mkdir "$MINIO_DATA/bench" # a directory in a MinIO drive is a bucket
	port=$((20000 + RANDOM % 20000))
	export AWS_ACCESS_KEY_ID=bench$RANDOM AWS_SECRET_ACCESS_KEY=secret$RANDOM$RANDOM$RANDOM AWS_REGION=us-east-1
	export AWS_ENDPOINT_URL=http://127.0.0.1:$port
	MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off \
		MINIO_PROMETHEUS_AUTH_TYPE=public HOME=$MINIO_DATA \
		"$minio" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$((port + 1))" "$MINIO_DATA" > "$MINIO_DATA.log" 2>&1 &
	MINIO_PID=$!
	trap 'kill $MINIO_PID 2>/dev/null' EXIT
	for r in $(seq 1 600); do "$P" list s3://bench/ > /dev/null 2>&1 && break; sleep 0.1; done
	"$P" list s3://bench/ > /dev/null || { echo "bench: minio did not start:" >&2; cat "$MINIO_DATA.log" >&2; exit 1; }
}
stop_minio() {
	kill "$MINIO_PID"; wait "$MINIO_PID" 2>/dev/null || true
	trap - EXIT
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL
	rm -rf "$MINIO_DATA" "$MINIO_DATA.log"
}

bench_s3() {
	local pid img=$DIR/s3-local.platter url=s3://bench/ext4.platter tgt=$DIR/s3-target.img
	local size used r s m lc sc lr sr fsck mnt off before after fetched chunk rss
	start_minio
	pid=$MINIO_PID
	# The bytes MinIO has sent in answers (its v3 metrics are current).
	sent() { curl -s "$AWS_ENDPOINT_URL/minio/metrics/v3/api/requests" | awk '/^minio_api_requests_traffic_sent_bytes.*s3/ { printf "%.0f\n", $2 }'; }
	size=$(stat -c %s "$FS")
	cat "$FS" > /dev/null # into the page cache
	for r in $(seq 1 "$ROUNDS"); do
		echo "s3 round $r/$ROUNDS"
		rm -f "$img"; settle; s=$(now)
		cpu_of "$P" create --progress=none "$FS" "$img"
		add s3_local_create "$(echo "$(now) - $s" | bc)"
		add s3_local_cpu "$CPU"
		settle; m=$(ticks "$pid"); s=$(now)
		cpu_of "$P" create --force --progress=none "$FS" "$url"
		add s3_create "$(echo "$(now) - $s" | bc)"
		add s3_cpu "$CPU"
		add s3_server_cpu "$(echo "($(ticks "$pid") - $m) / $(getconf CLK_TCK)" | bc -l)"
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		"$P" restore --yes --progress=none "$img" "$tgt" > /dev/null
		add s3_local_restore "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		"$P" restore --yes --progress=none "$url" "$tgt" > /dev/null
		add s3_restore "$(echo "$(now) - $s" | bc)"
	done
	fsck=$(check ext4 "$FS" "$tgt")
	used=$(used_bytes "$img")
	lc=$(med s3_local_create); sc=$(med s3_create); lr=$(med s3_local_restore); sr=$(med s3_restore)
	rss=$( { /usr/bin/time -v "$P" create --force --progress=none "$FS" "$url" > /dev/null; } 2>&1 | awk '/Maximum resident/ { print $6 }')
	# A random 4 KiB read of the mounted image, in a stored chunk (the
	# middle one): direct, so the page cache does not read ahead.
	chunk=$("$P" info --json "$url" | awk -F': ' '/"chunk_size"/ { gsub(",", "", $2); print $2; exit }')
	off=$("$P" info --json --chunks "$url" | awk -F': ' '/"offset"/ { o = $2 + 0 } /"frame_size"/ && $2 + 0 > 0 { a[n++] = o } END { print a[int(n / 2)] }')
	off=$(( (off + 12345 * 4096 % chunk) / 4096 ))
	mnt=$(mktemp -d)
	"$P" mount --daemon "$url" "$mnt" > /dev/null
	before=$(sent)
	dd if="$mnt/disk.img" of=/dev/null bs=4096 count=1 skip="$off" iflag=direct status=none
	sleep 1 # any readahead lands
	after=$(sent)
	fetched=$((after - before))
	"$P" umount "$mnt"; rmdir "$mnt"
	cat <<REPORT

S3 on MinIO (loopback, the same disk): ext4, $GIB GiB, $((used / 1048576)) MiB used; median of $ROUNDS alternating rounds

| step    | local file | s3:// (MinIO) | ratio |
|---------|------------|---------------|-------|
| create  | $(printf '%.2f s' "$lc") | $(printf '%.2f s' "$sc") | $(ratio "$sc" "$lc" slower "<=" 1.3) |
| restore | $(printf '%.2f s' "$lr") | $(printf '%.2f s' "$sr") | $(ratio "$sr" "$lr" slower "<=" 1.3) |

a random 4 KiB read of the image mounted from the bucket fetched $fetched bytes (a chunk is $chunk; target: at most one chunk plus readahead)
peak memory of a create into the bucket: $((rss / 1024)) MiB (target ≤ 300 MiB)
CPU of the creates (median, s): platter to a local file $(printf '%.2f' "$(med s3_local_cpu)"), platter to S3 $(printf '%.2f' "$(med s3_cpu)"), MinIO receiving it $(printf '%.2f' "$(med s3_server_cpu)") (MinIO shares the same cores: on 2 cores the S3 create cannot finish before (platter + MinIO CPU) / 2)
every run (s): local create${T[s3_local_create]}; s3 create${T[s3_create]}
               local restore${T[s3_local_restore]}; s3 restore${T[s3_restore]}
the restore from S3: $fsck
REPORT
	stop_minio
	rm -f "$img" "$tgt"
	[ "${fsck%% *}" = clean ]
}

# Delta restore (issue 17): the disk restored, about 1 % of its files
# (every hundredth) rewritten in place through the filesystem, then put
# back by a full restore (onto a new file, as a user would without
# --delta), by restore --delta, and by rsync --inplace of the same files
# from the source mounted read-only (the reference: it rewrites the
# changed files, but not the filesystem's blocks as imaged), alternating,
# median of ROUNDS; the target is at most 25 % of the full restore. Each
# run starts from a copy of the changed disk, written back, and with the
# image, the source and the target out of the page cache (cold) as in a
# real rollback, where the image comes from a backup disk and the target
# was not read since boot.
bench_delta() {
	local img=$DIR/delta.platter old=$DIR/delta-old.img tgt=$DIR/delta-target.img size used r s mnt src files n changed
	local full dl rs rd fsck json
	# cold drops the clean cached pages of the files named, theirs only.
	cold() { local f; for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done; }
	size=$(stat -c %s "$FS")
	"$P" create --force --progress=none "$FS" "$img" > /dev/null
	used=$(used_bytes "$img")
	rm -f "$old"
	"$P" restore --yes --progress=none "$img" "$old" > /dev/null
	mnt=$(mktemp -d)
	mount -o loop "$old" "$mnt"
	files=$(find "$mnt" -type f | wc -l)
	n=0 changed=0
	while IFS= read -r f; do
		shred -n 1 -x "$f"
		n=$((n + 1)) changed=$((changed + $(stat -c %s "$f")))
	done < <(find "$mnt" -type f | awk 'NR % 100 == 0')
	umount "$mnt"; rmdir "$mnt"
	src=$(mktemp -d); mnt=$(mktemp -d)
	for r in $(seq 1 "$ROUNDS"); do
		echo "delta round $r/$ROUNDS"
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; cold "$img"; s=$(now)
		"$P" restore --yes --progress=none "$img" "$tgt" > /dev/null
		add delta_full "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; cp --sparse=always "$old" "$tgt"; settle; cold "$img" "$tgt"; s=$(now)
		json=$("$P" restore --delta --json --yes --progress=none "$img" "$tgt")
		add delta_delta "$(echo "$(now) - $s" | bc)"
		[ "$r" = "$ROUNDS" ] && fsck=$(check ext4 "$FS" "$tgt")
		# The disk's read speed: the delta cannot be faster than reading
		# the used bytes it compares (the target's free ranges are holes
		# here, which dd reads without the disk).
		settle; cold "$tgt"; s=$(now)
		dd if="$tgt" iflag=direct bs=8M of=/dev/null status=none
		add delta_read "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; cp --sparse=always "$old" "$tgt"
		settle; cold "$FS" "$tgt"
		mount -o ro,loop "$FS" "$src"; mount -o loop "$tgt" "$mnt"; s=$(now)
		rsync -a --inplace --delete "$src/" "$mnt/"
		sync -f "$mnt"
		add delta_rsync "$(echo "$(now) - $s" | bc)"
		umount "$src" "$mnt"
	done
	rmdir "$src" "$mnt"
	full=$(med delta_full); dl=$(med delta_delta); rs=$(med delta_rsync); rd=$(med delta_read)
	field() { echo "$json" | awk -F': ' -v k="\"$1\"" '$1 ~ k { gsub(",", "", $2); print $2; exit }'; }
	cat <<REPORT

Delta restore after rewriting $n of $files files ($(mib "$changed") of $((used / 1048576)) MiB used), median of $ROUNDS alternating rounds

| | time | vs full restore (target) |
|---|---|---|
| full restore | $(printf '%.2f s' "$full") | |
| restore --delta | $(printf '%.2f s' "$dl") | $(printf '%.0f %%' "$(echo "$dl * 100 / $full" | bc -l)") $( [ "$(echo "$dl <= $full / 4" | bc -l)" = 1 ] && echo "(≤ 25 %: met)" || echo "(≤ 25 %: MISSED)") |
| rsync -a --inplace --delete (reference) | $(printf '%.2f s' "$rs") | $(printf '%.0f %%' "$(echo "$rs * 100 / $full" | bc -l)") |

the delta compared $(field chunks_compared) chunks ($(mib "$(field bytes_compared)")), $(field chunks_differed) differed ($(mib "$(field bytes_differed)")); it wrote $(mib "$(field bytes_written)")
reading the target file whole (dd iflag=direct bs=8M; its free ranges are holes, read without the disk): $(printf '%.2f s' "$rd"), $(printf '%.0f %%' "$(echo "$rd * 100 / $full" | bc -l)") of the full restore: the floor of a delta that reads what it compares
every run (s): full${T[delta_full]}; delta${T[delta_delta]}; rsync${T[delta_rsync]}; read${T[delta_read]}
the delta-restored disk: $fsck
REPORT
	rm -f "$img" "$old" "$tgt"
	[ "${fsck%% *}" = clean ]
}

# Convert (issue 18): platter convert IMAGE OUTPUT against what a user
# runs without it, platter restore to a raw file and then qemu-img
# convert -O FORMAT of that file (qemu-img skips the raw file's holes),
# for each of CONVERT_FORMATS (default qcow2 vhdx vmdk), the ext4 bench
# filesystem's image as the disk; alternating, median of ROUNDS, every
# output on the same filesystem (BENCH_DIR), the image dropped from the
# page cache before each run and every output synced at its end
# (platter syncs its own; the pipeline's raw file and qemu-img's output
# are synced in the timed run). The target: convert at least 2x faster.
# The last round's outputs must compare equal (qemu-img compare).
bench_convert() {
	local img=$DIR/convert.platter raw=$DIR/convert.raw out ref used r s f fmts rss rss2 same rows="" runs=""
	# cold drops the clean cached pages of the files named, theirs only.
	cold() { local f; for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done; }
	fmts=${CONVERT_FORMATS:-qcow2 vhdx vmdk}
	"$P" create --force --progress=none "$FS" "$img" > /dev/null
	used=$(used_bytes "$img")
	for r in $(seq 1 "$ROUNDS"); do
		for f in $fmts; do
			echo "convert $f round $r/$ROUNDS"
			out=$DIR/convert.$f; ref=$DIR/convert-ref.$f
			rm -f "$out"; settle; cold "$img"; s=$(now)
			"$P" convert --progress=none "$img" "$out" > /dev/null
			add "conv_${f}_pl" "$(echo "$(now) - $s" | bc)"
			rm -f "$raw" "$ref"; settle; cold "$img"; s=$(now)
			"$P" restore --yes --progress=none "$img" "$raw" > /dev/null
			qemu-img convert -O "$f" "$raw" "$ref"
			sync "$ref"
			add "conv_${f}_q" "$(echo "$(now) - $s" | bc)"
			if [ "$r" = "$ROUNDS" ]; then
				same=$(qemu-img compare -q "$raw" "$out" && qemu-img compare -q "$ref" "$out" && echo identical || echo DIFFERENT)
				rows="$rows| $f | $(printf '%.2f s' "$(med "conv_${f}_q")") | $(printf '%.2f s' "$(med "conv_${f}_pl")") | $(ratio "$(med "conv_${f}_q")" "$(med "conv_${f}_pl")" faster ">=" 2) | $(mib "$(du -B1 "$ref" | cut -f1)") | $(mib "$(du -B1 "$out" | cut -f1)") | $same |"$'\n'
				runs="$runs               $f: restore + qemu-img${T[conv_${f}_q]}; platter convert${T[conv_${f}_pl]}"$'\n'
				[ "$same" = identical ] || { echo "bench: platter convert's $f differs from the raw restore" >&2; exit 1; }
			fi
			rm -f "$out" "$ref" "$raw"
		done
	done
	f=${fmts%% *}
	rss=$( { /usr/bin/time -v "$P" convert --progress=none "$img" "$DIR/convert.$f" > /dev/null; } 2>&1 | awk '/Maximum resident/ { print $6 }')
	rm -f "$DIR/convert.$f"
	rss2=$( { /usr/bin/time -v "$P" restore --yes --progress=none "$img" "$raw" > /dev/null; } 2>&1 | awk '/Maximum resident/ { print $6 }')
	rm -f "$raw"
	cat <<REPORT

Convert: the ext4 bench filesystem's image ($GIB GiB disk, $((used / 1048576)) MiB used), median of $ROUNDS alternating rounds, image cold

| format | restore to raw + qemu-img convert -O | platter convert | ratio | qemu-img's file (du) | platter's file (du) | qemu-img compare |
|--------|----------------------------------|-----------------|-------|--------|--------|-----|
$rows
peak memory: platter convert ($f) $((rss / 1024)) MiB, platter restore $((rss2 / 1024)) MiB
every run (s):
$runs
REPORT
	rm -f "$img"
}

# Clonezilla images (issue 19): the ext4 bench filesystem saved by the
# real Clonezilla (ocs-sr savedisk -q2 -z1p: partclone, pigz, one GPT
# partition; built once in BENCH_DIR and reused), then, alternating,
# median of ROUNDS: platter import of the directory; platter extract of
# one file (text/log-0.txt) from it with an empty cache of converted
# images (the first open: the conversion) and again (the second open: the
# cached image; target under 1 s); and Clonezilla's own way to a file of
# it, cat VOLUMES | zcat | partclone.restore of the partition into a raw
# file (a user still has to mount that). The extracted file must be the
# source's, byte for byte.
bench_clonezilla() {
	local cz=$DIR/cz-gz-${GIB}g cache=$DIR/cz-cache img=$DIR/cz.platter out=$DIR/cz-out tgt=$DIR/cz-target.img
	local size disk loop r s t used want imp first second ref file=/text/log-0.txt
	for t in ocs-sr partclone.restore addpart sgdisk zcat; do command -v "$t" >/dev/null || { echo "bench needs $t (make deps)" >&2; exit 1; }; done
	size=$(stat -c %s "$FS")
	if [ ! -f "$cz/disk" ]; then
		echo "building $cz (ocs-sr savedisk of the ext4 bench filesystem, pigz)..."
		rm -rf "$cz" "$DIR/cz-ocs"
		disk=$DIR/cz-disk.img
		rm -f "$disk"; truncate -s $((size + 2 * 1048576)) "$disk"
		sgdisk -n 1:2048:$((2048 + size / 512 - 1)) -t 1:8300 "$disk" > /dev/null
		dd if="$FS" of="$disk" bs=4M seek=1M oflag=seek_bytes conv=notrunc,sparse status=none
		loop=$(losetup -f --show "$disk")
		addpart "$loop" 1 2048 $((size / 512))
		mkdir -p "$DIR/cz-ocs"
		ocs-sr -b -q2 -j2 -z1p -i 4096 -sfsck -scs -senc -or "$DIR/cz-ocs" -p true savedisk IMG "${loop#/dev/}" > "$DIR/cz-ocs.log" 2>&1 ||
			{ cat "$DIR/cz-ocs.log"; delpart "$loop" 1; losetup -d "$loop"; exit 1; }
		delpart "$loop" 1; losetup -d "$loop"; rm -f "$disk"
		mv "$DIR/cz-ocs/IMG" "$cz"; rm -rf "$DIR/cz-ocs" "$DIR/cz-ocs.log"
	fi
	want=$(mktemp)
	debugfs -R "dump $file $want" "$FS" > /dev/null 2>&1
	export PLATTER_CACHE=$cache
	cat "$cz"/* > /dev/null # into the page cache, for every run alike
	for r in $(seq 1 "$ROUNDS"); do
		echo "clonezilla round $r/$ROUNDS"
		rm -f "$img"; settle; s=$(now)
		"$P" import --progress=none "$cz" "$img" > /dev/null
		add cz_import "$(echo "$(now) - $s" | bc)"
		rm -rf "$cache" "$out"; mkdir "$out"; settle; s=$(now)
		"$P" -q extract "$cz:1" "$file" "$out/" > /dev/null
		add cz_first "$(echo "$(now) - $s" | bc)"
		cmp -s "$want" "$out/$(basename "$file")" || { echo "bench: the extracted $file differs from the source's" >&2; exit 1; }
		rm -rf "$out"; mkdir "$out"; settle; s=$(now)
		"$P" -q extract "$cz:1" "$file" "$out/" > /dev/null
		add cz_second "$(echo "$(now) - $s" | bc)"
		cmp -s "$want" "$out/$(basename "$file")" || { echo "bench: the extracted $file (cached) differs from the source's" >&2; exit 1; }
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		cat "$cz"/*-ptcl-img.gz.* | zcat | partclone.restore -q -C -W -s - -O "$tgt" -L "$DIR/cz-pc.log" > /dev/null 2>&1
		add cz_ref "$(echo "$(now) - $s" | bc)"
	done
	used=$(used_bytes "$img")
	imp=$(med cz_import); first=$(med cz_first); second=$(med cz_second); ref=$(med cz_ref)
	cat <<REPORT

Clonezilla image (ocs-sr savedisk -z1p, gzip: $(mib "$(du -cb "$cz" | tail -1 | cut -f1)")) of the ext4 bench filesystem ($GIB GiB, $((used / 1048576)) MiB used); median of $ROUNDS alternating rounds

| step | time | vs zcat \| partclone.restore |
|------|------|-----------|
| platter import (to a Platter image, $(mib "$(stat -c %s "$img")")) | $(printf '%.2f s' "$imp") | $(ratio "$ref" "$imp" faster) |
| platter extract $file, first open (converts into the cache) | $(printf '%.2f s' "$first") | $(ratio "$ref" "$first" faster) |
| platter extract $file, second open (the cached image) | $(printf '%.2f s' "$second") | $(ratio "$ref" "$second" faster) $( [ "$(echo "$second < 1" | bc -l)" = 1 ] && echo "(target < 1 s: met)" || echo "(target < 1 s: MISSED)") |
| cat volumes \| zcat \| partclone.restore (the partition to a raw file) | $(printf '%.2f s' "$ref") | |

the cached image: $(mib "$(du -cb "$cache" | tail -1 | cut -f1)") in $cache; the extracted file is the source's, byte for byte
every run (s): import${T[cz_import]}; first open${T[cz_first]}; second open${T[cz_second]}; zcat | partclone.restore${T[cz_ref]}
REPORT
	unset PLATTER_CACHE
	rm -rf "$img" "$out" "$tgt" "$cache" "$want" "$DIR/cz-pc.log"
}

# Rescue (issue 20): the ext4 bench filesystem served as a block device
# by test/faultdisk (FUSE, a loop device over it). Healthy: create
# --rescue against a plain create of the same device, alternating; target
# at most 1.05x. Failing: 1 % of the used bytes unreadable in scattered
# 64 KiB runs; the first pass (until the first later pass is announced)
# against the healthy create, target at most 1.5x; the whole rescue, and
# GNU ddrescue of the same device with a domain map of the used blocks
# (the map a healthy rescue leaves: exactly what create reads) and
# without one, beside it.
bench_rescue() {
	local src mnt fdpid dev dmap img out r s used runs stamp
	# The mapfile's 0x numbers, in any awk (mawk has no strtonum).
	local hexfn='function hex(s,  v, i) { s = tolower(substr(s, 3)); for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v } '
	src=$(fixture ext4); img=$DIR/rescue.platter; out=$DIR/rescue.ddrescue
	go build -o "$DIR/faultdisk" ./test/faultdisk
	mnt=$(mktemp -d)
	"$DIR/faultdisk" "$src" "$mnt" > "$DIR/faultdisk.log" 2>&1 & fdpid=$!
	for _ in $(seq 50); do grep -q ready "$DIR/faultdisk.log" && break; sleep 0.1; done
	dev=$(losetup -f --show -r "$mnt/disk")
	trap 'losetup -d "$dev" 2>/dev/null; kill "$fdpid" 2>/dev/null' EXIT
	dmap=$DIR/domain.map
	rm -f "$dmap"
	"$P" create --force --rescue --map "$dmap" --progress none "$dev" "$img" > /dev/null
	used=$(awk "$hexfn"'$3 == "+" { s += hex($2) } END { printf "%d\n", s }' "$dmap")
	for r in $(seq 1 "$ROUNDS"); do
		echo "rescue healthy round $r/$ROUNDS"
		rm -f "$img"; settle; s=$(now)
		"$P" create --progress none "$dev" "$img" > /dev/null
		add rs_plain "$(echo "$(now) - $s" | bc)"
		rm -f "$img"; settle; s=$(now)
		"$P" create --rescue --progress none "$dev" "$img" > /dev/null
		add rs_rescue "$(echo "$(now) - $s" | bc)"
	done
	# 1 % of the used bytes in 64 KiB runs, spread over the used areas.
	runs=$((used / 100 / 65536))
	awk -v n="$runs" -v seed=20 "$hexfn"'$3 == "+" { o[k] = hex($1); l[k] = hex($2); t += l[k]; k++ }
		END { srand(seed); step = t / n; for (i = 0; i < n; i++) { p = int(i * step + rand() * (step - 65536)); for (j = 0; j < k && p >= l[j]; j++) p -= l[j];
			if (j < k && l[j] >= 65536) { a = o[j] + int((p < l[j] - 65536 ? p : l[j] - 65536) / 65536) * 65536; if (a < o[j]) a = o[j]; printf "bad %d 65536\n", a } } }' "$dmap" > "$DIR/bad.lines"
	while read -r line; do echo "$line" > "$mnt/ctl"; done < "$DIR/bad.lines"
	for r in $(seq 1 "$ROUNDS"); do
		echo "rescue failing round $r/$ROUNDS"
		rm -f "$img" "$DIR/failing.map"; stamp=$(mktemp); settle; s=$(now)
		"$P" create --rescue --map "$DIR/failing.map" --progress json "$dev" "$img" 2> >(while IFS= read -r l; do case $l in *'"message":"rescue: '*) [ -s "$stamp" ] || now > "$stamp" ;; esac; done) > /dev/null
		add rs_fail "$(echo "$(now) - $s" | bc)"
		sleep 0.5
		add rs_pass1 "$(echo "$(cat "$stamp") - $s" | bc)"
		rm -f "$stamp" "$out" "$DIR/dd.map"; settle; s=$(now)
		ddrescue -q -d -m "$dmap" "$dev" "$out" "$DIR/dd.map" > /dev/null 2>&1 || true
		add rs_dd_domain "$(echo "$(now) - $s" | bc)"
		rm -f "$out" "$DIR/dd.map"; settle; s=$(now)
		ddrescue -q -d "$dev" "$out" "$DIR/dd.map" > /dev/null 2>&1 || true
		add rs_dd "$(echo "$(now) - $s" | bc)"
	done
	local plain rescue fail pass1 ddd dd badb
	plain=$(med rs_plain); rescue=$(med rs_rescue); fail=$(med rs_fail); pass1=$(med rs_pass1); ddd=$(med rs_dd_domain); dd=$(med rs_dd)
	badb=$(ddrescuelog -t "$DIR/failing.map" | awk '/bad-sector/ { print $2, $3 }')
	cat <<REPORT

Rescue: the ext4 bench filesystem ($GIB GiB, $((used / 1048576)) MiB used) as a block device (FUSE + loop); median of $ROUNDS alternating rounds

| healthy device | time | ratio |
|---|---|---|
| platter create | $(printf '%.2f s' "$plain") | |
| platter create --rescue | $(printf '%.2f s' "$rescue") | $(ratio "$rescue" "$plain" "the time of create" "<=" 1.05) |

| $runs bad 64 KiB runs (1 % of the used bytes; $badb unreadable at the end) | time | ratio |
|---|---|---|
| platter create --rescue, first pass | $(printf '%.2f s' "$pass1") | $(ratio "$pass1" "$plain" "the healthy create's time" "<=" 1.5) |
| platter create --rescue, whole | $(printf '%.2f s' "$fail") | |
| ddrescue -d with the used blocks as domain (-m) | $(printf '%.2f s' "$ddd") | $(ratio "$ddd" "$fail" faster) |
| ddrescue -d of the whole device | $(printf '%.2f s' "$dd") | $(ratio "$dd" "$fail" faster) |

every run (s): create${T[rs_plain]}; --rescue${T[rs_rescue]}; failing --rescue${T[rs_fail]} (first pass${T[rs_pass1]}); ddrescue -m${T[rs_dd_domain]}; ddrescue${T[rs_dd]}
REPORT
	losetup -d "$dev"; kill "$fdpid"; wait "$fdpid" 2>/dev/null || true
	trap - EXIT
	rmdir "$mnt" 2>/dev/null || true
	rm -f "$img" "$out" "$DIR/dd.map" "$DIR/failing.map" "$dmap" "$DIR/bad.lines"
}

# Incremental (ONLY=incremental): about 1% of the used data changed (12 MiB
# of documentation in a tar and 4 MiB of random bytes added), then an
# incremental of the full image against a full image of the same state,
# alternating (targets: at most 25 % of the full's time, at most 1.5x the
# changed data compressed with zstd -3).
bench_incremental() {
	local INC_SRC mnt changed changedz r s inct incf incs used
	INC_SRC=$DIR/inc-src.img
	cp --sparse=always "$FS" "$INC_SRC"
	"$P" create --force --progress=none "$INC_SRC" "$DIR/inc-full.platter" > /dev/null
	used=$(used_bytes "$DIR/inc-full.platter")
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
}

# Changed-block tracking (issue 21): after the incremental benchmark's 1 %
# change, an incremental made with the tracking service's map against one
# made by reading everything and a full image, of a loop device of a copy
# of the ext4 bench filesystem, alternating (target: at most 5 % of the
# full's time); and an fsync-heavy writer (64 KiB O_DSYNC writes on the
# mounted filesystem) with and without the service running (target: at
# most 2 % slower tracked).
bench_track() {
	local src dev maps mnt r s changed used full inct incr incf wt wu n
	src=$DIR/track-src.img; maps=$DIR/track-maps
	cp --sparse=always "$FS" "$src"
	dev=$(losetup -f --show "$src")
	rm -rf "$maps"
	"$P" track start --dir "$maps" "$dev" > /dev/null
	sleep 1.5
	full=$DIR/track-full.platter
	rm -f "$full"
	"$P" create --progress=none "$dev" "$full" > /dev/null
	used=$(used_bytes "$full")
	mnt=$(mktemp -d)
	mount "$dev" "$mnt"
	mkdir "$mnt/changed"
	head -c 12M < <(tar -cf - -C /usr/share/doc . 2>/dev/null) > "$mnt/changed/docs.tar"
	head -c 4M /dev/urandom > "$mnt/changed/blob.bin"
	changed=$(du -sb "$mnt/changed" | cut -f1)
	umount "$mnt"
	for r in $(seq 1 "$ROUNDS"); do
		echo "track round $r/$ROUNDS"
		rm -f "$DIR/track-inc.platter"; settle; s=$(now)
		"$P" create --progress=none --track-dir "$maps" --incremental "$full" "$dev" "$DIR/track-inc.platter" > "$DIR/track-inc.out"
		add tr_inc "$(echo "$(now) - $s" | bc)"
		rm -f "$DIR/track-read.platter"; settle; s=$(now)
		"$P" create --progress=none --track-dir "$maps" --read-all --incremental "$full" "$dev" "$DIR/track-read.platter" > /dev/null
		add tr_read "$(echo "$(now) - $s" | bc)"
		rm -f "$DIR/track-now.platter"; settle; s=$(now)
		"$P" create --progress=none "$dev" "$DIR/track-now.platter" > /dev/null
		add tr_full "$(echo "$(now) - $s" | bc)"
	done
	grep -q "the tracker's map since" "$DIR/track-inc.out" || { echo "the tracked incremental did not use the map:"; cat "$DIR/track-inc.out"; }
	# The writer's cost: the same 256 MiB of 64 KiB synchronous writes,
	# tracked and not, alternating.
	mount "$dev" "$mnt"
	for r in $(seq 1 "$ROUNDS"); do
		for mode in tracked untracked; do
			if [ $mode = untracked ]; then "$P" track stop --dir "$maps" "$dev" > /dev/null; fi
			rm -f "$mnt/w"; settle; s=$(now)
			dd if=/dev/zero of="$mnt/w" bs=64k count=4096 oflag=dsync status=none
			add "tr_w_$mode" "$(echo "$(now) - $s" | bc)"
			if [ $mode = untracked ]; then "$P" track start --dir "$maps" "$dev" > /dev/null; fi
		done
	done
	rm -f "$mnt/w"; umount "$mnt"; rmdir "$mnt"
	"$P" track stop --dir "$maps" "$dev" > /dev/null || true
	inct=$(med tr_inc); incr=$(med tr_read); incf=$(med tr_full); wt=$(med tr_w_tracked); wu=$(med tr_w_untracked)
	n=$(grep -o 'read [0-9]* of [0-9]* chunks' "$DIR/track-inc.out" || true)
	cat <<REPORT

Changed-block tracking: $((changed / 1048576)) MiB of $((used / 1048576)) MiB used changed ($(printf '%.1f' "$(echo "$changed * 100 / $used" | bc -l)") %), the ext4 bench filesystem on a loop device; median of $ROUNDS alternating rounds

| | time | ratio (target) |
|---|---|---|
| full image | $(printf '%.2f s' "$incf") | |
| incremental, reading everything (--read-all) | $(printf '%.2f s' "$incr") | $(printf '%.1f %%' "$(echo "$incr * 100 / $incf" | bc -l)") of the full |
| incremental with the tracker's map ($n) | $(printf '%.2f s' "$inct") | $(printf '%.1f %%' "$(echo "$inct * 100 / $incf" | bc -l)") of the full (≤ 5 %) |
| 256 MiB of 64 KiB O_DSYNC writes, untracked | $(printf '%.2f s' "$wu") | |
| the same, tracked | $(printf '%.2f s' "$wt") | $(printf '%+.1f %%' "$(echo "($wt / $wu - 1) * 100" | bc -l)") (≤ +2 %) |

every run (s): tracked incremental${T[tr_inc]}; --read-all${T[tr_read]}; full${T[tr_full]}; writes tracked${T[tr_w_tracked]}, untracked${T[tr_w_untracked]}
REPORT
	losetup -d "$dev"
	rm -rf "$src" "$maps" "$full" "$DIR/track-inc.platter" "$DIR/track-read.platter" "$DIR/track-now.platter" "$DIR/track-inc.out"
}

# Scattered small changes (issue 21, item 1): on a copy of the ext4
# bench filesystem, a full image, then 48 files of 4-256 KiB created,
# appended to, rewritten in place and deleted (16 each of create,
# append, rewrite; 8 files deleted) through a kernel mount, and an
# incremental and a differential; their sizes against the changed bytes
# compressed with zstd -3 (target: at most 1.5x plus a small fixed
# overhead).
bench_scatter() {
	local src mnt full inc diff changed z i n sz f
	src=$DIR/scatter-src.img; full=$DIR/scatter-full.platter; inc=$DIR/scatter-inc.platter; diff=$DIR/scatter-diff.platter
	cp --sparse=always "$FS" "$src"
	rm -f "$full" "$inc" "$diff"
	"$P" create --progress=none "$src" "$full" > /dev/null
	mnt=$(mktemp -d)
	mount -o loop "$src" "$mnt"
	changed=$(mktemp)
	mkdir -p "$mnt/scatter"
	for i in $(seq 1 16); do
		sz=$(( (RANDOM % 64 + 1) * 4096 ))
		head -c "$sz" /dev/urandom | tee "$mnt/scatter/new-$i.bin" >> "$changed"                  # created
		f=$(find "$mnt/text" -type f -size +300k | sed -n "${i}p")
		awk -v i="$i" 'BEGIN { for (n = 0; n < 500; n++) print "appended line " n " of " i }' | tee -a "$f" >> "$changed"  # appended
		f=$(find "$mnt/bin" -type f -size +1M | sed -n "${i}p")
		head -c $(( (RANDOM % 16 + 1) * 4096 )) /dev/urandom > "$DIR/scatter.piece"
		dd if="$DIR/scatter.piece" of="$f" bs=4096 seek=$((RANDOM % 64)) conv=notrunc status=none   # rewritten in place
		cat "$DIR/scatter.piece" >> "$changed"
	done
	for i in $(seq 1 8); do rm -f "$(find "$mnt/bin" -type f -size -256k | sed -n "${i}p")"; done   # deleted
	umount "$mnt"; rmdir "$mnt"
	"$P" create --progress=none --incremental "$full" "$src" "$inc" > /dev/null
	"$P" create --progress=none --differential "$full" "$src" "$diff" > /dev/null
	n=$(stat -c %s "$changed"); z=$(zstd -3 -q -c < "$changed" | wc -c)
	cat <<REPORT

Scattered small changes on the ext4 bench filesystem: $(mib "$n") written in 48 files (created, appended to, rewritten in place) and 8 files deleted; $(mib "$z") compressed with zstd -3

| image | size | ratio to the changed bytes compressed (target ≤ 1.5x + a small fixed overhead) |
|---|---|---|
| full | $(mib "$(stat -c %s "$full")") | |
| incremental | $(mib "$(stat -c %s "$inc")") | $(ratio "$(stat -c %s "$inc")" "$z" size) |
| differential | $(mib "$(stat -c %s "$diff")") | $(ratio "$(stat -c %s "$diff")" "$z" size) |
REPORT
	rm -f "$src" "$full" "$inc" "$diff" "$changed" "$DIR/scatter.piece"
}

# Data mixes (issue 23): Platter against Clonezilla's pipeline and against
# the machine's own ceilings, on ext4 filesystems each holding one kind of
# data. MIXES picks them (default "text binary small media today"), each
# but "today" an ext4 of MIX_GIB GiB (default 1) made over random bytes
# (a used disk's free space is not zero), about half used, built once in
# BENCH_DIR and reused:
#
#   text    /usr/share/doc, Go's source tree, generated logs
#   binary  /usr/lib and /usr/bin as they are
#   small   tens of thousands of real files under 16 KiB (/usr, Go's tree)
#   media   mostly incompressible: random data in files of 256 KiB-32 MiB,
#           and a sixth already-compressed real files (.gz, .xz, .png)
#   today   the ext4 bench filesystem above (FS_GIB GiB)
#   xfs     today's files on XFS, btrfs today's files on btrfs (the
#           XFS and btrfs bench filesystems above; partclone.xfs and
#           partclone.btrfs in Clonezilla's pipeline)
#   encrypt today's ext4, imaged with --encrypt (a passphrase)
#   s3      today's ext4, imaged into a bucket of a MinIO server on
#           loopback and restored from it (make minio)
#
# The ceilings, measured in the same rounds on the same used bytes (read
# once into /dev/shm by scripts/usedbytes, Platter's own detector):
# create against `zstd -3 -T$(nproc)` compressing them from memory into
# memory; restore against `dd bs=8M oflag=direct conv=fsync` writing them
# to the restore's target, a fresh file of the filesystem's size; the
# image's size against their `zstd -3`. PL_AB=another platter binary adds
# its restore of the same image to every round, then platter's again
# (A/B/A of a restore change).
MIX_GIB=${MIX_GIB:-1}
MIXES=${MIXES:-text binary small media today xfs btrfs encrypt s3}

mix_fixture() {
	case $1 in
	today | encrypt | s3) echo "$FS" ;;
	xfs | btrfs) fixture "$1" ;;
	*) echo "$DIR/mix-$1-${MIX_GIB}g.img" ;;
	esac
}
mix_fs() { case $1 in xfs | btrfs) echo "$1" ;; *) echo ext4 ;; esac; } # its filesystem

# upto MIB [COUNT]: of the lines "SIZE PATH" on standard input (find
# -printf '%s %p\n'), the paths until their sizes add up to MIB MiB or
# COUNT files (reading to the end: find is not cut off by a closed pipe).
upto() { awk -v max=$(($1 * 1048576)) -v count="${2:-0}" '{ s += $1; if (s > max || (count && NR > count)) done = 1; if (!done) print substr($0, index($0, " ") + 1) }'; }
# copy_list LIST DIR: the files LIST names into DIR, with their paths.
copy_list() { tar -cf - -T "$1" 2>/dev/null | tar -xf - -C "$2" || true; }

build_mix() {
	local name=$1 out mnt budget list i n goroot
	case $name in
	today | encrypt | s3) return ;; # the ext4 bench filesystem, built already
	xfs | btrfs) build_copy "$name"; return ;;
	esac
	out=$(mix_fixture "$name")
	[ -f "$out" ] && return
	echo "building $out ($MIX_GIB GiB ext4, the $name mix, about half used)..."
	head -c $((MIX_GIB * 1024 * 1024 * 1024)) /dev/urandom > "$out.tmp"
	if [ "$name" = small ]; then
		mkfs.ext4 -q -F -E nodiscard -N $((MIX_GIB * 160000)) "$out.tmp"
	else
		mkfs.ext4 -q -F -E nodiscard "$out.tmp"
	fi
	mnt=$(mktemp -d)
	mount -o loop "$out.tmp" "$mnt"
	trap 'umount "$mnt" 2>/dev/null; rm -f "$out.tmp"' EXIT
	budget=$((MIX_GIB * 1024 / 2)) # MiB of files
	list=$(mktemp)
	goroot=$(go env GOROOT)
	case $name in
	text)
		cp -r /usr/share/doc "$mnt/doc"
		cp -r "$goroot/src" "$mnt/go-src"
		i=0
		while [ "$(du -sm "$mnt" | cut -f1)" -lt "$budget" ]; do
			awk -v i="$i" 'BEGIN { for (n = 0; n < 200000; n++) printf "2026-11-%02dT%02d:%02d:%02dZ host%d sshd[%d]: Accepted publickey for user%d from 10.%d.%d.%d port %d ssh2: ED25519 SHA256:%08x\n", 1 + i % 28, n % 24, n % 60, (n * 7) % 60, n % 17, 1000 + n, n % 97, n % 256, (n * 7) % 256, i, 30000 + n, n * 2654435761 % 4294967296 }' > "$mnt/log-$i.txt"
			i=$((i + 1))
		done ;;
	binary)
		find /usr/lib /usr/bin -xdev -type f -printf '%s %p\n' 2>/dev/null | upto "$budget" > "$list"
		copy_list "$list" "$mnt" ;;
	small)
		find /usr/share /usr/lib /usr/include "$goroot" -xdev -type f -size -16k -printf '%s %p\n' 2>/dev/null |
			upto "$budget" $((MIX_GIB * 60000)) > "$list"
		copy_list "$list" "$mnt" ;;
	media)
		find /usr/share /usr/lib -xdev -type f \( -name '*.gz' -o -name '*.xz' -o -name '*.png' -o -name '*.jpg' \) -printf '%s %p\n' 2>/dev/null |
			upto $((budget / 6)) > "$list"
		copy_list "$list" "$mnt"
		mkdir "$mnt/media"
		i=0
		while [ "$(du -sm "$mnt" | cut -f1)" -lt "$budget" ]; do
			n=$(( (256 << (i % 8)) )) # KiB: 256 KiB to 32 MiB
			head -c "${n}K" /dev/urandom > "$mnt/media/clip-$i.bin"
			i=$((i + 1))
		done ;;
	*) echo "bench: MIXES: no mix $name (text binary small media today xfs btrfs encrypt s3)" >&2; exit 2 ;;
	esac
	rm -f "$list"
	sync
	echo "$(find "$mnt" -type f | wc -l) files; $(df -h "$mnt" | tail -1)"
	umount "$mnt"
	trap - EXIT
	rmdir "$mnt"
	mv "$out.tmp" "$out"
}

# bench_mix NAME: ROUNDS alternating rounds of Clonezilla's pipeline,
# platter and the two ceilings on mix NAME, and the report.
bench_mix() {
	local name=$1 src k used shm raw z x img tgt size r fsck zs pls czs fs ab="" floor PL_CREATE_FLAGS=""
	src=$(mix_fixture "$name"); k=mix_$name; fs=$(mix_fs "$name")
	x=$DIR/mix.pc.zst; img=$DIR/mix.platter; tgt=$DIR/mix-target.img
	case $name in
	encrypt) export PLATTER_PASSWORD=platter-bench-passphrase; PL_CREATE_FLAGS=--encrypt ;;
	s3) start_minio; img=s3://bench/mix.platter; PL_CREATE_FLAGS=--force ;;
	esac
	shm=$(mktemp -d /dev/shm/platter-bench.XXXXXX) # private (0700): no planted names
	raw=$shm/used; z=$shm/used.zst
	size=$(stat -c %s "$src")
	used=$("$DIR/usedbytes" "$src" "$raw")
	cat "$src" > /dev/null # into the page cache, as the other benchmarks read it
	for r in $(seq 1 "$ROUNDS"); do
		echo "mix $name round $r/$ROUNDS"
		rm -f "$z"; timed "${k}_zstd" zstd -q -3 -T"$(nproc)" "$raw" -o "$z"
		rm -f "$x"; timed "${k}_cz_create" cz_create "$fs" "$src" "$x"
		rm -f "$img"; timed "${k}_pl_create" pl_create "$src" "$img"
		fresh_target "$tgt" "$size"; timed "${k}_dd" dd if="$raw" of="$tgt" bs=8M oflag=direct conv=fsync,notrunc status=none
		if [ "$name" != s3 ]; then
			fresh_target "$tgt" "$size"; evict "$img"; timed "${k}_floor" io_floor "$img" "$raw" "$tgt"
		fi
		fresh_target "$tgt" "$size"; evict "$x"; timed "${k}_cz_restore" cz_restore "$fs" "$x" "$tgt"
		fresh_target "$tgt" "$size"; evict "$img"; timed "${k}_pl_restore" pl_restore "$img" "$tgt"
		if [ -n "${PL_AB:-}" ]; then
			fresh_target "$tgt" "$size"; evict "$img"; PL=$PL_AB timed "${k}_ab_restore" pl_restore "$img" "$tgt"
			fresh_target "$tgt" "$size"; evict "$img"; timed "${k}_pl_restore2" pl_restore "$img" "$tgt"
		fi
	done
	fsck=$(check "$fs" "$src" "$tgt")
	zs=$(stat -c %s "$z"); czs=$(stat -c %s "$x")
	pls=$("$P" info --json "$img" | awk -F': ' '/"image_bytes"/ { gsub(",", "", $2); print $2; exit }')
	local zc czc plc dd czr plr
	zc=$(med "${k}_zstd"); czc=$(med "${k}_cz_create"); plc=$(med "${k}_pl_create")
	dd=$(med "${k}_dd"); czr=$(med "${k}_cz_restore"); plr=$(med "${k}_pl_restore")
	floor=""
	if [ "$name" != s3 ]; then
		floor="| restore's I/O floor | | | $(printf '%.2f s' "$(med "${k}_floor")") (dd reading platter's image while dd writes the used bytes) | $(ratio "$plr" "$(med "${k}_floor")" "the floor") | |
"
	fi
	if [ -n "${PL_AB:-}" ]; then
		ab="| restore, $PL_AB | | $(printf '%.2f s' "$(med "${k}_ab_restore")") | | $(ratio "$(med "${k}_ab_restore")" "$dd" "the ceiling") | |
| restore, platter again | | $(printf '%.2f s' "$(med "${k}_pl_restore2")") | | $(ratio "$(med "${k}_pl_restore2")" "$dd" "the ceiling") | |
"
	fi
	cat <<REPORT

$fs mix "$name"$(case $name in encrypt) echo ", platter with --encrypt" ;; s3) echo ", platter's image in MinIO on loopback" ;; esac): $((size / 1048576)) MiB, $(mib "$used") used, zstd -3 makes it $(printf '%.2f' "$(echo "$zs / $used" | bc -l)") of that; median of $ROUNDS alternating rounds

| step | Clonezilla ($(partclone_of "$fs") + zstd -3) | platter | ceiling | platter / ceiling | Clonezilla / platter |
|------|------|------|------|------|------|
| create | $(printf '%.2f s' "$czc") | $(printf '%.2f s' "$plc") | $(printf '%.2f s' "$zc") (zstd -3 -T$(nproc), memory to memory) | $(ratio "$plc" "$zc" "the ceiling" "<=" 1.15) | $(ratio "$czc" "$plc" faster ">=" 1) |
| restore | $(printf '%.2f s' "$czr") | $(printf '%.2f s' "$plr") | $(printf '%.2f s' "$dd") (dd bs=8M oflag=direct conv=fsync) | $(ratio "$plr" "$dd" "the ceiling" "<=" 1.3) | $(ratio "$czr" "$plr" faster ">=" 1) |
| size | $(mib "$czs") | $(mib "$pls") | $(mib "$zs") (zstd -3) | $(ratio "$pls" "$zs" size "<=" 1.05) | |
${floor}${ab}
every run (s): zstd -3${T[${k}_zstd]}; Clonezilla create${T[${k}_cz_create]}; platter create${T[${k}_pl_create]}
               dd${T[${k}_dd]};${T[${k}_floor]:+ I/O floor${T[${k}_floor]};} Clonezilla restore${T[${k}_cz_restore]}; platter restore${T[${k}_pl_restore]}${PL_AB:+
               $PL_AB restore${T[${k}_ab_restore]}; platter restore again${T[${k}_pl_restore2]}}
platter's restore: $fsck
REPORT
	rm -rf "$shm"
	rm -f "$x" "$tgt"
	case $name in
	encrypt) unset PLATTER_PASSWORD ;;
	s3) stop_minio ;;
	esac
	rm -f "$DIR/mix.platter"
	[ "${fsck%% *}" = clean ]
}

bench_mixes() {
	local m
	go build -o "$DIR/usedbytes" ./scripts/usedbytes
	for m in $MIXES; do build_mix "$m"; done
	for m in $MIXES; do bench_mix "$m"; done
}

if [ "${ONLY:-}" = mixes ]; then
	bench_mixes
	exit
fi
if [ "${ONLY:-}" = scatter ]; then
	bench_scatter
	exit
fi
if [ "${ONLY:-}" = incremental ]; then
	bench_incremental
	exit
fi
if [ "${ONLY:-}" = track ]; then
	bench_track
	exit
fi
if [ "${ONLY:-}" = rescue ]; then
	bench_rescue
	bench_scatter
	exit
fi
if [ "${ONLY:-}" = delta ]; then
	bench_delta
	exit
fi
# Clone (issue 17): platter clone of the idle bench filesystem onto a new
# file against dd bs=4M of as many bytes as the filesystem uses (the
# issue's yardstick: dd over the used bytes; one sequential run from the
# start of the source, which is the best case for dd), and
# partclone.FS -b (Clonezilla's device-to-device copy of the used blocks)
# beside them; alternating, median of ROUNDS; target: clone at most 1.2x
# dd. Every run ends with its target synced (dd conv=fsync, sync FILE
# after partclone; platter syncs its target), from a source in the page
# cache.
bench_clone() {
	local fs=$1 src pc tgt size used r s fsck dd pl pcb
	src=$(fixture "$fs"); pc=$(partclone_of "$fs"); tgt=$DIR/$fs-clone.img
	size=$(stat -c %s "$src")
	cat "$src" > /dev/null # into the page cache
	rm -f "$tgt"
	used=$("$P" clone --json --progress none "$src" "$tgt" | awk -F': ' '/"used_bytes"/ { gsub(",", "", $2); print $2; exit }')
	for r in $(seq 1 "$ROUNDS"); do
		echo "$fs clone round $r/$ROUNDS"
		rm -f "$tgt"; settle; s=$(now)
		dd if="$src" of="$tgt" bs=4M count="$used" iflag=count_bytes conv=fsync status=none
		add "${fs}_dd" "$(echo "$(now) - $s" | bc)"
		rm -f "$tgt"; settle; s=$(now)
		"$P" clone --progress none "$src" "$tgt" > /dev/null
		add "${fs}_clone" "$(echo "$(now) - $s" | bc)"
		if [ "$r" = "$ROUNDS" ]; then fsck=$(check "$fs" "$src" "$tgt"); fi
		rm -f "$tgt"; truncate -s "$size" "$tgt"; settle; s=$(now)
		"$pc" -q -b -s "$src" -O "$tgt" > /dev/null 2>&1
		sync "$tgt"
		add "${fs}_pcb" "$(echo "$(now) - $s" | bc)"
	done
	rm -f "$tgt"
	dd=$(med "${fs}_dd"); pl=$(med "${fs}_clone"); pcb=$(med "${fs}_pcb")
	cat <<REPORT

$fs clone: $GIB GiB, $((used / 1048576)) MiB used; median of $ROUNDS alternating rounds

| dd bs=4M of $((used / 1048576)) MiB | platter clone | ratio | $pc -b |
|----------------|---------------|-------|--------|
| $(printf '%.2f s' "$dd") | $(printf '%.2f s' "$pl") | $(ratio "$pl" "$dd" "the time of dd" "<=" 1.2) | $(printf '%.2f s' "$pcb") |

every run (s): dd${T[${fs}_dd]}; platter clone${T[${fs}_clone]}; $pc -b${T[${fs}_pcb]}
platter's clone: $fsck
REPORT
	[ "${fsck%% *}" = clean ]
}

if [ "${ONLY:-}" = clone ]; then
	for fs in $FSTYPES; do bench_clone "$fs"; done
	exit
fi
if [ "${ONLY:-}" = convert ]; then
	bench_convert
	exit
fi
if [ "${ONLY:-}" = clonezilla ]; then
	bench_clonezilla
	exit
fi
if [ "${ONLY:-}" = encryption ]; then
	bench_encryption
	exit
fi
if [ "${ONLY:-}" = s3 ]; then
	bench_s3
	exit
fi

for fs in $FSTYPES; do vs_clonezilla "$fs"; done
for fs in $FSTYPES; do bench_clone "$fs"; done

# ext4 alone: the compression levels, the incremental and the open-image
# benchmarks.
if [[ " $FSTYPES " = *" ext4 "* ]]; then
	bench_encryption
	bench_s3

	# Peak memory of create, and the ceilings: reading and hashing the used
	# blocks with no compression, and each compression level.
	IMG=$DIR/ext4.platter
	used=$(used_bytes "$IMG")
	plc=$(med ext4_pl_create)
	rss=$( { /usr/bin/time -v "$P" create --force --progress=none "$FS" "$IMG" > /dev/null; } 2>&1 | awk '/Maximum resident/ { print $6 }')
	rm -f "$IMG"
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
	cat <<REPORT

ext4: platter create peak memory: $((rss / 1024)) MiB
create throughput: $(printf '%.0f' "$(echo "$used / 1048576 / $plc" | bc -l)") MiB/s of used data
raw zstd, one core, 8 MiB blocks, on the $rawmb MiB of binaries and text:$rawspeed

| compress | create | image size |
|----------|--------|------------|
$levels
REPORT

	bench_incremental

	bench_delta
	bench_convert
	bench_clonezilla
	bench_rescue
	bench_track
	bench_mixes

	# Opening an image without restoring it: FUSE and NBD against the
	# restored disk file (test/e2e/open_bench_test.go).
	BENCH_DIR=$DIR go test -tags bench -count=1 -timeout 30m -run '^TestBenchOpen$' -v ./test/e2e |
		grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '
fi

# Live imaging: the same files on ext4, XFS and btrfs, imaged unmounted and
# live under a 25 MB/s writer (test/e2e/live_bench_test.go).
if [ "${LIVE:-1}" = 1 ]; then
	build_copy xfs
	build_copy btrfs
	for fs in ext4 xfs btrfs; do ln -f "$(fixture "$fs")" "$DIR/$fs-bench.img"; done
	BENCH_DIR=$DIR ROUNDS=$ROUNDS go test -tags bench -count=1 -timeout 60m -run '^TestBenchLive$' -v ./test/e2e |
		grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '
fi
