#!/usr/bin/env bash
# Benchmarks arbor's send and receive against btrfs's, and both against rsync, side by
# side in one run on the same machine, and writes the ratios into BENCHMARKS.md (between
# the send-bench markers).
#
# Usage (as root, from anywhere in the repository):
#   scripts/bench-send.sh               # the published run: 100000 files, 3 reps, ~13 min
#   scripts/bench-send.sh --quick       # smoke run: 10000 files, 2 reps (~2 min)
#   scripts/bench-send.sh --help        # every option
#
# Both filesystems live on sparse image files of the same size in one directory (default:
# a fresh directory under /var/tmp), so they share the underlying disk: btrfs is made with
# mkfs.btrfs defaults and mounted with `-o loop`; arbor with `arbor mkfs` and `arbor mount`.
# Each gets a subvolume `vol` with FILES files, made durable: 99% small files, a third
# each of 1, 2 and 4 KiB (`fsmeta create`, vol/data/k{1,2,4}/d{k}/f{i}, at most 1000 files
# a directory) and 1% larger files of BIG_KIB KiB of random bytes (vol/data/big/b{i},
# `split` of a file staged in /dev/shm). Then a read-only snapshot s1; 100 files changed
# (50 small files appended to, 25 new files of 4 KiB, 25 small files deleted; as
# scripts/bench-subvol.sh's diff group); a read-only snapshot s2. The streams
# `send s1` and `send -p s1 s2` of each filesystem are staged in /dev/shm (untimed; their
# sizes are reported). Then, group by group (--only), each repetition on both, who goes
# first alternating between repetitions, every timed command from cold caches:
#   full-send     `send -q s1 >/dev/null`
#   full-receive  `receive -q -f FULL_STREAM DEST` + sync, DEST a fresh directory
#   full-pipe     `send -q s1 | receive -q DEST` + sync; and rsync's way of making a
#                 copy: `rsync -aHAX s1/ DEST/` + sync, DEST a fresh (empty) subvolume
#   incr-send     `send -q -p s1 s2 >/dev/null`
#   incr-receive  onto a received copy of s1 in a directory IB (the last one full-receive
#                 made, or one received untimed): `receive -q -f INCR_STREAM IB` + sync;
#                 `send -q -p s1 s2 | receive -q IB` + sync; and rsync's way of bringing
#                 a copy up to date: `rsync -aHAX --delete s2/ RSI/` + sync, RSI a plain
#                 copy of s1 made by rsync (the last one full-pipe made, or one made
#                 untimed), put back with `rsync -aHAX --delete s1/ RSI/` (untimed)
#                 between repetitions
# Each filesystem receives its own streams. What a repetition received (or rsync copied)
# is deleted again, untimed, and the space is given back before the next timed command
# (`arbor subvolume sync`; `btrfs filesystem sync && btrfs subvolume sync`, since btrfs's
# cleaner otherwise runs whenever its next commit happens, possibly during the next timed
# command). Once per run, untimed, every kind of result is compared with its source
# snapshot: `rsync -aHAX --checksum --dry-run --itemize-changes --delete SNAP/ RESULT/`
# must list nothing.
# Cold caches: unmount (arbor: and wait for the daemon to exit), sync,
# `echo 3 > /proc/sys/vm/drop_caches`, mount again, for the filesystem about to be timed,
# as scripts/bench-fs.sh does: for FUSE a remount is the only way to empty the daemon's
# caches too. "sync" (inside the timing) is `sync -f MOUNTPOINT`; for arbor also
# `arbor sync MOUNTPOINT`, since syncfs does not reach a FUSE daemon.
#
# Timing: every timed command runs in `bash -c` under `timeout` (see lim and timed_sh), and
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
bench_name=bench-send bench_marker=send-bench
# die, log, the option helpers, scratch space and cleanup, the filesystems under test,
# cold remounts, the report and BENCHMARKS.md helpers, shared with scripts/bench-fs.sh.
# shellcheck source=lib/bench-common.sh source-path=SCRIPTDIR
source "$repo/scripts/lib/bench-common.sh"

usage() {
    cat <<'EOF'
Usage: scripts/bench-send.sh [OPTIONS]      (as root)

Options (defaults; with --quick in brackets):
  --quick               smaller sizes and fewer repetitions, for a smoke run (~2 min)
  --reps N              repetitions of every timed command, medians reported (3 [2])
  --dir DIR             where the images go; a fresh subdirectory is made and removed
                        (/var/tmp; must not be tmpfs)
  --image-size SIZE     size of each sparse image, truncate(1) syntax (8G)
  --files N             files in the sent subvolume: 99% of 1, 2 and 4 KiB, 1% larger;
                        at least 2000 (100000 [10000])
  --big-kib N           size of each larger file in KiB (256 [64])
  --only GROUPS         run only these groups, comma-separated, from full-send,
                        full-receive, full-pipe, incr-send, incr-receive (all)
  --timeout SECONDS     fail the run when one step (a mount, a command, a sync) takes
                        longer, e.g. because a daemon hangs (900)
  --markdown FILE       write the results section into FILE (BENCHMARKS.md)
  --no-markdown         only print the tables
  -h, --help            this text

Environment: ARBOR_BIN, ARBOR_MKFS_OPTS, ARBOR_MOUNT_OPTS, BTRFS_MOUNT_OPTS (see the
header of this script).
EOF
}

