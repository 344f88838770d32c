#!/usr/bin/env bash
# Benchmarks the arbor filesystem (FUSE) against btrfs, side by side in one run on the
# same machine, and writes the ratios into BENCHMARKS.md (between the fs-bench markers).
#
# Usage (as root, from anywhere in the repository):
#   scripts/bench-fs.sh                   # the published run: 3 repetitions, ~5-10 min
#   scripts/bench-fs.sh --quick           # CI smoke run: smaller sizes, 1 repetition
#   ARBOR_STANDIN=btrfs scripts/bench-fs.sh --quick
#                                         # a second btrfs plays arbor's role: checks the
#                                         # harness itself (ratios should be ~1)
#   scripts/bench-fs.sh --help            # every option
#
# Both filesystems live on sparse image files of the same size in one directory (default:
# a fresh directory under /var/tmp), so they share the underlying disk: btrfs is made with
# mkfs.btrfs defaults and mounted with `-o loop`; arbor with `arbor mkfs` and `arbor mount`.
# Every repetition starts from freshly made filesystems, and the two take turns at every
# group of workloads (who goes first alternates between repetitions), so that machine
# noise hits both.
#
# Workloads, each timed by wall clock:
#   seqwrite   SEQ MiB from a random file in /dev/shm, 1 MiB blocks, fsync (dd conv=fsync)
#   seqread    that file back, 1 MiB blocks
#   randread   fio psync 4 KiB random reads, RAND_IO MiB of a RAND_FILE MiB file
#   randwrite  fio psync 4 KiB random writes, RAND_IO MiB into that file, then one fsync
#   create     FILES files of FILE_SIZE bytes in DIRS directories (fsmeta), then syncfs
#   stat       lstat of each of them
#   unlink     unlink of each of them and their directories, then syncfs
#   cptree     `cp -a` of a real source tree (staged in /dev/shm), then syncfs
# Every timed phase starts cold, whatever ran before it on either filesystem: unmount
# (arbor: and wait for the daemon to exit), sync, `echo 3 > /proc/sys/vm/drop_caches`
# (the host page cache also holds the image files), mount again. For a FUSE filesystem a
# remount is the only way to empty both the kernel's caches and the daemon's own.
# "syncfs" is the per-filesystem sync_* function (`sync -f MOUNTPOINT`; for arbor also
# `arbor sync MOUNTPOINT`, since syncfs does not reach a FUSE daemon).
#
# What FUSE alone allows (arbor itself only, not under ARBOR_STANDIN): every arbor mount of
# a timed phase runs with `arbor -v mount -o log=FILE`, one log per phase and repetition in
# the scratch directory; at unmount the daemon logs how many requests of each kind it
# served, so that the report knows the requests per file of create, stat, unlink and
# cptree. Once per repetition (when meta or tree runs), `fsmeta roundtrip` measures the
# FUSE round trip: fstat(2) of an open file on arbor mounted with `-o attr_timeout=0`, so
# that every call is one GETATTR (50000 calls [20000]). A second table puts the two
# together: synchronous requests per file × round trip = the floor that FUSE sets even
# for a daemon that did no work at all, and the best arbor / btrfs ratio it permits.
# A VM's guest halt polling (/sys/module/haltpoll/parameters/guest_halt_poll_ns) weighs on
# every round trip: 0 lets an idle vCPU halt at once, so every wakeup of the daemon or of
# its caller on another vCPU is expensive. The report names the value; --guest-halt-poll NS
# sets it for the run (the previous value is restored on exit).
#
# Each filesystem is a set of shell functions (see "Filesystems under test" below):
#   setup_KIND IMG MNT      make the filesystem on the (existing, sized) image and mount it
#   teardown_KIND IMG MNT   unmount it, returning only when the image is no longer in use
#   mount_KIND IMG MNT      mount an existing filesystem (setup's second half; remounts)
#   sync_KIND MNT           make everything written so far durable
# KIND is arbor, btrfs or ext4. The arbor role uses KIND=$ARBOR_STANDIN (default arbor).
#
# Environment:
#   ARBOR_STANDIN=btrfs|ext4  let another filesystem play arbor's role (until arbor mounts)
#   ARBOR_BIN=PATH            the arbor binary (default target/release/arbor, built here)
#   ARBOR_MKFS_OPTS="..."     extra arguments of `arbor mkfs`
#   ARBOR_MOUNT_OPTS="..."    extra arguments of `arbor mount`, e.g. "-o threads=4"
#   BTRFS_MOUNT_OPTS=OPTS     extra `-o` options of the btrfs mount (default none)
#
# Needs: bash >= 5, root, util-linux (mount, losetup, findmnt), btrfs-progs, fio,
# coreutils, awk, cargo. Everything the run made (mounts, loop devices, images, the
# staging directory in /dev/shm) is removed, and a --guest-halt-poll setting undone, on
# exit, also after a failure or Ctrl-C; a step that outlives --timeout fails the run, and
# an arbor daemon that still holds its image then is killed (by pid).
set -Eeuo pipefail
export LC_ALL=C

