#!/usr/bin/env bash
# POSIX conformance: runs pjdfstest (the Rust rewrite, tools/bin/pjdfstest from
# scripts/tools.sh) in a fresh subdirectory of DIR, with tests/posix/pjdfstest.toml.
# Run it as root (a third of the tests switch users or create device nodes) from
# anywhere in the repository:
#
#   scripts/pjdfstest.sh DIR                  # the whole suite
#   scripts/pjdfstest.sh DIR rename:: utimensat   # only tests whose names contain a pattern
#
# DIR is usually the mount point of the filesystem under test (arbor mounts need
# allow_other, or every test run as another user fails with EACCES).
#
# Exit status 0 only if every FAILED test is listed in tests/posix/not-applicable.txt.
# It prints the unexpected failures with pjdfstest's message, and (for information)
# listed tests that passed. The full output goes to a log file whose path is printed
# (target/test-logs/pjdfstest-*.log).
#
# What it adds around pjdfstest:
# * EXDEV tests: -s DIR2, a temporary directory on another filesystem (/dev/shm, else
#   /tmp; PJDFSTEST_SECONDARY=PATH to choose, =none to skip those tests).
# * EROFS tests: a second pass that runs only *::erofs_* with allow_remount = true, so
#   pjdfstest remounts DIR's filesystem read-only and back. Not in the main pass: by then
#   pjdfstest holds O_RDWR descriptors that earlier tests leaked and the remount fails
#   with EBUSY. pjdfstest runs `mount -o remount,ro MNT`; a wrapper on PATH adds `-i`,
#   because with fuse3 installed mount(8) would otherwise hand a remount of a FUSE mount
#   to /sbin/mount.fuse, which tries to start a new filesystem daemon.
#   PJDFSTEST_REMOUNT=auto (default: on when DIR is a mount point other than /), 1, or 0.
# * pjdfstest 0.2.2 bug: create_path_max() computes (PATH_MAX-1 - len(base)) % (NAME_MAX/2)
#   - 1 in usize; when the remainder is 0 it wraps and all 14 *::enametoolong_path tests
#   panic with "capacity overflow". The base is WORK/.tmpXXXXXX/.tmpXXXXXX, so the length
#   of WORK's name is chosen to avoid that remainder.
#
# Environment: PJDFSTEST_CONFIG, PJDFSTEST_NA (other config / list), LOG_DIR (default
# target/test-logs), PJDFSTEST_TIMEOUT (seconds per pass, default 900),
# PJDFSTEST_BACKTRACE=1 (Rust backtraces of failed assertions in the log).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
    echo "usage: $0 DIR [TEST_PATTERN...]" >&2
    exit 2
}
[[ $# -ge 1 ]] || usage
[[ -d "$1" ]] || { echo "error: $1 is not a directory" >&2; exit 2; }
dir="$(realpath "$1")"
shift
patterns=("$@")

# DIR and the paths in the environment are relative to the caller's directory.
pjdfstest="$repo/tools/bin/pjdfstest"
config="$(realpath "${PJDFSTEST_CONFIG:-$repo/tests/posix/pjdfstest.toml}")"
na_file="$(realpath "${PJDFSTEST_NA:-$repo/tests/posix/not-applicable.txt}")"
log_dir="$(realpath -m "${LOG_DIR:-$repo/target/test-logs}")"
cd "$repo"
timeout_s="${PJDFSTEST_TIMEOUT:-900}"
remount="${PJDFSTEST_REMOUNT:-auto}"
remount_why="PJDFSTEST_REMOUNT=$remount"

[[ -x "$pjdfstest" ]] || { echo "error: $pjdfstest is missing; run scripts/tools.sh" >&2; exit 2; }
[[ -f "$na_file" ]] || { echo "error: $na_file is missing" >&2; exit 2; }
if [[ "$(id -u)" -ne 0 ]]; then
    echo "warning: not root: pjdfstest skips every test that needs root" >&2
fi

# The dummy users of the config must exist, or the tests that switch to them fail.
while read -r user group; do
    if ! getent passwd "$user" >/dev/null || ! getent group "$group" >/dev/null; then
        echo "error: $config names $user:$group, which does not exist here" >&2
        exit 2
    fi
done < <(grep -oE '\[ *"[^"]+" *, *"[^"]+" *\]' "$config" | tr -d '[]",')

name_re='[A-Za-z0-9_]+(::[A-Za-z0-9_]+)+'

# The list of tests that are not applicable: names only.
mapfile -t na_names < <(sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$na_file" | grep -v '^$' || true)
for name in "${na_names[@]}"; do
    if [[ ! "$name" =~ ^$name_re$ ]]; then
        echo "error: $na_file: bad line '$name' (want 'group::test  # reason')" >&2
        exit 2
    fi
done

# Fresh work directory; its name length avoids pjdfstest's path_max bug (see above).
name_max="$(getconf NAME_MAX "$dir")"
path_max="$(getconf PATH_MAX "$dir")"
prefix="${dir%/}/pjdfstest."
xs=XXXXXX
while (( (path_max - 1 - (${#prefix} + ${#xs} + 22)) % (name_max / 2) == 0 )); do
    xs+=X
done
work="$(mktemp -d "$prefix$xs")"
chmod 755 "$work"

scratch="$(mktemp -d)"
secondary=""
cleanup() {
    rm -rf "$scratch"
    [[ -z "$secondary" ]] || rm -rf "$secondary"
    rmdir "$work" 2>/dev/null || echo "note: $work was left behind (not empty)" >&2
}
trap cleanup EXIT

# Secondary filesystem for the EXDEV tests.
secondary_args=()
sec_parent="${PJDFSTEST_SECONDARY:-}"
if [[ -z "$sec_parent" ]]; then
    for cand in /dev/shm "${TMPDIR:-/tmp}"; do
        if [[ -d "$cand" && -w "$cand" && "$(stat -c %d "$cand")" != "$(stat -c %d "$dir")" ]]; then
            sec_parent="$cand"
            break
        fi
    done
fi
if [[ -n "$sec_parent" && "$sec_parent" != none ]]; then
    if [[ "$(stat -c %d "$sec_parent")" == "$(stat -c %d "$dir")" ]]; then
        echo "warning: $sec_parent is on the same filesystem as $dir: the EXDEV tests will fail" >&2
    fi
    secondary="$(mktemp -d "$sec_parent/pjdfstest-secondary.XXXXXX")"
    secondary_args=(-s "$secondary")
fi

# Second pass for the EROFS tests?
case "$remount" in
    auto)
        if [[ "$dir" != / ]] && mountpoint -q "$dir"; then
            remount=1
        else
            remount=0 remount_why="$dir is not a mount point; PJDFSTEST_REMOUNT=1 forces it"
        fi ;;
    0 | 1) ;;
    *) echo "error: PJDFSTEST_REMOUNT must be auto, 0 or 1" >&2; exit 2 ;;
esac
erofs_patterns=()
if [[ "$remount" = 1 ]]; then
    if [[ ${#patterns[@]} -eq 0 ]]; then
        erofs_patterns=(erofs)
    else
        for p in "${patterns[@]}"; do
            if [[ "$p" == *erofs* ]]; then erofs_patterns+=("$p"); fi
        done
    fi
    [[ ${#erofs_patterns[@]} -gt 0 ]] || remount=0 remount_why="no pattern selects erofs tests"
fi

mkdir -p "$log_dir"
log="$log_dir/pjdfstest-$(date +%Y%m%d-%H%M%S)-$$.log"

# run_pass CONFIG OUTPUT [ARGS...]: one pjdfstest run; prints its exit status.
run_pass() {
    local cfg="$1" out="$2"
    shift 2
    local rc=0
    env -u CLICOLOR_FORCE NO_COLOR=1 RUST_BACKTRACE="${PJDFSTEST_BACKTRACE:-0}" \
        timeout -k 10 "$timeout_s" "$pjdfstest" -c "$cfg" -p "$work" "${secondary_args[@]}" "$@" \
        >"$out" 2>&1 </dev/null || rc=$?
    echo "$rc"
}

echo "==> pjdfstest $("$pjdfstest" --version | awk '{print $2}') in $work"
echo "    config $config; secondary fs: ${secondary:-none (EXDEV tests skipped)}; EROFS pass: $([[ $remount = 1 ]] && echo yes || echo "no ($remount_why)")"
echo "    log: $log"
start=$SECONDS
rc_main="$(run_pass "$config" "$scratch/main.out" "${patterns[@]}")"
{
    echo "# pjdfstest -c $config -p $work ${secondary_args[*]} ${patterns[*]}"
    echo "# exit status $rc_main"
    cat "$scratch/main.out"
} >"$log"
outputs=("$scratch/main.out")
statuses=("$rc_main")

if [[ "$remount" = 1 ]]; then
    # Remount wrapper: mount(8) without helpers (see the header).
    real_mount="$(command -v mount)"
    mkdir "$scratch/bin"
    printf '#!/bin/sh\nexec %s -i "$@"\n' "$real_mount" >"$scratch/bin/mount"
    chmod +x "$scratch/bin/mount"
    if grep -q '^\[settings\]' "$config"; then
        sed -e '/^[[:space:]]*allow_remount[[:space:]]*=/d' -e '/^\[settings\]/a allow_remount = true' \
            "$config" >"$scratch/erofs.toml"
    else
        { cat "$config"; printf '\n[settings]\nallow_remount = true\n'; } >"$scratch/erofs.toml"
    fi
    rc_erofs="$(PATH="$scratch/bin:$PATH" run_pass "$scratch/erofs.toml" "$scratch/erofs.out" "${erofs_patterns[@]}")"
    {
        echo
        echo "# second pass, allow_remount = true: pjdfstest -p $work ${erofs_patterns[*]}"
        echo "# exit status $rc_erofs"
        cat "$scratch/erofs.out"
    } >>"$log"
    outputs+=("$scratch/erofs.out")
    statuses+=("$rc_erofs")
    # A failed remount back to rw would leave the filesystem read-only.
    if findmnt -no OPTIONS -T "$dir" | grep -qE '(^|,)ro(,|$)'; then
        echo "error: $dir is read-only after the EROFS pass; trying to remount it rw" >&2
        "$real_mount" -i -o remount,rw "$(findmnt -no TARGET -T "$dir")" || true
        exit 1
    fi
fi
elapsed=$((SECONDS - start))

# Parse: one "NAME  STATUS" line per test, and a Summary line whose total must match.
declare -A status=()
broken=0
for i in "${!outputs[@]}"; do
    out="${outputs[$i]}"
    rc="${statuses[$i]}"
    clean="$scratch/clean.$i"
    sed -E 's/\x1b\[[0-9;]*m//g' "$out" >"$clean"
    count=0
    while IFS=$'\t' read -r name st; do
        status["$name"]="$st"
        count=$((count + 1))
    done < <(sed -nE "s/^($name_re) +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)\$/\\1\t\\3/p" "$clean")
    total="$(sed -nE 's/^Summary: .* ([0-9]+) total$/\1/p' "$clean")"
    if [[ -z "$total" ]]; then
        echo "error: pjdfstest ended without its Summary line (exit status $rc; 124 is a timeout); see $log" >&2
        tail -n 5 "$clean" >&2
        broken=1
    elif [[ "$total" -ne "$count" ]]; then
        echo "error: parsed $count results but pjdfstest reports $total; see $log" >&2
        broken=1
    elif [[ "$rc" != 0 && "$rc" != 1 ]]; then
        echo "error: pjdfstest exited with status $rc; see $log" >&2
        broken=1
    fi
done

# failure_message NAME: the lines pjdfstest printed under a failed test.
failure_message() {
    local f
    for f in "$scratch"/clean.*; do
        awk -v name="$1" '
            found && /^[A-Za-z0-9_]+(::[A-Za-z0-9_]+)+ +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)$/ { exit }
            found && /^Summary: / { exit }
            found && n < 6 { print "      " $0; n++ }
            $1 == name && / FAILED$/ { found = 1 }
        ' "$f"
    done
}

declare -A na=()
for name in "${na_names[@]}"; do na["$name"]=1; done
passed=0 failed=0 skipped=0
unexpected=() na_failed=() na_passed=() na_absent=()
for name in "${!status[@]}"; do
    case "${status[$name]}" in
        ok | "PASSED UNEXPECTEDLY")
            passed=$((passed + 1))
            [[ -z "${na[$name]:-}" ]] || na_passed+=("$name") ;;
        skipped) skipped=$((skipped + 1)) ;;
        *)
            failed=$((failed + 1))
            if [[ -n "${na[$name]:-}" ]]; then na_failed+=("$name"); else unexpected+=("$name"); fi ;;
    esac
done
if [[ ${#patterns[@]} -eq 0 ]]; then
    for name in "${na_names[@]}"; do
        [[ -n "${status[$name]:-}" ]] || na_absent+=("$name")
    done
fi

echo "==> ${#status[@]} tests in ${elapsed}s: $passed passed, $failed failed, $skipped skipped"
if [[ ${#na_failed[@]} -gt 0 ]]; then
    echo "    failed, listed as not applicable (${#na_failed[@]}):"
    printf '      %s\n' "${na_failed[@]}" | sort
fi
if [[ ${#na_passed[@]} -gt 0 ]]; then
    echo "    note: listed as not applicable but PASSED (consider removing from $na_file):"
    printf '      %s\n' "${na_passed[@]}" | sort
fi
if [[ ${#na_absent[@]} -gt 0 ]]; then
    echo "    note: listed as not applicable but not in the run (misspelt or skipped?):"
    printf '      %s\n' "${na_absent[@]}" | sort
fi
if [[ $skipped -gt 0 ]]; then
    echo "    skipped: $(for n in "${!status[@]}"; do [[ "${status[$n]}" != skipped ]] || echo "$n"; done | sort | tr '\n' ' ')"
fi
if [[ ${#unexpected[@]} -gt 0 ]]; then
    echo "    UNEXPECTED FAILURES (${#unexpected[@]}):"
    while read -r name; do
        echo "    $name"
        failure_message "$name"
    done < <(printf '%s\n' "${unexpected[@]}" | sort)
fi
echo "    log: $log"
if [[ $broken -ne 0 ]]; then
    echo "pjdfstest: INCOMPLETE RUN (see the errors above)"
    exit 1
fi
echo "pjdfstest: $passed passed, ${#unexpected[@]} failed, $skipped skipped"
[[ ${#unexpected[@]} -eq 0 ]]
