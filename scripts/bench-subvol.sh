#!/usr/bin/env bash
# Benchmarks arbor's subvolume features (snapshots, their deletion, `arbor diff`,
# reflinks) against btrfs's, side by side in one run on the same machine, and writes the
# ratios into BENCHMARKS.md (between the subvol-bench markers).
#
# Usage (as root, from anywhere in the repository):
#   scripts/bench-subvol.sh               # the published run: 100000 files, 10 reps, ~10 min
#   scripts/bench-subvol.sh --quick       # smoke run: 10000 files, 3 reps (~2 min)
#   scripts/bench-subvol.sh --help        # every option
#
# Both filesystems live on sparse image files of the same size in one directory (default:
# a fresh directory under /var/tmp), so they share the underlying disk: btrfs is made with
# mkfs.btrfs defaults and mounted with `-o loop`; arbor with `arbor mkfs` and `arbor mount`.
# Each gets a subvolume `vol` (`arbor subvolume create` / `btrfs subvolume create`) filled
# with FILES files of 1 KiB in 100 directories (`fsmeta create`, vol/data/d{k}/f{i}),
# then made durable. Then, group by group (--only), each repetition on both, who goes
# first alternating between repetitions:
#   snapshot  append a line to 10 files of vol (so that no snapshot is of an unchanged
#             tree), then `subvolume snapshot -r vol snap.K`; timed: the snapshot command
#   delete    `subvolume delete snap.K` of each of those snapshots, timed one by one; then
#             `subvolume sync MNT` once, timed: until the deleted snapshots' space is back
#             (space back: statfs, and each filesystem's own account). btrfs's only waits
#             for its cleaner, which the next periodic commit wakes (30 s); so once more
#             on REPS new snapshots (made and deleted untimed), timed: `arbor subvolume
#             sync` (which commits) vs `btrfs filesystem sync && btrfs subvolume sync`
#   diff      two read-only snapshots diff.s1 and diff.s2 of vol with 100 files changed in
#             between (50 appended to, 25 added, 25 deleted); timed, each from cold caches:
#             `arbor diff --stats S1 S2` on arbor; the usual way to find changes by walking
#             both trees, `rsync -a --dry-run --delete --itemize-changes S2/ S1/`
#             (metadata only, no --checksum), on btrfs and, for reference, on arbor; and
#             btrfs's own comparison that skips shared subtrees,
#             `btrfs send --no-data -p S1 S2 | btrfs receive --dump | wc -l`. Every output
#             is checked: 25 added, 25 deleted and 50 modified files.
#   reflink   a REFLINK_MIB file of random bytes (staged in /dev/shm), written and made
#             durable; timed: `cp SRC DST` on arbor (copy_file_range, which arbor turns
#             into a reflink) vs `cp --reflink=always SRC DST` on btrfs; then, untimed, the
#             space the copy took (statfs free blocks before and after, each after a
#             sync; and each filesystem's own account of used bytes, `arbor filesystem
#             df` / `btrfs filesystem df`) and `cmp` of the copy with its source; the copy
#             is removed again.
# Cold caches (diff): unmount (arbor: and wait for the daemon to exit), sync,
# `echo 3 > /proc/sys/vm/drop_caches`, mount again, for both filesystems, as
# scripts/bench-fs.sh does: for FUSE a remount is the only way to empty the daemon's
# caches too. The other groups run warm, as a snapshot or a copy usually does.
# "sync" is `sync -f MOUNTPOINT`; for arbor also `arbor sync MOUNTPOINT`, since syncfs
# does not reach a FUSE daemon.
#
# Timing: every timed command runs in `bash -c` under `timeout` (see lim and timed), and
# the clock is read inside that shell, just around the command: the wall clock of the
# full command (fork, exec, its work, exit), without the cost of the timeout wrapper.
#
# Environment:
#   ARBOR_BIN=PATH            the arbor binary (default target/release/arbor, built here)
#   ARBOR_MKFS_OPTS="..."     extra arguments of `arbor mkfs`
#   ARBOR_MOUNT_OPTS="..."    extra arguments of `arbor mount`, e.g. "-o threads=4"
#   BTRFS_MOUNT_OPTS=OPTS     extra `-o` options of the btrfs mount (default none)
#
# Needs: bash >= 5, root, /dev/fuse, util-linux (mount, losetup, findmnt), btrfs-progs,
# rsync, coreutils, awk, cargo. Everything the run made (mounts, loop devices, images, the
# staging directory in /dev/shm) is removed on exit, also after a failure or Ctrl-C; a
# step that outlives --timeout fails the run, and an arbor daemon that still holds its
# image then is killed (by pid).
set -Eeuo pipefail
export LC_ALL=C