# --- options ------------------------------------------------------------------------------
quick=0 reps="" base_dir=/var/tmp image_size=8G files="" big_kib="" markdown=BENCHMARKS.md
only=full-send,full-receive,full-pipe,incr-send,incr-receive phase_timeout=900
per_dir=1000
orig_args=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --quick) quick=1 ;;
    --reps) need_arg "$@"; reps=$2; shift ;;
    --dir) need_arg "$@"; base_dir=$(from_caller "$2"); shift ;;
    --image-size) need_arg "$@"; image_size=$2; shift ;;
    --files) need_arg "$@"; files=$2; shift ;;
    --big-kib) need_arg "$@"; big_kib=$2; shift ;;
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
    : "${reps:=2}" "${files:=10000}" "${big_kib:=64}"
else
    : "${reps:=3}" "${files:=100000}" "${big_kib:=256}"
fi
whole_numbers reps files big_kib phase_timeout
((reps >= 1 && big_kib >= 1 && phase_timeout >= 1)) ||
    die "--reps, --big-kib and --timeout must be at least 1"
# The 100 changed files must be distinct (see change_hundred).
((files >= 2000)) || die "--files must be at least 2000"

check_only full-send full-receive full-pipe incr-send incr-receive

# --- preconditions ------------------------------------------------------------------------
check_bash_root
missing=()
find_missing mount umount losetup findmnt truncate split sync awk df stat numfmt timeout \
    realpath mkfs.btrfs btrfs rsync cargo