caller_pwd=$PWD
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bench_name=bench-fs bench_marker=fs-bench
# die, log, the option helpers, scratch space and cleanup, the filesystems under test,
# cold remounts, the report and BENCHMARKS.md helpers, shared with scripts/bench-subvol.sh.
# shellcheck source=lib/bench-common.sh source-path=SCRIPTDIR
source "$repo/scripts/lib/bench-common.sh"

usage() {
    cat <<'EOF'
Usage: scripts/bench-fs.sh [OPTIONS]      (as root)

Options (defaults; with --quick in brackets):
  --quick               small sizes and 1 repetition, for a CI smoke run (~1-2 min)
  --reps N              repetitions of every workload, medians reported (3 [1])
  --dir DIR             where the images go; a fresh subdirectory is made and removed
                        (/var/tmp; must not be tmpfs)
  --image-size SIZE     size of each sparse image, truncate(1) syntax (8G)
  --seq-mib N           sequential file size in MiB (1024 [256])
  --rand-file-mib N     random-I/O file size in MiB (1024 [256])
  --rand-io-mib N       MiB read and written by each random workload, 4 KiB at a time (256 [32])
  --files N             files of the metadata workload (100000 [20000])
  --dirs N              directories they are spread over (10)
  --file-size BYTES     bytes in each of those files (1024)
  --only GROUPS         run only these workload groups, comma-separated, from
                        seq (seqwrite+seqread), rand (randread+randwrite),
                        meta (create+stat+unlink), tree (cptree) (all)
  --tree DIR            source tree copied by cptree (~/.cargo/registry/src if present,
                        else this repository without target/ and .git/)
  --timeout SECONDS     fail the run when one step (a mount, a workload, a sync) takes
                        longer, e.g. because a daemon hangs (900)
  --guest-halt-poll NS  write NS into /sys/module/haltpoll/parameters/guest_halt_poll_ns
                        (a VM's guest halt polling) for the run, restoring the previous
                        value on exit; fails if that file does not exist (unchanged)
  --markdown FILE       write the results section into FILE (BENCHMARKS.md)
  --no-markdown         only print the table
  -h, --help            this text

Environment: ARBOR_STANDIN=btrfs|ext4, ARBOR_BIN, ARBOR_MKFS_OPTS, ARBOR_MOUNT_OPTS,
BTRFS_MOUNT_OPTS (see the header of this script).
EOF
}

# --- options ------------------------------------------------------------------------------
quick=0 reps="" base_dir=/var/tmp image_size=8G seq_mib="" rand_file_mib="" rand_io_mib=""
files="" dirs=10 file_size=1024 tree_src="" markdown=BENCHMARKS.md only=seq,rand,meta,tree
phase_timeout=900 guest_halt_poll=""
orig_args=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --quick) quick=1 ;;
    --reps) need_arg "$@"; reps=$2; shift ;;
    --dir) need_arg "$@"; base_dir=$(from_caller "$2"); shift ;;
    --image-size) need_arg "$@"; image_size=$2; shift ;;
    --seq-mib) need_arg "$@"; seq_mib=$2; shift ;;
    --rand-file-mib) need_arg "$@"; rand_file_mib=$2; shift ;;
    --rand-io-mib) need_arg "$@"; rand_io_mib=$2; shift ;;
    --files) need_arg "$@"; files=$2; shift ;;
    --dirs) need_arg "$@"; dirs=$2; shift ;;
    --file-size) need_arg "$@"; file_size=$2; shift ;;
    --tree) need_arg "$@"; tree_src=$(from_caller "$2"); shift ;;
    --only) need_arg "$@"; only=$2; shift ;;
    --timeout) need_arg "$@"; phase_timeout=$2; shift ;;
    --guest-halt-poll) need_arg "$@"; guest_halt_poll=$2; shift ;;
    --markdown) need_arg "$@"; markdown=$(from_caller "$2"); shift ;;
    --no-markdown) markdown="" ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
if [[ $quick = 1 ]]; then
    : "${reps:=1}" "${seq_mib:=256}" "${rand_file_mib:=256}" "${rand_io_mib:=32}" "${files:=20000}"
    rtt_calls=20000
else
    : "${reps:=3}" "${seq_mib:=1024}" "${rand_file_mib:=1024}" "${rand_io_mib:=256}" "${files:=100000}"
    rtt_calls=50000
fi
whole_numbers reps seq_mib rand_file_mib rand_io_mib files dirs file_size phase_timeout
((reps >= 1 && seq_mib >= 1 && rand_file_mib >= 1 && files >= 1 && dirs >= 1 && phase_timeout >= 1)) ||
    die "--reps, --seq-mib, --rand-file-mib, --files, --dirs and --timeout must be at least 1"
((rand_io_mib >= 1 && rand_io_mib <= rand_file_mib)) ||
    die "--rand-io-mib must be between 1 and --rand-file-mib ($rand_file_mib)"
