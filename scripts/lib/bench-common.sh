# shellcheck shell=bash disable=SC2034,SC2154
# (Variables pass between this file and the script that sources it: set there and read
# here, SC2154, or set here and read there, SC2034; see "A script sets" and "Sourcing sets".)
#
# The code that scripts/bench-fs.sh and scripts/bench-subvol.sh share: both benchmark arbor
# (FUSE) against btrfs, side by side in one run, on sparse images in a scratch directory,
# and write their results into a section of BENCHMARKS.md. Sourced, never run.
#
# A script sets, before sourcing (the library reads them at once):
#   bench_name     its name, e.g. bench-fs: the prefix of every message, the names of the
#                  scratch directories (arbor-$bench_name.XXXXXX) and of the script in the
#                  command that reproduces a run (scripts/$bench_name.sh)
#   bench_marker   e.g. fs-bench: its section of BENCHMARKS.md stands between the lines
#                  <!-- $bench_marker:start --> and <!-- $bench_marker:end -->
#   caller_pwd     the directory it was started from (for from_caller)
#   repo           the repository root (the library does not cd there)
# and, before calling the functions that use them:
#   image_size     size of each sparse image, truncate(1) syntax        (setup_KIND)
#   phase_timeout  seconds one step may take                            (lim, and all that uses it)
#   base_dir       where the scratch directory is made                  (check_base_dir, check_space,
#                                                                        make_scratch)
#   arbor_kind     the filesystem in arbor's role: arbor (default), btrfs or ext4 (make_scratch)
#   only           the comma-separated --only list                      (check_only, want)
#   orig_args      the script's arguments, an array                     (describe_run)
#
# Sourcing sets, from the environment: arbor_bin (ARBOR_BIN, default target/release/arbor),
# fsmeta (target/release/fsmeta), arbor_mkfs_opts and arbor_mount_opts (arrays, from
# ARBOR_MKFS_OPTS and ARBOR_MOUNT_OPTS), btrfs_mount_opts (BTRFS_MOUNT_OPTS); and haltpoll,
# the path of a VM guest's halt polling setting.
#
# It provides:
#   messages        die MESSAGE (exit 2), log MESSAGE
#   options         need_arg, from_caller, whole_numbers VAR..., check_only GROUP..., want GROUP
#   preconditions   check_bash_root, find_missing TOOL..., check_base_dir (sets base_fs),
#                   check_space DISK_KIB SHM_KIB
#   scratch space   make_scratch: work (on the disk), stage (in /dev/shm), roles (arbor btrfs),
#                   kind, img, mnt (arrays by role), results ($work/results.tsv);
#                   install_cleanup: on EXIT, after a failure or Ctrl-C too, unmounts both
#                   roles, kills a daemon that still holds its image, detaches their loop
#                   devices, removes $work (unless something is still mounted under it) and
#                   $stage, then calls on_cleanup if the script defines it (for resources of
#                   its own; with set +e); an ERR trap logs where the run failed.
#                   Helpers: holders, wait_released, is_mounted, lim, force_unmount
#   filesystems     setup_KIND IMG MNT, mount_KIND IMG MNT, teardown_KIND IMG MNT, sync_KIND MNT
#                   for KIND arbor, btrfs, ext4; umount_arbor IMG MNT; fs ROLE ACTION (dispatch
#                   on kind[ROLE]); drop_caches; cold ROLE; mount_for ROLE
#   report          elapsed, note TEXT, print_notes, notes_md, fmt_mib MIB, awk_lib (awk
#                   functions median, ratio_range, speed_text, to put before an awk program)
#   BENCHMARKS.md   describe_run (sets cpu, commit, btrfs_opts, cmd), reproduce_md,
#                   write_section FILE BODY
#
# A script may redefine, after sourcing: mount_arbor, teardown_arbor and sync_arbor (the
# defaults here mount, unmount and sync plainly; bench-fs.sh logs and counts the daemon's
# requests) and mount_for (default: fs ROLE mount).
#
# The script keeps `set -Eeuo pipefail`: nothing here turns it off, except cleanup (set +e).