caller_pwd=$PWD
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bench_name=bench-subvol bench_marker=subvol-bench
# die, log, the option helpers, scratch space and cleanup, the filesystems under test,
# cold remounts, the report and BENCHMARKS.md helpers, shared with scripts/bench-fs.sh.
# shellcheck source=lib/bench-common.sh source-path=SCRIPTDIR
source "$repo/scripts/lib/bench-common.sh"

usage() {
    cat <<'EOF'
Usage: scripts/bench-subvol.sh [OPTIONS]      (as root)

Options (defaults; with --quick in brackets):
  --quick               smaller sizes and fewer repetitions, for a smoke run (~2 min)
  --reps N              repetitions of every timed command, medians reported: snapshots
                        taken (and deleted), cold diff runs, reflink copies (10 [3])
  --dir DIR             where the images go; a fresh subdirectory is made and removed
                        (/var/tmp; must not be tmpfs)
  --image-size SIZE     size of each sparse image, truncate(1) syntax (8G)
  --files N             files in the snapshotted subvolume, 1 KiB each, in 100
                        directories; at least 1000 (100000 [10000])
  --reflink-mib N       size of the reflinked file in MiB (1024 [256])
  --only GROUPS         run only these groups, comma-separated, from snapshot, delete,
                        diff, reflink (all); delete without snapshot takes the
                        snapshots untimed
  --timeout SECONDS     fail the run when one step (a mount, a command, a sync) takes
                        longer, e.g. because a daemon hangs (900)
  --markdown FILE       write the results section into FILE (BENCHMARKS.md)
  --no-markdown         only print the table
  -h, --help            this text

Environment: ARBOR_BIN, ARBOR_MKFS_OPTS, ARBOR_MOUNT_OPTS, BTRFS_MOUNT_OPTS (see the
header of this script).
EOF
}

# --- options ------------------------------------------------------------------------------
quick=0 reps="" base_dir=/var/tmp image_size=8G files="" reflink_mib="" markdown=BENCHMARKS.md
only=snapshot,delete,diff,reflink phase_timeout=900
dirs=100 file_size=1024
orig_args=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --quick) quick=1 ;;
    --reps) need_arg "$@"; reps=$2; shift ;;
    --dir) need_arg "$@"; base_dir=$(from_caller "$2"); shift ;;
    --image-size) need_arg "$@"; image_size=$2; shift ;;
    --files) need_arg "$@"; files=$2; shift ;;
    --reflink-mib) need_arg "$@"; reflink_mib=$2; shift ;;
    --only) need_arg "$@"; only=$2; shift ;;
    --timeout) need_arg "$@"; phase_timeout=$2; shift ;;
    --markdown) need_arg "$@"; markdown=$(from_caller "$2"); shift ;;
    --no-markdown) markdown="" ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
if [[ $quick = 1 ]]; then
    : "${reps:=3}" "${files:=10000}" "${reflink_mib:=256}"
else
    : "${reps:=10}" "${files:=100000}" "${reflink_mib:=1024}"
fi
whole_numbers reps files reflink_mib phase_timeout
((reps >= 1 && reflink_mib >= 1 && phase_timeout >= 1)) ||
    die "--reps, --reflink-mib and --timeout must be at least 1"
# The changed files of the diff group must be distinct: 50 modified, 25 deleted.
((files >= 1000)) || die "--files must be at least 1000"

check_only snapshot delete diff reflink

# --- preconditions ------------------------------------------------------------------------
check_bash_root
missing=()
find_missing mount umount losetup findmnt truncate dd cmp cp sync awk df stat numfmt \
    timeout realpath mkfs.btrfs btrfs cargo
