#!/usr/bin/env bash
# The external suites on a mounted arbor image: pjdfstest (POSIX conformance), fsx
# (data-path exerciser: 4 seeds x 25,000 operations with a remount in the middle of
# each, plus a shorter run that includes copy_file_range), then `arbor check` on the
# unmounted image. Needs root, /dev/fuse and scripts/tools.sh. Called by
# scripts/test.sh; run it alone from anywhere in the repository:
#
#   scripts/fs-suite.sh            # FSX_OPS=25000 per seed, FSX_SEEDS="1 2 3 4" by default
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

arbor="$repo/target/release/arbor"
[[ -x "$arbor" ]] || cargo build --release --locked -q -p arbor-cli
# Short (Unix socket paths are limited to 108 bytes) and open to the test users.
work="$(mktemp -d /var/tmp/as.XXXXXX)"
chmod 755 "$work"
img="$work/fs.img"
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() {
    if mountpoint -q "$mnt"; then
        "$arbor" umount "$mnt" || umount -l "$mnt" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$arbor" mkfs -s 4G "$img" >/dev/null
"$arbor" mount -o "log=$work/daemon.log" "$img" "$mnt"

echo "--- pjdfstest on $mnt"
scripts/pjdfstest.sh "$mnt"

echo "--- fsx with copy_file_range (2 seeds x 5,000 operations)"
scripts/fsx.sh "$mnt" 5000 101 102

read -r -a seeds <<<"${FSX_SEEDS:-1 2 3 4}"
echo "--- fsx with a remount in the middle of each seed (${#seeds[@]} x ${FSX_OPS:=25000} operations)"
export ARBOR="$arbor" IMG="$img" MNT="$mnt" LOG="$work/daemon.log"
# shellcheck disable=SC2016  # expanded by scripts/fsx.sh, not here
REMOUNT_CMD='"$ARBOR" umount "$MNT" && "$ARBOR" check "$IMG" >/dev/null && "$ARBOR" mount -o "log=$LOG" "$IMG" "$MNT"' \
    scripts/fsx.sh "$mnt" "$FSX_OPS" "${seeds[@]}"

"$arbor" umount "$mnt"
echo "--- arbor check after the suites"
"$arbor" check "$img"
if [[ -s "$work/daemon.log" ]]; then
    echo "--- daemon log"
    cat "$work/daemon.log"
fi