# --- messages -----------------------------------------------------------------------------
die() {
    echo "$bench_name: error: $*" >&2
    exit 2
}
log() { echo "$bench_name: $*" >&2; }

# --- options ------------------------------------------------------------------------------
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
# A path given on the command line, relative to where the script was started.
from_caller() { if [[ $1 = /* ]]; then echo "$1"; else echo "$caller_pwd/$1"; fi; }

# whole_numbers VAR...: dies unless each variable holds a whole number; the message names
# the option after the variable (seq_mib: --seq-mib; phase_timeout: --timeout).
whole_numbers() {
    local v opt
    for v in "$@"; do
        opt=${v//_/-}
        [[ $v = phase_timeout ]] && opt=timeout
        [[ ${!v} =~ ^[0-9]+$ ]] || die "--$opt must be a whole number, not '${!v}'"
    done
}

# check_only GROUP...: dies unless $only is a comma-separated list of these groups.
check_only() {
    local names alts g
    names=$(printf '%s, ' "$@")
    names=${names%, }
    alts=$(IFS='|' && echo "$*")
    IFS=, read -r -a only_list <<<"$only"
    ((${#only_list[@]})) || die "--only needs at least one of $names"
    for g in "${only_list[@]}"; do
        [[ $g =~ ^($alts)$ ]] || die "--only: unknown group '$g' ($names)"
    done
}
# Whether --only names the group $1.
want() { [[ ,$only, = *,$1,* ]]; }

# --- environment --------------------------------------------------------------------------
arbor_bin=${ARBOR_BIN:-$repo/target/release/arbor}
fsmeta=$repo/target/release/fsmeta
read -r -a arbor_mkfs_opts <<<"${ARBOR_MKFS_OPTS:-}"
read -r -a arbor_mount_opts <<<"${ARBOR_MOUNT_OPTS:-}"
btrfs_mount_opts=${BTRFS_MOUNT_OPTS:-}
# A VM guest's halt polling (cpuidle-haltpoll): how long an idle vCPU polls before halting.
haltpoll=/sys/module/haltpoll/parameters/guest_halt_poll_ns

# --- preconditions ------------------------------------------------------------------------
check_bash_root() {
    ((BASH_VERSINFO[0] >= 5)) || die "needs bash >= 5 (for \$EPOCHREALTIME)"
    [[ $(id -u) -eq 0 ]] || die "must run as root (mount, loop devices, drop_caches)"
}

# find_missing TOOL...: adds each TOOL that is not on PATH to the array missing.
find_missing() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
}

# The images go on a disk under $base_dir (its filesystem type: base_fs), the source data
# into /dev/shm.
check_base_dir() {
    [[ -d $base_dir ]] || die "--dir $base_dir is not a directory"
    base_fs=$(findmnt -fno FSTYPE -T "$base_dir")
    case "$base_fs" in
    tmpfs | ramfs) die "--dir $base_dir is on $base_fs: the images would live in RAM; pick a disk (e.g. --dir /var/tmp)" ;;
    esac
    [[ $(findmnt -fno FSTYPE -T /dev/shm 2>/dev/null) = tmpfs ]] ||
        die "/dev/shm is not a tmpfs: it holds the source data, which must come from memory"
}

# check_space DISK_KIB SHM_KIB: dies unless $base_dir and /dev/shm have that much free.
check_space() {
    local need_disk_kib=$1 need_shm_kib=$2 avail_kib shm_kib
    avail_kib=$(df -Pk "$base_dir" | awk 'NR == 2 {print $4}')
    ((avail_kib >= need_disk_kib)) ||
        die "$base_dir has $((avail_kib >> 10)) MiB free, the run needs about $((need_disk_kib >> 10)) MiB"
    shm_kib=$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')
    ((shm_kib >= need_shm_kib)) ||
        die "/dev/shm has $((shm_kib >> 10)) MiB free, the source data needs about $((need_shm_kib >> 10)) MiB"
}

# --- scratch space and cleanup ------------------------------------------------------------
# Makes the scratch directories and names each role's image and mountpoint in $work.
make_scratch() {
    local r
    # Resolved now, while nothing is mounted there: /proc/self/mountinfo names real paths.
    work=$(realpath -e "$(mktemp -d "$base_dir/arbor-$bench_name.XXXXXX")")
    stage=$(mktemp -d "/dev/shm/arbor-$bench_name.XXXXXX")
    roles=(arbor btrfs)
    declare -gA kind=([arbor]=${arbor_kind:-arbor} [btrfs]=btrfs)
    declare -gA img mnt
    for r in "${roles[@]}"; do
        img[$r]=$work/$r.img
        mnt[$r]=$work/$r.mnt
    done
    results=$work/results.tsv
}

# Processes (an arbor daemon) that have the file $1 open.
holders() {
    local target pid fd
    target=$(realpath -e -- "$1" 2>/dev/null) || return 0
    for pid in /proc/[0-9]*; do
        for fd in "$pid"/fd/*; do
            if [[ $(readlink "$fd" 2>/dev/null) = "$target" ]]; then
                echo "${pid#/proc/}"
                break
            fi
        done
    done
}

# Waits up to $2 seconds until no process has the image $1 open.
wait_released() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -z "$(holders "$1")" ]] && return 0
        sleep 0.1
    done
    return 1
}

# Whether something is mounted at $1, from /proc/self/mountinfo: stat(2) of a FUSE mount
# whose daemon hangs would hang too, and mountpoint(1) says no for a dead daemon's mount.
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# Runs a command that touches a filesystem under test, killing it if it takes longer than
# --timeout seconds (a hung daemon must fail the run, not stall it).
# --foreground keeps it in our process group, so that Ctrl-C reaches the command too.
lim() { timeout --foreground -k 10 "$phase_timeout" "$@"; }

# Unmounts role $1 whatever state it is in, and ends a daemon that still holds its image
# (unmounted or not: a daemon that hangs in its final commit); used by the cleanup only.
force_unmount() {
    local m=${mnt[$1]} i=${img[$1]} pids
    if is_mounted "$m"; then
        log "cleanup: unmounting $m"
        if [[ ${kind[$1]} = arbor ]]; then
            timeout -k 5 60 "$arbor_bin" umount --timeout 60 "$m" 2>/dev/null
        else
            timeout -k 5 60 umount "$m"
        fi
    fi
    if [[ -e $i ]] && ! wait_released "$i" 10; then
        # Only our own daemons have our fresh image open.
        pids=$(holders "$i" | tr '\n' ' ')
        log "cleanup: processes $pids still hold $i; killing them"
        # shellcheck disable=SC2086 # a list of pids
        [[ -z $pids ]] || kill -KILL $pids
        wait_released "$i" 30 || log "cleanup: $pids did not exit"
    fi
    if is_mounted "$m"; then
        timeout -k 5 30 umount "$m" || umount -l "$m"
    fi
}

cleanup() {
    local rc=$? r loopdev
    set +e
    trap - EXIT INT TERM ERR
    for r in "${roles[@]}"; do
        force_unmount "$r"
        for loopdev in $(losetup -j "${img[$r]}" -O NAME -n 2>/dev/null); do
            losetup -d "$loopdev"
        done
    done
    if awk -v w="$work/" 'index($5, w) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        log "cleanup: something is still mounted under $work; leaving it in place"
    else
        rm -rf "$work"
    fi
    rm -rf "$stage"
    if declare -F on_cleanup >/dev/null; then
        on_cleanup
    fi
    exit "$rc"
}
on_err() { log "failed with exit code $1 at line $2, in: ${FUNCNAME[*]:1}; cleaning up"; }
# Call after make_scratch, once every variable that cleanup (and on_cleanup) reads is set.
install_cleanup() {
    trap cleanup EXIT
    trap 'on_err $? $LINENO' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# --- filesystems under test ---------------------------------------------------------------
# To benchmark another filesystem, add setup_/mount_/teardown_/sync_ functions for it.

setup_btrfs() {
    truncate -s "$image_size" "$1"
    mkfs.btrfs -f -q "$1" >/dev/null
    mount_btrfs "$@"
}
mount_btrfs() { lim mount -t btrfs -o "loop${btrfs_mount_opts:+,$btrfs_mount_opts}" "$1" "$2"; }
teardown_btrfs() { lim umount "$2"; } # the loop device (autoclear) goes with the mount
sync_btrfs() { lim sync -f "$1"; }

setup_ext4() {
    truncate -s "$image_size" "$1"
    # Inode tables written now, not by a background thread during the measurements.
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1"
    mount_ext4 "$@"
}
mount_ext4() { lim mount -t ext4 -o loop "$1" "$2"; }
teardown_ext4() { lim umount "$2"; }
sync_ext4() { lim sync -f "$1"; }

setup_arbor() {
    truncate -s "$image_size" "$1"
    "$arbor_bin" mkfs "${arbor_mkfs_opts[@]}" "$1" >/dev/null
    mount_arbor "$@"
}
# (bench-fs.sh redefines mount_arbor, teardown_arbor and sync_arbor.)
mount_arbor() {
    lim "$arbor_bin" mount "${arbor_mount_opts[@]}" "$1" "$2"
    is_mounted "$2" || die "arbor mount returned but $2 is not a mountpoint"
}
# A FUSE umount returns before the daemon has committed and exited; `arbor umount` waits
# for the daemon's final commit, then this waits until it has let go of the image, so that
# the next mount (or the cleanup) never finds the image still in use.
umount_arbor() {
    lim "$arbor_bin" umount --timeout 300 "$2"
    wait_released "$1" 60 || die "the arbor daemon still holds $1 after umount"
}
teardown_arbor() { umount_arbor "$@"; }
# syncfs(2) on a FUSE mount only writes the kernel's dirty pages (writeback cache) to the
# daemon; FUSE_SYNCFS never reaches it. `arbor sync` then fsyncs the root, which commits
# the whole filesystem: together the same promise as btrfs's syncfs.
sync_arbor() {
    lim sync -f "$1" || log "warning: syncfs on arbor failed"
    lim "$arbor_bin" sync "$1"
}

# Dispatch on a role: fs ROLE ACTION.
fs() {
    local role=$1 action=$2 k=${kind[$1]}
    case "$action" in
    setup | mount | teardown) "${action}_$k" "${img[$role]}" "${mnt[$role]}" ;;
    sync) "sync_$k" "${mnt[$role]}" ;;
    esac
}

drop_caches() {
    lim sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Unmounts and mounts ROLE again with every cache (its own, the host's of its image) empty
# (drop_caches is global: it also empties the other filesystem's caches). For FUSE a
# remount is the only way to empty the daemon's caches as well as the kernel's.
cold() {
    fs "$1" teardown
    drop_caches
    mount_for "$1"
}
# Mounts ROLE again for what follows (bench-fs.sh redefines it: a log per timed phase).
mount_for() { fs "$1" mount; }

# --- report -------------------------------------------------------------------------------
# The wall-clock time of the last timed command, in seconds.
elapsed=0

# note TEXT: something observed during the run, listed (with a count) under the table.
note() { echo "$*" >>"$work/notes"; }
# The notes, for the terminal.
print_notes() {
    if [[ -s $work/notes ]]; then
        echo
        sort "$work/notes" | uniq -c | awk '{ n = $1; $1 = ""; printf "note:%s (%d time%s)\n", $0, n, n == 1 ? "" : "s" }'
    fi
}
# The notes, for BENCHMARKS.md: a list and an empty line, or nothing.
notes_md() {
    if [[ -s $work/notes ]]; then
        echo "Observed during the run:"
        echo
        sort "$work/notes" | uniq -c | awk '{ n = $1; $1 = ""; printf "-%s (%d time%s).\n", $0, n, n == 1 ? "" : "s" }'
        echo
    fi
}

fmt_mib() { awk -v m="$1" 'BEGIN { if (m >= 1024 && m % 1024 == 0) printf "%d GiB", m / 1024; else printf "%d MiB", m }'; }

# Functions for the awk programs of the reports, to put before a program ("$awk_lib"'...'):
#   median(a, n)       the median of a[1..n] (sorts a)
#   ratio_range(q, n)  the lowest to the highest of the per-run ratios q[1..n]: "0.93" or "0.91–0.97"
#   speed_text(ratio)  arbor speed / btrfs speed in words: "arbor 1.20× faster", "arbor 2.00× slower"
awk_lib='
function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio_range(q, n,   i, lo, hi) {
    lo = hi = q[1]
    for (i = 2; i <= n; i++) { if (q[i] < lo) lo = q[i]; if (q[i] > hi) hi = q[i] }
    return n == 1 ? sprintf("%.2f", lo) : sprintf("%.2f–%.2f", lo, hi)
}
function speed_text(ratio) {
    return ratio >= 1 ? sprintf("arbor %.2f× faster", ratio) : sprintf("arbor %.2f× slower", 1 / ratio)
}
'

# --- BENCHMARKS.md ------------------------------------------------------------------------
# Sets what a section says about the run: cpu, commit (of the code measured), btrfs_opts
# (for `mount -o loop$btrfs_opts`) and cmd, the command that reproduces it (this run's
# arguments, without where the results went).
describe_run() {
    local i
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    if [[ $commit != unknown ]] && ! git diff --quiet HEAD -- crates ':!crates/arbor-bench' 2>/dev/null; then
        commit="$commit with uncommitted changes"
    fi
    btrfs_opts=${btrfs_mount_opts:+,$btrfs_mount_opts}
    cmd="scripts/$bench_name.sh"
    for ((i = 0; i < ${#orig_args[@]}; i++)); do
        case "${orig_args[i]}" in
        --markdown) ((++i)) ;;
        --no-markdown) ;;
        *) cmd+=" $(printf '%q' "${orig_args[i]}")" ;;
        esac
    done
}

# The paragraph with $cmd, between empty lines.
reproduce_md() {
    echo
    echo "Reproduce (as root) from the repository root:"
    echo
    echo "    $cmd"
    echo
}

# write_section FILE BODY: puts BODY between the script's markers into FILE, in place of
# what stood between them, or at its end if it has none (a new FILE: "# Benchmarks" first).
write_section() {
    local markdown=$1 section start_marker end_marker s_line e_line tmp_md
    start_marker="<!-- $bench_marker:start -->"
    end_marker="<!-- $bench_marker:end -->"
    section=$start_marker$'\n'$2$'\n'$end_marker
    if [[ ! -e $markdown ]]; then
        printf '# Benchmarks\n' >"$markdown"
    fi
    s_line=$(grep -nxF "$start_marker" "$markdown" | head -1 | cut -d: -f1 || true)
    e_line=$(grep -nxF "$end_marker" "$markdown" | head -1 | cut -d: -f1 || true)
    tmp_md="$markdown.tmp.$$"
    if [[ -n $s_line && -n $e_line && $s_line -lt $e_line ]]; then
        {
            head -n "$((s_line - 1))" "$markdown"
            echo "$section"
            tail -n "+$((e_line + 1))" "$markdown"
        } >"$tmp_md"
    elif [[ -z $s_line && -z $e_line ]]; then
        {
            cat "$markdown"
            echo
            echo "$section"
        } >"$tmp_md"
    else
        die "$markdown has only one of the $bench_marker markers, or them out of order; fix it by hand"
    fi
    mv "$tmp_md" "$markdown"
    log "wrote $markdown"
}
