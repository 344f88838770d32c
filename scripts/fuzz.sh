#!/usr/bin/env bash
# Runs the engine's fuzz targets (fuzz/, a cargo workspace of its own) with cargo-fuzz
# on stable Rust. Run it from anywhere in the repository.
#
#   scripts/fuzz.sh                  # every target, 60 s each, one after the other
#   scripts/fuzz.sh open_image       # only the named targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh # longer runs
#   FUZZ_ARGS="-fork=2 -ignore_crashes=1 -ignore_ooms=1" scripts/fuzz.sh open_image
#                                    # both cores, and go on past known crashes
#
# Targets (each: "errors are fine, panics are bugs"):
#   open_image   mutations of a valid seed image, optionally with resealed checksums,
#                then the checker, a read-only open with full scans, and a read-write
#                session (see the header of fuzz/fuzz_targets/open_image.rs);
#   decode_node  the node validator on arbitrary bytes with a matching checksum and
#                header.
#   send_decode  the send-stream decoder and dumper on arbitrary bytes (byte 0: bit 0
#                reseals every command's CRC, bit 1 prepends a valid header).
#   receive      streams built from arbitrary bytes (hostile paths, renames, links,
#                writes, clones) received into an in-memory filesystem: a file outside
#                the new subvolume stays untouched and the image checks clean.
#
# cargo-fuzz is installed into ./tools (ignored by git) when it is missing. The targets
# are built with `--sanitizer none`: the default AddressSanitizer build needs nightly's
# -Z flags, and the engine has no unsafe code (`unsafe_code = "deny"`), so panics are
# what there is to find. Builds are optimized, with debug assertions and overflow checks.
# libFuzzer needs a C++ compiler (g++) to build.
#
# fuzz/TARGET.dict, when present, is passed as a libFuzzer dictionary (interesting
# integers: counters near their limits, item types, the superblock magic).
#
# Corpora grow in fuzz/corpus/TARGET and failing inputs land in fuzz/artifacts/TARGET
# (both ignored by git) as crash-* (a panic), oom-* or timeout-*. A failing input, or any
# new file in fuzz/artifacts/TARGET, makes this script exit non-zero after the remaining
# targets ran. Reproduce one with
#   tools/bin/cargo-fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
# and shrink it with `tools/bin/cargo-fuzz tmin --sanitizer none TARGET FILE`.
#
# Stack overflows: without a sanitizer, libFuzzer's signal handler has no stack of its
# own to run on, so an unbounded recursion would kill the fuzzer with a bare SIGSEGV and
# no saved input. The stack limit is therefore lifted (`ulimit -s unlimited`): a runaway
# recursion then grows until libFuzzer's RSS limit (2 GiB) reports it as an oom-* file.
# Look at its stack with gdb (`gdb -batch -ex run -ex bt --args
# fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`, with the default stack
# limit) to tell a recursion from a real out-of-memory.
#
# Environment: FUZZ_SECONDS (default 60) per target; FUZZ_TIMEOUT (default 30) seconds
# after which one input counts as a hang; FUZZ_ARGS, extra libFuzzer flags (for example
# "-jobs=2 -workers=2"); ARBOR_FUZZ_ORACLE=1 turns on the open_image target's
# differential checks, and ARBOR_FUZZ_SKIP_RW_IF=TEXT skips its read-write phase on images
# whose checker report mentions TEXT, to fuzz past a known crash (see its header).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

seconds="${FUZZ_SECONDS:-60}"
timeout="${FUZZ_TIMEOUT:-30}"
cargo_fuzz="$repo/tools/bin/cargo-fuzz"

if [[ ! -x "$cargo_fuzz" ]]; then
    echo "==> installing cargo-fuzz into $repo/tools"
    cargo install --locked --root "$repo/tools" cargo-fuzz
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "error: libFuzzer needs a C++ compiler; install g++ (apt-get install g++)" >&2
    exit 2
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <("$cargo_fuzz" list)
fi

ulimit -s unlimited 2>/dev/null || echo "warning: could not lift the stack limit" >&2

failed=()
for target in "${targets[@]}"; do
    echo "==> fuzzing $target for ${seconds}s"
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    # Seed the stream decoder with small kernel-made streams (byte 0 = 1: reseal CRCs).
    if [[ $target == send_decode && -z "$(ls -A fuzz/corpus/send_decode)" ]]; then
        for f in crates/arbor-send/tests/fixtures/kernel618_{inv_inc_v1,nodata_v1,inc_v2,comp}.stream; do
            { printf '\001'; cat "$f"; } >"fuzz/corpus/send_decode/$(basename "$f" .stream)"
        done
    fi
    before="$(find "fuzz/artifacts/$target" -type f | wc -l)"
    dict=()
    if [[ -f "fuzz/$target.dict" ]]; then
        dict=(-dict="fuzz/$target.dict")
    fi
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if ! "$cargo_fuzz" run --sanitizer none "$target" -- \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-}; then
        failed+=("$target")
    elif [[ "$(find "fuzz/artifacts/$target" -type f | wc -l)" -gt "$before" ]]; then
        # With -fork=N -ignore_crashes=1 libFuzzer goes on after a crash and exits 0.
        failed+=("$target")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "==> FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "==> all targets ran ${seconds}s without a crash"