want diff && find_missing rsync
((${#missing[@]} == 0)) ||
    die "missing tools: ${missing[*]} (Debian: apt-get install -y btrfs-progs rsync util-linux coreutils)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
[[ -c /dev/fuse ]] || die "/dev/fuse does not exist"
grep -qw btrfs /proc/filesystems || log "btrfs is not in /proc/filesystems yet; mount will try to load it"

check_base_dir

image_bytes=$(numfmt --from=iec "${image_size%B}" 2>/dev/null) ||
    die "--image-size '$image_size' is not a size (e.g. 8G)"
# Peak use of each image: the small files (~4 KiB each on disk with their metadata), the
# file to reflink, and room for both filesystems' metadata; of /dev/shm: that file.
need_img_kib=$((files * 8 + reflink_mib * 1024 + 1024 * 1024))
((image_bytes / 1024 >= need_img_kib)) ||
    die "--image-size $image_size is too small: the run needs about $((need_img_kib >> 10)) MiB per image"
check_space $((2 * need_img_kib)) $((reflink_mib * 1024 + 65536))

# --- build --------------------------------------------------------------------------------
log "building target/release/fsmeta (and arbor, unless ARBOR_BIN is set)"
cargo build --release --quiet -p arbor-bench --bin fsmeta
[[ -n ${ARBOR_BIN:-} ]] || cargo build --release --quiet -p arbor-cli
[[ -x $arbor_bin ]] || die "no arbor binary at $arbor_bin"
for sub in "subvolume snapshot" "subvolume sync" diff; do
    # shellcheck disable=SC2086 # two words
    "$arbor_bin" $sub --help >/dev/null 2>&1 || die "'$arbor_bin $sub' does not exist"
done

# --- scratch space and cleanup ------------------------------------------------------------
make_scratch
# One line per measurement: REP<tab>KEY<tab>VALUE, KEY = WORKLOAD.ROLE, VALUE in seconds
# (space: MiB).
: >"$results"
install_cleanup

# --- filesystems under test ---------------------------------------------------------------
# All from the library (arbor and btrfs: setup_, mount_, teardown_, sync_; fs, cold).

# The program whose `subvolume ...` commands ROLE answers to.
subvol_cmd() {
    if [[ $1 = arbor ]]; then
        echo "$arbor_bin"
    else
        echo btrfs
    fi
}

# Free bytes of the filesystem at $1 (statfs: available blocks × fundamental block size).
free_bytes() { lim stat -f -c '%a %S' "$1" | awk '{ printf "%.0f\n", $1 * $2 }'; }

# Bytes in use by the filesystem's own account (after a sync): arbor's used_bytes
# (`arbor filesystem df`); btrfs's data + metadata + system bytes used (`btrfs filesystem
# df`, logical: one copy of DUP metadata). statfs does not show btrfs metadata that fits in
# chunks already allocated.
own_used() {
    if [[ $1 = arbor ]]; then
        lim "$arbor_bin" filesystem df --format json "${mnt[arbor]}" |
            awk -F'[:,]' '/"used_bytes"/ { gsub(/ /, "", $2); print $2 }'
    else
        lim btrfs filesystem df -b "${mnt[btrfs]}" |
            awk '/^(Data|Metadata|System),/ { for (i = 1; i <= NF; i++) if ($i ~ /^used=/) { sub(/used=/, "", $i); s += $i } }
                END { printf "%.0f\n", s }'
    fi
}
# MiB between two byte counts, $2 - $1.
mib_delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1048576 }'; }

# --- timing and results -------------------------------------------------------------------
timing_file=$work/timing
# timed_sh SNIPPET [ARGS...]: runs SNIPPET (bash, pipefail, ARGS as $1...) under lim,
# leaving the wall-clock time of SNIPPET alone, in seconds, in $elapsed: the clock is read
# inside the shell that runs it, so neither timeout's nor that shell's start is counted.
# Redirections of the call apply to SNIPPET.
timed_sh() {
    local snippet=$1
    shift
    rm -f "$timing_file"
    # shellcheck disable=SC2016 # expanded by that shell
    TIMING_FILE=$timing_file lim bash -c 'set -o pipefail
t0=$EPOCHREALTIME
'"$snippet"'
rc=$?
t1=$EPOCHREALTIME
echo "$t0 $t1" >"$TIMING_FILE"
exit "$rc"' timed "$@"
    elapsed=$(awk '{ printf "%.6f", $2 - $1 }' "$timing_file")
}
# timed COMMAND [ARGS...]: the same for one command.
timed() { timed_sh '"$@"' "$@"; }

# record KEY VALUE [REP]: one measurement of repetition REP (default $k).
k=0
record() {
    printf '%s\t%s\t%s\n' "${3:-$k}" "$1" "$2" >>"$results"
}
# say KEY: logs the last measurement ($elapsed).
say() { awk -v key="$1" -v t="$elapsed" -v k="$k" 'BEGIN { printf "bench-subvol: %2d %-14s %10.3f ms\n", k, key, t * 1000 }' >&2; }

# --- the subvolume ------------------------------------------------------------------------
per_dir=$(((files + dirs - 1) / dirs))
# The path of file number $1 (fsmeta's layout) inside a subvolume root.
file_path() { echo "data/d$(($1 / per_dir))/f$1"; }

# Appends a line to 10 files of ROLE's vol, spread over the tree, different every time.
touch_ten() {
    local role=$1 j i
    for ((j = 0; j < 10; j++)); do
        i=$(((j * (files / 10) + k) % files))
        echo "snapshot $k" >>"${mnt[$role]}/vol/$(file_path "$i")"
    done
}

# --- workloads ----------------------------------------------------------------------------
# snapshots K: K read-only snapshots snap.1..snap.K of vol on both filesystems, 10 files
# changed before each; recorded unless $2 = untimed.
snapshots() {
    local r out=$work/cmd.out
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            touch_ten "$r"
            timed "$(subvol_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/snap.$k" >"$out"
            [[ ${1:-} = untimed ]] && continue
            record "snap.$r" "$elapsed"
            say "snapshot $r"
        done
    done
    # Read-only, and holding the last change.
    for r in "${roles[@]}"; do
        if echo x 2>/dev/null >"${mnt[$r]}/snap.$reps/ro-probe"; then
            note "$r: a file could be created in the read-only snapshot snap.$reps"
        fi
        [[ $(tail -c 20 "${mnt[$r]}/snap.$reps/$(file_path "$(((files / 10 + reps) % files))")" | tr -d '\0') = *"snapshot $reps" ]] ||
            note "$r: snap.$reps lacks the change made to vol just before it"
    done
}

# Who goes first in repetition $k: arbor in odd ones, btrfs in even ones.
order() { if ((k % 2)); then echo arbor btrfs; else echo btrfs arbor; fi; }

declare -A reclaimed_mib reclaimed_own_mib
deletions() {
    local r out=$work/cmd.out
    declare -A free_before own_before
    for r in "${roles[@]}"; do
        fs "$r" sync
        free_before[$r]=$(free_bytes "${mnt[$r]}")
        own_before[$r]=$(own_used "$r")
    done
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            timed "$(subvol_cmd "$r")" subvolume delete "${mnt[$r]}/snap.$k" >"$out"
            record "del.$r" "$elapsed"
            say "delete $r"
            [[ ! -e ${mnt[$r]}/snap.$k ]] || note "$r: snap.$k is still there after subvolume delete"
        done
    done
    k=1
    for r in $(order); do
        timed "$(subvol_cmd "$r")" subvolume sync "${mnt[$r]}" >"$out"
        record "ssync.$r" "$elapsed"
        say "subvol sync $r"
    done
    # Nothing left to clean up, and how much space came back.
    local pending
    pending=$(lim "$arbor_bin" filesystem df --format json "${mnt[arbor]}" |
        awk -F'[:,]' '/"cleanup_pending_nodes"/ { gsub(/ /, "", $2); print $2 }')
    [[ $pending = 0 ]] ||
        note "arbor: \`arbor filesystem df\` still counts $pending deleted subvolume nodes to free after \`arbor subvolume sync\`"
    pending=$(lim btrfs subvolume list -d "${mnt[btrfs]}" | wc -l)
    [[ $pending = 0 ]] ||
        note "btrfs: \`btrfs subvolume list -d\` still lists $pending deleted subvolumes after \`btrfs subvolume sync\`"
    for r in "${roles[@]}"; do
        fs "$r" sync
        reclaimed_mib[$r]=$(mib_delta "${free_before[$r]}" "$(free_bytes "${mnt[$r]}")")
        reclaimed_own_mib[$r]=$(mib_delta "$(own_used "$r")" "${own_before[$r]}")
    done
    # btrfs's `subvolume sync` only waits for the cleaner, which the next transaction
    # commit wakes (every 30 s by default, commit=); arbor's commits until the space is
    # back. Once more, on new snapshots (made and deleted untimed), with btrfs told to
    # commit first: `btrfs filesystem sync` (BTRFS_IOC_SYNC: commit, wake the cleaner).
    for r in "${roles[@]}"; do
        for ((k = 1; k <= reps; k++)); do
            touch_ten "$r"
            lim "$(subvol_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/snapb.$k" >/dev/null
        done
        fs "$r" sync
        for ((k = 1; k <= reps; k++)); do
            lim "$(subvol_cmd "$r")" subvolume delete "${mnt[$r]}/snapb.$k" >/dev/null
        done
    done
    k=1
    for r in $(order); do
        if [[ $r = arbor ]]; then
            timed "$arbor_bin" subvolume sync "${mnt[arbor]}" >"$out"
        else
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            timed_sh 'btrfs filesystem sync "$1" && btrfs subvolume sync "$1"' "${mnt[btrfs]}" >"$out"
        fi
        record "ssyncc.$r" "$elapsed"
        say "commit+sync $r"
    done
}

# The 100 changes of the diff group, the same on both: 50 files appended to, 25 added (in
# new names), 25 deleted, spread over the tree.
change_hundred() {
    local v=${mnt[$1]}/vol j
    for ((j = 0; j < 50; j++)); do
        echo "changed" >>"$v/$(file_path $((j * (files / 50) + 2)))"
    done
    for ((j = 0; j < 25; j++)); do
        cp "$stage/new1k" "$v/data/d$(((j * 4) % dirs))/new$j"
    done
    for ((j = 0; j < 25; j++)); do
        rm "$v/$(file_path $((j * (files / 25) + 3)))"
    done
}

# check_counts WHAT ADDED DELETED MODIFIED: one line of the table's diff check; a note
# when the counts are not 25, 25, 50.
declare -A counts_seen
check_counts() {
    local what=$1 got="$2 added, $3 deleted, $4 modified"
    counts_seen[$what]=$got
    [[ $2/$3/$4 = 25/25/50 ]] ||
        note "$what found $got files, expected 25 added, 25 deleted, 50 modified"
}

# Files (not directories) in `arbor diff` output: +, - and M lines by name.
count_arbor_diff() {
    awk -F'\t' '$2 ~ /\/(f[0-9]+|new[0-9]+)$/ { n[$1]++; next } $1 == "R" { n["R"]++; next } { n["dir" $1]++ }
        END { printf "%d %d %d %d %d %d %d\n", n["+"], n["-"], n["M"], n["R"], n["dir+"], n["dir-"], n["dirM"] }' "$1"
}
# Files in rsync's itemized output: >f+++ added, >f. modified, *deleting (not dirs) deleted.
count_rsync() {
    awk '/^>f\+/ { a++ } /^>f[^+]/ { m++ } /^\*deleting / && !/\/$/ { d++ }
        END { printf "%d %d %d\n", a, d, m }' "$1"
}

diff_nodes="" diff_skipped="" diff_lines="" send_lines="" send_ok=1
diffs() {
    local r out=$work/diff.out err=$work/diff.err a d m rn da dd dm msg
    head -c 1024 /dev/urandom >"$stage/new1k"
    for r in "${roles[@]}"; do
        lim "$(subvol_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/diff.s1" >/dev/null
        change_hundred "$r"
        lim "$(subvol_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/diff.s2" >/dev/null
        fs "$r" sync
    done
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            local s1=${mnt[$r]}/diff.s1 s2=${mnt[$r]}/diff.s2
            if [[ $r = arbor ]]; then
                cold arbor
                timed "$arbor_bin" diff --stats "$s1" "$s2" >"$out" 2>"$err"
                record diff.arbor "$elapsed"
                say "arbor diff"
                read -r a d m rn da dd dm < <(count_arbor_diff "$out")
                check_counts "\`arbor diff\`" "$a" "$d" "$m"
                ((rn == 0)) || note "\`arbor diff\` reported $rn renames, expected none"
                ((da + dd == 0)) || note "\`arbor diff\` reported $da added and $dd deleted directories, expected none"
                diff_lines="$(wc -l <"$out") lines: $a +, $d −, $m M files, $dm M directories"
                diff_nodes=$(sed -n 's/^compared by reading \([0-9]*\) tree nodes.*/\1/p' "$err")
                diff_skipped=$(sed -n 's/.*(\([0-9]*\) shared subtrees skipped).*/\1/p' "$err")
                [[ -n $diff_nodes ]] || note "\`arbor diff --stats\` printed no node count: $(head -c 200 "$err")"
                if [[ $k = 1 ]]; then
                    log "arbor diff: $(wc -l <"$out") lines: $a added, $d deleted, $m modified files; $(<"$err")"
                fi
            fi
            cold "$r"
            timed rsync -a --dry-run --delete --itemize-changes "$s2/" "$s1/" >"$out"
            record "rsync.$r" "$elapsed"
            say "rsync $r"
            read -r a d m < <(count_rsync "$out")
            check_counts "rsync on $r" "$a" "$d" "$m"
            if [[ $r = btrfs && $send_ok = 1 ]]; then
                cold btrfs
                # shellcheck disable=SC2016 # expanded by timed_sh's shell
                if timed_sh 'btrfs send -q --no-data -p "$1" "$2" | btrfs receive --dump | wc -l >"$3"' \
                    "$s1" "$s2" "$out" 2>"$err"; then
                    record send.btrfs "$elapsed"
                    say "btrfs send"
                    send_lines=$(<"$out")
                else
                    send_ok=0
                    msg=$(tr '\n' ' ' <"$err")
                    note "\`btrfs send --no-data -p S1 S2 | btrfs receive --dump\` failed: ${msg:0:300}"
                fi
            fi
        done
    done
}

reflinks() {
    local r src dst f0 f1 u0
    for r in "${roles[@]}"; do
        mkdir "${mnt[$r]}/rl"
        lim dd if="$stage/random" of="${mnt[$r]}/rl/src" bs=1M iflag=fullblock conv=fsync status=none
        fs "$r" sync
    done
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            src=${mnt[$r]}/rl/src dst=${mnt[$r]}/rl/copy.$k
            fs "$r" sync
            f0=$(free_bytes "${mnt[$r]}") u0=$(own_used "$r")
            if [[ $r = arbor ]]; then
                timed cp "$src" "$dst"
            else
                timed cp --reflink=always "$src" "$dst"
            fi
            record "reflink.$r" "$elapsed"
            say "reflink $r"
            fs "$r" sync
            f1=$(free_bytes "${mnt[$r]}")
            record "space.$r" "$(awk -v a="$f0" -v b="$f1" 'BEGIN { printf "%.4f", (a - b) / 1048576 }')"
            record "spaceown.$r" "$(awk -v a="$u0" -v b="$(own_used "$r")" 'BEGIN { printf "%.4f", (b - a) / 1048576 }')"
            lim cmp "$src" "$dst" || die "$r: the copy $dst differs from its source"
            lim rm "$dst"
            fs "$r" sync
        done
    done
}

# --- the run ------------------------------------------------------------------------------
log "images in $work ($base_fs), staging in $stage"
if want reflink; then
    log "staging ${reflink_mib} MiB of random data"
    head -c "$((reflink_mib << 20))" /dev/urandom >"$stage/random"
fi

started=$EPOCHREALTIME
declare -A fill_s
for r in "${roles[@]}"; do
    mkdir -p "${mnt[$r]}"
    fs "$r" setup
    lim "$(subvol_cmd "$r")" subvolume create "${mnt[$r]}/vol" >/dev/null
    if want snapshot || want delete || want diff; then
        log "$r: $files files of $file_size B in $dirs directories"
        timed_sh '"$@" >/dev/null' "$fsmeta" create --dir "${mnt[$r]}/vol/data" --files "$files" \
            --dirs "$dirs" --size "$file_size"
        fill_s[$r]=$elapsed
        fs "$r" sync
    fi
done
btrfs_seen_opts=$(findmnt -fno OPTIONS "${mnt[btrfs]}")

if want snapshot; then
    log "snapshot: $reps read-only snapshots of vol on each"
    snapshots
elif want delete; then
    log "snapshot (untimed, for delete): $reps read-only snapshots of vol on each"
    snapshots untimed
fi
if want delete; then
    log "delete: the $reps snapshots, then subvolume sync"
    deletions
fi
if want diff; then
    log "diff: $reps cold runs of each comparison"
    diffs
fi
if want reflink; then
    log "reflink: $reps copies of a $reflink_mib MiB file"
    reflinks
fi
for r in "${roles[@]}"; do
    fs "$r" teardown
    rm -f "${img[$r]}"
done
total_s=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
log "measured in ${total_s} s"

# --- report -------------------------------------------------------------------------------
# 100000 -> 100,000
files_h=$(sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta' <<<"$files")
snap_target_ms=10

# row KEY_A KEY_B DESCRIPTION [snap]: one table row, arbor's KEY_A against btrfs's KEY_B
# (times in seconds; the ratio is KEY_B / KEY_A, arbor speed / btrfs speed).
row() {
    awk -F'\t' -v ka="$1" -v kb="$2" -v desc="$3" -v kind="${4:-}" -v target="$snap_target_ms" \
        -v extra="${5:-}" "$awk_lib"'
        function t(s) { return s >= 1 ? sprintf("%.2f s", s) : s >= 0.001 ? sprintf("%.2f ms", s * 1000) : sprintf("%.0f µs", s * 1e6) }
        $2 == ka { a[$1] = $3 } $2 == kb { b[$1] = $3 }
        END {
            na = nb = nr = 0; amax = 0
            for (r in a) { va[++na] = a[r]; if (a[r] > amax) amax = a[r] }
            for (r in b) vb[++nb] = b[r]
            if (!na || !nb) exit
            for (r in a) if (r in b) q[++nr] = b[r] / a[r]
            ma = median(va, na); mb = median(vb, nb); ratio = mb / ma
            range = ratio_range(q, nr)
            speed = speed_text(ratio)
            acell = t(ma); tcol = "—"; verdict = speed
            if (kind == "snap") {
                acell = acell " (slowest " t(amax) ")"
                tcol = "arbor < " target " ms"
                verdict = (ma * 1000 < target ? "meets target; " : "**misses target**; ") speed
            }
            if (extra != "") verdict = verdict "; " extra
            printf "| %s | %s | %s | **%.2f** | %s | %s | %s |\n", desc, acell, t(mb), ratio, range, tcol, verdict
        }' "$results"
}

# The diff check for the table: what each comparison found.
diff_check() {
    local what=$1 got=${counts_seen[$1]:-}
    [[ -n $got ]] || return 0
    if [[ $got = "25 added, 25 deleted, 50 modified" ]]; then
        echo "found the 100 changed files"
    else
        echo "**found $got files** (expected 25, 25, 50)"
    fi
}

table() {
    local s1="S1" s2="S2" rs
    rs="\`rsync -a -n --delete -i $s2/ $s1/\`"
    echo "| workload (arbor command / btrfs command) | arbor (median) | btrfs (median) | arbor / btrfs | per-run ratios | target | verdict |"
    echo "|---|--:|--:|--:|--:|--:|---|"
    if want snapshot; then
        local caveat=""
        ((files == 100000)) || caveat="the target is for 100,000 files, this run has $files_h"
        row snap.arbor snap.btrfs "read-only snapshot of a $files_h-file subvolume, 10 files changed since the last one: \`subvolume snapshot -r\` (× $reps)" snap "$caveat"
    fi
    if want delete; then
        row del.arbor del.btrfs "delete one of those snapshots: \`subvolume delete\` (× $reps)"
        row ssync.arbor ssync.btrfs "then until the space of all $reps is back: \`subvolume sync\` (btrfs: waits for its next periodic commit) (1 run)" "" \
            "space back (statfs): arbor $(fmt_free "${reclaimed_mib[arbor]:-}"), btrfs $(fmt_free "${reclaimed_mib[btrfs]:-}"); by their own account: arbor $(fmt_free "${reclaimed_own_mib[arbor]:-}"), btrfs $(fmt_free "${reclaimed_own_mib[btrfs]:-}")"
        row ssyncc.arbor ssyncc.btrfs "the same for $reps more, btrfs told to commit first: \`arbor subvolume sync\` (which commits) / \`btrfs filesystem sync && btrfs subvolume sync\` (1 run)"
    fi
    if want diff; then
        local ck
        ck="arbor: $(diff_check "\`arbor diff\`"), rsync on btrfs: $(diff_check "rsync on btrfs")"
        row diff.arbor rsync.btrfs "find the 100 changed files between two snapshots, cold: \`arbor diff\` / $rs (× $reps)" "" "$ck"
        if [[ $send_ok = 1 ]]; then
            row diff.arbor send.btrfs "the same, btrfs's own comparison: \`arbor diff\` / \`btrfs send --no-data -p $s1 $s2 \| btrfs receive --dump\` (× $reps)" "" \
                "$send_lines stream commands"
        fi
        row rsync.arbor rsync.btrfs "reference, the same tree walk on both: $rs / $rs (× $reps)" "" \
            "rsync on arbor: $(diff_check "rsync on arbor")"
    fi
    if want reflink; then
        row reflink.arbor reflink.btrfs "copy a $(fmt_mib "$reflink_mib") file: \`cp\` (copy_file_range) / \`cp --reflink=always\` (× $reps)"
        space_row
    fi
}

# "12.34 MiB" / "n/a".
fmt_free() { if [[ -n $1 ]]; then echo "$1 MiB"; else echo "n/a"; fi; }

# The space the reflinked copies took: stated plainly, no ratio.
space_row() {
    awk -F'\t' -v mib="$reflink_mib" -v reps="$reps" "$awk_lib"'
        function say(role, m) { return m < 0.25 * mib ? role " shares the data" : role " **copied " sprintf("%.0f", m) " MiB**" }
        $2 == "space.arbor" { a[++na] = $3 } $2 == "space.btrfs" { b[++nb] = $3 }
        $2 == "spaceown.arbor" { oa[++noa] = $3 } $2 == "spaceown.btrfs" { ob[++nob] = $3 }
        END {
            if (!na || !nb) exit
            ma = median(a, na); mb = median(b, nb); moa = median(oa, noa); mob = median(ob, nob)
            printf "| space taken by that copy (statfs free before − after, each after a sync) (× %d) | %.2f MiB | %.2f MiB | — | — | — | %s, %s: arbor %.2f MiB, btrfs %.2f MiB for a %d MiB copy; by their own account (`filesystem df`, used after − before): arbor %.2f MiB, btrfs %.2f MiB |\n",
                reps, ma, mb, say("arbor", ma), say("btrfs", mb), ma, mb, mib, moa, mob
        }' "$results"
}

table_md=$(table)

stats_text=""
if want diff && [[ -n $diff_nodes ]]; then
    stats_text="\`arbor diff --stats\`: compared by reading **$diff_nodes tree nodes** ($diff_skipped shared subtrees skipped) for the $files_h-file subvolume; its output: $diff_lines."
fi
fill_text=$(awk -v a="${fill_s[arbor]:-}" -v b="${fill_s[btrfs]:-}" -v n="$files_h" \
    'BEGIN { if (a != "" && b != "") printf "Filling the subvolume (`fsmeta create`, %s files, untimed in the table): arbor %.1f s, btrfs %.1f s.", n, a, b }')

print_notes
echo
echo "Ratio = arbor speed / btrfs speed (btrfs time / arbor time, medians); above 1 means arbor is faster."
echo "$table_md"
echo
[[ -z $stats_text ]] || echo "$stats_text"
[[ -z $fill_text ]] || echo "$fill_text"
echo

[[ -n $markdown ]] || exit 0

# --- BENCHMARKS.md ------------------------------------------------------------------------
describe_run
halt_poll=""
[[ -r $haltpoll ]] && halt_poll=", guest halt polling: $(<"$haltpoll") ns"
# (awk reads all of the output: head would leave the writer to die of SIGPIPE)
tools_v="$(rsync --version | awk 'NR == 1 { print "rsync " $3 }'), $(cp --version | awk 'NR == 1 { print "coreutils " $NF }')"
btrfs_progs_v=$(mkfs.btrfs --version 2>&1 | awk 'match($0, /v[0-9.]+/) && !v { v = substr($0, RSTART, RLENGTH) } END { print v }')

section=$(
    echo "## Subvolumes: arbor (FUSE) vs btrfs — snapshots, deletion, diff, reflinks"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $cpu ($(nproc) CPUs), Linux $(uname -r)$halt_poll, in ${total_s} s. Two sparse $image_size image files in one directory on $base_fs (same disk). btrfs: btrfs-progs $btrfs_progs_v \`mkfs.btrfs\` defaults, \`mount -o loop$btrfs_opts\` (in effect: \`$btrfs_seen_opts\`). arbor (git $commit): \`arbor mkfs${ARBOR_MKFS_OPTS:+ $ARBOR_MKFS_OPTS}\`, \`arbor mount${ARBOR_MOUNT_OPTS:+ $ARBOR_MOUNT_OPTS}\` (FUSE). $tools_v. Medians of $reps repetitions, the two filesystems taking turns at each (the first one alternating)."
    reproduce_md
    echo "**Ratio = arbor speed / btrfs speed (btrfs time / arbor time, medians); above 1 means arbor is faster.** Times are the wall clock of the whole command (fork, exec, the request, exit); the machine is shared and noisy, so only the ratios carry over. Target from the issue: an arbor read-only snapshot of the mounted 100,000-file subvolume in under 10 ms (the full CLI command)."
    echo
    echo "$table_md"
    echo
    [[ -z $stats_text ]] || { echo "$stats_text"; echo; }
    notes_md
    echo "Method. Each filesystem gets a subvolume \`vol\` with $files_h files of 1 KiB in $dirs directories (\`target/release/fsmeta create\`, paths \`data/d{k}/f{i}\`), made durable before anything is timed. $fill_text Snapshots: before each, a line is appended to 10 files of \`vol\` (not synced: the snapshot command must hand them over itself; arbor's does a syncfs of the source), then \`arbor subvolume snapshot -r\` / \`btrfs subvolume snapshot -r\`, warm. Deletion: \`subvolume delete\` of each snapshot, one command per snapshot, then one \`subvolume sync\` of the mount, which returns when every deleted snapshot's space is free again (most of it is shared with \`vol\`, so little is freed; \"space back\" is statfs free space after that sync and a commit, minus before the first delete, and the same from each filesystem's own count of used bytes: \`arbor filesystem df\` used, \`btrfs filesystem df\` data + metadata + system used, one copy of DUP). \`arbor subvolume sync\` commits until nothing is left to free; \`btrfs subvolume sync\` only waits for the cleaner thread, which runs after the next transaction commit (every 30 s by default), so its time is mostly that wait, anywhere from 0 to 30 s, and btrfs-progs checks once a second (\`-s\`, whole seconds), so it returns either at once or after whole seconds; the next row repeats the measurement on as many new snapshots (made and deleted untimed) with btrfs told to commit first (\`btrfs filesystem sync\`: commit and wake the cleaner). Diff: two read-only snapshots S1, S2 of \`vol\` with 50 files appended to, 25 added and 25 deleted in between; every comparison runs from cold caches (unmount, \`sync\`, \`echo 3 > /proc/sys/vm/drop_caches\`, mount again — for FUSE the only way to empty the daemon's caches too); rsync compares size and mtime of every file of both trees (no \`--checksum\`), \`btrfs send --no-data\` walks only what differs between the two snapshots' trees, as \`arbor diff\` does; every output is checked for the 25 added, 25 deleted and 50 modified files. Reflinks: a $(fmt_mib "$reflink_mib") file of random bytes (from /dev/shm), written with fsync and committed; \`cp\` on arbor asks for FICLONE (which FUSE cannot pass on), then uses copy_file_range, which arbor shares block by block; space as for deletion (statfs does not show btrfs metadata that fits in chunks already allocated, hence the own count too); each copy is checked with \`cmp\` and removed, untimed. \"Sync\" = \`sync -f\` on the mountpoint (arbor: followed by \`arbor sync\`, a commit, since syncfs does not reach a FUSE daemon)."
)

write_section "$markdown" "$section"
