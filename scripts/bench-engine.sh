#!/usr/bin/env bash
# Benchmarks arbor's engine against redb, side by side in one run, and writes the
# ratios into BENCHMARKS.md (the section between the engine-bench markers).
#
# Usage: scripts/bench-engine.sh [arbor-bench options]
#   e.g. scripts/bench-engine.sh --quick        # small smoke run
#        scripts/bench-engine.sh --n 1000000    # the published run
#   Run `target/release/arbor-bench --help` for every option.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -p arbor-bench
exec target/release/arbor-bench --markdown BENCHMARKS.md "$@"
