#!/usr/bin/env bash
# The whole test suite. `.ci/run` calls this; run it from anywhere in the repository.
#
# It installs what a fresh machine lacks (scripts/tools.sh: Debian packages, and
# pjdfstest and fsx into ./tools), then runs: rustfmt --check, clippy with -D warnings,
# every test of the workspace (the mounted tests need root and /dev/fuse), pjdfstest
# and fsx on a mounted image (scripts/fs-suite.sh), and quick smoke runs of the
# benchmarks, and 20 s of fuzzing of the send-stream decoder and of receive. Set
# ARBOR_LONG=1 for the longer campaigns (more property-test cases, more crash seeds and
# kill -9 rounds, 1.2 million fsx operations, and scripts/fuzz.sh on every fuzz target).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
cargo --version

step "external test tools"
scripts/tools.sh

step "rustfmt --check"
cargo fmt --all -- --check

step "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "pjdfstest and fsx on a mounted image"
cargo build --release --locked -q -p arbor-cli
if [ "${ARBOR_LONG:-}" = 1 ]; then
    # 12 seeds x 100,000 operations, each with a remount in the middle.
    FSX_OPS=100000 FSX_SEEDS="1 2 3 4 5 6 7 8 9 10 11 12" scripts/fs-suite.sh
else
    scripts/fs-suite.sh
fi

step "engine benchmark smoke run (arbor vs redb, --quick)"
cargo run --release --locked -q -p arbor-bench -- --quick

step "filesystem benchmark smoke run (arbor vs btrfs, --quick)"
scripts/bench-fs.sh --quick --no-markdown

step "subvolume benchmark smoke run (arbor vs btrfs, --quick)"
scripts/bench-subvol.sh --quick --no-markdown

step "send/receive benchmark smoke run (arbor vs btrfs vs rsync, --quick)"
scripts/bench-send.sh --quick --no-markdown

if [[ -z "${ARBOR_LONG:-}" ]]; then
    step "brief fuzzing of the send-stream decoder and of receive (20 s each)"
    FUZZ_SECONDS=20 scripts/fuzz.sh send_decode receive
fi

if [ "${ARBOR_LONG:-}" = 1 ]; then
    step "fuzzing (ARBOR_LONG=1): every target for ${FUZZ_SECONDS:=300} s"
    FUZZ_SECONDS="$FUZZ_SECONDS" scripts/fuzz.sh
fi

echo
echo "all checks passed"