[[ -z $guest_halt_poll || $guest_halt_poll =~ ^[0-9]+$ ]] ||
    die "--guest-halt-poll must be a whole number of nanoseconds, not '$guest_halt_poll'"

check_only seq rand meta tree

arbor_kind=${ARBOR_STANDIN:-arbor}
case "$arbor_kind" in
arbor | btrfs | ext4) ;;
*) die "ARBOR_STANDIN must be btrfs or ext4 (or unset for arbor itself), not '$arbor_kind'" ;;
esac

# --- preconditions ------------------------------------------------------------------------
check_bash_root
missing=()
find_missing mount umount mountpoint losetup findmnt truncate dd cmp cp sync awk df du find \
    tar timeout realpath mkfs.btrfs fio cargo
[[ $arbor_kind = ext4 ]] && find_missing mkfs.ext4
((${#missing[@]} == 0)) ||
    die "missing tools: ${missing[*]} (Debian: apt-get install -y btrfs-progs fio util-linux e2fsprogs)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable"
if [[ -n $guest_halt_poll ]]; then
    [[ -e $haltpoll ]] ||
        die "--guest-halt-poll: $haltpoll does not exist (not a VM guest with the haltpoll cpuidle driver?)"
    [[ -w $haltpoll ]] || die "--guest-halt-poll: $haltpoll is not writable"
fi
grep -qw btrfs /proc/filesystems || log "btrfs is not in /proc/filesystems yet; mount will try to load it"

check_base_dir

tree_src=${tree_src:-${CARGO_HOME:-$HOME/.cargo}/registry/src}
tree_is_repo=0
if [[ ! -d $tree_src ]] || [[ -z "$(ls -A "$tree_src" 2>/dev/null)" ]]; then
    log "no source tree at $tree_src; copying this repository (without target/ and .git/) instead"
    tree_src=$repo tree_is_repo=1
fi

src_mib=$((seq_mib > rand_file_mib ? seq_mib : rand_file_mib))
# Peak use of each image: the larger data file plus the tree and the small files; of
# /dev/shm: that file and the tree.
tree_kib=$(du -sk --exclude="$repo/target" --exclude="$repo/.git" "$tree_src" | awk '{print $1}')
check_space $((2 * (src_mib * 1024 + tree_kib + files * 8 + 1024 * 1024))) \
    $((src_mib * 1024 + tree_kib + 65536))

# --- build --------------------------------------------------------------------------------
log "building target/release/fsmeta (and arbor, unless a stand-in plays it or ARBOR_BIN is set)"
cargo build --release --quiet -p arbor-bench --bin fsmeta
if [[ $arbor_kind = arbor ]]; then
    [[ -n ${ARBOR_BIN:-} ]] || cargo build --release --quiet -p arbor-cli
    [[ -x $arbor_bin ]] || die "no arbor binary at $arbor_bin"
    "$arbor_bin" mount --help >/dev/null 2>&1 ||
        die "'$arbor_bin mount' does not exist yet; validate the harness with ARBOR_STANDIN=btrfs"
fi

# --- scratch space and cleanup ------------------------------------------------------------
make_scratch
# The arbor daemons' logs (logs/PHASE.REP.log), and what they counted: REP PHASE KIND COUNT.
mkdir "$work/logs"
requests=$work/requests.tsv
# The FUSE round trip of every repetition: REP MICROSECONDS.
rtts=$work/rtt.tsv
# The value of $haltpoll before --guest-halt-poll changed it; restored by the cleanup.
halt_poll_saved=""
# Run last by the cleanup (on exit, also after a failure or Ctrl-C): undoes --guest-halt-poll.
on_cleanup() {
    if [[ -n $halt_poll_saved ]]; then
        if echo "$halt_poll_saved" >"$haltpoll"; then
            log "restored $haltpoll to $halt_poll_saved"
        else
            log "cleanup: could not restore $haltpoll to $halt_poll_saved"
        fi
    fi
}
install_cleanup

if [[ -n $guest_halt_poll ]]; then
    halt_poll_saved=$(<"$haltpoll")
    echo "$guest_halt_poll" >"$haltpoll" || die "cannot write $guest_halt_poll into $haltpoll"
    log "guest halt polling: $haltpoll set to $guest_halt_poll (was $halt_poll_saved) for this run"
fi

# --- filesystems under test ---------------------------------------------------------------
# btrfs, ext4 and arbor's setup come from the library; the arbor daemon's mounts here log
# what it served, so mount_arbor, teardown_arbor and sync_arbor are this script's own.

# Set around a mount by mount_for (a timed phase) and measure_roundtrip: the daemon then
# logs (-v) into $mount_log, and mount_extra_opts go after ARBOR_MOUNT_OPTS.
mount_log="" mount_extra_opts=()
# The log of the arbor mount now up, and its "REP<tab>PHASE"; read by teardown_arbor.
live_log="" live_tag=""
mount_arbor() {
    local verbose=() logging=()
    if [[ -n $mount_log ]]; then
        # Mount options are comma-separated: the path must not have a comma.
        [[ $mount_log != *,* ]] || die "the log path $mount_log has a comma; pick another --dir"
        verbose=(-v) logging=(-o "log=$mount_log")
    fi
    lim "$arbor_bin" "${verbose[@]}" mount "${arbor_mount_opts[@]}" "${logging[@]}" \
        "${mount_extra_opts[@]}" "$1" "$2"
    is_mounted "$2" || die "arbor mount returned but $2 is not a mountpoint"
    live_log=$mount_log live_tag="$rep"$'\t'"$phase"
}
teardown_arbor() {
    umount_arbor "$@"
    if [[ -n $live_log ]]; then
        count_requests "$live_log" "$live_tag"
        live_log=""
    fi
}
# count_requests LOG TAG: the counts in the line an arbor daemon logs at unmount,
#   ... INFO served 50039 requests on 4 threads (forget 10011, getattr 10001, ...); ...
# appended to $requests as TAG<tab>KIND<tab>COUNT.
count_requests() {
    local kinds
    kinds=$(sed -n 's/.* served [0-9]* requests on [0-9]* threads (\([^)]*\)).*/\1/p' "$1" | tail -n 1)
    if [[ -z $kinds ]]; then
        log "warning: $1 has no request counts (\"served N requests ...\")"
        note "an arbor daemon logged no request counts at unmount (${1##*/}); its phase is missing from the request table"
        return 0
    fi
    tr ',' '\n' <<<"$kinds" | awk -v tag="$2" 'NF == 2 { printf "%s\t%s\t%s\n", tag, $1, $2 }' >>"$requests"
}
# As the library's sync_arbor (syncfs, then `arbor sync`), but an error from syncfs is
# reported, counted in the results, and not fatal: arbor's commit is `arbor sync`, which
# must succeed.
sync_arbor() {
    local err
    if ! err=$(lim sync -f "$1" 2>&1); then
        log "warning: syncfs on arbor failed: $err"
        note "syncfs(2) on the arbor mount failed (${err##*: }); the commit by \`arbor sync\` that follows it succeeded"
    fi
    lim "$arbor_bin" sync "$1"
}

# The workload being run ($phase), set by the run loop.
phase=""
# Every timed phase starts with cold (unmount, drop every cache, mount_for), so that its
# cache state does not depend on what ran before it. mount_for (the library's: a plain
# mount) mounts ROLE for the timed phase $phase: arbor (itself, not a stand-in) with a log
# of its own, whose request counts teardown_arbor records when the phase's mount goes.
mount_for() {
    if [[ ${kind[$1]} = arbor ]]; then
        mount_log=$work/logs/$phase.$rep.log
        fs "$1" mount
        mount_log=""
    else
        fs "$1" mount
    fi
}

# --- timing and results -------------------------------------------------------------------
# Runs the command, leaving its wall-clock time in seconds in $elapsed.
timed() {
    local t0=$EPOCHREALTIME t1
    "$@"
    t1=$EPOCHREALTIME
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
}

rep=0
# record WORKLOAD ROLE AMOUNT UNIT: one measurement, AMOUNT units done in $elapsed s.
record() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$1" "$2" "$elapsed" "$3" >>"$results"
    awk -v w="$1" -v r="$2" -v k="${kind[$2]}" -v t="$elapsed" -v n="$3" -v u="$4" -v rep="$rep" \
        'BEGIN { printf "bench-fs: run %d: %-9s %-6s (%s) %9.3f s  %12.1f %s\n", rep, w, r, k, t, n / t, u }' >&2
}

# --- workloads ----------------------------------------------------------------------------
# Each takes a role; the caller alternates the roles.
seq_bytes=$((seq_mib << 20))
rand_ops=$((rand_io_mib * 256))

wl_seqwrite() {
    cold "$1"
    timed lim dd if="$stage/random" of="${mnt[$1]}/seq" bs=1M count="$seq_mib" iflag=fullblock \
        conv=fsync status=none
    record seqwrite "$1" "$seq_mib" MiB/s
}

wl_seqread() {
    cold "$1"
    timed lim dd if="${mnt[$1]}/seq" of=/dev/null bs=1M status=none
    record seqread "$1" "$seq_mib" MiB/s
    lim cmp -s -n "$seq_bytes" "${mnt[$1]}/seq" "$stage/random" ||
        die "$1: the file read back differs from what was written"
    lim rm "${mnt[$1]}/seq"
    fs "$1" sync
}

# fio, checking that it issued every I/O it was asked for.
run_fio() {
    local out=$work/fio.out issued
    lim fio --output="$out" --filename="$1" "${@:2}" --bs=4k --ioengine=psync \
        --size="${rand_file_mib}M" --io_size="${rand_io_mib}M" --allow_file_create=0 \
        --randrepeat=1 --randseed=42 --invalidate=1 ||
        { cat "$out" >&2; die "fio failed"; }
    issued=$(grep -o 'issued rwts: total=[0-9]*,[0-9]*' "$out" | awk -F'[=,]' '{print $2 + $3}')
    [[ $issued = "$rand_ops" ]] || { cat "$out" >&2; die "fio issued '$issued' I/Os, expected $rand_ops"; }
}

wl_randread() {
    lim dd if="$stage/random" of="${mnt[$1]}/rand" bs=1M count="$rand_file_mib" iflag=fullblock \
        conv=fsync status=none
    cold "$1"
    timed run_fio "${mnt[$1]}/rand" --name=randread --rw=randread
    record randread "$1" "$rand_ops" IOPS
}

wl_randwrite() {
    cold "$1"
    timed run_fio "${mnt[$1]}/rand" --name=randwrite --rw=randwrite --end_fsync=1
    record randwrite "$1" "$rand_ops" IOPS
    lim rm "${mnt[$1]}/rand"
    fs "$1" sync
}

meta() { lim "$fsmeta" "$1" --dir "$2/meta" --files "$files" --dirs "$dirs" --size "$file_size" >/dev/null; }
create_and_sync() { meta create "${mnt[$1]}" && fs "$1" sync; }
unlink_and_sync() { meta unlink "${mnt[$1]}" && fs "$1" sync; }

wl_create() {
    cold "$1"
    timed create_and_sync "$1"
    record create "$1" "$files" files/s
}

wl_stat() {
    cold "$1"
    timed meta stat "${mnt[$1]}"
    record stat "$1" "$files" files/s
}

wl_unlink() {
    cold "$1"
    timed unlink_and_sync "$1"
    record unlink "$1" "$files" files/s
}

copy_tree() { lim cp -a "$stage/tree" "${mnt[$1]}/tree" && fs "$1" sync; }

wl_cptree() {
    cold "$1"
    timed copy_tree "$1"
    record cptree "$1" "$tree_mib" MiB/s
    if [[ ${kind[$1]} = arbor ]]; then
        # So that the daemon's request counts cover the copy, not the check and rm below.
        fs "$1" teardown
        fs "$1" mount
    fi
    local n
    n=$(lim find "${mnt[$1]}/tree" | wc -l)
    [[ $n = "$tree_entries" ]] || die "$1: the copied tree has $n entries, the source $tree_entries"
    lim rm -rf "${mnt[$1]}/tree"
    fs "$1" sync
}

# The FUSE round trip, once per repetition: fstat(2) of one open file, $rtt_calls times,
# on arbor mounted with attr_timeout=0, so that every call is one GETATTR request to a
# daemon with next to nothing to do. fsmeta's mean per call goes into $rtts.
measure_roundtrip() {
    local out us
    fs arbor teardown
    phase=roundtrip mount_log=$work/logs/roundtrip.$rep.log mount_extra_opts=(-o attr_timeout=0)
    fs arbor mount
    mount_log="" mount_extra_opts=()
    out=$(lim "$fsmeta" roundtrip --dir "${mnt[arbor]}/rtt" --files "$rtt_calls")
    # The fastest batch: the round trip when the scheduler is kindest (see fsmeta.rs).
    us=$(awk '$NF == "us/call" { print $(NF - 1) }' <<<"$out")
    [[ $us =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "fsmeta roundtrip printed '$out', expected '... N us/call'"
    printf '%s\t%s\n' "$rep" "$us" >>"$rtts"
    log "run $rep: FUSE round trip (fstat with attr_timeout=0, $rtt_calls calls): $us µs"
    lim rm -rf "${mnt[arbor]}/rtt"
}

# The filesystems take turns group by group: a group's workloads run on one filesystem
# back to back, so that each reads what it has just written with the same history behind
# it. (Taking turns at every single workload, with btrfs in both roles, made whichever
# filesystem read its 1 GiB file first ~2.5x slower than the second, in every run.)
declare -A group_workloads=([seq]="seqwrite seqread" [rand]="randread randwrite"
    [meta]="create stat unlink" [tree]="cptree")
groups=() workloads=()
for g in seq rand meta tree; do
    if want "$g"; then
        groups+=("${group_workloads[$g]}")
        read -r -a wls <<<"${group_workloads[$g]}"
        workloads+=("${wls[@]}")
    fi
done
# The round trip only serves the request table of the metadata workloads and cptree.
floor_workloads=()
for wl in create stat unlink cptree; do
    [[ " ${workloads[*]} " = *" $wl "* ]] && floor_workloads+=("$wl")
done
measure_floor=0
[[ $arbor_kind = arbor ]] && ((${#floor_workloads[@]})) && measure_floor=1

# --- staging ------------------------------------------------------------------------------
log "images in $work ($base_fs), staging in $stage"
if want seq || want rand; then
    log "staging ${src_mib} MiB of random data"
    head -c "$((src_mib << 20))" /dev/urandom >"$stage/random"
fi
tree_entries=0 tree_files=0 tree_bytes=0
if want tree; then
    log "staging the source tree from $tree_src"
    mkdir "$stage/tree"
    if [[ $tree_is_repo = 1 ]]; then
        tar -C "$tree_src" --exclude=./target --exclude=./.git -cf - . | tar -C "$stage/tree" -xf -
    else
        cp -a "$tree_src/." "$stage/tree/"
    fi
    tree_entries=$(find "$stage/tree" | wc -l)
    tree_files=$(find "$stage/tree" -type f | wc -l)
    tree_bytes=$(find "$stage/tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
fi
tree_mib=$(awk -v b="$tree_bytes" 'BEGIN { printf "%.3f", b / 1048576 }')

# --- the run ------------------------------------------------------------------------------
started=$EPOCHREALTIME
for ((rep = 1; rep <= reps; rep++)); do
    order=("${roles[@]}")
    ((rep % 2 == 0)) && order=("${roles[1]}" "${roles[0]}")
    log "run $rep of $reps: ${order[*]}"
    for r in "${order[@]}"; do
        mkdir -p "${mnt[$r]}"
        fs "$r" setup
    done
    btrfs_seen_opts=$(findmnt -fno OPTIONS "${mnt[btrfs]}")
    for group in "${groups[@]}"; do
        for r in "${order[@]}"; do
            for wl in $group; do
                phase=$wl
                "wl_$wl" "$r"
            done
        done
    done
    if [[ $measure_floor = 1 ]]; then
        measure_roundtrip
    fi
    for r in "${order[@]}"; do
        fs "$r" teardown
        rm -f "${img[$r]}"
    done
done
total_s=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
log "measured in ${total_s} s"

# --- report -------------------------------------------------------------------------------
fmt_size() { awk -v b="$1" 'BEGIN { if (b >= 1024 && b % 1024 == 0) printf "%d KiB", b / 1024; else printf "%d B", b }'; }
declare -A desc=(
    [seqwrite]="sequential write, $(fmt_mib "$seq_mib") in 1 MiB blocks + fsync"
    [seqread]="sequential read, $(fmt_mib "$seq_mib") in 1 MiB blocks"
    [randread]="random read, 4 KiB × $rand_ops ($(fmt_mib "$rand_io_mib")) of a $(fmt_mib "$rand_file_mib") file"
    [randwrite]="random write, 4 KiB × $rand_ops ($(fmt_mib "$rand_io_mib")) into that file + fsync"
    [create]="create $files files of $(fmt_size "$file_size") in $dirs dirs + syncfs"
    [stat]="stat $files files"
    [unlink]="unlink $files files + syncfs"
    [cptree]="\`cp -a\` of a source tree ($tree_files files, $(fmt_mib "${tree_mib%.*}")) + syncfs"
)

table() {
    local wl unit target arbor_col=arbor
    [[ $arbor_kind = arbor ]] || arbor_col="arbor = $arbor_kind stand-in"
    echo "| workload | $arbor_col (median) | btrfs (median) | arbor / btrfs | per-run ratios | target | verdict |"
    echo "|---|--:|--:|--:|--:|--:|---|"
    for wl in "${workloads[@]}"; do
        case "$wl" in
        seqwrite | seqread) unit=MiB/s target=0.7 ;;
        randread | randwrite) unit=IOPS target="" ;;
        create | stat | unlink) unit=files/s target=0.5 ;;
        cptree) unit=MiB/s target=0.5 ;;
        esac
        awk -F'\t' -v wl="$wl" -v unit="$unit" -v target="$target" -v desc="${desc[$wl]}" "$awk_lib"'
            function num(x) { return x >= 100 ? sprintf("%.0f", x) : x >= 10 ? sprintf("%.1f", x) : sprintf("%.2f", x) }
            $2 == wl { rate[$3, $1] = $5 / $4; time[$3, $1] = $4; reps[$1] = 1 }
            END {
                na = nb = nr = 0
                for (r in reps) {
                    ra[++na] = rate["arbor", r]; ta[na] = time["arbor", r]
                    rb[++nb] = rate["btrfs", r]; tb[nb] = time["btrfs", r]
                    q[++nr] = rate["arbor", r] / rate["btrfs", r]
                }
                ma = median(ra, na); mb = median(rb, nb)
                mta = median(ta, na); mtb = median(tb, nb)
                ratio = ma / mb
                range = ratio_range(q, nr)
                speed = speed_text(ratio)
                if (target == "") { tcol = "—"; verdict = speed }
                else {
                    tcol = "≥ " target
                    verdict = (ratio >= target ? "meets target; " : "**below target**; ") speed
                }
                printf "| %s | %s %s (%.2f s) | %s %s (%.2f s) | **%.2f** | %s | %s | %s |\n",
                    desc, num(ma), unit, mta, num(mb), unit, mtb, ratio, range, tcol, verdict
            }' "$results"
    done
}

table_md=$(table)

# --- what FUSE alone allows ---------------------------------------------------------------
# The guest halt polling of this VM, for the report ("" when the machine has none).
halt_poll_desc() {
    local v
    [[ -r $haltpoll ]] || return 0
    v=$(<"$haltpoll")
    if [[ $v = 0 ]]; then
        printf '%s ns (idle vCPUs halt at once)' "$v"
    else
        printf '%s ns (an idle vCPU polls up to %s ns before it halts)' "$v" "$v"
    fi
    if [[ -n $guest_halt_poll ]]; then
        printf ', set for this run by --guest-halt-poll (was %s ns)' "$halt_poll_saved"
    fi
}
halt_poll=$(halt_poll_desc)

# One row per metadata workload: the requests per file that arbor's daemon counted, and
# what they cost at the measured round trip alone (the floor) against btrfs's time.
floor_table() {
    local wl n label
    echo "| workload | synchronous requests per file | requests per file, by kind | btrfs µs per file | arbor µs per file | FUSE floor µs per file | best possible arbor / btrfs | measured arbor / btrfs |"
    echo "|---|--:|---|--:|--:|--:|--:|--:|"
    for wl in "${floor_workloads[@]}"; do
        n=$files label=$wl
        [[ $wl = cptree ]] && n=$tree_files label="cptree ($tree_files files)"
        awk -F'\t' -v wl="$wl" -v n="$n" -v rtt="$rtt_us" -v label="$label" "$awk_lib"'
            function num(x) { return x >= 100 ? sprintf("%.0f", x) : x >= 10 ? sprintf("%.1f", x) : sprintf("%.2f", x) }
            # Two decimals at most, without trailing zeros: 1, 0.5, 1.01.
            function dec(x,   s) { s = sprintf("%.2f", x); sub(/0+$/, "", s); sub(/\.$/, "", s); return s }
            BEGIN { async["release"] = async["releasedir"] = async["forget"] = async["batch_forget"] = 1 }
            FILENAME == ARGV[1] && $2 == wl { cnt[$1, $3] += $4; if (!($1 in reps)) { reps[$1] = 1; nr++ } kinds[$3] = 1 }
            FILENAME == ARGV[2] && $2 == wl { rate[$3, $1] = $5 / $4; time[$3, $1] = $4; runs[$1] = 1 }
            END {
                if (!nr) exit
                m = 0
                for (r in reps) { t = 0; for (k in kinds) if (!(k in async)) t += cnt[r, k]; sy[++m] = t / n }
                sync = median(sy, m)
                nk = 0
                for (k in kinds) {
                    m = 0
                    for (r in reps) v[++m] = cnt[r, k] / n
                    x = dec(median(v, m)) + 0
                    if (x < 0.01) continue
                    # Insertion sort: most per file first (as shown, rounded), then by name.
                    for (i = ++nk; i > 1 && (pf[i-1] < x || (pf[i-1] == x && kn[i-1] > k)); i--) { kn[i] = kn[i-1]; pf[i] = pf[i-1] }
                    kn[i] = k; pf[i] = x
                }
                list = alist = ""
                for (i = 1; i <= nk; i++) {
                    if (kn[i] in async) alist = alist (alist == "" ? "" : ", ") kn[i] " " dec(pf[i])
                    else list = list (list == "" ? "" : ", ") kn[i] " " dec(pf[i])
                }
                if (alist != "") list = list "; async: " alist
                na = nb = 0
                for (r in runs) {
                    ra[++na] = rate["arbor", r]; ta[na] = time["arbor", r]
                    rb[++nb] = rate["btrfs", r]; tb[nb] = time["btrfs", r]
                }
                bus = median(tb, nb) * 1e6 / n; aus = median(ta, na) * 1e6 / n
                floor = sync * rtt
                best = floor > 0 ? bus / floor : 1e9
                printf "| %s | %s | %s | %s | %s | %s | %s | **%.2f** |\n", label, dec(sync), list,
                    num(bus), num(aus), num(floor), (best >= 1 ? "≥ 1" : sprintf("**%.2f**", best)),
                    median(ra, na) / median(rb, nb)
            }' "$requests" "$results"
    done
}

floor_md="" floor_text=""
if [[ $measure_floor = 1 && -s $rtts && -s $requests ]]; then
    rtt_us=$(awk -F'\t' "$awk_lib"'{ a[++n] = $2 } END { printf "%.1f", median(a, n) }' "$rtts")
    # GETATTR requests per fstat call of the round-trip measurement (should be 1).
    rtt_getattr=$(awk -F'\t' -v n="$rtt_calls" "$awk_lib"'$2 == "roundtrip" && $3 == "getattr" { g[++m] = $4 / n }
        END { printf "%.2f", m == 0 ? 0 : median(g, m) }' "$requests")
    if awk -v g="$rtt_getattr" 'BEGIN { exit !(g < 0.95) }'; then
        log "warning: the round-trip measurement saw $rtt_getattr GETATTR per fstat call, expected 1"
        note "the round-trip measurement saw only $rtt_getattr GETATTR requests per fstat call (expected 1): the kernel answered some from its cache, so the round trip shown is too low"
    fi
    floor_md=$(floor_table)
    floor_text="FUSE round trip: **$rtt_us µs**, the median of $reps run$([[ $reps = 1 ]] || echo s) of \`fsmeta roundtrip\`: fstat(2) of one open file, $rtt_calls times in 10 batches, on arbor mounted with \`-o attr_timeout=0\`, so that every call is one synchronous GETATTR request to a daemon that has next to nothing to do (it counted $rtt_getattr getattr per call); each run reports its fastest batch, since the cost depends on whether the scheduler runs caller and daemon on one vCPU or two. Floor = synchronous requests per file × round trip: about what FUSE alone costs per file, even for a daemon that did no work at all; best possible = btrfs µs per file / floor, the highest ratio FUSE permits here (≥ 1: FUSE alone would not keep arbor below btrfs). Requests as the arbor daemon counted them over each timed phase (\`arbor -v mount -o log=FILE\`, logged at unmount; including the mount itself and the sync), medians of the runs, per file of the workload; release, releasedir, forget and batch_forget are asynchronous (the caller does not wait) and not part of the floor."
    if [[ -n $halt_poll ]]; then
        floor_text+=" Guest halt polling (\`$haltpoll\`): $halt_poll"
        [[ $halt_poll != "0 ns"* ]] ||
            floor_text+=", which makes every wakeup across vCPUs (of the daemon by a request, of the caller by its reply) expensive"
        floor_text+="."
    fi
fi

print_notes
echo
echo "Ratio = arbor speed / btrfs speed (medians of $reps run$([[ $reps = 1 ]] || echo s)); above 1 means arbor is faster."
echo "$table_md"
echo
if [[ -n $floor_md ]]; then
    echo "What FUSE alone allows. $floor_text"
    echo
    echo "$floor_md"
    echo
fi

[[ -n $markdown ]] || exit 0

# --- BENCHMARKS.md ------------------------------------------------------------------------
describe_run
[[ $arbor_kind = arbor ]] || cmd="ARBOR_STANDIN=$arbor_kind $cmd"
if [[ $arbor_kind = arbor ]]; then
    arbor_desc="arbor (git $commit): \`arbor mkfs${ARBOR_MKFS_OPTS:+ $ARBOR_MKFS_OPTS}\`, \`arbor mount${ARBOR_MOUNT_OPTS:+ $ARBOR_MOUNT_OPTS}\` (FUSE)"
else
    arbor_desc="arbor: stand-in, $arbor_kind on a second image of the same size, mounted with \`-o loop\`"
fi

section=$(
    echo "## Filesystem: arbor (FUSE) vs btrfs"
    echo
    if [[ $arbor_kind != arbor ]]; then
        echo "> **Stand-in run.** \`arbor mount\` did not exist yet, so $arbor_kind played arbor's role to validate the harness. Rerun \`scripts/bench-fs.sh\` (without \`ARBOR_STANDIN\`) for arbor's numbers."
        echo
    fi
    echo "Measured $(date -u +%Y-%m-%d) on $cpu ($(nproc) CPUs), Linux $(uname -r)${halt_poll:+, guest halt polling: $halt_poll}, in ${total_s} s. Two sparse $image_size image files in one directory on $base_fs (same disk). btrfs: btrfs-progs $(mkfs.btrfs --version 2>&1 | grep -o 'v[0-9.]*' | head -1) \`mkfs.btrfs\` defaults, \`mount -o loop$btrfs_opts\` (in effect: \`$btrfs_seen_opts\`). $arbor_desc. $(fio --version). Median of $reps run$([[ $reps = 1 ]] || echo s), each on freshly made filesystems, the two taking turns at every group of workloads (write+read, random read+write, create+stat+unlink, tree copy; the first one alternating between runs)."
    reproduce_md
    echo "**Ratio = arbor speed / btrfs speed (throughput, IOPS or files per second, medians); above 1 means arbor is faster.** Raw numbers are rates with the median wall-clock time in brackets; the machine is shared and noisy, so only the ratios carry over (\`ARBOR_STANDIN=btrfs\` shows its noise floor: btrfs in both columns). Targets from the issue: sequential throughput ≥ 0.7× btrfs, metadata ≥ 0.5× btrfs."
    echo
    echo "$table_md"
    echo
    notes_md
    echo "Method. Source data comes from /dev/shm (random bytes, so zeros cannot be special-cased; the tree is staged there too). Every timed phase starts cold, whatever ran before it: unmount (arbor: wait until the daemon has exited), \`sync\`, \`echo 3 > /proc/sys/vm/drop_caches\` (the host page cache also holds the image files), mount again — for FUSE the only way to empty the daemon's caches as well as the kernel's. Random I/O: fio \`psync\`, queue depth 1, 4 KiB blocks, every block at most once (fio's random map), the same seed for both; IOPS = I/Os / wall time, the write including its final fsync. Small files: \`target/release/fsmeta\` (crates/arbor-bench/src/bin/fsmeta.rs), one thread, paths \`d{k}/f{i}\`. \"syncfs\" = \`sync -f\` on the mountpoint (arbor: followed by \`arbor sync\`, a commit, since syncfs does not reach a FUSE daemon), inside the timing."
    if [[ -n $floor_md ]]; then
        echo
        echo "### What FUSE alone allows"
        echo
        echo "$floor_text"
        echo
        echo "$floor_md"
    fi
)

write_section "$markdown" "$section"