((${#missing[@]} == 0)) ||
    die "missing tools: ${missing[*]} (Debian: apt-get install -y btrfs-progs rsync util-linux coreutils)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
[[ -c /dev/fuse ]] || die "/dev/fuse does not exist"
grep -qw btrfs /proc/filesystems || log "btrfs is not in /proc/filesystems yet; mount will try to load it"

check_base_dir

# The subvolume: n_big larger files, the rest small, a third each of 1, 2 and 4 KiB.
n_big=$((files / 100))
n_small=$((files - n_big))
declare -A n_of=([1]=$((n_small / 3)) [2]=$((n_small / 3)))
n_of[4]=$((n_small - n_of[1] - n_of[2]))
big_mib=$(((n_big * big_kib + 1023) / 1024))
data_mib=$(((n_of[1] * 1 + n_of[2] * 2 + n_of[4] * 4 + n_big * big_kib + 1023) / 1024))

image_bytes=$(numfmt --from=iec "${image_size%B}" 2>/dev/null) ||
    die "--image-size '$image_size' is not a size (e.g. 8G)"
# Peak use of each image: four copies of the tree at once (vol with its snapshots, a
# received copy, the parent copy of the incremental receive, the rsync copy), each small
# file taking ~8 KiB with its metadata, and room for both filesystems' metadata; of
# /dev/shm: the larger files' source and the two full streams.
copy_kib=$((n_small * 8 + n_big * (big_kib + 4)))
need_img_kib=$((4 * copy_kib + 1024 * 1024))
((image_bytes / 1024 >= need_img_kib)) ||
    die "--image-size $image_size is too small: the run needs about $((need_img_kib >> 10)) MiB per image"
check_space $((2 * need_img_kib)) $((3 * copy_kib + 65536))

# --- build --------------------------------------------------------------------------------
log "building target/release/fsmeta (and arbor, unless ARBOR_BIN is set)"
cargo build --release --quiet -p arbor-bench --bin fsmeta
[[ -n ${ARBOR_BIN:-} ]] || cargo build --release --quiet -p arbor-cli
[[ -x $arbor_bin ]] || die "no arbor binary at $arbor_bin"
# The code measured is the code built now: the commit the report names (describe_run reads
# it at the end, when others may have committed since).
describe_run
built_commit=$commit
for sub in send receive "subvolume snapshot" "subvolume sync"; do
    # shellcheck disable=SC2086 # two words
    "$arbor_bin" $sub --help >/dev/null 2>&1 || die "'$arbor_bin $sub' does not exist"
done

# --- scratch space and cleanup ------------------------------------------------------------
make_scratch
# One line per measurement: REP<tab>KEY<tab>VALUE, KEY = WORKLOAD.ROLE, VALUE in seconds.
: >"$results"
install_cleanup

# --- filesystems under test ---------------------------------------------------------------
# All from the library (arbor and btrfs: setup_, mount_, teardown_, sync_; fs, cold).

# The program whose send, receive and subvolume commands ROLE answers to.
fs_cmd() {
    if [[ $1 = arbor ]]; then
        echo "$arbor_bin"
    else
        echo btrfs
    fi
}

# After deleting subvolumes of ROLE (untimed): waits until their space is back, so that
# no cleanup runs during the next timed command. btrfs's cleaner runs after a commit.
settle() {
    if [[ $1 = arbor ]]; then
        lim "$arbor_bin" subvolume sync "${mnt[arbor]}" >/dev/null
    else
        lim btrfs filesystem sync "${mnt[btrfs]}"
        lim btrfs subvolume sync "${mnt[btrfs]}" >/dev/null
    fi
}

# Deletes the subvolume $2 of ROLE $1 and what is left of its directory $3 (optional),
# then settles.
drop_subvol() {
    lim "$(fs_cmd "$1")" subvolume delete "$2" >/dev/null
    [[ -z ${3:-} ]] || rmdir "$3"
    settle "$1"
}

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

# The snippet that makes ROLE's filesystem durable, for the end of a timed snippet whose
# $1 is fs_cmd ROLE and $2 its mountpoint.
# shellcheck disable=SC2016 # expanded by timed_sh's shell
durable() {
    if [[ $1 = arbor ]]; then
        echo ' && sync -f "$2" && "$1" sync "$2"'
    else
        echo ' && sync -f "$2"'
    fi
}

# run KEY ROLE SNIPPET [ARGS...]: from cold caches, times SNIPPET with $1 = fs_cmd ROLE,
# $2 = ROLE's mountpoint and ARGS as $3...; records it as KEY.ROLE; dies with the
# command's error output when it fails.
k=0
out=$work/cmd.out err=$work/cmd.err
run() {
    local key=$1 role=$2 snippet=$3
    shift 3
    cold "$role"
    if ! timed_sh "$snippet" "$(fs_cmd "$role")" "${mnt[$role]}" "$@" >"$out" 2>"$err"; then
        die "$key on $role failed: $(head -c 600 "$err")"
    fi
    printf '%s\t%s\t%s\n' "$k" "$key.$role" "$elapsed" >>"$results"
    awk -v key="$key $role" -v t="$elapsed" -v k="$k" \
        'BEGIN { printf "bench-send: %2d %-20s %10.3f s\n", k, key, t }' >&2
}

# Who goes first in repetition $k: arbor in odd ones, btrfs in even ones.
order() { if ((k % 2)); then echo arbor btrfs; else echo btrfs arbor; fi; }

# same_tree ROLE WHAT SRC DST [KIND]: once per run, untimed: DST must hold what SRC holds
# (names, contents by checksum, modes, owners, times, xattrs, ACLs, hard links); a note if
# not. With KIND (full or incremental: DST was received from such a stream), the mtime of
# DST itself may differ, and is told apart: a send stream may make new files and
# directories under temporary names in the subvolume's root and rename them into place,
# so the root's mtime is right only if the stream's utimes of the root comes after the
# last of those (btrfs's incremental streams send none for a root that did not change,
# its full streams of large trees send it in the middle; see stream_layout). Each such
# result in root_mtime_of, e.g. "btrfs full".
declare -A checked root_mtime_of
same_tree() {
    local role=$1 what=$2 diffs=$work/check.out t0=$EPOCHREALTIME
    lim rsync -aHAX --checksum --dry-run --itemize-changes --delete "$3/" "$4/" >"$diffs"
    log "$role: checked $what against its source in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
    local root_differs=0
    if [[ -n ${5:-} ]] && grep -qxF '.d..t...... ./' "$diffs"; then
        grep -vxF '.d..t...... ./' "$diffs" >"$diffs.rest" || true
        mv "$diffs.rest" "$diffs"
        root_mtime_of["$role $5"]=1
        root_differs=1
    fi
    if [[ ! -s $diffs ]]; then
        if ((root_differs)); then
            checked[$what]+="$role: equal but the root's mtime¹, "
        else
            checked[$what]+="$role: equal, "
        fi
    else
        checked[$what]+="**$role: $(wc -l <"$diffs") differences**, "
        note "$role: $what differs from its source: $(head -3 "$diffs" | tr '\n' ' ')"
    fi
}

# --- the subvolume ------------------------------------------------------------------------
# The path, inside a subvolume root, of small file number $1 (0 .. n_small-1): the 1 KiB
# files first, then the 2 KiB, then the 4 KiB ones, each group in fsmeta's layout.
small_path() {
    local i=$1 g
    for g in 1 2 4; do
        if ((i < n_of[$g])); then
            echo "data/k$g/d$((i / per_of[$g]))/f$i"
            return
        fi
        ((i -= n_of[$g]))
    done
    die "no small file $1"
}

# fsmeta's layout of each group: dirs_of[G] directories, per_of[G] files in each.
declare -A dirs_of per_of
for g in 1 2 4; do
    dirs_of[$g]=$(((n_of[$g] + per_dir - 1) / per_dir))
    per_of[$g]=$(((n_of[$g] + dirs_of[$g] - 1) / dirs_of[$g]))
done

# Fills ROLE's vol: the small files with fsmeta, the larger ones with split.
fill() {
    local v=${mnt[$1]}/vol g
    mkdir "$v/data"
    for g in 1 2 4; do
        lim "$fsmeta" create --dir "$v/data/k$g" --files "${n_of[$g]}" \
            --dirs "${dirs_of[$g]}" --size $((g * 1024)) >/dev/null
    done
    mkdir "$v/data/big"
    lim split -b "${big_kib}K" -a 6 -d "$stage/big" "$v/data/big/b"
}

# The 100 changes between s1 and s2, the same on both: 50 small files appended to, 25 new
# files of 4 KiB (in new names), 25 small files deleted, spread over the tree.
change_hundred() {
    local v=${mnt[$1]}/vol j
    for ((j = 0; j < 50; j++)); do
        echo "changed" >>"$v/$(small_path $((j * (n_small / 50) + 2)))"
    done
    for ((j = 0; j < 25; j++)); do
        cp "$stage/new4k" "$v/data/k$((1 << (j % 3)))/d0/new$j"
    done
    for ((j = 0; j < 25; j++)); do
        rm "$v/$(small_path $((j * (n_small / 25) + 3)))"
    done
}

# --- workloads ----------------------------------------------------------------------------
full_send() {
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run fsend "$r" '"$1" send -q "$3" >/dev/null' "${mnt[$r]}/s1"
        done
    done
}

# What the incremental group receives onto (DIR, holding a received s1) and brings up to
# date with rsync (a plain copy of s1), by role: the last results of the full groups, if
# they ran.
declare -A ib_of rsi_of

full_receive() {
    local dest
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            dest=${mnt[$r]}/rx.$k
            mkdir "$dest"
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run frecv "$r" '"$1" receive -q -f "$3" "$4"'"$(durable "$r")" "$stage/$r.full" "$dest"
            ((k > 1)) || same_tree "$r" frecv "${mnt[$r]}/s1" "$dest/s1" full
            if ((k == reps)) && want incr-receive; then
                ib_of[$r]=$dest
            else
                drop_subvol "$r" "$dest/s1" "$dest"
            fi
        done
    done
}

full_pipe() {
    local dest
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            dest=${mnt[$r]}/px.$k
            mkdir "$dest"
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run fpipe "$r" '"$1" send -q "$3" | "$1" receive -q "$4"'"$(durable "$r")" "${mnt[$r]}/s1" "$dest"
            ((k > 1)) || same_tree "$r" fpipe "${mnt[$r]}/s1" "$dest/s1" full
            drop_subvol "$r" "$dest/s1" "$dest"

            dest=${mnt[$r]}/rs.$k
            lim "$(fs_cmd "$r")" subvolume create "$dest" >/dev/null
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run frsync "$r" 'rsync -aHAX "$3/" "$4/"'"$(durable "$r")" "${mnt[$r]}/s1" "$dest"
            ((k > 1)) || same_tree "$r" frsync "${mnt[$r]}/s1" "$dest"
            if ((k == reps)) && want incr-receive; then
                rsi_of[$r]=$dest
            else
                drop_subvol "$r" "$dest"
            fi
        done
    done
}

incr_send() {
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run isend "$r" '"$1" send -q -p "$3" "$4" >/dev/null' "${mnt[$r]}/s1" "${mnt[$r]}/s2"
        done
    done
}

incr_receive() {
    local ib rsi
    for r in "${roles[@]}"; do
        if [[ -z ${ib_of[$r]:-} ]]; then
            ib_of[$r]=${mnt[$r]}/ib
            log "$r: receiving s1 into ib/ (untimed)"
            mkdir "${ib_of[$r]}"
            lim "$(fs_cmd "$r")" receive -q -f "$stage/$r.full" "${ib_of[$r]}" >"$out" 2>"$err" ||
                die "$r: receive of the full stream into ib/ failed: $(head -c 600 "$err")"
        fi
        if [[ -z ${rsi_of[$r]:-} ]]; then
            rsi_of[$r]=${mnt[$r]}/rsi
            log "$r: copying s1 with rsync into rsi/ (untimed)"
            lim "$(fs_cmd "$r")" subvolume create "${rsi_of[$r]}" >/dev/null
            lim rsync -aHAX "${mnt[$r]}/s1/" "${rsi_of[$r]}/"
        fi
        fs "$r" sync
    done
    for ((k = 1; k <= reps; k++)); do
        for r in $(order); do
            ib=${ib_of[$r]} rsi=${rsi_of[$r]}
            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run irecv "$r" '"$1" receive -q -f "$3" "$4"'"$(durable "$r")" "$stage/$r.incr" "$ib"
            ((k > 1)) || same_tree "$r" irecv "${mnt[$r]}/s2" "$ib/s2" incremental
            drop_subvol "$r" "$ib/s2"

            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run ipipe "$r" '"$1" send -q -p "$3" "$4" | "$1" receive -q "$5"'"$(durable "$r")" \
                "${mnt[$r]}/s1" "${mnt[$r]}/s2" "$ib"
            ((k > 1)) || same_tree "$r" ipipe "${mnt[$r]}/s2" "$ib/s2" incremental
            drop_subvol "$r" "$ib/s2"

            # shellcheck disable=SC2016 # expanded by timed_sh's shell
            run irsync "$r" 'rsync -aHAX --delete "$3/" "$4/"'"$(durable "$r")" "${mnt[$r]}/s2" "$rsi"
            ((k > 1)) || same_tree "$r" irsync "${mnt[$r]}/s2" "$rsi"
            if ((k < reps)); then
                lim rsync -aHAX --delete "${mnt[$r]}/s1/" "$rsi/"
                fs "$r" sync
            fi
        done
    done
}

# --- the run ------------------------------------------------------------------------------
log "images in $work ($base_fs), staging in $stage"
log "staging $big_mib MiB of random data for the $n_big larger files"
head -c "$((n_big * big_kib * 1024))" /dev/urandom >"$stage/big"
head -c 4096 /dev/urandom >"$stage/new4k"

started=$EPOCHREALTIME
declare -A fill_s stream_bytes incr_cmds incr_kinds layout
# layout SNAP < DUMP: the commands of a stream (`btrfs receive --dump`) of snapshot SNAP,
# the one of them that sets the times of its root, and the last rename from a temporary
# name (o257-7-0) in the root (0: none); see same_tree.
stream_layout() {
    awk -v root="./$1/" '
        { n++ }
        $1 == "utimes" && $2 == root { u = n }
        $1 == "rename" && index($2, root) == 1 && substr($2, length(root) + 1) ~ /^o[0-9]+-[0-9]+-[0-9]+$/ { o = n }
        END { printf "%d %d %d\n", n, u, o }'
}
for r in "${roles[@]}"; do
    mkdir -p "${mnt[$r]}"
    fs "$r" setup
    lim "$(fs_cmd "$r")" subvolume create "${mnt[$r]}/vol" >/dev/null
    log "$r: $files files ($data_mib MiB) into vol"
    t0=$EPOCHREALTIME
    fill "$r"
    fs "$r" sync
    fill_s[$r]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    lim "$(fs_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/s1" >/dev/null
    change_hundred "$r"
    lim "$(fs_cmd "$r")" subvolume snapshot -r "${mnt[$r]}/vol" "${mnt[$r]}/s2" >/dev/null
    fs "$r" sync
    # The streams the receive groups apply, staged once.
    lim "$(fs_cmd "$r")" send -q -f "$stage/$r.full" "${mnt[$r]}/s1" 2>"$err" ||
        die "$r: send s1 failed: $(head -c 600 "$err")"
    lim "$(fs_cmd "$r")" send -q -f "$stage/$r.incr" -p "${mnt[$r]}/s1" "${mnt[$r]}/s2" 2>"$err" ||
        die "$r: send -p s1 s2 failed: $(head -c 600 "$err")"
    stream_bytes[$r.full]=$(stat -c %s "$stage/$r.full")
    stream_bytes[$r.incr]=$(stat -c %s "$stage/$r.incr")
    # What the streams hold (btrfs receive --dump): the commands of the incremental one, by
    # kind; in the full one, where the root's utimes stands (see same_tree).
    lim btrfs receive --dump -f "$stage/$r.incr" >"$work/$r.incr.dump"
    incr_cmds[$r]=$(wc -l <"$work/$r.incr.dump")
    incr_kinds[$r]=$(awk '{ n[$1]++ } END { for (c in n) print c, n[c] }' "$work/$r.incr.dump" |
        sort | paste -sd, | sed 's/,/, /g')
    layout[$r.full]=$(lim btrfs receive --dump -f "$stage/$r.full" | stream_layout s1)
    layout[$r.incr]=$(stream_layout s2 <"$work/$r.incr.dump")
    log "$r: filled in ${fill_s[$r]} s; streams: full $(numfmt --to=iec "${stream_bytes[$r.full]}")B, incremental $(numfmt --to=iec "${stream_bytes[$r.incr]}")B"
    log "$r: commands, the root's utimes at, the last rename from a temporary name at: full stream: ${layout[$r.full]}; incremental: ${layout[$r.incr]}"
    log "$r: the incremental stream: ${incr_cmds[$r]} commands: ${incr_kinds[$r]}"
done
rm -f "$stage/big"
btrfs_seen_opts=$(findmnt -fno OPTIONS "${mnt[btrfs]}")

if want full-send; then
    log "full-send: $reps cold runs of send s1 on each"
    full_send
fi
if want full-receive; then
    log "full-receive: $reps receives of the full stream on each"
    full_receive
fi
if want full-pipe; then
    log "full-pipe: $reps runs of send s1 | receive, and of rsync, on each"
    full_pipe
fi
if want incr-send; then
    log "incr-send: $reps cold runs of send -p s1 s2 on each"
    incr_send
fi
if want incr-receive; then
    log "incr-receive: $reps receives of the incremental stream, piped send | receive, and rsync, on each"
    incr_receive
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
mib() { awk -v b="$1" 'BEGIN { printf (b >= 10485760 ? "%.0f MiB" : b >= 1048576 ? "%.1f MiB" : "%.0f KiB"), b / (b >= 1048576 ? 1048576 : 1024) }'; }

# stats KEY_A KEY_B: tab-separated, the medians of KEY_A and KEY_B (as times), the ratio
# of the medians B / A (A's speed / B's speed), the range of the per-run ratios, and that
# ratio's speed_text; nothing when either is missing.
stats() {
    awk -F'\t' -v ka="$1" -v kb="$2" "$awk_lib"'
        function t(s) { return s >= 1 ? sprintf("%.2f s", s) : s >= 0.001 ? sprintf("%.1f ms", s * 1000) : sprintf("%.0f µs", s * 1e6) }
        $2 == ka { a[$1] = $3 } $2 == kb { b[$1] = $3 }
        END {
            na = nb = nr = 0
            for (r in a) va[++na] = a[r]
            for (r in b) vb[++nb] = b[r]
            if (!na || !nb) exit
            for (r in a) if (r in b) q[++nr] = b[r] / a[r]
            ma = median(va, na); mb = median(vb, nb); ratio = mb / ma
            printf "%s\t%s\t%.2f\t%s\t%s\n", t(ma), t(mb), ratio, ratio_range(q, nr), speed_text(ratio)
        }' "$results"
}

# row KEY DESCRIPTION [TARGET [EXTRA]]: a row of the main table, arbor's KEY.arbor against
# btrfs's KEY.btrfs; TARGET: the lowest arbor / btrfs ratio the issue asks for.
declare -A verdict_of
row() {
    local key=$1 desc=$2 target=${3:-} extra=${4:-} ta tb ratio range speed verdict tcol="—"
    IFS=$'\t' read -r ta tb ratio range speed < <(stats "$key.arbor" "$key.btrfs") || return 0
    verdict=$speed
    if [[ -n $target ]]; then
        tcol="≥ $target"
        if awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r >= t) }'; then
            verdict="meets target; $speed"
            verdict_of[$key]="met ($ratio×)"
        else
            verdict="**misses target**; $speed"
            verdict_of[$key]="**not met** ($ratio×)"
        fi
    fi
    [[ -z $extra ]] || verdict+="; $extra"
    echo "| $desc | $ta | $tb | **$ratio** | $range | $tcol | $verdict |"
}

# rsync_row KEY_SEND KEY_RSYNC DESCRIPTION: a row of the rsync table: on each filesystem
# its own send | receive against rsync (rsync time / send | receive time).
rsync_row() {
    local r ta tb ratio range speed cells=""
    for r in arbor btrfs; do
        IFS=$'\t' read -r ta tb ratio range speed < <(stats "$1.$r" "$2.$r") || return 0
        speed=${speed/arbor/$r}
        speed=${speed/%faster/faster than rsync}
        speed=${speed/%slower/slower than rsync}
        cells+=" $ta | $tb | **$ratio** ($range) |"
        [[ $r = arbor ]] || echo "| $3 |$cells"
    done
}

check_text() {
    local s=${checked[$1]:-}
    [[ -n $s ]] || { echo "not checked"; return; }
    echo "${s%, }"
}

sizes_text() {
    echo "streams: arbor $(mib "${stream_bytes[arbor.$1]}"), btrfs $(mib "${stream_bytes[btrfs.$1]}")"
}

table() {
    local dur="+ sync"
    echo "| operation (arbor command / btrfs command), cold | arbor (median) | btrfs (median) | arbor / btrfs | per-run ratios | target | verdict |"
    echo "|---|--:|--:|--:|--:|--:|---|"
    if want full-send; then
        row fsend "full send of s1 ($files_h files, $data_mib MiB): \`send -q s1 >/dev/null\`" "" "$(sizes_text full)"
    fi
    if want full-receive; then
        row frecv "full receive of that stream (from /dev/shm) into an empty directory: \`receive -q -f FULL DEST\` $dur" "" \
            "result checked: $(check_text frecv)"
    fi
    if want full-pipe; then
        row fpipe "full send and receive: \`send -q s1 \| receive -q DEST\` $dur" 2 "result checked: $(check_text fpipe)"
    fi
    if want incr-send; then
        row isend "incremental send, 100 files changed: \`send -q -p s1 s2 >/dev/null\`" 1 \
            "$(sizes_text incr); commands: arbor ${incr_cmds[arbor]}, btrfs ${incr_cmds[btrfs]}"
    fi
    if want incr-receive; then
        row irecv "incremental receive of that stream onto a received s1: \`receive -q -f INCR DEST\` $dur" "" \
            "result checked: $(check_text irecv)"
        row ipipe "incremental send and receive: \`send -q -p s1 s2 \| receive -q DEST\` $dur" "" \
            "result checked: $(check_text ipipe)"
    fi
}

rsync_table() {
    if want full-pipe || want incr-receive; then
        echo "| copy, cold, + sync | \`arbor send \| arbor receive\` | \`rsync -aHAX\` on arbor | rsync time / arbor send \| receive time (per-run) | \`btrfs send \| btrfs receive\` | \`rsync -aHAX\` on btrfs | rsync time / btrfs send \| receive time (per-run) |"
        echo "|---|--:|--:|--:|--:|--:|--:|"
    fi
    if want full-pipe; then
        rsync_row fpipe frsync "a new copy of s1 ($files_h files, $data_mib MiB): \`send s1 \| receive DEST\` / \`rsync -aHAX s1/ DEST/\` (DEST an empty subvolume; rsync's result checked: $(check_text frsync))"
    fi
    if want incr-receive; then
        rsync_row ipipe irsync "a copy of s1 brought up to s2 (100 files changed): \`send -p s1 s2 \| receive DEST\` / \`rsync -aHAX --delete s2/ COPY/\` (rsync's result checked: $(check_text irsync))"
    fi
}

# The targets and whether they are met (after table, which sets verdict_of).
targets_text() {
    local t=""
    want incr-send && t+="; incremental send no slower than btrfs send (arbor / btrfs ≥ 1): ${verdict_of[isend]:-n/a}"
    want full-pipe && t+="; full send plus receive at least 2× as fast as btrfs's (arbor / btrfs ≥ 2): ${verdict_of[fpipe]:-n/a}"
    [[ -z $t ]] || echo "Targets from the issue: ${t#; }."
}

# A footnote for the root mtime of incremental results (see same_tree).
root_mtime_footnote() {
    local r kind where=() why="" n u o where_text
    for r in arbor btrfs; do
        for kind in full incremental; do
            [[ -z ${root_mtime_of["$r $kind"]:-} ]] || where+=("$r's $kind stream")
        done
    done
    ((${#where[@]})) || return 0
    for r in arbor btrfs; do
        for kind in full incremental; do
            read -r n u o <<<"${layout[$r.${kind:0:4}]}"
            if ((o == 0)); then
                why+=" $r's $kind stream makes every file and directory under its final name;"
            elif ((u > o)); then
                why+=" $r's $kind stream sends the root's \`utimes\` after its last rename from a temporary name (commands $u and $o of $n);"
            elif ((u == 0)); then
                why+=" $r's $kind stream renames from temporary names in the root but sends no \`utimes\` of the root, which did not change between the two snapshots;"
            else
                why+=" $r's $kind stream of this tree sends the root's \`utimes\` as command $u of $n, its last rename from a temporary name is command $o;"
            fi
        done
    done
    where_text=$(printf '%s, ' "${where[@]}" | sed -e 's/, $//' -e 's/\(.*\), /\1 and /')
    echo "¹ The one difference, in what was received from $where_text: the mtime of the received subvolume's root directory is the time of the receive, not the snapshot's. A stream that makes a new file or directory under a temporary name in the subvolume's root (\`o257-7-0\`) and then renames it into place changes the root's mtime, which comes out right only if the stream's \`utimes\` of the root follows the last such rename:${why%;}. \`btrfs receive\` and \`arbor receive\` both apply a stream as it is."
}
root_mtime_text=$(root_mtime_footnote)

# What the staged streams hold.
streams_text="The streams (\`btrfs receive --dump\`): full: arbor $(mib "${stream_bytes[arbor.full]}"), ${layout[arbor.full]%% *} commands; btrfs $(mib "${stream_bytes[btrfs.full]}"), ${layout[btrfs.full]%% *} commands. Incremental: arbor ${incr_cmds[arbor]} commands (${incr_kinds[arbor]}); btrfs ${incr_cmds[btrfs]} commands (${incr_kinds[btrfs]})."

# (not in a subshell: row sets verdict_of)
table >"$work/table.md"
table_md=$(<"$work/table.md")
rsync_md=$(rsync_table)
fill_text="Filling \`vol\` ($files_h files, untimed in the tables, with its sync): arbor ${fill_s[arbor]} s, btrfs ${fill_s[btrfs]} s."

print_notes
echo
echo "Ratio = arbor speed / btrfs speed (btrfs time / arbor time, medians); above 1 means arbor is faster."
echo "$table_md"
echo
if [[ -n $rsync_md ]]; then
    echo "Against rsync, on each filesystem: rsync time / send | receive time; above 1 means send | receive is faster."
    echo "$rsync_md"
    echo
fi
targets_text
[[ -z $root_mtime_text ]] || echo "$root_mtime_text"
echo "$fill_text"
echo

[[ -n $markdown ]] || exit 0

# --- BENCHMARKS.md ------------------------------------------------------------------------
describe_run
if [[ $commit != "$built_commit" ]]; then
    note "the checkout changed during the run (git $commit at its end); the arbor measured was built at its start, from git $built_commit"
    commit=$built_commit
fi
halt_poll=""
[[ -r $haltpoll ]] && halt_poll=", guest halt polling: $(<"$haltpoll") ns"
# (awk reads all of the output: head would leave the writer to die of SIGPIPE)
tools_v="$(rsync --version | awk 'NR == 1 { print "rsync " $3 }')"
btrfs_progs_v=$(mkfs.btrfs --version 2>&1 | awk 'match($0, /v[0-9.]+/) && !v { v = substr($0, RSTART, RLENGTH) } END { print v }')

section=$(
    echo "## Send and receive: arbor (FUSE) vs btrfs, and vs rsync"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $cpu ($(nproc) CPUs), Linux $(uname -r)$halt_poll, in ${total_s} s. Two sparse $image_size image files in one directory on $base_fs (same disk). btrfs: btrfs-progs $btrfs_progs_v \`mkfs.btrfs\` defaults, \`mount -o loop$btrfs_opts\` (in effect: \`$btrfs_seen_opts\`), \`btrfs send\` / \`btrfs receive\` (stream version 1). arbor (git $commit): \`arbor mkfs${ARBOR_MKFS_OPTS:+ $ARBOR_MKFS_OPTS}\`, \`arbor mount${ARBOR_MOUNT_OPTS:+ $ARBOR_MOUNT_OPTS}\` (FUSE), \`arbor send\` / \`arbor receive\` (stream version 1). $tools_v. Medians of $reps repetitions, the two filesystems taking turns at each (the first one alternating)."
    reproduce_md
    echo "**Ratio = arbor speed / btrfs speed (btrfs time / arbor time, medians); above 1 means arbor is faster.** Times are the wall clock of the whole command (fork, exec, the work, exit; with \`+ sync\` until the result is durable); the machine is shared and noisy, so only the ratios carry over. $(targets_text)"
    echo
    echo "$table_md"
    echo
    if [[ -n $rsync_md ]]; then
        echo "**Against rsync, on each filesystem: rsync time / send | receive time (medians); above 1 means send | receive is faster.**"
        echo
        echo "$rsync_md"
        echo
    fi
    [[ -z $root_mtime_text ]] || { echo "$root_mtime_text"; echo; }
    echo "$streams_text"
    echo
    notes_md
    echo "Method. Each filesystem gets a subvolume \`vol\` with $files_h files in $((dirs_of[1] + dirs_of[2] + dirs_of[4] + 5)) directories ($data_mib MiB of data): ${n_of[1]}, ${n_of[2]} and ${n_of[4]} files of 1, 2 and 4 KiB (\`target/release/fsmeta create\`, at most $per_dir files a directory) and $n_big files of $big_kib KiB of random bytes (\`split\` of a file staged in /dev/shm), made durable. $fill_text Then a read-only snapshot s1; 50 files appended to, 25 files of 4 KiB added and 25 deleted, spread over the tree; a read-only snapshot s2. Every timed command starts from cold caches (unmount, \`sync\`, \`echo 3 > /proc/sys/vm/drop_caches\`, mount again — for FUSE the only way to empty the daemon's caches too). Each filesystem receives its own streams: the full one (\`send s1\`) and the incremental one (\`send -p s1 s2\`) staged once in /dev/shm, untimed; the incremental ones are received onto a received copy of s1 (the last full receive's), found by its received UUID. rsync's copy goes into an empty subvolume, its update into a plain copy of s1 made by rsync (the last full rsync copy), put back with \`rsync -aHAX --delete s1/ COPY/\` (untimed) between repetitions. What a repetition received is deleted again before the next one, and the space is given back (\`arbor subvolume sync\`; \`btrfs filesystem sync && btrfs subvolume sync\`), untimed, so that no cleaner runs during a timed command. \"Checked\": once per run, untimed, \`rsync -aHAX --checksum --dry-run --itemize-changes --delete SNAPSHOT/ RESULT/\` lists nothing (same names, contents, modes, owners, times, xattrs, ACLs and hard links). \"+ sync\" = \`sync -f\` on the mountpoint, inside the timing (arbor: followed by \`arbor sync\`, a commit, since syncfs does not reach a FUSE daemon)."
)

write_section "$markdown" "$section"
